//! The lookup path under the conditions each guarantee exists for: storms on
//! payments that do not settle (underpaid, unknown, pending, an RPC that
//! hangs), one HTTP round trip per verification, replays answered from
//! memory, several instances on one Redis, a corrupt record. Effects are
//! counted where they happen: at the node (anvil's own log of the methods it
//! served), at a fault injector, and in Redis (`INFO commandstats`), not
//! only in our own metrics.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::chain::*;
use crate::helpers::*;

pub(crate) const RECEIPT: &str = "eth_getTransactionReceipt";

/// The per-method difference between two snapshots of a node's calls.
fn served_between(before: &HashMap<String, usize>, after: &HashMap<String, usize>) -> HashMap<String, usize> {
    after
        .iter()
        .map(|(m, n)| (m.clone(), n - before.get(m).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// Waits until `/readyz` says ready (the start-up chain-id probe is done).
pub(crate) async fn ready(app: &Served) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while app.get_json("/readyz").await.0 != 200 {
        assert!(std::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every answer is a 402 with `code` and `reason` ("" for none).
pub(crate) fn all_refused(hash: &str, answers: &[Verified], code: &str, reason: &str) {
    let wrong: Vec<_> = answers
        .iter()
        .filter(|v| (v.status, v.code(), v.reason()) != (402, code, reason))
        .collect();
    assert!(
        wrong.is_empty(),
        "{hash}: {} wrong answers, e.g. {:?}",
        wrong.len(),
        wrong[0]
    );
}

pub(crate) fn tempo(hash: &str) -> serde_json::Value {
    json!({ "credential": format!("Tempo {hash}") })
}

/// The storm's arrival on a loaded two-core machine can spread over more
/// than the default 250 ms window; a 2 s window keeps the count exact while
/// testing the same mechanism (overlapping checks join the lookup in flight,
/// later ones are answered by the held refusal).
pub(crate) const STORM_WINDOW_MS: &str = "2000";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storms_on_payments_that_do_not_settle_cost_one_receipt_lookup_each() {
    let chain = Chain::start();
    let w = Workdir::new();
    let mut env = chain_env(&w.genome(&Genome::single().signed()), &chain.url);
    env.insert("SETTLEGATE_COALESCER__WINDOW_MS".into(), STORM_WINDOW_MS.into());
    let app = Arc::new(Served::start(&env));
    ready(&app).await;

    // underpaid by one atomic unit
    let underpaid = chain.transfer(ALPHA_USD, RECIPIENT, 999_999);
    // a hash the node has never seen
    let unknown = format!("0x{}", "5e".repeat(32));
    // sent, not mined
    chain.rpc("evm_setAutomine", &["false"]);
    let sent = chain.send(
        &["--async"],
        ALPHA_USD,
        "transfer(address,uint256)",
        &[RECIPIENT, "1000000"],
    );
    let pending = sent.as_str().unwrap().to_owned();

    for (hash, code, reason) in [
        (&underpaid, "VERIFICATION_FAILED", "insufficient_amount"),
        (&unknown, "PAYMENT_PENDING", ""),
        (&pending, "PAYMENT_PENDING", ""),
    ] {
        let before = chain.calls(RECEIPT);
        let answers = storm(&app, tempo(hash), vec![], 200).await;
        all_refused(hash, &answers, code, reason);
        assert_eq!(chain.calls(RECEIPT) - before, 1, "{hash}: receipt lookups at the node");
    }

    // A held refusal never outlives its window: once mined, the pending
    // payment settles (after the window) and is consumed once.
    chain.rpc("evm_mine", &[]);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let answers = storm(&app, tempo(&pending), vec![], 200).await;
    assert_eq!(answers.iter().filter(|v| v.status == 200).count(), 1);
    assert_eq!(answers.iter().filter(|v| v.code() == "REPLAYED").count(), 199);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_on_a_hung_rpc_endpoint_costs_one_request_there_and_every_answer_is_a_503() {
    let hung = FaultInjector::start(None);
    let w = Workdir::new();
    let mut env = chain_env(&w.genome(&Genome::single().signed()), &hung.url);
    env.insert("SETTLEGATE_RPC__TIMEOUT_MS".into(), "1500".into());
    env.insert("SETTLEGATE_RPC__PROBE_INTERVAL_MS".into(), "0".into());
    let app = Arc::new(Served::start(&env));
    // the start-up probe hangs until it times out
    tokio::time::sleep(Duration::from_millis(1700)).await;
    let before = hung.requests();
    let answers = storm(&app, tempo(&format!("0x{}", "77".repeat(32))), vec![], 200).await;
    assert!(
        answers.iter().all(|v| (v.status, v.code()) == (503, "RPC_UNAVAILABLE")),
        "{:?}",
        answers.iter().find(|v| v.status != 503)
    );
    assert_eq!(hung.requests() - before, 1, "requests that reached the hung endpoint");
    assert_eq!(
        app.metric("settlegate_unavailable_total{code=\"RPC_UNAVAILABLE\",cause=\"rpc_timeout\"}")
            .await,
        200
    );
}

/// A service on its own chain with no periodic probe, ready (its start-up
/// probe done), so the node serves nothing but what a verification asks;
/// and the name of its metric of HTTP round trips to that node.
async fn quiet(g: Genome) -> (Chain, Served, Workdir, String) {
    let chain = Chain::start();
    let w = Workdir::new();
    let mut env = chain_env(&w.genome(&g.signed()), &chain.url);
    env.insert("SETTLEGATE_RPC__PROBE_INTERVAL_MS".into(), "0".into());
    let app = Served::start(&env);
    ready(&app).await;
    let http = "settlegate_rpc_http_requests_total{endpoint=\"rpc0\",outcome=\"ok\"}".to_owned();
    (chain, app, w, http)
}

#[tokio::test]
async fn a_mined_payment_costs_one_json_rpc_http_request() {
    let (chain, app, _w, http) = quiet(Genome::single()).await;
    let hash = chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000);
    let (before, http_before) = (chain.all_calls(), app.metric(&http).await);
    let v = app.verify_hash(&hash).await;
    assert_eq!(v.status, 200, "{:?}", v.body);
    assert_eq!(
        served_between(&before, &chain.all_calls()),
        HashMap::from([(RECEIPT.to_owned(), 1)]),
        "the node served the receipt and nothing else: no chain id, no block, no head"
    );
    assert_eq!(app.metric(&http).await - http_before, 1);
    // the receipt's own blockTimestamp dated it
    assert!(v.body["block_timestamp"].as_u64().unwrap() > 1_700_000_000);
}

#[tokio::test]
async fn more_confirmations_read_the_head_in_the_same_batch() {
    let (chain, app, _w, http) = quiet(Genome::single().set("/settlement/min_confirmations", json!(3))).await;
    let hash = chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000);
    chain.rpc("anvil_mine", &["2"]);
    let (before, http_before) = (chain.all_calls(), app.metric(&http).await);
    let v = app.verify_hash(&hash).await;
    assert_eq!(v.status, 200, "{:?}", v.body);
    assert_eq!(
        served_between(&before, &chain.all_calls()),
        HashMap::from([(RECEIPT.to_owned(), 1), ("eth_blockNumber".to_owned(), 1)])
    );
    assert_eq!(app.metric(&http).await - http_before, 1, "one batch, one round trip");
}

#[tokio::test]
async fn a_replay_is_answered_from_memory_without_redis_or_the_node() {
    let chain = Chain::start();
    let redis = OwnRedis::start_on(free_port());
    let w = Workdir::new();
    let genome = w.genome(&Genome::single().signed());
    let mut env = chain_env(&genome, &chain.url);
    env.insert("SETTLEGATE_REDIS__URL".into(), redis.url());
    let app = Served::start(&env);

    let hash = chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000);
    let key = [("Idempotency-Key", "order-1-7d1e5c0a9b")];
    let body = json!({ "tx_hash": hash, "resource": "GET /a" });
    assert_eq!(app.verify(body.clone(), &key).await.status, 200);
    let (redis_before, node_before) = (redis.total_commands(), chain.calls(RECEIPT));
    for _ in 0..20 {
        let v = app.verify_hash(&hash).await;
        assert_eq!((v.status, v.code()), (402, "REPLAYED"));
        let other = app
            .verify(body.clone(), &[("Idempotency-Key", "order-2-7d1e5c0a9b")])
            .await;
        assert_eq!((other.status, other.code()), (402, "REPLAYED"));
    }
    assert_eq!(redis.total_commands(), redis_before, "no Redis command for 40 replays");
    assert_eq!(chain.calls(RECEIPT), node_before, "no lookup either");
    assert_eq!(app.metric("settlegate_replay_cache_hits_total").await, 40);
    // An idempotent retry is answered from the cached record too, but is
    // counted in the store (the retry limit holds across instances).
    let retry = app.verify(body.clone(), &key).await;
    assert_eq!(
        (retry.status, retry.body["idempotent_replay"].as_bool()),
        (200, Some(true))
    );
    assert!(redis.total_commands() > redis_before, "the retry was counted in Redis");
    assert_eq!(chain.calls(RECEIPT), node_before);

    // The same Redis seen by an instance without the cache: still refused,
    // by the store this time (the cache is a shortcut, not the authority).
    let mut cold = env.clone();
    cold.insert("SETTLEGATE_REPLAY__CACHE_ENTRIES".into(), "0".into());
    let cold = Served::start(&cold);
    let before = redis.commands();
    let v = cold.verify_hash(&hash).await;
    assert_eq!((v.status, v.code()), (402, "REPLAYED"), "{:?}", v.body);
    let after = redis.commands();
    assert!(
        after.values().sum::<u64>() > before.values().sum::<u64>(),
        "the store answered: {before:?} → {after:?}"
    );
}

/// Found by review (issue 8): with `redis.wait_replicas`, a consume's record
/// is in Redis while it waits for its replicas, and is withdrawn if too few
/// confirm. Another instance that took it for a consumed payment answered
/// the idempotent retry 200, then the payment was free again: one payment,
/// a 200 per round. On a Redis with no replica every consume is withdrawn;
/// one payment with one `Idempotency-Key` presented to two instances at
/// once, round after round, gets no 200, and the second instance's 503
/// says why (`store_unconfirmed`). In Redis the record is gone after each
/// round, and the payment still buys its one 200 where no replica is awaited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_instance_answers_from_a_record_still_waiting_for_its_replicas() {
    let chain = Chain::start();
    let redis = OwnRedis::start_on(free_port());
    let w = Workdir::new();
    let mut env = chain_env(&w.genome(&Genome::single().signed()), &chain.url);
    env.insert("SETTLEGATE_REDIS__URL".into(), redis.url());
    env.insert("SETTLEGATE_REDIS__WAIT_REPLICAS".into(), "1".into());
    // WAIT holds for a third of it: 500 ms.
    env.insert("SETTLEGATE_REDIS__TIMEOUT_MS".into(), "1500".into());
    let (a, b) = (Arc::new(Served::start(&env)), Arc::new(Served::start(&env)));
    ready(&a).await;
    ready(&b).await;

    let hash = chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000);
    let record = format!("{}replay:{}", env["SETTLEGATE_REDIS__KEY_PREFIX"], hash.to_lowercase());
    let exists = || {
        let out = std::process::Command::new("redis-cli")
            .args(["-p", &redis.port.to_string(), "EXISTS", &record])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let body = json!({ "tx_hash": hash, "resource": "GET /a" });
    for round in 0..3 {
        let first = {
            let (a, body) = (a.clone(), body.clone());
            tokio::spawn(async move { a.verify(body, &[("Idempotency-Key", "order-w-7d1e5c0a9b")]).await })
        };
        // A's record is written, its WAIT holds: B reads the record.
        tokio::time::sleep(Duration::from_millis(150)).await;
        let second = b
            .verify(body.clone(), &[("Idempotency-Key", "order-w-7d1e5c0a9b")])
            .await;
        let first = first.await.unwrap();
        for (who, v) in [("A", &first), ("B", &second)] {
            assert_eq!(
                (v.status, v.code()),
                (503, "REPLAY_STORE_UNAVAILABLE"),
                "round {round}, {who}: {:?}",
                v.body
            );
        }
        assert_eq!(exists(), "0", "round {round}: the unconfirmed record was withdrawn");
    }
    let unconfirmed = "settlegate_unavailable_total{code=\"REPLAY_STORE_UNAVAILABLE\",cause=\"store_unconfirmed\"}";
    let unreplicated = "settlegate_unavailable_total{code=\"REPLAY_STORE_UNAVAILABLE\",cause=\"store_unreplicated\"}";
    assert_eq!(a.metric(unreplicated).await, 3, "A's three consumes found no replica");
    assert!(
        b.metric(unconfirmed).await >= 1,
        "B saw a pending record and did not answer from it"
    );

    // Nothing was consumed: without waiting for replicas it buys its 200.
    let mut plain = env.clone();
    plain.insert("SETTLEGATE_REDIS__WAIT_REPLICAS".into(), "0".into());
    let c = Served::start(&plain);
    let paid = c
        .verify(body.clone(), &[("Idempotency-Key", "order-w-7d1e5c0a9b")])
        .await;
    assert_eq!(paid.status, 200, "{:?}", paid.body);
    assert_eq!(paid.body["idempotent_replay"], false, "{:?}", paid.body);
    let replay = b.verify_hash(&hash).await;
    assert_eq!((replay.status, replay.code()), (402, "REPLAYED"), "{:?}", replay.body);
}

/// The other side of the test above: with a replica, a 200's record is
/// confirmed and then promoted from pending at once, so another instance
/// answers REPLAYED and the idempotent 200 right after it, not 503 for the
/// rest of the store budget. Read in Redis: the record on the primary and on
/// its replica is the plain record, not `P…`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_its_replica_confirmed_answers_every_instance_at_once() {
    let chain = Chain::start();
    let primary = OwnRedis::start_on(free_port());
    let replica_port = free_port();
    let replica_dir = Workdir::new();
    let _replica = OwnRedis::start_with(
        replica_port,
        &[
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            &replica_dir.path("").display().to_string(),
            "--replicaof",
            "127.0.0.1",
            &primary.port.to_string(),
        ],
    );
    let cli = |port: u16, args: &[&str]| {
        let out = std::process::Command::new("redis-cli")
            .args(["-p", &port.to_string()])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !cli(primary.port, &["INFO", "replication"]).contains("state=online") {
        assert!(std::time::Instant::now() < deadline, "the replica never synced");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let w = Workdir::new();
    let mut env = chain_env(&w.genome(&Genome::single().signed()), &chain.url);
    env.insert("SETTLEGATE_REDIS__URL".into(), primary.url());
    env.insert("SETTLEGATE_REDIS__WAIT_REPLICAS".into(), "1".into());
    env.insert("SETTLEGATE_REDIS__TIMEOUT_MS".into(), "3000".into());
    let (a, b) = (Served::start(&env), Served::start(&env));
    ready(&a).await;
    ready(&b).await;

    let hash = chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000);
    let record = format!("{}replay:{}", env["SETTLEGATE_REDIS__KEY_PREFIX"], hash.to_lowercase());
    let body = json!({ "tx_hash": hash, "resource": "GET /a" });
    let key = [("Idempotency-Key", "order-r-7d1e5c0a9b")];
    let paid = a.verify(body.clone(), &key).await;
    assert_eq!(paid.status, 200, "confirmed by the replica: {:?}", paid.body);
    let answered = std::time::Instant::now();
    let replay = b.verify_hash(&hash).await;
    assert_eq!((replay.status, replay.code()), (402, "REPLAYED"), "{:?}", replay.body);
    let retry = b.verify(body.clone(), &key).await;
    assert_eq!(
        (retry.status, retry.body["idempotent_replay"].as_bool()),
        (200, Some(true)),
        "{:?}",
        retry.body
    );
    assert!(
        answered.elapsed() < Duration::from_secs(1),
        "answered within a third of the store budget, so not by waiting it out"
    );
    for port in [primary.port, replica_port] {
        // (the replica has it once replication catches up)
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        let mut stored = cli(port, &["GET", &record]);
        while !stored.starts_with('{') && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
            stored = cli(port, &["GET", &record]);
        }
        assert!(stored.starts_with('{'), "port {port}: promoted, not pending: {stored}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_redis_consume_a_payment_once() {
    let chain = Chain::start();
    let w = Workdir::new();
    let g = Genome::single().set(
        "/settlement/prices",
        json!([{"resource": "GET /reports/*", "amount": "2000000"}]),
    );
    let env = chain_env(&w.genome(&g.signed()), &chain.url);
    let a = Arc::new(Served::start(&env));
    let b = Arc::new(Served::start(&env));

    let hash = chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000);
    let before = chain.calls(RECEIPT);
    let (on_a, on_b) = tokio::join!(
        storm(&a, tempo(&hash), vec![], 150),
        storm(&b, tempo(&hash), vec![], 150)
    );
    let all: Vec<_> = on_a.iter().chain(&on_b).collect();
    assert_eq!(all.iter().filter(|v| v.status == 200).count(), 1, "one 200 across both");
    assert_eq!(all.iter().filter(|v| v.code() == "REPLAYED").count(), 299);
    let lookups = chain.calls(RECEIPT) - before;
    assert!(lookups <= 2, "at most one lookup per instance, got {lookups}");

    // An idempotent retry lands on the other instance, whose cache is cold:
    // the store's record answers it.
    let hash = chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000);
    let body = json!({ "tx_hash": hash, "resource": "GET /a" });
    let key = [("Idempotency-Key", "order-9-7d1e5c0a9b")];
    let first = a.verify(body.clone(), &key).await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    let retry = b.verify(body.clone(), &key).await;
    assert_eq!(retry.status, 200, "{:?}", retry.body);
    assert_eq!(retry.body["idempotent_replay"], true);
    assert_eq!(retry.body["block_number"], first.body["block_number"]);
    // The consumed payment presented for a dearer route on a cold instance
    // does not settle there, and is still recognised as consumed.
    let c = Served::start(&env);
    let v = c
        .verify(json!({ "tx_hash": hash, "resource": "GET /reports/1" }), &[])
        .await;
    assert_eq!((v.status, v.code()), (402, "REPLAYED"), "{:?}", v.body);
}

#[tokio::test]
async fn a_corrupt_replay_record_is_a_503_and_is_never_overwritten() {
    let chain = Chain::start();
    let w = Workdir::new();
    let env = chain_env(&w.genome(&Genome::single().signed()), &chain.url);
    let app = Served::start(&env);
    let hash = chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000);
    let key = format!("{}replay:{}", env["SETTLEGATE_REDIS__KEY_PREFIX"], hash.to_lowercase());
    let redis_cli = |args: &[&str]| {
        let out = std::process::Command::new("redis-cli")
            .args(["-u", &redis_url()])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    redis_cli(&["SET", &key, "{not a record"]);
    let v = app.verify_hash(&hash).await;
    assert_eq!((v.status, v.code()), (503, "REPLAY_STORE_UNAVAILABLE"), "{:?}", v.body);
    assert_eq!(redis_cli(&["GET", &key]), "{not a record");
    assert_eq!(
        app.metric("settlegate_unavailable_total{code=\"REPLAY_STORE_UNAVAILABLE\",cause=\"store_corrupt_record\"}")
            .await,
        1
    );
    let line = app.wait_for_log(|l| l["cause"] == "store_corrupt_record");
    assert_eq!(line["level"], "WARN");
    assert_eq!(line["tx_hash"], hash.to_lowercase());
    assert_eq!(line["code"], "REPLAY_STORE_UNAVAILABLE");
    assert!(line["span"]["request_id"].is_string(), "{line}");
}

/// `n` checks of `body`, spread evenly over `apps` and sent at once.
pub(crate) async fn storm_across(apps: &[Arc<Served>], body: serde_json::Value, n: usize) -> Vec<Verified> {
    let mut set = tokio::task::JoinSet::new();
    for (i, app) in apps.iter().enumerate() {
        let share = n / apps.len() + usize::from(i < n % apps.len());
        let (app, body) = (app.clone(), body.clone());
        set.spawn(async move { storm(&app, body, vec![], share).await });
    }
    set.join_all().await.into_iter().flatten().collect()
}

/// Issue 8: three instances on one Redis, 1,000 concurrent checks of one
/// payment spread across them. Whatever the lookup finds, the node serves
/// one receipt lookup for the storm: the instances share it through Redis
/// (claim, then the holder's published result). A fresh valid payment
/// buys exactly one 200; an underpaid one gets 1,000 correct 402s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_on_one_redis_cost_one_receipt_lookup_per_storm() {
    let chain = Chain::start();
    let redis = OwnRedis::start_on(free_port());
    let w = Workdir::new();
    let mut env = chain_env(&w.genome(&Genome::single().signed()), &chain.url);
    env.insert("SETTLEGATE_REDIS__URL".into(), redis.url());
    env.insert("SETTLEGATE_COALESCER__WINDOW_MS".into(), STORM_WINDOW_MS.into());
    let apps: Vec<Arc<Served>> = (0..3).map(|_| Arc::new(Served::start(&env))).collect();
    for app in &apps {
        ready(app).await;
    }

    let paid = chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000);
    let underpaid = chain.transfer(ALPHA_USD, RECIPIENT, 999_999);
    let unknown = format!("0x{}", "6d".repeat(32));
    for (hash, settles, code, reason) in [
        (&paid, true, "", ""),
        (&underpaid, false, "VERIFICATION_FAILED", "insufficient_amount"),
        (&unknown, false, "PAYMENT_PENDING", ""),
    ] {
        let before = chain.calls(RECEIPT);
        let answers = storm_across(&apps, tempo(hash), 1000).await;
        assert_eq!(answers.len(), 1000);
        if settles {
            assert_eq!(answers.iter().filter(|v| v.status == 200).count(), 1, "{hash}: one 200");
            assert_eq!(answers.iter().filter(|v| v.code() == "REPLAYED").count(), 999, "{hash}");
        } else {
            all_refused(hash, &answers, code, reason);
        }
        assert_eq!(chain.calls(RECEIPT) - before, 1, "{hash}: receipt lookups at the node");
    }
    // The other instances were answered through Redis, not by the node.
    let mut remote = 0;
    for app in &apps {
        remote += app.metric("settlegate_coalescer_remote_answers_total").await;
        assert_eq!(app.metric("settlegate_coalescer_fallbacks_total").await, 0);
    }
    assert!(
        remote >= 6,
        "three storms, two instances answered remotely each: {remote}"
    );
    let commands = redis.commands();
    assert!(commands.get("evalsha").copied().unwrap_or(0) + commands.get("eval").copied().unwrap_or(0) > 0);
}

