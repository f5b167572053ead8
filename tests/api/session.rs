//! MPP sessions end to end: mppx 0.11.0's `tempo.sessionLegacy` client,
//! unchanged but for its gas padding, opens a v1 escrow channel on the dev
//! chain and pays request after request with vouchers, through Caddy
//! forward-auth to a plain upstream. Each effect is counted where it lands:
//! the upstream's hits, the receipts the client parsed, the channel on
//! chain, the node's own count of JSON-RPC calls.

use serde_json::{Value, json};

use crate::chain::*;
use crate::escrow_chain::*;
use crate::helpers::*;
use crate::mpp_clients::{payment_env, t4_genome};
use crate::proxy::Caddy;

/// The price of every request in the test genome (1 AlphaUSD).
pub const PRICE: u128 = 1_000_000;

/// The test genome with sessions on the escrow at `escrow`.
pub fn session_genome(escrow: &str) -> Genome {
    t4_genome().set(
        "/settlement/session",
        json!({"escrow": escrow, "min_deposit": "1000000", "min_voucher_delta": "0"}),
    )
}

pub struct Setup {
    pub chain: Chain,
    pub _app: Served,
    pub caddy: Caddy,
    pub escrow: String,
    /// The service's environment (for the `channels` command).
    pub env: std::collections::HashMap<String, String>,
    _w: Workdir,
}

pub fn setup_with(env: &[(&str, &str)]) -> Setup {
    let chain = Chain::start();
    let escrow = deploy_escrow(&chain);
    let w = Workdir::new();
    let mut e = payment_env(&w.genome(&session_genome(&escrow).signed()), &chain.url);
    for (k, v) in env {
        e.insert(k.to_string(), v.to_string());
    }
    let app = Served::start(&e);
    let caddy = Caddy::start(app.addr);
    Setup {
        chain,
        _app: app,
        caddy,
        escrow,
        env: e,
        _w: w,
    }
}

