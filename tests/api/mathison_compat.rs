//! Interoperability with Mathison's `genome.v0.1` tooling: an independent
//! JavaScript implementation of genome.md (node's crypto, as Mathison uses)
//! must agree with ours on canonical bytes, genome ids and signatures, in
//! both directions, on a document full of canonicalisation traps.

use std::process::Command;

use serde_json::json;

use crate::helpers::*;

const JS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/genome-js.mjs");

fn node(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::new("node")
        .arg(JS)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("node is required for the Mathison interoperability tests");
    assert!(
        out.status.success(),
        "node failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Unicode outside the BMP, keys whose UTF-16 and UTF-8 orders differ,
/// escapes, nested arrays of objects, and a nested `signature` key that
/// must stay signed.
fn tricky() -> Genome {
    Genome::new(&[("test-key-1", 1), ("test-key-2", 2)], 1)
        .set("/realm_note", json!("caf\u{e9} \u{2615} \u{1F600}"))
        .set(
            "/x_extension",
            json!({
                "\u{1F600}": "a\u{1}b\"c\\d/e\u{2028}f\tg",
                "\u{FF5E}": ["\u{e9}", {"z": 1, "a": [true, null, -7, "\u{0}"]}],
                "B": {"signature": "nested and signed", "signatures": []},
                "a": [],
                "": {}
            }),
        )
}

#[test]
fn a_genome_signed_here_verifies_in_the_javascript_implementation() {
    let w = Workdir::new();
    let g = tricky().signed_by(&[("test-key-1", 1), ("test-key-2", 2)]);
    let path = w.path("g.json");
    g.write(&path);
    let p = path.to_str().unwrap();
    assert_eq!(node(&["id", p], &[]).trim(), g.id());
    assert_eq!(node(&["verify", p], &[]), "test-key-1 valid\ntest-key-2 valid\n");
}

#[test]
fn a_genome_signed_by_the_javascript_implementation_verifies_here() {
    let w = Workdir::new();
    let unsigned = w.path("unsigned.json");
    tricky().write(&unsigned);
    let signed = w.path("signed.json");
    let key = test_key(2).to_pkcs8_base64();
    node(
        &[
            "sign",
            unsigned.to_str().unwrap(),
            signed.to_str().unwrap(),
            "test-key-2",
        ],
        &[("GENOME_SIGNING_PRIVATE_KEY", &key)],
    );

    let env = std::collections::HashMap::new();
    let out = command(
        &["genome", "verify", signed.to_str().unwrap(), "--trusted-key", &spki(2)],
        &env,
    )
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&format!("genome_id: {}", tricky().id())), "{stdout}");
    assert!(stdout.contains("signature \"test-key-2\": valid, pinned"));
}
