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
//! Holding the claim, it looks up and publishes the result (facts or
//! error) for the claim's waiters and, facts only, for the hold window.
//! Finding another instance's claim, it polls for that claim's result
//! (every few milliseconds, within the lookup timeout) and takes it as its
//! own fresh result: that lookup overlapped its checks. A claim expires
//! with the lookup timeout, so a dead instance delays a payment by at most
//! that much; if the store cannot coordinate, the instance looks up alone.
//! A mined payment's result is published after this instance's consume of
//! it (or a short bound), so another instance settling on the held copy
//! finds the consume in the store instead of looking up again.
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

use crate::replay_guard::{ClaimLookup, Expect, Follow, LookupClaim, PollLookup, PublishLookup, ReplayGuard};
use crate::rpc_pool::{Lookup, RpcError, RpcPool};

/// Held results beyond this many are not kept (a flood of distinct junk
/// hashes must not grow memory); the lookup path stays correct without them.
pub const MAX_HELD: usize = 16_384;

/// What a check learnt.
#[derive(Clone, Debug)]
pub struct Looked {
    pub facts: Arc<ChainFacts>,
    /// From a lookup that was in flight when the check arrived (or that it
    /// started); `false` when answered from the hold window.
    pub fresh: bool,
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
    /// This instance asked the node: holding claim `Some(id)`, or alone.
    Node(Option<String>),
    /// Another instance's lookup, in flight when this one began: fresh.
    Shared,
    /// Another instance's result held for its window: refuse only.
    Held,
}

/// Internal: a lookup finished.
#[derive(Message)]
#[rtype(result = "()")]
struct Done(Lookup, Result<Arc<ChainFacts>, RpcError>, Source);

#[derive(Clone, Debug)]
pub struct CoalescerConfig {
    /// Bound on one whole lookup, retries included.
    pub timeout: Duration,
    /// How long a non-error result keeps answering new checks (0: not at all).
    pub window: Duration,
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
    /// The callers of each lookup in flight (and whether each needs a fresh
    /// result), and its span (linked to the span of every caller: one
    /// lookup, many traces).
    waiting: HashMap<Lookup, (Vec<Waiter>, tracing::Span)>,
    held: HashMap<Lookup, (Arc<ChainFacts>, Instant)>,
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

    /// Starts the lookup of `key` for the callers waiting on it. With
    /// `want_held`, another instance's held result may answer it.
    fn start(&mut self, key: Lookup, want_held: bool, ctx: &mut Context<Self>) {
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
        let me = ctx.address();
        actix::spawn(async move {
            let (result, source) = match shared {
                Some(guard) => shared_lookup(&guard, &pool, traced, timeout, want_held, &metrics).await,
                None => (ask_node(&pool, traced, timeout).await, Source::Node(None)),
            };
            me.do_send(Done(key, result, source));
        });
    }

    /// Publishes what this instance learnt for the others: a mined
    /// payment's facts once this instance consumed it (or after a short
    /// bound), anything else at once.
    fn publish(&self, key: Lookup, id: String, result: &Result<Arc<ChainFacts>, RpcError>, parent: tracing::Span) {
        let Some(guard) = self.shared.clone() else {
            return;
        };
        let window = self.config.window;
        let (body, after_consume) = match result {
            Ok(facts) => match serde_json::to_string(&**facts) {
                Ok(json) => (format!("F{json}"), facts.mined_successfully() && !window.is_zero()),
                Err(_) => return,
            },
            Err(e) => match serde_json::to_string(e) {
                Ok(json) => (format!("E{json}"), false),
                Err(_) => return,
            },
        };
        let hold = if body.starts_with('F') { window } else { Duration::ZERO };
        actix::spawn(async move {
            if after_consume {
                let bound = window.min(Duration::from_millis(100));
                let follow = crate::Traced {
                    msg: Follow(key.hash),
                    parent: parent.clone(),
                };
                let _ = guard.send(follow).timeout(bound).await;
            }
            let publish = PublishLookup {
                key: shared_key(&key),
                id,
                body,
                hold,
                ttl: window.max(Duration::from_secs(1)),
            };
            if let Ok(Err(e)) = guard.send(crate::Traced { msg: publish, parent }).await {
                tracing::debug!(tx_hash = %key.hash, error = %e, "could not publish a lookup for the other instances");
            }
        });
    }

