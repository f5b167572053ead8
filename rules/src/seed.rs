//! The `TEMPO_*` environment variables of the TypeScript middleware this
//! service replaces. `genome init` builds a policy from them;
//! `serve` refuses to boot when one is set and contradicts the genome, so an
//! operator migrating from the seed cannot believe they charge 5 AlphaUSD
//! while the signed genome says 1.

use crate::error::GenomeError;
use crate::policy::{DEFAULT_MAX_AGE_SECONDS, SettlementPolicy};
use crate::primitives::{Address, AddressError, Amount, AmountError, address_lower, parse_address};

/// AlphaUSD, the seed's default token.
pub const ALPHA_USD: &str = "0x20c0000000000000000000000000000000000001";

/// A seed variable that is set but malformed; the message names it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SeedError {
    #[error("TEMPO_RECIPIENT: {0}")]
    Recipient(AddressError),
    #[error("TEMPO_AMOUNT: {0}")]
    Amount(AmountError),
    #[error("TEMPO_TOKEN: {0}")]
    Token(AddressError),
    #[error("TEMPO_ALLOWED_AGE_SECONDS: {0:?} is not an integer")]
    AllowedAge(String),
}

/// The policy-bearing seed variables, parsed. `None` means unset or empty.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SeedVars {
    pub recipient: Option<Address>,
    pub amount: Option<Amount>,
    pub token: Option<Address>,
    /// `TEMPO_ALLOWED_AGE_SECONDS`; values ≤ 1 are ignored, as in the seed.
    pub allowed_age_seconds: Option<u64>,
}

impl SeedVars {
    /// Reads the variables through `lookup` (the process environment in the
    /// binary, a map in tests). A set but malformed value is an error.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, SeedError> {
        let get = |k: &str| lookup(k).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let recipient = get("TEMPO_RECIPIENT")
            .map(|v| parse_address(&v).map_err(SeedError::Recipient))
            .transpose()?;
        let amount = get("TEMPO_AMOUNT")
            .map(|v| v.parse::<Amount>().map_err(SeedError::Amount))
            .transpose()?;
        let token = get("TEMPO_TOKEN")
            .map(|v| parse_address(&v).map_err(SeedError::Token))
            .transpose()?;
        let allowed_age_seconds = get("TEMPO_ALLOWED_AGE_SECONDS")
            .map(|v| v.parse::<i64>().map_err(|_| SeedError::AllowedAge(v.clone())))
            .transpose()?
            .filter(|age| *age > 1)
            .map(|age| age as u64);
        Ok(SeedVars {
            recipient,
            amount,
            token,
            allowed_age_seconds,
        })
    }

    /// The max age `genome init` writes: the seed's value, or 300 seconds.
    pub fn max_age_or_default(&self) -> u64 {
        self.allowed_age_seconds.unwrap_or(DEFAULT_MAX_AGE_SECONDS)
    }

    /// `GENOME_POLICY_CONFLICT` when a set variable disagrees with the policy.
    pub fn check_against(&self, policy: &SettlementPolicy) -> Result<(), GenomeError> {
        let conflict = |var: &str, env: String, genome: String| {
            Err(GenomeError::PolicyConflict(format!(
                "{var}={env} but the genome says {genome}; unset {var} or sign a genome that agrees"
            )))
        };
        if let Some(r) = self.recipient
            && r != policy.recipient
        {
            return conflict("TEMPO_RECIPIENT", address_lower(&r), address_lower(&policy.recipient));
        }
        if let Some(a) = self.amount
            && a != policy.default_price.amount
        {
            return conflict("TEMPO_AMOUNT", a.to_string(), policy.default_price.amount.to_string());
        }
        if let Some(t) = self.token
            && t != policy.default_price.asset
        {
            return conflict(
                "TEMPO_TOKEN",
                address_lower(&t),
                address_lower(&policy.default_price.asset),
            );
        }
        if let Some(age) = self.allowed_age_seconds
            && age != policy.max_age_seconds
        {
            return conflict(
                "TEMPO_ALLOWED_AGE_SECONDS",
                age.to_string(),
                policy.max_age_seconds.to_string(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn vars(pairs: &[(&str, &str)]) -> Result<SeedVars, SeedError> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        SeedVars::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn seed_config_validation_matches_the_seed() {
        assert_eq!(
            vars(&[("TEMPO_RECIPIENT", "0x123")]),
            Err(SeedError::Recipient(AddressError::NotHex("0x123".into())))
        );
        assert_eq!(
            vars(&[("TEMPO_RECIPIENT", "0x123")]).unwrap_err().to_string(),
            r#"TEMPO_RECIPIENT: address "0x123" must be 0x followed by 40 hex digits"#
        );
        assert!(vars(&[("TEMPO_AMOUNT", "-1")]).is_err());
        assert!(vars(&[("TEMPO_AMOUNT", "abc")]).is_err());
        assert_eq!(
            vars(&[("TEMPO_AMOUNT", "0")]),
            Err(SeedError::Amount(AmountError::Zero))
        );
        assert_eq!(
            vars(&[("TEMPO_TOKEN", "x")]).unwrap_err().to_string(),
            r#"TEMPO_TOKEN: address "x" must start with 0x"#
        );
        assert_eq!(
            vars(&[("TEMPO_ALLOWED_AGE_SECONDS", "1.5")]).unwrap_err().to_string(),
            r#"TEMPO_ALLOWED_AGE_SECONDS: "1.5" is not an integer"#
        );
        // an age of 1 or less is ignored, as in the seed
        assert_eq!(
            vars(&[("TEMPO_ALLOWED_AGE_SECONDS", "1")]).unwrap().allowed_age_seconds,
            None
        );
        assert_eq!(
            vars(&[("TEMPO_ALLOWED_AGE_SECONDS", "0")])
                .unwrap()
                .max_age_or_default(),
            300
        );
        assert_eq!(
            vars(&[("TEMPO_ALLOWED_AGE_SECONDS", "120")])
                .unwrap()
                .max_age_or_default(),
            120
        );
        // empty means unset
        assert_eq!(vars(&[("TEMPO_RECIPIENT", "")]).unwrap(), SeedVars::default());
    }
}
