//! The payer deny list: the `payer_denials` table, held in memory by each
//! instance so a payment check reads it without a database round trip.
//!
//! Invariants:
//! - tightening only: a payer on the list is refused before anything is
//!   consumed; the list never admits what the rules refuse;
//! - a database that does not answer never loosens the list: the last set
//!   read stays in force until a read succeeds (at boot, before the first
//!   read, the set is empty, and the failure is logged and counted);
//! - a read is applied only if no read that began after it was applied
//!   first: a slow refresh that started before a change here cannot undo
//!   it (each read takes a ticket when it starts).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use alloy_primitives::Address;
use arc_swap::ArcSwap;
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use super::{LedgerError, Pool};

/// The payers refused now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DenySet(HashSet<Address>);

impl DenySet {
    pub fn contains(&self, payer: &Address) -> bool {
        !self.0.is_empty() && self.0.contains(payer)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<Address> for DenySet {
    fn from_iter<I: IntoIterator<Item = Address>>(iter: I) -> Self {
        DenySet(iter.into_iter().collect())
    }
}

/// What the deny list exports (registered by the binary's metrics).
#[derive(Clone, Default)]
pub struct DenyMetrics {
    /// Payers on the list in force here.
    pub entries: Gauge,
    /// Reads of the table that failed (the list in force stays).
    pub refresh_failures: Counter,
}

/// The list in force on this instance; cheap to clone (shared).
#[derive(Clone, Default)]
pub struct DenyList {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    current: ArcSwap<DenySet>,
    /// The next read's ticket, and the ticket of the set in force.
    next: AtomicU64,
    applied: Mutex<u64>,
    metrics: DenyMetrics,
}

impl DenyList {
    /// An empty list (the ledger off: nobody is refused).
    pub fn new(metrics: DenyMetrics) -> Self {
        DenyList {
            inner: Arc::new(Inner {
                metrics,
                ..Inner::default()
            }),
        }
    }

    /// The set in force now (one atomic load; hold it for one decision).
    pub fn snapshot(&self) -> Arc<DenySet> {
        self.inner.current.load_full()
    }

    pub fn contains(&self, payer: &Address) -> bool {
        self.inner.current.load().contains(payer)
    }

    /// A ticket for a read about to start.
    fn ticket(&self) -> u64 {
        self.inner.next.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Puts `set`, read under `ticket`, in force unless a later read is.
    fn apply(&self, ticket: u64, set: DenySet) -> bool {
        let mut applied = self.inner.applied.lock();
        if ticket <= *applied {
            return false;
        }
        *applied = ticket;
        self.inner.metrics.entries.set(set.len() as i64);
        self.inner.current.store(Arc::new(set));
        true
    }

    /// Changes one payer in the set in force, as a read that began now
    /// would find it (after this instance's own committed change, when the
    /// table could not be read back).
    pub fn set_one(&self, payer: Address, denied: bool) {
        // Under the lock: two changes at once each keep the other's, and
        // every read that began before this one is stale once it applies.
        let mut applied = self.inner.applied.lock();
        let ticket = self.ticket();
        let mut set = (*self.snapshot()).clone();
        if denied {
            set.0.insert(payer);
        } else {
            set.0.remove(&payer);
        }
        *applied = ticket;
        self.inner.metrics.entries.set(set.len() as i64);
        self.inner.current.store(Arc::new(set));
    }

    /// Reads the table and puts it in force; on failure the set in force
    /// stays and the failure is counted.
    pub async fn refresh(&self, pool: &Pool, timeout: Duration) -> Result<usize, LedgerError> {
        let ticket = self.ticket();
        let read = tokio::time::timeout(timeout, load(pool))
            .await
            .map_err(|_| LedgerError::Timeout)
            .and_then(|r| r);
        match read {
            Ok(set) => {
                let n = set.len();
                self.apply(ticket, set);
                Ok(n)
            }
            Err(e) => {
                self.inner.metrics.refresh_failures.inc();
                Err(e)
            }
        }
    }

    /// Refreshes every `every` on the current runtime, for as long as the
    /// process runs. The first failure of a run is logged, then one in 60.
    pub fn watch(&self, pool: Pool, every: Duration, timeout: Duration) {
        let list = self.clone();
        tokio::spawn(async move {
            let mut failures: u64 = 0;
            // The boot has just read it: the first refresh is one interval on.
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match list.refresh(&pool, timeout).await {
                    Ok(n) => {
                        if failures > 0 {
                            tracing::info!(entries = n, "the payer deny list is read again");
                        }
                        failures = 0;
                    }
                    Err(e) => {
                        failures += 1;
                        if failures == 1 || failures.is_multiple_of(60) {
                            tracing::error!(cause = e.cause(), error = %e, failures_in_a_row = failures,
                                "cannot read the payer deny list; the last one read stays in force");
                        }
                    }
                }
            }
        });
    }
}

/// Every payer in `payer_denials`.
pub async fn load(pool: &Pool) -> Result<DenySet, LedgerError> {
    let client = pool.get().await?;
    let rows = client.query("SELECT payer FROM payer_denials", &[]).await?;
    let mut set = HashSet::with_capacity(rows.len());
    for r in rows {
        let text: &str = r.get(0);
        // Written only through `read::deny`, lower-case 0x + 40 hex; a row
        // that is not an address (a hand-made insert) is skipped, loudly.
        match text.parse::<Address>() {
            Ok(a) => {
                set.insert(a);
            }
            Err(_) => tracing::warn!(payer = %text, "a payer_denials row is not an address; it refuses nobody"),
        }
    }
    Ok(DenySet(set))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Address = Address::repeat_byte(0xaa);
    const B: Address = Address::repeat_byte(0xbb);

    #[test]
    fn a_read_that_began_before_a_later_one_applied_is_dropped() {
        let list = DenyList::default();
        let slow = list.ticket();
        let fast = list.ticket();
        assert!(list.apply(fast, [A].into_iter().collect()));
        assert!(!list.apply(slow, DenySet::default()), "the older read is stale");
        assert!(list.contains(&A));
        assert!(!list.contains(&B));
    }

    #[test]
    fn a_change_here_is_in_force_at_once_and_survives_an_older_read() {
        let list = DenyList::default();
        let before = list.ticket();
        list.set_one(B, true);
        assert!(list.contains(&B));
        assert!(!list.apply(before, DenySet::default()));
        assert!(list.contains(&B));
        list.set_one(B, false);
        assert!(!list.contains(&B));
        assert_eq!(list.snapshot().len(), 0);
    }
}
