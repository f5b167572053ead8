//! Per-request context: every response carries `X-Request-Id` (the caller's
//! when it is sane, a fresh one otherwise), every request runs in a span
//! that carries that id, and ends in one structured log line and one metric
//! sample. Handlers record what happened (tx hash, code, reason, cause of a
//! 503) on the span, so that one line says it all; it is written by the
//! non-blocking writer of `telemetry`, off the request path.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, web};
use tracing::Instrument;

use super::AppState;
pub use crate::settings::RequestLog;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// W3C Trace Context Level 2: the trace and span that answered.
pub const TRACERESPONSE: HeaderName = HeaderName::from_static("traceresponse");
/// A caller's id longer than this, or with other characters, is replaced:
/// it ends up in logs, and logs must not be an injection channel.
const MAX_REQUEST_ID_LEN: usize = 128;

fn caller_request_id(req: &ServiceRequest) -> Option<String> {
    let v = req.headers().get(&REQUEST_ID)?.to_str().ok()?;
    let ok = !v.is_empty()
        && v.len() <= MAX_REQUEST_ID_LEN
        && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=".contains(&b));
    ok.then(|| v.to_owned())
}

/// A fresh request id: a random per-process prefix and a counter. Unique
/// within the process and across restarts, and free of a system call per
/// request (a request id correlates logs; it is not a secret).
fn new_request_id() -> String {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| {
        let mut b = [0u8; 8];
        if getrandom::fill(&mut b).is_err() {
            // no OS randomness: the start time still separates restarts
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or_default();
            b = nanos.to_le_bytes();
        }
        u64::from_le_bytes(b)
    });
    format!("{prefix:016x}{:016x}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// What a handler found out about a payment check, for the request's one
/// log line. Handlers put it in the request's extensions
/// ([`AppState::answer`](super::AppState::answer) does).
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub code: Option<&'static str>,
    pub reason: Option<&'static str>,
    pub tx_hash: Option<String>,
    pub genome_id: Option<String>,
    /// For a 503: which failure, and its internal detail.
    pub cause: Option<&'static str>,
    pub error: Option<String>,
    pub idempotent_replay: Option<bool>,
    /// What a 200 settled, in the token's base units (for traces).
    pub amount: Option<String>,
}

/// The route label of a response: the matched pattern for known routes,
/// without allocating per request.
const ROUTES: [&str; 8] = [
    "/healthz",
    "/readyz",
    "/metrics",
    "/v1/genome",
    "/v1/verify",
    "/v1/authorize",
    "/v1/discovery/openapi.json",
    "/v1/discovery/llms.txt",
];

fn route_label(res: &ServiceResponse<impl MessageBody>) -> &'static str {
    let path = res.request().path();
    ROUTES.iter().copied().find(|r| *r == path).unwrap_or("unmatched")
}

pub async fn request_context(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let request_id = caller_request_id(&req).unwrap_or_else(new_request_id);
    // The span carries what every line of the request needs; what the
    // handler found out goes on the request's own line (cheaper to format
    // than span fields, which are re-read for every event).
    let span = tracing::info_span!(
        "http_request",
        request_id = %request_id,
        method = %req.method(),
        path = %req.path(),
        otel.kind = tracing::field::Empty,
        otel.name = tracing::field::Empty,
        http.request.method = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
        http.route = tracing::field::Empty,
        tx_hash = tracing::field::Empty,
        code = tracing::field::Empty,
        reason = tracing::field::Empty,
        genome_id = tracing::field::Empty,
        amount = tracing::field::Empty,
        error.type = tracing::field::Empty,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
    );
    let traced = crate::telemetry::traces::enabled();
    if traced {
        // OpenTelemetry's HTTP conventions; recorded only for traces, so
        // the log lines stay as they are
        span.record("otel.kind", "server");
        // `{method} {route}` for the known routes; the method alone for
        // anything else (a span name must not carry arbitrary paths)
        let name = match ROUTES.iter().find(|r| **r == req.path()) {
            Some(route) => format!("{} {route}", req.method()),
            None => req.method().to_string(),
        };
        span.record("otel.name", name);
        span.record("http.request.method", req.method().as_str());
        crate::telemetry::traces::adopt_remote_parent(&span, req.headers());
        // every log line of the request names its trace and span
        if let Some((trace_id, span_id)) = crate::telemetry::traces::ids(&span) {
            span.record("trace_id", trace_id.as_str());
            span.record("span_id", span_id.as_str());
        }
    }
    let (metrics, level) = match req.app_data::<web::Data<AppState>>() {
        Some(s) => (Some(s.metrics.clone()), s.request_log),
        None => (None, RequestLog::Info),
    };
    let started = Instant::now();
    let mut res = next.call(req).instrument(span.clone()).await?;

    // unwrap: the id is ASCII from the allow-list above or hex.
    res.headers_mut()
        .insert(REQUEST_ID, HeaderValue::from_str(&request_id).unwrap());
    if let Some(tr) = crate::telemetry::traces::traceresponse(&span) {
        // unwrap: hex digits and dashes
        res.headers_mut()
            .insert(TRACERESPONSE, HeaderValue::from_str(&tr).unwrap());
    }
    let status = res.status().as_u16();
    let route = route_label(&res);
    let elapsed_us = started.elapsed().as_micros() as u64;
    // What the handler found out: read once, for the metrics, the span and
    // the log line.
    let summary = res.request().extensions_mut().remove::<Summary>();
    if let Some(m) = &metrics {
        m.observe_request(route, status);
        if matches!(route, "/v1/verify" | "/v1/authorize") {
            // `none`: refused before a payment check (a 400, 403, 413…)
            let code = summary.as_ref().and_then(|s| s.code).unwrap_or("none");
            m.observe_verification(route, code, elapsed_us as f64 / 1e6);
        }
    }
    let failed = status >= 500;
    if traced {
        span.record("http.response.status_code", status);
        span.record("http.route", route);
        if let Some(s) = &summary {
            for (k, v) in [
                ("tx_hash", s.tx_hash.as_deref()),
                ("code", s.code),
                ("reason", s.reason),
                ("genome_id", s.genome_id.as_deref()),
                ("amount", s.amount.as_deref()),
                ("error.type", s.cause),
            ] {
                if let Some(v) = v {
                    span.record(k, v);
                }
            }
        }
    }
    if failed || level != RequestLog::Off {
        let summary = summary.unwrap_or_default();
        let s = &summary;
        macro_rules! line {
            ($level:ident, $message:literal) => {
                tracing::$level!(
                    parent: &span,
                    status,
                    route,
                    elapsed_us,
                    code = s.code,
                    reason = s.reason,
                    tx_hash = s.tx_hash.as_deref(),
                    genome_id = s.genome_id.as_deref(),
                    cause = s.cause,
                    error = s.error.as_deref(),
                    idempotent_replay = s.idempotent_replay,
                    $message
                )
            };
        }
        match level {
            _ if failed => line!(warn, "request failed"),
            RequestLog::Info => line!(info, "request served"),
            RequestLog::Debug => line!(debug, "request served"),
            RequestLog::Off => {}
        }
    }
    Ok(res)
}
