//! Refusals of `GET /v1/authorize` for nginx `auth_request`, which hands
//! the client only a 2xx, 401 or 403 of its auth request, without the body,
//! and turns anything else into a 500 ([`settlegate_rules::refusal`]).
//!
//! - A request with `X-Settlegate-Deny-Status: 401` (the proxy's opt-in;
//!   no other value) is decided as usual; a 200 stays a 200, and any other
//!   answer becomes a bodiless 401 whose `X-Settlegate-Refusal` seals it.
//! - A request with `X-Settlegate-Refusal` (the proxy's `error_page`
//!   handing the seal back) is answered with the sealed refusal, as it
//!   was; it is never decided, so its credential (if any) is neither read
//!   nor consumed. A seal that does not open is a 400.
//!
//! This wraps the whole route, the caller keys and rates included, so
//! their 401 and 429 are sealed too, and a seal handed back costs no rate.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpResponse, ResponseError, web};
use settlegate_rules::refusal::{self, Refusal, SEALED_HEADERS};
use time::OffsetDateTime;

use super::AppState;
use super::gate::single_header;
use super::problem::ApiError;

/// The proxy's opt-in: answer every refusal with this status (only `401`).
pub const DENY_STATUS: &str = "x-settlegate-deny-status";
/// The sealed refusal: on the 401, and on the request handing it back.
pub const REFUSAL: &str = "x-settlegate-refusal";
/// How long a seal opens: the proxy hands it back at once.
const SEAL_SECONDS: i64 = 60;
/// The largest refusal body read for sealing (ours are about 1 KiB).
const MAX_BODY: usize = 8 * 1024;

pub async fn sealed_refusals(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return next.call(req).await.map(ServiceResponse::map_into_boxed_body);
    };
    let now = OffsetDateTime::now_utc();
    let (sealed, deny) = match (
        single_header(req.headers(), REFUSAL).map(|v| v.cloned()),
        single_header(req.headers(), DENY_STATUS).map(|v| v.map(|v| v.as_bytes() == b"401")),
    ) {
        (Err(e), _) | (_, Err(e)) => return Ok(refuse(req, e)),
        (Ok(sealed), Ok(deny)) => (sealed, deny),
    };
    if let Some(sealed) = sealed {
        let opened = if state.trusted_proxy(req.peer_addr()) {
            sealed
                .to_str()
                .map_err(|_| refusal::RefusalError::Forged)
                .and_then(|s| refusal::open(&state.challenges.secrets, s, now))
                .map_err(|e| ApiError::InvalidRequest(format!("X-Settlegate-Refusal: {e}")))
        } else {
            Err(ApiError::InvalidRequest(
                "X-Settlegate-Refusal is believed only from a trusted proxy (authorize.trusted_proxies)".into(),
            ))
        };
        return Ok(match opened {
            Ok(r) => req.into_response(answer(&r)),
            Err(e) => refuse(req, e),
        });
    }
    let deny = match deny {
        None => false,
        Some(true) => true,
        Some(false) => {
            return Ok(refuse(
                req,
                ApiError::InvalidRequest("X-Settlegate-Deny-Status must be 401".into()),
            ));
        }
    };
    let resp = next.call(req).await?;
    if !deny || resp.status().is_success() {
        return Ok(resp.map_into_boxed_body());
    }
    let (req, res) = resp.into_parts();
    let status = res.status();
    let headers: Vec<(String, String)> = res
        .headers()
        .iter()
        .filter(|(name, _)| SEALED_HEADERS.contains(&name.as_str()))
        .filter_map(|(name, value)| Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned())))
        .collect();
    let body = match actix_web::body::to_bytes_limited(res.into_body(), MAX_BODY).await {
        Ok(Ok(b)) => String::from_utf8(b.to_vec()).ok(),
        _ => None,
    };
    let sealed = match body {
        None => Err(refusal::RefusalError::TooLong),
        Some(body) => refusal::seal(
            &state.challenges.secrets,
            &Refusal {
                status: status.as_u16(),
                headers,
                body,
            },
            now + time::Duration::seconds(SEAL_SECONDS),
        ),
    };
    let resp = match sealed.map(|s| HeaderValue::from_str(&s)) {
        Ok(Ok(v)) => HttpResponse::Unauthorized()
            .insert_header((HeaderName::from_static(REFUSAL), v))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .finish(),
        // Not sealed: the bare status, which nginx turns into a 500 (the
        // request does not get through either way).
        Ok(Err(_)) | Err(_) => {
            tracing::warn!(status = status.as_u16(), "a refusal could not be sealed");
            HttpResponse::build(status).finish()
        }
    };
    Ok(ServiceResponse::new(req, resp))
}

/// A refusal answered as it was sealed.
fn answer(r: &Refusal) -> HttpResponse {
    // `open` checked the status is 400 to 599 and the headers are ours.
    let mut resp = HttpResponse::build(StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_REQUEST));
    for (name, value) in &r.headers {
        if let (Ok(n), Ok(v)) = (HeaderName::try_from(name.as_str()), HeaderValue::from_str(value)) {
            resp.append_header((n, v));
        }
    }
    resp.body(r.body.clone())
}

fn refuse(req: ServiceRequest, e: ApiError) -> ServiceResponse<BoxBody> {
    let resp = e.error_response();
    req.into_response(resp)
}
