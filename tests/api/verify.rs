//! `POST /v1/verify` against the real dev chain and real Redis: every rule
//! of API.md produced by a real transaction built to break it.

use serde_json::json;

use crate::chain::*;
use crate::helpers::*;

const MEMO: &str = "0x00000000000000000000000000000000000000000000000000000000000000aa";

/// A chain, a service on it with the usual genome, and the workdir.
struct Setup {
    chain: Chain,
    app: Served,
    _w: Workdir,
}

fn setup_with(g: Genome) -> Setup {
    let chain = Chain::start();
    let w = Workdir::new();
    let app = Served::start(&chain_env(&w.genome(&g.signed()), &chain.url));
    Setup { chain, app, _w: w }
}

fn setup() -> Setup {
    setup_with(Genome::single())
}

#[tokio::test]
async fn a_fresh_transfer_settles_once_and_its_upper_case_twin_is_replayed() {
    let s = setup();
    let hash = s.chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000);
    let first = s.app.verify_hash(&hash).await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    let b = &first.body;
    assert_eq!(b["status"], "settled");
    assert_eq!(b["scheme"], "tempo");
    assert_eq!(b["tx_hash"], hash.to_lowercase());
    assert_eq!(b["payer"], PAYER);
    assert_eq!(b["recipient"], RECIPIENT);
    assert_eq!(b["asset"], ALPHA_USD);
    assert_eq!(b["amount"], "1000000");
    assert_eq!(b["memo"], serde_json::Value::Null);
    assert_eq!(b["chain_id"], 42431);
    assert_eq!(b["idempotent_replay"], false);
    assert!(b["block_number"].as_u64().unwrap() >= 1);
    assert!(b["block_timestamp"].as_u64().unwrap() > 1_700_000_000);
    assert_eq!(b["genome_id"].as_str().unwrap().len(), 64);

    let again = s.app.verify_hash(&hash).await;
    assert_eq!((again.status, again.code()), (402, "REPLAYED"));
    let upper = format!("0x{}", hash[2..].to_uppercase());
    let twin = s.app.verify(json!({ "tx_hash": upper }), &[]).await;
    assert_eq!((twin.status, twin.code()), (402, "REPLAYED"));
}

#[tokio::test]
async fn transfer_with_memo_settles_once_with_its_memo() {
    let s = setup();
    let hash = s.chain.transfer_with_memo(ALPHA_USD, RECIPIENT, 1_000_000, MEMO);
    let r = s.app.verify_hash(&hash).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["memo"], MEMO);
    assert_eq!(r.body["amount"], "1000000", "Transfer + TransferWithMemo count once");
    assert_eq!(s.app.verify_hash(&hash).await.code(), "REPLAYED");
}

#[tokio::test]
async fn a_type_0x76_payment_with_its_fee_in_alpha_usd_settles() {
    let s = setup();
    let r = s.chain.send(
        &["--tempo.fee-token", ALPHA_USD],
        ALPHA_USD,
        "transfer(address,uint256)",
        &[RECIPIENT, "2500000"],
    );
    assert_eq!(r["type"], "0x76");
    let v = s.app.verify_hash(r["transactionHash"].as_str().unwrap()).await;
    assert_eq!(v.status, 200, "{:?}", v.body);
    assert_eq!(v.body["amount"], "2500000");
}

#[tokio::test]
async fn each_failure_reason_comes_from_a_real_transaction() {
    let s = setup();
    let check = |hash: String, reason: &'static str| {
        let app = &s.app;
        async move {
            let v = app.verify_hash(&hash).await;
            assert_eq!(
                (v.status, v.code(), v.reason()),
                (402, "VERIFICATION_FAILED", reason),
                "{:?}",
                v.body
            );
            // a failure never consumes: the same answer again, not REPLAYED
            assert_eq!(app.verify_hash(&hash).await.reason(), reason);
        }
    };
    check(s.chain.transfer(ALPHA_USD, STRANGER, 5_000_000), "wrong_recipient").await;
    check(s.chain.transfer(ALPHA_USD, RECIPIENT, 999_999), "insufficient_amount").await;
    // another token at another address emitting an identical Transfer event
    check(s.chain.transfer(BETA_USD, RECIPIENT, 5_000_000), "wrong_asset").await;
    // an approval moves no funds (its fee transfer is not a payment)
    let approve = s
        .chain
        .send(&[], ALPHA_USD, "approve(address,uint256)", &[RECIPIENT, "5000000"]);
    check(approve["transactionHash"].as_str().unwrap().to_owned(), "no_transfer").await;
    // mined and reverted: more than the balance, gas limit set so cast does not pre-check
    let reverted = s.chain.send(
        &["--gas-limit", "300000"],
        ALPHA_USD,
        "transfer(address,uint256)",
        &[RECIPIENT, "999999999999999999999999"],
    );
    assert_eq!(reverted["status"], "0x0");
    check(reverted["transactionHash"].as_str().unwrap().to_owned(), "tx_reverted").await;
}

