//! The replay store: a few atomic operations on short-lived keys, behind
//! one object-safe [`Store`] trait, so the guard and the coalescer never
//! know which backend answers.
//!
//! Invariants every backend keeps:
//! - each operation is atomic for every instance on the same store;
//! - a value past its ttl reads as absent and never blocks a write;
//! - an unreadable answer is an error ([`StoreError`]), never "absent":
//!   failing closed is a 503, failing open would be a second 200;
//! - [`Store::put_if_absent`] never writes after its `deadline`, so a
//!   write whose answer was lost can be ruled out by [`Store::read_back`]
//!   once that deadline is past in the store's own clock.
//!
//! [`Bounded`] puts every operation under the guard's timeout, the
//! in-flight bound and the `settlegate_replay_store_ops_total` counter.
//!
//! Backends: [`memory`] (tests, one process), [`file`] (redb, one
//! instance, durable), [`redis`] (single server or Cluster, shared by
//! every instance). [`conformance`] is the one test suite they all pass.

pub mod conformance;
pub mod fault;
pub mod file;
pub mod memory;
pub mod redis;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tracing::Instrument;

use crate::counters::Resolved;

/// Why the store gave no trustworthy answer. Each is a 503.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("no answer in time")]
    Timeout,
    #[error("connection: {0}")]
    Connection(String),
    #[error("unreadable replay record: {0}")]
    Corrupt(String),
    /// The server refused a command as malformed (an old server, or a
    /// proxy that does not know it).
    #[error("the store refused the command: {0}")]
    Refused(String),
    #[error("the replay guard stopped")]
    Stopped,
    /// As many operations as allowed are waiting on the store already (or
    /// the in-memory store is full).
    #[error("{0} store operations are in flight already")]
    Saturated(usize),
    /// `redis.wait_replicas`: the record did not reach that many replicas
    /// in time, so it was withdrawn (nothing consumed, unless the
    /// withdrawal failed too).
    #[error("the record reached {acked} of {wanted} replicas in time")]
    Unreplicated { wanted: u32, acked: i64 },
    /// `redis.wait_replicas`: another consume of this payment wrote its
    /// record and is still waiting for its replicas; it may yet be
    /// withdrawn, so the record proves nothing until then.
    #[error("a consume of this payment is still waiting for its replicas")]
    Unconfirmed,
    /// The ledger's outbox holds its configured bound of records not yet
    /// written to the ledger: the consume is refused, nothing written, so
    /// no 200 is ever sent without its ledger record.
    #[error("the ledger's outbox is full ({0} records wait for the ledger)")]
    OutboxFull(u64),
}

impl StoreError {
    /// A stable label for metrics and logs.
    pub fn cause(&self) -> &'static str {
        match self {
            StoreError::Timeout => "store_timeout",
            StoreError::Connection(_) => "store_connection",
            StoreError::Corrupt(_) => "store_corrupt_record",
            StoreError::Refused(_) => "store_refused",
            StoreError::Stopped => "store_stopped",
            StoreError::Saturated(_) => "store_saturated",
            StoreError::Unreplicated { .. } => "store_unreplicated",
            StoreError::Unconfirmed => "store_unconfirmed",
            StoreError::OutboxFull(_) => "ledger_outbox_full",
        }
    }

    /// Whether a write may have landed although this error came back
    /// instead of its answer (the command may have been sent).
    pub fn reply_may_be_lost(&self) -> bool {
        matches!(self, StoreError::Timeout | StoreError::Connection(_))
    }
}

/// Why a store cannot be opened (at boot: a configuration error).
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Never quotes the URL: it may carry a password.
    #[error("the redis URL is not usable")]
    UnusableUrl,
    #[error("a single redis server has one URL")]
    OneUrl,
    #[error("the redis pool cannot be built")]
    Pool,
    #[error("replay store {path}: {reason}")]
    File { path: String, reason: String },
}

/// The answer to [`Store::put_if_absent`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Put {
    Inserted,
    /// The value that was there first (and stays).
    Existing(Vec<u8>),
}

/// The answer to [`Store::compare_and_set`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cas {
    Set,
    /// Not set: the value there now (`None`: absent).
    Current(Option<Vec<u8>>),
}

/// What the store knows of a lookup key (the exchange between instances).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// The payment's record (its bytes, never one still waiting for its
    /// replicas): it was consumed, so nobody need ask the node.
    Consumed(Vec<u8>),
    /// A published result still in its hold window, and how much is left.
    Held(Vec<u8>, Duration),
    /// This caller holds the claim now.
    Claimed,
    /// Another caller holds claim `id` (empty: it just ended).
    Wait(String),
}

