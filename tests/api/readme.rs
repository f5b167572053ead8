//! The README's examples, run as written: the Caddy `forward_auth` block
//! (every forward-auth test's front site is built from it, see
//! [`crate::proxy::front_site`]) and the paid request with an MPP client.

use std::process::Command;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::Value;

use crate::chain::*;
use crate::helpers::*;
use crate::proxy::Caddy;

/// The body of the fenced code block that follows `<!-- marker -->` in the
/// README.
pub fn block(marker: &str) -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let tag = format!("<!-- {marker} -->");
    let after = &readme[readme.find(&tag).unwrap_or_else(|| panic!("README has no {tag}")) + tag.len()..];
    let fence = after.trim_start();
    assert!(fence.starts_with("```"), "{tag} is not followed by a code block");
    let body = &fence[fence.find('\n').unwrap() + 1..];
    body[..body.find("\n```").expect("the code block ends")].to_owned()
}

#[test]
fn the_readme_caddy_block_is_three_lines_of_forward_auth() {
    let b = block("caddy-forward-auth");
    let lines: Vec<&str> = b.lines().map(str::trim).collect();
    assert_eq!(lines.len(), 4, "{b}");
    assert_eq!(lines[0], "forward_auth 127.0.0.1:8402 {");
    assert_eq!(lines[1], "uri /v1/authorize");
    assert!(lines[2].starts_with("copy_headers X-Settlement-Payer"));
    assert_eq!(lines[3], "}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_readme_mpp_client_request_pays_through_the_readme_caddy_block() {
    let command = block("mpp-client-request");
    for (what, written) in [("the front", "127.0.0.1:8080"), ("the chain", "127.0.0.1:8545")] {
        assert!(
            command.contains(written),
            "the README's request names {what} at {written}"
        );
    }
    let chain = Chain::start();
    let w = Workdir::new();
    let app = Served::start(&chain_env(&w.genome(&Genome::single().signed()), &chain.url));
    let caddy = Caddy::start(app.addr);

    let chain_port = chain.url.rsplit(':').next().unwrap().trim_end_matches('/');
    let command = command
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{}", caddy.port))
        .replace("127.0.0.1:8545", &format!("127.0.0.1:{chain_port}"));
    let home = tempfile::tempdir().unwrap();
    let out = tokio::task::block_in_place(|| {
        Command::new("bash")
            .args(["-euo", "pipefail", "-c", &command])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            // mppx keeps accounts and caches under HOME and XDG dirs
            .env("HOME", home.path())
            .env("XDG_CONFIG_HOME", home.path().join("config"))
            .env("XDG_CACHE_HOME", home.path().join("cache"))
            .output()
            .unwrap()
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the README's request failed:\n{stdout}\n{stderr}");

    // The last response it printed is the API's 200 with the receipt.
    let last = &stdout[stdout.rfind("HTTP/1.1 ").expect("mppx -i prints the status line")..];
    assert!(last.starts_with("HTTP/1.1 200"), "{stdout}\n{stderr}");
    let receipt = last
        .lines()
        .find_map(|l| l.strip_prefix("payment-receipt: "))
        .unwrap_or_else(|| panic!("no Payment-Receipt on the 200: {last}"));
    let receipt: Value = serde_json::from_slice(&B64.decode(receipt.trim()).unwrap()).unwrap();
    assert_eq!(receipt["status"], "success");
    let tx = receipt["reference"].as_str().unwrap();

    // Paid on chain by the payer, broadcast once (by the gate: pull mode),
    // and served once by the API with the settlement.
    let r: Value = serde_json::from_str(&chain.rpc("eth_getTransactionReceipt", &[tx])).unwrap();
    assert_eq!(r["status"], "0x1", "{r}");
    assert_eq!(r["from"].as_str().unwrap().to_lowercase(), PAYER);
    assert_eq!(chain.calls("eth_sendRawTransactionSync"), 1, "{:?}", chain.all_calls());
    let served = caddy.upstream_requests();
    assert_eq!(served.len(), 1, "{served:?}");
}

/// The configuration keys the code accepts, asked of the binary itself: an
/// unknown key is refused with the list of the keys expected there.
fn expected_keys(var: &str) -> Vec<String> {
    let env: std::collections::HashMap<String, String> = [(var.to_owned(), "1".to_owned())].into();
    let out = command(&["serve"], &env).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    // serde says "expected `a`" for one field, "expected `a` or `b`" for
    // two, "expected one of `a`, `b`, `c`" for more
    let list = stderr
        .split_once("expected one of ")
        .or_else(|| stderr.split_once("expected "))
        .unwrap_or_else(|| panic!("{var}: no list of keys in {stderr}"))
        .1;
    let list = list.split(" for key").next().unwrap();
    list.split(", ")
        .flat_map(|k| k.split(" or "))
        .map(|k| k.trim().trim_matches('`').to_owned())
        .collect()
}

/// Every configuration key in the code has its row in the README's
/// reference, with its environment variable, and the README lists no key
/// the code does not have.
#[test]
fn the_readme_configuration_reference_lists_every_key_of_the_code() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let mut code = Vec::new();
    for section in expected_keys("SETTLEGATE_ZZPROBE") {
        for key in expected_keys(&format!("SETTLEGATE_{}__ZZPROBE", section.to_uppercase())) {
            code.push((format!("{section}.{key}"), section.clone(), key));
        }
    }
    assert!(code.len() >= 30, "{code:?}");
    let mut missing = Vec::new();
    for (dotted, section, key) in &code {
        let var = format!("SETTLEGATE_{}__{}", section.to_uppercase(), key.to_uppercase());
        let row = readme.lines().find(|l| l.starts_with(&format!("| `{dotted}` |")));
        match row {
            Some(row) if row.contains(&var) => {}
            Some(row) => missing.push(format!("{dotted}: the row does not name {var}: {row}")),
            None => missing.push(format!("{dotted}: no row")),
        }
    }
    // The reference is the Configuration section's table (other tables
    // name files, codes and metrics).
    let reference = section("## Configuration");
    let documented: Vec<&str> = reference
        .lines()
        .filter_map(|l| l.strip_prefix("| `")?.split_once("` |").map(|(k, _)| k))
        .filter(|k| k.contains('.') && k.chars().all(|c| c.is_ascii_lowercase() || c == '_' || c == '.'))
        .collect();
    for k in &documented {
        if !code.iter().any(|(d, _, _)| d == k) {
            missing.push(format!("{k}: in the README, not in the code"));
        }
    }
    assert!(
        missing.is_empty(),
        "README configuration reference:\n{}",
        missing.join("\n")
    );
}

/// The text of the README section that starts with `heading` (up to the
/// next heading of the same or a higher level).
fn section(heading: &str) -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("README has no {heading:?}"));
    let level = heading.split(' ').next().unwrap();
    let rest = &readme[start + heading.len() + 2..];
    let end = rest
        .match_indices("\n#")
        .find(|(i, _)| {
            let hashes = rest[i + 1..].chars().take_while(|c| *c == '#').count();
            hashes <= level.len()
        })
        .map_or(rest.len(), |(i, _)| i);
    rest[..end].to_owned()
}

