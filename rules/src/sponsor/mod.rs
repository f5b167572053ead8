//! Fee sponsorship (the tempo `charge` intent's `feePayer`): this service
//! co-signs a client's transaction as its fee payer, within caps signed in
//! the genome, from a budget shared by every instance.
//!
//! - [`handoff`]: the client's hand-off decoded, its sender recovered, the
//!   fee-payer hash and the co-signed transaction.
//! - [`caps`]: `settlement.sponsorship` and the judgement of a hand-off
//!   against it (gas, fees, validity, fee token).
//! - [`budget`]: the per-period ledger of held and charged fees.
//! - [`fee_paid`]: what a mined transaction cost its fee payer, read from
//!   the fee token's `Transfer` to the fee manager (a node's
//!   `receipt.feePayer` is not trusted: the dev chain reports the sender).

pub mod budget;
pub mod caps;
pub mod handoff;

use alloy_primitives::{Address, B256, U256, address};

use crate::settlement::{Log, TRANSFER_TOPIC};

pub use caps::{CapError, SponsorPolicy, Sponsorable};
pub use handoff::{Handoff, HandoffError};

/// Tempo's fee manager: every fee paid in a TIP-20 token is a `Transfer`
/// to it.
pub const FEE_MANAGER: Address = address!("feec000000000000000000000000000000000000");

/// The fee `payer` paid in `fee_token` according to `logs`: the sum of the
/// token's `Transfer`s from the payer to the fee manager (`None`: none).
pub fn fee_paid(logs: &[Log], fee_token: Address, payer: Address) -> Option<U256> {
    let topic = |a: Address| B256::left_padding_from(a.as_slice());
    let mut total: Option<U256> = None;
    for l in logs {
        if l.address == fee_token
            && l.removed != Some(true)
            && l.topics.len() == 3
            && l.topics[0] == TRANSFER_TOPIC
            && l.topics[1] == topic(payer)
            && l.topics[2] == topic(FEE_MANAGER)
            && l.data.len() == 32
        {
            let v = U256::from_be_slice(&l.data);
            total = Some(total.unwrap_or_default().saturating_add(v));
        }
    }
    total
}

/// What `calls` transfer in all, per token: the sum of the amounts of their
/// TIP-20 `transfer` / `transferWithMemo` calls (other calls count
/// nothing). Calls simulated one at a time each see the whole balance; a
/// batch needs the sum.
pub fn transfer_totals(calls: &[(Address, &[u8])]) -> Vec<(Address, U256)> {
    let mut totals: Vec<(Address, U256)> = Vec::new();
    for (token, input) in calls {
        let Some((selector, args)) = input.split_first_chunk::<4>() else {
            continue;
        };
        if !matches!(
            *selector,
            crate::signed_tx::TRANSFER_SELECTOR | crate::signed_tx::TRANSFER_WITH_MEMO_SELECTOR
        ) || args.len() < 64
        {
            continue;
        }
        let amount = U256::from_be_slice(&args[32..64]);
        match totals.iter_mut().find(|(t, _)| t == token) {
            Some((_, sum)) => *sum = sum.saturating_add(amount),
            None => totals.push((*token, amount)),
        }
    }
    totals
}

#[cfg(test)]
mod tests;
