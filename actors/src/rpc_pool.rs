//! `RpcPool`: the Tempo JSON-RPC endpoints, with health tracking.
//!
//! Owns the HTTP client and one health record per endpoint: last latency
//! (EWMA), consecutive failures, and a circuit that opens after
//! [`FAILURES_TO_OPEN`] failures, lets one probe through after
//! [`OPEN_FOR`] (half-open) and closes on success. Each lookup goes to the
//! healthiest endpoint; a failed one is retried once on another endpoint.
//!
//! Messages: [`Lookup`] (receipt, its block, a fresh head and the node's
//! chain id, fetched together), [`PoolStatus`]. Guarantee: "the node does
//! not know this transaction" (`Ok` with no receipt) is never confused with
//! "the endpoint failed" (`Err`), and an endpoint that answers for another
//! transaction, or with garbage, counts as failed.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use settlegate_rules::credential::TxHash;
use settlegate_rules::settlement::{BlockHeader, ChainFacts, Receipt};
use url::Url;

pub const FAILURES_TO_OPEN: u32 = 3;
pub const OPEN_FOR: Duration = Duration::from_secs(5);
/// A JSON-RPC answer larger than this is garbage, not a receipt.
const MAX_RESPONSE_BYTES: usize = 4 << 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RpcError {
    /// No endpoint gave a trustworthy answer.
    #[error("no RPC endpoint answered: {0}")]
    Unavailable(String),
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    pub endpoint: String,
    pub method: &'static str,
    pub outcome: &'static str,
}

/// `settlegate_rpc_requests_total{endpoint, method, outcome}`: one sample
/// per JSON-RPC method call sent to a node.
pub type RpcCounter = Family<RpcLabels, Counter>;

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
    last_error: Option<String>,
}

struct Endpoint {
    url: Url,
    /// For logs and metrics: scheme, host and port only (a URL path may
    /// carry an API key).
    label: String,
    health: Mutex<Health>,
}

/// One endpoint's state, for `/readyz`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct EndpointStatus {
    pub endpoint: String,
    pub state: &'static str,
    pub chain_id: Option<u64>,
    pub consecutive_failures: u32,
    pub latency_ms: Option<f64>,
    pub last_error: Option<String>,
}

struct Shared {
    client: reqwest::Client,
    endpoints: Vec<Endpoint>,
    expected_chain_id: u64,
    requests: RpcCounter,
}

pub struct RpcPool {
    shared: Arc<Shared>,
}

#[derive(Message)]
#[rtype(result = "Result<ChainFacts, RpcError>")]
pub struct Lookup(pub TxHash);

/// Each endpoint's state; with `probe`, endpoints that are not known to be
/// healthy are asked for their chain id first (a recovered node shows up).
#[derive(Message)]
#[rtype(result = "Vec<EndpointStatus>")]
pub struct PoolStatus {
    pub probe: bool,
}

impl RpcPool {
    /// `call_timeout` bounds each HTTP call to a node.
    pub fn new(urls: &[Url], expected_chain_id: u64, call_timeout: Duration, requests: RpcCounter) -> Self {
        // reqwest is built without a crypto provider: use ring (no C
        // toolchain beyond the build's). Installing twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(call_timeout)
            .connect_timeout(call_timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            // unwrap: fails only without a TLS provider, installed just above.
            .expect("the HTTP client builds");
        let endpoints = urls
            .iter()
            .map(|u| Endpoint {
                url: u.clone(),
                label: format!("{}://{}", u.scheme(), u.host_str().unwrap_or("?"))
                    + &u.port().map(|p| format!(":{p}")).unwrap_or_default(),
                health: Mutex::new(Health {
                    consecutive_failures: 0,
                    latency_ms: None,
                    circuit: Circuit::Closed,
                    chain_id: None,
                    last_error: None,
                }),
            })
            .collect();
        RpcPool {
            shared: Arc::new(Shared {
                client,
                endpoints,
                expected_chain_id,
                requests,
            }),
        }
    }
}

impl Actor for RpcPool {
    type Context = Context<Self>;

    /// Checks every endpoint's chain id once at start, so a misconfigured
    /// endpoint is visible in the logs and `/readyz` before any payment.
    fn started(&mut self, ctx: &mut Self::Context) {
        let shared = self.shared.clone();
        ctx.spawn(
            async move {
                for i in 0..shared.endpoints.len() {
                    shared.check_chain(i).await;
                }
            }
            .into_actor(self),
        );
    }
}

impl Handler<Lookup> for RpcPool {
    type Result = ResponseFuture<Result<ChainFacts, RpcError>>;