/// A claim whose holder died (set here by hand as a killed instance leaves
/// it: a quarter of the lookup timeout, which a live holder would renew)
/// holds checks only until it expires: the waiting instance respects it
/// (no second lookup while it may still be answered), then claims the
/// lookup itself and settles, well within the lookup timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_instances_lookup_claim_holds_a_payment_only_until_it_expires() {
    let chain = Chain::start();
    let w = Workdir::new();
    let mut env = chain_env(&w.genome(&Genome::single().signed()), &chain.url);
    env.insert("SETTLEGATE_RPC__TIMEOUT_MS".into(), "500".into());
    env.insert("SETTLEGATE_RPC__LOOKUP_TIMEOUT_MS".into(), "1000".into());
    let app = Served::start(&env);
    ready(&app).await;
    let hash = chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000);
    let prefix = &env["SETTLEGATE_REDIS__KEY_PREFIX"];
    let claim = format!(
        "{prefix}lookup:{{{prefix}replay:{}}}:42431:0:claim",
        hash.to_lowercase()
    );
    let before = chain.calls(RECEIPT);
    // Timed from before the claim is written: it expires 250 ms after.
    let started = std::time::Instant::now();
    let set = std::process::Command::new("redis-cli")
        .args(["-u", &redis_url(), "SET", &claim, "dead-instance", "PX", "250"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&set.stdout).trim(), "OK");
    let first = app.verify_hash(&hash).await;
    let waited = started.elapsed();
    assert_eq!(first.status, 200, "{:?}", first.body);
    assert!(
        waited >= Duration::from_millis(250),
        "the claim was respected: answered after {waited:?}"
    );
    assert!(
        waited < Duration::from_millis(800),
        "and held no longer than it lived: {waited:?}"
    );
    assert_eq!(chain.calls(RECEIPT) - before, 1);
    let again = app.verify_hash(&hash).await;
    assert_eq!((again.status, again.code()), (402, "REPLAYED"));
}

