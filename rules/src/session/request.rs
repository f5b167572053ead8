//! The challenge `request` for the `session` intent and the session
//! `Payment-Receipt` (spec "Request Schema" and "Receipt Generation").
//!
//! The request is what mppx 0.11.0's `sessionLegacy` client reads: price,
//! token and payee at the top, the escrow and chain under `methodDetails`,
//! and `methodDetails.sessionProtocol = "v1"`, the marker by which mppx
//! routes a challenge to its v1 (escrow contract) client rather than to its
//! v2 (precompile) one.

use alloy_primitives::Address;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use super::ChannelId;
use crate::canonical::canonical_value_bytes;
use crate::credential::TxHash;
use crate::mpp::{METHOD, SESSION_INTENT, b64_encode, format_expires};
use crate::primitives::address_lower;

/// The v1 marker mppx reads under `methodDetails.sessionProtocol`.
pub const SESSION_PROTOCOL_V1: &str = "v1";
/// Each request is one unit.
pub const UNIT_TYPE: &str = "request";

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SessionRequest {
    /// Price of one request, in base units.
    pub amount: u128,
    pub currency: Address,
    pub recipient: Address,
    pub escrow: Address,
    pub chain_id: u64,
    pub min_voucher_delta: Option<u128>,
    pub suggested_deposit: Option<u128>,
}

impl SessionRequest {
    pub fn to_value(&self) -> Value {
        let mut details = Map::new();
        details.insert("escrowContract".into(), address_lower(&self.escrow).into());
        details.insert("chainId".into(), self.chain_id.into());
        details.insert("sessionProtocol".into(), SESSION_PROTOCOL_V1.into());
        if let Some(d) = self.min_voucher_delta {
            details.insert("minVoucherDelta".into(), d.to_string().into());
        }
        let mut v = json!({
            "amount": self.amount.to_string(),
            "unitType": UNIT_TYPE,
            "currency": address_lower(&self.currency),
            "recipient": self.recipient.to_checksum(None),
            "methodDetails": Value::Object(details),
        });
        if let (Some(d), Some(o)) = (self.suggested_deposit, v.as_object_mut()) {
            o.insert("suggestedDeposit".into(), d.to_string().into());
        }
        v
    }

    /// base64url(JCS(request)): the `request` auth-param.
    pub fn encode(&self) -> String {
        b64_encode(&canonical_value_bytes(&self.to_value()))
    }
}

/// The session receipt: `reference` is the channel id (the spec's stable
/// session reference); `txHash` only when this response settled or closed.
pub fn receipt(
    challenge_id: &str,
    channel: &ChannelId,
    accepted: u128,
    spent: u128,
    tx_hash: Option<&TxHash>,
    at: OffsetDateTime,
) -> Value {
    let mut v = json!({
        "method": METHOD,
        "intent": SESSION_INTENT,
        "status": "success",
        "timestamp": format_expires(at),
        "reference": channel.to_string(),
        "challengeId": challenge_id,
        "channelId": channel.to_string(),
        "acceptedCumulative": accepted.to_string(),
        "spent": spent.to_string(),
    });
    if let (Some(h), Some(o)) = (tx_hash, v.as_object_mut()) {
        o.insert("txHash".into(), h.to_string().into());
    }
    v
}

/// The `Payment-Receipt` header value: base64url(JCS(receipt)).
pub fn encode_receipt(receipt: &Value) -> String {
    b64_encode(&canonical_value_bytes(receipt))
}
