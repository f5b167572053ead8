//! `GET /v1/authorize` behind a real reverse proxy: the paying client talks
//! to Caddy only (`forward_auth`, tests/api/proxy.rs), which asks the gate
//! about every request, on the real dev chain and the shared Redis. What
//! reaches the protected application is counted there, in its own access
//! log; a test never takes the gate's word for it.

use serde_json::json;

use crate::chain::*;
use crate::helpers::*;
use crate::proxy::Caddy;

/// A chain, the gate on it, Caddy in front of the gate, and the workdir.
struct Setup {
    chain: Chain,
    app: Served,
    caddy: Caddy,
    client: reqwest::Client,
    _w: Workdir,
}

fn setup_with(g: Genome) -> Setup {
    let chain = Chain::start();
    let w = Workdir::new();
    let app = Served::start(&chain_env(&w.genome(&g.signed()), &chain.url));
    let caddy = Caddy::start(app.addr);
    Setup {
        chain,
        app,
        caddy,
        client: http_client(),
        _w: w,
    }
}

fn setup() -> Setup {
    setup_with(Genome::single())
}

impl Setup {
    /// `method path` through the proxy, with extra headers.
    async fn call(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Verified {
        send(&self.client, method, &self.caddy.url(path), headers).await
    }

    /// `GET path` through the proxy with `Authorization: Tempo <hash>`.
    async fn get_paid(&self, path: &str, hash: &str) -> Verified {
        self.get_paid_with(path, hash, &[]).await
    }

    /// [`Setup::get_paid`] with more headers.
    async fn get_paid_with(&self, path: &str, hash: &str, extra: &[(&str, &str)]) -> Verified {
        let credential = format!("Tempo {hash}");
        let mut headers = vec![("authorization", credential.as_str())];
        headers.extend_from_slice(extra);
        self.call("GET", path, &headers).await
    }
}

async fn send(client: &reqwest::Client, method: &str, url: &str, headers: &[(&str, &str)]) -> Verified {
    let mut req = client.request(method.parse().unwrap(), url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    Verified::read(req.send().await.unwrap()).await
}

/// Every `WWW-Authenticate` line of an answer, in order.
fn challenges(v: &Verified) -> Vec<String> {
    v.headers
        .get_all("www-authenticate")
        .iter()
        .map(|h| h.to_str().unwrap().to_owned())
        .collect()
}

/// Whether the body is the protected application's echo (no answer of the
/// gate says `"upstream": "reached"`).
fn from_upstream(v: &Verified) -> bool {
    v.body["upstream"] == "reached"
}

fn upper(hash: &str) -> String {
    format!("0x{}", hash[2..].to_uppercase())
}

#[tokio::test]
async fn an_unpaid_request_gets_the_gates_402_with_both_challenges_through_the_proxy() {
    let s = setup();
    let v = s.call("GET", "/paid/x", &[]).await;
    assert_eq!((v.status, v.code()), (402, "PAYMENT_REQUIRED"), "{:?}", v.body);
    assert_eq!(v.header("content-type"), "application/problem+json");
    assert_eq!(v.header("cache-control"), "no-store");
    assert_eq!(
        v.body["paymentInfo"],
        json!({"method": "tempo", "recipient": RECIPIENT, "amount": "1000000", "token": ALPHA_USD, "chainId": 42431})
    );
    // Both challenges reach the client as two header lines, intact.
    let lines = challenges(&v);
    assert_eq!(lines.len(), 2, "{lines:?}");
    let tempo: Vec<_> = lines.iter().filter(|l| l.starts_with("Tempo realm=")).collect();
    assert_eq!(
        tempo,
        [&format!(
            r#"Tempo realm="Tempo API", asset="{ALPHA_USD}", amount="1000000", destination="{RECIPIENT}", chainId="42431""#
        )]
    );
    let payment: Vec<_> = lines.iter().filter(|l| l.starts_with("Payment id=")).collect();
    assert_eq!(payment.len(), 1, "{lines:?}");
    for param in [
        r#"method="tempo""#,
        r#"intent="charge""#,
        "realm=",
        "request=",
        "expires=",
    ] {
        assert!(payment[0].contains(param), "{param} missing from {}", payment[0]);
    }
    assert_eq!(s.caddy.upstream_hits(), 0);
}

#[tokio::test]
async fn a_paid_request_reaches_the_application_once_with_the_settlement_headers() {
    let s = setup();
    let hash = s.chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000);
    // any spelling of the hash is the same payment
    let v = s.get_paid("/paid/x", &upper(&hash)).await;
    assert_eq!(v.status, 200, "{:?}", v.body);
    assert!(from_upstream(&v), "{:?}", v.body);
    assert_eq!(v.body["path"], "/paid/x");
    assert_eq!(v.body["x_settlement_tx"], hash.to_lowercase());
    assert_eq!(v.body["x_settlement_payer"], PAYER);
    assert_eq!(v.body["x_settlement_amount"], "1000000");
    assert_eq!(s.caddy.upstream_hits(), 1);

    // The same credential again, and its lower-case twin: refused by the
    // gate, and the application never sees them.
    for spelling in [upper(&hash), hash.to_lowercase()] {
        let again = s.get_paid("/paid/x", &spelling).await;
        assert_eq!((again.status, again.code()), (402, "REPLAYED"), "{:?}", again.body);
        assert_eq!(again.header("content-type"), "application/problem+json");
        assert!(!from_upstream(&again));
    }
    assert_eq!(s.caddy.upstream_hits(), 1);
}

#[tokio::test]
async fn settlement_headers_a_client_forges_never_reach_the_application() {
    let s = setup();
    let forged = [
        ("x-settlement-payer", STRANGER),
        ("x-settlement-tx", "0xforged"),
        ("x-settlement-amount", "999999999999"),
        ("payment-receipt", "forged"),
    ];
    let v = s.call("GET", "/paid/x", &forged).await;
    assert_eq!((v.status, v.code()), (402, "PAYMENT_REQUIRED"));
    assert_eq!(s.caddy.upstream_hits(), 0);

    let hash = s.chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000);
    let v = s.get_paid_with("/paid/x", &hash, &forged).await;
    assert_eq!(v.status, 200, "{:?}", v.body);
    assert_eq!(v.body["x_settlement_payer"], PAYER);
    assert_eq!(v.body["x_settlement_tx"], hash.to_lowercase());
    assert_eq!(v.body["x_settlement_amount"], "1000000");
    // A Tempo-scheme settlement has no receipt; the client's must not pass
    // for one.
    assert!(
        !v.body["payment_receipt"].as_str().unwrap().contains("forged"),
        "{:?}",
        v.body
    );
}

