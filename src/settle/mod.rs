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

use crate::outcome::{Challenge, Denial, Outcome, Unavailable};
use flow::{Answer, Event, Flow, Limits, Step};
use settlegate_rules::settlement::Reason;

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
    /// `submit` is co-signed by this service's sponsor: what its
    /// simulation and budget hold need.
    pub sponsored: Option<Sponsored>,
}

/// A sponsored transaction, as the sponsor simulates and pays for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sponsored {
    pub sender: alloy_primitives::Address,
    /// `(to, input)` of each call.
    pub calls: Vec<(alloy_primitives::Address, Bytes)>,
    pub gas: u64,
    /// The most it can cost the sponsor (fee-token units).
    pub max_fee: u128,
    pub fee_token: alloy_primitives::Address,
    /// Unix seconds after which it can no longer be mined.
    pub valid_before: u64,
    pub nonce_key: alloy_primitives::U256,
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
    /// Co-signs, simulates and budgets sponsored transactions.
    pub sponsor: Option<Arc<crate::sponsor::Sponsor>>,
    /// Payers refused before their payment is consumed.
    pub denied: settlegate_actors::ledger::deny::DenyList,
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
        let denied = self.denied.snapshot();
        let mut flow = Flow::new(req, policy, &genome.id, price, limits).denying(&denied);
        let mut step = flow.start(cached, unix_now());
        // A sponsored transaction's budget hold, what its broadcast did and
        // what the node said right after: the hold is settled from them.
        let mut held = None;
        let mut submitted = None;
        let mut direct = None;
        loop {
            let event = match step {
                Step::Answer(answer) => {
                    if let Some(held) = held {
                        self.settle_hold(policy, req, &held, submitted, direct).await;
                    }
                    return answer;
                }
                Step::Sponsor => Event::Sponsored(self.sponsor(policy, req, &mut held).await),
                Step::Reserve => {
                    let ttl = self.lookup_timeout * 2;
                    Event::Reserved(self.ask_guard(Reserve { hash, ttl }).await)
                }
                Step::Broadcast(raw) => {
                    let sent = self.broadcast(raw, policy.chain_id).await;
                    submitted = Some(sent.clone());
                    Event::Broadcast(sent)
                }
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
                Step::LookupDirect => {
                    let looked = self.lookup_direct(lookup).await;
                    if let Ok(l) = &looked {
                        direct = Some(l.facts.clone());
                    }
                    Event::Looked(looked)
                }
                Step::Follow => Event::Followed(self.ask_guard(Follow(hash)).await),
                Step::AwaitRecord { bound } => Event::Awaited(self.await_record(hash, bound).await),
                Step::Consume(record) => Event::Consumed(self.ask_guard(Consume { hash, record: *record }).await),
                Step::Recall => Event::Recalled(self.ask_guard(Recall(hash)).await),
                Step::CountRetry { ttl, cap } => Event::Counted(self.ask_guard(CountRetry { hash, ttl, cap }).await),
            };
            step = flow.on(event, unix_now());
        }
    }

    /// A sponsored transaction, before its broadcast: its most possible fee
    /// held from the shared budget (one per sender at a time), then
    /// simulated (one that would revert costs the sponsor nothing, and its
    /// hold is dropped).
    async fn sponsor(
        &self,
        policy: &settlegate_rules::policy::SettlementPolicy,
        req: &SettleRequest,
        held: &mut Option<crate::sponsor::Held>,
    ) -> Result<(), Answer> {
        let unavailable = || Answer::Denied(Denial::Failed(Reason::SponsorshipUnavailable));
        let (Some(sponsor), Some(sp), Some(tx)) = (&self.sponsor, &policy.sponsorship, &req.sponsored) else {
            return Err(unavailable());
        };
        // Presented again after its broadcast reservation lapsed: it is on
        // chain already, so nothing is simulated or held (the budget was
        // charged once); the flow judges what the chain says.
        let lookup = Lookup {
            hash: req.hash,
            chain_id: policy.chain_id,
            need_head: false,
        };
        match self.lookup_direct(lookup).await {
            Ok(l) if l.facts.receipt.is_some() => return Ok(()),
            Ok(_) => {}
            Err(e) => return Err(Answer::Unavailable(Unavailable::Rpc(e))),
        }
        if !sponsor.balance_ok(sp) {
            sponsor.count("unavailable");
            tracing::info!(tx_hash = %req.hash, "a sponsored transaction refused: the sponsor's balance is below min_balance");
            return Err(unavailable());
        }
        // Held before the simulation, so the simulation sees the sender's
        // balance after its last sponsored transaction (one per sender is
        // held at a time), never beside it.
        let h = match sponsor
            .hold(sp, &req.hash.to_string(), &tx.sender, tx.max_fee, tx.valid_before)
            .await
        {
            Ok(h) => h,
            Err(crate::sponsor::HoldError::Exhausted(
                e @ settlegate_rules::sponsor::budget::Exhausted::SenderInFlight,
            )) => {
                sponsor.count("sender_in_flight");
                tracing::info!(tx_hash = %req.hash, sender = %tx.sender, why = %e, "a sponsored transaction refused: its sender has one in flight");
                return Err(unavailable());
            }
            Err(crate::sponsor::HoldError::Exhausted(e)) => {
                sponsor.count("budget_exhausted");
                tracing::info!(tx_hash = %req.hash, why = %e, "a sponsored transaction refused: the budget cannot hold it");
                return Err(unavailable());
            }
            Err(crate::sponsor::HoldError::Store(e)) => return Err(Answer::Unavailable(Unavailable::Store(e))),
        };
        let simulation = settlegate_actors::rpc_pool::Simulate {
            from: tx.sender,
            calls: tx.calls.clone(),
            gas: tx.gas,
            nonce_key: tx.nonce_key,
            valid_before: tx.valid_before,
            fee_payer: sponsor.address(),
            fee_token: tx.fee_token,
            chain_id: policy.chain_id,
        };
        match sponsor.simulate(simulation).await {
            Ok(true) => {}
            Ok(false) => {
                release(sponsor, sp, &h).await;
                sponsor.count("would_revert");
                tracing::info!(tx_hash = %req.hash, "a sponsored transaction would revert: not co-signed, not broadcast");
                return Err(Answer::Denied(Denial::Failed(Reason::WouldRevert)));
            }
            Err(e) => {
                release(sponsor, sp, &h).await;
                return Err(Answer::Unavailable(Unavailable::Rpc(e)));
            }
        }
        *held = Some(h);
        Ok(())
    }

    /// Settles a budget hold: the fee the sponsor paid on chain (its fee
    /// token's `Transfer` to the fee manager), nothing for a transaction the
    /// node refused and does not know, and the hold left to expire (counted
    /// in full) when neither is known.
    async fn settle_hold(
        &self,
        policy: &settlegate_rules::policy::SettlementPolicy,
        req: &SettleRequest,
        held: &crate::sponsor::Held,
        submitted: Option<Result<Submitted, RpcError>>,
        direct: Option<Arc<settlegate_rules::settlement::ChainFacts>>,
    ) {
        let (Some(sponsor), Some(sp), Some(tx)) = (&self.sponsor, &policy.sponsorship, &req.sponsored) else {
            return;
        };
        let receipt = direct.as_ref().and_then(|f| f.receipt.as_ref());
        let fee = match (receipt, &submitted) {
            (Some(r), _) => {
                let paid = settlegate_rules::sponsor::fee_paid(&r.logs, tx.fee_token, sponsor.address());
                if paid.is_none() {
                    tracing::warn!(tx_hash = %req.hash, "no fee transfer from the sponsor in the receipt: charging the hold in full");
                }
                sponsor.count("broadcast");
                Some(paid.map_or(tx.max_fee, |p| u128::try_from(p).unwrap_or(u128::MAX)))
            }
            (None, Some(Ok(Submitted::Rejected(_)))) | (None, None) => {
                sponsor.count("rejected");
                None
            }
            // Sent, fate unknown: the hold stays and counts in full once
            // the transaction can no longer be mined.
            (None, Some(_)) => return,
        };
        if let Err(e) = sponsor.settle(sp, held, fee).await {
            tracing::warn!(tx_hash = %req.hash, error = %e, "cannot settle the sponsorship hold; it counts in full when it expires");
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

/// Drops a hold whose transaction will not be broadcast.
async fn release(
    sponsor: &crate::sponsor::Sponsor,
    sp: &settlegate_rules::sponsor::SponsorPolicy,
    held: &crate::sponsor::Held,
) {
    if let Err(e) = sponsor.settle(sp, held, None).await {
        tracing::warn!(error = %e, "cannot release a sponsorship hold; it counts in full when it expires");
    }
}
