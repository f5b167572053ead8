//! `GET /v1/authorize`: forward-auth for reverse proxies (Caddy
//! `forward_auth`, Traefik `ForwardAuth`, nginx `auth_request`). The proxy
//! forwards the client's `Authorization` and names the original request in
//! `X-Forwarded-Method` + `X-Forwarded-Uri` (or `X-Original-Method` +
//! `X-Original-URI`); that request's method and path pick the price.
//!
//! Those headers are believed only from a peer in
//! `authorize.trusted_proxies`: anyone else could name a cheap route while
//! the proxy serves a dear one. And the path must be one the upstream will
//! not read differently: no dot segments, no empty segments, no encoded
//! slashes, dots or backslashes. Otherwise `/cheap/../dear` would be priced
//! as `/cheap/*` and served as `/dear`.

use actix_web::http::header::{AUTHORIZATION, HeaderMap};
use actix_web::{HttpRequest, HttpResponse, web};
use settlegate_rules::credential::{CredentialError, parse_credential};
use settlegate_rules::genome::actions;

use super::AppState;
use super::gate::{Asked, decide, idempotency_key};
use super::problem::ApiError;

const MAX_URI: usize = 2048;

/// The methods `/v1/authorize` answers (the `Allow` of its 405).
pub const METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";

pub fn method_guard() -> impl actix_web::guard::Guard {
    use actix_web::guard::{Any, Delete, Get, Head, Options, Patch, Post, Put};
    Any(Get())
        .or(Head())
        .or(Post())
        .or(Put())
        .or(Patch())
        .or(Delete())
        .or(Options())
}

/// Forward-auth for a reverse proxy: is the forwarded request paid for?
/// Every method is accepted (nginx `auth_request` sends the original one).
#[utoipa::path(
    method(get, head, post, put, patch, delete, options),
    path = "/v1/authorize",
    tag = "payments",
    params(
        ("X-Forwarded-Method" = String, Header, pattern = "^[A-Za-z]{1,16}$",
         description = "The original request's method, believed only from authorize.trusted_proxies. nginx's X-Original-Method is read when both X-Forwarded headers are absent"),
        ("X-Forwarded-Uri" = String, Header, min_length = 1, pattern = "^/(?:(?!\\.\\.?(?:[/?#]|$))(?:[!\"$&-.0->@-\\[\\]-~]|%(?!2[eEfF5]|5[cC]|00))+(?:/(?!\\.\\.?(?:[/?#]|$))(?:[!\"$&-.0->@-\\[\\]-~]|%(?!2[eEfF5]|5[cC]|00))+)*/?)?(?:[?#][!-~]*)?$",
         description = "The original request's URI, at most 2048 bytes: no dot or empty segments, no encoded dot, slash, backslash, NUL or percent sign. nginx's X-Original-URI is read when both X-Forwarded headers are absent"),
        ("Authorization" = Option<String>, Header, pattern = "^(?![ ]*[Tt][Ee][Mm][Pp][Oo](?:[ ]|$)(?![ ]*0[xX][0-9a-fA-F]{64}[ ]*$))[ -~]*$", description = "The paying client's credential, either scheme (at most 8192 bytes)"),
        ("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$"),
        ("X-Settlegate-Key" = Option<String>, Header, description = "The proxy's API key, when callers.authorize is on"),
    ),
    responses(
        (status = 200, description = "Paid and consumed: the proxy lets the request through and copies these headers upstream",
         headers(("X-Request-Id" = String), ("X-Settlement-Payer" = String), ("X-Settlement-Tx" = String),
                 ("X-Settlement-Amount" = String), ("Payment-Receipt" = String))),
        (status = 402, description = "Not paid, as for /v1/verify: the proxy hands it to the client unchanged",
         body = crate::http::respond::Problem, content_type = "application/problem+json",
         headers(("X-Request-Id" = String), ("WWW-Authenticate" = String))),
        (status = 503, description = "No trustworthy answer now. Nothing consumed",
         body = crate::http::respond::Problem, content_type = "application/problem+json",
         headers(("X-Request-Id" = String), ("Retry-After" = String))),
        (status = 400, description = "No original request from a trusted proxy, an ambiguous path, or a malformed credential header",
         body = crate::http::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "callers.authorize is on and the request has no valid X-Settlegate-Key",
         body = crate::http::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "The genome does not allow settlement.authorize", body = crate::http::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "callers.authorize is on and the proxy's key or the client IP is beyond its rate (callers.rate_per_*)",
         body = crate::http::problem::ProblemBody, content_type = "application/problem+json",
         headers(("Retry-After" = String, description = "Seconds until a request is admitted again"))),
    )
)]
pub async fn authorize(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let trusted = req
        .peer_addr()
        .is_some_and(|peer| state.trusted_proxies.iter().any(|net| net.contains(&peer.ip())));
    let resource = original_request(req.headers(), trusted)?;
    let idempotency_key = idempotency_key(req.headers())?;
    let mut malformed = None;
    let credential = match req.headers().get(AUTHORIZATION) {
        None => None,
        Some(v) => {
            let v = v
                .to_str()
                .map_err(|_| ApiError::InvalidRequest("Authorization is not visible ASCII".into()))?;
            match parse_credential(v) {
                Ok(c) => Some(c),
                Err(CredentialError::InvalidTxHash(m)) => return Err(ApiError::InvalidTxHash(m)),
                Err(CredentialError::TooLong) => {
                    return Err(ApiError::InvalidRequest("the credential is too long".into()));
                }
                Err(CredentialError::MalformedPayment(m)) => {
                    malformed = Some(m);
                    None
                }
                // Another scheme (Bearer for the upstream, say): unpaid.
                Err(CredentialError::NotAPaymentCredential(_)) => None,
            }
        }
    };
    let asked = Asked {
        credential,
        resource: Some(resource),
        idempotency_key,
        malformed,
        action: actions::SETTLEMENT_AUTHORIZE,
    };
    let (summary, outcome) = decide(&state, asked).await?;
    Ok(state.answer_authorize(&req, summary, outcome))
}

