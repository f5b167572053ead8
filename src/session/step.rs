//! What one session credential does to a channel's state, decided without
//! I/O: each function takes the state's bytes as the store has them (or as
//! this process last saw them) and answers a [`Step`] for the
//! [`ChannelBook`](settlegate_actors::channels::ChannelBook) to apply
//! atomically. They may be called more than once per request (whenever the
//! state moved under them), so they are pure.
//!
//! Rules every step keeps:
//! - the channel's payee, token and escrow are checked against the terms
//!   of *this* request on every decision, not only when the channel was
//!   first seen: a genome reload that changes them refuses old channels;
//! - on-chain facts older than the facts ttl are never decided on: the
//!   step asks for a re-read ([`Verdict::NeedFacts`]);
//! - a 200 always deducts the request's price; a refusal never does;
//! - a voucher below the accepted cumulative amount is refused (an equal
//!   one is an idempotent retry, served if what is left covers the price);
//! - a channel whose payer is denied serves nothing and accepts no voucher
//!   (`PayerDenied`), whatever the voucher says.

use alloy_primitives::Address;
use settlegate_actors::channels::Step;
use settlegate_actors::ledger::deny::DenySet;
use settlegate_rules::session::accounting::check_close;
use settlegate_rules::session::{ChannelState, Decision, OnChain, SessionProblem, Terms, Voucher, decide};

/// What a request pays under, from the genome read once for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionTerms {
    pub chain_id: u64,
    pub escrow: Address,
    pub payee: Address,
    pub token: Address,
    /// This request's price, in `token`'s atomic units.
    pub price: u128,
    pub min_delta: u128,
    pub min_deposit: u128,
}

impl SessionTerms {
    fn terms(&self) -> Terms {
        Terms {
            price: self.price,
            min_delta: self.min_delta,
        }
    }
}

/// A channel's on-chain facts and when (unix seconds) they were read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Facts {
    pub chain: OnChain,
    pub read_at: u64,
}

/// The context of one decision.
#[derive(Clone, Copy, Debug)]
pub struct Ctx<'a> {
    pub terms: &'a SessionTerms,
    pub now: u64,
    /// How long facts are decided on (seconds).
    pub facts_ttl: u64,
    /// Facts read for this request, if any (newer ones win over the state's).
    pub facts: Option<&'a Facts>,
    /// Payers refused (nothing accepted or deducted).
    pub denied: Option<&'a DenySet>,
}

/// The answer of a step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Read the channel on chain, then decide again.
    NeedFacts,
    /// Served: the price was deducted; the state as written.
    Served(Box<ChannelState>),
    /// Refused, nothing deducted.
    Refused(SessionProblem),
    /// The stored state does not decode: no answer (503).
    Corrupt,
}

pub fn encode(state: &ChannelState) -> Vec<u8> {
    // unwrap: a struct of numbers, strings and bools always serialises.
    serde_json::to_vec(state).unwrap()
}

/// The channel as the terms allow it, or why not.
fn check_channel(chain: &OnChain, terms: &SessionTerms) -> Result<(), SessionProblem> {
    if chain.finalized {
        return Err(SessionProblem::ChannelFinalized);
    }
    if !chain.exists() {
        return Err(SessionProblem::ChannelNotFound);
    }
    if chain.payee != terms.payee {
        return Err(SessionProblem::WrongPayee(chain.payee));
    }
    if chain.token != terms.token {
        return Err(SessionProblem::WrongToken(chain.token));
    }
    Ok(())
}

/// The state to decide on, and whether it differs from the stored bytes
/// (new facts merged in); or the verdict that ends the step now.
fn current(bytes: Option<&[u8]>, ctx: &Ctx) -> Result<(ChannelState, bool), Verdict> {
    let stored = match bytes {
        None => None,
        Some(b) => Some(serde_json::from_slice::<ChannelState>(b).map_err(|_| Verdict::Corrupt)?),
    };
    let (state, changed) = match (stored, ctx.facts) {
        (None, None) => return Err(Verdict::NeedFacts),
        (None, Some(f)) => (ChannelState::fresh(f.chain, f.read_at), true),
        (Some(mut s), Some(f)) if f.read_at > s.chain_read_at => {
            s.chain = f.chain;
            s.chain_read_at = f.read_at;
            // What the chain settled was accepted, whoever settled it.
            s.accepted = s.accepted.max(f.chain.settled);
            s.spent = s.spent.max(f.chain.settled);
            (s, true)
        }
        (Some(s), _) if ctx.now.saturating_sub(s.chain_read_at) > ctx.facts_ttl => return Err(Verdict::NeedFacts),
        (Some(s), _) => (s, false),
    };
    check_channel(&state.chain, ctx.terms).map_err(Verdict::Refused)?;
    if ctx.denied.is_some_and(|d| d.contains(&state.chain.payer)) {
        return Err(Verdict::Refused(SessionProblem::PayerDenied));
    }
    Ok((state, changed))
}