#[tokio::test]
async fn route_prices_follow_the_forwarded_method_and_uri() {
    let g = Genome::single().set(
        "/settlement/prices",
        json!([{"resource": "GET /dear/*", "amount": "2500000"}]),
    );
    let s = setup_with(g);
    let v = s.call("GET", "/dear/1", &[]).await;
    assert_eq!((v.status, v.code()), (402, "PAYMENT_REQUIRED"));
    assert_eq!(v.body["paymentInfo"]["amount"], "2500000");
    assert!(
        challenges(&v)
            .iter()
            .any(|l| l.starts_with("Tempo ") && l.contains(r#"amount="2500000""#)),
        "{:?}",
        challenges(&v)
    );
    // the default price elsewhere, and for another method on the same path
    assert_eq!(
        s.call("GET", "/paid/x", &[]).await.body["paymentInfo"]["amount"],
        "1000000"
    );
    assert_eq!(
        s.call("POST", "/dear/1", &[]).await.body["paymentInfo"]["amount"],
        "1000000"
    );

    let small = s.chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000);
    let v = s.get_paid("/dear/1", &small).await;
    assert_eq!(
        (v.status, v.code(), v.reason()),
        (402, "VERIFICATION_FAILED", "insufficient_amount"),
        "{:?}",
        v.body
    );
    assert_eq!(s.caddy.upstream_hits(), 0);

    let big = s.chain.transfer(ALPHA_USD, RECIPIENT, 2_500_000);
    let v = s.get_paid("/dear/1", &big).await;
    assert_eq!(v.status, 200, "{:?}", v.body);
    assert_eq!(
        (v.body["path"].as_str(), v.body["x_settlement_amount"].as_str()),
        (Some("/dear/1"), Some("2500000"))
    );

    // the refusal did not consume the small payment: it buys a cheap route
    let v = s.get_paid("/paid/x", &small).await;
    assert_eq!(v.status, 200, "{:?}", v.body);
    assert_eq!(s.caddy.upstream_hits(), 2);
}

/// Issue 22, finding 2: one payment and one key bought 31 requests through
/// the proxy, each with another query and body. A retry is the same method,
/// path **and query**, and the same `Content-Digest`, with the same key:
/// only that reaches the application again.
#[tokio::test]
async fn an_idempotent_retry_through_the_proxy_must_repeat_the_whole_request() {
    let s = setup();
    let hash = s.chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000);
    let (s, hash) = (&s, &hash);
    const KEY: &str = "7c9e6679-7425-40de-944b-e07fc1f90ae7";
    const DIGEST: &str = "sha-256=:RK/0qy18MlBSVnWgjwz6lZEWjP/lF5HF9bvEF8FabDg=:";
    let call = |path: &'static str, key: &'static str, digest: Option<&'static str>| async move {
        let mut h = vec![("idempotency-key", key)];
        h.extend(digest.map(|d| ("content-digest", d)));
        s.get_paid_with(path, hash, &h).await
    };
    let first = call("/paid/x?order=1", KEY, Some(DIGEST)).await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    assert_eq!(first.body["uri"], "/paid/x?order=1");
    let retry = call("/paid/x?order=1", KEY, Some(DIGEST)).await;
    assert_eq!(retry.status, 200, "{:?}", retry.body);
    assert_eq!(retry.body["x_settlement_tx"], hash.to_lowercase());
    assert_eq!(s.caddy.upstream_hits(), 2);

    // the same key with another query, body digest, path or key: a replay
    for (path, key, digest) in [
        ("/paid/x?order=2", KEY, Some(DIGEST)),
        ("/paid/x", KEY, Some(DIGEST)),
        ("/paid/x?order=1&order=2", KEY, Some(DIGEST)),
        (
            "/paid/x?order=1",
            KEY,
            Some("sha-256=:AAAAqy18MlBSVnWgjwz6lZEWjP/lF5HF9bvEF8FabDg=:"),
        ),
        ("/paid/x?order=1", KEY, None),
        ("/paid/y?order=1", KEY, Some(DIGEST)),
        ("/paid/x?order=1", "7c9e6679-7425-40de-944b-e07fc1f90ae8", Some(DIGEST)),
    ] {
        let v = call(path, key, digest).await;
        assert_eq!(
            (v.status, v.code()),
            (402, "REPLAYED"),
            "{path} {key} {digest:?}: {:?}",
            v.body
        );
    }
    assert_eq!(s.caddy.upstream_hits(), 2, "nothing else reached the application");

    // a guessable key is refused outright
    let short = call("/paid/x?order=1", "k1", Some(DIGEST)).await;
    assert_eq!(
        (short.status, short.code()),
        (400, "INVALID_REQUEST"),
        "{:?}",
        short.body
    );
    assert_eq!(s.caddy.upstream_hits(), 2);
}

