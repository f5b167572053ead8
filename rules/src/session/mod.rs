//! The MPP `session` intent (draft-tempo-session-00) as pure rules: a
//! client opens an escrow channel once, then pays each request with an
//! EIP-712 voucher over `(channelId, cumulativeAmount)`.
//!
//! - [`parse`]: the credential payload (`open`, `topUp`, `voucher`,
//!   `close`), strictly typed before any signature is recovered.
//! - [`voucher`]: the voucher, its EIP-712 digest and its signature
//!   (low-s only: a malleable signature would be a second voucher).
//! - [`abi`]: the v1 escrow's calls and its `getChannel` answer, as the
//!   deployed bytecode has them (not the spec appendix's order).
//! - [`judge`]: the `open` / `topUp` transaction a client signed, judged
//!   before it is broadcast.
//! - [`accounting`]: the per-channel state and the decision for one voucher.
//! - [`request`]: the challenge `request` and the `Payment-Receipt`.
//! - [`problem`]: why a session credential is refused, with its problem type.
//! - [`v2`]: the TIP-20 channel reserve precompile's encodings (no chain
//!   here runs it yet: digests and ids only).
//!
//! The signer is always the one the chain names (`authorizedSigner`, or the
//! payer when zero), never one the credential claims.

pub mod abi;
pub mod accounting;
pub mod judge;
pub mod parse;
pub mod problem;
pub mod request;
pub mod v2;
pub mod voucher;

#[cfg(test)]
mod tests;

use std::fmt;
use std::str::FromStr;

use alloy_primitives::B256;

pub use abi::OnChain;
pub use accounting::{ChannelState, Decision, Terms, decide};
pub use judge::{Expected, OpenFacts, judge_open, judge_top_up};
pub use parse::{Action, Open, SessionMalformed, TopUp, parse_payload};
pub use problem::SessionProblem;
pub use request::{SessionRequest, receipt};
pub use voucher::{Domain, SignatureProblem, SignerKey, Voucher, VoucherSignature, channel_id_v1};

/// The v1 escrow's `CLOSE_GRACE_PERIOD`: a payer who called `requestClose`
/// may `withdraw` everything unsettled this many seconds later.
pub const GRACE_PERIOD_SECONDS: u64 = 900;

/// The longest signed `open` / `topUp` transaction a payload may carry (an
/// approve + open batch is about 400 bytes; a key authorization adds some).
pub const MAX_PAYLOAD_TX_BYTES: usize = crate::mpp::MAX_TRANSACTION_BYTES;

/// A v1 channel id: `0x` and 64 hex digits on input (either case, as the
/// spec asks servers to accept), lower case on output, so the display is
/// the one key every store and log uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelId(pub B256);

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChannelIdError {
    #[error("a channel id starts with 0x")]
    NoPrefix,
    #[error("a channel id is 0x and 64 hex digits")]
    NotHex,
}

impl FromStr for ChannelId {
    type Err = ChannelIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex = s.strip_prefix("0x").ok_or(ChannelIdError::NoPrefix)?;
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ChannelIdError::NotHex);
        }
        let mut out = [0u8; 32];
        alloy_primitives::hex::decode_to_slice(hex, &mut out).map_err(|_| ChannelIdError::NotHex)?;
        Ok(ChannelId(B256::from(out)))
    }
}

impl fmt::Display for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

impl From<B256> for ChannelId {
    fn from(b: B256) -> Self {
        ChannelId(b)
    }
}
