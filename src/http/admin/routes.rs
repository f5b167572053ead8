//! The admin API's handlers: each validates its input (400 naming the
//! parameter), asks the ledger's database within `admin.query_timeout_ms`
//! (503 `LEDGER_UNAVAILABLE` past it) and renders JSON. The SQL is the
//! ledger's (`settlegate_actors::ledger::read`), shared with `settlegate
//! ledger`.

use std::future::Future;

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use settlegate_actors::channels::plan::Schedule;
use settlegate_actors::channels::{ChannelRow, ChannelSettler, SettlerConfig, SettlerMetrics};
use settlegate_actors::ledger::LedgerError;
use settlegate_actors::ledger::read::{self, BadInput, By, Cursor, Filter, FilterInput};

use super::AdminState;
use crate::http::problem::ApiError;

fn bad(e: BadInput) -> ApiError {
    ApiError::InvalidRequest(e.0)
}

impl AdminState {
    /// `work` on the ledger's database within the query timeout; what
    /// failed is logged, the client gets its cause only.
    async fn within<T>(&self, what: &str, work: impl Future<Output = Result<T, LedgerError>>) -> Result<T, ApiError> {
        self.bounded(what, false, work).await
    }

    /// As [`Self::within`] for a change: one cut off (by the timeout, or a
    /// connection lost) may still commit, its commit already under way on
    /// the server, so the 503 says the change may have been made, and to
    /// repeat it (PUT and DELETE are idempotent).
    async fn within_change<T>(
        &self,
        what: &str,
        work: impl Future<Output = Result<T, LedgerError>>,
    ) -> Result<T, ApiError> {
        self.bounded(what, true, work).await
    }

    async fn bounded<T>(
        &self,
        what: &str,
        change: bool,
        work: impl Future<Output = Result<T, LedgerError>>,
    ) -> Result<T, ApiError> {
        let e = match tokio::time::timeout(self.query_timeout, work).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => e,
            Err(_) => LedgerError::Timeout,
        };
        tracing::warn!(cause = e.cause(), error = %e, "admin: {what}: the ledger's database did not answer");
        Err(ApiError::LedgerUnavailable(if e.schema_missing() {
            "the ledger's tables are missing: run `settlegate ledger migrate`".into()
        } else if change {
            format!(
                "the ledger's database did not answer ({}); the change may have been made: repeat it (it is \
                 idempotent) or read /admin/v1/denials",
                e.cause()
            )
        } else {
            format!(
                "the ledger's database did not answer ({}); nothing was changed; retry later",
                e.cause()
            )
        }))
    }

    async fn client(&self) -> Result<settlegate_actors::ledger::Client, LedgerError> {
        read::connect(&self.pool, self.query_timeout).await
    }
}

/// The query of `GET /admin/v1/payments`.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PaymentsQuery {
    /// The genome's price rule, as the books spell it (`GET /reports/*`, `default`).
    route: Option<String>,
    /// `0x` and 40 hex digits (any case).
    #[param(pattern = "^0[xX][0-9a-fA-F]{40}$")]
    payer: Option<String>,
    /// `tempo` or `payment`.
    #[param(pattern = "^(tempo|payment)$")]
    scheme: Option<String>,
    /// `charge` or `proof`.
    #[param(pattern = "^(charge|proof)$")]
    kind: Option<String>,
    /// RFC 3339: payments consumed at or after it.
    #[param(format = DateTime)]
    from: Option<String>,
    /// RFC 3339: payments consumed before it (not before `from`).
    #[param(format = DateTime)]
    to: Option<String>,
    /// 1 to 500 (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 500)]
    limit: Option<String>,
    /// `next_cursor` of the previous page, with the same filters.
    cursor: Option<String>,
}

/// The query of `GET /admin/v1/revenue`.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RevenueQuery {
    /// `route`, `payer` or `day` (UTC). Required.
    #[param(pattern = "^(route|payer|day)$")]
    by: Option<String>,
    /// As for `/admin/v1/payments`.
    route: Option<String>,
    #[param(pattern = "^0[xX][0-9a-fA-F]{40}$")]
    payer: Option<String>,
    #[param(pattern = "^(tempo|payment)$")]
    scheme: Option<String>,
    #[param(pattern = "^(charge|proof)$")]
    kind: Option<String>,
    #[param(format = DateTime)]
    from: Option<String>,
    #[param(format = DateTime)]
    to: Option<String>,
}

