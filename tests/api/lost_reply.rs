//! A consume whose reply is lost is resolved, not guessed: with the store
//! connection cut between the consume's write and its reply (a fault
//! injector in front of the real Redis), the request that wrote the record
//! gets its 200 and the payment is consumed once; with the consume lost
//! before Redis saw it, the request is a 503 and nothing was consumed.
//! Effects are counted where they happen: in Redis, read directly.

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::chain::*;
use crate::helpers::*;
use crate::redis_fault::{Fault, RedisFaultInjector};

/// A service whose replay store is the shared Redis behind `proxy`, with a
/// first payment settled through it: the connection, the server's clock
/// offset and the consume's script are known, so the next consume is one
/// command on an open connection.
async fn served_through(chain: &Chain, w: &Workdir, proxy: &RedisFaultInjector) -> (Served, HashMap<String, String>) {
    let mut env = chain_env(&w.genome(&Genome::single().signed()), &chain.url);
    env.insert("SETTLEGATE_REDIS__URL".into(), proxy.url.clone());
    let app = Served::start(&env);
    let warm = chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000);
    let v = app.verify_hash(&warm).await;
    assert_eq!(
        v.status, 200,
        "a payment settles through the pass-through: {:?}",
        v.body
    );
    (app, env)
}

/// The replay record of `hash` as Redis holds it, read without the
/// injector (`None`: no record).
fn record_in_redis(proxy: &RedisFaultInjector, env: &HashMap<String, String>, hash: &str) -> Option<Value> {
    let key = format!("{}replay:{}", env["SETTLEGATE_REDIS__KEY_PREFIX"], hash.to_lowercase());
    let out = Command::new("redis-cli")
        .args(["--no-auth-warning", "-u", &proxy.upstream_url, "GET", &key])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "redis-cli: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let raw = String::from_utf8(out.stdout).unwrap();
    let raw = raw.trim_end_matches('\n');
    if raw.is_empty() {
        return None;
    }
    // A record still pending its replicas is `P<until>|<record>`.
    let json = match raw.strip_prefix('P') {
        Some(rest) => rest.split_once('|').unwrap().1,
        None => raw,
    };
    Some(serde_json::from_str(json).unwrap_or_else(|e| panic!("{key}: {e}: {raw}")))
}

/// Presents `hash` until the answer is not a 503 (the store connection
/// being made again), for at most five seconds.
async fn present_until_answered(app: &Served, hash: &str) -> Verified {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let v = app.verify_hash(hash).await;
        if v.status != 503 || Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn lost_reply_after_the_record_landed_is_the_one_200() {
    let chain = Chain::start();
    let proxy = RedisFaultInjector::start(&redis_url());
    let w = Workdir::new();
    let (app, env) = served_through(&chain, &w, &proxy).await;
    let hash = chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000);

    proxy.arm(Fault::DropConsumeReply, &hash);
    let started = Instant::now();
    let first = app.verify_hash(&hash).await;
    let took = started.elapsed();
    assert!(
        !proxy.armed(),
        "the consume went through the injector: {:?}",
        first.body
    );
    assert_eq!(
        proxy.wait_fired(1),
        1,
        "Redis answered the consume and the answer was dropped"
    );

    // The write happened: Redis holds this payment's record.
    let record = record_in_redis(&proxy, &env, &hash).expect("the consume's record is in Redis");
    assert_eq!(record["settlement"]["tx_hash"], hash.to_lowercase(), "{record}");
    assert!(took < Duration::from_secs(10), "answered within its deadline: {took:?}");
    assert_eq!(
        (first.status, first.code()),
        (200, ""),
        "the record landed, so the request that wrote it is the payment's 200: {:?}",
        first.body
    );
    assert_eq!(first.body["tx_hash"], record["settlement"]["tx_hash"]);
    assert_eq!(first.body["idempotent_replay"], false);

    // Consumed once: the same payment again, without a key, is a replay.
    let again = present_until_answered(&app, &hash).await;
    assert_eq!((again.status, again.code()), (402, "REPLAYED"), "{:?}", again.body);
    assert_eq!(
        record_in_redis(&proxy, &env, &hash),
        Some(record),
        "the record is the one the lost reply wrote"
    );
    assert_eq!(proxy.fired(), 1);
}

#[tokio::test]
async fn lost_reply_before_redis_saw_the_consume_is_a_503_that_consumed_nothing() {
    let chain = Chain::start();
    let proxy = RedisFaultInjector::start(&redis_url());
    let w = Workdir::new();
    let (app, env) = served_through(&chain, &w, &proxy).await;
    let hash = chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000);

    proxy.arm(Fault::SwallowConsume, &hash);
    let started = Instant::now();
    let lost = app.verify_hash(&hash).await;
    let took = started.elapsed();
    assert!(!proxy.armed(), "the consume went through the injector: {:?}", lost.body);
    assert_eq!(proxy.wait_fired(1), 1, "the consume was swallowed");

    assert_eq!(
        record_in_redis(&proxy, &env, &hash),
        None,
        "Redis never saw the consume: no record"
    );
    assert!(took < Duration::from_secs(10), "answered within its deadline: {took:?}");
    assert_eq!(
        (lost.status, lost.code()),
        (503, "REPLAY_STORE_UNAVAILABLE"),
        "no record landed, so the request cannot have its 200: {:?}",
        lost.body
    );

    // Nothing was consumed by the 503: the payment settles now, once.
    let settled = present_until_answered(&app, &hash).await;
    assert_eq!(settled.status, 200, "{:?}", settled.body);
    assert_eq!(settled.body["idempotent_replay"], false);
    let record = record_in_redis(&proxy, &env, &hash).expect("the 200 wrote its record");
    assert_eq!(record["settlement"]["tx_hash"], hash.to_lowercase(), "{record}");
    let again = app.verify_hash(&hash).await;
    assert_eq!((again.status, again.code()), (402, "REPLAYED"), "{:?}", again.body);
    assert_eq!(proxy.fired(), 1);
}
