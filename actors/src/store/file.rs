//! The single-instance store: values in a redb file, durable on commit
//! (fsync), so a restart, even a `kill -9`, never forgets a consumed
//! payment. redb serialises write transactions, which makes every write
//! operation atomic. Reservations are kept in process: with one instance
//! there is nobody else to exclude, and a restart ends every broadcast.
//! With the ledger's outbox, a record and its outbox entry are written in
//! the same transaction: both are on disk, or neither.
//!
//! Records written before this layout (table `replay_records_v2`, keyed by
//! the bare hash, expiring at their JSON's `expires_at`) are still read.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata};

use super::{
    Cas, OpenError, OutboxDepth, OutboxEntry, Put, Store, StoreError, StoreFuture, is_channel_key, is_record_key,
    unix_ms,
};

/// key → (expires, unix ms; value).
const ENTRIES: redb::TableDefinition<&str, (u64, &[u8])> = redb::TableDefinition::new("entries_v1");
/// set key, member → (): the sets (indexes), kept until removed.
const SETS: redb::TableDefinition<(&str, &str), ()> = redb::TableDefinition::new("sets_v1");
/// id → (appended at, unix ms; record key; record value): the outbox.
const OUTBOX: redb::TableDefinition<u64, (u64, &str, &[u8])> = redb::TableDefinition::new("outbox_v1");
const LEGACY_RECORDS: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("replay_records_v2");

/// Beyond this many entries, expired ones are dropped on the next write.
const SWEEP_AT: u64 = 16_384;
/// Reservations kept at most (expired ones go first).
const MAX_RESERVED: usize = 16_384;

pub struct FileStore {
    db: Arc<redb::Database>,
    reserved: Mutex<HashMap<String, Instant>>,
    /// The outbox's bound; `None`: no outbox.
    outbox: Option<u64>,
}

impl FileStore {
    pub fn open(path: &Path) -> Result<Self, OpenError> {
        let fail = |e: &dyn std::fmt::Display| OpenError::File {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        let db = redb::Database::create(path).map_err(|e| fail(&e))?;
        let txn = db.begin_write().map_err(|e| fail(&e))?;
        txn.open_table(ENTRIES).map_err(|e| fail(&e))?;
        txn.open_table(LEGACY_RECORDS).map_err(|e| fail(&e))?;
        txn.open_table(SETS).map_err(|e| fail(&e))?;
        txn.open_table(OUTBOX).map_err(|e| fail(&e))?;
        txn.commit().map_err(|e| fail(&e))?;
        Ok(FileStore {
            db: Arc::new(db),
            reserved: Mutex::new(HashMap::new()),
            outbox: None,
        })
    }

    /// Keeps the ledger's outbox, at most `max` entries.
    pub fn with_outbox(mut self, max: u64) -> Self {
        self.outbox = Some(max);
        self
    }

    fn blocking<'a, T: Send + 'static>(
        &self,
        f: impl FnOnce(&redb::Database) -> Result<T, StoreError> + Send + 'static,
    ) -> StoreFuture<'a, T> {
        let db = self.db.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || f(&db))
                .await
                .unwrap_or_else(|e| Err(StoreError::Connection(format!("store task failed: {e}"))))
        })
    }
}

fn local(e: impl std::fmt::Display) -> StoreError {
    StoreError::Connection(format!("local store: {e}"))
}

fn now_ms() -> u64 {
    unix_ms().max(0) as u64
}

/// The live value of `key` in a transaction's tables.
fn live(
    entries: &impl ReadableTable<&'static str, (u64, &'static [u8])>,
    legacy: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<Vec<u8>>, StoreError> {
    let now = now_ms();
    if let Some(v) = entries.get(key).map_err(local)? {
        let (expires, value) = v.value();
        return Ok((expires > now).then(|| value.to_vec()));
    }
    let Some(hash) = key.strip_prefix("replay:") else {
        return Ok(None);
    };
    let Some(raw) = legacy.get(hash).map_err(local)? else {
        return Ok(None);
    };
    #[derive(serde::Deserialize)]
    struct Expiry {
        expires_at: u64,
    }
    let value = raw.value().to_vec();
    // Unreadable is corrupt, never free.
    let expiry: Expiry = serde_json::from_slice(&value).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok((expiry.expires_at.saturating_mul(1000) > now).then_some(value))
}

