//! An attacker's probes of the newest charge features, on the real binary,
//! the dev chain and Redis: fee sponsorship (what else a hand-off can carry,
//! its other spellings, one payer's concurrent hand-offs, a hand-off the
//! node queues), and `proof` credentials (one claim per challenge, whatever
//! the form, endpoint, route or spelling of its id).
//!
//! Each test asserts the behaviour the gate must have. Those named
//! `hole_…` failed when written: they demonstrate a finding of
//! `/work/notes/probe-findings.md` and pass once it is fixed.

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use alloy_primitives::{Address, B256};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use k256::ecdsa::SigningKey;
use serde_json::{Value, json};
use settlegate_rules::proof::{digest_v1, digest_v3};

use crate::chain::*;
use crate::helpers::*;
use crate::mpp_clients::payment_env;
use crate::payment::{bound_memo, credential, echo, payment_offer};
use crate::sponsor::{FEE_MANAGER, PATH_USD, SPONSOR, balance, broadcasts, sponsor_env, topic, until_offered};

const TRANSFER_TOPIC: &str = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef";
const PRICE: u64 = 1_000_000;
/// 800,000 gas (probe_handoff.mjs's default) at 20 gwei, in pathUSD units: the most one hand-off here can cost.
const MAX_FEE: u64 = 16_000;
const BUDGET: u64 = 1_000_000;
const CHAIN_ID: u64 = 42431;

fn sponsored_genome(fee_tokens: &[&str]) -> Genome {
    sponsored_genome_with(fee_tokens, BUDGET)
}

fn sponsored_genome_with(fee_tokens: &[&str], budget: u64) -> Genome {
    Genome::single()
        .set("/settlement/challenge_ttl_seconds", json!(25))
        .set("/settlement/default_price/fee_payer", json!(true))
        .set(
            "/settlement/sponsorship",
            json!({
                "fee_tokens": fee_tokens,
                "max_gas": 2_000_000,
                "max_fee_per_gas": "100000000000",
                "max_priority_fee_per_gas": "50000000000",
                "max_total_fee": MAX_FEE.to_string(),
                "budget": budget.to_string(),
                "period_seconds": 86_400,
                "max_validity_seconds": 60,
            }),
        )
}

/// Every fee transfer of the sponsor on chain so far, in `token`: (count, sum).
fn sponsor_fees(chain: &Chain, token: &str) -> (usize, u128) {
    let head = chain.rpc("eth_blockNumber", &[]);
    let filter = json!({
        "fromBlock": "0x0",
        "toBlock": head.trim().trim_matches('"'),
        "address": token,
        "topics": [TRANSFER_TOPIC, topic(SPONSOR), topic(FEE_MANAGER)],
    });
    let logs: Value = serde_json::from_str(&chain.rpc("eth_getLogs", &[&filter.to_string()])).unwrap();
    let fees: Vec<u128> = logs
        .as_array()
        .unwrap()
        .iter()
        .map(|l| u128::from_str_radix(l["data"].as_str().unwrap().trim_start_matches("0x"), 16).unwrap())
        .collect();
    (fees.len(), fees.iter().sum())
}

/// The fee the sponsor paid for `tx` (its receipt's fee transfers).
fn fee_of(chain: &Chain, tx: &str) -> u128 {
    let r: Value = serde_json::from_str(&chain.rpc("eth_getTransactionReceipt", &[tx])).unwrap();
    r["logs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| {
            l["topics"][0] == TRANSFER_TOPIC
                && l["topics"][1].as_str().unwrap().eq_ignore_ascii_case(&topic(SPONSOR))
                && l["topics"][2]
                    .as_str()
                    .unwrap()
                    .eq_ignore_ascii_case(&topic(FEE_MANAGER))
        })
        .map(|l| u128::from_str_radix(l["data"].as_str().unwrap().trim_start_matches("0x"), 16).unwrap())
        .sum()
}

/// What the shared budget has committed (spent and held), once a fresh
/// read of it has been published on `/readyz`.
async fn committed(app: &Served) -> u128 {
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let (_, body) = app.get_json("/readyz").await;
    let left: u128 = body["components"]["sponsor"]["budget_remaining"]
        .as_str()
        .unwrap_or_else(|| panic!("{body}"))
        .parse()
        .unwrap();
    u128::from(BUDGET) - left
}

