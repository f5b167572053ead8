//! `Accept-Payment` on both endpoints: the client's preferences filter and
//! order a 402's `Payment` challenges as the MPP spec says, on
//! `POST /v1/verify` (the client's header in the body's `accept_payment`)
//! and on `GET /v1/authorize` (the header the proxy forwards); a malformed,
//! oversized or all-refusing value is ignored, so a 402 always says how to
//! pay. The `Tempo` challenge, another scheme, stays first; a 402 that
//! could vary says `Vary: Accept-Payment`.

use base64::Engine as _;
use serde_json::{Value, json};

use crate::chain::*;
use crate::helpers::*;
use crate::mpp_clients::{pay, payment_env, t4_genome};
use crate::nginx::Nginx;
use crate::proxy::Caddy;

/// Any address but zero: no unpaid request reaches the escrow.
const ESCROW: &str = "0x000000000000000000000000000000000000e5c0";

/// The test genome with sessions offered besides the charge.
fn both_intents() -> Genome {
    Genome::single().set(
        "/settlement/session",
        json!({"escrow": ESCROW, "min_deposit": "1000000"}),
    )
}

/// The intents of a 402's `Payment` challenges, in order.
fn intents(v: &Verified) -> Vec<String> {
    challenges(v)
        .iter()
        .filter(|c| c.starts_with("Payment "))
        .map(|c| param(c, "intent"))
        .collect()
}

fn challenges(v: &Verified) -> Vec<String> {
    v.headers
        .get_all("www-authenticate")
        .iter()
        .map(|h| h.to_str().unwrap().to_owned())
        .collect()
}

/// A quoted parameter of a challenge.
fn param(challenge: &str, name: &str) -> String {
    let start = challenge
        .find(&format!("{name}=\""))
        .unwrap_or_else(|| panic!("no {name} in {challenge}"))
        + name.len()
        + 2;
    challenge[start..start + challenge[start..].find('"').unwrap()].to_owned()
}

/// The decoded `request` of a `Payment` challenge.
fn request(challenge: &str) -> Value {
    let b = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(param(challenge, "request"))
        .unwrap();
    serde_json::from_slice(&b).unwrap()
}

/// An unpaid `GET /x` through `/v1/authorize`, with these header lines.
async fn authorize(app: &Served, extra: &[(&str, &[u8])]) -> Verified {
    let mut req = reqwest::Client::new()
        .get(app.url("/v1/authorize"))
        .header("x-forwarded-method", "GET")
        .header("x-forwarded-uri", "/x");
    for (k, v) in extra {
        req = req.header(*k, reqwest::header::HeaderValue::from_bytes(v).unwrap());
    }
    Verified::read(req.send().await.unwrap()).await
}

/// An unpaid `GET /x` through `/v1/verify`, the client's header in the body.
async fn verify(app: &Served, accept_payment: Option<&str>) -> Verified {
    let mut body = json!({"resource": "GET /x"});
    if let Some(a) = accept_payment {
        body["accept_payment"] = json!(a);
    }
    app.verify(body, &[]).await
}

/// A 402 for the price, whatever the preferences did to its challenges.
fn assert_still_a_402(v: &Verified, what: &str) {
    assert_eq!((v.status, v.code()), (402, "PAYMENT_REQUIRED"), "{what}: {:?}", v.body);
    assert_eq!(v.body["paymentInfo"]["amount"], "1000000", "{what}");
    let all = challenges(v);
    assert!(
        all[0].starts_with("Tempo "),
        "{what}: the Tempo challenge first: {all:?}"
    );
    for c in all.iter().filter(|c| c.starts_with("Payment ")) {
        assert_eq!(request(c)["amount"], "1000000", "{what}: {c}");
    }
}

const CASES: [(&str, &[&str]); 14] = [
    ("tempo/charge;q=0", &["session"]),
    ("tempo/session;q=0", &["charge"]),
    ("tempo/*;q=0.5, tempo/session", &["session", "charge"]),
    // the most specific range wins, not the highest weight (mppx would keep session)
    ("tempo/*;q=0.5, tempo/session;q=0", &["charge"]),
    ("tempo/session, tempo/charge;q=0.999", &["session", "charge"]),
    ("tempo/charge, tempo/session", &["charge", "session"]),
    ("*/session", &["session"]),
    ("tempo/charge", &["charge"]),
    // the client refuses every offer: the spec's MAY, the normal 402
    ("tempo/charge;q=0, tempo/session;q=0", &["charge", "session"]),
    ("*/*;q=0", &["charge", "session"]),
    // nothing of ours is named
    ("stripe/charge", &["charge", "session"]),
    // malformed: ignored whole
    ("Tempo/session", &["charge", "session"]),
    ("tempo/session;q=1.5", &["charge", "session"]),
    ("tempo/session;level=1", &["charge", "session"]),
];

