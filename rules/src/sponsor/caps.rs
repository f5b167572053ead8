//! `settlement.sponsorship`: what the sponsor pays for at most, signed in
//! the genome, and the judgement of one hand-off against it.
//!
//! Units: gas prices are the transaction's own (attodollars per gas on
//! Tempo); fees, the budget and balances are atomic units of the fee token
//! (6 decimals): `fee = ceil(gas × price / 10^12)`, what the fee token's
//! `Transfer` to the fee manager shows on chain.
//!
//! Every bound is required to be positive and is range-checked at boot, so
//! a typo cannot open the sponsor's purse.

use alloy_primitives::{Address, U256};
use serde::Deserialize;
use serde_json::{Value, json};

use super::handoff::Handoff;
use crate::primitives::{address_lower, parse_address};

/// Attodollars per atomic unit of a 6-decimal fee token.
pub const PRICE_UNITS_PER_FEE_UNIT: u128 = 1_000_000_000_000;
/// A transaction valid longer than this after its challenge expired is
/// refused (clock skew between client and server).
pub const VALIDITY_AFTER_EXPIRY_SECONDS: u64 = 60;
/// The most gas any sponsored transaction may reserve: a block's gas on
/// Tempo's dev chain.
pub const GAS_CEILING: u64 = 30_000_000;
/// Fee tokens listed at most.
pub const MAX_FEE_TOKENS: usize = 8;

/// The sponsorship caps of a genome.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SponsorPolicy {
    /// The fee tokens the sponsor pays in; the first is used unless the
    /// client names another of them.
    pub fee_tokens: Vec<Address>,
    pub max_gas: u64,
    pub max_fee_per_gas: u128,
    pub max_priority_fee_per_gas: u128,
    /// The most one transaction may cost the sponsor (fee-token units).
    pub max_total_fee: u128,
    /// Fees sponsored per period at most, across every instance.
    pub budget: u128,
    pub period_seconds: u64,
    /// How far ahead a sponsored transaction's `valid_before` may be.
    pub max_validity_seconds: u64,
    /// Below this fee-token balance the sponsor offers nothing.
    pub min_balance: u128,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSponsorship {
    fee_tokens: Vec<String>,
    max_gas: u64,
    max_fee_per_gas: String,
    max_priority_fee_per_gas: String,
    max_total_fee: String,
    budget: String,
    period_seconds: u64,
    #[serde(default = "default_validity")]
    max_validity_seconds: u64,
    #[serde(default)]
    min_balance: Option<String>,
}

fn default_validity() -> u64 {
    900
}

/// Why `settlement.sponsorship` is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SponsorPolicyError {
    #[error("sponsorship.fee_tokens must list 1 to {MAX_FEE_TOKENS} tokens")]
    FeeTokenCount,
    #[error("sponsorship.fee_tokens[{0}]: {1}")]
    FeeToken(usize, crate::primitives::AddressError),
    #[error("sponsorship.fee_tokens lists a token twice")]
    FeeTokenTwice,
    #[error("sponsorship.{0} must be a positive decimal integer")]
    Amount(&'static str),
    #[error("sponsorship.{name} must be between {lo} and {hi}, got {got}")]
    Bound {
        name: &'static str,
        lo: u64,
        hi: u64,
        got: u64,
    },
    #[error("sponsorship.max_priority_fee_per_gas is above max_fee_per_gas")]
    PriorityAboveMax,
    #[error("sponsorship.max_total_fee is above the budget")]
    FeeAboveBudget,
}

fn positive(name: &'static str, s: &str) -> Result<u128, SponsorPolicyError> {
    crate::session::parse::parse_amount(s)
        .ok()
        .filter(|&v| v > 0)
        .ok_or(SponsorPolicyError::Amount(name))
}

fn bounded(name: &'static str, got: u64, lo: u64, hi: u64) -> Result<u64, SponsorPolicyError> {
    if (lo..=hi).contains(&got) {
        Ok(got)
    } else {
        Err(SponsorPolicyError::Bound { name, lo, hi, got })
    }
}

impl SponsorPolicy {
    pub(crate) fn parse(raw: &RawSponsorship) -> Result<Self, SponsorPolicyError> {
        if raw.fee_tokens.is_empty() || raw.fee_tokens.len() > MAX_FEE_TOKENS {
            return Err(SponsorPolicyError::FeeTokenCount);
        }
        let mut fee_tokens = Vec::with_capacity(raw.fee_tokens.len());
        for (i, t) in raw.fee_tokens.iter().enumerate() {
            let a = parse_address(t).map_err(|e| SponsorPolicyError::FeeToken(i, e))?;
            if fee_tokens.contains(&a) {
                return Err(SponsorPolicyError::FeeTokenTwice);
            }
            fee_tokens.push(a);
        }
        let max_fee_per_gas = positive("max_fee_per_gas", &raw.max_fee_per_gas)?;
        let max_priority_fee_per_gas = crate::session::parse::parse_amount(&raw.max_priority_fee_per_gas)
            .map_err(|_| SponsorPolicyError::Amount("max_priority_fee_per_gas"))?;
        if max_priority_fee_per_gas > max_fee_per_gas {
            return Err(SponsorPolicyError::PriorityAboveMax);
        }
        let max_total_fee = positive("max_total_fee", &raw.max_total_fee)?;
        let budget = positive("budget", &raw.budget)?;
        if max_total_fee > budget {
            return Err(SponsorPolicyError::FeeAboveBudget);
        }
        let min_balance = match &raw.min_balance {
            Some(s) => positive("min_balance", s)?,
            None => max_total_fee,
        };
        Ok(SponsorPolicy {
            fee_tokens,
            max_gas: bounded("max_gas", raw.max_gas, 21_000, GAS_CEILING)?,
            max_fee_per_gas,
            max_priority_fee_per_gas,
            max_total_fee,
            budget,
            period_seconds: bounded("period_seconds", raw.period_seconds, 60, 366 * 86_400)?,
            max_validity_seconds: bounded("max_validity_seconds", raw.max_validity_seconds, 5, 3_600)?,
            min_balance,
        })
    }

