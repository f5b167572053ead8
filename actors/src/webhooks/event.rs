//! What a webhook says: the events, their body in the Standard Webhooks
//! shape (`{"type", "timestamp", "data"}`), and each delivery's
//! `webhook-id`.
//!
//! Everything here is a pure function of the event and the endpoint's
//! name: a batch the ledger writes again, or an attempt made again, says
//! the same bytes under the same id, so a receiver deduplicates on
//! `webhook-id` alone. The event's `timestamp` is when it happened (the
//! consume), not when it was sent; the time of each attempt is the
//! signed `webhook-timestamp` header.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::ledger::channels::Settled;
use crate::ledger::row::PaymentRow;

/// An event a webhook reports: its type, its subject, its `data`.
#[derive(Clone, Copy, Debug)]
pub enum Event<'a> {
    /// A payment was consumed (its 200 was answered) and booked.
    PaymentConsumed(&'a PaymentRow),
    /// A session's channel was settled on chain (by this service's
    /// settler or anyone else) and booked.
    SessionSettled(&'a Settled),
}

impl Event<'_> {
    /// The Standard Webhooks `type`.
    pub fn event_type(&self) -> &'static str {
        match self {
            Event::PaymentConsumed(_) => "payment.consumed",
            Event::SessionSettled(_) => "session.settled",
        }
    }

    /// What the event is about (its key in `webhook_deliveries.subject`).
    pub fn subject(&self) -> String {
        match self {
            Event::PaymentConsumed(row) => row.tx_hash.clone(),
            // One settlement per level reached: the channel and its total.
            Event::SessionSettled(s) => format!("{}@{}", s.channel, s.settled),
        }
    }

    /// The body: `{"type", "timestamp", "data"}`.
    pub fn payload(&self) -> Value {
        match self {
            Event::PaymentConsumed(r) => json!({
                "type": self.event_type(),
                "timestamp": rfc3339(r.consumed_at),
                "data": {
                    "tx_hash": r.tx_hash,
                    "kind": r.kind,
                    "scheme": r.scheme,
                    "payer": r.payer,
                    "recipient": r.recipient,
                    "asset": r.asset,
                    // Decimal text: a uint256 fits no JSON number.
                    "amount": r.amount,
                    "memo": r.memo,
                    "chain_id": r.chain_id,
                    "block_number": r.block_number,
                    "block_time": rfc3339(r.block_time),
                    "resource": r.resource,
                    "route": r.route,
                    "genome_id": r.genome_id,
                    "consumed_at": rfc3339(r.consumed_at),
                    "instance": r.instance,
                }
            }),
            Event::SessionSettled(s) => json!({
                "type": self.event_type(),
                "timestamp": rfc3339(s.at),
                "data": {
                    "channel_id": s.channel_id,
                    "escrow": s.escrow,
                    "chain_id": s.chain_id,
                    "payer": s.payer,
                    "payee": s.payee,
                    "token": s.token,
                    // Decimal text: what this settlement added, and the
                    // channel's settled total after it.
                    "amount": s.amount,
                    "settled": s.settled,
                    "finalized": s.finalized,
                }
            }),
        }
    }

    /// The `webhook-id` of this event at `endpoint`.
    pub fn message_id(&self, endpoint: &str) -> String {
        message_id(self.event_type(), &self.subject(), endpoint)
    }
}

/// `msg_` + 128 bits of SHA-256 over the event type, its subject and the
/// endpoint's name (none of which holds a newline).
pub fn message_id(event_type: &str, subject: &str, endpoint: &str) -> String {
    let digest = Sha256::digest(format!("{event_type}\n{subject}\n{endpoint}").as_bytes());
    format!("msg_{}", hex::encode(&digest[..16]))
}

