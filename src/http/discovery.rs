//! `GET /v1/discovery/openapi.json` and `GET /v1/discovery/llms.txt`: the
//! paid API described for agents and registries (the MPP discovery
//! extension), from the active genome's routes and prices and the
//! `[discovery]` settings. settlegate serves them on its own paths, apart
//! from its own `/openapi.json`; the proxy in front of the paid API
//! publishes them at that API's root (`/openapi.json`, `/llms.txt`), where
//! the extension and agents look.
//!
//! Each route offers what its 402 offers, decided by the same
//! [`Challenge`]: `tempo/charge` when the `Payment` scheme and the charge
//! intent are on, `tempo/session` when sessions are offered at its price.
//! The 402 stays authoritative: these documents only help find the API.
//!
//! The genome governs them like `/v1/genome` (`genome.read`), and an
//! expired genome is 503, as for a payment check: no prices from a policy
//! that may not govern. Both documents are rendered once per genome: a
//! reload changes them at the next request.

use std::sync::Arc;

use actix_web::http::header;
use actix_web::{HttpResponse, ResponseError, web};
use parking_lot::Mutex;
use serde_json::{Value, json};
use settlegate_rules::discovery::{Param, PricedRoute, routes};
use settlegate_rules::genome::{VerifiedGenome, actions};
use settlegate_rules::primitives::address_lower;
use time::OffsetDateTime;

use super::AppState;
use super::problem::ApiError;
use super::respond::unavailable;
use crate::outcome::{Challenge, Unavailable};
use crate::settings::DiscoverySettings;

/// `Cache-Control` of both documents: the extension recommends five minutes.
const CACHE: &str = "public, max-age=300";

/// The methods an OpenAPI 3.1 path item has operations for.
const OPENAPI_METHODS: [&str; 8] = ["GET", "PUT", "POST", "DELETE", "OPTIONS", "HEAD", "PATCH", "TRACE"];

/// The settings and the documents of the genome they were last rendered for.
pub struct Discovery {
    settings: DiscoverySettings,
    rendered: Mutex<Option<(String, Arc<Rendered>)>>,
}

/// Both documents, as served (shared by every answer, never copied).
pub struct Rendered {
    pub openapi: web::Bytes,
    pub llms: web::Bytes,
}

impl Discovery {
    pub fn new(settings: DiscoverySettings) -> Self {
        Discovery {
            settings,
            rendered: Mutex::default(),
        }
    }

    /// The documents of `genome`, rendered at most once per genome id.
    pub fn render(&self, genome: &VerifiedGenome) -> Arc<Rendered> {
        if let Some((id, r)) = &*self.rendered.lock()
            && *id == genome.id
        {
            return r.clone();
        }
        let service = Service::of(&self.settings, genome);
        let r = Arc::new(Rendered {
            openapi: openapi(&service).into(),
            llms: llms(&service).into(),
        });
        *self.rendered.lock() = Some((genome.id.clone(), r.clone()));
        r
    }
}

/// What both documents are built from.
struct Service<'a> {
    settings: &'a DiscoverySettings,
    genome: &'a VerifiedGenome,
    /// Each priced route with the challenge its 402 carries.
    routes: Vec<(PricedRoute, Challenge)>,
}

impl<'a> Service<'a> {
    fn of(settings: &'a DiscoverySettings, genome: &'a VerifiedGenome) -> Self {
        let policy = &genome.policy;
        Service {
            settings,
            genome,
            routes: routes(policy)
                .into_iter()
                .map(|r| {
                    let c = Challenge::new(policy, &r.price);
                    (r, c)
                })
                .collect(),
        }
    }

    fn title(&self) -> &str {
        self.settings.title.as_deref().unwrap_or(&self.genome.policy.realm)
    }
}

/// The MPP intents a route's 402 offers, in its order.
fn intents(c: &Challenge) -> Vec<&'static str> {
    let mut out = Vec::new();
    if c.schemes.payment && c.charge {
        out.push("charge");
    }
    if c.session_request().is_some() {
        out.push("session");
    }
    out
}

