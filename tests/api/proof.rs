//! `proof` credentials on a route the genome prices at `"0"`, on the real
//! binary with real Redis: mppx 0.11's client, unchanged, signs one and is
//! let through Caddy's forward-auth once per challenge; every nearby thing
//! that must fail is refused with its reason and claims nothing (the good
//! proof for the same challenge still passes afterwards); two instances
//! sharing Redis answer one proof once.

use std::collections::HashMap;

use alloy_primitives::{Address, B256};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use k256::ecdsa::SigningKey;
use serde_json::{Value, json};
use settlegate_rules::proof::{digest_v1, digest_v3};

use crate::chain::*;
use crate::helpers::*;
use crate::mpp_clients::{client_command, payment_env};
use crate::payment::{bound_memo, credential, echo, hash_payload, payment_offer};
use crate::proxy::Caddy;

const CHAIN_ID: u64 = 42431;
/// A key that holds nothing and names nobody the policy knows.
const FOREIGN_KEY: &str = "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a";

/// The test genome with `/free/*` priced at zero (GET).
pub(crate) fn free_genome() -> Genome {
    Genome::single().set(
        "/settlement/prices",
        json!([{"resource": "GET /free/*", "amount": "0"}]),
    )
}

pub(crate) fn key(hex_key: &str) -> SigningKey {
    SigningKey::from_slice(&hex::decode(&hex_key[2..]).unwrap()).unwrap()
}

pub(crate) fn address_of(k: &SigningKey) -> Address {
    Address::from_public_key(k.verifying_key())
}

/// `r || s || v` (v 27/28) over `digest`, low `s`.
fn sign(k: &SigningKey, digest: B256) -> String {
    let (sig, recid) = k.sign_prehash_recoverable(digest.as_slice()).unwrap();
    let mut bytes = sig.to_bytes().to_vec();
    bytes.push(27 + recid.to_byte());
    format!("0x{}", hex::encode(bytes))
}

/// The v3 proof (what mppx signs) by `k` for `offer`, naming `account`.
pub(crate) fn proof_v3(k: &SigningKey, account: Address, offer: &HashMap<String, String>) -> String {
    sign(k, digest_v3(CHAIN_ID, account, &offer["id"], &offer["realm"]))
}

pub(crate) fn proof_payload(signature: &str) -> Value {
    json!({"type": "proof", "signature": signature})
}

pub(crate) fn did(a: Address) -> String {
    format!("did:pkh:eip155:{CHAIN_ID}:{}", a.to_checksum(None))
}

pub(crate) async fn offer_for(app: &Served, resource: &str) -> HashMap<String, String> {
    let v = app.verify(json!({ "resource": resource }), &[]).await;
    assert_eq!((v.status, v.code()), (402, "PAYMENT_REQUIRED"), "{:?}", v.body);
    payment_offer(&v)
}

pub(crate) async fn present(app: &Served, resource: &str, cred: &str) -> Verified {
    app.verify(json!({ "credential": cred, "resource": resource }), &[])
        .await
}

