//! The three answers of a payment check, as values: [`Outcome::Settled`],
//! [`Outcome::Served`] and [`Outcome::Proven`] (200), [`Outcome::Denied`]
//! (402, with the [`Challenge`] to pay) and
//! [`Outcome::Unavailable`] (503, with its typed cause). The settlement flow
//! produces them; `http::respond` is the one place that turns them into
//! responses, and `metrics` the one place that counts them. Each 402 and
//! 503 answer names its [`Code`].

use crate::code::Code;
use crate::session::{Served, SessionTerms, SessionUnavailable};
use settlegate_actors::replay_guard::StoreError;
use settlegate_actors::rpc_pool::RpcError;
use settlegate_rules::GenomeError;
use settlegate_rules::mpp::{ChargeRequest, Modes};
use settlegate_rules::policy::{Price, Schemes, SettlementPolicy, Split};
use settlegate_rules::primitives::{Address, Amount};
use settlegate_rules::replay::Settlement;
use settlegate_rules::session::{SessionProblem, SessionRequest};
use settlegate_rules::settlement::Reason;

/// What a paying client needs to pay for this request: one challenge per
/// accepted scheme is rendered from it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Challenge {
    pub realm: String,
    pub asset: Address,
    pub amount: Amount,
    pub recipient: Address,
    pub chain_id: u64,
    pub schemes: Schemes,
    /// How long a `Payment` challenge stays answerable.
    pub ttl_seconds: u64,
    /// The policy's clock skew between instances: how much further ahead
    /// than `ttl_seconds` a challenge minted elsewhere may expire.
    pub clock_skew_seconds: u64,
    /// Whether the `Payment` scheme offers the `charge` intent.
    pub charge: bool,
    /// The `session` intent's terms, when the policy offers it for this
    /// price.
    pub session: Option<SessionOffer>,
    /// Whether the `charge` challenge offers fee sponsorship now (the
    /// route allows it and the sponsor has budget and balance).
    pub fee_payer: bool,
    /// The price's splits (a `Payment` charge carries them; a `Tempo`
    /// challenge or a session cannot, so a route with splits offers
    /// neither).
    pub splits: Vec<Split>,
}

/// What a `session` challenge offers besides the price.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SessionOffer {
    pub escrow: Address,
    pub min_voucher_delta: u128,
    pub min_deposit: u128,
    pub suggested_deposit: Option<u128>,
}

impl Challenge {
    /// The challenge for a request priced at `price` under `policy`.
    pub fn new(policy: &SettlementPolicy, price: &Price) -> Self {
        Challenge {
            realm: policy.realm.clone(),
            asset: price.asset,
            amount: price.amount,
            recipient: policy.recipient,
            chain_id: policy.chain_id,
            schemes: policy.schemes,
            ttl_seconds: policy.challenge_ttl_seconds,
            clock_skew_seconds: policy.clock_skew_seconds,
            charge: policy.intents.charge,
            // A price beyond the escrow's uint128 cannot be paid by voucher,
            // and a free route takes proofs, not vouchers.
            session: policy
                .session
                .filter(|_| policy.intents.session && policy.schemes.payment)
                .filter(|_| !price.amount.is_zero() && price.splits.is_empty())
                .filter(|_| u128::try_from(price.amount.value()).is_ok())
                .map(|s| SessionOffer {
                    escrow: s.escrow,
                    min_voucher_delta: s.min_voucher_delta,
                    min_deposit: s.min_deposit,
                    suggested_deposit: s.suggested_deposit,
                }),
            fee_payer: false,
            splits: price.splits.clone(),
        }
    }

    /// This request's price in atomic units, when it fits a voucher.
    fn price_u128(&self) -> Option<u128> {
        u128::try_from(self.amount.value()).ok()
    }