#[tokio::test]
async fn preferences_filter_and_order_the_payment_challenges_on_both_endpoints() {
    let w = Workdir::new();
    let app = Served::start(&serve_env(&w.genome(&both_intents().signed())));

    let plain = verify(&app, None).await;
    assert_still_a_402(&plain, "no header");
    assert_eq!(intents(&plain), ["charge", "session"]);
    assert_eq!(plain.header("vary"), "Accept-Payment");
    let plain = authorize(&app, &[]).await;
    assert_eq!(intents(&plain), ["charge", "session"]);
    assert_eq!(plain.header("vary"), "Accept-Payment");

    for (header, want) in CASES {
        let by_verify = verify(&app, Some(header)).await;
        let by_authorize = authorize(&app, &[("accept-payment", header.as_bytes())]).await;
        for (endpoint, v) in [("verify", &by_verify), ("authorize", &by_authorize)] {
            assert_still_a_402(v, header);
            assert_eq!(intents(v), want, "{endpoint}: {header}");
            assert_eq!(v.header("vary"), "Accept-Payment", "{endpoint}: {header}");
            assert_eq!(v.header("cache-control"), "no-store");
        }
    }

    // garbage and oversized values never break the 402
    let oversized = format!("tempo/session,{}tempo/charge;q=0", " ".repeat(1100));
    let garbage = "\u{1}tempo/charge;q=0, ;;;==/,";
    for header in [oversized.as_str(), garbage, "", ",,,", &"tempo/charge;q=0,".repeat(40)] {
        let v = verify(&app, Some(header)).await;
        assert_still_a_402(&v, header);
        assert_eq!(intents(&v), ["charge", "session"], "verify: {header:?}");
    }
    for header in [
        oversized.as_bytes(),
        b"tempo/charge;q=0\xff",
        b"tempo/charge;q=0, \x80\x81",
        b"??",
    ] {
        let v = authorize(&app, &[("accept-payment", header)]).await;
        assert_still_a_402(&v, &String::from_utf8_lossy(header));
        assert_eq!(intents(&v), ["charge", "session"], "authorize: {header:?}");
    }
    // several lines are one list (RFC 9110), bounded together
    let v = authorize(
        &app,
        &[
            ("accept-payment", b"tempo/charge;q=0"),
            ("accept-payment", b"tempo/session;q=0.5"),
        ],
    )
    .await;
    assert_eq!(intents(&v), ["session"]);
    let v = authorize(
        &app,
        &[
            ("accept-payment", b"tempo/session"),
            ("accept-payment", b"Tempo/charge"),
        ],
    )
    .await;
    assert_eq!(intents(&v), ["charge", "session"], "one malformed line spoils the list");
    // the field is the client's header, not a field to validate: never a 400
    let v = app
        .verify(json!({"resource": "GET /x", "accept_payment": null}), &[])
        .await;
    assert_eq!(intents(&v), ["charge", "session"]);
    assert_eq!(
        app.verify(json!({"resource": "GET /x", "accept_payment": 1}), &[])
            .await
            .status,
        400,
        "not a string"
    );
}

#[tokio::test]
async fn with_one_payment_challenge_nothing_varies() {
    let w = Workdir::new();
    let app = Served::start(&serve_env(&w.genome(&Genome::single().signed())));
    for header in [
        None,
        Some("tempo/charge;q=0"),
        Some("tempo/session"),
        Some("tempo/charge"),
    ] {
        let v = verify(&app, header).await;
        assert_still_a_402(&v, &format!("{header:?}"));
        assert_eq!(intents(&v), ["charge"], "{header:?}");
        assert_eq!(v.header("vary"), "", "{header:?}");
    }
    // the Payment scheme off: the Tempo challenge alone, whatever is asked
    let w = Workdir::new();
    let g = Genome::single().set("/settlement/schemes", json!(["tempo"])).signed();
    let app = Served::start(&serve_env(&w.genome(&g)));
    let v = authorize(&app, &[("accept-payment", b"tempo/charge")]).await;
    assert_eq!(challenges(&v).len(), 1);
    assert_still_a_402(&v, "tempo only");
}

