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
use actix_web::web;
use tracing::Instrument;

use super::AppState;

/// The level of the per-request line for answers below 500 (`log.request_level`).
/// 5xx answers are always logged, at `warn`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestLog {
    Info,
    Debug,
    Off,
}

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
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

fn new_request_id() -> String {
    let mut bytes = [0u8; 16];
    // A request id is not a secret; if the OS RNG fails, a time-based id
    // still correlates logs.
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        bytes = nanos.to_le_bytes();
    }
    hex::encode(bytes)
}

pub async fn request_context(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let request_id = caller_request_id(&req).unwrap_or_else(new_request_id);
    let span = tracing::info_span!(
        "http_request",
        request_id = %request_id,
        method = %req.method(),
        path = %req.path(),
        genome_id = tracing::field::Empty,
        tx_hash = tracing::field::Empty,
        code = tracing::field::Empty,
        reason = tracing::field::Empty,
        cause = tracing::field::Empty,
        error = tracing::field::Empty,
        idempotent_replay = tracing::field::Empty,
    );
    let (metrics, level) = match req.app_data::<web::Data<AppState>>() {
        Some(s) => (Some(s.metrics.clone()), s.request_log),
        None => (None, RequestLog::Info),
    };
    let started = Instant::now();
    let mut res = next.call(req).instrument(span.clone()).await?;

    // unwrap: the id is ASCII from the allow-list above or hex.
    res.headers_mut()
        .insert(REQUEST_ID, HeaderValue::from_str(&request_id).unwrap());
    let status = res.status().as_u16();
    let route = res.request().match_pattern().unwrap_or_else(|| "unmatched".into());
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    if let Some(m) = metrics {
        m.observe_request(&route, status);
    }
    span.in_scope(|| match level {
        _ if status >= 500 => tracing::warn!(status, route = %route, elapsed_ms, "request failed"),
        RequestLog::Info => tracing::info!(status, route = %route, elapsed_ms, "request served"),
        RequestLog::Debug => tracing::debug!(status, route = %route, elapsed_ms, "request served"),
        RequestLog::Off => {}
    });
    Ok(res)
}