async fn sponsored_offer(app: &Served) -> HashMap<String, String> {
    let v = app.verify(json!({}), &[]).await;
    let o = payment_offer(&v);
    let request: Value = serde_json::from_slice(&B64.decode(&o["request"]).unwrap()).unwrap();
    assert_eq!(request["methodDetails"]["feePayer"], true, "{request}");
    o
}

fn address(key: &str) -> String {
    let k = SigningKey::from_slice(&hex::decode(&key[2..]).unwrap()).unwrap();
    format!("{:#x}", Address::from_public_key(k.verifying_key()))
}

/// A hand-off (viem's 0x78) signed by `key` with `opts` (probe_handoff.mjs
/// flags), making `calls` (each: token, signature, args…).
fn handoff(key: &str, opts: &[&str], calls: &[&[&str]]) -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut cmd = Command::new("node");
    cmd.arg(root.join("tests/clients/probe_handoff.mjs"))
        .args(["--key", key])
        .args(opts);
    for (i, c) in calls.iter().enumerate() {
        if i > 0 {
            cmd.arg("+");
        }
        cmd.args(*c);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "probe_handoff: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let signed = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(signed.starts_with("0x78"), "{signed}");
    signed
}

/// The payment of `o` by `key`, as mppx signs it.
fn pay_handoff(key: &str, o: &HashMap<String, String>) -> String {
    handoff(
        key,
        &[],
        &[&[
            ALPHA_USD,
            "transferWithMemo(address,uint256,bytes32)",
            RECIPIENT,
            &PRICE.to_string(),
            &bound_memo(o),
        ]],
    )
}

fn present(o: &HashMap<String, String>, signed: &str) -> Value {
    json!({ "credential": credential(&echo(o), json!({"type": "transaction", "signature": signed}), None) })
}

/// `handoff` with the sender signature's `v` written the other way
/// (0/1 ↔ 27/28): the same signature, other bytes.
fn respell_v(handoff: &str) -> String {
    let mut raw = hex::decode(&handoff[2..]).unwrap();
    let v = raw.last_mut().unwrap();
    *v = if *v < 27 { *v + 27 } else { *v - 27 };
    format!("0x{}", hex::encode(raw))
}

/// `handoff` (0x78) naming `token` as its fee token (a field the sender
/// does not sign).
fn with_fee_token(handoff: &str, sender: &str, token: &str) -> String {
    let raw = hex::decode(&handoff[4..]).unwrap();
    let len_of_len = usize::from(raw[0] - 0xf7);
    let payload = &raw[1 + len_of_len..];
    let slot: Vec<u8> = [0x80u8, 0x94]
        .into_iter()
        .chain(hex::decode(&sender[2..]).unwrap())
        .collect();
    let at = payload
        .windows(22)
        .position(|w| w == slot.as_slice())
        .expect("fee token slot");
    let mut body = payload[..at].to_vec();
    body.push(0x94);
    body.extend(hex::decode(&token[2..]).unwrap());
    body.extend_from_slice(&payload[at + 1..]);
    let len = body.len().to_be_bytes();
    let first = len.iter().position(|b| *b != 0).unwrap();
    let mut out = vec![0x78, 0xf7 + (len.len() - first) as u8];
    out.extend_from_slice(&len[first..]);
    out.extend_from_slice(&body);
    format!("0x{}", hex::encode(out))
}

