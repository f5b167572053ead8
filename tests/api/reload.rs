//! Runtime genome changes: SIGHUP and the interval swap in a valid newer
//! genome atomically, refuse anything else while the verified genome keeps
//! serving, and an expired genome fails closed.

use std::time::{Duration, Instant};

use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::helpers::*;

fn refused(code: &'static str) -> impl Fn(&serde_json::Value) -> bool {
    move |v| {
        v["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("genome reload refused"))
            && v["code"] == code
    }
}

#[tokio::test]
async fn sighup_with_a_newer_valid_genome_switches_the_genome_id() {
    let w = Workdir::new();
    let v1 = Genome::single().signed();
    let path = w.genome(&v1);
    let app = Served::start(&serve_env(&path));
    assert_eq!(app.get_json("/v1/genome").await.1["genome_id"], v1.id());

    let v2 = Genome::single()
        .version("1.1.0")
        .set("/settlement/default_price/amount", json!("2000000"))
        .signed();
    v2.write(&path);
    app.sighup();
    app.wait_for_log(|v| v["message"] == "genome swapped in" && v["genome_id"] == v2.id());
    let (_, body) = app.get_json("/v1/genome").await;
    assert_eq!(body["genome_id"], v2.id());
    assert_eq!(body["version"], "1.1.0");
    assert_eq!(body["policy"]["default_price"]["amount"], "2000000");
}

#[tokio::test]
async fn sighup_with_a_tampered_or_older_genome_keeps_the_verified_one() {
    let w = Workdir::new();
    let v2 = Genome::single().version("2.0.0").signed();
    let path = w.genome(&v2);
    let app = Served::start(&serve_env(&path));

    // tampered: a newer version whose bytes no longer match the signature
    let text = String::from_utf8(Genome::single().version("3.0.0").signed().bytes()).unwrap();
    std::fs::write(&path, text.replacen("1000000", "1", 1)).unwrap();
    app.sighup();
    app.wait_for_log(refused("GENOME_SIGNATURE_INVALID"));
    assert_eq!(app.get_json("/v1/genome").await.1["genome_id"], v2.id());
    assert_eq!(
        app.get_json("/readyz").await.1["components"]["genome"]["state"],
        "verified"
    );

    // older version, validly signed: rollback
    Genome::single().version("1.9.9").signed().write(&path);
    app.sighup();
    app.wait_for_log(refused("GENOME_ROLLBACK"));
    // same version, different content: also not strictly greater
    Genome::single()
        .version("2.0.0")
        .set("/name", json!("OTHER"))
        .signed()
        .write(&path);
    app.sighup();
    app.wait_for_log(|v| {
        refused("GENOME_ROLLBACK")(v) && v["error"].as_str().unwrap().contains("2.0.0 is not greater")
    });
    // validly signed and newer, but with the MPP SDKs' shared default realm
    Genome::single()
        .version("4.0.0")
        .set("/settlement/realm", json!("MPP Payment"))
        .signed()
        .write(&path);
    app.sighup();
    app.wait_for_log(|v| {
        refused("GENOME_POLICY_INVALID")(v) && v["error"].as_str().unwrap().contains("MPP SDKs' default realm")
    });
    // self-signed by an unpinned key
    Genome::new(&[("evil", 9)], 1)
        .version("9.0.0")
        .signed_by(&[("evil", 9)])
        .write(&path);
    app.sighup();
    app.wait_for_log(refused("GENOME_UNTRUSTED_SIGNER"));
    // deleted
    std::fs::remove_file(&path).unwrap();
    app.sighup();
    app.wait_for_log(refused("GENOME_MISSING"));

    assert_eq!(app.get_json("/v1/genome").await.1["genome_id"], v2.id());
    assert_eq!(app.get_json("/healthz").await.0, 200);
    let metrics = reqwest::get(app.url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains(r#"settlegate_genome_reloads_total{outcome="refused",code="GENOME_ROLLBACK"} 2"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_interval_check_picks_up_a_newer_genome_and_logs_a_bad_file_once() {
    let w = Workdir::new();
    let path = w.genome(&Genome::single().signed());
    let mut env = serve_env(&path);
    env.insert("SETTLEGATE_GENOME__RELOAD_INTERVAL_SECONDS".into(), "1".into());
    let app = Served::start(&env);

    Genome::single().signed().set("/version", json!("5.0.0")).write(&path); // signature broken
    app.wait_for_log(refused("GENOME_SIGNATURE_INVALID"));
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        app.log_count(refused("GENOME_SIGNATURE_INVALID")),
        1,
        "an unchanged bad file is logged once"
    );

    let v2 = Genome::single().version("1.0.1").signed();
    v2.write(&path);
    app.wait_for_log(|v| v["message"] == "genome swapped in" && v["genome_id"] == v2.id());
    assert_eq!(app.get_json("/v1/genome").await.1["genome_id"], v2.id());
}

#[tokio::test]
async fn an_expired_genome_fails_closed_until_a_newer_one_is_loaded() {
    let w = Workdir::new();
    // The chain first: on a loaded machine it can take seconds, and the
    // genome's few seconds of life start when it is signed.
    let chain = crate::chain::Chain::start();
    let soon = OffsetDateTime::now_utc() + time::Duration::seconds(4);
    let g = Genome::single()
        .set("/expires_at", json!(soon.format(&Rfc3339).unwrap()))
        .signed();
    let path = w.genome(&g);
    let app = Served::start(&chain_env(&path, &chain.url));
    let (status, body) = app.get_json("/readyz").await;
    assert!(
        status == 200 || OffsetDateTime::now_utc() >= soon,
        "ready while the genome is valid: {body}"
    );

    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        let (status, body) = app.get_json("/readyz").await;
        if status == 503 {
            break body;
        }
        assert!(Instant::now() < deadline, "never became unready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(body["status"], "not_ready");
    assert_eq!(body["components"]["genome"]["code"], "GENOME_EXPIRED");
    assert_eq!(app.get_json("/v1/genome").await.1["state"], "GENOME_EXPIRED");
    let v = app.verify_hash(&format!("0x{}", "ab".repeat(32))).await;
    assert_eq!((v.status, v.code()), (503, "GENOME_UNAVAILABLE"), "{:?}", v.body);
    assert_eq!(v.header("retry-after"), "30");
    // no challenge from an expired policy either: one check for both
    let unpaid = app.verify(json!({ "resource": "GET /reports/1" }), &[]).await;
    assert_eq!(
        (unpaid.status, unpaid.code()),
        (503, "GENOME_UNAVAILABLE"),
        "{:?}",
        unpaid.body
    );
    assert_eq!(unpaid.header("www-authenticate"), "");
    assert_eq!(unpaid.header("retry-after"), "30");
    assert_eq!(app.get_json("/healthz").await.0, 200);

    Genome::single().version("1.0.1").signed().write(&path);
    app.sighup();
    app.wait_for_log(|v| v["message"] == "genome swapped in");
    assert_eq!(app.get_json("/readyz").await.0, 200);
}

/// Issue 8: a reload that changes the chain id. The RPC pool judges every
/// endpoint against the new chain at once: `/readyz` says the endpoint is on
/// the wrong chain and not ready, a check is a 503 (`rpc_wrong_chain`, the
/// node is not asked about the payment), and a later genome back on the
/// node's chain makes it ready and settling again, without a restart.
#[tokio::test]
async fn a_reload_to_another_chain_rechecks_every_endpoint_against_it() {
    let chain = crate::chain::Chain::start();
    let w = Workdir::new();
    let path = w.genome(&Genome::single().signed());
    let app = Served::start(&chain_env(&path, &chain.url));
    let ready = |body: &serde_json::Value| body["components"]["rpc"]["endpoints"][0]["state"].clone();
    let (status, body) = app.get_json("/readyz").await;
    assert_eq!((status, ready(&body)), (200, json!("healthy")), "{body}");

    let elsewhere = Genome::single()
        .version("1.1.0")
        .set("/settlement/chain_id", json!(4217))
        .signed();
    elsewhere.write(&path);
    app.sighup();
    app.wait_for_log(|v| v["message"] == "genome swapped in" && v["genome_id"] == elsewhere.id());
    let (status, body) = app.get_json("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["components"]["rpc"]["chain_id"], 4217);
    assert_eq!(ready(&body), "wrong_chain", "{body}");
    assert_eq!(body["components"]["rpc"]["endpoints"][0]["chain_id"], 42431);
    let hash = chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000);
    let before = chain.calls("eth_getTransactionReceipt");
    let v = app.verify_hash(&hash).await;
    assert_eq!((v.status, v.code()), (503, "RPC_UNAVAILABLE"), "{:?}", v.body);
    assert_eq!(
        chain.calls("eth_getTransactionReceipt"),
        before,
        "the node on the old chain is not asked"
    );
    assert!(
        app.metric("settlegate_unavailable_total{code=\"RPC_UNAVAILABLE\",cause=\"rpc_wrong_chain\"}")
            .await
            >= 1
    );

    let back = Genome::single().version("1.2.0").signed();
    back.write(&path);
    app.sighup();
    app.wait_for_log(|v| v["message"] == "genome swapped in" && v["genome_id"] == back.id());
    let (status, body) = app.get_json("/readyz").await;
    assert_eq!((status, ready(&body)), (200, json!("healthy")), "{body}");
    assert_eq!(app.verify_hash(&hash).await.status, 200);
}