/// A header the gate decides on, given twice, is refused: Caddy passes
/// every line upstream, where it may be read joined or last, so a second
/// `Idempotency-Key` or `Content-Digest` line would make one retry to the
/// gate a new request to the application.
#[tokio::test]
async fn a_decisive_header_given_twice_is_refused_and_nothing_gets_through() {
    let s = setup();
    let hash = s.chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000);
    const KEY: &str = "order-key-000000000000000A";
    let first = s.get_paid_with("/paid/order", &hash, &[("idempotency-key", KEY)]).await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    let tempo = format!("Tempo {hash}");
    for extra in [
        vec![("idempotency-key", KEY), ("idempotency-key", "extra-1-000000000000000")],
        vec![
            ("idempotency-key", KEY),
            ("content-digest", "sha-256=:AAAA:"),
            ("content-digest", "sha-256=:BODY1:"),
        ],
        vec![("idempotency-key", KEY), ("authorization", tempo.as_str())],
    ] {
        let v = s.get_paid_with("/paid/order", &hash, &extra).await;
        assert_eq!(
            (v.status, v.code()),
            (400, "INVALID_REQUEST"),
            "{extra:?}: {:?}",
            v.body
        );
        assert!(!from_upstream(&v));
    }
    assert_eq!(
        s.caddy.upstream_hits(),
        1,
        "only the paid request reached the application"
    );
    // and on /v1/verify
    let v = s
        .app
        .verify(
            serde_json::json!({"tx_hash": hash}),
            &[("idempotency-key", KEY), ("idempotency-key", "extra-2-000000000000000")],
        )
        .await;
    assert_eq!((v.status, v.code()), (400, "INVALID_REQUEST"), "{:?}", v.body);
}

