//! The settlement flow shared by every way a payment is presented:
//!
//! consumed cache → coalesced chain lookup → `judge` → one atomic
//! `put_if_absent` of the replay record.
//!
//! - A payment already consumed is answered from memory (the
//!   `ConsumedCache`), with no lookup and no store round trip; only an
//!   idempotent retry goes to the store, to be counted against the retry
//!   limit (`CountRetry`) before its 200.
//! - Every check of one canonical hash that overlaps another shares its
//!   chain lookup, whatever it finds (the `Coalescer`); nothing is claimed
//!   before the lookup, so no waiter ever turns into a second lookup.
//! - The verdict is pure (`settlegate_rules::settlement::judge`), under the
//!   genome the request read once. A settled verdict needs facts from a
//!   lookup that overlapped the request; facts held from an earlier lookup
//!   may only refuse.
//! - The replay store decides which settled check consumes the payment:
//!   exactly one `Consumed::Inserted` per hash, across instances; every
//!   other settled check gets the winning record and answers `REPLAYED` or
//!   the idempotent replay. A failure, a pending payment and a 503 never
//!   touch the store's records, so only a 200 consumes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::sync::Arc;

use actix::{Addr, ArbiterHandle, MailboxError};
use alloy_primitives::Bytes;
use settlegate_actors::Traced;
use settlegate_actors::coalescer::{Check, Coalescer, Looked};
use settlegate_actors::replay_guard::{
    Consume, Consumed, ConsumedCache, CountRetry, Follow, Recall, RecallNow, Release, ReplayGuard, Reserve, StoreError,
};
use settlegate_actors::rpc_pool::{Broadcast, Lookup, RpcError, RpcPool, Stopped, Submitted};
use settlegate_rules::credential::TxHash;
use settlegate_rules::genome::VerifiedGenome;
use settlegate_rules::mpp::Binding;
use settlegate_rules::policy::{Price, SettlementPolicy};
use settlegate_rules::replay::{
    ReplayRecord, ReplayVerdict, RequestDigest, RequestIdentity, Scheme, Settlement, judge_replay, record_ttl,
    retry_window, within_retry_limit,
};
use settlegate_rules::settlement::{PayerRule, Pending, Reason, Terms, Verdict, judge, memo_rule, needs_head};
use settlegate_rules::signed_tx;
use tracing::Instrument;

use crate::outcome::{Challenge, Denial, Outcome, Unavailable};

/// How long a check whose payment another instance found settles waits
/// for that instance's consume record before it asks the node itself.
/// The holder's own checks consume within milliseconds of its lookup; the
/// wait runs out only when none of them settled (they asked a dearer route).
const REMOTE_CONSUME_WAIT: Duration = Duration::from_millis(500);

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

