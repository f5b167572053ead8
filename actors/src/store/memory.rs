//! In-memory store: one process, for unit tests and single-process
//! development. Every operation takes one lock, so each is atomic; values
//! expire by their ttl; at most `capacity` live keys, beyond which a write
//! fails closed (`Saturated`) rather than grow or evict a live record.
//! With an outbox, a record's insert and its outbox entry share the lock.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::{
    Cas, Claim, LookupKeys, OutboxDepth, OutboxEntry, Poll, Put, Store, StoreError, StoreFuture, is_channel_key,
    is_record_key, unix_ms,
};

struct Entry {
    value: Vec<u8>,
    expires: Instant,
}

/// A published lookup result: held for new claims until `hold`.
struct Published {
    body: Vec<u8>,
    hold: Instant,
    expires: Instant,
}

#[derive(Default)]
struct State {
    entries: HashMap<String, Entry>,
    published: HashMap<String, Published>,
    sets: HashMap<String, HashSet<String>>,
    /// (id, appended at, key, value), oldest first.
    outbox: VecDeque<(u64, Instant, String, Vec<u8>)>,
    next_id: u64,
}

pub struct MemoryStore {
    state: Mutex<State>,
    capacity: usize,
    /// The outbox's bound; `None`: no outbox.
    outbox: Option<u64>,
}

impl MemoryStore {
    pub fn new(capacity: usize) -> Self {
        MemoryStore {
            state: Mutex::new(State::default()),
            capacity,
            outbox: None,
        }
    }

    /// Keeps the ledger's outbox, at most `max` entries.
    pub fn with_outbox(mut self, max: u64) -> Self {
        self.outbox = Some(max);
        self
    }
}

impl State {
    fn live(&mut self, key: &str, now: Instant) -> Option<&Vec<u8>> {
        if self.entries.get(key).is_some_and(|e| e.expires <= now) {
            self.entries.remove(key);
        }
        self.entries.get(key).map(|e| &e.value)
    }

    fn set(
        &mut self,
        key: &str,
        value: Vec<u8>,
        ttl: Duration,
        now: Instant,
        capacity: usize,
    ) -> Result<(), StoreError> {
        if self.entries.len() >= capacity && !self.entries.contains_key(key) {
            self.entries.retain(|_, e| e.expires > now);
            self.published.retain(|_, p| p.expires > now);
            if self.entries.len() >= capacity {
                return Err(StoreError::Saturated(capacity));
            }
        }
        self.entries.insert(
            key.to_owned(),
            Entry {
                value,
                expires: now + ttl.max(Duration::from_millis(1)),
            },
        );
        Ok(())
    }
}

impl State {
    /// [`State::set`], and with an outbox bound (`logged`) the value's
    /// outbox entry too, under the same lock: both or, at the bound,
    /// neither.
    fn set_logged(
        &mut self,
        key: &str,
        value: &[u8],
        ttl: Duration,
        now: Instant,
        capacity: usize,
        logged: Option<u64>,
    ) -> Result<(), StoreError> {
        if let Some(max) = logged
            && self.outbox.len() as u64 >= max
        {
            return Err(StoreError::OutboxFull(max));
        }
        self.set(key, value.to_vec(), ttl, now, capacity)?;
        if logged.is_some() {
            let id = self.next_id;
            self.next_id += 1;
            self.outbox.push_back((id, now, key.to_owned(), value.to_vec()));
        }
        Ok(())
    }
}

fn ready<'a, T: Send + 'a>(r: Result<T, StoreError>) -> StoreFuture<'a, T> {
    Box::pin(std::future::ready(r))
}

