//! The ledger on real PostgreSQL, Redis, anvil and the binary: one row per
//! 200, whatever dies when. Rows are compared with what the clients were
//! told (by hash), counted in the database itself.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use crate::chain::*;
use crate::helpers::*;
use crate::lookup::{ready, tempo};
use crate::pg::{FreshDb, OwnPostgres};

/// `env` with the ledger on `db`, as instance `instance`.
pub(crate) fn with_ledger(env: &mut HashMap<String, String>, db: &str, instance: &str) {
    env.insert("SETTLEGATE_LEDGER__DATABASE_URL".into(), db.into());
    env.insert("SETTLEGATE_LEDGER__INSTANCE".into(), instance.into());
    env.insert("SETTLEGATE_LEDGER__POLL_INTERVAL_MS".into(), "50".into());
}

/// `settlegate ledger <args>` with `env`: (exit code, stdout, stderr).
pub(crate) fn ledger_cli(args: &[&str], env: &HashMap<String, String>) -> (i32, String, String) {
    let mut all = vec!["ledger"];
    all.extend_from_slice(args);
    let out = command(&all, env).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub(crate) fn migrate(env: &HashMap<String, String>) {
    let (code, out, err) = ledger_cli(&["migrate"], env);
    assert_eq!(code, 0, "ledger migrate: {out} {err}");
}

/// A dev chain, and the environment of one instance on it and the shared
/// Redis booking into `db` as `gate-a` (not migrated yet).
fn booked_env(db: &str) -> (Chain, Workdir, HashMap<String, String>) {
    let chain = Chain::start();
    let w = Workdir::new();
    let mut env = chain_env(&w.genome(&Genome::single().signed()), &chain.url);
    with_ledger(&mut env, db, "gate-a");
    (chain, w, env)
}

/// The hashes in the ledger.
pub(crate) fn booked(db: &FreshDb) -> BTreeSet<String> {
    db.query("SELECT tx_hash FROM payments").into_iter().collect()
}

/// Waits until the ledger holds `n` rows and stays there a moment.
pub(crate) async fn rows_settle_at(db: &FreshDb, n: usize, within: Duration) -> BTreeSet<String> {
    let deadline = Instant::now() + within;
    loop {
        let rows = booked(db);
        if rows.len() >= n {
            // Nothing more arrives (a duplicate or a stray would show here).
            tokio::time::sleep(Duration::from_millis(500)).await;
            return booked(db);
        }
        assert!(Instant::now() < deadline, "the ledger has {} rows of {n}", rows.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_200_is_one_row_saying_what_the_200_said() {
    let db = FreshDb::new();
    // A password the trust-auth server ignores, for the log-secrets check.
    let (chain, _w, env) = booked_env(&db.url().replace("postgres@", "postgres:ledger-pw-7f3a91c2@"));
    let (code, out, _) = ledger_cli(&["status"], &env);
    assert_eq!(code, 1, "not migrated yet: {out}");
    migrate(&env);
    let (code, out, _) = ledger_cli(&["status"], &env);
    assert_eq!(code, 0, "{out}");
    let app = Served::start(&env);
    ready(&app).await;

    let paid = chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000);
    let short = chain.transfer(ALPHA_USD, RECIPIENT, 999_999);
    let other = chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000);
    let settled = app.verify_hash(&paid).await;
    assert_eq!(settled.status, 200, "{:?}", settled.body);
    assert_eq!(app.verify_hash(&paid).await.code(), "REPLAYED");
    assert_eq!(app.verify_hash(&short).await.status, 402);
    assert_eq!(app.verify_hash(&other).await.status, 200);

    let rows = rows_settle_at(&db, 2, Duration::from_secs(10)).await;
    assert_eq!(rows, BTreeSet::from([paid.clone(), other]), "the 200s, and only they");
    let row = db.query(&format!(
        "SELECT kind, scheme, payer, recipient, asset, amount, block_number, route, instance, genome_id, \
         resource IS NULL, extract(epoch FROM block_time)::bigint FROM payments WHERE tx_hash = '{paid}'"
    ));
    let b = &settled.body;
    let expected = [
        "charge",
        "tempo",
        b["payer"].as_str().unwrap(),
        b["recipient"].as_str().unwrap(),
        b["asset"].as_str().unwrap(),
        b["amount"].as_str().unwrap(),
        &b["block_number"].to_string(),
        "default",
        "gate-a",
        b["genome_id"].as_str().unwrap(),
        "t",
        &b["block_timestamp"].to_string(),
    ]
    .join("|");
    assert_eq!(row, [expected]);
    assert_eq!(app.metric("settlegate_ledger_rows_total").await, 2);

    // The revenue dashboard's queries run on this schema and add up.
    let root = env!("CARGO_MANIFEST_DIR");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{root}/otel/grafana/dashboards/revenue.json")).unwrap())
            .unwrap();
    let mut answers = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        let sql = panel["targets"][0]["rawSql"].as_str().unwrap().replace(
            "$__timeFilter(consumed_at)",
            "consumed_at BETWEEN now() - interval '1 day' AND now() + interval '1 day'",
        );
        answers.push(db.query(&sql));
    }
    assert_eq!(
        answers[1],
        [format!("default|{}|2|2000000", ALPHA_USD)],
        "revenue by route"
    );
    assert_eq!(answers[2], [format!("{PAYER}|{ALPHA_USD}|2|2000000")], "top payers");
    assert_eq!(answers[0].len(), 1, "one day, one asset: {:?}", answers[0]);
    let (status, ready) = app.get_json("/readyz").await;
    assert_eq!(status, 200);
    assert_eq!(ready["components"]["ledger"]["state"], "ok", "{ready}");
    assert_eq!(ready["components"]["ledger"]["outbox_entries"], 0, "{ready}");
}

/// The database is not written to before `ledger migrate`; meanwhile the
/// outbox fills to its bound, where consumes are refused (503, nothing
/// consumed) rather than served without their record. The embedded store
/// keeps the outbox in the record's own transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_outbox_refuses_consumes_until_the_ledger_drains_it() {
    let chain = Chain::start();
    let db = FreshDb::new();
    let w = Workdir::new();
    let mut env = serve_env(&w.genome(&Genome::single().signed()));
    env.insert("SETTLEGATE_RPC__URLS".into(), chain.url.clone());
    with_ledger(&mut env, &db.url(), "solo");
    // The URL from a file this time (how a password is given).
    env.remove("SETTLEGATE_LEDGER__DATABASE_URL");
    let url_file = w.path("ledger-url");
    std::fs::write(
        &url_file,
        db.url().replace("postgres@", "postgres:ledger-file-pw-52e8@"),
    )
    .unwrap();
    env.insert(
        "SETTLEGATE_LEDGER__DATABASE_URL_FILE".into(),
        url_file.display().to_string(),
    );
    env.insert("SETTLEGATE_LEDGER__OUTBOX_MAX".into(), "2".into());
    let app = Served::start(&env);
    ready(&app).await;

    let payments: Vec<String> = (0..3)
        .map(|_| chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000))
        .collect();
    for p in &payments[..2] {
        assert_eq!(app.verify_hash(p).await.status, 200);
    }
    let full = app.verify_hash(&payments[2]).await;
    assert_eq!(
        (full.status, full.code()),
        (503, "REPLAY_STORE_UNAVAILABLE"),
        "{:?}",
        full.body
    );
    assert_eq!(
        app.metric("settlegate_unavailable_total{code=\"REPLAY_STORE_UNAVAILABLE\",cause=\"ledger_outbox_full\"}")
            .await,
        1
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, r) = app.get_json("/readyz").await;
        if r["components"]["ledger"]["state"] == "full" {
            assert_eq!(status, 503, "a full outbox cannot consume: {r}");
            break;
        }
        assert!(Instant::now() < deadline, "never full: {r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        app.metric("settlegate_ledger_write_failures_total{cause=\"schema\"}")
            .await
            >= 1
    );
    assert_eq!(
        db.query("SELECT to_regclass('payments') IS NULL"),
        ["t"],
        "serve never creates the schema"
    );

    migrate(&env);
    let rows = rows_settle_at(&db, 2, Duration::from_secs(15)).await;
    assert_eq!(rows, payments[..2].iter().cloned().collect());
    let third = app.verify_hash(&payments[2]).await;
    assert_eq!(third.status, 200, "the 503 consumed nothing: {:?}", third.body);
    let rows = rows_settle_at(&db, 3, Duration::from_secs(10)).await;
    assert_eq!(rows, payments.iter().cloned().collect());
}