#[tokio::test]
async fn when_the_gate_is_down_the_proxy_lets_nothing_through() {
    let mut s = setup();
    let hash = s.chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000);
    s.app.child.kill().unwrap();
    s.app.child.wait().unwrap();
    for v in [s.get_paid("/paid/x", &hash).await, s.call("GET", "/paid/x", &[]).await] {
        assert!((500..600).contains(&v.status), "{} {:?}", v.status, v.body);
        assert!(!from_upstream(&v));
    }
    assert_eq!(s.caddy.upstream_hits(), 0);
}

#[tokio::test]
async fn the_gates_503_and_403_reach_the_client_as_they_are_and_nothing_gets_through() {
    let mut s = setup();
    let hash = s.chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000);
    // The node goes away: no trustworthy answer.
    s.chain.stop();
    let through = s.get_paid("/paid/x", &hash).await;
    let direct = s.app.verify_hash(&hash).await;
    assert_eq!(
        (through.status, through.code()),
        (503, "RPC_UNAVAILABLE"),
        "{:?}",
        through.body
    );
    assert_eq!(through.header("content-type"), "application/problem+json");
    assert_eq!(through.header("retry-after"), direct.header("retry-after"));
    assert!(!through.header("retry-after").is_empty());
    assert_eq!(
        (&through.body["code"], &through.body["type"], &through.body["status"]),
        (&direct.body["code"], &direct.body["type"], &direct.body["status"])
    );
    assert!(!from_upstream(&through));
    assert_eq!(s.caddy.upstream_hits(), 0);

    // A genome that allows verify but not authorize: 403 to the client.
    let g = Genome::single().set(
        "/capabilities",
        json!([{"cap_id": "V", "risk_class": "A", "allow_actions": ["settlement.verify"], "deny_actions": []}]),
    );
    let s = setup_with(g);
    let v = s.call("GET", "/paid/x", &[]).await;
    assert_eq!((v.status, v.code()), (403, "CAPABILITY_DENIED"), "{:?}", v.body);
    assert_eq!(s.caddy.upstream_hits(), 0);
}

/// `GET /v1/authorize` called directly, not through Caddy.
async fn authorize(app: &Served, headers: &[(&str, &str)]) -> Verified {
    send(&reqwest::Client::new(), "GET", &app.url("/v1/authorize"), headers).await
}

