//! Sessions under the conditions they exist for: a payer who walks away
//! (`requestClose`, then `withdraw` after the grace period), a payee's
//! client that closes (a `close` credential), a Redis killed with SIGKILL
//! mid-session and restarted on its append-only file, and a voucher storm
//! across three instances on a Redis Cluster. Counted on chain (balances,
//! `getChannel`), at the service (each answer's `spent`, the next
//! voucher's `requiredCumulative`) and in Redis itself.

use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::chain::*;
use crate::cluster::RedisCluster;
use crate::escrow_chain::*;
use crate::helpers::*;
use crate::session::{PRICE, settler_env, wait_settled};
use crate::session_vouchers::{Channel, channel, env_on_redis, present, session_offer, storm, voucher_payload};

const FINALIZED: &str = "https://paymentauth.org/problems/session/channel-finalized";
const INSUFFICIENT: &str = "https://paymentauth.org/problems/session/insufficient-balance";

/// The payer's voucher for `cumulative` on `c`.
fn sign(c: &Channel, cumulative: u128) -> String {
    sign_voucher(PAYER_KEY, &c.escrow, 42431, &c.id, cumulative)
}

/// The payer's vouchers for 1..=n prices, signed on four threads.
fn sign_prices(c: &Channel, n: u128) -> Vec<String> {
    let ks: Vec<u128> = (1..=n).collect();
    std::thread::scope(|s| {
        let parts: Vec<_> = ks
            .chunks(n.div_ceil(4) as usize)
            .map(|part| s.spawn(move || part.iter().map(|&k| sign(c, PRICE * k)).collect::<Vec<_>>()))
            .collect();
        parts.into_iter().flat_map(|p| p.join().unwrap()).collect()
    })
}

/// A service on the shared Redis with the settler on (scan every second)
/// and a schedule that never settles within a test: no amount threshold,
/// a day between settlements. Facts are trusted for one second.
fn settler_on(c: &Channel, w: &Workdir) -> HashMap<String, String> {
    let mut env = env_on_redis(c, w, &unique_prefix());
    env.extend(settler_env(w));
    env.insert("SETTLEGATE_SESSION__SETTLE_AMOUNT".into(), "0".into());
    env.insert("SETTLEGATE_SESSION__SETTLE_INTERVAL_SECONDS".into(), "86400".into());
    env.insert("SETTLEGATE_SESSION__FACTS_TTL_SECONDS".into(), "1".into());
    env
}

/// Longer than the facts ttl (1 s, compared in whole seconds): the next
/// decision re-reads the channel on chain.
async fn facts_expire() {
    tokio::time::sleep(Duration::from_millis(2_200)).await;
}

fn balance(c: &Channel, who: &str) -> u128 {
    token_balance(&c.chain, ALPHA_USD, who)
}

