//! The OpenAPI 3.1 document of the HTTP API, derived from the handlers'
//! annotations and the types that serialise each body (utoipa). Served at
//! `GET /openapi.json` and checked in as `openapi.json`; a test fails when
//! the two differ (`settlegate openapi > openapi.json` regenerates it).

use std::sync::LazyLock;

use actix_web::HttpResponse;
use utoipa::openapi::{RefOr, Schema};
use utoipa::{OpenApi, PartialSchema, ToSchema};

use super::ops::{Components, GenomeState, Health, Readiness, RpcState, StoreState};
use super::problem::{ErrorCode, ProblemBody};
use super::respond::{PaymentCode, PaymentInfo, Problem};
use super::verify::VerifyRequest;
use settlegate_actors::rpc_pool::EndpointStatus;
use settlegate_rules::replay::{Scheme, SettledStatus, Settlement};
use settlegate_rules::settlement::Reason;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "settlegate",
        description = "Decides whether an HTTP request was paid for on the Tempo blockchain: 200 (paid, consumed \
                       once), 402 (not paid, with a challenge and a typed reason) or 503 (no trustworthy answer now; \
                       nothing consumed). Credentials: `Tempo 0x<tx hash>` or the Machine Payments Protocol's \
                       `Payment` scheme.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        super::verify::verify,
        super::authorize::authorize,
        super::ops::healthz,
        super::ops::readyz,
        super::ops::genome,
        super::ops::metrics,
        openapi_json,
    ),
    components(schemas(
        VerifyRequest,
        Settlement,
        SettledStatus,
        Scheme,
        Problem,
        ProblemBody,
        PaymentCode,
        ErrorCode,
        Reason,
        PaymentInfo,
        Health,
        Readiness,
        Components,
        GenomeState,
        StoreState,
        RpcState,
        EndpointStatus,
        GenomeSummary,
    )),
    tags(
        (name = "payments", description = "Is this request paid for? (consumes the payment on a 200)"),
        (name = "operations", description = "Health, readiness, metrics, the active genome and this document"),
    )
)]
pub struct ApiDoc;

/// The document as served and checked in: pretty JSON, newline-terminated.
pub fn document() -> &'static str {
    static DOC: LazyLock<String> = LazyLock::new(|| {
        // unwrap: the document is built from static annotations.
        let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        // What a derive cannot say: a body gives a credential or a hash, not both.
        doc["components"]["schemas"]["VerifyRequest"]["not"] = serde_json::json!({
            "description": "credential and tx_hash together",
            "required": ["credential", "tx_hash"],
            "properties": { "credential": { "type": "string" }, "tx_hash": { "type": "string" } },
        });
        // A header is absent or a string; utoipa makes an Option nullable.
        for path in doc["paths"].as_object_mut().into_iter().flat_map(|p| p.values_mut()) {
            for op in path.as_object_mut().into_iter().flat_map(|o| o.values_mut()) {
                let params = op.get_mut("parameters").and_then(|p| p.as_array_mut());
                for param in params.into_iter().flatten() {
                    if param["in"] == "header" && param["schema"]["type"] == serde_json::json!(["string", "null"]) {
                        param["schema"]["type"] = "string".into();
                    }
                }
            }
        }
        let mut s = serde_json::to_string_pretty(&doc).unwrap();
        s.push('\n');
        s
    });
    &DOC
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", responses(
    (status = 200, description = "The OpenAPI 3.1 document of this API", content_type = "application/json",
     body = Object, headers(("X-Request-Id" = String))),
))]
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body(document())
}

/// The body of `GET /v1/genome`: `Genome::summary` (a JSON value built in
/// `rules`) plus its `state` now. The fields every genome has are required.
pub struct GenomeSummary;

