//! Reconciliation: each ledger row's payment re-read from the chain now,
//! and a finding for each row that no longer matches what was booked (a
//! reorganised block, a receipt gone). Reads only; changes nothing.

use alloy_primitives::{Address, U256};
use settlegate_rules::settlement::{ChainFacts, movements};

/// A booked payment, as reconciliation reads it back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Booked {
    pub tx_hash: String,
    pub payer: Address,
    pub recipient: Address,
    pub asset: Address,
    pub amount: U256,
    pub block_number: u64,
    pub chain_id: u64,
}

/// What the chain says of a booked payment now.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "finding", rename_all = "snake_case")]
pub enum Finding {
    /// Mined in the booked block, successful, with the booked transfer.
    Matches,
    /// The node no longer knows the transaction (a reorganisation dropped
    /// it, or the node is not the chain it was booked on).
    ReceiptGone,
    /// The transaction is mined but failed.
    Reverted { block_number: Option<u64> },
    /// Mined in another block than the one booked (re-included after a
    /// reorganisation).
    BlockMoved { booked: u64, now: u64 },
    /// Mined, successful, in its block, but without a transfer of at least
    /// the booked amount of the booked token from the payer to the
    /// recipient.
    TransferMissing,
}

impl Finding {
    pub fn matches(&self) -> bool {
        *self == Finding::Matches
    }
}

/// A page of charges consumed in `[from, to)` (unix seconds), after row
/// `after` (by id), at most `limit`: `(id, row)`.
pub async fn page(
    pool: &super::Pool,
    from: i64,
    to: i64,
    after: i64,
    limit: i64,
) -> Result<Vec<(i64, Booked)>, super::LedgerError> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT id, tx_hash, payer, recipient, asset, amount::text, block_number, chain_id FROM payments
             WHERE kind = 'charge' AND consumed_at >= to_timestamp($1::int8::float8)
               AND consumed_at < to_timestamp($2::int8::float8) AND id > $3
             ORDER BY id LIMIT $4",
            &[&from, &to, &after, &limit],
        )
        .await?;
    let bad = |what: &str| super::LedgerError::Pool(format!("a ledger row with an unreadable {what}"));
    rows.iter()
        .map(|r| {
            let text = |i: usize| r.get::<_, String>(i);
            Ok((
                r.get::<_, i64>(0),
                Booked {
                    tx_hash: text(1),
                    payer: text(2).parse().map_err(|_| bad("payer"))?,
                    recipient: text(3).parse().map_err(|_| bad("recipient"))?,
                    asset: text(4).parse().map_err(|_| bad("asset"))?,
                    amount: text(5).parse().map_err(|_| bad("amount"))?,
                    block_number: u64::try_from(r.get::<_, i64>(6)).map_err(|_| bad("block"))?,
                    chain_id: u64::try_from(r.get::<_, i64>(7)).map_err(|_| bad("chain id"))?,
                },
            ))
        })
        .collect()
}

/// The finding for `row` on `facts` (a fresh lookup of its hash).
pub fn judge(row: &Booked, facts: &ChainFacts) -> Finding {
    let Some(receipt) = &facts.receipt else {
        return Finding::ReceiptGone;
    };
    let Some(block) = receipt.block_number.map(|b| b.to::<u64>()) else {
        // Known but not mined (back in the pool after a reorganisation).
        return Finding::ReceiptGone;
    };
    if receipt.status.map(|s| s.to::<u64>()) != Some(1) {
        return Finding::Reverted {
            block_number: Some(block),
        };
    }
    if block != row.block_number {
        return Finding::BlockMoved {
            booked: row.block_number,
            now: block,
        };
    }
    let paid = movements(&receipt.logs)
        .iter()
        .filter(|m| m.token == row.asset && m.from == row.payer && m.to == row.recipient)
        .fold(U256::ZERO, |sum, m| sum.saturating_add(m.amount));
    if paid < row.amount {
        return Finding::TransferMissing;
    }
    Finding::Matches
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::{B256, Bytes, U64};
    use settlegate_rules::settlement::{Log, Receipt, TRANSFER_TOPIC};

    const PAYER: Address = Address::repeat_byte(0x11);
    const PAYEE: Address = Address::repeat_byte(0x22);
    const TOKEN: Address = Address::repeat_byte(0x20);

    fn topic(a: Address) -> B256 {
        let mut t = [0u8; 32];
        t[12..].copy_from_slice(a.as_slice());
        B256::from(t)
    }

    fn transfer(token: Address, from: Address, to: Address, amount: u64) -> Log {
        Log {
            address: token,
            topics: vec![TRANSFER_TOPIC, topic(from), topic(to)],
            data: Bytes::from(U256::from(amount).to_be_bytes::<32>().to_vec()),
            log_index: None,
            removed: None,
            block_timestamp: None,
        }
    }

    fn facts(status: u64, block: u64, logs: Vec<Log>) -> ChainFacts {
        ChainFacts {
            receipt: Some(Receipt {
                transaction_hash: B256::repeat_byte(0xab),
                status: Some(U64::from(status)),
                block_number: Some(U64::from(block)),
                block_hash: Some(B256::repeat_byte(0xbb)),
                from: PAYER,
                logs,
                block_timestamp: Some(1),
            }),
            block: None,
            head: None,
        }
    }

    fn row() -> Booked {
        Booked {
            tx_hash: format!("0x{}", "ab".repeat(32)),
            payer: PAYER,
            recipient: PAYEE,
            asset: TOKEN,
            amount: U256::from(1_000_000u64),
            block_number: 7,
            chain_id: 42431,
        }
    }

    #[test]
    fn a_payment_as_booked_matches() {
        assert_eq!(
            judge(&row(), &facts(1, 7, vec![transfer(TOKEN, PAYER, PAYEE, 1_000_000)])),
            Finding::Matches
        );
        // Several transfers that add up (allow_summed_transfers) still match.
        let two = vec![
            transfer(TOKEN, PAYER, PAYEE, 400_000),
            transfer(TOKEN, PAYER, PAYEE, 600_000),
        ];
        assert!(judge(&row(), &facts(1, 7, two)).matches());
    }

    #[test]
    fn every_way_the_chain_can_disagree_is_named() {
        assert_eq!(judge(&row(), &ChainFacts::default()), Finding::ReceiptGone);
        let mut pending = facts(1, 7, vec![]);
        pending.receipt.as_mut().unwrap().block_number = None;
        assert_eq!(judge(&row(), &pending), Finding::ReceiptGone);
        assert_eq!(
            judge(&row(), &facts(0, 7, vec![])),
            Finding::Reverted { block_number: Some(7) }
        );
        assert_eq!(
            judge(&row(), &facts(1, 9, vec![transfer(TOKEN, PAYER, PAYEE, 1_000_000)])),
            Finding::BlockMoved { booked: 7, now: 9 }
        );
        for wrong in [
            transfer(TOKEN, PAYER, PAYEE, 999_999),
            transfer(Address::repeat_byte(0x21), PAYER, PAYEE, 1_000_000),
            transfer(TOKEN, Address::repeat_byte(0x33), PAYEE, 1_000_000),
            transfer(TOKEN, PAYER, Address::repeat_byte(0x44), 1_000_000),
        ] {
            assert_eq!(judge(&row(), &facts(1, 7, vec![wrong])), Finding::TransferMissing);
        }
    }
}
