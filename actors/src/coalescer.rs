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

use crate::replay_guard::Expect;
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

/// Internal: a lookup finished.
#[derive(Message)]
#[rtype(result = "()")]
struct Done(Lookup, Result<Arc<ChainFacts>, RpcError>);

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
}

pub struct Coalescer {
    pool: Addr<RpcPool>,
    /// Told when a lookup found a payment its waiters may consume.
    guard: Option<Recipient<Expect>>,
    config: CoalescerConfig,
    /// The callers of each lookup in flight, and its span (linked to the
    /// span of every caller: one lookup, many traces).
    waiting: HashMap<Lookup, (Vec<oneshot::Sender<CheckResult>>, tracing::Span)>,
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
            waiting: HashMap::new(),
            held: HashMap::new(),
            metrics,
        }
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
                waiters.push(tx);
                span.follows_from(tracing::Span::current());
                self.metrics.joined.inc();
            }
            None => {
                let span = tracing::info_span!(
                    target: crate::TRACE_TARGET,
                    "coalesced_lookup",
                    otel.name = "Coalescer lookup",
                    tx_hash = %key.hash,
                    chain_id = key.chain_id,
                    waiters = tracing::field::Empty,
                );
                span.follows_from(tracing::Span::current());
                let traced = crate::Traced {
                    msg: key,
                    parent: span.clone(),
                };
                self.waiting.insert(key, (vec![tx], span));
                self.metrics.lookups.inc();
                let pool = self.pool.clone();
                let timeout = self.config.timeout;
                let me = ctx.address();
                actix::spawn(async move {
                    let result = match pool.send(traced).timeout(timeout).await {
                        Ok(r) => r.map(Arc::new),
                        Err(MailboxError::Timeout) => Err(RpcError::Timeout(timeout)),
                        Err(MailboxError::Closed) => Err(RpcError::Transport("the RPC pool stopped".into())),
                    };
                    me.do_send(Done(key, result));
                });
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

    fn handle(&mut self, Done(key, result): Done, _: &mut Self::Context) {
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
        for waiter in waiters {
            // A caller that gave up has dropped its receiver; nothing to do.
            let _ = waiter.send(result.clone().map(|facts| Looked { facts, fresh: true }));
        }
    }
}

crate::traced_handlers!(Coalescer: Check);
