//! The admin API: the operator's reads of the books (payments, revenue),
//! the open session channels, and the payer deny list, on a listener of
//! its own (`[admin]`), never on the gate's.
//!
//! Invariants:
//! - on only with the ledger on and a token digest configured; on
//!   loopback unless `admin.allow_remote` (the settings refuse otherwise);
//! - every request, whatever its path, needs a valid bearer token
//!   ([`auth`]) before anything else is read: an unknown path is a 401
//!   to a stranger, a 404 only to an operator;
//! - the gate's edge limits hold here too: head size, the body deadline,
//!   the slow-client timeout, and a 4 KiB body; each database call is
//!   bounded by `admin.query_timeout_ms`;
//! - a change to the deny list is in force on this instance when its
//!   answer is sent, on the others within `admin.deny_refresh_seconds`;
//! - one log line per request (method, path, status, time), never a
//!   header: the token stays out of the logs.

pub mod auth;
pub mod routes;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{Server, ServiceRequest, ServiceResponse};
use actix_web::middleware::{Next, from_fn};
use actix_web::{App, HttpRequest, HttpServer, ResponseError, mime, web};
use settlegate_actors::ledger::Pool;
use settlegate_actors::ledger::deny::DenyList;

use super::AppState;
use super::problem::ApiError;

/// The largest body the admin API reads (a denial's reason).
pub const MAX_BODY: usize = 4 * 1024;
/// Connections served at once: a few operators and tools.
const MAX_CONNECTIONS: usize = 64;

/// What the admin handlers share.
#[derive(Clone)]
pub struct AdminState {
    /// The gate's state: the genome, the channel book, the RPC pool.
    pub app: AppState,
    /// Connections for the operator's reads (bounded by the query timeout
    /// on the server's side too).
    pub pool: Pool,
    pub denials: DenyList,
    pub tokens: Arc<auth::Tokens>,
    pub query_timeout: Duration,
    pub rpc_timeout: Duration,
    /// One channel scan at a time.
    pub scans: Arc<tokio::sync::Semaphore>,
}

impl AdminState {
    /// A committed change of the deny list, in force here at once.
    fn changed(&self, payer: &str, denied: bool) {
        if let Ok(a) = payer.parse::<alloy_primitives::Address>() {
            self.denials.set_one(a, denied);
        }
    }
}

/// The admin routes. One more (`/admin/v1/<name>`) is a `.service` here
/// and its handler in [`routes`].
pub fn configure(cfg: &mut web::ServiceConfig) {
    use super::resource;
    cfg.service(resource("/admin/v1/payments", "GET").route(web::get().to(routes::payments)))
        .service(resource("/admin/v1/revenue", "GET").route(web::get().to(routes::revenue)))
        .service(resource("/admin/v1/sessions", "GET").route(web::get().to(routes::sessions)))
        .service(resource("/admin/v1/webhooks", "GET").route(web::get().to(routes::webhooks)))
        .service(resource("/admin/v1/denials", "GET").route(web::get().to(routes::denials)))
        .service(
            resource("/admin/v1/denials/{payer}", "PUT, DELETE")
                .route(web::put().to(routes::deny))
                .route(web::delete().to(routes::allow)),
        )
        .default_service(web::to(not_found));
}

/// Bodies: JSON only, 4 KiB at most, unknown fields refused, each refusal
/// in problem+json. Query strings: unknown or repeated parameters refused.
fn json_config() -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(MAX_BODY)
        .content_type_required(true)
        .content_type(|m| m.type_() == mime::APPLICATION && m.subtype() == mime::JSON)
        .error_handler(|err, _| {
            use actix_web::error::JsonPayloadError as E;
            match &err {
                E::OverflowKnownLength { .. } | E::Overflow { .. } => ApiError::PayloadTooLarge(MAX_BODY),
                E::ContentType => ApiError::UnsupportedMediaType,
                E::Deserialize(e) => ApiError::InvalidRequest(format!("the body must be {{\"reason\": \"…\"}}: {e}")),
                other => ApiError::InvalidRequest(format!("the body could not be read: {other}")),
            }
            .into()
        })
}

fn query_config() -> web::QueryConfig {
    web::QueryConfig::default()
        .error_handler(|err, _| ApiError::InvalidRequest(format!("the query string: {err}")).into())
}

/// Every request's token, before its route is looked at.
async fn admit(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let refusal = match req.app_data::<web::Data<AdminState>>() {
        Some(state) => state.tokens.admit(req.headers()).err(),
        None => Some(ApiError::Unauthorized("the admin API is not configured".into())),
    };
    match refusal {
        Some(e) => Ok(req.error_response(e).map_into_right_body()),
        None => next.call(req).await.map(ServiceResponse::map_into_left_body),
    }
}

/// One line per request: method, path, status, time. No header, no
/// query string, no body.
async fn access_log(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let (method, path) = (req.method().to_string(), req.path().to_owned());
    let res = next.call(req).await?;
    let status = res.status().as_u16();
    let elapsed_us = started.elapsed().as_micros() as u64;
    if status >= 500 {
        tracing::warn!(method, path, status, elapsed_us, "admin request failed");
    } else {
        tracing::info!(method, path, status, elapsed_us, "admin request served");
    }
    Ok(res)
}

/// The admin server on `listener` (TLS with `tls`), not yet running: the
/// caller awaits it beside the gate's.
pub fn server(
    state: AdminState,
    listener: TcpListener,
    tls: Option<rustls::ServerConfig>,
    client_request_timeout: Duration,
) -> std::io::Result<Server> {
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(state.clone()))
            // The body deadline reads `server.request_body_timeout_ms` here.
            .app_data(web::Data::new(state.app.clone()))
            .app_data(json_config())
            .app_data(query_config())
            .wrap(from_fn(admit))
            .wrap(from_fn(super::head_limits))
            .wrap(from_fn(super::deadline::body_deadline))
            .wrap(from_fn(access_log))
            .configure(configure)
    })
    .workers(1)
    .max_connections(MAX_CONNECTIONS)
    .client_request_timeout(client_request_timeout)
    .shutdown_timeout(5)
    .disable_signals();
    Ok(match tls {
        Some(config) => server.listen_rustls_0_23(listener, config)?,
        None => server.listen(listener)?,
    }
    .run())
}

/// 404 in problem+json (for an operator: a stranger got 401 before).
pub async fn not_found(req: HttpRequest) -> actix_web::HttpResponse {
    ApiError::NotFound(format!("{} {}", req.method(), req.path())).error_response()
}