/// What one client saw of one payment.
#[derive(Clone, Debug)]
struct Seen {
    hash: String,
    status: u16,
    latency: Duration,
    /// While the component under test was down.
    during_outage: bool,
    /// 503s before this answer.
    unavailable: usize,
}

fn percentile(mut v: Vec<Duration>, p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn latency_line(label: &str, seen: &[Seen]) -> String {
    let l: Vec<Duration> = seen.iter().filter(|s| s.status == 200).map(|s| s.latency).collect();
    format!(
        "{label}: {} 200s, p50 {:?}, p90 {:?}, max {:?}",
        l.len(),
        percentile(l.clone(), 0.5),
        percentile(l.clone(), 0.9),
        percentile(l, 1.0)
    )
}

/// Presents `payments` over `apps` with `concurrency` clients, each once
/// with an `Idempotency-Key`, retrying a 503 until it gets an answer, and
/// calls `at(answered)` after each answer (to kill things mid-load).
async fn load(
    apps: Vec<Arc<Served>>,
    payments: Vec<String>,
    concurrency: usize,
    outage: Arc<std::sync::atomic::AtomicBool>,
    at: impl Fn(usize) + Send + Sync + 'static,
) -> Vec<Seen> {
    let queue = Arc::new(Mutex::new(payments.into_iter().enumerate().collect::<Vec<_>>()));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let at = Arc::new(at);
    let mut set = JoinSet::new();
    for _ in 0..concurrency {
        let (queue, seen, apps, at, outage) = (queue.clone(), seen.clone(), apps.clone(), at.clone(), outage.clone());
        set.spawn(async move {
            loop {
                let Some((i, hash)) = queue.lock().unwrap().pop() else {
                    return;
                };
                let key = format!("ledger-load-{hash}");
                let deadline = Instant::now() + Duration::from_secs(60);
                let mut unavailable = 0;
                loop {
                    let app = &apps[i % apps.len()];
                    let down = outage.load(std::sync::atomic::Ordering::SeqCst);
                    let started = Instant::now();
                    let v = app.verify(tempo(&hash), &[("Idempotency-Key", &key)]).await;
                    let latency = started.elapsed();
                    if v.status == 503 && Instant::now() < deadline {
                        unavailable += 1;
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                    let n = {
                        let mut s = seen.lock().unwrap();
                        s.push(Seen {
                            hash: hash.clone(),
                            status: v.status,
                            latency,
                            during_outage: down,
                            unavailable,
                        });
                        s.len()
                    };
                    at(n);
                    break;
                }
            }
        });
    }
    while set.join_next().await.is_some() {}
    Arc::try_unwrap(seen).unwrap().into_inner().unwrap()
}

/// Two instances on one Redis (`redis`, else the shared one) booking into
/// `db` (migrated here), and `n` distinct payments made before the load,
/// so the load is only checks.
struct TwoGates {
    apps: Vec<Arc<Served>>,
    payments: Vec<String>,
    _chain: Chain,
    _w: Workdir,
}

async fn two_gates(db: &str, redis: Option<&str>, n: usize) -> TwoGates {
    let chain = Chain::start();
    let w = Workdir::new();
    let mut env = chain_env(&w.genome(&Genome::single().signed()), &chain.url);
    if let Some(url) = redis {
        env.insert("SETTLEGATE_REDIS__URL".into(), url.into());
    }
    with_ledger(&mut env, db, "migrator");
    migrate(&env);
    let mut apps = Vec::new();
    for name in ["gate-a", "gate-b"] {
        let mut e = env.clone();
        with_ledger(&mut e, db, name);
        let app = Arc::new(Served::start(&e));
        ready(&app).await;
        apps.push(app);
    }
    let payments = (0..n)
        .map(|_| chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000))
        .collect();
    TwoGates {
        apps,
        payments,
        _chain: chain,
        _w: w,
    }
}

fn paid(seen: &[Seen]) -> BTreeSet<String> {
    seen.iter()
        .filter(|s| s.status == 200)
        .map(|s| s.hash.clone())
        .collect()
}

/// A redis-server keeping an append-only file in `dir`, fsync'd before
/// each reply.
fn aof_redis(port: u16, dir: &std::path::Path) -> OwnRedis {
    let dir = dir.to_str().unwrap();
    let args = [
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--save",
        "",
        "--dir",
        dir,
    ];
    OwnRedis::start_with(port, &args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_killed_under_load_over_two_instances_loses_and_doubles_nothing() {
    let pg = Arc::new(Mutex::new(OwnPostgres::start()));
    let db = FreshDb::on(&pg.lock().unwrap().url());
    let gates = two_gates(&db.url(), None, 60).await;
    let (apps, payments) = (gates.apps.clone(), gates.payments.clone());

    let outage = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (pg2, outage2) = (pg.clone(), outage.clone());
    let seen = load(apps.clone(), payments.clone(), 4, outage.clone(), move |answered| {
        if answered == 15 {
            pg2.lock().unwrap().kill9();
            outage2.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        if answered == 45 {
            outage2.store(false, std::sync::atomic::Ordering::SeqCst);
            pg2.lock().unwrap().restart();
        }
    })
    .await;
    let paid = paid(&seen);
    assert_eq!(paid.len(), payments.len(), "every payment got its 200: {seen:?}");
    assert!(
        seen.iter().filter(|s| s.during_outage && s.status == 200).count() >= 20,
        "the 200s kept coming while PostgreSQL was down"
    );
    let rows = rows_settle_at(&db, paid.len(), Duration::from_secs(30)).await;
    assert_eq!(rows, paid, "exactly one row per 200");
    let count = db.query("SELECT count(*), count(DISTINCT tx_hash) FROM payments");
    assert_eq!(count, [format!("{0}|{0}", paid.len())]);
    let instances = db.query("SELECT instance, count(*) FROM payments GROUP BY instance ORDER BY instance");
    assert_eq!(instances.len(), 2, "both instances booked: {instances:?}");
    let (up, down): (Vec<Seen>, Vec<Seen>) = seen.into_iter().partition(|s| !s.during_outage);
    eprintln!("LEDGER-LATENCY {}", latency_line("postgres up", &up));
    eprintln!("LEDGER-LATENCY {}", latency_line("postgres killed", &down));
    let mut failures = 0;
    for app in &apps {
        failures += app.metric("settlegate_ledger_write_failures_total").await;
    }
    assert!(failures >= 1, "the outage was seen by the ledgers, not missed");
}

/// Redis killed mid-load and restarted on its append-only file
/// (`appendfsync always`: a write is on disk before its reply). A client
/// told 503 retries with its `Idempotency-Key`, so a consume whose reply
/// was lost gets its 200 on the retry; afterwards the ledger holds exactly
/// the payments that were answered 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_on_its_aof_loses_and_doubles_nothing() {
    let db = FreshDb::new();
    let dir = Workdir::new();
    let data = dir.path("redis");
    std::fs::create_dir_all(&data).unwrap();
    let port = free_port();
    let redis = Arc::new(Mutex::new(Some(aof_redis(port, &data))));
    let gates = two_gates(&db.url(), Some(&format!("redis://127.0.0.1:{port}")), 40).await;
    let (apps, payments) = (gates.apps.clone(), gates.payments.clone());

    let outage = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (r2, outage2) = (redis.clone(), outage.clone());
    let data2 = data.clone();
    let seen = load(apps.clone(), payments.clone(), 4, outage.clone(), move |answered| {
        if answered == 12 {
            if let Some(mut r) = r2.lock().unwrap().take() {
                r.stop();
            }
            outage2.store(true, std::sync::atomic::Ordering::SeqCst);
            let (r3, outage3, data3) = (r2.clone(), outage2.clone(), data2.clone());
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_secs(2));
                *r3.lock().unwrap() = Some(aof_redis(port, &data3));
                outage3.store(false, std::sync::atomic::Ordering::SeqCst);
            });
        }
    })
    .await;
    let paid = paid(&seen);
    let not_paid: Vec<&Seen> = seen.iter().filter(|s| s.status != 200).collect();
    assert!(
        not_paid.is_empty(),
        "every payment got its 200 in the end: {not_paid:?}"
    );
    let retried = seen.iter().filter(|s| s.unavailable > 0).count();
    assert!(retried > 0, "the kill was felt: some checks were answered 503 first");
    let rows = rows_settle_at(&db, paid.len(), Duration::from_secs(30)).await;
    assert_eq!(rows, paid, "no row without a 200, no 200 without a row");
    assert!(redis.lock().unwrap().is_some(), "redis is back");
    eprintln!(
        "LEDGER-LATENCY {} ({retried} payments answered 503 first while redis was down)",
        latency_line("redis killed and restarted", &seen)
    );
}

