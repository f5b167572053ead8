//! The settlement flow shared by every way a payment is presented:
//!
//! consumed cache → coalesced chain lookup → `judge` → one atomic
//! `put_if_absent` of the replay record.
//!
//! What to do next is decided in [`flow`], without I/O; this module carries
//! each step out on the actors and feeds the answer back.
//!
//! - A payment already consumed is answered from memory (the
//!   `ConsumedCache`), with no lookup and no store round trip; only an
//!   idempotent retry goes to the store, to be counted against the retry
//!   limit (`CountRetry`) before its 200.
//! - Every check of one canonical hash that overlaps another shares its
//!   chain lookup, whatever it finds (the `Coalescer`); nothing is claimed
//!   before the lookup, so no waiter ever turns into a second lookup.
//! - A payment another instance consumed is answered from the record the
//!   lookup's claim read (sharing on), with no lookup at the node; the
//!   record goes into the `ConsumedCache`.
//! - A consume that has begun runs to its end on the actors' arbiter even
//!   if the caller goes away: it is finished and recorded, never half done.

pub mod flow;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix::{Addr, ArbiterHandle, MailboxError};
use alloy_primitives::Bytes;
use settlegate_actors::Traced;
use settlegate_actors::coalescer::{Check, Checked, Coalescer, Looked};
use settlegate_actors::replay_guard::{
    Consume, ConsumedCache, CountRetry, Follow, Recall, RecallNow, Release, ReplayGuard, Reserve, StoreError,
};
use settlegate_actors::rpc_pool::{Broadcast, Lookup, RpcError, RpcPool, Stopped, Submitted};
use settlegate_rules::credential::TxHash;
use settlegate_rules::genome::VerifiedGenome;
use settlegate_rules::mpp::Binding;
use settlegate_rules::policy::Price;
use settlegate_rules::replay::{ReplayRecord, RequestDigest, Scheme};
use settlegate_rules::settlement::{PayerRule, needs_head};
use tracing::Instrument;

use crate::outcome::{Challenge, Outcome, Unavailable};
use flow::{Answer, Event, Flow, Limits, Step};

/// One request to settle a payment.
#[derive(Clone, Debug)]
pub struct SettleRequest {
    pub hash: TxHash,
    pub scheme: Scheme,
    pub resource: Option<String>,
    /// The digest of everything a retry must repeat, when the request has
    /// an `Idempotency-Key`.
    pub request_digest: Option<RequestDigest>,
    /// The challenge a `Payment` credential answers: its memo must name it.
    pub binding: Option<Binding>,
    pub payer: PayerRule,
    /// A signed transaction to broadcast first (a pull-mode `Payment`
    /// credential); `hash` is its hash.
    pub submit: Option<Bytes>,
}

#[derive(Clone)]
pub struct Settler {
    pub coalescer: Addr<Coalescer>,
    pub guard: Addr<ReplayGuard>,
    pub consumed: ConsumedCache,
    /// Replay records live at least this long.
    pub min_record_ttl: Duration,
    /// Bound on waiting for the coalescer (it bounds each lookup itself).
    pub lookup_timeout: Duration,
    /// The arbiter the actors run on.
    pub arbiter: ArbiterHandle,
    /// Broadcasts pull-mode transactions.
    pub rpc: Addr<RpcPool>,
    /// The configured idempotent-retry window (the policy's age window
    /// bounds it too) and the retries of one payment at most.
    pub retry_window: Duration,
    pub max_retries: u32,
}

