//! A fault injector: a [`Store`] wrapper that loses the answer of the next
//! `put_if_absent` or `compare_and_set` (after forwarding it, or instead of
//! forwarding it) and can fail reads, for unit tests of how the guard and
//! the channel book resolve a lost reply.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use super::{Cas, Claim, LookupKeys, Poll, Put, Store, StoreError, StoreFuture};

/// What happens to the next `put_if_absent`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutFault {
    /// It reaches the store; its answer is lost (a cut connection).
    LoseReply,
    /// It never reaches the store; the connection is cut.
    Swallow,
}

pub struct FaultInjector {
    inner: Arc<dyn Store>,
    next_put: Mutex<Option<PutFault>>,
    next_cas: Mutex<Option<PutFault>>,
    fail_reads: AtomicBool,
}

impl FaultInjector {
    pub fn new(inner: Arc<dyn Store>) -> Self {
        FaultInjector {
            inner,
            next_put: Mutex::new(None),
            next_cas: Mutex::new(None),
            fail_reads: AtomicBool::new(false),
        }
    }

    pub fn fault_next_put(&self, fault: PutFault) {
        *self.next_put.lock() = Some(fault);
    }

    /// The same for the next `compare_and_set`.
    pub fn fault_next_cas(&self, fault: PutFault) {
        *self.next_cas.lock() = Some(fault);
    }

    /// Every read (`get`, `read_back`) fails while set.
    pub fn fail_reads(&self, fail: bool) {
        self.fail_reads.store(fail, Ordering::SeqCst);
    }

    fn cut() -> StoreError {
        StoreError::Connection("cut by the fault injector".into())
    }
}

impl Store for FaultInjector {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn put_if_absent<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Duration,
        deadline: i64,
    ) -> StoreFuture<'a, Put> {
        let fault = self.next_put.lock().take();
        Box::pin(async move {
            match fault {
                None => self.inner.put_if_absent(key, value, ttl, deadline).await,
                Some(PutFault::LoseReply) => {
                    let _ = self.inner.put_if_absent(key, value, ttl, deadline).await;
                    Err(Self::cut())
                }
                Some(PutFault::Swallow) => Err(Self::cut()),
            }
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Vec<u8>>> {
        if self.fail_reads.load(Ordering::SeqCst) {
            return Box::pin(async { Err(Self::cut()) });
        }
        self.inner.get(key)
    }

    fn read_back<'a>(&'a self, key: &'a str, value: &'a [u8], deadline: i64) -> StoreFuture<'a, Option<Vec<u8>>> {
        if self.fail_reads.load(Ordering::SeqCst) {
            return Box::pin(async { Err(Self::cut()) });
        }
        self.inner.read_back(key, value, deadline)
    }

    fn reserve<'a>(&'a self, key: &'a str, ttl: Duration) -> StoreFuture<'a, bool> {
        self.inner.reserve(key, ttl)
    }

    fn release<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()> {
        self.inner.release(key)
    }

    fn count<'a>(&'a self, key: &'a str, ttl: Duration, cap: u64) -> StoreFuture<'a, u64> {
        self.inner.count(key, ttl, cap)
    }

    fn compare_and_set<'a>(
        &'a self,
        key: &'a str,
        expected: Option<&'a [u8]>,
        new: &'a [u8],
        ttl: Duration,
    ) -> StoreFuture<'a, Cas> {
        let fault = self.next_cas.lock().take();
        Box::pin(async move {
            match fault {
                None => self.inner.compare_and_set(key, expected, new, ttl).await,
                Some(PutFault::LoseReply) => {
                    let _ = self.inner.compare_and_set(key, expected, new, ttl).await;
                    Err(Self::cut())
                }
                Some(PutFault::Swallow) => Err(Self::cut()),
            }
        })
    }

    fn set_add<'a>(&'a self, key: &'a str, member: &'a str) -> StoreFuture<'a, ()> {
        self.inner.set_add(key, member)
    }

    fn set_remove<'a>(&'a self, key: &'a str, member: &'a str) -> StoreFuture<'a, ()> {
        self.inner.set_remove(key, member)
    }

    fn set_members<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Vec<String>> {
        self.inner.set_members(key)
    }

    fn outbox(&self) -> bool {
        self.inner.outbox()
    }

    fn outbox_read(&self, max: usize) -> StoreFuture<'_, Vec<super::OutboxEntry>> {
        self.inner.outbox_read(max)
    }

    fn outbox_remove<'a>(&'a self, ids: &'a [String]) -> StoreFuture<'a, ()> {
        self.inner.outbox_remove(ids)
    }

    fn outbox_depth(&self) -> StoreFuture<'_, super::OutboxDepth> {
        self.inner.outbox_depth()
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        self.inner.ping()
    }

    fn lookup_keys(&self, record: &str, lookup: &str) -> LookupKeys {
        self.inner.lookup_keys(record, lookup)
    }

    fn claim<'a>(
        &'a self,
        keys: &'a LookupKeys,
        id: &'a str,
        ttl: Duration,
        want_held: bool,
    ) -> StoreFuture<'a, Claim> {
        self.inner.claim(keys, id, ttl, want_held)
    }

    fn poll<'a>(&'a self, keys: &'a LookupKeys) -> StoreFuture<'a, Poll> {
        self.inner.poll(keys)
    }

    fn publish<'a>(
        &'a self,
        keys: &'a LookupKeys,
        id: &'a str,
        body: &'a [u8],
        hold: Duration,
        ttl: Duration,
    ) -> StoreFuture<'a, ()> {
        self.inner.publish(keys, id, body, hold, ttl)
    }

    fn renew<'a>(&'a self, keys: &'a LookupKeys, id: &'a str, ttl: Duration) -> StoreFuture<'a, bool> {
        self.inner.renew(keys, id, ttl)
    }
}