/// A refusal: final, and the merged facts kept when there are new ones.
fn refuse(state: &ChannelState, changed: bool, p: SessionProblem) -> Step<Verdict> {
    if changed {
        Step::Write(encode(state), Verdict::Refused(p))
    } else {
        Step::Keep(Verdict::Refused(p))
    }
}

fn ended(v: Verdict) -> Step<Verdict> {
    Step::Keep(v)
}

/// A `voucher` (or an `open`'s first voucher) whose signature recovered to
/// `signer`.
pub fn on_voucher(bytes: Option<&[u8]>, ctx: &Ctx, voucher: &Voucher, signer: Address) -> Step<Verdict> {
    let (state, changed) = match current(bytes, ctx) {
        Ok(s) => s,
        Err(v) => return ended(v),
    };
    if voucher.cumulative < state.accepted {
        return refuse(
            &state,
            changed,
            SessionProblem::AmountNotIncreasing {
                cumulative: voucher.cumulative,
                accepted: state.accepted,
            },
        );
    }
    match decide(&state, voucher, signer, &ctx.terms.terms()) {
        Decision::Serve { state: next, .. } => {
            let bytes = encode(&next);
            Step::Write(bytes, Verdict::Served(Box::new(next)))
        }
        Decision::AcceptOnly {
            state: next,
            required_cumulative,
        } => Step::Write(
            encode(&next),
            Verdict::Refused(SessionProblem::InsufficientBalance { required_cumulative }),
        ),
        Decision::Refuse(p) => refuse(&state, changed, p),
    }
}

/// A request after a `topUp` (fresh facts in `ctx`): served from what the
/// vouchers already cover, if they cover its price, and only when this
/// request brought the transaction (`ours`: it broadcast it first). A
/// mined topUp is public and signs nothing: presented by anyone else it
/// updates the facts and serves nothing.
pub fn on_top_up(bytes: Option<&[u8]>, ctx: &Ctx, ours: bool) -> Step<Verdict> {
    let (state, changed) = match current(bytes, ctx) {
        Ok(s) => s,
        Err(v) => return ended(v),
    };
    if state.chain.close_requested_at != 0 {
        return refuse(
            &state,
            changed,
            SessionProblem::CloseRequested {
                requested_at: state.chain.close_requested_at,
            },
        );
    }
    if !ours {
        let Some(required_cumulative) = state.required_cumulative(ctx.terms.price) else {
            return refuse(&state, changed, SessionProblem::Overflow);
        };
        let required_cumulative = required_cumulative.max(state.accepted.saturating_add(1));
        return refuse(
            &state,
            changed,
            SessionProblem::InsufficientBalance { required_cumulative },
        );
    }
    deduct(state, changed, ctx.terms.price)
}

/// Deducts `price` from what the accepted vouchers cover, or refuses with
/// the cumulative amount that would cover it.
fn deduct(mut state: ChannelState, changed: bool, price: u128) -> Step<Verdict> {
    let Some(required) = state.required_cumulative(price) else {
        return refuse(&state, changed, SessionProblem::Overflow);
    };
    if state.insufficient(price) {
        return refuse(
            &state,
            changed,
            SessionProblem::InsufficientBalance {
                required_cumulative: required,
            },
        );
    }
    state.spent = required;
    state.served = state.served.saturating_add(1);
    Step::Write(encode(&state), Verdict::Served(Box::new(state)))
}

/// A `close` with its final voucher: accepted (if it is higher) whether or
/// not it covers this request, since the settler must close with it; the
/// request itself is served only if its price is covered and the voucher
/// is not public already (a settled or closing voucher signs nothing).
/// From then on the channel is `closing`: nothing above it is accepted.
pub fn on_close(bytes: Option<&[u8]>, ctx: &Ctx, voucher: &Voucher, signer: Address) -> Step<Verdict> {
    let (mut state, mut changed) = match current(bytes, ctx) {
        Ok(s) => s,
        Err(v) => return ended(v),
    };
    if let Err(p) = check_close(&state, voucher, signer) {
        return refuse(&state, changed, p);
    }
    let public = voucher.cumulative <= state.public_mark();
    if voucher.cumulative > state.accepted {
        state.accepted = voucher.cumulative;
        state.signature = Some(voucher.signature);
        changed = true;
    }
    if !state.closing {
        state.closing = true;
        changed = true;
    }
    if public {
        let required = state
            .required_after_public(ctx.terms.price, ctx.terms.min_delta)
            .unwrap_or(u128::MAX);
        return refuse(
            &state,
            changed,
            SessionProblem::InsufficientBalance {
                required_cumulative: required,
            },
        );
    }
    deduct(state, changed, ctx.terms.price)
}

#[cfg(test)]
#[path = "step_tests.rs"]
mod tests;
