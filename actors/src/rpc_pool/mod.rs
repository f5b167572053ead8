//! `RpcPool`: the Tempo JSON-RPC endpoints, with health tracking.
//!
//! Owns one alloy JSON-RPC client per endpoint (over [`BoundedHttp`]) and
//! one health record each: latency (EWMA), consecutive failures, a circuit
//! that opens after [`FAILURES_TO_OPEN`] failures, lets one probe through
//! after [`OPEN_FOR`] (half-open) and closes on success, and the chain id
//! the endpoint last reported.
//!
//! The chain id is a fact of the endpoint, not of each lookup: it is read
//! at start, by a periodic probe, and again before the next lookup on an
//! endpoint whose connection failed (a new connection may land on another
//! node). A [`Lookup`] names the chain its policy expects and is only sent
//! to endpoints verified on that chain; a node on another chain is never
//! asked about a payment, and when no endpoint is left the answer is an
//! [`RpcError`] (503), never a verdict.
//!
//! A lookup is one HTTP round trip on the happy path: the receipt alone
//! (Tempo receipts carry `blockTimestamp`), or the receipt and
//! `eth_blockNumber` in one JSON-RPC batch when the policy asks for more
//! than one confirmation. The receipt's block is read only when a node
//! gives no timestamp. A failed attempt is retried once on another endpoint.
//!
//! Messages: [`Lookup`], [`Broadcast`], [`EthCall`], [`PrepareTx`],
//! [`PoolStatus`]. Guarantee: "the node does not know this transaction"
//! (`Ok` with no receipt) is never confused with "the endpoint failed"
//! (`Err`), and an endpoint that answers for another transaction, or with
//! garbage, counts as failed. A revert is an answer, not a failure.
//!
//! Modules: `health` (circuits, routing, failover, `/readyz` states),
//! `exchange` (one round trip and its bookkeeping, the chain-id probe),
//! `lookup`, `broadcast`, `call` (`eth_call`, transaction parameters),
//! `error`, `metrics`, `redact` (what of a URL may show).

mod broadcast;
mod call;
mod error;
mod exchange;
mod health;
mod lookup;
mod metrics;
mod redact;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use actix::prelude::*;
use alloy_primitives::{Address, Bytes};
use alloy_rpc_client::RpcClient;
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use settlegate_rules::credential::TxHash;
use settlegate_rules::settlement::ChainFacts;
use url::Url;

pub use call::{
    GAS_MARGIN_PERCENT, MAX_CALL_DATA_BYTES, MAX_CALL_RESULT_BYTES, MAX_FEE_PER_GAS_CEILING, MAX_GAS_LIMIT,
    MIN_GAS_LIMIT, TxParams,
};
pub use error::{MAX_REVERT_BYTES, RpcError, Stopped};
pub use health::{EndpointState, EndpointStatus, FAILURES_TO_OPEN, OPEN_FOR};
pub use metrics::{HttpLabels, RpcLabels, RpcMetrics, latency_histogram};
pub use redact::{REDACTED, Redactor, endpoint_label, endpoint_name};

use crate::counters::Resolved;
use crate::rpc_transport::{BoundedHttp, TransportBuildError, http_client};
use health::{Circuit, Health};

/// Attempts per lookup: the best endpoint, then one other.
const ATTEMPTS: usize = 2;

/// Why the pool cannot be built: a boot error.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("cannot build the RPC HTTP client: {0}")]
    Client(TransportBuildError),
    #[error(transparent)]
    Endpoint(#[from] TransportBuildError),
}

pub struct PoolConfig {
    pub urls: Vec<Url>,
    /// Bound on one HTTP exchange with one endpoint.
    pub call_timeout: Duration,
    /// How often every endpoint's chain id is checked; `None`: only at
    /// start, on demand and after a lost connection.
    pub probe_interval: Option<Duration>,
    /// Label endpoints `scheme://host[:port]`; else `rpc0`, `rpc1`, … in
    /// configuration order (see [`endpoint_name`]).
    pub expose_hosts: bool,
}

struct Endpoint {
    client: RpcClient,
    /// For logs and metrics: scheme, host and port only (a URL path may
    /// carry an API key).
    label: String,
    redactor: Redactor,
    health: Mutex<Health>,
    /// Its series of the pool's metrics, resolved once: calls by (method,
    /// outcome), HTTP round trips and their latency by (outcome, "").
    calls: Resolved<Counter>,
    http: Resolved<(Counter, Histogram)>,
}

