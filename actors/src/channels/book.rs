//! [`ChannelBook`]: the state of every payment channel, kept in the
//! [`Store`](crate::store::Store) every instance shares, and changed only
//! by compare-and-set.
//!
//! Invariants:
//! - a change is written with `compare_and_set` against the exact bytes it
//!   was decided on, so two instances (or two tasks) can never both apply
//!   a change to the same state: the loser decides again on what the
//!   winner wrote. Acceptance and deduction are serialised per channel
//!   across every instance without a lock that could be left held;
//! - a decision to *keep* the state (a refusal) is final only when it was
//!   made on bytes just read from the store, never on this process's copy
//!   alone, which another instance may have moved on;
//! - a write whose answer was lost (timeout, broken connection) may have
//!   landed: the local copy is dropped and the caller answers 503. The
//!   request is not served, so a deduction can at worst be charged without
//!   a response (the client retries with the same voucher), never serve
//!   two requests;
//! - a channel enters the index the settler scans *before* its first
//!   state is written, so no state exists that the settler cannot find.
//!
//! Within one process the tasks of one channel queue on a local mutex that
//! also holds the last bytes this process read or wrote: the common case
//! (one instance serving a channel) costs one round trip per request, the
//! compare-and-set itself.

use std::sync::Arc;
use std::time::Duration;

use alloy_primitives::Address;
use settlegate_rules::session::ChannelId;

use crate::store::{Bounded, Cas, StoreError};

/// The key of a channel's state (`channel:<id>`, one key, so one hash slot
/// on a Cluster).
pub fn state_key(channel: &str) -> String {
    format!("channel:{channel}")
}

/// The set of channels with state the settler must watch.
pub const INDEX_KEY: &str = "channels:index";

/// The set of channels a `close` credential asked to close: the settler
/// closes them on chain.
pub const CLOSING_KEY: &str = "channels:closing";

/// A channel's name in the book: its chain, escrow and id, so a genome
/// that moves to another escrow never decides on the old one's state, and
/// the settler knows where to settle from the name alone.
pub fn channel_key(chain_id: u64, escrow: Address, channel: &ChannelId) -> String {
    format!("{chain_id}:{escrow:#x}:{channel}")
}

/// The parts of a [`channel_key`].
pub fn parse_channel_key(key: &str) -> Option<(u64, Address, ChannelId)> {
    let mut parts = key.splitn(3, ':');
    let chain_id = parts.next()?.parse().ok()?;
    let escrow = parts.next()?.parse().ok()?;
    let channel = parts.next()?.parse().ok()?;
    Some((chain_id, escrow, channel))
}

/// Compare-and-set rounds before giving up on a channel under contention.
pub const MAX_ATTEMPTS: u32 = 16;

/// What a decision does with the state it was shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step<T> {
    /// Leave the state as it is and answer `T`.
    Keep(T),
    /// Replace the state with these bytes, then answer `T`.
    Write(Vec<u8>, T),
}

/// Why the book gave no answer. Each is a 503: nothing was decided.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BookError {
    #[error("channel store: {0}")]
    Store(StoreError),
    /// The write may have landed; nobody can tell without a new read.
    #[error("the answer to a channel write was lost: {0}")]
    LostReply(StoreError),
    #[error("the channel changed under {0} attempts in a row")]
    Contended(u32),
}

impl BookError {
    /// A stable label for metrics and logs.
    pub fn cause(&self) -> &'static str {
        match self {
            BookError::Store(e) => e.cause(),
            BookError::LostReply(_) => "channel_write_lost",
            BookError::Contended(_) => "channel_contended",
        }
    }
}

type Slot = Arc<tokio::sync::Mutex<Option<Vec<u8>>>>;

/// Cheap to clone; every clone shares the local slots.
#[derive(Clone)]
pub struct ChannelBook {
    store: Bounded,
    ttl: Duration,
    /// Per channel: the queue of this process's tasks, and the bytes last
    /// seen (`None`: not known here). Bounded; an evicted slot only costs a
    /// read.
    slots: Arc<quick_cache::sync::Cache<String, Slot>>,
}

impl ChannelBook {
    /// `ttl`: how long a channel's state outlives its last change.
    pub fn new(store: Bounded, ttl: Duration, capacity: usize) -> Self {
        ChannelBook {
            store,
            ttl,
            slots: Arc::new(quick_cache::sync::Cache::new(capacity.max(1))),
        }
    }

    pub fn store(&self) -> &Bounded {
        &self.store
    }

    fn slot(&self, channel: &str) -> Slot {
        if let Some(s) = self.slots.get(channel) {
            return s;
        }
        let fresh: Slot = Arc::default();
        match self
            .slots
            .get_or_insert_with(channel, || Ok::<_, std::convert::Infallible>(fresh))
        {
            Ok(s) => s,
            Err(never) => match never {},
        }
    }

    /// The channel's state as the store has it now.
    pub async fn read(&self, channel: &str) -> Result<Option<Vec<u8>>, BookError> {
        let slot = self.slot(channel);
        let mut seen = slot.lock().await;
        let now = self.get(channel).await?;
        seen.clone_from(&now);
        Ok(now)
    }

