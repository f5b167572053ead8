//! `POST /v1/verify`: another service received a paid request and asks
//! whether it is paid. Consumes the payment on a 200.

use actix_web::mime;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use settlegate_rules::accept_payment::AcceptPayment;
use settlegate_rules::credential::{Credential, CredentialError, TxHash, parse_credential};
use settlegate_rules::genome::actions;
/// The longest quote of serde's message in a 400, as in a malformed credential's.
pub use settlegate_rules::mpp::MAX_DETAIL_CHARS;

use super::AppState;
use super::gate::{Asked, check_body_digest, check_resource, decide, idempotency_key};
use super::problem::ApiError;

/// Request bodies larger than this are refused with 413.
pub const MAX_BODY: usize = 16 * 1024;

/// A verify body as the handler acts on it, before the genome, the chain
/// or the replay store are asked anything.
#[derive(Debug, PartialEq, Eq)]
pub struct VerifyBody {
    /// `None`: no usable credential (none, another scheme, or `malformed`).
    pub credential: Option<Credential>,
    /// `METHOD /path`, checked and normalised: what the price rules match.
    pub resource: Option<String>,
    /// The `resource` as given (query included): what an idempotent retry
    /// must repeat.
    pub target: Option<String>,
    /// Why a `Payment` credential could not even be split off its scheme.
    pub malformed: Option<String>,
    /// The paid request's body digest, checked.
    pub body_digest: Option<String>,
    /// The client's `Accept-Payment`: which `Payment` challenges a 402
    /// carries, in what order (malformed: all of them).
    pub accept_payment: AcceptPayment,
}

/// The body's bytes as the JSON extractor of [`json_config`] reads them
/// (more than [`MAX_BODY`] refused, the same serde schema, the same
/// message), then the handler's own checks. Pure: the `verify_body` fuzz
/// target calls it.
pub fn parse_body(bytes: &[u8]) -> Result<VerifyBody, ApiError> {
    if bytes.len() > MAX_BODY {
        return Err(ApiError::PayloadTooLarge(MAX_BODY));
    }
    serde_json::from_slice::<VerifyRequest>(bytes)
        .map_err(|e| not_a_verify_request(&e))?
        .check()
}

/// serde quotes what it refuses escaped (`{:?}`: six characters for a
/// control character), so its message is cut: a 16 KiB body of them would
/// otherwise be answered with a 100 KiB error and logged as one.
fn not_a_verify_request(e: &serde_json::Error) -> ApiError {
    ApiError::InvalidRequest(format!(
        "the body is not a valid verify request: {}",
        settlegate_rules::primitives::cut_chars(&e.to_string(), MAX_DETAIL_CHARS)
    ))
}

