//! `methodDetails.splits` on the dev chain: a route the genome splits
//! between its recipient and two others. mppx 0.11's client pays it
//! unchanged, in pull and push mode (one transfer to each recipient, the
//! balances move by exactly their shares); payments crafted short, without
//! a split, to the wrong address or without a split's memo are refused with
//! their reason, in pull mode before the node sees them, in push mode
//! without consuming anything (the challenge still pays afterwards).

use std::collections::HashMap;
use std::process::Command;

use alloy_primitives::U256;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::{Value, json};

use crate::chain::*;
use crate::helpers::*;
use crate::mpp_clients::{pay, payment_env, t4_genome};
use crate::payment::{bound_memo, credential, echo, hash_payload, payment_offer, signed_batch};
use crate::proxy::Caddy;

/// Dev accounts 3 and 4: the split recipients.
const SPLIT_A: &str = "0x90f79bf6eb2c4f870365e785982e1f101e93b906";
const SPLIT_B: &str = "0x15d34aaf54267db7d7c367839aaf71a00a2c6a65";
const MEMO_B: &str = "0xbebebebebebebebebebebebebebebebebebebebebebebebebebebebebebebebe";
const PRIMARY: u64 = 750_000;
const SHARE_A: u64 = 200_000;
const SHARE_B: u64 = 50_000;

/// `GET /split/*` costs 1 AlphaUSD: 200000 to A, 50000 to B (with
/// `MEMO_B`), the rest to the recipient.
fn split_genome(base: Genome) -> Genome {
    base.set(
        "/settlement/prices",
        json!([{"resource": "GET /split/*", "amount": "1000000", "splits": [
            {"recipient": SPLIT_A, "amount": SHARE_A.to_string()},
            {"recipient": SPLIT_B, "amount": SHARE_B.to_string(), "memo": MEMO_B},
        ]}]),
    )
}

