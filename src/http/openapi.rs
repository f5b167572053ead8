//! The OpenAPI 3.1 document of the HTTP API, derived from the handlers'
//! annotations and the types that serialise each body (utoipa). Served at
//! `GET /openapi.json` and checked in as `openapi.json`; a test fails when
//! the two differ (`settlegate openapi > openapi.json` regenerates it).

use std::sync::LazyLock;

use actix_web::HttpResponse;
use utoipa::openapi::{RefOr, Schema};
use utoipa::{OpenApi, PartialSchema, ToSchema};

use super::ops::{Components, GenomeState, Health, Readiness, RpcState, StoreState};
use super::problem::ProblemBody;
use super::respond::{PaymentInfo, Problem};
use super::verify::VerifyRequest;
use crate::code::Code;
use settlegate_actors::ledger::read;
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
        super::discovery::openapi_json,
        super::discovery::llms_txt,
        super::admin::routes::payments,
        super::admin::routes::revenue,
        super::admin::routes::sessions,
        super::admin::routes::webhooks,
        super::admin::routes::denials,
        super::admin::routes::deny,
        super::admin::routes::allow,
    ),
    components(schemas(
        VerifyRequest,
        Settlement,
        super::respond::VerifyOk,
        super::respond::ServedBody,
        super::respond::ProvenBody,
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
        super::ops::SettlerState,
        super::ops::SponsorState,
        EndpointStatus,
        GenomeSummary,
        read::PaymentView,
        read::PaymentPage,
        read::Revenue,
        read::RevenueGroup,
        read::AssetTotal,
        read::By,
        read::Denial,
        super::admin::routes::Denials,
        super::admin::routes::Deliveries,
        settlegate_actors::webhooks::db::Listed,
        super::admin::routes::DenyBody,
        super::admin::routes::Allowed,
        super::admin::routes::Sessions,
        settlegate_actors::channels::ChannelRow,
    )),
    modifiers(&AdminToken),
    tags(
        (name = "payments", description = "Is this request paid for? (consumes the payment on a 200)"),
        (name = "operations", description = "Health, readiness, metrics, the active genome and this document"),
        (name = "discovery", description = "The paid API described for agents and registries, from the genome's prices, for the proxy to publish at the paid API's root"),
        (name = "admin", description = "The operator's API: the books, revenue, open sessions and the payer deny list. Served on its own listener (`admin.listen`, loopback by default), not on the gate's; on only with the ledger (`ledger.database_url`) and a token digest (`admin.token_digests`). Every request needs `Authorization: Bearer <token>`"),
    )
)]
pub struct ApiDoc;

/// The admin API's bearer token (configured as its SHA-256 only).
struct AdminToken;

impl utoipa::Modify for AdminToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.description =
            Some("An admin token (`settlegate admin token` mints one); its SHA-256 is in admin.token_digests".into());
        components.add_security_scheme("admin_token", SecurityScheme::Http(scheme));
    }
}

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

/// Every `code` a 402, 410 or 503 carries: the codes of [`Code`] whose
/// status is one of those, in its order.
pub struct PaymentCode;

/// Every `code` of an `ApiError`: the other codes of [`Code`], in its order.
pub struct ErrorCode;

/// A string enum of the codes `pick` selects. The descriptions are the
/// published ones.
fn code_schema(description: &str, pick: fn(Code) -> bool) -> RefOr<Schema> {
    let codes: Vec<&str> = Code::ALL
        .iter()
        .copied()
        .filter(|c| pick(*c))
        .map(Code::as_str)
        .collect();
    let schema = serde_json::json!({ "type": "string", "description": description, "enum": codes });
    // unwrap: a fixed, valid schema.
    RefOr::T(serde_json::from_value(schema).unwrap())
}

impl PartialSchema for PaymentCode {
    fn schema() -> RefOr<Schema> {
        code_schema(
            "Every `code` a 402, 410 or 503 carries: the codes of [`Denial`] and [`Unavailable`].\n\
             Documentation only: a unit test keeps it equal to what the code answers.",
            Code::is_payment,
        )
    }
}

