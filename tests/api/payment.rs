//! The Machine Payments Protocol `Payment` scheme against the real dev chain
//! and Redis: challenges minted by the service, credentials built as the
//! SDKs build them (`reference/mpp.md`), payments made on chain with the
//! attribution memo, and every check probed with the nearest thing that
//! should fail.

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::{Value, json};
use settlegate_rules::mpp::Binding;

use crate::chain::*;
use crate::helpers::*;

const SECRET: &str = "test-payment-secret-0123456789abcdef-not-for-production";
const OTHER_SECRET: &str = "another-test-secret-0123456789abcdef-not-for-production";
const REALM: &str = "Tempo API";

/// The `Payment` challenge of a 402, its auth-params by name.
pub fn payment_offer(v: &Verified) -> HashMap<String, String> {
    let lines: Vec<&str> = v
        .headers
        .get_all("www-authenticate")
        .iter()
        .map(|h| h.to_str().unwrap())
        .filter(|h| h.starts_with("Payment "))
        .collect();
    assert_eq!(lines.len(), 1, "one Payment challenge: {:?}", v.headers);
    auth_params(&lines[0]["Payment ".len()..])
}

/// `name="value", …` with RFC 7230 quoted strings.
pub fn auth_params(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let (name, after) = rest.split_once('=').expect("name=value");
        let after = after.strip_prefix('"').expect("quoted value");
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = 0;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => value.push(chars.next().unwrap().1),
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.insert(name.trim().to_ascii_lowercase(), value);
        rest = after[end..].trim_start_matches([',', ' ']);
    }
    out
}

/// The challenge as a credential echoes it.
pub fn echo(offer: &HashMap<String, String>) -> Value {
    let mut e = json!({
        "id": offer["id"], "realm": offer["realm"], "method": offer["method"],
        "intent": offer["intent"], "request": offer["request"], "expires": offer["expires"],
    });
    if let Some(o) = offer.get("opaque") {
        e["opaque"] = json!(o);
    }
    e
}

pub fn credential(challenge: &Value, payload: Value, source: Option<&str>) -> String {
    let mut c = json!({ "challenge": challenge, "payload": payload });
    if let Some(s) = source {
        c["source"] = json!(s);
    }
    format!("Payment {}", B64.encode(serde_json::to_vec(&c).unwrap()))
}

pub fn hash_payload(hash: &str) -> Value {
    json!({ "type": "hash", "hash": hash })
}

pub(crate) fn did(address: &str) -> String {
    format!("did:pkh:eip155:42431:{address}")
}

/// The attribution memo binding a payment to `offer` (no client id).
pub fn bound_memo(offer: &HashMap<String, String>) -> String {
    Binding::new(&offer["realm"], &offer["id"]).memo().to_string()
}

fn decode(b64: &str) -> Value {
    serde_json::from_slice(&B64.decode(b64).unwrap()).unwrap()
}

fn payment_env(genome: &std::path::Path, chain: &Chain, secret: &str) -> HashMap<String, String> {
    let mut env = chain_env(genome, &chain.url);
    env.insert("SETTLEGATE_PAYMENT__SECRET".into(), secret.into());
    env
}

struct Setup {
    chain: Chain,
    app: Served,
    w: Workdir,
}

fn setup_with(g: Genome) -> Setup {
    let chain = Chain::start();
    let w = Workdir::new();
    let app = Served::start(&payment_env(&w.genome(&g.signed()), &chain, SECRET));
    Setup { chain, app, w }
}

fn setup() -> Setup {
    setup_with(Genome::single())
}

impl Setup {
    async fn offer(&self) -> HashMap<String, String> {
        let v = self.app.verify(json!({}), &[]).await;
        assert_eq!((v.status, v.code()), (402, "PAYMENT_REQUIRED"), "{:?}", v.body);
        payment_offer(&v)
    }

    async fn present(&self, cred: &str) -> Verified {
        self.app.verify(json!({ "credential": cred }), &[]).await
    }
}

