//! Telemetry: log lines ([`logs`]), traces over OTLP ([`traces`]), the
//! Prometheus registry ([`metrics`]) and its push over OTLP ([`push`]).
//!
//! Everything here is off the request path (bounded buffers and queues,
//! drops counted, never waited for) and reads only the settings: the HTTP
//! surface calls in, nothing here calls out to it. What a metrics push
//! refreshes before it encodes is handed in as a [`push::Source`].

pub mod logs;
pub mod metrics;
pub mod push;
pub mod traces;

use std::time::Duration;

use crate::settings::Otel;

pub use logs::dropped_lines;

/// Why telemetry could not start, or an export failed.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot start the OTLP exporter's runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("cannot build the OTLP exporter: {0}")]
    Exporter(#[source] opentelemetry_otlp::ExporterBuildError),
    #[error("cannot start the OTLP exporter thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("the OTLP exporter thread stopped")]
    ThreadStopped,
    /// The metrics endpoint is not a URI gRPC can dial.
    #[error("otel.endpoint {endpoint}: {reason}")]
    MetricsEndpoint { endpoint: url::Url, reason: String },
    #[error("cannot build the OTLP metrics client: {0}")]
    MetricsClient(#[source] reqwest::Error),
    /// A metrics push the collector refused or never answered.
    #[error("{0}")]
    Grpc(#[from] tonic::Status),
    #[error("{0}")]
    Http(#[source] reqwest::Error),
    #[error("the collector answered {0}")]
    Refused(reqwest::StatusCode),
    #[error("timed out")]
    TimedOut,
}

/// Keeps the log writer and the trace exporter running; dropping it
/// flushes both.
#[must_use = "dropping the guard stops the log writer and the trace exporter"]
pub struct TelemetryGuard {
    traces: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
    _log: logs::LogGuard,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(p) = self.traces.take() {
            // bounded: a dead collector must not hold the exit up
            let _ = p.shutdown_with_timeout(Duration::from_secs(2));
        }
    }
}

/// Installs the global subscriber: JSON log lines through a buffer of
/// `buffer_lines`, and, with `otel`, trace export over OTLP. Call once,
/// from `main`, for `serve`. Fails when the exporter cannot be built.
pub fn init(buffer_lines: usize, json: bool, otel: Option<&Otel>) -> Result<TelemetryGuard, TelemetryError> {
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    let (log, lines) = logs::layer(buffer_lines, json);
    let traces = otel.map(traces::start).transpose()?;
    match &traces {
        Some(p) => {
            let trace_layer = tracing_opentelemetry::layer()
                .with_tracer(p.tracer("settlegate"))
                // source locations, thread ids and busy/idle times are not
                // worth their cost on every span of every request
                .with_location(false)
                .with_threads(false)
                .with_tracked_inactivity(false)
                .with_filter(tracing_subscriber::filter::LevelFilter::INFO);
            tracing_subscriber::registry().with(lines).with(trace_layer).init();
        }
        // No trace layer at all (not an absent one, which would answer
        // "always" for every call site): the log layer's filter then
        // disables the spans that exist for traces where they are made.
        None => tracing_subscriber::registry().with(lines).init(),
    }
    Ok(TelemetryGuard { traces, _log: log })
}
