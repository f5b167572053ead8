//! The `Payment` scheme's conformance rules on the real binary: challenges
//! minted with the service's own secret but for other terms (one echoed
//! field changed each time) are `invalid-challenge` on both endpoints and
//! for both intents, before any chain lookup; a challenge id has one
//! spelling; a credential's base64url is read strictly.

use std::collections::HashMap;

use base64::Engine;
use serde_json::{Value, json};
use settlegate_rules::canonical::canonical_value_bytes;
use settlegate_rules::mpp::{Challenge, INTENT, SESSION_INTENT, Secrets, b64_encode, nonce_opaque};
use time::OffsetDateTime;

use crate::chain::*;
use crate::helpers::*;
use crate::payment::{auth_params, credential, echo, hash_payload};

/// `crate::mpp_clients::SECRET`, which `payment_env` configures.
const SECRET: &str = "test-payment-secret-0123456789abcdef-not-for-production";
const ESCROW: &str = "0xe1c4d3dce17bc111181ddf716f75bae49e61a336";
const RESOURCE: &str = "GET /reports/7";
/// A well-formed voucher signature: the session check comes first, so it
/// never needs to verify.
const SIG: &str = "0xeb7147c99425f30bf67080d707f7e5151745d9e9f9822be39e159c7fa54139d40392c7165799c3cae89a567723ae001824ef29ebe1205dba19c97162aad0d9aa1b";

struct Setup {
    chain: Chain,
    app: Served,
    _w: Workdir,
}

fn setup() -> Setup {
    let chain = Chain::start();
    let w = Workdir::new();
    let genome = crate::session::session_genome(ESCROW).signed();
    let app = Served::start(&crate::mpp_clients::payment_env(&w.genome(&genome), &chain.url));
    Setup { chain, app, _w: w }
}

impl Setup {
    /// The charge and session offers of one 402, by intent.
    async fn offers(&self) -> HashMap<String, HashMap<String, String>> {
        let v = self.app.verify(json!({ "resource": RESOURCE }), &[]).await;
        assert_eq!(v.status, 402, "{:?}", v.body);
        v.headers
            .get_all("www-authenticate")
            .iter()
            .filter_map(|h| h.to_str().unwrap().strip_prefix("Payment ").map(auth_params))
            .map(|o| (o["intent"].clone(), o))
            .collect()
    }

    /// The credential presented on `POST /v1/verify` and on
    /// `GET /v1/authorize`: both answers.
    async fn both(&self, cred: &str) -> [Verified; 2] {
        let verify = self
            .app
            .verify(json!({ "credential": cred, "resource": RESOURCE }), &[])
            .await;
        let req = reqwest::Client::new()
            .get(self.app.url("/v1/authorize"))
            .header("x-forwarded-method", "GET")
            .header("x-forwarded-uri", "/reports/7")
            .header("authorization", cred);
        let authorize = Verified::read(req.send().await.unwrap()).await;
        [verify, authorize]
    }
}

fn decode(b64: &str) -> Value {
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(b64).unwrap()).unwrap()
}

fn jcs(v: &Value) -> String {
    b64_encode(&canonical_value_bytes(v))
}

/// `route` with the member at `pointer` set to `v` (removed for null).
fn with(route: &Value, pointer: &str, v: Value) -> Value {
    let mut r = route.clone();
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let parent = r.pointer_mut(parent).unwrap().as_object_mut().unwrap();
    if v.is_null() {
        parent.remove(key);
    } else {
        parent.insert(key.into(), v);
    }
    r
}

/// A challenge the service's secret mints over these fields, as a
/// credential echoes it.
fn forged(realm: &str, intent: &'static str, request: &str, expires: OffsetDateTime, opaque: Option<String>) -> Value {
    let secrets = Secrets::new(SECRET.as_bytes().to_vec(), None).unwrap();
    let c = Challenge::mint_intent(&secrets, realm, intent, request, expires, opaque);
    let mut e = json!({"id": c.id, "realm": c.realm, "method": "tempo", "intent": c.intent,
                       "request": c.request, "expires": c.expires});
    if let Some(o) = c.opaque {
        e["opaque"] = json!(o);
    }
    e
}

fn nonce() -> Option<String> {
    let mut n = [0u8; 16];
    getrandom::fill(&mut n).unwrap();
    Some(nonce_opaque(&n))
}

