//! Consumed records: [`Consume`] (put-if-absent of a payment's record),
//! [`Recall`]/[`RecallNow`] (read it), [`Follow`]/[`Expect`] (wait for a
//! consume this process is about to make), and [`CountRetry`].
//!
//! Exactly one consume of a hash ever gets [`Consumed::Inserted`], whatever
//! the number of requests or instances sharing the store; every other one
//! gets the record that won. In one process, concurrent consumes (and
//! recalls) of one hash are merged into one store round trip. A recall
//! that found nothing is held for a short window: it only ever refines a
//! refusal, never a 200. Every record the store confirms goes into the
//! [`ConsumedCache`](super::ConsumedCache).
//!
//! Ordering, the one place it matters: the coalescer sends [`Expect`]
//! before it wakes the callers of a lookup that found a settled payment,
//! and both it and those callers reach this actor through mailboxes that
//! deliver in the order sent (`unbounded_mailbox`: no sender is ever
//! parked). So an `Expect` is always handled before the consumes and
//! follows that act on the same lookup, and a follow never answers
//! "nothing known" in the moment before the consume it should wait for.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use settlegate_rules::credential::TxHash;
use settlegate_rules::replay::ReplayRecord;
use tokio::sync::oneshot;
use tracing::Instrument;

use super::lost_reply::{self, Writer};
use super::{Found, MAX_ABSENT, PendingConsume, ReplayGuard, reply};
use crate::store::{Put, Store, StoreError, unix_now};

/// The answer to a [`Consume`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Consumed {
    /// This request consumed the payment: it may answer 200.
    Inserted,
    /// Already consumed (by this record): never a second 200.
    Existing(Arc<ReplayRecord>),
}

/// Consume `hash` with `record` if nobody has; `record.expires_at` bounds
/// its life in the store.
#[derive(Message)]
#[rtype(result = "Result<Consumed, StoreError>")]
pub struct Consume {
    pub hash: TxHash,
    pub record: ReplayRecord,
}

/// If `hash` is consumed, or a consume of it is in flight in this process,
/// the record that consumed it (waiting for the one in flight); `None` when
/// this process knows of neither. For a check that would settle on facts
/// held from an earlier lookup: it may follow that lookup's consume, but
/// never consume on its own.
#[derive(Message)]
#[rtype(result = "Result<Option<Arc<ReplayRecord>>, StoreError>")]
pub struct Follow(pub TxHash);

/// A lookup found a mined, successful transaction whose callers are about
/// to consume it: until `until`, a [`Follow`] of `hash` waits for that
/// consume instead of answering "nothing known" (see the ordering note).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Expect {
    pub hash: TxHash,
    pub until: Instant,
}

/// The record of `hash`, if it was consumed.
#[derive(Message)]
#[rtype(result = "Result<Option<Arc<ReplayRecord>>, StoreError>")]
pub struct Recall(pub TxHash);

/// [`Recall`] from the store now, even if a recall just found nothing
/// (for a check waiting for another instance's consume).
#[derive(Message)]
#[rtype(result = "Result<Option<Arc<ReplayRecord>>, StoreError>")]
pub struct RecallNow(pub TxHash);

/// Counts one idempotent retry of consumed payment `hash`, atomically
/// across every instance on the store: the count after this one (the first
/// retry is 1). The count lives `ttl` from the first retry (past the retry
/// window, so it never restarts inside it) and stops growing at `cap`. An
/// error is a 503, never a retry let through uncounted.
#[derive(Message)]
#[rtype(result = "Result<u64, StoreError>")]
pub struct CountRetry {
    pub hash: TxHash,
    pub ttl: Duration,
    pub cap: u64,
}

/// Internal: a consume reached the store and came back.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct ConsumeDone(TxHash, Result<Consumed, StoreError>);

/// Internal: a recall came back.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct RecallDone(TxHash, Result<Found, StoreError>);

pub(crate) fn record_key(hash: &TxHash) -> String {
    format!("replay:{hash}")
}

impl Handler<Consume> for ReplayGuard {
    type Result = ResponseFuture<Result<Consumed, StoreError>>;