    fn handle(&mut self, Lookup(hash): Lookup, _: &mut Self::Context) -> Self::Result {
        let shared = self.shared.clone();
        Box::pin(async move { shared.lookup(hash).await })
    }
}

impl Handler<PoolStatus> for RpcPool {
    type Result = ResponseFuture<Vec<EndpointStatus>>;

    fn handle(&mut self, msg: PoolStatus, _: &mut Self::Context) -> Self::Result {
        let shared = self.shared.clone();
        Box::pin(async move {
            if msg.probe {
                for (i, s) in shared.status().iter().enumerate() {
                    if s.state != "healthy" {
                        shared.check_chain(i).await;
                    }
                }
            }
            shared.status()
        })
    }
}

impl Shared {
    /// Asks one endpoint for its chain id and logs what it says.
    async fn check_chain(&self, i: usize) {
        let e = &self.endpoints[i];
        let answer = self.call::<String>(i, "eth_chainId", json!([])).await;
        let id = answer.as_ref().ok().and_then(|id| parse_quantity(id));
        e.health.lock().unwrap().chain_id = id;
        match (answer, id) {
            (Ok(_), Some(id)) if id == self.expected_chain_id => {
                tracing::info!(endpoint = %e.label, chain_id = id, "RPC endpoint on the expected chain")
            }
            (Ok(_), Some(id)) => tracing::error!(endpoint = %e.label, chain_id = id,
                expected = self.expected_chain_id, "RPC endpoint is on another chain"),
            (Ok(_), None) => tracing::error!(endpoint = %e.label, "RPC endpoint returned a malformed chain id"),
            (Err(err), _) => tracing::warn!(endpoint = %e.label, error = %err, "RPC endpoint unreachable"),
        }
    }

    async fn lookup(&self, hash: TxHash) -> Result<ChainFacts, RpcError> {
        let order = self.route();
        if order.is_empty() {
            return Err(RpcError::Unavailable("every endpoint's circuit is open".into()));
        }
        let mut errors = Vec::new();
        // The first choice, then one retry on another endpoint.
        for &i in order.iter().take(2) {
            match self.lookup_on(i, hash).await {
                Ok(facts) => return Ok(facts),
                Err(e) => {
                    tracing::warn!(endpoint = %self.endpoints[i].label, error = %e, tx_hash = %hash, "RPC lookup failed");
                    errors.push(format!("{}: {e}", self.endpoints[i].label));
                }
            }
        }
        Err(RpcError::Unavailable(errors.join("; ")))
    }

    /// Receipt and chain id, then (when mined) the receipt's block and the
    /// head, read after the receipt so the head is never older than it.
    async fn lookup_on(&self, i: usize, hash: TxHash) -> Result<ChainFacts, String> {
        let chain_id = self.call::<String>(i, "eth_chainId", json!([])).await?;
        let chain_id = parse_quantity(&chain_id).ok_or("malformed eth_chainId")?;
        self.endpoints[i].health.lock().unwrap().chain_id = Some(chain_id);
        let receipt: Option<Receipt> = self
            .call(i, "eth_getTransactionReceipt", json!([hash.to_string()]))
            .await?;
        let Some(receipt) = receipt else {
            return Ok(ChainFacts {
                chain_id,
                receipt: None,
                block: None,
                head: 0,
            });
        };
        if receipt.transaction_hash != *hash.as_b256() {
            return Err(format!("answered with the receipt of {:#x}", receipt.transaction_hash));
        }
        let Some(number) = receipt.block_number else {
            return Ok(ChainFacts {
                chain_id,
                receipt: Some(receipt),
                block: None,
                head: 0,
            });
        };
        let block: Option<BlockHeader> = self
            .call(i, "eth_getBlockByNumber", json!([format!("{number:#x}"), false]))
            .await?;
        let head = self.call::<String>(i, "eth_blockNumber", json!([])).await?;
        let head = parse_quantity(&head).ok_or("malformed eth_blockNumber")?;
        Ok(ChainFacts {
            chain_id,
            receipt: Some(receipt),
            block,
            head,
        })
    }