// (serde's derive alone would also take the fields as a JSON array, which
// `deny_unknown_fields` does not check: the `Deserialize` below reads only
// an object.)
/// The body of `POST /v1/verify`, a JSON object. At most one of `credential` and
/// `tx_hash`; neither asks for the price (402 with the challenges).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, remote = "Self")]
pub struct VerifyRequest {
    /// The paying client's `Authorization` value, either scheme:
    /// `Tempo 0x<64 hex>` or `Payment <base64url credential>` (the URL
    /// alphabet, unpadded or canonically padded).
    #[schema(
        max_length = 8192,
        pattern = "^(?![ ]*[Tt][Ee][Mm][Pp][Oo](?:[ ]|$)(?![ ]*0[xX][0-9a-fA-F]{64}[ ]*$))[ -~]*$",
        example = "Tempo 0x5c504ed432cb51138bcf09aa5e8a410dd4a1e204ef84bfed1be16dfba1b22060"
    )]
    credential: Option<String>,
    /// Shorthand for `credential: "Tempo <tx_hash>"`. Any case; canonicalised.
    #[schema(pattern = "^\\s*0[xX][0-9a-fA-F]{64}\\s*$")]
    tx_hash: Option<String>,
    /// `METHOD /path` of the request being paid for: picks the genome's
    /// price rule (the default price otherwise).
    #[schema(
        max_length = 2048,
        pattern = "^[A-Z]+ /(?:(?!(?:\\.|%2[Ee]){1,2}(?:[/?#]|$))(?:[!\"$&-.0-:<->@-\\[\\]-~]|%(?:2[1246-9A-Ea-e]|3[0-9AaCcDdEe]|[46][0-9A-Fa-f]|5[0-9ABabD-Fd-f]|7[0-9A-Ea-e])|(?:%20|%[Cc][2-9A-Fa-f]%[89ABab][0-9A-Fa-f]|%[Dd][0-9A-Fa-f]%[89ABab][0-9A-Fa-f]|%[Ee]0%[ABab][0-9A-Fa-f]%[89ABab][0-9A-Fa-f]|%[Ee][1-9A-Ca-cEeFf]%[89ABab][0-9A-Fa-f]%[89ABab][0-9A-Fa-f]|%[Ee][Dd]%[89][0-9A-Fa-f]%[89ABab][0-9A-Fa-f]|%[Ff]0%(?:9[0-9A-Fa-f]|[ABab][0-9A-Fa-f])%[89ABab][0-9A-Fa-f]%[89ABab][0-9A-Fa-f]|%[Ff][1-3]%[89ABab][0-9A-Fa-f]%[89ABab][0-9A-Fa-f]%[89ABab][0-9A-Fa-f]|%[Ff]4%8[0-9A-Fa-f]%[89ABab][0-9A-Fa-f]%[89ABab][0-9A-Fa-f]))+(?:/(?!(?:\\.|%2[Ee]){1,2}(?:[/?#]|$))(?:[!\"$&-.0-:<->@-\\[\\]-~]|%(?:2[1246-9A-Ea-e]|3[0-9AaCcDdEe]|[46][0-9A-Fa-f]|5[0-9ABabD-Fd-f]|7[0-9A-Ea-e])|(?:%20|%[Cc][2-9A-Fa-f]%[89ABab][0-9A-Fa-f]|%[Dd][0-9A-Fa-f]%[89ABab][0-9A-Fa-f]|%[Ee]0%[ABab][0-9A-Fa-f]%[89ABab][0-9A-Fa-f]|%[Ee][1-9A-Ca-cEeFf]%[89ABab][0-9A-Fa-f]%[89ABab][0-9A-Fa-f]|%[Ee][Dd]%[89][0-9A-Fa-f]%[89ABab][0-9A-Fa-f]|%[Ff]0%(?:9[0-9A-Fa-f]|[ABab][0-9A-Fa-f])%[89ABab][0-9A-Fa-f]%[89ABab][0-9A-Fa-f]|%[Ff][1-3]%[89ABab][0-9A-Fa-f]%[89ABab][0-9A-Fa-f]%[89ABab][0-9A-Fa-f]|%[Ff]4%8[0-9A-Fa-f]%[89ABab][0-9A-Fa-f]%[89ABab][0-9A-Fa-f]))+)*/?)?(?:\\?[!\"$-~]*)?$",
        example = "GET /reports/42"
    )]
    resource: Option<String>,
    /// The digest of the paid request's body (its `Content-Digest`, RFC
    /// 9530), compared exactly: with an `Idempotency-Key`, only a retry
    /// with the same digest gets the settlement again.
    #[schema(
        max_length = 1024,
        pattern = "^[!-~](?:[ -~]*[!-~])?$",
        example = "sha-256=:RK/0qy18MlBSVnWgjwz6lZEWjP/lF5HF9bvEF8FabDg=:"
    )]
    body_digest: Option<String>,
    /// The paying client's `Accept-Payment` header, as it sent it (lines
    /// joined with `, `): the 402 then carries only the `Payment`
    /// challenges it takes, in its order. A value that does not parse, or
    /// that refuses every offer, is ignored: the 402 carries them all.
    #[schema(example = "tempo/session, tempo/charge;q=0.5")]
    accept_payment: Option<String>,
}

impl<'de> Deserialize<'de> for VerifyRequest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Object;
        impl<'de> serde::de::Visitor<'de> for Object {
            type Value = VerifyRequest;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<VerifyRequest, A::Error> {
                // the derived fields and checks (`remote = "Self"`), on the map
                VerifyRequest::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(Object)
    }
}