/// The payments, newest first, a page at a time.
#[utoipa::path(get, path = "/admin/v1/payments", tag = "admin", params(PaymentsQuery),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "A page of payments (amounts as decimal strings); `next_cursor` is null on the last", body = read::PaymentPage),
        (status = 400, description = "A parameter is invalid (the detail names it), or the cursor is not one handed out for these filters", body = crate::http::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "No valid `Authorization: Bearer <token>`", body = crate::http::problem::ProblemBody, content_type = "application/problem+json",
         headers(("WWW-Authenticate" = String))),
        (status = 503, description = "The ledger's database did not answer: LEDGER_UNAVAILABLE", body = crate::http::problem::ProblemBody, content_type = "application/problem+json",
         headers(("Retry-After" = String))),
    ))]
pub async fn payments(state: web::Data<AdminState>, q: web::Query<PaymentsQuery>) -> Result<HttpResponse, ApiError> {
    let q = q.into_inner();
    let filter = Filter::parse(&FilterInput {
        route: q.route,
        payer: q.payer,
        scheme: q.scheme,
        kind: q.kind,
        from: q.from,
        to: q.to,
    })
    .map_err(bad)?;
    let limit = read::parse_limit(q.limit.as_deref()).map_err(bad)?;
    let cursor = q
        .cursor
        .as_deref()
        .map(|c| Cursor::decode(c, &filter))
        .transpose()
        .map_err(bad)?;
    let page = state
        .within("listing payments", async {
            read::payments(&state.client().await?, &filter, limit, cursor).await
        })
        .await?;
    Ok(HttpResponse::Ok().json(page))
}

/// Revenue per route, payer or day and per asset, with totals.
#[utoipa::path(get, path = "/admin/v1/revenue", tag = "admin", params(RevenueQuery),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Payments counted and amounts summed (exact decimal strings) per group and asset; `totals` per asset over the whole filter. The same filter's pages of `/admin/v1/payments` add up to `totals`", body = read::Revenue),
        (status = 400, description = "`by` missing or invalid, or a filter is", body = crate::http::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "No valid bearer token", body = crate::http::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "LEDGER_UNAVAILABLE", body = crate::http::problem::ProblemBody, content_type = "application/problem+json"),
    ))]
pub async fn revenue(state: web::Data<AdminState>, q: web::Query<RevenueQuery>) -> Result<HttpResponse, ApiError> {
    let q = q.into_inner();
    let by = By::parse(q.by.as_deref()).map_err(bad)?;
    let filter = Filter::parse(&FilterInput {
        route: q.route,
        payer: q.payer,
        scheme: q.scheme,
        kind: q.kind,
        from: q.from,
        to: q.to,
    })
    .map_err(bad)?;
    let revenue = state
        .within("summing revenue", async {
            read::revenue(&mut state.client().await?, &filter, by).await
        })
        .await?;
    Ok(HttpResponse::Ok().json(revenue))
}

/// The open payment channels (MPP sessions), as `settlegate channels`
/// lists them; nothing is settled.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Sessions {
    /// Channels not finalised on chain, each with what is unsettled.
    pub channels: Vec<ChannelRow>,
    pub open: usize,
    /// Channels in the book found finalised (not listed).
    pub finalized: usize,
    /// Channels whose state or facts could not be read (listed, `action`
    /// `failed: <cause>`).
    pub failed: usize,
    /// Accepted and not settled on chain, over every channel (atomic units).
    #[schema(pattern = "^[0-9]+$")]
    pub unsettled: String,
}

/// The open session channels and what each has not settled.
#[utoipa::path(get, path = "/admin/v1/sessions", tag = "admin",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The open channels in the channel book, read with their facts on chain (nothing is settled or sent)", body = Sessions),
        (status = 401, description = "No valid bearer token", body = crate::http::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "The channel book (replay store) did not answer, or the scan took longer than admin.query_timeout_ms: CHANNELS_UNAVAILABLE", body = crate::http::problem::ProblemBody, content_type = "application/problem+json"),
    ))]
