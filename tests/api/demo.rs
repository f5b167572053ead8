//! The README's first command, `scripts/demo`, run as `--self-test` on the
//! dev chain: every step's outcome is read back from what it printed, the
//! MPP client's payment through Caddy included.

use std::process::Command;

use crate::helpers::{BIN, free_port};

#[test]
fn the_demo_walks_through_the_whole_flow_and_checks_each_step() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/demo");
    let out = Command::new("bash")
        .args([script, "--self-test"])
        .env("DEMO_ANVIL_PORT", free_port().to_string())
        .env("DEMO_PORT", free_port().to_string())
        .env("DEMO_PROXY_PORT", free_port().to_string())
        .env("DEMO_API_PORT", free_port().to_string())
        .env("DEMO_SETTLEGATE_BIN", BIN)
        .env_remove("NO_COLOR")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    assert!(!stdout.contains('\x1b'), "no colour when the output is not a terminal");
    assert!(!stdout.contains('✗'), "{stdout}");

    // Each step, in order, with the outcome it checked.
    let steps: Vec<&str> = stdout.split("\n[").skip(1).collect();
    assert_eq!(steps.len(), 11, "{stdout}");
    let expect = [
        ("1/11] starting the Tempo dev chain", &["✓ chain 42431"][..]),
        (
            "2/11] signing a THROWAWAY dev genome",
            &["✓ genome DEV_THROWAWAY_NOT_FOR_PRODUCTION"],
        ),
        (
            "3/11] starting settlegate",
            &[
                "✓ the ledger's schema: {\"applied\":[1,2,3],\"version\":3}",
                "✓ settlegate ready: genome verified, replay store ok, rpc ok",
            ],
        ),
        (
            "4/11] a client asks without paying",
            &[
                "✓ status: 402",
                "✓ code: PAYMENT_REQUIRED",
                "www-authenticate: Tempo realm=",
                "www-authenticate: Payment id=",
                "intent=\"session\"",
                "paymentInfo: {\"method\":\"tempo\"",
            ],
        ),
        ("5/11] the client pays 1 AlphaUSD", &["✓ tx 0x"]),
        (
            "6/11] the client retries",
            &["✓ status: 200", "✓ settlement: settled", "✓ settled transaction: 0x"],
        ),
        (
            "7/11] someone presents the same payment again",
            &["✓ status: 402", "✓ code: REPLAYED"],
        ),
        (
            "8/11] a client pays too little",
            &[
                "✓ status: 402",
                "✓ code: VERIFICATION_FAILED",
                "✓ reason: insufficient_amount",
            ],
        ),
        (
            "9/11] an MPP client (mppx) pays with the Payment scheme",
            &[
                "✓ 402 with the Payment challenge",
                "✓ status: 200 from the API behind Caddy",
                "✓ receipt: success",
                "on chain, status: 0x1",
                "body: {\"report\":\"42\",\"paid_by\":\"0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266\"",
            ],
        ),
        (
            "10/11] a session: mppx opens a payment channel",
            &[
                "✓ statuses: [200,200,200,200,200,200,200,200,200,200]",
                "✓ spent, from the last Payment-Receipt: 10000000",
                "✓ settled on chain by settlegate's settler (the payee's key): 10000000",
            ],
        ),
        (
            "11/11] the books: every paid request in the ledger",
            &[
                "✓ payments booked (the Tempo-scheme 200 and mppx's): 2",
                "✓ booked: 0x",
                "revenue by route: {",
                "\"amount\":\"2000000\"",
                "✓ the session's channel in the books (spent/settled): 10000000/10000000",
                "events: open 20000000",
            ],
        ),
    ];
    for (step, (title, outcomes)) in steps.iter().zip(expect) {
        assert!(step.starts_with(title), "expected step {title:?}, got:\n{step}");
        for o in outcomes {
            assert!(step.contains(o), "step {title:?} lacks {o:?}:\n{step}");
        }
    }
    // The settled hash is the one paid in step 5.
    let paid = steps[4].split("✓ tx ").nth(1).unwrap().lines().next().unwrap();
    assert!(
        steps[5].contains(&format!("✓ settled transaction: {paid}")),
        "{}",
        steps[5]
    );
    // ... and the one the books hold.
    assert!(steps[10].contains(&format!("✓ booked: {paid}")), "{}", steps[10]);
    assert!(stdout.trim_end().ends_with("demo self-test: ok (11 steps)"), "{stdout}");
}
