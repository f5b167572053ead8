//! A consume whose answer is lost is resolved, not guessed.
//!
//! Every record carries a random writer id (`"writer"` in its JSON; old
//! records without one still decode). When a consume's answer is lost (a
//! cut connection, an I/O error, a timeout after the command may have
//! left), the guard reads the record back once no write bounded by the
//! consume's deadline can land ([`Store::read_back`], on a fresh
//! connection for Redis):
//! - our writer id: it landed, [`Consumed::Inserted`] (a 200);
//! - absent: nothing was consumed, the original error (a 503);
//! - someone else's record: [`Consumed::Existing`];
//! - the read-back fails too: the original error, a 503 that may have
//!   consumed (logged as `store_unresolved`); a retry with the same
//!   `Idempotency-Key` then gets its 200.
//!
//! Under `redis.wait_replicas` a pending copy of our record is withdrawn
//! by the read-back itself: a 503 that consumed nothing.

use std::sync::Arc;
use std::time::Duration;

use settlegate_rules::replay::ReplayRecord;

use super::Consumed;
use crate::store::{Bounded, Store, StoreError};

/// Identifies one consume's write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Writer(String);

impl Writer {
    pub fn fresh() -> Self {
        Writer(crate::store::unique_id())
    }
}

/// The record's JSON with our writer id as its last member.
pub fn encode(record: &ReplayRecord, writer: &Writer) -> Result<Vec<u8>, StoreError> {
    let mut json = serde_json::to_vec(record).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    if json.pop() != Some(b'}') {
        return Err(StoreError::Corrupt("a record that is not a JSON object".into()));
    }
    if json.len() > 1 {
        json.push(b',');
    }
    json.extend_from_slice(format!("\"writer\":\"{}\"}}", writer.0).as_bytes());
    Ok(json)
}

/// A stored record and who wrote it (`None`: written before writer ids).
pub fn decode(raw: &[u8]) -> Result<(ReplayRecord, Option<Writer>), StoreError> {
    #[derive(serde::Deserialize)]
    struct Id {
        #[serde(default)]
        writer: Option<String>,
    }
    // A value we cannot read is not "free": refuse rather than overwrite it.
    let corrupt = |e: serde_json::Error| StoreError::Corrupt(e.to_string());
    let record: ReplayRecord = serde_json::from_slice(raw).map_err(corrupt)?;
    let id: Id = serde_json::from_slice(raw).map_err(corrupt)?;
    Ok((record, id.writer.map(Writer)))
}

/// What a stored record means to the consume by `writer`.
pub fn answer(raw: &[u8], writer: &Writer) -> Result<Consumed, StoreError> {
    let (record, by) = decode(raw)?;
    Ok(match by {
        Some(by) if by == *writer => Consumed::Inserted,
        _ => Consumed::Existing(Arc::new(record)),
    })
}

/// Resolves a consume of `value` under `key` (by `writer`, bounded by
/// `deadline`) whose answer was lost with `lost`.
pub async fn resolve(
    store: &Bounded,
    key: String,
    value: Vec<u8>,
    writer: &Writer,
    deadline: i64,
    lost: StoreError,
) -> Result<Consumed, StoreError> {
    // The read-back first waits out the consume's deadline (and the clock
    // margin), then has a store timeout of its own to read.
    let wait = (deadline + crate::store::CLOCK_MARGIN_MS - crate::store::unix_ms()).max(0) as u64;
    let within = Duration::from_millis(wait) + store.timeout();
    let read = store.run_within(
        within,
        "read_back",
        move |s: Arc<dyn Store>| async move { s.read_back(&key, &value, deadline).await },
        |found| if found.is_some() { "found" } else { "absent" },
    );
    match read.await {
        Ok(Some(raw)) => {
            let answer = answer(&raw, writer)?;
            tracing::warn!(error = %lost, landed = matches!(answer, Consumed::Inserted),
                "a consume's answer was lost; read back");
            Ok(answer)
        }
        Ok(None) => Err(lost),
        Err(e) => {
            tracing::error!(cause = "store_unresolved", error = %lost, read_back = %e,
                "a consume's answer was lost and could not be read back: it may have consumed");
            Err(lost)
        }
    }
}