#[tokio::test]
async fn every_402_offers_both_schemes_and_a_push_payment_settles_once_with_a_receipt() {
    let s = setup();
    let v = s.app.verify(json!({}), &[]).await;
    let lines: Vec<&str> = v
        .headers
        .get_all("www-authenticate")
        .iter()
        .map(|h| h.to_str().unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].starts_with("Tempo realm=\"Tempo API\""), "{lines:?}");
    let offer = payment_offer(&v);
    assert_eq!(offer["realm"], REALM);
    assert_eq!(
        (offer["method"].as_str(), offer["intent"].as_str()),
        ("tempo", "charge")
    );
    assert_eq!(offer["id"].len(), 43);
    assert_eq!(
        decode(&offer["request"]),
        json!({"amount": "1000000", "currency": ALPHA_USD,
               "recipient": "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
               "methodDetails": {"chainId": 42431, "supportedModes": ["pull", "push"]}})
    );
    let expires =
        time::OffsetDateTime::parse(&offer["expires"], &time::format_description::well_known::Rfc3339).unwrap();
    let ahead = expires - time::OffsetDateTime::now_utc();
    assert!(
        ahead > time::Duration::seconds(250) && ahead <= time::Duration::seconds(301),
        "{ahead}"
    );
    // Every 402 mints its own challenge.
    assert_ne!(s.offer().await["id"], offer["id"]);

    let hash = s
        .chain
        .transfer_with_memo(ALPHA_USD, RECIPIENT, 1_000_000, &bound_memo(&offer));
    let cred = credential(&echo(&offer), hash_payload(&hash), Some(&did(PAYER)));
    let paid = s.present(&cred).await;
    assert_eq!(paid.status, 200, "{:?}", paid.body);
    assert_eq!(paid.body["scheme"], "payment");
    assert_eq!(paid.body["tx_hash"], hash);
    assert_eq!(paid.body["payer"], PAYER);
    assert_eq!(paid.body["memo"], bound_memo(&offer));
    assert!(paid.header("cache-control").contains("private"), "{:?}", paid.headers);
    let receipt = decode(paid.header("payment-receipt"));
    assert_eq!(receipt["status"], "success");
    assert_eq!(receipt["method"], "tempo");
    assert_eq!(receipt["reference"], hash);
    assert!(receipt["timestamp"].as_str().unwrap().ends_with('Z'));

    // The same credential again, and the same payment through the other
    // scheme: consumed once, whichever scheme presents it.
    let again = s.present(&cred).await;
    assert_eq!((again.status, again.code()), (402, "REPLAYED"));
    assert!(again.header("payment-receipt").is_empty());
    let tempo = s.app.verify_hash(&hash).await;
    assert_eq!((tempo.status, tempo.code()), (402, "REPLAYED"));
    // Without a source, the transaction's sender is the payer.
    let offer = s.offer().await;
    let hash = s
        .chain
        .transfer_with_memo(ALPHA_USD, RECIPIENT, 1_000_000, &bound_memo(&offer));
    let paid = s.present(&credential(&echo(&offer), hash_payload(&hash), None)).await;
    assert_eq!(paid.status, 200, "{:?}", paid.body);
}

#[tokio::test]
async fn the_memo_binds_the_payment_to_its_challenge_and_the_source_to_its_payer() {
    let s = setup();
    let a = s.offer().await;
    let b = s.offer().await;
    let paid_for_a = s
        .chain
        .transfer_with_memo(ALPHA_USD, RECIPIENT, 1_000_000, &bound_memo(&a));
    let cases = [
        // The memo of another challenge.
        (
            credential(&echo(&b), hash_payload(&paid_for_a), Some(&did(PAYER))),
            "memo_mismatch",
        ),
        // Not the payer.
        (
            credential(&echo(&a), hash_payload(&paid_for_a), Some(&did(STRANGER))),
            "payer_mismatch",
        ),
        // A source on another chain.
        (
            credential(
                &echo(&a),
                hash_payload(&paid_for_a),
                Some(&format!("did:pkh:eip155:4217:{PAYER}")),
            ),
            "wrong_chain",
        ),
    ];
    for (cred, reason) in &cases {
        let v = s.present(cred).await;
        assert_eq!(
            (v.status, v.code(), v.reason()),
            (402, "VERIFICATION_FAILED", *reason),
            "{:?}",
            v.body
        );
        assert_eq!(v.body["type"], "https://paymentauth.org/problems/verification-failed");
        payment_offer(&v); // a fresh challenge to retry with
    }
    // No memo at all, and a memo that is not an MPP one.
    let plain = s.chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000);
    let other_memo = s
        .chain
        .transfer_with_memo(ALPHA_USD, RECIPIENT, 1_000_000, &format!("0x{}", "ab".repeat(32)));
    for hash in [plain, other_memo] {
        let v = s.present(&credential(&echo(&b), hash_payload(&hash), None)).await;
        assert_eq!((v.status, v.reason()), (402, "memo_mismatch"), "{:?}", v.body);
    }
    // Too little with the right memo says so.
    let c = s.offer().await;
    let short = s
        .chain
        .transfer_with_memo(ALPHA_USD, RECIPIENT, 999_999, &bound_memo(&c));
    let v = s.present(&credential(&echo(&c), hash_payload(&short), None)).await;
    assert_eq!((v.status, v.reason()), (402, "insufficient_amount"), "{:?}", v.body);
    // None of the failures consumed the payment.
    let ok = s
        .present(&credential(&echo(&a), hash_payload(&paid_for_a), Some(&did(PAYER))))
        .await;
    assert_eq!(ok.status, 200, "{:?}", ok.body);
}

