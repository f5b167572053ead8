//! `ReplayGuard`: the only authority on whether a payment was consumed.
//!
//! A payment is consumed by one atomic [`Consume`]: `put_if_absent` of its
//! [`ReplayRecord`] under the canonical hash (Redis: `SET NX` in one script
//! that also returns the existing record; the embedded store: one redb write
//! transaction). Exactly one consume of a hash ever gets
//! [`Consumed::Inserted`], whatever the number of requests or instances
//! sharing the store; every other one gets the record that won, so the
//! caller can answer `REPLAYED` or the idempotent replay.
//!
//! In one process, concurrent consumes (and recalls) of one hash are merged
//! into one store round trip: the first goes to the store, the others wait
//! for its answer. A recall that finds nothing is held for a short window
//! (the coalescer's): it only ever refines a refusal (a payment that does
//! not settle now, asked whether it was consumed before), never a 200. Every record the store confirms (inserted or found) is
//! put into the [`ConsumedCache`], a bounded in-process map of consumed
//! hashes that handlers read without a message or a network hop. The cache
//! only ever says "consumed", which is permanent until the record expires;
//! a miss always falls through to the store, so it can never let a second
//! 200 through.
//!
//! Messages: [`Consume`], [`Follow`], [`Expect`], [`Recall`], [`CountRetry`], [`Ping`]. Every store operation is
//! bounded by a timeout and fails closed with a typed [`StoreError`]: an
//! unreadable record is corrupt (503), never free.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use deadpool_redis::redis;
use deadpool_redis::redis::aio::{ConnectionLike, MultiplexedConnection};
use deadpool_redis::redis::cluster_async::ClusterConnection;
use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata};
use settlegate_rules::credential::TxHash;
use settlegate_rules::replay::ReplayRecord;
use tokio::sync::oneshot;
use tracing::Instrument;

/// Why the store gave no trustworthy answer. Each is a 503; none consumes.
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
    /// As many operations as allowed are waiting on the store already.
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
        }
    }
}

/// The answer to a [`Consume`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Consumed {
    /// This request consumed the payment: it may answer 200.
    Inserted,
    /// Already consumed (by this record): never a second 200.
    Existing(Arc<ReplayRecord>),
}

/// Consume `hash` with `record` if nobody has; `record.expires_at` bounds
/// its life in the store.
#[derive(Message)]
#[rtype(result = "Result<Consumed, StoreError>")]
pub struct Consume {
    pub hash: TxHash,
    pub record: ReplayRecord,
}

/// If `hash` is consumed, or a consume of it is in flight in this process,
/// the record that consumed it (waiting for the one in flight); `None` when
/// this process knows of neither. For a check that would settle on facts
/// held from an earlier lookup: it may follow that lookup's consume, but
/// never consume on its own.
#[derive(Message)]
#[rtype(result = "Result<Option<Arc<ReplayRecord>>, StoreError>")]
pub struct Follow(pub TxHash);

/// Sent by the `Coalescer` when a lookup found a mined, successful
/// transaction, before it wakes that lookup's waiters or answers anyone
/// from the held result: some of those waiters are about to consume it.
/// Until `until`, a [`Follow`] of `hash` waits for that consume instead of
/// answering "nothing known" in the moment before it starts. Mailbox order
/// makes this exact: the waiters' consumes and any later follow are sent
/// after this message.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Expect {
    pub hash: TxHash,
    pub until: Instant,
}

/// The record of `hash`, if it was consumed.
#[derive(Message)]
#[rtype(result = "Result<Option<Arc<ReplayRecord>>, StoreError>")]
pub struct Recall(pub TxHash);

/// [`Recall`] from the store now, even if a recall just found nothing
/// (for a check waiting for another instance's consume).
#[derive(Message)]
#[rtype(result = "Result<Option<Arc<ReplayRecord>>, StoreError>")]
pub struct RecallNow(pub TxHash);

/// Reserves the broadcast of a signed transaction (a pull-mode `Payment`
/// credential) for `ttl`: `true` for the one presentation, across every
/// instance on the store, that may broadcast it; `false` while another holds
/// it. Two presentations of one transaction never both broadcast it, and
/// the consume after it stays the usual `put_if_absent`, so they never both
/// settle it either.
#[derive(Message)]
#[rtype(result = "Result<bool, StoreError>")]
pub struct Reserve {
    pub hash: TxHash,
    pub ttl: Duration,
}

/// Counts one idempotent retry of consumed payment `hash`, atomically
/// across every instance on the store: the count after this one (the first
/// retry is 1). The count lives `ttl` from the first retry (past the retry
/// window, so it never restarts inside it) and stops growing at `cap`. An
/// error is a 503, never a retry let through uncounted.
#[derive(Message)]
#[rtype(result = "Result<u64, StoreError>")]
pub struct CountRetry {
    pub hash: TxHash,
    pub ttl: Duration,
    pub cap: u64,
}

/// Gives a reservation up (the broadcast failed and may be retried).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Release(pub TxHash);

/// Cross-instance coalescing (Redis only; see `coalescer`): what the store
/// knows of one lookup key.
#[derive(Debug, PartialEq, Eq)]
pub enum LookupClaim {
    /// A result another instance published, still in its hold window:
    /// `<id>|F<facts JSON>` (never an error), and how much of it is left.
    Held(String, Duration),
    /// This instance holds the claim now: it looks up, then publishes.
    Claimed,
    /// Another instance holds claim `id` (empty: it just ended): wait for
    /// its result.
    Wait(String),
}

/// Returns a held result (with `want_held`), or claims `key` for `ttl`
/// under `id` when nobody holds it, in one atomic round trip.
#[derive(Message)]
#[rtype(result = "Result<LookupClaim, StoreError>")]
pub struct ClaimLookup {
    pub key: String,
    pub id: String,
    pub ttl: Duration,
    pub want_held: bool,
}

/// The published result (`<id>|<body>`) and the claim id of `key` now.
#[derive(Message)]
#[rtype(result = "Result<(Option<String>, Option<String>), StoreError>")]
pub struct PollLookup(pub String);

/// Publishes the result of claim `id` (`body` is `F<facts JSON>`,
/// `E<error>` or `A`, gave up), held `hold` for new checks (facts only) and
/// readable by the claim's waiters for `ttl`, and ends the claim; only
/// while the claim is still `id`'s (a late result never overwrites a newer
/// one).
#[derive(Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct PublishLookup {
    pub key: String,
    pub id: String,
    pub body: String,
    pub hold: Duration,
    pub ttl: Duration,
}

/// Extends claim `id` to `ttl` from now, if it is still `id`'s (`false`:
/// it is not).
#[derive(Message)]
#[rtype(result = "Result<bool, StoreError>")]
pub struct RenewLookup {
    pub key: String,
    pub id: String,
    pub ttl: Duration,
}

/// Whether the store answers (for `/readyz`).
#[derive(Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct Ping;

/// A bounded in-process map of consumed hashes to their records. Cheap to
/// clone; read by handlers directly. Entries leave at their record's expiry
/// or when the cache is full (then the store answers instead).
#[derive(Clone)]
pub struct ConsumedCache {
    inner: Option<Arc<quick_cache::sync::Cache<TxHash, Arc<ReplayRecord>>>>,
    hits: Counter,
}

impl ConsumedCache {
    /// `capacity` 0 turns the cache off.
    pub fn new(capacity: usize, hits: Counter) -> Self {
        ConsumedCache {
            inner: (capacity > 0).then(|| Arc::new(quick_cache::sync::Cache::new(capacity))),
            hits,
        }
    }

    pub fn get(&self, hash: &TxHash) -> Option<Arc<ReplayRecord>> {
        let cache = self.inner.as_ref()?;
        let record = cache.get(hash)?;
        if record.expires_at <= unix_now() {
            cache.remove(hash);
            return None;
        }
        self.hits.inc();
        Some(record)
    }

    fn insert(&self, hash: TxHash, record: Arc<ReplayRecord>) {
        if let Some(cache) = &self.inner
            && record.expires_at > unix_now()
        {
            cache.insert(hash, record);
        }
    }

