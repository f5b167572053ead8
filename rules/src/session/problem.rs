//! Why a session credential is refused. Each variant has the problem type
//! the spec registers for it (`session/...`) or, for what the spec leaves
//! to the base scheme (a transaction that does not open what the challenge
//! asked), `verification-failed`; and its status: 410 when the channel is
//! gone (not found, finalized, closing), 402 otherwise, so the client gets
//! a fresh challenge with it.

use alloy_primitives::Address;

use crate::signed_tx::Undecodable;

use super::voucher::SignatureProblem;

/// The prefix of every problem type URI.
pub const PROBLEM_BASE: &str = "https://paymentauth.org/problems/";

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SessionProblem {
    #[error("the voucher signature is invalid: {0}")]
    InvalidSignature(SignatureProblem),
    #[error("the voucher is signed by {signer:#x}, not by the channel's signer {expected:#x}")]
    SignerMismatch { signer: Address, expected: Address },
    #[error("the voucher's {cumulative} exceeds the channel deposit {deposit}")]
    AmountExceedsDeposit { cumulative: u128, deposit: u128 },
    #[error("the voucher grows the accepted amount by {delta}, less than the minimum {min}")]
    DeltaTooSmall { delta: u128, min: u128 },
    #[error("the close voucher's {cumulative} is below the accepted {accepted}")]
    AmountNotIncreasing { cumulative: u128, accepted: u128 },
    #[error("no channel with this id exists")]
    ChannelNotFound,
    #[error("the channel is finalized")]
    ChannelFinalized,
    #[error("the payer requested the channel's close at {requested_at}")]
    CloseRequested { requested_at: u64 },
    #[error("the vouchers do not cover this request: a voucher of at least {required_cumulative} is needed")]
    InsufficientBalance { required_cumulative: u128 },
    #[error("the transaction opens a channel to another payee ({0:#x})")]
    WrongPayee(Address),
    #[error("the transaction opens a channel in another token ({0:#x})")]
    WrongToken(Address),
    #[error("the transaction calls another escrow contract ({0:#x})")]
    WrongEscrow(Address),
    #[error("the transaction is for chain {0:?}")]
    WrongChain(Option<u64>),
    #[error("the deposit {deposit} is below the minimum {min}")]
    DepositTooLow { deposit: u128, min: u128 },
    #[error("the transaction opens or tops up another channel than the credential names")]
    ChannelIdMismatch,
    #[error("the payload's authorizedSigner is not the one the transaction opens with")]
    AuthorizedSignerMismatch,
    #[error("the transaction is not one escrow open (after an optional approve)")]
    NotAnOpen,
    #[error("the transaction is not one escrow topUp (after an optional approve)")]
    NotATopUp,
    #[error("the transaction tops up {in_tx}, the payload says {claimed}")]
    TopUpAmountMismatch { in_tx: u128, claimed: u128 },
    #[error(transparent)]
    Undecodable(#[from] Undecodable),
    #[error("the transaction's signature kind is not one whose signer can be recovered here")]
    UnrecoveredSigner,
    #[error("an amount does not fit the escrow's uint128")]
    Overflow,
    #[error("the node refused the signed transaction; it was not broadcast")]
    TxRejected,
    #[error("the signed transaction was mined and reverted")]
    TxReverted,
    /// The channel's payer is on the operator's deny list (nothing
    /// accepted, deducted or broadcast). The gate answers it as a charge's
    /// `payer_denied`.
    #[error("the channel's payer is on this service's deny list")]
    PayerDenied,
}

impl SessionProblem {
    /// The problem type, after [`PROBLEM_BASE`].
    pub fn slug(&self) -> &'static str {
        use SessionProblem::*;
        match self {
            InvalidSignature(_) => "session/invalid-signature",
            SignerMismatch { .. } => "session/signer-mismatch",
            AmountExceedsDeposit { .. } => "session/amount-exceeds-deposit",
            DeltaTooSmall { .. } => "session/delta-too-small",
            ChannelNotFound => "session/channel-not-found",
            // A channel whose payer asked to close it will be finalized
            // after the grace period: for the client, it is gone.
            ChannelFinalized | CloseRequested { .. } => "session/channel-finalized",
            InsufficientBalance { .. } => "session/insufficient-balance",
            AmountNotIncreasing { .. }
            | WrongPayee(_)
            | WrongToken(_)
            | WrongEscrow(_)
            | WrongChain(_)
            | DepositTooLow { .. }
            | ChannelIdMismatch
            | AuthorizedSignerMismatch
            | NotAnOpen
            | NotATopUp
            | TopUpAmountMismatch { .. }
            | Undecodable(_)
            | UnrecoveredSigner
            | Overflow
            | TxRejected
            | TxReverted
            | PayerDenied => "verification-failed",
        }
    }

    /// The full problem type URI.
    pub fn problem_type(&self) -> String {
        format!("{PROBLEM_BASE}{}", self.slug())
    }

    /// 410 when the channel is gone, 402 otherwise.
    pub fn status(&self) -> u16 {
        use SessionProblem::*;
        match self {
            ChannelNotFound | ChannelFinalized | CloseRequested { .. } => 410,
            InvalidSignature(_)
            | SignerMismatch { .. }
            | AmountExceedsDeposit { .. }
            | DeltaTooSmall { .. }
            | AmountNotIncreasing { .. }
            | InsufficientBalance { .. }
            | WrongPayee(_)
            | WrongToken(_)
            | WrongEscrow(_)
            | WrongChain(_)
            | DepositTooLow { .. }
            | ChannelIdMismatch
            | AuthorizedSignerMismatch
            | NotAnOpen
            | NotATopUp
            | TopUpAmountMismatch { .. }
            | Undecodable(_)
            | UnrecoveredSigner
            | Overflow
            | TxRejected
            | TxReverted
            | PayerDenied => 402,
        }
    }
}

impl From<SignatureProblem> for SessionProblem {
    fn from(p: SignatureProblem) -> Self {
        SessionProblem::InvalidSignature(p)
    }
}