pub async fn sessions(state: web::Data<AdminState>) -> Result<HttpResponse, ApiError> {
    let wait = state.query_timeout;
    // One scan at a time: each reads every channel on chain.
    let _permit = tokio::time::timeout(wait, state.scans.acquire())
        .await
        .ok()
        .and_then(Result::ok)
        .ok_or_else(|| {
            ApiError::ChannelsUnavailable("another scan of the channels is still running; retry later".into())
        })?;
    let cfg = SettlerConfig {
        // Watch only: no key, so nothing can be sent.
        key: None,
        chain_id: Some(state.app.genome.current().policy.chain_id),
        schedule: Schedule { amount: 1, interval: 0 },
        scan_interval: std::time::Duration::from_secs(1),
        rpc_timeout: state.rpc_timeout,
    };
    let scan = ChannelSettler::scan_once(
        state.app.sessions.book.clone(),
        state.app.rpc.clone(),
        cfg,
        SettlerMetrics::default(),
    );
    let report = match tokio::time::timeout(wait, scan).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            tracing::warn!(cause = e.cause(), error = %e, "admin: the channel book could not be read");
            return Err(ApiError::ChannelsUnavailable(format!(
                "the channel book did not answer ({}); retry later",
                e.cause()
            )));
        }
        Err(_) => {
            return Err(ApiError::ChannelsUnavailable(format!(
                "the channels took longer than {} ms to read (admin.query_timeout_ms)",
                wait.as_millis()
            )));
        }
    };
    let finalized = report.rows.iter().filter(|r| r.finalized).count();
    let channels: Vec<ChannelRow> = report.rows.into_iter().filter(|r| !r.finalized).collect();
    Ok(HttpResponse::Ok().json(Sessions {
        open: channels.len(),
        channels,
        finalized,
        failed: report.failed,
        unsettled: report.unsettled.to_string(),
    }))
}

/// The query of `GET /admin/v1/webhooks`.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WebhooksQuery {
    /// Only the deliveries in this state.
    #[param(pattern = "^(pending|delivered|dead)$")]
    state: Option<String>,
    /// 1 to 500 (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 500)]
    limit: Option<String>,
    /// Only deliveries with an id above this one: the previous page's
    /// `next_after`.
    #[param(value_type = Option<u64>, minimum = 0)]
    after: Option<String>,
}

/// A page of webhook deliveries, oldest first.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Deliveries {
    pub deliveries: Vec<settlegate_actors::webhooks::db::Listed>,
    /// Pass as `after` for the next page (absent: this was the last).
    pub next_after: Option<i64>,
}

/// The webhook deliveries and their state: pending (with its next attempt),
/// delivered, or dead (with its last error; `settlegate ledger webhooks
/// requeue` sends it again).
#[utoipa::path(get, path = "/admin/v1/webhooks", tag = "admin", params(WebhooksQuery),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Deliveries, oldest first", body = Deliveries),
        (status = 400, description = "A parameter is malformed: INVALID_REQUEST", body = crate::http::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "No valid bearer token", body = crate::http::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "LEDGER_UNAVAILABLE", body = crate::http::problem::ProblemBody, content_type = "application/problem+json"),
    ))]
pub async fn webhooks(state: web::Data<AdminState>, q: web::Query<WebhooksQuery>) -> Result<HttpResponse, ApiError> {
    let q = q.into_inner();
    if let Some(s) = q.state.as_deref()
        && !["pending", "delivered", "dead"].contains(&s)
    {
        return Err(ApiError::InvalidRequest(format!(
            "state must be pending, delivered or dead, got {:?}",
            s.chars().take(32).collect::<String>()
        )));
    }
    let limit = i64::from(read::parse_limit(q.limit.as_deref()).map_err(bad)?);
    let after = match q.after.as_deref() {
        None => 0,
        Some(a) => a
            .parse::<i64>()
            .ok()
            .filter(|a| *a >= 0)
            .ok_or_else(|| ApiError::InvalidRequest("after must be a delivery id (0 or more)".into()))?,
    };
    let deliveries = state
        .within("listing webhook deliveries", async {
            settlegate_actors::webhooks::db::list(&state.client().await?, q.state.as_deref(), after, limit).await
        })
        .await?;
    let next_after = (deliveries.len() as i64 == limit)
        .then(|| deliveries.last().map(|d| d.id))
        .flatten();
    Ok(HttpResponse::Ok().json(Deliveries { deliveries, next_after }))
}