impl SettleRequest {
    fn identity(&self) -> RequestIdentity<'_> {
        RequestIdentity {
            scheme: self.scheme,
            request_digest: self.request_digest.as_ref(),
        }
    }
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
            return self.replay_outcome(&record, &req, challenge, &genome.policy).await;
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
        let policy = &genome.policy;
        if let Some(record) = self.consumed.get(&req.hash) {
            return self.replay_outcome(&record, req, challenge, policy).await;
        }

        let lookup = Lookup {
            hash: req.hash,
            chain_id: policy.chain_id,
            need_head: needs_head(policy),
        };
        let terms = Terms {
            memo: memo_rule(policy.memo, req.scheme, req.binding),
            payer: req.payer,
        };
        // A pull-mode credential: its transaction is judged before it is
        // broadcast (a broadcast cannot be taken back, and one that would
        // not settle must never reach the node), then broadcast (once,
        // across instances) and looked up like any other.
        if let Some(raw) = &req.submit {
            let refused = match signed_tx::decode(raw) {
                Err(e) => Some(Denial::MalformedCredential(e.to_string())),
                Ok(tx) => signed_tx::precheck(&tx, policy, price, terms).err().map(Denial::Failed),
            };
            if let Some(denial) = refused {
                tracing::info!(tx_hash = %req.hash, code = denial.code().as_str(), reason = denial.reason().map(|r| r.as_str()), "a pull-mode transaction refused before its broadcast");
                return Outcome::Denied(denial, challenge);
            }
        }
        let (broadcast, rejected) = match &req.submit {
            Some(raw) => match self.submit(raw, req.hash, policy.chain_id).await {
                Ok(done) => done,
                Err(unavailable) => return Outcome::Unavailable(unavailable),
            },
            None => (false, false),
        };
        // After its own broadcast, a presentation reads the receipt itself:
        // a coalesced lookup that began before the transaction was mined
        // would say "not visible".
        let first = if broadcast {
            self.lookup_direct(lookup).await
        } else {
            self.check(lookup, false).await
        };
        let mut looked = match first {
            Ok(l) => l,
            Err(e) => return Outcome::Unavailable(Unavailable::Rpc(e)),
        };
        let mut verdict = judge(&looked.facts, policy, price, terms, unix_now());
        if matches!(verdict, Verdict::Settled(_)) && !looked.fresh {
            // Held facts may refuse, never settle. They came from a lookup
            // that just settled for somebody: follow that consume if it is
            // still running here (or answer from its record); only a
            // payment nobody here is consuming is looked up again.
            match self.guard.send(Traced::new(Follow(req.hash))).await {
                Ok(Ok(Some(record))) => return self.replay_outcome(&record, req, challenge, policy).await,
                Ok(Ok(None)) => {}
                Ok(Err(e)) => return Outcome::Unavailable(Unavailable::Store(e)),
                Err(_) => return Outcome::Unavailable(Unavailable::Store(StoreError::Stopped)),
            }
            // Facts another instance learnt never settle here: that
            // instance's own checks are consuming the payment. Its record
            // answers; only if none comes does this instance ask the node.
            if looked.remote {
                match self.await_record(req.hash, REMOTE_CONSUME_WAIT).await {
                    Ok(Some(record)) => return self.replay_outcome(&record, req, challenge, policy).await,
                    Ok(None) => {}
                    Err(e) => return Outcome::Unavailable(Unavailable::Store(e)),
                }
            }
            looked = match self.check(lookup, true).await {
                Ok(l) => l,
                Err(e) => return Outcome::Unavailable(Unavailable::Rpc(e)),
            };
            verdict = judge(&looked.facts, policy, price, terms, unix_now());
        }

        match verdict {
            Verdict::Settled(payment) => {
                let settlement = Settlement::new(req.hash, req.scheme, &payment, &genome.id);
                let now = unix_now();
                let record = ReplayRecord {
                    settlement: settlement.clone(),
                    resource: req.resource.clone(),
                    request_digest: req.request_digest,
                    consumed_at: now,
                    expires_at: now + record_ttl(policy, self.min_record_ttl).as_secs(),
                };
                match self.guard.send(Traced::new(Consume { hash: req.hash, record })).await {
                    Ok(Ok(Consumed::Inserted)) => Outcome::Settled(settlement),
                    Ok(Ok(Consumed::Existing(r))) => self.replay_outcome(&r, req, challenge, policy).await,
                    Ok(Err(e)) => Outcome::Unavailable(Unavailable::Store(e)),
                    Err(_) => Outcome::Unavailable(Unavailable::Store(StoreError::Stopped)),
                }
            }
            Verdict::Failed(reason) if looked.facts.mined_successfully() => {
                self.failed_or_replayed(reason, req, challenge, policy).await
            }
            Verdict::Failed(reason) => Outcome::Denied(Denial::Failed(reason), challenge),
            // The node refused the transaction and does not know it.
            Verdict::Pending(Pending::NotVisible) if rejected => {
                Outcome::Denied(Denial::Failed(Reason::TxRejected), challenge)
            }
            Verdict::Pending(Pending::NotVisible) => Outcome::Denied(
                Denial::Pending {
                    reason: None,
                    detail: "the transaction is not visible on chain yet; retry shortly".into(),
                },
                challenge,
            ),
            Verdict::Pending(Pending::Confirmations { have, need }) => Outcome::Denied(
                Denial::Pending {
                    reason: Some(Reason::InsufficientConfirmations),
                    detail: format!("the payment has {have} of {need} confirmations; retry shortly"),
                },
                challenge,
            ),
        }
    }

    /// A mined transaction that does not settle now may have settled
    /// before (it is older now, or the request names another price): if it
    /// was consumed, the answer is the replay (or the idempotent retry).
    async fn failed_or_replayed(
        &self,
        reason: Reason,
        req: &SettleRequest,
        challenge: Challenge,
        policy: &SettlementPolicy,
    ) -> Outcome {
        let recalled = match self.guard.send(Traced::new(Recall(req.hash))).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Stopped),
        };
        match recalled {
            Ok(Some(record)) => self.replay_outcome(&record, req, challenge, policy).await,
            Ok(None) => Outcome::Denied(Denial::Failed(reason), challenge),
            // The payment does not settle either way; only a retry with an
            // Idempotency-Key could have been owed a 200, so only it waits.
            Err(e) if req.request_digest.is_some() => Outcome::Unavailable(Unavailable::Store(e)),
            Err(e) => {
                tracing::warn!(tx_hash = %req.hash, error = %e, "replay store unavailable for a failed payment; answering the failure");
                Outcome::Denied(Denial::Failed(reason), challenge)
            }
        }
    }

    /// Broadcasts `raw` if no other presentation of it holds the
    /// reservation: `(broadcast here, refused by the node)`. A broadcast
    /// that failed gives the reservation back, so a retry can broadcast.
    async fn submit(&self, raw: &Bytes, hash: TxHash, chain_id: u64) -> Result<(bool, bool), Unavailable> {
        let ttl = self.lookup_timeout * 2;
        match self.guard.send(Traced::new(Reserve { hash, ttl })).await {
            Ok(Ok(true)) => {}
            // Another presentation broadcasts it (or did): look it up.
            Ok(Ok(false)) => return Ok((false, false)),
            Ok(Err(e)) => return Err(Unavailable::Store(e)),
            Err(_) => return Err(Unavailable::Store(StoreError::Stopped)),
        }
        let wait = self.lookup_timeout + Duration::from_secs(1);
        let sent = self
            .rpc
            .send(Traced::new(Broadcast {
                raw: raw.clone(),
                chain_id,
            }))
            .timeout(wait)
            .await;
        match sent {
            Ok(Ok(Submitted::Mined | Submitted::Accepted)) => Ok((true, false)),
            Ok(Ok(Submitted::Rejected(message))) => {
                tracing::info!(tx_hash = %hash, node_message = %truncate(&message, 200), "the node refused a pull-mode transaction");
                self.guard.do_send(Release(hash));
                Ok((true, true))
            }
            Ok(Err(e)) => {
                self.guard.do_send(Release(hash));
                Err(Unavailable::Rpc(e))
            }
            Err(_) => {
                self.guard.do_send(Release(hash));
                Err(Unavailable::Rpc(RpcError::Timeout(wait)))
            }
        }
    }

    /// The replay record of `hash` once another instance has written it,
    /// polled for at most `bound` (`None`: none came).
    async fn await_record(&self, hash: TxHash, bound: Duration) -> Result<Option<Arc<ReplayRecord>>, StoreError> {
        let until = std::time::Instant::now() + bound;
        let mut pause = Duration::from_millis(5);
        loop {
            match self.guard.send(Traced::new(RecallNow(hash))).await {
                Ok(Ok(Some(record))) => return Ok(Some(record)),
                Ok(Ok(None)) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(StoreError::Stopped),
            }
            if std::time::Instant::now() + pause > until {
                return Ok(None);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(25));
        }
    }

    /// What a consumed payment's `record` means for `req`: the same request
    /// inside the retry window gets its settlement again, if the store
    /// counts it within the retry limit; anything else is `REPLAYED`. A
    /// store that cannot count is a 503, never an uncounted 200.
    async fn replay_outcome(
        &self,
        record: &ReplayRecord,
        req: &SettleRequest,
        challenge: Challenge,
        policy: &SettlementPolicy,
    ) -> Outcome {
        let window = retry_window(self.retry_window, policy);
        let settlement = match judge_replay(record, &req.identity(), unix_now(), window) {
            ReplayVerdict::Retry(settlement) => settlement,
            ReplayVerdict::Replayed => return Outcome::Denied(Denial::Replayed, challenge),
        };
        let count = CountRetry {
            hash: req.hash,
            // past the window however late in it the first retry came
            ttl: window + Duration::from_secs(60),
            cap: u64::from(self.max_retries) + 1,
        };
        match self.guard.send(Traced::new(count)).await {
            Ok(Ok(n)) if within_retry_limit(n, self.max_retries) => Outcome::Settled(*settlement),
            Ok(Ok(_)) => Outcome::Denied(Denial::Replayed, challenge),
            Ok(Err(e)) => Outcome::Unavailable(Unavailable::Store(e)),
            Err(_) => Outcome::Unavailable(Unavailable::Store(StoreError::Stopped)),
        }
    }

    async fn lookup_direct(&self, lookup: Lookup) -> Result<Looked, RpcError> {
        let wait = self.lookup_timeout;
        match self.rpc.send(Traced::new(lookup)).timeout(wait).await {
            Ok(r) => r.map(|facts| Looked {
                facts: Arc::new(facts),
                fresh: true,
                remote: false,
            }),
            Err(MailboxError::Timeout) => Err(RpcError::Timeout(wait)),
            Err(MailboxError::Closed) => Err(RpcError::Stopped(Stopped::Pool)),
        }
    }

    async fn check(&self, lookup: Lookup, fresh_only: bool) -> Result<Looked, RpcError> {
        // The coalescer bounds the lookup; this only guards its mailbox.
        let wait = self.lookup_timeout + Duration::from_secs(1);
        match self
            .coalescer
            .send(Traced::new(Check { lookup, fresh_only }))
            .timeout(wait)
            .await
        {
            Ok(r) => r,
            Err(MailboxError::Timeout) => Err(RpcError::Timeout(wait)),
            Err(MailboxError::Closed) => Err(RpcError::Stopped(Stopped::Coalescer)),
        }
    }
}

fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
