//! Route prices cannot be dodged by spelling: through a real Caddy in front
//! of the gate (`forward_auth`), every spelling of a priced route that an
//! upstream may serve as that route is priced as it, or refused with 400;
//! and the original request is read from the configured header pair only.
//! What reaches the protected application is counted where it lands.

use serde_json::json;

use crate::chain::*;
use crate::helpers::*;
use crate::proxy::Caddy;

/// The probe's genome: `GET /reports/*` 2,500,000, `GET /dear` 5,000,000,
/// `* /cheap/*` 100,000, default 1,000,000.
fn priced() -> Genome {
    Genome::single().set(
        "/settlement/prices",
        json!([
            {"resource": "GET /reports/*", "amount": "2500000"},
            {"resource": "GET /dear", "amount": "5000000"},
            {"resource": "* /cheap/*", "amount": "100000"},
        ]),
    )
}

async fn call(url: &str, method: &str, headers: &[(&str, &str)]) -> Verified {
    let mut req = reqwest::Client::new().request(method.parse().unwrap(), url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    Verified::read(req.send().await.unwrap()).await
}

/// The amount the `Tempo` challenge of an answer asks for.
fn asked_amount(v: &Verified) -> String {
    v.headers
        .get_all("www-authenticate")
        .iter()
        .map(|h| h.to_str().unwrap())
        .find_map(|l| l.strip_prefix("Tempo "))
        .and_then(|l| l.split("amount=\"").nth(1))
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn a_priced_route_costs_its_price_however_its_path_is_spelt() {
    let chain = Chain::start();
    let w = Workdir::new();
    let app = Served::start(&chain_env(&w.genome(&priced().signed()), &chain.url));
    let caddy = Caddy::start(app.addr);
    // a payment of the default price, presented for dearer routes
    let default_paid = chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000);
    let tempo = format!("Tempo {default_paid}");
    for (method, path, price) in [
        ("GET", "/%72eports/1", "2500000"),
        ("GET", "/REPORTS/1", "2500000"),
        ("GET", "/Reports/%31/", "2500000"),
        ("GET", "/reports", "2500000"),
        ("HEAD", "/reports/1", "2500000"),
        ("GET", "/dear/", "5000000"),
        ("GET", "/DEAR", "5000000"),
        ("GET", "/d%65ar?x=/cheap/1", "5000000"),
        ("HEAD", "/dear", "5000000"),
    ] {
        // unpaid: the challenge states the route's price
        let v = call(&caddy.url(path), method, &[]).await;
        assert_eq!((v.status, asked_amount(&v).as_str()), (402, price), "{method} {path}");
        // paid the default price: not enough, and nothing consumed
        let v = call(&caddy.url(path), method, &[("authorization", &tempo)]).await;
        assert_eq!(v.status, 402, "{method} {path}: {:?}", v.body);
        assert_eq!(asked_amount(&v), price, "{method} {path}");
        if method == "GET" {
            assert_eq!(v.reason(), "insufficient_amount", "{method} {path}");
        }
    }
    // spellings whose meaning depends on the upstream are refused
    // (a client library resolves dot segments itself; /v1/authorize refuses
    // them too, tests in src/http/authorize.rs)
    for path in ["/dear;x=1", "/reports%2f1", "/reports%5C1", "/dear%3bx", "/d%C0%AEar"] {
        let v = call(&caddy.url(path), "GET", &[("authorization", &tempo)]).await;
        assert_eq!((v.status, v.code()), (400, "INVALID_REQUEST"), "{path}: {:?}", v.body);
    }
    assert_eq!(
        caddy.upstream_hits(),
        0,
        "a dearer route was served for the default price"
    );
    // the payment was never consumed: it still buys a route at its price
    let v = call(&caddy.url("/other"), "GET", &[("authorization", &tempo)]).await;
    assert_eq!(v.status, 200, "{:?}", v.body);
    assert_eq!(caddy.upstream_hits(), 1);
}

#[tokio::test]
async fn a_price_paid_in_full_is_served_under_any_spelling_of_its_route() {
    let chain = Chain::start();
    let w = Workdir::new();
    let app = Served::start(&chain_env(&w.genome(&priced().signed()), &chain.url));
    let caddy = Caddy::start(app.addr);
    let paid = chain.transfer(ALPHA_USD, RECIPIENT, 2_500_000);
    let v = call(
        &caddy.url("/%72eports/1"),
        "GET",
        &[("authorization", &format!("Tempo {paid}"))],
    )
    .await;
    assert_eq!(v.status, 200, "{:?}", v.body);
    assert_eq!(v.body["x_settlement_amount"], "2500000");
    // and POST /verify prices a resource the same way
    let cheap = chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000);
    let v = app
        .verify(json!({"tx_hash": cheap, "resource": "GET /D%45AR/?q=1"}), &[])
        .await;
    assert_eq!((v.status, v.reason()), (402, "insufficient_amount"), "{:?}", v.body);
    assert_eq!(v.body["paymentInfo"]["amount"], "5000000");
    let v = app
        .verify(json!({"tx_hash": cheap, "resource": "GET /dear;x=1"}), &[])
        .await;
    assert_eq!((v.status, v.code()), (400, "INVALID_REQUEST"), "{:?}", v.body);
}

