//! The settlement flow as a decision: from what is known so far (a cached
//! record, the chain facts and where they came from, the verdict, the
//! store's answers) to the next [`Step`]. No I/O here: the executor
//! (`settle::Settler`) carries each step out and feeds the answer back as an
//! [`Event`], with the time it came.
//!
//! Invariants:
//! - Only a 200 consumes: the one [`Step::Consume`] is taken on a settled
//!   verdict, and only [`Consumed::Inserted`] answers it with a settlement.
//! - One `Inserted` per hash, across instances, is the store's promise; every
//!   other settled check gets the winning record and answers `REPLAYED`, or
//!   the idempotent retry once the store counts it within the limit. A store
//!   that cannot count is a 503, never an uncounted 200.
//! - A record read with the lookup's claim (another instance consumed the
//!   payment) answers as the consumed cache does: REPLAYED, or the counted
//!   idempotent retry; an unreadable one is a 503.
//! - Facts held from an earlier lookup, or learnt from another instance, may
//!   refuse, never settle: a settled verdict on them follows the consume in
//!   flight here, waits for the other instance's record, then asks the node
//!   afresh.
//! - A refusal, a pending payment and a 503 never write a record; the one
//!   503 that may have consumed is a consume whose answer was lost.
//! - A pull-mode transaction is judged before its broadcast, broadcast by the
//!   one presentation holding the reservation, and read back directly after.
//! - A sponsored one is also simulated and its most possible fee held from
//!   the shared budget ([`Step::Sponsor`]) by that one presentation, before
//!   its broadcast: a refusal there gives the reservation back and answers
//!   the refusal, with nothing broadcast.
//! - A payer on the deny list is refused (`payer_denied`) once the facts
//!   say who paid and before the consume, so the payment stays usable if
//!   the payer is allowed again; a pull-mode transaction whose signer is
//!   denied is refused before its reservation and broadcast. A replay or
//!   an idempotent retry of a payment consumed before the denial is
//!   answered as before (it was paid for).

use std::sync::Arc;
use std::time::Duration;

use alloy_primitives::Bytes;
use settlegate_actors::coalescer::Looked;
use settlegate_actors::ledger::deny::DenySet;
use settlegate_actors::replay_guard::{Consumed, StoreError};
use settlegate_actors::rpc_pool::{RpcError, Submitted};
use settlegate_rules::policy::{Price, SettlementPolicy};
use settlegate_rules::replay::{
    ReplayRecord, ReplayVerdict, RequestIdentity, Settlement, judge_replay, record_ttl, retry_window,
    within_retry_limit,
};
use settlegate_rules::settlement::{ChainFacts, Pending, Reason, Terms, Verdict, judge, memo_rule};
use settlegate_rules::signed_tx;

use super::SettleRequest;
use crate::outcome::{Challenge, Denial, Outcome, Unavailable};

/// How long a check whose payment another instance found settles waits for
/// that instance's consume record before it asks the node itself. The
/// holder's own checks consume within milliseconds of its lookup; the wait
/// runs out only when none of them settled (they asked a dearer route).
pub const REMOTE_CONSUME_WAIT: Duration = Duration::from_millis(500);

/// The operator's bounds on records and retries.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Replay records live at least this long.
    pub min_record_ttl: Duration,
    /// The configured idempotent-retry window (the policy's age window
    /// bounds it too).
    pub retry_window: Duration,
    /// The retries of one payment at most.
    pub max_retries: u32,
}