    async fn get(&self, channel: &str) -> Result<Option<Vec<u8>>, BookError> {
        let key = state_key(channel);
        self.store
            .run(
                "channel_get",
                move |s| async move { s.get(&key).await },
                |v| {
                    if v.is_some() { "found" } else { "absent" }
                },
            )
            .await
            .map_err(BookError::Store)
    }

    /// Decides on the channel's state with `decide` (called again on newer
    /// bytes whenever the state moved under it, so it must be pure) and
    /// applies its step atomically.
    pub async fn update<T, F>(&self, channel: &str, mut decide: F) -> Result<T, BookError>
    where
        F: FnMut(Option<&[u8]>) -> Step<T>,
    {
        let slot = self.slot(channel);
        let mut seen = slot.lock().await;
        let (mut current, mut fresh) = match seen.as_ref() {
            Some(bytes) => (Some(bytes.clone()), false),
            None => (self.get(channel).await?, true),
        };
        for _ in 0..MAX_ATTEMPTS {
            match decide(current.as_deref()) {
                Step::Keep(answer) if fresh => {
                    seen.clone_from(&current);
                    return Ok(answer);
                }
                Step::Keep(_) => {
                    current = self.get(channel).await?;
                    fresh = true;
                }
                Step::Write(new, answer) => {
                    if current.is_none() {
                        self.index(channel).await?;
                    }
                    match self.compare_and_set(channel, current.clone(), new.clone()).await {
                        Ok(Cas::Set) => {
                            *seen = Some(new);
                            return Ok(answer);
                        }
                        Ok(Cas::Current(now)) => {
                            current = now;
                            fresh = true;
                        }
                        Err(e) => {
                            *seen = None;
                            return Err(if e.reply_may_be_lost() {
                                BookError::LostReply(e)
                            } else {
                                BookError::Store(e)
                            });
                        }
                    }
                }
            }
        }
        *seen = None;
        Err(BookError::Contended(MAX_ATTEMPTS))
    }

    async fn compare_and_set(&self, channel: &str, expected: Option<Vec<u8>>, new: Vec<u8>) -> Result<Cas, StoreError> {
        let key = state_key(channel);
        let ttl = self.ttl;
        self.store
            .run(
                "channel_update",
                move |s| async move { s.compare_and_set(&key, expected.as_deref(), &new, ttl).await },
                |c| match c {
                    Cas::Set => "set",
                    Cas::Current(_) => "moved",
                },
            )
            .await
    }

    async fn index(&self, channel: &str) -> Result<(), BookError> {
        self.mark(INDEX_KEY, channel).await
    }

    /// Every channel with state the settler must watch.
    pub async fn channels(&self) -> Result<Vec<String>, BookError> {
        self.set(INDEX_KEY).await
    }

    /// The members of the set `name` (such as [`CLOSING_KEY`]).
    pub async fn set(&self, name: &'static str) -> Result<Vec<String>, BookError> {
        self.store
            .run(
                "channel_list",
                move |s| async move { s.set_members(name).await },
                |_| "ok",
            )
            .await
            .map_err(BookError::Store)
    }

    /// Adds `channel` to the set `name`.
    pub async fn mark(&self, name: &'static str, channel: &str) -> Result<(), BookError> {
        let member = channel.to_owned();
        self.store
            .run(
                "channel_mark",
                move |s| async move { s.set_add(name, &member).await },
                |_| "ok",
            )
            .await
            .map_err(BookError::Store)
    }

    /// Takes `channel` out of the set `name`.
    pub async fn unmark(&self, name: &'static str, channel: &str) -> Result<(), BookError> {
        let member = channel.to_owned();
        self.store
            .run(
                "channel_unmark",
                move |s| async move { s.set_remove(name, &member).await },
                |_| "ok",
            )
            .await
            .map_err(BookError::Store)
    }

    /// A reservation of `key` for `ttl`: `true` for the one caller that
    /// gets it (one broadcast, one settlement at a time).
    pub async fn reserve(&self, key: &str, ttl: Duration) -> Result<bool, BookError> {
        let key = key.to_owned();
        self.store
            .run(
                "channel_reserve",
                move |s| async move { s.reserve(&key, ttl).await },
                |got| {
                    if *got { "reserved" } else { "taken" }
                },
            )
            .await
            .map_err(BookError::Store)
    }

    /// Ends a reservation early; a failure only lets it run to its ttl.
    pub async fn release(&self, key: &str) {
        let key = key.to_owned();
        let _ = self
            .store
            .run(
                "channel_release",
                move |s| async move { s.release(&key).await },
                |_| "ok",
            )
            .await;
    }

    /// Takes a channel out of the index (it is finalised and settled:
    /// nothing left to watch). Its state stays until its ttl.
    pub async fn forget(&self, channel: &str) -> Result<(), BookError> {
        self.unmark(INDEX_KEY, channel).await
    }
}

#[cfg(test)]
mod tests;
