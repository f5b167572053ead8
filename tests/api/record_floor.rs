//! Issue 22, finding 5: a replay record lives as long as the genome in force
//! when it was written allows, so a later genome with a wider age window
//! would accept again a payment whose record had expired. No genome whose
//! window (plus twice the skew and a 60 s margin) outlasts
//! `replay.min_record_ttl_seconds` is accepted, at boot or on reload.

use serde_json::json;

use crate::chain::*;
use crate::helpers::*;

fn refused_reload(v: &serde_json::Value) -> bool {
    v["message"]
        .as_str()
        .is_some_and(|m| m.starts_with("genome reload refused"))
        && v["code"] == "GENOME_POLICY_CONFLICT"
}

#[test]
fn a_genome_whose_window_outlasts_the_record_floor_does_not_boot() {
    // The default floor (a day) against a window of a day: the skew and the
    // margin do not fit.
    let w = Workdir::new();
    let wide = Genome::single()
        .set("/settlement/max_age_seconds", json!(86_400))
        .signed();
    let r = run_refused(&serve_env(&w.genome(&wide)));
    assert_eq!(r.code, Some(1));
    assert_eq!(r.accepted_connections, 0);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(
        r.stderr.starts_with(
            "settlegate: GENOME_POLICY_CONFLICT: settlement.max_age_seconds 86400 (+ 2 x clock_skew_seconds 30 + 60 s) \
             outlasts replay.min_record_ttl_seconds 86400"
        ),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("at least 86520"), "{}", r.stderr);

    // A lowered floor against the default window (300 + 2 x 30 + 60 = 420).
    let w = Workdir::new();
    let mut env = serve_env(&w.genome(&Genome::single().signed()));
    env.insert("SETTLEGATE_REPLAY__MIN_RECORD_TTL_SECONDS".into(), "419".into());
    let r = run_refused(&env);
    assert!(
        r.stderr.starts_with("settlegate: GENOME_POLICY_CONFLICT: ") && r.stderr.contains("at least 420"),
        "{}",
        r.stderr
    );
    // Exactly enough boots.
    env.insert("SETTLEGATE_REPLAY__MIN_RECORD_TTL_SECONDS".into(), "420".into());
    drop(Served::start(&env));
}

#[tokio::test]
async fn a_reload_that_widens_the_window_past_the_floor_is_refused_and_the_old_genome_serves() {
    let w = Workdir::new();
    let v1 = Genome::single().signed();
    let path = w.genome(&v1);
    let mut env = serve_env(&path);
    env.insert("SETTLEGATE_REPLAY__MIN_RECORD_TTL_SECONDS".into(), "420".into());
    let app = Served::start(&env);

    Genome::single()
        .version("1.1.0")
        .set("/settlement/max_age_seconds", json!(3600))
        .signed()
        .write(&path);
    app.sighup();
    let line = app.wait_for_log(refused_reload);
    assert!(
        line["error"]
            .as_str()
            .unwrap()
            .contains("raise the floor to at least 3720"),
        "{line}"
    );
    let (_, genome) = app.get_json("/v1/genome").await;
    assert_eq!(genome["genome_id"], v1.id());
    assert_eq!(genome["policy"]["max_age_seconds"], 300);
    let metrics = reqwest::get(app.url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains(r#"settlegate_genome_reloads_total{outcome="refused",code="GENOME_POLICY_CONFLICT"} 1"#),
        "{metrics}"
    );

    // A newer genome within the floor is still taken.
    let v3 = Genome::single()
        .version("1.2.0")
        .set("/settlement/default_price/amount", json!("2000000"))
        .signed();
    v3.write(&path);
    app.sighup();
    app.wait_for_log(|v| v["message"] == "genome swapped in" && v["genome_id"] == v3.id());
}

/// The probe: a 5 s window and a floor that just fits it; a payment is
/// consumed; a reload to a one-hour window is refused, so the record the
/// payment left (living the floor) outlives every window that can be in
/// force, and the payment stays REPLAYED.
#[tokio::test]
async fn a_consumed_payment_is_not_reopened_by_a_wider_window() {
    let chain = Chain::start();
    let w = Workdir::new();
    let narrow = Genome::single()
        .set("/settlement/max_age_seconds", json!(5))
        .set("/settlement/clock_skew_seconds", json!(5))
        .signed();
    let path = w.genome(&narrow);
    let mut env = chain_env(&path, &chain.url);
    // 5 + 2 x 5 + 60
    env.insert("SETTLEGATE_REPLAY__MIN_RECORD_TTL_SECONDS".into(), "75".into());
    let app = Served::start(&env);
    let hash = chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000);
    let paid = app.verify_hash(&hash).await;
    assert_eq!(paid.status, 200, "{:?}", paid.body);

    Genome::single()
        .version("1.1.0")
        .set("/settlement/max_age_seconds", json!(3600))
        .set("/settlement/clock_skew_seconds", json!(5))
        .signed()
        .write(&path);
    app.sighup();
    app.wait_for_log(refused_reload);
    assert_eq!(app.get_json("/v1/genome").await.1["genome_id"], narrow.id());
    let again = app.verify_hash(&hash).await;
    assert_eq!((again.status, again.code()), (402, "REPLAYED"), "{:?}", again.body);
}
