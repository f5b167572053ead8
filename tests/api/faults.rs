//! Infrastructure faults and storms, with real components stopped and
//! restarted: a 503 never consumes a payment, a storm costs one lookup, and
//! a consumed payment stays consumed across restarts.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::chain::*;
use crate::helpers::*;

/// Retries `verify_hash` until it is not a 503 (a recovering component).
async fn verify_until_answered(app: &Served, hash: &str) -> Verified {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = app.verify_hash(hash).await;
        if v.status != 503 || Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn the_rpc_node_down_is_a_503_and_the_payment_survives_its_restart() {
    let w = Workdir::new();
    let mut chain = Chain::start_on(free_port(), Some(w.path("chain-state.json")), &[]);
    let app = Served::start(&chain_env(&w.genome(&Genome::single().signed()), &chain.url));
    let hash = chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000);

    chain.stop();
    let down = app.verify_hash(&hash).await;
    assert_eq!((down.status, down.code()), (503, "RPC_UNAVAILABLE"), "{:?}", down.body);
    assert_eq!(down.header("retry-after"), "2");
    assert_eq!(down.header("content-type"), "application/problem+json");
    assert_eq!(app.get_json("/readyz").await.0, 503);

    chain.restart();
    let back = verify_until_answered(&app, &hash).await;
    assert_eq!(back.status, 200, "nothing was burnt by the 503: {:?}", back.body);
}

#[tokio::test]
async fn a_dead_first_endpoint_fails_over_to_the_second() {
    let chain = Chain::start();
    let w = Workdir::new();
    let dead = format!("http://127.0.0.1:{}", free_port());
    let app = Served::start(&chain_env(
        &w.genome(&Genome::single().signed()),
        &format!("{dead},{}", chain.url),
    ));
    let hash = chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000);
    let v = app.verify_hash(&hash).await;
    assert_eq!(v.status, 200, "{:?}", v.body);
    let (_, ready) = app.get_json("/readyz").await;
    let states: Vec<&str> = ready["components"]["rpc"]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["state"].as_str().unwrap())
        .collect();
    assert!(states.contains(&"healthy"), "{ready}");
}

