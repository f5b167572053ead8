//! `GET /v1/authorize`: forward-auth for reverse proxies (Caddy
//! `forward_auth`, Traefik `ForwardAuth`, nginx `auth_request`). The proxy
//! forwards the client's `Authorization` and names the original request in
//! the configured header pair (`X-Forwarded-Method` + `X-Forwarded-Uri`, or
//! `X-Original-Method` + `X-Original-URI`); that request's method and path
//! pick the price.
//!
//! Those headers are believed only from a peer in
//! `authorize.trusted_proxies`, only from the configured pair, and only
//! when each is given once: anyone else, or a client's own header beside
//! the proxy's, could name a cheap route while the proxy serves a dear one.
//! The path is priced in its normal form ([`settlegate_rules::target`]), so
//! `/%72eports/1`, `/REPORTS/1/` and `/reports/1` cost the same, and a path
//! the upstream could read differently (`/cheap/../dear`, `/dear;x=1`) is
//! refused.
//!
//! For nginx `auth_request`, refusals can be sealed into a 401 and handed
//! back for the full answer: [`super::refusal`] wraps this route.

use actix_web::http::header::{AUTHORIZATION, HeaderMap};
use actix_web::{HttpRequest, HttpResponse, web};
use settlegate_rules::credential::{CredentialError, parse_credential};
use settlegate_rules::genome::actions;

use settlegate_rules::target::{NormalPath, normalise};