fn charge_credential(challenge: &Value) -> String {
    credential(challenge, hash_payload(&format!("0x{}", "ab".repeat(32))), None)
}

fn session_credential(challenge: &Value) -> String {
    let channel = format!("0x{}", "6d".repeat(32));
    let voucher = json!({"action": "voucher", "channelId": channel, "cumulativeAmount": "1000000", "signature": SIG});
    credential(challenge, voucher, None)
}

#[tokio::test]
async fn challenges_minted_with_the_secret_for_other_terms_are_invalid_on_both_endpoints() {
    let s = setup();
    let offers = s.offers().await;
    let (charge, session) = (&offers["charge"], &offers["session"]);
    let realm = charge["realm"].clone();
    let charge_route = decode(&charge["request"]);
    let session_route = decode(&session["request"]);
    let soon = OffsetDateTime::now_utc() + time::Duration::seconds(20);
    let far = OffsetDateTime::now_utc() + time::Duration::hours(1);

    let mut cases: Vec<(String, String)> = Vec::new();
    let charge_changes = [
        ("/amount", json!("1")),
        ("/currency", json!("0x20c0000000000000000000000000000000000002")),
        ("/recipient", json!(STRANGER)),
        ("/methodDetails/chainId", json!(4217)),
        ("/methodDetails/supportedModes", json!(["push"])),
        ("/methodDetails/memo", json!(format!("0x{}", "00".repeat(32)))),
        ("/methodDetails/feePayer", json!(true)),
        ("/methodDetails/splits", json!([{"recipient": STRANGER, "amount": "1"}])),
        ("/description", json!("free")),
        ("/externalId", json!("order-1")),
    ];
    for (pointer, v) in charge_changes {
        let request = jcs(&with(&charge_route, pointer, v.clone()));
        let e = forged(&realm, INTENT, &request, soon, nonce());
        cases.push((format!("charge {pointer} = {v}"), charge_credential(&e)));
    }
    let session_changes = [
        ("/amount", json!("1")),
        ("/recipient", json!(STRANGER)),
        ("/methodDetails/escrowContract", json!(STRANGER)),
        ("/methodDetails/chainId", json!(4217)),
        ("/methodDetails/sessionProtocol", json!("v2")),
        ("/methodDetails/feePayer", json!(true)),
    ];
    for (pointer, v) in session_changes {
        let request = jcs(&with(&session_route, pointer, v.clone()));
        let e = forged(&realm, SESSION_INTENT, &request, soon, nonce());
        cases.push((format!("session {pointer} = {v}"), session_credential(&e)));
    }
    let charge_request = charge["request"].as_str();
    let session_request = session["request"].as_str();
    for (what, e, session) in [
        (
            "realm",
            forged("Other API", INTENT, charge_request, soon, nonce()),
            false,
        ),
        ("no opaque", forged(&realm, INTENT, charge_request, soon, None), false),
        (
            "opaque {}",
            forged(&realm, INTENT, charge_request, soon, Some(jcs(&json!({})))),
            false,
        ),
        (
            "opaque with more",
            forged(
                &realm,
                INTENT,
                charge_request,
                soon,
                Some(jcs(&json!({"_mpp_nonce": "00".repeat(16), "tier": "gold"}))),
            ),
            false,
        ),
        (
            "expires beyond the ttl",
            forged(&realm, INTENT, charge_request, far, nonce()),
            false,
        ),
        // the charge request under the session intent, and the reverse
        (
            "intent",
            forged(&realm, SESSION_INTENT, charge_request, soon, nonce()),
            true,
        ),
        ("intent", forged(&realm, INTENT, session_request, soon, nonce()), false),
        (
            "session realm",
            forged("Other API", SESSION_INTENT, session_request, soon, nonce()),
            true,
        ),
        (
            "session opaque",
            forged(&realm, SESSION_INTENT, session_request, soon, None),
            true,
        ),
        (
            "session expires",
            forged(&realm, SESSION_INTENT, session_request, far, nonce()),
            true,
        ),
    ] {
        let cred = if session {
            session_credential(&e)
        } else {
            charge_credential(&e)
        };
        cases.push((what.to_owned(), cred));
    }
    // Not covered by the HMAC, never issued: a description in the echo.
    let mut described = echo(charge);
    described["description"] = json!("free");
    cases.push(("echoed description".into(), charge_credential(&described)));

    assert_eq!(cases.len(), 27);
    for (what, cred) in &cases {
        for v in s.both(cred).await {
            assert_eq!(
                (v.status, v.reason()),
                (402, "challenge_invalid"),
                "{what}: {:?}",
                v.body
            );
            assert_eq!(
                v.body["type"], "https://paymentauth.org/problems/invalid-challenge",
                "{what}"
            );
            assert!(
                v.headers
                    .get_all("www-authenticate")
                    .iter()
                    .any(|h| h.to_str().unwrap().starts_with("Payment ")),
                "{what}: a fresh challenge"
            );
        }
    }
    assert_eq!(s.chain.calls("eth_getTransactionReceipt"), 0);

    // The control: the same forge over the route's own terms passes every
    // check, so the refusals above are the changed fields'.
    let genuine = forged(&realm, INTENT, charge_request, soon, nonce());
    for v in s.both(&charge_credential(&genuine)).await {
        assert_ne!(v.reason(), "challenge_invalid", "{:?}", v.body);
        assert_eq!(v.status, 402, "{:?}", v.body);
    }
    assert!(s.chain.calls("eth_getTransactionReceipt") > 0);
    let genuine = forged(&realm, SESSION_INTENT, session_request, soon, nonce());
    for v in s.both(&session_credential(&genuine)).await {
        assert_ne!(v.reason(), "challenge_invalid", "{:?}", v.body);
        assert_ne!(v.status, 200, "{:?}", v.body);
    }
}

