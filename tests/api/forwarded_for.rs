//! The per-IP rate believes `X-Forwarded-For` only from the peers in
//! `callers.trusted_proxies` (none by default), so a caller on loopback
//! cannot pick its own bucket by sending the header; and an IPv4 client
//! written as an IPv4-mapped IPv6 address has its own bucket, not the /64
//! `::` every IPv4 client would share.

use serde_json::json;

use crate::helpers::*;

async fn ask(app: &Served, client_says: &str) -> u16 {
    app.verify(
        json!({ "resource": "GET /reports/1" }),
        &[("X-Forwarded-For", client_says)],
    )
    .await
    .status
}

#[tokio::test]
async fn a_callers_own_forwarded_for_moves_its_rate_bucket_only_behind_a_configured_proxy() {
    let w = Workdir::new();
    let mut env = serve_env(&w.genome(&Genome::single().signed()));
    // one request a second per client IP, a burst of one
    env.insert("SETTLEGATE_CALLERS__RATE_PER_IP_PER_SECOND".into(), "1".into());

    // Default: the loopback peer is the client, whatever it claims.
    let app = Served::start(&env);
    assert_eq!(ask(&app, "198.51.100.1").await, 402);
    let v = app
        .verify(
            json!({ "resource": "GET /reports/1" }),
            &[("X-Forwarded-For", "198.51.100.2")],
        )
        .await;
    assert_eq!(v.status, 429, "another claimed address is the same peer: {:?}", v.body);
    assert_eq!(v.code(), "RATE_LIMITED");
    drop(app);

    // Behind a configured proxy, the header names the client.
    let w = Workdir::new();
    let mut env = serve_env(&w.genome(&Genome::single().signed()));
    env.insert("SETTLEGATE_CALLERS__RATE_PER_IP_PER_SECOND".into(), "1".into());
    env.insert("SETTLEGATE_CALLERS__TRUSTED_PROXIES".into(), "127.0.0.1/32".into());
    let app = Served::start(&env);
    assert_eq!(ask(&app, "198.51.100.1").await, 402);
    assert_eq!(ask(&app, "198.51.100.2").await, 402, "another client, its own bucket");
    assert_eq!(
        ask(&app, "198.51.100.1").await,
        429,
        "the first client's bucket is spent"
    );
    drop(app);

    // /v1/authorize's trusted proxies are not the rate's.
    let w = Workdir::new();
    let mut env2 = serve_env(&w.genome(&Genome::single().signed()));
    env2.insert("SETTLEGATE_CALLERS__RATE_PER_IP_PER_SECOND".into(), "1".into());
    env2.insert("SETTLEGATE_AUTHORIZE__TRUSTED_PROXIES".into(), "127.0.0.1/32".into());
    let app = Served::start(&env2);
    assert_eq!(ask(&app, "198.51.100.1").await, 402);
    assert_eq!(ask(&app, "198.51.100.2").await, 429);
}

#[tokio::test]
async fn ipv4_clients_written_as_mapped_ipv6_addresses_keep_their_own_buckets() {
    let w = Workdir::new();
    let mut env = serve_env(&w.genome(&Genome::single().signed()));
    env.insert("SETTLEGATE_CALLERS__RATE_PER_IP_PER_SECOND".into(), "1".into());
    env.insert("SETTLEGATE_CALLERS__TRUSTED_PROXIES".into(), "127.0.0.1/32".into());
    let app = Served::start(&env);
    assert_eq!(ask(&app, "::ffff:198.51.100.1").await, 402);
    assert_eq!(ask(&app, "::ffff:198.51.100.1").await, 429, "its bucket is spent");
    // another IPv4 client, mapped or not, is not in that bucket
    assert_eq!(ask(&app, "::ffff:198.51.100.2").await, 402);
    assert_eq!(ask(&app, "198.51.100.3").await, 402);
    // and the mapped and plain spellings of one client share one bucket
    assert_eq!(ask(&app, "198.51.100.2").await, 429);
}

#[test]
fn a_trusted_proxy_that_is_not_an_address_stops_the_boot() {
    let w = Workdir::new();
    let mut env = serve_env(&w.genome(&Genome::single().signed()));
    env.insert(
        "SETTLEGATE_CALLERS__TRUSTED_PROXIES".into(),
        "10.0.0.0/8,lb.internal".into(),
    );
    let refused = run_refused(&env);
    assert_eq!(refused.code, Some(1));
    assert!(
        refused
            .stderr
            .starts_with("settlegate: CONFIG_INVALID: callers.trusted_proxies: \"lb.internal\""),
        "{}",
        refused.stderr
    );
    assert_eq!(refused.accepted_connections, 0);
}
