//! Redis Cluster as the replay store (issue 8): a real cluster of
//! `redis-server` processes in cluster mode, joined by `redis-cli --cluster
//! create`, started by each test. Effects are counted where they happen: at
//! the node (receipt lookups), and on the cluster's own nodes (which one holds
//! a record, `INFO commandstats` for the `ASKING` a migrating slot costs).

use serde_json::json;
use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::chain::*;
use crate::helpers::*;
use crate::lookup::{RECEIPT, STORM_WINDOW_MS, all_refused, ready, storm_across, tempo};

/// A Redis Cluster of `masters` primaries with `replicas` replicas each, on
/// loopback, in a temporary directory; every node is killed on drop.
pub struct RedisCluster {
    nodes: HashMap<u16, Child>,
    dir: tempfile::TempDir,
}

fn spawn_node(dir: &std::path::Path, port: u16) -> Child {
    Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "1000"])
        .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server is installed (scripts/test installs it)")
}

/// A port whose cluster bus port (port + 10000) is free too.
fn cluster_port(taken: &[u16]) -> u16 {
    loop {
        let p = free_port();
        if p < 55_000 && !taken.contains(&p) && std::net::TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok() {
            return p;
        }
    }
}

impl RedisCluster {
    pub fn start(masters: usize, replicas: usize) -> RedisCluster {
        let dir = tempfile::tempdir().unwrap();
        let mut ports = Vec::new();
        for _ in 0..masters * (1 + replicas) {
            ports.push(cluster_port(&ports));
        }
        let mut nodes = HashMap::new();
        for &port in &ports {
            nodes.insert(port, spawn_node(dir.path(), port));
        }
        let cluster = RedisCluster { nodes, dir };
        for &port in &ports {
            cluster.wait_for_pong(port);
        }
        let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        cluster.wait_until_ok(masters, masters * replicas);
        cluster
    }