/// The same three instances on an RPC endpoint that accepts and never
/// answers: the storm sends it one request, whichever instance holds the
/// claim, and every check on every instance is a 503 within the timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_on_a_hung_rpc_endpoint_send_it_one_request_per_storm() {
    let hung = FaultInjector::start(None);
    let redis = OwnRedis::start_on(free_port());
    let w = Workdir::new();
    let mut env = chain_env(&w.genome(&Genome::single().signed()), &hung.url);
    env.insert("SETTLEGATE_REDIS__URL".into(), redis.url());
    env.insert("SETTLEGATE_RPC__TIMEOUT_MS".into(), "1500".into());
    env.insert("SETTLEGATE_RPC__PROBE_INTERVAL_MS".into(), "0".into());
    let apps: Vec<Arc<Served>> = (0..3).map(|_| Arc::new(Served::start(&env))).collect();
    // the start-up probes hang until they time out
    tokio::time::sleep(Duration::from_millis(1700)).await;
    let before = hung.requests();
    let started = std::time::Instant::now();
    let answers = storm_across(&apps, tempo(&format!("0x{}", "78".repeat(32))), 300).await;
    assert!(
        answers.iter().all(|v| (v.status, v.code()) == (503, "RPC_UNAVAILABLE")),
        "{:?}",
        answers.iter().find(|v| v.status != 503)
    );
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "within the lookup timeout: {:?}",
        started.elapsed()
    );
    assert_eq!(hung.requests() - before, 1, "requests that reached the hung endpoint");
}

