//! `Coalescer`: one chain lookup per transaction hash, whatever it finds.
//!
//! A storm of identical checks (the same canonical hash presented by many
//! requests at once) costs one lookup: the first [`Check`] for a key starts
//! a [`Lookup`] on the [`RpcPool`]; every `Check` for that key that arrives
//! while it runs waits for the same result: settled, failing, pending,
//! unknown or an RPC error alike. The key is the canonical hash plus what
//! the lookup reads (the policy's chain id, whether the head is needed), so
//! checks under two genomes never share an answer.
//!
//! When the lookup ends, its result goes to exactly the callers that were
//! waiting. A result that is not an error is then held for a short window
//! ([`CoalescerConfig::window`]) so a storm that arrives in waves also
//! costs one lookup per window; checks answered from that window get
//! [`Looked::fresh`] `false`. The caller must never settle a payment on
//! facts that are not fresh: a held result may only refuse (failing,
//! pending, unknown), which keeps the rule that a verdict is never cached
//! beyond the lookup that produced it. RPC errors are never held.
//!
//! Across instances (with Redis, [`Coalescer::share_through`]): before it
//! asks the node, the lookup claims its key in the replay store, in one
//! atomic round trip that also returns a result another instance holds.
//! Holding the claim (renewed while it asks the node, so it outlives a slow
//! node but not a dead instance), it looks up and publishes the result for
//! the others at once. Finding another instance's claim, it polls for that
//! claim's result within the lookup timeout. What is learnt from another
//! instance ([`Looked::remote`]) is never fresh: it may refuse, and a check
//! it would settle waits for that instance's consume record instead
//! (settle.rs), then asks the node itself if none comes. So whoever can
//! write to Redis can delay or refuse a payment (as before: it can write
//! replay records) but never mint a 200 with forged facts. Errors are
//! shared too, except an instance's own (its pool stopped, its circuits
//! open), after which the others look up themselves. If the store cannot
//! coordinate, the instance looks up alone.
//!
//! Every lookup is bounded by a timeout, so a hung node cannot hold callers
//! forever. There are no replay claims: concurrent checks meet here, and
//! the replay store decides afterwards, with one atomic insert, which
//! settled check consumes the payment.
//!
//! The seed's coalescer was dead code behind its replay check and had no
//! timeout (hole 8).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use prometheus_client::metrics::counter::Counter;
use settlegate_rules::settlement::ChainFacts;
use tokio::sync::oneshot;

use crate::replay_guard::{ClaimLookup, Expect, LookupClaim, PollLookup, PublishLookup, RenewLookup, ReplayGuard};
use crate::rpc_pool::{Lookup, RpcError, RpcPool, Stopped};

/// Held results beyond this many are not kept (a flood of distinct junk
/// hashes must not grow memory); the lookup path stays correct without them.
pub const MAX_HELD: usize = 16_384;

/// What a check learnt.
#[derive(Clone, Debug)]
pub struct Looked {
    pub facts: Arc<ChainFacts>,
    /// From a lookup this instance made that was in flight when the check
    /// arrived (or that it started); `false` when answered from the hold
    /// window or by another instance.
    pub fresh: bool,
    /// Learnt from another instance: it may refuse; it never settles.
    pub remote: bool,
}

pub type CheckResult = Result<Looked, RpcError>;

/// What the chain says about this transaction. With `fresh_only`, the hold
/// window is skipped (the caller is about to settle on the answer).
#[derive(Message, Clone, Copy, Debug)]
#[rtype(result = "CheckResult")]
pub struct Check {
    pub lookup: Lookup,
    pub fresh_only: bool,
}

/// Where a lookup's result came from.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Source {
    /// This instance asked the node, under claim `Some(id)` or alone.
    Node(Option<String>),
    /// Another instance's result, readable as held for `hold` more.
    Remote { hold: Duration },
}

/// How a lookup may be answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Through the other instances (`want_held`: even by a held result).
    Shared { want_held: bool },
    /// By the node itself: for callers about to settle.
    Direct,
}

/// Internal: a lookup finished.
#[derive(Message)]
#[rtype(result = "()")]
struct Done(Lookup, Result<Arc<ChainFacts>, RpcError>, Source);