impl VerifyRequest {
    /// Malformed input is a 400 whatever the genome says: the resource,
    /// then the credential or `tx_hash`.
    fn check(self) -> Result<VerifyBody, ApiError> {
        let target = self.resource.clone();
        let resource = self.resource.map(check_resource).transpose()?;
        let body_digest = self
            .body_digest
            .map(|d| check_body_digest("body_digest", &d))
            .transpose()?;
        let mut malformed = None;
        let credential = match (self.credential, self.tx_hash) {
            (Some(_), Some(_)) => {
                return Err(ApiError::InvalidRequest("give credential or tx_hash, not both".into()));
            }
            (None, Some(h)) => Some(Credential::Tempo(
                h.parse::<TxHash>()
                    .map_err(|e| ApiError::InvalidTxHash(format!("tx_hash: {e}")))?,
            )),
            // What an Authorization header could carry: visible ASCII and spaces.
            (Some(c), None) if !c.bytes().all(|b| (0x20..0x7f).contains(&b)) => {
                return Err(ApiError::InvalidRequest(
                    "the credential must be printable ASCII, as in an Authorization header".into(),
                ));
            }
            (Some(c), None) => match parse_credential(&c) {
                Ok(c) => Some(c),
                Err(CredentialError::InvalidTxHash(m)) => return Err(ApiError::InvalidTxHash(m)),
                Err(CredentialError::TooLong) => {
                    return Err(ApiError::InvalidRequest("the credential is too long".into()));
                }
                Err(CredentialError::MalformedPayment(m)) => {
                    malformed = Some(m);
                    None
                }
                Err(CredentialError::NotAPaymentCredential(_)) => None,
            },
            (None, None) => None,
        };
        Ok(VerifyBody {
            credential,
            resource,
            target,
            malformed,
            body_digest,
            // Never a 400: a client's preferences cannot cost it its 402.
            accept_payment: AcceptPayment::from_header(self.accept_payment.as_deref()),
        })
    }
}

/// The JSON extractor's limits and errors, as problem+json.
pub fn json_config() -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(MAX_BODY)
        .content_type_required(true)
        .content_type(|m| m.type_() == mime::APPLICATION && m.subtype() == mime::JSON)
        .error_handler(|err, _req| {
            use actix_web::error::JsonPayloadError as E;
            let api = match &err {
                E::OverflowKnownLength { .. } | E::Overflow { .. } => ApiError::PayloadTooLarge(MAX_BODY),
                E::ContentType => ApiError::UnsupportedMediaType,
                E::Deserialize(e) => not_a_verify_request(e),
                other => ApiError::InvalidRequest(format!("the body could not be read: {other}")),
            };
            api.into()
        })
}

/// Asks whether a request is paid for, and consumes the payment on a 200.
#[utoipa::path(
    post,
    path = "/v1/verify",
    tag = "payments",
    request_body(content = VerifyRequest, content_type = "application/json", description = "At most 16 KiB"),
    params(
        ("Authorization" = Option<String>, Header,
         description = "Bearer <api key>: needed when callers.api_keys is configured (the paying client's credential goes in the body)"),
        ("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{16,255}$",
         description = "A retry of the request that consumed the payment, with the same key, hash, scheme, resource, body_digest and (Payment) challenge, inside idempotency.retry_window_seconds and idempotency.max_retries, gets its settlement again. 16 to 255 visible ASCII characters"),
    ),
    responses(
        (status = 200, description = "Paid: the payment satisfies the policy and is now consumed (or this is an idempotent retry); or, for a session credential, this request's price was deducted from its channel; or, for a route priced at zero, a proof credential signed by its source was claimed (once per challenge)",
         body = crate::http::respond::VerifyOk, headers(("X-Request-Id" = String), ("Payment-Receipt" = Option<String>,
         description = "Payment scheme only: the Machine Payments Protocol receipt"))),
        (status = 410, description = "A session credential whose channel is gone (not on chain, finalised, or its close requested): CHANNEL_GONE. Nothing deducted",
         body = crate::http::respond::Problem, content_type = "application/problem+json",
         headers(("X-Request-Id" = String), ("WWW-Authenticate" = String))),
        (status = 402, description = "Not paid: no usable credential, verification failed, already used, or not visible yet. Nothing consumed",
         body = crate::http::respond::Problem, content_type = "application/problem+json",
         headers(("X-Request-Id" = String), ("WWW-Authenticate" = String, description = "A Tempo and a Payment challenge, as the genome enables them, the Payment ones as accept_payment asks"),
                 ("Vary" = String, description = "Accept-Payment, when more than one Payment challenge could be offered: a service that hands the 402 on passes it on"))),
        (status = 503, description = "No trustworthy answer now (chain RPC, replay store or genome). Nothing consumed",
         body = crate::http::respond::Problem, content_type = "application/problem+json",
         headers(("X-Request-Id" = String), ("Retry-After" = String))),
        (status = 400, description = "Malformed body or transaction hash", body = crate::http::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "Caller authentication is on (callers.api_keys) and the request has no valid API key",
         body = crate::http::problem::ProblemBody, content_type = "application/problem+json",
         headers(("WWW-Authenticate" = String, description = "Bearer realm=\"settlegate\""))),
        (status = 403, description = "The genome does not allow settlement.verify", body = crate::http::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "Beyond the caller's or the client IP's rate (callers.rate_per_*)",
         body = crate::http::problem::ProblemBody, content_type = "application/problem+json",
         headers(("Retry-After" = String, description = "Seconds until a request is admitted again"))),
        (status = 408, description = "The body did not arrive within server.request_body_timeout_ms of the head; the connection is closed",
         body = crate::http::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 413, description = "The body is larger than 16 KiB", body = crate::http::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 415, description = "The body is not application/json", body = crate::http::problem::ProblemBody, content_type = "application/problem+json"),
    )
)]
pub async fn verify(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<VerifyRequest>,
) -> Result<HttpResponse, ApiError> {
    // Malformed input is a 400 whatever the genome says.
    let idempotency_key = idempotency_key(req.headers())?;
    let VerifyBody {
        credential,
        resource,
        target,
        malformed,
        body_digest,
        accept_payment,
    } = body.into_inner().check()?;
    let asked = Asked {
        credential,
        target,
        body_digest,
        resource,
        idempotency_key,
        malformed,
        action: actions::SETTLEMENT_VERIFY,
    };
    let (summary, outcome) = decide(&state, asked).await?;
    Ok(state.answer(&req, summary, outcome, &accept_payment))
}