/// Hand-offs that carry more than the payment, or break a cap, are refused
/// before anything is broadcast, simulated at a cost or held.
#[tokio::test(flavor = "multi_thread")]
async fn probe_sponsored_hand_offs_carrying_more_than_the_payment_cost_nothing() {
    let chain = Chain::start();
    let w = Workdir::new();
    let app = Served::start(&sponsor_env(&w, &sponsored_genome(&[PATH_USD]), &chain));
    until_offered(&app).await;
    let (sponsor_before, sends) = (balance(&chain, PATH_USD, SPONSOR), broadcasts(&chain));
    let price = PRICE.to_string();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();

    let o = sponsored_offer(&app).await;
    let memo = bound_memo(&o);
    let pay: &[&str] = &[
        ALPHA_USD,
        "transferWithMemo(address,uint256,bytes32)",
        RECIPIENT,
        &price,
        &memo,
    ];
    let far = (now + 200).to_string();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "an approve rides along",
            handoff(
                PAYER_KEY,
                &[],
                &[pay, &[ALPHA_USD, "approve(address,uint256)", STRANGER, "1000000000"]],
            ),
            "no_transfer",
        ),
        (
            "a transfer to a stranger rides along",
            handoff(
                PAYER_KEY,
                &[],
                &[pay, &[ALPHA_USD, "transfer(address,uint256)", STRANGER, "1"]],
            ),
            "wrong_recipient",
        ),
        (
            "a transfer in another token rides along",
            handoff(
                PAYER_KEY,
                &[],
                &[pay, &[BETA_USD, "transfer(address,uint256)", RECIPIENT, "1"]],
            ),
            "wrong_asset",
        ),
        (
            "valid for longer than the sponsor allows",
            handoff(PAYER_KEY, &["--valid-before", &far], &[pay]),
            "sponsorship_refused",
        ),
        (
            "a fee per gas above the cap (the total under it)",
            handoff(
                PAYER_KEY,
                &["--gas", "60000", "--max-fee-per-gas", "200000000000"],
                &[pay],
            ),
            "sponsorship_refused",
        ),
        (
            "a fee token the sponsor does not pay in",
            with_fee_token(&handoff(PAYER_KEY, &[], &[pay]), PAYER, BETA_USD),
            "sponsorship_refused",
        ),
    ];
    for (what, signed, reason) in &cases {
        let v = app.verify(present(&o, signed), &[]).await;
        assert_eq!((v.status, v.reason()), (402, *reason), "{what}: {:?}", v.body);
    }
    assert_eq!(broadcasts(&chain), sends, "{:?}", chain.all_calls());
    assert_eq!(balance(&chain, PATH_USD, SPONSOR), sponsor_before);
    assert_eq!(committed(&app).await, 0);

    // The Tempo scheme on a sponsored route is a push payment: the payer
    // paid its own fee, the sponsor nothing.
    let tx = chain.transfer(ALPHA_USD, RECIPIENT, PRICE);
    let v = app.verify_hash(&tx).await;
    assert_eq!(v.status, 200, "{:?}", v.body);
    assert_eq!(balance(&chain, PATH_USD, SPONSOR), sponsor_before);
    assert_eq!(committed(&app).await, 0);

    // After all that, a plain hand-off is sponsored.
    let o = sponsored_offer(&app).await;
    let v = app.verify(present(&o, &pay_handoff(PAYER_KEY, &o)), &[]).await;
    assert_eq!(v.status, 200, "{:?}", v.body);
    let (n, fees) = sponsor_fees(&chain, PATH_USD);
    assert_eq!(n, 1);
    assert_eq!(committed(&app).await, fees);
}