#[tokio::test]
async fn altered_foreign_and_expired_challenges_are_refused_before_any_lookup() {
    let chain = Chain::start();
    let w = Workdir::new();
    let g = Genome::single()
        .set("/settlement/challenge_ttl_seconds", json!(2))
        .set(
            "/settlement/prices",
            json!([{"resource": "GET /dear/*", "amount": "2500000"}]),
        )
        .signed();
    let app = Served::start(&payment_env(&w.genome(&g), &chain, SECRET));
    let w2 = Workdir::new();
    let foreign = Served::start(&payment_env(&w2.genome(&g), &chain, OTHER_SECRET));
    let v = app.verify(json!({}), &[]).await;
    let offer = payment_offer(&v);
    let hash = format!("0x{}", "ab".repeat(32));
    let present = |challenge: Value| {
        let cred = credential(&challenge, hash_payload(&hash), None);
        let app = &app;
        async move { app.verify(json!({ "credential": cred }), &[]).await }
    };
    let mut request = decode(&offer["request"]);
    let altered = |f: &dyn Fn(&mut Value)| {
        let mut e = echo(&offer);
        f(&mut e);
        e
    };
    let mut cheaper = request.clone();
    cheaper["amount"] = json!("1");
    let mut elsewhere = request.clone();
    elsewhere["recipient"] = json!(STRANGER);
    request["methodDetails"]["chainId"] = json!(4217);
    let foreign_offer = payment_offer(&foreign.verify(json!({}), &[]).await);
    let dear_offer = payment_offer(&app.verify(json!({"resource": "GET /dear/1"}), &[]).await);
    for (what, challenge) in [
        (
            "amount",
            altered(&|e| e["request"] = json!(B64.encode(serde_json::to_vec(&cheaper).unwrap()))),
        ),
        (
            "recipient",
            altered(&|e| e["request"] = json!(B64.encode(serde_json::to_vec(&elsewhere).unwrap()))),
        ),
        (
            "chain",
            altered(&|e| e["request"] = json!(B64.encode(serde_json::to_vec(&request).unwrap()))),
        ),
        ("expiry", altered(&|e| e["expires"] = json!("2099-01-01T00:00:00Z"))),
        (
            "no expiry",
            altered(&|e| e.as_object_mut().unwrap().remove("expires").map(|_| ()).unwrap()),
        ),
        ("realm", altered(&|e| e["realm"] = json!("Other API"))),
        // the first character carries six significant bits (the last one
        // only four, so swapping it could spell the same bytes)
        (
            "id",
            altered(&|e| {
                let id = &offer["id"];
                let first = if id.starts_with('A') { "B" } else { "A" };
                e["id"] = json!(format!("{first}{}", &id[1..]))
            }),
        ),
        ("nonce", altered(&|e| e["opaque"] = json!("eyJfbXBwX25vbmNlIjoiMDAifQ"))),
        (
            "no nonce",
            altered(&|e| e.as_object_mut().unwrap().remove("opaque").map(|_| ()).unwrap()),
        ),
        ("another secret", echo(&foreign_offer)),
        // A genuine challenge for a dearer route, presented for the default one.
        ("another route", echo(&dear_offer)),
    ] {
        let v = present(challenge).await;
        assert_eq!(
            (v.status, v.code(), v.reason()),
            (402, "VERIFICATION_FAILED", "challenge_invalid"),
            "{what}: {:?}",
            v.body
        );
        assert_eq!(
            v.body["type"], "https://paymentauth.org/problems/invalid-challenge",
            "{what}"
        );
        payment_offer(&v);
    }
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let v = present(echo(&offer)).await;
    assert_eq!((v.status, v.reason()), (402, "challenge_expired"), "{:?}", v.body);
    assert_eq!(v.body["type"], "https://paymentauth.org/problems/payment-expired");
    payment_offer(&v);
    // Nothing reached the chain.
    assert_eq!(chain.calls("eth_getTransactionReceipt"), 0);
}