    /// The `session` request a challenge for it carries, if offered.
    pub fn session_request(&self) -> Option<SessionRequest> {
        let offer = self.session?;
        Some(SessionRequest {
            amount: self.price_u128()?,
            currency: self.asset,
            recipient: self.recipient,
            escrow: offer.escrow,
            chain_id: self.chain_id,
            min_voucher_delta: (offer.min_voucher_delta > 0).then_some(offer.min_voucher_delta),
            suggested_deposit: offer.suggested_deposit,
        })
    }

    /// What a session credential for this request pays under, if offered.
    pub fn session_terms(&self) -> Option<SessionTerms> {
        let offer = self.session?;
        Some(SessionTerms {
            chain_id: self.chain_id,
            escrow: offer.escrow,
            payee: self.recipient,
            token: self.asset,
            price: self.price_u128()?,
            min_delta: offer.min_voucher_delta,
            min_deposit: offer.min_deposit,
        })
    }

    /// Whether the route is free: answered with a `proof` credential only
    /// (no `Tempo` challenge, no session).
    pub fn is_free(&self) -> bool {
        self.amount.is_zero()
    }

    /// Whether the `Tempo` scheme can pay it: not a free route, not one
    /// with splits (its challenge names one recipient and one amount).
    pub fn tempo_payable(&self) -> bool {
        self.schemes.tempo && !self.is_free() && self.splits.is_empty()
    }

    /// The furthest ahead an echoed `Payment` challenge may expire: what
    /// this policy mints, on any instance within the clock skew.
    pub fn max_lifetime(&self) -> time::Duration {
        let seconds = self.ttl_seconds.saturating_add(self.clock_skew_seconds);
        time::Duration::seconds(i64::try_from(seconds).unwrap_or(i64::MAX))
    }

    /// The tempo `charge` request a `Payment` challenge for it carries.
    pub fn charge_request(&self) -> ChargeRequest {
        self.charge_request_for(self.fee_payer)
    }

    /// The charge request, sponsored or not: a sponsored one takes pull
    /// mode only (the spec refuses `hash` credentials for it).
    pub fn charge_request_for(&self, sponsored: bool) -> ChargeRequest {
        ChargeRequest {
            amount: self.amount,
            currency: self.asset,
            recipient: self.recipient,
            chain_id: self.chain_id,
            modes: if sponsored {
                Modes {
                    pull: true,
                    push: false,
                }
            } else {
                Modes::BOTH
            },
            fee_payer: sponsored,
            splits: self.splits.clone(),
        }
    }
}

#[derive(Debug)]
pub enum Outcome {
    /// Paid: this request consumed the payment, or is an idempotent retry
    /// of the one that did (`idempotent_replay`).
    Settled(Settlement),
    /// Paid from a session channel: this request's price was deducted.
    Served(Served),
    /// A free route's `proof` credential, claimed for this request (once
    /// per challenge).
    Proven(Proven),
    Denied(Denial, Challenge),
    Unavailable(Unavailable),
}

/// A `proof` credential accepted for a route priced at zero.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proven {
    /// The `source` whose signature the proof carries.
    pub payer: Address,
    /// The challenge the proof answers (its receipt's `reference`).
    pub challenge_id: String,
    pub chain_id: u64,
    pub genome_id: String,
}

/// Why a request is not (yet) paid: the 402 answers. None consumes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Denial {
    /// No usable credential.
    PaymentRequired(String),
    /// A `Payment` credential that does not parse (`malformed-credential`).
    MalformedCredential(String),
    /// Not visible or not confirmed yet; retry.
    Pending { reason: Option<Reason>, detail: String },
    /// The payment does not satisfy the policy. Final.
    Failed(Reason),
    /// Already consumed by another request.
    Replayed,
    /// A session credential refused (its channel untouched).
    Session(SessionProblem),
}

/// The 503 answers: no trustworthy answer now; nothing consumed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unavailable {
    Rpc(RpcError),
    Store(StoreError),
    Genome(GenomeError),
    Session(SessionUnavailable),
}

