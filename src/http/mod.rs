//! The HTTP surface: routes, the per-request context (request id, span,
//! access log, metrics) and the problem+json error edge. Handlers stay thin:
//! they read the shared state, ask an actor, and render.

mod ops;
pub mod problem;
pub mod request_context;

use std::sync::Arc;

use actix_web::{ResponseError, web};
use settlegate_actors::ActiveGenome;

use crate::metrics::Metrics;
use problem::ApiError;

/// State shared by every worker (cloned per worker; the inner values are
/// handles to the same actors and registries).
#[derive(Clone)]
pub struct AppState {
    pub genome: ActiveGenome,
    pub metrics: Arc<Metrics>,
}

/// Registers every route on an actix-web `App`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/healthz").route(web::get().to(ops::healthz)))
        .service(resource("/readyz").route(web::get().to(ops::readyz)))
        .service(resource("/metrics").route(web::get().to(ops::metrics)))
        .service(resource("/v1/genome").route(web::get().to(ops::genome)))
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
