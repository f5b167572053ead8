//! `/metrics` moves by exactly what happened, across a scripted scenario on
//! the real chain and a Redis the test owns (and kills): one 200, one
//! replay, one failed verification, one 503 with Redis down and one with
//! the RPC down.
use std::collections::HashMap;

use crate::chain::*;
use crate::collector::Collector;
use crate::helpers::*;

async fn scrape(app: &Served) -> HashMap<String, f64> {
    let text = reqwest::get(app.url("/metrics")).await.unwrap().text().await.unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

fn delta(before: &HashMap<String, f64>, after: &HashMap<String, f64>, key: &str) -> f64 {
    after.get(key).copied().unwrap_or(0.0) - before.get(key).copied().unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_move_by_exactly_what_happened() {
    let mut chain = Chain::start();
    let mut redis = OwnRedis::start_on(free_port());
    let w = Workdir::new();
    let mut env = chain_env(&w.genome(&Genome::single().signed()), &chain.url);
    env.insert("SETTLEGATE_REDIS__URL".into(), redis.url());
    env.insert("SETTLEGATE_REDIS__TIMEOUT_MS".into(), "300".into());
    env.insert("SETTLEGATE_RPC__TIMEOUT_MS".into(), "300".into());
    // the same values go to a real collector over OTLP, every 200 ms
    let collector = Collector::start_with_metrics();
    env.insert(
        "SETTLEGATE_OTEL__ENDPOINT".into(),
        format!("http://127.0.0.1:{}", collector.http_port),
    );
    env.insert("OTEL_METRIC_EXPORT_INTERVAL".into(), "200".into());
    let app = Served::start(&env);
    let paid = chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000);
    let under = chain.transfer(ALPHA_USD, RECIPIENT, 999_999);
    let later = chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000);
    let before = scrape(&app).await;

    assert_eq!(app.verify_hash(&paid).await.status, 200);
    assert_eq!(app.verify_hash(&paid).await.code(), "REPLAYED");
    assert_eq!(app.verify_hash(&under).await.reason(), "insufficient_amount");
    redis.stop();
    let v = app.verify_hash(&later).await;
    assert_eq!((v.status, v.code()), (503, "REPLAY_STORE_UNAVAILABLE"), "{:?}", v.body);
    chain.stop();
    let v = app.verify_hash(&format!("0x{}", "3c".repeat(32))).await;
    assert_eq!((v.status, v.code()), (503, "RPC_UNAVAILABLE"), "{:?}", v.body);

    // a reload that finds the same genome (SIGHUP)
    let reloads = r#"settlegate_genome_reloads_total{outcome="unchanged",code=""}"#;
    app.sighup();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while scrape(&app).await.get(reloads).copied().unwrap_or(0.0) < 1.0 {
        assert!(std::time::Instant::now() < deadline, "no reload counted");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    let after = scrape(&app).await;
    let d = |k: &str| delta(&before, &after, k);
    let v = |status: u16, code: &str, reason: &str| {
        format!(r#"settlegate_verifications_total{{status="{status}",code="{code}",reason="{reason}"}}"#)
    };
    assert_eq!(d(&v(200, "SETTLED", "")), 1.0, "{after:#?}");
    assert_eq!(d(&v(402, "REPLAYED", "")), 1.0);
    assert_eq!(d(&v(402, "VERIFICATION_FAILED", "insufficient_amount")), 1.0);
    assert_eq!(d(&v(503, "REPLAY_STORE_UNAVAILABLE", "")), 1.0);
    assert_eq!(d(&v(503, "RPC_UNAVAILABLE", "")), 1.0);
    let total: f64 = after
        .keys()
        .filter(|k| k.starts_with("settlegate_verifications_total"))
        .map(|k| d(k))
        .sum();
    assert_eq!(total, 5.0, "five checks, five outcomes");
    // the 503s by cause: exactly one store and one RPC failure
    let by_cause = |code: &str| -> f64 {
        after
            .keys()
            .filter(|k| k.starts_with(&format!(r#"settlegate_unavailable_total{{code="{code}""#)))
            .map(|k| d(k))
            .sum()
    };
    assert_eq!(by_cause("REPLAY_STORE_UNAVAILABLE"), 1.0);
    assert_eq!(by_cause("RPC_UNAVAILABLE"), 1.0);
    for (status, n) in [(200, 1.0), (402, 2.0), (503, 2.0)] {
        assert_eq!(
            d(&format!(
                r#"settlegate_http_requests_total{{route="/v1/verify",status="{status}"}}"#
            )),
            n,
            "{status}"
        );
    }
    // the latency histogram counted each check under its code
    for (code, n) in [("SETTLED", 1.0), ("REPLAYED", 1.0), ("RPC_UNAVAILABLE", 1.0)] {
        assert_eq!(
            d(&format!(
                r#"settlegate_verification_duration_seconds_count{{route="/v1/verify",code="{code}"}}"#
            )),
            n,
            "{code}"
        );
    }
    // the pool's view at scrape: the node is gone
    let endpoint = after
        .keys()
        .find(|k| k.starts_with("settlegate_rpc_endpoint_healthy{"))
        .expect("an endpoint gauge")
        .clone();
    assert!(endpoint.contains(r#"endpoint="rpc0""#), "{endpoint}");
    assert_eq!(before[&endpoint], 1.0);
    assert_eq!(after[&endpoint], 0.0);
    // and the genome's time to expiry is there
    assert!(after["settlegate_genome_expires_in_seconds"] > 0.0);

    // The same values arrived over OTLP, under the same names: the
    // collector's latest export equals the final scrape for every series
    // the scenario moved (only /metrics requests keep moving).
    let moved: Vec<&String> = after
        .keys()
        .filter(|k| {
            [
                "settlegate_verifications_total",
                "settlegate_unavailable_total",
                "settlegate_http_requests_total{route=\"/v1/verify\"",
                "settlegate_verification_duration_seconds_count",
                "settlegate_chain_lookups_total",
                "settlegate_replay_store_ops_total",
                "settlegate_genome_reloads_total",
                "settlegate_rpc_endpoint_healthy",
            ]
            .iter()
            .any(|p| k.starts_with(p))
        })
        .collect();
    assert!(moved.len() >= 15, "{moved:?}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let pushed = crate::collector::last_metrics_export(&collector.output());
        let differ: Vec<_> = moved
            .iter()
            .filter(|k| pushed.get(k.as_str()) != Some(&after[k.as_str()]))
            .map(|k| (k.as_str(), after[k.as_str()], pushed.get(k.as_str())))
            .collect();
        if differ.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "OTLP and /metrics differ: {differ:#?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let pushes = scrape(&app).await;
    assert!(pushes[r#"settlegate_otel_metric_exports_total{outcome="ok"}"#] >= 1.0);

    // Every metric the dashboard and the alert rules query is served.
    let served: Vec<String> = pushes.keys().map(|k| k.split('{').next().unwrap().to_owned()).collect();
    let root = env!("CARGO_MANIFEST_DIR");
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{root}/otel/grafana/dashboards/settlegate.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    let mut queried = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            queried.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    assert!(queried.len() >= 15, "{queried:?}");
    queried.push(std::fs::read_to_string(format!("{root}/otel/alerts.yml")).unwrap());
    let mut names: Vec<String> = Vec::new();
    for q in &queried {
        let mut rest = q.as_str();
        while let Some(i) = rest.find("settlegate_") {
            let name: String = rest[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[i + name.len()..];
            names.push(name);
        }
    }
    names.sort();
    names.dedup();
    for name in &names {
        assert!(
            served.iter().any(|s| s == name),
            "the dashboard or an alert queries {name}, which /metrics does not serve"
        );
    }
}
