//! Endpoint health: the circuit of each endpoint (closed; open for
//! [`OPEN_FOR`] after [`FAILURES_TO_OPEN`] consecutive failures; then
//! half-open with one probe at a time), its latency (EWMA) and the chain id
//! it last reported; the order in which endpoints are tried for a chain,
//! and the state `/readyz` shows. An endpoint known to be on another chain
//! is never routed to.

use std::time::{Duration, Instant};

use super::{ATTEMPTS, RpcError, Shared};

pub const FAILURES_TO_OPEN: u32 = 3;
pub const OPEN_FOR: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Circuit {
    Closed,
    Open { until: Instant },
    HalfOpen { probing: bool },
}

#[derive(Debug)]
pub(super) struct Health {
    pub(super) consecutive_failures: u32,
    pub(super) latency_ms: Option<f64>,
    pub(super) circuit: Circuit,
    /// The chain id the endpoint last reported.
    pub(super) chain_id: Option<u64>,
    /// False until the chain id is read, and again after a lost connection.
    pub(super) chain_checked: bool,
    pub(super) last_error: Option<String>,
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

impl Shared {
    /// Tries `attempt` on the endpoints [`Shared::route`] gives for
    /// `chain_id`, at most [`ATTEMPTS`] of them (an endpoint found on another
    /// chain does not count). A revert is an answer, returned at once.
    pub(super) async fn failover<T, F, Fut>(&self, chain_id: u64, what: &'static str, attempt: F) -> Result<T, RpcError>
    where
        F: Fn(usize) -> Fut,
        Fut: Future<Output = Result<T, RpcError>>,
    {
        let mut last = None;
        let mut attempts = 0;
        for i in self.route(chain_id) {
            if attempts == ATTEMPTS {
                break;
            }
            if !self.acquire(i) {
                continue;
            }
            match attempt(i).await {
                Ok(v) => return Ok(v),
                Err(e @ RpcError::Reverted(_)) => return Err(e),
                Err(e) => {
                    tracing::warn!(endpoint = %self.endpoints[i].label, error = %e, cause = e.cause(),
                        call = what, "RPC call failed");
                    if !matches!(e, RpcError::WrongChain { .. }) {
                        attempts += 1;
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| self.no_route(chain_id)))
    }

    /// Why no endpoint could be asked at all.
    pub(super) fn no_route(&self, want: u64) -> RpcError {
        let wrong = self.endpoints.iter().find_map(|e| {
            let h = e.health.lock();
            h.chain_id.filter(|&c| h.chain_checked && c != want)
        });
        match wrong {
            Some(got) => RpcError::WrongChain { got, want },
            None => RpcError::AllCircuitsOpen,
        }
    }

    pub(super) fn record(&self, i: usize, result: Result<(), &RpcError>, took: Option<Duration>) {
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
    pub(super) fn route(&self, chain_id: u64) -> Vec<usize> {
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
    pub(super) fn acquire(&self, i: usize) -> bool {
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

    pub(super) fn status(&self, chain_id: u64) -> Vec<EndpointStatus> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