    fn handle(&mut self, Consume { hash, mut record }: Consume, ctx: &mut Self::Context) -> Self::Result {
        if let Some(instance) = &self.instance {
            record.instance.get_or_insert_with(|| instance.to_string());
        }
        if let Some(existing) = self.cache.get(&hash) {
            return Box::pin(async move { Ok(Consumed::Existing(existing)) });
        }
        let (tx, rx) = oneshot::channel();
        if let Some(pending) = self.consuming.get_mut(&hash) {
            pending.others.push(tx);
            return reply(rx);
        }
        let writer = Writer::fresh();
        let encoded = lost_reply::encode(&record, &writer);
        let record = Arc::new(record);
        // Follows that waited for this consume now wait for its answer.
        let others = self.expected.remove(&hash).map(|(_, f)| f).unwrap_or_default();
        self.consuming.insert(
            hash,
            PendingConsume {
                record: record.clone(),
                first: tx,
                others,
            },
        );
        let deadline = self.store.store().write_deadline(self.store.timeout());
        let ttl = Duration::from_secs(record.expires_at.saturating_sub(unix_now()).max(1));
        let store = self.store.clone();
        let me = ctx.address();
        // The store's spans are children of this message's span.
        let span = tracing::Span::current();
        actix::spawn(
            async move {
                let result = match encoded {
                    Ok(value) => consume(&store, record_key(&hash), value, ttl, deadline, &writer).await,
                    Err(e) => Err(e),
                };
                me.do_send(ConsumeDone(hash, result));
            }
            .instrument(span),
        );
        reply(rx)
    }
}

/// One consume on the store, its lost answer resolved.
async fn consume(
    store: &crate::store::Bounded,
    key: String,
    value: Vec<u8>,
    ttl: Duration,
    deadline: i64,
    writer: &Writer,
) -> Result<Consumed, StoreError> {
    let put = {
        let (key, value) = (key.clone(), value.clone());
        store.run(
            "put_if_absent",
            move |s: Arc<dyn Store>| async move { s.put_if_absent(&key, &value, ttl, deadline).await },
            |p| match p {
                Put::Inserted => "inserted",
                Put::Existing(_) => "existing",
            },
        )
    };
    match put.await {
        Ok(Put::Inserted) => Ok(Consumed::Inserted),
        Ok(Put::Existing(raw)) => lost_reply::answer(&raw, writer),
        Err(lost) if lost.reply_may_be_lost() => lost_reply::resolve(store, key, value, writer, deadline, lost).await,
        Err(e) => Err(e),
    }
}

impl Handler<ConsumeDone> for ReplayGuard {
    type Result = ();

    fn handle(&mut self, ConsumeDone(hash, result): ConsumeDone, _: &mut Self::Context) {
        let Some(pending) = self.consuming.remove(&hash) else {
            return;
        };
        // What the others learn: the record that consumed the payment.
        let winner = match &result {
            Ok(Consumed::Inserted) => Ok(pending.record.clone()),
            Ok(Consumed::Existing(r)) => Ok(r.clone()),
            Err(e) => Err(e.clone()),
        };
        if let Ok(r) = &winner {
            self.cache.insert(hash, r.clone());
        }
        let _ = pending.first.send(result);
        for other in pending.others {
            let _ = other.send(winner.clone().map(Consumed::Existing));
        }
    }
}

impl Handler<Expect> for ReplayGuard {
    type Result = ();

    fn handle(&mut self, Expect { hash, until }: Expect, _: &mut Self::Context) {
        if self.consuming.contains_key(&hash) || self.cache.get(&hash).is_some() {
            return;
        }
        // No timer per expectation (an actor polls every timer of its
        // context on each message): a follow bounds its own wait, and the
        // periodic sweep drops expectations nobody met.
        let entry = self.expected.entry(hash).or_insert((until, Vec::new()));
        entry.0 = entry.0.max(until);
    }
}

impl Handler<Follow> for ReplayGuard {
    type Result = ResponseFuture<Result<Option<Arc<ReplayRecord>>, StoreError>>;

