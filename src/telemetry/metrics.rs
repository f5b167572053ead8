//! Prometheus metrics (OpenMetrics text on `GET /metrics`). One registry,
//! built once at boot; the families are cheap handles shared with actors.

use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use settlegate_actors::coalescer::CoalescerMetrics;
use settlegate_actors::genome_supervisor::ReloadCounter;
use settlegate_actors::replay_guard::StoreOps;
use settlegate_actors::rpc_pool::RpcMetrics;
use std::sync::atomic::AtomicU64;

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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DurationLabels {
    route: &'static str,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ExportLabels {
    outcome: &'static str,
}

pub struct Metrics {
    verification_seconds: Family<DurationLabels, Histogram, fn() -> Histogram>,
    endpoint_healthy: Family<EndpointLabels, Gauge>,
    endpoint_circuit_open: Family<EndpointLabels, Gauge>,
    genome_expires_in: Gauge<f64, AtomicU64>,
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    verifications: Family<OutcomeLabels, Counter>,
    unavailable: Family<UnavailableLabels, Counter>,
    log_dropped: Counter,
    spans_dropped: Counter,
    spans_exported: Counter,
    metric_exports: Family<ExportLabels, Counter>,
    /// Serialises the catch-up of `log_dropped` between concurrent scrapes.
    log_sync: Mutex<()>,
    pub genome_reloads: ReloadCounter,
    pub rpc: RpcMetrics,
    pub coalescer: CoalescerMetrics,
    pub store_ops: StoreOps,
    pub replay_cache_hits: Counter,
    pub settler: settlegate_actors::channels::SettlerMetrics,
    pub sponsor: SponsorMetrics,
    pub ledger: settlegate_actors::ledger::LedgerMetrics,
    pub webhooks: settlegate_actors::webhooks::WebhookMetrics,
    pub denials: settlegate_actors::ledger::deny::DenyMetrics,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SponsorLabels {
    pub outcome: &'static str,
}

/// The fee sponsor's state, as of its last read, and what it paid for.
#[derive(Clone, Default)]
pub struct SponsorMetrics {
    /// The sponsor's fee-token balance (atomic units; -1: unknown).
    pub balance: Gauge<f64, AtomicU64>,
    /// What the shared budget has left this period (-1: unknown).
    pub budget_remaining: Gauge<f64, AtomicU64>,
    /// 1 while challenges offer sponsorship, else 0.
    pub offered: Gauge,
    /// Sponsored transactions by outcome (broadcast, would_revert,
    /// budget_exhausted, …).
    pub transactions: Family<SponsorLabels, Counter>,
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
        r.register(
            "rpc_http_duration_seconds",
            "Time of each HTTP round trip to a Tempo node, by endpoint and outcome",
            rpc.latency.clone(),
        );
        let verification_seconds = Family::<DurationLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            settlegate_actors::rpc_pool::latency_histogram,
        );
        r.register(
            "verification_duration_seconds",
            "Time from request to answer of /v1/verify and /v1/authorize, by route and outcome code",
            verification_seconds.clone(),
        );
        let endpoint_healthy = Family::<EndpointLabels, Gauge>::default();
        r.register(
            "rpc_endpoint_healthy",
            "1 when the endpoint answers on the policy's chain with a closed circuit, else 0 (read at scrape)",
            endpoint_healthy.clone(),
        );
        let endpoint_circuit_open = Family::<EndpointLabels, Gauge>::default();
        r.register(
            "rpc_endpoint_circuit_open",
            "1 while the endpoint's circuit is open or half open (no lookups routed to it), else 0",
            endpoint_circuit_open.clone(),
        );
        let genome_expires_in = Gauge::<f64, AtomicU64>::default();
        r.register(
            "genome_expires_in_seconds",
            "Seconds until the active genome expires (negative: expired; absent expiry: 1e12), read at scrape",
            genome_expires_in.clone(),
        );
        let coalescer = CoalescerMetrics::default();
        r.register(
            "chain_lookups",
            "Chain lookups started by the coalescer (each reaches the RPC pool once, unless another instance answers it)",
            coalescer.lookups.clone(),
        );
        r.register(
            "coalescer_remote_answers",
            "Lookups answered by another instance's lookup, in flight or held (shared through Redis)",
            coalescer.remote.clone(),
        );
        r.register(
            "coalescer_fallbacks",
            "Lookups made without the other instances because the replay store could not coordinate them",
            coalescer.fallbacks.clone(),
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
        let settler = settlegate_actors::channels::SettlerMetrics::default();
        r.register(
            "channels_unsettled_amount",
            "Accepted session vouchers not yet settled on chain, summed over channels, in atomic units (as of the settler's last scan)",
            settler.unsettled.clone(),
        );
        r.register(
            "channels_oldest_unsettled_seconds",
            "Seconds since the oldest unsettled voucher's clock started (its channel's last settlement or first unsettled scan)",
            settler.oldest_unsettled.clone(),
        );
        r.register(
            "channel_settlements",
            "Settle and close transactions of the channel settler, by action and outcome (ok or the failure's cause)",
            settler.settlements.clone(),
        );
        let ledger = settlegate_actors::ledger::LedgerMetrics::default();
        r.register(
            "ledger_outbox_entries",
            "Consumed records waiting in the outbox for the ledger (PostgreSQL), as of the last read",
            ledger.outbox_entries.clone(),
        );
        r.register(
            "ledger_outbox_oldest_seconds",
            "How long the oldest record in the outbox has waited for the ledger (0: none)",
            ledger.outbox_oldest_seconds.clone(),
        );
        r.register(
            "ledger_outbox_max",
            "ledger.outbox_max: at this many waiting records consumes are refused (0: no ledger)",
            ledger.outbox_max.clone(),
        );
        for cause in settlegate_actors::ledger::LedgerError::CAUSES {
            let _ = ledger
                .failures
                .get_or_create(&settlegate_actors::ledger::FailureLabels { cause });
        }
        r.register(
            "ledger_rows",
            "Payment rows the ledger added to PostgreSQL",
            ledger.rows.clone(),
        );
        r.register(
            "ledger_write_failures",
            "Failed attempts to copy a batch of the outbox to PostgreSQL, by cause (database, database_timeout, schema, store)",
            ledger.failures.clone(),
        );
        r.register(
            "ledger_rejects",
            "Outbox entries that were not records, kept in the outbox_rejects table",
            ledger.rejects.clone(),
        );
        // Served from the start (at 0), so the alerts have their series.
        let webhooks = settlegate_actors::webhooks::WebhookMetrics::default().with_outcomes();
        r.register(
            "webhook_deliveries",
            "Webhook attempts by outcome: delivered (2xx), failed_attempt (retried later), dead (the last attempt failed)",
            webhooks.deliveries.clone(),
        );
        r.register(
            "webhook_pending",
            "Webhook deliveries waiting to be delivered, across every instance, as of the last read",
            webhooks.pending.clone(),
        );
        r.register(
            "webhook_oldest_pending_seconds",
            "How long the oldest pending webhook delivery has waited since it was created or requeued (0: none)",
            webhooks.oldest_pending_seconds.clone(),
        );
        r.register(
            "webhook_dead",
            "Dead webhook deliveries (attempts or age exhausted) awaiting `settlegate ledger webhooks requeue`",
            webhooks.dead.clone(),
        );
        let denials = settlegate_actors::ledger::deny::DenyMetrics::default();
        r.register(
            "payer_denials",
            "Payers on the deny list in force on this instance (as last read from PostgreSQL, or changed here)",
            denials.entries.clone(),
        );
        r.register(
            "payer_denials_refresh_failures",
            "Reads of the payer deny list that failed; the list in force stays until a read succeeds",
            denials.refresh_failures.clone(),
        );
        let sponsor = SponsorMetrics::default();
        // Served from the start (at 0), so a dashboard or an alert on it
        // has a series before the first sponsored transaction.
        for outcome in ["broadcast", "would_revert", "budget_exhausted", "refused"] {
            let _ = sponsor.transactions.get_or_create(&SponsorLabels { outcome });
        }
        sponsor.balance.set(-1.0);
        sponsor.budget_remaining.set(-1.0);
        r.register(
            "sponsor_balance",
            "The fee sponsor's balance of its fee token, in atomic units, as of its last read (-1: unknown)",
            sponsor.balance.clone(),
        );
        r.register(
            "sponsor_budget_remaining",
            "Fees the shared sponsorship budget can still hold this period, in atomic units (-1: unknown)",
            sponsor.budget_remaining.clone(),
        );
        r.register(
            "sponsor_offered",
            "1 while charge challenges offer fee sponsorship, 0 when the balance or budget ran out (or it is off)",
            sponsor.offered.clone(),
        );
        r.register(
            "sponsored_transactions",
            "Sponsored transactions by outcome (broadcast, would_revert, budget_exhausted, refused)",
            sponsor.transactions.clone(),
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
        let metric_exports = Family::<ExportLabels, Counter>::default();
        r.register(
            "otel_metric_exports",
            "OTLP metrics pushes by outcome (ok, failed: the collector is down, slow or refusing)",
            metric_exports.clone(),
        );
        Metrics {
            metric_exports,
            verification_seconds,
            endpoint_healthy,
            endpoint_circuit_open,
            genome_expires_in,
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
            settler,
            sponsor,
            ledger,
            webhooks,
            denials,
        }
    }

    pub fn observe_request(&self, route: &'static str, status: u16) {
        self.requests.get_or_create(&RequestLabels { route, status }).inc();
    }

    /// The time a payment check took, by route and outcome code.
    pub fn observe_verification(&self, route: &'static str, code: &'static str, seconds: f64) {
        self.verification_seconds
            .get_or_create(&DurationLabels { route, code })
            .observe(seconds);
    }

    /// Scrape-time state: each endpoint's health and circuit, and the
    /// genome's time to expiry.
    pub fn set_state(&self, endpoints: &[settlegate_actors::rpc_pool::EndpointStatus], expires_in: Option<f64>) {
        for e in endpoints {
            let labels = EndpointLabels {
                endpoint: e.endpoint.clone(),
            };
            self.endpoint_healthy.get_or_create(&labels).set(i64::from(
                e.state == settlegate_actors::rpc_pool::EndpointState::Healthy,
            ));
            self.endpoint_circuit_open
                .get_or_create(&labels)
                .set(i64::from(e.state.circuit_open()));
        }
        self.genome_expires_in.set(expires_in.unwrap_or(1e12));
    }

    /// Counts one payment check's outcome (and, for a 503, its cause).
    pub fn observe_outcome(&self, outcome: &Outcome) {
        self.verifications
            .get_or_create(&OutcomeLabels {
                status: outcome.status(),
                code: outcome.code(),
                reason: outcome.reason_label().unwrap_or(""),
            })
            .inc();
        if let Outcome::Unavailable(u) = outcome {
            self.unavailable
                .get_or_create(&UnavailableLabels {
                    code: u.code().as_str(),
                    cause: u.cause(),
                })
                .inc();
        }
    }

    /// Counts one OTLP metrics push.
    pub fn observe_metric_export(&self, ok: bool) {
        self.metric_exports
            .get_or_create(&ExportLabels {
                outcome: if ok { "ok" } else { "failed" },
            })
            .inc();
    }

    pub fn encode(&self) -> String {
        {
            let _one_at_a_time = self.log_sync.lock();
            // process-wide totals kept by the writer threads, caught up here
            for (counter, total) in [
                (&self.log_dropped, super::logs::dropped_lines()),
                (&self.spans_dropped, super::traces::dropped_spans()),
                (&self.spans_exported, super::traces::exported_spans()),
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
