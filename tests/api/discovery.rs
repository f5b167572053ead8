//! Discovery for agents: the paid API's OpenAPI document (the MPP
//! discovery extension) and its `llms.txt`, built from the genome's routes
//! and prices, served on settlegate's own paths and published at the paid
//! API's root by the README's Caddy block. mppx 0.11.0's validators judge
//! them unchanged; every priced route is listed with its price and the
//! offers its 402 really makes; a genome reload changes them.

use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};

use crate::helpers::*;
use crate::proxy::Caddy;

const DOC: &str = "/v1/discovery/openapi.json";
const LLMS: &str = "/v1/discovery/llms.txt";
const ESCROW: &str = "0x000000000000000000000000000000000000e5c0";

/// Runs `tests/clients/mppx_discover.mjs` with `args`; its JSON line.
fn mppx_discover(args: &[&str]) -> Value {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    assert!(
        root.join(".devtools/mppx/node_modules/mppx").exists(),
        "mppx is not installed: run scripts/mpp-clients"
    );
    let out = Command::new("node")
        .arg(root.join("tests/clients/mppx_discover.mjs"))
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap_or_else(|_| {
        panic!(
            "no JSON answer: {stdout}; stderr {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(out.status.success() && v.get("error").is_none(), "{v}");
    v
}

/// The test genome with three price rules and sessions.
fn priced() -> Genome {
    Genome::single()
        .set(
            "/settlement/prices",
            json!([
                {"resource": "GET /reports/summary", "amount": "500000"},
                {"resource": "GET /reports/*", "amount": "2500000"},
                {"resource": "POST /upload", "amount": "3000000"},
            ]),
        )
        .set(
            "/settlement/session",
            json!({"escrow": ESCROW, "min_deposit": "1000000"}),
        )
}

/// `(method, template, amount)` the document must list, in any order.
const LISTED: [(&str, &str, &str); 8] = [
    ("get", "/reports/summary", "500000"),
    ("get", "/reports/{path}", "2500000"),
    ("post", "/upload", "3000000"),
    ("get", "/{path}", "1000000"),
    ("post", "/{path}", "1000000"),
    ("put", "/{path}", "1000000"),
    ("patch", "/{path}", "1000000"),
    ("delete", "/{path}", "1000000"),
];

/// Every operation of the document: (method, path, operation).
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            out.push((method.clone(), path.clone(), op.clone()));
        }
    }
    out
}

/// What the extension's schema (draft-payment-discovery-01) asks of a
/// payable operation, checked field by field: mppx's validator is looser.
fn check_operation(method: &str, path: &str, op: &Value) -> Vec<(String, String)> {
    let info = &op["x-payment-info"];
    let offers = info["offers"]
        .as_array()
        .unwrap_or_else(|| panic!("{method} {path}: no offers: {op}"));
    assert_eq!(info.as_object().unwrap().len(), 1, "{method} {path}: offers only");
    assert!(!offers.is_empty());
    assert!(op["responses"].get("402").is_some(), "{method} {path}: no 402");
    if ["post", "put", "patch"].contains(&method) {
        assert!(op.get("requestBody").is_some(), "{method} {path}");
    }
    if path.contains('{') {
        assert_eq!(op["parameters"][0]["in"], "path");
        assert_eq!(op["parameters"][0]["required"], true);
    }
    offers
        .iter()
        .map(|o| {
            for k in o.as_object().unwrap().keys() {
                assert!(
                    ["intent", "method", "amount", "currency", "description"].contains(&k.as_str()),
                    "{method} {path}: offer field {k}"
                );
            }
            assert_eq!(o["method"], "tempo");
            assert_eq!(o["currency"], ALPHA_USD);
            let amount = o["amount"].as_str().unwrap();
            assert!(amount == "0" || (!amount.starts_with('0') && amount.bytes().all(|b| b.is_ascii_digit())));
            (o["intent"].as_str().unwrap().to_owned(), amount.to_owned())
        })
        .collect()
}