impl Settler {
    /// [`Settler::settle`], run on the actors' arbiter: the flow's messages
    /// to the Coalescer and the ReplayGuard then stay on one thread, and
    /// the request crosses threads twice (there and back) instead of once
    /// per message. A consumed payment is still answered here, without
    /// leaving the HTTP worker.
    pub async fn settle_on_actors(
        &self,
        genome: Arc<VerifiedGenome>,
        price: Price,
        req: SettleRequest,
        challenge: Challenge,
    ) -> Outcome {
        if let Some(record) = self.consumed.get(&req.hash) {
            return self
                .run(&genome, price, &req, Some(&record))
                .await
                .into_outcome(challenge);
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let me = self.clone();
        // Runs to the end even if the caller goes away: a consume that has
        // begun is finished and recorded, never left half done.
        let span = tracing::Span::current();
        let spawned = self.arbiter.spawn(
            async move {
                let _ = tx.send(me.settle(&genome, price, &req, challenge).await);
            }
            .instrument(span),
        );
        if !spawned {
            return Outcome::Unavailable(Unavailable::Store(StoreError::Stopped));
        }
        rx.await
            .unwrap_or(Outcome::Unavailable(Unavailable::Store(StoreError::Stopped)))
    }

    /// Settles `req` under `genome` (read once by the caller, already
    /// checked valid) for a request priced at `price`.
    pub async fn settle(
        &self,
        genome: &VerifiedGenome,
        price: Price,
        req: &SettleRequest,
        challenge: Challenge,
    ) -> Outcome {
        // A consumed payment stays consumed: no network hop to say so.
        let cached = self.consumed.get(&req.hash);
        self.run(genome, price, req, cached.as_deref())
            .await
            .into_outcome(challenge)
    }

    /// Drives the [`Flow`] to its answer, one step at a time.
    async fn run(
        &self,
        genome: &VerifiedGenome,
        price: Price,
        req: &SettleRequest,
        cached: Option<&ReplayRecord>,
    ) -> Answer {
        let policy = &genome.policy;
        let limits = Limits {
            min_record_ttl: self.min_record_ttl,
            retry_window: self.retry_window,
            max_retries: self.max_retries,
        };
        let lookup = Lookup {
            hash: req.hash,
            chain_id: policy.chain_id,
            need_head: needs_head(policy),
        };
        let hash = req.hash;
        let mut flow = Flow::new(req, policy, &genome.id, price, limits);
        let mut step = flow.start(cached, unix_now());
        loop {
            let event = match step {
                Step::Answer(answer) => return answer,
                Step::Reserve => {
                    let ttl = self.lookup_timeout * 2;
                    Event::Reserved(self.ask_guard(Reserve { hash, ttl }).await)
                }
                Step::Broadcast(raw) => Event::Broadcast(self.broadcast(raw, policy.chain_id).await),
                Step::Release => {
                    self.guard.do_send(Release(hash));
                    Event::Released
                }
                Step::Lookup { fresh_only } => match self.check(lookup, fresh_only).await {
                    Ok(Checked::Looked(looked)) => Event::Looked(Ok(looked)),
                    Ok(Checked::Consumed(found)) => {
                        if let Ok(record) = &found {
                            self.consumed.insert(hash, record.clone());
                        }
                        Event::FoundConsumed(found)
                    }
                    Err(e) => Event::Looked(Err(e)),
                },
                Step::LookupDirect => Event::Looked(self.lookup_direct(lookup).await),
                Step::Follow => Event::Followed(self.ask_guard(Follow(hash)).await),
                Step::AwaitRecord { bound } => Event::Awaited(self.await_record(hash, bound).await),
                Step::Consume(record) => Event::Consumed(self.ask_guard(Consume { hash, record: *record }).await),
                Step::Recall => Event::Recalled(self.ask_guard(Recall(hash)).await),
                Step::CountRetry { ttl, cap } => Event::Counted(self.ask_guard(CountRetry { hash, ttl, cap }).await),
            };
            step = flow.on(event, unix_now());
        }
    }

    /// Sends `msg` to the replay guard: its answer, or `Stopped` when its
    /// mailbox is gone.
    async fn ask_guard<M, T>(&self, msg: M) -> Result<T, StoreError>
    where
        M: actix::Message<Result = Result<T, StoreError>> + Send + 'static,
        T: Send + 'static,
        ReplayGuard: actix::Handler<Traced<M>>,
    {
        answered(self.guard.send(Traced::new(msg)).await, |_| StoreError::Stopped)
    }

    /// Broadcasts a pull-mode transaction; no answer in time is a timeout.
    async fn broadcast(&self, raw: Bytes, chain_id: u64) -> Result<Submitted, RpcError> {
        let wait = self.lookup_timeout + Duration::from_secs(1);
        let sent = self
            .rpc
            .send(Traced::new(Broadcast { raw, chain_id }))
            .timeout(wait)
            .await;
        answered(sent, |_| RpcError::Timeout(wait))
    }

    /// The replay record of `hash` once another instance has written it,
    /// polled for at most `bound` (`None`: none came).
    async fn await_record(&self, hash: TxHash, bound: Duration) -> Result<Option<Arc<ReplayRecord>>, StoreError> {
        let until = std::time::Instant::now() + bound;
        let mut pause = Duration::from_millis(5);
        loop {
            if let Some(record) = self.ask_guard(RecallNow(hash)).await? {
                return Ok(Some(record));
            }
            if std::time::Instant::now() + pause > until {
                return Ok(None);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(25));
        }
    }

    async fn lookup_direct(&self, lookup: Lookup) -> Result<Looked, RpcError> {
        let wait = self.lookup_timeout;
        let sent = self.rpc.send(Traced::new(lookup)).timeout(wait).await;
        answered(sent, |e| rpc_lost(e, wait, Stopped::Pool)).map(|facts| Looked {
            facts: Arc::new(facts),
            fresh: true,
            remote: false,
        })
    }

    async fn check(&self, lookup: Lookup, fresh_only: bool) -> Result<Checked, RpcError> {
        // The coalescer bounds the lookup; this only guards its mailbox.
        let wait = self.lookup_timeout + Duration::from_secs(1);
        let sent = self
            .coalescer
            .send(Traced::new(Check { lookup, fresh_only }))
            .timeout(wait)
            .await;
        answered(sent, |e| rpc_lost(e, wait, Stopped::Coalescer))
    }
}

/// An actor's answer through its mailbox: the answer itself, or `lost`'s
/// error for a mailbox that timed out or closed.
fn answered<T, E>(sent: Result<Result<T, E>, MailboxError>, lost: impl FnOnce(MailboxError) -> E) -> Result<T, E> {
    sent.unwrap_or_else(|e| Err(lost(e)))
}

/// A lookup whose mailbox gave no answer: out of time after `wait`, or the
/// actor (`who`) stopped.
fn rpc_lost(e: MailboxError, wait: Duration, who: Stopped) -> RpcError {
    match e {
        MailboxError::Timeout => RpcError::Timeout(wait),
        MailboxError::Closed => RpcError::Stopped(who),
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