    pub fn len(&self) -> usize {
        self.inner.as_ref().map_or(0, |c| c.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreOpLabels {
    pub op: &'static str,
    pub outcome: &'static str,
}

/// `settlegate_replay_store_ops_total{op, outcome}`: one sample per round
/// trip to the store.
pub type StoreOps = Family<StoreOpLabels, Counter>;

#[derive(Clone)]
enum Backend {
    Redis(Arc<RedisStore>),
    Local(Arc<LocalStore>),
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;
type Found = Option<Arc<ReplayRecord>>;

struct PendingConsume {
    record: Arc<ReplayRecord>,
    first: Reply<Consumed>,
    others: Vec<Reply<Consumed>>,
}

pub struct ReplayGuard {
    backend: Backend,
    timeout: Duration,
    cache: ConsumedCache,
    ops: StoreOps,
    consuming: HashMap<TxHash, PendingConsume>,
    recalling: HashMap<TxHash, Vec<Reply<Found>>>,
    /// Recalls that found nothing, until when they keep answering.
    absent: HashMap<TxHash, Instant>,
    /// Consumes announced by [`Expect`], with the follows waiting for them.
    expected: HashMap<TxHash, (Instant, Vec<Reply<Consumed>>)>,
    absent_for: Duration,
    /// Broadcast reservations of the local backend (one instance).
    reserved: HashMap<TxHash, Instant>,
    /// Store operations in flight, and how many may be.
    in_flight: Arc<std::sync::atomic::AtomicUsize>,
    max_in_flight: usize,
}

/// One store operation in flight, counted while it lives.
struct InFlight(Arc<std::sync::atomic::AtomicUsize>);

impl InFlight {
    fn take(count: &Arc<std::sync::atomic::AtomicUsize>, max: usize) -> Option<Self> {
        use std::sync::atomic::Ordering::SeqCst;
        if count.fetch_add(1, SeqCst) >= max {
            count.fetch_sub(1, SeqCst);
            return None;
        }
        Some(InFlight(count.clone()))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Held "not consumed" answers beyond this many are not kept.
const MAX_ABSENT: usize = 16_384;

impl ReplayGuard {
    /// A Redis-backed guard. The pool connects lazily: an unreachable Redis
    /// shows in `/readyz` and as 503s, it does not stop the boot.
    pub fn redis(
        target: &RedisTarget,
        prefix: &str,
        timeout: Duration,
        cache: ConsumedCache,
        ops: StoreOps,
    ) -> Result<Self, String> {
        let store = RedisStore {
            connector: Connector::new(target, timeout)?,
            creating: tokio::sync::Mutex::new(()),
            prefix: prefix.to_owned(),
            shared: Mutex::new(None),
            set_nx_get: AtomicBool::new(true),
            clock_offset_ms: std::sync::atomic::AtomicI64::new(i64::MIN),
            deadlines: AtomicBool::new(true),
            wait_replicas: target.wait_replicas,
        };
        Ok(Self::with_backend(Backend::Redis(Arc::new(store)), timeout, cache, ops))
    }

    /// A guard on a local file, for a single instance.
    pub fn local(path: &Path, timeout: Duration, cache: ConsumedCache, ops: StoreOps) -> Result<Self, String> {
        let store = LocalStore::open(path)?;
        Ok(Self::with_backend(Backend::Local(Arc::new(store)), timeout, cache, ops))
    }

    fn with_backend(backend: Backend, timeout: Duration, cache: ConsumedCache, ops: StoreOps) -> Self {
        ReplayGuard {
            backend,
            timeout,
            cache,
            ops,
            consuming: HashMap::new(),
            recalling: HashMap::new(),
            absent: HashMap::new(),
            absent_for: Duration::ZERO,
            expected: HashMap::new(),
            reserved: HashMap::new(),
            in_flight: Arc::default(),
            max_in_flight: usize::MAX,
        }
    }

    /// Answers `Saturated` at once rather than queue more than `max`
    /// operations on the store.
    pub fn bound_ops(mut self, max: usize) -> Self {
        self.max_in_flight = max;
        self
    }

    /// Holds a recall that found nothing for `window` (0: not at all).
    pub fn hold_absent_for(mut self, window: Duration) -> Self {
        self.absent_for = window;
        self
    }

    pub fn backend_name(&self) -> &'static str {
        match &self.backend {
            Backend::Redis(r) if matches!(r.connector, Connector::Cluster(..)) => "redis-cluster",
            Backend::Redis(_) => "redis",
            Backend::Local(_) => "local",
        }
    }

    /// Runs `op` against the backend with the guard's timeout, counting it.
    fn run<T, F>(
        &self,
        name: &'static str,
        op: impl FnOnce(Backend) -> F + 'static,
        outcome: fn(&T) -> &'static str,
    ) -> impl Future<Output = Result<T, StoreError>> + 'static
    where
        F: Future<Output = Result<T, StoreError>> + 'static,
        T: 'static,
    {
        let backend = self.backend.clone();
        let timeout = self.timeout;
        let ops = self.ops.clone();
        let max = self.max_in_flight;
        let slot = InFlight::take(&self.in_flight, max);
        // The operation runs in a spawned task: its span names its parent
        // (the message's) explicitly.
        let span = tracing::info_span!(
            target: crate::TRACE_TARGET,
            "store_op",
            otel.name = name,
            otel.kind = "client",
            db.system.name = match &backend {
                Backend::Redis(_) => "redis",
                Backend::Local(_) => "redb",
            },
            db.operation.name = name,
            outcome = tracing::field::Empty,
            error.type = tracing::field::Empty,
        );
        async move {
            let Some(_slot) = slot else {
                ops.get_or_create(&StoreOpLabels {
                    op: name,
                    outcome: "saturated",
                })
                .inc();
                return Err(StoreError::Saturated(max));
            };
            let result = tokio::time::timeout(timeout, op(backend))
                .instrument(span.clone())
                .await
                .unwrap_or(Err(StoreError::Timeout));
            let label = result.as_ref().map_or("error", outcome);
            span.record("outcome", label);
            if let Err(e) = &result {
                span.record("error.type", e.cause());
            }
            ops.get_or_create(&StoreOpLabels {
                op: name,
                outcome: label,
            })
            .inc();
            result
        }
    }
}

impl Actor for ReplayGuard {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        crate::unbounded_mailbox(ctx);
        if !self.absent_for.is_zero() {
            let every = self.absent_for.max(Duration::from_millis(100));
            ctx.run_interval(every, |act, _| {
                let now = Instant::now();
                act.absent.retain(|_, until| *until > now);
                // Unmet expectations: their follows have timed out already.
                act.expected.retain(|_, (until, _)| *until > now);
            });
        }
    }
}

/// Internal: a consume reached the store and came back.
#[derive(Message)]
#[rtype(result = "()")]
struct ConsumeDone(TxHash, Result<Consumed, StoreError>);

/// Internal: a recall came back.
#[derive(Message)]
#[rtype(result = "()")]
struct RecallDone(TxHash, Result<Found, StoreError>);

fn reply<T: Send + 'static>(rx: oneshot::Receiver<Result<T, StoreError>>) -> ResponseFuture<Result<T, StoreError>> {
    Box::pin(async move { rx.await.unwrap_or(Err(StoreError::Stopped)) })
}

impl Handler<Consume> for ReplayGuard {
    type Result = ResponseFuture<Result<Consumed, StoreError>>;

    fn handle(&mut self, Consume { hash, record }: Consume, ctx: &mut Self::Context) -> Self::Result {
        if let Some(existing) = self.cache.get(&hash) {
            return Box::pin(async move { Ok(Consumed::Existing(existing)) });
        }
        let (tx, rx) = oneshot::channel();
        if let Some(pending) = self.consuming.get_mut(&hash) {
            pending.others.push(tx);
            return reply(rx);
        }
        let record = Arc::new(record);
        // Follows that waited for this consume now wait for its answer.
        let others = self.expected.remove(&hash).map(|(_, f)| f).unwrap_or_default();
        self.consuming.insert(
            hash,
            PendingConsume {
                record: record.clone(),
                first: tx,
                others,
            },
        );
        // The store op's own bound, in wall-clock time for the server.
        // before the local timeout by a margin (its reply must be back in
        // time), half the timeout at most
        let budget = self.timeout.as_millis() as i64;
        // Waiting for replicas: a third of the budget for the consume, a
        // third for the replicas, the last for withdrawing an unconfirmed
        // record, so it is never left behind by the timeout.
        let waits = matches!(&self.backend, Backend::Redis(r) if r.wait_replicas > 0);
        let (deadline, wait_ms) = if waits {
            (unix_ms() + budget / 3, (budget / 3) as u64)
        } else {
            (unix_ms() + budget - CLOCK_MARGIN_MS.min(budget / 2), 0)
        };
        let op = self.run(
            "put_if_absent",
            move |b| async move { put_if_absent(b, hash, &record, deadline, wait_ms).await },
            |c| match c {
                Consumed::Inserted => "inserted",
                Consumed::Existing(_) => "existing",
            },
        );
        let me = ctx.address();
        actix::spawn(async move { me.do_send(ConsumeDone(hash, op.await)) });
        reply(rx)
    }
}

impl Handler<ConsumeDone> for ReplayGuard {
    type Result = ();

    fn handle(&mut self, ConsumeDone(hash, result): ConsumeDone, _: &mut Self::Context) {
        let Some(pending) = self.consuming.remove(&hash) else {
            return;
        };
        // What the others learn: the record that consumed the payment.
        let winner = match &result {
            Ok(Consumed::Inserted) => Ok(pending.record.clone()),
            Ok(Consumed::Existing(r)) => Ok(r.clone()),
            Err(e) => Err(e.clone()),
        };
        if let Ok(r) = &winner {
            self.cache.insert(hash, r.clone());
        }
        let _ = pending.first.send(result);
        for other in pending.others {
            let _ = other.send(winner.clone().map(Consumed::Existing));
        }
    }
}

impl Handler<Expect> for ReplayGuard {
    type Result = ();

    fn handle(&mut self, Expect { hash, until }: Expect, _: &mut Self::Context) {
        if self.consuming.contains_key(&hash) || self.cache.get(&hash).is_some() {
            return;
        }
        // No timer per expectation (an actor polls every timer of its
        // context on each message): a follow bounds its own wait, and the
        // periodic sweep drops expectations nobody met.
        let entry = self.expected.entry(hash).or_insert((until, Vec::new()));
        entry.0 = entry.0.max(until);
    }
}

impl Handler<Follow> for ReplayGuard {
    type Result = ResponseFuture<Result<Option<Arc<ReplayRecord>>, StoreError>>;

    fn handle(&mut self, Follow(hash): Follow, _: &mut Self::Context) -> Self::Result {
        if let Some(existing) = self.cache.get(&hash) {
            return Box::pin(async move { Ok(Some(existing)) });
        }
        let (tx, rx) = oneshot::channel();
        // A consume in flight answers within the store timeout; an
        // expected one may never start: wait for it no longer than announced.
        let mut wait_until = None;
        if let Some(pending) = self.consuming.get_mut(&hash) {
            pending.others.push(tx);
        } else {
            match self.expected.get_mut(&hash) {
                Some((until, followers)) if Instant::now() < *until => {
                    followers.push(tx);
                    wait_until = Some(*until);
                }
                _ => return Box::pin(async { Ok(None) }),
            }
        }
        Box::pin(async move {
            let answer = match wait_until {
                Some(until) => match tokio::time::timeout_at(until.into(), rx).await {
                    Ok(a) => a,
                    Err(_) => return Ok(None),
                },
                None => rx.await,
            };
            match answer {
                Ok(Ok(Consumed::Existing(r))) => Ok(Some(r)),
                Ok(Err(e)) => Err(e),
                // `others` only ever receive the winner's record; a dropped
                // sender is an expectation nobody met: look again.
                Ok(Ok(Consumed::Inserted)) | Err(_) => Ok(None),
            }
        })
    }
}

impl Handler<Recall> for ReplayGuard {
    type Result = ResponseFuture<Result<Found, StoreError>>;

    fn handle(&mut self, Recall(hash): Recall, ctx: &mut Self::Context) -> Self::Result {
        if let Some(until) = self.absent.get(&hash) {
            if Instant::now() < *until && self.cache.get(&hash).is_none() {
                return Box::pin(async { Ok(None) });
            }
            self.absent.remove(&hash);
        }
        self.recall(hash, ctx)
    }
}

impl Handler<RecallNow> for ReplayGuard {
    type Result = ResponseFuture<Result<Found, StoreError>>;

    fn handle(&mut self, RecallNow(hash): RecallNow, ctx: &mut Self::Context) -> Self::Result {
        self.recall(hash, ctx)
    }
}

impl ReplayGuard {
    /// The record of `hash`: from the cache, or from the store (one read
    /// for every recall that arrives while it runs).
    fn recall(&mut self, hash: TxHash, ctx: &mut Context<Self>) -> ResponseFuture<Result<Found, StoreError>> {
        if let Some(existing) = self.cache.get(&hash) {
            return Box::pin(async move { Ok(Some(existing)) });
        }
        let (tx, rx) = oneshot::channel();
        if let Some(waiting) = self.recalling.get_mut(&hash) {
            waiting.push(tx);
            return reply(rx);
        }
        self.recalling.insert(hash, vec![tx]);
        let op = self.run(
            "get",
            move |b| async move { get(b, hash).await },
            |f| if f.is_some() { "found" } else { "absent" },
        );
        let me = ctx.address();
        actix::spawn(async move { me.do_send(RecallDone(hash, op.await)) });
        reply(rx)
    }
}

impl Handler<RecallDone> for ReplayGuard {
    type Result = ();

    fn handle(&mut self, RecallDone(hash, result): RecallDone, _: &mut Self::Context) {
        match &result {
            Ok(Some(r)) => self.cache.insert(hash, r.clone()),
            Ok(None) if !self.absent_for.is_zero() && self.absent.len() < MAX_ABSENT => {
                self.absent.insert(hash, Instant::now() + self.absent_for);
            }
            _ => {}
        }
        for waiter in self.recalling.remove(&hash).unwrap_or_default() {
            let _ = waiter.send(result.clone());
        }
    }
}

impl Handler<Reserve> for ReplayGuard {
    type Result = ResponseFuture<Result<bool, StoreError>>;

    fn handle(&mut self, Reserve { hash, ttl }: Reserve, _: &mut Self::Context) -> Self::Result {
        if let Backend::Local(_) = self.backend {
            let now = Instant::now();
            if self.reserved.len() >= MAX_ABSENT {
                self.reserved.retain(|_, until| *until > now);
            }
            let free = self.reserved.get(&hash).is_none_or(|until| *until <= now);
            if free {
                self.reserved.insert(hash, now + ttl);
            }
            return Box::pin(async move { Ok(free) });
        }
        let ttl_ms = ttl.as_millis().max(1) as u64;
        Box::pin(self.run(
            "reserve",
            move |b| async move {
                match b {
                    Backend::Redis(r) => r.reserve(&hash, ttl_ms).await,
                    Backend::Local(_) => Ok(true),
                }
            },
            |won| if *won { "reserved" } else { "held" },
        ))
    }
}

impl Handler<Release> for ReplayGuard {
    type Result = ();

    fn handle(&mut self, Release(hash): Release, ctx: &mut Self::Context) {
        if self.reserved.remove(&hash).is_some() {
            return;
        }
        let release = self.run(
            "release",
            move |b| async move {
                match b {
                    Backend::Redis(r) => r.release(&hash).await,
                    Backend::Local(_) => Ok(()),
                }
            },
            |_| "ok",
        );
        ctx.spawn(
            async move {
                if let Err(e) = release.await {
                    // It expires by itself; until then a retry looks up.
                    tracing::warn!(tx_hash = %hash, error = %e, "could not release a broadcast reservation");
                }
            }
            .into_actor(self),
        );
    }
}

impl Handler<CountRetry> for ReplayGuard {
    type Result = ResponseFuture<Result<u64, StoreError>>;

    fn handle(&mut self, CountRetry { hash, ttl, cap }: CountRetry, _: &mut Self::Context) -> Self::Result {
        let ttl_ms = ttl.as_millis().max(1) as u64;
        Box::pin(self.run(
            "count_retry",
            move |b| async move {
                match b {
                    Backend::Redis(r) => r.count_retry(&hash, ttl_ms, cap).await,
                    Backend::Local(store) => {
                        let hash = hash.to_string();
                        blocking(move || store.count_retry(&hash, ttl_ms, cap)).await
                    }
                }
            },
            |_| "counted",
        ))
    }
}

impl Handler<ClaimLookup> for ReplayGuard {
    type Result = ResponseFuture<Result<LookupClaim, StoreError>>;

    fn handle(&mut self, m: ClaimLookup, _: &mut Self::Context) -> Self::Result {
        let ttl_ms = m.ttl.as_millis().max(1) as u64;
        Box::pin(self.run(
            "lookup_claim",
            move |b| async move {
                match b {
                    Backend::Redis(r) => r.claim_lookup(&m.key, &m.id, ttl_ms, m.want_held).await,
                    // One instance: nobody to share with.
                    Backend::Local(_) => Ok(LookupClaim::Claimed),
                }
            },
            |c| match c {
                LookupClaim::Held(..) => "held",
                LookupClaim::Claimed => "claimed",
                LookupClaim::Wait(_) => "wait",
            },
        ))
    }
}

impl Handler<PollLookup> for ReplayGuard {
    type Result = ResponseFuture<Result<(Option<String>, Option<String>), StoreError>>;

    fn handle(&mut self, PollLookup(key): PollLookup, _: &mut Self::Context) -> Self::Result {
        Box::pin(self.run(
            "lookup_poll",
            move |b| async move {
                match b {
                    Backend::Redis(r) => r.poll_lookup(&key).await,
                    Backend::Local(_) => Ok((None, None)),
                }
            },
            |(result, _)| if result.is_some() { "published" } else { "waiting" },
        ))
    }
}

impl Handler<PublishLookup> for ReplayGuard {
    type Result = ResponseFuture<Result<(), StoreError>>;

    fn handle(&mut self, m: PublishLookup, _: &mut Self::Context) -> Self::Result {
        let hold_ms = m.hold.as_millis() as u64;
        let ttl_ms = m.ttl.as_millis().max(1) as u64;
        Box::pin(self.run(
            "lookup_publish",
            move |b| async move {
                match b {
                    Backend::Redis(r) => r.publish_lookup(&m.key, &m.id, &m.body, hold_ms, ttl_ms).await,
                    Backend::Local(_) => Ok(()),
                }
            },
            |_| "ok",
        ))
    }
}

impl Handler<RenewLookup> for ReplayGuard {
    type Result = ResponseFuture<Result<bool, StoreError>>;

    fn handle(&mut self, m: RenewLookup, _: &mut Self::Context) -> Self::Result {
        let ttl_ms = m.ttl.as_millis().max(1) as u64;
        Box::pin(self.run(
            "lookup_renew",
            move |b| async move {
                match b {
                    Backend::Redis(r) => r.renew_lookup(&m.key, &m.id, ttl_ms).await,
                    Backend::Local(_) => Ok(true),
                }
            },
            |kept| if *kept { "renewed" } else { "lost" },
        ))
    }
}

impl Handler<Ping> for ReplayGuard {
    type Result = ResponseFuture<Result<(), StoreError>>;

    fn handle(&mut self, _: Ping, _: &mut Self::Context) -> Self::Result {
        Box::pin(self.run(
            "ping",
            |b| async move {
                match b {
                    Backend::Redis(r) => r.ping().await,
                    Backend::Local(_) => Ok(()),
                }
            },
            |_| "ok",
        ))
    }
}

/// The same as `SET … NX PX … GET` for servers older than Redis 7.0, which
/// refuse `NX` with `GET`: one atomic round trip either way, and one key, so
/// it stays in one slot of a cluster.
const PUT_IF_ABSENT: &str = "if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return false end \
     return redis.call('GET', KEYS[1])";

/// Cross-instance lookups. KEYS[1] the published result, KEYS[2] the
/// claim; both hash-tagged on the lookup key, so one slot of a cluster.
/// Results are stored as `<hold until, server ms>|<claim id>|<body>`; the
/// server's clock decides the hold, so instances' clocks need not agree.
/// (TIME before a write needs effects replication: Redis 5 and later.)
const CLAIM_LOOKUP: &str = "\
local r = redis.call('GET', KEYS[1])
if r and ARGV[3] == '1' then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local a = string.find(r, '|', 1, true)
  local b = a and string.find(r, '|', a + 1, true)
  local untilms = a and tonumber(string.sub(r, 1, a - 1)) or 0
  if b and untilms > now and string.sub(r, b + 1, b + 1) == 'F' then
    return {'held', string.sub(r, a + 1), tostring(untilms - now)}
  end
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {'claimed'} end
return {'wait', redis.call('GET', KEYS[2]) or ''}";

/// ARGV: id, body, hold ms, ttl ms. Only the claim's holder publishes.
const PUBLISH_LOOKUP: &str = "\
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('SET', KEYS[1], (now + tonumber(ARGV[3])) .. '|' .. ARGV[1] .. '|' .. ARGV[2], 'PX', ARGV[4])
redis.call('DEL', KEYS[2])
return 1";

/// KEYS[1] a payment's retry count; ARGV: ttl ms (set by the first
/// retry), cap. One more, unless at the cap already; the count after.
const COUNT_RETRY: &str = "\
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n >= tonumber(ARGV[2]) then return n end
n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n";

static COUNT_RETRY_SCRIPT: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(COUNT_RETRY));

/// KEYS[1] the claim; ARGV: id, ttl ms.
const RENEW_LOOKUP: &str = "\
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0";

/// How much sooner than the store timeout a consume must reach the server:
/// its reply's way back, and the uncertainty of the clock offset.
const CLOCK_MARGIN_MS: i64 = 100;

/// Consume with a deadline in the server's clock. KEYS[1] the record;
/// ARGV: record, ttl ms, deadline (server unix ms). A record still
/// [pending](pending) is in flight, not an answer.
const CONSUME_BEFORE: &str = "\
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now > tonumber(ARGV[3]) then return {'late'} end
local existing = redis.call('GET', KEYS[1])
if existing then
  local u = string.match(existing, '^P(%d+)|')
  if u and now < tonumber(u) then return {'inflight'} end
  return {'existing', existing}
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {'inserted'}";

/// KEYS[1] a record; ARGV: the pending record we wrote, the end of its
/// pending time (server unix ms). Deletes it if unchanged and still
/// pending (1); 0: not ours; -1: too late, it stands.
const WITHDRAW: &str = "\
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local t = redis.call('TIME')
if tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) >= tonumber(ARGV[2]) then return -1 end
return redis.call('DEL', KEYS[1])";

/// KEYS[1] a record confirmed by its replicas; ARGV: the pending record we
/// wrote, the record. Replaces the first by the second, same expiry.
const PROMOTE: &str = "\
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then redis.call('SET', KEYS[1], ARGV[2], 'PX', ttl) end
return 1";

static PROMOTE_SCRIPT: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| redis::Script::new(PROMOTE));

