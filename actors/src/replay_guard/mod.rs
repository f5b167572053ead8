//! `ReplayGuard`: the only authority on whether a payment was consumed.
//!
//! One actor over one [`Store`](crate::store::Store) (through
//! [`Bounded`]: every operation under a timeout, failing closed with a
//! typed [`StoreError`]: an unreadable record is corrupt, a 503, never
//! free). One module per concept:
//! - [`records`]: consume-once records, their in-process merging, the
//!   retry counter, and the one ordering rule ([`Expect`] before
//!   [`Follow`]);
//! - [`cache`]: the [`ConsumedCache`] handlers read directly;
//! - [`reservations`]: pull-mode broadcast reservations;
//! - [`lost_reply`]: how a consume whose answer was lost is resolved.
//!
//! Messages: [`Consume`], [`Follow`], [`Expect`], [`Recall`],
//! [`RecallNow`], [`CountRetry`], [`Reserve`], [`Release`], [`Ping`].

pub mod cache;
pub mod lost_reply;
pub mod records;
pub mod reservations;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use settlegate_rules::credential::TxHash;
use settlegate_rules::replay::ReplayRecord;
use tokio::sync::oneshot;

pub use crate::store::redis::RedisTarget;
pub use crate::store::{Bounded, StoreError, StoreOpLabels, StoreOps};
pub use cache::ConsumedCache;
pub use records::{Consume, Consumed, CountRetry, Expect, Follow, Recall, RecallNow};
pub use reservations::{Release, Reserve};

/// Whether the store answers (for `/readyz`).
#[derive(Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct Ping;

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;
type Found = Option<Arc<ReplayRecord>>;

struct PendingConsume {
    record: Arc<ReplayRecord>,
    first: Reply<Consumed>,
    others: Vec<Reply<Consumed>>,
}

/// Held "not consumed" answers beyond this many are not kept.
const MAX_ABSENT: usize = 16_384;

pub struct ReplayGuard {
    store: Bounded,
    cache: ConsumedCache,
    consuming: HashMap<TxHash, PendingConsume>,
    recalling: HashMap<TxHash, Vec<Reply<Found>>>,
    /// Recalls that found nothing, until when they keep answering.
    absent: HashMap<TxHash, Instant>,
    /// Consumes announced by [`Expect`], with the follows waiting for them.
    expected: HashMap<TxHash, (Instant, Vec<Reply<Consumed>>)>,
    absent_for: Duration,
    /// Stamped on every record this guard consumes (for the ledger).
    instance: Option<Arc<str>>,
}

impl ReplayGuard {
    pub fn new(store: Bounded, cache: ConsumedCache) -> Self {
        ReplayGuard {
            store,
            cache,
            consuming: HashMap::new(),
            recalling: HashMap::new(),
            absent: HashMap::new(),
            expected: HashMap::new(),
            absent_for: Duration::ZERO,
            instance: None,
        }
    }

    /// Names this instance in the records it consumes (`ledger.instance`).
    pub fn instance(mut self, name: &str) -> Self {
        self.instance = Some(name.into());
        self
    }

    /// Holds a recall that found nothing for `window` (0: not at all).
    pub fn hold_absent_for(mut self, window: Duration) -> Self {
        self.absent_for = window;
        self
    }

    pub fn backend_name(&self) -> &'static str {
        self.store.name()
    }
}

impl Actor for ReplayGuard {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        crate::unbounded_mailbox(ctx);
        if !self.absent_for.is_zero() {
            let every = self.absent_for.max(Duration::from_millis(100));
            ctx.run_interval(every, |act, _| {
                let now = Instant::now();
                act.absent.retain(|_, until| *until > now);
                // Unmet expectations: their follows have timed out already.
                act.expected.retain(|_, (until, _)| *until > now);
            });
        }
    }
}

fn reply<T: Send + 'static>(rx: oneshot::Receiver<Result<T, StoreError>>) -> ResponseFuture<Result<T, StoreError>> {
    Box::pin(async move { rx.await.unwrap_or(Err(StoreError::Stopped)) })
}

impl Handler<Ping> for ReplayGuard {
    type Result = ResponseFuture<Result<(), StoreError>>;

    fn handle(&mut self, _: Ping, _: &mut Self::Context) -> Self::Result {
        Box::pin(self.store.run(
            "ping",
            |s: Arc<dyn crate::store::Store>| async move { s.ping().await },
            |_| "ok",
        ))
    }
}

crate::traced_handlers!(ReplayGuard: Consume, Follow, Recall, RecallNow, Reserve, CountRetry, Ping);

#[cfg(test)]
mod tests;