#[tokio::test]
async fn after_a_rotation_the_previous_secret_verifies_inside_the_overlap_only() {
    let chain = Chain::start();
    let w = Workdir::new();
    let genome = w.genome(&Genome::single().signed());
    let old = Served::start(&payment_env(&genome, &chain, OTHER_SECRET));
    let first = payment_offer(&old.verify(json!({}), &[]).await);
    let second = payment_offer(&old.verify(json!({}), &[]).await);
    drop(old);
    let until = time::OffsetDateTime::now_utc() + time::Duration::seconds(5);
    let mut env = payment_env(&genome, &chain, SECRET);
    env.insert("SETTLEGATE_PAYMENT__PREVIOUS_SECRET".into(), OTHER_SECRET.into());
    env.insert(
        "SETTLEGATE_PAYMENT__PREVIOUS_SECRET_UNTIL".into(),
        until.format(&time::format_description::well_known::Rfc3339).unwrap(),
    );
    let rotated = Served::start(&env);
    let h1 = chain.transfer_with_memo(ALPHA_USD, RECIPIENT, 1_000_000, &bound_memo(&first));
    let h2 = chain.transfer_with_memo(ALPHA_USD, RECIPIENT, 1_000_000, &bound_memo(&second));
    let inside = rotated
        .verify(
            json!({"credential": credential(&echo(&first), hash_payload(&h1), None)}),
            &[],
        )
        .await;
    assert_eq!(inside.status, 200, "{:?}", inside.body);
    assert!(
        time::OffsetDateTime::now_utc() < until,
        "the overlap passed before the check"
    );
    while time::OffsetDateTime::now_utc() < until + time::Duration::milliseconds(200) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = rotated
        .verify(
            json!({"credential": credential(&echo(&second), hash_payload(&h2), None)}),
            &[],
        )
        .await;
    assert_eq!(
        (after.status, after.reason()),
        (402, "challenge_invalid"),
        "{:?}",
        after.body
    );
    // The new secret mints what it verifies.
    let fresh = payment_offer(&after);
    let h3 = chain.transfer_with_memo(ALPHA_USD, RECIPIENT, 1_000_000, &bound_memo(&fresh));
    let ok = rotated
        .verify(
            json!({"credential": credential(&echo(&fresh), hash_payload(&h3), None)}),
            &[],
        )
        .await;
    assert_eq!(ok.status, 200, "{:?}", ok.body);
}

#[tokio::test]
async fn two_instances_sharing_the_secret_and_redis_accept_each_others_challenges_and_consume_once() {
    let chain = Chain::start();
    let w = Workdir::new();
    let env = payment_env(&w.genome(&Genome::single().signed()), &chain, SECRET);
    let a = Served::start(&env);
    let b = Served::start(&env);
    let offer = payment_offer(&a.verify(json!({}), &[]).await);
    let hash = chain.transfer_with_memo(ALPHA_USD, RECIPIENT, 1_000_000, &bound_memo(&offer));
    let cred = json!({"credential": credential(&echo(&offer), hash_payload(&hash), Some(&did(PAYER)))});
    let (x, y) = tokio::join!(b.verify(cred.clone(), &[]), a.verify(cred.clone(), &[]));
    let mut statuses = [x.status, y.status];
    statuses.sort();
    assert_eq!(statuses, [200, 402], "{:?} {:?}", x.body, y.body);
    let loser = if x.status == 402 { &x } else { &y };
    assert_eq!(loser.code(), "REPLAYED");
    for app in [&a, &b] {
        assert_eq!(app.verify(cred.clone(), &[]).await.code(), "REPLAYED");
    }
}