/// The intents and amount of the 402 a request gets through `/v1/authorize`.
async fn offered(app: &Served, method: &str, path: &str) -> (Vec<String>, String) {
    let uri = path.replace("{path}", "example/1");
    let v = Verified::read(
        reqwest::Client::new()
            .get(app.url("/v1/authorize"))
            .header("x-forwarded-method", method.to_uppercase())
            .header("x-forwarded-uri", uri)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(v.status, 402, "{method} {path}: {:?}", v.body);
    let intents = v
        .headers
        .get_all("www-authenticate")
        .iter()
        .map(|h| h.to_str().unwrap())
        .filter(|c| c.starts_with("Payment "))
        .map(|c| {
            c.split("intent=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap()
                .to_owned()
        })
        .collect();
    (intents, v.body["paymentInfo"]["amount"].as_str().unwrap().to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_document_validates_and_lists_every_priced_route_with_the_offers_its_402_makes() {
    let w = Workdir::new();
    let g = priced().signed();
    let mut env = serve_env(&w.genome(&g));
    env.insert("SETTLEGATE_DISCOVERY__TITLE".into(), "Reports API".into());
    env.insert(
        "SETTLEGATE_DISCOVERY__DESCRIPTION".into(),
        "Monthly reports, paid per request.".into(),
    );
    env.insert("SETTLEGATE_DISCOVERY__CATEGORIES".into(), "data,developer-tools".into());
    env.insert(
        "SETTLEGATE_DISCOVERY__HOMEPAGE".into(),
        "https://reports.example".into(),
    );
    let app = Served::start(&env);

    let v = tokio::task::block_in_place(|| mppx_discover(&["--doc", &app.url(DOC)]));
    assert_eq!(v["status"], 200);
    assert_eq!(v["contentType"], "application/json");
    let errors: Vec<&Value> = v["issues"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["severity"] == "error")
        .collect();
    assert!(errors.is_empty(), "mppx's validator: {errors:?}");
    assert_eq!(v["issues"], json!([]), "not even a warning");

    let doc = &v["document"];
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["title"], "Reports API");
    assert_eq!(doc["info"]["version"], "1.0.0");
    assert_eq!(doc["info"]["description"], "Monthly reports, paid per request.");
    assert_eq!(
        doc["x-service-info"],
        json!({"categories": ["data", "developer-tools"],
               "docs": {"homepage": "https://reports.example", "llms": "/llms.txt"}})
    );
    let ops = operations(doc);
    assert_eq!(ops.len(), LISTED.len(), "{doc}");
    for (method, path, amount) in LISTED {
        let (_, _, op) = ops
            .iter()
            .find(|(m, p, _)| m == method && p == path)
            .unwrap_or_else(|| panic!("{method} {path} is not listed: {doc}"));
        let offers = check_operation(method, path, op);
        assert_eq!(
            offers,
            [
                ("charge".to_owned(), amount.to_owned()),
                ("session".to_owned(), amount.to_owned())
            ],
            "{method} {path}"
        );
        // the 402 of such a request offers exactly that
        let (intents, paid) = offered(&app, method, path).await;
        assert_eq!(intents, ["charge", "session"], "{method} {path}");
        assert_eq!(paid, amount, "{method} {path}");
    }

    let r = reqwest::get(app.url(LLMS)).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/plain; charset=utf-8");
    assert_eq!(r.headers()["cache-control"], "public, max-age=300");
    let text = r.text().await.unwrap();
    assert!(
        text.starts_with("# Reports API\n\n> Monthly reports, paid per request.\n"),
        "{text}"
    );
    for line in [
        "- `GET /reports/summary` (rule `GET /reports/summary`): 500000 of token",
        "- `GET /reports/{path}` (rule `GET /reports/*`, also `/reports`): 2500000 of token",
        "- `POST /upload` (rule `POST /upload`): 3000000 of token",
        "- `DELETE /{path}` (any other path): 1000000 of token",
    ] {
        assert!(text.contains(line), "{line} not in {text}");
    }
    assert!(
        text.contains("tempo/charge, tempo/session") && text.contains("Accept-Payment"),
        "{text}"
    );
    assert!(!text.to_ascii_lowercase().contains("<html"));
}

#[tokio::test]
async fn a_genome_reload_changes_both_documents() {
    let w = Workdir::new();
    let v1 = priced().signed();
    let path = w.genome(&v1);
    let app = Served::start(&serve_env(&path));
    let (status, doc) = app.get_json(DOC).await;
    assert_eq!(status, 200);
    assert_eq!(doc["info"]["title"], "Tempo API", "the realm, by default");
    assert_eq!(doc["info"]["version"], "1.0.0");
    assert!(doc["paths"].get("/archive/{path}").is_none());
    let price = |doc: &Value, path: &str, method: &str| {
        doc["paths"][path][method]["x-payment-info"]["offers"][0]["amount"].clone()
    };
    assert_eq!(price(&doc, "/reports/{path}", "get"), "2500000");

    // v2: a dearer report, a new route, no more sessions
    let v2 = priced()
        .version("1.1.0")
        .set(
            "/settlement/prices",
            json!([
                {"resource": "GET /reports/*", "amount": "4000000"},
                {"resource": "* /archive/*", "amount": "700000"},
            ]),
        )
        .set("/settlement/intents", json!({"session": false}))
        .signed();
    v2.write(&path);
    app.sighup();
    app.wait_for_log(|v| v["message"] == "genome swapped in" && v["genome_id"] == v2.id());
    let (_, doc) = app.get_json(DOC).await;
    assert_eq!(doc["info"]["version"], "1.1.0");
    assert_eq!(price(&doc, "/reports/{path}", "get"), "4000000");
    assert_eq!(price(&doc, "/archive/{path}", "delete"), "700000");
    assert!(doc["paths"].get("/reports/summary").is_none(), "a rule gone is gone");
    assert!(doc["paths"].get("/upload").is_none());
    assert_eq!(
        doc["paths"]["/archive/{path}"]["put"]["x-payment-info"]["offers"],
        json!([{"method": "tempo", "intent": "charge", "amount": "700000", "currency": ALPHA_USD}]),
        "sessions are off"
    );
    let text = reqwest::get(app.url(LLMS)).await.unwrap().text().await.unwrap();
    assert!(
        text.contains("`GET /reports/{path}` (rule `GET /reports/*`, also `/reports`): 4000000"),
        "{text}"
    );
    assert!(
        text.contains("(rule `* /archive/*`, also `/archive`): 700000"),
        "{text}"
    );
    assert!(
        text.contains("; tempo/charge\n") && !text.contains(", tempo/session\n"),
        "sessions are off: {text}"
    );
}

#[tokio::test]
async fn the_documents_are_the_genomes_to_show_and_no_expired_policy_is_published() {
    // A genome that does not allow genome.read publishes nothing.
    let w = Workdir::new();
    let g = Genome::single()
        .set(
            "/capabilities",
            json!([{"cap_id": "CAP-PAY", "risk_class": "A",
                    "allow_actions": ["settlement.verify", "settlement.authorize"], "deny_actions": []}]),
        )
        .signed();
    let app = Served::start(&serve_env(&w.genome(&g)));
    for path in [DOC, LLMS] {
        let r = reqwest::get(app.url(path)).await.unwrap();
        assert_eq!(r.status(), 403, "{path}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
    }
    // Only GET (and the usual 405 with Allow).
    let r = reqwest::Client::new().post(app.url(DOC)).send().await.unwrap();
    assert_eq!(
        (r.status().as_u16(), r.headers()["allow"].to_str().unwrap()),
        (405, "GET")
    );

    // An expired genome: 503, as a payment check gets.
    let w = Workdir::new();
    let soon = time::OffsetDateTime::now_utc() + time::Duration::seconds(3);
    let g = Genome::single()
        .set(
            "/expires_at",
            json!(soon.format(&time::format_description::well_known::Rfc3339).unwrap()),
        )
        .signed();
    let app = Served::start(&serve_env(&w.genome(&g)));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let body = loop {
        let (status, body) = app.get_json(DOC).await;
        if status == 503 {
            break body;
        }
        assert!(
            status == 200 && time::OffsetDateTime::now_utc() < soon + time::Duration::seconds(1),
            "{status} {body}"
        );
        assert!(std::time::Instant::now() < deadline, "never refused");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(body["code"], "GENOME_UNAVAILABLE", "{body}");
    let r = reqwest::get(app.url(LLMS)).await.unwrap();
    assert_eq!(r.status(), 503);
}

/// The README's Caddy block publishes both documents at the paid API's
/// root and gates everything else; mppx's own site checks find them there
/// and judge each paid endpoint's 402 (no payment made). The genome offers
/// the `Payment` scheme only: mppx's checker reads the first
/// `WWW-Authenticate` value alone and skips an endpoint whose first
/// challenge is `Tempo`.
#[tokio::test(flavor = "multi_thread")]
async fn the_readme_caddy_block_publishes_the_documents_at_the_apis_root() {
    let w = Workdir::new();
    let g = priced().set("/settlement/schemes", json!(["payment"])).signed();
    let app = Served::start(&serve_env(&w.genome(&g)));
    let caddy = Caddy::start_site("caddy-discovery", app.addr);

    let served = reqwest::get(caddy.url("/openapi.json")).await.unwrap();
    assert_eq!(served.status(), 200);
    let served = served.text().await.unwrap();
    let direct = reqwest::get(app.url(DOC)).await.unwrap().text().await.unwrap();
    assert_eq!(served, direct);
    let llms = reqwest::get(caddy.url("/llms.txt")).await.unwrap();
    assert_eq!(llms.headers()["content-type"], "text/plain; charset=utf-8");
    // everything else still pays
    let r = reqwest::get(caddy.url("/reports/1")).await.unwrap();
    assert_eq!(r.status(), 402);
    let r = reqwest::get(caddy.url("/openapi.json/x")).await.unwrap();
    assert_eq!(r.status(), 402, "only the documents themselves are free");

    let v = tokio::task::block_in_place(|| mppx_discover(&["--site", &caddy.url("/")]));
    assert_eq!(v["llms"]["label"], "llms.txt found and nonempty");
    assert_eq!(v["llms"]["severity"], "pass", "{v}");
    assert_eq!(v["issues"], json!([]), "{v}");
    let endpoints = v["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), LISTED.len(), "{v}");
    for e in endpoints {
        let results: Vec<&Value> = ["challenge", "errorHandling"]
            .iter()
            .flat_map(|k| e[k].as_array().unwrap())
            .collect();
        let failed: Vec<&&Value> = results.iter().filter(|r| r["severity"] == "fail").collect();
        assert!(failed.is_empty(), "{} {}: {failed:?}", e["method"], e["path"]);
        for label in [
            "Returns 402 without credentials",
            "Challenge parseable",
            "Malformed credential returns 402",
            "Error response includes fresh challenge",
        ] {
            assert!(
                results.iter().any(|r| r["label"] == label && r["severity"] == "pass"),
                "{} {}: no pass for {label}: {results:?}",
                e["method"],
                e["path"]
            );
        }
    }
    assert_eq!(caddy.upstream_hits(), 0, "nothing unpaid reached the API");
}
