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
//! Across instances (with Redis, [`Coalescer::share_through`]): the
//! lookup is claimed, renewed and published through the store
//! ([`exchange`]), so one instance asks the node and the others use its
//! answer, which is never fresh. Errors are shared too, except an
//! instance's own (its pool stopped, its circuits open). A payment another
//! instance consumed is answered from its record ([`Checked::Consumed`]),
//! read with the claim, with no lookup at the node.
//!
//! Every lookup is bounded by a timeout, so a hung node cannot hold callers
//! forever. There are no replay claims: concurrent checks meet here, and
//! the replay store decides afterwards, with one atomic insert, which
//! settled check consumes the payment.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use prometheus_client::metrics::counter::Counter;
use settlegate_rules::replay::ReplayRecord;
use settlegate_rules::settlement::ChainFacts;
use tokio::sync::oneshot;

pub mod exchange;

use crate::replay_guard::{Expect, StoreError};
use crate::rpc_pool::{Lookup, RpcError, RpcPool, Stopped};
use exchange::{Claimed, Found, publication, shared_lookup};
pub use exchange::{Exchange, claim_ttl};

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

/// The answer to a [`Check`].
#[derive(Clone, Debug)]
pub enum Checked {
    /// What the chain says.
    Looked(Looked),
    /// The payment's record, read with the lookup's claim: another instance
    /// consumed it, so the node was not asked. It only ever refuses (or
    /// answers an idempotent retry); a record that does not decode is
    /// `Corrupt`, a 503, never "not consumed".
    Consumed(Result<Arc<ReplayRecord>, StoreError>),
}

pub type CheckResult = Result<Checked, RpcError>;

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
pub(super) enum Source {
    /// This instance asked the node, under its claim or alone.
    Node(Option<Claimed>),
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
struct Done(Lookup, Found);

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
    /// Lookups answered by another instance's (in flight or held), or by
    /// its consume record.
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
    /// The store through which instances share lookups.
    shared: Option<Exchange>,
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

    /// Shares lookups with every instance on the exchange's store (Redis).
    pub fn share_through(mut self, exchange: Exchange) -> Self {
        self.shared = Some(exchange);
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
            let found = match (shared, mode) {
                (Some(exchange), Mode::Shared { want_held }) => {
                    shared_lookup(&exchange, &pool, traced, timeout, want_held, &metrics).await
                }
                _ => Found::Facts(ask_node(&pool, traced, timeout).await, Source::Node(None)),
            };
            if let Some(me) = done.me.take() {
                me.do_send(Done(key, found));
            }
        });
    }

    /// Publishes what this instance learnt under its claim, at once, for
    /// the other instances: facts (held for the window), a shareable error
    /// (for the claim's waiters only), or that it gave up (they look up).
    fn publish(
        &self,
        key: Lookup,
        claimed: Claimed,
        result: &Result<Arc<ChainFacts>, RpcError>,
        parent: tracing::Span,
    ) {
        let Some(exchange) = self.shared.clone() else {
            return;
        };
        let window = self.config.window;
        let (publication, hold) = publication(claimed.id.to_string(), result, window);
        let keys = claimed.keys;
        let busy = Busy::enter(&self.busy);
        let publish = parent.in_scope(|| {
            let exchange = exchange.clone();
            async move {
                exchange
                    .publish(keys, &publication, hold, window.max(Duration::from_secs(1)))
                    .await
            }
        });
        actix::spawn(async move {
            let _busy = busy;
            if let Err(e) = publish.await {
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
            me.do_send(Done(self.key, Found::Facts(Err(ended), Source::Node(None))));
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
                Ok(Checked::Looked(Looked {
                    facts,
                    fresh: false,
                    remote,
                }))
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

    fn handle(&mut self, Done(key, found): Done, ctx: &mut Self::Context) {
        let (waiters, span) = self
            .waiting
            .remove(&key)
            .unwrap_or_else(|| (Vec::new(), tracing::Span::none()));
        span.record("waiters", waiters.len());
        let (result, source) = match found {
            Found::Facts(result, source) => (result, source),
            // Consumed: every waiter, about to settle or not, is answered
            // by the record.
            Found::Consumed(record) => {
                self.metrics.remote.inc();
                for (waiter, _) in waiters {
                    let _ = waiter.send(Ok(Checked::Consumed(record.clone())));
                }
                return;
            }
        };
        match source {
            Source::Remote { hold } => {
                self.metrics.remote.inc();
                if let Ok(facts) = &result {
                    self.hold(key, facts, hold.min(self.config.window), true);
                }
                let (need_fresh, others): (Vec<_>, Vec<_>) = waiters.into_iter().partition(|(_, f)| *f);
                for (waiter, _) in others {
                    let _ = waiter.send(result.clone().map(|facts| {
                        Checked::Looked(Looked {
                            facts,
                            fresh: false,
                            remote: true,
                        })
                    }));
                }
                // Callers about to settle need this instance's own lookup.
                if !need_fresh.is_empty() {
                    self.waiting.insert(key, (need_fresh, span));
                    self.start(key, Mode::Direct, ctx);
                }
            }
            Source::Node(claim) => {
                if let Some(claimed) = claim {
                    self.publish(key, claimed, &result, span.clone());
                }
                if let Ok(facts) = &result
                    && !self.config.window.is_zero()
                {
                    // Before the waiters are woken: see the ordering note
                    // in `replay_guard::records`.
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
                    let _ = waiter.send(result.clone().map(|facts| {
                        Checked::Looked(Looked {
                            facts,
                            fresh: true,
                            remote: false,
                        })
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

pub(super) async fn ask_node(
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

crate::traced_handlers!(Coalescer: Check);

#[cfg(test)]
mod tests;