/// One hand-off in three spellings (as signed, its sender signature's `v`
/// respelt, co-signed in another listed fee token) presented at once to
/// two instances: three co-signed transactions with three hashes, but one
/// payment on chain (Tempo's expiring-nonce replay hash ignores the fee
/// payer and the signature): one 200 and one fee; the budget counts at
/// least that fee (the twins' holds: findings, `hole_twins_…`).
#[tokio::test(flavor = "multi_thread")]
async fn probe_one_hand_off_in_three_spellings_is_one_payment_and_one_fee() {
    let chain = Chain::start();
    let w = Workdir::new();
    let env = sponsor_env(&w, &sponsored_genome(&[PATH_USD, ALPHA_USD]), &chain);
    let (a, b) = (Served::start(&env), Served::start(&env));
    until_offered(&a).await;
    until_offered(&b).await;
    let alpha_sponsor = balance(&chain, ALPHA_USD, SPONSOR);
    let payer_before = balance(&chain, ALPHA_USD, PAYER);
    let o = sponsored_offer(&a).await;
    let signed = pay_handoff(PAYER_KEY, &o);
    let spellings = [
        signed.clone(),
        respell_v(&signed),
        with_fee_token(&signed, PAYER, ALPHA_USD),
    ];
    let (x, y, z) = tokio::join!(
        a.verify(present(&o, &spellings[0]), &[]),
        b.verify(present(&o, &spellings[1]), &[]),
        a.verify(present(&o, &spellings[2]), &[]),
    );
    let answers = [&x, &y, &z];
    eprintln!(
        "answers: {:?}",
        answers.map(|v| (v.status, v.code().to_owned(), v.reason().to_owned()))
    );
    let paid = answers.iter().filter(|v| v.status == 200).count();
    assert_eq!(paid, 1, "{:?}", answers.map(|v| (&v.status, &v.body)));
    // The others are refused, or (the node kept a twin waiting) not
    // answered yet: never paid.
    for v in answers.iter().filter(|v| v.status != 200) {
        assert!([402, 503].contains(&v.status), "{:?}", v.body);
    }
    assert_eq!(balance(&chain, ALPHA_USD, PAYER), payer_before - u128::from(PRICE));
    let (n, _) = sponsor_fees(&chain, PATH_USD);
    let (n_alpha, _) = sponsor_fees(&chain, ALPHA_USD);
    assert_eq!(n + n_alpha, 1, "the sponsor paid {n} + {n_alpha} fees for one payment");
    // Each spelling presented again: never a second payment.
    for s in &spellings {
        let v = b.verify(present(&o, s), &[]).await;
        eprintln!("again: {} {} {}", v.status, v.code(), v.reason());
        assert!([402, 503].contains(&v.status), "{:?}", v.body);
    }
    for _ in 0..3 {
        let _ = chain.rpc("evm_mine", &[]);
    }
    assert_eq!(balance(&chain, ALPHA_USD, PAYER), payer_before - u128::from(PRICE));
    let (n, fees) = sponsor_fees(&chain, PATH_USD);
    let (n_alpha, _) = sponsor_fees(&chain, ALPHA_USD);
    assert_eq!(n + n_alpha, 1, "the sponsor paid {n} + {n_alpha} fees for one payment");
    let alpha_fee = alpha_sponsor - balance(&chain, ALPHA_USD, SPONSOR);
    let held = committed(&a).await;
    eprintln!("fees {fees} + {alpha_fee}; budget committed {held}");
    assert!(held >= fees + alpha_fee, "the budget counted {held}");
}

/// A sponsored payment presented again on another instance after its
/// broadcast reservation has lapsed (2 × `rpc.lookup_timeout_ms`): the
/// transaction is found on chain, nothing is simulated, held or
/// broadcast at a cost, the answer is `REPLAYED`, and the budget is
/// charged its fee once.
#[tokio::test(flavor = "multi_thread")]
async fn probe_a_sponsored_payment_presented_after_its_reservation_lapsed_is_charged_once() {
    let chain = Chain::start();
    let w = Workdir::new();
    let mut env = sponsor_env(&w, &sponsored_genome(&[PATH_USD]), &chain);
    env.insert("SETTLEGATE_RPC__LOOKUP_TIMEOUT_MS".into(), "2000".into());
    let (a, b) = (Served::start(&env), Served::start(&env));
    until_offered(&a).await;
    until_offered(&b).await;
    let o = sponsored_offer(&a).await;
    let body = present(&o, &pay_handoff(PAYER_KEY, &o));
    let v = a.verify(body.clone(), &[]).await;
    assert_eq!(v.status, 200, "{:?}", v.body);
    let fee = fee_of(&chain, v.body["tx_hash"].as_str().unwrap());
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = balance(&chain, PATH_USD, SPONSOR);
    for app in [&b, &a, &b] {
        let again = app.verify(body.clone(), &[]).await;
        assert_eq!((again.status, again.code()), (402, "REPLAYED"), "{:?}", again.body);
    }
    assert_eq!(balance(&chain, PATH_USD, SPONSOR), before);
    assert_eq!(sponsor_fees(&chain, PATH_USD).0, 1);
    assert_eq!(committed(&a).await, fee);
    assert_eq!(committed(&b).await, fee);
}