fn receipts(v: &Value) -> &Vec<Value> {
    v["receipts"].as_array().unwrap_or_else(|| panic!("no receipts: {v}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn mppx_opens_a_channel_and_pays_requests_through_forward_auth() {
    let s = tokio::task::block_in_place(|| setup_with(&[]));
    let n = 20u128;
    let before_calls = s.chain.calls("eth_call");
    let v = tokio::task::block_in_place(|| {
        pay_session(
            &s.chain,
            &s.caddy.url("/reports/1"),
            &[
                "--requests",
                &n.to_string(),
                "--deposit",
                &(PRICE * 100).to_string(),
                "--escrow",
                &s.escrow,
            ],
        )
    });
    assert!(v.get("error").is_none(), "{v}");
    let statuses: Vec<u64> = v["statuses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_u64().unwrap())
        .collect();
    assert_eq!(statuses, vec![200; n as usize], "{v}");
    assert_eq!(s.caddy.upstream_hits(), n as usize, "one upstream hit per paid request");

    // The receipts count every request exactly once.
    let r = receipts(&v);
    assert_eq!(r.len(), n as usize, "{v}");
    for (i, receipt) in r.iter().enumerate() {
        assert_eq!(receipt["intent"], "session", "{receipt}");
        assert_eq!(receipt["spent"], (PRICE * (i as u128 + 1)).to_string(), "{receipt}");
    }
    let channel = v["channelId"].as_str().unwrap().to_owned();
    assert_eq!(r[0]["channelId"], channel.as_str());

    // The channel is on chain, to the payee, with the deposit; nothing
    // settled yet (no settler key in this test).
    let on_chain = channel_state(&s.chain, &s.escrow, &channel);
    assert_eq!(on_chain.payee, PAYEE);
    assert_eq!(on_chain.deposit, PRICE * 100);
    assert_eq!(on_chain.settled, 0);

    // Vouchers cost no JSON-RPC call once the channel is known: the open
    // read the channel (and waited for it), the rest read nothing.
    let reads = s.chain.calls("eth_call") - before_calls;
    assert!(reads <= 3, "{reads} eth_calls for {n} requests");
}

/// The settler's settings for a test: the payee's key from a file, a scan
/// every second, a settlement as soon as one price is unsettled.
pub fn settler_env(w: &Workdir) -> Vec<(String, String)> {
    let key = w.path("payee.key");
    std::fs::write(&key, format!("{PAYEE_KEY}\n")).unwrap();
    vec![
        (
            "SETTLEGATE_SESSION__SETTLER_KEY_FILE".into(),
            key.to_str().unwrap().to_owned(),
        ),
        ("SETTLEGATE_SESSION__SCAN_INTERVAL_SECONDS".into(), "1".into()),
        ("SETTLEGATE_SESSION__SETTLE_AMOUNT".into(), PRICE.to_string()),
    ]
}

/// Polls the channel on chain until `settled` reaches `want` (or 30 s).
pub fn wait_settled(chain: &Chain, escrow: &str, channel: &str, want: u128) -> ChannelState {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let c = channel_state(chain, escrow, channel);
        if c.settled >= want || std::time::Instant::now() > deadline {
            return c;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_settler_settles_every_paid_request_on_chain() {
    let w = Workdir::new();
    let extra = settler_env(&w);
    let extra: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let s = tokio::task::block_in_place(|| setup_with(&extra));
    let (_, ready) = s._app.get_json("/readyz").await;
    assert_eq!(ready["components"]["settler"]["state"], "on", "{ready}");
    let payee_before = tokio::task::block_in_place(|| token_balance(&s.chain, ALPHA_USD, PAYEE));
    let n = 100u128;
    let v = tokio::task::block_in_place(|| {
        pay_session(
            &s.chain,
            &s.caddy.url("/reports/2"),
            &[
                "--requests",
                &n.to_string(),
                "--deposit",
                &(PRICE * 150).to_string(),
                "--escrow",
                &s.escrow,
            ],
        )
    });
    assert!(v.get("error").is_none(), "{v}");
    assert_eq!(receipts(&v).len(), n as usize, "{v}");
    assert_eq!(s.caddy.upstream_hits(), n as usize);
    let last = receipts(&v).last().unwrap().clone();
    assert_eq!(last["spent"], (PRICE * n).to_string(), "{last}");
    let channel = v["channelId"].as_str().unwrap().to_owned();

    let on_chain = tokio::task::block_in_place(|| wait_settled(&s.chain, &s.escrow, &channel, PRICE * n));
    assert_eq!(
        on_chain.settled,
        PRICE * n,
        "everything served is settled, nothing more"
    );
    let payee_after = tokio::task::block_in_place(|| token_balance(&s.chain, ALPHA_USD, PAYEE));
    assert_eq!(
        payee_after - payee_before,
        PRICE * n,
        "the payee got exactly what was served"
    );
    assert!(
        s._app
            .metric("settlegate_channel_settlements_total{action=\"settle\",outcome=\"ok\"}")
            .await
            >= 1
    );
}

/// `settlegate channels [--settle]` with the service's configuration: the
/// JSON lines it printed, and its exit code.
fn channels_cli(env: &std::collections::HashMap<String, String>, args: &[&str]) -> (Vec<Value>, i32) {
    let mut all = vec!["channels"];
    all.extend_from_slice(args);
    let out = command(&all, env).output().unwrap();
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    (lines, out.status.code().unwrap_or(-1))
}

#[tokio::test(flavor = "multi_thread")]
async fn without_the_key_the_settler_is_off_and_the_cli_lists_then_settles() {
    let s = tokio::task::block_in_place(|| setup_with(&[]));
    let (_, ready) = s._app.get_json("/readyz").await;
    assert_eq!(ready["components"]["settler"]["state"], "off", "{ready}");
    let v = tokio::task::block_in_place(|| {
        pay_session(
            &s.chain,
            &s.caddy.url("/reports/3"),
            &[
                "--requests",
                "5",
                "--deposit",
                &(PRICE * 10).to_string(),
                "--escrow",
                &s.escrow,
            ],
        )
    });
    assert!(v.get("error").is_none(), "{v}");
    let channel = v["channelId"].as_str().unwrap().to_owned();

    // Listed, unsettled, nothing on chain.
    let (lines, code) = tokio::task::block_in_place(|| channels_cli(&s.env, &[]));
    assert_eq!(code, 0, "{lines:?}");
    let row = lines
        .iter()
        .find(|l| l["key"].as_str().is_some_and(|k| k.ends_with(&channel)))
        .unwrap_or_else(|| panic!("{lines:?}"));
    assert_eq!(row["unsettled"], (PRICE * 5).to_string(), "{row}");
    assert_eq!(row["action"], "due");
    assert_eq!(lines.last().unwrap()["unsettled"], (PRICE * 5).to_string());
    assert_eq!(channel_state(&s.chain, &s.escrow, &channel).settled, 0);

    // --settle without the key is a usage error; with it, settled on chain.
    let (_, code) = tokio::task::block_in_place(|| channels_cli(&s.env, &["--settle"]));
    assert_eq!(code, 2);
    let w = Workdir::new();
    let mut env = s.env.clone();
    for (k, v) in settler_env(&w) {
        env.insert(k, v);
    }
    let payee_before = tokio::task::block_in_place(|| token_balance(&s.chain, ALPHA_USD, PAYEE));
    let (lines, code) = tokio::task::block_in_place(|| channels_cli(&env, &["--settle"]));
    assert_eq!(code, 0, "{lines:?}");
    assert_eq!(lines.last().unwrap()["settled"], 1, "{lines:?}");
    assert_eq!(channel_state(&s.chain, &s.escrow, &channel).settled, PRICE * 5);
    let payee_after = tokio::task::block_in_place(|| token_balance(&s.chain, ALPHA_USD, PAYEE));
    assert_eq!(payee_after - payee_before, PRICE * 5);
}