use super::AppState;
use super::gate::{Asked, accept_payment, check_body_digest, decide, idempotency_key, single_header};
use super::problem::ApiError;
use crate::settings::ForwardedHeaders;

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
///
/// For nginx `auth_request`, which passes on only a 2xx, 401 or 403 and no
/// body: with `X-Settlegate-Deny-Status: 401` every answer but a 200 is a
/// bodiless 401 with the answer sealed in `X-Settlegate-Refusal` (for 60 s);
/// a request carrying `X-Settlegate-Refusal` from a trusted proxy gets the
/// sealed answer as it was, and nothing is decided or consumed (a seal that
/// does not open: 400). See the repository's `proxy/nginx/settlegate.conf`.
#[utoipa::path(
    method(get, head, post, put, patch, delete, options),
    path = "/v1/authorize",
    tag = "payments",
    params(
        ("X-Forwarded-Method" = String, Header, pattern = "^[A-Za-z]{1,16}$",
         description = "The original request's method, believed only from authorize.trusted_proxies. With authorize.forwarded_headers = x-original, X-Original-Method instead"),
        ("X-Forwarded-Uri" = String, Header, min_length = 1, max_length = 2048, pattern = "^/(?:(?!(?:\\.|%2[Ee]){1,2}(?:[/?#]|$))(?:[!\"$&-.0-:<->@-\\[\\]-~]|%(?:2[1246-9A-Ea-e]|3[0-9AaCcDdEe]|[46][0-9A-Fa-f]|5[0-9ABabD-Fd-f]|7[0-9A-Ea-e])|(?:%20|%[Cc][2-9A-Fa-f]%[89ABab][0-9A-Fa-f]|%[Dd][0-9A-Fa-f]%[89ABab][0-9A-Fa-f]|%[Ee]0%[ABab][0-9A-Fa-f]%[89ABab][0-9A-Fa-f]|%[Ee][1-9A-Ca-cEeFf]%[89ABab][0-9A-Fa-f]%[89ABab][0-9A-Fa-f]|%[Ee][Dd]%[89][0-9A-Fa-f]%[89ABab][0-9A-Fa-f]|%[Ff]0%(?:9[0-9A-Fa-f]|[ABab][0-9A-Fa-f])%[89ABab][0-9A-Fa-f]%[89ABab][0-9A-Fa-f]|%[Ff][1-3]%[89ABab][0-9A-Fa-f]%[89ABab][0-9A-Fa-f]%[89ABab][0-9A-Fa-f]|%[Ff]4%8[0-9A-Fa-f]%[89ABab][0-9A-Fa-f]%[89ABab][0-9A-Fa-f]))+(?:/(?!(?:\\.|%2[Ee]){1,2}(?:[/?#]|$))(?:[!\"$&-.0-:<->@-\\[\\]-~]|%(?:2[1246-9A-Ea-e]|3[0-9AaCcDdEe]|[46][0-9A-Fa-f]|5[0-9ABabD-Fd-f]|7[0-9A-Ea-e])|(?:%20|%[Cc][2-9A-Fa-f]%[89ABab][0-9A-Fa-f]|%[Dd][0-9A-Fa-f]%[89ABab][0-9A-Fa-f]|%[Ee]0%[ABab][0-9A-Fa-f]%[89ABab][0-9A-Fa-f]|%[Ee][1-9A-Ca-cEeFf]%[89ABab][0-9A-Fa-f]%[89ABab][0-9A-Fa-f]|%[Ee][Dd]%[89][0-9A-Fa-f]%[89ABab][0-9A-Fa-f]|%[Ff]0%(?:9[0-9A-Fa-f]|[ABab][0-9A-Fa-f])%[89ABab][0-9A-Fa-f]%[89ABab][0-9A-Fa-f]|%[Ff][1-3]%[89ABab][0-9A-Fa-f]%[89ABab][0-9A-Fa-f]%[89ABab][0-9A-Fa-f]|%[Ff]4%8[0-9A-Fa-f]%[89ABab][0-9A-Fa-f]%[89ABab][0-9A-Fa-f]))+)*/?)?(?:\\?[!\"$-~]*)?$",
         description = "The original request's URI, at most 2048 bytes of visible ASCII: no dot or empty segments, no `;` or backslash, no malformed or ambiguous percent-encoding (of a slash, backslash, percent sign, `;`, `?`, `#`, a control character, or bytes that are not UTF-8). With authorize.forwarded_headers = x-original, X-Original-URI instead"),
        ("Authorization" = Option<String>, Header, pattern = "^(?![ ]*[Tt][Ee][Mm][Pp][Oo](?:[ ]|$)(?![ ]*0[xX][0-9a-fA-F]{64}[ ]*$))[ -~]*$", description = "The paying client's credential, either scheme (at most 8192 bytes)"),
        ("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{16,255}$",
         description = "The client's key: a retry with the same key, hash, scheme, method, URI (path and query), Content-Digest and (Payment) challenge, inside idempotency.retry_window_seconds and idempotency.max_retries, gets its 200 again. 16 to 255 visible ASCII characters"),
        ("Content-Digest" = Option<String>, Header, max_length = 1024, pattern = "^[!-~](?:[ -~]*[!-~])?$",
         description = "The client's body digest (RFC 9530), compared exactly between a request and its idempotent retries"),
        ("X-Settlegate-Key" = Option<String>, Header, description = "The proxy's API key, when callers.authorize is on"),
        ("Accept-Payment" = Option<String>, Header,
         description = "The client's payment preferences (`tempo/session, tempo/charge;q=0.5`): a 402 carries only the Payment challenges it takes, in its order. Several lines are joined; a value that does not parse (at most 1024 bytes, 32 ranges) or that refuses every offer is ignored"),
    ),
    responses(
        (status = 200, description = "Paid and consumed (a free route: its proof claimed; X-Settlement-Tx is then the challenge id and X-Settlement-Amount 0): the proxy lets the request through and copies these headers upstream",
         headers(("X-Request-Id" = String), ("X-Settlement-Payer" = String), ("X-Settlement-Tx" = String),
                 ("X-Settlement-Amount" = String), ("Payment-Receipt" = String))),
        (status = 410, description = "A session's channel is gone, as for /v1/verify: the proxy hands it to the client unchanged",
         body = crate::http::respond::Problem, content_type = "application/problem+json",
         headers(("X-Request-Id" = String), ("WWW-Authenticate" = String))),
        (status = 402, description = "Not paid, as for /v1/verify: the proxy hands it to the client unchanged",
         body = crate::http::respond::Problem, content_type = "application/problem+json",
         headers(("X-Request-Id" = String), ("WWW-Authenticate" = String),
                 ("Vary" = String, description = "Accept-Payment, when more than one Payment challenge could be offered"))),
        (status = 503, description = "No trustworthy answer now. Nothing consumed",
         body = crate::http::respond::Problem, content_type = "application/problem+json",
         headers(("X-Request-Id" = String), ("Retry-After" = String))),
        (status = 400, description = "No original request from a trusted proxy, an ambiguous path, or a malformed credential header",
         body = crate::http::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "callers.authorize is on and the request has no valid X-Settlegate-Key (problem+json); or, with X-Settlegate-Deny-Status: 401, any refusal, without a body, sealed in X-Settlegate-Refusal",
         body = crate::http::problem::ProblemBody, content_type = "application/problem+json",
         headers(("X-Settlegate-Refusal" = String, description = "With X-Settlegate-Deny-Status: 401: the refusal, sealed for 60 s"))),
        (status = 403, description = "The genome does not allow settlement.authorize", body = crate::http::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "callers.authorize is on and the proxy's key or the client IP is beyond its rate (callers.rate_per_*)",
         body = crate::http::problem::ProblemBody, content_type = "application/problem+json",
         headers(("Retry-After" = String, description = "Seconds until a request is admitted again"))),
    )
)]
pub async fn authorize(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let trusted = state.trusted_proxy(req.peer_addr());
    let Forwarded { resource, target } = original_request(req.headers(), trusted, state.forwarded_headers)?;
    let idempotency_key = idempotency_key(req.headers())?;
    let body_digest = match single_header(req.headers(), "content-digest")? {
        None => None,
        Some(v) => Some(check_body_digest(
            "Content-Digest",
            v.to_str()
                .map_err(|_| ApiError::InvalidRequest("Content-Digest is not visible ASCII".into()))?,
        )?),
    };
    let mut malformed = None;
    let credential = match single_header(req.headers(), AUTHORIZATION.as_str())? {
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
        target: Some(target),
        body_digest,
        idempotency_key,
        malformed,
        action: actions::SETTLEMENT_AUTHORIZE,
    };
    let offers = accept_payment(req.headers());
    let (summary, outcome) = decide(&state, asked).await?;
    Ok(state.answer_authorize(&req, summary, outcome, &offers))
}