#[tokio::test]
async fn a_challenge_id_has_one_spelling_and_a_credential_one_alphabet() {
    let s = setup();
    let offers = s.offers().await;
    let charge = &offers["charge"];
    let id = charge["id"].clone();
    assert_eq!(id.len(), 43);
    // The last character's two unused bits: three other characters spell
    // the same MAC to a lenient decoder.
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let last = alphabet.find(id.chars().last().unwrap()).unwrap();
    let mut spellings: Vec<String> = (0..4)
        .map(|low| alphabet.as_bytes()[(last & !3) | low] as char)
        .filter(|c| !id.ends_with(*c))
        .map(|c| format!("{}{c}", &id[..42]))
        .collect();
    spellings.push(format!("{id}="));
    spellings.push(id.replace('-', "+").replace('_', "/"));
    spellings.retain(|s| *s != id);
    assert!(spellings.len() >= 4, "{spellings:?}");
    for spelling in &spellings {
        let mut e = echo(charge);
        e["id"] = json!(spelling);
        for v in s.both(&charge_credential(&e)).await {
            assert_eq!(
                (v.status, v.reason()),
                (402, "challenge_invalid"),
                "{spelling}: {:?}",
                v.body
            );
        }
    }
    assert_eq!(s.chain.calls("eth_getTransactionReceipt"), 0);

    // The credential itself: canonical padding reads (past the challenge,
    // to the lookup); the standard alphabet is malformed.
    // (an ignored member sized so that the encoding has padding and the
    // standard alphabet differs from the URL one)
    let (padded, standard) = (0..3)
        .map(|extra| {
            let mut e = echo(charge);
            e["pad"] = json!(format!("???~~~>>>{}", "x".repeat(extra)));
            let payload = hash_payload(&format!("0x{}", "cd".repeat(32)));
            let json = serde_json::to_vec(&json!({"challenge": e, "payload": payload})).unwrap();
            (
                format!("Payment {}", base64::engine::general_purpose::URL_SAFE.encode(&json)),
                format!(
                    "Payment {}",
                    base64::engine::general_purpose::STANDARD_NO_PAD.encode(&json)
                ),
            )
        })
        .find(|(p, s)| p.ends_with('=') && s.contains(['+', '/']))
        .expect("a spelling with padding and + or /");
    for v in s.both(&padded).await {
        assert_eq!(v.status, 402, "{:?}", v.body);
        assert!(!["MALFORMED_CREDENTIAL"].contains(&v.code()), "{:?}", v.body);
        assert_ne!(v.reason(), "challenge_invalid", "{:?}", v.body);
    }
    for v in s.both(&standard).await {
        assert_eq!((v.status, v.code()), (402, "MALFORMED_CREDENTIAL"), "{:?}", v.body);
        assert!(
            v.body["detail"].as_str().unwrap().contains("not base64url"),
            "{:?}",
            v.body
        );
    }
}