    /// The fee token sponsored transactions pay in (the balance watched).
    pub fn fee_token(&self) -> Address {
        self.fee_tokens[0]
    }

    pub fn summary(&self) -> Value {
        json!({
            "fee_tokens": self.fee_tokens.iter().map(address_lower).collect::<Vec<_>>(),
            "max_gas": self.max_gas,
            "max_fee_per_gas": self.max_fee_per_gas.to_string(),
            "max_priority_fee_per_gas": self.max_priority_fee_per_gas.to_string(),
            "max_total_fee": self.max_total_fee.to_string(),
            "budget": self.budget.to_string(),
            "period_seconds": self.period_seconds,
            "max_validity_seconds": self.max_validity_seconds,
            "min_balance": self.min_balance.to_string(),
        })
    }

    /// Judges `h` for a challenge expiring at `challenge_expires` (unix
    /// seconds), at `now`: the fee token to pay in and the most it can cost.
    pub fn judge(&self, h: &Handoff, now: u64, challenge_expires: u64) -> Result<Sponsorable, CapError> {
        if h.gas_limit == 0 || h.gas_limit > self.max_gas {
            return Err(CapError::Gas {
                gas: h.gas_limit,
                cap: self.max_gas,
            });
        }
        if h.max_fee_per_gas == 0 || h.max_fee_per_gas > self.max_fee_per_gas {
            return Err(CapError::FeePerGas);
        }
        if h.max_priority_fee_per_gas > h.max_fee_per_gas || h.max_priority_fee_per_gas > self.max_priority_fee_per_gas
        {
            return Err(CapError::PriorityFee);
        }
        let max_fee = max_fee_units(h.gas_limit, h.max_fee_per_gas);
        if max_fee > self.max_total_fee {
            return Err(CapError::TotalFee {
                fee: max_fee,
                cap: self.max_total_fee,
            });
        }
        // The expiring nonce (what mppx and pympp sign): no nonce gap can
        // keep it waiting in a pool, to be mined after its hold is gone,
        // or tie up a hold for a transaction that can never be mined.
        if h.nonce_key != U256::MAX || h.nonce != 0 {
            return Err(CapError::Nonce);
        }
        let Some(valid_before) = h.valid_before else {
            return Err(CapError::NoValidBefore);
        };
        let latest = (now + self.max_validity_seconds).min(challenge_expires + VALIDITY_AFTER_EXPIRY_SECONDS);
        if valid_before <= now || valid_before > latest {
            return Err(CapError::Validity);
        }
        if h.valid_after.is_some_and(|a| a > now) {
            return Err(CapError::NotYetValid);
        }
        let fee_token = match h.fee_token {
            None => self.fee_token(),
            Some(t) if self.fee_tokens.contains(&t) => t,
            Some(_) => return Err(CapError::FeeToken),
        };
        Ok(Sponsorable { fee_token, max_fee })
    }
}

/// A hand-off within the caps: what to co-sign with and reserve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sponsorable {
    pub fee_token: Address,
    /// `ceil(gas_limit × max_fee_per_gas / 10^12)`: the most it can cost.
    pub max_fee: u128,
}

/// Why a hand-off is outside the caps.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CapError {
    #[error("the gas limit {gas} is zero or above the sponsor's cap {cap}")]
    Gas { gas: u64, cap: u64 },
    #[error("max_fee_per_gas is zero or above the sponsor's cap")]
    FeePerGas,
    #[error("max_priority_fee_per_gas is above max_fee_per_gas or the sponsor's cap")]
    PriorityFee,
    #[error("the transaction may cost {fee} in fees, above the sponsor's cap {cap}")]
    TotalFee { fee: u128, cap: u128 },
    #[error("a sponsored transaction uses the expiring nonce (nonce key 2^256 - 1, nonce 0)")]
    Nonce,
    #[error("a sponsored transaction needs valid_before")]
    NoValidBefore,
    #[error("valid_before is past, or further ahead than the sponsor allows")]
    Validity,
    #[error("valid_after is in the future")]
    NotYetValid,
    #[error("the fee token is not one the sponsor pays in")]
    FeeToken,
}

/// `ceil(gas × max_fee_per_gas / 10^12)`, saturating.
pub fn max_fee_units(gas: u64, max_fee_per_gas: u128) -> u128 {
    u128::from(gas)
        .saturating_mul(max_fee_per_gas)
        .div_ceil(PRICE_UNITS_PER_FEE_UNIT)
}
