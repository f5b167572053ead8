//! Fee sponsorship (`feePayer`) on the real dev chain, Redis and the
//! binary: the MPP client SDKs pay sponsored challenges unchanged, the
//! payer's balance drops by exactly the price and the sponsor's by the fee
//! (read from the fee token's `Transfer` to the fee manager: anvil's
//! `receipt.feePayer` names the sender); what would revert, what breaks the
//! caps and a `hash` credential are refused before any broadcast; the
//! shared budget stops sponsorship across two instances at its cap.

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::{Value, json};

use crate::chain::*;
use crate::helpers::*;
use crate::mpp_clients::pay;
use crate::payment::{bound_memo, credential, echo, hash_payload, payment_offer};
use crate::proxy::Caddy;

const SECRET: &str = "test-payment-secret-0123456789abcdef-not-for-production";
/// Dev account 3: funded in pathUSD on the dev chain; pays the fees.
const SPONSOR_KEY: &str = "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6";
pub(crate) const SPONSOR: &str = "0x90f79bf6eb2c4f870365e785982e1f101e93b906";
pub(crate) const PATH_USD: &str = "0x20c0000000000000000000000000000000000000";
pub(crate) const FEE_MANAGER: &str = "0xfeec000000000000000000000000000000000000";
/// A key that holds nothing: its transfers revert.
const BROKE_KEY: &str = "0x4242424242424242424242424242424242424242424242424242424242424242";
/// Gas and fee cap of the hand-offs signed here (tempo_batch.mjs).
const GAS: u64 = 800_000;
const MAX_FEE_PER_GAS: u64 = 20_000_000_000;
/// GAS × MAX_FEE_PER_GAS in pathUSD units (10^12 attodollars each).
const MAX_FEE: u64 = 16_000;

/// A genome whose default price offers sponsorship in pathUSD under
/// `max_total_fee` per transaction and `budget` per day.
fn sponsored_genome(max_total_fee: u64, budget: u64) -> Genome {
    Genome::single()
        .set("/settlement/challenge_ttl_seconds", json!(25))
        .set("/settlement/default_price/fee_payer", json!(true))
        .set(
            "/settlement/sponsorship",
            json!({
                "fee_tokens": [PATH_USD],
                "max_gas": 2_000_000,
                "max_fee_per_gas": "100000000000",
                "max_priority_fee_per_gas": "50000000000",
                "max_total_fee": max_total_fee.to_string(),
                "budget": budget.to_string(),
                "period_seconds": 86_400,
                "max_validity_seconds": 60,
            }),
        )
}

pub(crate) fn sponsor_env(w: &Workdir, g: &Genome, chain: &Chain) -> HashMap<String, String> {
    let mut env = chain_env(&w.genome(&g.clone().signed()), &chain.url);
    env.insert("SETTLEGATE_PAYMENT__SECRET".into(), SECRET.into());
    let key = w.path("sponsor.key");
    std::fs::write(&key, format!("{SPONSOR_KEY}\n")).unwrap();
    env.insert("SETTLEGATE_SPONSOR__KEY_FILE".into(), key.display().to_string());
    env.insert("SETTLEGATE_SPONSOR__BALANCE_INTERVAL_SECONDS".into(), "1".into());
    env
}