/// At shutdown: resolves once no lookup is in flight and every result
/// owed to the other instances is published (so no claim is left held),
/// or after `within`; `false` then.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct Drain {
    pub within: Duration,
}

#[derive(Clone, Debug)]
pub struct CoalescerConfig {
    /// Bound on one whole lookup, retries included.
    pub timeout: Duration,
    /// How long a non-error result keeps answering new checks (0: not at all).
    pub window: Duration,
    /// Distinct lookups in flight at most; a check that would start one
    /// more is answered `Saturated` at once, never queued.
    pub max_in_flight: usize,
}

/// `settlegate_coalescer_*` counters.
#[derive(Clone, Default)]
pub struct CoalescerMetrics {
    /// Lookups started (each reaches the RPC pool once).
    pub lookups: Counter,
    /// Checks that joined a lookup already in flight.
    pub joined: Counter,
    /// Checks answered from the hold window.
    pub held: Counter,
    /// Lookups answered by another instance's (in flight or held).
    pub remote: Counter,
    /// Lookups made alone because the store could not coordinate them.
    pub fallbacks: Counter,
}

/// A caller waiting for a lookup, and whether it needs a fresh result.
type Waiter = (oneshot::Sender<CheckResult>, bool);

pub struct Coalescer {
    pool: Addr<RpcPool>,
    /// Told when a lookup found a payment its waiters may consume.
    guard: Option<Recipient<Expect>>,
    config: CoalescerConfig,
    /// The replay store, through which instances share lookups.
    shared: Option<Addr<ReplayGuard>>,
    /// Lookups in flight and publications under way, for [`Drain`].
    busy: Arc<std::sync::atomic::AtomicUsize>,
    /// The callers of each lookup in flight (and whether each needs a fresh
    /// result), and its span (linked to the span of every caller: one
    /// lookup, many traces).
    waiting: HashMap<Lookup, (Vec<Waiter>, tracing::Span)>,
    /// Results that keep answering new checks: facts, until when, and
    /// whether another instance learnt them.
    held: HashMap<Lookup, (Arc<ChainFacts>, Instant, bool)>,
    metrics: CoalescerMetrics,
}

impl Coalescer {
    pub fn new(
        pool: Addr<RpcPool>,
        guard: Option<Recipient<Expect>>,
        config: CoalescerConfig,
        metrics: CoalescerMetrics,
    ) -> Self {
        Coalescer {
            pool,
            guard,
            config,
            shared: None,
            busy: Arc::default(),
            waiting: HashMap::new(),
            held: HashMap::new(),
            metrics,
        }
    }

    /// Shares lookups with every instance on `guard`'s store (Redis).
    pub fn share_through(mut self, guard: Addr<ReplayGuard>) -> Self {
        self.shared = Some(guard);
        self
    }

    /// Starts the lookup of `key` for the callers waiting on it.
    fn start(&mut self, key: Lookup, mode: Mode, ctx: &mut Context<Self>) {
        let Some((_, span)) = self.waiting.get(&key) else {
            return;
        };
        let traced = crate::Traced {
            msg: key,
            parent: span.clone(),
        };
        self.metrics.lookups.inc();
        let pool = self.pool.clone();
        let shared = self.shared.clone();
        let metrics = self.metrics.clone();
        let timeout = self.config.timeout;
        let mut done = DoneOnDrop {
            me: Some(ctx.address()),
            key,
        };
        let busy = Busy::enter(&self.busy);
        actix::spawn(async move {
            let _busy = busy;
            let (result, source) = match (shared, mode) {
                (Some(guard), Mode::Shared { want_held }) => {
                    shared_lookup(&guard, &pool, traced, timeout, want_held, &metrics).await
                }
                _ => (ask_node(&pool, traced, timeout).await, Source::Node(None)),
            };
            if let Some(me) = done.me.take() {
                me.do_send(Done(key, result, source));
            }
        });
    }

