//! The HTTP edge's error type and its RFC 9457 `application/problem+json`
//! rendering. One exhaustive `match` maps each error to its [`Code`], which
//! carries its status, so a new error cannot reach a client without a
//! decision about it.

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpResponse, HttpResponseBuilder, ResponseError};
use serde::Serialize;

use crate::code::Code;

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
    /// The admin API: the ledger's database did not answer (the detail
    /// says what was asked, never the database's own words or URL).
    #[error("{0}")]
    LedgerUnavailable(String),
    /// The admin API: the channel book or the chain did not answer.
    #[error("{0}")]
    ChannelsUnavailable(String),
}

impl ApiError {
    pub fn code(&self) -> Code {
        match self {
            ApiError::CapabilityDenied(_) => Code::CapabilityDenied,
            ApiError::NotFound(_) => Code::NotFound,
            ApiError::MethodNotAllowed(_) => Code::MethodNotAllowed,
            ApiError::InvalidRequest(_) => Code::InvalidRequest,
            ApiError::InvalidTxHash(_) => Code::InvalidTxHash,
            ApiError::PayloadTooLarge(_) => Code::PayloadTooLarge,
            ApiError::UnsupportedMediaType => Code::UnsupportedMediaType,
            ApiError::Unauthorized(_) => Code::Unauthorized,
            ApiError::RateLimited(_) => Code::RateLimited,
            ApiError::UriTooLong(_) => Code::UriTooLong,
            ApiError::HeadersTooLarge(..) => Code::HeadersTooLarge,
            ApiError::RequestTimeout(_) => Code::RequestTimeout,
            ApiError::LedgerUnavailable(_) => Code::LedgerUnavailable,
            ApiError::ChannelsUnavailable(_) => Code::ChannelsUnavailable,
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
            ApiError::LedgerUnavailable(_) => "Ledger unavailable",
            ApiError::ChannelsUnavailable(_) => "Channels unavailable",
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

/// A problem+json body with the stable fields every settlegate error
/// carries (402 and 503 add theirs: `respond::Problem`).
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Problem)]
pub struct ProblemBody<'a> {
    /// `urn:settlegate:problem:<code in kebab case>`.
    #[serde(rename = "type")]
    #[schema(value_type = String, pattern = "^urn:settlegate:problem:[a-z-]+$")]
    kind: &'static str,
    title: &'a str,
    status: u16,
    /// What was wrong, for a person to read.
    detail: &'a str,
    #[schema(value_type = super::openapi::ErrorCode)]
    code: Code,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        // unwrap: every code's status is a valid status (a unit test).
        StatusCode::from_u16(self.code().status()).unwrap()
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let detail = self.to_string();
        let body = ProblemBody {
            kind: self.code().problem_type(),
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
            ApiError::LedgerUnavailable(_) | ApiError::ChannelsUnavailable(_) => {
                resp.insert_header((header::RETRY_AFTER, "2"));
            }
            _ => {}
        }
        // unwrap: strings and a number always serialise.
        resp.body(serde_json::to_vec(&body).unwrap())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// One of each variant: what the tests below go through.
    pub(crate) fn every_api_error() -> [ApiError; 14] {
        [
            ApiError::CapabilityDenied("x"),
            ApiError::NotFound(String::new()),
            ApiError::MethodNotAllowed(String::new()),
            ApiError::InvalidRequest(String::new()),
            ApiError::InvalidTxHash(String::new()),
            ApiError::PayloadTooLarge(0),
            ApiError::UnsupportedMediaType,
            ApiError::Unauthorized(String::new()),
            ApiError::RateLimited(1),
            ApiError::UriTooLong(1),
            ApiError::HeadersTooLarge(1, 1),
            ApiError::RequestTimeout(std::time::Duration::from_secs(1)),
            ApiError::LedgerUnavailable(String::new()),
            ApiError::ChannelsUnavailable(String::new()),
        ]
    }

    #[test]
    fn each_error_answers_its_codes_status_and_type() {
        for e in every_api_error() {
            let code = e.code();
            assert!(!code.is_payment(), "{code}");
            let resp = e.error_response();
            assert_eq!(resp.status().as_u16(), code.status(), "{code}");
            let body = match actix_web::body::MessageBody::try_into_bytes(resp.into_body()) {
                Ok(b) => serde_json::from_slice::<serde_json::Value>(&b).unwrap(),
                Err(_) => panic!("a fixed body"),
            };
            assert_eq!(body["code"], code.as_str());
            assert_eq!(body["type"], code.problem_type());
            assert_eq!(body["status"], code.status());
        }
    }
}