impl Store for MemoryStore {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn put_if_absent<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Duration,
        deadline: i64,
    ) -> StoreFuture<'a, Put> {
        let now = Instant::now();
        let mut s = self.state.lock();
        if unix_ms() > deadline {
            return ready(Err(StoreError::Timeout));
        }
        if let Some(v) = s.live(key, now) {
            return ready(Ok(Put::Existing(v.clone())));
        }
        let logged = self.outbox.filter(|_| is_record_key(key));
        ready(
            s.set_logged(key, value, ttl, now, self.capacity, logged)
                .map(|()| Put::Inserted),
        )
    }

    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Vec<u8>>> {
        ready(Ok(self.state.lock().live(key, Instant::now()).cloned()))
    }

    fn reserve<'a>(&'a self, key: &'a str, ttl: Duration) -> StoreFuture<'a, bool> {
        let now = Instant::now();
        let mut s = self.state.lock();
        if s.live(key, now).is_some() {
            return ready(Ok(false));
        }
        ready(s.set(key, b"1".to_vec(), ttl, now, self.capacity).map(|()| true))
    }

    fn release<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()> {
        self.state.lock().entries.remove(key);
        ready(Ok(()))
    }

    fn count<'a>(&'a self, key: &'a str, ttl: Duration, cap: u64) -> StoreFuture<'a, u64> {
        let now = Instant::now();
        let mut s = self.state.lock();
        let n = match s.live(key, now) {
            None => 0,
            Some(v) => match std::str::from_utf8(v).ok().and_then(|t| t.parse::<u64>().ok()) {
                Some(n) => n,
                None => return ready(Err(StoreError::Corrupt("a counter that is not a number".into()))),
            },
        };
        if n >= cap {
            return ready(Ok(n));
        }
        if n == 0 {
            return ready(s.set(key, b"1".to_vec(), ttl, now, self.capacity).map(|()| 1));
        }
        if let Some(e) = s.entries.get_mut(key) {
            e.value = (n + 1).to_string().into_bytes();
        }
        ready(Ok(n + 1))
    }

    fn compare_and_set<'a>(
        &'a self,
        key: &'a str,
        expected: Option<&'a [u8]>,
        new: &'a [u8],
        ttl: Duration,
    ) -> StoreFuture<'a, Cas> {
        let now = Instant::now();
        let mut s = self.state.lock();
        let current = s.live(key, now).cloned();
        if current.as_deref() != expected {
            return ready(Ok(Cas::Current(current)));
        }
        let logged = self.outbox.filter(|_| is_channel_key(key));
        ready(
            s.set_logged(key, new, ttl, now, self.capacity, logged)
                .map(|()| Cas::Set),
        )
    }

    fn set_add<'a>(&'a self, key: &'a str, member: &'a str) -> StoreFuture<'a, ()> {
        let mut s = self.state.lock();
        let members: usize = s.sets.values().map(HashSet::len).sum();
        if members >= self.capacity && !s.sets.get(key).is_some_and(|m| m.contains(member)) {
            return ready(Err(StoreError::Saturated(self.capacity)));
        }
        s.sets.entry(key.to_owned()).or_default().insert(member.to_owned());
        ready(Ok(()))
    }

    fn set_remove<'a>(&'a self, key: &'a str, member: &'a str) -> StoreFuture<'a, ()> {
        let mut s = self.state.lock();
        if let Some(m) = s.sets.get_mut(key) {
            m.remove(member);
            if m.is_empty() {
                s.sets.remove(key);
            }
        }
        ready(Ok(()))
    }

    fn set_members<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Vec<String>> {
        let s = self.state.lock();
        ready(Ok(s
            .sets
            .get(key)
            .map(|m| m.iter().cloned().collect())
            .unwrap_or_default()))
    }

    fn outbox(&self) -> bool {
        self.outbox.is_some()
    }

    fn outbox_read(&self, max: usize) -> StoreFuture<'_, Vec<OutboxEntry>> {
        let s = self.state.lock();
        ready(Ok(s
            .outbox
            .iter()
            .take(max)
            .map(|(id, _, key, value)| OutboxEntry {
                id: id.to_string(),
                key: key.clone(),
                value: value.clone(),
            })
            .collect()))
    }

    fn outbox_remove<'a>(&'a self, ids: &'a [String]) -> StoreFuture<'a, ()> {
        let ids: HashSet<&str> = ids.iter().map(String::as_str).collect();
        self.state
            .lock()
            .outbox
            .retain(|(id, ..)| !ids.contains(id.to_string().as_str()));
        ready(Ok(()))
    }

    fn outbox_depth(&self) -> StoreFuture<'_, OutboxDepth> {
        let s = self.state.lock();
        ready(Ok(OutboxDepth {
            entries: s.outbox.len() as u64,
            oldest_age: s.outbox.front().map(|(_, at, ..)| at.elapsed()),
        }))
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        ready(Ok(()))
    }

    fn claim<'a>(
        &'a self,
        keys: &'a LookupKeys,
        id: &'a str,
        ttl: Duration,
        want_held: bool,
    ) -> StoreFuture<'a, Claim> {
        let now = Instant::now();
        let mut s = self.state.lock();
        if let Some(record) = s.live(&keys.record, now) {
            return ready(Ok(Claim::Consumed(record.clone())));
        }
        if want_held
            && let Some(p) = s.published.get(&keys.result)
            && p.expires > now
            && p.hold > now
        {
            return ready(Ok(Claim::Held(p.body.clone(), p.hold - now)));
        }
        if let Some(holder) = s.live(&keys.claim, now) {
            return ready(Ok(Claim::Wait(String::from_utf8_lossy(holder).into_owned())));
        }
        ready(
            s.set(&keys.claim, id.as_bytes().to_vec(), ttl, now, self.capacity)
                .map(|()| Claim::Claimed),
        )
    }

    fn poll<'a>(&'a self, keys: &'a LookupKeys) -> StoreFuture<'a, Poll> {
        let now = Instant::now();
        let mut s = self.state.lock();
        let claim = s
            .live(&keys.claim, now)
            .map(|v| String::from_utf8_lossy(v).into_owned());
        let consumed = s.live(&keys.record, now).cloned();
        let published = s
            .published
            .get(&keys.result)
            .filter(|p| p.expires > now)
            .map(|p| p.body.clone());
        ready(Ok(Poll {
            published,
            claim,
            consumed,
        }))
    }

    fn publish<'a>(
        &'a self,
        keys: &'a LookupKeys,
        id: &'a str,
        body: &'a [u8],
        hold: Duration,
        ttl: Duration,
    ) -> StoreFuture<'a, ()> {
        let now = Instant::now();
        let mut s = self.state.lock();
        if s.live(&keys.claim, now).map(Vec::as_slice) != Some(id.as_bytes()) {
            return ready(Ok(()));
        }
        s.entries.remove(&keys.claim);
        s.published.insert(
            keys.result.clone(),
            Published {
                body: body.to_vec(),
                hold: now + hold,
                expires: now + ttl.max(Duration::from_millis(1)),
            },
        );
        ready(Ok(()))
    }

    fn renew<'a>(&'a self, keys: &'a LookupKeys, id: &'a str, ttl: Duration) -> StoreFuture<'a, bool> {
        let now = Instant::now();
        let mut s = self.state.lock();
        if s.live(&keys.claim, now).map(Vec::as_slice) != Some(id.as_bytes()) {
            return ready(Ok(false));
        }
        if let Some(e) = s.entries.get_mut(&keys.claim) {
            e.expires = now + ttl.max(Duration::from_millis(1));
        }
        ready(Ok(true))
    }
}
