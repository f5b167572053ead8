//! Metric handles resolved once per label set. `Family::get_or_create`
//! hashes its labels under a lock on every call, and a label set that owns
//! a `String` must be cloned to be looked up; the request path keeps the
//! handles it resolved instead, keyed by the addresses of its
//! `&'static str` labels, and asks the family only the first time a pair
//! is seen. The family still makes a series on its first sample only, so
//! what `/metrics` shows does not change.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};

use parking_lot::RwLock;

/// A `&'static str` compared and hashed by where it lives (address and
/// length): the same text at two addresses costs a second entry for the
/// same handle, never a wrong one.
#[derive(Clone, Copy)]
struct At(&'static str);

impl PartialEq for At {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self.0, other.0)
    }
}

impl Eq for At {}

impl Hash for At {
    fn hash<H: Hasher>(&self, h: &mut H) {
        h.write_usize(self.0.as_ptr() as usize);
        h.write_usize(self.0.len());
    }
}

/// Multiply-rotate hashing of a few words (the Fx hash): the keys are
/// addresses chosen by the compiler, not by anyone sending requests.
#[derive(Default)]
struct WordHasher(u64);

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl Hasher for WordHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(SEED);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Metric handles (`Counter`, `Histogram`: clones share their value) by a
/// pair of static labels.
pub struct Resolved<M> {
    map: RwLock<HashMap<(At, At), M, BuildHasherDefault<WordHasher>>>,
}

impl<M> Default for Resolved<M> {
    fn default() -> Self {
        Resolved {
            map: RwLock::new(HashMap::default()),
        }
    }
}

impl<M> Resolved<M> {
    /// Calls `f` with the handle for (`a`, `b`), which `resolve` gives the
    /// first time.
    pub fn with<R>(&self, a: &'static str, b: &'static str, resolve: impl FnOnce() -> M, f: impl FnOnce(&M) -> R) -> R {
        let key = (At(a), At(b));
        if let Some(m) = self.map.read().get(&key) {
            return f(m);
        }
        let mut map = self.map.write();
        f(map.entry(key).or_insert_with(resolve))
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::counter::Counter;

    use super::*;

    #[test]
    fn a_pair_is_resolved_once_and_its_handle_kept() {
        let r: Resolved<Counter> = Resolved::default();
        let mut resolved = 0;
        for _ in 0..3 {
            r.with(
                "consume",
                "inserted",
                || {
                    resolved += 1;
                    Counter::default()
                },
                |c| c.inc(),
            );
        }
        assert_eq!(resolved, 1);
        assert_eq!(r.with("consume", "inserted", Counter::default, |c| c.get()), 3);
        assert_eq!(r.with("consume", "existing", Counter::default, |c| c.get()), 0);
    }
}
