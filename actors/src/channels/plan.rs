//! What the settler does with one channel at one scan, decided without
//! I/O from the channel's state (what this service accepted), its facts as
//! just read on chain, and the settler's schedule.
//!
//! Rules:
//! - a payer's close request is urgent: whatever is unsettled is settled
//!   at the first scan that sees it, whatever the schedule, so that the
//!   payer's `withdraw` (possible 900 s later) gets only the rest;
//! - a `close` credential is carried out with the highest voucher;
//! - otherwise unsettled amounts are settled when they reach the amount
//!   threshold, or when the interval since the channel's unsettled clock
//!   started has run out;
//! - a finalised channel has nothing left to do: it leaves the index.

use settlegate_rules::session::{ChannelState, OnChain, VoucherSignature};

/// The settler's schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// Settle once this much is unsettled (0: by interval only).
    pub amount: u128,
    /// Settle at least this often (seconds).
    pub interval: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    Nothing,
    /// `settle(channel, cumulative, signature)`.
    Settle {
        cumulative: u128,
        signature: VoucherSignature,
    },
    /// `close(channel, cumulative, signature)`.
    Close {
        cumulative: u128,
        signature: VoucherSignature,
    },
    /// Finalised on chain: take it out of the index.
    Forget,
}

/// What is accepted here and not settled on chain yet.
pub fn unsettled(state: &ChannelState, chain: &OnChain) -> u128 {
    state.accepted.saturating_sub(chain.settled)
}

/// `since`: when this channel's unsettled clock started (its last
/// settlement, or when it was first seen unsettled).
pub fn plan(state: &ChannelState, chain: &OnChain, closing: bool, now: u64, since: u64, s: &Schedule) -> Plan {
    if chain.finalized {
        return Plan::Forget;
    }
    if !chain.exists() {
        return Plan::Nothing;
    }
    let owed = unsettled(state, chain);
    let Some(signature) = state.signature else {
        // Nothing was ever accepted beyond what the chain settled: there
        // is no voucher to settle or close with. A payer can close alone.
        return Plan::Nothing;
    };
    if closing && state.accepted >= chain.settled {
        return Plan::Close {
            cumulative: state.accepted,
            signature,
        };
    }
    if owed == 0 {
        return Plan::Nothing;
    }
    let due =
        chain.close_requested_at != 0 || (s.amount > 0 && owed >= s.amount) || now.saturating_sub(since) >= s.interval;
    if due {
        Plan::Settle {
            cumulative: state.accepted,
            signature,
        }
    } else {
        Plan::Nothing
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::Address;

    fn chain(settled: u128) -> OnChain {
        OnChain {
            finalized: false,
            close_requested_at: 0,
            payer: Address::repeat_byte(1),
            payee: Address::repeat_byte(2),
            token: Address::repeat_byte(3),
            authorized_signer: Address::ZERO,
            deposit: 1_000,
            settled,
        }
    }

    fn state(accepted: u128) -> ChannelState {
        let mut sig = [0x22u8; 65];
        sig[64] = 28;
        ChannelState {
            accepted,
            signature: Some(VoucherSignature::from_slice(&sig).unwrap()),
            ..ChannelState::fresh(chain(0), 0)
        }
    }

    const S: Schedule = Schedule {
        amount: 100,
        interval: 300,
    };

    fn settles(p: &Plan) -> Option<u128> {
        match p {
            Plan::Settle { cumulative, .. } => Some(*cumulative),
            _ => None,
        }
    }

    #[test]
    fn nothing_unsettled_is_nothing_to_do() {
        assert_eq!(plan(&state(50), &chain(50), false, 10_000, 0, &S), Plan::Nothing);
    }

    #[test]
    fn the_amount_or_the_interval_makes_a_settlement_due() {
        assert_eq!(plan(&state(99), &chain(0), false, 100, 0, &S), Plan::Nothing);
        assert_eq!(settles(&plan(&state(100), &chain(0), false, 100, 0, &S)), Some(100));
        assert_eq!(settles(&plan(&state(60), &chain(10), false, 300, 0, &S)), Some(60));
        let by_interval_only = Schedule { amount: 0, ..S };
        assert_eq!(
            plan(&state(10_000), &chain(0), false, 299, 0, &by_interval_only),
            Plan::Nothing
        );
    }

    #[test]
    fn a_close_request_settles_at_once() {
        let mut c = chain(0);
        c.close_requested_at = 5;
        assert_eq!(settles(&plan(&state(1), &c, false, 6, 6, &S)), Some(1));
    }

    #[test]
    fn a_close_credential_closes_with_the_highest_voucher() {
        match plan(&state(70), &chain(20), true, 0, 0, &S) {
            Plan::Close { cumulative, .. } => assert_eq!(cumulative, 70),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn finalised_channels_leave_and_unknown_ones_wait() {
        let mut c = chain(0);
        c.finalized = true;
        assert_eq!(plan(&state(70), &c, true, 0, 0, &S), Plan::Forget);
        let mut gone = chain(0);
        gone.payer = Address::ZERO;
        assert_eq!(plan(&state(70), &gone, false, 10_000, 0, &S), Plan::Nothing);
    }

    #[test]
    fn without_a_voucher_there_is_nothing_to_settle_with() {
        let mut s = state(0);
        s.signature = None;
        assert_eq!(plan(&s, &chain(0), true, 10_000, 0, &S), Plan::Nothing);
    }
}