#[tokio::test]
async fn forwarded_method_and_uri_are_trusted_from_loopback_by_default() {
    let (w, w2) = (Workdir::new(), Workdir::new());
    let app = Served::start(&serve_env(&w.genome(&Genome::single().signed())));
    let mut env = serve_env(&w2.genome(&Genome::single().signed()));
    env.insert("SETTLEGATE_AUTHORIZE__FORWARDED_HEADERS".into(), "x-original".into());
    let nginx_like = Served::start(&env);
    let v = authorize(&app, &[("x-forwarded-method", "GET"), ("x-forwarded-uri", "/paid/x")]).await;
    assert_eq!((v.status, v.code()), (402, "PAYMENT_REQUIRED"), "{:?}", v.body);
    let v = authorize(
        &nginx_like,
        &[("x-original-method", "GET"), ("x-original-uri", "/paid/x")],
    )
    .await;
    assert_eq!((v.status, v.code()), (402, "PAYMENT_REQUIRED"), "{:?}", v.body);
    // without them the gate does not know what is being paid for
    let v = authorize(&app, &[]).await;
    assert_eq!((v.status, v.code()), (400, "INVALID_REQUEST"), "{:?}", v.body);
    // and the route has its own label in the metrics
    assert_eq!(
        app.metric(r#"settlegate_http_requests_total{route="/v1/authorize",status="402"}"#)
            .await,
        1
    );
    assert_eq!(
        app.metric(r#"settlegate_http_requests_total{route="/v1/authorize",status="400"}"#)
            .await,
        1
    );
}

#[tokio::test]
async fn forwarded_method_and_uri_from_an_untrusted_peer_are_ignored() {
    let chain = Chain::start();
    let w = Workdir::new();
    let mut env = chain_env(&w.genome(&Genome::single().signed()), &chain.url);
    // a list, written like SETTLEGATE_RPC__URLS (comma-separated)
    env.insert("SETTLEGATE_AUTHORIZE__TRUSTED_PROXIES".into(), "10.9.9.9/32".into());
    let app = Served::start(&env);
    let hash = chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000);
    let credential = format!("Tempo {hash}");
    for (m, u) in [
        ("x-forwarded-method", "x-forwarded-uri"),
        ("x-original-method", "x-original-uri"),
    ] {
        let v = authorize(&app, &[("authorization", &credential), (m, "GET"), (u, "/paid/x")]).await;
        assert_eq!((v.status, v.code()), (400, "INVALID_REQUEST"), "{m}: {:?}", v.body);
    }
    // nothing was consumed
    let v = app.verify_hash(&hash).await;
    assert_eq!(v.status, 200, "{:?}", v.body);
}

/// Migration: the seed's client SDK, unchanged, in front of the same API.
/// Its whole protocol: on a 402 it reads only `body.paymentInfo`
/// (`recipient`, `amount`, `token`), transfers that, and retries with
/// `Authorization: Tempo <hash>`; it looks at nothing but the status after.
#[tokio::test]
async fn the_seed_sdks_wire_format_pays_through_the_proxy_unchanged() {
    let s = setup();
    let first = s.call("GET", "/reports/42", &[]).await;
    assert_eq!(first.status, 402);
    let info = &first.body["paymentInfo"];
    assert_eq!(info["method"], "tempo");
    let (recipient, token) = (info["recipient"].as_str().unwrap(), info["token"].as_str().unwrap());
    let amount: u64 = info["amount"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        (recipient, token, amount),
        (RECIPIENT, &*ALPHA_USD.to_lowercase(), 1_000_000)
    );
    // The seed's challenge header is there too, with its fields in its order.
    let tempo = challenges(&first)
        .into_iter()
        .find(|c| c.starts_with("Tempo "))
        .unwrap();
    assert!(tempo.starts_with("Tempo realm=\"Tempo API\", asset=\""), "{tempo}");

    let hash = s.chain.transfer(token, recipient, amount);
    let paid = s.get_paid("/reports/42", &hash).await;
    assert_eq!(paid.status, 200, "{:?}", paid.body);
    assert!(from_upstream(&paid));
    // The SDK retrying the same hash gets a 402, as with the seed.
    assert_eq!(s.get_paid("/reports/42", &hash).await.status, 402);
    assert_eq!(s.caddy.upstream_hits(), 1);
}

/// Probe finding 8a: with the README's block, a Tempo-scheme 200 (which
/// had no `Payment-Receipt`) made Caddy 2.6 send the application the
/// literal placeholder `{http.reverse_proxy.header.Payment-Receipt}`. Every
/// header the block copies is on every 200 now.
#[tokio::test]
async fn the_readme_block_never_hands_the_application_a_placeholder() {
    use base64::Engine;
    let s = setup();
    let hash = s.chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000);
    let v = s.get_paid("/paid/x", &hash).await;
    assert_eq!(v.status, 200, "{:?}", v.body);
    assert!(from_upstream(&v), "{:?}", v.body);
    // What the application received, from its own access log.
    let served = s.caddy.upstream_requests();
    assert_eq!(served.len(), 1, "{served:?}");
    let headers = &served[0]["request"]["headers"];
    for name in crate::proxy::COPIED.split(' ') {
        let values = headers[name]
            .as_array()
            .unwrap_or_else(|| panic!("no {name}: {headers}"));
        assert_eq!(values.len(), 1, "{name}: {headers}");
        let value = values[0].as_str().unwrap();
        assert!(!value.is_empty() && !value.contains('{'), "{name}: {value}");
    }
    let receipt = v.body["payment_receipt"].as_str().unwrap();
    let receipt: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(receipt)
            .unwrap_or_else(|_| panic!("{receipt}")),
    )
    .unwrap();
    assert_eq!(receipt["reference"], hash.to_lowercase());
    assert_eq!(receipt["status"], "success");
}

