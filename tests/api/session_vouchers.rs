//! Session vouchers presented to `POST /v1/verify` as an attacker, or a
//! storm, would: signed here with the payer's key (and others) against a
//! channel opened on the dev chain, answered by one or several instances
//! on one Redis. Counted at the node (JSON-RPC calls) and on chain.

use std::collections::HashMap;

use serde_json::{Value, json};

use crate::chain::*;
use crate::escrow_chain::*;
use crate::helpers::*;
use crate::mpp_clients::payment_env;
use crate::payment::{auth_params, credential, echo};
use crate::session::{PRICE, session_genome};

pub const RESOURCE: &str = "GET /reports/7";

/// The `session` challenge of a 402 from `app` for [`RESOURCE`].
pub async fn session_offer(app: &Served) -> HashMap<String, String> {
    let v = app.verify(json!({ "resource": RESOURCE }), &[]).await;
    assert_eq!(v.status, 402, "{:?}", v.body);
    let offers: Vec<HashMap<String, String>> = v
        .headers
        .get_all("www-authenticate")
        .iter()
        .filter_map(|h| h.to_str().unwrap().strip_prefix("Payment ").map(auth_params))
        .collect();
    let session: Vec<_> = offers.iter().filter(|o| o["intent"] == "session").collect();
    assert_eq!(session.len(), 1, "one session challenge beside the charge: {offers:?}");
    assert!(offers.iter().any(|o| o["intent"] == "charge"), "{offers:?}");
    session[0].clone()
}

pub fn voucher_payload(channel: &str, cumulative: u128, signature: &str) -> Value {
    json!({"action": "voucher", "channelId": channel, "cumulativeAmount": cumulative.to_string(), "signature": signature})
}

/// `POST /v1/verify` with a session credential carrying `payload`.
pub async fn present(app: &Served, offer: &HashMap<String, String>, payload: Value) -> Verified {
    let cred = credential(&echo(offer), payload, None);
    app.verify(json!({ "credential": cred, "resource": RESOURCE }), &[])
        .await
}

/// `payload` presented `times` times at once, round robin over `apps`
/// (each `POST /v1/verify` its own connection); the answers, in no order.
pub async fn storm(
    apps: &[Served],
    offer: &HashMap<String, String>,
    payload: Value,
    times: usize,
) -> Vec<tokio::task::JoinHandle<Verified>> {
    let mut tasks = Vec::new();
    for i in 0..times {
        let client = reqwest::Client::new();
        let url = apps[i % apps.len()].url("/v1/verify");
        let cred = credential(&echo(offer), payload.clone(), None);
        tasks.push(tokio::spawn(async move {
            let r = client
                .post(url)
                .json(&json!({ "credential": cred, "resource": RESOURCE }))
                .send()
                .await
                .unwrap();
            Verified::read(r).await
        }));
    }
    tasks
}

pub struct Channel {
    pub chain: Chain,
    pub escrow: String,
    pub id: String,
}

/// A chain with the escrow and one channel from the payer to the payee.
pub fn channel(deposit: u128) -> Channel {
    let chain = Chain::start();
    let escrow = deploy_escrow(&chain);
    let id = open_channel(&chain, &escrow, PAYER_KEY, PAYEE, ALPHA_USD, deposit, &salt(1));
    Channel { chain, escrow, id }
}

pub fn env_on_redis(c: &Channel, w: &Workdir, prefix: &str) -> HashMap<String, String> {
    let mut env = payment_env(&w.genome(&session_genome(&c.escrow).signed()), &c.chain.url);
    env.insert("SETTLEGATE_REDIS__URL".into(), redis_url());
    env.insert("SETTLEGATE_REDIS__KEY_PREFIX".into(), prefix.into());
    env
}