/// What the executor does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Reserve the broadcast of the request's transaction; answered by
    /// [`Event::Reserved`].
    Reserve,
    /// Simulate the sponsored transaction and hold its fee from the budget;
    /// answered by [`Event::Sponsored`].
    Sponsor,
    /// Broadcast this signed transaction; answered by [`Event::Broadcast`].
    Broadcast(Bytes),
    /// Give the reservation back (fire and forget); answered at once by
    /// [`Event::Released`].
    Release,
    /// Ask the coalescer (shared lookups); `fresh_only` skips its hold
    /// window. Answered by [`Event::Looked`], or by [`Event::FoundConsumed`]
    /// when another instance's record came with the lookup's claim.
    Lookup { fresh_only: bool },
    /// Ask the node directly, after this presentation's own broadcast.
    /// Answered by [`Event::Looked`].
    LookupDirect,
    /// Follow a consume of the hash in flight here, or read its record;
    /// answered by [`Event::Followed`].
    Follow,
    /// Poll the store for another instance's record for at most `bound`;
    /// answered by [`Event::Awaited`].
    AwaitRecord { bound: Duration },
    /// `put_if_absent` of this record; answered by [`Event::Consumed`].
    Consume(Box<ReplayRecord>),
    /// The record of the hash, if it was consumed; answered by
    /// [`Event::Recalled`].
    Recall,
    /// Count one idempotent retry; answered by [`Event::Counted`].
    CountRetry { ttl: Duration, cap: u64 },
    /// Done.
    Answer(Answer),
}

/// The answer of one step, fed back to [`Flow::on`].
#[derive(Clone, Debug)]
pub enum Event {
    Reserved(Result<bool, StoreError>),
    /// `Err`: why the sponsor does not pay for it (nothing was held).
    Sponsored(Result<(), Answer>),
    Broadcast(Result<Submitted, RpcError>),
    Released,
    Looked(Result<Looked, RpcError>),
    /// The payment's record, read with the lookup's claim (another
    /// instance consumed it); an unreadable one is an error.
    FoundConsumed(Result<Arc<ReplayRecord>, StoreError>),
    Followed(Result<Option<Arc<ReplayRecord>>, StoreError>),
    Awaited(Result<Option<Arc<ReplayRecord>>, StoreError>),
    Consumed(Result<Consumed, StoreError>),
    Recalled(Result<Option<Arc<ReplayRecord>>, StoreError>),
    Counted(Result<u64, StoreError>),
}

/// The flow's answer; [`Answer::into_outcome`] adds the challenge a 402
/// carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    Settled(Settlement),
    Denied(Denial),
    Unavailable(Unavailable),
}

impl Answer {
    pub fn into_outcome(self, challenge: Challenge) -> Outcome {
        match self {
            Answer::Settled(s) => Outcome::Settled(s),
            Answer::Denied(d) => Outcome::Denied(d, challenge),
            Answer::Unavailable(u) => Outcome::Unavailable(u),
        }
    }
}

/// What became of this presentation's broadcast.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Submission {
    /// Nothing broadcast here: no transaction came with the request, or
    /// another presentation holds (or held) the reservation.
    NotHere,
    /// Broadcast here and taken by the node (mined or in its pool).
    Accepted,
    /// Broadcast here and refused by the node.
    Rejected,
}

#[derive(Debug)]
enum State {
    Reserving,
    Sponsoring,
    Broadcasting,
    /// The reservation is being given back; then the direct lookup (`Ok`)
    /// or this answer.
    Releasing(Result<(), Answer>),
    /// `second`: the fresh lookup after held facts said settled.
    Looking {
        second: bool,
    },
    Following {
        remote: bool,
    },
    Awaiting,
    Consuming(Box<Settlement>),
    Recalling(Reason),
    Counting(Box<Settlement>),
    Done,
}

/// One settlement of one request, step by step.
pub struct Flow<'a> {
    req: &'a SettleRequest,
    policy: &'a SettlementPolicy,
    genome_id: &'a str,
    price: Price,
    limits: Limits,
    terms: Terms,
    submission: Submission,
    state: State,
    /// Payers refused before their payment is consumed.
    denied: Option<&'a DenySet>,
}

impl<'a> Flow<'a> {
    pub fn new(
        req: &'a SettleRequest,
        policy: &'a SettlementPolicy,
        genome_id: &'a str,
        price: Price,
        limits: Limits,
    ) -> Self {
        let terms = Terms {
            memo: memo_rule(policy.memo, req.scheme, req.binding),
            payer: req.payer,
        };
        Flow {
            req,
            policy,
            genome_id,
            price,
            limits,
            terms,
            submission: Submission::NotHere,
            state: State::Done,
            denied: None,
        }
    }