/// A lookup key's published result (if any) and its claim id now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Poll {
    pub published: Option<Vec<u8>>,
    pub claim: Option<String>,
    /// The payment's record, if the backend reads it cheaply (and it is
    /// not waiting for its replicas).
    pub consumed: Option<Vec<u8>>,
}

/// A consumed record on its way to the ledger ([`Store::outbox_read`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxEntry {
    /// The backend's id of the entry, for [`Store::outbox_remove`].
    pub id: String,
    /// The record's key (`replay:<hash>`, without the backend's prefix).
    pub key: String,
    /// The record's value as consumed (never a copy still pending).
    pub value: Vec<u8>,
}

/// How many records wait in the outbox, and since when.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutboxDepth {
    pub entries: u64,
    /// How long the oldest has waited, in the store's clock.
    pub oldest_age: Option<Duration>,
}

/// Whether a key names a consumed record: its insert is logged.
pub fn is_record_key(key: &str) -> bool {
    key.starts_with("replay:")
}

/// Whether a key names a payment channel's state: each compare-and-set
/// that changes it is logged (the session's events in the books).
pub fn is_channel_key(key: &str) -> bool {
    key.starts_with("channel:")
}

/// The keys of one lookup in the exchange, as its backend names them:
/// made once per lookup by [`Store::lookup_keys`], then passed to every
/// exchange operation of that lookup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LookupKeys {
    /// The payment's consume record: a claim reads it first.
    pub record: String,
    pub claim: String,
    pub result: String,
}

pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// The atomic operations the guard and the coalescer need. Keys are
/// backend-neutral (`replay:<hash>`); a backend may prefix them.
pub trait Store: Send + Sync + 'static {
    /// `redis`, `redis-cluster`, `local`, `memory`.
    fn name(&self) -> &'static str;

    /// The trace attribute `db.system.name`.
    fn system(&self) -> &'static str {
        self.name()
    }

    /// The last moment (unix ms, our clock) a write with `budget` left may
    /// land, so that its answer is back in time.
    fn write_deadline(&self, budget: Duration) -> i64 {
        let budget = budget.as_millis() as i64;
        unix_ms() + budget - CLOCK_MARGIN_MS.min(budget / 2)
    }

    /// Stores `value` for `ttl` unless `key` holds a live value; never
    /// after `deadline` (unix ms): then `Timeout`, nothing written.
    fn put_if_absent<'a>(&'a self, key: &'a str, value: &'a [u8], ttl: Duration, deadline: i64)
    -> StoreFuture<'a, Put>;

    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Vec<u8>>>;

    /// After a [`Store::put_if_absent`] of `value` whose answer was lost:
    /// the value of `key` once no write bounded by `deadline` can land any
    /// more (waiting for the store's clock to pass it). A copy of `value`
    /// that is still provisional (`redis.wait_replicas`) is withdrawn and
    /// reads as absent.
    fn read_back<'a>(&'a self, key: &'a str, value: &'a [u8], deadline: i64) -> StoreFuture<'a, Option<Vec<u8>>> {
        let _ = value;
        Box::pin(async move {
            let wait = deadline + 1 - unix_ms();
            if wait > 0 {
                tokio::time::sleep(Duration::from_millis(wait as u64)).await;
            }
            self.get(key).await
        })
    }

    /// Reserves `key` for `ttl`: `true` for the one caller that gets it.
    fn reserve<'a>(&'a self, key: &'a str, ttl: Duration) -> StoreFuture<'a, bool>;

    fn release<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()>;

    /// One more on the counter `key` unless it is at `cap`; the count
    /// after. The counter lives `ttl` from its first count.
    fn count<'a>(&'a self, key: &'a str, ttl: Duration, cap: u64) -> StoreFuture<'a, u64>;

    /// Sets `key` to `new` for `ttl` if it holds `expected` now (`None`:
    /// absent).
    fn compare_and_set<'a>(
        &'a self,
        key: &'a str,
        expected: Option<&'a [u8]>,
        new: &'a [u8],
        ttl: Duration,
    ) -> StoreFuture<'a, Cas>;

    /// Adds `member` to the set `key` (kept until removed): an index,
    /// such as the channels a settler must watch. Idempotent.
    fn set_add<'a>(&'a self, key: &'a str, member: &'a str) -> StoreFuture<'a, ()>;

    /// Takes `member` out of the set `key`. Idempotent.
    fn set_remove<'a>(&'a self, key: &'a str, member: &'a str) -> StoreFuture<'a, ()>;

    /// The members of the set `key`, in no order (empty when absent).
    fn set_members<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Vec<String>>;

    fn ping(&self) -> StoreFuture<'_, ()>;

    /// Whether this store keeps the ledger's outbox: then every
    /// [`Store::put_if_absent`] that inserts a record ([`is_record_key`])
    /// and every [`Store::compare_and_set`] that sets a channel's state
    /// ([`is_channel_key`]) appends the value written to the outbox in the
    /// same atomic write, or writes nothing (`OutboxFull` at the bound).
    /// Set when the store is opened.
    fn outbox(&self) -> bool {
        false
    }

    /// The oldest `max` records of the outbox, oldest first, that are
    /// final: a record still pending (`redis.wait_replicas`) and all after
    /// it wait for the next read. Reading removes nothing.
    fn outbox_read(&self, max: usize) -> StoreFuture<'_, Vec<OutboxEntry>> {
        let _ = max;
        Box::pin(async { Err(StoreError::Refused("this store keeps no outbox".into())) })
    }

    /// Removes entries read by [`Store::outbox_read`] (once the ledger has
    /// them). Idempotent.
    fn outbox_remove<'a>(&'a self, ids: &'a [String]) -> StoreFuture<'a, ()> {
        let _ = ids;
        Box::pin(async { Err(StoreError::Refused("this store keeps no outbox".into())) })
    }

    fn outbox_depth(&self) -> StoreFuture<'_, OutboxDepth> {
        Box::pin(async { Err(StoreError::Refused("this store keeps no outbox".into())) })
    }

    /// The keys of a lookup of the payment recorded under `record`
    /// (`replay:<hash>`), for what the lookup reads (`lookup`). A shared
    /// backend keeps them in the record's slot.
    fn lookup_keys(&self, record: &str, lookup: &str) -> LookupKeys {
        LookupKeys {
            record: record.to_owned(),
            claim: format!("lookup:{record}:{lookup}:claim"),
            result: format!("lookup:{record}:{lookup}:result"),
        }
    }

    /// The lookup exchange (see `coalescer::exchange`): the payment's
    /// record if it was consumed, else a held result (with `want_held`),
    /// else claims the lookup for `ttl` under `id`. A store for one
    /// instance has nobody to share with: always `Claimed`.
    fn claim<'a>(
        &'a self,
        keys: &'a LookupKeys,
        id: &'a str,
        ttl: Duration,
        want_held: bool,
    ) -> StoreFuture<'a, Claim> {
        let _ = (keys, id, ttl, want_held);
        Box::pin(async { Ok(Claim::Claimed) })
    }

    fn poll<'a>(&'a self, keys: &'a LookupKeys) -> StoreFuture<'a, Poll> {
        let _ = keys;
        Box::pin(async { Ok(Poll::default()) })
    }

    /// Publishes `body` for claim `id` (held `hold` for new claims, kept
    /// `ttl` for polls) and ends the claim, only while it is `id`'s.
    fn publish<'a>(
        &'a self,
        keys: &'a LookupKeys,
        id: &'a str,
        body: &'a [u8],
        hold: Duration,
        ttl: Duration,
    ) -> StoreFuture<'a, ()> {
        let _ = (keys, id, body, hold, ttl);
        Box::pin(async { Ok(()) })
    }

    /// Extends claim `id` to `ttl` from now, if it is still `id`'s.
    fn renew<'a>(&'a self, keys: &'a LookupKeys, id: &'a str, ttl: Duration) -> StoreFuture<'a, bool> {
        let _ = (keys, id, ttl);
        Box::pin(async { Ok(true) })
    }
}

/// How much sooner than its answer is due a write must reach the store:
/// the answer's way back, and the uncertainty of a clock offset.
pub const CLOCK_MARGIN_MS: i64 = 100;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreOpLabels {
    pub op: &'static str,
    pub outcome: &'static str,
}

/// `settlegate_replay_store_ops_total{op, outcome}`: one sample per round
/// trip to the store.
pub type StoreOps = Family<StoreOpLabels, Counter>;

/// [`StoreOps`] with its counters resolved once per (op, outcome).
#[derive(Clone)]
struct OpCounters {
    family: StoreOps,
    resolved: Arc<Resolved<Counter>>,
}