    /// Waits until every live node says the cluster is ok and sees
    /// `masters` primaries (each with slots) and `replicas` replicas.
    pub fn wait_until_ok(&self, masters: usize, replicas: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = self.nodes.keys().all(|&p| {
                let info = self.cli(p, &["CLUSTER", "INFO"]);
                let view = self.view(p);
                info.contains("cluster_state:ok")
                    && view.values().filter(|n| n.master && !n.slots.is_empty()).count() == masters
                    && view.values().filter(|n| !n.master).count() == replicas
            }) && {
                // and every replica has synced (WAIT counts only those)
                let online: usize = self
                    .nodes
                    .keys()
                    .map(|&p| self.cli(p, &["INFO", "replication"]).matches("state=online").count())
                    .sum();
                online == replicas
            };
            if ok {
                return;
            }
            assert!(Instant::now() < deadline, "the cluster never became ok");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_for_pong(&self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.cli(port, &["PING"]) != "PONG" {
            assert!(Instant::now() < deadline, "redis-server {port} did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts a killed node again on its own cluster configuration: it
    /// rejoins (a failed-over primary comes back as a replica).
    pub fn restart(&mut self, port: u16) {
        let child = spawn_node(self.dir.path(), port);
        self.nodes.insert(port, child);
        self.wait_for_pong(port);
    }

    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &port.to_string()])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// `redis.url` for the cluster: every node, as seeds.
    pub fn urls(&self) -> String {
        let mut ports: Vec<_> = self.nodes.keys().collect();
        ports.sort();
        ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The cluster as node `port` sees it (`CLUSTER NODES`), by port; dead
    /// nodes left out.
    pub fn view(&self, port: u16) -> HashMap<u16, NodeView> {
        self.cli(port, &["CLUSTER", "NODES"])
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let port = f.get(1)?.split('@').next()?.rsplit(':').next()?.parse().ok()?;
                let flags = *f.get(2)?;
                if flags.contains("fail") || f.get(7) != Some(&"connected") && !flags.contains("myself") {
                    return None;
                }
                let slots = f[8..]
                    .iter()
                    .filter(|s| !s.starts_with('['))
                    .filter_map(|s| {
                        let (a, b) = s.split_once('-').unwrap_or((s, s));
                        Some((a.parse().ok()?, b.parse().ok()?))
                    })
                    .collect();
                Some((
                    port,
                    NodeView {
                        id: f[0].to_owned(),
                        master: flags.contains("master"),
                        master_id: f[3].to_owned(),
                        slots,
                    },
                ))
            })
            .collect()
    }

    /// The live node other than `dead` that answers for the cluster.
    fn any_live(&self, dead: &[u16]) -> u16 {
        *self.nodes.keys().find(|p| !dead.contains(p)).unwrap()
    }

    /// The primary that owns `slot`, and its id.
    pub fn owner(&self, slot: u16, dead: &[u16]) -> (u16, String) {
        let view = self.view(self.any_live(dead));
        view.iter()
            .find(|(_, n)| n.master && n.slots.iter().any(|&(a, b)| (a..=b).contains(&slot)))
            .map(|(p, n)| (*p, n.id.clone()))
            .expect("every slot has an owner")
    }

    pub fn slot(&self, key: &str) -> u16 {
        self.cli(self.any_live(&[]), &["CLUSTER", "KEYSLOT", key])
            .parse()
            .unwrap()
    }

    /// The replica of the primary `master_id`.
    pub fn replica_of(&self, master_id: &str, dead: &[u16]) -> u16 {
        let view = self.view(self.any_live(dead));
        *view
            .iter()
            .find(|(_, n)| !n.master && n.master_id == master_id)
            .expect("the primary has a replica")
            .0
    }

    pub fn kill(&mut self, port: u16) {
        let mut child = self.nodes.remove(&port).unwrap();
        send_signal(child.id() as i32, libc::SIGKILL);
        let _ = child.wait();
    }

    /// Calls of `command` on node `port` (`INFO commandstats`).
    pub fn calls(&self, port: u16, command: &str) -> u64 {
        self.cli(port, &["INFO", "commandstats"])
            .lines()
            .find_map(|l| {
                let rest = l.strip_prefix(&format!("cmdstat_{command}:"))?;
                rest.strip_prefix("calls=")?.split(',').next()?.parse().ok()
            })
            .unwrap_or(0)
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for child in self.nodes.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A slot on its way from one primary to another.
#[derive(Clone)]
pub struct Migration {
    pub slot: u16,
    pub source: u16,
    pub target: u16,
    pub target_id: String,
}

impl RedisCluster {
    /// Sets `slot` IMPORTING on another primary, then MIGRATING on its owner.
    pub fn begin_migration(&self, slot: u16) -> Migration {
        let (source, source_id) = self.owner(slot, &[]);
        let view = self.view(source);
        let (&target, node) = view
            .iter()
            .find(|(p, n)| n.master && **p != source)
            .expect("another primary");
        let target_id = node.id.clone();
        let s = slot.to_string();
        assert_eq!(
            self.cli(target, &["CLUSTER", "SETSLOT", &s, "IMPORTING", &source_id]),
            "OK"
        );
        assert_eq!(
            self.cli(source, &["CLUSTER", "SETSLOT", &s, "MIGRATING", &target_id]),
            "OK"
        );
        Migration {
            slot,
            source,
            target,
            target_id,
        }
    }

    /// Hands the slot to its target on every primary.
    pub fn end_migration(&self, m: &Migration) {
        let s = m.slot.to_string();
        for port in [m.target, m.source] {
            assert_eq!(self.cli(port, &["CLUSTER", "SETSLOT", &s, "NODE", &m.target_id]), "OK");
        }
        let view = self.view(m.target);
        for (port, node) in view {
            if node.master && port != m.target && port != m.source {
                assert_eq!(self.cli(port, &["CLUSTER", "SETSLOT", &s, "NODE", &m.target_id]), "OK");
            }
        }
    }
}

pub struct NodeView {
    pub id: String,
    pub master: bool,
    pub master_id: String,
    pub slots: Vec<(u16, u16)>,
}

fn cluster_env(chain: &Chain, w: &Workdir, cluster: &RedisCluster) -> HashMap<String, String> {
    let mut env = chain_env(&w.genome(&Genome::single().signed()), &chain.url);
    env.insert("SETTLEGATE_REDIS__URL".into(), cluster.urls());
    env.insert("SETTLEGATE_REDIS__MODE".into(), "cluster".into());
    env
}

fn record_key(env: &HashMap<String, String>, hash: &str) -> String {
    format!("{}replay:{}", env["SETTLEGATE_REDIS__KEY_PREFIX"], hash.to_lowercase())
}

/// Presents `hash` until an answer that is not a 503 (a failover's), for
/// at most `within`.
async fn until_answered(app: &Served, hash: &str, within: Duration) -> Verified {
    until_answered_as(app, hash, None, within).await
}

/// [`until_answered`], each presentation with `Idempotency-Key: key` when
/// one is given.
async fn until_answered_as(app: &Served, hash: &str, key: Option<&str>, within: Duration) -> Verified {
    let deadline = Instant::now() + within;
    let headers: Vec<(&str, &str)> = key.map(|k| ("Idempotency-Key", k)).into_iter().collect();
    loop {
        let v = app
            .verify(json!({ "credential": format!("Tempo {hash}") }), &headers)
            .await;
        if v.status != 503 || Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Issue 8: the three-instance storms of `lookup.rs` on a 3-master Redis
/// Cluster. 1,000 concurrent checks of one payment spread over three
/// instances cost one receipt lookup at the node; a fresh valid payment
/// buys exactly one 200 (its record on the primary that owns its slot), an
/// underpaid one 1,000 correct 402s, an unknown one 1,000 PAYMENT_PENDING.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_on_a_redis_cluster_cost_one_receipt_lookup_per_storm() {
    let chain = Chain::start();
    let cluster = RedisCluster::start(3, 0);
    let w = Workdir::new();
    let mut env = cluster_env(&chain, &w, &cluster);
    env.insert("SETTLEGATE_COALESCER__WINDOW_MS".into(), STORM_WINDOW_MS.into());
    let apps: Vec<Arc<Served>> = (0..3).map(|_| Arc::new(Served::start(&env))).collect();
    for app in &apps {
        ready(app).await;
        let (_, r) = app.get_json("/readyz").await;
        assert_eq!(r["components"]["replay_store"]["backend"], "redis-cluster", "{r}");
    }

    let paid = chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000);
    let underpaid = chain.transfer(ALPHA_USD, RECIPIENT, 999_999);
    let unknown = format!("0x{}", "6e".repeat(32));
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
    let mut remote = 0;
    for app in &apps {
        remote += app.metric("settlegate_coalescer_remote_answers_total").await;
    }
    assert!(
        remote >= 6,
        "two instances answered through the cluster per storm: {remote}"
    );
    // The record is on the primary that owns its slot, and only there.
    let key = record_key(&env, &paid);
    let (owner, _) = cluster.owner(cluster.slot(&key), &[]);
    for (port, node) in cluster.view(owner) {
        let has = cluster.cli(port, &["EXISTS", &key]) == "1";
        assert_eq!(has, port == owner && node.master, "node {port} holds the record: {has}");
    }
}

/// Issue 8: payments presented while their records' slots migrate between
/// primaries. Each slot is set IMPORTING on another primary and MIGRATING on
/// its owner, as `redis-cli --cluster reshard` does. A record moved
/// mid-migration (`MIGRATE`) is still found by a cold instance, and a new
/// record is written on the importing node: the owner answers `ASK`, and
/// the client follows with `ASKING`. Once the slots are handed over, a new
/// instance finds both records on their new owners.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_presented_during_a_slot_migration_are_consumed_once_and_found_after() {
    let chain = Chain::start();
    let cluster = RedisCluster::start(3, 0);
    let w = Workdir::new();
    let env = cluster_env(&chain, &w, &cluster);
    let (a, b) = (Served::start(&env), Served::start(&env));
    ready(&a).await;
    ready(&b).await;

    // A consumed record whose slot then migrates, record and all.
    let first = chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000);
    assert_eq!(a.verify_hash(&first).await.status, 200);
    let key1 = record_key(&env, &first);
    let m1 = cluster.begin_migration(cluster.slot(&key1));
    let moved = cluster.cli(
        m1.source,
        &[
            "MIGRATE",
            "127.0.0.1",
            &m1.target.to_string(),
            "",
            "0",
            "5000",
            "KEYS",
            &key1,
        ],
    );
    assert_eq!(moved, "OK");
    let asking = cluster.calls(m1.target, "asking");
    let replay = b.verify_hash(&first).await;
    assert_eq!((replay.status, replay.code()), (402, "REPLAYED"), "{:?}", replay.body);
    assert!(
        cluster.calls(m1.target, "asking") > asking,
        "found through ASK on the importing node"
    );

    // A fresh payment whose record's slot is migrating when it is consumed.
    let second = chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000);
    let key2 = record_key(&env, &second);
    let slot2 = cluster.slot(&key2);
    let m2 = if slot2 == m1.slot {
        m1.clone()
    } else {
        cluster.begin_migration(slot2)
    };
    let paid = a.verify_hash(&second).await;
    assert_eq!(paid.status, 200, "{:?}", paid.body);
    let count = |port: u16| cluster.cli(port, &["CLUSTER", "COUNTKEYSINSLOT", &slot2.to_string()]);
    assert_eq!(count(m2.target), "1", "the record was written where its slot is going");
    assert_eq!(count(m2.source), "0", "and not where it is leaving");
    let replay = b.verify_hash(&second).await;
    assert_eq!((replay.status, replay.code()), (402, "REPLAYED"), "{:?}", replay.body);

