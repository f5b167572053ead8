//! The HTTP surface: routes, the per-request context (request id, span,
//! access log, metrics) and the problem+json error edge. Handlers stay thin:
//! they read the shared state, ask an actor, and render.

mod ops;
pub mod problem;
pub mod request_context;
pub mod respond;
mod verify;

use std::sync::Arc;

use actix::Addr;
use actix_web::{HttpResponse, ResponseError, web};
use settlegate_actors::ActiveGenome;
use settlegate_actors::replay_guard::ReplayGuard;
use settlegate_actors::rpc_pool::RpcPool;

use crate::metrics::Metrics;
use crate::outcome::Outcome;
use crate::settle::Settler;
use problem::ApiError;
pub use request_context::RequestLog;

/// State shared by every worker (cloned per worker; the inner values are
/// handles to the same actors and registries).
#[derive(Clone)]
pub struct AppState {
    pub genome: ActiveGenome,
    pub metrics: Arc<Metrics>,
    pub settler: Settler,
    pub rpc: Addr<RpcPool>,
    pub replay: Addr<ReplayGuard>,
    /// `redis` or `local`, for `/readyz`.
    pub replay_backend: &'static str,
    /// The level of the per-request log line.
    pub request_log: RequestLog,
}

impl AppState {
    /// Counts `outcome`, records it on the request's span (so the one
    /// request log line says what happened) and renders it.
    pub fn answer(&self, outcome: Outcome) -> HttpResponse {
        self.metrics.observe_outcome(&outcome);
        let span = tracing::Span::current();
        span.record("code", outcome.code());
        if let Some(r) = outcome.reason() {
            span.record("reason", r.as_str());
        }
        match &outcome {
            Outcome::Unavailable(u) => {
                span.record("cause", u.cause());
                span.record("error", u.detail());
            }
            Outcome::Settled(s) => {
                span.record("idempotent_replay", s.idempotent_replay);
            }
            Outcome::Denied(..) => {}
        }
        respond::respond(&outcome)
    }
}

/// Registers every route on an actix-web `App`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/healthz").route(web::get().to(ops::healthz)))
        .service(resource("/readyz").route(web::get().to(ops::readyz)))
        .service(resource("/metrics").route(web::get().to(ops::metrics)))
        .service(resource("/v1/genome").route(web::get().to(ops::genome)))
        .service(
            resource("/v1/verify")
                .app_data(verify::json_config())
                .route(web::post().to(verify::verify)),
        )
        .default_service(web::to(not_found));
}

/// A resource whose other methods answer 405 in problem+json.
fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(method_not_allowed))
}

async fn not_found(req: actix_web::HttpRequest) -> actix_web::HttpResponse {
    ApiError::NotFound(format!("{} {}", req.method(), req.path())).error_response()
}

async fn method_not_allowed(req: actix_web::HttpRequest) -> actix_web::HttpResponse {
    ApiError::MethodNotAllowed(req.method().to_string()).error_response()
}
