//! The HTTP surface: routes, the per-request context (request id, span,
//! access log, metrics) and the problem+json error edge. Handlers stay thin:
//! they read the shared state, ask an actor, and render.

pub mod admin;
mod authorize;
pub mod callers;
pub mod deadline;
pub mod discovery;
pub mod gate;
pub mod openapi;
pub(crate) mod ops;
pub mod problem;
mod refusal;
pub mod request_context;
pub mod respond;
mod sponsor;
pub mod verify;

use std::sync::Arc;

use actix::Addr;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, ResponseError, web};
use settlegate_actors::ActiveGenome;
use settlegate_actors::replay_guard::ReplayGuard;
use settlegate_actors::rpc_pool::RpcPool;
use settlegate_rules::accept_payment::AcceptPayment;

use crate::outcome::Outcome;
use crate::settle::Settler;
use crate::telemetry::metrics::Metrics;
use problem::ApiError;
pub use request_context::{RequestLog, Summary};

/// State shared by every worker (cloned per worker; the inner values are
/// handles to the same actors and registries).
#[derive(Clone)]
pub struct AppState {
    pub genome: ActiveGenome,
    pub metrics: Arc<Metrics>,
    pub settler: Settler,
    /// Session credentials (payment channels).
    pub sessions: crate::session::Sessions,
    /// Settles channels on chain (with a payee key), or watches them.
    pub channel_settler: Addr<settlegate_actors::channels::ChannelSettler>,
    /// Whether the settler holds the payee's key.
    pub settler_on: bool,
    pub rpc: Addr<RpcPool>,
    pub replay: Addr<ReplayGuard>,
    /// `redis`, `redis-cluster` or `local`, for `/readyz`.
    pub replay_backend: &'static str,
    /// The level of the per-request log line.
    pub request_log: RequestLog,
    pub challenges: Arc<respond::Challenges>,
    /// Peers whose forwarded-request headers `/v1/authorize` believes.
    pub trusted_proxies: Arc<Vec<ipnet::IpNet>>,
    /// The header pair that names the original request on `/v1/authorize`.
    pub forwarded_headers: crate::settings::ForwardedHeaders,
    /// API keys and rate limits of `/v1/verify`.
    pub gatekeeper: Arc<callers::Gatekeeper>,
    /// How long a request's body may take to arrive after its head.
    pub request_body_timeout: std::time::Duration,
    /// The fee sponsor, when `sponsor.key_file` is set.
    pub sponsor: Option<Arc<crate::sponsor::Sponsor>>,
    /// The paid API's discovery documents, rendered per genome.
    pub discovery: Arc<discovery::Discovery>,
    /// The ledger and its outbox's bound, when `ledger.database_url` is set.
    pub ledger: Option<(actix::Addr<settlegate_actors::ledger::Ledger>, u64)>,
}

impl AppState {
    /// Whether `peer` is a proxy whose forwarded-request headers (and
    /// sealed refusals) `/v1/authorize` believes.
    pub fn trusted_proxy(&self, peer: Option<std::net::SocketAddr>) -> bool {
        peer.is_some_and(|peer| {
            let ip = peer.ip().to_canonical();
            self.trusted_proxies.iter().any(|net| net.contains(&ip))
        })
    }

    /// Counts `outcome`, notes it for the request's log line (so the one
    /// line says what happened) and renders it, a 402's `Payment`
    /// challenges as the client's `Accept-Payment` asks.
    pub fn answer(
        &self,
        req: &HttpRequest,
        summary: Summary,
        outcome: Outcome,
        offers: &AcceptPayment,
    ) -> HttpResponse {
        self.note(req, summary, &outcome);
        respond::respond(&outcome, &self.challenges, offers)
    }

    /// [`AppState::answer`] for forward-auth.
    pub fn answer_authorize(
        &self,
        req: &HttpRequest,
        summary: Summary,
        outcome: Outcome,
        offers: &AcceptPayment,
    ) -> HttpResponse {
        self.note(req, summary, &outcome);
        respond::respond_authorize(&outcome, &self.challenges, offers)
    }

    fn note(&self, req: &HttpRequest, mut summary: Summary, outcome: &Outcome) {
        self.metrics.observe_outcome(outcome);
        summary.code = Some(outcome.code());
        summary.reason = outcome.reason_label();
        match outcome {
            Outcome::Unavailable(u) => {
                summary.cause = Some(u.cause());
                summary.error = Some(u.detail());
            }
            Outcome::Settled(s) => {
                summary.idempotent_replay = Some(s.idempotent_replay);
                if crate::telemetry::traces::enabled() {
                    summary.amount = Some(s.amount.to_string());
                }
            }
            Outcome::Served(s) => {
                if crate::telemetry::traces::enabled() {
                    summary.amount = Some(s.amount.to_string());
                }
            }
            Outcome::Proven(_) => {
                if crate::telemetry::traces::enabled() {
                    summary.amount = Some("0".into());
                }
            }
            Outcome::Denied(..) => {}
        }
        req.extensions_mut().insert(summary);
    }
}