/// `redis-cli -u url args`, its output trimmed.
fn redis_cli(url: &str, args: &[&str]) -> String {
    let out = Command::new("redis-cli").args(["-u", url]).args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Asserts a 200 for `action` with this `spent` and accepted cumulative.
fn served(v: &Verified, action: &str, spent: u128, accepted: u128) {
    assert_eq!(v.status, 200, "{:?}", v.body);
    assert_eq!(v.body["action"], action, "{:?}", v.body);
    assert_eq!(v.body["spent"], spent.to_string(), "{:?}", v.body);
    assert_eq!(v.body["acceptedCumulative"], accepted.to_string(), "{:?}", v.body);
}

fn gone(v: &Verified, what: &str) {
    assert_eq!(
        (v.status, v.body["type"].as_str()),
        (410, Some(FINALIZED)),
        "{what}: {:?}",
        v.body
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_close_request_gets_everything_accepted_settled_and_the_payer_withdraws_the_rest() {
    let deposit = PRICE * 10;
    let c = tokio::task::block_in_place(|| channel(deposit));
    let w = Workdir::new();
    let app = Served::start(&settler_on(&c, &w));
    let offer = session_offer(&app).await;
    let (v3, v5, v6) = tokio::task::block_in_place(|| (sign(&c, PRICE * 3), sign(&c, PRICE * 5), sign(&c, PRICE * 6)));

    // Three requests on one voucher, a fourth on a higher one: 5 accepted,
    // 4 spent.
    for k in 1..=3 {
        let v = present(&app, &offer, voucher_payload(&c.id, PRICE * 3, &v3)).await;
        served(&v, "voucher", PRICE * k, PRICE * 3);
    }
    let v = present(&app, &offer, voucher_payload(&c.id, PRICE * 5, &v5)).await;
    served(&v, "voucher", PRICE * 4, PRICE * 5);

    // The schedule alone settles nothing within the test.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(
        tokio::task::block_in_place(|| channel_state(&c.chain, &c.escrow, &c.id)).settled,
        0
    );

    let payee_before = tokio::task::block_in_place(|| balance(&c, PAYEE));
    let requested = tokio::task::block_in_place(|| {
        request_close(&c.chain, &c.escrow, PAYER_KEY, &c.id);
        channel_state(&c.chain, &c.escrow, &c.id)
    });
    assert_ne!(requested.close_requested_at, 0, "{requested:?}");

    // The settler sees the request at its next scan and settles everything
    // accepted, spent or not: 5, before any grace period could end (the
    // chain's clock has not moved).
    let on_chain = tokio::task::block_in_place(|| wait_settled(&c.chain, &c.escrow, &c.id, PRICE * 5));
    assert_eq!(on_chain.settled, PRICE * 5, "{on_chain:?}");
    assert!(!on_chain.finalized);
    let payee_after = tokio::task::block_in_place(|| balance(&c, PAYEE));
    assert_eq!(payee_after - payee_before, PRICE * 5, "the payee got what was accepted");
    assert_eq!(
        app.metric("settlegate_channel_settlements_total{action=\"settle\",outcome=\"ok\"}")
            .await,
        1
    );

    // Once the facts are re-read, no voucher is served: neither a higher
    // one nor the one with a price left on it.
    facts_expire().await;
    gone(
        &present(&app, &offer, voucher_payload(&c.id, PRICE * 6, &v6)).await,
        "a higher voucher after the close request",
    );
    gone(
        &present(&app, &offer, voucher_payload(&c.id, PRICE * 5, &v5)).await,
        "the accepted voucher after the close request",
    );

    // The payer cannot withdraw before the grace period ends; after it,
    // `withdraw` pays back exactly what was not settled.
    let (early, refund, after) = tokio::task::block_in_place(|| {
        let early = withdraw(&c.chain, &c.escrow, PAYER_KEY, &c.id);
        increase_time(&c.chain, CLOSE_GRACE_SECONDS + 1);
        let before = balance(&c, PAYER);
        withdraw(&c.chain, &c.escrow, PAYER_KEY, &c.id).expect("withdraw after the grace period");
        let refund = balance(&c, PAYER) - before;
        (early, refund, channel_state(&c.chain, &c.escrow, &c.id))
    });
    assert!(early.is_err(), "withdraw within the grace period: {early:?}");
    assert_eq!(refund, deposit - PRICE * 5, "the payer gets deposit - settled");
    // A finalised channel keeps its flag only (the escrow clears the rest).
    assert!(after.finalized, "{after:?}");
    assert_eq!((after.deposit, after.settled), (0, 0), "{after:?}");

    facts_expire().await;
    gone(
        &present(&app, &offer, voucher_payload(&c.id, PRICE * 6, &v6)).await,
        "a voucher after the withdrawal",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_close_credential_closes_the_channel_on_chain_with_the_highest_voucher() {
    let deposit = PRICE * 10;
    let c = tokio::task::block_in_place(|| channel(deposit));
    let w = Workdir::new();
    let env = settler_on(&c, &w);
    let app = Served::start(&env);
    let offer = session_offer(&app).await;
    let (v2, v4, v5, v6) = tokio::task::block_in_place(|| {
        (
            sign(&c, PRICE * 2),
            sign(&c, PRICE * 4),
            sign(&c, PRICE * 5),
            sign(&c, PRICE * 6),
        )
    });
    for k in 1..=4 {
        let v = present(&app, &offer, voucher_payload(&c.id, PRICE * 4, &v4)).await;
        served(&v, "voucher", PRICE * k, PRICE * 4);
    }
    let prefix = &env["SETTLEGATE_REDIS__KEY_PREFIX"];
    let member = format!("42431:{}:{}", c.escrow, c.id);
    let watched = |set: &str| redis_cli(&redis_url(), &["SISMEMBER", &format!("{prefix}{set}"), &member]) == "1";
    assert!(watched("channels:index"), "the settler watches the channel");
    // The payee settled part of it on its own: 2 of the 4.
    tokio::task::block_in_place(|| {
        settle_with_cast(&c.chain, &c.escrow, PAYEE_KEY, &c.id, PRICE * 2, &v2).expect("settle 2");
    });
    let (payee_before, payer_before) = tokio::task::block_in_place(|| (balance(&c, PAYEE), balance(&c, PAYER)));

    // The close carries the final voucher (5): this request is served from
    // it, and the settler closes the channel with it.
    let close = json!({
        "action": "close",
        "channelId": c.id,
        "cumulativeAmount": (PRICE * 5).to_string(),
        "signature": v5,
    });
    let v = present(&app, &offer, close).await;
    served(&v, "close", PRICE * 5, PRICE * 5);

    let deadline = Instant::now() + Duration::from_secs(30);
    let closed = loop {
        let s = tokio::task::block_in_place(|| channel_state(&c.chain, &c.escrow, &c.id));
        if s.finalized || Instant::now() > deadline {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(closed.finalized, "the settler closed the channel: {closed:?}");
    let (payee_after, payer_after) = tokio::task::block_in_place(|| (balance(&c, PAYEE), balance(&c, PAYER)));
    assert_eq!(
        payee_after - payee_before,
        PRICE * 3,
        "the payee gets accepted - settled"
    );
    assert_eq!(
        payer_after - payer_before,
        deposit - PRICE * 5,
        "the payer gets the rest"
    );
    assert_eq!(
        app.metric("settlegate_channel_settlements_total{action=\"close\",outcome=\"ok\"}")
            .await,
        1
    );

    facts_expire().await;
    gone(
        &present(&app, &offer, voucher_payload(&c.id, PRICE * 6, &v6)).await,
        "a voucher after the close",
    );

    // Nothing is left for the settler: the channel leaves the close list
    // and, at a later scan, the index.
    assert!(!watched("channels:closing"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while watched("channels:index") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!watched("channels:index"), "a finalised channel leaves the index");
}

/// One answer the session client got: when it asked, when it was
/// answered, the voucher (in prices) it presented, and the answer.
struct Seen {
    sent: Instant,
    at: Instant,
    k: u128,
    status: u16,
    body: Value,
}

/// A Redis that writes every command to its append-only file before it
/// answers is killed with SIGKILL while one client pays request after
/// request from its channel, then restarted on that file. Every answer
/// during the outage is a 503; no accepted voucher is lost; no deduction
/// serves two requests: the 200s' `spent` climb one price at a time (a
/// deduction whose answer was lost to the kill may make one step of two
/// prices: charged, unanswered, never served twice), and the service's
/// state afterwards, read by the next voucher's required cumulative (by
/// this instance and by a cold one), is where the 200s left it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_session_and_restarted_on_its_aof_loses_no_voucher_and_serves_once() {
    const MAX: u128 = 90;
    let c = tokio::task::block_in_place(|| channel(PRICE * MAX));
    let sigs = Arc::new(tokio::task::block_in_place(|| sign_prices(&c, MAX)));
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().display().to_string();
    let port = free_port();
    let aof = [
        "--dir",
        &dir,
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--save",
        "",
    ];
    let mut redis = OwnRedis::start_with(port, &aof);
    let w = Workdir::new();
    let mut env = env_on_redis(&c, &w, &unique_prefix());
    env.insert("SETTLEGATE_REDIS__URL".into(), redis.url());
    env.insert("SETTLEGATE_REDIS__TIMEOUT_MS".into(), "300".into());
    let app = Arc::new(Served::start(&env));
    let offer = Arc::new(session_offer(&app).await);

    // The client: one request at a time, each with the voucher for one
    // price more than it was served; a 503 is retried with the same
    // voucher, an insufficient-balance moves to the cumulative it names.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = {
        let (app, offer, stop, sigs, id) = (app.clone(), offer.clone(), stop.clone(), sigs.clone(), c.id.clone());
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut k = 1u128;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) && k <= MAX {
                let sent = Instant::now();
                let v = present(&app, &offer, voucher_payload(&id, PRICE * k, &sigs[k as usize - 1])).await;
                let at = Instant::now();
                match v.status {
                    200 => k += 1,
                    402 if v.body["type"] == INSUFFICIENT => {
                        k = v.body["requiredCumulative"].as_str().unwrap().parse::<u128>().unwrap() / PRICE;
                    }
                    503 => {}
                    other => panic!("{other}: {:?}", v.body),
                }
                seen.push(Seen {
                    sent,
                    at,
                    k,
                    status: v.status,
                    body: v.body,
                });
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            seen
        })
    };
    tokio::time::sleep(Duration::from_millis(600)).await;
    redis.stop(); // SIGKILL
    let killed = Instant::now();
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    drop(redis);
    let restarting = Instant::now();
    let _redis = OwnRedis::start_with(port, &aof);
    let restarted = Instant::now();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = client.await.unwrap();
    assert!(
        seen.last().is_some_and(|s| s.k <= MAX),
        "the client ran out of vouchers"
    );

    // During the outage: 503s only, nothing served.
    let during: Vec<&Seen> = seen.iter().filter(|s| s.sent > killed && s.at < restarting).collect();
    assert!(!during.is_empty(), "requests were made during the outage");
    for s in &during {
        assert_eq!(
            (s.status, s.body["code"].as_str()),
            (503, Some("REPLAY_STORE_UNAVAILABLE")),
            "{:?}",
            s.body
        );
    }

    // Every 200 deducted one price more than the one before it; one step of
    // two prices at most (a write that landed while its answer was lost).
    let spent: Vec<u128> = seen
        .iter()
        .filter(|s| s.status == 200)
        .map(|s| s.body["spent"].as_str().unwrap().parse().unwrap())
        .collect();
    let before_kill = seen.iter().filter(|s| s.status == 200 && s.at < killed).count();
    let after_restart = seen.iter().filter(|s| s.status == 200 && s.sent > restarted).count();
    assert!(
        before_kill >= 3 && after_restart >= 3,
        "{before_kill} before, {after_restart} after"
    );
    assert_eq!(spent[0], PRICE);
    let mut lost = 0;
    for pair in spent.windows(2) {
        match pair[1] - pair[0] {
            d if d == PRICE => {}
            d if d == 2 * PRICE => lost += 1,
            _ => panic!("served twice or lost a deduction: {spent:?}"),
        }
    }
    assert!(lost <= 1, "{spent:?}");
    let n_served = spent.len() as u128;
    let last = *spent.last().unwrap();
    assert_eq!(
        last,
        PRICE * (n_served + lost),
        "spent counts the 200s (and a lost answer)"
    );
    let unavailable = seen.iter().filter(|s| s.status == 503).count();
    eprintln!("{n_served} served, {unavailable} answered 503, {lost} deduction(s) without an answer");

    // The state, read by the service: the last voucher served is used up,
    // the next request needs one price more, on this instance and on a
    // cold one that reads Redis.
    let k = last / PRICE;
    let voucher = voucher_payload(&c.id, last, &sigs[k as usize - 1]);
    let cold = Served::start(&env);
    for (who, app) in [("this instance", &*app), ("a cold instance", &cold)] {
        let v = present(app, &offer, voucher.clone()).await;
        assert_eq!(v.status, 402, "{who}: {:?}", v.body);
        assert_eq!(v.body["type"], INSUFFICIENT, "{who}");
        assert_eq!(
            v.body["requiredCumulative"],
            (last + PRICE).to_string(),
            "{who}: accepted and spent as the 200s left them"
        );
    }
    // In Redis itself: the channel's state and its place in the index.
    let prefix = &env["SETTLEGATE_REDIS__KEY_PREFIX"];
    let cli = |args: &[&str]| {
        let out = Command::new("redis-cli")
            .args(["-p", &port.to_string()])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let member = format!("42431:{}:{}", c.escrow, c.id);
    assert_eq!(cli(&["SISMEMBER", &format!("{prefix}channels:index"), &member]), "1");
    let state: Value = serde_json::from_str(&cli(&["GET", &format!("{prefix}channel:{member}")])).unwrap();
    // The stored state's short names: `a` accepted, `s` spent.
    let last = last.to_string();
    assert_eq!(
        (state["a"].as_str(), state["s"].as_str()),
        (Some(last.as_str()), Some(last.as_str())),
        "{state}"
    );
}

/// The storm of `session_vouchers.rs` on a three-primary Redis Cluster:
/// one voucher covering N requests, presented 10 x N times at once across
/// three instances, serves exactly N, each deducting once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voucher_storm_across_three_instances_on_a_redis_cluster_serves_n() {
    let c = tokio::task::block_in_place(|| channel(PRICE * 50));
    let cluster = tokio::task::block_in_place(|| RedisCluster::start(3, 0));
    let w = Workdir::new();
    let mut env = env_on_redis(&c, &w, &unique_prefix());
    env.insert("SETTLEGATE_REDIS__URL".into(), cluster.urls());
    env.insert("SETTLEGATE_REDIS__MODE".into(), "cluster".into());
    let apps = [Served::start(&env), Served::start(&env), Served::start(&env)];
    for app in &apps {
        let (_, r) = app.get_json("/readyz").await;
        assert_eq!(r["components"]["replay_store"]["backend"], "redis-cluster", "{r}");
    }
    let offer = session_offer(&apps[0]).await;
    let (first, sig, n) = {
        let n = 5u128;
        let (a, b) = tokio::task::block_in_place(|| (sign(&c, PRICE), sign(&c, PRICE * (n + 1))));
        (a, b, n)
    };
    let v = present(&apps[1], &offer, voucher_payload(&c.id, PRICE, &first)).await;
    served(&v, "voucher", PRICE, PRICE);

    let cumulative = PRICE * (n + 1);
    let tasks = storm(&apps, &offer, voucher_payload(&c.id, cumulative, &sig), 10 * n as usize).await;
    let mut spent = Vec::new();
    let mut refused = 0;
    for t in tasks {
        let v = t.await.unwrap();
        match v.status {
            200 => spent.push(v.body["spent"].as_str().unwrap().parse::<u128>().unwrap()),
            402 => {
                assert_eq!(v.body["type"], INSUFFICIENT, "{:?}", v.body);
                refused += 1;
            }
            other => panic!("{other}: {:?}", v.body),
        }
    }
    spent.sort();
    let want: Vec<u128> = (2..=n + 1).map(|k| PRICE * k).collect();
    assert_eq!(spent, want, "exactly N served, each deducting once");
    assert_eq!(refused, 9 * n as usize);
    let again = present(&apps[2], &offer, voucher_payload(&c.id, cumulative, &sig)).await;
    assert_eq!(again.status, 402);
    assert_eq!(again.body["requiredCumulative"], (cumulative + PRICE).to_string());

    // The channel's state is on the primary that owns its slot, and only
    // there.
    let key = format!(
        "{}channel:42431:{}:{}",
        env["SETTLEGATE_REDIS__KEY_PREFIX"], c.escrow, c.id
    );
    let (owner, _) = cluster.owner(cluster.slot(&key), &[]);
    for (port, _) in cluster.view(owner) {
        let has = cluster.cli(port, &["EXISTS", &key]) == "1";
        assert_eq!(has, port == owner, "node {port} holds the channel's state: {has}");
    }
}