#[tokio::test]
async fn redis_down_is_a_503_never_a_200_and_recovery_needs_no_restart() {
    let chain = Chain::start();
    let mut redis = OwnRedis::start_on(free_port());
    let w = Workdir::new();
    let mut env = chain_env(&w.genome(&Genome::single().signed()), &chain.url);
    env.insert(
        "SETTLEGATE_REDIS__URL".into(),
        format!("redis://127.0.0.1:{}", redis.port),
    );
    let app = Served::start(&env);
    let hash = chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000);

    redis.stop();
    for _ in 0..3 {
        let v = app.verify_hash(&hash).await;
        assert_eq!((v.status, v.code()), (503, "REPLAY_STORE_UNAVAILABLE"), "{:?}", v.body);
    }
    assert_eq!(
        app.get_json("/readyz").await.1["components"]["replay_store"]["state"],
        "unavailable"
    );

    let port = redis.port;
    drop(redis);
    let _redis = OwnRedis::start_on(port);
    let v = verify_until_answered(&app, &hash).await;
    assert_eq!(v.status, 200, "{:?}", v.body);
    assert_eq!(app.verify_hash(&hash).await.code(), "REPLAYED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_checks_cost_one_receipt_lookup_and_settle_once() {
    let chain = Chain::start();
    let w = Workdir::new();
    let app = Arc::new(Served::start(&chain_env(
        &w.genome(&Genome::single().signed()),
        &chain.url,
    )));
    let receipt_lookups =
        "settlegate_rpc_requests_total{endpoint=\"rpc0\",method=\"eth_getTransactionReceipt\"".to_owned();
    assert_eq!(app.metric(&receipt_lookups).await, 0);

    let hash = chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000);
    let at_node = chain.calls("eth_getTransactionReceipt");
    let answers = storm(&app, json!({ "credential": format!("Tempo {hash}") }), vec![], 200).await;
    let ok = answers.iter().filter(|v| v.status == 200).count();
    let replayed = answers
        .iter()
        .filter(|v| v.status == 402 && v.code() == "REPLAYED")
        .count();
    assert_eq!(
        (ok, replayed),
        (1, 199),
        "{:?}",
        answers.iter().find(|v| v.status != 200 && v.code() != "REPLAYED")
    );
    assert_eq!(
        chain.calls("eth_getTransactionReceipt") - at_node,
        1,
        "one receipt lookup reached the node; ours: {} lookups, {} held, {} joined",
        app.metric("settlegate_chain_lookups_total").await,
        app.metric("settlegate_coalescer_held_answers_total").await,
        app.metric("settlegate_coalesced_checks_total").await,
    );
    assert_eq!(app.metric(&receipt_lookups).await, 1);

    // With one shared Idempotency-Key and resource: exactly one answer
    // consumed the payment, exactly idempotency.max_retries (3) more get
    // the original settlement again, counted atomically; the rest REPLAYED.
    let hash = chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000);
    let at_node = chain.calls("eth_getTransactionReceipt");
    let body = json!({ "tx_hash": hash, "resource": "GET /reports/7" });
    let key = vec![("Idempotency-Key".to_string(), "order-7-attempt-5c0a9b".to_string())];
    let answers = storm(&app, body.clone(), key, 200).await;
    assert!(
        answers.iter().all(|v| v.status == 200 || v.code() == "REPLAYED"),
        "{:?}",
        answers.iter().find(|v| v.status != 200 && v.code() != "REPLAYED")
    );
    let consumed = answers.iter().filter(|v| v.body["idempotent_replay"] == false).count();
    assert_eq!(consumed, 1);
    let retried = answers.iter().filter(|v| v.body["idempotent_replay"] == true).count();
    assert_eq!(retried, 3, "the retry limit holds under a storm");
    let first = answers.iter().find(|v| v.body["idempotent_replay"] == false).unwrap();
    for v in answers.iter().filter(|v| v.status == 200) {
        let mut b = v.body.clone();
        b["idempotent_replay"] = json!(false);
        assert_eq!(b, first.body, "every retry gets the original settlement");
    }
    assert_eq!(chain.calls("eth_getTransactionReceipt") - at_node, 1);
    assert_eq!(app.metric(&receipt_lookups).await, 2);

    // a different key, or the same key for another resource, is a replay
    let other = app
        .verify(body.clone(), &[("Idempotency-Key", "someone-else-5c0a9b")])
        .await;
    assert_eq!((other.status, other.code()), (402, "REPLAYED"));
    let elsewhere = app
        .verify(
            json!({ "tx_hash": hash, "resource": "GET /reports/8" }),
            &[("Idempotency-Key", "order-7-attempt-5c0a9b")],
        )
        .await;
    assert_eq!(elsewhere.code(), "REPLAYED");
    let nokey = app.verify(body, &[]).await;
    assert_eq!(nokey.code(), "REPLAYED");
}

#[tokio::test]
async fn the_embedded_store_remembers_a_consumed_payment_across_a_kill() {
    let chain = Chain::start();
    let w = Workdir::new();
    let genome = w.genome(&Genome::single().signed());
    // No Redis URL: the embedded store beside the genome.
    let mut env = serve_env(&genome);
    env.insert("SETTLEGATE_RPC__URLS".into(), chain.url.clone());
    let hash = chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000);
    {
        let app = Served::start(&env);
        assert_eq!(
            app.get_json("/readyz").await.1["components"]["replay_store"]["backend"],
            "local"
        );
        assert_eq!(app.verify_hash(&hash).await.status, 200);
    } // SIGKILL: no graceful shutdown
    let app = Served::start(&env);
    let v = app.verify_hash(&hash).await;
    assert_eq!((v.status, v.code()), (402, "REPLAYED"), "{:?}", v.body);
}

