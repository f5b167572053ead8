//! [`ConsumedCache`]: what this process knows is consumed, read by
//! handlers without a message or a network hop. It only ever says
//! "consumed", which is permanent until the record expires; a miss falls
//! through to the store, so it can never let a second 200 through.

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use settlegate_rules::credential::TxHash;
use settlegate_rules::replay::ReplayRecord;

use crate::store::unix_now;

/// A bounded in-process map of consumed hashes to their records. Cheap to
/// clone. Entries leave at their record's expiry or when the cache is full
/// (then the store answers instead).
#[derive(Clone)]
pub struct ConsumedCache {
    inner: Option<Arc<quick_cache::sync::Cache<TxHash, Arc<ReplayRecord>>>>,
    hits: Counter,
}

impl ConsumedCache {
    /// `capacity` 0 turns the cache off.
    pub fn new(capacity: usize, hits: Counter) -> Self {
        ConsumedCache {
            inner: (capacity > 0).then(|| Arc::new(quick_cache::sync::Cache::new(capacity))),
            hits,
        }
    }

    pub fn get(&self, hash: &TxHash) -> Option<Arc<ReplayRecord>> {
        let cache = self.inner.as_ref()?;
        let record = cache.get(hash)?;
        if record.expires_at <= unix_now() {
            cache.remove(hash);
            return None;
        }
        self.hits.inc();
        Some(record)
    }

    /// Only a record the store gave (never one still waiting for its
    /// replicas).
    pub fn insert(&self, hash: TxHash, record: Arc<ReplayRecord>) {
        if let Some(cache) = &self.inner
            && record.expires_at > unix_now()
        {
            cache.insert(hash, record);
        }
    }

    pub fn len(&self) -> usize {
        self.inner.as_ref().map_or(0, |c| c.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