/// The twins of a paid hand-off (its sender signature's `v` respelt; the
/// same hand-off co-signed in another listed fee token) are the same
/// payment on chain, which Tempo will not run twice. The gate keys them
/// by their co-signed hashes. `v` is co-signed in its one spelling, so the
/// respelt twin is the paid transaction itself: `REPLAYED`. The fee-token
/// twin is another hash: simulated, held at its cap and broadcast, the
/// node keeps it waiting, and its hold stays until it can no longer be
/// mined (a known limit, in the README); one hold per sender bounds it.
/// The sponsor pays one fee.
#[tokio::test(flavor = "multi_thread")]
async fn twins_of_a_paid_hand_off_hold_at_most_one_cap_and_cost_one_fee() {
    let chain = Chain::start();
    let w = Workdir::new();
    let app = Served::start(&sponsor_env(&w, &sponsored_genome(&[PATH_USD, ALPHA_USD]), &chain));
    until_offered(&app).await;
    let o = sponsored_offer(&app).await;
    let signed = pay_handoff(PAYER_KEY, &o);
    let v = app.verify(present(&o, &signed), &[]).await;
    assert_eq!(v.status, 200, "{:?}", v.body);
    let fee = fee_of(&chain, v.body["tx_hash"].as_str().unwrap());
    let respelt = app.verify(present(&o, &respell_v(&signed)), &[]).await;
    assert_eq!(
        (respelt.status, respelt.code()),
        (402, "REPLAYED"),
        "{:?}",
        respelt.body
    );
    let other_token = app
        .verify(present(&o, &with_fee_token(&signed, PAYER, ALPHA_USD)), &[])
        .await;
    eprintln!("fee-token twin: {} {}", other_token.status, other_token.code());
    assert_ne!(other_token.status, 200, "{:?}", other_token.body);
    assert_eq!(sponsor_fees(&chain, PATH_USD).0 + sponsor_fees(&chain, ALPHA_USD).0, 1);
    let held = committed(&app).await;
    assert!(
        held <= fee + u128::from(MAX_FEE),
        "the budget holds {held} for one payment whose fee was {fee}: more than one twin at its cap"
    );
}

/// A payer holding one price hands over several sponsored payments at
/// once (each for its own challenge, each an expiring nonce). Each is
/// simulated alone against the same balance, so all pass; on chain one
/// pays and the others revert, each costing the sponsor its fee.
/// The sponsor must pay for at most the payments that settle.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_hand_offs_of_a_payer_holding_one_price_cost_the_sponsor_one_fee() {
    let chain = Chain::start();
    let w = Workdir::new();
    let env = sponsor_env(&w, &sponsored_genome(&[PATH_USD]), &chain);
    let (a, b) = (Served::start(&env), Served::start(&env));
    until_offered(&a).await;
    until_offered(&b).await;
    let thin_key = "0x6666666666666666666666666666666666666666666666666666666666666666";
    chain.transfer(ALPHA_USD, &address(thin_key), PRICE);
    let sponsor_before = balance(&chain, PATH_USD, SPONSOR);
    let mut bodies = Vec::new();
    for i in 0..4 {
        let o = sponsored_offer(if i % 2 == 0 { &a } else { &b }).await;
        bodies.push(present(&o, &pay_handoff(thin_key, &o)));
    }
    let sends = broadcasts(&chain);
    let (p, q, r, s) = tokio::join!(
        a.verify(bodies[0].clone(), &[]),
        b.verify(bodies[1].clone(), &[]),
        a.verify(bodies[2].clone(), &[]),
        b.verify(bodies[3].clone(), &[]),
    );
    let answers = [&p, &q, &r, &s];
    let paid = answers.iter().filter(|v| v.status == 200).count();
    eprintln!(
        "answers {:?}; broadcasts {}",
        answers.map(|v| (v.status, v.reason().to_owned())),
        broadcasts(&chain) - sends
    );
    assert_eq!(paid, 1, "one price buys one request");
    let won = answers.iter().find(|v| v.status == 200).unwrap();
    let settled_fee = fee_of(&chain, won.body["tx_hash"].as_str().unwrap());
    let (n, _) = sponsor_fees(&chain, PATH_USD);
    let spent = sponsor_before - balance(&chain, PATH_USD, SPONSOR);
    // The budget saw whatever the sponsor paid.
    assert!(committed(&a).await >= spent, "the budget missed fees: spent {spent}");
    assert_eq!(
        spent, settled_fee,
        "the sponsor paid {spent} ({n} fee transfers) for one settled payment whose fee was \
         {settled_fee}: the rest paid for payments that reverted"
    );
}