impl PartialSchema for GenomeSummary {
    fn schema() -> RefOr<Schema> {
        let hex64 = serde_json::json!({ "type": "string", "pattern": "^[0-9a-f]{64}$" });
        let time = serde_json::json!({ "type": ["string", "null"], "description": "RFC 3339" });
        let strings = serde_json::json!({ "type": "array", "items": { "type": "string" } });
        let schema = serde_json::json!({
            "type": "object",
            "description": "The active genome: id, name, version, validity window, signers, capabilities and policy summary. No secrets.",
            "required": ["genome_id", "name", "version", "state", "signer_key_ids", "threshold", "allowed_actions", "policy"],
            "properties": {
                "genome_id": hex64,
                "name": { "type": "string" },
                "version": { "type": "string", "description": "SemVer" },
                "state": { "type": "string", "description": "`active`, or the genome code that makes it unusable now (e.g. GENOME_EXPIRED)" },
                "created_at": { "type": "string" },
                "not_before": time,
                "expires_at": time,
                "signer_key_ids": strings,
                "threshold": { "type": "integer", "minimum": 1 },
                "invariants": strings,
                "allowed_actions": strings,
                "policy": {
                    "type": "object",
                    "required": ["chain_id", "realm", "recipient", "assets", "default_price", "schemes"],
                    "properties": {
                        "chain_id": { "type": "integer", "minimum": 0 },
                        "realm": { "type": "string" },
                        "recipient": { "type": "string", "pattern": "^0x[0-9a-f]{40}$" },
                        "assets": { "type": "array", "items": { "type": "string", "pattern": "^0x[0-9a-f]{40}$" } },
                        "default_price": { "type": "object" },
                        "prices": { "type": "array", "items": { "type": "object" } },
                        "schemes": strings,
                    },
                },
            },
        });
        // unwrap: a fixed, valid schema.
        RefOr::T(serde_json::from_value(schema).unwrap())
    }
}

impl ToSchema for GenomeSummary {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::problem::ApiError;
    use crate::outcome::{Denial, Unavailable};
    use serde_json::Value;

    fn doc() -> Value {
        serde_json::from_str(document()).unwrap()
    }

    fn enum_values(name: &str) -> Vec<String> {
        let doc = doc();
        doc["components"]["schemas"][name]["enum"]
            .as_array()
            .unwrap_or_else(|| panic!("{name} is an enum"))
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn the_checked_in_document_is_the_generated_one() {
        let checked_in = include_str!("../../openapi.json");
        assert!(
            checked_in == document(),
            "openapi.json is stale: regenerate it with `cargo run -- openapi > openapi.json`"
        );
    }

    #[test]
    fn it_is_openapi_3_1_with_every_route() {
        let doc = doc();
        assert!(
            doc["openapi"].as_str().unwrap().starts_with("3.1."),
            "{}",
            doc["openapi"]
        );
        let paths: Vec<&str> = doc["paths"].as_object().unwrap().keys().map(String::as_str).collect();
        for p in [
            "/v1/verify",
            "/v1/authorize",
            "/healthz",
            "/readyz",
            "/metrics",
            "/v1/genome",
            "/openapi.json",
        ] {
            assert!(paths.contains(&p), "{p} missing from {paths:?}");
        }
        // Every $ref resolves.
        let text = document();
        for r in text.split("\"$ref\": \"#/components/schemas/").skip(1) {
            let name = r.split('"').next().unwrap();
            assert!(doc["components"]["schemas"][name].is_object(), "dangling $ref {name}");
        }
    }

    #[test]
    fn every_problem_code_the_code_can_answer_is_documented() {
        let documented = enum_values("ErrorCode");
        let errors = [
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
        ];
        let mut codes: Vec<String> = errors.iter().map(|e| e.code().to_owned()).collect();
        codes.sort();
        let mut sorted = documented.clone();
        sorted.sort();
        assert_eq!(sorted, codes);

        let documented = enum_values("PaymentCode");
        let mut codes: Vec<&str> = [
            Denial::PaymentRequired(String::new()),
            Denial::MalformedCredential(String::new()),
            Denial::Failed(Reason::TxReverted),
            Denial::Pending {
                detail: String::new(),
                reason: None,
            },
            Denial::Replayed,
        ]
        .iter()
        .map(Denial::code)
        .collect();
        codes.extend(
            [
                Unavailable::Rpc(settlegate_actors::rpc_pool::RpcError::Transport(String::new())),
                Unavailable::Store(settlegate_actors::replay_guard::StoreError::Corrupt(String::new())),
                Unavailable::Genome(settlegate_rules::GenomeError::Expired(String::new())),
            ]
            .iter()
            .map(Unavailable::code),
        );
        codes.sort();
        let mut sorted = documented;
        sorted.sort();
        assert_eq!(sorted, codes);
    }

    #[test]
    fn every_reason_is_documented_with_its_wire_name() {
        let documented = enum_values("Reason");
        for r in [
            Reason::TxReverted,
            Reason::WrongChain,
            Reason::NoTransfer,
            Reason::WrongAsset,
            Reason::WrongRecipient,
            Reason::InsufficientAmount,
            Reason::Expired,
            Reason::FutureTimestamp,
            Reason::InsufficientConfirmations,
            Reason::MemoMismatch,
            Reason::ChallengeInvalid,
            Reason::ChallengeExpired,
            Reason::PayerMismatch,
            Reason::TxRejected,
        ] {
            assert!(documented.contains(&r.as_str().to_owned()), "{}", r.as_str());
        }
        assert_eq!(documented.len(), 14);
    }
}