/// `METHOD /path` of the request the proxy is asking about, its path in the
/// normal form the price rules match (see [`settlegate_rules::target`]).
///
/// Only the configured header pair is read, each header exactly once, and
/// its value must be visible ASCII: a request that also carries the other
/// pair, a header twice, or an unreadable value is refused, never read
/// through another header (a client's own `X-Forwarded-Uri` must not win
/// over what an nginx put in `X-Original-URI`).
fn original_request(headers: &HeaderMap, trusted: bool, pair: ForwardedHeaders) -> Result<Forwarded, ApiError> {
    let (method_name, uri_name) = pair.names();
    if !trusted {
        return Err(ApiError::InvalidRequest(format!(
            "no original request: /v1/authorize needs {method_name} and {uri_name} from a trusted proxy \
             (authorize.trusted_proxies)"
        )));
    }
    let (other_method, other_uri) = pair.other().names();
    if headers.contains_key(other_method) || headers.contains_key(other_uri) {
        return Err(ApiError::InvalidRequest(format!(
            "the request carries {other_method} or {other_uri}, but this service reads the original request \
             from {method_name} and {uri_name} only (authorize.forwarded_headers)"
        )));
    }
    let one = |name: &str| -> Result<&str, ApiError> {
        single_header(headers, name)?
            .ok_or_else(|| {
                ApiError::InvalidRequest(format!(
                    "no original request: /v1/authorize needs {method_name} and {uri_name} from a trusted proxy"
                ))
            })?
            .to_str()
            .map_err(|_| ApiError::InvalidRequest(format!("{name} is not visible ASCII")))
    };
    let (method, uri) = (one(method_name)?, one(uri_name)?);
    let method = method.trim();
    if method.is_empty() || method.len() > 16 || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(ApiError::InvalidRequest(
            "the forwarded method is not an HTTP method".into(),
        ));
    }
    let (method, uri) = (method.to_ascii_uppercase(), uri.trim());
    Ok(Forwarded {
        resource: format!("{method} {}", pricing_path(uri)?),
        target: format!("{method} {}", uri.split_once('#').map_or(uri, |(u, _)| u)),
    })
}