struct Shared {
    endpoints: Vec<Endpoint>,
    metrics: RpcMetrics,
    probe_round: AtomicBool,
}

pub struct RpcPool {
    shared: Arc<Shared>,
    probe_interval: Option<Duration>,
}

/// What the chain says about `hash`, from an endpoint verified on
/// `chain_id`; with `need_head`, the head is read in the same batch.
#[derive(Message, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[rtype(result = "Result<ChainFacts, RpcError>")]
pub struct Lookup {
    pub hash: TxHash,
    pub chain_id: u64,
    pub need_head: bool,
}

/// Broadcasts a signed transaction (a pull-mode `Payment` credential) on an
/// endpoint verified on `chain_id`: `eth_sendRawTransactionSync` (the
/// answer comes once the transaction is mined), or `eth_sendRawTransaction`
/// on a node without it.
#[derive(Message, Clone, Debug)]
#[rtype(result = "Result<Submitted, RpcError>")]
pub struct Broadcast {
    pub raw: Bytes,
    pub chain_id: u64,
}

/// What the node did with a broadcast transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Submitted {
    /// Mined (the synchronous method answered with its receipt).
    Mined,
    /// Taken into the node's pool by this broadcast: it may be mined soon.
    Accepted,
    /// Known to the node already (in its pool or mined): someone broadcast
    /// it before.
    Known,
    /// Refused: it will not be mined as it is. The node's message, for logs.
    Rejected(String),
}

/// `eth_call` of `data` to `to` at the latest block, on an endpoint
/// verified on `chain_id`: the returned bytes, or [`RpcError::Reverted`].
#[derive(Message, Clone, Debug)]
#[rtype(result = "Result<Bytes, RpcError>")]
pub struct EthCall {
    pub to: Address,
    pub data: Bytes,
    pub chain_id: u64,
}

/// Simulates a sponsored Tempo (0x76) transaction before it is co-signed,
/// on an endpoint verified on `chain_id`, at the latest block: each call
/// executed from `from` with at most `gas` (plain `eth_call`: a node may
/// not execute Tempo's batched `calls` in a call), then the node's gas
/// estimate of the whole transaction as sponsored (`feePayer`, `feeToken`,
/// its nonce key and validity) against `gas`. `Ok` when it would succeed;
/// [`RpcError::Reverted`] when a call reverts, the node refuses the
/// transaction's shape, or it needs more gas than it carries.
#[derive(Message, Clone, Debug)]
#[rtype(result = "Result<(), RpcError>")]
pub struct Simulate {
    pub from: Address,
    /// `(to, input)` of each call, in order.
    pub calls: Vec<(Address, Bytes)>,
    pub gas: u64,
    pub nonce_key: alloy_primitives::U256,
    pub valid_before: u64,
    pub fee_payer: Address,
    pub fee_token: Address,
    pub chain_id: u64,
}

/// The nonce, gas limit and fees of a type-2 transaction from `from`
/// calling `to` with `data`, from one endpoint verified on `chain_id` in
/// one JSON-RPC batch.
#[derive(Message, Clone, Debug)]
#[rtype(result = "Result<TxParams, RpcError>")]
pub struct PrepareTx {
    pub from: Address,
    pub to: Address,
    pub data: Bytes,
    pub chain_id: u64,
}

/// Each endpoint's state relative to `chain_id`; with `probe`, endpoints
/// that are not known to be healthy are asked for their chain id first
/// (a recovered node shows up).
#[derive(Message)]
#[rtype(result = "Vec<EndpointStatus>")]
pub struct PoolStatus {
    pub probe: bool,
    pub chain_id: u64,
}

impl RpcPool {
    /// Fails (a boot error, not a panic) when the HTTP client cannot be built.
    pub fn new(config: PoolConfig, metrics: RpcMetrics) -> Result<Self, PoolError> {
        // rustls is built without a default crypto provider: use ring (no C
        // toolchain beyond the build's). Installing twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = http_client(config.call_timeout).map_err(PoolError::Client)?;
        let mut endpoints = Vec::with_capacity(config.urls.len());
        for (i, u) in config.urls.iter().enumerate() {
            endpoints.push(Endpoint {
                client: RpcClient::new(
                    BoundedHttp::new(http.clone(), u, config.call_timeout)?,
                    matches!(u.host_str(), Some("127.0.0.1" | "localhost" | "[::1]")),
                ),
                redactor: Redactor::for_url(u, config.expose_hosts),
                label: if config.expose_hosts {
                    endpoint_label(u)
                } else {
                    endpoint_name(i)
                },
                health: Mutex::new(Health {
                    consecutive_failures: 0,
                    latency_ms: None,
                    circuit: Circuit::Closed,
                    chain_id: None,
                    chain_checked: false,
                    last_error: None,
                }),
                calls: Resolved::default(),
                http: Resolved::default(),
            });
        }
        Ok(RpcPool {
            shared: Arc::new(Shared {
                endpoints,
                metrics,
                probe_round: AtomicBool::new(false),
            }),
            probe_interval: config.probe_interval,
        })
    }
}

