//! Prometheus metrics (OpenMetrics text on `GET /metrics`). One registry,
//! built once at boot; the families are cheap handles shared with actors.

use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use settlegate_actors::coalescer::CoalescerMetrics;
use settlegate_actors::genome_supervisor::ReloadCounter;
use settlegate_actors::replay_guard::StoreOps;
use settlegate_actors::rpc_pool::RpcMetrics;

use crate::outcome::Outcome;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub status: u16,
    pub code: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UnavailableLabels {
    pub code: &'static str,
    pub cause: &'static str,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    verifications: Family<OutcomeLabels, Counter>,
    unavailable: Family<UnavailableLabels, Counter>,
    log_dropped: Counter,
    spans_dropped: Counter,
    spans_exported: Counter,
    /// Serialises the catch-up of `log_dropped` between concurrent scrapes.
    log_sync: Mutex<()>,
    pub genome_reloads: ReloadCounter,
    pub rpc: RpcMetrics,
    pub coalescer: CoalescerMetrics,
    pub store_ops: StoreOps,
    pub replay_cache_hits: Counter,
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("settlegate");
        let requests = Family::<RequestLabels, Counter>::default();
        r.register("http_requests", "HTTP responses by route and status", requests.clone());
        let verifications = Family::<OutcomeLabels, Counter>::default();
        r.register(
            "verifications",
            "Payment check outcomes by status, code and reason",
            verifications.clone(),
        );
        let unavailable = Family::<UnavailableLabels, Counter>::default();
        r.register(
            "unavailable",
            "503 answers by code and cause (rpc_timeout, store_connection, rpc_wrong_chain, …): the RPC and store health signal",
            unavailable.clone(),
        );
        let genome_reloads = ReloadCounter::default();
        r.register(
            "genome_reloads",
            "Genome reload attempts by outcome (swapped, unchanged, refused) and refusal code",
            genome_reloads.clone(),
        );
        let rpc = RpcMetrics::default();
        r.register(
            "rpc_requests",
            "JSON-RPC calls sent to Tempo nodes by endpoint, method and outcome (a batch counts each call)",
            rpc.calls.clone(),
        );
        r.register(
            "rpc_http_requests",
            "HTTP round trips to Tempo nodes by endpoint and outcome",
            rpc.http.clone(),
        );
        let coalescer = CoalescerMetrics::default();
        r.register(
            "chain_lookups",
            "Chain lookups started by the coalescer (each reaches the RPC pool once)",
            coalescer.lookups.clone(),
        );
        r.register(
            "coalesced_checks",
            "Checks that joined a lookup already in flight",
            coalescer.joined.clone(),
        );
        r.register(
            "coalescer_held_answers",
            "Checks answered from a refusing result held for the coalescer window",
            coalescer.held.clone(),
        );
        let store_ops = StoreOps::default();
        r.register(
            "replay_store_ops",
            "Replay store round trips by operation and outcome",
            store_ops.clone(),
        );
        let replay_cache_hits = Counter::default();
        r.register(
            "replay_cache_hits",
            "Consumed payments recognised from the in-process cache, without a store round trip",
            replay_cache_hits.clone(),
        );
        let log_dropped = Counter::default();
        r.register(
            "log_lines_dropped",
            "Log lines dropped because the log writer's bounded queue was full",
            log_dropped.clone(),
        );
        let spans_dropped = Counter::default();
        r.register(
            "otel_spans_dropped",
            "Spans not exported: the export queue was full (a slow or dead collector) or their export failed",
            spans_dropped.clone(),
        );
        let spans_exported = Counter::default();
        r.register(
            "otel_spans_exported",
            "Spans the OTLP collector accepted",
            spans_exported.clone(),
        );
        Metrics {
            registry: r,
            spans_dropped,
            spans_exported,
            requests,
            verifications,
            unavailable,
            log_dropped,
            log_sync: Mutex::new(()),
            genome_reloads,
            rpc,
            coalescer,
            store_ops,
            replay_cache_hits,
        }
    }

    pub fn observe_request(&self, route: &'static str, status: u16) {
        self.requests.get_or_create(&RequestLabels { route, status }).inc();
    }

    /// Counts one payment check's outcome (and, for a 503, its cause).
    pub fn observe_outcome(&self, outcome: &Outcome) {
        self.verifications
            .get_or_create(&OutcomeLabels {
                status: outcome.status(),
                code: outcome.code(),
                reason: outcome.reason().map_or("", |r| r.as_str()),
            })
            .inc();
        if let Outcome::Unavailable(u) = outcome {
            self.unavailable
                .get_or_create(&UnavailableLabels {
                    code: u.code(),
                    cause: u.cause(),
                })
                .inc();
        }
    }

    pub fn encode(&self) -> String {
        {
            let _one_at_a_time = self.log_sync.lock();
            // process-wide totals kept by the writer threads, caught up here
            for (counter, total) in [
                (&self.log_dropped, crate::telemetry::dropped_lines()),
                (&self.spans_dropped, crate::otel::dropped_spans()),
                (&self.spans_exported, crate::otel::exported_spans()),
            ] {
                let shown = counter.get();
                if total > shown {
                    counter.inc_by(total - shown);
                }
            }
        }
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