/// Whoever can write to Redis cannot mint a 200: a forged "result" of
/// another instance's lookup, saying an unknown hash pays the price, is
/// taken as facts from elsewhere, which never settle. The check waits for
/// that instance's consume record, finds none, asks the node itself, and
/// the node does not know the transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_facts_in_redis_never_settle_a_payment() {
    let chain = Chain::start();
    let w = Workdir::new();
    let env = chain_env(&w.genome(&Genome::single().signed()), &chain.url);
    let app = Served::start(&env);
    ready(&app).await;
    // A real payment's receipt, as the node gives it, with another hash.
    let real = chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000);
    let mut receipt: serde_json::Value =
        serde_json::from_str(&chain.rpc("eth_getTransactionReceipt", &[&real])).unwrap();
    let forged = format!("0x{}", "f0".repeat(32));
    receipt["transactionHash"] = forged.clone().into();
    let facts = json!({ "receipt": receipt, "block": null, "head": null });
    let prefix = &env["SETTLEGATE_REDIS__KEY_PREFIX"];
    let key = format!("{prefix}lookup:{{{prefix}replay:{forged}}}:42431:0:result");
    // `<hold until>|<publication>`, the exchange's one typed format.
    let publication = json!({ "claim": "forger", "outcome": { "facts": facts } });
    let record = format!("99999999999999|{publication}");
    let set = std::process::Command::new("redis-cli")
        .args(["-u", &redis_url(), "SET", &key, &record, "PX", "60000"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&set.stdout).trim(), "OK");

    let before = chain.calls(RECEIPT);
    let v = app.verify_hash(&forged).await;
    assert_eq!((v.status, v.code()), (402, "PAYMENT_PENDING"), "{:?}", v.body);
    assert_eq!(chain.calls(RECEIPT) - before, 1, "the node was asked itself");
    assert_eq!(
        app.metric("settlegate_coalescer_remote_answers_total").await,
        1,
        "the forgery was read"
    );
    // And the real payment still settles, once.
    assert_eq!(app.verify_hash(&real).await.status, 200);
}

