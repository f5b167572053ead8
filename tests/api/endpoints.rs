//! Operational endpoints and the response conventions of API.md.

use serde_json::{Value, json};

use crate::helpers::*;

fn start(g: Genome) -> (Workdir, Served) {
    let w = Workdir::new();
    let app = Served::start(&serve_env(&w.genome(&g)));
    (w, app)
}

#[tokio::test]
async fn readyz_needs_the_genome_the_replay_store_and_a_healthy_rpc_endpoint() {
    let chain = crate::chain::Chain::start();
    let g = Genome::single().signed();
    let w = Workdir::new();
    let app = Served::start(&chain_env(&w.genome(&g), &chain.url));
    assert_eq!(app.get_json("/healthz").await, (200, json!({"status": "ok"})));
    let (status, body) = app.get_json("/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ready");
    assert_eq!(body["components"]["genome"]["state"], "verified");
    assert_eq!(body["components"]["genome"]["genome_id"], g.id());
    assert_eq!(body["components"]["replay_store"]["state"], "ok");
    assert_eq!(body["components"]["replay_store"]["backend"], "redis");
    assert_eq!(body["components"]["rpc"]["endpoints"][0]["state"], "healthy");
    assert_eq!(body["components"]["rpc"]["endpoints"][0]["chain_id"], 42431);

    // without a reachable RPC endpoint the service is alive but not ready
    let (_w2, dead) = start(Genome::single().signed());
    let (status, body) = dead.get_json("/readyz").await;
    assert_eq!(status, 503);
    assert_eq!(body["status"], "not_ready");
    assert_eq!(body["components"]["rpc"]["state"], "unavailable");
    assert_eq!(body["components"]["genome"]["state"], "verified");
    assert_eq!(body["components"]["replay_store"]["backend"], "local");
    assert_eq!(dead.get_json("/healthz").await.0, 200);
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_echoes_a_sane_one() {
    let (_w, app) = start(Genome::single().signed());
    let client = reqwest::Client::new();
    for path in ["/healthz", "/nope", "/v1/genome"] {
        let r = client.get(app.url(path)).send().await.unwrap();
        let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert_eq!(id.len(), 32, "{path}: generated ids are 128-bit hex");
        let r = client
            .get(app.url(path))
            .header("X-Request-Id", "caller-id.42")
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["x-request-id"], "caller-id.42", "{path}");
    }
    // an id that could forge log lines is replaced, not echoed
    let r = client
        .get(app.url("/healthz"))
        .header("X-Request-Id", "a\"b} {evil")
        .send()
        .await
        .unwrap();
    assert_ne!(r.headers()["x-request-id"], "a\"b} {evil");
    let r = client
        .get(app.url("/healthz"))
        .header("X-Request-Id", "x".repeat(200))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"].len(), 32);
}

#[tokio::test]
async fn unknown_routes_and_methods_get_problem_json() {
    let (_w, app) = start(Genome::single().signed());
    let client = reqwest::Client::new();
    let r = client.get(app.url("/v1/nothing")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "NOT_FOUND");
    assert_eq!(body["type"], "urn:settlegate:problem:not-found");
    assert_eq!(body["status"], 404);
    let r = client.delete(app.url("/v1/genome")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "METHOD_NOT_ALLOWED");
}

#[tokio::test]
async fn the_capability_ceiling_denies_what_the_genome_does_not_allow() {
    let g = Genome::single()
        .set("/capabilities", json!([
            {"cap_id": "A", "risk_class": "A", "allow_actions": ["genome.read", "metrics.read"], "deny_actions": []},
            {"cap_id": "B", "risk_class": "A", "allow_actions": [], "deny_actions": ["metrics.read"]}
        ]))
        .signed();
    let (_w, app) = start(g);
    assert_eq!(app.get_json("/v1/genome").await.0, 200);
    let (status, body) = app.get_json("/metrics").await;
    assert_eq!(status, 403);
    assert_eq!(body["code"], "CAPABILITY_DENIED");

    // an empty list denies everything the genome governs, not health
    let (_w2, app) = start(Genome::single().set("/capabilities", json!([])).signed());
    assert_eq!(app.get_json("/v1/genome").await.0, 403);
    assert_eq!(app.get_json("/metrics").await.0, 403);
    assert_eq!(app.get_json("/healthz").await.0, 200);
    assert_eq!(
        app.get_json("/readyz").await.1["components"]["genome"]["state"],
        "verified"
    );
    let v = app.verify_hash(&format!("0x{}", "ab".repeat(32))).await;
    assert_eq!((v.status, v.code()), (403, "CAPABILITY_DENIED"));
}

