//! The Redis backend (one server, or a Cluster), shared by every instance.
//!
//! The store keeps one multiplexed connection per thread that uses it
//! (each pipelines any number of concurrent commands, and its driver runs
//! on that thread, so a command never crosses threads) and clones it per
//! operation, rather than check one out of a pool per operation (a recycle
//! round trip each). A connection that fails or times out is dropped with
//! the clock offset; that thread's next operation makes a fresh one (after
//! a failover it may reach another server).
//!
//! On a cluster every operation stays in one slot: a record is one key, a
//! lookup's claim and result are hash tagged on the record's key, so the
//! claim reads the record in the same script. Scripts sit beside this
//! file (`*.lua`), each hashed once (`EVALSHA`, then `EVAL`).

mod connection;
mod consume;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::thread::ThreadId;
use std::time::Duration;

use deadpool_redis::redis;
use parking_lot::Mutex;

pub use connection::RedisTarget;
use connection::{Conn, Connector, redis_error, wait_for_replicas};
pub use consume::pending;

use super::{
    Cas, Claim, LookupKeys, OpenError, OutboxDepth, OutboxEntry, Poll, Put, Store, StoreError, StoreFuture,
    is_channel_key, ttl_ms, unix_ms,
};

macro_rules! script {
    ($name:ident, $file:literal) => {
        static $name: std::sync::LazyLock<redis::Script> =
            std::sync::LazyLock::new(|| redis::Script::new(include_str!($file)));
    };
}
pub(crate) use script;

script!(READ_SETTLED, "read_settled.lua");
script!(COUNT, "count.lua");
script!(COMPARE_AND_SET, "compare_and_set.lua");
script!(CLAIM, "claim.lua");
script!(PUBLISH, "publish.lua");
script!(RENEW, "renew.lua");
script!(OUTBOX_READ, "outbox_read.lua");
script!(OUTBOX_DEPTH, "outbox_depth.lua");

pub struct RedisStore {
    connector: Connector,
    /// Held while a connection is being made.
    creating: tokio::sync::Mutex<()>,
    prefix: String,
    /// One connection per thread that uses the store: a multiplexed
    /// connection's driver runs on the thread that made it, so a request
    /// served on another thread would cross threads twice per command.
    shared: Slots,
    /// Whether the server takes `SET … NX GET` (Redis 7.0 and later).
    set_nx_get: AtomicBool,
    /// The server's clock minus ours, in ms (`i64::MIN`: not measured on
    /// this connection yet), for write deadlines in the server's time.
    clock_offset_ms: AtomicI64,
    /// Whether the server runs the deadline script (TIME before a write:
    /// Redis 5 and later).
    deadlines: AtomicBool,
    /// Replicas a new record must reach (`WAIT`) before its 200; 0: none.
    wait_replicas: u32,
    /// The guard's store timeout (a consume's budget).
    timeout: Duration,
    /// The ledger outbox's bound; `None`: no outbox. One stream per
    /// server, so not on a cluster (a script stays in one slot).
    outbox: Option<u64>,
}

impl RedisStore {
    /// Connects lazily: an unreachable Redis shows in `/readyz` and as
    /// 503s, it does not stop the boot.
    pub fn open(target: &RedisTarget, prefix: &str, timeout: Duration) -> Result<Self, OpenError> {
        Ok(RedisStore {
            connector: Connector::new(target, timeout)?,
            creating: tokio::sync::Mutex::new(()),
            prefix: prefix.to_owned(),
            shared: Mutex::new(HashMap::new()),
            set_nx_get: AtomicBool::new(true),
            clock_offset_ms: AtomicI64::new(i64::MIN),
            deadlines: AtomicBool::new(true),
            wait_replicas: target.wait_replicas,
            timeout,
            outbox: None,
        })
    }

    /// Keeps the ledger's outbox (a stream), at most `max` entries.
    pub fn with_outbox(mut self, max: u64) -> Self {
        self.outbox = Some(max);
        self
    }