/// `ledger reconcile` re-reads every booked receipt: all match on an
/// untouched chain; a payment whose block was reverted is `receipt_gone`;
/// re-included in a later block it is `block_moved`. It changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_names_the_rows_the_chain_no_longer_agrees_with() {
    let db = FreshDb::new();
    let (chain, _w, env) = booked_env(&db.url());
    migrate(&env);
    let app = Served::start(&env);
    ready(&app).await;

    let kept = chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000);
    assert_eq!(app.verify_hash(&kept).await.status, 200);
    let snapshot = chain.rpc("evm_snapshot", &[]);
    let undone = chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000);
    let raw = chain.rpc("eth_getRawTransactionByHash", &[&undone]);
    assert_eq!(app.verify_hash(&undone).await.status, 200);
    rows_settle_at(&db, 2, Duration::from_secs(10)).await;
    let summary = |out: &str| -> serde_json::Value { serde_json::from_str(out.lines().last().unwrap()).unwrap() };

    let (code, out, err) = ledger_cli(&["reconcile"], &env);
    assert_eq!(code, 0, "{out} {err}");
    assert_eq!(summary(&out)["checked"], 2, "{out}");

    let snapshot = snapshot.trim().trim_matches('"').to_owned();
    chain.rpc("evm_revert", &[&snapshot]);
    let (code, out, _) = ledger_cli(&["reconcile"], &env);
    assert_eq!(code, 3, "{out}");
    let first: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(
        (first["tx_hash"].as_str(), first["finding"].as_str()),
        (Some(undone.as_str()), Some("receipt_gone"))
    );
    assert_eq!(summary(&out)["mismatched"], 1, "{out}");

    chain.rpc("evm_mine", &[]);
    chain.rpc("evm_mine", &[]);
    chain.rpc("eth_sendRawTransaction", &[raw.trim().trim_matches('"')]);
    let (code, out, _) = ledger_cli(&["reconcile"], &env);
    assert_eq!(code, 3, "{out}");
    let first: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(first["finding"], "block_moved", "{out}");
    assert!(first["now"].as_u64() > first["booked"].as_u64(), "{out}");

    assert_eq!(booked(&db).len(), 2, "reconcile changed nothing");
    let (code, _, err) = ledger_cli(&["reconcile", "--from", "yesterday"], &env);
    assert_eq!(code, 2, "a bad instant is a usage error: {err}");
    assert!(err.contains("RFC 3339"), "{err}");
}