/// Registers every route on an actix-web `App`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/healthz", "GET").route(web::get().to(ops::healthz)))
        .service(resource("/readyz", "GET").route(web::get().to(ops::readyz)))
        .service(resource("/metrics", "GET").route(web::get().to(ops::metrics)))
        .service(resource("/v1/genome", "GET").route(web::get().to(ops::genome)))
        .service(resource("/openapi.json", "GET").route(web::get().to(openapi::openapi_json)))
        .service(resource("/v1/discovery/openapi.json", "GET").route(web::get().to(discovery::openapi_json)))
        .service(resource("/v1/discovery/llms.txt", "GET").route(web::get().to(discovery::llms_txt)))
        .service(
            resource("/v1/verify", "POST")
                .app_data(verify::json_config())
                .wrap(actix_web::middleware::from_fn(admit))
                .route(web::post().to(verify::verify)),
        )
        // Every standard method but TRACE: nginx `auth_request` sends the
        // original one; the price comes from the forwarded headers either way.
        .service(
            resource("/v1/authorize", authorize::METHODS)
                .wrap(actix_web::middleware::from_fn(admit_authorize))
                // outermost: the keys' and rates' refusals are sealed too
                .wrap(actix_web::middleware::from_fn(refusal::sealed_refusals))
                .route(web::route().guard(authorize::method_guard()).to(authorize::authorize)),
        )
        .default_service(web::to(not_found));
}

/// Limits on a request's head, whatever the route: actix-http reads heads
/// of up to 128 KiB (and 96 headers); no request of this API needs more
/// than a 8 KiB URI and 16 KiB of headers, so anything larger is refused
/// before a handler runs (414, 431).
pub const MAX_URI: usize = 8 * 1024;
pub const MAX_HEADERS: usize = 64;
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

type Served<B> = Result<actix_web::dev::ServiceResponse<actix_web::body::EitherBody<B>>, actix_web::Error>;

/// The end of a refusing middleware: `refusal` as problem+json, or the
/// rest of the chain.
async fn refuse_or_call<B: actix_web::body::MessageBody>(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<B>,
    refusal: Option<ApiError>,
) -> Served<B> {
    match refusal {
        Some(e) => Ok(req.error_response(e).map_into_right_body()),
        None => next
            .call(req)
            .await
            .map(actix_web::dev::ServiceResponse::map_into_left_body),
    }
}

pub async fn head_limits(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Served<impl actix_web::body::MessageBody> {
    let uri_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    let headers = req.headers();
    let header_bytes: usize = headers.iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
    let refusal = if uri_len > MAX_URI {
        Some(ApiError::UriTooLong(MAX_URI))
    } else if headers.len() > MAX_HEADERS || header_bytes > MAX_HEADER_BYTES {
        Some(ApiError::HeadersTooLarge(MAX_HEADERS, MAX_HEADER_BYTES))
    } else {
        None
    };
    refuse_or_call(req, next, refusal).await
}

/// The gatekeeper of `/v1/verify`, before the body is read (a CORS
/// preflight passes: it carries no credentials).
async fn admit(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Served<impl actix_web::body::MessageBody> {
    let refusal = match req.app_data::<web::Data<AppState>>() {
        Some(state) if req.method() != actix_web::http::Method::OPTIONS && !state.gatekeeper.is_open() => {
            state.gatekeeper.admit(req.request(), callers::KeyIn::Bearer).err()
        }
        _ => None,
    };
    refuse_or_call(req, next, refusal).await
}

/// With `callers.authorize`, the same gatekeeper on `/v1/authorize`, the
/// key in `X-Settlegate-Key`; every method (nginx sends the original one,
/// `OPTIONS` included).
async fn admit_authorize(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Served<impl actix_web::body::MessageBody> {
    let refusal = match req.app_data::<web::Data<AppState>>() {
        Some(state) if state.gatekeeper.on_authorize && !state.gatekeeper.is_open() => {
            state.gatekeeper.admit(req.request(), callers::KeyIn::Header).err()
        }
        _ => None,
    };
    refuse_or_call(req, next, refusal).await
}

/// A resource whose other methods answer 405 in problem+json, with the
/// `Allow` header RFC 9110 requires (`allow` lists its methods).
pub(crate) fn resource(path: &str, allow: &'static str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(move |req: HttpRequest| async move {
        let mut resp = ApiError::MethodNotAllowed(req.method().to_string()).error_response();
        resp.headers_mut().insert(
            actix_web::http::header::ALLOW,
            actix_web::http::header::HeaderValue::from_static(allow),
        );
        resp
    }))
}

async fn not_found(req: actix_web::HttpRequest) -> actix_web::HttpResponse {
    ApiError::NotFound(format!("{} {}", req.method(), req.path())).error_response()
}