/// `METHOD /path` of the request the proxy is asking about.
fn original_request(headers: &HeaderMap, trusted: bool) -> Result<String, ApiError> {
    let missing = || {
        ApiError::InvalidRequest(
            "no original request: /v1/authorize needs X-Forwarded-Method and X-Forwarded-Uri (or X-Original-Method \
             and X-Original-URI) from a trusted proxy (authorize.trusted_proxies)"
                .into(),
        )
    };
    if !trusted {
        return Err(missing());
    }
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (method, uri) = match (get("x-forwarded-method"), get("x-forwarded-uri")) {
        (Some(m), Some(u)) => (m, u),
        _ => match (get("x-original-method"), get("x-original-uri")) {
            (Some(m), Some(u)) => (m, u),
            _ => return Err(missing()),
        },
    };
    let method = method.trim();
    if method.is_empty() || method.len() > 16 || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(ApiError::InvalidRequest(
            "the forwarded method is not an HTTP method".into(),
        ));
    }
    Ok(format!("{} {}", method.to_ascii_uppercase(), pricing_path(uri.trim())?))
}

/// The path of a forwarded request URI, without its query, refused when an
/// upstream could resolve it to another path than the one priced.
pub fn pricing_path(uri: &str) -> Result<&str, ApiError> {
    let bad = |why: &str| Err(ApiError::InvalidRequest(format!("the forwarded URI {why}")));
    if uri.len() > MAX_URI {
        return bad(&format!("is longer than {MAX_URI} bytes"));
    }
    let path = uri.split(['?', '#']).next().unwrap_or("");
    if !path.starts_with('/') {
        return bad("must be a path starting with /");
    }
    if path
        .bytes()
        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control() || b == b'\\')
    {
        return bad("contains spaces, control characters or backslashes");
    }
    let lower = path.to_ascii_lowercase();
    if ["%2e", "%2f", "%5c", "%00", "%25"].iter().any(|e| lower.contains(e)) {
        return bad("contains an encoded dot, slash, backslash, NUL or percent sign");
    }
    let mut segments = path[1..].split('/').peekable();
    while let Some(s) = segments.next() {
        let last = segments.peek().is_none();
        if s == "." || s == ".." || (s.is_empty() && !last) {
            return bad("contains a dot or empty segment");
        }
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pricing_paths() {
        for (uri, path) in [
            ("/reports/42?x=1", "/reports/42"),
            ("/", "/"),
            ("/a/b/", "/a/b/"),
            ("/a#frag", "/a"),
            ("/caf%C3%A9", "/caf%C3%A9"),
        ] {
            assert_eq!(pricing_path(uri).ok(), Some(path), "{uri}");
        }
        for uri in [
            "",
            "reports",
            "http://host/x",
            "/free/../dear/1",
            "/free/./x",
            "/..",
            "//dear/1",
            "/a//b",
            "/free/%2e%2e/dear",
            "/free/%2E%2e/dear",
            "/a%2fb",
            "/a%5Cb",
            "/a\\b",
            "/a b",
            "/a%00",
            "/a%252e",
        ] {
            assert!(pricing_path(uri).is_err(), "{uri}");
        }
        assert!(pricing_path(&format!("/{}", "a".repeat(MAX_URI))).is_err());
    }

    #[test]
    fn forwarded_headers_count_only_from_a_trusted_peer() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-method".parse().unwrap(), "get".parse().unwrap());
        h.insert("x-forwarded-uri".parse().unwrap(), "/dear/1?q".parse().unwrap());
        assert_eq!(original_request(&h, true).ok().as_deref(), Some("GET /dear/1"));
        assert!(original_request(&h, false).is_err());
        let mut o = HeaderMap::new();
        o.insert("x-original-method".parse().unwrap(), "POST".parse().unwrap());
        o.insert("x-original-uri".parse().unwrap(), "/x".parse().unwrap());
        assert_eq!(original_request(&o, true).ok().as_deref(), Some("POST /x"));
        let mut half = HeaderMap::new();
        half.insert("x-forwarded-method".parse().unwrap(), "GET".parse().unwrap());
        assert!(original_request(&half, true).is_err());
        let mut bad = h.clone();
        bad.insert("x-forwarded-method".parse().unwrap(), "G-T".parse().unwrap());
        assert!(original_request(&bad, true).is_err());
    }
}