/// The deny list.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Denials {
    pub denials: Vec<read::Denial>,
}

/// Every payer on the deny list.
#[utoipa::path(get, path = "/admin/v1/denials", tag = "admin",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The payers refused (`payer_denied`) by every instance, by payer", body = Denials),
        (status = 401, description = "No valid bearer token", body = crate::http::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "LEDGER_UNAVAILABLE", body = crate::http::problem::ProblemBody, content_type = "application/problem+json"),
    ))]
pub async fn denials(state: web::Data<AdminState>) -> Result<HttpResponse, ApiError> {
    let denials = state
        .within("listing denials", async { read::denials(&state.client().await?).await })
        .await?;
    Ok(HttpResponse::Ok().json(Denials { denials }))
}

/// The body of `PUT /admin/v1/denials/{payer}`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DenyBody {
    /// Why (for the operators; never shown to the payer). At most 256
    /// characters, no control characters.
    #[serde(default)]
    #[schema(max_length = 256, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*$")]
    reason: String,
}

/// The body of `DELETE /admin/v1/denials/{payer}`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Allowed {
    #[schema(pattern = "^0x[0-9a-f]{40}$")]
    pub payer: String,
    /// Whether the payer was on the list.
    pub removed: bool,
}

fn path_payer(payer: &str) -> Result<String, ApiError> {
    read::parse_payer(payer).map_err(bad)
}

/// Denies a payer: refused at once on this instance, on the others within
/// `admin.deny_refresh_seconds`.
#[utoipa::path(put, path = "/admin/v1/denials/{payer}", tag = "admin",
    params(("payer" = String, Path, description = "0x and 40 hex digits (any case)", pattern = "^0[xX][0-9a-fA-F]{40}$")),
    request_body(content = DenyBody, content_type = "application/json", description = "At most 4 KiB"),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The payer is denied (again: the reason is replaced, the first time kept)", body = read::Denial),
        (status = 400, description = "Not a payer address, or a reason too long", body = crate::http::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "No valid bearer token", body = crate::http::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 413, description = "A body over 4 KiB", body = crate::http::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 415, description = "A body that is not application/json", body = crate::http::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "LEDGER_UNAVAILABLE: the change may have been made (a commit cut off by the timeout); repeat it", body = crate::http::problem::ProblemBody, content_type = "application/problem+json"),
    ))]
pub async fn deny(
    state: web::Data<AdminState>,
    payer: web::Path<String>,
    body: web::Json<DenyBody>,
) -> Result<HttpResponse, ApiError> {
    let payer = path_payer(&payer)?;
    read::check_reason(&body.reason).map_err(bad)?;
    let denial = state
        .within_change("denying a payer", async {
            read::deny(&state.client().await?, &payer, &body.reason).await
        })
        .await?;
    state.changed(&payer, true);
    tracing::info!(payer = %payer, "admin: payer denied");
    Ok(HttpResponse::Ok().json(denial))
}

/// Takes a payer off the deny list.
#[utoipa::path(delete, path = "/admin/v1/denials/{payer}", tag = "admin",
    params(("payer" = String, Path, description = "0x and 40 hex digits (any case)", pattern = "^0[xX][0-9a-fA-F]{40}$")),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The payer is allowed (at once here, on the other instances within admin.deny_refresh_seconds); `removed` says whether it was denied", body = Allowed),
        (status = 400, description = "Not a payer address", body = crate::http::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "No valid bearer token", body = crate::http::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "LEDGER_UNAVAILABLE: the change may have been made (a commit cut off by the timeout); repeat it", body = crate::http::problem::ProblemBody, content_type = "application/problem+json"),
    ))]
pub async fn allow(state: web::Data<AdminState>, payer: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let payer = path_payer(&payer)?;
    let removed = state
        .within_change("allowing a payer", async {
            read::allow(&state.client().await?, &payer).await
        })
        .await?;
    state.changed(&payer, false);
    tracing::info!(payer = %payer, removed, "admin: payer allowed");
    Ok(HttpResponse::Ok().json(Allowed { payer, removed }))
}
