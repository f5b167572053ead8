//! `POST /v1/verify`: another service received a paid request and asks
//! whether it is paid. Consumes the payment on a 200.

use actix_web::http::header::HeaderMap;
use actix_web::mime;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use settlegate_rules::credential::{Credential, CredentialError, TxHash, parse_credential};
use settlegate_rules::genome::actions;
use settlegate_rules::replay::{KeyDigest, Scheme};
use time::OffsetDateTime;

use super::problem::ApiError;
use super::{AppState, Summary};
use crate::outcome::{Challenge, Denial, Outcome, Unavailable};
use crate::settle::SettleRequest;

/// Request bodies larger than this are refused with 413.
pub const MAX_BODY: usize = 16 * 1024;
const MAX_RESOURCE: usize = 2048;
const MAX_IDEMPOTENCY_KEY: usize = 255;

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
            Err(CredentialError::NotAPaymentCredential(_)) => None,
        },
        (None, None) => None,
    };

    // The genome is read once: the challenge and the verdict come from the
    // same, valid policy. An expired genome hands out nothing, not even a
    // challenge.
    let genome = match state.genome.usable(OffsetDateTime::now_utc()) {
        Ok(g) => g,
        Err(e) => {
            return Ok(state.answer(&req, Summary::default(), Outcome::Unavailable(Unavailable::Genome(e))));
        }
    };
    if !genome.allows(actions::SETTLEMENT_VERIFY) {
        return Err(ApiError::CapabilityDenied(actions::SETTLEMENT_VERIFY));
    }
    let price = genome.policy.price_for(resource.as_deref());
    let challenge = Challenge::new(&genome.policy, price);
    let mut summary = Summary {
        genome_id: Some(genome.id.clone()),
        ..Summary::default()
    };
    let outcome = match credential {
        Some(Credential::Tempo(hash)) => {
            summary.tx_hash = Some(hash.to_string());
            let request = SettleRequest {
                hash,
                scheme: Scheme::Tempo,
                resource,
                idempotency_key: idempotency_key.as_deref().map(KeyDigest::of),
            };
            state
                .settler
                .settle_on_actors(genome.clone(), price, request, challenge)
                .await
        }
        Some(Credential::Payment(_)) => Outcome::Denied(
            Denial::PaymentRequired("the Payment scheme is not accepted yet; pay with the Tempo scheme".into()),
            challenge,
        ),
        None => Outcome::Denied(
            Denial::PaymentRequired("no payment credential: pay, then send Tempo <tx hash>".into()),
            challenge,
        ),
    };
    Ok(state.answer(&req, summary, outcome))
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let v = v
        .to_str()
        .ok()
        .filter(|s| !s.is_empty() && s.len() <= MAX_IDEMPOTENCY_KEY && s.bytes().all(|b| (0x21..0x7f).contains(&b)))
        .ok_or_else(|| {
            ApiError::InvalidRequest(format!(
                "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"
            ))
        })?;
    Ok(Some(v.to_owned()))
}

/// A resource is `METHOD /path` (what a price rule matches against).
fn check_resource(r: String) -> Result<String, ApiError> {
    let ok = r.len() <= MAX_RESOURCE
        && r.split_once(' ').is_some_and(|(m, p)| {
            !m.is_empty()
                && m.bytes().all(|b| b.is_ascii_uppercase())
                && p.starts_with('/')
                && !p.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        });
    if ok {
        Ok(r)
    } else {
        Err(ApiError::InvalidRequest(format!(
            "resource must be \"METHOD /path\" (at most {MAX_RESOURCE} bytes), e.g. \"GET /reports/42\""
        )))
    }
}