impl ToSchema for PaymentCode {}

impl PartialSchema for ErrorCode {
    fn schema() -> RefOr<Schema> {
        code_schema(
            "Every `code` of an [`ApiError`]. Documentation only: a unit test keeps\n\
             it equal to [`ApiError::code`].",
            |c| !c.is_payment(),
        )
    }
}

impl ToSchema for ErrorCode {}

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
                    "required": ["chain_id", "realm", "recipient", "assets", "default_price", "schemes", "intents"],
                    "properties": {
                        "chain_id": { "type": "integer", "minimum": 0 },
                        "realm": { "type": "string" },
                        "recipient": { "type": "string", "pattern": "^0x[0-9a-f]{40}$" },
                        "assets": { "type": "array", "items": { "type": "string", "pattern": "^0x[0-9a-f]{40}$" } },
                        "default_price": { "type": "object" },
                        "prices": { "type": "array", "items": { "type": "object" } },
                        "schemes": strings,
                        "intents": { "type": "array", "items": { "type": "string", "enum": ["charge", "session"] }, "description": "The `Payment` intents the 402s offer" },
                        "session": {
                            "type": ["object", "null"],
                            "description": "The MPP session terms (v1 escrow), null when sessions are not offered",
                            "properties": {
                                "escrow": { "type": "string", "pattern": "^0x[0-9a-f]{40}$" },
                                "version": { "type": "integer", "enum": [1] },
                                "suggested_deposit": { "type": ["string", "null"], "pattern": "^[0-9]+$" },
                                "min_deposit": { "type": "string", "pattern": "^[0-9]+$" },
                                "min_voucher_delta": { "type": "string", "pattern": "^[0-9]+$" },
                            },
                        },
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
    use crate::http::problem::tests::every_api_error;
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
        let sorted = |mut v: Vec<String>| {
            v.sort();
            v
        };
        let codes = |cs: &mut dyn Iterator<Item = Code>| sorted(cs.map(|c| c.as_str().to_owned()).collect());

        let answered = codes(&mut every_api_error().iter().map(ApiError::code));
        assert_eq!(sorted(enum_values("ErrorCode")), answered);

        let denials = [
            Denial::PaymentRequired(String::new()),
            Denial::MalformedCredential(String::new()),
            Denial::Failed(Reason::TxReverted),
            Denial::Pending {
                detail: String::new(),
                reason: None,
            },
            Denial::Replayed,
            Denial::Session(settlegate_rules::session::SessionProblem::InsufficientBalance { required_cumulative: 1 }),
            Denial::Session(settlegate_rules::session::SessionProblem::ChannelNotFound),
        ];
        let unavailable = [
            Unavailable::Rpc(settlegate_actors::rpc_pool::RpcError::Transport(String::new())),
            Unavailable::Store(settlegate_actors::replay_guard::StoreError::Corrupt(String::new())),
            Unavailable::Genome(settlegate_rules::GenomeError::Expired(String::new())),
        ];
        let answered = codes(
            &mut denials
                .iter()
                .map(Denial::code)
                .chain(unavailable.iter().map(Unavailable::code)),
        );
        assert_eq!(sorted(enum_values("PaymentCode")), answered);
        // Every code of `Code` is one of the two enums, documented once.
        let mut all = enum_values("ErrorCode");
        all.extend(enum_values("PaymentCode"));
        assert_eq!(sorted(all), codes(&mut Code::ALL.iter().copied()));
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
            Reason::SponsorshipRefused,
            Reason::SponsorshipNeedsPull,
            Reason::SponsorshipUnavailable,
            Reason::WouldRevert,
            Reason::ProofRequired,
            Reason::ProofUnexpected,
            Reason::ProofInvalid,
            Reason::SplitMissing,
            Reason::SplitShort,
            Reason::PayerDenied,
        ] {
            assert!(documented.contains(&r.as_str().to_owned()), "{}", r.as_str());
        }
        assert_eq!(documented.len(), 24);
    }
}
