//! `Coalescer`: one in-flight chain lookup per transaction hash.
//!
//! A storm of identical checks (the same hash presented by many requests at
//! once) costs one lookup: the first [`Check`] for a canonical hash starts
//! a [`Lookup`] on the [`RpcPool`]; every `Check` for that hash that arrives
//! while it runs waits for the same result. When the lookup ends, its
//! result (or error) goes to exactly the callers that were waiting, and the
//! entry is removed: nothing is cached after completion (the replay record
//! is the only memory of a payment). Every lookup is bounded by a timeout,
//! so a hung node cannot hold callers forever.
//!
//! The seed's coalescer was dead code behind its replay check and had no
//! timeout (hole 8).

use std::collections::HashMap;
use std::time::Duration;

use actix::prelude::*;
use prometheus_client::metrics::counter::Counter;
use settlegate_rules::credential::TxHash;
use settlegate_rules::settlement::ChainFacts;
use tokio::sync::oneshot;

use crate::rpc_pool::{Lookup, RpcError, RpcPool};

pub type CheckResult = Result<ChainFacts, RpcError>;

/// What the chain says about this transaction now.
#[derive(Message)]
#[rtype(result = "CheckResult")]
pub struct Check(pub TxHash);

/// Internal: a lookup finished.
#[derive(Message)]
#[rtype(result = "()")]
struct Done(TxHash, CheckResult);

pub struct Coalescer {
    pool: Addr<RpcPool>,
    timeout: Duration,
    waiting: HashMap<TxHash, Vec<oneshot::Sender<CheckResult>>>,
    /// Checks that joined a lookup already in flight.
    joined: Counter,
}

impl Coalescer {
    pub fn new(pool: Addr<RpcPool>, timeout: Duration, joined: Counter) -> Self {
        Coalescer {
            pool,
            timeout,
            waiting: HashMap::new(),
            joined,
        }
    }
}

impl Actor for Coalescer {
    type Context = Context<Self>;
}

impl Handler<Check> for Coalescer {
    type Result = ResponseFuture<CheckResult>;

    fn handle(&mut self, Check(hash): Check, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        match self.waiting.get_mut(&hash) {
            Some(waiters) => {
                waiters.push(tx);
                self.joined.inc();
            }
            None => {
                self.waiting.insert(hash, vec![tx]);
                let pool = self.pool.clone();
                let timeout = self.timeout;
                let me = ctx.address();
                actix::spawn(async move {
                    let result = match pool.send(Lookup(hash)).timeout(timeout).await {
                        Ok(r) => r,
                        Err(MailboxError::Timeout) => {
                            Err(RpcError::Unavailable(format!("lookup timed out after {timeout:?}")))
                        }
                        Err(MailboxError::Closed) => Err(RpcError::Unavailable("the RPC pool stopped".into())),
                    };
                    me.do_send(Done(hash, result));
                });
            }
        }
        Box::pin(async move {
            rx.await
                .unwrap_or_else(|_| Err(RpcError::Unavailable("the coalescer dropped the lookup".into())))
        })
    }
}

impl Handler<Done> for Coalescer {
    type Result = ();

    fn handle(&mut self, Done(hash, result): Done, _: &mut Self::Context) {
        for waiter in self.waiting.remove(&hash).unwrap_or_default() {
            // A caller that gave up has dropped its receiver; nothing to do.
            let _ = waiter.send(result.clone());
        }
    }
}