/// The OpenAPI 3.1 document of the paid API.
fn openapi(s: &Service) -> String {
    let mut info = json!({ "title": s.title(), "version": s.genome.version.to_string() });
    if let Some(d) = &s.settings.description {
        info["description"] = json!(d);
    }
    let mut service_info = json!({});
    if !s.settings.categories.is_empty() {
        service_info["categories"] = json!(s.settings.categories);
    }
    let mut docs = json!({});
    if let Some(h) = &s.settings.homepage {
        docs["homepage"] = json!(h);
    }
    if let Some(l) = &s.settings.llms {
        docs["llms"] = json!(l);
    }
    if docs.as_object().is_some_and(|d| !d.is_empty()) {
        service_info["docs"] = docs;
    }
    let mut paths = serde_json::Map::new();
    for (route, challenge) in &s.routes {
        if !OPENAPI_METHODS.contains(&route.method.as_str()) {
            continue; // listed in llms.txt only
        }
        let item = paths.entry(route.path.clone()).or_insert_with(|| json!({}));
        item[route.method.to_ascii_lowercase()] = operation(route, challenge);
    }
    let doc = json!({
        "openapi": "3.1.0",
        "info": info,
        "x-service-info": service_info,
        "paths": paths,
        "components": { "schemas": { "PaymentRequired": payment_required_schema() } },
    });
    // unwrap: a JSON value always serialises.
    let mut text = serde_json::to_string_pretty(&doc).unwrap();
    text.push('\n');
    text
}

fn operation(route: &PricedRoute, c: &Challenge) -> Value {
    let amount = route.price.amount.to_string();
    let currency = address_lower(&route.price.asset);
    let offers: Vec<Value> = intents(c)
        .into_iter()
        .map(|intent| json!({ "method": "tempo", "intent": intent, "amount": amount, "currency": currency }))
        .collect();
    let covers = match (&route.rule, route.param) {
        (None, _) => "Any path no price rule names: the default price.".to_owned(),
        (Some(rule), None) => format!("Priced by the rule `{rule}`."),
        (Some(rule), Some(Param::Rest)) => match &route.also {
            Some(dir) => format!("Priced by the rule `{rule}`: every path below {dir}/, and {dir} itself."),
            None => format!("Priced by the rule `{rule}`: every path."),
        },
        (Some(rule), Some(Param::Suffix)) => format!("Priced by the rule `{rule}`: every path with this prefix."),
    };
    let pay = if offers.is_empty() {
        "Pay with the Tempo scheme (see the 402's Tempo challenge)."
    } else {
        "Pay one of the x-payment-info offers (the 402's Payment challenges)."
    };
    let mut op = json!({
        "summary": format!("{} {}: {amount} atomic units of {currency}", route.method, route.path),
        "description": format!("{covers} {pay}"),
        "responses": {
            "200": { "description": "Paid: the API's own answer" },
            "402": {
                "description": "Payment Required: one WWW-Authenticate Payment challenge per offer (filtered and \
                                ordered by the request's Accept-Payment), and a Tempo challenge when that scheme \
                                is accepted",
                "headers": { "WWW-Authenticate": { "schema": { "type": "string" } } },
                "content": { "application/problem+json": {
                    "schema": { "$ref": "#/components/schemas/PaymentRequired" } } },
            },
        },
    });
    if !offers.is_empty() {
        op["x-payment-info"] = json!({ "offers": offers });
    }
    if let Some(p) = route.param {
        let what = match p {
            Param::Rest => "The rest of the path: one or more segments",
            Param::Suffix => "Whatever follows the prefix",
        };
        op["parameters"] = json!([{
            "name": p.name(), "in": "path", "required": true,
            "schema": { "type": "string" }, "description": what, "example": "example",
        }]);
    }
    if matches!(route.method.as_str(), "POST" | "PUT" | "PATCH") {
        op["requestBody"] = json!({
            "description": "The API's own request body",
            "required": false,
            "content": { "*/*": { "schema": {} } },
        });
    }
    op
}

