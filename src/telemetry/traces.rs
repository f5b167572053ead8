//! Trace export over OTLP (gRPC or HTTP/protobuf), off the request path.
//!
//! The tracing spans of a request (the HTTP request, each actor message,
//! each JSON-RPC call and Redis command) become OpenTelemetry spans through
//! `tracing-opentelemetry`. Ended spans go to a bounded queue
//! ([`QueueProcessor`]): a request never waits for the collector, and when
//! the queue is full (a dead, slow or hung collector) spans are dropped and
//! counted ([`dropped_spans`], `settlegate_otel_spans_dropped_total`). One
//! exporter thread drains the queue in batches with its own single-threaded
//! tokio runtime (the gRPC exporter needs one); an export that fails counts
//! its spans as dropped.
//!
//! Spans that exist only for traces use the target [`TRACE_TARGET`]: the
//! log layer ignores them, so without an exporter they are disabled at
//! their call site, and the actors do not even make them
//! ([`settlegate_actors::traces_on`], which [`start`] turns on). The
//! request span stays either way: its fields are on every log line of the
//! request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::TelemetryError;
use crate::settings::{Otel, OtlpProtocol};

/// The target of spans that exist for traces only (not for log lines).
pub const TRACE_TARGET: &str = "settlegate::trace";

/// Spans per export request at most.
const MAX_BATCH: usize = 512;
/// How long a partial batch waits for more spans.
const BATCH_DELAY: Duration = Duration::from_millis(500);
/// Bound on one export call.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

static DROPPED: AtomicU64 = AtomicU64::new(0);
static EXPORTED: AtomicU64 = AtomicU64::new(0);

/// Whether spans are exported (an endpoint is configured).
pub fn enabled() -> bool {
    settlegate_actors::traces_on()
}

/// Spans dropped so far: the queue was full, or their export failed.
pub fn dropped_spans() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Spans the collector accepted so far.
pub fn exported_spans() -> u64 {
    EXPORTED.load(Ordering::Relaxed)
}

enum Item {
    Span(Box<SpanData>),
    Flush(SyncSender<()>),
}

/// A bounded queue in front of the exporter thread.
#[derive(Debug)]
pub struct QueueProcessor {
    tx: SyncSender<Item>,
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _: &mut Span, _: &Context) {}

    fn on_end(&self, span: SpanData) {
        match self.tx.try_send(Item::Span(Box::new(span))) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                DROPPED.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.flush(EXPORT_TIMEOUT)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.flush(timeout)
    }
}

