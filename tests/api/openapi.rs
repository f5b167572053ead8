//! The OpenAPI document: the served one is the checked-in one, and
//! schemathesis (PyPI, installed by `scripts/schemathesis`) fuzzes the real
//! service on the dev chain from it, with every check on
//! (`tests/schemathesis/schemathesis.toml` says what success is for a
//! payment gate): any 5xx, crash, undocumented status, header, content type
//! or body, schema-valid request refused with 400, or schema-invalid
//! request not refused fails the run.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use crate::helpers::*;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn checked_in() -> String {
    std::fs::read_to_string(root().join("openapi.json")).unwrap()
}

#[tokio::test]
async fn the_served_document_is_the_checked_in_one_and_the_cli_prints_it() {
    let w = Workdir::new();
    let app = Served::start(&serve_env(&w.genome(&Genome::single().signed())));
    let r = reqwest::get(app.url("/openapi.json")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert!(r.headers().contains_key("x-request-id"));
    let served = r.text().await.unwrap();
    assert!(
        served == checked_in(),
        "openapi.json differs from the served document: regenerate it with `cargo run -- openapi > openapi.json`"
    );
    let out = command(&["openapi"], &Default::default()).output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), served);

    // What no derive checks: the genome summary, built as a JSON value,
    // serves every required field and only documented ones.
    let doc: Value = serde_json::from_str(&served).unwrap();
    let schema = &doc["components"]["schemas"]["GenomeSummary"];
    let (status, body) = app.get_json("/v1/genome").await;
    assert_eq!(status, 200);
    for k in schema["required"].as_array().unwrap() {
        assert!(body.get(k.as_str().unwrap()).is_some(), "/v1/genome lacks {k}: {body}");
    }
    for k in body.as_object().unwrap().keys() {
        assert!(
            schema["properties"].get(k).is_some(),
            "/v1/genome serves {k}, undocumented"
        );
    }
    for k in body["policy"].as_object().unwrap().keys() {
        assert!(
            schema["properties"]["policy"]["properties"].get(k).is_some()
                || [
                    "max_age_seconds",
                    "clock_skew_seconds",
                    "min_confirmations",
                    "memo",
                    "allow_summed_transfers",
                    "challenge_ttl_seconds"
                ]
                .contains(&k.as_str()),
            "/v1/genome's policy serves {k}, unknown to the test"
        );
    }

    // 405 says what is allowed (RFC 9110), here and on every route.
    let r = reqwest::Client::new()
        .delete(app.url("/v1/verify"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "POST");
    let r = reqwest::Client::new().post(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET");
    let r = reqwest::Client::new()
        .request(reqwest::Method::TRACE, app.url("/v1/authorize"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS");
}

#[test]
fn schemathesis_finds_nothing_against_the_running_service() {
    let st = root().join(".devtools/schemathesis/bin/st");
    assert!(st.exists(), "schemathesis is not installed: run scripts/schemathesis");
    let chain = crate::chain::Chain::start();
    let w = Workdir::new();
    // Both schemes on (the default policy), so both challenges are served.
    let app = Served::start(&chain_env(&w.genome(&Genome::single().signed()), &chain.url));
    let scratch = tempfile::tempdir().unwrap();
    let out = Command::new(&st)
        .current_dir(scratch.path()) // hypothesis writes its database into the working directory
        .arg("--config-file")
        .arg(root().join("tests/schemathesis/schemathesis.toml"))
        .arg("run")
        .arg(app.url("/openapi.json"))
        .args([
            "--checks",
            "all",
            "--max-examples",
            "60",
            "--seed",
            "20261204",
            "--workers",
            "1",
        ])
        // The admin API is on its own listener (tests/api/admin.rs).
        .args(["--exclude-tag", "admin"])
        .args(["--no-color", "--generation-database", "none", "--request-timeout", "10"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "schemathesis failed:\n{stdout}\n{stderr}");
    // It ran: every operation was tested and many cases were generated.
    assert!(stdout.contains("Tested: 14"), "{stdout}");
    let generated: u64 = stdout
        .lines()
        .find_map(|l| l.trim().split_once(" generated, ").and_then(|(n, _)| n.parse().ok()))
        .unwrap_or(0);
    assert!(generated >= 300, "only {generated} cases:\n{stdout}");
    // And nothing it sent made the service log an error.
    if app.log_count(|l| l["level"] == "ERROR") > 0 {
        panic!(
            "the service logged an error: {}",
            app.wait_for_log(|l| l["level"] == "ERROR")
        );
    }
}
