//! The `settlement` policy inside a genome: which chain, which token, which
//! recipient, what price, how old a payment may be. Parsed strictly: an
//! unknown key is refused (a typo such as `max_age_second` must not silently
//! fall back to a default), every address and amount is checked, and every
//! bound that later protects money is range-checked here, at boot.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::GenomeError;
use crate::primitives::{Address, Amount, U256, address_lower, parse_address};
use crate::target::{NormalPath, TargetError, normalise};
use alloy_primitives::B256;

pub const DEFAULT_MAX_AGE_SECONDS: u64 = 300;
pub const DEFAULT_CLOCK_SKEW_SECONDS: u64 = 30;
pub const DEFAULT_MIN_CONFIRMATIONS: u64 = 1;
pub const DEFAULT_CHALLENGE_TTL_SECONDS: u64 = 300;

/// How a payment's memo is judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MemoPolicy {
    /// Any memo, or none.
    #[default]
    Optional,
    /// A `TransferWithMemo` is required.
    Required,
    /// The memo must bind the payment to the challenge it answers.
    ChallengeBound,
}

/// Why `settlement.schemes` is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SchemesError {
    #[error("{0:?} is not a scheme (tempo, payment)")]
    Unknown(String),
    #[error("{0:?} is listed twice")]
    Twice(String),
    #[error("at least one scheme must be accepted")]
    None,
}

/// Which credential schemes a genome accepts (and every 402 offers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Schemes {
    pub tempo: bool,
    pub payment: bool,
}

impl Schemes {
    fn parse(raw: Option<&[String]>) -> Result<Self, SchemesError> {
        let Some(raw) = raw else {
            return Ok(Schemes {
                tempo: true,
                payment: true,
            });
        };
        let mut s = Schemes {
            tempo: false,
            payment: false,
        };
        for name in raw {
            let slot = match name.as_str() {
                "tempo" => &mut s.tempo,
                "payment" => &mut s.payment,
                other => return Err(SchemesError::Unknown(other.to_owned())),
            };
            if std::mem::replace(slot, true) {
                return Err(SchemesError::Twice(name.clone()));
            }
        }
        if !s.tempo && !s.payment {
            return Err(SchemesError::None);
        }
        Ok(s)
    }

    pub fn names(&self) -> Vec<&'static str> {
        [("tempo", self.tempo), ("payment", self.payment)]
            .into_iter()
            .filter_map(|(n, on)| on.then_some(n))
            .collect()
    }
}

/// A price for requests whose resource matches `resource`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PriceRule {
    pub resource: ResourcePattern,
    pub asset: Address,
    pub amount: Amount,
    /// Whether this route's charge challenges offer fee sponsorship.
    pub fee_payer: bool,
    /// Shares of `amount` paid to other recipients (`methodDetails.splits`);
    /// empty: the recipient gets it all.
    pub splits: Vec<Split>,
}

/// The most splits a price rule may have (the spec's SHOULD: each one is
/// another transfer, about 29,000 gas).
pub const MAX_SPLITS: usize = 10;

/// One share of a route's price, paid to another recipient in the price's
/// token, in the same transaction as the rest.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Split {
    pub recipient: Address,
    pub amount: Amount,
    /// The memo its transfer must carry (`transferWithMemo`), if any.
    pub memo: Option<B256>,
}

/// Why a price rule's `splits` is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SplitsError {
    #[error("must list 1 to {MAX_SPLITS} splits, got {0}")]
    Count(usize),
    #[error("[{0}].recipient: {1}")]
    Recipient(usize, crate::primitives::AddressError),
    #[error("[{0}].recipient {1} is {2}, which cannot be a split's recipient")]
    Forbidden(usize, String, &'static str),
    #[error("[{0}].recipient {1} is listed twice")]
    Twice(usize, String),
    #[error("[{0}].amount: {1}")]
    Amount(usize, crate::primitives::AmountError),
    #[error("[{0}].memo must be 0x and 64 hex digits")]
    Memo(usize),
    #[error("[{0}].memo is an MPP attribution memo (ef1ed712 01…), which only a payment's own challenge may set")]
    MppMemo(usize),
    #[error("add up to {sum}, which must be less than the price {amount} (the recipient keeps the rest)")]
    Sum { sum: U256, amount: U256 },
}

/// What a split's recipient must not be: the policy's own recipient (its
/// leg is the rest of the price), nobody, the fee manager (its transfers
/// are fees, never payments), a token or the session escrow.
fn parse_splits(
    raw: &[RawSplit],
    amount: Amount,
    recipient: Address,
    assets: &[Address],
    escrow: Option<Address>,
) -> Result<Vec<Split>, SplitsError> {
    if raw.is_empty() || raw.len() > MAX_SPLITS {
        return Err(SplitsError::Count(raw.len()));
    }
    let mut out: Vec<Split> = Vec::with_capacity(raw.len());
    let mut sum = U256::ZERO;
    for (i, r) in raw.iter().enumerate() {
        let to = parse_address(&r.recipient).map_err(|e| SplitsError::Recipient(i, e))?;
        let forbidden = if to == Address::ZERO {
            Some("the zero address")
        } else if to == recipient {
            Some("settlement.recipient")
        } else if to == crate::settlement::FEE_MANAGER {
            Some("the fee manager")
        } else if assets.contains(&to) {
            Some("a token of settlement.assets")
        } else if Some(to) == escrow {
            Some("the session escrow")
        } else {
            None
        };
        if let Some(what) = forbidden {
            return Err(SplitsError::Forbidden(i, r.recipient.clone(), what));
        }
        if out.iter().any(|s| s.recipient == to) {
            return Err(SplitsError::Twice(i, r.recipient.clone()));
        }
        let share: Amount = r.amount.parse().map_err(|e| SplitsError::Amount(i, e))?;
        let memo = match &r.memo {
            None => None,
            Some(m) => {
                let hex = m
                    .strip_prefix("0x")
                    .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
                    .ok_or(SplitsError::Memo(i))?;
                // unwrap: 64 hex digits were checked above.
                let memo: B256 = hex.parse().unwrap();
                if crate::mpp::is_mpp_memo(&memo) {
                    return Err(SplitsError::MppMemo(i));
                }
                Some(memo)
            }
        };
        sum = sum.saturating_add(share.value());
        out.push(Split {
            recipient: to,
            amount: share,
            memo,
        });
    }
    if sum >= amount.value() {
        return Err(SplitsError::Sum {
            sum,
            amount: amount.value(),
        });
    }
    Ok(out)
}

impl Split {
    pub fn summary(&self) -> Value {
        let mut v = serde_json::json!({
            "recipient": address_lower(&self.recipient),
            "amount": self.amount.to_string(),
        });
        if let Some(m) = &self.memo {
            v["memo"] = Value::String(m.to_string());
        }
        v
    }
}

