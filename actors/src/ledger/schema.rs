//! The ledger's schema: numbered migrations shipped in the binary, applied
//! only by `settlegate ledger migrate`, in order, each once, under an
//! advisory lock (two operators migrating at once take turns). An applied
//! migration whose text changed since is refused, not re-run.

use deadpool_postgres::GenericClient;
use sha2::{Digest, Sha256};

use super::LedgerError;

/// (version, name, SQL), ascending.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "ledger", include_str!("../../migrations/0001_ledger.sql")),
    (2, "channels", include_str!("../../migrations/0002_channels.sql")),
    (3, "webhooks", include_str!("../../migrations/0003_webhooks.sql")),
];

/// The version the code writes to.
pub fn latest() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

/// Any fixed number: the lock every migration run takes.
const LOCK: i64 = 0x005e_771e_6a7e;

const CREATE: &str = "CREATE TABLE IF NOT EXISTS settlegate_schema (
    version    INT         PRIMARY KEY,
    name       TEXT        NOT NULL,
    sha256     TEXT        NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)";

fn digest(sql: &str) -> String {
    hex::encode(Sha256::digest(sql.as_bytes()))
}

/// Applies every migration the database lacks; the versions applied now.
pub async fn migrate(client: &mut deadpool_postgres::Client) -> Result<Vec<i32>, LedgerError> {
    let txn = client.transaction().await?;
    txn.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK]).await?;
    txn.batch_execute(CREATE).await?;
    let applied: Vec<(i32, String)> = txn
        .query("SELECT version, sha256 FROM settlegate_schema ORDER BY version", &[])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    if let Some((v, _)) = applied.iter().find(|(v, _)| *v > latest()) {
        return Err(LedgerError::SchemaAhead {
            database: *v,
            code: latest(),
        });
    }
    let mut now = Vec::new();
    for (version, name, sql) in MIGRATIONS {
        match applied.iter().find(|(v, _)| v == version) {
            Some((_, sha)) if *sha == digest(sql) => continue,
            Some(_) => return Err(LedgerError::SchemaChanged(*version)),
            None => {
                txn.batch_execute(sql).await?;
                txn.execute(
                    "INSERT INTO settlegate_schema (version, name, sha256) VALUES ($1, $2, $3)",
                    &[version, name, &digest(sql)],
                )
                .await?;
                now.push(*version);
            }
        }
    }
    txn.commit().await?;
    Ok(now)
}

/// The newest version applied (`None`: not migrated at all).
pub async fn current(client: &impl GenericClient) -> Result<Option<i32>, LedgerError> {
    let exists: bool = client
        .query_one("SELECT to_regclass('settlegate_schema') IS NOT NULL", &[])
        .await?
        .get(0);
    if !exists {
        return Ok(None);
    }
    Ok(client
        .query_one("SELECT max(version) FROM settlegate_schema", &[])
        .await?
        .get(0))
}

/// Refuses to write unless the schema is exactly the code's.
pub async fn check(client: &impl GenericClient) -> Result<(), LedgerError> {
    match current(client).await? {
        Some(v) if v == latest() => Ok(()),
        Some(v) if v > latest() => Err(LedgerError::SchemaAhead {
            database: v,
            code: latest(),
        }),
        found => Err(LedgerError::SchemaBehind {
            database: found.unwrap_or(0),
            code: latest(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_in_order_from_one() {
        for (i, (v, name, sql)) in MIGRATIONS.iter().enumerate() {
            assert_eq!(*v, i as i32 + 1);
            assert!(!name.is_empty() && !sql.trim().is_empty());
        }
        assert_eq!(latest(), MIGRATIONS.len() as i32);
    }
}
