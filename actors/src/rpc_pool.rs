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
//! Messages: [`Lookup`], [`PoolStatus`]. Guarantee: "the node does not know
//! this transaction" (`Ok` with no receipt) is never confused with "the
//! endpoint failed" (`Err`), and an endpoint that answers for another
//! transaction, or with garbage, counts as failed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use actix::prelude::*;
use alloy_json_rpc::RpcError as AlloyError;
use alloy_primitives::{Bytes, U64};
use alloy_rpc_client::RpcClient;
use alloy_transport::{TransportError, TransportErrorKind};
use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use settlegate_rules::credential::TxHash;
use settlegate_rules::settlement::{BlockHeader, ChainFacts, Receipt};
use tracing::Instrument;
use url::Url;

use crate::counters::Resolved;
use crate::rpc_transport::{BoundedHttp, HttpFault, TransportBuildError, http_client};

pub const FAILURES_TO_OPEN: u32 = 3;
pub const OPEN_FOR: Duration = Duration::from_secs(5);
/// Attempts per lookup: the best endpoint, then one other.
const ATTEMPTS: usize = 2;

/// Why no trustworthy answer came from the chain. Each is a 503.
/// Serialisable: one instance's failed lookup answers the checks of the
/// others that waited for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum RpcError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("transport: {0}")]
    Transport(String),
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("HTTP status {0}")]
    HttpStatus(u16),
    #[error("malformed answer: {0}")]
    Malformed(String),
    #[error("JSON-RPC error {code}: {message}")]
    JsonRpc { code: i64, message: String },
    #[error("the node is on chain {got}, the policy's is {want}")]
    WrongChain { got: u64, want: u64 },
    #[error("every endpoint's circuit is open")]
    AllCircuitsOpen,
    /// As many lookups as allowed are waiting on the nodes already.
    #[error("{0} lookups are in flight already")]
    Saturated(usize),
    /// A part of this instance is gone (it is shutting down): a fault of
    /// this instance, not of the chain, so never shared with others.
    #[error("transport: the {0} stopped")]
    Stopped(Stopped),
}

/// Which part of the instance stopped answering its mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Stopped {
    Pool,
    Coalescer,
}

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stopped::Pool => "RPC pool",
            Stopped::Coalescer => "coalescer",
        })
    }
}