/// The 402 body, as `respond` writes it.
fn payment_required_schema() -> Value {
    json!({
        "type": "object",
        "description": "RFC 9457 problem details, with what to pay",
        "required": ["type", "title", "status", "detail", "code"],
        "properties": {
            "type": { "type": "string" },
            "title": { "type": "string" },
            "status": { "type": "integer" },
            "detail": { "type": "string" },
            "code": { "type": "string" },
            "reason": { "type": "string" },
            "paymentInfo": {
                "type": "object",
                "properties": {
                    "method": { "type": "string" },
                    "recipient": { "type": "string" },
                    "amount": { "type": "string" },
                    "token": { "type": "string" },
                    "chainId": { "type": "integer" },
                },
            },
        },
    })
}

/// `llms.txt` (llmstxt.org): the paid API and how to pay, in Markdown.
fn llms(s: &Service) -> String {
    use std::fmt::Write as _;
    let policy = &s.genome.policy;
    let mut t = String::new();
    // unwrap (here and below): writing to a String cannot fail.
    writeln!(t, "# {}\n", s.title()).unwrap();
    match &s.settings.description {
        Some(d) => {
            for line in d.lines() {
                writeln!(t, "> {line}").unwrap();
            }
        }
        None => writeln!(
            t,
            "> A paid HTTP API: each request is paid for in stablecoins on the Tempo blockchain, \
             with the Machine Payments Protocol (HTTP 402)."
        )
        .unwrap(),
    }
    writeln!(
        t,
        "\nPayments go to {} on Tempo chain {}. Prices are in atomic units (the smallest unit) of the TIP-20 \
         token named. The 402 answer is authoritative; this file and the OpenAPI document only describe it.\n",
        address_lower(&policy.recipient),
        policy.chain_id
    )
    .unwrap();
    t.push_str("## How to pay\n\n");
    t.push_str(
        "1. Send the request. Unpaid, it is answered `402 Payment Required` with one \
         `WWW-Authenticate: Payment` challenge per offer (method `tempo`, intent `charge` or `session`)",
    );
    if policy.schemes.tempo {
        t.push_str(
            ", and a `Tempo` challenge (transfer the amount to the recipient, then retry with \
             `Authorization: Tempo <transaction hash>`)",
        );
    }
    t.push_str(
        ".\n2. Pay one `Payment` challenge with an MPP client, such as mppx (`npx mppx <url>`): `charge` is one \
         TIP-20 transfer for the request; `session` opens a payment channel once and pays each request with a \
         signed voucher.\n3. Retry the request with `Authorization: Payment <credential>`. The paid answer \
         carries a `Payment-Receipt` header.\n\nTo choose among the offers, send `Accept-Payment`, e.g. \
         `Accept-Payment: tempo/session, tempo/charge;q=0.5`: the 402 then carries only the offers you take, \
         in your order.\n\n## Paid routes\n\n",
    );
    for (route, challenge) in &s.routes {
        let mut what = match (&route.rule, &route.also) {
            (None, _) => "any other path".to_owned(),
            (Some(rule), Some(dir)) => format!("rule `{rule}`, also `{dir}`"),
            (Some(rule), None) => format!("rule `{rule}`"),
        };
        if !OPENAPI_METHODS.contains(&route.method.as_str()) {
            what.push_str("; not in the OpenAPI document");
        }
        let offers = intents(challenge);
        let offers = if offers.is_empty() {
            "the Tempo scheme only".to_owned()
        } else {
            offers
                .iter()
                .map(|i| format!("tempo/{i}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        writeln!(
            t,
            "- `{} {}` ({what}): {} of token {}; {offers}",
            route.method,
            route.path,
            route.price.amount,
            address_lower(&route.price.asset)
        )
        .unwrap();
    }
    t.push_str("\n## Documents\n\n- [OpenAPI document](/openapi.json): every paid operation with its offers (`x-payment-info`)\n");
    if let Some(h) = &s.settings.homepage {
        writeln!(t, "- [Homepage]({h})").unwrap();
    }
    t
}

/// One of the active genome's documents, or the answer that refuses it.
fn serve(state: &AppState, content_type: &'static str, body: fn(&Rendered) -> &web::Bytes) -> HttpResponse {
    let genome = match state.genome.usable(OffsetDateTime::now_utc()) {
        Ok(g) => g,
        Err(e) => return unavailable(&Unavailable::Genome(e)),
    };
    if !genome.allows(actions::GENOME_READ) {
        return ApiError::CapabilityDenied(actions::GENOME_READ).error_response();
    }
    let rendered = state.discovery.render(&genome);
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CACHE_CONTROL, CACHE))
        .body(body(&rendered).clone())
}

