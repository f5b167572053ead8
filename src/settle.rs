//! The settlement flow shared by `/v1/verify` (and, later, `/v1/authorize`):
//! claim the hash → ask the chain (coalesced) → judge → commit on success,
//! release otherwise.
//!
//! The claim comes first so that concurrent and late requests for a hash
//! never reach the chain twice: the owner of the claim looks up; everyone
//! else waits for its outcome in the store. Only a settled verdict commits;
//! every other path releases the claim, so a payment is consumed by a 200
//! and nothing else.

use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde_json::{Value, json};
use settlegate_actors::ActiveGenome;
use settlegate_actors::coalescer::{Check, Coalescer};
use settlegate_actors::replay_guard::{Commit, Release, ReplayGuard, ReplayRecord, Reservation, Reserve, StoreError};
use settlegate_rules::credential::TxHash;
use settlegate_rules::genome::VerifiedGenome;
use settlegate_rules::policy::MemoPolicy;
use settlegate_rules::primitives::address_lower;
use settlegate_rules::settlement::{MemoRule, Payment, Pending, Reason, Verdict, judge};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::http::payment::{Challenge, Denial, Unavailable};

/// One request to settle a payment.
#[derive(Clone, Debug)]
pub struct SettleRequest {
    pub hash: TxHash,
    pub scheme: &'static str,
    pub resource: Option<String>,
    pub idempotency_key: Option<String>,
}

/// The outcome, with the challenge to send when it is not a 200.
pub enum Outcome {
    Settled { settlement: Value },
    Denied(Denial, Challenge),
    Unavailable(Unavailable),
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub status: u16,
    pub code: &'static str,
    pub reason: &'static str,
}

/// `settlegate_verifications_total{status, code, reason}`.
pub type OutcomeCounter = Family<OutcomeLabels, Counter>;

#[derive(Clone)]
pub struct Settler {
    pub genome: ActiveGenome,
    pub coalescer: Addr<Coalescer>,
    pub guard: Addr<ReplayGuard>,
    /// How long a request waits for another request's claim on its hash.
    pub claim_wait: Duration,
    /// Replay records live at least this long.
    pub min_record_ttl: Duration,
    pub outcomes: OutcomeCounter,
}

impl Settler {
    pub async fn settle(&self, req: SettleRequest) -> Outcome {
        let genome = match self.genome.usable(OffsetDateTime::now_utc()) {
            Ok(g) => g,
            Err(e) => return self.count(Outcome::Unavailable(Unavailable::Genome(e.to_string()))),
        };
        let outcome = self.settle_with(&genome, &req).await;
        log_outcome(&genome, &req, &outcome);
        self.count(outcome)
    }