/// A payment another instance consumed is refused from the claim's answer:
/// the lookup's claim reads the record in the same script, so the node is
/// not asked at all (counted at anvil). Presented after the holder's
/// publication has left its hold window, so nothing but the record can
/// answer; an idempotent retry of the settled request is answered from it
/// too, counted in the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_another_instance_consumed_is_refused_without_a_lookup() {
    let chain = Chain::start();
    let w = Workdir::new();
    let mut env = chain_env(&w.genome(&Genome::single().signed()), &chain.url);
    env.insert("SETTLEGATE_COALESCER__WINDOW_MS".into(), "50".into());
    let (a, b) = (Served::start(&env), Served::start(&env));
    ready(&a).await;
    ready(&b).await;

    let hash = chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000);
    let body = json!({ "tx_hash": hash, "resource": "GET /a" });
    let key = [("Idempotency-Key", "order-c-7d1e5c0a9b")];
    let paid = a.verify(body.clone(), &key).await;
    assert_eq!(paid.status, 200, "{:?}", paid.body);
    // Past the publication's hold: only the record can answer now.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = chain.calls(RECEIPT);
    let v = b.verify_hash(&hash).await;
    assert_eq!((v.status, v.code()), (402, "REPLAYED"), "{:?}", v.body);
    assert_eq!(chain.calls(RECEIPT) - before, 0, "no receipt lookup at the node for B");
    // The record went into B's consumed cache: answered from memory now.
    let hits = b.metric("settlegate_replay_cache_hits_total").await;
    let again = b.verify_hash(&hash).await;
    assert_eq!((again.status, again.code()), (402, "REPLAYED"));
    assert_eq!(b.metric("settlegate_replay_cache_hits_total").await, hits + 1);

    // A retry on a third instance: its 200 from the record, no lookup.
    let c = Served::start(&env);
    ready(&c).await;
    let before = chain.calls(RECEIPT);
    let retry = c.verify(body.clone(), &key).await;
    assert_eq!(
        (retry.status, retry.body["idempotent_replay"].as_bool()),
        (200, Some(true)),
        "{:?}",
        retry.body
    );
    assert_eq!(retry.body["block_number"], paid.body["block_number"]);
    assert_eq!(chain.calls(RECEIPT) - before, 0, "no receipt lookup at the node for C");
}