async fn authorize(app: &Served, headers: &[(&str, &str)]) -> Verified {
    call(&app.url("/v1/authorize"), "GET", headers).await
}

#[tokio::test]
async fn the_original_request_is_read_from_the_configured_pair_only() {
    let (w, w2) = (Workdir::new(), Workdir::new());
    let caddy_like = Served::start(&serve_env(&w.genome(&priced().signed())));
    let mut env = serve_env(&w2.genome(&priced().signed()));
    env.insert("SETTLEGATE_AUTHORIZE__FORWARDED_HEADERS".into(), "x-original".into());
    let nginx_like = Served::start(&env);

    // each pair works where it is configured
    let v = authorize(
        &caddy_like,
        &[("x-forwarded-method", "GET"), ("x-forwarded-uri", "/dear")],
    )
    .await;
    assert_eq!((v.status, asked_amount(&v).as_str()), (402, "5000000"), "{:?}", v.body);
    let v = authorize(
        &nginx_like,
        &[("x-original-method", "GET"), ("x-original-uri", "/dear")],
    )
    .await;
    assert_eq!((v.status, asked_amount(&v).as_str()), (402, "5000000"), "{:?}", v.body);

    // and nowhere else: never a fallback to the other pair
    let v = authorize(
        &caddy_like,
        &[("x-original-method", "GET"), ("x-original-uri", "/dear")],
    )
    .await;
    assert_eq!((v.status, v.code()), (400, "INVALID_REQUEST"), "{:?}", v.body);
    let v = authorize(
        &nginx_like,
        &[("x-forwarded-method", "GET"), ("x-forwarded-uri", "/dear")],
    )
    .await;
    assert_eq!((v.status, v.code()), (400, "INVALID_REQUEST"), "{:?}", v.body);

    // a client's own X-Forwarded-Uri beside what nginx set: refused, not cheap
    let both = [
        ("x-original-method", "GET"),
        ("x-original-uri", "/dear"),
        ("x-forwarded-uri", "/cheap/x"),
    ];
    for app in [&caddy_like, &nginx_like] {
        let v = authorize(app, &both).await;
        assert_eq!((v.status, v.code()), (400, "INVALID_REQUEST"), "{:?}", v.body);
    }

    // a header twice: refused, whichever comes first
    for uris in [["/dear", "/cheap/x"], ["/cheap/x", "/dear"]] {
        let v = authorize(
            &caddy_like,
            &[
                ("x-forwarded-method", "GET"),
                ("x-forwarded-uri", uris[0]),
                ("x-forwarded-uri", uris[1]),
            ],
        )
        .await;
        assert_eq!((v.status, v.code()), (400, "INVALID_REQUEST"), "{uris:?}: {:?}", v.body);
    }
    let v = authorize(
        &caddy_like,
        &[
            ("x-forwarded-method", "GET"),
            ("x-forwarded-method", "POST"),
            ("x-forwarded-uri", "/dear"),
        ],
    )
    .await;
    assert_eq!((v.status, v.code()), (400, "INVALID_REQUEST"), "{:?}", v.body);
}

#[test]
fn an_unusable_forwarded_uri_is_refused_not_read_from_the_other_pair() {
    use std::io::{Read, Write};
    let w = Workdir::new();
    let app = Served::start(&serve_env(&w.genome(&priced().signed())));
    // reqwest will not send a non-ASCII header value: raw HTTP/1.1
    let mut s = std::net::TcpStream::connect(app.addr).unwrap();
    s.write_all(
        b"GET /v1/authorize HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Forwarded-Method: GET\r\n\
          X-Forwarded-Uri: /d\xc3\xa9ar\r\nX-Original-Method: GET\r\nX-Original-URI: /cheap/x\r\n\r\n",
    )
    .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(text.contains("INVALID_REQUEST"), "{text}");
    // and alone, without the other pair, it is refused as well
    let mut s = std::net::TcpStream::connect(app.addr).unwrap();
    s.write_all(b"GET /v1/authorize HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Forwarded-Method: GET\r\nX-Forwarded-Uri: /d\xc3\xa9ar\r\n\r\n")
        .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
}