impl OpCounters {
    fn inc(&self, op: &'static str, outcome: &'static str) {
        self.resolved.with(
            op,
            outcome,
            || self.family.get_or_create(&StoreOpLabels { op, outcome }).clone(),
            |c| {
                c.inc();
            },
        );
    }
}

/// A store with its bounds: every operation under `timeout`, at most
/// `max_in_flight` at once (more are `Saturated` at once), each counted
/// and traced. Cheap to clone; the guard and the exchange share one.
#[derive(Clone)]
pub struct Bounded {
    store: Arc<dyn Store>,
    timeout: Duration,
    ops: OpCounters,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: usize,
}

impl Bounded {
    pub fn new(store: Arc<dyn Store>, timeout: Duration, ops: StoreOps) -> Self {
        Bounded {
            store,
            timeout,
            ops: OpCounters {
                family: ops,
                resolved: Arc::default(),
            },
            in_flight: Arc::default(),
            max_in_flight: usize::MAX,
        }
    }

    /// Answers `Saturated` at once rather than queue more than `max`.
    pub fn bound_ops(mut self, max: usize) -> Self {
        self.max_in_flight = max;
        self
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn name(&self) -> &'static str {
        self.store.name()
    }

    /// Runs `op` on the store within `within` (the timeout by default),
    /// counted as `name` with the label `outcome` gives its answer.
    pub fn run<T, F>(
        &self,
        name: &'static str,
        op: impl FnOnce(Arc<dyn Store>) -> F + 'static,
        outcome: fn(&T) -> &'static str,
    ) -> impl Future<Output = Result<T, StoreError>> + 'static
    where
        F: Future<Output = Result<T, StoreError>> + 'static,
        T: 'static,
    {
        self.run_within(self.timeout, name, op, outcome)
    }

    pub fn run_within<T, F>(
        &self,
        within: Duration,
        name: &'static str,
        op: impl FnOnce(Arc<dyn Store>) -> F + 'static,
        outcome: fn(&T) -> &'static str,
    ) -> impl Future<Output = Result<T, StoreError>> + 'static
    where
        F: Future<Output = Result<T, StoreError>> + 'static,
        T: 'static,
    {
        let store = self.store.clone();
        let ops = self.ops.clone();
        let max = self.max_in_flight;
        let slot = InFlight::take(&self.in_flight, max);
        // A child of the current span (the message's), made where the
        // operation is asked for; none when nothing exports traces.
        let span = crate::traces_on().then(|| {
            tracing::info_span!(
                target: crate::TRACE_TARGET,
                "store_op",
                otel.name = name,
                otel.kind = "client",
                db.system.name = store.system(),
                db.operation.name = name,
                outcome = tracing::field::Empty,
                error.type = tracing::field::Empty,
            )
        });
        async move {
            let Some(_slot) = slot else {
                ops.inc(name, "saturated");
                return Err(StoreError::Saturated(max));
            };
            let bounded = tokio::time::timeout(within, op(store));
            let result = match &span {
                Some(span) => bounded.instrument(span.clone()).await,
                None => bounded.await,
            }
            .unwrap_or(Err(StoreError::Timeout));
            let label = result.as_ref().map_or("error", outcome);
            if let Some(span) = &span {
                span.record("outcome", label);
                if let Err(e) = &result {
                    span.record("error.type", e.cause());
                }
            }
            ops.inc(name, label);
            result
        }
    }
}

/// One store operation in flight, counted while it lives.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn take(count: &Arc<AtomicUsize>, max: usize) -> Option<Self> {
        if count.fetch_add(1, Ordering::SeqCst) >= max {
            count.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(InFlight(count.clone()))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// An id unique across instances and calls: a random prefix per process
/// and a counter, rather than a random read (a syscall) per call. Names a
/// lookup claim and a consume's write.
pub fn unique_id() -> String {
    static PREFIX: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let mut id = [0u8; 8];
        match getrandom::fill(&mut id) {
            Ok(()) => hex::encode(id),
            // Unique across instances by time and process at least.
            Err(_) => format!("{:x}-{:x}", unix_ms(), std::process::id()),
        }
    });
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{}-{n:x}", *PREFIX)
}

pub fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A ttl in whole ms, at least 1 (a 0 would mean "forever" to some stores).
pub(crate) fn ttl_ms(ttl: Duration) -> u64 {
    (ttl.as_millis() as u64).max(1)
}

#[cfg(test)]
mod tests;
