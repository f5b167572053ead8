//! The README's first command, `scripts/demo`, run non-interactively: it
//! starts the dev chain, signs a throwaway genome, starts settlegate, pays
//! and verifies (402 unpaid, 200 paid, 402 replayed).

use std::process::Command;

use crate::helpers::{BIN, free_port};

#[test]
fn the_demo_runs_the_whole_pay_and_verify_flow() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/demo");
    let out = Command::new("bash")
        .args([script, "--self-test"])
        .env("DEMO_ANVIL_PORT", free_port().to_string())
        .env("DEMO_PORT", free_port().to_string())
        .env("DEMO_SETTLEGATE_BIN", BIN)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("demo self-test: ok"), "{stdout}");
    assert!(stderr.contains("\"status\":\"settled\""), "{stderr}");
    assert!(stderr.contains("\"code\":\"REPLAYED\""), "{stderr}");
    assert!(stderr.contains("THROWAWAY"), "the dev genome says what it is");
}