/// Unix seconds as RFC 3339 UTC (`2026-11-01T12:00:00Z`).
fn rfc3339(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        // unreachable for a row (its times are i64 seconds of a u64 clock)
        .unwrap_or_else(|| unix.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> PaymentRow {
        PaymentRow {
            tx_hash: format!("0x{}", "ab".repeat(32)),
            kind: "charge",
            scheme: "payment",
            payer: format!("0x{}", "11".repeat(20)),
            recipient: format!("0x{}", "c2".repeat(20)),
            asset: format!("0x{}", "20".repeat(20)),
            amount: "115792089237316195423570985008687907853269984665640564039457584007913129639935".into(),
            memo: None,
            chain_id: 42431,
            block_number: 7,
            block_time: 1_700_000_000,
            resource: Some("GET /reports/7".into()),
            route: "GET /reports/*".into(),
            request_digest: Some("d".repeat(64)),
            genome_id: "ab".repeat(32),
            consumed_at: 1_700_000_005,
            instance: "gate-1".into(),
        }
    }

    #[test]
    fn a_consumed_payment_is_a_standard_webhooks_body() {
        let r = row();
        let p = Event::PaymentConsumed(&r).payload();
        assert_eq!(p["type"], "payment.consumed");
        assert_eq!(p["timestamp"], "2023-11-14T22:13:25Z");
        let d = &p["data"];
        assert_eq!(d["amount"], r.amount, "every digit, as text");
        assert_eq!(d["memo"], Value::Null);
        assert_eq!(d["block_time"], "2023-11-14T22:13:20Z");
        assert_eq!(
            (d["chain_id"].as_i64(), d["block_number"].as_i64()),
            (Some(42431), Some(7))
        );
        assert_eq!(d["route"], "GET /reports/*");
        assert_eq!(
            d.get("request_digest"),
            None,
            "the idempotency digest is not the receiver's"
        );
        let keys: Vec<&str> = d.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys.len(), 16, "{keys:?}");
    }

    #[test]
    fn a_settlement_is_its_own_event_one_id_per_level_reached() {
        let s = Settled {
            channel: format!("42431:0x{}:0x{}", "e5".repeat(20), "01".repeat(32)),
            chain_id: 42431,
            escrow: format!("0x{}", "e5".repeat(20)),
            channel_id: format!("0x{}", "01".repeat(32)),
            payer: format!("0x{}", "11".repeat(20)),
            payee: format!("0x{}", "22".repeat(20)),
            token: format!("0x{}", "20".repeat(20)),
            amount: "2000000".into(),
            settled: "3000000".into(),
            finalized: false,
            at: 1_700_000_005,
        };
        let e = Event::SessionSettled(&s);
        let p = e.payload();
        assert_eq!(
            (p["type"].as_str(), p["timestamp"].as_str()),
            (Some("session.settled"), Some("2023-11-14T22:13:25Z"))
        );
        assert_eq!(
            (p["data"]["amount"].as_str(), p["data"]["settled"].as_str()),
            (Some("2000000"), Some("3000000"))
        );
        let next = Settled {
            settled: "4000000".into(),
            ..s.clone()
        };
        assert_ne!(
            e.message_id("billing"),
            Event::SessionSettled(&next).message_id("billing")
        );
        assert_eq!(
            e.message_id("billing"),
            Event::SessionSettled(&s.clone()).message_id("billing")
        );
    }

    #[test]
    fn the_id_is_stable_per_event_and_endpoint() {
        let r = row();
        let e = Event::PaymentConsumed(&r);
        let id = e.message_id("billing");
        assert_eq!(id, e.message_id("billing"));
        assert_eq!(id, message_id("payment.consumed", &r.tx_hash, "billing"));
        assert!(id.starts_with("msg_") && id.len() == 36, "{id}");
        assert_ne!(id, e.message_id("audit"));
        let mut other = row();
        other.tx_hash = format!("0x{}", "cd".repeat(32));
        assert_ne!(id, Event::PaymentConsumed(&other).message_id("billing"));
        assert_eq!(
            e.payload(),
            Event::PaymentConsumed(&row()).payload(),
            "the same bytes again"
        );
    }
}