/// A session in the books: the channel's row and events, from the states
/// the outbox logged, add up exactly to what was accepted, served and
/// settled on chain (read on chain too), over two instances.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sessions_vouchers_usage_and_settlement_add_up_in_the_books() {
    use crate::escrow_chain::sign_voucher;
    use crate::session::{PRICE, settler_env, wait_settled};
    use crate::session_vouchers::{channel, env_on_redis, present, session_offer, voucher_payload};

    let c = tokio::task::block_in_place(|| channel(PRICE * 50));
    let db = FreshDb::new();
    let w = Workdir::new();
    let mut env = env_on_redis(&c, &w, &unique_prefix());
    with_ledger(&mut env, &db.url(), "migrator");
    migrate(&env);
    let mut with_settler = env.clone();
    with_settler.extend(settler_env(&w));
    with_ledger(&mut with_settler, &db.url(), "gate-a");
    with_ledger(&mut env, &db.url(), "gate-b");
    let apps = [Served::start(&with_settler), Served::start(&env)];
    let offer = session_offer(&apps[0]).await;
    let sign =
        |cumulative: u128| tokio::task::block_in_place(|| sign_voucher(PAYER_KEY, &c.escrow, 42431, &c.id, cumulative));
    let first = sign(PRICE);
    let v = present(&apps[1], &offer, voucher_payload(&c.id, PRICE, &first)).await;
    assert_eq!(v.status, 200, "{:?}", v.body);
    let six = sign(PRICE * 6);
    for i in 0..6 {
        let v = present(&apps[i % 2], &offer, voucher_payload(&c.id, PRICE * 6, &six)).await;
        assert_eq!(v.status, if i < 5 { 200 } else { 402 }, "{i}: {:?}", v.body);
    }
    let on_chain = tokio::task::block_in_place(|| wait_settled(&c.chain, &c.escrow, &c.id, PRICE * 6));
    assert_eq!(on_chain.settled, PRICE * 6);

    let deadline = Instant::now() + Duration::from_secs(30);
    let row = loop {
        let row = db.query("SELECT accepted, spent, served, settled, payer, deposit FROM channels");
        if row.len() == 1 && row[0].split('|').nth(3) == Some(&(PRICE * 6).to_string()) {
            break row;
        }
        assert!(
            Instant::now() < deadline,
            "the settlement never reached the books: {row:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let p6 = (PRICE * 6).to_string();
    assert_eq!(row, [format!("{p6}|{p6}|6|{p6}|{PAYER}|{}", PRICE * 50)]);
    let sums =
        db.query("SELECT kind, count(*), sum(amount), sum(requests) FROM channel_events GROUP BY kind ORDER BY kind");
    assert_eq!(
        sums,
        [
            format!("open|1|{}|0", PRICE * 50),
            format!("settlement|{}|{p6}|0", sums[1].split('|').nth(1).unwrap()),
            format!("usage|{}|{p6}|6", sums[2].split('|').nth(1).unwrap()),
            format!("voucher|2|{p6}|0"),
        ],
        "open total (0 settled before) + vouchers = accepted; + usage = spent; + settlements = settled"
    );
}

/// An outbox entry that is not a record (written by something else, or
/// corrupted) is kept in `outbox_rejects` with its reason, once, and
/// does not stop the records behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_that_is_not_a_record_is_kept_aside_and_blocks_nothing() {
    let db = FreshDb::new();
    let (chain, _w, env) = booked_env(&db.url());
    migrate(&env);
    let stream = format!("{}ledger:outbox", env["SETTLEGATE_REDIS__KEY_PREFIX"]);
    let xadd = |k: &str, v: &str| {
        let out = std::process::Command::new("redis-cli")
            .args(["-u", &redis_url(), "XADD", &stream, "*", "k", k, "v", v])
            .output()
            .unwrap();
        assert!(out.status.success());
    };
    xadd("replay:0xbad", "not json");
    xadd("channel:1:0x00:0x01", "{\"not\":\"a state\"}");
    xadd("channel:not-a-channel", "{}");
    let app = Served::start(&env);
    ready(&app).await;
    let paid = chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000);
    assert_eq!(app.verify_hash(&paid).await.status, 200);
    assert_eq!(
        rows_settle_at(&db, 1, Duration::from_secs(10)).await,
        BTreeSet::from([paid])
    );
    let rejects = db.query("SELECT entry_key, convert_from(value, 'UTF8') FROM outbox_rejects ORDER BY id");
    assert_eq!(
        rejects,
        [
            "replay:0xbad|not json",
            "channel:1:0x00:0x01|{\"not\":\"a state\"}",
            "channel:not-a-channel|{}"
        ],
        "kept once each, with their bytes"
    );
    assert_eq!(app.metric("settlegate_ledger_rejects_total").await, 3);
}
