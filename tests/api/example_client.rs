//! `examples/pay-and-verify`, the Rust client of the README, run as written
//! against the real service on the dev chain: it reads the price from the
//! 402, pays it with alloy, gets the settlement, and sees the replay refused.
//! `scripts/test` builds it (its own workspace, into `target/`).

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use crate::chain::*;
use crate::helpers::*;

fn example_bin() -> PathBuf {
    std::env::var_os("PAY_AND_VERIFY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/debug/pay-and-verify"))
}

#[tokio::test]
async fn the_rust_example_client_pays_and_is_settled_once() {
    let bin = example_bin();
    assert!(
        bin.exists(),
        "{} is not built: cargo build --manifest-path examples/pay-and-verify/Cargo.toml --target-dir target (scripts/test does)",
        bin.display()
    );
    let chain = Chain::start();
    let w = Workdir::new();
    let app = Served::start(&chain_env(&w.genome(&Genome::single().signed()), &chain.url));
    let out = Command::new(&bin)
        .args([
            "--gate",
            &app.url(""),
            "--rpc",
            &chain.url,
            "--resource",
            "GET /reports/42",
        ])
        .env("PAYER_PRIVATE_KEY", PAYER_KEY)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the example failed:\n{stdout}\n{stderr}");
    let line: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap();
    let s = &line["settlement"];
    assert_eq!(s["status"], "settled", "{line}");
    assert_eq!(s["amount"], "1000000");
    assert_eq!(s["recipient"], RECIPIENT.to_lowercase());
    assert_eq!(line["replay"], "REPLAYED");
    // The payment is real and it is consumed: the gate refuses it now.
    let hash = s["tx_hash"].as_str().unwrap();
    let receipt: Value = serde_json::from_str(&chain.rpc("eth_getTransactionReceipt", &[hash])).unwrap();
    assert_eq!(receipt["status"], "0x1", "{receipt}");
    assert_eq!(
        receipt["to"],
        crate::helpers::ALPHA_USD.to_lowercase(),
        "a TIP-20 transfer"
    );
    let again = app.verify_hash(hash).await;
    assert_eq!((again.status, again.code()), (402, "REPLAYED"));
    // Without the key it explains itself rather than paying anything.
    let out = Command::new(&bin)
        .args(["--gate", &app.url("")])
        .env_remove("PAYER_PRIVATE_KEY")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("set PAYER_PRIVATE_KEY"));
}