fn balance(chain: &Chain, who: &str) -> U256 {
    let out = Command::new(cast_bin())
        .args([
            "call",
            "--rpc-url",
            &chain.url,
            ALPHA_USD,
            "balanceOf(address)(uint256)",
            who,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    U256::from_str_radix(text.split_whitespace().next().unwrap(), 10).unwrap()
}

fn balances(chain: &Chain) -> [U256; 3] {
    [RECIPIENT, SPLIT_A, SPLIT_B].map(|a| balance(chain, a))
}

/// What each of the recipient, A and B received between two readings.
fn moved(before: [U256; 3], after: [U256; 3]) -> [u64; 3] {
    [0, 1, 2].map(|i| (after[i] - before[i]).to::<u64>())
}

fn decode(b64: &str) -> Value {
    serde_json::from_slice(&B64.decode(b64).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn mppx_pays_a_split_route_unchanged_one_transfer_to_each_recipient() {
    let chain = Chain::start();
    let w = Workdir::new();
    // challenges short enough for mppx's transactions on T4
    let app = Served::start(&payment_env(&w.genome(&split_genome(t4_genome()).signed()), &chain.url));
    let caddy = Caddy::start(app.addr);

    // The challenge carries the splits; no Tempo offer (it cannot say them).
    let v = app.verify(json!({"resource": "GET /split/x"}), &[]).await;
    assert!(
        v.headers
            .get_all("www-authenticate")
            .iter()
            .all(|h| h.to_str().unwrap().starts_with("Payment ")),
        "{:?}",
        v.headers
    );
    // no seed-SDK paymentInfo: one transfer of the price cannot pay it
    assert!(v.body.get("paymentInfo").is_none(), "{:?}", v.body);
    let request = decode(&payment_offer(&v)["request"]);
    assert_eq!(request["amount"], "1000000");
    assert_eq!(
        request["methodDetails"]["splits"],
        json!([
            {"amount": "200000", "recipient": "0x90F79bf6EB2c4f870365E785982E1f101E93b906"},
            {"amount": "50000", "memo": MEMO_B, "recipient": "0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65"},
        ])
    );

    for mode in ["pull", "push"] {
        let before = balances(&chain);
        let hits = caddy.upstream_hits();
        let paid = tokio::task::block_in_place(|| pay("mppx", mode, &caddy.url("/split/x"), &chain.url));
        assert_eq!(paid["status"], 200, "{mode}: {paid}");
        assert_eq!(paid["body"]["upstream"], "reached", "{paid}");
        assert_eq!(paid["body"]["x_settlement_payer"], PAYER);
        assert_eq!(paid["body"]["x_settlement_amount"], "1000000", "{paid}");
        assert_eq!(caddy.upstream_hits(), hits + 1);
        let tx = paid["body"]["x_settlement_tx"].as_str().unwrap();
        let r: Value = serde_json::from_str(&chain.rpc("eth_getTransactionReceipt", &[tx])).unwrap();
        assert_eq!(r["status"], "0x1", "{r}");
        assert_eq!(
            moved(before, balances(&chain)),
            [PRIMARY, SHARE_A, SHARE_B],
            "{mode}: each recipient got its share"
        );
    }
}

/// One leg of a crafted batch: to, amount, memo.
type Leg<'a> = (&'a str, u64, Option<&'a str>);

fn batch(chain: &Chain, legs: &[Leg]) -> String {
    let nonce = chain.rpc("eth_getTransactionCount", &[PAYER, "latest"]);
    let amounts: Vec<String> = legs.iter().map(|(_, a, _)| a.to_string()).collect();
    let calls: Vec<Vec<&str>> = legs
        .iter()
        .zip(&amounts)
        .map(|((to, _, memo), amount)| match memo {
            Some(m) => vec![
                ALPHA_USD,
                "transferWithMemo(address,uint256,bytes32)",
                *to,
                amount.as_str(),
                *m,
            ],
            None => vec![ALPHA_USD, "transfer(address,uint256)", *to, amount.as_str()],
        })
        .collect();
    let refs: Vec<&[&str]> = calls.iter().map(Vec::as_slice).collect();
    signed_batch(&nonce, &refs)
}

fn did() -> String {
    format!("did:pkh:eip155:42431:{PAYER}")
}

#[tokio::test]
async fn split_payments_short_missing_misdirected_or_without_memo_are_refused_and_consume_nothing() {
    let chain = Chain::start();
    let w = Workdir::new();
    // the default challenge life: the crafted payments take a while
    let app = Served::start(&payment_env(
        &w.genome(&split_genome(Genome::single()).signed()),
        &chain.url,
    ));
    let resource = "GET /split/x";
    let offer_of = |v: &Verified| -> HashMap<String, String> { payment_offer(v) };
    let offer = offer_of(&app.verify(json!({"resource": resource}), &[]).await);
    let memo = bound_memo(&offer);
    let primary: Leg = (RECIPIENT, PRIMARY, Some(&memo));
    let a: Leg = (SPLIT_A, SHARE_A, None);
    let b: Leg = (SPLIT_B, SHARE_B, Some(MEMO_B));
    let bad: Vec<(Vec<Leg>, &str)> = vec![
        (vec![primary, (SPLIT_A, SHARE_A - 1, None), b], "split_short"),
        (vec![primary, a, (SPLIT_B, SHARE_B - 1, Some(MEMO_B))], "split_short"),
        (vec![primary, a], "split_missing"),
        (vec![primary, a, (STRANGER, SHARE_B, Some(MEMO_B))], "split_missing"),
        (vec![primary, a, (SPLIT_B, SHARE_B, None)], "memo_mismatch"),
        (vec![(RECIPIENT, PRIMARY - 1, Some(&memo)), a, b], "insufficient_amount"),
        (vec![(RECIPIENT, 1_000_000, Some(&memo))], "split_missing"),
    ];
    let present = |cred: String| {
        let app = &app;
        async move { app.verify(json!({"credential": cred, "resource": resource}), &[]).await }
    };

    // Pull: refused before the node sees the transaction.
    let sent = chain.calls("eth_sendRawTransaction");
    let nonce = chain.rpc("eth_getTransactionCount", &[PAYER, "latest"]);
    for (legs, reason) in &bad {
        let raw = batch(&chain, legs);
        let cred = credential(
            &echo(&offer),
            json!({"type": "transaction", "signature": raw}),
            Some(&did()),
        );
        let v = present(cred).await;
        assert_eq!(
            (v.status, v.code(), v.reason()),
            (402, "VERIFICATION_FAILED", *reason),
            "pull {legs:?}: {:?}",
            v.body
        );
        payment_offer(&v);
    }
    assert_eq!(chain.calls("eth_sendRawTransaction"), sent);
    assert_eq!(chain.rpc("eth_getTransactionCount", &[PAYER, "latest"]), nonce);

    // Push: the payer broadcast each; each is refused with its reason, and
    // refused again the same way (no record was written).
    for (legs, reason) in &bad {
        let raw = batch(&chain, legs);
        let hash = chain
            .rpc("eth_sendRawTransaction", &[&raw])
            .trim_matches('"')
            .to_owned();
        let r: Value = serde_json::from_str(&chain.rpc("eth_getTransactionReceipt", &[&hash])).unwrap();
        assert_eq!(r["status"], "0x1", "{r}");
        let cred = credential(&echo(&offer), hash_payload(&hash), Some(&did()));
        for _ in 0..2 {
            let v = present(cred.clone()).await;
            assert_eq!(
                (v.status, v.code(), v.reason()),
                (402, "VERIFICATION_FAILED", *reason),
                "push {legs:?}: {:?}",
                v.body
            );
        }
    }
    // The Tempo scheme cannot pay a split route.
    let hash = chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000);
    let v = app
        .verify(
            json!({"credential": format!("Tempo {hash}"), "resource": resource}),
            &[],
        )
        .await;
    assert_eq!((v.status, v.code()), (402, "PAYMENT_REQUIRED"), "{:?}", v.body);

    // Nothing consumed the challenge: the whole payment, as a signed
    // transaction in any order of its legs, pays it once.
    let before = balances(&chain);
    let raw = batch(&chain, &[b, primary, a]);
    let cred = credential(
        &echo(&offer),
        json!({"type": "transaction", "signature": raw}),
        Some(&did()),
    );
    let v = present(cred.clone()).await;
    assert_eq!(v.status, 200, "{:?}", v.body);
    assert_eq!(
        (v.body["amount"].as_str(), v.body["recipient"].as_str()),
        (Some("1000000"), Some(RECIPIENT))
    );
    assert_eq!(moved(before, balances(&chain)), [PRIMARY, SHARE_A, SHARE_B]);
    assert_eq!(present(cred).await.code(), "REPLAYED");

    // And pushed, for a fresh challenge.
    let offer = offer_of(&app.verify(json!({"resource": resource}), &[]).await);
    let memo = bound_memo(&offer);
    let raw = batch(&chain, &[(RECIPIENT, PRIMARY, Some(&memo)), a, b]);
    let hash = chain
        .rpc("eth_sendRawTransaction", &[&raw])
        .trim_matches('"')
        .to_owned();
    let v = present(credential(&echo(&offer), hash_payload(&hash), Some(&did()))).await;
    assert_eq!(v.status, 200, "{:?}", v.body);
    assert_eq!(v.body["tx_hash"], hash);
}