    /// The outbox stream's full key.
    fn outbox_key(&self) -> String {
        format!("{}ledger:outbox", self.prefix)
    }

    /// For tests of the fallbacks for old servers: whether to try
    /// `SET … NX GET`, and the deadline script.
    #[doc(hidden)]
    pub fn with_ways(self, set_nx_get: bool, deadlines: bool) -> Self {
        self.set_nx_get.store(set_nx_get, Ordering::Relaxed);
        self.deadlines.store(deadlines, Ordering::Relaxed);
        self
    }

    /// The measured clock offset to the server, if any (for tests).
    #[doc(hidden)]
    pub fn clock_offset(&self) -> Option<i64> {
        Some(self.clock_offset_ms.load(Ordering::Relaxed)).filter(|&o| o != i64::MIN)
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// This thread's connection (made now if it has none), and the thread
    /// it belongs to.
    async fn conn(&self) -> Result<(ThreadId, Conn), StoreError> {
        let me = std::thread::current().id();
        if let Some(c) = self.shared.lock().get(&me) {
            return Ok((me, c.clone()));
        }
        // One connection is made at a time: a burst of operations after a
        // failure waits for it (each within its timeout) rather than open
        // one each.
        let _creating = self.creating.lock().await;
        let me = std::thread::current().id();
        if let Some(c) = self.shared.lock().get(&me) {
            return Ok((me, c.clone()));
        }
        let fresh = self.connector.connect().await?;
        let me = std::thread::current().id();
        Ok((me, self.shared.lock().entry(me).or_insert(fresh).clone()))
    }

    /// Runs `op` on this thread's connection; a failed connection is
    /// dropped.
    async fn with_conn<T, F>(&self, op: impl FnOnce(Conn) -> F) -> Result<T, StoreError>
    where
        F: Future<Output = Result<T, redis::RedisError>>,
    {
        let (owner, conn) = self.conn().await?;
        // Dropped unless the operation completes: a timeout cancels it here.
        let mut drop_guard = ForgetOnDrop(Some((&self.shared, owner, &self.clock_offset_ms)));
        let result = op(conn).await;
        match &result {
            // A server that became a replica (a failover) refuses writes:
            // the next connection finds the new primary.
            Err(e)
                if e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_unrecoverable_error()
                    || e.is_timeout()
                    || e.code() == Some("READONLY") => {}
            _ => drop_guard.0 = None,
        }
        result.map_err(redis_error)
    }

    /// The server's clock minus ours, measured once per connection.
    async fn server_offset(&self) -> Result<i64, StoreError> {
        let known = self.clock_offset_ms.load(Ordering::Relaxed);
        if known != i64::MIN {
            return Ok(known);
        }
        let before = unix_ms();
        let (secs, micros): (i64, i64) = self
            .with_conn(|mut c| async move { redis::cmd("TIME").query_async(&mut c).await })
            .await?;
        let after = unix_ms();
        let offset = secs * 1000 + micros / 1000 - (before + after) / 2;
        // A slow sample is uncertain by half its round trip: used for this
        // write (whose margin covers it), kept only when it was quick.
        if after - before <= 2 * super::CLOCK_MARGIN_MS / 5 {
            self.clock_offset_ms.store(offset, Ordering::Relaxed);
        }
        Ok(offset - (after - before) / 2)
    }
}

/// Forgets a thread's connection (and the clock offset, measured again
/// on the next connection) when dropped while armed.
struct ForgetOnDrop<'a>(Option<(&'a Slots, ThreadId, &'a AtomicI64)>);

/// Each thread's connection.
type Slots = Mutex<HashMap<ThreadId, Conn>>;

impl Drop for ForgetOnDrop<'_> {
    fn drop(&mut self) {
        if let Some((slots, owner, offset)) = self.0 {
            slots.lock().remove(&owner);
            offset.store(i64::MIN, Ordering::Relaxed);
        }
    }
}

fn unexpected(what: &str) -> StoreError {
    StoreError::Corrupt(format!("an unexpected answer to {what}"))
}