impl Actor for RpcPool {
    type Context = Context<Self>;

    /// Reads every endpoint's chain id at start, so a misconfigured endpoint
    /// is visible in the logs and `/readyz` before any payment, then again
    /// on every probe interval.
    fn started(&mut self, ctx: &mut Self::Context) {
        crate::unbounded_mailbox(ctx);
        let shared = self.shared.clone();
        ctx.spawn(async move { shared.probe_all(|_| true).await }.into_actor(self));
        if let Some(every) = self.probe_interval {
            ctx.run_interval(every, |act, ctx| {
                let shared = act.shared.clone();
                ctx.spawn(async move { shared.probe_all(|_| true).await }.into_actor(act));
            });
        }
    }
}

impl Handler<Lookup> for RpcPool {
    type Result = ResponseFuture<Result<ChainFacts, RpcError>>;

    fn handle(&mut self, msg: Lookup, _: &mut Self::Context) -> Self::Result {
        let shared = self.shared.clone();
        Box::pin(async move { shared.lookup(msg).await })
    }
}

impl Handler<Broadcast> for RpcPool {
    type Result = ResponseFuture<Result<Submitted, RpcError>>;

    fn handle(&mut self, msg: Broadcast, _: &mut Self::Context) -> Self::Result {
        let shared = self.shared.clone();
        Box::pin(async move { shared.broadcast(msg).await })
    }
}

impl Handler<EthCall> for RpcPool {
    type Result = ResponseFuture<Result<Bytes, RpcError>>;

    fn handle(&mut self, msg: EthCall, _: &mut Self::Context) -> Self::Result {
        let shared = self.shared.clone();
        Box::pin(async move { shared.eth_call(msg).await })
    }
}

impl Handler<Simulate> for RpcPool {
    type Result = ResponseFuture<Result<(), RpcError>>;

    fn handle(&mut self, msg: Simulate, _: &mut Self::Context) -> Self::Result {
        let shared = self.shared.clone();
        Box::pin(async move { shared.simulate(msg).await })
    }
}

impl Handler<PrepareTx> for RpcPool {
    type Result = ResponseFuture<Result<TxParams, RpcError>>;

    fn handle(&mut self, msg: PrepareTx, _: &mut Self::Context) -> Self::Result {
        let shared = self.shared.clone();
        Box::pin(async move { shared.prepare_tx(msg).await })
    }
}

impl Handler<PoolStatus> for RpcPool {
    type Result = ResponseFuture<Vec<EndpointStatus>>;

    fn handle(&mut self, msg: PoolStatus, _: &mut Self::Context) -> Self::Result {
        let shared = self.shared.clone();
        Box::pin(async move {
            if msg.probe {
                let before = shared.status(msg.chain_id);
                shared.probe_all(|i| before[i].state != EndpointState::Healthy).await;
            }
            shared.status(msg.chain_id)
        })
    }
}

crate::traced_handlers!(RpcPool: Lookup, Broadcast, EthCall, Simulate, PrepareTx);

/// Sends `msg` to the pool (with the caller's span) and waits at most
/// `wait`: the pool's answer, `Timeout` when none came in time, `Stopped`
/// when the pool is gone.
pub async fn ask<M, T>(rpc: &Addr<RpcPool>, msg: M, wait: Duration) -> Result<T, RpcError>
where
    M: Message<Result = Result<T, RpcError>> + Send + 'static,
    T: Send + 'static,
    RpcPool: Handler<crate::Traced<M>>,
{
    match rpc.send(crate::Traced::new(msg)).timeout(wait).await {
        Ok(r) => r,
        Err(MailboxError::Timeout) => Err(RpcError::Timeout(wait)),
        Err(MailboxError::Closed) => Err(RpcError::Stopped(Stopped::Pool)),
    }
}