    // The migrations end; a new instance finds both on the new owners.
    cluster.end_migration(&m1);
    if m2.slot != m1.slot {
        cluster.end_migration(&m2);
    }
    assert_eq!(cluster.owner(m1.slot, &[]).0, m1.target);
    let c = Served::start(&env);
    ready(&c).await;
    for hash in [&first, &second] {
        let replay = c.verify_hash(hash).await;
        assert_eq!((replay.status, replay.code()), (402, "REPLAYED"), "{:?}", replay.body);
    }
}

/// Issue 8: a primary of a 3-primary, 3-replica cluster killed with
/// `kill -9` under load, with `redis.wait_replicas = 1`. Every 200's record
/// had reached a replica, so the failover keeps it: a cold instance answers
/// REPLAYED once the replica is promoted. While the promoted primary has no
/// replica, a new record on its slots cannot be confirmed: the answer is a
/// 503 and the record is withdrawn (a later 200, not REPLAYED, proves it).
/// When the killed node is back (as a replica), every payment gets its one
/// 200, and a new instance finds every record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_killed_under_load_loses_no_record_of_a_200_with_wait_replicas() {
    let chain = Chain::start();
    let mut cluster = RedisCluster::start(3, 1);
    let w = Workdir::new();
    let mut env = cluster_env(&chain, &w, &cluster);
    env.insert("SETTLEGATE_REDIS__WAIT_REPLICAS".into(), "1".into());
    env.insert("SETTLEGATE_REDIS__TIMEOUT_MS".into(), "1500".into());
    let (a, b) = (Arc::new(Served::start(&env)), Arc::new(Served::start(&env)));
    ready(&a).await;
    ready(&b).await;

    let first = chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000);
    // A replica that just synced can miss the first wait (seen in CI on a
    // loaded machine: 0 of 1 in 500 ms): that is a 503 that consumed
    // nothing, so the first answer that is not a 503 must be the 200.
    let paid = until_answered(&a, &first, Duration::from_secs(15)).await;
    assert_eq!(paid.status, 200, "confirmed by a replica: {:?}", paid.body);
    let (victim, victim_id) = cluster.owner(cluster.slot(&record_key(&env, &first)), &[]);
    let heir = cluster.replica_of(&victim_id, &[]);
    // A payment whose record will fall on the victim's slots.
    let same_shard = (0..24)
        .map(|_| chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000))
        .find(|h| cluster.owner(cluster.slot(&record_key(&env, h)), &[]).0 == victim)
        .expect("one of 24 payments falls on one primary of three");
    let others: Vec<String> = (0..6)
        .map(|_| chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000))
        .collect();

    cluster.kill(victim);
    let killed = Instant::now();
    // Load during the failover: each payment presented until it is not a
    // 503, with an Idempotency-Key as the README asks when wait_replicas is
    // on: a consume whose answer the failover lost (it landed, and reached
    // the heir, but its instance saw a timeout) stays consumed rather than
    // risk a second 200, and only the key gets the payer its 200 back. The
    // first answer that is not a 503 must be its 200, fresh or idempotent.
    let load: Vec<_> = others
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let (app, h) = (if i % 2 == 0 { a.clone() } else { b.clone() }, h.clone());
            tokio::spawn(async move {
                let key = format!("order-{i}-failover-load");
                until_answered_as(&app, &h, Some(&key), Duration::from_secs(60)).await
            })
        })
        .collect();

    let replay = until_answered(&b, &first, Duration::from_secs(30)).await;
    assert_eq!(
        (replay.status, replay.code()),
        (402, "REPLAYED"),
        "the record of a 200 outlived its primary: {:?}",
        replay.body
    );
    let recovered = killed.elapsed();
    assert!(
        recovered < Duration::from_secs(15),
        "found again {recovered:?} after the kill"
    );
    cluster.wait_until_ok(3, 2);
    assert_eq!(
        cluster.owner(cluster.slot(&record_key(&env, &first)), &[victim]).0,
        heir
    );

    // The heir has no replica: a new record there cannot be confirmed.
    let unconfirmed = a.verify_hash(&same_shard).await;
    assert_eq!(
        (unconfirmed.status, unconfirmed.code()),
        (503, "REPLAY_STORE_UNAVAILABLE"),
        "{:?}",
        unconfirmed.body
    );
    assert!(
        a.metric("settlegate_unavailable_total{code=\"REPLAY_STORE_UNAVAILABLE\",cause=\"store_unreplicated\"}")
            .await
            >= 1
    );
    assert_eq!(
        cluster.cli(heir, &["EXISTS", &record_key(&env, &same_shard)]),
        "0",
        "the unconfirmed record was withdrawn"
    );

    cluster.restart(victim);
    cluster.wait_until_ok(3, 3);
    let settled = until_answered(&a, &same_shard, Duration::from_secs(30)).await;
    assert_eq!(
        settled.status, 200,
        "nothing was consumed by the 503: {:?}",
        settled.body
    );
    for (h, answer) in others.iter().zip(load) {
        let answer = answer.await.unwrap();
        assert_eq!(
            answer.status, 200,
            "{h}: its first answer that is not a 503: {:?}",
            answer.body
        );
    }
    let c = Served::start(&env);
    ready(&c).await;
    for h in others.iter().chain([&first, &same_shard]) {
        let replay = c.verify_hash(h).await;
        assert_eq!(
            (replay.status, replay.code()),
            (402, "REPLAYED"),
            "{h}: {:?}",
            replay.body
        );
    }
}
