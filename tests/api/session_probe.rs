//! Session credentials as an outside prober sends them, looking for a
//! wrong 200: other spellings of one voucher, a challenge for another
//! price, public chain data (the payee's settlement, a mined `topUp`, a
//! settled voucher) presented as payment, vouchers after a close. Each
//! test is named after the rule it defends; the real binary, anvil and
//! Redis answer.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::chain::*;
use crate::escrow_chain::*;
use crate::helpers::*;
use crate::payment::{auth_params, credential, echo, hash_payload};
use crate::session::{PRICE, settler_env, wait_settled};
use crate::session_vouchers::{Channel, RESOURCE, channel, env_on_redis, present, session_offer, voucher_payload};

const CHAIN_ID: u64 = 42431;
const PROBLEMS: &str = "https://paymentauth.org/problems/";

fn sign(c: &Channel, cumulative: u128) -> String {
    sign_voucher(PAYER_KEY, &c.escrow, CHAIN_ID, &c.id, cumulative)
}

fn kind(v: &Verified) -> String {
    v.body["type"]
        .as_str()
        .unwrap_or_default()
        .trim_start_matches(PROBLEMS)
        .to_owned()
}

fn served(v: &Verified, spent: u128) {
    assert_eq!(
        (v.status, v.body["spent"].as_str()),
        (200, Some(spent.to_string().as_str())),
        "{:?}",
        v.body
    );
}

/// The EIP-2098 form of a 65-byte signature: `r || yParity·2²⁵⁵ + s`.
fn compact(sig: &str) -> String {
    let mut b = alloy_primitives::hex::decode(sig.trim_start_matches("0x")).unwrap();
    if b[64] == 28 {
        b[32] |= 0x80;
    }
    format!("0x{}", alloy_primitives::hex::encode(&b[..64]))
}

fn with(p: &Value, key: &str, v: &str) -> Value {
    let mut p = p.clone();
    p[key] = json!(v);
    p
}