#[tokio::test]
async fn a_refusal_of_a_session_credential_carries_the_preferred_challenges_too() {
    // Any 402, not only "payment required": here an unparsable credential.
    let w = Workdir::new();
    let app = Served::start(&serve_env(&w.genome(&both_intents().signed())));
    let v = app
        .verify(
            json!({"resource": "GET /x", "credential": "Payment !!!", "accept_payment": "tempo/session"}),
            &[],
        )
        .await;
    assert_eq!((v.status, v.code()), (402, "MALFORMED_CREDENTIAL"), "{:?}", v.body);
    assert_eq!(intents(&v), ["session"]);
}

#[tokio::test]
async fn the_proxy_forwards_the_clients_preferences_and_hands_back_the_vary() {
    let w = Workdir::new();
    let app = Served::start(&serve_env(&w.genome(&both_intents().signed())));
    let caddy = Caddy::start(app.addr);
    let client = reqwest::Client::new();
    let cases: [(&str, &[&str]); 2] = [
        ("tempo/charge;q=0", &["session"]),
        ("tempo/*;q=0.5, tempo/session", &["session", "charge"]),
    ];
    for (header, want) in cases {
        let v = Verified::read(
            client
                .get(caddy.url("/reports/1"))
                .header("accept-payment", header)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_still_a_402(&v, header);
        assert_eq!(intents(&v), want, "{header}");
        assert_eq!(v.header("vary"), "Accept-Payment");
    }
    assert_eq!(caddy.upstream_hits(), 0);
}

/// nginx `auth_request` passes the client's headers to the gate, and the
/// sealed refusal it hands back keeps the chosen challenges and the Vary.
#[tokio::test(flavor = "multi_thread")]
async fn through_nginx_the_preferences_reach_the_gate_and_the_vary_the_client() {
    let w = Workdir::new();
    let app = Served::start(&serve_env(&w.genome(&both_intents().signed())));
    let nginx = tokio::task::block_in_place(|| Nginx::start(app.addr));
    let client = reqwest::Client::new();
    for (header, want) in [
        (Some("tempo/charge;q=0"), &["session"][..]),
        (Some("tempo/*;q=0.5, tempo/session"), &["session", "charge"][..]),
        (Some("Tempo/session"), &["charge", "session"][..]),
        (None, &["charge", "session"][..]),
    ] {
        let mut req = client.get(nginx.url("/reports/1"));
        if let Some(h) = header {
            req = req.header("accept-payment", h);
        }
        let v = Verified::read(req.send().await.unwrap()).await;
        assert_still_a_402(&v, &format!("{header:?}"));
        assert_eq!(intents(&v), want, "{header:?}");
        assert_eq!(v.header("vary"), "Accept-Payment", "{header:?}");
    }
    assert_eq!(nginx.upstream_hits(), 0);
}

/// mppx 0.11.0's charge client sends `Accept-Payment: tempo/charge` on its
/// own; against a gate that offers sessions too it gets the charge
/// challenge alone and pays it, unchanged.
#[tokio::test(flavor = "multi_thread")]
async fn mppx_states_its_preferences_and_pays_the_charge_a_session_gate_offers() {
    let chain = tokio::task::block_in_place(Chain::start);
    let w = Workdir::new();
    let g = t4_genome()
        .set(
            "/settlement/session",
            json!({"escrow": ESCROW, "min_deposit": "1000000"}),
        )
        .signed();
    let app = Served::start(&payment_env(&w.genome(&g), &chain.url));
    let caddy = Caddy::start(app.addr);
    let v = tokio::task::block_in_place(|| pay("mppx", "pull", &caddy.url("/paid/x"), &chain.url));
    assert_eq!(v["status"], 200, "{v}");
    assert_eq!(v["body"]["upstream"], "reached", "{v}");
    assert_eq!(v["body"]["x_settlement_amount"], "1000000");
    assert_eq!(caddy.upstream_hits(), 1);
}
