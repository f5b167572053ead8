//! One batch of outbox entries into PostgreSQL, in one transaction:
//! payments by `tx_hash`, `ON CONFLICT DO NOTHING` (a batch written again
//! after a crash before its acknowledgement writes nothing twice), and
//! entries that are not records into `outbox_rejects`.

use deadpool_postgres::GenericClient;

use super::LedgerError;
use super::row::PaymentRow;

const INSERT: &str = "INSERT INTO payments (tx_hash, kind, scheme, payer, recipient, asset, amount, memo,
    chain_id, block_number, block_time, resource, route, request_digest, genome_id, consumed_at, instance)
SELECT t.tx_hash, t.kind, t.scheme, t.payer, t.recipient, t.asset, t.amount::numeric, t.memo,
    t.chain_id, t.block_number, to_timestamp(t.block_time), t.resource, t.route, t.request_digest,
    t.genome_id, to_timestamp(t.consumed_at), t.instance
FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
    $8::text[], $9::int8[], $10::int8[], $11::int8[], $12::text[], $13::text[], $14::text[],
    $15::text[], $16::int8[], $17::text[])
    AS t(tx_hash, kind, scheme, payer, recipient, asset, amount, memo, chain_id, block_number,
         block_time, resource, route, request_digest, genome_id, consumed_at, instance)
ON CONFLICT (tx_hash) DO NOTHING
RETURNING id, tx_hash";

/// An outbox entry that is not a record.
pub struct Reject {
    pub key: String,
    pub value: Vec<u8>,
    pub reason: String,
}

/// The rows this batch added (`id`, `tx_hash`); the others were there.
pub async fn write(
    client: &impl GenericClient,
    rows: &[PaymentRow],
    rejects: &[Reject],
) -> Result<Vec<(i64, String)>, LedgerError> {
    let mut added = Vec::new();
    if !rows.is_empty() {
        let col = |f: fn(&PaymentRow) -> String| rows.iter().map(f).collect::<Vec<_>>();
        let opt = |f: fn(&PaymentRow) -> Option<String>| rows.iter().map(f).collect::<Vec<_>>();
        let num = |f: fn(&PaymentRow) -> i64| rows.iter().map(f).collect::<Vec<_>>();
        let (tx_hash, kind, scheme) = (
            col(|r| r.tx_hash.clone()),
            col(|r| r.kind.to_owned()),
            col(|r| r.scheme.to_owned()),
        );
        let (payer, recipient, asset, amount) = (
            col(|r| r.payer.clone()),
            col(|r| r.recipient.clone()),
            col(|r| r.asset.clone()),
            col(|r| r.amount.clone()),
        );
        let memo = opt(|r| r.memo.clone());
        let (chain_id, block_number, block_time) =
            (num(|r| r.chain_id), num(|r| r.block_number), num(|r| r.block_time));
        let (resource, route, digest) = (
            opt(|r| r.resource.clone()),
            col(|r| r.route.clone()),
            opt(|r| r.request_digest.clone()),
        );
        let (genome, consumed_at, instance) = (
            col(|r| r.genome_id.clone()),
            num(|r| r.consumed_at),
            col(|r| r.instance.clone()),
        );
        for r in client
            .query(
                INSERT,
                &[
                    &tx_hash,
                    &kind,
                    &scheme,
                    &payer,
                    &recipient,
                    &asset,
                    &amount,
                    &memo,
                    &chain_id,
                    &block_number,
                    &block_time,
                    &resource,
                    &route,
                    &digest,
                    &genome,
                    &consumed_at,
                    &instance,
                ],
            )
            .await?
        {
            added.push((r.get(0), r.get(1)));
        }
    }
    for r in rejects {
        client
            .execute(
                "INSERT INTO outbox_rejects (entry_key, value, reason) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                &[&r.key, &r.value, &r.reason],
            )
            .await?;
    }
    Ok(added)
}