/// Runs `f` in one write transaction with both tables, and commits.
fn write<T>(
    db: &redb::Database,
    f: impl FnOnce(&mut redb::Table<&str, (u64, &[u8])>, &redb::ReadOnlyTable<&str, &[u8]>) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    write_txn(db, |entries, legacy, _| f(entries, legacy))
}

/// [`write`], with the transaction (for the outbox).
fn write_txn<T>(
    db: &redb::Database,
    f: impl FnOnce(
        &mut redb::Table<&str, (u64, &[u8])>,
        &redb::ReadOnlyTable<&str, &[u8]>,
        &redb::WriteTransaction,
    ) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let legacy = db
        .begin_read()
        .map_err(local)?
        .open_table(LEGACY_RECORDS)
        .map_err(local)?;
    let txn = db.begin_write().map_err(local)?;
    let out = {
        let mut entries = txn.open_table(ENTRIES).map_err(local)?;
        if entries.len().map_err(local)? >= SWEEP_AT {
            let now = now_ms();
            entries.retain(|_, (expires, _)| expires > now).map_err(local)?;
        }
        f(&mut entries, &legacy, &txn)?
    };
    // redb commits durably (fsync) by default: a 200 is only sent after
    // its record is on disk.
    txn.commit().map_err(local)?;
    Ok(out)
}

/// Appends `key`'s new `value` to the outbox in `txn`, unless it holds
/// `max` entries already.
fn append(txn: &redb::WriteTransaction, max: u64, key: &str, value: &[u8]) -> Result<(), StoreError> {
    let mut outbox = txn.open_table(OUTBOX).map_err(local)?;
    if outbox.len().map_err(local)? >= max {
        return Err(StoreError::OutboxFull(max));
    }
    let id = outbox.last().map_err(local)?.map_or(0, |(id, _)| id.value() + 1);
    outbox.insert(id, (now_ms(), key, value)).map_err(local)?;
    Ok(())
}

fn expiry(ttl: Duration) -> u64 {
    now_ms().saturating_add(super::ttl_ms(ttl))
}