    /// Publishes what this instance learnt under claim `id`, at once, for
    /// the other instances: facts (held for the window), a shareable error
    /// (for the claim's waiters only), or that it gave up (they look up).
    fn publish(&self, key: Lookup, id: String, result: &Result<Arc<ChainFacts>, RpcError>, parent: tracing::Span) {
        let Some(guard) = self.shared.clone() else {
            return;
        };
        let window = self.config.window;
        let (body, hold) = match result {
            Ok(facts) => match serde_json::to_string(&**facts) {
                Ok(json) => (format!("F{json}"), window),
                Err(_) => ("A".to_owned(), Duration::ZERO),
            },
            Err(e) if shareable(e) => match serde_json::to_string(e) {
                Ok(json) => (format!("E{json}"), Duration::ZERO),
                Err(_) => ("A".to_owned(), Duration::ZERO),
            },
            Err(_) => ("A".to_owned(), Duration::ZERO),
        };
        let publish = PublishLookup {
            key: shared_key(&key),
            id,
            body,
            hold,
            ttl: window.max(Duration::from_secs(1)),
        };
        let busy = Busy::enter(&self.busy);
        actix::spawn(async move {
            let _busy = busy;
            if let Ok(Err(e)) = guard.send(crate::Traced { msg: publish, parent }).await {
                // Its waiters take over when the claim expires.
                tracing::debug!(tx_hash = %key.hash, error = %e, "could not publish a lookup for the other instances");
            }
        });
    }

    fn held_for(&mut self, key: &Lookup) -> Option<(Arc<ChainFacts>, bool)> {
        let (facts, until, remote) = self.held.get(key)?;
        if Instant::now() < *until {
            return Some((facts.clone(), *remote));
        }
        self.held.remove(key);
        None
    }

    fn hold(&mut self, key: Lookup, facts: &Arc<ChainFacts>, for_: Duration, remote: bool) {
        if !for_.is_zero() && (self.held.len() < MAX_HELD || self.held.contains_key(&key)) {
            self.held.insert(key, (facts.clone(), Instant::now() + for_, remote));
        }
    }
}

/// Ends a lookup that its task did not (it panicked, or its arbiter
/// stopped): its callers get an error instead of waiting forever, and its
/// slot under `max_in_flight` is freed.
struct DoneOnDrop {
    me: Option<Addr<Coalescer>>,
    key: Lookup,
}

impl Drop for DoneOnDrop {
    fn drop(&mut self) {
        if let Some(me) = self.me.take() {
            let ended = RpcError::Transport("the lookup ended without an answer".into());
            me.do_send(Done(self.key, Err(ended), Source::Node(None)));
        }
    }
}

/// Counts one unit of work in flight while it lives.
struct Busy(Arc<std::sync::atomic::AtomicUsize>);