#[tokio::test]
async fn the_402_carries_a_challenge_for_both_kinds_of_client() {
    let s = setup();
    let v = s.app.verify(json!({ "resource": "GET /reports/1" }), &[]).await;
    assert_eq!((v.status, v.code()), (402, "PAYMENT_REQUIRED"));
    assert_eq!(v.header("content-type"), "application/problem+json");
    assert_eq!(v.header("cache-control"), "no-store");
    assert_eq!(
        v.header("www-authenticate"),
        format!(
            r#"Tempo realm="Tempo API", asset="{ALPHA_USD}", amount="1000000", destination="{RECIPIENT}", chainId="42431""#
        )
    );
    assert_eq!(v.body["type"], "https://paymentauth.org/problems/payment-required");
    assert_eq!(v.body["status"], 402);
    assert_eq!(v.body["error"], "Payment Required");
    assert_eq!(
        v.body["paymentInfo"],
        json!({"method": "tempo", "recipient": RECIPIENT, "amount": "1000000", "token": ALPHA_USD, "chainId": 42431})
    );
    let unknown = s.app.verify(json!({ "credential": "Bearer abc" }), &[]).await;
    assert_eq!((unknown.status, unknown.code()), (402, "PAYMENT_REQUIRED"));
}

#[tokio::test]
async fn prices_follow_the_resource() {
    let g = Genome::single().set(
        "/settlement/prices",
        json!([{"resource": "GET /reports/*", "amount": "2000000"}]),
    );
    let s = setup_with(g);
    let hash = s.chain.transfer(ALPHA_USD, RECIPIENT, 1_500_000);
    let v = s
        .app
        .verify(json!({"tx_hash": hash, "resource": "GET /reports/42"}), &[])
        .await;
    assert_eq!(v.reason(), "insufficient_amount");
    assert!(v.header("www-authenticate").contains(r#"amount="2000000""#));
    let v = s
        .app
        .verify(json!({"tx_hash": hash, "resource": "GET /other"}), &[])
        .await;
    assert_eq!(v.status, 200, "{:?}", v.body);
}

#[tokio::test]
async fn a_payment_dated_in_the_future_is_refused() {
    let s = setup();
    let future_ts = (time::OffsetDateTime::now_utc().unix_timestamp() + 3600).to_string();
    s.chain.rpc("evm_setNextBlockTimestamp", &[&future_ts]);
    let future = s.chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000);
    assert_eq!(s.app.verify_hash(&future).await.reason(), "future_timestamp");
}

#[tokio::test]
async fn a_payment_older_than_the_window_is_expired() {
    // A chain whose clock runs 10 minutes behind: its payment is 10
    // minutes old when mined, twice the 300 s window.
    let chain = Chain::start_in_the_past(600);
    let hash = chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000);
    let w = Workdir::new();
    let app = Served::start(&chain_env(&w.genome(&Genome::single().signed()), &chain.url));
    let v = app.verify_hash(&hash).await;
    assert_eq!(
        (v.code(), v.reason()),
        ("VERIFICATION_FAILED", "expired"),
        "{:?}",
        v.body
    );
}