/// KEYS[1] a record whose `GET` was pending: {'inflight'} while it is,
/// else {'found', record} (or {} if it went).
const READ_SETTLED: &str = "\
local v = redis.call('GET', KEYS[1])
if not v then return {} end
local u = string.match(v, '^P(%d+)|')
if u then
  local t = redis.call('TIME')
  if tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) < tonumber(u) then return {'inflight'} end
end
return {'found', v}";

static READ_SETTLED_SCRIPT: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(READ_SETTLED));

/// A record written under `redis.wait_replicas` is *pending* until its
/// writer's store budget is over, `until_ms` in the server's clock:
/// `P<until_ms>|<record>`. While it is, the writer may withdraw it (WAIT
/// found too few replicas), so every reader answers 503
/// ([`StoreError::Unconfirmed`]) and nobody caches it; afterwards the
/// withdrawal is refused by the server and the record reads as consumed.
/// Without this, another instance could serve a record's idempotent 200
/// and then see it withdrawn: one payment, any number of 200s.
fn pending(until_ms: i64, encoded: &str) -> String {
    format!("P{until_ms}|{encoded}")
}

/// The record in a stored value, pending or not.
fn settled_part(raw: &[u8]) -> &[u8] {
    match raw.first() {
        Some(b'P') => raw.iter().position(|&b| b == b'|').map_or(raw, |i| &raw[i + 1..]),
        _ => raw,
    }
}

