//! The pool's Prometheus series. Endpoint labels are the names of
//! [`super::redact::endpoint_name`] (or hosts, when exposed), never a URL.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

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