impl Store for FileStore {
    fn name(&self) -> &'static str {
        "local"
    }

    fn system(&self) -> &'static str {
        "redb"
    }

    fn put_if_absent<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Duration,
        deadline: i64,
    ) -> StoreFuture<'a, Put> {
        let (key, value) = (key.to_owned(), value.to_vec());
        let logged = self.outbox.filter(|_| is_record_key(&key));
        self.blocking(move |db| {
            write_txn(db, |entries, legacy, txn| {
                if let Some(v) = live(entries, legacy, &key)? {
                    return Ok(Put::Existing(v));
                }
                if unix_ms() > deadline {
                    return Err(StoreError::Timeout);
                }
                if let Some(max) = logged {
                    append(txn, max, &key, &value)?;
                }
                entries
                    .insert(key.as_str(), (expiry(ttl), value.as_slice()))
                    .map_err(local)?;
                Ok(Put::Inserted)
            })
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Vec<u8>>> {
        let key = key.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(local)?;
            let entries = txn.open_table(ENTRIES).map_err(local)?;
            let legacy = txn.open_table(LEGACY_RECORDS).map_err(local)?;
            live(&entries, &legacy, &key)
        })
    }

    fn reserve<'a>(&'a self, key: &'a str, ttl: Duration) -> StoreFuture<'a, bool> {
        let now = Instant::now();
        let mut reserved = self.reserved.lock();
        if reserved.len() >= MAX_RESERVED {
            reserved.retain(|_, until| *until > now);
        }
        let free = reserved.get(key).is_none_or(|until| *until <= now);
        if free {
            reserved.insert(key.to_owned(), now + ttl);
        }
        Box::pin(std::future::ready(Ok(free)))
    }

    fn release<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()> {
        self.reserved.lock().remove(key);
        Box::pin(std::future::ready(Ok(())))
    }

    fn count<'a>(&'a self, key: &'a str, ttl: Duration, cap: u64) -> StoreFuture<'a, u64> {
        let key = key.to_owned();
        self.blocking(move |db| {
            write(db, |entries, legacy| {
                let (n, expires) = match live(entries, legacy, &key)? {
                    None => (0, expiry(ttl)),
                    Some(v) => {
                        let n = std::str::from_utf8(&v)
                            .ok()
                            .and_then(|t| t.parse::<u64>().ok())
                            .ok_or_else(|| StoreError::Corrupt("a counter that is not a number".into()))?;
                        let expires = entries.get(key.as_str()).map_err(local)?.map_or(0, |e| e.value().0);
                        (n, expires)
                    }
                };
                if n >= cap {
                    return Ok(n);
                }
                let text = (n + 1).to_string();
                entries
                    .insert(key.as_str(), (expires, text.as_bytes()))
                    .map_err(local)?;
                Ok(n + 1)
            })
        })
    }

    fn compare_and_set<'a>(
        &'a self,
        key: &'a str,
        expected: Option<&'a [u8]>,
        new: &'a [u8],
        ttl: Duration,
    ) -> StoreFuture<'a, Cas> {
        let (key, expected, new) = (key.to_owned(), expected.map(<[u8]>::to_vec), new.to_vec());
        let logged = self.outbox.filter(|_| is_channel_key(&key));
        self.blocking(move |db| {
            write_txn(db, |entries, legacy, txn| {
                let current = live(entries, legacy, &key)?;
                if current != expected {
                    return Ok(Cas::Current(current));
                }
                if let Some(max) = logged {
                    append(txn, max, &key, &new)?;
                }
                entries
                    .insert(key.as_str(), (expiry(ttl), new.as_slice()))
                    .map_err(local)?;
                Ok(Cas::Set)
            })
        })
    }

    fn set_add<'a>(&'a self, key: &'a str, member: &'a str) -> StoreFuture<'a, ()> {
        let (key, member) = (key.to_owned(), member.to_owned());
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(local)?;
            txn.open_table(SETS)
                .map_err(local)?
                .insert((key.as_str(), member.as_str()), ())
                .map_err(local)?;
            txn.commit().map_err(local)
        })
    }

    fn set_remove<'a>(&'a self, key: &'a str, member: &'a str) -> StoreFuture<'a, ()> {
        let (key, member) = (key.to_owned(), member.to_owned());
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(local)?;
            txn.open_table(SETS)
                .map_err(local)?
                .remove((key.as_str(), member.as_str()))
                .map_err(local)?;
            txn.commit().map_err(local)
        })
    }

    fn set_members<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Vec<String>> {
        let key = key.to_owned();
        self.blocking(move |db| {
            let table = db.begin_read().map_err(local)?.open_table(SETS).map_err(local)?;
            let mut out = Vec::new();
            for row in table.range((key.as_str(), "")..).map_err(local)? {
                let (k, _) = row.map_err(local)?;
                let (set, member) = k.value();
                if set != key {
                    break;
                }
                out.push(member.to_owned());
            }
            Ok(out)
        })
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn outbox(&self) -> bool {
        self.outbox.is_some()
    }

    fn outbox_read(&self, max: usize) -> StoreFuture<'_, Vec<OutboxEntry>> {
        self.blocking(move |db| {
            let table = db.begin_read().map_err(local)?.open_table(OUTBOX).map_err(local)?;
            let mut out = Vec::new();
            for row in table.iter().map_err(local)?.take(max) {
                let (id, v) = row.map_err(local)?;
                let (_, key, value) = v.value();
                out.push(OutboxEntry {
                    id: id.value().to_string(),
                    key: key.to_owned(),
                    value: value.to_vec(),
                });
            }
            Ok(out)
        })
    }

    fn outbox_remove<'a>(&'a self, ids: &'a [String]) -> StoreFuture<'a, ()> {
        let ids: Result<Vec<u64>, _> = ids.iter().map(|i| i.parse::<u64>()).collect();
        let Ok(ids) = ids else {
            return Box::pin(std::future::ready(Err(StoreError::Corrupt(
                "an outbox id that is not ours".into(),
            ))));
        };
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(local)?;
            {
                let mut table = txn.open_table(OUTBOX).map_err(local)?;
                for id in ids {
                    table.remove(id).map_err(local)?;
                }
            }
            txn.commit().map_err(local)
        })
    }

    fn outbox_depth(&self) -> StoreFuture<'_, OutboxDepth> {
        self.blocking(move |db| {
            let table = db.begin_read().map_err(local)?.open_table(OUTBOX).map_err(local)?;
            let oldest = table.first().map_err(local)?.map(|(_, v)| v.value().0);
            Ok(OutboxDepth {
                entries: table.len().map_err(local)?,
                oldest_age: oldest.map(|at| Duration::from_millis(now_ms().saturating_sub(at))),
            })
        })
    }
}