impl RpcError {
    /// A stable label for metrics and logs.
    pub fn cause(&self) -> &'static str {
        match self {
            RpcError::Timeout(_) => "rpc_timeout",
            RpcError::Transport(_) | RpcError::Connect(_) | RpcError::HttpStatus(_) | RpcError::Stopped(_) => {
                "rpc_transport"
            }
            RpcError::Malformed(_) => "rpc_malformed",
            RpcError::JsonRpc { .. } => "rpc_error_response",
            RpcError::WrongChain { .. } => "rpc_wrong_chain",
            RpcError::AllCircuitsOpen => "rpc_circuits_open",
            RpcError::Saturated(_) => "rpc_saturated",
        }
    }

    /// Whether the connection itself failed: the next use of the endpoint
    /// re-checks its chain id first.
    fn lost_connection(&self) -> bool {
        matches!(
            self,
            RpcError::Timeout(_) | RpcError::Transport(_) | RpcError::Connect(_) | RpcError::HttpStatus(_)
        )
    }

    /// What kind of failure, in words of ours only (`timeout`, `connect`,
    /// `http 401`, `json_rpc_error -32000`, …): what `/readyz` shows. A
    /// node's own text may quote its URL, key and host.
    pub fn category(&self) -> String {
        match self {
            RpcError::Timeout(_) => "timeout".into(),
            RpcError::Transport(_) => "transport".into(),
            RpcError::Connect(_) => "connect".into(),
            RpcError::HttpStatus(code) => format!("http {code}"),
            RpcError::Malformed(_) => "malformed".into(),
            RpcError::JsonRpc { code, .. } => format!("json_rpc_error {code}"),
            RpcError::WrongChain { got, .. } => format!("wrong_chain {got}"),
            RpcError::AllCircuitsOpen => "circuits_open".into(),
            RpcError::Saturated(_) => "saturated".into(),
            RpcError::Stopped(_) => "transport".into(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    pub endpoint: String,
    pub method: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub endpoint: String,
    pub outcome: &'static str,
}

/// The pool's metrics: `settlegate_rpc_requests_total{endpoint, method,
/// outcome}` (one sample per JSON-RPC call, batched or not) and
/// `settlegate_rpc_http_requests_total{endpoint, outcome}` (one per HTTP
/// round trip).
///
/// `settlegate_rpc_http_duration_seconds{endpoint, outcome}`: the time of
/// each HTTP round trip.
#[derive(Clone)]
pub struct RpcMetrics {
    pub calls: Family<RpcLabels, Counter>,
    pub http: Family<HttpLabels, Counter>,
    pub latency: Family<HttpLabels, Histogram, fn() -> Histogram>,
}

/// 0.25 ms to about 8 s, doubling.
pub fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

impl Default for RpcMetrics {
    fn default() -> Self {
        RpcMetrics {
            calls: Family::default(),
            http: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
        }
    }
}

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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Circuit {
    Closed,
    Open { until: Instant },
    HalfOpen { probing: bool },
}

#[derive(Debug)]
struct Health {
    consecutive_failures: u32,
    latency_ms: Option<f64>,
    circuit: Circuit,
    /// The chain id the endpoint last reported.
    chain_id: Option<u64>,
    /// False until the chain id is read, and again after a lost connection.
    chain_checked: bool,
    last_error: Option<String>,
}

/// Scrubs what a node says of every part of its endpoint's URL that may
/// be secret: user and password, each query value, each path segment and,
/// unless hosts are exposed, the host. A node's error text (a JSON-RPC
/// message, a garbage body) often quotes the URL it was called at; it goes
/// into log lines and errors only through [`Redactor::scrub`].
#[derive(Debug, Default)]
pub struct Redactor {
    /// Lower-case, longest first.
    secrets: Vec<String>,
}

/// What replaces a secret.
pub const REDACTED: &str = "[redacted]";
/// The most of a node's text an error keeps, escaped, after scrubbing.
const NODE_TEXT_CHARS: usize = 200;

impl Redactor {
    pub fn for_url(u: &Url, expose_host: bool) -> Self {
        let decoded = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
        let mut parts: Vec<String> = vec![u.username().to_owned(), u.password().unwrap_or("").to_owned()];
        if let Some(segments) = u.path_segments() {
            parts.extend(segments.map(str::to_owned));
        }
        if let Some(q) = u.query() {
            for pair in q.split('&') {
                parts.push(pair.split_once('=').map_or(pair, |(_, v)| v).to_owned());
            }
        }
        parts.extend(u.query_pairs().map(|(_, v)| v.into_owned()));
        if !expose_host && let Some(host) = u.host_str() {
            parts.push(host.to_owned());
        }
        let mut secrets: Vec<String> = parts
            .iter()
            .flat_map(|p| [p.clone(), decoded(p)])
            .filter(|p| !p.is_empty())
            .map(|p| p.to_ascii_lowercase())
            .collect();
        secrets.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
        secrets.dedup();
        Redactor { secrets }
    }

    /// `text` with every secret (any ASCII case) replaced by
    /// [`REDACTED`], then quoted and cut to [`NODE_TEXT_CHARS`] escaped
    /// characters: the whole text is scrubbed before it is cut, so a cut
    /// never leaves a secret's beginning behind.
    pub fn scrub(&self, text: &str) -> String {
        let lower = text.to_ascii_lowercase();
        let mut hits: Vec<(usize, usize)> = Vec::new();
        for secret in &self.secrets {
            for (at, _) in lower.match_indices(secret.as_str()) {
                hits.push((at, at + secret.len()));
            }
        }
        hits.sort();
        let mut out = String::with_capacity(text.len().min(4 * NODE_TEXT_CHARS));
        let mut from = 0;
        for (start, end) in hits {
            if end <= from {
                continue;
            }
            if start > from {
                out.push_str(&text[from..start]);
                out.push_str(REDACTED);
            } else if !out.ends_with(REDACTED) {
                out.push_str(REDACTED);
            }
            from = end;
        }
        out.push_str(&text[from..]);
        settlegate_rules::primitives::quote_bounded(&out, NODE_TEXT_CHARS)
    }
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

/// Where an endpoint stands for a policy's chain, as `/readyz` and the
/// metrics show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndpointState {
    /// Verified on the chain, closed circuit, no failure since.
    Healthy,
    /// Closed circuit, but the last calls failed.
    Failing,
    /// Its chain id is not known yet.
    Unknown,
    /// Circuit open: not asked until it half-opens.
    Open,
    /// One probe may go through.
    HalfOpen,
    /// On another chain than the policy's.
    WrongChain,
}

impl EndpointState {
    pub const ALL: [EndpointState; 6] = [
        EndpointState::Healthy,
        EndpointState::Failing,
        EndpointState::Unknown,
        EndpointState::Open,
        EndpointState::HalfOpen,
        EndpointState::WrongChain,
    ];

    /// The wire name (`half_open`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointState::Healthy => "healthy",
            EndpointState::Failing => "failing",
            EndpointState::Unknown => "unknown",
            EndpointState::Open => "open",
            EndpointState::HalfOpen => "half_open",
            EndpointState::WrongChain => "wrong_chain",
        }
    }

    /// Whether its circuit is open or half-open.
    pub fn circuit_open(self) -> bool {
        matches!(self, EndpointState::Open | EndpointState::HalfOpen)
    }
}