/// The receipt's `transactionHash`.
fn tx_of(receipt: &Value) -> String {
    receipt["transactionHash"].as_str().expect("a receipt").to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transaction_the_recipient_sent_or_an_escrow_deposit_is_no_charge_payment() {
    let c = tokio::task::block_in_place(|| channel(PRICE * 10));
    let w = Workdir::new();
    let app = Served::start(&env_on_redis(&c, &w, &unique_prefix()));
    // The payee settles a voucher: the escrow transfers 3 prices to the
    // recipient, in a transaction anyone can read on chain.
    let settled = tokio::task::block_in_place(|| {
        let sig = sign(&c, PRICE * 3);
        tx_of(&settle_with_cast(&c.chain, &c.escrow, PAYEE_KEY, &c.id, PRICE * 3, &sig).expect("settles"))
    });
    let v = app.verify_hash(&settled).await;
    assert_eq!(
        (v.status, v.reason()),
        (402, "payer_mismatch"),
        "the payee's own settlement is no payment: {:?}",
        v.body
    );
    // An open moves the deposit to the escrow, not to the recipient.
    let opened = tokio::task::block_in_place(|| {
        let raw = signed_open_tx(&c.chain, &c.escrow, PAYER_KEY, PAYEE, ALPHA_USD, PRICE * 5, &salt(2));
        tx_of(&broadcast(&c.chain, &raw))
    });
    let v = app.verify_hash(&opened).await;
    assert_eq!((v.status, v.reason()), (402, "wrong_recipient"), "{:?}", v.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn one_voucher_has_one_meaning_whatever_its_spelling() {
    let c = tokio::task::block_in_place(|| channel(PRICE * 10));
    let w = Workdir::new();
    let app = Served::start(&env_on_redis(&c, &w, &unique_prefix()));
    let offer = session_offer(&app).await;
    let sig = tokio::task::block_in_place(|| sign(&c, PRICE * 3));
    let good = voucher_payload(&c.id, PRICE * 3, &sig);
    let hex = c.id.trim_start_matches("0x");

    // Spellings that are not canonical: refused before any signature.
    let malformed = [
        with(&good, "channelId", &format!("0X{hex}")),
        with(&good, "channelId", hex),
        with(&good, "channelId", &format!(" {}", c.id)),
        with(&good, "channelId", &format!("{}00", c.id)),
        with(&good, "cumulativeAmount", "03000000"),
        with(&good, "cumulativeAmount", "+3000000"),
        with(&good, "cumulativeAmount", "3e6"),
        with(&good, "cumulativeAmount", "0x2dc6c0"),
        with(&good, "cumulativeAmount", "3000000 "),
        with(&good, "cumulativeAmount", "340282366920938463463374607431768211456"),
        with(&good, "signature", sig.trim_start_matches("0x")),
    ];
    for p in malformed {
        let v = present(&app, &offer, p.clone()).await;
        assert_eq!(
            (v.status, kind(&v).as_str()),
            (402, "malformed-credential"),
            "{p}: {:?}",
            v.body
        );
    }
    // u128::MAX is a valid amount, above any deposit.
    let max = tokio::task::block_in_place(|| sign(&c, u128::MAX));
    let v = present(&app, &offer, voucher_payload(&c.id, u128::MAX, &max)).await;
    assert_eq!(kind(&v), "session/amount-exceeds-deposit", "{:?}", v.body);

    // Accepted spellings of the same voucher: one voucher of 3 prices,
    // three requests served, whichever spelling each used.
    let spellings = [
        with(&good, "channelId", &format!("0x{}", hex.to_uppercase())),
        with(&good, "signature", &format!("0x{}", sig[2..].to_uppercase())),
        with(&good, "signature", &compact(&sig)),
        good.clone(),
    ];
    for (i, p) in spellings.iter().enumerate() {
        let v = present(&app, &offer, p.clone()).await;
        if i < 3 {
            served(&v, PRICE * (i as u128 + 1));
        } else {
            assert_eq!(kind(&v), "session/insufficient-balance", "{:?}", v.body);
        }
    }

    // A duplicated key: one reading (the last), whose signature must hold.
    let raw = format!(
        r#"{{"challenge":{},"payload":{{"action":"voucher","channelId":"{}","cumulativeAmount":"3000000","cumulativeAmount":"9000000","signature":"{}"}}}}"#,
        echo(&offer),
        c.id,
        sig
    );
    let cred = format!("Payment {}", b64(raw.as_bytes()));
    let v = app
        .verify(json!({ "credential": cred, "resource": RESOURCE }), &[])
        .await;
    assert_eq!(kind(&v), "session/signer-mismatch", "{:?}", v.body);
    let twice = format!(
        r#"{{"challenge":{0},"challenge":{0},"payload":{1}}}"#,
        echo(&offer),
        good
    );
    let cred = format!("Payment {}", b64(twice.as_bytes()));
    let v = app
        .verify(json!({ "credential": cred, "resource": RESOURCE }), &[])
        .await;
    assert_eq!(kind(&v), "malformed-credential", "{:?}", v.body);

    // A charge challenge with a session payload, and the reverse.
    let charge = charge_offer(&app).await;
    let v = present(&app, &charge, good.clone()).await;
    assert_eq!(kind(&v), "malformed-credential", "{:?}", v.body);
    let v = present(&app, &offer, hash_payload(&format!("0x{}", "11".repeat(32)))).await;
    assert_eq!(kind(&v), "malformed-credential", "{:?}", v.body);
}

fn b64(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

async fn charge_offer(app: &Served) -> HashMap<String, String> {
    let v = app.verify(json!({ "resource": RESOURCE }), &[]).await;
    v.headers
        .get_all("www-authenticate")
        .iter()
        .filter_map(|h| h.to_str().unwrap().strip_prefix("Payment ").map(auth_params))
        .find(|o| o["intent"] == "charge")
        .expect("a charge challenge")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_challenge_pays_only_the_price_it_was_minted_for() {
    let c = tokio::task::block_in_place(|| channel(PRICE * 10));
    let w = Workdir::new();
    let genome = crate::session::session_genome(&c.escrow).set(
        "/settlement/prices",
        json!([{"resource": "GET /dear", "amount": (PRICE * 4).to_string()}]),
    );
    let mut env = crate::mpp_clients::payment_env(&w.genome(&genome.signed()), &c.chain.url);
    env.insert("SETTLEGATE_REDIS__URL".into(), redis_url());
    env.insert("SETTLEGATE_REDIS__KEY_PREFIX".into(), unique_prefix());
    let app = Served::start(&env);
    let offer = session_offer(&app).await;
    let sig = tokio::task::block_in_place(|| sign(&c, PRICE * 4));
    let cred = credential(&echo(&offer), voucher_payload(&c.id, PRICE * 4, &sig), None);
    let v = app
        .verify(json!({ "credential": cred, "resource": "GET /dear" }), &[])
        .await;
    assert_eq!((v.status, v.reason()), (402, "challenge_invalid"), "{:?}", v.body);
    // Through /v1/authorize: another spelling of the same path is the same
    // price; the dear route is not.
    let client = reqwest::Client::new();
    let authorize = |uri: &'static str| {
        let req = client
            .get(app.url("/v1/authorize"))
            .header("x-forwarded-method", "GET")
            .header("x-forwarded-uri", uri)
            .header("authorization", cred.clone());
        async move { Verified::read(req.send().await.unwrap()).await }
    };
    let v = authorize("/%64ear").await;
    assert_eq!((v.status, v.reason()), (402, "challenge_invalid"), "{:?}", v.body);
    let v = authorize("/%72eports/7").await;
    assert_eq!(v.status, 200, "{:?}", v.body);
    assert!(!v.header("payment-receipt").is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn no_voucher_is_served_once_a_close_was_accepted() {
    let c = tokio::task::block_in_place(|| channel(PRICE * 10));
    let w = Workdir::new();
    let mut env = env_on_redis(&c, &w, &unique_prefix());
    env.extend(settler_env(&w));
    env.insert("SETTLEGATE_SESSION__FACTS_TTL_SECONDS".into(), "60".into());
    let app = Served::start(&env);
    let offer = session_offer(&app).await;
    let (v2, v3, v4) = tokio::task::block_in_place(|| (sign(&c, PRICE * 2), sign(&c, PRICE * 3), sign(&c, PRICE * 4)));
    served(
        &present(&app, &offer, voucher_payload(&c.id, PRICE, &sign(&c, PRICE))).await,
        PRICE,
    );
    let close =
        json!({"action": "close", "channelId": c.id, "cumulativeAmount": (PRICE * 2).to_string(), "signature": v2});
    served(&present(&app, &offer, close).await, PRICE * 2);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = tokio::task::block_in_place(|| channel_state(&c.chain, &c.escrow, &c.id));
        if s.finalized {
            break;
        }
        assert!(Instant::now() < deadline, "the settler closes the channel: {s:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The channel is closed on chain with 2 prices; the book's facts are
    // older than the close. A higher voucher would be service no one pays.
    let v = present(&app, &offer, voucher_payload(&c.id, PRICE * 3, &v3)).await;
    assert_eq!(
        (v.status, kind(&v).as_str()),
        (410, "session/channel-finalized"),
        "{:?}",
        v.body
    );
    let close =
        json!({"action": "close", "channelId": c.id, "cumulativeAmount": (PRICE * 4).to_string(), "signature": v4});
    let v = present(&app, &offer, close).await;
    assert_eq!(v.status, 410, "{:?}", v.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_top_up_spends_the_balance_only_for_whoever_brought_its_transaction() {
    let c = tokio::task::block_in_place(|| channel(PRICE * 10));
    let w = Workdir::new();
    let app = Served::start(&env_on_redis(&c, &w, &unique_prefix()));
    let offer = session_offer(&app).await;
    // The payer signs 4 prices ahead and spends 1: 3 are left.
    let v4 = tokio::task::block_in_place(|| sign(&c, PRICE * 4));
    served(
        &present(&app, &offer, voucher_payload(&c.id, PRICE * 4, &v4)).await,
        PRICE,
    );
    // The payer tops up on its own: the transaction is public.
    let raw = tokio::task::block_in_place(|| {
        mine(&c.chain);
        let raw = signed_top_up_tx(&c.chain, &c.escrow, PAYER_KEY, ALPHA_USD, &c.id, PRICE * 2);
        broadcast(&c.chain, &raw);
        raw
    });
    let top_up = json!({"action": "topUp", "type": "transaction", "channelId": c.id,
        "transaction": raw, "additionalDeposit": (PRICE * 2).to_string()});
    for _ in 0..2 {
        let v = present(&app, &offer, top_up.clone()).await;
        assert_eq!(
            (v.status, kind(&v).as_str()),
            (402, "session/insufficient-balance"),
            "a mined topUp proves nothing: {:?}",
            v.body
        );
    }
    // The payer's balance is intact.
    for k in 2..=4 {
        served(
            &present(&app, &offer, voucher_payload(&c.id, PRICE * 4, &v4)).await,
            PRICE * k,
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_voucher_made_public_by_a_settlement_spends_nothing() {
    let c = tokio::task::block_in_place(|| channel(PRICE * 10));
    let w = Workdir::new();
    let mut env = env_on_redis(&c, &w, &unique_prefix());
    env.extend(settler_env(&w));
    let app = Served::start(&env);
    let offer = session_offer(&app).await;
    let (v4, v5) = tokio::task::block_in_place(|| (sign(&c, PRICE * 4), sign(&c, PRICE * 5)));
    served(
        &present(&app, &offer, voucher_payload(&c.id, PRICE * 4, &v4)).await,
        PRICE,
    );
    // The settler settles the voucher: its signature is now in calldata.
    let s = tokio::task::block_in_place(|| wait_settled(&c.chain, &c.escrow, &c.id, PRICE * 4));
    assert_eq!(s.settled, PRICE * 4);
    let v = present(&app, &offer, voucher_payload(&c.id, PRICE * 4, &v4)).await;
    assert_eq!(
        (v.status, kind(&v).as_str()),
        (402, "session/insufficient-balance"),
        "anyone can read a settled voucher: {:?}",
        v.body
    );
    assert_eq!(v.body["requiredCumulative"], (PRICE * 4 + 1).to_string());
    // The payer's next voucher covers what was left, and one more.
    let v = present(&app, &offer, voucher_payload(&c.id, PRICE * 5, &v5)).await;
    served(&v, PRICE * 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_to_other_terms_serves_no_voucher_under_them_and_keeps_the_balance() {
    let c = tokio::task::block_in_place(|| channel(PRICE * 10));
    let w = Workdir::new();
    let env = env_on_redis(&c, &w, &unique_prefix());
    let path = w.path("genome.json");
    let app = Served::start(&env);
    let old = session_offer(&app).await;
    let v3 = tokio::task::block_in_place(|| sign(&c, PRICE * 3));
    served(
        &present(&app, &old, voucher_payload(&c.id, PRICE * 3, &v3)).await,
        PRICE,
    );

    let swap = |g: Genome| {
        let g = g.signed();
        g.write(&path);
        tokio::task::block_in_place(|| {
            app.sighup();
            app.wait_for_log(|v| v["message"] == "genome swapped in" && v["genome_id"] == g.id())
        });
    };
    let genome = || crate::session::session_genome(&c.escrow);
    // Another recipient: the old challenge is void, a new one pays the new
    // recipient, whom this channel does not pay.
    swap(genome().version("1.1.0").set("/settlement/recipient", json!(STRANGER)));
    let v = present(&app, &old, voucher_payload(&c.id, PRICE * 3, &v3)).await;
    assert_eq!((v.status, v.reason()), (402, "challenge_invalid"), "{:?}", v.body);
    let new = session_offer(&app).await;
    let v = present(&app, &new, voucher_payload(&c.id, PRICE * 3, &v3)).await;
    assert_eq!(v.status, 402, "{:?}", v.body);
    // Sessions off: no session credential is taken.
    swap(crate::mpp_clients::t4_genome().version("1.2.0"));
    let v = present(&app, &old, voucher_payload(&c.id, PRICE * 3, &v3)).await;
    assert_eq!(v.status, 402, "{:?}", v.body);
    assert!(v.body.get("spent").is_none(), "{:?}", v.body);
    // Back to the first terms: the balance is what it was.
    swap(genome().version("1.3.0"));
    let back = session_offer(&app).await;
    served(
        &present(&app, &back, voucher_payload(&c.id, PRICE * 3, &v3)).await,
        PRICE * 2,
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_top_up_signed_by_another_than_the_payer_serves_nothing() {
    let c = tokio::task::block_in_place(|| channel(PRICE * 10));
    let w = Workdir::new();
    let app = Served::start(&env_on_redis(&c, &w, &unique_prefix()));
    let offer = session_offer(&app).await;
    let v4 = tokio::task::block_in_place(|| sign(&c, PRICE * 4));
    served(
        &present(&app, &offer, voucher_payload(&c.id, PRICE * 4, &v4)).await,
        PRICE,
    );
    // A stranger tops up the payer's channel by one unit.
    let raw = tokio::task::block_in_place(|| signed_top_up_tx(&c.chain, &c.escrow, STRANGER_KEY, ALPHA_USD, &c.id, 1));
    let top_up = json!({"action": "topUp", "type": "transaction", "channelId": c.id,
        "transaction": raw, "additionalDeposit": "1"});
    let broadcasts = c.chain.calls("eth_sendRawTransactionSync");
    let v = present(&app, &offer, top_up).await;
    assert_eq!(v.status, 402, "the payer's balance is not the stranger's: {:?}", v.body);
    // Refused before its broadcast: the escrow would revert it anyway.
    assert_eq!(
        v.body["type"], "https://paymentauth.org/problems/session/signer-mismatch",
        "{:?}",
        v.body
    );
    assert_eq!(
        c.chain.calls("eth_sendRawTransactionSync"),
        broadcasts,
        "never broadcast"
    );
    served(
        &present(&app, &offer, voucher_payload(&c.id, PRICE * 4, &v4)).await,
        PRICE * 2,
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn one_voucher_raced_on_both_endpoints_serves_what_it_covers_once() {
    let c = tokio::task::block_in_place(|| channel(PRICE * 10));
    let w = Workdir::new();
    let app = Served::start(&env_on_redis(&c, &w, &unique_prefix()));
    let offer = session_offer(&app).await;
    let v2 = tokio::task::block_in_place(|| sign(&c, PRICE * 2));
    let cred = credential(&echo(&offer), voucher_payload(&c.id, PRICE * 2, &v2), None);
    let mut tasks = Vec::new();
    for i in 0..12 {
        let client = reqwest::Client::new();
        let req = if i % 2 == 0 {
            client
                .post(app.url("/v1/verify"))
                .json(&json!({ "credential": cred, "resource": RESOURCE }))
        } else {
            client
                .get(app.url("/v1/authorize"))
                .header("x-forwarded-method", "GET")
                .header("x-forwarded-uri", "/reports/7")
                .header("authorization", cred.clone())
        };
        tasks.push(tokio::spawn(async move {
            Verified::read(req.send().await.unwrap()).await.status
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    statuses.sort();
    let want: Vec<u16> = [vec![200; 2], vec![402; 10]].concat();
    assert_eq!(statuses, want);
}