    /// Refuses the payers of `set` (`payer_denied`), nothing consumed.
    pub fn denying(mut self, set: &'a DenySet) -> Self {
        self.denied = Some(set);
        self
    }

    fn is_denied(&self, payer: &alloy_primitives::Address) -> bool {
        self.denied.is_some_and(|d| d.contains(payer))
    }

    /// The first step; `cached` is the record of the consumed-cache, if it
    /// holds the hash (a consumed payment stays consumed: no lookup).
    pub fn start(&mut self, cached: Option<&ReplayRecord>, now: u64) -> Step {
        if let Some(record) = cached {
            return self.replayed(record, now);
        }
        // A pull-mode credential: its transaction is judged before it is
        // broadcast (a broadcast cannot be taken back, and one that would
        // not settle must never reach the node), then broadcast (once,
        // across instances) and looked up like any other.
        let Some(raw) = &self.req.submit else {
            return self.look(false, Step::Lookup { fresh_only: false });
        };
        if let Some(denial) = self.precheck(raw) {
            tracing::info!(tx_hash = %self.req.hash, code = denial.code().as_str(), reason = denial.reason().map(|r| r.as_str()), "a pull-mode transaction refused before its broadcast");
            return self.answer(Answer::Denied(denial));
        }
        self.state = State::Reserving;
        Step::Reserve
    }

