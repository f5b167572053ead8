//! Issue 8: no secret ever appears in a log line, span attribute, metric
//! label or answer. One service gets every kind of secret (a Redis password,
//! RPC credentials in the URL and its query, the current and previous
//! `Payment` secrets, one of them from a file), logs at debug level, exports
//! to a real collector, and goes through settling, refusing, malformed input
//! and both dependencies failing. Everything it said is then searched for
//! every secret. (`scripts/test` also greps what every test's services
//! printed and exported: `scripts/check-log-secrets`.)

use serde_json::json;

use crate::chain::*;
use crate::collector::Collector;
use crate::helpers::*;

/// Dev account 3's key, without its `0x`: the fee sponsor's.
const SPONSOR_KEY: &str = "7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6";
const REDIS_PASSWORD: &str = "redis-pass-Zq81xv0PqTw";
const RPC_PASSWORD: &str = "rpc-pass-Mm27dfhQ4nc";
const RPC_KEY: &str = "rpc-key-Yt55kwWq0Lr";
const DEAD_RPC_PASSWORD: &str = "dead-rpc-pass-Kd09ssqE2";
const PAYMENT_SECRET: &str = "payment-secret-from-a-file-Hh47vvBq2mXw0Lp";
const PREVIOUS_SECRET: &str = "previous-payment-secret-Ue31ccNn8zYq5Tk";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_configured_secret_reaches_a_log_line_a_span_a_metric_or_an_answer() {
    let mut chain = Chain::start();
    let mut redis = OwnRedis::start_with(free_port(), &["--save", "", "--requirepass", REDIS_PASSWORD]);
    let collector = Collector::start_with_metrics();
    let w = Workdir::new();
    let secret_file = w.path("payment.secret");
    std::fs::write(&secret_file, PAYMENT_SECRET).unwrap();
    let chain_port = chain.url.rsplit(':').next().unwrap().trim_end_matches('/').to_owned();
    // A sponsored genome, with the sponsor's key in a file: the key never
    // shows either.
    let sponsor_key = w.path("sponsor.key");
    std::fs::write(&sponsor_key, format!("0x{SPONSOR_KEY}\n")).unwrap();
    let genome = Genome::single()
        .set("/settlement/default_price/fee_payer", json!(true))
        .set(
            "/settlement/sponsorship",
            json!({"fee_tokens": ["0x20c0000000000000000000000000000000000000"], "max_gas": 2_000_000,
                "max_fee_per_gas": "100000000000", "max_priority_fee_per_gas": "0", "max_total_fee": "50000",
                "budget": "1000000", "period_seconds": 86_400}),
        );
    let mut env = chain_env(&w.genome(&genome.signed()), &chain.url);
    env.insert("SETTLEGATE_SPONSOR__KEY_FILE".into(), sponsor_key.display().to_string());
    env.insert(
        "SETTLEGATE_REDIS__URL".into(),
        format!("redis://:{REDIS_PASSWORD}@127.0.0.1:{}", redis.port),
    );
    env.insert("SETTLEGATE_REDIS__TIMEOUT_MS".into(), "300".into());
    env.insert(
        "SETTLEGATE_RPC__URLS".into(),
        format!(
            "http://payer:{RPC_PASSWORD}@127.0.0.1:{chain_port}/?apikey={RPC_KEY},http://u:{DEAD_RPC_PASSWORD}@127.0.0.1:{}",
            free_port()
        ),
    );
    env.insert("SETTLEGATE_RPC__TIMEOUT_MS".into(), "300".into());
    env.insert(
        "SETTLEGATE_PAYMENT__SECRET_FILE".into(),
        secret_file.display().to_string(),
    );
    env.insert("SETTLEGATE_PAYMENT__PREVIOUS_SECRET".into(), PREVIOUS_SECRET.into());
    env.insert(
        "SETTLEGATE_PAYMENT__PREVIOUS_SECRET_UNTIL".into(),
        "2099-01-01T00:00:00Z".into(),
    );
    env.insert(
        "SETTLEGATE_OTEL__ENDPOINT".into(),
        format!("http://127.0.0.1:{}", collector.http_port),
    );
    env.insert("OTEL_METRIC_EXPORT_INTERVAL".into(), "200".into());
    env.insert("RUST_LOG".into(), "debug".into());
    let app = Served::start(&env);

    let mut said = Vec::new();
    let mut keep = |v: &Verified| said.push(format!("{:?} {}", v.headers, v.body));
    // settle, replay, refuse, malformed input of every kind
    let paid = chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000);
    let v = app.verify_hash(&paid).await;
    assert_eq!(v.status, 200, "{:?}", v.body);
    keep(&v);
    keep(&app.verify_hash(&paid).await);
    let under = chain.transfer(ALPHA_USD, RECIPIENT, 1);
    keep(&app.verify_hash(&under).await);
    for body in [
        json!({}),
        json!({"credential": "Payment not-base64!"}),
        json!({"credential": "Tempo 0x12"}),
        json!({"credential": "Bearer abc", "resource": "GET /x"}),
    ] {
        keep(&app.verify(body, &[]).await);
    }
    // the replay store, then the chain, fail
    redis.stop();
    let v = app.verify_hash(&chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000)).await;
    assert_eq!((v.status, v.code()), (503, "REPLAY_STORE_UNAVAILABLE"), "{:?}", v.body);
    keep(&v);
    chain.stop();
    let v = app.verify_hash(&format!("0x{}", "4d".repeat(32))).await;
    assert_eq!(v.status, 503, "{:?}", v.body);
    keep(&v);
    for path in ["/readyz", "/metrics", "/v1/genome"] {
        said.push(reqwest::get(app.url(path)).await.unwrap().text().await.unwrap());
    }
    // the exports of the last seconds reach the collector
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    said.push(collector.output());
    said.push(
        app.logs
            .lock()
            .unwrap()
            .iter()
            .map(|l| l.to_string())
            .collect::<Vec<_>>()
            .join("\n"),
    );

    let everything = said.join("\n");
    assert!(everything.contains("REPLAY_STORE_UNAVAILABLE") && everything.contains("settlegate_"));
    assert!(everything.contains("\"level\":\"DEBUG\""), "debug logging was on");
    assert!(
        collector.output().contains("settlegate"),
        "the collector received the exports"
    );
    for secret in [
        REDIS_PASSWORD,
        RPC_PASSWORD,
        RPC_KEY,
        DEAD_RPC_PASSWORD,
        PAYMENT_SECRET,
        PREVIOUS_SECRET,
        SPONSOR_KEY,
    ] {
        if let Some(at) = everything.find(secret) {
            let from = at.saturating_sub(200);
            panic!(
                "a configured secret was said: …{}…",
                &everything[from..at].replace(secret, "<SECRET>")
            );
        }
    }
}