    async fn settle_with(&self, genome: &Arc<VerifiedGenome>, req: &SettleRequest) -> Outcome {
        let policy = &genome.policy;
        let price = policy.price_for(req.resource.as_deref());
        let challenge = Challenge::new(policy, price);
        let denied = |d: Denial| Outcome::Denied(d, challenge.clone());
        let store_down = |e: StoreError| Outcome::Unavailable(Unavailable::Store(e.to_string()));
        let key_hash = req
            .idempotency_key
            .as_deref()
            .map(|k| hex::encode(Sha256::digest(k.as_bytes())));

        let mut waited = Duration::ZERO;
        let mut pause = Duration::from_millis(5);
        let token = loop {
            match self.guard.send(Reserve(req.hash)).await {
                Err(e) => return store_down(StoreError::Unavailable(e.to_string())),
                Ok(Err(e)) => return store_down(e),
                Ok(Ok(Reservation::Claimed { token })) => break token,
                Ok(Ok(Reservation::Committed(record))) => {
                    return if is_same_request(&record, req, key_hash.as_deref()) {
                        let mut settlement = record.settlement.clone();
                        settlement["idempotent_replay"] = json!(true);
                        Outcome::Settled { settlement }
                    } else {
                        denied(Denial::Replayed)
                    };
                }
                Ok(Ok(Reservation::InFlight)) => {
                    if waited >= self.claim_wait {
                        return denied(Denial::Pending {
                            reason: None,
                            detail: "another request is verifying this payment; retry shortly".into(),
                        });
                    }
                    tokio::time::sleep(pause).await;
                    waited += pause;
                    pause = (pause * 2).min(Duration::from_millis(100));
                }
            }
        };

        let verdict = match self.coalescer.send(Check(req.hash)).await {
            Ok(Ok(facts)) => {
                let now = OffsetDateTime::now_utc().unix_timestamp().max(0) as u64;
                Ok(judge(&facts, policy, price, memo_rule(policy.memo), now))
            }
            Ok(Err(e)) => Err(Unavailable::Rpc(e.to_string())),
            Err(e) => Err(Unavailable::Rpc(format!("coalescer: {e}"))),
        };
        let outcome = match verdict {
            Ok(Verdict::Settled(payment)) => {
                let settlement = settlement_body(genome, req, &payment);
                let record = ReplayRecord {
                    settlement: settlement.clone(),
                    scheme: req.scheme.to_owned(),
                    resource: req.resource.clone(),
                    idempotency_key_sha256: key_hash,
                    consumed_at: OffsetDateTime::now_utc().unix_timestamp().max(0) as u64,
                };
                let ttl = self.record_ttl(genome);
                return match self
                    .guard
                    .send(Commit {
                        hash: req.hash,
                        token,
                        record,
                        ttl,
                    })
                    .await
                {
                    Ok(Ok(true)) => Outcome::Settled { settlement },
                    // Our claim expired under us: someone else may own the
                    // hash now. A 503 is better than a second 200.
                    Ok(Ok(false)) => store_down(StoreError::Unavailable("the claim expired before commit".into())),
                    Ok(Err(e)) => store_down(e),
                    Err(e) => store_down(StoreError::Unavailable(e.to_string())),
                };
            }
            Ok(Verdict::Pending(Pending::NotVisible)) => denied(Denial::Pending {
                reason: None,
                detail: "the transaction is not visible on chain yet; retry shortly".into(),
            }),
            Ok(Verdict::Pending(Pending::Confirmations { have, need })) => denied(Denial::Pending {
                reason: Some(Reason::InsufficientConfirmations),
                detail: format!("the payment has {have} of {need} confirmations; retry shortly"),
            }),
            Ok(Verdict::Failed(reason)) => denied(Denial::Failed(reason)),
            Err(u) => Outcome::Unavailable(u),
        };
        // Not a 200: give the hash back, so the payment stays usable.
        let released = self.guard.send(Release { hash: req.hash, token }).await;
        if let Err(error) = released
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()))
        {
            // The claim expires by itself; the answer stands.
            tracing::warn!(tx_hash = %req.hash, %error, "releasing a claim failed; it will expire");
        }
        outcome
    }

    /// Records outlive the payment's acceptable age (plus skew on both
    /// sides), and never less than the configured floor, so a policy that
    /// later widens the age window does not reopen old payments.
    fn record_ttl(&self, genome: &VerifiedGenome) -> Duration {
        let p = &genome.policy;
        let window = Duration::from_secs(p.max_age_seconds + 2 * p.clock_skew_seconds + 60);
        window.max(self.min_record_ttl)
    }

    fn count(&self, outcome: Outcome) -> Outcome {
        let labels = match &outcome {
            Outcome::Settled { .. } => OutcomeLabels {
                status: 200,
                code: "SETTLED",
                reason: "",
            },
            Outcome::Denied(d, _) => OutcomeLabels {
                status: 402,
                code: d.code(),
                reason: d.reason().map_or("", |r| r.as_str()),
            },
            Outcome::Unavailable(u) => OutcomeLabels {
                status: 503,
                code: u.code(),
                reason: "",
            },
        };
        self.outcomes.get_or_create(&labels).inc();
        outcome
    }
}

/// The Tempo scheme carries no challenge, so a policy that binds the memo
/// to a challenge cannot be met by it.
fn memo_rule(policy: MemoPolicy) -> MemoRule {
    match policy {
        MemoPolicy::Optional => MemoRule::Any,
        MemoPolicy::Required => MemoRule::Required,
        MemoPolicy::ChallengeBound => MemoRule::Unsatisfiable,
    }
}

/// A retry of the request that consumed the payment: same scheme, same
/// resource, and an Idempotency-Key that matches (both hashed; comparing
/// digests of equal length in constant time).
fn is_same_request(record: &ReplayRecord, req: &SettleRequest, key_hash: Option<&str>) -> bool {
    let (Some(stored), Some(given)) = (record.idempotency_key_sha256.as_deref(), key_hash) else {
        return false;
    };
    constant_time_eq(stored.as_bytes(), given.as_bytes())
        && record.resource == req.resource
        && record.scheme == req.scheme
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn settlement_body(genome: &VerifiedGenome, req: &SettleRequest, p: &Payment) -> Value {
    json!({
        "status": "settled",
        "scheme": req.scheme,
        "tx_hash": req.hash.to_string(),
        "payer": address_lower(&p.payer),
        "recipient": address_lower(&p.recipient),
        "asset": address_lower(&p.asset),
        "amount": p.amount.to_string(),
        "memo": p.memo.map(|m| format!("{m:#x}")),
        "chain_id": p.chain_id,
        "block_number": p.block_number,
        "block_timestamp": p.block_timestamp,
        "genome_id": genome.id,
        "idempotent_replay": false,
    })
}

fn log_outcome(genome: &VerifiedGenome, req: &SettleRequest, outcome: &Outcome) {
    let (hash, id) = (req.hash.to_string(), genome.id.as_str());
    match outcome {
        Outcome::Settled { settlement } => tracing::info!(
            tx_hash = %hash, genome_id = %id, resource = ?req.resource,
            idempotent_replay = settlement["idempotent_replay"].as_bool(), "payment settled"
        ),
        Outcome::Denied(d, _) => tracing::info!(
            tx_hash = %hash, genome_id = %id, code = d.code(), reason = d.reason().map(|r| r.as_str()),
            "payment refused"
        ),
        Outcome::Unavailable(u) => tracing::warn!(
            tx_hash = %hash, genome_id = %id, code = u.code(), error = ?u, "no trustworthy answer"
        ),
    }
}