#[tokio::test]
/// A Redis that answers nothing for 3 s: the check is a 503 within the
/// store timeout, nothing is consumed, and the payment settles once Redis
/// answers again. (That a consume Redis runs after its deadline writes
/// nothing is `store_redis::a_consume_past_its_deadline_writes_nothing`:
/// here the timed-out connection is dropped and Redis discards what it held.)
async fn a_hung_redis_is_a_503_within_the_store_timeout() {
    let chain = Chain::start();
    let redis = OwnRedis::start_on(free_port());
    let w = Workdir::new();
    let mut env = chain_env(&w.genome(&Genome::single().signed()), &chain.url);
    env.insert(
        "SETTLEGATE_REDIS__URL".into(),
        format!("redis://127.0.0.1:{}", redis.port),
    );
    env.insert("SETTLEGATE_REDIS__TIMEOUT_MS".into(), "300".into());
    let app = Served::start(&env);
    // A first payment settles: the connection and the server's clock offset
    // are known, so the consume below reaches Redis and waits in its queue.
    let warm = chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000);
    assert_eq!(app.verify_hash(&warm).await.status, 200);
    let hash = chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000);

    // CLIENT PAUSE: the server stays connected but answers no command for 3 s.
    let paused = Command::new("redis-cli")
        .args(["-p", &redis.port.to_string(), "CLIENT", "PAUSE", "3000", "ALL"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&paused.stdout).contains("OK"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let v = app.verify_hash(&hash).await;
    assert_eq!((v.status, v.code()), (503, "REPLAY_STORE_UNAVAILABLE"), "{:?}", v.body);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "bounded by the store timeout"
    );
    assert_eq!(verify_until_answered(&app, &hash).await.status, 200);
}

#[tokio::test]
async fn a_hung_or_garbled_rpc_endpoint_is_a_503_and_the_next_endpoint_still_serves() {
    let chain = Chain::start();
    let hung = FaultInjector::start(None).url;
    let garbage = FaultInjector::start(Some(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 9\r\n\r\n{\"res\":[}",
    ))
    .url;
    let w = Workdir::new();
    let genome = w.genome(&Genome::single().signed());
    let hash = chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000);

    for bad in [&hung, &garbage] {
        let mut env = chain_env(&genome, bad);
        env.insert("SETTLEGATE_RPC__TIMEOUT_MS".into(), "300".into());
        let app = Served::start(&env);
        let started = Instant::now();
        let v = app.verify_hash(&hash).await;
        assert_eq!((v.status, v.code()), (503, "RPC_UNAVAILABLE"), "{bad}: {:?}", v.body);
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{bad}: bounded by the call timeout"
        );
    }

    // both bad endpoints first, the real node last: one retry reaches a
    // second endpoint, and the broken ones lose their place after failing
    let mut env = chain_env(&genome, &format!("{hung},{garbage},{}", chain.url));
    env.insert("SETTLEGATE_RPC__TIMEOUT_MS".into(), "300".into());
    let app = Served::start(&env);
    let v = verify_until_answered(&app, &hash).await;
    let v = if v.status == 503 {
        app.verify_hash(&hash).await
    } else {
        v
    };
    assert_eq!(v.status, 200, "{:?}", v.body);
}