fn decode(b64: &str) -> Value {
    serde_json::from_slice(&B64.decode(b64).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn mppx_proves_a_free_route_through_the_proxy_once_per_challenge() {
    let chain = Chain::start();
    let w = Workdir::new();
    let app = Served::start(&payment_env(&w.genome(&free_genome().signed()), &chain.url));
    let caddy = Caddy::start(app.addr);

    // The 402 of a free route: one Payment charge challenge for "0", no
    // Tempo offer (a transfer cannot pay it).
    let unpaid = app.verify(json!({ "resource": "GET /free/a" }), &[]).await;
    // no seed-SDK paymentInfo: it would invite a transfer that cannot pay
    assert!(unpaid.body.get("paymentInfo").is_none(), "{:?}", unpaid.body);
    let v = payment_offer(&unpaid);
    let request = decode(&v["request"]);
    assert_eq!(request["amount"], "0", "{request}");
    let unpaid = reqwest::get(caddy.url("/free/a")).await.unwrap();
    assert_eq!(unpaid.status(), 402);
    let offers: Vec<String> = unpaid
        .headers()
        .get_all("www-authenticate")
        .iter()
        .map(|h| h.to_str().unwrap().to_owned())
        .collect();
    assert!(offers.len() == 1 && offers[0].starts_with("Payment "), "{offers:?}");

    // mppx pays it unchanged: a proof, let through, the upstream told who.
    let before = chain.all_calls();
    let paid =
        tokio::task::block_in_place(|| crate::mpp_clients::pay("mppx", "pull", &caddy.url("/free/a"), &chain.url));
    assert_eq!(paid["status"], 200, "{paid}");
    let body = &paid["body"];
    assert_eq!(body["upstream"], "reached", "{paid}");
    assert_eq!(body["x_settlement_payer"], PAYER);
    assert_eq!(body["x_settlement_amount"], "0");
    let challenge_id = body["x_settlement_tx"].as_str().unwrap();
    assert_eq!(challenge_id.len(), 43, "the challenge id stands for the tx: {paid}");
    assert!(paid.get("receipt_error").is_none(), "{paid}");
    assert_eq!(paid["receipt"]["status"], "success");
    assert_eq!(paid["receipt"]["reference"], challenge_id);
    assert_eq!(caddy.upstream_hits(), 1);
    // nothing was sent to the chain
    let after = chain.all_calls();
    for m in [
        "eth_sendRawTransaction",
        "eth_sendRawTransactionSync",
        "eth_getTransactionReceipt",
    ] {
        assert_eq!(after.get(m), before.get(m), "{m}: {after:?}");
    }

    // One credential mppx made, presented twice: once through.
    let signed = tokio::task::block_in_place(|| {
        let out = client_command("mppx")
            .arg(caddy.url("/free/b"))
            .args(["--key", PAYER_KEY, "--rpc", &chain.url, "--mode", "sign"])
            .output()
            .unwrap();
        let line = String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or_default()
            .to_owned();
        serde_json::from_str::<Value>(&line)
            .unwrap_or_else(|_| panic!("mppx sign: {line}; {}", String::from_utf8_lossy(&out.stderr)))
    });
    let authorization = signed["authorization"].as_str().unwrap().to_owned();
    assert!(authorization.starts_with("Payment "), "{signed}");
    let through = |path: &'static str| {
        let client = reqwest::Client::new();
        let url = caddy.url(path);
        let authorization = authorization.clone();
        async move {
            let r = client
                .get(url)
                .header("authorization", authorization)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or_default())
        }
    };
    let (status, first) = through("/free/b").await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["x_settlement_payer"], PAYER);
    let (status, again) = through("/free/b").await;
    assert_eq!((status, again["code"].as_str()), (402, Some("REPLAYED")), "{again}");
    // on another free path, the same proof is refused too: the challenge
    // is claimed, whatever the path
    let (status, elsewhere) = through("/free/c").await;
    assert_eq!(
        (status, elsewhere["code"].as_str()),
        (402, Some("REPLAYED")),
        "{elsewhere}"
    );
    assert_eq!(caddy.upstream_hits(), 2);
}