#[tokio::test]
async fn malformed_payment_credentials_get_a_fresh_challenge_never_a_500() {
    let s = setup();
    let offer = s.offer().await;
    let good = json!({"challenge": echo(&offer), "payload": hash_payload(&format!("0x{}", "ab".repeat(32)))});
    let enc = |v: &Value| format!("Payment {}", B64.encode(serde_json::to_vec(v).unwrap()));
    let with = |pointer: &str, value: Value| {
        let mut v = good.clone();
        *v.pointer_mut(pointer).unwrap() = value;
        enc(&v)
    };
    let cases = [
        "Payment".to_owned(),
        "Payment !!!not-base64!!!".into(),
        format!("Payment {}", B64.encode(b"not json")),
        format!("Payment {}", B64.encode(b"[1,2]")),
        enc(&json!({})),
        enc(&json!({"challenge": echo(&offer)})),
        enc(&json!({"payload": hash_payload(&format!("0x{}", "ab".repeat(32)))})),
        with("/payload/type", json!("proof")),
        with("/payload/type", json!(1)),
        with("/payload/hash", json!("0x1234")),
        with("/payload/hash", json!(["0x"])),
        with("/challenge/id", json!(42)),
        with("/challenge/request", json!({"amount": "1"})),
        with("/challenge", json!("a string")),
        format!("Payment {}", "A".repeat(9000)),
        format!("payment   {}", "e".repeat(12)),
    ];
    for cred in &cases {
        let v = s.present(cred).await;
        assert_eq!(
            (v.status, v.code()),
            (402, "MALFORMED_CREDENTIAL"),
            "{cred:.60}: {:?}",
            v.body
        );
        assert_eq!(v.body["type"], "https://paymentauth.org/problems/malformed-credential");
        assert_eq!(v.header("content-type"), "application/problem+json");
        payment_offer(&v);
    }
    // A payload that parses but whose source is not a did:pkh.
    let v = s
        .present(&credential(
            &echo(&offer),
            hash_payload(&format!("0x{}", "ab".repeat(32))),
            Some("me"),
        ))
        .await;
    assert_eq!(v.code(), "MALFORMED_CREDENTIAL");
    assert_eq!(s.chain.calls("eth_getTransactionReceipt"), 0);
    // The service is still fine.
    assert_eq!(s.app.get_json("/healthz").await.0, 200);
}

/// A signed transaction paying `memo`, not broadcast (what a pull-mode
/// client sends).
pub(crate) fn signed_transfer(chain: &Chain, amount: u64, memo: &str) -> String {
    signed(&["--rpc-url", &chain.url], RECIPIENT, amount, memo)
}