/// Issue 8: SIGTERM under load. Twenty checks are waiting on a node that
/// never answers, each holding its lookup claim in Redis, when the process
/// gets SIGTERM. Every one of them is still answered (503 once the RPC
/// times out, nothing consumed), the process exits 0, no claim is left in
/// Redis, and a last metrics push carries their count to the collector
/// (its interval, a minute, never came round).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_the_checks_in_flight_leaves_no_claim_and_flushes_metrics() {
    let hung = FaultInjector::start(None);
    let redis = OwnRedis::start_on(free_port());
    let collector = crate::collector::Collector::start_with_metrics();
    let w = Workdir::new();
    let mut env = chain_env(&w.genome(&Genome::single().signed()), &hung.url);
    env.insert("SETTLEGATE_REDIS__URL".into(), redis.url());
    env.insert("SETTLEGATE_RPC__TIMEOUT_MS".into(), "1500".into());
    env.insert("SETTLEGATE_RPC__PROBE_INTERVAL_MS".into(), "0".into());
    env.insert(
        "SETTLEGATE_OTEL__ENDPOINT".into(),
        format!("http://127.0.0.1:{}", collector.http_port),
    );
    env.insert("OTEL_METRIC_EXPORT_INTERVAL".into(), "60000".into());
    let mut app = Served::start(&env);
    // the start-up probe hangs until it times out
    tokio::time::sleep(Duration::from_millis(1700)).await;
    let prefix = env["SETTLEGATE_REDIS__KEY_PREFIX"].clone();
    let claims = || {
        let out = Command::new("redis-cli")
            .args([
                "-p",
                &redis.port.to_string(),
                "--scan",
                "--pattern",
                &format!("{prefix}lookup:*:claim"),
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).lines().count()
    };

    let client = reqwest::Client::new();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..20u8 {
        let url = app.url("/v1/verify");
        let client = client.clone();
        set.spawn(async move {
            let body = json!({ "tx_hash": format!("0x{}", format!("{:02x}", 0x90 + i).repeat(32)) });
            client.post(url).json(&body).send().await
        });
    }
    let deadline = Instant::now() + Duration::from_secs(1);
    while claims() < 20 {
        assert!(Instant::now() < deadline, "the checks hold their claims: {}", claims());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    send_signal(app.child.id() as i32, libc::SIGTERM);

    for answer in set.join_all().await {
        let r = answer.expect("a check in flight at SIGTERM is still answered");
        assert_eq!(r.status(), 503);
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["code"], "RPC_UNAVAILABLE");
    }
    let status = tokio::task::block_in_place(|| {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(s) = app.child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "still running after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    assert_eq!(status.code(), Some(0));
    assert_eq!(claims(), 0, "no lookup claim is left held");
    let stopped = app.wait_for_log(|l| l["message"] == "stopped");
    assert_eq!(stopped["drained"], true);
    let exported = crate::collector::last_metrics_export(&collector.output());
    let key = r#"settlegate_unavailable_total{code="RPC_UNAVAILABLE",cause="rpc_timeout"}"#;
    assert_eq!(exported.get(key).copied(), Some(20.0), "the last push: {exported:?}");
}

/// Issue 8: Redis killed with `kill -9` in the middle of a load of distinct
/// payments, then restarted on its append-only file (`appendonly yes`,
/// `appendfsync everysec`, as docker-compose.yml runs it). No payment gets
/// two 200s, every answer during the outage is a 503 (nothing consumed),
/// service is back within seconds, and every payment that got its 200 is
/// still recorded: in Redis itself, and for a fresh instance with a cold
/// cache, which answers REPLAYED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_load_and_restarted_on_its_aof_keeps_every_consumed_payment() {
    let chain = Chain::start();
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().display().to_string();
    let port = free_port();
    let aof = [
        "--dir",
        &dir,
        "--appendonly",
        "yes",
        "--appendfsync",
        "everysec",
        "--save",
        "",
    ];
    let mut redis = OwnRedis::start_with(port, &aof);
    let w = Workdir::new();
    let mut env = chain_env(&w.genome(&Genome::single().signed()), &chain.url);
    env.insert("SETTLEGATE_REDIS__URL".into(), redis.url());
    env.insert("SETTLEGATE_REDIS__TIMEOUT_MS".into(), "300".into());
    let app = Arc::new(Served::start(&env));
    let hashes: Vec<String> = (0..24)
        .map(|_| chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000))
        .collect();

    // Every payment is presented over and over by its own task, the first
    // presentations spread over 1.5 s, while Redis dies once and comes back:
    // some payments are first presented before the kill, some during the
    // outage, some after the restart.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut set = tokio::task::JoinSet::new();
    for (i, hash) in hashes.clone().into_iter().enumerate() {
        let (app, stop) = (app.clone(), stop.clone());
        set.spawn(async move {
            tokio::time::sleep(Duration::from_millis(60 * i as u64)).await;
            let mut seen = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let sent = Instant::now();
                let v = app.verify_hash(&hash).await;
                seen.push((sent, Instant::now(), v.status, v.code().to_owned()));
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            (hash, seen)
        });
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    redis.stop(); // SIGKILL
    let killed = Instant::now();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    drop(redis);
    // Redis answers again from some moment inside start_with (it polls for
    // the port): the outage ends when the restart begins.
    let restarting = Instant::now();
    let _redis = OwnRedis::start_with(port, &aof);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let results = set.join_all().await;

    let cli = |args: &[&str]| {
        let out = Command::new("redis-cli")
            .args(["-p", &port.to_string()])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let mut first_200_after_restart = None::<Duration>;
    let mut settled_before_kill = 0;
    for (hash, seen) in &results {
        let oks: Vec<_> = seen.iter().filter(|(_, _, s, _)| *s == 200).collect();
        assert_eq!(oks.len(), 1, "{hash}: exactly one 200, got {seen:?}");
        for (sent, at, status, code) in seen {
            // asked after Redis was dead and answered before it could be back
            let during = *sent > killed && *at < restarting;
            match (*status, code.as_str()) {
                (200, _) => {
                    assert!(!during, "{hash}: a 200 while Redis was down");
                    if *at < killed + Duration::from_millis(100) {
                        settled_before_kill += 1;
                    } else if *sent > restarting {
                        // Redis answers from some moment inside the restart:
                        // a retry may be served before start_with returns.
                        let since = at.duration_since(restarting);
                        first_200_after_restart = Some(first_200_after_restart.map_or(since, |d| d.min(since)));
                    }
                }
                (402, "REPLAYED") => {}
                (503, "REPLAY_STORE_UNAVAILABLE") => {}
                other => panic!("{hash}: unexpected answer {other:?}"),
            }
        }
        // The record survived the kill: in Redis itself...
        let key = format!("{}replay:{}", env["SETTLEGATE_REDIS__KEY_PREFIX"], hash.to_lowercase());
        assert!(
            cli(&["EXISTS", &key]) == "1",
            "{hash}: its replay record is gone after the kill"
        );
    }
    assert!(settled_before_kill > 0, "some payments settled before the kill");
    let back = first_200_after_restart.expect("some payments settled after the restart");
    assert!(
        back < Duration::from_secs(3),
        "service came back {back:?} after the restart"
    );
    // ...and for an instance that never saw these payments.
    let cold = Served::start(&env);
    for hash in &hashes {
        let v = cold.verify_hash(hash).await;
        assert_eq!((v.status, v.code()), (402, "REPLAYED"), "{hash}: {:?}", v.body);
    }
}

/// Issue 8: bounded concurrency per dependency, never an unbounded queue.
/// With four lookups allowed in flight and a node that never answers,
/// twelve checks of distinct hashes: four wait for the RPC timeout, eight
/// are answered 503 at once (`rpc_saturated`), and the node gets four
/// requests. With two store operations allowed and a Redis that answers
/// nothing, the same holds for the store (`store_saturated`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saturated_dependencies_answer_503_at_once_instead_of_queueing() {
    let hung = FaultInjector::start(None);
    let w = Workdir::new();
    let mut env = chain_env(&w.genome(&Genome::single().signed()), &hung.url);
    env.insert("SETTLEGATE_RPC__TIMEOUT_MS".into(), "1500".into());
    env.insert("SETTLEGATE_RPC__PROBE_INTERVAL_MS".into(), "0".into());
    env.insert("SETTLEGATE_RPC__MAX_LOOKUPS_IN_FLIGHT".into(), "4".into());
    let app = std::sync::Arc::new(Served::start(&env));
    tokio::time::sleep(Duration::from_millis(1700)).await; // the start-up probe times out
    let before = hung.requests();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..12u8 {
        let app = app.clone();
        set.spawn(async move {
            let started = Instant::now();
            let v = app
                .verify_hash(&format!("0x{}", format!("{:02x}", 0xa0 + i).repeat(32)))
                .await;
            (v, started.elapsed())
        });
    }
    let answers = set.join_all().await;
    let cause = |v: &Verified| v.code() == "RPC_UNAVAILABLE";
    assert!(
        answers.iter().all(|(v, _)| v.status == 503 && cause(v)),
        "{:?}",
        answers.iter().map(|(v, _)| &v.body).collect::<Vec<_>>()
    );
    let quick = answers.iter().filter(|(_, t)| *t < Duration::from_millis(700)).count();
    assert_eq!(
        quick,
        8,
        "answered at once: {:?}",
        answers.iter().map(|(_, t)| t).collect::<Vec<_>>()
    );
    assert_eq!(hung.requests() - before, 4, "requests that reached the node");
    assert_eq!(
        app.metric("settlegate_unavailable_total{code=\"RPC_UNAVAILABLE\",cause=\"rpc_saturated\"}")
            .await,
        8
    );

    // The store: paused Redis, two operations allowed.
    let chain = Chain::start();
    let redis = OwnRedis::start_on(free_port());
    let w = Workdir::new();
    let mut env = chain_env(&w.genome(&Genome::single().signed()), &chain.url);
    env.insert("SETTLEGATE_REDIS__URL".into(), redis.url());
    env.insert("SETTLEGATE_REDIS__TIMEOUT_MS".into(), "1000".into());
    env.insert("SETTLEGATE_REDIS__MAX_OPS_IN_FLIGHT".into(), "2".into());
    let app = std::sync::Arc::new(Served::start(&env));
    let hashes: Vec<String> = (0..6)
        .map(|_| chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000))
        .collect();
    let paused = Command::new("redis-cli")
        .args(["-p", &redis.port.to_string(), "CLIENT", "PAUSE", "3000", "ALL"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&paused.stdout).contains("OK"));
    let mut set = tokio::task::JoinSet::new();
    for hash in hashes.clone() {
        let app = app.clone();
        set.spawn(async move { app.verify_hash(&hash).await });
    }
    let answers = set.join_all().await;
    assert!(
        answers
            .iter()
            .all(|v| (v.status, v.code()) == (503, "REPLAY_STORE_UNAVAILABLE")),
        "{:?}",
        answers.iter().map(|v| &v.body).collect::<Vec<_>>()
    );
    let saturated = app
        .metric("settlegate_unavailable_total{code=\"REPLAY_STORE_UNAVAILABLE\",cause=\"store_saturated\"}")
        .await;
    assert!(saturated >= 4, "{saturated}");
    // Nothing was consumed: each settles once the store answers again.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    for hash in &hashes {
        assert_eq!(verify_until_answered(&app, hash).await.status, 200);
    }
}