/// The request a proxy asks about.
#[derive(Debug)]
struct Forwarded {
    /// `METHOD /normal-path`: what the price rules match.
    resource: String,
    /// `METHOD /path?query` as the proxy named it (fragment dropped): what
    /// an idempotent retry must repeat.
    target: String,
}

/// The path of a forwarded request URI in normal form, refused when an
/// upstream could resolve it to another path than the one priced.
pub fn pricing_path(uri: &str) -> Result<NormalPath, ApiError> {
    normalise(uri).map_err(|e| ApiError::InvalidRequest(format!("the forwarded URI {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use settlegate_rules::target::MAX_TARGET;

    #[test]
    fn pricing_paths() {
        for (uri, path) in [
            ("/reports/42?x=1", "/reports/42"),
            ("/", "/"),
            ("/a/b/", "/a/b"),
            ("/caf%C3%A9", "/caf%c3%a9"),
            ("/%72eports/1", "/reports/1"),
            ("/DEAR", "/dear"),
        ] {
            assert_eq!(
                pricing_path(uri).ok().as_ref().map(NormalPath::as_str),
                Some(path),
                "{uri}"
            );
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
            "/dear;x=1",
            "/a#frag",
        ] {
            assert!(pricing_path(uri).is_err(), "{uri}");
        }
        assert!(pricing_path(&format!("/{}", "a".repeat(MAX_TARGET))).is_err());
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(k.parse().unwrap(), v.parse().unwrap());
        }
        h
    }

    #[test]
    fn only_the_configured_pair_is_read() {
        use ForwardedHeaders::{XForwarded, XOriginal};
        let fwd = headers(&[("x-forwarded-method", "get"), ("x-forwarded-uri", "/dear/1?q")]);
        assert_eq!(
            original_request(&fwd, true, XForwarded)
                .ok()
                .map(|f| f.resource)
                .as_deref(),
            Some("GET /dear/1")
        );
        assert!(original_request(&fwd, false, XForwarded).is_err());
        // the other pair is not a fallback
        assert!(original_request(&fwd, true, XOriginal).is_err());
        let orig = headers(&[("x-original-method", "POST"), ("x-original-uri", "/x")]);
        assert_eq!(
            original_request(&orig, true, XOriginal)
                .ok()
                .map(|f| f.resource)
                .as_deref(),
            Some("POST /x")
        );
        assert!(original_request(&orig, true, XForwarded).is_err());
        // both pairs, even partly: refused under either setting
        let both = headers(&[
            ("x-original-method", "GET"),
            ("x-original-uri", "/dear"),
            ("x-forwarded-uri", "/cheap/x"),
        ]);
        assert!(original_request(&both, true, XOriginal).is_err());
        assert!(original_request(&both, true, XForwarded).is_err());
        // a duplicate
        let twice = headers(&[
            ("x-forwarded-method", "GET"),
            ("x-forwarded-uri", "/dear"),
            ("x-forwarded-uri", "/cheap/x"),
        ]);
        assert!(original_request(&twice, true, XForwarded).is_err());
        let half = headers(&[("x-forwarded-method", "GET")]);
        assert!(original_request(&half, true, XForwarded).is_err());
        let bad = headers(&[("x-forwarded-method", "G-T"), ("x-forwarded-uri", "/x")]);
        assert!(original_request(&bad, true, XForwarded).is_err());
        let mut non_ascii = headers(&[("x-forwarded-method", "GET")]);
        non_ascii.insert(
            "x-forwarded-uri".parse().unwrap(),
            actix_web::http::header::HeaderValue::from_bytes(b"/d\xc3\xa9ar").unwrap(),
        );
        assert!(original_request(&non_ascii, true, XForwarded).is_err());
        // the full target, fragment dropped, for idempotent retries
        let f = headers(&[("x-forwarded-method", "get"), ("x-forwarded-uri", " /dear/1?a=1&b=2 ")]);
        let f = original_request(&f, true, XForwarded).unwrap();
        assert_eq!(
            (f.resource.as_str(), f.target.as_str()),
            ("GET /dear/1", "GET /dear/1?a=1&b=2")
        );
    }
}
