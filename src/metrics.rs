//! Prometheus metrics (OpenMetrics text on `GET /metrics`). One registry,
//! built once at boot; the families are cheap handles shared with actors.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use settlegate_actors::genome_supervisor::ReloadCounter;
use settlegate_actors::rpc_pool::RpcCounter;

use crate::settle::OutcomeCounter;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    status: u16,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    pub genome_reloads: ReloadCounter,
    pub rpc_requests: RpcCounter,
    pub verifications: OutcomeCounter,
    pub coalesced: Counter,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("settlegate");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("http_requests", "HTTP responses by route and status", requests.clone());
        let genome_reloads = ReloadCounter::default();
        registry.register(
            "genome_reloads",
            "Genome reload attempts by outcome (swapped, unchanged, refused) and refusal code",
            genome_reloads.clone(),
        );
        let rpc_requests = RpcCounter::default();
        registry.register(
            "rpc_requests",
            "JSON-RPC calls sent to Tempo nodes by endpoint, method and outcome",
            rpc_requests.clone(),
        );
        let verifications = OutcomeCounter::default();
        registry.register(
            "verifications",
            "Payment verification outcomes by status, code and reason (503s are infrastructure trouble)",
            verifications.clone(),
        );
        let coalesced = Counter::default();
        registry.register(
            "coalesced_checks",
            "Checks that joined a lookup already in flight",
            coalesced.clone(),
        );
        Metrics {
            registry,
            requests,
            genome_reloads,
            rpc_requests,
            verifications,
            coalesced,
        }
    }

    pub fn observe_request(&self, route: &str, status: u16) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_owned(),
                status,
            })
            .inc();
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // unwrap: encoding into a String cannot fail.
        prometheus_client::encoding::text::encode(&mut out, &self.registry).unwrap();
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