/// A verified, typed settlement policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SettlementPolicy {
    pub chain_id: u64,
    pub realm: String,
    pub recipient: Address,
    pub assets: Vec<Address>,
    pub default_price: Price,
    pub prices: Vec<PriceRule>,
    pub max_age_seconds: u64,
    pub clock_skew_seconds: u64,
    pub min_confirmations: u64,
    pub memo: MemoPolicy,
    pub allow_summed_transfers: bool,
    pub challenge_ttl_seconds: u64,
    /// The credential schemes accepted; both unless the genome says.
    pub schemes: Schemes,
    /// The MPP `session` terms (`settlement.session`), if sessions are offered.
    pub session: Option<SessionPolicy>,
    /// Which `Payment` intents the 402s offer (`settlement.intents`).
    pub intents: Intents,
    /// `default_price.fee_payer`: unmatched routes offer sponsorship.
    pub default_fee_payer: bool,
    /// `settlement.sponsorship`: the caps of fee sponsorship, if offered.
    pub sponsorship: Option<crate::sponsor::SponsorPolicy>,
}

/// `settlement.session`: the v1 escrow and the channel terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct SessionPolicy {
    pub escrow: Address,
    /// The session protocol version: 1 (escrow contract).
    pub version: u8,
    /// Offered to clients as `suggestedDeposit`.
    pub suggested_deposit: Option<u128>,
    /// The smallest deposit an `open` may lock (dust channels are refused).
    pub min_deposit: u128,
    /// The smallest increase between two accepted vouchers.
    pub min_voucher_delta: u128,
}

/// Why `settlement.session` or `settlement.intents` is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SessionPolicyError {
    #[error("session.escrow: {0}")]
    Escrow(crate::primitives::AddressError),
    #[error("session.escrow must not be the zero address")]
    ZeroEscrow,
    #[error("session.version 2 (the TIP-20 channel precompile) is not supported: no chain this service runs on has it")]
    VersionTwo,
    #[error("session.version must be 1, got {0}")]
    Version(u64),
    #[error("session.{field}: {error}")]
    Amount {
        field: &'static str,
        error: crate::session::parse::AmountError,
    },
    #[error("session.suggested_deposit {suggested} is below session.min_deposit {min}")]
    SuggestedBelowMinimum { suggested: u128, min: u128 },
    #[error("intents.session needs a settlement.session policy")]
    SessionWithoutPolicy,
    #[error("at least one intent (charge, session) must be offered")]
    NoIntent,
}

/// Which `Payment` intents are offered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Intents {
    pub charge: bool,
    pub session: bool,
}

impl SessionPolicy {
    fn parse(raw: &RawSession) -> Result<Self, SessionPolicyError> {
        let escrow = parse_address(&raw.escrow).map_err(SessionPolicyError::Escrow)?;
        if escrow == Address::ZERO {
            return Err(SessionPolicyError::ZeroEscrow);
        }
        match raw.version {
            1 => {}
            2 => return Err(SessionPolicyError::VersionTwo),
            v => return Err(SessionPolicyError::Version(v)),
        }
        let amount = |field: &'static str, s: &str| {
            crate::session::parse::parse_amount(s).map_err(|error| SessionPolicyError::Amount { field, error })
        };
        let min_deposit = amount("min_deposit", &raw.min_deposit)?;
        let suggested_deposit = raw
            .suggested_deposit
            .as_deref()
            .map(|s| amount("suggested_deposit", s))
            .transpose()?;
        if let Some(suggested) = suggested_deposit.filter(|&s| s < min_deposit) {
            return Err(SessionPolicyError::SuggestedBelowMinimum {
                suggested,
                min: min_deposit,
            });
        }
        Ok(SessionPolicy {
            escrow,
            version: 1,
            suggested_deposit,
            min_deposit,
            min_voucher_delta: amount("min_voucher_delta", &raw.min_voucher_delta)?,
        })
    }

    pub fn summary(&self) -> Value {
        serde_json::json!({
            "escrow": address_lower(&self.escrow),
            "version": self.version,
            "suggested_deposit": self.suggested_deposit.map(|d| d.to_string()),
            "min_deposit": self.min_deposit.to_string(),
            "min_voucher_delta": self.min_voucher_delta.to_string(),
        })
    }
}

impl Intents {
    /// Charge on unless the genome says; session on iff there is a session
    /// policy unless the genome says.
    fn parse(raw: Option<&RawIntents>, session: Option<&SessionPolicy>) -> Result<Self, SessionPolicyError> {
        let i = Intents {
            charge: raw.and_then(|r| r.charge).unwrap_or(true),
            session: raw.and_then(|r| r.session).unwrap_or(session.is_some()),
        };
        if i.session && session.is_none() {
            return Err(SessionPolicyError::SessionWithoutPolicy);
        }
        if !i.charge && !i.session {
            return Err(SessionPolicyError::NoIntent);
        }
        Ok(i)
    }

    pub fn names(&self) -> Vec<&'static str> {
        [("charge", self.charge), ("session", self.session)]
            .into_iter()
            .filter_map(|(n, on)| on.then_some(n))
            .collect()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Price {
    pub asset: Address,
    pub amount: Amount,
    /// The rule's splits (never on the default price).
    pub splits: Vec<Split>,
}

impl Price {
    /// What the policy's recipient must receive: the price less the splits.
    pub fn primary_amount(&self) -> U256 {
        let shares = self
            .splits
            .iter()
            .fold(U256::ZERO, |a, s| a.saturating_add(s.amount.value()));
        self.amount.value().saturating_sub(shares)
    }
}

impl SettlementPolicy {
    /// The price for a resource (`METHOD /target`): the first rule that
    /// matches its method and normal path, else the default. `HEAD` is
    /// priced as `GET` unless a rule names `HEAD` itself (an upstream runs
    /// the GET handler for it). A resource whose path has no normal form
    /// (the edges refuse those with 400) costs the dearest price there is.
    pub fn price_for(&self, resource: Option<&str>) -> Price {
        match self.rule_for(resource) {
            Matched::Default => self.default_price.clone(),
            Matched::Unusable => self.dearest(),
            Matched::Rule(p) => p.price(),
        }
    }

    /// Whether a charge challenge for `resource` may offer fee
    /// sponsorship: the genome says so for its price rule (or the default
    /// price) and has a `sponsorship` policy. A resource without a normal
    /// path is never sponsored.
    pub fn fee_payer_for(&self, resource: Option<&str>) -> bool {
        self.sponsorship.is_some()
            && match self.rule_for(resource) {
                Matched::Default => self.default_fee_payer,
                Matched::Unusable => false,
                Matched::Rule(p) => p.fee_payer,
            }
    }

    /// The name of the price rule that prices `resource`, for the books:
    /// the rule's `resource` pattern as the genome spells it, `default`,
    /// or `unusable` (a path with no normal form: the dearest price).
    pub fn route_for(&self, resource: Option<&str>) -> String {
        match self.rule_for(resource) {
            Matched::Default => "default".to_owned(),
            Matched::Unusable => "unusable".to_owned(),
            Matched::Rule(p) => p.resource.as_str().to_owned(),
        }
    }

    /// The price rule of `resource`, as [`SettlementPolicy::price_for`]
    /// picks it.
    fn rule_for(&self, resource: Option<&str>) -> Matched<'_> {
        let Some(resource) = resource else {
            return Matched::Default;
        };
        let Some((method, target)) = resource.split_once(' ') else {
            return Matched::Unusable;
        };
        let Ok(path) = normalise(target) else {
            return Matched::Unusable;
        };
        let rule = if method == "HEAD" {
            self.prices
                .iter()
                .find(|p| p.resource.names_method("HEAD") && p.resource.matches("HEAD", &path))
                .or_else(|| self.prices.iter().find(|p| p.resource.matches("GET", &path)))
        } else {
            self.prices.iter().find(|p| p.resource.matches(method, &path))
        };
        rule.map_or(Matched::Default, Matched::Rule)
    }