/// Polls `/readyz` until the first RPC endpoint is in `state`.
async fn wait_for_endpoint_state(app: &Served, state: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (_, ready) = app.get_json("/readyz").await;
        if ready["components"]["rpc"]["endpoints"][0]["state"] == state {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "endpoint never {state}: {ready}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_node_on_the_wrong_chain_is_a_503_and_is_not_asked_about_payments() {
    let chain = Chain::start();
    let w = Workdir::new();
    let mut env = chain_env(&w.genome(&Genome::single().signed()), &chain.url);
    env.insert("SETTLEGATE_RPC__PROBE_INTERVAL_MS".into(), "200".into());
    let app = Served::start(&env);
    let hash = chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000);

    chain.rpc("anvil_setChainId", &["4217"]);
    wait_for_endpoint_state(&app, "wrong_chain").await;
    let (status, ready) = app.get_json("/readyz").await;
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["components"]["rpc"]["endpoints"][0]["chain_id"], 4217);
    let lookups = chain.calls("eth_getTransactionReceipt");
    let v = app.verify_hash(&hash).await;
    assert_eq!((v.status, v.code()), (503, "RPC_UNAVAILABLE"), "{:?}", v.body);
    assert_eq!(v.header("retry-after"), "2");
    assert_eq!(
        chain.calls("eth_getTransactionReceipt"),
        lookups,
        "a node on another chain is never asked about a payment"
    );
    assert_eq!(
        app.metric("settlegate_unavailable_total{code=\"RPC_UNAVAILABLE\",cause=\"rpc_wrong_chain\"}")
            .await,
        1
    );

    // nothing consumed: back on the right chain, the payment settles
    chain.rpc("anvil_setChainId", &["42431"]);
    wait_for_endpoint_state(&app, "healthy").await;
    assert_eq!(app.verify_hash(&hash).await.status, 200);
}

#[tokio::test]
async fn a_required_memo_must_be_there() {
    let s = setup_with(Genome::single().set("/settlement/memo", json!("required")));
    let plain = s.chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000);
    assert_eq!(s.app.verify_hash(&plain).await.reason(), "memo_mismatch");
    let memo = s.chain.transfer_with_memo(ALPHA_USD, RECIPIENT, 1_000_000, MEMO);
    assert_eq!(s.app.verify_hash(&memo).await.status, 200);
}

#[tokio::test]
async fn a_hash_not_mined_yet_is_pending_and_stays_usable() {
    let s = setup();
    s.chain.rpc("evm_setAutomine", &["false"]);
    let sent = s.chain.send(
        &["--async"],
        ALPHA_USD,
        "transfer(address,uint256)",
        &[RECIPIENT, "1000000"],
    );
    let hash = sent.as_str().unwrap().to_owned();
    let v = s.app.verify_hash(&hash).await;
    assert_eq!((v.status, v.code()), (402, "PAYMENT_PENDING"), "{:?}", v.body);
    assert_eq!(v.header("retry-after"), "1");
    s.chain.rpc("evm_mine", &[]);
    // A client that honours Retry-After asks again after the coalescer's
    // window (250 ms), which held the pending answer; then it settles.
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let v = s.app.verify_hash(&hash).await;
    assert_eq!(v.status, 200, "{:?}", v.body);
}

#[tokio::test]
async fn missing_confirmations_are_pending_never_a_failure() {
    let s = setup_with(Genome::single().set("/settlement/min_confirmations", json!(3)));
    let hash = s.chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000);
    let v = s.app.verify_hash(&hash).await;
    assert_eq!(
        (v.code(), v.reason()),
        ("PAYMENT_PENDING", "insufficient_confirmations"),
        "{:?}",
        v.body
    );
    s.chain.rpc("anvil_mine", &["2"]);
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert_eq!(s.app.verify_hash(&hash).await.status, 200);
}