/// The OpenAPI 3.1 document of the paid API: every priced route with its
/// offers (`x-payment-info`), for the proxy to publish at `/openapi.json`.
#[utoipa::path(get, path = "/v1/discovery/openapi.json", tag = "discovery", responses(
    (status = 200, description = "The paid API's OpenAPI 3.1 document (MPP discovery: x-service-info, x-payment-info offers per operation, the 402 response), from the active genome's prices",
     content_type = "application/json", body = Object,
     headers(("X-Request-Id" = String), ("Cache-Control" = String))),
    (status = 403, description = "The genome does not allow genome.read", body = crate::http::problem::ProblemBody, content_type = "application/problem+json"),
    (status = 503, description = "The active genome is not valid now: GENOME_UNAVAILABLE",
     body = crate::http::respond::Problem, content_type = "application/problem+json",
     headers(("X-Request-Id" = String), ("Retry-After" = String))),
))]
pub async fn openapi_json(state: web::Data<AppState>) -> HttpResponse {
    serve(&state, "application/json", |r| &r.openapi)
}

/// The paid API and how to pay it, for language models (llmstxt.org), for
/// the proxy to publish at `/llms.txt`.
#[utoipa::path(get, path = "/v1/discovery/llms.txt", tag = "discovery", responses(
    (status = 200, description = "The paid routes with their prices and offers, and how to pay, in Markdown",
     content_type = "text/plain; charset=utf-8", body = String,
     headers(("X-Request-Id" = String), ("Cache-Control" = String))),
    (status = 403, description = "The genome does not allow genome.read", body = crate::http::problem::ProblemBody, content_type = "application/problem+json"),
    (status = 503, description = "The active genome is not valid now: GENOME_UNAVAILABLE",
     body = crate::http::respond::Problem, content_type = "application/problem+json",
     headers(("X-Request-Id" = String), ("Retry-After" = String))),
))]
pub async fn llms_txt(state: web::Data<AppState>) -> HttpResponse {
    serve(&state, "text/plain; charset=utf-8", |r| &r.llms)
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use settlegate_rules::genome::Validity;
    use settlegate_rules::policy::SettlementPolicy;

    use super::*;

    const ASSET: &str = "0x20c0000000000000000000000000000000000001";

    fn genome(id: &str, settlement: Value) -> VerifiedGenome {
        let mut base = json!({
            "chain_id": 42431,
            "realm": "Tempo API",
            "recipient": "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
            "assets": [ASSET],
            "default_price": {"asset": ASSET, "amount": "1000"},
        });
        for (k, v) in settlement.as_object().unwrap() {
            base[k] = v.clone();
        }
        VerifiedGenome {
            id: id.into(),
            name: "T".into(),
            version: "2.3.4".parse().unwrap(),
            created_at: "2026-11-01T00:00:00Z".into(),
            validity: Validity {
                not_before: None,
                expires_at: None,
            },
            signer_key_ids: vec![],
            threshold: 1,
            invariant_ids: vec![],
            capabilities: vec![],
            policy: SettlementPolicy::from_value(Some(&base)).unwrap(),
        }
    }

    fn docs(settings: DiscoverySettings, g: &VerifiedGenome) -> (Value, String) {
        let r = Discovery::new(settings).render(g);
        (
            serde_json::from_slice(&r.openapi).unwrap(),
            String::from_utf8(r.llms.to_vec()).unwrap(),
        )
    }

    #[test]
    fn a_tempo_only_policy_lists_its_routes_without_mpp_offers() {
        let g = genome("a", json!({"schemes": ["tempo"]}));
        let (doc, llms) = docs(DiscoverySettings::default(), &g);
        let op = &doc["paths"]["/{path}"]["get"];
        assert!(op.get("x-payment-info").is_none(), "{op}");
        assert!(op["description"].as_str().unwrap().contains("Tempo scheme"), "{op}");
        assert!(op["responses"].get("402").is_some());
        assert_eq!(doc["info"]["version"], "2.3.4");
        assert_eq!(doc["x-service-info"], json!({}));
        assert!(llms.contains("1000 of token 0x20c0000000000000000000000000000000000001; the Tempo scheme only"));
        assert!(llms.contains("`Tempo` challenge"), "{llms}");
    }

    #[test]
    fn a_method_openapi_cannot_name_is_in_llms_txt_only() {
        let g = genome("a", json!({"prices": [{"resource": "PROPFIND /dav/*", "amount": "7"}]}));
        let (doc, llms) = docs(DiscoverySettings::default(), &g);
        assert!(doc["paths"].get("/dav/{path}").is_none(), "{doc}");
        assert!(
            llms.contains("- `PROPFIND /dav/{path}` (rule `PROPFIND /dav/*`, also `/dav`; not in the OpenAPI document): 7 of token"),
            "{llms}"
        );
    }

    #[test]
    fn a_price_beyond_a_voucher_offers_no_session() {
        let g = genome(
            "a",
            json!({
                "prices": [{"resource": "GET /huge", "amount": "340282366920938463463374607431768211456"}],
                "session": {"escrow": "0x000000000000000000000000000000000000e5c0", "min_deposit": "1"},
            }),
        );
        let (doc, _) = docs(DiscoverySettings::default(), &g);
        let intents = |path: &str| {
            doc["paths"][path]["get"]["x-payment-info"]["offers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o["intent"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(intents("/huge"), ["charge"]);
        assert_eq!(intents("/{path}"), ["charge", "session"]);
    }

    #[test]
    fn settings_fill_the_service_information_and_each_genome_is_rendered_once() {
        let settings = DiscoverySettings {
            title: Some("Reports".into()),
            description: Some("Line one.\nLine two.".into()),
            categories: vec!["data".into()],
            homepage: Some("https://x.example".into()),
            llms: None,
        };
        let d = Discovery::new(settings);
        let a = genome("a", json!({}));
        let first = d.render(&a);
        assert!(Arc::ptr_eq(&first, &d.render(&a)), "rendered once per genome");
        let doc: Value = serde_json::from_slice(&first.openapi).unwrap();
        assert_eq!(doc["info"]["title"], "Reports");
        assert_eq!(
            doc["x-service-info"],
            json!({"categories": ["data"], "docs": {"homepage": "https://x.example"}})
        );
        let llms = String::from_utf8(first.llms.to_vec()).unwrap();
        assert!(llms.starts_with("# Reports\n\n> Line one.\n> Line two.\n"), "{llms}");
        assert!(llms.contains("- [Homepage](https://x.example)"));
        // another genome: rendered anew
        let b = genome("b", json!({"default_price": {"asset": ASSET, "amount": "5"}}));
        let second = d.render(&b);
        assert!(!Arc::ptr_eq(&first, &second));
        assert!(
            String::from_utf8(second.llms.to_vec())
                .unwrap()
                .contains(": 5 of token")
        );
    }
}