fn sign(c: &Channel, key: &str, cumulative: u128) -> String {
    sign_voucher(key, &c.escrow, 42431, &c.id, cumulative)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_voucher_for_n_requests_presented_10n_times_across_three_instances_serves_n() {
    let c = tokio::task::block_in_place(|| channel(PRICE * 50));
    let w = Workdir::new();
    let env = env_on_redis(&c, &w, &unique_prefix());
    let apps = [Served::start(&env), Served::start(&env), Served::start(&env)];
    let offer = session_offer(&apps[0]).await;

    // A first request makes the channel known (its facts read once).
    let first = tokio::task::block_in_place(|| sign(&c, PAYER_KEY, PRICE));
    let v = present(&apps[1], &offer, voucher_payload(&c.id, PRICE, &first)).await;
    assert_eq!(v.status, 200, "{:?}", v.body);
    assert_eq!(v.body["spent"], PRICE.to_string());
    let calls = c.chain.calls("eth_call");

    // One voucher covering N more requests, presented 10 x N times at once.
    let n = 5u128;
    let cumulative = PRICE * (n + 1);
    let sig = tokio::task::block_in_place(|| sign(&c, PAYER_KEY, cumulative));
    let tasks = storm(&apps, &offer, voucher_payload(&c.id, cumulative, &sig), 10 * n as usize).await;
    let mut served = Vec::new();
    let mut refused = 0;
    for t in tasks {
        let v = t.await.unwrap();
        match v.status {
            200 => served.push(v.body["spent"].as_str().unwrap().to_owned()),
            402 => {
                assert_eq!(v.code(), "SESSION_REFUSED", "{:?}", v.body);
                assert_eq!(
                    v.body["type"],
                    "https://paymentauth.org/problems/session/insufficient-balance"
                );
                refused += 1;
            }
            other => panic!("{other}: {:?}", v.body),
        }
    }
    served.sort();
    let want: Vec<String> = (2..=n + 1).map(|k| (PRICE * k).to_string()).collect();
    assert_eq!(served, want, "exactly N served, each deducting once");
    assert_eq!(refused, 9 * n as usize);
    assert_eq!(
        c.chain.calls("eth_call"),
        calls,
        "no JSON-RPC call per voucher once the channel is known"
    );
    // Every answer counted once, with the session's problem as its reason.
    let (mut ok, mut short) = (0, 0);
    for app in &apps {
        ok += app
            .metric(r#"settlegate_verifications_total{status="200",code="SETTLED",reason=""}"#)
            .await;
        short += app
            .metric(r#"settlegate_verifications_total{status="402",code="SESSION_REFUSED",reason="session/insufficient-balance"}"#)
            .await;
    }
    assert_eq!((ok, short), (n as u64 + 1, 9 * n as u64));

    // The same voucher again: a 402 that names the cumulative amount needed.
    let again = present(&apps[2], &offer, voucher_payload(&c.id, cumulative, &sig)).await;
    assert_eq!(again.status, 402);
    assert_eq!(again.body["requiredCumulative"], (cumulative + PRICE).to_string());
    assert!(again.headers.get_all("www-authenticate").iter().count() >= 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_wrong_voucher_is_refused_with_its_problem_and_deducts_nothing() {
    let c = tokio::task::block_in_place(|| channel(PRICE * 10));
    let w = Workdir::new();
    let app = Served::start(&env_on_redis(&c, &w, &unique_prefix()));
    let offer = session_offer(&app).await;
    let ok = tokio::task::block_in_place(|| sign(&c, PAYER_KEY, PRICE * 3));
    let v = present(&app, &offer, voucher_payload(&c.id, PRICE * 3, &ok)).await;
    assert_eq!(
        (v.status, v.body["spent"].as_str()),
        (200, Some("1000000")),
        "{:?}",
        v.body
    );

    let other_channel = format!("0x{}", "ab".repeat(32));
    let (stranger, other_escrow, other_chain, lower, above, other_channel_sig, next) =
        tokio::task::block_in_place(|| {
            (
                sign(&c, STRANGER_KEY, PRICE * 4),
                sign_voucher(
                    PAYER_KEY,
                    "0x1111111111111111111111111111111111111111",
                    42431,
                    &c.id,
                    PRICE * 4,
                ),
                sign_voucher(PAYER_KEY, &c.escrow, 1, &c.id, PRICE * 4),
                sign(&c, PAYER_KEY, PRICE * 2),
                sign(&c, PAYER_KEY, PRICE * 11),
                sign_voucher(PAYER_KEY, &c.escrow, 42431, &other_channel, PRICE * 4),
                sign(&c, PAYER_KEY, PRICE * 4),
            )
        });
    // The high-s twin of a valid signature: s' = n - s, v flipped.
    let high_s = high_s_twin(&ok);
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        (
            // The payer's key is known here after the first voucher: the
            // check against it must still see that this recovers another.
            "the payer's next voucher with its parity flipped",
            voucher_payload(&c.id, PRICE * 4, &flipped_parity(&next)),
            402,
            "session/signer-mismatch",
        ),
        (
            "another key",
            voucher_payload(&c.id, PRICE * 4, &stranger),
            402,
            "session/signer-mismatch",
        ),
        (
            "another escrow",
            voucher_payload(&c.id, PRICE * 4, &other_escrow),
            402,
            "session/signer-mismatch",
        ),
        (
            "another chain id",
            voucher_payload(&c.id, PRICE * 4, &other_chain),
            402,
            "session/signer-mismatch",
        ),
        (
            "another channel's signature",
            voucher_payload(&c.id, PRICE * 4, &other_channel_sig),
            402,
            "session/signer-mismatch",
        ),
        (
            "a channel that does not exist",
            voucher_payload(&other_channel, PRICE * 4, &other_channel_sig),
            410,
            "session/channel-not-found",
        ),
        (
            "a lower cumulative amount",
            voucher_payload(&c.id, PRICE * 2, &lower),
            402,
            "verification-failed",
        ),
        (
            "above the deposit",
            voucher_payload(&c.id, PRICE * 11, &above),
            402,
            "session/amount-exceeds-deposit",
        ),
        (
            "a high-s signature",
            voucher_payload(&c.id, PRICE * 3, &high_s),
            402,
            "malformed-credential",
        ),
    ];
    for (what, payload, status, slug) in cases {
        let v = present(&app, &offer, payload).await;
        assert_eq!(v.status, status, "{what}: {:?}", v.body);
        assert_eq!(
            v.body["type"],
            format!("https://paymentauth.org/problems/{slug}"),
            "{what}: {:?}",
            v.body
        );
    }
    // Nothing was deducted: the valid voucher still covers two requests.
    let v = present(&app, &offer, voucher_payload(&c.id, PRICE * 3, &ok)).await;
    assert_eq!(
        (v.status, v.body["spent"].as_str()),
        (200, Some("2000000")),
        "{:?}",
        v.body
    );
}

/// The same signature with `s` replaced by `n - s` and the parity flipped:
/// valid for a lax verifier, a second voucher for a malleable one.
fn high_s_twin(sig: &str) -> String {
    use alloy_primitives::U256;
    let bytes = alloy_primitives::hex::decode(sig.trim_start_matches("0x")).unwrap();
    let n = U256::from_str_radix("fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141", 16).unwrap();
    let s = U256::from_be_slice(&bytes[32..64]);
    let mut out = bytes.clone();
    out[32..64].copy_from_slice(&(n - s).to_be_bytes::<32>());
    out[64] = if bytes[64] == 27 { 28 } else { 27 };
    format!("0x{}", alloy_primitives::hex::encode(out))
}

/// The same `r` and `s` with `v` flipped: it recovers another key, which
/// the escrow's `settle` would refuse.
fn flipped_parity(sig: &str) -> String {
    let mut bytes = alloy_primitives::hex::decode(sig.trim_start_matches("0x")).unwrap();
    bytes[64] = if bytes[64] == 27 { 28 } else { 27 };
    format!("0x{}", alloy_primitives::hex::encode(bytes))
}

/// `min_voucher_delta`: a voucher that raises the accepted amount by less
/// is refused (nothing deducted, nothing accepted); one that raises it by
/// at least the minimum pays.
#[tokio::test(flavor = "multi_thread")]
async fn a_voucher_below_the_minimum_delta_is_refused_and_accepts_nothing() {
    let c = tokio::task::block_in_place(|| channel(PRICE * 10));
    let w = Workdir::new();
    let genome = session_genome(&c.escrow).set("/settlement/session/min_voucher_delta", json!("2000000"));
    let mut env = payment_env(&w.genome(&genome.signed()), &c.chain.url);
    env.insert("SETTLEGATE_REDIS__URL".into(), redis_url());
    env.insert("SETTLEGATE_REDIS__KEY_PREFIX".into(), unique_prefix());
    let app = Served::start(&env);
    let offer = session_offer(&app).await;
    assert!(
        String::from_utf8(
            base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, &offer["request"]).unwrap()
        )
        .unwrap()
        .contains("\"minVoucherDelta\":\"2000000\""),
        "the challenge says the minimum"
    );
    let (one, two) = tokio::task::block_in_place(|| (sign(&c, PAYER_KEY, PRICE), sign(&c, PAYER_KEY, PRICE * 2)));
    let v = present(&app, &offer, voucher_payload(&c.id, PRICE, &one)).await;
    assert_eq!(v.status, 402, "{:?}", v.body);
    assert_eq!(
        v.body["type"],
        "https://paymentauth.org/problems/session/delta-too-small"
    );
    let v = present(&app, &offer, voucher_payload(&c.id, PRICE * 2, &two)).await;
    assert_eq!(v.status, 200, "{:?}", v.body);
    assert_eq!(
        (v.body["acceptedCumulative"].as_str(), v.body["spent"].as_str()),
        (Some("2000000"), Some("1000000")),
        "the refused voucher accepted nothing"
    );
}