/// The probe's finding: a node answering with an error that quotes its
/// URL's key and host had `/readyz` and seven log lines repeat it. What a
/// node says leaves the process only as a category (`/readyz`) or scrubbed
/// of its URL's secret parts (logs): neither the key nor, unless hosts are
/// exposed, the host shows in `/readyz`, `/metrics`, a 402 or 503 body or
/// any log line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nodes_error_text_never_carries_its_urls_key_or_host_out() {
    const KEY: &str = "KEY-SECRET2-Wd83nq";
    const HOST: &str = "127.83.1.7";
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":1,"error":{{"code":-32000,"message":"invalid api key {KEY} (https://{HOST}/v2/{KEY}?apikey={KEY})"}}}}"#
    );
    let reply = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let node = FaultInjector::start_on(
        &format!("{HOST}:0"),
        Some(Box::leak(reply.into_bytes().into_boxed_slice())),
    );
    for expose in [false, true] {
        let w = Workdir::new();
        let url = format!("{}/v2/{KEY}?apikey={KEY}", node.url);
        let mut env = chain_env(&w.genome(&Genome::single().signed()), &url);
        env.insert("SETTLEGATE_RPC__EXPOSE_ENDPOINT_HOSTS".into(), expose.to_string());
        env.insert("SETTLEGATE_RPC__TIMEOUT_MS".into(), "300".into());
        env.insert("RUST_LOG".into(), "debug".into());
        let app = Served::start(&env);
        let mut said = Vec::new();
        let readyz = reqwest::get(app.url("/readyz")).await.unwrap().text().await.unwrap();
        said.push(readyz);
        let v = app.verify(json!({}), &[]).await;
        assert_eq!(v.status, 402, "{:?}", v.body);
        said.push(format!("{:?} {}", v.headers, v.body));
        let v = app.verify_hash(&format!("0x{}", "4d".repeat(32))).await;
        assert_eq!((v.status, v.code()), (503, "RPC_UNAVAILABLE"), "{:?}", v.body);
        said.push(format!("{:?} {}", v.headers, v.body));
        said.push(reqwest::get(app.url("/readyz")).await.unwrap().text().await.unwrap());
        said.push(reqwest::get(app.url("/metrics")).await.unwrap().text().await.unwrap());
        app.wait_for_log(|l| l["message"] == "RPC endpoint did not tell its chain id");
        said.push(
            app.logs
                .lock()
                .unwrap()
                .iter()
                .map(|l| l.to_string())
                .collect::<Vec<_>>()
                .join("\n"),
        );
        let everything = said.join("\n");
        assert!(node.requests() > 0, "the node was asked");
        if let Some(at) = everything.find(KEY) {
            panic!(
                "expose {expose}: the key was said: …{}",
                &everything[at.saturating_sub(300)..at]
            );
        }
        assert!(
            everything.contains(r#""last_error":"json_rpc_error -32000""#),
            "{everything}"
        );
        if expose {
            assert!(
                everything.contains(&format!("http://{HOST}:")),
                "the label shows the host"
            );
        } else if let Some(at) = everything.find(HOST) {
            panic!("the host was said: …{}", &everything[at.saturating_sub(300)..at]);
        }
        // the node's words reach the logs, scrubbed
        assert!(everything.contains("invalid api key [redacted]"), "{everything}");
    }
}