/// The table rows of a README section, by their first cell.
fn rows(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("|---"))
        .map(|l| l.split(" | ").next().unwrap().trim_start_matches("| ").to_owned())
        .collect()
}

#[test]
fn the_troubleshooting_section_explains_every_code_the_service_can_give() {
    // Boot: every GenomeError code of the code (rules/src/error.rs) and CONFIG_INVALID.
    let errors = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/rules/src/error.rs")).unwrap();
    let mut boot: Vec<String> = errors
        .split('"')
        .filter(|s| s.starts_with("GENOME_") && s.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'))
        .map(|s| format!("`{s}`"))
        .collect();
    assert_eq!(boot.len(), 13, "genome codes in rules/src/error.rs: {boot:?}");
    boot.push("`CONFIG_INVALID`".into());
    let documented = rows(&section("### Boot"));
    for code in &boot {
        assert!(
            documented.contains(code),
            "Troubleshooting > Boot has no row for {code}"
        );
    }

    // 402 and 503 codes and every reason, from the OpenAPI document (whose
    // enums a unit test keeps equal to the code).
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json")).unwrap())
            .unwrap();
    let values = |name: &str| -> Vec<String> {
        doc["components"]["schemas"][name]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    };
    let denied = section("### 402: not paid (nothing was consumed)");
    let unavailable = rows(&section(
        "### 503: no trustworthy answer now (nothing consumed, but for two logged cases)",
    ));
    for code in values("PaymentCode") {
        let cell = format!("`{code}`");
        let found = if code.ends_with("_UNAVAILABLE") {
            unavailable.contains(&cell)
        } else {
            rows(&denied)
                .iter()
                .any(|r| r == &cell || r.starts_with(&format!("{cell},")))
        };
        assert!(found, "Troubleshooting has no row for {code}");
    }
    for reason in values("Reason") {
        let documented = rows(&denied)
            .iter()
            .any(|r| r.ends_with(&format!("`{reason}`")) || r == &format!("`{reason}`"))
            || denied.contains(&format!("`reason` `{reason}`"));
        assert!(documented, "Troubleshooting > 402 does not explain reason {reason}");
    }
    let other = section("### Other errors");
    for code in values("ErrorCode") {
        assert!(
            other.contains(&format!("`{code}`")),
            "Troubleshooting > Other errors lacks {code}"
        );
    }
}