/// A hand-off with a gap in its nonce (nonce 1 of a payer whose next is
/// 0) is queued by the node, not mined. When the node's own wait for it
/// ends first (anvil answers `eth_sendRawTransactionSync` with
/// -32603 "Transaction confirmation timeout" after 30 s; EIP-7966 nodes
/// with code 4), the gate reads that as a refusal and drops the budget
/// hold, though the transaction stays in the pool. Filled (by a sponsored
/// nonce 0), both are mined: the sponsor has paid a fee its budget never
/// counted. The budget must commit at least what the sponsor paid.
#[tokio::test(flavor = "multi_thread")]
async fn a_hand_off_behind_a_nonce_gap_is_never_sponsored_outside_the_budget() {
    let chain = Chain::start();
    let w = Workdir::new();
    let mut env = sponsor_env(&w, &sponsored_genome(&[PATH_USD]), &chain);
    // Longer than the node's own wait (allowed: rpc.timeout_ms up to 60 s).
    env.insert("SETTLEGATE_RPC__TIMEOUT_MS".into(), "35000".into());
    env.insert("SETTLEGATE_RPC__LOOKUP_TIMEOUT_MS".into(), "40000".into());
    let app = Served::start(&env);
    until_offered(&app).await;
    let payer_key = "0x7777777777777777777777777777777777777777777777777777777777777777";
    chain.transfer(ALPHA_USD, &address(payer_key), 2 * PRICE);
    let sponsor_before = balance(&chain, PATH_USD, SPONSOR);
    let valid = (time::OffsetDateTime::now_utc().unix_timestamp() + 55).to_string();
    let price = PRICE.to_string();
    let signed = |o: &HashMap<String, String>, nonce: &str| {
        handoff(
            payer_key,
            &["--nonce-key", "0", "--nonce", nonce, "--valid-before", &valid],
            &[&[
                ALPHA_USD,
                "transferWithMemo(address,uint256,bytes32)",
                RECIPIENT,
                &price,
                &bound_memo(o),
            ]],
        )
    };
    let gapped_offer = sponsored_offer(&app).await;
    let gapped = signed(&gapped_offer, "1");
    let started = Instant::now();
    let v = app.verify(present(&gapped_offer, &gapped), &[]).await;
    let held_after_gap = committed(&app).await;
    eprintln!(
        "gapped hand-off: {} {:?} after {:?}; budget committed {held_after_gap}",
        v.status,
        v.body,
        started.elapsed()
    );
    assert_ne!(v.status, 200, "{:?}", v.body);

    let filler_offer = sponsored_offer(&app).await;
    let v = app
        .verify(present(&filler_offer, &signed(&filler_offer, "0")), &[])
        .await;
    eprintln!("filler hand-off: {} {:?}", v.status, v.body);
    for _ in 0..3 {
        let _ = chain.rpc("evm_mine", &[]);
        std::thread::sleep(Duration::from_millis(300));
    }
    let (n, fees) = sponsor_fees(&chain, PATH_USD);
    let spent = sponsor_before - balance(&chain, PATH_USD, SPONSOR);
    let held = committed(&app).await;
    eprintln!("sponsor: {n} fee transfers, {fees} (balance down {spent}); budget committed {held}");
    assert!(
        held >= spent,
        "the sponsor paid {spent} in fees ({n} transactions); the budget counted {held}"
    );
}

