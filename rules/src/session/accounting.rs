//! A channel's server-side accounting and the decision for one voucher
//! (spec "Voucher Verification" and "Server-Side Accounting").
//!
//! Invariants of [`ChannelState`]: `spent <= accepted <= chain.deposit`
//! (as last read), and `accepted` only grows. `accepted - spent` is what the
//! vouchers cover and no request consumed yet. The caller serialises
//! decisions per channel and persists `Serve` / `AcceptOnly` states before
//! it answers: a voucher relied on must survive a crash.
//!
//! A voucher at or below `accepted` is an idempotent retry (the spec: 200
//! with the current state, not an error): it advances nothing and is served
//! only from the balance already covered. Its signature is still checked
//! by the caller: without it, anyone who knows a channel id could spend
//! its balance. For the same reason a voucher that is public (settled on
//! chain, or handed to the settler: its signature is in calldata) is no
//! retry: it serves nothing, and the client signs a higher one.
//!
//! Once a `close` is accepted (`closing`), nothing more is accepted: the
//! settler closes with `accepted`, and whatever is served above it after
//! the close is mined would never be paid.

use alloy_primitives::Address;
use serde::{Deserialize, Serialize};

use super::OnChain;
use super::problem::SessionProblem;
use super::voucher::{Voucher, VoucherSignature};

/// u128 as a decimal string: JSON numbers lose precision above 2^53 in
/// most readers (Lua's cjson among them).
pub(crate) mod dec {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(v: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        super::super::parse::parse_amount(&s).map_err(D::Error::custom)
    }
}

mod sig_hex {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    use super::VoucherSignature;

    pub fn serialize<S: Serializer>(v: &Option<VoucherSignature>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(sig) => s.serialize_some(&sig.to_hex()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<VoucherSignature>, D::Error> {
        let s = <Option<std::borrow::Cow<'de, str>>>::deserialize(d)?;
        s.map(|s| VoucherSignature::parse_hex(&s).map_err(D::Error::custom))
            .transpose()
    }
}

/// What the server keeps per channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelState {
    /// The highest voucher accepted.
    #[serde(rename = "a", with = "dec")]
    pub accepted: u128,
    /// Its signature (`None` while `accepted` is only what the chain settled).
    #[serde(rename = "g", with = "sig_hex")]
    pub signature: Option<VoucherSignature>,
    /// What served requests consumed.
    #[serde(rename = "s", with = "dec")]
    pub spent: u128,
    /// The channel as last read on chain, and when (unix seconds).
    #[serde(rename = "c")]
    pub chain: OnChain,
    #[serde(rename = "r")]
    pub chain_read_at: u64,
    /// Requests served on this channel.
    #[serde(rename = "n")]
    pub served: u64,
    /// The highest voucher the settler put in a transaction (public from
    /// then on, whether or not it was mined).
    #[serde(rename = "p", with = "dec", default, skip_serializing_if = "is_zero")]
    pub published: u128,
    /// A `close` was accepted: no voucher above `accepted` is taken.
    #[serde(rename = "x", default, skip_serializing_if = "std::ops::Not::not")]
    pub closing: bool,
}

fn is_zero(v: &u128) -> bool {
    *v == 0
}

impl ChannelState {
    /// A channel first seen here: what the chain already settled was paid
    /// (to this payee) and counts as both accepted and spent.
    pub fn fresh(chain: OnChain, read_at: u64) -> Self {
        ChannelState {
            accepted: chain.settled,
            signature: None,
            spent: chain.settled,
            chain,
            chain_read_at: read_at,
            served: 0,
            published: 0,
            closing: false,
        }
    }

    /// The highest voucher anyone may know: settled on chain (as last
    /// read) or handed to the settler.
    pub fn public_mark(&self) -> u128 {
        self.published.max(self.chain.settled)
    }

    /// The smallest voucher that is no retry of a public one and covers
    /// one more request at `price` (`None`: overflow).
    pub fn required_after_public(&self, price: u128, min_delta: u128) -> Option<u128> {
        let above = self.accepted.checked_add(min_delta.max(1))?;
        Some(above.max(self.required_cumulative(price)?))
    }

    /// What the accepted vouchers still cover.
    pub fn available(&self) -> u128 {
        self.accepted.saturating_sub(self.spent)
    }

    /// The vouchers do not cover one more request at `price`.
    pub fn insufficient(&self, price: u128) -> bool {
        self.available() < price
    }