/// One endpoint's state, for `/readyz`.
#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
pub struct EndpointStatus {
    /// The endpoint's URL without credentials, path or query.
    pub endpoint: String,
    // Documented by its pattern, which a unit test keeps equal to
    // `EndpointState::ALL`.
    #[schema(value_type = String, pattern = "^(healthy|failing|unknown|open|half_open|wrong_chain)$")]
    pub state: EndpointState,
    pub chain_id: Option<u64>,
    pub consecutive_failures: u32,
    pub latency_ms: Option<f64>,
    /// The last failure's kind, never the node's own words (they may quote
    /// its URL): `timeout`, `connect`, `transport`, `http <status>`,
    /// `malformed`, `json_rpc_error <code>`, `wrong_chain <chain id>`.
    pub last_error: Option<String>,
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
    /// In the node's pool (or known to it already): it may be mined soon.
    Accepted,
    /// Refused: it will not be mined as it is. The node's message, for logs.
    Rejected(String),
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

/// How an endpoint is named wherever it leaves the process (`/readyz`,
/// metric labels, spans, logs) unless the operator opts in to its host:
/// whoever reaches the port must not learn the provider or its address.
pub fn endpoint_name(index: usize) -> String {
    format!("rpc{index}")
}

/// `scheme://host[:port]`: the most of an RPC URL anything may show (the
/// boot's configuration errors, and labels with `rpc.expose_endpoint_hosts`).
pub fn endpoint_label(u: &Url) -> String {
    format!("{}://{}", u.scheme(), u.host_str().unwrap_or("?")) + &u.port().map(|p| format!(":{p}")).unwrap_or_default()
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

impl Shared {
    /// Reads the chain id of every endpoint `pick` selects; one round at a
    /// time (a slow node must not pile probes up).
    async fn probe_all(&self, pick: impl Fn(usize) -> bool) {
        if self.probe_round.swap(true, Ordering::AcqRel) {
            return;
        }
        for i in (0..self.endpoints.len()).filter(|&i| pick(i)) {
            let _ = self.probe_chain(i).await;
        }
        self.probe_round.store(false, Ordering::Release);
    }

    /// Asks one endpoint for its chain id, records it and logs a change.
    async fn probe_chain(&self, i: usize) -> Result<u64, RpcError> {
        let e = &self.endpoints[i];
        let id = self
            .exchange(i, &["eth_chainId"], e.client.request_noparams::<U64>("eth_chainId"))
            .await
            .map(|id| id.to::<u64>());
        let mut h = e.health.lock();
        match &id {
            Ok(id) => {
                if h.chain_id != Some(*id) {
                    tracing::info!(endpoint = %e.label, chain_id = id, previous = ?h.chain_id, "RPC endpoint chain id");
                }
                h.chain_id = Some(*id);
                h.chain_checked = true;
            }
            Err(err) => tracing::warn!(endpoint = %e.label, error = %err, "RPC endpoint did not tell its chain id"),
        }
        id
    }

    async fn lookup(&self, msg: Lookup) -> Result<ChainFacts, RpcError> {
        let order = self.route(msg.chain_id);
        let mut last = None;
        let mut attempts = 0;
        for i in order {
            if attempts == ATTEMPTS {
                break;
            }
            if !self.acquire(i) {
                continue;
            }
            match self.lookup_on(i, msg).await {
                Ok(facts) => return Ok(facts),
                Err(e) => {
                    tracing::warn!(endpoint = %self.endpoints[i].label, error = %e, cause = e.cause(),
                        tx_hash = %msg.hash, "RPC lookup failed");
                    // A node found on another chain is not an attempt at
                    // the payment: look for one on the right chain.
                    if !matches!(e, RpcError::WrongChain { .. }) {
                        attempts += 1;
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| self.no_route(msg.chain_id)))
    }

    async fn broadcast(&self, msg: Broadcast) -> Result<Submitted, RpcError> {
        let mut last = None;
        let mut attempts = 0;
        for i in self.route(msg.chain_id) {
            if attempts == ATTEMPTS {
                break;
            }
            if !self.acquire(i) {
                continue;
            }
            match self.broadcast_on(i, &msg).await {
                Ok(s) => return Ok(s),
                Err(e) => {
                    tracing::warn!(endpoint = %self.endpoints[i].label, error = %e, cause = e.cause(),
                        "RPC broadcast failed");
                    if !matches!(e, RpcError::WrongChain { .. }) {
                        attempts += 1;
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| self.no_route(msg.chain_id)))
    }

    async fn broadcast_on(&self, i: usize, msg: &Broadcast) -> Result<Submitted, RpcError> {
        self.ensure_chain(i, msg.chain_id).await?;
        let e = &self.endpoints[i];
        // A node refusing the transaction is an answer about the
        // transaction, not a fault of the endpoint.
        let refused = |r: &RpcError| matches!(r, RpcError::JsonRpc { .. });
        let sync = self
            .exchange_with(
                i,
                &["eth_sendRawTransactionSync"],
                e.client
                    .request::<_, serde_json::Value>("eth_sendRawTransactionSync", (&msg.raw,)),
                refused,
            )
            .await;
        let error = match sync {
            Ok(_) => return Ok(Submitted::Mined),
            // -32601: the node has no synchronous method.
            Err(RpcError::JsonRpc { code: -32601, .. }) => {
                match self
                    .exchange_with(
                        i,
                        &["eth_sendRawTransaction"],
                        e.client
                            .request::<_, serde_json::Value>("eth_sendRawTransaction", (&msg.raw,)),
                        refused,
                    )
                    .await
                {
                    Ok(_) => return Ok(Submitted::Accepted),
                    Err(e) => e,
                }
            }
            Err(e) => e,
        };
        match error {
            RpcError::JsonRpc { message, .. } if already_known(&message) => Ok(Submitted::Accepted),
            RpcError::JsonRpc { message, .. } => Ok(Submitted::Rejected(message)),
            other => Err(other),
        }
    }

    /// Checks the endpoint's chain id unless it is verified already.
    async fn ensure_chain(&self, i: usize, chain_id: u64) -> Result<(), RpcError> {
        let verified = {
            let h = self.endpoints[i].health.lock();
            h.chain_checked && h.chain_id == Some(chain_id)
        };
        if !verified {
            let got = self.probe_chain(i).await?;
            if got != chain_id {
                return Err(RpcError::WrongChain { got, want: chain_id });
            }
        }
        Ok(())
    }

    /// Why no endpoint could be asked at all.
    fn no_route(&self, want: u64) -> RpcError {
        let wrong = self.endpoints.iter().find_map(|e| {
            let h = e.health.lock();
            h.chain_id.filter(|&c| h.chain_checked && c != want)
        });
        match wrong {
            Some(got) => RpcError::WrongChain { got, want },
            None => RpcError::AllCircuitsOpen,
        }
    }

    async fn lookup_on(&self, i: usize, msg: Lookup) -> Result<ChainFacts, RpcError> {
        self.ensure_chain(i, msg.chain_id).await?;
        let e = &self.endpoints[i];
        let hash = *msg.hash.as_b256();
        let (receipt, head) = if msg.need_head {
            let mut batch = e.client.new_batch();
            let receipt = batch
                .add_call::<_, Option<Receipt>>("eth_getTransactionReceipt", &(hash,))
                .map_err(|x| classify(x, &e.redactor))?;
            let head = batch
                .add_call::<_, U64>("eth_blockNumber", &())
                .map_err(|x| classify(x, &e.redactor))?;
            self.exchange(i, &["eth_getTransactionReceipt", "eth_blockNumber"], async move {
                batch.send().await?;
                Ok((receipt.await?, Some(head.await?.to::<u64>())))
            })
            .await?
        } else {
            let receipt = self
                .exchange(
                    i,
                    &["eth_getTransactionReceipt"],
                    e.client
                        .request::<_, Option<Receipt>>("eth_getTransactionReceipt", (hash,)),
                )
                .await?;
            (receipt, None)
        };
        if let Some(r) = &receipt
            && r.transaction_hash != hash
        {
            return self.fail(
                i,
                RpcError::Malformed(format!("answered with the receipt of {:#x}", r.transaction_hash)),
            );
        }
        let mut facts = ChainFacts {
            receipt,
            block: None,
            head,
        };
        if facts.needs_block()
            && let Some(number) = facts.receipt.as_ref().and_then(|r| r.block_number)
        {
            // A node that does not date its receipts: one more round trip.
            facts.block = self
                .exchange(
                    i,
                    &["eth_getBlockByNumber"],
                    e.client
                        .request::<_, Option<BlockHeader>>("eth_getBlockByNumber", (number, false)),
                )
                .await?;
        }
        Ok(facts)
    }

    /// Records a failure found after the exchange itself succeeded.
    fn fail<T>(&self, i: usize, err: RpcError) -> Result<T, RpcError> {
        self.record(i, Err(&err), None);
        Err(err)
    }

    /// One HTTP round trip carrying `methods`, with health and metrics
    /// bookkeeping.
    async fn exchange<T>(
        &self,
        i: usize,
        methods: &[&'static str],
        call: impl Future<Output = Result<T, TransportError>>,
    ) -> Result<T, RpcError> {
        self.exchange_with(i, methods, call, |_| false).await
    }

    /// [`Shared::exchange`], where errors `not_a_fault` selects count for
    /// the endpoint's health as answers, not failures.
    async fn exchange_with<T>(
        &self,
        i: usize,
        methods: &[&'static str],
        call: impl Future<Output = Result<T, TransportError>>,
        not_a_fault: impl Fn(&RpcError) -> bool,
    ) -> Result<T, RpcError> {
        let started = Instant::now();
        let e = &self.endpoints[i];
        // none when nothing exports traces
        let span = crate::traces_on().then(|| {
            tracing::info_span!(
                target: crate::TRACE_TARGET,
                "rpc_call",
                otel.name = methods.first().copied().unwrap_or("rpc"),
                otel.kind = "client",
                rpc.system.name = "jsonrpc",
                rpc.method = %methods.join(","),
                server.address = %e.label,
                outcome = tracing::field::Empty,
                error.type = tracing::field::Empty,
            )
        });
        let result = match &span {
            Some(span) => call.instrument(span.clone()).await,
            None => call.await,
        }
        .map_err(|x| classify(x, &e.redactor));
        let outcome = if result.is_ok() { "ok" } else { "error" };
        if let Some(span) = &span {
            span.record("outcome", outcome);
            if let Err(err) = &result {
                span.record("error.type", err.cause());
            }
        }
        for &method in methods {
            e.calls.with(
                method,
                outcome,
                || {
                    self.metrics
                        .calls
                        .get_or_create(&RpcLabels {
                            endpoint: e.label.clone(),
                            method,
                            outcome,
                        })
                        .clone()
                },
                |c| {
                    c.inc();
                },
            );
        }
        let took = started.elapsed().as_secs_f64();
        e.http.with(
            outcome,
            "",
            || {
                let labels = HttpLabels {
                    endpoint: e.label.clone(),
                    outcome,
                };
                let http = self.metrics.http.get_or_create(&labels).clone();
                let latency = self.metrics.latency.get_or_create(&labels).clone();
                (http, latency)
            },
            |(http, latency)| {
                http.inc();
                latency.observe(took);
            },
        );
        let health = match &result {
            Err(e) if not_a_fault(e) => Ok(()),
            other => other.as_ref().map(|_| ()),
        };
        self.record(i, health, Some(started.elapsed()));
        result
    }

    fn record(&self, i: usize, result: Result<(), &RpcError>, took: Option<Duration>) {
        let e = &self.endpoints[i];
        let mut h = e.health.lock();
        match result {
            Ok(()) => {
                if let Some(took) = took {
                    let ms = took.as_secs_f64() * 1000.0;
                    h.latency_ms = Some(h.latency_ms.map_or(ms, |old| 0.8 * old + 0.2 * ms));
                }
                h.consecutive_failures = 0;
                h.circuit = Circuit::Closed;
                h.last_error = None;
            }
            Err(err) => {
                h.consecutive_failures += 1;
                h.last_error = Some(err.category());
                if err.lost_connection() {
                    h.chain_checked = false;
                }
                let reopen = matches!(h.circuit, Circuit::HalfOpen { .. });
                if reopen || h.consecutive_failures >= FAILURES_TO_OPEN {
                    if !matches!(h.circuit, Circuit::Open { .. }) {
                        tracing::error!(endpoint = %e.label, failures = h.consecutive_failures, error = %err, "RPC circuit opened");
                    }
                    h.circuit = Circuit::Open {
                        until: Instant::now() + OPEN_FOR,
                    };
                }
            }
        }
    }

    /// Endpoints in the order to try them for a policy on `chain_id`:
    /// closed circuits verified on that chain by (fewest failures, lowest
    /// latency), then closed ones whose chain must be read first, then
    /// half-open ones (one probe each). Endpoints known to be on another
    /// chain, and open circuits, are left out.
    fn route(&self, chain_id: u64) -> Vec<usize> {
        let now = Instant::now();
        let mut ready = Vec::new();
        let mut unverified = Vec::new();
        let mut half_open = Vec::new();
        for (i, e) in self.endpoints.iter().enumerate() {
            let mut h = e.health.lock();
            if let Circuit::Open { until } = h.circuit
                && now >= until
            {
                h.circuit = Circuit::HalfOpen { probing: false };
            }
            let known_wrong = h.chain_checked && h.chain_id.is_some_and(|c| c != chain_id);
            match h.circuit {
                _ if known_wrong => {}
                Circuit::Closed if h.chain_checked => {
                    ready.push((h.consecutive_failures, h.latency_ms.unwrap_or(f64::MAX), i))
                }
                Circuit::Closed => unverified.push(i),
                Circuit::HalfOpen { probing: false } => half_open.push(i),
                _ => {}
            }
        }
        ready.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
        ready
            .into_iter()
            .map(|r| r.2)
            .chain(unverified)
            .chain(half_open)
            .collect()
    }

    /// Claims endpoint `i` for one attempt: always for a closed circuit; for
    /// a half-open one, only if no other request is probing it.
    fn acquire(&self, i: usize) -> bool {
        let mut h = self.endpoints[i].health.lock();
        match h.circuit {
            Circuit::Closed => true,
            Circuit::HalfOpen { probing: false } => {
                h.circuit = Circuit::HalfOpen { probing: true };
                true
            }
            _ => false,
        }
    }

    fn status(&self, chain_id: u64) -> Vec<EndpointStatus> {
        self.endpoints
            .iter()
            .map(|e| {
                let h = e.health.lock();
                let state = match h.circuit {
                    _ if h.chain_id.is_some_and(|c| c != chain_id) => EndpointState::WrongChain,
                    Circuit::Closed if h.chain_id.is_some() && h.consecutive_failures == 0 => EndpointState::Healthy,
                    Circuit::Closed if h.consecutive_failures > 0 => EndpointState::Failing,
                    Circuit::Closed => EndpointState::Unknown,
                    Circuit::Open { .. } => EndpointState::Open,
                    Circuit::HalfOpen { .. } => EndpointState::HalfOpen,
                };
                EndpointStatus {
                    endpoint: e.label.clone(),
                    state,
                    chain_id: h.chain_id,
                    consecutive_failures: h.consecutive_failures,
                    latency_ms: h.latency_ms.map(|l| (l * 1000.0).round() / 1000.0),
                    last_error: h.last_error.clone(),
                }
            })
            .collect()
    }
}

/// alloy's error, as one of ours. Every text a node supplied (its
/// JSON-RPC message, a body that does not parse, a connection error's
/// words) is scrubbed of the endpoint's secrets and bounded: it ends up in
/// log lines and answers to other instances.
fn classify(e: TransportError, redactor: &Redactor) -> RpcError {
    match e {
        AlloyError::ErrorResp(p) => RpcError::JsonRpc {
            code: p.code,
            // The node's wording of "known already" matters to a broadcast;
            // it is kept as our own words, before any scrubbing.
            message: if already_known(&p.message) {
                ALREADY_KNOWN.to_owned()
            } else {
                redactor.scrub(&p.message)
            },
        },
        AlloyError::NullResp => RpcError::Malformed("a null result where a value was expected".into()),
        AlloyError::DeserError { err, text } => RpcError::Malformed(format!(
            "{} in {}",
            redactor.scrub(&err.to_string()),
            redactor.scrub(&text)
        )),
        AlloyError::Transport(TransportErrorKind::Custom(inner)) => match inner.downcast_ref::<HttpFault>() {
            Some(HttpFault::Timeout(d)) => RpcError::Timeout(*d),
            Some(HttpFault::TooLarge) => RpcError::Malformed(HttpFault::TooLarge.to_string()),
            Some(HttpFault::Status(code)) => RpcError::HttpStatus(*code),
            Some(HttpFault::Connect(detail)) => RpcError::Connect(redactor.scrub(detail)),
            Some(f) => RpcError::Transport(redactor.scrub(&f.to_string())),
            None => RpcError::Transport(redactor.scrub(&inner.to_string())),
        },
        AlloyError::Transport(TransportErrorKind::MissingBatchResponse(id)) => {
            RpcError::Malformed(format!("no answer for call {id} of the batch"))
        }
        other => RpcError::Transport(redactor.scrub(&other.to_string())),
    }
}

/// What a node's "this transaction is known already" becomes.
const ALREADY_KNOWN: &str = "already known";

/// Node messages that mean "this transaction is known already" (in the
/// pool or mined): the broadcast happened, by this or an earlier attempt.
fn already_known(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "already known",
        "known transaction",
        "already imported",
        "already exists",
    ]
    .iter()
    .any(|k| m.contains(k))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_classified_by_kind() {
        let r = Redactor::default();
        let timeout = TransportErrorKind::custom(HttpFault::Timeout(Duration::from_millis(5)));
        assert_eq!(classify(timeout, &r), RpcError::Timeout(Duration::from_millis(5)));
        let refused = TransportErrorKind::custom(HttpFault::Connect("refused".into()));
        assert!(matches!(classify(refused, &r), RpcError::Connect(_)));
        let status = TransportErrorKind::custom(HttpFault::Status(401));
        assert_eq!(classify(status, &r).category(), "http 401");
        let big = TransportErrorKind::custom(HttpFault::TooLarge);
        assert!(matches!(classify(big, &r), RpcError::Malformed(_)));
        let garbage = TransportError::deser_err(serde_json::from_str::<u8>("x").unwrap_err(), "x".repeat(500));
        let RpcError::Malformed(m) = classify(garbage, &r) else {
            panic!()
        };
        assert!(m.len() < 500, "{m}");
        assert!(
            classify(
                TransportErrorKind::missing_batch_response(alloy_json_rpc::Id::Number(2)),
                &r
            )
            .cause()
                == "rpc_malformed"
        );
    }

    fn node_error(message: &str) -> TransportError {
        AlloyError::ErrorResp(alloy_json_rpc::ErrorPayload {
            code: -32000,
            message: message.to_owned().into(),
            data: None,
        })
    }

    /// The probe's finding: a node's error message quoting its URL reached
    /// `/readyz` and the logs verbatim.
    #[test]
    fn a_nodes_words_lose_every_secret_part_of_its_url() {
        let u =
            Url::parse("https://us%65r:p%40ss@Secret-Host.example:8443/v2/KEY-S3CRET?apikey=Q-VAL&x=y%2Fz").unwrap();
        let said = "invalid api key key-s3cret for https://user:p@ss@secret-host.EXAMPLE:8443/v2/KEY-S3CRET?apikey=Q-VAL&x=y/z \u{1b}[2J";
        let err = classify(node_error(said), &Redactor::for_url(&u, false));
        let shown = err.to_string();
        for secret in [
            "s3cret",
            "user",
            "p@ss",
            "secret-host",
            "q-val",
            "y/z",
            "y%2fz",
            "\u{1b}[2J",
        ] {
            assert!(
                !shown.to_ascii_lowercase().contains(&secret.to_ascii_lowercase()),
                "{secret}: {shown}"
            );
        }
        assert!(
            shown.starts_with("JSON-RPC error -32000: \"invalid api key [redacted] for https://"),
            "{shown}"
        );
        assert_eq!(err.category(), "json_rpc_error -32000");
        // with hosts exposed the host may show, never the key
        let shown = classify(node_error(said), &Redactor::for_url(&u, true)).to_string();
        assert!(
            shown.contains("secret-host.EXAMPLE") && !shown.contains("S3CRET"),
            "{shown}"
        );
        // bounded, and the whole text is scrubbed before the cut
        let long = format!("{}KEY-S3CRET", "a".repeat(195));
        let shown = classify(node_error(&long), &Redactor::for_url(&u, false)).to_string();
        assert!(!shown.contains("KEY-S") && shown.chars().count() < 260, "{shown}");
        // "known already" survives as our own words
        let known = classify(
            node_error("Known transaction: KEY-S3CRET"),
            &Redactor::for_url(&u, false),
        );
        assert_eq!(
            known,
            RpcError::JsonRpc {
                code: -32000,
                message: ALREADY_KNOWN.into()
            }
        );
    }

    #[test]
    fn endpoint_states_serialise_as_their_names_and_match_the_documented_pattern() {
        let names: Vec<&str> = EndpointState::ALL.iter().map(|s| s.as_str()).collect();
        let schema = serde_json::to_value(<EndpointStatus as utoipa::PartialSchema>::schema()).unwrap();
        assert_eq!(
            schema["properties"]["state"]["pattern"],
            format!("^({})$", names.join("|"))
        );
        for s in EndpointState::ALL {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        let open: Vec<_> = EndpointState::ALL.into_iter().filter(|s| s.circuit_open()).collect();
        assert_eq!(open, [EndpointState::Open, EndpointState::HalfOpen]);
    }

    #[test]
    fn a_stopped_pool_is_a_transport_failure_of_this_instance() {
        let e = RpcError::Stopped(Stopped::Pool);
        assert_eq!(e.to_string(), "transport: the RPC pool stopped");
        assert_eq!(
            RpcError::Stopped(Stopped::Coalescer).to_string(),
            "transport: the coalescer stopped"
        );
        assert_eq!((e.cause(), e.category().as_str()), ("rpc_transport", "transport"));
        let wire = serde_json::to_string(&e).unwrap();
        assert_eq!(serde_json::from_str::<RpcError>(&wire).unwrap(), e);
    }

    #[test]
    fn labels_never_show_a_url_path() {
        let u = Url::parse("https://user:pw@rpc.example.com:8443/v1/SECRETKEY?x=1").unwrap();
        assert_eq!(endpoint_label(&u), "https://rpc.example.com:8443");
    }
}

crate::traced_handlers!(RpcPool: Lookup, Broadcast);
