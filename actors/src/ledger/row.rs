//! A consumed record as one ledger row: a pure translation, so what the
//! books say of a payment is exactly what its replay record says.
//!
//! Addresses and hashes are lower-case `0x` hex (as the 200's body spells
//! them), amounts decimal text (a uint256 exceeds every integer type the
//! database has), times unix seconds.

use settlegate_rules::replay::ReplayRecord;

/// One row of `payments`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentRow {
    pub tx_hash: String,
    /// `charge` or `proof`.
    pub kind: &'static str,
    pub scheme: &'static str,
    pub payer: String,
    pub recipient: String,
    pub asset: String,
    pub amount: String,
    pub memo: Option<String>,
    pub chain_id: i64,
    pub block_number: i64,
    pub block_time: i64,
    pub resource: Option<String>,
    pub route: String,
    pub request_digest: Option<String>,
    pub genome_id: String,
    pub consumed_at: i64,
    pub instance: String,
}

/// Why a record cannot be a row (it goes to `outbox_rejects`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RowError {
    #[error("{0} is beyond what the ledger stores")]
    OutOfRange(&'static str),
}

fn lower_hex(bytes: &[u8]) -> String {
    format!("0x{}", hex::encode(bytes))
}

fn int(v: u64, what: &'static str) -> Result<i64, RowError> {
    i64::try_from(v).map_err(|_| RowError::OutOfRange(what))
}

/// The first unix second PostgreSQL's `timestamptz` cannot hold (year
/// 294277): `to_timestamp` fails at it, and with it the whole batch, on
/// every retry; refused here, the entry goes to `outbox_rejects` instead.
const TIMESTAMP_END: u64 = 9_224_318_016_000;

fn time(v: u64, what: &'static str) -> Result<i64, RowError> {
    if v >= TIMESTAMP_END {
        return Err(RowError::OutOfRange(what));
    }
    int(v, what)
}

impl PaymentRow {
    pub fn of(record: &ReplayRecord) -> Result<Self, RowError> {
        let s = &record.settlement;
        Ok(PaymentRow {
            tx_hash: s.tx_hash.to_string(),
            kind: if record.proof { "proof" } else { "charge" },
            scheme: s.scheme.as_str(),
            payer: lower_hex(s.payer.as_slice()),
            recipient: lower_hex(s.recipient.as_slice()),
            asset: lower_hex(s.asset.as_slice()),
            amount: s.amount.to_string(),
            memo: s.memo.map(|m| lower_hex(m.as_slice())),
            chain_id: int(s.chain_id, "chain_id")?,
            block_number: int(s.block_number, "block_number")?,
            block_time: time(s.block_timestamp, "block_timestamp")?,
            resource: record.resource.clone(),
            // Records written before routes were kept: the resource says.
            route: record.route.clone().unwrap_or_else(|| "unknown".to_owned()),
            request_digest: record
                .request_digest
                .as_ref()
                .and_then(|d| serde_json::to_value(d).ok())
                .and_then(|v| v.as_str().map(str::to_owned)),
            genome_id: s.genome_id.clone(),
            consumed_at: time(record.consumed_at, "consumed_at")?,
            instance: record.instance.clone().unwrap_or_else(|| "unknown".to_owned()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::{Address, B256, U256};
    use settlegate_rules::credential::TxHash;
    use settlegate_rules::replay::{Scheme, SettledStatus, Settlement};

    fn record() -> ReplayRecord {
        ReplayRecord {
            settlement: Settlement {
                status: SettledStatus::Settled,
                scheme: Scheme::Payment,
                tx_hash: TxHash::from(B256::repeat_byte(0xAB)),
                payer: Address::repeat_byte(0x11),
                recipient: Address::repeat_byte(0xC2),
                asset: Address::repeat_byte(0x20),
                amount: U256::MAX,
                memo: Some(B256::repeat_byte(0x0F)),
                chain_id: 42431,
                block_number: 7,
                block_timestamp: 1_700_000_000,
                genome_id: "ab".repeat(32),
                idempotent_replay: false,
            },
            resource: Some("GET /reports/7".into()),
            request_digest: None,
            consumed_at: 1_700_000_005,
            expires_at: 1_700_086_405,
            route: Some("GET /reports/*".into()),
            instance: Some("gate-1".into()),
            proof: false,
        }
    }

    #[test]
    fn a_record_is_its_row_in_the_200s_spelling() {
        let row = PaymentRow::of(&record()).unwrap();
        assert_eq!(row.tx_hash, format!("0x{}", "ab".repeat(32)));
        assert_eq!(row.payer, format!("0x{}", "11".repeat(20)));
        assert_eq!(
            row.recipient,
            format!("0x{}", "c2".repeat(20)),
            "lower-case, not checksummed"
        );
        assert_eq!(row.amount, U256::MAX.to_string(), "every digit of a uint256");
        assert_eq!(row.memo, Some(format!("0x{}", "0f".repeat(32))));
        assert_eq!((row.kind, row.scheme), ("charge", "payment"));
        assert_eq!(
            (row.chain_id, row.block_number, row.block_time),
            (42431, 7, 1_700_000_000)
        );
        assert_eq!(row.route, "GET /reports/*");
        assert_eq!(row.instance, "gate-1");
        assert_eq!(row.consumed_at, 1_700_000_005);
        assert_eq!(row.request_digest, None);
    }

    #[test]
    fn a_proof_is_its_own_kind_and_old_records_still_fit() {
        let mut r = record();
        r.proof = true;
        r.route = None;
        r.instance = None;
        let row = PaymentRow::of(&r).unwrap();
        assert_eq!(row.kind, "proof");
        assert_eq!((row.route.as_str(), row.instance.as_str()), ("unknown", "unknown"));
    }

    #[test]
    fn numbers_past_the_databases_range_are_refused_not_wrapped() {
        let mut r = record();
        r.settlement.block_number = u64::MAX;
        assert_eq!(PaymentRow::of(&r), Err(RowError::OutOfRange("block_number")));
        let mut r = record();
        r.consumed_at = i64::MAX as u64 + 1;
        assert_eq!(PaymentRow::of(&r), Err(RowError::OutOfRange("consumed_at")));
    }

    #[test]
    fn times_past_the_databases_timestamps_are_refused_not_left_to_fail_the_batch() {
        let mut r = record();
        r.settlement.block_timestamp = TIMESTAMP_END;
        assert_eq!(PaymentRow::of(&r), Err(RowError::OutOfRange("block_timestamp")));
        r.settlement.block_timestamp = TIMESTAMP_END - 1;
        assert!(PaymentRow::of(&r).is_ok());
        let mut r = record();
        r.consumed_at = TIMESTAMP_END;
        assert_eq!(PaymentRow::of(&r), Err(RowError::OutOfRange("consumed_at")));
    }
}