impl Denial {
    pub fn code(&self) -> Code {
        match self {
            Denial::PaymentRequired(_) => Code::PaymentRequired,
            Denial::MalformedCredential(_) => Code::MalformedCredential,
            Denial::Pending { .. } => Code::PaymentPending,
            Denial::Failed(_) => Code::VerificationFailed,
            Denial::Replayed => Code::Replayed,
            Denial::Session(p) if p.status() == 410 => Code::ChannelGone,
            Denial::Session(_) => Code::SessionRefused,
        }
    }

    pub fn reason(&self) -> Option<Reason> {
        match self {
            Denial::Failed(r) => Some(*r),
            Denial::Pending { reason, .. } => *reason,
            Denial::PaymentRequired(_) | Denial::MalformedCredential(_) | Denial::Replayed | Denial::Session(_) => None,
        }
    }
}

impl Unavailable {
    pub fn code(&self) -> Code {
        match self {
            Unavailable::Rpc(_) => Code::RpcUnavailable,
            Unavailable::Store(_) => Code::ReplayStoreUnavailable,
            Unavailable::Genome(_) => Code::GenomeUnavailable,
            Unavailable::Session(SessionUnavailable::Rpc(_) | SessionUnavailable::NotYetOnChain) => {
                Code::RpcUnavailable
            }
            Unavailable::Session(SessionUnavailable::Book(_) | SessionUnavailable::Corrupt) => {
                Code::ReplayStoreUnavailable
            }
        }
    }

    /// Which failure, for metrics and logs (`rpc_timeout`, `store_corrupt_record`, …).
    pub fn cause(&self) -> &'static str {
        match self {
            Unavailable::Rpc(e) => e.cause(),
            Unavailable::Store(e) => e.cause(),
            Unavailable::Genome(e) => e.code(),
            Unavailable::Session(e) => e.cause(),
        }
    }

    /// Seconds a client should wait. The chain and the store recover by
    /// themselves; a genome needs an operator and the next reload check.
    pub fn retry_after(&self) -> u32 {
        match self {
            Unavailable::Rpc(_) | Unavailable::Store(_) | Unavailable::Session(_) => 2,
            Unavailable::Genome(_) => 30,
        }
    }

    /// The internal detail: for the log line, never for the client.
    pub fn detail(&self) -> String {
        match self {
            Unavailable::Rpc(e) => e.to_string(),
            Unavailable::Store(e) => e.to_string(),
            Unavailable::Genome(e) => e.to_string(),
            Unavailable::Session(e) => e.to_string(),
        }
    }
}

impl Outcome {
    pub fn status(&self) -> u16 {
        match self {
            Outcome::Settled(_) | Outcome::Served(_) | Outcome::Proven(_) => 200,
            Outcome::Denied(d, _) => d.code().status(),
            Outcome::Unavailable(_) => 503,
        }
    }

    /// The code of a 402 or 503, `SETTLED` for a 200: what logs and
    /// metrics label an outcome with.
    pub fn code(&self) -> &'static str {
        match self {
            Outcome::Settled(_) | Outcome::Served(_) | Outcome::Proven(_) => "SETTLED",
            Outcome::Denied(d, _) => d.code().as_str(),
            Outcome::Unavailable(u) => u.code().as_str(),
        }
    }

    pub fn reason(&self) -> Option<Reason> {
        match self {
            Outcome::Denied(d, _) => d.reason(),
            Outcome::Settled(_) | Outcome::Served(_) | Outcome::Proven(_) | Outcome::Unavailable(_) => None,
        }
    }

    /// The reason as logs and metrics label it: a charge's [`Reason`], or
    /// a refused session's problem (`session/insufficient-balance`, …).
    pub fn reason_label(&self) -> Option<&'static str> {
        match self {
            Outcome::Denied(Denial::Session(p), _) => Some(p.slug()),
            other => other.reason().map(|r| r.as_str()),
        }
    }
}