#[tokio::test]
async fn metrics_count_responses_by_route_and_status() {
    let (_w, app) = start(Genome::single().signed());
    app.get_json("/healthz").await;
    app.get_json("/nope").await;
    let text = reqwest::get(app.url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(
        text.contains(r#"settlegate_http_requests_total{route="/healthz",status="200"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"settlegate_http_requests_total{route="unmatched",status="404"} 1"#),
        "{text}"
    );
}

#[tokio::test]
async fn every_request_is_one_structured_log_line_with_its_request_id() {
    let (_w, app) = start(Genome::single().signed());
    reqwest::Client::new()
        .get(app.url("/healthz"))
        .header("X-Request-Id", "trace-me-1")
        .send()
        .await
        .unwrap();
    let line = app.wait_for_log(|v| v["message"] == "request served" && v["span"]["request_id"] == "trace-me-1");
    assert_eq!(line["status"], 200);
    assert_eq!(line["span"]["path"], "/healthz");
}

#[test]
fn log_format_text_writes_human_readable_lines_and_a_bad_format_stops_the_boot() {
    use std::io::{BufRead, BufReader};
    let w = Workdir::new();
    let mut env = serve_env(&w.genome(&Genome::single().signed()));
    env.insert("SETTLEGATE_LOG__FORMAT".into(), "text".into());
    let mut child = command(&["serve"], &env)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let line = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .take(20)
        .map_while(Result::ok)
        .find(|l| l.contains("listening"))
        .unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    assert!(line.contains("INFO") && line.contains("listening"), "{line}");
    assert!(serde_json::from_str::<Value>(&line).is_err(), "not JSON: {line}");

    env.insert("SETTLEGATE_LOG__FORMAT".into(), "xml".into());
    let r = run_refused(&env);
    assert!(
        r.stderr.contains("CONFIG_INVALID") && r.stderr.contains("log.format"),
        "{}",
        r.stderr
    );
}

#[tokio::test]
async fn a_request_that_does_not_parse_is_a_400_and_a_warning_not_an_error() {
    use std::io::{Read, Write};
    let (_w, app) = start(Genome::single().signed());
    let addr = app.url("").trim_start_matches("http://").to_owned();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Bad: a\0b\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    let line = app.wait_for_log(|l| l["message"].as_str().is_some_and(|m| m.contains("request parse error")));
    assert_eq!(
        line["level"], "WARN",
        "a client's bad bytes are not the service's error: {line}"
    );
    assert_eq!(app.log_count(|l| l["level"] == "ERROR"), 0);
}

/// Probe finding 8d: `/readyz` and `/metrics` showed every RPC endpoint's
/// host and port to whoever reached the port. Endpoints are named `rpc0`,
/// `rpc1`, … (configuration order) in `/readyz`, metric labels and logs,
/// unless the operator opts in to hosts.
#[tokio::test]
async fn rpc_endpoints_are_named_not_located_unless_the_operator_opts_in() {
    let chain = crate::chain::Chain::start();
    let w = Workdir::new();
    let genome = w.genome(&Genome::single().signed());
    // A second endpoint that refuses connections: it is logged and shown
    // as failing, which is where a host would leak.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let mut env = chain_env(&genome, &format!("{},{dead}", chain.url));
    let app = Served::start(&env);
    let hash = chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000);
    assert_eq!(app.verify_hash(&hash).await.status, 200);
    let (_, ready) = app.get_json("/readyz").await;
    let endpoints = &ready["components"]["rpc"]["endpoints"];
    assert_eq!(endpoints[0]["endpoint"], "rpc0", "{ready}");
    assert_eq!(endpoints[0]["state"], "healthy", "{ready}");
    assert_eq!(endpoints[1]["endpoint"], "rpc1", "{ready}");
    assert_ne!(endpoints[1]["state"], "healthy", "{ready}");
    let metrics = reqwest::get(app.url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"endpoint="rpc0""#), "{metrics}");
    app.wait_for_log(|l| l.to_string().contains("rpc1"));
    let hosts = [format!("127.0.0.1:{}", chain.port), dead["http://".len()..].to_owned()];
    for host in &hosts {
        assert!(!ready.to_string().contains(host.as_str()), "{host} in {ready}");
        assert!(!metrics.contains(host.as_str()), "{host} in /metrics");
        assert_eq!(
            app.log_count(|l| l.to_string().contains(host.as_str())),
            0,
            "{host} in the logs"
        );
    }

    // Opted in: the operator sees scheme://host:port (never more).
    env.insert("SETTLEGATE_RPC__EXPOSE_ENDPOINT_HOSTS".into(), "true".into());
    let shown = Served::start(&env);
    let (_, ready) = shown.get_json("/readyz").await;
    assert_eq!(
        ready["components"]["rpc"]["endpoints"][0]["endpoint"], chain.url,
        "{ready}"
    );
    assert_eq!(ready["components"]["rpc"]["endpoints"][1]["endpoint"], dead, "{ready}");
}