    /// The highest price of any rule or the default.
    fn dearest(&self) -> Price {
        self.prices
            .iter()
            .map(PriceRule::price)
            .fold(
                self.default_price.clone(),
                |a, b| if b.amount > a.amount { b } else { a },
            )
    }

    /// Parses and checks the `settlement` value of a genome.
    pub fn from_value(value: Option<&Value>) -> Result<Self, GenomeError> {
        let invalid = |m: String| GenomeError::PolicyInvalid(m);
        let value = value.ok_or_else(|| invalid("the genome has no `settlement` policy".into()))?;
        let raw: RawPolicy = serde_json::from_value(value.clone()).map_err(|e| invalid(format!("settlement: {e}")))?;

        if raw.chain_id == 0 {
            return Err(invalid("settlement.chain_id must be positive".into()));
        }
        let realm = raw.realm;
        if realm.is_empty() || realm.len() > 128 || realm.chars().any(|c| c.is_control()) {
            return Err(invalid(
                "settlement.realm must be 1 to 128 characters without control characters".into(),
            ));
        }
        check_realm(&realm).map_err(|e| invalid(format!("settlement.realm {e}")))?;
        let field = |name: &str, s: &str| parse_address(s).map_err(|e| invalid(format!("settlement.{name}: {e}")));
        let recipient = field("recipient", &raw.recipient)?;
        if recipient == Address::ZERO {
            return Err(invalid("settlement.recipient must not be the zero address".into()));
        }
        if raw.assets.is_empty() {
            return Err(invalid("settlement.assets must list at least one token".into()));
        }
        let mut assets = Vec::with_capacity(raw.assets.len());
        for (i, a) in raw.assets.iter().enumerate() {
            let asset = field(&format!("assets[{i}]"), a)?;
            if assets.contains(&asset) {
                return Err(invalid(format!("settlement.assets lists {a} twice")));
            }
            assets.push(asset);
        }
        let accepted = |name: &str, s: &str| -> Result<Address, GenomeError> {
            let a = field(name, s)?;
            if !assets.contains(&a) {
                return Err(invalid(format!(
                    "settlement.{name} {s} is not one of settlement.assets"
                )));
            }
            Ok(a)
        };
        let amount = |name: &str, s: &str| {
            s.parse::<Amount>()
                .map_err(|e| invalid(format!("settlement.{name}: {e}")))
        };

        let default_price = Price {
            asset: accepted("default_price.asset", &raw.default_price.asset)?,
            amount: amount("default_price.amount", &raw.default_price.amount)?,
            splits: Vec::new(),
        };
        let escrow = raw.session.as_ref().and_then(|s| parse_address(&s.escrow).ok());
        let mut seen = HashSet::new();
        let mut prices = Vec::with_capacity(raw.prices.len());
        for (i, p) in raw.prices.iter().enumerate() {
            let resource = ResourcePattern::parse(&p.resource)
                .map_err(|e| invalid(format!("settlement.prices[{i}].resource: {e}")))?;
            if !seen.insert(p.resource.clone()) {
                return Err(invalid(format!("settlement.prices lists {:?} twice", p.resource)));
            }
            let asset = match &p.asset {
                Some(a) => accepted(&format!("prices[{i}].asset"), a)?,
                None => default_price.asset,
            };
            if p.fee_payer && raw.sponsorship.is_none() {
                return Err(invalid(format!(
                    "settlement.prices[{i}].fee_payer needs a settlement.sponsorship policy"
                )));
            }
            // "0" is a route answered with a `proof` credential (identity,
            // no payment); it has to be written as the rule's amount, never
            // reached by default.
            let price = match p.amount.as_str() {
                "0" => Amount::ZERO,
                other => amount(&format!("prices[{i}].amount"), other)?,
            };
            let splits = match &p.splits {
                None => Vec::new(),
                Some(raw) => parse_splits(raw, price, recipient, &assets, escrow)
                    .map_err(|e| invalid(format!("settlement.prices[{i}].splits{e}")))?,
            };
            prices.push(PriceRule {
                resource,
                asset,
                amount: price,
                splits,
                fee_payer: p.fee_payer,
            });
        }
        if raw.default_price.fee_payer && raw.sponsorship.is_none() {
            return Err(invalid(
                "settlement.default_price.fee_payer needs a settlement.sponsorship policy".into(),
            ));
        }
        let sponsorship = raw
            .sponsorship
            .as_ref()
            .map(crate::sponsor::SponsorPolicy::parse)
            .transpose()
            .map_err(|e| invalid(format!("settlement.{e}")))?;

        let session = raw
            .session
            .as_ref()
            .map(SessionPolicy::parse)
            .transpose()
            .map_err(|e| invalid(format!("settlement.{e}")))?;
        let bounded = |name: &str, v: u64, lo: u64, hi: u64| {
            if (lo..=hi).contains(&v) {
                Ok(v)
            } else {
                Err(invalid(format!(
                    "settlement.{name} must be between {lo} and {hi}, got {v}"
                )))
            }
        };
        let schemes =
            Schemes::parse(raw.schemes.as_deref()).map_err(|e| invalid(format!("settlement.schemes: {e}")))?;
        let intents =
            Intents::parse(raw.intents.as_ref(), session.as_ref()).map_err(|e| invalid(format!("settlement.{e}")))?;
        if sponsorship.is_some() && !(schemes.payment && intents.charge) {
            return Err(invalid(
                "settlement.sponsorship needs the payment scheme and the charge intent".into(),
            ));
        }
        if let Some(i) = prices.iter().position(|p| p.amount.is_zero())
            && !(schemes.payment && intents.charge)
        {
            return Err(invalid(format!(
                "settlement.prices[{i}] is free (amount \"0\"): a zero-priced route is answered only with a \
                 `proof` credential of the Payment scheme's charge intent, which this policy does not offer"
            )));
        }
        if let Some(i) = prices.iter().position(|p| !p.splits.is_empty())
            && !(schemes.payment && intents.charge)
        {
            return Err(invalid(format!(
                "settlement.prices[{i}] has splits: they are paid only through the Payment scheme's charge \
                 intent (a Tempo challenge or a session cannot carry them), which this policy does not offer"
            )));
        }
        Ok(SettlementPolicy {
            chain_id: raw.chain_id,
            realm,
            recipient,
            assets,
            default_price,
            prices,
            max_age_seconds: bounded("max_age_seconds", raw.max_age_seconds, 1, 7 * 86_400)?,
            clock_skew_seconds: bounded("clock_skew_seconds", raw.clock_skew_seconds, 0, 300)?,
            min_confirmations: bounded("min_confirmations", raw.min_confirmations, 1, 1_000)?,
            memo: raw.memo,
            allow_summed_transfers: raw.allow_summed_transfers,
            challenge_ttl_seconds: bounded("challenge_ttl_seconds", raw.challenge_ttl_seconds, 1, 86_400)?,
            schemes,
            intents,
            session,
            default_fee_payer: raw.default_price.fee_payer,
            sponsorship,
        })
    }