#[tokio::test]
async fn near_misses_of_a_proof_are_refused_and_claim_nothing() {
    let chain = Chain::start();
    let w = Workdir::new();
    let app = Served::start(&payment_env(&w.genome(&free_genome().signed()), &chain.url));
    let payer = key(PAYER_KEY);
    let me = address_of(&payer);
    let foreign = key(FOREIGN_KEY);

    let offer = offer_for(&app, "GET /free/x").await;
    let other = offer_for(&app, "GET /free/x").await;
    let priced = offer_for(&app, "GET /paid").await;
    let good = proof_v3(&payer, me, &offer);

    let cases: Vec<(String, &str, &str, &str)> = vec![
        // signed by someone else, naming the payer
        (
            credential(
                &echo(&offer),
                proof_payload(&proof_v3(&foreign, me, &offer)),
                Some(&did(me)),
            ),
            "GET /free/x",
            "VERIFICATION_FAILED",
            "proof_invalid",
        ),
        // the payer's proof for another challenge, echoing this one
        (
            credential(
                &echo(&offer),
                proof_payload(&proof_v3(&payer, me, &other)),
                Some(&did(me)),
            ),
            "GET /free/x",
            "VERIFICATION_FAILED",
            "proof_invalid",
        ),
        // the right signature, another source
        (
            credential(&echo(&offer), proof_payload(&good), Some(&did(address_of(&foreign)))),
            "GET /free/x",
            "VERIFICATION_FAILED",
            "proof_invalid",
        ),
        // signed for another chain, and naming it
        (
            credential(
                &echo(&offer),
                proof_payload(&sign(&payer, digest_v3(4217, me, &offer["id"], &offer["realm"]))),
                Some(&format!("did:pkh:eip155:4217:{me}")),
            ),
            "GET /free/x",
            "VERIFICATION_FAILED",
            "wrong_chain",
        ),
        // another realm in the v3 message
        (
            credential(
                &echo(&offer),
                proof_payload(&sign(&payer, digest_v3(CHAIN_ID, me, &offer["id"], "other realm"))),
                Some(&did(me)),
            ),
            "GET /free/x",
            "VERIFICATION_FAILED",
            "proof_invalid",
        ),
        // no source: nothing names the signer
        (
            credential(&echo(&offer), proof_payload(&good), None),
            "GET /free/x",
            "MALFORMED_CREDENTIAL",
            "",
        ),
        // a proof for a priced route (its own challenge, correctly signed)
        (
            credential(
                &echo(&priced),
                proof_payload(&proof_v3(&payer, me, &priced)),
                Some(&did(me)),
            ),
            "GET /paid",
            "VERIFICATION_FAILED",
            "proof_unexpected",
        ),
        // the free challenge presented for a priced route: not this route's
        (
            credential(&echo(&offer), proof_payload(&good), Some(&did(me))),
            "GET /paid",
            "VERIFICATION_FAILED",
            "challenge_invalid",
        ),
    ];
    for (cred, resource, code, reason) in &cases {
        let v = present(&app, resource, cred).await;
        assert_eq!((v.status, v.code(), v.reason()), (402, *code, *reason), "{:?}", v.body);
        assert!(v.header("payment-receipt").is_empty());
        payment_offer(&v);
    }

    // Payments on the free route, whichever scheme: proof_required, and
    // the node is not asked about them.
    let hash = chain.transfer_with_memo(ALPHA_USD, RECIPIENT, 1_000_000, &bound_memo(&offer));
    let lookups = chain.calls("eth_getTransactionReceipt");
    let sent = chain.calls("eth_sendRawTransaction");
    for (cred, what) in [
        (credential(&echo(&offer), hash_payload(&hash), Some(&did(me))), "hash"),
        (
            credential(
                &echo(&offer),
                json!({"type": "transaction", "signature": "0x76c0ffee"}),
                Some(&did(me)),
            ),
            "transaction",
        ),
        (format!("Tempo {hash}"), "tempo"),
    ] {
        let v = present(&app, "GET /free/x", &cred).await;
        assert_eq!(
            (v.status, v.code(), v.reason()),
            (402, "VERIFICATION_FAILED", "proof_required"),
            "{what}: {:?}",
            v.body
        );
    }
    assert_eq!(chain.calls("eth_getTransactionReceipt"), lookups);
    assert_eq!(chain.calls("eth_sendRawTransaction"), sent);

    // Nothing above claimed the challenge: the good proof passes, once.
    let cred = credential(&echo(&offer), proof_payload(&good), Some(&did(me)));
    let v = present(&app, "GET /free/x", &cred).await;
    assert_eq!(v.status, 200, "{:?}", v.body);
    assert_eq!(
        (
            v.body["status"].as_str(),
            v.body["payer"].as_str(),
            v.body["amount"].as_str()
        ),
        (Some("proven"), Some(PAYER), Some("0"))
    );
    assert_eq!(v.body["challenge_id"], offer["id"]);
    assert!(v.header("cache-control").contains("private"));
    assert_eq!(decode(v.header("payment-receipt"))["reference"], offer["id"]);
    let again = present(&app, "GET /free/x", &cred).await;
    assert_eq!((again.status, again.code()), (402, "REPLAYED"), "{:?}", again.body);
    // The other spelling of the same proof (v as 0/1) is the same claim.
    let mut raw = hex::decode(&good[2..]).unwrap();
    raw[64] -= 27;
    let respelled = credential(
        &echo(&offer),
        proof_payload(&format!("0x{}", hex::encode(raw))),
        Some(&did(me)),
    );
    let v = present(&app, "GET /free/x", &respelled).await;
    assert_eq!((v.status, v.code()), (402, "REPLAYED"), "{:?}", v.body);

    // The draft's v1 form (challenge id only) proves too, once.
    let v1 = credential(
        &echo(&other),
        proof_payload(&sign(&payer, digest_v1(CHAIN_ID, &other["id"]))),
        Some(&did(me)),
    );
    assert_eq!(present(&app, "GET /free/x", &v1).await.status, 200);
    assert_eq!(present(&app, "GET /free/x", &v1).await.code(), "REPLAYED");
}

#[tokio::test]
async fn two_instances_sharing_redis_answer_one_proof_once() {
    let chain = Chain::start();
    let w = Workdir::new();
    let env = payment_env(&w.genome(&free_genome().signed()), &chain.url);
    let (a, b) = (Served::start(&env), Served::start(&env));
    let payer = key(PAYER_KEY);
    let me = address_of(&payer);

    // Presented to both at once: one 200.
    let offer = offer_for(&a, "GET /free/x").await;
    let cred = credential(
        &echo(&offer),
        proof_payload(&proof_v3(&payer, me, &offer)),
        Some(&did(me)),
    );
    let (x, y) = tokio::join!(present(&a, "GET /free/x", &cred), present(&b, "GET /free/x", &cred));
    let mut statuses = [x.status, y.status];
    statuses.sort();
    assert_eq!(statuses, [200, 402], "{:?} {:?}", x.body, y.body);
    let lost = if x.status == 402 { &x } else { &y };
    assert_eq!(lost.code(), "REPLAYED", "{:?}", lost.body);

    // Proved on one, replayed on the other.
    let offer = offer_for(&b, "GET /free/y").await;
    let cred = credential(
        &echo(&offer),
        proof_payload(&proof_v3(&payer, me, &offer)),
        Some(&did(me)),
    );
    assert_eq!(present(&b, "GET /free/y", &cred).await.status, 200);
    let v = present(&a, "GET /free/y", &cred).await;
    assert_eq!((v.status, v.code()), (402, "REPLAYED"), "{:?}", v.body);
}
