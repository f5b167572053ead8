//! The sponsor's budget for one period, as one value in the shared store,
//! changed only by compare-and-set: every instance reserves from, and
//! charges to, the same ledger.
//!
//! - A transaction's most possible fee is held before its broadcast; the
//!   hold becomes the fee read on chain (`charge`) or is dropped when the
//!   transaction never reached the chain (`release`).
//! - A hold whose instance never came back (crashed between broadcast and
//!   charge) counts as spent in full once it expires: the budget errs on
//!   the sponsor's side, never past the cap.
//! - `spent + held + new hold ≤ budget` is the one admission rule, so the
//!   fees charged on chain never exceed the budget.
//! - One open hold per sender: each sponsored transaction is simulated
//!   against the sender's balance alone, so two in flight at once could
//!   both pass and the second revert on chain at the sponsor's cost. A
//!   sender's next one waits until the last is settled.

use serde::{Deserialize, Serialize};

/// Holds in flight at most; more are refused as an exhausted budget.
pub const MAX_HOLDS: usize = 256;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ledger {
    /// Fees charged this period (fee-token units), as strings: u128 does
    /// not fit a JSON number everywhere.
    #[serde(with = "decimal")]
    pub spent: u128,
    #[serde(default)]
    pub holds: Vec<Hold>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hold {
    /// The transaction hash (lower-case hex).
    pub id: String,
    #[serde(with = "decimal")]
    pub amount: u128,
    /// Unix seconds after which the hold counts as spent.
    pub until: u64,
    /// The transaction's sender (lower-case hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
}

/// Why a hold is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Exhausted {
    #[error("the sponsorship budget of this period is spent")]
    Budget,
    #[error("too many sponsored transactions are in flight")]
    InFlight,
    #[error("another sponsored transaction of this sender is in flight")]
    SenderInFlight,
}

impl Ledger {
    pub fn from_bytes(b: &[u8]) -> Result<Ledger, serde_json::Error> {
        serde_json::from_slice(b)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        // unwrap: plain strings and numbers always serialize.
        serde_json::to_vec(self).unwrap()
    }

    /// Expired holds moved to `spent`, in full.
    fn expire(&mut self, now: u64) {
        let (gone, live): (Vec<Hold>, Vec<Hold>) = std::mem::take(&mut self.holds)
            .into_iter()
            .partition(|h| h.until <= now);
        self.spent = gone.iter().fold(self.spent, |s, h| s.saturating_add(h.amount));
        self.holds = live;
    }

    /// What is committed: spent plus held.
    pub fn committed(&self) -> u128 {
        self.holds.iter().fold(self.spent, |s, h| s.saturating_add(h.amount))
    }

    /// What a new hold may take at most at `now`.
    pub fn remaining(&self, budget: u128, now: u64) -> u128 {
        let mut l = self.clone();
        l.expire(now);
        budget.saturating_sub(l.committed())
    }

    /// Holds `amount` for `id`, sent by `sender`, until `until`. Holding
    /// an id already held changes nothing (a retry of the same
    /// reservation); another open hold of the same sender refuses it.
    pub fn hold(
        &self,
        id: &str,
        sender: &str,
        amount: u128,
        budget: u128,
        now: u64,
        until: u64,
    ) -> Result<Ledger, Exhausted> {
        let mut l = self.clone();
        l.expire(now);
        if l.holds.iter().any(|h| h.id == id) {
            return Ok(l);
        }
        if l.holds.iter().any(|h| h.sender.as_deref() == Some(sender)) {
            return Err(Exhausted::SenderInFlight);
        }
        if l.holds.len() >= MAX_HOLDS {
            return Err(Exhausted::InFlight);
        }
        if l.committed().saturating_add(amount) > budget {
            return Err(Exhausted::Budget);
        }
        l.holds.push(Hold {
            id: id.to_owned(),
            amount,
            until,
            sender: Some(sender.to_owned()),
        });
        Ok(l)
    }

    /// `id`'s hold replaced by the fee it cost (`None`: it never reached
    /// the chain, nothing is charged). A hold already gone (expired into
    /// `spent` in full) is not charged twice.
    pub fn settle(&self, id: &str, fee: Option<u128>, now: u64) -> Ledger {
        let mut l = self.clone();
        let before = l.holds.len();
        l.holds.retain(|h| h.id != id);
        if l.holds.len() < before {
            l.spent = l.spent.saturating_add(fee.unwrap_or(0));
        }
        l.expire(now);
        l
    }
}

mod decimal {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        let s = String::deserialize(d)?;
        crate::session::parse::parse_amount(&s).map_err(serde::de::Error::custom)
    }
}
