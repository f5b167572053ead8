//! The HTTP surface: routes, the per-request context (request id, span,
//! access log, metrics) and the problem+json error edge. Handlers stay thin:
//! they read the shared state, ask an actor, and render.

mod ops;
pub mod payment;
pub mod problem;
pub mod request_context;
mod verify;

use std::sync::Arc;

use actix::Addr;
use actix_web::{ResponseError, web};
use settlegate_actors::ActiveGenome;
use settlegate_actors::replay_guard::ReplayGuard;
use settlegate_actors::rpc_pool::RpcPool;

use crate::metrics::Metrics;
use crate::settle::Settler;
use problem::ApiError;

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
