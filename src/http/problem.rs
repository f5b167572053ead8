//! The HTTP edge's error type and its RFC 9457 `application/problem+json`
//! rendering. One exhaustive `match` maps each error to its status and code,
//! so a new error cannot reach a client without a decision about it.

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpResponse, HttpResponseBuilder, ResponseError};
use serde::Serialize;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// Errors a client can see.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The genome's capabilities do not allow this action.
    #[error("the active genome does not allow {0}")]
    CapabilityDenied(&'static str),
    #[error("no route for {0}")]
    NotFound(String),
    #[error("{0} is not allowed here")]
    MethodNotAllowed(String),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    InvalidTxHash(String),
    #[error("the body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("the body must be application/json")]
    UnsupportedMediaType,
    /// Caller authentication is on and the request has no valid API key.
    #[error("{0}")]
    Unauthorized(String),
    /// Beyond the caller's or the client IP's rate; retry after the seconds.
    #[error("too many requests: retry in {0} s")]
    RateLimited(u64),
    #[error("the request URI is longer than {0} bytes")]
    UriTooLong(usize),
    #[error("the request has more than {0} headers or more than {1} bytes of them")]
    HeadersTooLarge(usize, usize),
    /// The body did not arrive within `server.request_body_timeout_ms`.
    #[error("the request body did not arrive within {} ms of its head; the connection is closed", .0.as_millis())]
    RequestTimeout(std::time::Duration),
}

impl ApiError {
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::CapabilityDenied(_) => "CAPABILITY_DENIED",
            ApiError::NotFound(_) => "NOT_FOUND",
            ApiError::MethodNotAllowed(_) => "METHOD_NOT_ALLOWED",
            ApiError::InvalidRequest(_) => "INVALID_REQUEST",
            ApiError::InvalidTxHash(_) => "INVALID_TX_HASH",
            ApiError::PayloadTooLarge(_) => "PAYLOAD_TOO_LARGE",
            ApiError::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            ApiError::Unauthorized(_) => "UNAUTHORIZED",
            ApiError::RateLimited(_) => "RATE_LIMITED",
            ApiError::UriTooLong(_) => "URI_TOO_LONG",
            ApiError::HeadersTooLarge(..) => "HEADERS_TOO_LARGE",
            ApiError::RequestTimeout(_) => "REQUEST_TIMEOUT",
        }
    }

    fn title(&self) -> &'static str {
        match self {
            ApiError::CapabilityDenied(_) => "Forbidden by the genome",
            ApiError::NotFound(_) => "Not found",
            ApiError::MethodNotAllowed(_) => "Method not allowed",
            ApiError::InvalidRequest(_) => "Invalid request",
            ApiError::InvalidTxHash(_) => "Invalid transaction hash",
            ApiError::PayloadTooLarge(_) => "Payload too large",
            ApiError::UnsupportedMediaType => "Unsupported media type",
            ApiError::Unauthorized(_) => "Unauthorized",
            ApiError::RateLimited(_) => "Too many requests",
            ApiError::UriTooLong(_) => "URI too long",
            ApiError::HeadersTooLarge(..) => "Request headers too large",
            ApiError::RequestTimeout(_) => "Request timeout",
        }
    }
}

/// A problem+json response with `Cache-Control: no-store`: the start of
/// every error answer, 4xx here and 402/503 in `respond`.
pub fn problem_builder(status: StatusCode) -> HttpResponseBuilder {
    let mut b = HttpResponse::build(status);
    b.insert_header((header::CONTENT_TYPE, PROBLEM_JSON))
        .insert_header((header::CACHE_CONTROL, "no-store"));
    b
}

/// `urn:settlegate:problem:<code in kebab case>`.
pub fn problem_type(code: &str) -> String {
    format!("urn:settlegate:problem:{}", code.to_ascii_lowercase().replace('_', "-"))
}

/// A problem+json body with the stable fields every settlegate error
/// carries (402 and 503 add theirs: `respond::Problem`).
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Problem)]
pub struct ProblemBody<'a> {
    /// `urn:settlegate:problem:<code in kebab case>`.
    #[serde(rename = "type")]
    #[schema(pattern = "^urn:settlegate:problem:[a-z-]+$")]
    kind: String,
    title: &'a str,
    status: u16,
    /// What was wrong, for a person to read.
    detail: &'a str,
    #[schema(value_type = ErrorCode)]
    code: &'a str,
}

/// Every `code` of an [`ApiError`]. Documentation only: a unit test keeps
/// it equal to [`ApiError::code`].
#[derive(Serialize, utoipa::ToSchema)]
#[allow(dead_code)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    CapabilityDenied,
    NotFound,
    MethodNotAllowed,
    InvalidRequest,
    InvalidTxHash,
    PayloadTooLarge,
    UnsupportedMediaType,
    Unauthorized,
    RateLimited,
    UriTooLong,
    HeadersTooLarge,
    RequestTimeout,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::CapabilityDenied(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::InvalidRequest(_) | ApiError::InvalidTxHash(_) => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::UriTooLong(_) => StatusCode::URI_TOO_LONG,
            ApiError::HeadersTooLarge(..) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let detail = self.to_string();
        let body = ProblemBody {
            kind: problem_type(self.code()),
            title: self.title(),
            status: status.as_u16(),
            detail: &detail,
            code: self.code(),
        };
        let mut resp = problem_builder(status);
        match self {
            ApiError::Unauthorized(_) => {
                resp.insert_header((header::WWW_AUTHENTICATE, r#"Bearer realm="settlegate""#));
            }
            ApiError::RateLimited(secs) => {
                resp.insert_header((header::RETRY_AFTER, secs.to_string()));
            }
            _ => {}
        }
        // unwrap: strings and a number always serialise.
        resp.body(serde_json::to_vec(&body).unwrap())
    }
}