    /// The step after `event`, which answers the last step, at `now` (unix
    /// seconds).
    pub fn on(&mut self, event: Event, now: u64) -> Step {
        match (std::mem::replace(&mut self.state, State::Done), event) {
            (State::Reserving, Event::Reserved(reserved)) => match (reserved, &self.req.submit) {
                (Ok(true), Some(_)) if self.req.sponsored.is_some() => {
                    self.state = State::Sponsoring;
                    Step::Sponsor
                }
                (Ok(true), Some(raw)) => {
                    self.state = State::Broadcasting;
                    Step::Broadcast(raw.clone())
                }
                // Another presentation broadcasts it (or did): look it up.
                (Ok(_), _) => self.look(false, Step::Lookup { fresh_only: false }),
                (Err(e), _) => self.unavailable(Unavailable::Store(e)),
            },
            (State::Sponsoring, Event::Sponsored(sponsored)) => match (sponsored, &self.req.submit) {
                (Ok(()), Some(raw)) => {
                    self.state = State::Broadcasting;
                    Step::Broadcast(raw.clone())
                }
                (Ok(()), None) => self.unavailable(Unavailable::Store(StoreError::Stopped)),
                (Err(answer), _) => {
                    self.state = State::Releasing(Err(answer));
                    Step::Release
                }
            },
            // A broadcast that did not take gives the reservation back, so
            // a retry can broadcast.
            (State::Broadcasting, Event::Broadcast(sent)) => match sent {
                Ok(Submitted::Mined | Submitted::Accepted | Submitted::Known) => {
                    self.submission = Submission::Accepted;
                    self.look(false, Step::LookupDirect)
                }
                Ok(Submitted::Rejected(message)) => {
                    tracing::info!(tx_hash = %self.req.hash, node_message = %truncate(&message, 200), "the node refused a pull-mode transaction");
                    self.submission = Submission::Rejected;
                    self.state = State::Releasing(Ok(()));
                    Step::Release
                }
                Err(e) => {
                    self.state = State::Releasing(Err(Answer::Unavailable(Unavailable::Rpc(e))));
                    Step::Release
                }
            },
            // After its own broadcast, a presentation reads the receipt
            // itself: a coalesced lookup that began before the transaction
            // was mined would say "not visible".
            (State::Releasing(then), Event::Released) => match then {
                Ok(()) => self.look(false, Step::LookupDirect),
                Err(answer) => self.answer(answer),
            },
            (State::Looking { second }, Event::Looked(looked)) => match looked {
                Err(e) => self.unavailable(Unavailable::Rpc(e)),
                Ok(looked) => {
                    let verdict = judge(&looked.facts, self.policy, &self.price, self.terms, now);
                    if !second && matches!(verdict, Verdict::Settled(_)) && !looked.fresh {
                        // Held facts may refuse, never settle. They came from
                        // a lookup that just settled for somebody: follow
                        // that consume if it is still running here (or
                        // answer from its record).
                        self.state = State::Following { remote: looked.remote };
                        return Step::Follow;
                    }
                    self.decide(verdict, &looked.facts, now)
                }
            },
            // Consumed elsewhere: answered as from the consumed cache.
            (State::Looking { .. }, Event::FoundConsumed(found)) => match found {
                Ok(record) => self.replayed(&record, now),
                Err(e) => self.unavailable(Unavailable::Store(e)),
            },
            (State::Following { remote }, Event::Followed(followed)) => match followed {
                Ok(Some(record)) => self.replayed(&record, now),
                // Facts another instance learnt never settle here: that
                // instance's own checks are consuming the payment. Its
                // record answers; only if none comes is the node asked.
                Ok(None) if remote => {
                    self.state = State::Awaiting;
                    Step::AwaitRecord {
                        bound: REMOTE_CONSUME_WAIT,
                    }
                }
                // Nobody here is consuming it: look it up again.
                Ok(None) => self.look(true, Step::Lookup { fresh_only: true }),
                Err(e) => self.unavailable(Unavailable::Store(e)),
            },
            (State::Awaiting, Event::Awaited(awaited)) => match awaited {
                Ok(Some(record)) => self.replayed(&record, now),
                Ok(None) => self.look(true, Step::Lookup { fresh_only: true }),
                Err(e) => self.unavailable(Unavailable::Store(e)),
            },
            (State::Consuming(settlement), Event::Consumed(consumed)) => match consumed {
                Ok(Consumed::Inserted) => self.answer(Answer::Settled(*settlement)),
                Ok(Consumed::Existing(record)) => self.replayed(&record, now),
                Err(e) => self.unavailable(Unavailable::Store(e)),
            },
            (State::Recalling(reason), Event::Recalled(recalled)) => match recalled {
                Ok(Some(record)) => self.replayed(&record, now),
                Ok(None) => self.answer(Answer::Denied(Denial::Failed(reason))),
                // The payment does not settle either way; only a retry with
                // an Idempotency-Key could have been owed a 200, so only it
                // waits.
                Err(e) if self.req.request_digest.is_some() => self.unavailable(Unavailable::Store(e)),
                Err(e) => {
                    tracing::warn!(tx_hash = %self.req.hash, error = %e, "replay store unavailable for a failed payment; answering the failure");
                    self.answer(Answer::Denied(Denial::Failed(reason)))
                }
            },
            (State::Counting(settlement), Event::Counted(counted)) => match counted {
                Ok(n) if within_retry_limit(n, self.limits.max_retries) => self.answer(Answer::Settled(*settlement)),
                Ok(_) => self.answer(Answer::Denied(Denial::Replayed)),
                Err(e) => self.unavailable(Unavailable::Store(e)),
            },
            (state, event) => {
                debug_assert!(false, "{event:?} does not answer the step of {state:?}");
                // Fail closed: nothing consumed.
                self.unavailable(Unavailable::Store(StoreError::Stopped))
            }
        }
    }