/// With `coalescer.share_across_instances = false` a fresh payment costs
/// only its consume at Redis: no claim, no publication, no lookup key. It
/// still settles once across instances: the other instance asks the node
/// itself and is refused by the consume's answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_sharing_a_fresh_payment_costs_only_its_consume_at_redis() {
    let chain = Chain::start();
    let redis = OwnRedis::start_on(free_port());
    let w = Workdir::new();
    let mut env = chain_env(&w.genome(&Genome::single().signed()), &chain.url);
    env.insert("SETTLEGATE_REDIS__URL".into(), redis.url());
    env.insert("SETTLEGATE_COALESCER__SHARE_ACROSS_INSTANCES".into(), "false".into());
    let (a, b) = (Served::start(&env), Served::start(&env));
    ready(&a).await;
    ready(&b).await;
    // The first consume loads its script and measures the clock offset.
    let warm = chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000);
    assert_eq!(a.verify_hash(&warm).await.status, 200);

    let hash = chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000);
    let before = redis.commands();
    let paid = a.verify_hash(&hash).await;
    assert_eq!(paid.status, 200, "{:?}", paid.body);
    let after = redis.commands();
    // Commands a script runs count too: the consume's is TIME, GET, SET
    // (TIME also measures the clock offset when a sample was slow).
    let spent: HashMap<String, u64> = after
        .iter()
        .map(|(c, n)| (c.clone(), n - before.get(c).copied().unwrap_or(0)))
        .filter(|(c, n)| *n > 0 && c != "time")
        .collect();
    let consume = HashMap::from([("evalsha".to_owned(), 1), ("get".to_owned(), 1), ("set".to_owned(), 1)]);
    assert_eq!(spent, consume, "the consume's commands only");
    let prefix = &env["SETTLEGATE_REDIS__KEY_PREFIX"];
    let scan = std::process::Command::new("redis-cli")
        .args([
            "-p",
            &redis.port.to_string(),
            "--scan",
            "--pattern",
            &format!("{prefix}lookup:*"),
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&scan.stdout).trim(), "", "no lookup keys");

    let node = chain.calls(RECEIPT);
    let v = b.verify_hash(&hash).await;
    assert_eq!((v.status, v.code()), (402, "REPLAYED"), "{:?}", v.body);
    assert_eq!(chain.calls(RECEIPT) - node, 1, "B asked the node itself");
}
