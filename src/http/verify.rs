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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    credential: Option<String>,
    tx_hash: Option<String>,
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
