//! One request is one trace, in a real OTLP collector (rotel): from the
//! caller's `traceparent` through the handler and every actor hop to each
//! JSON-RPC call and Redis command, over OTLP/HTTP and OTLP/gRPC.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::chain::*;
use crate::collector::{Collector, SpanRec};
use crate::helpers::*;

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

fn otel_env(env: &mut HashMap<String, String>, collector: &Collector, protocol: &str) {
    let (endpoint, proto) = match protocol {
        "grpc" => (format!("http://127.0.0.1:{}", collector.grpc_port), "grpc"),
        _ => (format!("http://127.0.0.1:{}", collector.http_port), "http/protobuf"),
    };
    env.insert("SETTLEGATE_OTEL__ENDPOINT".into(), endpoint);
    env.insert("SETTLEGATE_OTEL__PROTOCOL".into(), proto.into());
}

fn one<'a>(spans: &'a [SpanRec], name: &str) -> &'a SpanRec {
    let found: Vec<&SpanRec> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "one {name:?} span: {spans:#?}");
    found[0]
}

#[tokio::test(flavor = "multi_thread")]
async fn a_verification_is_one_trace_from_the_callers_traceparent_to_the_node_and_redis() {
    let chain = Chain::start();
    let hash = chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000);
    let hash2 = chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000);
    for (protocol, hash) in [("http/protobuf", &hash), ("grpc", &hash2)] {
        let collector = Collector::start_with_metrics();
        let w = Workdir::new();
        let mut env = chain_env(&w.genome(&Genome::single().signed()), &chain.url);
        otel_env(&mut env, &collector, protocol);
        env.insert("SETTLEGATE_OTEL__METRICS_INTERVAL_MS".into(), "200".into());
        let app = Served::start(&env);
        let v = app
            .verify(
                json!({ "credential": format!("Tempo {hash}") }),
                &[("traceparent", &format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01"))],
            )
            .await;
        assert_eq!(v.status, 200, "{:?}", v.body);

        let spans = tokio::task::block_in_place(|| {
            collector.wait_for(|s| {
                s.iter().any(|s| s.name == "put_if_absent") && s.iter().any(|s| s.name == "POST /v1/verify")
            })
        });
        let trace: Vec<SpanRec> = spans.into_iter().filter(|s| s.trace_id == CALLER_TRACE).collect();
        let request = one(&trace, "POST /v1/verify");
        assert_eq!(
            request.parent_id, CALLER_SPAN,
            "{protocol}: the caller's span is the parent"
        );
        assert_eq!(request.kind, "SPAN_KIND_SERVER");
        // traceresponse names this trace and this span
        assert_eq!(
            v.header("traceresponse"),
            format!("00-{CALLER_TRACE}-{}-01", request.id),
            "{protocol}"
        );
        for (k, want) in [
            ("http.response.status_code", "200"),
            ("http.route", "/v1/verify"),
            ("http.request.method", "POST"),
            ("tx_hash", hash.to_lowercase().as_str()),
            ("code", "SETTLED"),
            ("amount", "1000000"),
        ] {
            assert_eq!(request.attr(k), want, "{protocol} {k}: {request:#?}");
        }
        assert_eq!(request.attr("genome_id").len(), 64);

        // handler → Coalescer → its lookup → RpcPool → the JSON-RPC call
        let check = one(&trace, "Coalescer Check");
        assert_eq!(check.parent_id, request.id);
        let lookup = one(&trace, "Coalescer lookup");
        assert_eq!(lookup.parent_id, check.id);
        assert_eq!(lookup.attr("tx_hash"), hash.to_lowercase());
        assert_eq!(lookup.links, vec![(CALLER_TRACE.to_owned(), check.id.clone())]);
        let pool = one(&trace, "RpcPool Lookup");
        assert_eq!(pool.parent_id, lookup.id);
        let rpc = one(&trace, "eth_getTransactionReceipt");
        assert_eq!(rpc.parent_id, pool.id);
        assert_eq!(rpc.kind, "SPAN_KIND_CLIENT");
        assert_eq!(rpc.attr("rpc.method"), "eth_getTransactionReceipt");
        assert_eq!(rpc.attr("outcome"), "ok");
        assert_eq!(rpc.attr("server.address"), "rpc0");

        // handler → ReplayGuard → the Redis command
        let consume = one(&trace, "ReplayGuard Consume");
        assert_eq!(consume.parent_id, request.id);
        let redis = one(&trace, "put_if_absent");
        assert_eq!(redis.parent_id, consume.id);
        assert_eq!(redis.attr("db.system.name"), "redis");
        assert_eq!(redis.attr("outcome"), "inserted");

        // every log line of the request names the trace and the span
        let line = app.wait_for_log(|l| l["message"] == "request served" && l["span"]["path"] == "/v1/verify");
        assert_eq!(line["span"]["trace_id"], CALLER_TRACE);
        assert_eq!(line["span"]["span_id"], request.id.as_str());

        // nothing secret or whole travels: no credential, no URL path
        let text = collector.output();
        assert!(!text.contains("Tempo 0x"), "a credential reached the collector");

        // the metrics travel by the same protocol to the same collector
        let settled = r#"settlegate_verifications_total{status="200",code="SETTLED",reason=""}"#;
        tokio::task::block_in_place(|| {
            let deadline = std::time::Instant::now() + Duration::from_secs(15);
            while crate::collector::last_metrics_export(&collector.output()).get(settled) != Some(&1.0) {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{protocol}: no metrics export with {settled}"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_coalesced_callers_are_twenty_traces_linked_to_one_lookup() {
    let collector = Collector::start();
    let chain = Chain::start();
    // Fault injector: the node answers, 400 ms late, so the 20 checks of
    // one unknown hash overlap in one lookup.
    let slow = DelayProxy::start(&chain.url, 400);
    let w = Workdir::new();
    let mut env = chain_env(&w.genome(&Genome::single().signed()), &slow.url);
    env.insert("SETTLEGATE_RPC__PROBE_INTERVAL_MS".into(), "0".into());
    otel_env(&mut env, &collector, "http/protobuf");
    let app = Arc::new(Served::start(&env));
    // the start-up chain-id probe, slowed too, is done
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let before = chain.calls("eth_getTransactionReceipt");
    let hash = format!("0x{}", "5a".repeat(32));
    let traces: Vec<String> = (0..20).map(|i| format!("{:032x}", 0xabc000 + i)).collect();
    // spawned all at once (collected), then awaited
    let calls: Vec<_> = traces
        .iter()
        .map(|t| {
            let (app, hash, t) = (app.clone(), hash.clone(), t.clone());
            tokio::spawn(async move {
                app.verify(
                    json!({ "credential": format!("Tempo {hash}") }),
                    &[("traceparent", &format!("00-{t}-{CALLER_SPAN}-01"))],
                )
                .await
            })
        })
        .collect();
    for v in futures_join(calls.into_iter()).await {
        assert_eq!((v.status, v.code()), (402, "PAYMENT_PENDING"), "{:?}", v.body);
    }
    assert_eq!(
        chain.calls("eth_getTransactionReceipt") - before,
        1,
        "one lookup at the node"
    );
    assert_eq!(
        app.metric("settlegate_coalesced_checks_total").await,
        19,
        "19 joined the first"
    );
    let spans = tokio::task::block_in_place(|| {
        collector.wait_for(|s| {
            s.iter().filter(|s| s.name == "POST /v1/verify").count() == 20
                && s.iter().any(|s| s.name == "Coalescer lookup")
        })
    });
    let requests: Vec<&SpanRec> = spans.iter().filter(|s| s.name == "POST /v1/verify").collect();
    let mut got: Vec<&str> = requests.iter().map(|s| s.trace_id.as_str()).collect();
    got.sort();
    assert_eq!(
        got,
        traces.iter().map(String::as_str).collect::<Vec<_>>(),
        "20 traces, the callers'"
    );
    let lookup = one(&spans, "Coalescer lookup");
    assert_eq!(lookup.attr("waiters"), "20", "{lookup:#?}");
    let mut linked: Vec<&str> = lookup.links.iter().map(|(t, _)| t.as_str()).collect();
    linked.sort();
    assert_eq!(linked, got, "the lookup links every caller's trace");
    // each link names that caller's Coalescer Check span
    for (t, id) in &lookup.links {
        let check = spans
            .iter()
            .find(|s| &s.id == id)
            .expect("the linked span was exported");
        assert_eq!((&check.trace_id, check.name.as_str()), (t, "Coalescer Check"));
    }
    // every request span has its answer
    assert!(
        requests
            .iter()
            .all(|s| s.attr("code") == "PAYMENT_PENDING" && s.attr("http.response.status_code") == "402"),
        "{requests:#?}"
    );
}

/// Fault injector: `scripts/bench-tools/delay_proxy.py`, a TCP proxy to
/// `upstream` that delays every chunk of the answer by `delay_ms`.
struct DelayProxy {
    child: std::process::Child,
    url: String,
}

impl DelayProxy {
    fn start(upstream: &str, delay_ms: u64) -> DelayProxy {
        let up_port = upstream.trim_end_matches('/').rsplit(':').next().unwrap().to_owned();
        let port = free_port();
        let child = std::process::Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/scripts/bench-tools/delay_proxy.py"
            ))
            .args([port.to_string(), up_port, delay_ms.to_string()])
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "the delay proxy did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        DelayProxy {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn futures_join<T: Send + 'static>(handles: impl Iterator<Item = tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_or_hung_collector_never_fails_a_request_and_the_drops_are_counted() {
    let hung = FaultInjector::start(None);
    let dead = format!("http://127.0.0.1:{}", free_port());
    for (what, endpoint) in [("hung", hung.url.clone()), ("dead", dead)] {
        let w = Workdir::new();
        let mut env = serve_env(&w.genome(&Genome::single().signed()));
        env.insert("SETTLEGATE_OTEL__ENDPOINT".into(), endpoint);
        env.insert("SETTLEGATE_OTEL__MAX_QUEUE_SIZE".into(), "64".into());
        env.insert("SETTLEGATE_OTEL__METRICS_INTERVAL_MS".into(), "100".into());
        let app = Served::start(&env);
        for _ in 0..100 {
            let v = app.verify(json!({ "resource": "GET /reports/1" }), &[]).await;
            assert_eq!((v.status, v.code()), (402, "PAYMENT_REQUIRED"), "{what}");
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            let dropped = app.metric("settlegate_otel_spans_dropped_total").await;
            let failed_pushes = app
                .metric(r#"settlegate_otel_metric_exports_total{outcome="failed"}"#)
                .await;
            if dropped > 0 && failed_pushes > 0 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{what}: no drop counted");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(app.metric("settlegate_otel_spans_exported_total").await, 0, "{what}");
        assert_eq!(
            app.metric(r#"settlegate_otel_metric_exports_total{outcome="ok"}"#)
                .await,
            0,
            "{what}"
        );
        assert_eq!(app.get_json("/healthz").await.0, 200);
    }
}

#[test]
fn otel_settings_fall_back_to_the_standard_variables_and_bad_ones_stop_the_boot() {
    let w = Workdir::new();
    let genome = w.genome(&Genome::single().signed());
    for (k, v, says) in [
        ("SETTLEGATE_OTEL__PROTOCOL", "http/json", "otel.protocol"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "carrier-pigeon", "otel.protocol"),
        ("OTEL_RESOURCE_ATTRIBUTES", "novalue", "OTEL_RESOURCE_ATTRIBUTES"),
        ("SETTLEGATE_OTEL__MAX_QUEUE_SIZE", "1", "max_queue_size"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "soon", "OTEL_METRIC_EXPORT_INTERVAL"),
        ("SETTLEGATE_OTEL__METRICS_INTERVAL_MS", "10", "metrics_interval_ms"),
        ("SETTLEGATE_OTEL__METRICS_ENDPOINT", "nowhere", "otel.metrics_endpoint"),
    ] {
        let mut env = serve_env(&genome);
        env.insert("OTEL_EXPORTER_OTLP_ENDPOINT".into(), "http://127.0.0.1:4318".into());
        env.insert(k.into(), v.into());
        let r = run_refused(&env);
        assert!(
            r.stderr.contains("CONFIG_INVALID") && r.stderr.contains(says),
            "{k}={v}: {}",
            r.stderr
        );
    }
    let mut env = serve_env(&genome);
    env.insert("OTEL_EXPORTER_OTLP_ENDPOINT".into(), "ftp://collector".into());
    let r = run_refused(&env);
    assert!(r.stderr.contains("OTEL_EXPORTER_OTLP_ENDPOINT"), "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_standard_otel_variables_configure_export_and_settlegates_own_keys_win() {
    let collector = Collector::start();
    let w = Workdir::new();
    let genome = w.genome(&Genome::single().signed());
    for (ours, want) in [(None, "from-env"), (Some("ours"), "ours")] {
        let mut env = serve_env(&genome);
        env.insert(
            "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
            format!("http://127.0.0.1:{}", collector.http_port),
        );
        env.insert("OTEL_SERVICE_NAME".into(), "from-env".into());
        env.insert(
            "OTEL_RESOURCE_ATTRIBUTES".into(),
            "deployment.environment=test-42".into(),
        );
        if let Some(name) = ours {
            env.insert("SETTLEGATE_OTEL__SERVICE_NAME".into(), name.into());
        }
        let app = Served::start(&env);
        assert_eq!(app.get_json("/healthz").await.0, 200);
        let needle = format!("service.name: Str({want})");
        tokio::task::block_in_place(|| {
            let deadline = std::time::Instant::now() + Duration::from_secs(15);
            while !collector.output().contains(&needle) {
                assert!(
                    std::time::Instant::now() < deadline,
                    "no {needle}: {}",
                    collector.output()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        assert!(collector.output().contains("deployment.environment: Str(test-42)"));
        assert!(collector.spans().iter().any(|s| s.name == "GET /healthz"));
        if ours.is_none() {
            // a reload (SIGHUP) is its own trace
            app.sighup();
            let spans = tokio::task::block_in_place(|| {
                collector.wait_for(|s| s.iter().any(|s| s.name == "GenomeSupervisor Reload"))
            });
            let reload = one(&spans, "GenomeSupervisor Reload");
            assert_eq!((reload.attr("cause"), reload.attr("outcome")), ("Signal", "Unchanged"));
            assert_eq!(reload.parent_id, "");
        }
    }
}