static WITHDRAW_SCRIPT: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| redis::Script::new(WITHDRAW));

/// `WAIT wanted ms` on `conn`; on a cluster, at the primary that owns
/// `key`'s slot (where the record was written, unless the slot was
/// migrating: then the importing node wrote it and this confirms less).
async fn wait_for_replicas(conn: &mut Conn, key: &str, wanted: u32, ms: u64) -> redis::RedisResult<i64> {
    use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
    let mut cmd = redis::cmd("WAIT");
    cmd.arg(wanted).arg(ms);
    match conn {
        Conn::Single(c) => cmd.query_async(c).await,
        Conn::Cluster(c) => {
            let route = Route::with_key(key, SlotAddr::Master);
            let v = c
                .route_command(cmd, RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route)))
                .await?;
            Ok(redis::from_redis_value(v)?)
        }
    }
}

static CONSUME_SCRIPT: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(CONSUME_BEFORE));

/// Each script hashed once (`EVALSHA`, then `EVAL` when the server has
/// not seen it).
static CLAIM_SCRIPT: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| redis::Script::new(CLAIM_LOOKUP));
static PUBLISH_SCRIPT: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(PUBLISH_LOOKUP));
static RENEW_SCRIPT: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| redis::Script::new(RENEW_LOOKUP));

/// The Redis backend. The [`Connector`] makes connections; since a
/// redis-rs `MultiplexedConnection` (or `ClusterConnection`) pipelines any
/// number of concurrent commands, the store keeps one and clones it for
/// each operation rather than checking one out of a pool, which would cost
/// a recycle round trip (`UNWATCH` + `PING`) per operation. A connection
/// that fails or times out is dropped; the next operation makes a fresh one.
///
/// On a cluster every operation stays in one slot: a record is one key, a
/// lookup's claim and result share a hash tag.
struct RedisStore {
    connector: Connector,
    /// Held while a connection is being made.
    creating: tokio::sync::Mutex<()>,
    prefix: String,
    shared: Mutex<Option<Conn>>,
    /// Whether the server takes `SET … NX GET` (Redis 7.0 and later).
    set_nx_get: AtomicBool,
    /// The server's clock minus ours, in ms (`i64::MIN`: not measured on
    /// this connection yet), for consume deadlines in the server's time.
    clock_offset_ms: std::sync::atomic::AtomicI64,
    /// Whether the server runs the deadline script (TIME before a write:
    /// Redis 5 and later).
    deadlines: AtomicBool,
    /// Replicas a new record must reach (`WAIT`) before its 200; 0: none.
    wait_replicas: u32,
}

impl RedisStore {
    async fn conn(&self) -> Result<Conn, StoreError> {
        if let Some(c) = self.shared.lock().as_ref() {
            return Ok(c.clone());
        }
        // One connection is made at a time: a burst of operations after a
        // failure waits for it (each within its timeout) rather than open
        // one each.
        let _creating = self.creating.lock().await;
        if let Some(c) = self.shared.lock().as_ref() {
            return Ok(c.clone());
        }
        let fresh = self.connector.connect().await?;
        let mut slot = self.shared.lock();
        Ok(slot.get_or_insert(fresh).clone())
    }