#[tokio::test]
async fn malformed_requests_get_clear_400s_413s_and_415s() {
    let s = setup();
    let bad_hash = s.app.verify(json!({ "credential": "Tempo 0x1234" }), &[]).await;
    assert_eq!((bad_hash.status, bad_hash.code()), (400, "INVALID_TX_HASH"));
    let bad = s.app.verify(json!({ "tx_hash": "0xZZ" }), &[]).await;
    assert_eq!((bad.status, bad.code()), (400, "INVALID_TX_HASH"));
    let both = s
        .app
        .verify(
            json!({ "tx_hash": format!("0x{}", "a".repeat(64)), "credential": "Tempo 0x" }),
            &[],
        )
        .await;
    assert_eq!((both.status, both.code()), (400, "INVALID_REQUEST"));
    let typo = s.app.verify(json!({ "txHash": "0x" }), &[]).await;
    assert_eq!((typo.status, typo.code()), (400, "INVALID_REQUEST"));
    let res = s
        .app
        .verify(
            json!({ "tx_hash": format!("0x{}", "a".repeat(64)), "resource": "reports" }),
            &[],
        )
        .await;
    assert_eq!((res.status, res.code()), (400, "INVALID_REQUEST"));
    let key = s
        .app
        .verify(
            json!({ "tx_hash": format!("0x{}", "a".repeat(64)) }),
            &[("Idempotency-Key", &"k".repeat(300))],
        )
        .await;
    assert_eq!((key.status, key.code()), (400, "INVALID_REQUEST"));

    let client = reqwest::Client::new();
    let r = client
        .post(s.app.url("/v1/verify"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let r = client
        .post(s.app.url("/v1/verify"))
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    let big = format!(r#"{{"resource":"GET /{}"}}"#, "a".repeat(17 * 1024));
    let r = client
        .post(s.app.url("/v1/verify"))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["code"],
        "PAYLOAD_TOO_LARGE"
    );
}

#[tokio::test]
async fn a_long_credential_with_multibyte_characters_in_its_scheme_is_a_400_not_a_crash() {
    // Found by the `authorization` fuzz target: the long-credential check
    // sliced a str inside a multi-byte character and panicked.
    let s = setup();
    for head in ["Teb!p\u{fffd}", "Paymen\u{e9}", "\u{1f4b8}\u{1f4b8}"] {
        let credential = format!("{head}{}", "a".repeat(9 * 1024));
        let v = s.app.verify(json!({ "credential": credential }), &[]).await;
        assert_eq!((v.status, v.code()), (400, "INVALID_REQUEST"), "{head}: {:?}", v.body);
    }
    // and a long Payment credential is the MPP answer
    let v = s
        .app
        .verify(
            json!({ "credential": format!("Payment {}", "a".repeat(9 * 1024)) }),
            &[],
        )
        .await;
    assert_eq!((v.status, v.code()), (402, "MALFORMED_CREDENTIAL"), "{:?}", v.body);
    assert_eq!(s.app.get_json("/healthz").await.0, 200);
}

/// Migration from the seed: its `TEMPO_RPC_URL` alone names the endpoint a
/// payment is checked on; set together with a different `rpc.urls`, the
/// boot stops.
#[tokio::test]
async fn the_seeds_tempo_rpc_url_alone_is_the_rpc_endpoint_and_a_conflict_stops_the_boot() {
    let chain = Chain::start();
    let hash = chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000);
    let w = Workdir::new();
    let genome = w.genome(&Genome::single().signed());
    let mut env = chain_env(&genome, &chain.url);
    env.remove("SETTLEGATE_RPC__URLS");
    env.insert("TEMPO_RPC_URL".into(), chain.url.clone());
    let app = Served::start(&env);
    let v = app.verify_hash(&hash).await;
    assert_eq!(
        (v.status, v.body["status"].as_str()),
        (200, Some("settled")),
        "{:?}",
        v.body
    );
    // one endpoint, the seed's (named, not located: rpc.expose_endpoint_hosts)
    let readyz = app.get_json("/readyz").await.1;
    assert!(readyz.to_string().contains("rpc0"), "{readyz}");
    assert!(!readyz.to_string().contains("rpc1"), "{readyz}");
    env.insert("SETTLEGATE_RPC__EXPOSE_ENDPOINT_HOSTS".into(), "true".into());
    let shown = Served::start(&env);
    let readyz = shown.get_json("/readyz").await.1;
    assert!(readyz.to_string().contains(chain.url.trim_end_matches('/')), "{readyz}");

    let mut env = chain_env(&genome, &chain.url);
    env.insert("TEMPO_RPC_URL".into(), "http://127.0.0.1:9".into());
    let r = run_refused(&env);
    assert!(
        r.stderr.contains("CONFIG_INVALID") && r.stderr.contains("TEMPO_RPC_URL"),
        "{}",
        r.stderr
    );
}