/// What the kernel says one process holds: resident memory, open file
/// descriptors, CPU time used (user + system).
#[derive(Debug, Clone, Copy)]
struct Usage {
    rss_kib: u64,
    fds: usize,
    cpu: Duration,
}

fn usage(pid: u32) -> Usage {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count();
    // /proc/<pid>/stat: fields 14 and 15 (utime, stime) after the ")"
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Usage {
        rss_kib,
        fds,
        cpu: Duration::from_millis(ticks * 1000 / hz),
    }
}

/// Established TCP connections on this machine to 127.0.0.1:`port`, from
/// the connecting side (`/proc/net/tcp`: the remote address is `port`).
fn connections_to(port: u16) -> usize {
    let remote = format!("0100007F:{port:04X}");
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap()
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(2) == Some(&remote.as_str()) && f.get(3) == Some(&"01")
        })
        .count()
}

/// Issue 8: while the RPC endpoint hangs (accepts, never answers), the
/// service's own resources stay bounded, as the kernel counts them. First
/// twice `rpc.max_lookups_in_flight` checks: the allowed number hang on the
/// node (the others are 503s at once), holding that many
/// connections to it and no more, and no CPU used while they wait (nothing
/// spins or retries in a loop); each ends in a 503 at the timeout, and the
/// endpoint's circuit opens. Then eight waves of 200 concurrent checks of
/// distinct hashes over about seven seconds: every one a 503 within the
/// timeout, the node reached only by the circuit's half-open probes, open
/// descriptors and memory within a bound and back down after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_rpc_endpoint_keeps_cpu_memory_and_connections_bounded() {
    const IN_FLIGHT: usize = 32;
    const WAVES: usize = 8;
    const WAVE: usize = 200;
    let hung = FaultInjector::start(None);
    let node_port: u16 = hung.url.rsplit(':').next().unwrap().parse().unwrap();
    let w = Workdir::new();
    let mut env = chain_env(&w.genome(&Genome::single().signed()), &hung.url);
    env.insert("SETTLEGATE_RPC__TIMEOUT_MS".into(), "1000".into());
    env.insert("SETTLEGATE_RPC__LOOKUP_TIMEOUT_MS".into(), "1000".into());
    env.insert("SETTLEGATE_RPC__PROBE_INTERVAL_MS".into(), "0".into());
    env.insert("SETTLEGATE_RPC__MAX_LOOKUPS_IN_FLIGHT".into(), IN_FLIGHT.to_string());
    let app = Served::start(&env);
    let pid = app.child.id();
    tokio::time::sleep(Duration::from_millis(1200)).await; // the start-up probe times out
    let url = app.url("/v1/verify");
    let base = usage(pid);

    // `count` checks of new hashes at once, on a client of their own
    // (dropped after, so its connections close).
    let wave = |n: usize, count: usize| {
        let url = url.clone();
        async move {
            let client = reqwest::Client::new();
            let mut set = tokio::task::JoinSet::new();
            for i in 0..count {
                let (client, url) = (client.clone(), url.clone());
                set.spawn(async move {
                    let hash = format!("0x{n:016x}{i:048x}");
                    let started = Instant::now();
                    let r = client
                        .post(&url)
                        .json(&json!({ "credential": format!("Tempo {hash}") }))
                        .send()
                        .await
                        .unwrap();
                    (Verified::read(r).await, started.elapsed())
                });
            }
            set.join_all().await
        }
    };
    let all_503_in_time = |answers: &[(Verified, Duration)]| {
        for (v, t) in answers {
            assert_eq!((v.status, v.code()), (503, "RPC_UNAVAILABLE"), "{:?}", v.body);
            assert!(*t < Duration::from_millis(2500), "answered within the timeout: {t:?}");
        }
    };

    // Twice as many checks as lookups allowed: half hang, half are
    // answered at once; then hung lookups and nothing else.
    let pending = tokio::spawn(wave(0, 2 * IN_FLIGHT));
    tokio::time::sleep(Duration::from_millis(250)).await;
    let (quiet_from, hanging) = (usage(pid).cpu, connections_to(node_port));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let quiet = usage(pid).cpu - quiet_from;
    all_503_in_time(&pending.await.unwrap());
    assert!(
        (IN_FLIGHT / 2..=IN_FLIGHT + 2).contains(&hanging),
        "connections held open to the hung node: {hanging}"
    );
    assert!(
        quiet <= Duration::from_millis(60),
        "CPU while waiting on the hung node: {quiet:?}"
    );

    // The storm, sampled every 50 ms.
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        tokio::task::spawn_blocking(move || {
            let (mut peak, mut conns) = (usage(pid), 0);
            while sampling.load(std::sync::atomic::Ordering::SeqCst) {
                let u = usage(pid);
                peak.rss_kib = peak.rss_kib.max(u.rss_kib);
                peak.fds = peak.fds.max(u.fds);
                conns = conns.max(connections_to(node_port));
                std::thread::sleep(Duration::from_millis(50));
            }
            (peak, conns)
        })
    };
    let before = hung.requests();
    let mut after_first = None;
    for n in 1..=WAVES {
        let answers = wave(n, WAVE).await;
        assert_eq!(answers.len(), WAVE);
        all_503_in_time(&answers);
        if n == 1 {
            after_first = Some(usage(pid));
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    sampling.store(false, std::sync::atomic::Ordering::SeqCst);
    let (peak, conns) = sampler.await.unwrap();
    let after_first = after_first.unwrap();
    let reached = hung.requests() - before;
    tokio::time::sleep(Duration::from_millis(1500)).await; // a last probe times out
    let end = usage(pid);
    eprintln!(
        "base {base:?} after wave 1 {after_first:?} peak {peak:?} end {end:?}; {hanging} then at most \
         {conns} connections to the node; {reached} storm requests reached it; {quiet:?} CPU while hung"
    );
    assert!(conns <= IN_FLIGHT + 2, "connections to the hung node: {conns}");
    assert!(
        reached <= 4,
        "the open circuit keeps the storm off the node: {reached} requests"
    );
    assert!(
        peak.fds <= base.fds + WAVE + IN_FLIGHT + 32,
        "descriptors: {} at the peak, {} before",
        peak.fds,
        base.fds
    );
    assert!(
        end.fds <= base.fds + 8,
        "descriptors come back: {} after, {} before",
        end.fds,
        base.fds
    );
    assert!(
        peak.rss_kib <= base.rss_kib + 64 * 1024,
        "memory: {} KiB at the peak, {} before",
        peak.rss_kib,
        base.rss_kib
    );
    assert!(
        end.rss_kib <= after_first.rss_kib + 16 * 1024,
        "memory does not grow with the waves: {} KiB after wave 1, {} at the end",
        after_first.rss_kib,
        end.rss_kib
    );
}