/// `transferWithMemo(to, amount, memo)` of AlphaUSD signed by the payer,
/// with `extra` options for `cast mktx`.
fn signed(extra: &[&str], to: &str, amount: u64, memo: &str) -> String {
    let out = Command::new(cast_bin())
        .args(["mktx", "--private-key", PAYER_KEY])
        .args(extra)
        .arg(ALPHA_USD)
        .arg("transferWithMemo(address,uint256,bytes32)")
        .args([to, &amount.to_string(), memo])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cast mktx: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[tokio::test]
async fn a_pull_transaction_presented_twice_at_once_is_broadcast_and_settled_once() {
    let s = setup();
    let offer = s.offer().await;
    let raw = signed_transfer(&s.chain, 1_000_000, &bound_memo(&offer));
    let cred = credential(
        &echo(&offer),
        json!({"type": "transaction", "signature": raw}),
        Some(&did(PAYER)),
    );
    let (x, y) = tokio::join!(s.present(&cred), s.present(&cred));
    let mut statuses = [x.status, y.status];
    statuses.sort();
    assert_eq!(statuses, [200, 402], "{:?} {:?}", x.body, y.body);
    let (won, lost) = if x.status == 200 { (&x, &y) } else { (&y, &x) };
    assert!(
        ["REPLAYED", "PAYMENT_PENDING"].contains(&lost.code()),
        "{:?}",
        lost.body
    );
    assert_eq!(won.body["scheme"], "payment");
    let receipt = decode(won.header("payment-receipt"));
    assert_eq!(receipt["reference"], won.body["tx_hash"]);
    // anvil logs `eth_sendRawTransaction` inside each synchronous send too:
    // one of each is one broadcast.
    let broadcasts = || {
        let (sync, plain) = (
            s.chain.calls("eth_sendRawTransactionSync"),
            s.chain.calls("eth_sendRawTransaction"),
        );
        assert_eq!(sync, plain, "no fallback send: {:?}", s.chain.all_calls());
        sync
    };
    assert_eq!(broadcasts(), 1, "{:?}", s.chain.all_calls());
    // Presented again later: refused, and not broadcast again.
    let again = s.present(&cred).await;
    assert_eq!((again.status, again.code()), (402, "REPLAYED"));
    assert_eq!(broadcasts(), 1);
}

#[tokio::test]
async fn a_pull_transaction_the_node_refuses_is_tx_rejected_and_not_consumed() {
    let s = setup();
    let offer = s.offer().await;
    // A payment the node refuses: its nonce is used already.
    s.chain.transfer(ALPHA_USD, STRANGER, 1);
    let nonce_used = signed(
        &["--rpc-url", &s.chain.url, "--nonce", "0"],
        RECIPIENT,
        1_000_000,
        &bound_memo(&offer),
    );
    let cred = credential(
        &echo(&offer),
        json!({"type": "transaction", "signature": nonce_used}),
        None,
    );
    let v = s.present(&cred).await;
    assert_eq!(
        (v.status, v.code(), v.reason()),
        (402, "VERIFICATION_FAILED", "tx_rejected"),
        "{:?}",
        v.body
    );
    // Not consumed, not reserved: presented again, it is broadcast again.
    let sends = s.chain.calls("eth_sendRawTransactionSync");
    assert_eq!(s.present(&cred).await.reason(), "tx_rejected");
    assert_eq!(s.chain.calls("eth_sendRawTransactionSync"), sends + 1);
}

/// The probe's finding: a pull-mode transaction paying a stranger was
/// broadcast and mined before it was judged. A signed transaction that
/// cannot settle the challenge is refused with the reason its receipt
/// would get, and the node never sees it.
#[tokio::test]
async fn a_pull_transaction_that_would_not_settle_never_reaches_the_node() {
    let s = setup();
    let offer = s.offer().await;
    let memo = bound_memo(&offer);
    let nonce = s.chain.rpc("eth_getTransactionCount", &[PAYER, "latest"]);
    // Signed offline: no call to the node while the transactions are made.
    let offline = |chain: &str| {
        [
            "--chain",
            chain,
            "--nonce",
            "0",
            "--gas-limit",
            "300000",
            "--gas-price",
            "20000000000",
            "--priority-gas-price",
            "1",
        ]
        .map(str::to_owned)
    };
    let mk = |chain: &str, to: &str, amount: u64, memo: &str| {
        let o = offline(chain);
        signed(&o.iter().map(String::as_str).collect::<Vec<_>>(), to, amount, memo)
    };
    let unbound = format!("0x{}", "00".repeat(32));
    let cases = [
        (
            mk("42431", STRANGER, 777, &memo),
            "VERIFICATION_FAILED",
            "wrong_recipient",
        ),
        (
            mk("42431", RECIPIENT, 999_999, &memo),
            "VERIFICATION_FAILED",
            "insufficient_amount",
        ),
        (
            mk("4217", RECIPIENT, 1_000_000, &memo),
            "VERIFICATION_FAILED",
            "wrong_chain",
        ),
        (
            mk("42431", RECIPIENT, 1_000_000, &unbound),
            "VERIFICATION_FAILED",
            "memo_mismatch",
        ),
        ("0x02c0ffee".to_owned(), "MALFORMED_CREDENTIAL", ""),
    ];
    let before = s.chain.all_calls();
    for (raw, code, reason) in &cases {
        let cred = credential(
            &echo(&offer),
            json!({"type": "transaction", "signature": raw}),
            Some(&did(PAYER)),
        );
        let v = s.present(&cred).await;
        assert_eq!(
            s.chain.calls("eth_sendRawTransaction"),
            0,
            "{reason}: the node got the transaction"
        );
        assert_eq!((v.status, v.code(), v.reason()), (402, *code, *reason), "{:?}", v.body);
        assert!(v.body["detail"].as_str().is_some_and(|d| !d.is_empty()), "{:?}", v.body);
        payment_offer(&v);
    }
    // A transaction signed by the payer but naming another source.
    let good = mk("42431", RECIPIENT, 1_000_000, &memo);
    let v = s
        .present(&credential(
            &echo(&offer),
            json!({"type": "transaction", "signature": good}),
            Some(&did(STRANGER)),
        ))
        .await;
    assert_eq!((v.status, v.reason()), (402, "payer_mismatch"), "{:?}", v.body);
    // The node saw no transaction and no lookup of one: the calls it
    // served are the ones it served before, the payer's nonce is unchanged
    // and no receipt exists.
    // The pool's own chain-id probes run on their schedule, whatever the
    // requests: everything else must be as it was.
    let asked = |mut calls: std::collections::HashMap<String, usize>| {
        calls.remove("eth_chainId");
        calls
    };
    assert_eq!(asked(s.chain.all_calls()), asked(before));
    assert_eq!(s.chain.rpc("eth_getTransactionCount", &[PAYER, "latest"]), nonce);
    for (raw, _, _) in &cases[..4] {
        let hash = alloy_primitives::keccak256(hex::decode(&raw[2..]).unwrap()).to_string();
        assert_eq!(s.chain.rpc("eth_getTransactionReceipt", &[&hash]), "null");
    }
    // A transaction paying the recipient, from the payer it names, pays.
    let pays = signed_transfer(&s.chain, 1_000_000, &memo);
    let v = s
        .present(&credential(
            &echo(&offer),
            json!({"type": "transaction", "signature": pays}),
            Some(&did(PAYER)),
        ))
        .await;
    assert_eq!(v.status, 200, "{:?}", v.body);
}

/// A Tempo (0x76) transaction signed by the payer with `calls`, each a
/// target, a function signature and its arguments (tests/clients/tempo_batch.mjs).
pub fn signed_batch(nonce: &str, calls: &[&[&str]]) -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut c = Command::new("node");
    c.arg(root.join("tests/clients/tempo_batch.mjs")).args([
        "--key",
        PAYER_KEY,
        "--chain-id",
        "42431",
        "--nonce",
        nonce.trim_matches('"'),
    ]);
    for (i, call) in calls.iter().enumerate() {
        if i > 0 {
            c.arg("+");
        }
        c.args(*call);
    }
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "tempo_batch: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// The probe's finding: a 0x76 batch of the correct payment and another
/// call signed by the payer (a transfer to a stranger, an unlimited
/// approval) was broadcast and answered 200. Only the payment may ride:
/// anything else is refused with a 402 before the node sees it.
#[tokio::test]
async fn a_pull_batch_with_a_call_besides_the_payment_never_reaches_the_node() {
    let s = setup();
    let offer = s.offer().await;
    let memo = bound_memo(&offer);
    let nonce = s.chain.rpc("eth_getTransactionCount", &[PAYER, "latest"]);
    let payment: &[&str] = &[
        ALPHA_USD,
        "transferWithMemo(address,uint256,bytes32)",
        RECIPIENT,
        "1000000",
        &memo,
    ];
    let half = "57896044618658097711785492504343953926634992332820282019728792003956564819968";
    let cases = [
        (
            signed_batch(
                &nonce,
                &[payment, &[ALPHA_USD, "transfer(address,uint256)", STRANGER, "1234567"]],
            ),
            "wrong_recipient",
        ),
        (
            signed_batch(
                &nonce,
                &[payment, &[ALPHA_USD, "approve(address,uint256)", STRANGER, half]],
            ),
            "no_transfer",
        ),
        (
            signed_batch(
                &nonce,
                &[payment, &[BETA_USD, "transfer(address,uint256)", RECIPIENT, "1"]],
            ),
            "wrong_asset",
        ),
    ];
    let before = s.chain.all_calls();
    for (raw, reason) in &cases {
        let cred = credential(
            &echo(&offer),
            json!({"type": "transaction", "signature": raw}),
            Some(&did(PAYER)),
        );
        let v = s.present(&cred).await;
        assert_eq!(
            s.chain.calls("eth_sendRawTransaction"),
            0,
            "{reason}: the node got the transaction"
        );
        assert_eq!(
            (v.status, v.code(), v.reason()),
            (402, "VERIFICATION_FAILED", *reason),
            "{:?}",
            v.body
        );
        payment_offer(&v);
    }
    // The pool's own chain-id probes run on their schedule, whatever the
    // requests: everything else must be as it was.
    let asked = |mut calls: std::collections::HashMap<String, usize>| {
        calls.remove("eth_chainId");
        calls
    };
    assert_eq!(asked(s.chain.all_calls()), asked(before));
    assert_eq!(s.chain.rpc("eth_getTransactionCount", &[PAYER, "latest"]), nonce);
    for (raw, _) in &cases {
        let hash = alloy_primitives::keccak256(hex::decode(&raw[2..]).unwrap()).to_string();
        assert_eq!(s.chain.rpc("eth_getTransactionReceipt", &[&hash]), "null");
    }
    // The payment alone, signed the same way, pays.
    let v = s
        .present(&credential(
            &echo(&offer),
            json!({"type": "transaction", "signature": signed_batch(&nonce, &[payment])}),
            Some(&did(PAYER)),
        ))
        .await;
    assert_eq!(v.status, 200, "{:?}", v.body);
}

/// A payment made for a `Payment` challenge is never redeemed under the
/// `Tempo` scheme, whatever the genome's memo rule: a watcher of the chain
/// who presents its hash first gets 402 and consumes nothing, and the payer
/// then gets the 200.
#[tokio::test]
async fn a_payment_bound_to_a_challenge_cannot_be_taken_with_the_tempo_scheme() {
    for memo_rule in ["optional", "required"] {
        let s = setup_with(Genome::single().set("/settlement/memo", json!(memo_rule)));
        let offer = s.offer().await;
        let bound = s
            .chain
            .transfer_with_memo(ALPHA_USD, RECIPIENT, 1_000_000, &bound_memo(&offer));
        // the watcher, with the hash alone, under either spelling of the scheme
        for cred in [
            format!("Tempo {bound}"),
            format!("tempo {}", bound.to_uppercase().replacen("0X", "0x", 1)),
        ] {
            let v = s.app.verify(json!({ "credential": cred }), &[]).await;
            assert_eq!(
                (v.status, v.code(), v.reason()),
                (402, "VERIFICATION_FAILED", "memo_mismatch"),
                "{memo_rule}: {:?}",
                v.body
            );
        }
        let v = s.app.verify(json!({ "tx_hash": bound }), &[]).await;
        assert_eq!(
            (v.status, v.reason()),
            (402, "memo_mismatch"),
            "{memo_rule}: {:?}",
            v.body
        );
        // nothing was consumed: the rightful payer gets the 200
        let v = s.present(&credential(&echo(&offer), hash_payload(&bound), None)).await;
        assert_eq!(v.status, 200, "{memo_rule}: {:?}", v.body);
        // and a memo that is not an MPP one still pays under the Tempo scheme
        let other = s
            .chain
            .transfer_with_memo(ALPHA_USD, RECIPIENT, 1_000_000, &format!("0x{}", "ab".repeat(32)));
        assert_eq!(s.app.verify_hash(&other).await.status, 200, "{memo_rule}");
    }
}

#[tokio::test]
async fn a_challenge_bound_policy_refuses_the_tempo_scheme_and_a_genome_can_turn_a_scheme_off() {
    let s = setup_with(Genome::single().set("/settlement/memo", json!("challenge_bound")));
    let plain = s.chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000);
    let v = s.app.verify_hash(&plain).await;
    assert_eq!((v.status, v.reason()), (402, "memo_mismatch"), "{:?}", v.body);
    // Even with a memo bound to a real challenge: the Tempo scheme cannot
    // say which challenge it answers, so whoever saw the hash could redeem it.
    let offer = s.offer().await;
    let bound = s
        .chain
        .transfer_with_memo(ALPHA_USD, RECIPIENT, 1_000_000, &bound_memo(&offer));
    let v = s.app.verify_hash(&bound).await;
    assert_eq!((v.status, v.reason()), (402, "memo_mismatch"), "{:?}", v.body);
    let v = s.present(&credential(&echo(&offer), hash_payload(&bound), None)).await;
    assert_eq!(v.status, 200, "{:?}", v.body);

    let w = &s.w;
    let only_tempo = Genome::single().set("/settlement/schemes", json!(["tempo"])).signed();
    let app = Served::start(&payment_env(&w.genome(&only_tempo), &s.chain, SECRET));
    let v = app.verify(json!({}), &[]).await;
    let lines: Vec<_> = v.headers.get_all("www-authenticate").iter().collect();
    assert_eq!(lines.len(), 1);
    assert!(lines[0].to_str().unwrap().starts_with("Tempo "));
    let v = app
        .verify(
            json!({"credential": credential(&echo(&offer), hash_payload(&bound), None)}),
            &[],
        )
        .await;
    assert_eq!((v.status, v.code()), (402, "PAYMENT_REQUIRED"), "{:?}", v.body);
}

#[tokio::test]
async fn without_a_configured_secret_challenges_verify_on_the_issuing_instance() {
    let chain = Chain::start();
    let w = Workdir::new();
    let env = chain_env(&w.genome(&Genome::single().signed()), &chain.url);
    let app = Served::start(&env);
    app.wait_for_log(|l| l["message"].as_str().is_some_and(|m| m.contains("no payment.secret")));
    let offer = payment_offer(&app.verify(json!({}), &[]).await);
    let hash = chain.transfer_with_memo(ALPHA_USD, RECIPIENT, 1_000_000, &bound_memo(&offer));
    let cred = json!({"credential": credential(&echo(&offer), hash_payload(&hash), None)});
    let other = Served::start(&env);
    assert_eq!(other.verify(cred.clone(), &[]).await.reason(), "challenge_invalid");
    assert_eq!(app.verify(cred, &[]).await.status, 200);
}
