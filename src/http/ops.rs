//! Operational endpoints: liveness, readiness, metrics, the active genome.
//! Health endpoints are not governed by the genome's capabilities; the
//! genome and metrics endpoints are (`genome.read`, `metrics.read`).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use serde::Serialize;
use serde_json::json;
use settlegate_rules::genome::actions;
use time::OffsetDateTime;
use utoipa::ToSchema;

use settlegate_actors::replay_guard::Ping;
use settlegate_actors::rpc_pool::PoolStatus;

use super::AppState;
use super::problem::ApiError;

/// `GET /healthz`.
#[derive(Serialize, ToSchema)]
pub struct Health {
    #[schema(value_type = String, pattern = "^ok$")]
    status: &'static str,
}

/// Liveness: 200 while the process runs.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process runs", body = Health, headers(("X-Request-Id" = String)))))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health { status: "ok" })
}

/// `GET /readyz`: each component's state and whether, together, they can
/// support a trustworthy answer.
#[derive(Serialize, ToSchema)]
pub struct Readiness {
    #[schema(value_type = String, pattern = "^(ready|not_ready)$")]
    status: &'static str,
    components: Components,
}

#[derive(Serialize, ToSchema)]
pub struct Components {
    genome: GenomeState,
    replay_store: StoreState,
    rpc: RpcState,
    settler: SettlerState,
    /// Present with `sponsor.key_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    sponsor: Option<SponsorState>,
    /// Present with `ledger.database_url`.
    #[serde(skip_serializing_if = "Option::is_none")]
    ledger: Option<LedgerState>,
}

/// The ledger: `ok` while its last copy of the outbox to PostgreSQL
/// succeeded, else `failing` (200s go on; the outbox grows towards
/// `ledger.outbox_max`, where consumes are refused). Informational until
/// the outbox is full: then every consume is a 503, and the instance is
/// not ready.
#[derive(Serialize, ToSchema)]
pub struct LedgerState {
    #[schema(value_type = String, pattern = "^(ok|failing|full)$")]
    state: &'static str,
    /// Records waiting in the outbox, as of the last read.
    outbox_entries: u64,
    outbox_max: u64,
    /// Seconds the oldest of them has waited.
    outbox_oldest_seconds: f64,
    /// Why the last copy failed (never a secret).
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

/// The fee sponsor: `offered` while its last read found the fee-token
/// balance at least the genome's `min_balance` and budget for one more
/// transaction at its cap, else `withdrawn` (challenges do not offer
/// sponsorship; plain charges still work). Informational: it does not make
/// the instance unready.
#[derive(Serialize, ToSchema)]
pub struct SponsorState {
    #[schema(value_type = String, pattern = "^(offered|withdrawn)$")]
    state: &'static str,
    address: String,
    fee_token: Option<String>,
    /// Atomic units of the fee token (absent: not read yet, or the read failed).
    balance: Option<String>,
    /// What the shared budget can still hold this period (atomic units).
    budget_remaining: Option<String>,
}

/// The channel settler: `on` (it holds the payee's key and settles
/// channels on chain) or `off` (no `session.settler_key_file`: accepted
/// vouchers wait for `settlegate channels --settle`). Informational: an
/// instance without it still serves.
#[derive(Serialize, ToSchema)]
pub struct SettlerState {
    #[schema(value_type = String, pattern = "^(on|off)$")]
    state: &'static str,
}

/// The active genome: `verified` (signed, trusted and in its validity
/// window now) or `invalid` with its genome code.
#[derive(Serialize, ToSchema)]
pub struct GenomeState {
    #[schema(value_type = String, pattern = "^(verified|invalid)$")]
    state: &'static str,
    genome_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    code: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

/// The replay store: `ok` when it answered a ping.
#[derive(Serialize, ToSchema)]
pub struct StoreState {
    #[schema(value_type = String, pattern = "^(ok|unavailable)$")]
    state: &'static str,
    /// `redis`, `redis-cluster` or `local`.
    #[schema(value_type = String)]
    backend: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

/// The RPC pool: `ok` when at least one endpoint is healthy on the policy's chain.
#[derive(Serialize, ToSchema)]
pub struct RpcState {
    #[schema(value_type = String, pattern = "^(ok|unavailable)$")]
    state: &'static str,
    chain_id: u64,
    endpoints: Vec<settlegate_actors::rpc_pool::EndpointStatus>,
}

/// 200 only when every component can support a trustworthy answer.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses(
    (status = 200, description = "The genome is verified and valid, the replay store answers and an RPC endpoint is healthy on the policy's chain",
     body = Readiness, headers(("X-Request-Id" = String))),
    (status = 503, description = "Some component cannot support a trustworthy answer: each one's state says which",
     body = Readiness, headers(("X-Request-Id" = String))),
))]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let g = state.genome.current();
    let genome = match g.check_validity(OffsetDateTime::now_utc()) {
        Ok(()) => GenomeState {
            state: "verified",
            genome_id: g.id.clone(),
            version: Some(g.version.to_string()),
            code: None,
            detail: None,
        },
        Err(e) => GenomeState {
            state: "invalid",
            genome_id: g.id.clone(),
            version: None,
            code: Some(e.code()),
            detail: Some(e.to_string()),
        },
    };
    let store = match state
        .replay
        .send(Ping)
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()))
    {
        Ok(()) => StoreState {
            state: "ok",
            backend: state.replay_backend,
            detail: None,
        },
        Err(detail) => StoreState {
            state: "unavailable",
            backend: state.replay_backend,
            detail: Some(detail),
        },
    };
    let endpoints = endpoint_status(&state, g.policy.chain_id, true).await;
    let rpc_ok = endpoints
        .iter()
        .any(|e| e.state == settlegate_actors::rpc_pool::EndpointState::Healthy);
    let ledger = match &state.ledger {
        None => None,
        Some((addr, max)) => {
            let st = addr.send(settlegate_actors::ledger::State).await.unwrap_or_default();
            let full = st.depth.entries >= *max;
            Some(LedgerState {
                state: if full {
                    "full"
                } else if st.failing.is_some() {
                    "failing"
                } else {
                    "ok"
                },
                outbox_entries: st.depth.entries,
                outbox_max: *max,
                outbox_oldest_seconds: st.depth.oldest_age.map_or(0.0, |a| a.as_secs_f64()),
                detail: st.failing,
            })
        }
    };
    let ledger_ok = ledger.as_ref().is_none_or(|l| l.state != "full");
    let ready = genome.state == "verified" && store.state == "ok" && rpc_ok && ledger_ok;
    let rpc = RpcState {
        state: if rpc_ok { "ok" } else { "unavailable" },
        chain_id: g.policy.chain_id,
        endpoints,
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    HttpResponse::build(status)
        .insert_header(("Cache-Control", "no-store"))
        .json(Readiness {
            status: if ready { "ready" } else { "not_ready" },
            components: Components {
                genome,
                replay_store: store,
                rpc,
                settler: SettlerState {
                    state: if state.settler_on { "on" } else { "off" },
                },
                sponsor: state.sponsor.as_ref().map(|s| {
                    let st = s.status(&g.policy);
                    SponsorState {
                        state: if st.offered { "offered" } else { "withdrawn" },
                        address: st.address,
                        fee_token: st.fee_token,
                        balance: st.balance,
                        budget_remaining: st.budget_remaining,
                    }
                }),
                ledger,
            },
        })
}