impl Busy {
    fn enter(count: &Arc<std::sync::atomic::AtomicUsize>) -> Self {
        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Busy(count.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Handler<Drain> for Coalescer {
    type Result = ResponseFuture<bool>;

    fn handle(&mut self, Drain { within }: Drain, _: &mut Self::Context) -> Self::Result {
        let busy = self.busy.clone();
        Box::pin(async move {
            let until = Instant::now() + within;
            while busy.load(std::sync::atomic::Ordering::SeqCst) > 0 {
                if Instant::now() >= until {
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            true
        })
    }
}

/// Whether another instance may take this error as its own answer: a fault
/// of the chain, not of this instance (its pool stopped, its circuits open).
fn shareable(e: &RpcError) -> bool {
    !matches!(
        e,
        RpcError::AllCircuitsOpen | RpcError::Saturated(_) | RpcError::Stopped(_)
    )
}

impl Actor for Coalescer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        crate::unbounded_mailbox(ctx);
        // Drop expired held results now and then, so junk hashes do not
        // linger until the map is full.
        if !self.config.window.is_zero() {
            let every = self.config.window.max(Duration::from_millis(100));
            ctx.run_interval(every, |act, _| {
                let now = Instant::now();
                act.held.retain(|_, (_, until, _)| *until > now);
            });
        }
    }
}

impl Handler<Check> for Coalescer {
    type Result = ResponseFuture<CheckResult>;

    fn handle(&mut self, check: Check, ctx: &mut Self::Context) -> Self::Result {
        let key = check.lookup;
        if !check.fresh_only
            && let Some((facts, remote)) = self.held_for(&key)
        {
            self.metrics.held.inc();
            return Box::pin(async move {
                Ok(Looked {
                    facts,
                    fresh: false,
                    remote,
                })
            });
        }
        let (tx, rx) = oneshot::channel();
        let full = self.waiting.len() >= self.config.max_in_flight;
        match self.waiting.get_mut(&key) {
            Some((waiters, span)) => {
                waiters.push((tx, check.fresh_only));
                span.follows_from(tracing::Span::current());
                self.metrics.joined.inc();
            }
            None if full => {
                let max = self.config.max_in_flight;
                return Box::pin(async move { Err(RpcError::Saturated(max)) });
            }
            None => {
                self.waiting
                    .insert(key, (vec![(tx, check.fresh_only)], lookup_span(&key)));
                let mode = if check.fresh_only {
                    Mode::Direct
                } else {
                    Mode::Shared { want_held: true }
                };
                self.start(key, mode, ctx);
            }
        }
        Box::pin(async move {
            rx.await
                .unwrap_or_else(|_| Err(RpcError::Transport("the coalescer dropped the lookup".into())))
        })
    }
}

impl Handler<Done> for Coalescer {
    type Result = ();

    fn handle(&mut self, Done(key, result, source): Done, ctx: &mut Self::Context) {
        let (waiters, span) = self
            .waiting
            .remove(&key)
            .unwrap_or_else(|| (Vec::new(), tracing::Span::none()));
        span.record("waiters", waiters.len());
        match source {
            Source::Remote { hold } => {
                self.metrics.remote.inc();
                if let Ok(facts) = &result {
                    self.hold(key, facts, hold.min(self.config.window), true);
                }
                let (need_fresh, others): (Vec<_>, Vec<_>) = waiters.into_iter().partition(|(_, f)| *f);
                for (waiter, _) in others {
                    let _ = waiter.send(result.clone().map(|facts| Looked {
                        facts,
                        fresh: false,
                        remote: true,
                    }));
                }
                // Callers about to settle need this instance's own lookup.
                if !need_fresh.is_empty() {
                    self.waiting.insert(key, (need_fresh, span));
                    self.start(key, Mode::Direct, ctx);
                }
            }
            Source::Node(claim) => {
                if let Some(id) = claim {
                    self.publish(key, id, &result, span.clone());
                }
                if let Ok(facts) = &result
                    && !self.config.window.is_zero()
                {
                    // First, before anyone can act on these facts: a check
                    // that would settle on the held copy must find the
                    // consume of the waiters that settle on the fresh one.
                    if facts.mined_successfully()
                        && let Some(guard) = &self.guard
                    {
                        guard.do_send(Expect {
                            hash: key.hash,
                            until: Instant::now() + self.config.window,
                        });
                    }
                    self.hold(key, facts, self.config.window, false);
                }
                for (waiter, _) in waiters {
                    // A caller that gave up has dropped its receiver.
                    let _ = waiter.send(result.clone().map(|facts| Looked {
                        facts,
                        fresh: true,
                        remote: false,
                    }));
                }
            }
        }
    }
}

fn lookup_span(key: &Lookup) -> tracing::Span {
    let span = tracing::info_span!(
        target: crate::TRACE_TARGET,
        "coalesced_lookup",
        otel.name = "Coalescer lookup",
        tx_hash = %key.hash,
        chain_id = key.chain_id,
        waiters = tracing::field::Empty,
    );
    span.follows_from(tracing::Span::current());
    span
}

async fn ask_node(
    pool: &Addr<RpcPool>,
    traced: crate::Traced<Lookup>,
    timeout: Duration,
) -> Result<Arc<ChainFacts>, RpcError> {
    match pool.send(traced).timeout(timeout).await {
        Ok(r) => r.map(Arc::new),
        Err(MailboxError::Timeout) => Err(RpcError::Timeout(timeout)),
        Err(MailboxError::Closed) => Err(RpcError::Stopped(Stopped::Pool)),
    }
}

/// The key instances share a lookup under: what the lookup reads. Hash
/// tagged by the store, so a cluster keeps its keys in one slot.
fn shared_key(key: &Lookup) -> String {
    format!("{}:{}:{}", key.chain_id, key.hash, u8::from(key.need_head))
}

/// A published result: facts, a shared error, or that its holder gave up.
#[derive(Debug)]
enum Published {
    Result(Result<Arc<ChainFacts>, RpcError>),
    Abandoned,
}

/// `<id>|F<facts>`, `<id>|E<error>` or `<id>|A`: the id and what it says.
fn parse_published(record: &str) -> Option<(&str, Published)> {
    let (id, body) = record.split_once('|')?;
    let published = match body.split_at_checked(1)? {
        ("F", json) => Published::Result(Ok(Arc::new(serde_json::from_str(json).ok()?))),
        ("E", json) => Published::Result(Err(serde_json::from_str(json).ok()?)),
        ("A", "") => Published::Abandoned,
        _ => return None,
    };
    Some((id, published))
}

/// Poll intervals while another instance looks up: quick at first (a
/// lookup on a near node takes milliseconds), then every 50 ms.
const POLL: [u64; 6] = [2, 4, 8, 16, 32, 50];

/// How long a claim lives without renewal: a dead holder holds its
/// waiters no longer than this (a live one renews it at half of it).
pub fn claim_ttl(lookup_timeout: Duration) -> Duration {
    (lookup_timeout / 4).clamp(Duration::from_millis(250), Duration::from_secs(2))
}

/// The lookup of `traced`'s key, shared with the other instances on the
/// store: a held result (with `want_held`), the result of another
/// instance's claim, or this instance's own lookup under its claim. Bounded
/// by `timeout` as a whole.
async fn shared_lookup(
    guard: &Addr<ReplayGuard>,
    pool: &Addr<RpcPool>,
    traced: crate::Traced<Lookup>,
    timeout: Duration,
    mut want_held: bool,
    metrics: &CoalescerMetrics,
) -> (Result<Arc<ChainFacts>, RpcError>, Source) {
    let deadline = Instant::now() + timeout;
    let key = shared_key(&traced.msg);
    let ttl = claim_ttl(timeout);
    let mut id = [0u8; 12];
    if getrandom::fill(&mut id).is_err() {
        metrics.fallbacks.inc();
        return (ask_node(pool, traced, timeout).await, Source::Node(None));
    }
    let id = hex::encode(id);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (Err(RpcError::Timeout(timeout)), Source::Node(None));
        }
        let claim = crate::Traced {
            msg: ClaimLookup {
                key: key.clone(),
                id: id.clone(),
                ttl,
                want_held,
            },
            parent: traced.parent.clone(),
        };
        match guard.send(claim).timeout(left).await {
            Ok(Ok(LookupClaim::Held(record, hold))) => match parse_published(&record) {
                Some((_, Published::Result(Ok(facts)))) => return (Ok(facts), Source::Remote { hold }),
                _ => want_held = false,
            },
            Ok(Ok(LookupClaim::Claimed)) => {
                let left = deadline.saturating_duration_since(Instant::now());
                let result = ask_node_holding(guard, pool, traced, left, &key, &id, ttl).await;
                return (result, Source::Node(Some(id)));
            }
            Ok(Ok(LookupClaim::Wait(other))) => {
                match wait_for(guard, &key, &other, deadline, &traced.parent).await {
                    Some(Published::Result(result)) => return (result, Source::Remote { hold: Duration::ZERO }),
                    // The claim ended without a result (its holder died or
                    // gave up): claim it again.
                    Some(Published::Abandoned) | None => {}
                }
            }
            Err(MailboxError::Timeout) => return (Err(RpcError::Timeout(timeout)), Source::Node(None)),
            Ok(Err(_)) | Err(MailboxError::Closed) => {
                // The claim may have been taken all the same: publish under
                // it (only a claim still ours is published to).
                metrics.fallbacks.inc();
                let left = deadline.saturating_duration_since(Instant::now());
                return (ask_node(pool, traced, left).await, Source::Node(Some(id)));
            }
        }
    }
}

/// Asks the node while renewing claim `id` at half its life, so a slow
/// node does not let another instance start the same lookup.
async fn ask_node_holding(
    guard: &Addr<ReplayGuard>,
    pool: &Addr<RpcPool>,
    traced: crate::Traced<Lookup>,
    left: Duration,
    key: &str,
    id: &str,
    ttl: Duration,
) -> Result<Arc<ChainFacts>, RpcError> {
    let ask = ask_node(pool, traced, left);
    let renew = async {
        loop {
            tokio::time::sleep(ttl / 2).await;
            let renew = RenewLookup {
                key: key.to_owned(),
                id: id.to_owned(),
                ttl,
            };
            if !matches!(guard.send(renew).await, Ok(Ok(true))) {
                // Lost (expired under a stalled store): nothing to renew.
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        result = ask => result,
        () = renew => unreachable!("renewal never ends"),
    }
}

/// Polls for the result of claim `other` until it is published, the claim
/// ends without one, or `deadline` (`None`: claim again).
async fn wait_for(
    guard: &Addr<ReplayGuard>,
    key: &str,
    other: &str,
    deadline: Instant,
    parent: &tracing::Span,
) -> Option<Published> {
    if other.is_empty() {
        return None;
    }
    for step in 0.. {
        let pause = Duration::from_millis(POLL[step.min(POLL.len() - 1)]);
        if Instant::now() + pause >= deadline {
            tokio::time::sleep_until(deadline.into()).await;
            return None;
        }
        tokio::time::sleep(pause).await;
        let poll = crate::Traced {
            msg: PollLookup(key.to_owned()),
            parent: parent.clone(),
        };
        let (record, claim) = match guard.send(poll).await {
            Ok(Ok(answer)) => answer,
            _ => return None,
        };
        if let Some((id, published)) = record.as_deref().and_then(parse_published)
            && id == other
        {
            return Some(published);
        }
        if claim.as_deref() != Some(other) {
            return None;
        }
    }
    None
}

crate::traced_handlers!(Coalescer: Check);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_results_read_back_with_their_claim_id() {
        let facts = ChainFacts {
            head: Some(9),
            ..Default::default()
        };
        let body = format!("F{}", serde_json::to_string(&facts).unwrap());
        let record = format!("abc|{body}");
        let Some((id, Published::Result(Ok(f)))) = parse_published(&record) else {
            panic!("{record}")
        };
        assert_eq!((id, f.head), ("abc", Some(9)));
        let err = RpcError::Timeout(Duration::from_millis(1500));
        let body = format!("E{}", serde_json::to_string(&err).unwrap());
        let record = format!("x|{body}");
        let Some((id, Published::Result(Err(e)))) = parse_published(&record) else {
            panic!("{record}")
        };
        assert_eq!((id, e), ("x", err));
        assert!(matches!(parse_published("y|A"), Some(("y", Published::Abandoned))));
        // Anything else is not a result (the caller claims instead).
        for bad in ["", "abc", "abc|", "abc|X{}", "abc|F{not json", "abc|E{}", "abc|Ax"] {
            assert!(parse_published(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn only_faults_of_the_chain_are_shared_and_claims_are_shorter_than_lookups() {
        assert!(shareable(&RpcError::Timeout(Duration::from_secs(1))));
        assert!(shareable(&RpcError::Transport("connection refused".into())));
        assert!(!shareable(&RpcError::AllCircuitsOpen));
        assert!(!shareable(&RpcError::Stopped(Stopped::Pool)));
        assert_eq!(claim_ttl(Duration::from_secs(5)), Duration::from_millis(1250));
        assert_eq!(claim_ttl(Duration::from_millis(400)), Duration::from_millis(250));
        assert_eq!(claim_ttl(Duration::from_secs(60)), Duration::from_secs(2));
    }

    #[test]
    fn shared_keys_name_what_the_lookup_reads() {
        let hash: settlegate_rules::credential::TxHash = format!("0x{}", "AB".repeat(32)).parse().unwrap();
        let key = Lookup {
            hash,
            chain_id: 42431,
            need_head: true,
        };
        assert_eq!(shared_key(&key), format!("42431:0x{}:1", "ab".repeat(32)));
    }
}
