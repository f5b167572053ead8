//! Operational endpoints: liveness, readiness, metrics, the active genome.
//! Health endpoints are not governed by the genome's capabilities; the
//! genome and metrics endpoints are (`genome.read`, `metrics.read`).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use serde_json::json;
use settlegate_rules::genome::actions;
use time::OffsetDateTime;

use settlegate_actors::replay_guard::Ping;
use settlegate_actors::rpc_pool::PoolStatus;

use super::AppState;
use super::problem::ApiError;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// 200 only when every component can support a trustworthy answer.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let g = state.genome.current();
    let genome = match g.check_validity(OffsetDateTime::now_utc()) {
        Ok(()) => {
            json!({ "state": "verified", "genome_id": g.id, "version": g.version.to_string() })
        }
        Err(e) => {
            json!({ "state": "invalid", "code": e.code(), "detail": e.to_string(), "genome_id": g.id })
        }
    };
    let store = match state
        .replay
        .send(Ping)
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()))
    {
        Ok(()) => json!({ "state": "ok", "backend": state.replay_backend }),
        Err(detail) => json!({ "state": "unavailable", "backend": state.replay_backend, "detail": detail }),
    };
    let endpoints = endpoint_status(&state, g.policy.chain_id, true).await;
    let rpc_ok = endpoints.iter().any(|e| e.state == "healthy");
    let rpc = json!({ "state": if rpc_ok { "ok" } else { "unavailable" }, "chain_id": g.policy.chain_id, "endpoints": endpoints });
    let ready = genome["state"] == "verified" && store["state"] == "ok" && rpc_ok;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    HttpResponse::build(status)
        .insert_header(("Cache-Control", "no-store"))
        .json(json!({
            "status": if ready { "ready" } else { "not_ready" },
            "components": { "genome": genome, "replay_store": store, "rpc": rpc },
        }))
}

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