/// The same misreading in plain pull mode: a transaction queued behind a
/// nonce gap is answered `tx_rejected` ("the node refused the signed
/// transaction; it was not broadcast") once the node's own sync wait ends,
/// though it sits in the pool and is mined when the gap fills. The payer
/// is told a final refusal of a payment that then goes through; its
/// challenge has expired by then. The answer must not say "refused".
#[tokio::test(flavor = "multi_thread")]
async fn a_queued_pull_payment_is_pending_not_refused() {
    let chain = Chain::start();
    let w = Workdir::new();
    let mut env = payment_env(&w.genome(&Genome::single().signed()), &chain.url);
    env.insert("SETTLEGATE_RPC__TIMEOUT_MS".into(), "35000".into());
    env.insert("SETTLEGATE_RPC__LOOKUP_TIMEOUT_MS".into(), "40000".into());
    let app = Served::start(&env);
    let next = chain.rpc("eth_getTransactionCount", &[PAYER, "latest"]);
    let next = u64::from_str_radix(next.trim().trim_matches('"').trim_start_matches("0x"), 16).unwrap();
    let v = app.verify(json!({}), &[]).await;
    let o = payment_offer(&v);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("node")
        .arg(root.join("tests/clients/tempo_batch.mjs"))
        .args(["--key", PAYER_KEY, "--nonce", &(next + 1).to_string()])
        .args([
            ALPHA_USD,
            "transferWithMemo(address,uint256,bytes32)",
            RECIPIENT,
            &PRICE.to_string(),
            &bound_memo(&o),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let signed = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let recipient_before = balance(&chain, ALPHA_USD, RECIPIENT);
    let v = app.verify(present(&o, &signed), &[]).await;
    eprintln!("queued payment: {} {} {}", v.status, v.code(), v.reason());
    // Fill the gap: the queued payment is mined.
    chain.transfer(ALPHA_USD, STRANGER, 1);
    for _ in 0..3 {
        let _ = chain.rpc("evm_mine", &[]);
        std::thread::sleep(Duration::from_millis(300));
    }
    let paid = balance(&chain, ALPHA_USD, RECIPIENT) - recipient_before;
    eprintln!("the recipient got {paid} after the gap was filled");
    let again = app.verify(present(&o, &signed), &[]).await;
    eprintln!("presented again: {} {} {}", again.status, again.code(), again.reason());
    assert_ne!(
        (v.status, v.reason()),
        (402, "tx_rejected"),
        "told the transaction was refused and not broadcast; then {paid} reached the recipient"
    );
}

/// Hand-offs that can never be mined (a protocol nonce far ahead) cost the attacker nothing: nothing is paid, on chain
/// or to the sponsor. They must not cost the sponsorship either: after a
/// few of them, an honest payer is still sponsored.
#[tokio::test(flavor = "multi_thread")]
async fn hand_offs_that_can_never_be_mined_do_not_spend_the_budget() {
    let chain = Chain::start();
    let w = Workdir::new();
    // Room for two transactions at their cap, and a little more.
    let genome = sponsored_genome_with(&[PATH_USD], 2 * MAX_FEE + 100);
    let app = Served::start(&sponsor_env(&w, &genome, &chain));
    until_offered(&app).await;
    let attacker_key = "0x8888888888888888888888888888888888888888888888888888888888888888";
    let attacker = address(attacker_key);
    chain.transfer(ALPHA_USD, &attacker, PRICE);
    let (sponsor_before, payer_before) = (
        balance(&chain, PATH_USD, SPONSOR),
        balance(&chain, ALPHA_USD, &attacker),
    );
    let price = PRICE.to_string();
    for k in 0..2 {
        let o = sponsored_offer(&app).await;
        let memo = bound_memo(&o);
        let nonce = (1000 + k).to_string();
        let never = handoff(
            attacker_key,
            &["--nonce-key", "0", "--nonce", &nonce],
            &[&[
                ALPHA_USD,
                "transferWithMemo(address,uint256,bytes32)",
                RECIPIENT,
                &price,
                &memo,
            ]],
        );
        let started = Instant::now();
        let v = app.verify(present(&o, &never), &[]).await;
        eprintln!(
            "unminable hand-off {k}: {} {:?} after {:?}",
            v.status,
            v.body,
            started.elapsed()
        );
        assert_ne!(v.status, 200, "{:?}", v.body);
    }
    assert_eq!(
        balance(&chain, PATH_USD, SPONSOR),
        sponsor_before,
        "the sponsor paid nothing"
    );
    assert_eq!(
        balance(&chain, ALPHA_USD, &attacker),
        payer_before,
        "the attacker paid nothing"
    );
    eprintln!("budget committed: {}", committed(&app).await);

    // An honest payer, now.
    let v = app.verify(json!({}), &[]).await;
    let o = payment_offer(&v);
    let request: Value = serde_json::from_slice(&B64.decode(&o["request"]).unwrap()).unwrap();
    assert_eq!(
        request["methodDetails"]["feePayer"], true,
        "sponsorship withdrawn: its budget is held by hand-offs that were never mined"
    );
    let v = app.verify(present(&o, &pay_handoff(PAYER_KEY, &o)), &[]).await;
    assert_eq!(
        v.status, 200,
        "an honest payer is refused sponsorship after unminable hand-offs: {:?}",
        v.body
    );
}

// ---- proofs -------------------------------------------------------------

fn free_genome() -> Genome {
    Genome::single().set(
        "/settlement/prices",
        json!([
            {"resource": "GET /free/*", "amount": "0"},
            {"resource": "GET /gratis/*", "amount": "0"},
        ]),
    )
}

fn sign(k: &SigningKey, digest: B256) -> String {
    let (sig, recid) = k.sign_prehash_recoverable(digest.as_slice()).unwrap();
    let mut bytes = sig.to_bytes().to_vec();
    bytes.push(27 + recid.to_byte());
    format!("0x{}", hex::encode(bytes))
}

fn did(a: Address) -> String {
    format!("did:pkh:eip155:{CHAIN_ID}:{}", a.to_checksum(None))
}

async fn free_offer(app: &Served, resource: &str) -> HashMap<String, String> {
    let v = app.verify(json!({ "resource": resource }), &[]).await;
    assert_eq!((v.status, v.code()), (402, "PAYMENT_REQUIRED"), "{:?}", v.body);
    payment_offer(&v)
}

async fn authorize(app: &Served, uri: &str, cred: &str) -> Verified {
    let resp = reqwest::Client::new()
        .get(app.url("/v1/authorize"))
        .header("x-forwarded-method", "GET")
        .header("x-forwarded-uri", uri)
        .header("authorization", cred)
        .send()
        .await
        .unwrap();
    Verified::read(resp).await
}

/// The other spelling of an id's last character: the same decoded bytes
/// to a lenient decoder (its two unused bits set).
fn respell_id(id: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let last = *id.as_bytes().last().unwrap();
    let i = ALPHABET.iter().position(|c| *c == last).unwrap();
    assert_eq!(i & 3, 0, "a minted id has no trailing bits");
    format!("{}{}", &id[..id.len() - 1], ALPHABET[i | 1] as char)
}

/// A proof is one claim of one challenge: its v1 and v3 forms, on
/// `/v1/verify` and `/v1/authorize`, for any free route (their challenges
/// are alike) are one use; other spellings of the challenge id are not
/// this service's challenge at all and claim nothing.
#[tokio::test(flavor = "multi_thread")]
async fn probe_one_proof_is_one_claim_across_forms_endpoints_routes_and_id_spellings() {
    let chain = Chain::start();
    let w = Workdir::new();
    let app = Served::start(&payment_env(&w.genome(&free_genome().signed()), &chain.url));
    let payer = SigningKey::from_slice(&hex::decode(&PAYER_KEY[2..]).unwrap()).unwrap();
    let me = Address::from_public_key(payer.verifying_key());
    let proof = |o: &HashMap<String, String>, id: &str, v1: bool| {
        let mut e = echo(o);
        e["id"] = json!(id);
        let sig = if v1 {
            sign(&payer, digest_v1(CHAIN_ID, id))
        } else {
            sign(&payer, digest_v3(CHAIN_ID, me, id, &o["realm"]))
        };
        credential(&e, json!({"type": "proof", "signature": sig}), Some(&did(me)))
    };

    // Other spellings of the id, each signed for exactly that text.
    let o = free_offer(&app, "GET /free/x").await;
    for id in [
        respell_id(&o["id"]),
        format!("{}=", o["id"]),
        o["id"].replace('-', "+").replace('_', "/"),
    ] {
        if id == o["id"] {
            continue;
        }
        for v1 in [false, true] {
            let v = app
                .verify(
                    json!({"credential": proof(&o, &id, v1), "resource": "GET /free/x"}),
                    &[],
                )
                .await;
            assert_eq!((v.status, v.reason()), (402, "challenge_invalid"), "{id}: {:?}", v.body);
        }
    }

    // The v3 proof on /v1/authorize: let through once.
    let v = authorize(&app, "/free/x", &proof(&o, &o["id"], false)).await;
    assert_eq!(v.status, 200, "{:?}", v.body);
    assert_eq!(v.header("x-settlement-amount"), "0");
    assert_eq!(v.header("x-settlement-tx"), o["id"]);
    // Its v1 twin, on either endpoint, for either free route: the same claim.
    for (endpoint, route) in [("verify", "/free/x"), ("authorize", "/free/x"), ("verify", "/gratis/y")] {
        let cred = proof(&o, &o["id"], true);
        let v = if endpoint == "verify" {
            app.verify(json!({"credential": cred, "resource": format!("GET {route}")}), &[])
                .await
        } else {
            authorize(&app, route, &cred).await
        };
        // Another free route asks for the same request: the same claim
        // (or, were its challenge its own, not this challenge).
        assert!(
            v.status == 402 && (v.code() == "REPLAYED" || v.reason() == "challenge_invalid"),
            "{endpoint} {route}: {:?}",
            v.body
        );
    }
    let v = authorize(&app, "/free/x", &proof(&o, &o["id"], false)).await;
    assert_eq!((v.status, v.code()), (402, "REPLAYED"), "{:?}", v.body);
}