    /// The cumulative amount a voucher needs to cover one more request.
    pub fn required_cumulative(&self, price: u128) -> Option<u128> {
        self.spent.checked_add(price)
    }
}

/// The route's price per request and the smallest voucher increase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Terms {
    pub price: u128,
    pub min_delta: u128,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Persist `state`, then serve. `advanced`: the voucher raised `accepted`.
    Serve { state: ChannelState, advanced: bool },
    /// The voucher advanced (persist `state`) but still does not cover this
    /// request: answer 402 `insufficient-balance` with `required_cumulative`.
    AcceptOnly {
        state: ChannelState,
        required_cumulative: u128,
    },
    /// Nothing changes.
    Refuse(SessionProblem),
}

/// Decides one voucher against the channel's state. `signer` is the address
/// the voucher's signature recovers in the escrow's domain.
pub fn decide(state: &ChannelState, voucher: &Voucher, signer: Address, terms: &Terms) -> Decision {
    match decide_inner(state, voucher, signer, terms) {
        Ok(d) => d,
        Err(p) => Decision::Refuse(p),
    }
}

/// The channel is open, the voucher is its signer's (as the chain names
/// it) and within its deposit; unless `closing`, no close request is
/// pending (whatever is served then may be withdrawn by the payer before
/// it is settled: the spec says reject).
fn signed_within(chain: &OnChain, voucher: &Voucher, signer: Address, closing: bool) -> Result<(), SessionProblem> {
    if chain.finalized {
        return Err(SessionProblem::ChannelFinalized);
    }
    if !chain.exists() {
        return Err(SessionProblem::ChannelNotFound);
    }
    let expected = chain.expected_signer();
    if signer != expected {
        return Err(SessionProblem::SignerMismatch { signer, expected });
    }
    if !closing && chain.close_requested_at != 0 {
        return Err(SessionProblem::CloseRequested {
            requested_at: chain.close_requested_at,
        });
    }
    if voucher.cumulative > chain.deposit {
        return Err(SessionProblem::AmountExceedsDeposit {
            cumulative: voucher.cumulative,
            deposit: chain.deposit,
        });
    }
    Ok(())
}

fn decide_inner(
    state: &ChannelState,
    voucher: &Voucher,
    signer: Address,
    terms: &Terms,
) -> Result<Decision, SessionProblem> {
    signed_within(&state.chain, voucher, signer, false)?;
    if state.closing {
        return Err(SessionProblem::ChannelFinalized);
    }
    let mut next = state.clone();
    let advanced = voucher.cumulative > state.accepted;
    if !advanced && voucher.cumulative <= state.public_mark() {
        return Err(SessionProblem::InsufficientBalance {
            required_cumulative: state
                .required_after_public(terms.price, terms.min_delta)
                .ok_or(SessionProblem::Overflow)?,
        });
    }
    if advanced {
        let delta = voucher.cumulative - state.accepted;
        if delta < terms.min_delta {
            return Err(SessionProblem::DeltaTooSmall {
                delta,
                min: terms.min_delta,
            });
        }
        next.accepted = voucher.cumulative;
        next.signature = Some(voucher.signature);
    }
    let required = next.required_cumulative(terms.price).ok_or(SessionProblem::Overflow)?;
    if next.insufficient(terms.price) {
        return if advanced {
            Ok(Decision::AcceptOnly {
                state: next,
                required_cumulative: required,
            })
        } else {
            Err(SessionProblem::InsufficientBalance {
                required_cumulative: required,
            })
        };
    }
    next.spent = required;
    next.served = next.served.saturating_add(1);
    Ok(Decision::Serve { state: next, advanced })
}

/// The voucher a `close` settles with: it must be signed by the channel's
/// signer, within the deposit, and not below what was accepted (closing
/// with less would give up what was served).
pub fn check_close(state: &ChannelState, voucher: &Voucher, signer: Address) -> Result<(), SessionProblem> {
    signed_within(&state.chain, voucher, signer, true)?;
    if state.closing && voucher.cumulative > state.accepted {
        return Err(SessionProblem::ChannelFinalized);
    }
    if voucher.cumulative < state.accepted {
        return Err(SessionProblem::AmountNotIncreasing {
            cumulative: voucher.cumulative,
            accepted: state.accepted,
        });
    }
    Ok(())
}
