//! Real MPP client SDKs pay through Caddy (`forward_auth` to
//! `GET /v1/authorize`) on the dev chain, unchanged: pympp (PyPI) and mppx
//! (npm), each in pull mode (its default: the gate broadcasts the signed
//! transaction) and in push mode (the client broadcasts). Installed by
//! `scripts/mpp-clients`; the pay scripts are `tests/clients/`.
//!
//! Each payment is checked where its effects land: the client's own parse of
//! the `Payment-Receipt`, the protected application's access log and echo of
//! the settlement headers, the node's receipt and its count of broadcasts.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use crate::chain::*;
use crate::helpers::*;
use crate::proxy::Caddy;

const SECRET: &str = "test-payment-secret-0123456789abcdef-not-for-production";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The command that runs `client`'s pay script (`pympp` or `mppx`).
pub fn client_command(client: &str) -> Command {
    let root = root();
    match client {
        "pympp" => {
            let python = root.join(".devtools/mpp-py/bin/python");
            assert!(python.exists(), "pympp is not installed: run scripts/mpp-clients");
            let mut c = Command::new(python);
            c.arg(root.join("tests/clients/pympp_pay.py"));
            c
        }
        "mppx" => {
            assert!(
                root.join(".devtools/mppx/node_modules/mppx").exists(),
                "mppx is not installed: run scripts/mpp-clients"
            );
            let mut c = Command::new("node");
            c.arg(root.join("tests/clients/mppx_pay.mjs"));
            c
        }
        other => panic!("no client {other}"),
    }
}

/// Runs a pay script to the end and returns the JSON line it printed.
pub fn pay(client: &str, mode: &str, url: &str, rpc: &str) -> Value {
    let out = client_command(client)
        .arg(url)
        .args(["--key", PAYER_KEY, "--rpc", rpc, "--mode", mode])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    let v: Value = serde_json::from_str(line).unwrap_or_else(|_| {
        panic!(
            "{client} {mode}: no JSON answer; stdout {stdout}; stderr {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    eprintln!("{client} {mode}: {v}");
    assert!(
        out.status.success() && v.get("error").is_none(),
        "{client} {mode} failed: {v}; stderr {}",
        String::from_utf8_lossy(&out.stderr)
    );
    v
}

/// A genome for T4 clients: pympp signs transactions valid until at most
/// the challenge's expiry + 1 s, and T4 refuses a validity more than 30 s
/// ahead of the block (`reference/mpp.md` section 10).
pub fn t4_genome() -> Genome {
    Genome::single().set("/settlement/challenge_ttl_seconds", json!(25))
}

pub fn payment_env(genome: &Path, rpc: &str) -> std::collections::HashMap<String, String> {
    let mut env = chain_env(genome, rpc);
    env.insert("SETTLEGATE_PAYMENT__SECRET".into(), SECRET.into());
    env
}

struct Setup {
    chain: Chain,
    _app: Served,
    caddy: Caddy,
    _w: Workdir,
}

fn setup() -> Setup {
    let chain = Chain::start();
    let w = Workdir::new();
    let app = Served::start(&payment_env(&w.genome(&t4_genome().signed()), &chain.url));
    let caddy = Caddy::start(app.addr);
    Setup {
        chain,
        _app: app,
        caddy,
        _w: w,
    }
}

/// The node's own count of broadcasts (anvil logs `eth_sendRawTransaction`
/// inside each synchronous send too).
fn broadcasts(chain: &Chain) -> usize {
    chain.calls("eth_sendRawTransaction")
}

/// One paid request by `client` in `mode`, checked from the client, the
/// application and the node.
fn pays_once(s: &Setup, client: &str, mode: &str, path: &str) {
    let before = broadcasts(&s.chain);
    let hits = s.caddy.upstream_hits();
    let v = pay(client, mode, &s.caddy.url(path), &s.chain.url);
    assert_eq!(v["status"], 200, "{client} {mode}: {v}");

    // The application served it, with the settlement the gate decided.
    let body = &v["body"];
    assert_eq!(body["upstream"], "reached", "{v}");
    assert_eq!(body["path"], path);
    assert_eq!(body["x_settlement_payer"], PAYER, "{v}");
    assert_eq!(body["x_settlement_amount"], "1000000");
    let tx = body["x_settlement_tx"].as_str().unwrap().to_owned();
    assert_eq!(s.caddy.upstream_hits(), hits + 1);

    // The client accepted the receipt, and it names that transaction.
    let receipt = &v["receipt"];
    assert!(v.get("receipt_error").is_none(), "{client} refused the receipt: {v}");
    assert_eq!(receipt["status"], "success", "{v}");
    assert_eq!(receipt["method"], "tempo");
    assert_eq!(receipt["reference"].as_str().unwrap().to_lowercase(), tx);
    if let Some(pushed) = v["tx_hash"].as_str() {
        assert_eq!(pushed.to_lowercase(), tx);
    }

    // It is on chain, a success, from the payer; and it was broadcast once:
    // by the gate in pull mode, by the client in push mode.
    let r: Value = serde_json::from_str(&s.chain.rpc("eth_getTransactionReceipt", &[&tx])).unwrap();
    assert_eq!(r["status"], "0x1", "{r}");
    assert_eq!(r["from"].as_str().unwrap().to_lowercase(), PAYER);
    assert_eq!(broadcasts(&s.chain), before + 1, "{mode}: {:?}", s.chain.all_calls());
}

#[tokio::test(flavor = "multi_thread")]
async fn pympp_pays_through_the_proxy_in_pull_and_push_mode() {
    let s = setup();
    tokio::task::block_in_place(|| {
        pays_once(&s, "pympp", "pull", "/paid/pull");
        let sync_after_pull = s.chain.calls("eth_sendRawTransactionSync");
        pays_once(&s, "pympp", "push", "/paid/push");
        // the client broadcast the push payment, not the gate
        assert_eq!(s.chain.calls("eth_sendRawTransactionSync"), sync_after_pull);
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn one_transaction_pympp_signed_presented_twice_at_once_is_broadcast_and_settled_once() {
    let s = setup();
    let signed = tokio::task::block_in_place(|| pay("pympp", "sign", &s.caddy.url("/paid/x"), &s.chain.url));
    let authorization = signed["authorization"].as_str().unwrap();
    assert!(authorization.starts_with("Payment "), "{signed}");
    let before = broadcasts(&s.chain);
    let client = reqwest::Client::new();
    let present = || async {
        let r = client
            .get(s.caddy.url("/paid/x"))
            .header("authorization", authorization)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json::<Value>().await.unwrap_or_default())
    };
    let (a, b) = tokio::join!(present(), present());
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(statuses, [200, 402], "{a:?} {b:?}");
    let lost = if a.0 == 402 { &a.1 } else { &b.1 };
    assert!(
        ["REPLAYED", "PAYMENT_PENDING"].contains(&lost["code"].as_str().unwrap()),
        "{lost}"
    );
    // Later, once more: refused, never broadcast again.
    let (status, body) = present().await;
    assert_eq!((status, body["code"].as_str()), (402, Some("REPLAYED")), "{body}");
    assert_eq!(broadcasts(&s.chain), before + 1, "{:?}", s.chain.all_calls());
    assert_eq!(s.caddy.upstream_hits(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn mppx_pays_through_the_proxy_in_pull_and_push_mode() {
    let s = setup();
    tokio::task::block_in_place(|| {
        pays_once(&s, "mppx", "pull", "/paid/pull");
        // In push mode mppx broadcasts itself: pays_once counts one
        // broadcast in all, so the gate added none.
        pays_once(&s, "mppx", "push", "/paid/push");
    });
}