impl QueueProcessor {
    /// Waits until what was queued before the call has been exported (or
    /// dropped), for at most `timeout`.
    fn flush(&self, timeout: Duration) -> OTelSdkResult {
        let (ack, done) = sync_channel(1);
        // A full queue: the flush marker waits its turn, up to the timeout.
        let deadline = Instant::now() + timeout;
        let mut item = Item::Flush(ack);
        loop {
            match self.tx.try_send(item) {
                Ok(()) => break,
                Err(TrySendError::Full(back)) if Instant::now() < deadline => {
                    item = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => return Err(OTelSdkError::Timeout(timeout)),
            }
        }
        done.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .map_err(|_| OTelSdkError::Timeout(timeout))
    }
}

/// Builds the exporter in the exporter thread's runtime, then exports
/// batches until every sender is gone.
fn run_exporter(config: Otel, rx: Receiver<Item>, ready: SyncSender<Result<(), TelemetryError>>) {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(TelemetryError::Runtime(e)));
            return;
        }
    };
    let built = rt.block_on(async {
        let resource = resource(&config);
        let exporter = match config.protocol {
            OtlpProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(config.endpoint.as_str())
                .with_timeout(EXPORT_TIMEOUT)
                .build(),
            OtlpProtocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(config.endpoint.as_str())
                .with_timeout(EXPORT_TIMEOUT)
                .with_headers(Default::default())
                .build(),
        };
        exporter.map(|mut e| {
            e.set_resource(&resource);
            e
        })
    });
    let exporter = match built {
        Ok(e) => {
            let _ = ready.send(Ok(()));
            e
        }
        Err(e) => {
            let _ = ready.send(Err(TelemetryError::Exporter(e)));
            return;
        }
    };
    let mut failing = false;
    let mut batch: Vec<SpanData> = Vec::with_capacity(MAX_BATCH);
    let mut flushes: Vec<SyncSender<()>> = Vec::new();
    loop {
        // Wait for a first item, then gather a batch for a short while.
        match rx.recv() {
            Ok(Item::Span(s)) => batch.push(*s),
            Ok(Item::Flush(ack)) => flushes.push(ack),
            Err(_) => break,
        }
        let deadline = Instant::now() + BATCH_DELAY;
        while batch.len() < MAX_BATCH && flushes.is_empty() {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(Item::Span(s)) => batch.push(*s),
                Ok(Item::Flush(ack)) => flushes.push(ack),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        if !batch.is_empty() {
            let n = batch.len() as u64;
            let sent = std::mem::replace(&mut batch, Vec::with_capacity(MAX_BATCH));
            let result = rt.block_on(async {
                tokio::time::timeout(EXPORT_TIMEOUT, exporter.export(sent))
                    .await
                    .unwrap_or(Err(OTelSdkError::Timeout(EXPORT_TIMEOUT)))
            });
            match result {
                Ok(()) => {
                    EXPORTED.fetch_add(n, Ordering::Relaxed);
                    if failing {
                        failing = false;
                        tracing::info!(endpoint = %config.endpoint, "OTLP export works again");
                    }
                }
                Err(e) => {
                    DROPPED.fetch_add(n, Ordering::Relaxed);
                    if !failing {
                        failing = true;
                        tracing::warn!(endpoint = %config.endpoint, error = %e,
                            "OTLP export failed; spans are dropped and counted until it works");
                    }
                }
            }
        }
        for ack in flushes.drain(..) {
            let _ = ack.send(());
        }
    }
    let _ = exporter.shutdown();
}

fn resource(config: &Otel) -> Resource {
    Resource::builder_empty()
        .with_attributes(
            config
                .resource_attributes()
                .into_iter()
                .map(|(k, v)| KeyValue::new(k, v)),
        )
        .build()
}

/// Starts the exporter thread and returns the tracer provider whose spans
/// it exports. Fails (a boot error) when the exporter cannot be built.
pub fn start(config: &Otel) -> Result<opentelemetry_sdk::trace::SdkTracerProvider, TelemetryError> {
    let (tx, rx) = sync_channel(config.max_queue_size);
    let (ready, is_ready) = sync_channel(1);
    let thread_config = config.clone();
    std::thread::Builder::new()
        .name("settlegate-otlp".into())
        .spawn(move || run_exporter(thread_config, rx, ready))
        .map_err(TelemetryError::Thread)?;
    is_ready.recv().map_err(|_| TelemetryError::ThreadStopped)??;
    settlegate_actors::set_traces_on(true);
    Ok(opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_span_processor(QueueProcessor { tx })
        .with_resource(resource(config))
        .build())
}

struct Headers<'a>(&'a actix_web::http::header::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Makes the caller's W3C `traceparent` (and `tracestate`) the parent of
/// `span`, when it is valid and export is on.
pub fn adopt_remote_parent(span: &tracing::Span, headers: &actix_web::http::header::HeaderMap) {
    if !enabled() || !headers.contains_key("traceparent") {
        return;
    }
    let cx = TraceContextPropagator::new().extract(&Headers(headers));
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// The W3C `traceresponse` value naming `span` (version 00), when export
/// is on.
pub fn traceresponse(span: &tracing::Span) -> Option<String> {
    let sc = span_context(span)?;
    Some(format!(
        "00-{}-{}-{:02x}",
        sc.trace_id(),
        sc.span_id(),
        sc.trace_flags().to_u8()
    ))
}

/// The trace id and span id of `span`, in hex, when export is on.
pub fn ids(span: &tracing::Span) -> Option<(String, String)> {
    let sc = span_context(span)?;
    Some((sc.trace_id().to_string(), sc.span_id().to_string()))
}

fn span_context(span: &tracing::Span) -> Option<opentelemetry::trace::SpanContext> {
    if !enabled() {
        return None;
    }
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then_some(sc)
}