    /// The verdict on facts a request may settle on.
    fn decide(&mut self, verdict: Verdict, facts: &ChainFacts, now: u64) -> Step {
        match verdict {
            Verdict::Settled(payment) if self.is_denied(&payment.payer) => {
                tracing::info!(tx_hash = %self.req.hash, payer = %payment.payer, "a denied payer's payment refused; nothing consumed");
                self.answer(Answer::Denied(Denial::Failed(Reason::PayerDenied)))
            }
            Verdict::Settled(payment) => {
                let req = self.req;
                let settlement = Settlement::new(req.hash, req.scheme, &payment, self.genome_id);
                let record = ReplayRecord {
                    settlement: settlement.clone(),
                    resource: req.resource.clone(),
                    request_digest: req.request_digest,
                    consumed_at: now,
                    expires_at: now + record_ttl(self.policy, self.limits.min_record_ttl).as_secs(),
                    route: Some(self.policy.route_for(req.resource.as_deref())),
                    instance: None,
                    proof: false,
                };
                self.state = State::Consuming(Box::new(settlement));
                Step::Consume(Box::new(record))
            }
            // A mined transaction that does not settle now may have settled
            // before (it is older now, or the request names another price):
            // if it was consumed, the answer is the replay (or the retry).
            Verdict::Failed(reason) if facts.mined_successfully() => {
                self.state = State::Recalling(reason);
                Step::Recall
            }
            Verdict::Failed(reason) => self.answer(Answer::Denied(Denial::Failed(reason))),
            // The node refused the transaction and does not know it.
            Verdict::Pending(Pending::NotVisible) if self.submission == Submission::Rejected => {
                self.answer(Answer::Denied(Denial::Failed(Reason::TxRejected)))
            }
            Verdict::Pending(Pending::NotVisible) => self.answer(Answer::Denied(Denial::Pending {
                reason: None,
                detail: "the transaction is not visible on chain yet; retry shortly".into(),
            })),
            Verdict::Pending(Pending::Confirmations { have, need }) => self.answer(Answer::Denied(Denial::Pending {
                reason: Some(Reason::InsufficientConfirmations),
                detail: format!("the payment has {have} of {need} confirmations; retry shortly"),
            })),
        }
    }

    /// What a consumed payment's `record` means for this request: the same
    /// request inside the retry window gets its settlement again, once the
    /// store counts it within the retry limit; anything else is `REPLAYED`.
    fn replayed(&mut self, record: &ReplayRecord, now: u64) -> Step {
        let window = retry_window(self.limits.retry_window, self.policy);
        let identity = RequestIdentity {
            scheme: self.req.scheme,
            request_digest: self.req.request_digest.as_ref(),
        };
        match judge_replay(record, &identity, now, window) {
            ReplayVerdict::Retry(settlement) => {
                self.state = State::Counting(settlement);
                Step::CountRetry {
                    // past the window however late in it the first retry came
                    ttl: window + Duration::from_secs(60),
                    cap: u64::from(self.limits.max_retries) + 1,
                }
            }
            ReplayVerdict::Replayed => self.answer(Answer::Denied(Denial::Replayed)),
        }
    }

    /// Why a pull-mode transaction must not be broadcast, if it must not:
    /// it would not settle, or its sender (recovered from its signature,
    /// or the sponsored hand-off's) is denied.
    fn precheck(&self, raw: &Bytes) -> Option<Denial> {
        match signed_tx::decode(raw) {
            Err(e) => Some(Denial::MalformedCredential(e.to_string())),
            Ok(tx) => {
                if let Err(reason) = signed_tx::precheck(&tx, self.policy, &self.price, self.terms) {
                    return Some(Denial::Failed(reason));
                }
                let sender = tx.signer.or(self.req.sponsored.as_ref().map(|s| s.sender));
                sender
                    .filter(|s| self.is_denied(s))
                    .map(|_| Denial::Failed(Reason::PayerDenied))
            }
        }
    }

    fn look(&mut self, second: bool, step: Step) -> Step {
        self.state = State::Looking { second };
        step
    }

    fn unavailable(&mut self, why: Unavailable) -> Step {
        self.answer(Answer::Unavailable(why))
    }

    fn answer(&mut self, answer: Answer) -> Step {
        self.state = State::Done;
        Step::Answer(answer)
    }
}

fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
#[path = "flow_tests.rs"]
mod tests;