    /// A JSON summary for `GET /v1/genome` and `genome inspect`.
    pub fn summary(&self) -> Value {
        let mut v = serde_json::json!({
            "chain_id": self.chain_id,
            "realm": self.realm,
            "recipient": address_lower(&self.recipient),
            "assets": self.assets.iter().map(address_lower).collect::<Vec<_>>(),
            "default_price": { "asset": address_lower(&self.default_price.asset), "amount": self.default_price.amount },
            "prices": self.prices.iter().map(|p| {
                let mut v = serde_json::json!({
                    "resource": p.resource.as_str(), "asset": address_lower(&p.asset), "amount": p.amount,
                });
                if !p.splits.is_empty() {
                    v["splits"] = p.splits.iter().map(Split::summary).collect();
                }
                v
            }).collect::<Vec<_>>(),
            "max_age_seconds": self.max_age_seconds,
            "clock_skew_seconds": self.clock_skew_seconds,
            "min_confirmations": self.min_confirmations,
            "memo": self.memo,
            "allow_summed_transfers": self.allow_summed_transfers,
            "challenge_ttl_seconds": self.challenge_ttl_seconds,
            "schemes": self.schemes.names(),
            "intents": self.intents.names(),
            "session": self.session.as_ref().map(SessionPolicy::summary),
        });
        if let Some(s) = &self.sponsorship {
            v["sponsorship"] = s.summary();
            v["default_price"]["fee_payer"] = self.default_fee_payer.into();
            for (p, out) in self.prices.iter().zip(v["prices"].as_array_mut().into_iter().flatten()) {
                out["fee_payer"] = p.fee_payer.into();
            }
        }
        v
    }
}