const PROXY_KEY: &str = "proxy-key-0123456789abcdef-not-for-production";

/// Probe finding 8b: `/v1/authorize` had no caller keys or rate limits.
/// With `callers.authorize`, the proxy sends its key in `X-Settlegate-Key`
/// (the README's keyed Caddy block): without it 401, with it the usual
/// flow, beyond the rate 429, and nothing reaches the application unpaid.
#[tokio::test]
async fn with_callers_authorize_the_proxy_needs_its_key_and_its_rate() {
    use sha2::Digest;
    let chain = Chain::start();
    let w = Workdir::new();
    let mut env = chain_env(&w.genome(&Genome::single().signed()), &chain.url);
    let digest = hex::encode(sha2::Sha256::digest(PROXY_KEY.as_bytes()));
    env.insert("SETTLEGATE_CALLERS__API_KEYS".into(), format!("caddy:{digest}"));
    env.insert("SETTLEGATE_CALLERS__AUTHORIZE".into(), "true".into());
    env.insert("SETTLEGATE_CALLERS__RATE_PER_CALLER_PER_SECOND".into(), "3".into());
    let app = Served::start(&env);
    let client = reqwest::Client::new();
    let hash = chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000);
    let paid = format!("Tempo {hash}");

    // The README's plain block sends no key: 401, the application never
    // sees the request, and the payment is not consumed.
    let plain = Caddy::start(app.addr);
    let v = send(&client, "GET", &plain.url("/paid/x"), &[("authorization", &paid)]).await;
    assert_eq!((v.status, v.code()), (401, "UNAUTHORIZED"), "{:?}", v.body);
    assert_eq!(plain.upstream_hits(), 0);
    // Nor does a key the client sends itself pass through the plain block
    // as the proxy's: a wrong one is 401 at the gate.
    let v = authorize(&app, &[("x-settlegate-key", "guess"), ("authorization", &paid)]).await;
    assert_eq!((v.status, v.code()), (401, "UNAUTHORIZED"), "{:?}", v.body);

    // The keyed block: the usual flow.
    let keyed = Caddy::start_with(
        "caddy-forward-auth-key",
        app.addr,
        &[("SETTLEGATE_PROXY_KEY", PROXY_KEY)],
    );
    // A client's own X-Settlegate-Key is replaced by the proxy's.
    let v = send(
        &client,
        "GET",
        &keyed.url("/paid/x"),
        &[("authorization", &paid), ("x-settlegate-key", "forged")],
    )
    .await;
    assert_eq!(v.status, 200, "{:?}", v.body);
    assert!(from_upstream(&v));
    let v = send(&client, "GET", &keyed.url("/paid/x"), &[]).await;
    assert_eq!((v.status, v.code()), (402, "PAYMENT_REQUIRED"), "{:?}", v.body);
    assert_eq!(keyed.upstream_hits(), 1);

    // Three a second for the key: a burst beyond it is 429 with
    // Retry-After, before anything is checked.
    let mut limited = None;
    for _ in 0..8 {
        let v = send(&client, "GET", &keyed.url("/paid/x"), &[]).await;
        if v.status == 429 {
            limited = Some(v);
            break;
        }
        assert_eq!(v.status, 402, "{:?}", v.body);
    }
    let v = limited.expect("a 429 within eight requests at three a second");
    assert_eq!(v.code(), "RATE_LIMITED", "{:?}", v.body);
    assert!(v.header("retry-after").parse::<u64>().unwrap() >= 1);
    assert_eq!(keyed.upstream_hits(), 1);
}