    /// Runs `op` on the shared connection; a failed connection is dropped.
    async fn with_conn<T, F>(&self, op: impl FnOnce(Conn) -> F) -> Result<T, StoreError>
    where
        F: Future<Output = Result<T, redis::RedisError>>,
    {
        let conn = self.conn().await?;
        // Dropped unless the operation completes: a timeout cancels it here.
        let mut drop_guard = ForgetOnDrop(Some((&self.shared, &self.clock_offset_ms)));
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

    /// The server's clock minus ours, measured at the first consume.
    async fn clock_offset(&self) -> Result<i64, StoreError> {
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
        // consume (whose margin covers it), kept only when it was quick.
        if after - before <= 2 * CLOCK_MARGIN_MS / 5 {
            self.clock_offset_ms.store(offset, Ordering::Relaxed);
        }
        Ok(offset - (after - before) / 2)
    }

    /// Consumes `hash` unless the server sees the command after `deadline`
    /// (our unix ms): a consume still queued when its request was answered
    /// 503 (a paused or stalled server) must never land later, or the
    /// payment would be spent without its 200.
    async fn put_if_absent(
        &self,
        hash: &TxHash,
        encoded: String,
        ttl_ms: u64,
        deadline: i64,
        wait_ms: u64,
    ) -> Result<Consumed, StoreError> {
        let key = key(&self.prefix, hash);
        let wanted = self.wait_replicas;
        if self.deadlines.load(Ordering::Relaxed) {
            let server_deadline = deadline + self.clock_offset().await?;
            // Pending until the end of the budget: the consume's third,
            // the replicas' and the withdrawal's, and the clock's margin.
            let until = server_deadline + 2 * wait_ms as i64 + CLOCK_MARGIN_MS;
            let encoded = if wanted > 0 {
                pending(until, &encoded)
            } else {
                encoded.clone()
            };
            let attempt: Result<(Vec<String>, Option<redis::RedisResult<i64>>), StoreError> = self
                .with_conn(|mut c| {
                    let (key, encoded) = (key.clone(), encoded.clone());
                    async move {
                        let answer: Vec<String> = CONSUME_SCRIPT
                            .key(&key)
                            .arg(&encoded)
                            .arg(ttl_ms)
                            .arg(server_deadline)
                            .invoke_async(&mut c)
                            .await?;
                        // WAIT on the connection that wrote: it counts the
                        // replicas that have this connection's writes.
                        let acked = if wanted > 0 && answer.first().is_some_and(|k| k == "inserted") {
                            Some(wait_for_replicas(&mut c, &key, wanted, wait_ms).await)
                        } else {
                            None
                        };
                        if matches!(acked, Some(Ok(n)) if n >= i64::from(wanted)) {
                            // Confirmed: no longer pending, for the others.
                            // Not awaited; if it is lost the record is
                            // pending until `until`, then consumed anyway.
                            let (mut c, key, pending) = (c.clone(), key.clone(), encoded.clone());
                            let settled = settled_part(pending.as_bytes()).to_vec();
                            tokio::spawn(async move {
                                let promoted: redis::RedisResult<i64> =
                                    PROMOTE_SCRIPT.key(&key).arg(pending).arg(settled).invoke_async(&mut c).await;
                                if let Err(e) = promoted {
                                    tracing::debug!(error = %redis_error(e), "a confirmed record stays pending until its time");
                                }
                            });
                        }
                        Ok((answer, acked))
                    }
                })
                .await;
            match attempt {
                Ok((answer, acked)) => {
                    return match answer.as_slice() {
                        [k] if k == "inserted" => match acked {
                            Some(acked) if acked.as_ref().map_or(true, |&n| n < i64::from(wanted)) => {
                                let acked = acked.unwrap_or(-1);
                                self.withdraw(&key, &encoded, until).await;
                                Err(StoreError::Unreplicated { wanted, acked })
                            }
                            _ => Ok(Consumed::Inserted),
                        },
                        [k, raw] if k == "existing" => Ok(Consumed::Existing(Arc::new(decode(raw.as_bytes())?))),
                        [k] if k == "inflight" => Err(StoreError::Unconfirmed),
                        // The request was answered already; nothing written.
                        [k] if k == "late" => Err(StoreError::Timeout),
                        _ => Err(StoreError::Corrupt("an unexpected answer to a consume".into())),
                    };
                }
                Err(StoreError::Refused(_)) | Err(StoreError::Connection(_))
                    if wanted == 0 && self.is_old_server().await =>
                {
                    tracing::info!(
                        "the replay store cannot bound consumes by time (Redis before 5.0); consuming without"
                    );
                    self.deadlines.store(false, Ordering::Relaxed);
                }
                Err(e) => return Err(e),
            }
        }
        if wanted > 0 {
            // WAIT goes with the deadline script: never consume unconfirmed.
            return Err(StoreError::Refused("redis.wait_replicas needs Redis 5 or later".into()));
        }
        let existing: Option<String> = if self.set_nx_get.load(Ordering::Relaxed) {
            let attempt = self
                .with_conn(|mut c| {
                    let (key, encoded) = (key.clone(), encoded.clone());
                    async move {
                        redis::cmd("SET")
                            .arg(key)
                            .arg(encoded)
                            .arg("NX")
                            .arg("PX")
                            .arg(ttl_ms)
                            .arg("GET")
                            .query_async(&mut c)
                            .await
                    }
                })
                .await;
            match attempt {
                Err(StoreError::Refused(_)) => {
                    tracing::info!("the replay store refuses SET NX GET (Redis before 7.0); using a script");
                    self.set_nx_get.store(false, Ordering::Relaxed);
                    self.script(&key, encoded, ttl_ms).await?
                }
                other => other?,
            }
        } else {
            self.script(&key, encoded, ttl_ms).await?
        };
        match existing {
            None => Ok(Consumed::Inserted),
            Some(raw) => Ok(Consumed::Existing(Arc::new(decode(raw.as_bytes())?))),
        }
    }

    /// Whether the server is older than Redis 5 (no effects replication, so
    /// no TIME before a write in a script).
    async fn is_old_server(&self) -> bool {
        let info: Result<String, StoreError> = self
            .with_conn(|mut c| async move { redis::cmd("INFO").arg("server").query_async(&mut c).await })
            .await;
        info.ok()
            .and_then(|i| {
                i.lines()
                    .find_map(|l| l.strip_prefix("redis_version:"))
                    .and_then(|v| v.split('.').next()?.trim().parse::<u32>().ok())
            })
            .is_some_and(|major| major < 5)
    }

    /// Deletes a record that did not reach its replicas, if it is still
    /// ours and still pending (`until`, server ms). If this fails too the
    /// record stays: a retry with the same `Idempotency-Key` gets its 200
    /// once it is no longer pending, without one it is REPLAYED.
    async fn withdraw(&self, key: &str, encoded: &str, until: i64) {
        let done: Result<i64, StoreError> = self
            .with_conn(|mut c| async move {
                WITHDRAW_SCRIPT
                    .key(key)
                    .arg(encoded)
                    .arg(until)
                    .invoke_async(&mut c)
                    .await
            })
            .await;
        match done {
            Ok(-1) => tracing::error!(
                cause = "store_unreplicated",
                "a consume did not reach its replicas and its withdrawal came too late; it stays consumed"
            ),
            Ok(_) => tracing::warn!(
                cause = "store_unreplicated",
                "a consume did not reach redis.wait_replicas replicas in time; it was withdrawn"
            ),
            Err(e) => tracing::error!(
                cause = "store_unreplicated",
                error = %e,
                "a consume did not reach its replicas in time and could not be withdrawn; it stays consumed"
            ),
        }
    }

    async fn script(&self, key: &str, encoded: String, ttl_ms: u64) -> Result<Option<String>, StoreError> {
        self.with_conn(|mut c| async move {
            redis::Script::new(PUT_IF_ABSENT)
                .key(key)
                .arg(encoded)
                .arg(ttl_ms)
                .invoke_async(&mut c)
                .await
        })
        .await
    }

    async fn get(&self, hash: &TxHash) -> Result<Found, StoreError> {
        let key = key(&self.prefix, hash);
        let raw: Option<String> = self
            .with_conn(|mut c| {
                let key = key.clone();
                async move { redis::cmd("GET").arg(key).query_async(&mut c).await }
            })
            .await?;
        let raw = match raw {
            // Pending: the server's clock says whether it still is.
            Some(r) if r.starts_with('P') => {
                let settled: Vec<String> = self
                    .with_conn(|mut c| async move { READ_SETTLED_SCRIPT.key(key).invoke_async(&mut c).await })
                    .await?;
                match settled.as_slice() {
                    [] => None,
                    [k] if k == "inflight" => return Err(StoreError::Unconfirmed),
                    [k, r] if k == "found" => Some(r.clone()),
                    _ => return Err(StoreError::Corrupt("an unexpected answer to a read".into())),
                }
            }
            other => other,
        };
        raw.map(|r| decode(r.as_bytes()).map(Arc::new)).transpose()
    }

    async fn reserve(&self, hash: &TxHash, ttl_ms: u64) -> Result<bool, StoreError> {
        let key = format!("{}broadcast:{hash}", self.prefix);
        let set: Option<String> = self
            .with_conn(|mut c| async move {
                redis::cmd("SET")
                    .arg(key)
                    .arg("1")
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl_ms)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(set.is_some())
    }

    async fn release(&self, hash: &TxHash) -> Result<(), StoreError> {
        let key = format!("{}broadcast:{hash}", self.prefix);
        let _: i64 = self
            .with_conn(|mut c| async move { redis::cmd("DEL").arg(key).query_async(&mut c).await })
            .await?;
        Ok(())
    }

    async fn count_retry(&self, hash: &TxHash, ttl_ms: u64, cap: u64) -> Result<u64, StoreError> {
        let key = format!("{}retries:{hash}", self.prefix);
        let n: i64 = self
            .with_conn(|mut c| async move {
                COUNT_RETRY_SCRIPT
                    .key(key)
                    .arg(ttl_ms)
                    .arg(cap)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        u64::try_from(n).map_err(|_| StoreError::Corrupt("a negative retry count".into()))
    }

    fn lookup_keys(&self, key: &str) -> (String, String) {
        let base = format!("{}lookup:{{{key}}}", self.prefix);
        (format!("{base}:result"), format!("{base}:claim"))
    }

    async fn claim_lookup(&self, key: &str, id: &str, ttl_ms: u64, want_held: bool) -> Result<LookupClaim, StoreError> {
        let (result, claim) = self.lookup_keys(key);
        let answer: Vec<String> = self
            .with_conn(|mut c| async move {
                CLAIM_SCRIPT
                    .key(result)
                    .key(claim)
                    .arg(id)
                    .arg(ttl_ms)
                    .arg(if want_held { "1" } else { "0" })
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        match answer.as_slice() {
            [k, r, left] if k == "held" => Ok(LookupClaim::Held(
                r.clone(),
                Duration::from_millis(left.parse().unwrap_or(0)),
            )),
            [k] if k == "claimed" => Ok(LookupClaim::Claimed),
            [k, other] if k == "wait" => Ok(LookupClaim::Wait(other.clone())),
            _ => Err(StoreError::Corrupt("an unexpected answer to a lookup claim".into())),
        }
    }

    async fn poll_lookup(&self, key: &str) -> Result<(Option<String>, Option<String>), StoreError> {
        let (result, claim) = self.lookup_keys(key);
        let (r, c): (Option<String>, Option<String>) = self
            .with_conn(|mut conn| async move { redis::cmd("MGET").arg(result).arg(claim).query_async(&mut conn).await })
            .await?;
        // `<until>|<id>|<body>` → `<id>|<body>`.
        let r = r.and_then(|r| r.split_once('|').map(|(_, rest)| rest.to_owned()));
        Ok((r, c))
    }

    async fn publish_lookup(
        &self,
        key: &str,
        id: &str,
        body: &str,
        hold_ms: u64,
        ttl_ms: u64,
    ) -> Result<(), StoreError> {
        let (result, claim) = self.lookup_keys(key);
        let _: i64 = self
            .with_conn(|mut c| async move {
                PUBLISH_SCRIPT
                    .key(result)
                    .key(claim)
                    .arg(id)
                    .arg(body)
                    .arg(hold_ms)
                    .arg(ttl_ms)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(())
    }

    async fn renew_lookup(&self, key: &str, id: &str, ttl_ms: u64) -> Result<bool, StoreError> {
        let (_, claim) = self.lookup_keys(key);
        let kept: i64 = self
            .with_conn(|mut c| async move { RENEW_SCRIPT.key(claim).arg(id).arg(ttl_ms).invoke_async(&mut c).await })
            .await?;
        Ok(kept == 1)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let _: String = self
            .with_conn(|mut c| async move { redis::cmd("PING").query_async(&mut c).await })
            .await?;
        Ok(())
    }
}

/// Clears the shared connection slot when dropped while armed.
/// (The clock offset goes with the connection: the next one may reach
/// another server, after a failover.)
struct ForgetOnDrop<'a>(Option<(&'a Mutex<Option<Conn>>, &'a std::sync::atomic::AtomicI64)>);

impl Drop for ForgetOnDrop<'_> {
    fn drop(&mut self) {
        if let Some((slot, offset)) = self.0 {
            *slot.lock() = None;
            offset.store(i64::MIN, Ordering::Relaxed);
        }
    }
}

async fn put_if_absent(
    backend: Backend,
    hash: TxHash,
    record: &ReplayRecord,
    deadline: i64,
    wait_ms: u64,
) -> Result<Consumed, StoreError> {
    let encoded = serde_json::to_string(record).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    match backend {
        Backend::Redis(r) => {
            let ttl_ms = record.expires_at.saturating_sub(unix_now()).max(1) * 1000;
            r.put_if_absent(&hash, encoded, ttl_ms, deadline, wait_ms).await
        }
        Backend::Local(store) => {
            let hash = hash.to_string();
            blocking(move || store.put_if_absent(&hash, &encoded)).await
        }
    }
}

async fn get(backend: Backend, hash: TxHash) -> Result<Found, StoreError> {
    match backend {
        Backend::Redis(r) => r.get(&hash).await,
        Backend::Local(store) => {
            let hash = hash.to_string();
            blocking(move || store.get(&hash)).await
        }
    }
}

fn key(prefix: &str, hash: &TxHash) -> String {
    format!("{prefix}replay:{hash}")
}

fn decode(raw: &[u8]) -> Result<ReplayRecord, StoreError> {
    // A value we cannot read is not "free": refuse rather than overwrite it.
    serde_json::from_slice(settled_part(raw)).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn redis_error(e: redis::RedisError) -> StoreError {
    // The error text can carry the URL; keep only its kind and code.
    if e.is_timeout() {
        StoreError::Timeout
    } else if e.kind() == redis::ErrorKind::UnexpectedReturnType {
        StoreError::Corrupt(format!("redis: {:?}", e.kind()))
    } else if e.code() == Some("ERR") && e.detail().is_some_and(|d| d.contains("syntax")) {
        StoreError::Refused(e.detail().unwrap_or_default().chars().take(80).collect())
    } else {
        StoreError::Connection(format!("redis: {:?} {}", e.kind(), e.code().unwrap_or("")))
    }
}

/// Where the replay store is: one server (or a proxy in front of several),
/// or the seed nodes of a Redis Cluster. URLs are `redis://` or `rediss://`
/// (TLS, verified against `tls_ca_pem` when given, else the system's roots).
#[derive(Clone)]
pub struct RedisTarget {
    pub urls: Vec<String>,
    pub cluster: bool,
    pub tls_ca_pem: Option<Vec<u8>>,
    /// Replicas each new record must reach before it counts (`WAIT`).
    pub wait_replicas: u32,
}

impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // URLs can carry passwords.
        f.debug_struct("RedisTarget")
            .field("urls", &self.urls.len())
            .field("cluster", &self.cluster)
            .finish()
    }
}

/// Makes connections. A single server's come from deadpool-redis (which
/// bounds their creation by the timeout); a cluster's from redis-rs's
/// cluster client, which follows `MOVED`/`ASK` redirections and a
/// failover's new primaries itself (deadpool-redis's cluster manager takes
/// no TLS roots, and only one connection is kept anyway).
enum Connector {
    Single(deadpool_redis::Pool, Duration),
    Cluster(Box<redis::cluster::ClusterClient>, Duration),
}

impl Connector {
    fn new(target: &RedisTarget, timeout: Duration) -> Result<Self, String> {
        // Never quote a URL in an error: it may carry a password.
        let unusable = |_| "the redis URL is not usable".to_owned();
        let certs = target.tls_ca_pem.as_ref().map(|pem| redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(pem.clone()),
        });
        if target.cluster {
            let mut builder = redis::cluster::ClusterClientBuilder::new(target.urls.clone())
                .connection_timeout(timeout)
                .response_timeout(timeout);
            if let Some(certs) = certs {
                builder = builder.certs(certs);
            }
            return Ok(Connector::Cluster(
                Box::new(builder.build().map_err(unusable)?),
                timeout,
            ));
        }
        let [url] = target.urls.as_slice() else {
            return Err("a single redis server has one URL".into());
        };
        let info = match certs {
            Some(certs) => redis::Client::build_with_tls(url.as_str(), certs)
                .map_err(unusable)?
                .get_connection_info()
                .clone(),
            None => redis::IntoConnectionInfo::into_connection_info(url.as_str()).map_err(unusable)?,
        };
        let manager = deadpool_redis::Manager::new(info).map_err(unusable)?;
        let pool = deadpool_redis::Pool::builder(manager)
            .max_size(64)
            .wait_timeout(Some(timeout))
            .create_timeout(Some(timeout))
            .recycle_timeout(Some(timeout))
            .runtime(deadpool_redis::Runtime::Tokio1)
            .build()
            .map_err(|_| "the redis pool cannot be built".to_owned())?;
        Ok(Connector::Single(pool, timeout))
    }

    async fn connect(&self) -> Result<Conn, StoreError> {
        match self {
            Connector::Single(pool, timeout) => {
                let conn = pool.get().await.map_err(|e| match e {
                    deadpool_redis::PoolError::Timeout(_) => StoreError::Timeout,
                    // Kind and detail only: the error's display can carry the URL.
                    deadpool_redis::PoolError::Backend(e) => {
                        StoreError::Connection(format!("{:?} {}", e.kind(), e.detail().unwrap_or("")))
                    }
                    _ => StoreError::Connection("pool error".into()),
                })?;
                let mut conn = deadpool_redis::Connection::take(conn);
                // redis-rs's own default is 500 ms, shorter than a WAIT of
                // a third of a longer store timeout (found by review): every
                // operation is bounded by the store timeout instead.
                conn.set_response_timeout(*timeout);
                Ok(Conn::Single(conn))
            }
            Connector::Cluster(client, timeout) => {
                match tokio::time::timeout(*timeout, client.get_async_connection()).await {
                    Ok(Ok(conn)) => Ok(Conn::Cluster(conn)),
                    Ok(Err(e)) => Err(StoreError::Connection(format!(
                        "cluster: {:?} {}",
                        e.kind(),
                        e.detail().unwrap_or("")
                    ))),
                    Err(_) => Err(StoreError::Timeout),
                }
            }
        }
    }
}

/// A connection to one server or to a cluster; both pipeline any number of
/// concurrent commands, and clones share one connection.
#[derive(Clone)]
enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(StoreError::Connection(format!("store task failed: {e}"))))
}

const RECORDS: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("replay_records_v2");
/// A payment's retry count and until when it counts (unix ms).
const RETRIES: redb::TableDefinition<&str, (u64, u64)> = redb::TableDefinition::new("retry_counts_v1");

/// The single-instance store: records in a redb file, durable on commit
/// (fsync), so a restart, even a `kill -9`, never forgets a consumed
/// payment. redb serialises write transactions, which makes
/// [`LocalStore::put_if_absent`] atomic.
pub struct LocalStore {
    db: redb::Database,
}

impl LocalStore {
    fn open(path: &Path) -> Result<Self, String> {
        let db = redb::Database::create(path).map_err(|e| format!("replay store {}: {e}", path.display()))?;
        let txn = db.begin_write().map_err(|e| e.to_string())?;
        txn.open_table(RECORDS).map_err(|e| e.to_string())?;
        txn.open_table(RETRIES).map_err(|e| e.to_string())?;
        txn.commit().map_err(|e| e.to_string())?;
        Ok(LocalStore { db })
    }

    fn get(&self, hash: &str) -> Result<Found, StoreError> {
        let txn = self.db.begin_read().map_err(local)?;
        let table = txn.open_table(RECORDS).map_err(local)?;
        let Some(raw) = table.get(hash).map_err(local)? else {
            return Ok(None);
        };
        let record = decode(raw.value())?;
        Ok((record.expires_at > unix_now()).then(|| Arc::new(record)))
    }

    fn put_if_absent(&self, hash: &str, encoded: &str) -> Result<Consumed, StoreError> {
        let txn = self.db.begin_write().map_err(local)?;
        {
            let mut table = txn.open_table(RECORDS).map_err(local)?;
            if let Some(raw) = table.get(hash).map_err(local)? {
                let record = decode(raw.value())?;
                if record.expires_at > unix_now() {
                    return Ok(Consumed::Existing(Arc::new(record)));
                }
            }
            table.insert(hash, encoded.as_bytes()).map_err(local)?;
        }
        // redb commits durably (fsync) by default: the 200 is only sent
        // after the record is on disk.
        txn.commit().map_err(local)?;
        Ok(Consumed::Inserted)
    }
}

impl LocalStore {
    /// [`CountRetry`] in one write transaction (redb serialises them). An
    /// expired count starts again; expired counts of other payments go
    /// when the table is large, so it stays bounded by the retries of one
    /// window.
    fn count_retry(&self, hash: &str, ttl_ms: u64, cap: u64) -> Result<u64, StoreError> {
        let now = unix_ms().max(0) as u64;
        let txn = self.db.begin_write().map_err(local)?;
        let n = {
            let mut table = txn.open_table(RETRIES).map_err(local)?;
            if table.len().map_err(local)? >= MAX_RETRY_COUNTS {
                table.retain(|_, (_, until)| until > now).map_err(local)?;
            }
            let (count, until) = match table.get(hash).map_err(local)? {
                Some(v) if v.value().1 > now => v.value(),
                _ => (0, now.saturating_add(ttl_ms)),
            };
            if count >= cap {
                return Ok(count);
            }
            table.insert(hash, (count + 1, until)).map_err(local)?;
            count + 1
        };
        txn.commit().map_err(local)?;
        Ok(n)
    }
}

/// Retry counts the embedded store keeps before it drops expired ones.
const MAX_RETRY_COUNTS: u64 = 16_384;

fn local(e: impl std::fmt::Display) -> StoreError {
    StoreError::Connection(format!("local store: {e}"))
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    //! The Redis backend's two ways of `put_if_absent`, against the real
    //! Redis the tests use (`TEST_REDIS_URL`, else 127.0.0.1:6379).
    use super::*;
    use settlegate_rules::replay::{Scheme, Settlement};
    use settlegate_rules::settlement::Payment;

    fn record(expires_at: u64) -> ReplayRecord {
        let hash: TxHash = format!("0x{}", "cd".repeat(32)).parse().unwrap();
        ReplayRecord {
            settlement: Settlement::new(
                hash,
                Scheme::Tempo,
                &Payment {
                    payer: Default::default(),
                    recipient: Default::default(),
                    asset: Default::default(),
                    amount: alloy_primitives::U256::from(5),
                    memo: None,
                    chain_id: 42431,
                    block_number: 1,
                    block_timestamp: 2,
                },
                "g",
            ),
            resource: None,
            request_digest: None,
            consumed_at: 1,
            expires_at,
        }
    }

    fn store(prefix: &str, set_nx_get: bool) -> RedisStore {
        store_waiting(prefix, set_nx_get, 0)
    }

    fn store_waiting(prefix: &str, set_nx_get: bool, wait_replicas: u32) -> RedisStore {
        let url = std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let target = RedisTarget {
            urls: vec![url],
            cluster: false,
            tls_ca_pem: None,
            wait_replicas,
        };
        RedisStore {
            connector: Connector::new(&target, Duration::from_secs(2)).unwrap(),
            creating: tokio::sync::Mutex::new(()),
            prefix: prefix.to_owned(),
            shared: Mutex::new(None),
            set_nx_get: AtomicBool::new(set_nx_get),
            clock_offset_ms: std::sync::atomic::AtomicI64::new(i64::MIN),
            deadlines: AtomicBool::new(true),
            wait_replicas,
        }
    }

    #[tokio::test]
    async fn put_if_absent_inserts_once_by_command_by_script_and_with_a_deadline() {
        let mut nonce = [0u8; 6];
        getrandom::fill(&mut nonce).unwrap();
        let later = unix_ms() + 60_000;
        for (by_command, deadlines) in [(true, false), (false, false), (true, true)] {
            let prefix = format!(
                "sgunit-{}-{}-{by_command}-{deadlines}:",
                std::process::id(),
                hex::encode(nonce)
            );
            let s = store(&prefix, by_command);
            s.deadlines.store(deadlines, Ordering::Relaxed);
            let hash: TxHash = format!("0x{}", "ab".repeat(32)).parse().unwrap();
            let r = record(unix_now() + 60);
            let text = serde_json::to_string(&r).unwrap();
            assert_eq!(
                s.put_if_absent(&hash, text.clone(), 60_000, later, 0).await,
                Ok(Consumed::Inserted)
            );
            let other = serde_json::to_string(&record(unix_now() + 99)).unwrap();
            assert_eq!(
                s.put_if_absent(&hash, other, 60_000, later, 0).await,
                Ok(Consumed::Existing(Arc::new(r.clone()))),
                "the first record stays"
            );
            assert_eq!(s.get(&hash).await, Ok(Some(Arc::new(r))));
            let ttl: i64 = s
                .with_conn(|mut c| {
                    let k = key(&prefix, &hash);
                    async move { redis::cmd("PTTL").arg(k).query_async(&mut c).await }
                })
                .await
                .unwrap();
            assert!((1..=60_000).contains(&ttl), "{ttl}");
            let _: i64 = s
                .with_conn(|mut c| {
                    let k = key(&prefix, &hash);
                    async move { redis::cmd("DEL").arg(k).query_async(&mut c).await }
                })
                .await
                .unwrap();
        }
    }

    /// A consume the server sees after its deadline (its request was
    /// answered 503 already) writes nothing; the clock offset to the
    /// server is measured, so the deadline is the server's.
    #[tokio::test]
    async fn a_consume_past_its_deadline_writes_nothing() {
        let mut nonce = [0u8; 6];
        getrandom::fill(&mut nonce).unwrap();
        let s = store(
            &format!("sgunit-{}-{}-late:", std::process::id(), hex::encode(nonce)),
            true,
        );
        let hash: TxHash = format!("0x{}", "cd".repeat(32)).parse().unwrap();
        let text = serde_json::to_string(&record(unix_now() + 60)).unwrap();
        assert_eq!(
            s.put_if_absent(&hash, text.clone(), 60_000, unix_ms() - 1, 0).await,
            Err(StoreError::Timeout)
        );
        assert_eq!(s.get(&hash).await, Ok(None), "nothing was written");
        assert!(
            s.clock_offset_ms.load(Ordering::Relaxed).abs() < 5_000,
            "the same machine's clock"
        );
        assert_eq!(
            s.put_if_absent(&hash, text, 60_000, unix_ms() + 1_000, 0).await,
            Ok(Consumed::Inserted)
        );
    }

    /// `redis.wait_replicas` on a server without replicas (the machine's):
    /// the consume is written, WAIT counts no replica in time, and the
    /// record is withdrawn, so the 503 consumed nothing and a retry can
    /// still consume. A withdrawal deletes only the record it wrote.
    #[tokio::test]
    async fn a_consume_no_replica_confirms_is_withdrawn() {
        let mut nonce = [0u8; 6];
        getrandom::fill(&mut nonce).unwrap();
        let prefix = format!("sgunit-{}-{}-wait:", std::process::id(), hex::encode(nonce));
        let s = store_waiting(&prefix, true, 1);
        let hash: TxHash = format!("0x{}", "ce".repeat(32)).parse().unwrap();
        let text = serde_json::to_string(&record(unix_now() + 60)).unwrap();
        let started = Instant::now();
        assert_eq!(
            s.put_if_absent(&hash, text.clone(), 60_000, unix_ms() + 1_000, 50)
                .await,
            Err(StoreError::Unreplicated { wanted: 1, acked: 0 })
        );
        assert!(started.elapsed() >= Duration::from_millis(50), "WAIT waited its time");
        let plain = store(&prefix, true);
        assert_eq!(plain.get(&hash).await, Ok(None), "withdrawn");
        assert_eq!(
            plain
                .put_if_absent(&hash, text.clone(), 60_000, unix_ms() + 1_000, 0)
                .await,
            Ok(Consumed::Inserted)
        );
        let until = unix_ms() + 60_000;
        s.withdraw(&key(&prefix, &hash), "another record", until).await;
        assert!(
            plain.get(&hash).await.unwrap().is_some(),
            "only our own record is withdrawn"
        );
        s.withdraw(&key(&prefix, &hash), &text, unix_ms() - 1).await;
        assert!(
            plain.get(&hash).await.unwrap().is_some(),
            "a record past its pending time is never withdrawn"
        );
        s.withdraw(&key(&prefix, &hash), &text, until).await;
        assert_eq!(plain.get(&hash).await, Ok(None));
    }

    /// Found by review: while a consume waits for its replicas, its record
    /// is in Redis but may yet be withdrawn. Another instance that took it
    /// for a consumed payment could answer its idempotent 200 and then see
    /// the payment free again. So a pending record answers every reader
    /// 503 (`Unconfirmed`), by consume and by read; once withdrawn the
    /// payment is free; a pending record past its time is consumed.
    #[tokio::test]
    async fn a_record_waiting_for_its_replicas_is_no_answer_to_anyone_else() {
        let mut nonce = [0u8; 6];
        getrandom::fill(&mut nonce).unwrap();
        let prefix = format!("sgunit-{}-{}-pending:", std::process::id(), hex::encode(nonce));
        let (waiting, other) = (Arc::new(store_waiting(&prefix, true, 1)), store(&prefix, true));
        let hash: TxHash = format!("0x{}", "cf".repeat(32)).parse().unwrap();
        let text = serde_json::to_string(&record(unix_now() + 60)).unwrap();
        let consume = {
            let (w, text) = (waiting.clone(), text.clone());
            tokio::spawn(async move { w.put_if_absent(&hash, text, 60_000, unix_ms() + 1_000, 600).await })
        };
        // The record is written at once, then WAIT holds for 600 ms.
        let written = Instant::now();
        let raw = loop {
            let raw: Option<String> = other
                .with_conn(|mut c| {
                    let k = key(&prefix, &hash);
                    async move { redis::cmd("GET").arg(k).query_async(&mut c).await }
                })
                .await
                .unwrap();
            if let Some(raw) = raw {
                break raw;
            }
            assert!(
                written.elapsed() < Duration::from_millis(500),
                "the pending record was written"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        assert!(raw.starts_with('P') && raw.ends_with(&text), "{raw}");
        assert_eq!(other.get(&hash).await, Err(StoreError::Unconfirmed));
        assert_eq!(
            other
                .put_if_absent(&hash, text.clone(), 60_000, unix_ms() + 1_000, 0)
                .await,
            Err(StoreError::Unconfirmed)
        );
        assert_eq!(
            consume.await.unwrap(),
            Err(StoreError::Unreplicated { wanted: 1, acked: 0 })
        );
        assert_eq!(other.get(&hash).await, Ok(None), "withdrawn: the payment is free");

        // A pending record whose time is over (its writer died, or its
        // withdrawal failed) is a consumed payment, read and consume alike.
        let stale = pending(unix_ms() - 1_000, &text);
        let _: () = other
            .with_conn(|mut c| {
                let (k, v) = (key(&prefix, &hash), stale.clone());
                async move {
                    redis::cmd("SET")
                        .arg(k)
                        .arg(v)
                        .arg("PX")
                        .arg(60_000)
                        .query_async(&mut c)
                        .await
                }
            })
            .await
            .unwrap();
        let expected = Arc::new(decode(text.as_bytes()).unwrap());
        assert_eq!(other.get(&hash).await, Ok(Some(expected.clone())));
        assert_eq!(
            other
                .put_if_absent(&hash, text.clone(), 60_000, unix_ms() + 1_000, 0)
                .await,
            Ok(Consumed::Existing(expected))
        );
        waiting.withdraw(&key(&prefix, &hash), &stale, unix_ms() - 1_000).await;
        assert!(other.get(&hash).await.unwrap().is_some(), "too late to withdraw");
    }

    /// Retries are counted atomically across instances: concurrent counts
    /// from two connections (two instances) each get their own number, the
    /// count stops at its cap, and it starts again only after its ttl.
    #[tokio::test]
    async fn retries_are_counted_once_each_across_instances_and_expire() {
        let mut nonce = [0u8; 6];
        getrandom::fill(&mut nonce).unwrap();
        let prefix = format!("sgunit-{}-{}-retries:", std::process::id(), hex::encode(nonce));
        let (a, b) = (Arc::new(store(&prefix, true)), Arc::new(store(&prefix, true)));
        let hash: TxHash = format!("0x{}", "d1".repeat(32)).parse().unwrap();
        let tasks: Vec<_> = (0..10)
            .map(|i| {
                let s = if i % 2 == 0 { a.clone() } else { b.clone() };
                tokio::spawn(async move { s.count_retry(&hash, 400, 6).await.unwrap() })
            })
            .collect();
        let mut counts = Vec::new();
        for t in tasks {
            counts.push(t.await.unwrap());
        }
        let mut sorted = counts.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, [1, 2, 3, 4, 5, 6, 6, 6, 6, 6], "{counts:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(a.count_retry(&hash, 400, 6).await, Ok(1), "a new window");
    }

    #[test]
    fn the_embedded_store_counts_retries_too() {
        let dir = std::env::temp_dir().join(format!("sgunit-retries-{}.redb", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let s = LocalStore::open(&dir).unwrap();
        let (h1, h2) = ("0x01", "0x02");
        assert_eq!(s.count_retry(h1, 300, 2), Ok(1));
        assert_eq!(s.count_retry(h1, 300, 2), Ok(2));
        assert_eq!(s.count_retry(h1, 300, 2), Ok(2), "capped");
        assert_eq!(s.count_retry(h2, 300, 2), Ok(1), "one count per payment");
        drop(s);
        // durable: a restart keeps the count
        let s = LocalStore::open(&dir).unwrap();
        assert_eq!(s.count_retry(h2, 300, 2), Ok(2));
        std::thread::sleep(Duration::from_millis(350));
        assert_eq!(s.count_retry(h1, 300, 2), Ok(1), "expired: a new window");
        let _ = std::fs::remove_file(&dir);
    }

    /// The cross-instance lookup protocol on a real Redis: one claim at a
    /// time, the others wait for its id; only its holder publishes or
    /// renews it; a published result ends the claim, is readable by id, and
    /// is held for new checks only while its hold lasts and only when it is
    /// facts, never an error.
    #[tokio::test]
    async fn lookup_claims_are_exclusive_and_published_results_are_held_only_as_facts() {
        let mut nonce = [0u8; 6];
        getrandom::fill(&mut nonce).unwrap();
        let s = store(&format!("sgunit-{}-{}:", std::process::id(), hex::encode(nonce)), true);
        let k = "42431:0xab:0";
        assert_eq!(s.claim_lookup(k, "a", 5_000, true).await, Ok(LookupClaim::Claimed));
        assert_eq!(
            s.claim_lookup(k, "b", 5_000, true).await,
            Ok(LookupClaim::Wait("a".into()))
        );
        assert_eq!(s.poll_lookup(k).await, Ok((None, Some("a".into()))));
        // Only the holder publishes or renews.
        s.publish_lookup(k, "b", "F{}", 0, 1_000).await.unwrap();
        assert_eq!(s.poll_lookup(k).await, Ok((None, Some("a".into()))));
        assert_eq!(s.renew_lookup(k, "b", 9_000).await, Ok(false));
        assert_eq!(s.renew_lookup(k, "a", 9_000).await, Ok(true));
        s.publish_lookup(k, "a", "F{\"head\":1}", 2_000, 3_000).await.unwrap();
        assert_eq!(s.poll_lookup(k).await, Ok((Some("a|F{\"head\":1}".into()), None)));
        match s.claim_lookup(k, "c", 5_000, true).await {
            Ok(LookupClaim::Held(r, left)) => {
                assert_eq!(r, "a|F{\"head\":1}");
                assert!(
                    left > Duration::from_millis(1_000) && left <= Duration::from_millis(2_000),
                    "{left:?}"
                );
            }
            other => panic!("{other:?}"),
        }
        // Without want_held (a check about to settle) it claims instead.
        assert_eq!(s.claim_lookup(k, "c", 5_000, false).await, Ok(LookupClaim::Claimed));
        // An error is for the claim's waiters, never held.
        s.publish_lookup(k, "c", "E\"AllCircuitsOpen\"", 2_000, 3_000)
            .await
            .unwrap();
        assert_eq!(s.claim_lookup(k, "d", 5_000, true).await, Ok(LookupClaim::Claimed));
        // Facts past their hold are not held either.
        s.publish_lookup(k, "d", "F{}", 1, 3_000).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(s.claim_lookup(k, "e", 100, true).await, Ok(LookupClaim::Claimed));
        // A claim expires by itself (a dead holder).
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(s.claim_lookup(k, "f", 5_000, false).await, Ok(LookupClaim::Claimed));
    }
}

crate::traced_handlers!(ReplayGuard: Consume, Follow, Recall, RecallNow, Reserve, CountRetry, Ping, ClaimLookup, PollLookup, PublishLookup, RenewLookup);