/// `token.balanceOf(who)` now.
pub(crate) fn balance(chain: &Chain, token: &str, who: &str) -> u128 {
    let out = Command::new(cast_bin())
        .args([
            "call",
            "--rpc-url",
            &chain.url,
            token,
            "balanceOf(address)(uint256)",
            who,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    text.split_whitespace().next().unwrap().parse().unwrap()
}

pub(crate) fn topic(address: &str) -> String {
    format!("0x{:0>64}", address.trim_start_matches("0x").to_lowercase())
}

/// The fee `payer` paid in `token` for `tx`: its `Transfer`s to the fee
/// manager in the receipt.
fn fee_paid(chain: &Chain, tx: &str, token: &str, payer: &str) -> u128 {
    let r: Value = serde_json::from_str(&chain.rpc("eth_getTransactionReceipt", &[tx])).unwrap();
    assert_eq!(r["status"], "0x1", "{r}");
    r["logs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| {
            l["address"].as_str().unwrap().eq_ignore_ascii_case(token)
                && l["topics"][1].as_str().unwrap().eq_ignore_ascii_case(&topic(payer))
                && l["topics"][2]
                    .as_str()
                    .unwrap()
                    .eq_ignore_ascii_case(&topic(FEE_MANAGER))
        })
        .map(|l| u128::from_str_radix(l["data"].as_str().unwrap().trim_start_matches("0x"), 16).unwrap())
        .sum()
}

/// Every fee the sponsor paid on chain so far, from the fee transfers of
/// every block (the chain is this test's own).
fn sponsor_fees_on_chain(chain: &Chain) -> u128 {
    let head = u64::from_str_radix(
        chain
            .rpc("eth_blockNumber", &[])
            .trim()
            .trim_matches('"')
            .trim_start_matches("0x"),
        16,
    )
    .unwrap();
    let filter = json!({
        "fromBlock": "0x0",
        "toBlock": format!("0x{head:x}"),
        "address": PATH_USD,
        "topics": [
            "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef",
            topic(SPONSOR),
            topic(FEE_MANAGER),
        ],
    });
    let logs: Value = serde_json::from_str(&chain.rpc("eth_getLogs", &[&filter.to_string()])).unwrap();
    logs.as_array()
        .unwrap()
        .iter()
        .map(|l| u128::from_str_radix(l["data"].as_str().unwrap().trim_start_matches("0x"), 16).unwrap())
        .sum()
}

/// The gate's broadcasts: it sends synchronously (anvil also logs an
/// `eth_sendRawTransaction` inside each, and `cast send` logs only that).
pub(crate) fn broadcasts(chain: &Chain) -> usize {
    chain.calls("eth_sendRawTransactionSync")
}

/// Waits until `/readyz` says the sponsor is offered (its first balance
/// and budget read came back).
pub(crate) async fn until_offered(app: &Served) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, body) = app.get_json("/readyz").await;
        if body["components"]["sponsor"]["state"] == "offered" {
            return body["components"]["sponsor"].clone();
        }
        assert!(Instant::now() < deadline, "the sponsor is never offered: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A fresh `Payment` challenge from `app`.
async fn offer(app: &Served) -> HashMap<String, String> {
    payment_offer(&app.verify(json!({}), &[]).await)
}

/// The charge request a 402's `Payment` challenge carries.
fn charge_request(offer: &HashMap<String, String>) -> Value {
    serde_json::from_slice(&B64.decode(&offer["request"]).unwrap()).unwrap()
}

/// A sponsorship hand-off (viem's 0x78) signed by `key`: one
/// `transferWithMemo` of `amount` AlphaUSD to the recipient.
fn handoff(key: &str, amount: u64, memo: &str, gas: u64) -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("node")
        .arg(root.join("tests/clients/tempo_batch.mjs"))
        .args(["--key", key, "--fee-payer", "--gas", &gas.to_string()])
        .args(["--max-fee-per-gas", &MAX_FEE_PER_GAS.to_string()])
        .args([
            ALPHA_USD,
            "transferWithMemo(address,uint256,bytes32)",
            RECIPIENT,
            &amount.to_string(),
            memo,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tempo_batch: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let signed = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(signed.starts_with("0x78"), "{signed}");
    signed
}

/// One payment by an MPP client through Caddy: the payer pays exactly the
/// price, the sponsor exactly the fee its fee transfer shows.
async fn client_pays_sponsored(client: &str) {
    let chain = Chain::start();
    let w = Workdir::new();
    let app = Served::start(&sponsor_env(&w, &sponsored_genome(50_000, 1_000_000), &chain));
    until_offered(&app).await;
    // The 402 offers sponsorship, in pull mode only.
    let v = app.verify(json!({}), &[]).await;
    let request = charge_request(&payment_offer(&v));
    assert_eq!(request["methodDetails"]["feePayer"], true, "{request}");
    assert_eq!(request["methodDetails"]["supportedModes"], json!(["pull"]), "{request}");

    let caddy = Caddy::start(app.addr);
    let payer_alpha = balance(&chain, ALPHA_USD, PAYER);
    let payer_path = balance(&chain, PATH_USD, PAYER);
    let sponsor_path = balance(&chain, PATH_USD, SPONSOR);
    let sends = broadcasts(&chain);
    let paid = tokio::task::block_in_place(|| pay(client, "pull", &caddy.url("/paid/x"), &chain.url));
    assert_eq!(paid["status"], 200, "{paid}");
    let tx = paid["body"]["x_settlement_tx"].as_str().unwrap().to_owned();
    assert_eq!(paid["body"]["x_settlement_payer"], PAYER, "{paid}");

    let fee = fee_paid(&chain, &tx, PATH_USD, SPONSOR);
    assert!(fee > 0, "the sponsor paid no fee for {tx}");
    assert_eq!(balance(&chain, ALPHA_USD, PAYER), payer_alpha - 1_000_000);
    assert_eq!(balance(&chain, PATH_USD, PAYER), payer_path, "the payer paid no fee");
    assert_eq!(balance(&chain, PATH_USD, SPONSOR), sponsor_path - fee);
    assert_eq!(broadcasts(&chain), sends + 1, "{:?}", chain.all_calls());
    // The budget was charged the fee, not the hold.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let sponsor = until_offered(&app).await;
        if sponsor["budget_remaining"] == (1_000_000 - fee).to_string() {
            break;
        }
        assert!(Instant::now() < deadline, "{sponsor}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn mppx_pays_a_sponsored_challenge_and_the_sponsor_pays_the_fee() {
    client_pays_sponsored("mppx").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pympp_pays_a_sponsored_challenge_and_the_sponsor_pays_the_fee() {
    client_pays_sponsored("pympp").await;
}

/// What must not cost the sponsor anything is refused before a broadcast:
/// a `hash` credential, a transfer that would revert, a hand-off above the
/// caps, a hand-off whose embedded sender is not its signer. Then a good
/// one is sponsored.
#[tokio::test(flavor = "multi_thread")]
async fn what_would_revert_or_break_the_caps_is_refused_before_any_broadcast() {
    let chain = Chain::start();
    let w = Workdir::new();
    // A route at the same price that does not sponsor.
    let genome = sponsored_genome(MAX_FEE, 1_000_000).set(
        "/settlement/prices",
        json!([{"resource": "GET /plain", "amount": "1000000"}]),
    );
    let app = Served::start(&sponsor_env(&w, &genome, &chain));
    until_offered(&app).await;
    let sponsor_before = balance(&chain, PATH_USD, SPONSOR);

    // A sponsored challenge presented for the route that does not sponsor.
    let o = offer(&app).await;
    let signed = handoff(PAYER_KEY, 1_000_000, &bound_memo(&o), GAS);
    let cred = credential(&echo(&o), json!({"type": "transaction", "signature": signed}), None);
    let v = app
        .verify(json!({ "credential": cred, "resource": "GET /plain" }), &[])
        .await;
    assert_eq!((v.status, v.reason()), (402, "challenge_invalid"), "{:?}", v.body);
    let plain = charge_request(&payment_offer(&v));
    assert!(plain["methodDetails"].get("feePayer").is_none(), "{plain}");

    // The client broadcast it itself: refused, as the spec says.
    let o = offer(&app).await;
    let tx = chain.transfer_with_memo(ALPHA_USD, RECIPIENT, 1_000_000, &bound_memo(&o));
    let v = app
        .verify(
            json!({ "credential": credential(&echo(&o), hash_payload(&tx), None) }),
            &[],
        )
        .await;
    assert_eq!((v.status, v.reason()), (402, "sponsorship_needs_pull"), "{:?}", v.body);

    let sends = broadcasts(&chain);
    // A payer with nothing to pay with: the transfer would revert.
    let o = offer(&app).await;
    let broke = handoff(BROKE_KEY, 1_000_000, &bound_memo(&o), GAS);
    let cred = credential(&echo(&o), json!({"type": "transaction", "signature": broke}), None);
    let v = app.verify(json!({ "credential": cred }), &[]).await;
    assert_eq!((v.status, v.reason()), (402, "would_revert"), "{:?}", v.body);

    // A batch whose calls each fit the payer's balance, but not together:
    // simulated one by one they pass, the sum is what the chain would run.
    let thin_key = "0x5555555555555555555555555555555555555555555555555555555555555555";
    let thin = String::from_utf8(
        Command::new(cast_bin())
            .args(["wallet", "address", "--private-key", thin_key])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_owned();
    chain.transfer(ALPHA_USD, &thin, 1_500_000);
    let o = offer(&app).await;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("node")
        .arg(root.join("tests/clients/tempo_batch.mjs"))
        .args(["--key", thin_key, "--fee-payer", "--gas", &GAS.to_string()])
        .args([
            ALPHA_USD,
            "transferWithMemo(address,uint256,bytes32)",
            RECIPIENT,
            "1000000",
            &bound_memo(&o),
        ])
        .args(["+", ALPHA_USD, "transfer(address,uint256)", RECIPIENT, "1000000"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let batch = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let cred = credential(&echo(&o), json!({"type": "transaction", "signature": batch}), None);
    let v = app.verify(json!({ "credential": cred }), &[]).await;
    assert_eq!((v.status, v.reason()), (402, "would_revert"), "{:?}", v.body);
    assert_eq!(broadcasts(&chain), sends, "{:?}", chain.all_calls());

    // Above the sponsor's fee cap (GAS + 1 at 20 gwei costs more than MAX_FEE).
    let o = offer(&app).await;
    let dear = handoff(PAYER_KEY, 1_000_000, &bound_memo(&o), GAS + 100_000);
    let cred = credential(&echo(&o), json!({"type": "transaction", "signature": dear}), None);
    let v = app.verify(json!({ "credential": cred }), &[]).await;
    assert_eq!((v.status, v.reason()), (402, "sponsorship_refused"), "{:?}", v.body);

    // mppx's hand-off naming someone else as its sender.
    let o = offer(&app).await;
    let good = handoff(PAYER_KEY, 1_000_000, &bound_memo(&o), GAS);
    let forged = good.replacen(&PAYER[2..], &STRANGER[2..], 1);
    assert_ne!(forged, good);
    let cred = credential(&echo(&o), json!({"type": "transaction", "signature": forged}), None);
    let v = app.verify(json!({ "credential": cred }), &[]).await;
    assert_eq!((v.status, v.reason()), (402, "sponsorship_refused"), "{:?}", v.body);

    // None reached the node, none cost the sponsor, none held budget.
    assert_eq!(broadcasts(&chain), sends, "{:?}", chain.all_calls());
    assert_eq!(balance(&chain, PATH_USD, SPONSOR), sponsor_before);
    assert_eq!(until_offered(&app).await["budget_remaining"], "1000000");

    // The good one is sponsored once; presented again, it is a replay.
    let cred = credential(&echo(&o), json!({"type": "transaction", "signature": good}), None);
    let v = app.verify(json!({ "credential": cred.clone() }), &[]).await;
    assert_eq!(v.status, 200, "{:?}", v.body);
    let tx = v.body["tx_hash"].as_str().unwrap().to_owned();
    let fee = fee_paid(&chain, &tx, PATH_USD, SPONSOR);
    assert!(fee > 0);
    eprintln!("sponsored fee {fee}");
    assert_eq!(balance(&chain, PATH_USD, SPONSOR), sponsor_before - fee);
    let again = app.verify(json!({ "credential": cred }), &[]).await;
    assert_eq!((again.status, again.code()), (402, "REPLAYED"), "{:?}", again.body);
    assert_eq!(broadcasts(&chain), sends + 1, "{:?}", chain.all_calls());
}

/// Two instances share one budget through Redis: sponsored payments,
/// alternating between them, stop when the budget cannot hold one more at
/// its cap, and the fees the sponsor paid on chain stay within the budget.
#[tokio::test(flavor = "multi_thread")]
async fn a_budget_shared_by_two_instances_stops_sponsorship_at_its_cap() {
    let chain = Chain::start();
    let w = Workdir::new();
    // One transaction at its cap, and about three at the fee they really
    // cost (about 1,200 pathUSD units each on the dev chain).
    let budget = MAX_FEE + 3_600;
    let env = sponsor_env(&w, &sponsored_genome(MAX_FEE, budget), &chain);
    let apps = [Served::start(&env), Served::start(&env)];
    for app in &apps {
        until_offered(app).await;
    }
    let mut sponsored = 0;
    let mut stopped = None;
    for i in 0..20 {
        let app = &apps[i % 2];
        // Each instance reads the budget every second: a read taken while
        // the last payment's hold was still open withdraws the offer until
        // the next read. Stopped means not offered for three reads in a row.
        let deadline = Instant::now() + Duration::from_secs(3);
        let o = loop {
            let o = payment_offer(&app.verify(json!({}), &[]).await);
            if charge_request(&o)["methodDetails"]["feePayer"] == true || Instant::now() >= deadline {
                break o;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        if charge_request(&o)["methodDetails"]["feePayer"] != true {
            stopped = Some("no longer offered".to_owned());
            break;
        }
        let sends = broadcasts(&chain);
        let signed = handoff(PAYER_KEY, 1_000_000, &bound_memo(&o), GAS);
        let cred = credential(&echo(&o), json!({"type": "transaction", "signature": signed}), None);
        let v = app.verify(json!({ "credential": cred }), &[]).await;
        if v.status == 200 {
            sponsored += 1;
            continue;
        }
        assert_eq!((v.status, v.reason()), (402, "sponsorship_unavailable"), "{:?}", v.body);
        assert_eq!(broadcasts(&chain), sends, "refused, yet broadcast");
        stopped = Some("refused".to_owned());
        break;
    }
    assert!(
        stopped.is_some(),
        "sponsorship never stopped after {sponsored} payments"
    );
    let spent = sponsor_fees_on_chain(&chain);
    eprintln!("sponsored {sponsored} payments for {spent} of {budget} ({stopped:?})");
    assert!(sponsored >= 2, "{sponsored}");
    // Within the budget, and too close to it for one more transaction.
    assert!(spent <= u128::from(budget), "{spent} > {budget}");
    assert!(u128::from(budget) - spent < u128::from(MAX_FEE), "{spent} of {budget}");
    // Both instances now stop offering it.
    for app in &apps {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let o = payment_offer(&app.verify(json!({}), &[]).await);
            if charge_request(&o)["methodDetails"]["feePayer"] != true {
                assert_eq!(
                    charge_request(&o)["methodDetails"]["supportedModes"],
                    json!(["pull", "push"])
                );
                break;
            }
            assert!(Instant::now() < deadline, "still offered");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let (_, ready) = app.get_json("/readyz").await;
        assert_eq!(ready["components"]["sponsor"]["state"], "withdrawn", "{ready}");
        assert_eq!(ready["status"], "ready", "{ready}");
    }
}

/// A sponsor whose fee-token balance is below `min_balance` is not
/// offered: `/readyz` says `withdrawn` with the balance it read (the
/// instance stays ready), the metrics say so, challenges carry no
/// `feePayer`, and plain charges still settle. Funded, it is offered at the
/// next read.
#[tokio::test(flavor = "multi_thread")]
async fn an_unfunded_sponsor_is_withdrawn_and_offered_once_funded() {
    let chain = Chain::start();
    let w = Workdir::new();
    let mut env = sponsor_env(&w, &sponsored_genome(MAX_FEE, 1_000_000), &chain);
    std::fs::write(w.path("sponsor.key"), format!("{BROKE_KEY}\n")).unwrap();
    env.insert(
        "SETTLEGATE_SPONSOR__KEY_FILE".into(),
        w.path("sponsor.key").display().to_string(),
    );
    let app = Served::start(&env);
    let deadline = Instant::now() + Duration::from_secs(10);
    let sponsor = loop {
        let (status, body) = app.get_json("/readyz").await;
        if body["components"]["sponsor"]["balance"] == "0" {
            assert_eq!(status, 200, "{body}");
            break body["components"]["sponsor"].clone();
        }
        assert!(Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(sponsor["state"], "withdrawn", "{sponsor}");
    assert_eq!(sponsor["fee_token"], PATH_USD);
    let metrics = reqwest::get(app.url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("settlegate_sponsor_offered 0"), "{metrics}");
    assert!(metrics.contains("settlegate_sponsor_balance 0"), "{metrics}");
    // The challenge offers a plain charge, which still settles.
    let o = offer(&app).await;
    let request = charge_request(&o);
    assert!(request["methodDetails"].get("feePayer").is_none(), "{request}");
    assert_eq!(request["methodDetails"]["supportedModes"], json!(["pull", "push"]));
    // A hand-off that waits for a sponsor, against a challenge that offers
    // none: not a transaction the node takes, so it is not broadcast.
    let sends = broadcasts(&chain);
    let unsponsored = handoff(PAYER_KEY, 1_000_000, &bound_memo(&o), GAS);
    let cred = credential(
        &echo(&o),
        json!({"type": "transaction", "signature": unsponsored}),
        None,
    );
    let v = app.verify(json!({ "credential": cred }), &[]).await;
    assert_eq!((v.status, v.code()), (402, "MALFORMED_CREDENTIAL"), "{:?}", v.body);
    assert_eq!(broadcasts(&chain), sends);
    let tx = chain.transfer_with_memo(ALPHA_USD, RECIPIENT, 1_000_000, &bound_memo(&o));
    let v = app
        .verify(
            json!({ "credential": credential(&echo(&o), hash_payload(&tx), None) }),
            &[],
        )
        .await;
    assert_eq!(v.status, 200, "{:?}", v.body);

    // Funded above min_balance (MAX_FEE): offered at the next read.
    let address = sponsor["address"].as_str().unwrap().to_owned();
    chain.transfer(PATH_USD, &address, MAX_FEE);
    let sponsor = until_offered(&app).await;
    assert_eq!(sponsor["balance"], MAX_FEE.to_string());
    assert!(charge_request(&offer(&app).await)["methodDetails"]["feePayer"] == true);
    let metrics = reqwest::get(app.url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("settlegate_sponsor_offered 1"), "{metrics}");
}

/// The spec's form of a hand-off: `0x76` with the `0x00` placeholder where
/// mppx writes the sender's address (the sender signed the same hash).
fn placeholder_form(handoff: &str, sender: &str) -> String {
    let raw = hex::decode(handoff.trim_start_matches("0x78")).unwrap();
    let len_of_len = usize::from(raw[0] - 0xf7);
    let payload = &raw[1 + len_of_len..];
    let slot: Vec<u8> = std::iter::once(0x94)
        .chain(hex::decode(sender.trim_start_matches("0x")).unwrap())
        .collect();
    let at = payload
        .windows(21)
        .position(|w| w == slot.as_slice())
        .expect("the sender's slot");
    let mut body = payload[..at].to_vec();
    body.push(0x00);
    body.extend_from_slice(&payload[at + 21..]);
    let len = body.len().to_be_bytes();
    let first = len.iter().position(|b| *b != 0).unwrap();
    let mut out = vec![0x76, 0xf7 + (len.len() - first) as u8];
    out.extend_from_slice(&len[first..]);
    out.extend_from_slice(&body);
    format!("0x{}", hex::encode(out))
}

/// The spec's hand-off (`0x76`, `0x00` placeholder) is sponsored like
/// mppx's, and the two spellings are one payment: the same co-signed
/// transaction, so the second is a replay, never a second broadcast.
#[tokio::test(flavor = "multi_thread")]
async fn the_specs_placeholder_hand_off_is_sponsored_and_is_the_same_payment() {
    let chain = Chain::start();
    let w = Workdir::new();
    let app = Served::start(&sponsor_env(&w, &sponsored_genome(MAX_FEE, 1_000_000), &chain));
    until_offered(&app).await;
    let o = offer(&app).await;
    let mppx_form = handoff(PAYER_KEY, 1_000_000, &bound_memo(&o), GAS);
    let spec_form = placeholder_form(&mppx_form, PAYER);
    assert!(
        spec_form.starts_with("0x76") && spec_form.len() < mppx_form.len() - 38,
        "{spec_form}"
    );
    let sends = broadcasts(&chain);
    let present = |signed: &str| credential(&echo(&o), json!({"type": "transaction", "signature": signed}), None);
    let v = app.verify(json!({ "credential": present(&spec_form) }), &[]).await;
    assert_eq!(v.status, 200, "{:?}", v.body);
    let tx = v.body["tx_hash"].as_str().unwrap().to_owned();
    assert!(fee_paid(&chain, &tx, PATH_USD, SPONSOR) > 0);
    let again = app.verify(json!({ "credential": present(&mppx_form) }), &[]).await;
    assert_eq!((again.status, again.code()), (402, "REPLAYED"), "{:?}", again.body);
    assert_eq!(broadcasts(&chain), sends + 1, "{:?}", chain.all_calls());
}

/// One sponsored credential presented to two instances at once is
/// co-signed alike by both, broadcast once, settled once and charged to the
/// shared budget once.
#[tokio::test(flavor = "multi_thread")]
async fn one_sponsored_payment_raced_on_two_instances_is_broadcast_and_charged_once() {
    let chain = Chain::start();
    let w = Workdir::new();
    let env = sponsor_env(&w, &sponsored_genome(MAX_FEE, 1_000_000), &chain);
    let (a, b) = (Served::start(&env), Served::start(&env));
    until_offered(&a).await;
    until_offered(&b).await;
    let o = offer(&a).await;
    let signed = handoff(PAYER_KEY, 1_000_000, &bound_memo(&o), GAS);
    let cred = credential(&echo(&o), json!({"type": "transaction", "signature": signed}), None);
    let sends = broadcasts(&chain);
    let body = json!({ "credential": cred });
    let (x, y) = tokio::join!(a.verify(body.clone(), &[]), b.verify(body.clone(), &[]));
    let mut statuses = [x.status, y.status];
    statuses.sort();
    assert_eq!(statuses, [200, 402], "{:?} {:?}", x.body, y.body);
    let (won, lost) = if x.status == 200 { (&x, &y) } else { (&y, &x) };
    assert!(
        ["REPLAYED", "PAYMENT_PENDING"].contains(&lost.code()),
        "{:?}",
        lost.body
    );
    assert_eq!(broadcasts(&chain), sends + 1, "{:?}", chain.all_calls());
    let fee = fee_paid(&chain, won.body["tx_hash"].as_str().unwrap(), PATH_USD, SPONSOR);
    // Both instances read the one ledger: charged the fee once.
    for app in [&a, &b] {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let s = until_offered(app).await;
            if s["budget_remaining"] == (1_000_000 - fee).to_string() {
                break;
            }
            assert!(Instant::now() < deadline, "{s}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let again = b.verify(body, &[]).await;
    assert_eq!((again.status, again.code()), (402, "REPLAYED"), "{:?}", again.body);
    assert_eq!(broadcasts(&chain), sends + 1);
}

/// A sponsor key file that is not a key, or a genome whose route sponsors
/// without a `sponsorship` policy, stops the boot before any socket; the
/// error names the setting, never the file's text.
#[test]
fn a_bad_sponsor_key_or_policy_stops_the_boot_without_quoting_the_key() {
    let chain = Chain::start();
    let w = Workdir::new();
    let mut env = sponsor_env(&w, &sponsored_genome(MAX_FEE, 1_000_000), &chain);
    let not_a_key = format!("0x{}", "zq".repeat(32));
    std::fs::write(w.path("sponsor.key"), &not_a_key).unwrap();
    let r = run_refused(&env);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert_eq!(r.accepted_connections, 0);
    assert!(
        r.stderr.contains("CONFIG_INVALID") && r.stderr.contains("sponsor.key_file"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("zqzq"), "{}", r.stderr);

    std::fs::write(w.path("sponsor.key"), format!("{SPONSOR_KEY}\n")).unwrap();
    let unsigned_caps = Genome::single().set("/settlement/default_price/fee_payer", json!(true));
    env.insert(
        "SETTLEGATE_GENOME__PATH".into(),
        w.genome(&unsigned_caps.signed()).display().to_string(),
    );
    let r = run_refused(&env);
    assert!(
        r.stderr.contains("GENOME_POLICY_INVALID") && r.stderr.contains("fee_payer needs a settlement.sponsorship"),
        "{}",
        r.stderr
    );
}

/// A sponsored route with a split (the spec's example): mppx pays it
/// unchanged, the payer exactly the price, shared between the recipient
/// and the split's, and the sponsor the fee.
#[tokio::test(flavor = "multi_thread")]
async fn mppx_pays_a_sponsored_split_route() {
    // Dev account 5: the split's recipient.
    const SPLIT: &str = "0x9965507d1a55bcc2695c58ba16fb37d819b0a4dc";
    let chain = Chain::start();
    let w = Workdir::new();
    let genome = sponsored_genome(50_000, 1_000_000).set(
        "/settlement/prices",
        json!([{"resource": "GET /split/*", "amount": "1000000", "fee_payer": true,
            "splits": [{"recipient": SPLIT, "amount": "200000"}]}]),
    );
    let app = Served::start(&sponsor_env(&w, &genome, &chain));
    until_offered(&app).await;
    let v = app.verify(json!({"resource": "GET /split/x"}), &[]).await;
    let request = charge_request(&payment_offer(&v));
    assert_eq!(request["methodDetails"]["feePayer"], true, "{request}");
    assert_eq!(request["methodDetails"]["splits"][0]["amount"], "200000", "{request}");

    let caddy = Caddy::start(app.addr);
    let before = [PAYER, RECIPIENT, SPLIT].map(|a| balance(&chain, ALPHA_USD, a));
    let sponsor_path = balance(&chain, PATH_USD, SPONSOR);
    let paid = tokio::task::block_in_place(|| pay("mppx", "pull", &caddy.url("/split/x"), &chain.url));
    assert_eq!(paid["status"], 200, "{paid}");
    let tx = paid["body"]["x_settlement_tx"].as_str().unwrap().to_owned();
    let after = [PAYER, RECIPIENT, SPLIT].map(|a| balance(&chain, ALPHA_USD, a));
    assert_eq!(before[0] - after[0], 1_000_000, "the payer paid exactly the price");
    assert_eq!(after[1] - before[1], 800_000);
    assert_eq!(after[2] - before[2], 200_000);
    let fee = fee_paid(&chain, &tx, PATH_USD, SPONSOR);
    assert!(fee > 0);
    assert_eq!(balance(&chain, PATH_USD, SPONSOR), sponsor_path - fee);
}

/// A payer holding one price sends several sponsored payments at once,
/// each a distinct transaction (expiring nonces: all could be mined), over
/// two instances. Each is simulated against the payer's whole balance, so
/// without one sponsored transaction per sender in flight they would all
/// pass, be broadcast, and all but one revert at the sponsor's cost. Now:
/// exactly one 200 and one broadcast, the others refused before any, the
/// sponsor charged one fee, nothing reverted.
#[tokio::test(flavor = "multi_thread")]
async fn one_payer_racing_sponsored_payments_gets_one_broadcast() {
    const RACER_KEY: &str = "0x5252525252525252525252525252525252525252525252525252525252525252";
    let racer = {
        let raw = alloy_primitives::hex::decode(&RACER_KEY[2..]).unwrap();
        let key = k256::ecdsa::SigningKey::from_slice(&raw).unwrap();
        format!("{:#x}", alloy_primitives::Address::from_private_key(&key))
    };
    let chain = Chain::start();
    chain.transfer(ALPHA_USD, &racer, 1_000_000);
    let w = Workdir::new();
    let env = sponsor_env(&w, &sponsored_genome(MAX_FEE, 1_000_000), &chain);
    let apps = [Served::start(&env), Served::start(&env)];
    for app in &apps {
        until_offered(app).await;
    }
    let mut bodies = Vec::new();
    for i in 0..4 {
        let o = offer(&apps[i % 2]).await;
        let signed = handoff(RACER_KEY, 1_000_000, &bound_memo(&o), GAS);
        bodies.push(
            json!({ "credential": credential(&echo(&o), json!({"type": "transaction", "signature": signed}), None) }),
        );
    }
    let (sends, fees_before) = (broadcasts(&chain), sponsor_fees_on_chain(&chain));
    let answers = {
        let (a, b) = (&apps[0], &apps[1]);
        let (w, x, y, z) = tokio::join!(
            a.verify(bodies[0].clone(), &[]),
            b.verify(bodies[1].clone(), &[]),
            a.verify(bodies[2].clone(), &[]),
            b.verify(bodies[3].clone(), &[]),
        );
        [w, x, y, z]
    };
    let paid = answers.iter().filter(|v| v.status == 200).count();
    assert_eq!(paid, 1, "{:?}", answers.iter().map(|v| &v.body).collect::<Vec<_>>());
    for v in answers.iter().filter(|v| v.status != 200) {
        assert_eq!(v.status, 402, "{:?}", v.body);
        assert!(
            ["sponsorship_unavailable", "would_revert"].contains(&v.reason()),
            "{:?}",
            v.body
        );
    }
    assert_eq!(broadcasts(&chain), sends + 1, "{:?}", chain.all_calls());
    assert_eq!(balance(&chain, ALPHA_USD, &racer), 0);
    let won = answers.iter().find(|v| v.status == 200).unwrap();
    let fee = fee_paid(&chain, won.body["tx_hash"].as_str().unwrap(), PATH_USD, SPONSOR);
    assert_eq!(
        sponsor_fees_on_chain(&chain) - fees_before,
        fee,
        "the sponsor paid for more than one"
    );
}
