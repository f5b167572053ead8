//! Broadcast reservations (pull mode): two presentations of one signed
//! transaction never both broadcast it. The consume after a broadcast
//! stays the usual put-if-absent, so they never both settle it either.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use settlegate_rules::credential::TxHash;

use super::ReplayGuard;
use crate::store::{Store, StoreError};

/// Reserves the broadcast of a signed transaction for `ttl`: `true` for
/// the one presentation, across every instance on the store, that may
/// broadcast it; `false` while another holds it.
#[derive(Message)]
#[rtype(result = "Result<bool, StoreError>")]
pub struct Reserve {
    pub hash: TxHash,
    pub ttl: Duration,
}

/// Gives a reservation up (the broadcast failed and may be retried).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Release(pub TxHash);

fn key(hash: &TxHash) -> String {
    format!("broadcast:{hash}")
}

impl Handler<Reserve> for ReplayGuard {
    type Result = ResponseFuture<Result<bool, StoreError>>;

    fn handle(&mut self, Reserve { hash, ttl }: Reserve, _: &mut Self::Context) -> Self::Result {
        Box::pin(self.store.run(
            "reserve",
            move |s: Arc<dyn Store>| async move { s.reserve(&key(&hash), ttl).await },
            |won| if *won { "reserved" } else { "held" },
        ))
    }
}

impl Handler<Release> for ReplayGuard {
    type Result = ();

    fn handle(&mut self, Release(hash): Release, ctx: &mut Self::Context) {
        let release = self.store.run(
            "release",
            move |s: Arc<dyn Store>| async move { s.release(&key(&hash)).await },
            |_| "ok",
        );
        ctx.spawn(
            async move {
                if let Err(e) = release.await {
                    // It expires by itself; until then a retry looks up.
                    tracing::warn!(tx_hash = %hash, error = %e, "could not release a broadcast reservation");
                }
            }
            .into_actor(self),
        );
    }
}
