//! `POST /v1/verify`: another service received a paid request and asks
//! whether it is paid. Consumes the payment on a 200.

use actix_web::mime;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use settlegate_rules::credential::{Credential, CredentialError, TxHash, parse_credential};
use settlegate_rules::genome::actions;

use super::AppState;
use super::gate::{Asked, check_resource, decide, idempotency_key};
use super::problem::ApiError;

/// Request bodies larger than this are refused with 413.
pub const MAX_BODY: usize = 16 * 1024;

/// The body of `POST /v1/verify`. At most one of `credential` and
/// `tx_hash`; neither asks for the price (402 with the challenges).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// The paying client's `Authorization` value, either scheme:
    /// `Tempo 0x<64 hex>` or `Payment <base64url credential>`.
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
        pattern = "^[A-Z]+ /[^\\x00-\\x20\\x7f]*$",
        example = "GET /reports/42"
    )]
    resource: Option<String>,
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
                E::Deserialize(e) => ApiError::InvalidRequest(format!("the body is not a valid verify request: {e}")),
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
        ("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$",
         description = "A retry of the request that consumed the payment, with the same key, hash and resource, gets its settlement again"),
    ),
    responses(
        (status = 200, description = "Paid: the payment satisfies the policy and is now consumed (or this is an idempotent retry)",
         body = settlegate_rules::replay::Settlement, headers(("X-Request-Id" = String), ("Payment-Receipt" = Option<String>,
         description = "Payment scheme only: the Machine Payments Protocol receipt"))),
        (status = 402, description = "Not paid: no usable credential, verification failed, already used, or not visible yet. Nothing consumed",
         body = crate::http::respond::Problem, content_type = "application/problem+json",
         headers(("X-Request-Id" = String), ("WWW-Authenticate" = String, description = "A Tempo and a Payment challenge, as the genome enables them"))),
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
    let body = body.into_inner();
    let idempotency_key = idempotency_key(req.headers())?;
    let resource = body.resource.map(check_resource).transpose()?;
    let mut malformed = None;
    let credential = match (body.credential, body.tx_hash) {
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
            Err(CredentialError::TooLong) => return Err(ApiError::InvalidRequest("the credential is too long".into())),
            Err(CredentialError::MalformedPayment(m)) => {
                malformed = Some(m);
                None
            }
            Err(CredentialError::NotAPaymentCredential(_)) => None,
        },
        (None, None) => None,
    };
    let asked = Asked {
        credential,
        resource,
        idempotency_key,
        malformed,
        action: actions::SETTLEMENT_VERIFY,
    };
    let (summary, outcome) = decide(&state, asked).await?;
    Ok(state.answer(&req, summary, outcome))
}