    fn handle(&mut self, Follow(hash): Follow, _: &mut Self::Context) -> Self::Result {
        if let Some(existing) = self.cache.get(&hash) {
            return Box::pin(async move { Ok(Some(existing)) });
        }
        let (tx, rx) = oneshot::channel();
        // A consume in flight answers within the store timeout; an
        // expected one may never start: wait for it no longer than announced.
        let mut wait_until = None;
        if let Some(pending) = self.consuming.get_mut(&hash) {
            pending.others.push(tx);
        } else {
            match self.expected.get_mut(&hash) {
                Some((until, followers)) if Instant::now() < *until => {
                    followers.push(tx);
                    wait_until = Some(*until);
                }
                _ => return Box::pin(async { Ok(None) }),
            }
        }
        Box::pin(async move {
            let answer = match wait_until {
                Some(until) => match tokio::time::timeout_at(until.into(), rx).await {
                    Ok(a) => a,
                    Err(_) => return Ok(None),
                },
                None => rx.await,
            };
            match answer {
                Ok(Ok(Consumed::Existing(r))) => Ok(Some(r)),
                Ok(Err(e)) => Err(e),
                // `others` only ever receive the winner's record; a dropped
                // sender is an expectation nobody met: look again.
                Ok(Ok(Consumed::Inserted)) | Err(_) => Ok(None),
            }
        })
    }
}

impl Handler<Recall> for ReplayGuard {
    type Result = ResponseFuture<Result<Found, StoreError>>;

    fn handle(&mut self, Recall(hash): Recall, ctx: &mut Self::Context) -> Self::Result {
        if let Some(until) = self.absent.get(&hash) {
            if Instant::now() < *until && self.cache.get(&hash).is_none() {
                return Box::pin(async { Ok(None) });
            }
            self.absent.remove(&hash);
        }
        self.recall(hash, ctx)
    }
}

impl Handler<RecallNow> for ReplayGuard {
    type Result = ResponseFuture<Result<Found, StoreError>>;

    fn handle(&mut self, RecallNow(hash): RecallNow, ctx: &mut Self::Context) -> Self::Result {
        self.recall(hash, ctx)
    }
}

impl ReplayGuard {
    /// The record of `hash`: from the cache, or from the store (one read
    /// for every recall that arrives while it runs).
    fn recall(&mut self, hash: TxHash, ctx: &mut Context<Self>) -> ResponseFuture<Result<Found, StoreError>> {
        if let Some(existing) = self.cache.get(&hash) {
            return Box::pin(async move { Ok(Some(existing)) });
        }
        let (tx, rx) = oneshot::channel();
        if let Some(waiting) = self.recalling.get_mut(&hash) {
            waiting.push(tx);
            return reply(rx);
        }
        self.recalling.insert(hash, vec![tx]);
        let op = self.store.run(
            "get",
            move |s: Arc<dyn Store>| async move {
                let raw = s.get(&record_key(&hash)).await?;
                raw.map(|r| lost_reply::decode(&r).map(|(record, _)| Arc::new(record)))
                    .transpose()
            },
            |f| if f.is_some() { "found" } else { "absent" },
        );
        let me = ctx.address();
        actix::spawn(async move { me.do_send(RecallDone(hash, op.await)) });
        reply(rx)
    }
}

impl Handler<RecallDone> for ReplayGuard {
    type Result = ();

    fn handle(&mut self, RecallDone(hash, result): RecallDone, _: &mut Self::Context) {
        match &result {
            Ok(Some(r)) => self.cache.insert(hash, r.clone()),
            Ok(None) if !self.absent_for.is_zero() && self.absent.len() < MAX_ABSENT => {
                self.absent.insert(hash, Instant::now() + self.absent_for);
            }
            _ => {}
        }
        for waiter in self.recalling.remove(&hash).unwrap_or_default() {
            let _ = waiter.send(result.clone());
        }
    }
}

impl Handler<CountRetry> for ReplayGuard {
    type Result = ResponseFuture<Result<u64, StoreError>>;

    fn handle(&mut self, CountRetry { hash, ttl, cap }: CountRetry, _: &mut Self::Context) -> Self::Result {
        Box::pin(self.store.run(
            "count_retry",
            move |s: Arc<dyn Store>| async move { s.count(&format!("retries:{hash}"), ttl, cap).await },
            |_| "counted",
        ))
    }
}