#[cfg(test)]
mod tests {
    use actix_web::{FromRequest, ResponseError};

    use super::*;

    const H: &str = "0x5c504ed432cb51138bcf09aa5e8a410dd4a1e204ef84bfed1be16dfba1b22060";

    fn refused(body: &[u8]) -> (&'static str, String) {
        let e = parse_body(body).unwrap_err();
        (e.code().as_str(), e.to_string())
    }

    #[test]
    fn bodies_parse_to_what_the_handler_acts_on() {
        let tempo = Some(Credential::Tempo(H.parse().unwrap()));
        let upper = format!(
            r#"{{"tx_hash": " 0X{} ", "resource": "GET /reports/42"}}"#,
            H[2..].to_uppercase()
        );
        assert_eq!(
            parse_body(upper.as_bytes()).unwrap(),
            VerifyBody {
                credential: tempo.clone(),
                resource: Some("GET /reports/42".into()),
                target: Some("GET /reports/42".into()),
                malformed: None,
                body_digest: None,
                accept_payment: AcceptPayment::any(),
            }
        );
        let digest =
            parse_body(br#"{"body_digest": "sha-256=:RK/0qy18MlBSVnWgjwz6lZEWjP/lF5HF9bvEF8FabDg=:"}"#).unwrap();
        assert_eq!(
            digest.body_digest.as_deref(),
            Some("sha-256=:RK/0qy18MlBSVnWgjwz6lZEWjP/lF5HF9bvEF8FabDg=:")
        );
        let header = format!(r#"{{"credential": "  tempo {H}"}}"#);
        assert_eq!(parse_body(header.as_bytes()).unwrap().credential, tempo);
        let payment = parse_body(br#"{"credential": "Payment eyJ9"}"#).unwrap();
        assert_eq!(payment.credential, Some(Credential::Payment("eyJ9".into())));
        let empty = parse_body(br#"{"credential": "Payment   "}"#).unwrap();
        assert!(empty.credential.is_none() && empty.malformed.is_some());
        for none in [&b"{}"[..], br#"{"credential": null}"#, br#"{"credential": "Bearer x"}"#] {
            let b = parse_body(none).unwrap();
            assert!(b.credential.is_none() && b.malformed.is_none() && b.resource.is_none());
        }
    }

    #[test]
    fn malformed_bodies_are_refused() {
        for (body, code) in [
            (
                format!(r#"{{"tx_hash": "{H}", "credential": "Tempo {H}"}}"#),
                "INVALID_REQUEST",
            ),
            (r#"{"tx_hash": "0x12"}"#.into(), "INVALID_TX_HASH"),
            (r#"{"credential": "Tempo 0x12"}"#.into(), "INVALID_TX_HASH"),
            (r#"{"credential": "Tempo\u00e9"}"#.into(), "INVALID_REQUEST"),
            (r#"{"credential": "Tempo\t0x12"}"#.into(), "INVALID_REQUEST"),
            (
                format!(r#"{{"credential": "Bearer {}"}}"#, "a".repeat(9000)),
                "INVALID_REQUEST",
            ),
            (r#"{"resource": "get /x"}"#.into(), "INVALID_REQUEST"),
            (r#"{"body_digest": ""}"#.into(), "INVALID_REQUEST"),
            (r#"{"body_digest": "sha-256=:\u0001:"}"#.into(), "INVALID_REQUEST"),
            (
                format!(r#"{{"body_digest": "{}"}}"#, "d".repeat(1025)),
                "INVALID_REQUEST",
            ),
            (r#"{"tx_hash": null, "amount": 1}"#.into(), "INVALID_REQUEST"),
            (r#"{"credential": 1}"#.into(), "INVALID_REQUEST"),
            ("[]".into(), "INVALID_REQUEST"),
            ("".into(), "INVALID_REQUEST"),
        ] {
            assert_eq!(refused(body.as_bytes()).0, code, "{body}");
        }
        // the fields as an array: serde's derive alone would take it
        let array = format!(r#"["Tempo {H}", null, "GET /x"]"#);
        let (code, m) = refused(array.as_bytes());
        assert_eq!(code, "INVALID_REQUEST");
        assert!(m.contains("expected a JSON object"), "{m}");
        let unknown = refused(br#"{"amount": 1}"#).1;
        assert!(unknown.contains("unknown field `amount`"), "{unknown}");
        // The limit is on the bytes, whitespace included.
        let mut big = format!(r#"{{"tx_hash": "{H}"}}"#).into_bytes();
        big.resize(MAX_BODY, b' ');
        assert!(parse_body(&big).is_ok());
        big.push(b' ');
        assert_eq!(
            refused(&big),
            ("PAYLOAD_TOO_LARGE", format!("the body is larger than {MAX_BODY} bytes"))
        );
    }

    #[test]
    fn a_refusal_quotes_the_body_within_a_bound() {
        // serde escapes each DEL to six characters: 16 KiB of them would
        // have been a 100 KiB refusal (found by reading the fuzz target)
        let body = format!("\"{}\"", "\u{7f}".repeat(MAX_BODY - 2));
        let (code, m) = refused(body.as_bytes());
        assert_eq!(code, "INVALID_REQUEST");
        assert!(
            m.starts_with("the body is not a valid verify request: invalid type: string"),
            "{m}"
        );
        assert!(m.ends_with('…'), "{m}");
        assert!(
            m.chars().count() <= 60 + MAX_DETAIL_CHARS,
            "{} chars",
            m.chars().count()
        );
    }

    /// `parse_body` refuses what the handler's extractor refuses, with the
    /// same message, and accepts the same bodies.
    #[actix_web::test]
    async fn parse_body_agrees_with_the_json_extractor() {
        let ok = format!(r#"{{"tx_hash": "{H}"}}"#);
        let mut padded = ok.clone().into_bytes();
        padded.resize(MAX_BODY + 1, b' ');
        for body in [
            ok.into_bytes(),
            br#"{"tx_hash": "0x12"}"#.to_vec(),
            br#"{"amount": 1}"#.to_vec(),
            br#"{"credential": "#.to_vec(),
            format!(r#"["Tempo {H}"]"#).into_bytes(),
            padded,
        ] {
            let (req, mut payload) = actix_web::test::TestRequest::post()
                .insert_header(("content-type", "application/json"))
                .app_data(json_config())
                .set_payload(body.clone())
                .to_http_parts();
            let extracted = web::Json::<VerifyRequest>::from_request(&req, &mut payload).await;
            let ours = parse_body(&body);
            match extracted {
                Ok(b) => {
                    let theirs = b.into_inner().check().map_err(|e| e.to_string());
                    assert_eq!(theirs, ours.map_err(|e| e.to_string()), "{body:?}");
                }
                Err(e) => {
                    let theirs = e.error_response();
                    let ours = ours
                        .err()
                        .unwrap_or_else(|| panic!("accepted what the extractor refused: {body:?}"));
                    assert_eq!(theirs.status(), ours.status_code(), "{body:?}");
                    let text = actix_web::body::to_bytes(theirs.into_body()).await.unwrap();
                    let text = String::from_utf8(text.to_vec()).unwrap();
                    assert!(
                        text.contains(&serde_json::to_string(&ours.to_string()).unwrap()),
                        "{text}"
                    );
                }
            }
        }
    }
}
