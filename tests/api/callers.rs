//! Issue 8: hostile callers. API keys on `/v1/verify` (401), rate limits per
//! caller and per client IP (429 with `Retry-After`), strict CORS, and the
//! limits that cut off oversized heads and slow clients.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::json;
use sha2::{Digest, Sha256};

use crate::chain::*;
use crate::helpers::*;

const BILLING_KEY: &str = "sg-test-key-billing-9c1f0e7d2b6a4c38a1f5e2d7";
const REPORTS_KEY: &str = "sg-test-key-reports-4b7e2a9c0d1f3e5a6b8c9d0e";

fn entry(name: &str, key: &str) -> String {
    format!("{name}:{}", hex::encode(Sha256::digest(key.as_bytes())))
}

async fn post(app: &Served, headers: &[(&str, &str)], body: serde_json::Value) -> Verified {
    let mut req = reqwest::Client::new().post(app.url("/v1/verify")).json(&body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    Verified::read(req.send().await.unwrap()).await
}

#[tokio::test]
async fn api_keys_admit_known_callers_only_and_are_never_logged() {
    let chain = Chain::start();
    let w = Workdir::new();
    let keys_file = w.path("api-keys");
    std::fs::write(
        &keys_file,
        format!("# the reports service\n{}\n", entry("reports", REPORTS_KEY)),
    )
    .unwrap();
    let mut env = chain_env(&w.genome(&Genome::single().signed()), &chain.url);
    env.insert("SETTLEGATE_CALLERS__API_KEYS".into(), entry("billing", BILLING_KEY));
    env.insert(
        "SETTLEGATE_CALLERS__API_KEYS_FILE".into(),
        keys_file.display().to_string(),
    );
    let app = Served::start(&env);
    let hash = chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000);
    let body = json!({ "tx_hash": hash });

    for (headers, why) in [
        (vec![], "no key"),
        (
            vec![("Authorization", "Bearer wrong-key-0000000000000000")],
            "a wrong key",
        ),
        (
            vec![("Authorization", format!("Bearer {BILLING_KEY}x").leak() as &str)],
            "a key one character off",
        ),
        (
            vec![("Authorization", format!("Basic {BILLING_KEY}").leak() as &str)],
            "another scheme",
        ),
        (vec![("Authorization", "Bearer ")], "an empty key"),
    ] {
        let v = post(&app, &headers, body.clone()).await;
        assert_eq!((v.status, v.code()), (401, "UNAUTHORIZED"), "{why}: {:?}", v.body);
        assert_eq!(v.header("www-authenticate"), r#"Bearer realm="settlegate""#);
        assert_eq!(v.header("content-type"), "application/problem+json");
    }
    // Refused before the body is read: a malformed body without a key is a 401 too.
    let r = reqwest::Client::new()
        .post(app.url("/v1/verify"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Both keys work, the file's and the variable's, with any case of the scheme.
    let bearer = format!("bearer {REPORTS_KEY}");
    let v = post(&app, &[("Authorization", &bearer)], body.clone()).await;
    assert_eq!(v.status, 200, "{:?}", v.body);
    let bearer = format!("Bearer {BILLING_KEY}");
    let v = post(&app, &[("Authorization", &bearer)], body.clone()).await;
    assert_eq!((v.status, v.code()), (402, "REPLAYED"));
    // The other endpoints are not the callers' business.
    assert_eq!(app.get_json("/healthz").await.0, 200);

    let logs = serde_json::to_string(&*app.logs.lock().unwrap()).unwrap();
    for secret in [BILLING_KEY, REPORTS_KEY] {
        assert!(!logs.contains(secret), "an API key was logged");
    }
    // A digest that is not 64 hex digits stops the boot.
    let mut bad = env.clone();
    bad.insert("SETTLEGATE_CALLERS__API_KEYS".into(), "billing:abc".into());
    let refused = run_refused(&bad);
    assert!(
        refused
            .stderr
            .starts_with("settlegate: CONFIG_INVALID: callers.api_keys"),
        "{}",
        refused.stderr
    );
}

#[tokio::test]
async fn rates_per_client_ip_and_per_caller_answer_429_with_retry_after() {
    let w = Workdir::new();
    let mut env = serve_env(&w.genome(&Genome::single().signed()));
    env.insert(
        "SETTLEGATE_CALLERS__API_KEYS".into(),
        format!("{},{}", entry("billing", BILLING_KEY), entry("reports", REPORTS_KEY)),
    );
    env.insert("SETTLEGATE_CALLERS__RATE_PER_CALLER_PER_SECOND".into(), "5".into());
    env.insert("SETTLEGATE_CALLERS__RATE_PER_IP_PER_SECOND".into(), "20".into());
    // Only this test's client is a "proxy", so X-Forwarded-For names the client.
    env.insert("SETTLEGATE_CALLERS__TRUSTED_PROXIES".into(), "127.0.0.1/32".into());
    let app = Served::start(&env);
    let ask = json!({ "resource": "GET /reports/1" });
    let billing = format!("Bearer {BILLING_KEY}");
    let reports = format!("Bearer {REPORTS_KEY}");

    // Per caller: five a second for billing, then 429; reports is not affected.
    // Tokens refill while the requests run (one per 200 ms here, one per
    // 50 ms below): the counts allow for the time the loop took.
    let refilled = |since: Instant, rate: f64| (since.elapsed().as_secs_f64() * rate).ceil() as usize;
    let mut codes = Vec::new();
    let started = Instant::now();
    for _ in 0..8 {
        let v = post(
            &app,
            &[("Authorization", &billing), ("X-Forwarded-For", "198.51.100.1")],
            ask.clone(),
        )
        .await;
        codes.push(v.status);
        if v.status == 429 {
            assert_eq!(v.code(), "RATE_LIMITED");
            assert_eq!(v.header("retry-after"), "1");
        }
    }
    let admitted = codes.iter().filter(|c| **c == 402).count();
    assert!(codes[..5].iter().all(|c| *c == 402), "a burst of five: {codes:?}");
    assert!((5..=5 + refilled(started, 5.0)).contains(&admitted), "{codes:?}");
    assert_eq!(codes.iter().filter(|c| **c == 429).count(), 8 - admitted, "{codes:?}");
    let mut limited = 8 - admitted;
    let v = post(
        &app,
        &[("Authorization", &reports), ("X-Forwarded-For", "198.51.100.2")],
        ask.clone(),
    )
    .await;
    assert_eq!(v.status, 402, "another caller has its own budget");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let v = post(
        &app,
        &[("Authorization", &billing), ("X-Forwarded-For", "198.51.100.1")],
        ask.clone(),
    )
    .await;
    assert_eq!(v.status, 402, "the budget refills");

    // Per client IP, before the key is even looked at: a client without a
    // key gets its 401s until it has spent its twenty, then 429s.
    let mut codes = Vec::new();
    let started = Instant::now();
    for _ in 0..25 {
        codes.push(
            post(&app, &[("X-Forwarded-For", "203.0.113.9")], ask.clone())
                .await
                .status,
        );
    }
    let unauthorized = codes.iter().filter(|c| **c == 401).count();
    assert!(codes[..20].iter().all(|c| *c == 401), "a burst of twenty: {codes:?}");
    assert!(unauthorized <= 20 + refilled(started, 20.0), "{codes:?}");
    assert!(codes.contains(&429), "{codes:?}");
    assert_eq!(
        codes.iter().filter(|c| **c == 429).count(),
        25 - unauthorized,
        "{codes:?}"
    );
    limited += 25 - unauthorized;
    // Another client IP is not affected.
    let v = post(
        &app,
        &[("Authorization", &reports), ("X-Forwarded-For", "203.0.113.10")],
        ask.clone(),
    )
    .await;
    assert_eq!(v.status, 402);
    assert_eq!(
        app.metric("settlegate_http_requests_total{route=\"/v1/verify\",status=\"429\"}")
            .await as usize,
        limited
    );
}

#[tokio::test]
async fn cors_answers_preflights_as_configured_and_only_for_the_allowed_origin() {
    let w = Workdir::new();
    let mut env = serve_env(&w.genome(&Genome::single().signed()));
    env.insert("SETTLEGATE_CORS__ALLOWED_ORIGINS".into(), "https://app.example".into());
    env.insert("SETTLEGATE_CORS__MAX_AGE_SECONDS".into(), "120".into());
    let app = Served::start(&env);
    let client = reqwest::Client::new();
    let preflight = |origin: &'static str| {
        client
            .request(reqwest::Method::OPTIONS, app.url("/v1/verify"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header(
                "Access-Control-Request-Headers",
                "authorization, content-type, idempotency-key",
            )
            .send()
    };
    let r = preflight("https://app.example").await.unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example");
    let allowed = h["access-control-allow-headers"].to_str().unwrap().to_ascii_lowercase();
    for name in ["authorization", "content-type", "idempotency-key"] {
        assert!(allowed.contains(name), "{allowed}");
    }
    assert!(h["access-control-allow-methods"].to_str().unwrap().contains("POST"));
    assert_eq!(h["access-control-max-age"], "120");

    let r = preflight("https://evil.example").await.unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());
    assert!(!r.headers().contains_key("access-control-allow-origin"));

    // The answer itself exposes what a paying browser client must read.
    let r = client
        .post(app.url("/v1/verify"))
        .header("Origin", "https://app.example")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 402);
    assert_eq!(r.headers()["access-control-allow-origin"], "https://app.example");
    let exposed = r.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    for name in ["www-authenticate", "payment-receipt", "retry-after", "x-request-id"] {
        assert!(exposed.contains(name), "{exposed}");
    }
    // Without the configuration there are no CORS headers at all.
    let w2 = Workdir::new();
    let plain = Served::start(&serve_env(&w2.genome(&Genome::single().signed())));
    let r = client
        .post(plain.url("/v1/verify"))
        .header("Origin", "https://app.example")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert!(!r.headers().contains_key("access-control-allow-origin"));
}

/// Raw bytes to the service; what it answered before closing (or within 5 s).
fn raw(addr: &str, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_and_slow_clients_are_cut_off() {
    let w = Workdir::new();
    let mut env = serve_env(&w.genome(&Genome::single().signed()));
    env.insert("SETTLEGATE_SERVER__CLIENT_REQUEST_TIMEOUT_MS".into(), "500".into());
    let app = Served::start(&env);
    let addr = app.addr.to_string();
    tokio::task::block_in_place(|| {
        // a header of 64 KiB
        let big = format!(
            "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: {}\r\n\r\n",
            "a".repeat(64 * 1024)
        );
        let answer = raw(&addr, big.as_bytes());
        assert!(answer.starts_with("HTTP/1.1 431"), "{answer:.80}");
        assert!(answer.contains("HEADERS_TOO_LARGE"), "{answer}");
        // a head beyond what actix-http reads at all (128 KiB)
        let huge = format!(
            "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: {}\r\n\r\n",
            "a".repeat(200 * 1024)
        );
        let answer = raw(&addr, huge.as_bytes());
        assert!(answer.starts_with("HTTP/1.1 431") || answer.is_empty(), "{answer:.80}");
        // a URI of 16 KiB
        let long = format!(
            "GET /{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            "a".repeat(16 * 1024)
        );
        let answer = raw(&addr, long.as_bytes());
        assert!(answer.starts_with("HTTP/1.1 414"), "{answer:.80}");
        assert!(answer.contains("URI_TOO_LONG"), "{answer}");
        // more headers than a request needs (and more than actix-http takes)
        for n in [80, 200] {
            let many: String = (0..n).map(|i| format!("X-H{i}: v\r\n")).collect();
            let answer = raw(
                &addr,
                format!("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{many}\r\n").as_bytes(),
            );
            assert!(answer.starts_with("HTTP/1.1 431"), "{n} headers: {answer:.80}");
        }
        // a request just within the limits is served
        let fine = format!(
            "GET /healthz?{} HTTP/1.1\r\nHost: x\r\nX-Ok: {}\r\nConnection: close\r\n\r\n",
            "q".repeat(4000),
            "v".repeat(8000)
        );
        assert!(raw(&addr, fine.as_bytes()).starts_with("HTTP/1.1 200"));

        // slow-loris: a head that never ends is answered 408 and closed
        // after the configured 500 ms, while others are served meanwhile
        let started = Instant::now();
        let mut slow = TcpStream::connect(&addr).unwrap();
        slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        slow.write_all(b"POST /v1/verify HTTP/1.1\r\nHost: x\r\n").unwrap();
        assert!(
            raw(&addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").starts_with("HTTP/1.1 200")
        );
        let mut out = Vec::new();
        let _ = slow.read_to_end(&mut out);
        let took = started.elapsed();
        assert!(
            String::from_utf8_lossy(&out).starts_with("HTTP/1.1 408"),
            "{}",
            String::from_utf8_lossy(&out)
        );
        assert!(
            took >= Duration::from_millis(450) && took < Duration::from_secs(3),
            "{took:?}"
        );
    });
    assert_eq!(app.get_json("/healthz").await.0, 200, "still serving");
}