    /// One JSON-RPC call, with health and metrics bookkeeping.
    async fn call<T: DeserializeOwned>(&self, i: usize, method: &'static str, params: Value) -> Result<T, String> {
        let e = &self.endpoints[i];
        let started = Instant::now();
        let result = self.send(&e.url, method, params).await;
        let outcome = if result.is_ok() { "ok" } else { "error" };
        self.requests
            .get_or_create(&RpcLabels {
                endpoint: e.label.clone(),
                method,
                outcome,
            })
            .inc();
        let mut h = e.health.lock().unwrap();
        match &result {
            Ok(_) => {
                let ms = started.elapsed().as_secs_f64() * 1000.0;
                h.latency_ms = Some(h.latency_ms.map_or(ms, |old| 0.8 * old + 0.2 * ms));
                h.consecutive_failures = 0;
                h.circuit = Circuit::Closed;
                h.last_error = None;
            }
            Err(err) => {
                h.consecutive_failures += 1;
                h.last_error = Some(err.clone());
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
        result
    }

    async fn send<T: DeserializeOwned>(&self, url: &Url, method: &str, params: Value) -> Result<T, String> {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let mut resp = self.client.post(url.clone()).json(&body).send().await.map_err(|e| {
            if e.is_timeout() {
                "timed out".to_owned()
            } else {
                format!("request failed: {}", e.without_url())
            }
        })?;
        if !resp.status().is_success() {
            return Err(format!("HTTP {}", resp.status()));
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| format!("reading the answer: {}", e.without_url()))?
        {
            if bytes.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err("answer larger than 4 MiB".into());
            }
            bytes.extend_from_slice(&chunk);
        }
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| format!("malformed JSON-RPC answer: {e}"))?;
        if let Some(err) = v.get("error") {
            return Err(format!("JSON-RPC error: {}", truncate(&err.to_string(), 200)));
        }
        let result = v.get("result").ok_or("JSON-RPC answer without result")?;
        serde_json::from_value(result.clone()).map_err(|e| format!("unexpected {method} result: {e}"))
    }

    /// Endpoints in the order to try them: closed circuits by (right chain
    /// first, fewest failures, lowest latency), then at most one half-open
    /// probe. Open circuits whose time is up become half-open here.
    fn route(&self) -> Vec<usize> {
        let now = Instant::now();
        let mut closed = Vec::new();
        let mut probe = None;
        for (i, e) in self.endpoints.iter().enumerate() {
            let mut h = e.health.lock().unwrap();
            if let Circuit::Open { until } = h.circuit
                && now >= until
            {
                h.circuit = Circuit::HalfOpen { probing: false };
            }
            match h.circuit {
                Circuit::Closed => {
                    let wrong_chain = h.chain_id.is_some_and(|c| c != self.expected_chain_id);
                    closed.push((wrong_chain, h.consecutive_failures, h.latency_ms.unwrap_or(f64::MAX), i));
                }
                Circuit::HalfOpen { probing: false } if probe.is_none() => {
                    h.circuit = Circuit::HalfOpen { probing: true };
                    probe = Some(i);
                }
                _ => {}
            }
        }
        closed.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)).then(a.2.total_cmp(&b.2)));
        let mut order: Vec<usize> = closed.into_iter().map(|c| c.3).collect();
        order.extend(probe);
        order
    }

    fn status(&self) -> Vec<EndpointStatus> {
        self.endpoints
            .iter()
            .map(|e| {
                let h = e.health.lock().unwrap();
                let state = match h.circuit {
                    _ if h.chain_id.is_some_and(|c| c != self.expected_chain_id) => "wrong_chain",
                    Circuit::Closed if h.chain_id.is_some() && h.consecutive_failures == 0 => "healthy",
                    Circuit::Closed if h.consecutive_failures > 0 => "failing",
                    Circuit::Closed => "unknown",
                    Circuit::Open { .. } => "open",
                    Circuit::HalfOpen { .. } => "half_open",
                };
                EndpointStatus {
                    endpoint: e.label.clone(),
                    state,
                    chain_id: h.chain_id,
                    consecutive_failures: h.consecutive_failures,
                    latency_ms: h.latency_ms,
                    last_error: h.last_error.clone(),
                }
            })
            .collect()
    }
}

fn parse_quantity(s: &str) -> Option<u64> {
    let hex = s.strip_prefix("0x")?;
    if hex.is_empty() || hex.len() > 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}