/// Which price a resource gets.
enum Matched<'a> {
    Default,
    /// No normal path: the dearest price, never sponsored.
    Unusable,
    Rule(&'a PriceRule),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    chain_id: u64,
    realm: String,
    recipient: String,
    assets: Vec<String>,
    default_price: RawPrice,
    #[serde(default)]
    prices: Vec<RawPriceRule>,
    #[serde(default = "default_max_age")]
    max_age_seconds: u64,
    #[serde(default = "default_skew")]
    clock_skew_seconds: u64,
    #[serde(default = "default_confirmations")]
    min_confirmations: u64,
    #[serde(default)]
    memo: MemoPolicy,
    #[serde(default)]
    allow_summed_transfers: bool,
    #[serde(default = "default_challenge_ttl")]
    challenge_ttl_seconds: u64,
    #[serde(default)]
    schemes: Option<Vec<String>>,
    #[serde(default)]
    session: Option<RawSession>,
    #[serde(default)]
    intents: Option<RawIntents>,
    #[serde(default)]
    sponsorship: Option<crate::sponsor::caps::RawSponsorship>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSession {
    escrow: String,
    #[serde(default = "default_session_version")]
    version: u64,
    #[serde(default)]
    suggested_deposit: Option<String>,
    min_deposit: String,
    #[serde(default = "default_min_voucher_delta")]
    min_voucher_delta: String,
}

fn default_session_version() -> u64 {
    1
}

fn default_min_voucher_delta() -> String {
    "0".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIntents {
    #[serde(default)]
    charge: Option<bool>,
    #[serde(default)]
    session: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrice {
    asset: String,
    amount: String,
    #[serde(default)]
    fee_payer: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPriceRule {
    resource: String,
    #[serde(default)]
    asset: Option<String>,
    amount: String,
    #[serde(default)]
    fee_payer: bool,
    #[serde(default)]
    splits: Option<Vec<RawSplit>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSplit {
    recipient: String,
    amount: String,
    #[serde(default)]
    memo: Option<String>,
}

impl PriceRule {
    fn price(&self) -> Price {
        Price {
            asset: self.asset,
            amount: self.amount,
            splits: self.splits.clone(),
        }
    }
}

fn default_max_age() -> u64 {
    DEFAULT_MAX_AGE_SECONDS
}
fn default_skew() -> u64 {
    DEFAULT_CLOCK_SKEW_SECONDS
}
fn default_confirmations() -> u64 {
    DEFAULT_MIN_CONFIRMATIONS
}
fn default_challenge_ttl() -> u64 {
    DEFAULT_CHALLENGE_TTL_SECONDS
}

/// A resource pattern such as `GET /reports/*`: an upper-case method (or `*`
/// for any), one space, and a path starting with `/` that may end in `*`
/// (prefix match). `*` anywhere else is refused so a pattern means one thing.
///
/// Paths are matched in the normal form of [`crate::target`] (decoded,
/// case-folded, without a trailing `/`), the pattern's as well as the
/// request's, so every spelling of a route meets the same rule. A prefix that
/// ends in `/` covers the directory itself too: `GET /reports/*` prices
/// `/reports`, `/reports/` and everything under it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub struct ResourcePattern {
    text: String,
    /// `None` for `*`.
    method: Option<String>,
    path: PathPattern,
}

/// Why a price rule's `resource` is not a pattern; each quotes it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("{0:?} must be \"METHOD /path\"")]
    NoMethod(String),
    #[error("{0:?}: the method must be upper-case letters or *")]
    BadMethod(String),
    #[error("{0:?}: the path must start with / and contain no spaces")]
    BadPath(String),
    #[error("{0:?}: * is only allowed once, at the end of the path, and a path has no query")]
    BadWildcard(String),
    /// The path has no single meaning (`/a/../b`, `/a%2fb`, …).
    #[error("{0:?}: the path {1}")]
    NotNormal(String, TargetError),
}

/// The paths a [`ResourcePattern`] covers, in normal form (for documents
/// that list the priced routes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cover<'a> {
    /// This path only.
    Exact(&'a str),
    /// This directory and every path below it (`""`: every path).
    Under(&'a str),
    /// Every path starting with these characters.
    Prefix(&'a str),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum PathPattern {
    /// This normal path only.
    Exact(NormalPath),
    /// This normal path and every path below it (`""` for every path).
    Under(String),
    /// Every normal path starting with these characters.
    Prefix(String),
}

impl From<ResourcePattern> for String {
    fn from(p: ResourcePattern) -> String {
        p.text
    }
}

impl ResourcePattern {
    pub fn parse(s: &str) -> Result<Self, PatternError> {
        let (method, path) = s.split_once(' ').ok_or_else(|| PatternError::NoMethod(s.to_owned()))?;
        let method_ok = method == "*"
            || (!method.is_empty() && method.len() <= 16 && method.bytes().all(|b| b.is_ascii_uppercase()));
        if !method_ok {
            return Err(PatternError::BadMethod(s.to_owned()));
        }
        if !path.starts_with('/')
            || path.len() > 1024
            || path.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err(PatternError::BadPath(s.to_owned()));
        }
        if path.trim_end_matches('*').contains('*') || path.ends_with("**") || path.contains(['?', '#']) {
            return Err(PatternError::BadWildcard(s.to_owned()));
        }
        let normal = |p: &str| normalise(p).map_err(|e| PatternError::NotNormal(s.to_owned(), e));
        let path = match path.strip_suffix('*') {
            None => PathPattern::Exact(normal(path)?),
            Some("/") => PathPattern::Under(String::new()),
            Some(dir) if dir.ends_with('/') => PathPattern::Under(normal(dir)?.as_str().to_owned()),
            Some(prefix) => PathPattern::Prefix(normal(prefix)?.as_str().to_owned()),
        };
        Ok(ResourcePattern {
            text: s.to_owned(),
            method: (method != "*").then(|| method.to_owned()),
            path,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The method it names; `None` for `*`.
    pub fn method(&self) -> Option<&str> {
        self.method.as_deref()
    }

    /// The paths it covers, in normal form.
    pub fn cover(&self) -> Cover<'_> {
        match &self.path {
            PathPattern::Exact(p) => Cover::Exact(p.as_str()),
            PathPattern::Under(dir) => Cover::Under(dir),
            PathPattern::Prefix(prefix) => Cover::Prefix(prefix),
        }
    }

    /// Whether a request's method (upper case) and normal path match.
    pub fn matches(&self, method: &str, path: &NormalPath) -> bool {
        if self.method.as_deref().is_some_and(|m| m != method) {
            return false;
        }
        let path = path.as_str();
        match &self.path {
            PathPattern::Exact(p) => p.as_str() == path,
            PathPattern::Under(dir) => {
                path == dir
                    || path
                        .strip_prefix(dir.as_str())
                        .is_some_and(|rest| rest.starts_with('/'))
            }
            PathPattern::Prefix(prefix) => path.starts_with(prefix.as_str()),
        }
    }

    fn names_method(&self, method: &str) -> bool {
        self.method.as_deref() == Some(method)
    }
}

/// The realm the MPP SDKs fall back to when a server names none (mppx's
/// `defaultRealm`): every service that keeps it shares one credential
/// namespace with every other that does.
pub const SHARED_DEFAULT_REALM: &str = "MPP Payment";

/// Why a realm is refused for the `Payment` scheme's challenges.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RealmError {
    #[error(
        "must not be \"{SHARED_DEFAULT_REALM}\" (in any case): it is the MPP SDKs' default realm, so a credential \
         minted for another service that kept it, under the same secret, would be this service's too; name this \
         service (its host name, say)"
    )]
    SharedDefault,
    #[error(
        "must not contain `|`: it separates the fields of a challenge id's HMAC input unescaped, so realm `a|b` with \
         method `m` would sign what realm `a` with method `b|m` signs"
    )]
    Delimiter,
}

/// The realm rules of the `Payment` scheme (mppx issue #545's audit): not
/// the SDKs' shared default, no HMAC delimiter. Both schemes share the
/// realm, so the genome is refused whichever it offers.
pub fn check_realm(realm: &str) -> Result<(), RealmError> {
    if realm.trim().eq_ignore_ascii_case(SHARED_DEFAULT_REALM) {
        return Err(RealmError::SharedDefault);
    }
    if realm.contains('|') {
        return Err(RealmError::Delimiter);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({
            "chain_id": 42431,
            "realm": "Tempo API",
            "recipient": "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
            "assets": ["0x20c0000000000000000000000000000000000001"],
            "default_price": {"asset": "0x20c0000000000000000000000000000000000001", "amount": "1000000"},
            "prices": [{"resource": "GET /reports/*", "amount": "2500000"}]
        })
    }

    fn with(path: &str, v: Value) -> Result<SettlementPolicy, GenomeError> {
        let mut doc = base();
        match doc.pointer_mut(path) {
            Some(slot) => *slot = v,
            None => {
                doc[&path[1..]] = v;
            }
        }
        SettlementPolicy::from_value(Some(&doc))
    }

    #[test]
    fn defaults_apply_and_prices_match_by_resource() {
        let p = SettlementPolicy::from_value(Some(&base())).unwrap();
        assert_eq!(
            (p.max_age_seconds, p.min_confirmations, p.memo),
            (300, 1, MemoPolicy::Optional)
        );
        assert_eq!(p.price_for(Some("GET /reports/42")).amount.to_string(), "2500000");
        assert_eq!(p.price_for(Some("POST /reports/42")).amount.to_string(), "1000000");
        assert_eq!(p.price_for(None).amount.to_string(), "1000000");
        assert_eq!(
            p.schemes,
            Schemes {
                tempo: true,
                payment: true
            }
        );
        let only = with("/schemes", json!(["payment"])).unwrap();
        assert_eq!(
            only.schemes,
            Schemes {
                tempo: false,
                payment: true
            }
        );
        assert_eq!(only.summary()["schemes"], json!(["payment"]));
    }

    #[test]
    fn bad_policies_are_policy_invalid() {
        let cases = [
            ("/recipient", json!("0x1234")),
            ("/recipient", json!("0x70997970c51812dc3A010C7d01b50e0d17dc79C8")),
            ("/recipient", json!("0x0000000000000000000000000000000000000000")),
            ("/default_price/amount", json!("0")),
            ("/default_price/amount", json!(1000000)),
            ("/default_price/amount", json!("-5")),
            (
                "/default_price/asset",
                json!("0x20c0000000000000000000000000000000000002"),
            ),
            ("/prices/0/resource", json!("GET /a*b")),
            ("/prices/0/amount", json!("00")),
            ("/prices/0/amount", json!(0)),
            ("/assets", json!([])),
            ("/chain_id", json!(0)),
            ("/realm", json!("")),
            ("/realm", json!("MPP Payment")),
            ("/realm", json!("mpp payment")),
            ("/realm", json!(" MPP PAYMENT ")),
            ("/realm", json!("api|tempo")),
            ("/realm", json!("|")),
            ("/schemes", json!([])),
            ("/schemes", json!(["tempo", "tempo"])),
            ("/schemes", json!(["stripe"])),
            ("/schemes", json!("tempo")),
        ];
        for (path, v) in cases {
            let err = with(path, v.clone()).unwrap_err();
            assert_eq!(err.code(), "GENOME_POLICY_INVALID", "{path} = {v}: {err}");
        }
    }

    #[test]
    fn a_route_is_free_only_when_its_rule_says_zero_and_proofs_are_offered() {
        let p = with("/prices/0/amount", json!("0")).unwrap();
        assert!(p.price_for(Some("GET /reports/1")).amount.is_zero());
        assert_eq!(p.price_for(Some("GET /reports/1")).amount.to_string(), "0");
        // unmatched routes keep the (positive) default; an unnormalisable
        // one costs the dearest, never the free rule
        assert_eq!(p.price_for(Some("POST /reports/1")).amount.to_string(), "1000000");
        assert_eq!(p.price_for(Some("GET /reports;x")).amount.to_string(), "1000000");
        assert_eq!(p.summary()["prices"][0]["amount"], json!("0"));
        // the default price is never free
        assert!(with("/default_price/amount", json!("0")).is_err());
        // a free route needs the Payment scheme's charge intent (proofs)
        let mut doc = base();
        doc["prices"][0]["amount"] = json!("0");
        doc["schemes"] = json!(["tempo"]);
        let err = SettlementPolicy::from_value(Some(&doc)).unwrap_err().to_string();
        assert!(err.contains("prices[0] is free"), "{err}");
        let mut doc = base();
        doc["prices"][0]["amount"] = json!("0");
        doc["session"] = json!({"escrow": ESCROW, "min_deposit": "1"});
        doc["intents"] = json!({"charge": false});
        let err = SettlementPolicy::from_value(Some(&doc)).unwrap_err().to_string();
        assert!(err.contains("proof"), "{err}");
    }

    const SPLIT_A: &str = "0x90f79bf6eb2c4f870365e785982e1f101e93b906";
    const SPLIT_B: &str = "0x15d34aaf54267db7d7c367839aaf71a00a2c6a65";

    fn with_splits(splits: Value) -> Result<SettlementPolicy, GenomeError> {
        let mut doc = base();
        doc["prices"][0]["splits"] = splits;
        SettlementPolicy::from_value(Some(&doc))
    }

    #[test]
    fn splits_parse_onto_their_route_only() {
        let memo = format!("0x{}", "de".repeat(32));
        let p = with_splits(json!([
            {"recipient": SPLIT_A, "amount": "500000"},
            {"recipient": SPLIT_B, "amount": "1", "memo": memo},
        ]))
        .unwrap();
        let price = p.price_for(Some("GET /reports/1"));
        assert_eq!(price.splits.len(), 2);
        assert_eq!(price.splits[1].memo, Some(B256::repeat_byte(0xde)));
        assert_eq!(price.primary_amount(), U256::from(2_500_000 - 500_000 - 1));
        assert!(p.price_for(Some("POST /reports/1")).splits.is_empty());
        assert!(p.price_for(None).splits.is_empty());
        assert_eq!(p.summary()["prices"][0]["splits"][1]["memo"], json!(memo));
        assert_eq!(p.summary()["prices"][0]["splits"][0]["amount"], json!("500000"));
        // ten is the most
        let ten: Vec<Value> = (1..=10u8)
            .map(|i| json!({"recipient": format!("0x{}", format!("{i:02x}").repeat(20)), "amount": "1"}))
            .collect();
        assert_eq!(with_splits(json!(ten)).unwrap().prices[0].splits.len(), 10);
    }

    #[test]
    fn bad_splits_are_refused_with_their_reason() {
        let one = |v: Value| with_splits(json!([v])).unwrap_err().to_string();
        let eleven: Vec<Value> = (1..=11u8)
            .map(|i| json!({"recipient": format!("0x{}", format!("{i:02x}").repeat(20)), "amount": "1"}))
            .collect();
        let mpp_memo = format!("0xef1ed71201{}", "00".repeat(27));
        let cases = [
            (with_splits(json!([])).unwrap_err().to_string(), "1 to 10 splits, got 0"),
            (with_splits(json!(eleven)).unwrap_err().to_string(), "got 11"),
            (one(json!({"recipient": SPLIT_A, "amount": "0"})), "greater than zero"),
            (one(json!({"recipient": SPLIT_A, "amount": "-1"})), "[0].amount"),
            (one(json!({"recipient": SPLIT_A, "amount": 5})), "invalid type"),
            (one(json!({"recipient": "0x1234", "amount": "1"})), "[0].recipient"),
            (
                one(json!({"recipient": "0x0000000000000000000000000000000000000000", "amount": "1"})),
                "the zero address",
            ),
            (
                one(json!({"recipient": "0x70997970c51812dc3a010c7d01b50e0d17dc79c8", "amount": "1"})),
                "settlement.recipient",
            ),
            (
                one(json!({"recipient": "0xfeec000000000000000000000000000000000000", "amount": "1"})),
                "fee manager",
            ),
            (
                one(json!({"recipient": "0x20c0000000000000000000000000000000000001", "amount": "1"})),
                "a token",
            ),
            (
                one(json!({"recipient": SPLIT_A, "amount": "1", "memo": "0x12"})),
                "64 hex",
            ),
            (
                one(json!({"recipient": SPLIT_A, "amount": "1", "memo": mpp_memo})),
                "MPP attribution memo",
            ),
            (
                one(json!({"recipient": SPLIT_A, "amount": "1", "extra": 1})),
                "unknown field",
            ),
            (
                one(json!({"recipient": SPLIT_A, "amount": "2500000"})),
                "less than the price",
            ),
            (
                with_splits(json!([
                    {"recipient": SPLIT_A, "amount": "1"},
                    {"recipient": SPLIT_A.to_uppercase().replace("0X", "0x"), "amount": "1"},
                ]))
                .unwrap_err()
                .to_string(),
                "listed twice",
            ),
            (
                with_splits(json!([
                    {"recipient": SPLIT_A, "amount": "2000000"},
                    {"recipient": SPLIT_B, "amount": "500000"},
                ]))
                .unwrap_err()
                .to_string(),
                "add up to 2500000",
            ),
        ];
        for (got, want) in cases {
            // serde names the field itself; every other refusal its rule
            if !["invalid type", "unknown field"].contains(&want) {
                assert!(got.contains("prices[0].splits"), "{got}");
            }
            assert!(got.contains(want), "{want}: {got}");
        }
        // the session escrow is no split recipient either
        let mut doc = base();
        doc["prices"][0]["splits"] = json!([{"recipient": ESCROW, "amount": "1"}]);
        doc["session"] = json!({"escrow": ESCROW, "min_deposit": "1"});
        let err = SettlementPolicy::from_value(Some(&doc)).unwrap_err().to_string();
        assert!(err.contains("session escrow"), "{err}");
        // a free route has no splits
        let mut doc = base();
        doc["prices"][0]["amount"] = json!("0");
        doc["prices"][0]["splits"] = json!([{"recipient": SPLIT_A, "amount": "1"}]);
        let err = SettlementPolicy::from_value(Some(&doc)).unwrap_err().to_string();
        assert!(err.contains("less than the price 0"), "{err}");
        // splits need the Payment scheme's charge intent
        let mut doc = base();
        doc["prices"][0]["splits"] = json!([{"recipient": SPLIT_A, "amount": "1"}]);
        doc["schemes"] = json!(["tempo"]);
        let err = SettlementPolicy::from_value(Some(&doc)).unwrap_err().to_string();
        assert!(err.contains("has splits"), "{err}");
    }

    #[test]
    fn the_shared_default_realm_and_the_hmac_delimiter_are_refused_by_name() {
        assert_eq!(check_realm("MPP Payment"), Err(RealmError::SharedDefault));
        assert_eq!(check_realm("mPP pAYMENT\t"), Err(RealmError::SharedDefault));
        assert_eq!(check_realm("a|b"), Err(RealmError::Delimiter));
        for near in [
            "Tempo API",
            "MPP Payments",
            "MPP-Payment",
            "api.example.com MPP Payment",
            "a\\b \"c\"",
        ] {
            assert_eq!(check_realm(near), Ok(()), "{near}");
        }
        let e = with("/realm", json!("mpp payment")).unwrap_err().to_string();
        assert!(e.contains("settlement.realm must not be \"MPP Payment\""), "{e}");
        let e = with("/realm", json!("a|b")).unwrap_err().to_string();
        assert!(e.contains("settlement.realm must not contain `|`"), "{e}");
    }

    #[test]
    fn missing_and_unknown_fields_are_policy_invalid() {
        for field in ["recipient", "chain_id", "assets", "default_price", "realm"] {
            let mut doc = base();
            doc.as_object_mut().unwrap().remove(field);
            assert_eq!(
                SettlementPolicy::from_value(Some(&doc)).unwrap_err().code(),
                "GENOME_POLICY_INVALID",
                "{field}"
            );
        }
        let mut doc = base();
        doc["max_age_second"] = json!(10);
        assert!(
            SettlementPolicy::from_value(Some(&doc))
                .unwrap_err()
                .to_string()
                .contains("max_age_second")
        );
        assert_eq!(
            SettlementPolicy::from_value(None).unwrap_err().code(),
            "GENOME_POLICY_INVALID"
        );
    }

    #[test]
    fn resource_patterns() {
        let m = |pattern: &str, method: &str, path: &str| {
            ResourcePattern::parse(pattern)
                .unwrap()
                .matches(method, &normalise(path).unwrap())
        };
        assert!(m("GET /reports/*", "GET", "/reports/42") && m("GET /reports/*", "GET", "/reports/"));
        assert!(m("GET /reports/*", "GET", "/reports") && m("GET /reports/*", "GET", "/REPORTS/a/b"));
        assert!(!m("GET /reports/*", "GET", "/report") && !m("GET /reports/*", "POST", "/reports/1"));
        assert!(!m("GET /reports/*", "GET", "/reportsx"));
        assert!(m("GET /rep*", "GET", "/reportsx") && m("GET /rep*", "GET", "/rep"));
        assert!(m("* /x", "DELETE", "/x") && m("* /x", "GET", "/X/"));
        assert!(m("GET /dear/", "GET", "/dear") && m("GET /Dear", "GET", "/%64ear"));
        assert!(m("GET /*", "GET", "/") && m("GET /*", "GET", "/a/b"));
        assert!(m("GET /", "GET", "/") && !m("GET /", "GET", "/a"));
        for bad in [
            "GET",
            "get /x",
            "GET x",
            "GET /a b",
            "GET /*/x",
            "GET /x**",
            "GET /a;b",
            "GET /a/../b",
            "GET /a%2fb",
            "GET /a?q=1",
            "GET //a",
        ] {
            assert!(ResourcePattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pattern_and_scheme_errors_say_which_rule_and_quote_the_text() {
        let err = |p: &str| ResourcePattern::parse(p).unwrap_err();
        assert_eq!(err("GET"), PatternError::NoMethod("GET".into()));
        assert_eq!(err("GET").to_string(), r#""GET" must be "METHOD /path""#);
        assert_eq!(err("get /x"), PatternError::BadMethod("get /x".into()));
        assert_eq!(err("GET x"), PatternError::BadPath("GET x".into()));
        assert_eq!(err("GET /*/x"), PatternError::BadWildcard("GET /*/x".into()));
        assert_eq!(
            err("GET /a;b"),
            PatternError::NotNormal("GET /a;b".into(), TargetError::Parameters)
        );
        assert!(
            err("GET /a;b")
                .to_string()
                .starts_with(r#""GET /a;b": the path contains `;`"#)
        );

        let schemes = |names: &[&str]| Schemes::parse(Some(&names.iter().map(|n| n.to_string()).collect::<Vec<_>>()));
        assert_eq!(schemes(&["x"]), Err(SchemesError::Unknown("x".into())));
        assert_eq!(
            schemes(&["x"]).unwrap_err().to_string(),
            r#""x" is not a scheme (tempo, payment)"#
        );
        assert_eq!(schemes(&["tempo", "tempo"]), Err(SchemesError::Twice("tempo".into())));
        assert_eq!(schemes(&[]), Err(SchemesError::None));
    }

    fn priced() -> SettlementPolicy {
        let v = json!({
            "chain_id": 42431,
            "realm": "Tempo API",
            "recipient": "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
            "assets": ["0x20c0000000000000000000000000000000000001"],
            "default_price": {"asset": "0x20c0000000000000000000000000000000000001", "amount": "1000000"},
            "prices": [
                {"resource": "GET /reports/*", "amount": "2500000"},
                {"resource": "GET /dear", "amount": "5000000"},
                {"resource": "HEAD /probe", "amount": "7"},
                {"resource": "* /cheap/*", "amount": "100000"},
            ],
        });
        SettlementPolicy::from_value(Some(&v)).unwrap()
    }

    #[test]
    fn sponsorship_is_per_route_and_needs_its_policy() {
        let mut v = json!({
            "chain_id": 42431,
            "realm": "Tempo API",
            "recipient": "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
            "assets": ["0x20c0000000000000000000000000000000000001"],
            "default_price": {"asset": "0x20c0000000000000000000000000000000000001", "amount": "1000000"},
            "prices": [
                {"resource": "GET /sponsored/*", "amount": "2500000", "fee_payer": true},
                {"resource": "GET /plain", "amount": "5000000"},
            ],
        });
        // fee_payer without a sponsorship policy is refused
        let e = SettlementPolicy::from_value(Some(&v)).unwrap_err().to_string();
        assert!(e.contains("prices[0].fee_payer needs a settlement.sponsorship"), "{e}");
        v["sponsorship"] = json!({
            "fee_tokens": ["0x20c0000000000000000000000000000000000000"],
            "max_gas": 2_000_000,
            "max_fee_per_gas": "100000000000",
            "max_priority_fee_per_gas": "10000000000",
            "max_total_fee": "50000",
            "budget": "1000000",
            "period_seconds": 86_400,
        });
        let p = SettlementPolicy::from_value(Some(&v)).unwrap();
        assert!(p.fee_payer_for(Some("GET /sponsored/1")) && p.fee_payer_for(Some("GET /%53ponsored/1")));
        assert!(!p.fee_payer_for(Some("GET /plain")) && !p.fee_payer_for(None));
        // a resource without a normal form is never sponsored
        assert!(!p.fee_payer_for(Some("GET /sponsored/a;b")) && !p.fee_payer_for(Some("GET")));
        assert_eq!(p.summary()["prices"][0]["fee_payer"], true);
        assert_eq!(p.summary()["sponsorship"]["budget"], "1000000");
        v["default_price"]["fee_payer"] = json!(true);
        let p = SettlementPolicy::from_value(Some(&v)).unwrap();
        assert!(p.fee_payer_for(None) && p.fee_payer_for(Some("GET /other")));
        // sponsorship needs the payment scheme's charge intent
        v["schemes"] = json!(["tempo"]);
        let e = SettlementPolicy::from_value(Some(&v)).unwrap_err().to_string();
        assert!(e.contains("sponsorship needs the payment scheme"), "{e}");
        v["schemes"] = json!(["payment"]);
        v["sponsorship"]["budget"] = json!("1");
        let e = SettlementPolicy::from_value(Some(&v)).unwrap_err().to_string();
        assert!(e.contains("max_total_fee is above the budget"), "{e}");
        // a policy without sponsorship summarises as before
        assert!(priced().summary().get("sponsorship").is_none());
    }

    #[test]
    fn head_costs_what_get_costs_unless_a_rule_names_head() {
        let p = priced();
        let price = |r: &str| p.price_for(Some(r)).amount.to_string();
        assert_eq!(price("HEAD /reports/1"), "2500000");
        assert_eq!(price("HEAD /dear"), "5000000");
        assert_eq!(price("HEAD /cheap/x"), "100000");
        assert_eq!(price("HEAD /probe"), "7");
        assert_eq!(price("GET /probe"), "1000000");
        // a resource with no normal form costs the dearest price
        assert_eq!(price("GET /dear;x=1"), "5000000");
        assert_eq!(price("GET"), "5000000");
    }

    /// The probe's spellings: each is priced as the route it is served as.
    #[test]
    fn spellings_of_a_priced_route_get_its_price() {
        let p = priced();
        let price = |r: &str| p.price_for(Some(r)).amount.to_string();
        for r in [
            "GET /%72eports/1",
            "GET /REPORTS/1",
            "GET /reports/1/",
            "GET /Reports/%31?x=2",
        ] {
            assert_eq!(price(r), "2500000", "{r}");
        }
        for r in [
            "GET /dear/",
            "GET /DEAR",
            "GET /d%65ar",
            "GET /dear?cheap/x",
            "GET /d%65ar?/cheap/",
        ] {
            assert_eq!(price(r), "5000000", "{r}");
        }
    }

    /// A tiny deterministic generator: no dependency, reproducible seeds.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// One spelling of `path` an upstream may serve as the same route:
    /// characters percent-encoded or case-flipped, a trailing slash, a
    /// query or fragment, and now and then something ambiguous.
    fn respell(rng: &mut Rng, path: &str) -> String {
        let mut out = String::new();
        for c in path.chars() {
            match rng.below(8) {
                0 if c != '/' => out.push_str(&format!("%{:02X}", c as u32)),
                1 if c != '/' => out.push_str(&format!("%{:02x}", c as u32)),
                2 => out.push(c.to_ascii_uppercase()),
                _ => out.push(c),
            }
        }
        match rng.below(12) {
            0 => out.push('/'),
            1 => out.push_str("?q=/cheap/x"),
            2 => out.push_str("#/cheap/"),
            3 => out.push_str(";x=1"),
            4 => out.push_str("/.."),
            5 => out.push_str("%2F"),
            6 => out.insert(0, '/'),
            7 => out.push_str("/%2e%2E"),
            _ => {}
        }
        out
    }

    /// Every spelling of a priced path is priced at least as its route, or
    /// has no normal form (which the edges answer with 400), whatever the
    /// method's spelling among those an upstream treats alike.
    #[test]
    fn no_spelling_of_a_priced_path_is_cheaper() {
        let p = priced();
        let routes = [
            ("GET", "/reports/1"),
            ("GET", "/reports/a.json"),
            ("GET", "/reports"),
            ("GET", "/dear"),
            ("POST", "/cheap/x"),
            ("GET", "/other/~x"),
        ];
        let mut rng = Rng(0x5eed_1234_abcd_0001);
        let (mut refused, mut priced_spellings) = (0, 0);
        for _ in 0..20_000 {
            let (method, path) = routes[rng.below(routes.len())];
            let want = p.price_for(Some(&format!("{method} {path}"))).amount;
            let spelling = respell(&mut rng, path);
            let asked = if method == "GET" && rng.below(2) == 0 {
                "HEAD"
            } else {
                method
            };
            match normalise(&spelling) {
                Err(_) => refused += 1,
                Ok(normal) => {
                    priced_spellings += 1;
                    let got = p.price_for(Some(&format!("{asked} {spelling}"))).amount;
                    assert!(
                        got >= want,
                        "{asked} {spelling} ({normal}) costs {got}, {method} {path} {want}"
                    );
                }
            }
        }
        // the generator exercises both sides
        assert!(
            refused > 1_000 && priced_spellings > 10_000,
            "{refused} {priced_spellings}"
        );
    }

    const ESCROW: &str = "0xe1c4d3dce17bc111181ddf716f75bae49e61a336";

    #[test]
    fn session_terms_parse_and_turn_the_session_intent_on() {
        let p = SettlementPolicy::from_value(Some(&base())).unwrap();
        assert_eq!(
            (p.session, p.intents),
            (
                None,
                Intents {
                    charge: true,
                    session: false
                }
            )
        );
        assert_eq!(p.summary()["intents"], json!(["charge"]));
        let p = with(
            "/session",
            json!({"escrow": ESCROW, "min_deposit": "1000000", "suggested_deposit": "10000000", "min_voucher_delta": "25"}),
        )
        .unwrap();
        assert_eq!(
            p.session,
            Some(SessionPolicy {
                escrow: ESCROW.parse().unwrap(),
                version: 1,
                suggested_deposit: Some(10_000_000),
                min_deposit: 1_000_000,
                min_voucher_delta: 25,
            })
        );
        assert_eq!(
            p.intents,
            Intents {
                charge: true,
                session: true
            }
        );
        assert_eq!(p.summary()["session"]["min_deposit"], json!("1000000"));
        assert_eq!(p.summary()["intents"], json!(["charge", "session"]));
        let mut doc = base();
        doc["session"] = json!({"escrow": ESCROW, "min_deposit": "1"});
        doc["intents"] = json!({"charge": false});
        let only = SettlementPolicy::from_value(Some(&doc)).unwrap();
        assert_eq!(
            only.intents,
            Intents {
                charge: false,
                session: true
            }
        );
        assert_eq!(only.session.map(|s| s.min_voucher_delta), Some(0));
    }

    #[test]
    fn bad_session_terms_and_intents_are_refused_with_their_reason() {
        let session = |v: Value| {
            let mut doc = base();
            doc["session"] = v;
            SettlementPolicy::from_value(Some(&doc)).unwrap_err().to_string()
        };
        let cases = [
            (json!({"escrow": "0x1234", "min_deposit": "1"}), "session.escrow"),
            (
                json!({"escrow": "0x0000000000000000000000000000000000000000", "min_deposit": "1"}),
                "zero address",
            ),
            (json!({"escrow": ESCROW, "min_deposit": "1", "version": 2}), "version 2"),
            (
                json!({"escrow": ESCROW, "min_deposit": "1", "version": 3}),
                "version must be 1",
            ),
            (json!({"escrow": ESCROW, "min_deposit": "01"}), "session.min_deposit"),
            (
                json!({"escrow": ESCROW, "min_deposit": "1", "min_voucher_delta": "-1"}),
                "session.min_voucher_delta",
            ),
            (
                json!({"escrow": ESCROW, "min_deposit": "10", "suggested_deposit": "9"}),
                "below",
            ),
            (
                json!({"escrow": ESCROW, "min_deposit": "1", "extra": 1}),
                "unknown field",
            ),
            (json!({"escrow": ESCROW}), "min_deposit"),
        ];
        for (v, want) in cases {
            let got = session(v.clone());
            assert!(got.contains(want), "{v}: {got}");
        }
        let intents = |v: Value| with("/intents", v).unwrap_err().to_string();
        assert!(intents(json!({"session": true})).contains("needs a settlement.session"));
        assert!(intents(json!({"charge": false})).contains("at least one intent"));
        assert!(intents(json!({"refund": true})).contains("unknown field"));
    }
}