/// The active genome's id, name, version, validity window, signers and policy summary. No secrets.
#[utoipa::path(get, path = "/v1/genome", tag = "operations", responses(
    (status = 200, description = "The active genome", body = crate::http::openapi::GenomeSummary, headers(("X-Request-Id" = String))),
    (status = 403, description = "The genome does not allow genome.read", body = crate::http::problem::ProblemBody, content_type = "application/problem+json"),
))]
pub async fn genome(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let g = state.genome.current();
    if !g.allows(actions::GENOME_READ) {
        return Err(ApiError::CapabilityDenied(actions::GENOME_READ));
    }
    let mut body = g.summary();
    body["state"] = match g.check_validity(OffsetDateTime::now_utc()) {
        Ok(()) => json!("active"),
        Err(e) => json!(e.code()),
    };
    Ok(HttpResponse::Ok().json(body))
}

/// Each RPC endpoint's state on `chain_id`; with `probe`, endpoints not
/// known to be healthy are asked first. Empty when the pool is gone.
async fn endpoint_status(
    state: &AppState,
    chain_id: u64,
    probe: bool,
) -> Vec<settlegate_actors::rpc_pool::EndpointStatus> {
    state.rpc.send(PoolStatus { probe, chain_id }).await.unwrap_or_default()
}

/// Brings the scrape-time gauges up to date: each endpoint's state as the
/// pool sees it (no probe: a scrape must stay cheap) and the genome's time
/// to expiry. Before each `/metrics` answer and each OTLP metrics push.
pub async fn refresh_scrape_state(state: &AppState) {
    let g = state.genome.current();
    let endpoints = endpoint_status(state, g.policy.chain_id, false).await;
    let expires_in = g
        .validity
        .expires_at
        .map(|t| (t - OffsetDateTime::now_utc()).as_seconds_f64());
    state.metrics.set_state(&endpoints, expires_in);
}

/// Every metric, in the Prometheus (OpenMetrics) text format.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses(
    (status = 200, description = "The metrics", body = String, content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8",
     headers(("X-Request-Id" = String))),
    (status = 403, description = "The genome does not allow metrics.read", body = crate::http::problem::ProblemBody, content_type = "application/problem+json"),
))]
pub async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let g = state.genome.current();
    if !g.allows(actions::METRICS_READ) {
        return Err(ApiError::CapabilityDenied(actions::METRICS_READ));
    }
    refresh_scrape_state(&state).await;
    Ok(HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(state.metrics.encode()))
}
