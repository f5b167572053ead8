//! settlegate's actors: the parts that do I/O, each owning one resource.
//!
//! - [`genome_supervisor::GenomeSupervisor`]: verifies the genome before boot,
//!   re-verifies it on SIGHUP and on an interval, and swaps it atomically.
//! - [`rpc_pool::RpcPool`]: the Tempo JSON-RPC endpoints, with health
//!   tracking, circuits and failover.
//! - [`coalescer::Coalescer`]: one chain lookup per transaction hash, shared
//!   by every overlapping check whatever it finds (and, through
//!   [`coalescer::exchange`], by every instance on the store).
//! - [`replay_guard::ReplayGuard`]: consumes a payment once and keeps an
//!   in-process cache of consumed hashes.
//! - [`channels::ChannelBook`]: the state of payment channels, changed
//!   only by compare-and-set on the shared store.
//! - [`store`]: the [`store::Store`] trait those two use, with its
//!   backends (memory, file, Redis).
//! - [`ledger::Ledger`]: copies the store's outbox of consumed records to
//!   PostgreSQL, creating each payment's webhook deliveries with its row.
//! - [`webhooks::Dispatcher`]: sends those deliveries, signed, with
//!   retries, from PostgreSQL.
//!
//! They run on the actix system of the binary; the HTTP handlers reach them
//! through their `Addr` or, for the genome, a lock-free shared view.

pub mod channels;
pub mod coalescer;
pub mod counters;
pub mod genome_supervisor;
pub mod ledger;
pub mod replay_guard;
pub mod rpc_pool;
pub mod rpc_transport;
pub mod store;
pub mod webhooks;

pub use genome_supervisor::{ActiveGenome, GenomeSource, GenomeSupervisor, Reload, ReloadCause, ReloadOutcome};
pub use replay_guard::RedisTarget;

use std::sync::atomic::{AtomicBool, Ordering};

/// Turns off actix's per-sender mailbox limit (16 messages by default) for
/// an actor on the request path: with a limit, a parked sender's messages
/// no longer arrive in the order sent, which `replay_guard::records`
/// relies on. These actors answer in microseconds and their load is
/// bounded by the HTTP server's connections, so an unbounded mailbox costs
/// no memory that the requests themselves do not.
pub(crate) fn unbounded_mailbox<A>(ctx: &mut actix::Context<A>)
where
    A: actix::Actor<Context = actix::Context<A>>,
{
    // 0 means "never park a sender" in actix's channel.
    ctx.set_mailbox_capacity(0);
}

/// The target of spans that exist for traces only: the log layer ignores
/// them, so without a trace exporter they are disabled where they are made.
pub const TRACE_TARGET: &str = "settlegate::trace";

static TRACES_ON: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported (a trace exporter was started). Off, the
/// spans that exist for traces only are not made at all, not even as
/// disabled spans: [`Traced`] adds no span of its own, the store and RPC
/// calls none.
pub fn traces_on() -> bool {
    TRACES_ON.load(Ordering::Relaxed)
}

/// Says whether spans are exported: once, at boot, before any request.
pub fn set_traces_on(on: bool) {
    TRACES_ON.store(on, Ordering::Relaxed);
}

/// A message with its sender's span: the actor's work for it is a child
/// span named `<Actor> <Message>`, so one request is one trace across
/// actor mailboxes. Each request-path actor handles `Traced<M>` for every
/// `M` it answers with a future (`traced_handlers!`).
///
/// When nothing exports traces ([`traces_on`] is false) the work runs in
/// the sender's span itself (the request's, whose fields every log line of
/// the request carries), and without any span outside a request.
pub struct Traced<M> {
    pub msg: M,
    pub parent: tracing::Span,
}

impl<M> Traced<M> {
    /// `msg`, sent from inside the current span.
    pub fn new(msg: M) -> Self {
        Traced {
            msg,
            parent: tracing::Span::current(),
        }
    }
}

impl<M: actix::Message> actix::Message for Traced<M> {
    type Result = M::Result;
}

/// Implements `Handler<Traced<M>>` for an actor and each listed message,
/// whose `Handler<M>` answers with a `ResponseFuture`.
macro_rules! traced_handlers {
    ($actor:ident: $($msg:ident),+) => {$(
        impl actix::Handler<$crate::Traced<$msg>> for $actor {
            type Result = <$actor as actix::Handler<$msg>>::Result;

            fn handle(&mut self, t: $crate::Traced<$msg>, ctx: &mut Self::Context) -> Self::Result {
                use tracing::Instrument as _;
                if !$crate::traces_on() {
                    if t.parent.is_disabled() {
                        return <Self as actix::Handler<$msg>>::handle(self, t.msg, ctx);
                    }
                    let fut = t.parent.in_scope(|| <Self as actix::Handler<$msg>>::handle(self, t.msg, ctx));
                    return Box::pin(fut.instrument(t.parent));
                }
                let span = tracing::info_span!(
                    target: $crate::TRACE_TARGET,
                    parent: &t.parent,
                    "actor_message",
                    otel.name = concat!(stringify!($actor), " ", stringify!($msg)),
                    actor = stringify!($actor),
                    message = stringify!($msg),
                );
                let fut = span.in_scope(|| <Self as actix::Handler<$msg>>::handle(self, t.msg, ctx));
                Box::pin(fut.instrument(span))
            }
        }
    )+};
}
pub(crate) use traced_handlers;