impl Store for RedisStore {
    fn name(&self) -> &'static str {
        if self.connector.is_cluster() {
            "redis-cluster"
        } else {
            "redis"
        }
    }

    fn system(&self) -> &'static str {
        "redis"
    }

    fn write_deadline(&self, budget: Duration) -> i64 {
        let budget = budget.as_millis() as i64;
        if self.wait_replicas > 0 {
            // A third of the budget for the consume, a third for the
            // replicas, the last for withdrawing an unconfirmed record.
            unix_ms() + budget / 3
        } else {
            unix_ms() + budget - super::CLOCK_MARGIN_MS.min(budget / 2)
        }
    }

    fn put_if_absent<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Duration,
        deadline: i64,
    ) -> StoreFuture<'a, Put> {
        Box::pin(self.consume(key, value, ttl_ms(ttl), deadline))
    }

    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Vec<u8>>> {
        Box::pin(async move {
            let key = self.key(key);
            let raw: Option<Vec<u8>> = self
                .with_conn(|mut c| {
                    let key = key.clone();
                    async move { redis::cmd("GET").arg(key).query_async(&mut c).await }
                })
                .await?;
            match raw {
                // Pending: the server's clock says whether it still is.
                Some(r) if r.first() == Some(&b'P') => {
                    let settled: Vec<Vec<u8>> = self
                        .with_conn(|mut c| async move { READ_SETTLED.key(key).invoke_async(&mut c).await })
                        .await?;
                    match settled.as_slice() {
                        [] => Ok(None),
                        [k] if k == b"inflight" => Err(StoreError::Unconfirmed),
                        [k, r] if k == b"found" => Ok(Some(consume::settled_part(r).to_vec())),
                        _ => Err(unexpected("a read")),
                    }
                }
                other => Ok(other),
            }
        })
    }

    fn read_back<'a>(&'a self, key: &'a str, value: &'a [u8], deadline: i64) -> StoreFuture<'a, Option<Vec<u8>>> {
        Box::pin(self.read_back_after(key, value, deadline))
    }

    fn reserve<'a>(&'a self, key: &'a str, ttl: Duration) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let key = self.key(key);
            let set: Option<String> = self
                .with_conn(|mut c| async move {
                    redis::cmd("SET")
                        .arg(key)
                        .arg("1")
                        .arg("NX")
                        .arg("PX")
                        .arg(ttl_ms(ttl))
                        .query_async(&mut c)
                        .await
                })
                .await?;
            Ok(set.is_some())
        })
    }

    fn release<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let key = self.key(key);
            let _: i64 = self
                .with_conn(|mut c| async move { redis::cmd("DEL").arg(key).query_async(&mut c).await })
                .await?;
            Ok(())
        })
    }

    fn count<'a>(&'a self, key: &'a str, ttl: Duration, cap: u64) -> StoreFuture<'a, u64> {
        Box::pin(async move {
            let key = self.key(key);
            let n: i64 = self
                .with_conn(|mut c| async move { COUNT.key(key).arg(ttl_ms(ttl)).arg(cap).invoke_async(&mut c).await })
                .await?;
            u64::try_from(n).map_err(|_| StoreError::Corrupt("a negative count".into()))
        })
    }

    fn compare_and_set<'a>(
        &'a self,
        key: &'a str,
        expected: Option<&'a [u8]>,
        new: &'a [u8],
        ttl: Duration,
    ) -> StoreFuture<'a, Cas> {
        Box::pin(async move {
            let outbox = self.outbox.filter(|_| is_channel_key(key)).map(|_| self.outbox_key());
            let outbox_max = self.outbox.unwrap_or(0);
            let key = self.key(key);
            let wanted = self.wait_replicas;
            let wait_ms = (self.timeout.as_millis() as u64 / 3).max(1);
            let (answer, acked): (Vec<Vec<u8>>, Option<i64>) = self
                .with_conn(|mut c| async move {
                    let mut script = COMPARE_AND_SET.key(&key);
                    if let Some(stream) = &outbox {
                        script.key(stream);
                    }
                    let answer: Vec<Vec<u8>> = script
                        .arg(if expected.is_some() { "1" } else { "0" })
                        .arg(expected.unwrap_or_default())
                        .arg(new)
                        .arg(ttl_ms(ttl))
                        .arg(outbox_max)
                        .invoke_async(&mut c)
                        .await?;
                    // A changed state counts once it reached the replicas
                    // a failover could promote; WAIT on the writing
                    // connection counts this connection's writes.
                    let acked = if wanted > 0 && answer.first().is_some_and(|k| k == b"set") {
                        Some(wait_for_replicas(&mut c, &key, wanted, wait_ms).await?)
                    } else {
                        None
                    };
                    Ok((answer, acked))
                })
                .await?;
            if let Some(acked) = acked
                && acked < i64::from(wanted)
            {
                // Written on the primary, maybe not beyond: no answer.
                return Err(StoreError::Unreplicated { wanted, acked });
            }
            match answer.as_slice() {
                [k] if k == b"set" => Ok(Cas::Set),
                [k] if k == b"outbox_full" => Err(StoreError::OutboxFull(outbox_max)),
                [k] if k == b"current" => Ok(Cas::Current(None)),
                [k, v] if k == b"current" => Ok(Cas::Current(Some(v.clone()))),
                _ => Err(unexpected("a compare-and-set")),
            }
        })
    }

    fn set_add<'a>(&'a self, key: &'a str, member: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let key = self.key(key);
            let _: i64 = self
                .with_conn(|mut c| async move { redis::cmd("SADD").arg(key).arg(member).query_async(&mut c).await })
                .await?;
            Ok(())
        })
    }

    fn set_remove<'a>(&'a self, key: &'a str, member: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let key = self.key(key);
            let _: i64 = self
                .with_conn(|mut c| async move { redis::cmd("SREM").arg(key).arg(member).query_async(&mut c).await })
                .await?;
            Ok(())
        })
    }

    fn set_members<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Vec<String>> {
        Box::pin(async move {
            let key = self.key(key);
            self.with_conn(|mut c| async move { redis::cmd("SMEMBERS").arg(key).query_async(&mut c).await })
                .await
        })
    }

    fn outbox(&self) -> bool {
        self.outbox.is_some()
    }

    fn outbox_read(&self, max: usize) -> StoreFuture<'_, Vec<OutboxEntry>> {
        Box::pin(async move {
            let stream = self.outbox_key();
            let flat: Vec<Vec<u8>> = self
                .with_conn(|mut c| async move { OUTBOX_READ.key(stream).arg(max.max(1)).invoke_async(&mut c).await })
                .await?;
            if !flat.len().is_multiple_of(3) {
                return Err(unexpected("an outbox read"));
            }
            flat.chunks_exact(3)
                .map(|e| {
                    let text = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| unexpected("an outbox entry"));
                    let key = text(&e[1])?;
                    Ok(OutboxEntry {
                        id: text(&e[0])?,
                        key: key.strip_prefix(&self.prefix).unwrap_or(&key).to_owned(),
                        value: e[2].clone(),
                    })
                })
                .collect()
        })
    }

    fn outbox_remove<'a>(&'a self, ids: &'a [String]) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            if ids.is_empty() {
                return Ok(());
            }
            let stream = self.outbox_key();
            let _: i64 = self
                .with_conn(|mut c| async move { redis::cmd("XDEL").arg(stream).arg(ids).query_async(&mut c).await })
                .await?;
            Ok(())
        })
    }

    fn outbox_depth(&self) -> StoreFuture<'_, OutboxDepth> {
        Box::pin(async move {
            let stream = self.outbox_key();
            let (entries, age): (u64, i64) = self
                .with_conn(|mut c| async move { OUTBOX_DEPTH.key(stream).invoke_async(&mut c).await })
                .await?;
            Ok(OutboxDepth {
                entries,
                oldest_age: (age >= 0).then(|| Duration::from_millis(age as u64)),
            })
        })
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let _: String = self
                .with_conn(|mut c| async move { redis::cmd("PING").query_async(&mut c).await })
                .await?;
            Ok(())
        })
    }

    /// `<prefix>lookup:{<record key>}:<lookup>:claim|result`: hash tagged
    /// on the record's key, whose slot is its whole name (it has no braces),
    /// so the claim reads the record in the same slot. A prefix with its
    /// own `{tag}` puts every key in that tag's slot already.
    fn lookup_keys(&self, record: &str, lookup: &str) -> LookupKeys {
        let record = self.key(record);
        let base = format!("{}lookup:{{{record}}}:{lookup}:", self.prefix);
        LookupKeys {
            claim: format!("{base}claim"),
            result: format!("{base}result"),
            record,
        }
    }

    fn claim<'a>(
        &'a self,
        keys: &'a LookupKeys,
        id: &'a str,
        ttl: Duration,
        want_held: bool,
    ) -> StoreFuture<'a, Claim> {
        Box::pin(async move {
            let answer: Vec<Vec<u8>> = self
                .with_conn(|mut c| async move {
                    CLAIM
                        .key(&keys.result)
                        .key(&keys.claim)
                        .key(&keys.record)
                        .arg(id)
                        .arg(ttl_ms(ttl))
                        .arg(if want_held { "1" } else { "0" })
                        .invoke_async(&mut c)
                        .await
                })
                .await?;
            match answer.as_slice() {
                [k, record] if k == b"consumed" => Ok(Claim::Consumed(consume::settled_part(record).to_vec())),
                [k, body, left] if k == b"held" => {
                    let left = std::str::from_utf8(left).ok().and_then(|l| l.parse().ok()).unwrap_or(0);
                    Ok(Claim::Held(body.clone(), Duration::from_millis(left)))
                }
                [k] if k == b"claimed" => Ok(Claim::Claimed),
                [k, other] if k == b"wait" => Ok(Claim::Wait(String::from_utf8_lossy(other).into_owned())),
                _ => Err(unexpected("a lookup claim")),
            }
        })
    }

    fn poll<'a>(&'a self, keys: &'a LookupKeys) -> StoreFuture<'a, Poll> {
        Box::pin(async move {
            let (r, c, record): (Option<Vec<u8>>, Option<String>, Option<Vec<u8>>) = self
                .with_conn(|mut conn| async move {
                    redis::cmd("MGET")
                        .arg(&keys.result)
                        .arg(&keys.claim)
                        .arg(&keys.record)
                        .query_async(&mut conn)
                        .await
                })
                .await?;
            // `<hold until>|<body>` → `<body>`.
            let published = r.and_then(|r| r.iter().position(|&b| b == b'|').map(|i| r[i + 1..].to_vec()));
            // A pending record (`P…`) is no answer here: the holder's
            // publication is.
            let consumed = record.filter(|r| r.first() != Some(&b'P'));
            Ok(Poll {
                published,
                claim: c,
                consumed,
            })
        })
    }

    fn publish<'a>(
        &'a self,
        keys: &'a LookupKeys,
        id: &'a str,
        body: &'a [u8],
        hold: Duration,
        ttl: Duration,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let _: i64 = self
                .with_conn(|mut c| async move {
                    PUBLISH
                        .key(&keys.result)
                        .key(&keys.claim)
                        .arg(id)
                        .arg(body)
                        .arg(hold.as_millis() as u64)
                        .arg(ttl_ms(ttl))
                        .invoke_async(&mut c)
                        .await
                })
                .await?;
            Ok(())
        })
    }

    fn renew<'a>(&'a self, keys: &'a LookupKeys, id: &'a str, ttl: Duration) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let kept: i64 = self
                .with_conn(|mut c| async move {
                    RENEW
                        .key(&keys.claim)
                        .arg(id)
                        .arg(ttl_ms(ttl))
                        .invoke_async(&mut c)
                        .await
                })
                .await?;
            Ok(kept == 1)
        })
    }
}
