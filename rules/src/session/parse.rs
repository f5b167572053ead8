//! The `payload` of a session credential, per the spec's "Payload Actions"
//! and as mppx 0.11.0's `sessionLegacy` client writes it: an `action`
//! (`open`, `topUp`, `voucher`, `close`) and that action's fields beside it.
//!
//! Strict where a loose reading could be exploited or be ambiguous: amounts
//! are canonical decimal strings that fit `uint128` (no sign, no leading
//! zero, no exponent), hex is `0x`-prefixed and of exact length, the
//! transaction is bounded. Unknown fields are ignored (the spec asks it, for
//! forward compatibility). Everything here is checked before any signature
//! is recovered.

use alloy_primitives::{Address, Bytes};
use serde_json::{Map, Value};

use super::voucher::{SignatureProblem, Voucher, VoucherSignature};
use super::{ChannelId, ChannelIdError, MAX_PAYLOAD_TX_BYTES};
use crate::primitives::{AddressError, cut_chars, parse_address, quote_bounded};

/// Digits of `u128::MAX`.
const MAX_AMOUNT_DIGITS: usize = 39;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Open {
    pub channel_id: ChannelId,
    /// The signed EIP-2718 transaction, to judge and then broadcast.
    pub transaction: Bytes,
    /// What the payload claims; the transaction's calldata decides.
    pub authorized_signer: Option<Address>,
    pub voucher: Voucher,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopUp {
    pub channel_id: ChannelId,
    pub transaction: Bytes,
    pub additional_deposit: u128,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Open(Open),
    TopUp(TopUp),
    Voucher(Voucher),
    Close(Voucher),
}

impl Action {
    pub fn channel_id(&self) -> ChannelId {
        match self {
            Action::Open(o) => o.channel_id,
            Action::TopUp(t) => t.channel_id,
            Action::Voucher(v) | Action::Close(v) => v.channel_id,
        }
    }

    /// The wire name of the action.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Open(_) => "open",
            Action::TopUp(_) => "topUp",
            Action::Voucher(_) => "voucher",
            Action::Close(_) => "close",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("an amount is a decimal string of digits only, without leading zeros")]
    NotCanonical,
    #[error("the amount does not fit uint128")]
    Overflow,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SessionMalformed {
    #[error("the session payload is not a JSON object")]
    NotAnObject,
    #[error("payload.{0} is missing")]
    Missing(&'static str),
    #[error("payload.{0} is not a string")]
    NotAString(&'static str),
    #[error("payload.action {0} is not open, topUp, voucher or close")]
    UnknownAction(String),
    #[error("payload.type must be \"transaction\" for {0}")]
    NotTransaction(&'static str),
    #[error("payload.channelId: {0}")]
    ChannelId(ChannelIdError),
    #[error("payload.{field}: {error}")]
    Amount { field: &'static str, error: AmountError },
    #[error("payload.signature: {0}")]
    Signature(SignatureProblem),
    #[error("payload.authorizedSigner: {0}")]
    AuthorizedSigner(AddressError),
    #[error("payload.transaction is 0x-prefixed hex")]
    TransactionNotHex,
    #[error("payload.transaction must be 1 to {MAX_PAYLOAD_TX_BYTES} bytes")]
    TransactionSize,
}

/// A canonical decimal `uint128`.
pub fn parse_amount(s: &str) -> Result<u128, AmountError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0')) {
        return Err(AmountError::NotCanonical);
    }
    if s.len() > MAX_AMOUNT_DIGITS {
        return Err(AmountError::Overflow);
    }
    s.parse::<u128>().map_err(|_| AmountError::Overflow)
}

fn field<'a>(o: &'a Map<String, Value>, name: &'static str) -> Result<&'a str, SessionMalformed> {
    match o.get(name) {
        None | Some(Value::Null) => Err(SessionMalformed::Missing(name)),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(SessionMalformed::NotAString(name)),
    }
}

fn amount(o: &Map<String, Value>, name: &'static str) -> Result<u128, SessionMalformed> {
    parse_amount(field(o, name)?).map_err(|error| SessionMalformed::Amount { field: name, error })
}

fn channel_id(o: &Map<String, Value>) -> Result<ChannelId, SessionMalformed> {
    field(o, "channelId")?.parse().map_err(SessionMalformed::ChannelId)
}

fn voucher(o: &Map<String, Value>) -> Result<Voucher, SessionMalformed> {
    let channel_id = channel_id(o)?;
    let cumulative = amount(o, "cumulativeAmount")?;
    let signature = VoucherSignature::parse_hex(field(o, "signature")?).map_err(SessionMalformed::Signature)?;
    Ok(Voucher {
        channel_id,
        cumulative,
        signature,
    })
}

fn transaction(o: &Map<String, Value>, action: &'static str) -> Result<Bytes, SessionMalformed> {
    if field(o, "type").ok() != Some("transaction") {
        return Err(SessionMalformed::NotTransaction(action));
    }
    let s = field(o, "transaction")?;
    let hex = s.strip_prefix("0x").ok_or(SessionMalformed::TransactionNotHex)?;
    if hex.is_empty() || hex.len() > 2 * MAX_PAYLOAD_TX_BYTES {
        return Err(SessionMalformed::TransactionSize);
    }
    alloy_primitives::hex::decode(hex)
        .map(Bytes::from)
        .map_err(|_| SessionMalformed::TransactionNotHex)
}

/// Parses a session credential's `payload`.
pub fn parse_payload(payload: &Value) -> Result<Action, SessionMalformed> {
    let o = payload.as_object().ok_or(SessionMalformed::NotAnObject)?;
    match field(o, "action")? {
        "open" => {
            let transaction = transaction(o, "open")?;
            let authorized_signer = match o.get("authorizedSigner") {
                None | Some(Value::Null) => None,
                // The length is checked first: the error quotes the text.
                Some(Value::String(s)) if s.len() > 42 => {
                    return Err(SessionMalformed::AuthorizedSigner(AddressError::NotHex(
                        cut_chars(s, 44).into_owned(),
                    )));
                }
                Some(Value::String(s)) => Some(parse_address(s).map_err(SessionMalformed::AuthorizedSigner)?),
                Some(_) => return Err(SessionMalformed::NotAString("authorizedSigner")),
            };
            Ok(Action::Open(Open {
                channel_id: channel_id(o)?,
                transaction,
                authorized_signer,
                voucher: voucher(o)?,
            }))
        }
        "topUp" => Ok(Action::TopUp(TopUp {
            channel_id: channel_id(o)?,
            transaction: transaction(o, "topUp")?,
            additional_deposit: amount(o, "additionalDeposit")?,
        })),
        "voucher" => Ok(Action::Voucher(voucher(o)?)),
        "close" => Ok(Action::Close(voucher(o)?)),
        other => Err(SessionMalformed::UnknownAction(quote_bounded(other, 32))),
    }
}