    fn held_for(&mut self, key: &Lookup) -> Option<Arc<ChainFacts>> {
        let (facts, until) = self.held.get(key)?;
        if Instant::now() < *until {
            return Some(facts.clone());
        }
        self.held.remove(key);
        None
    }
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
                act.held.retain(|_, (_, until)| *until > now);
            });
        }
    }
}

impl Handler<Check> for Coalescer {
    type Result = ResponseFuture<CheckResult>;

    fn handle(&mut self, check: Check, ctx: &mut Self::Context) -> Self::Result {
        let key = check.lookup;
        if !check.fresh_only
            && let Some(facts) = self.held_for(&key)
        {
            self.metrics.held.inc();
            return Box::pin(async move { Ok(Looked { facts, fresh: false }) });
        }
        let (tx, rx) = oneshot::channel();
        match self.waiting.get_mut(&key) {
            Some((waiters, span)) => {
                waiters.push((tx, check.fresh_only));
                span.follows_from(tracing::Span::current());
                self.metrics.joined.inc();
            }
            None => {
                self.waiting
                    .insert(key, (vec![(tx, check.fresh_only)], lookup_span(&key)));
                self.start(key, !check.fresh_only, ctx);
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
        let fresh = source != Source::Held;
        if !fresh {
            self.metrics.remote.inc();
            let (waiters, span) = self
                .waiting
                .remove(&key)
                .unwrap_or_else(|| (Vec::new(), tracing::Span::none()));
            let (need_fresh, others): (Vec<_>, Vec<_>) = waiters.into_iter().partition(|(_, f)| *f);
            if let Ok(facts) = &result
                && !self.config.window.is_zero()
                && (self.held.len() < MAX_HELD || self.held.contains_key(&key))
            {
                self.held
                    .insert(key, (facts.clone(), Instant::now() + self.config.window));
            }
            for (waiter, _) in others {
                let _ = waiter.send(result.clone().map(|facts| Looked { facts, fresh: false }));
            }
            // Callers about to settle need a lookup that overlapped them.
            if !need_fresh.is_empty() {
                self.waiting.insert(key, (need_fresh, span));
                self.start(key, false, ctx);
            }
            return;
        }
        if source == Source::Shared {
            self.metrics.remote.inc();
        }
        if let Source::Node(Some(id)) = &source {
            let span = self
                .waiting
                .get(&key)
                .map_or_else(tracing::Span::none, |(_, s)| s.clone());
            self.publish(key, id.clone(), &result, span);
        }
        if let Ok(facts) = &result
            && !self.config.window.is_zero()
            && (self.held.len() < MAX_HELD || self.held.contains_key(&key))
        {
            let until = Instant::now() + self.config.window;
            // First, before anyone can act on these facts: a check that
            // would settle on the held copy must find the consume of the
            // waiters that settle on the fresh one.
            if facts.mined_successfully()
                && let Some(guard) = &self.guard
            {
                guard.do_send(Expect { hash: key.hash, until });
            }
            self.held.insert(key, (facts.clone(), until));
        }
        let (waiters, span) = self
            .waiting
            .remove(&key)
            .unwrap_or_else(|| (Vec::new(), tracing::Span::none()));
        span.record("waiters", waiters.len());
        for (waiter, _) in waiters {
            // A caller that gave up has dropped its receiver; nothing to do.
            let _ = waiter.send(result.clone().map(|facts| Looked { facts, fresh: true }));
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
        Err(MailboxError::Closed) => Err(RpcError::Transport("the RPC pool stopped".into())),
    }
}

/// The key instances share a lookup under: what the lookup reads. Hash
/// tagged by the store, so a cluster keeps its keys in one slot.
fn shared_key(key: &Lookup) -> String {
    format!("{}:{}:{}", key.chain_id, key.hash, u8::from(key.need_head))
}

/// `<id>|F<facts>` or `<id>|E<error>`: the id, and the result.
fn parse_published(record: &str) -> Option<(&str, Result<Arc<ChainFacts>, RpcError>)> {
    let (id, body) = record.split_once('|')?;
    let result = match body.split_at_checked(1)? {
        ("F", json) => Ok(Arc::new(serde_json::from_str(json).ok()?)),
        ("E", json) => Err(serde_json::from_str(json).ok()?),
        _ => return None,
    };
    Some((id, result))
}

/// Poll intervals while another instance looks up: quick at first (a
/// lookup takes milliseconds), then no faster than every 20 ms.
const POLL: [u64; 5] = [2, 4, 8, 16, 20];

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
    let mut id = [0u8; 12];
    if getrandom::fill(&mut id).is_err() {
        metrics.fallbacks.inc();
        return (ask_node(pool, traced, timeout).await, Source::Node(None));
    }
    let id = hex::encode(id);
    loop {
        let claim = ClaimLookup {
            key: key.clone(),
            id: id.clone(),
            // A dead holder's claim ends when its lookup would have.
            ttl: timeout,
            want_held,
        };
        let left = deadline.saturating_duration_since(Instant::now());
        let claim = crate::Traced {
            msg: claim,
            parent: traced.parent.clone(),
        };
        match guard.send(claim).timeout(left).await {
            Ok(Ok(LookupClaim::Held(record))) => match parse_published(&record) {
                Some((_, Ok(facts))) => return (Ok(facts), Source::Held),
                _ => want_held = false,
            },
            Ok(Ok(LookupClaim::Claimed)) => {
                let left = deadline.saturating_duration_since(Instant::now());
                return (ask_node(pool, traced, left).await, Source::Node(Some(id)));
            }
            Ok(Ok(LookupClaim::Wait(other))) => {
                if let Some(result) = wait_for(guard, &key, &other, deadline, &traced.parent).await {
                    return (result, Source::Shared);
                }
                // The claim ended without a result (its holder died or
                // gave up): claim it again.
            }
            Err(MailboxError::Timeout) => return (Err(RpcError::Timeout(timeout)), Source::Node(None)),
            Ok(Err(_)) | Err(MailboxError::Closed) => {
                metrics.fallbacks.inc();
                let left = deadline.saturating_duration_since(Instant::now());
                return (ask_node(pool, traced, left).await, Source::Node(None));
            }
        }
        if Instant::now() >= deadline {
            return (Err(RpcError::Timeout(timeout)), Source::Node(None));
        }
    }
}

/// Polls for the result of claim `other` until it is published (`Some`),
/// the claim ends without one, or `deadline` (`None`: claim again).
async fn wait_for(
    guard: &Addr<ReplayGuard>,
    key: &str,
    other: &str,
    deadline: Instant,
    parent: &tracing::Span,
) -> Option<Result<Arc<ChainFacts>, RpcError>> {
    for step in 0.. {
        let pause = Duration::from_millis(POLL[step.min(POLL.len() - 1)]);
        if Instant::now() + pause >= deadline {
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
        if let Some((id, result)) = record.as_deref().and_then(parse_published)
            && id == other
        {
            return Some(result);
        }
        if other.is_empty() || claim.as_deref() != Some(other) {
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
        let (id, r) = parse_published(&record).unwrap();
        assert_eq!((id, r.unwrap().head), ("abc", Some(9)));
        let err = RpcError::Timeout(Duration::from_millis(1500));
        let body = format!("E{}", serde_json::to_string(&err).unwrap());
        let record = format!("x|{body}");
        let (id, r) = parse_published(&record).unwrap();
        assert_eq!((id, r.unwrap_err()), ("x", err));
        // Anything else is not a result (the caller claims instead).
        for bad in ["", "abc", "abc|", "abc|X{}", "abc|F{not json", "abc|E{}"] {
            assert!(parse_published(bad).is_none(), "{bad}");
        }
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
