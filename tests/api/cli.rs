//! The genome tooling, and the README's production walk-through run as
//! written.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::helpers::*;

fn run(args: &[&str], env: &[(&str, &str)], dir: &std::path::Path) -> (i32, String, String) {
    let env: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let out = command(args, &env).current_dir(dir).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn keygen_writes_the_private_key_to_a_new_0600_file_and_never_to_stdout() {
    let w = Workdir::new();
    let (code, stdout, _) = run(
        &["genome", "keygen", "ops-key-1", "--private-key-out", "k.secret"],
        &[],
        w.dir.path(),
    );
    assert_eq!(code, 0);
    let secret = std::fs::read_to_string(w.path("k.secret")).unwrap();
    assert_eq!(
        std::fs::metadata(w.path("k.secret")).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(!stdout.contains(secret.trim()));
    let public: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(public["key_id"], "ops-key-1");
    assert_eq!(public["alg"], "ed25519");
    assert!(public["public_key"].as_str().unwrap().starts_with("MCowBQYDK2VwAyEA"));

    // never overwrites an existing key file
    let (code, _, stderr) = run(
        &["genome", "keygen", "ops-key-2", "--private-key-out", "k.secret"],
        &[],
        w.dir.path(),
    );
    assert_ne!(code, 0, "{stderr}");
    assert_eq!(std::fs::read_to_string(w.path("k.secret")).unwrap(), secret);

    // without a file, the private key goes to stderr, Mathison style
    let (code, stdout, stderr) = run(&["genome", "keygen", "ops-key-3"], &[], w.dir.path());
    assert_eq!(code, 0);
    assert!(
        stderr.trim().starts_with("MC4CAQAwBQYDK2VwBCIEI"),
        "PKCS#8 base64 on stderr"
    );
    assert!(!stdout.contains(stderr.trim()));
}

#[test]
fn sign_never_overwrites_its_input_unless_asked() {
    let w = Workdir::new();
    let input = w.path("unsigned.json");
    Genome::single().write(&input);
    let before = std::fs::read(&input).unwrap();
    let key = test_key(1).to_pkcs8_base64();
    let env = [("GENOME_SIGNING_PRIVATE_KEY", key.as_str())];

    let (code, _, stderr) = run(
        &["genome", "sign", "unsigned.json", "unsigned.json"],
        &env,
        w.dir.path(),
    );
    assert_ne!(code, 0);
    assert!(stderr.contains("--in-place"), "{stderr}");
    assert_eq!(std::fs::read(&input).unwrap(), before);
    let (code, _, _) = run(
        &["genome", "sign", "unsigned.json", "./././unsigned.json"],
        &env,
        w.dir.path(),
    );
    assert_ne!(code, 0);
    assert_eq!(std::fs::read(&input).unwrap(), before);

    // to stdout by default
    let (code, stdout, _) = run(&["genome", "sign", "unsigned.json"], &env, w.dir.path());
    assert_eq!(code, 0);
    assert!(serde_json::from_str::<Value>(&stdout).unwrap()["signature"]["signer_key_id"] == "test-key-1");
    assert_eq!(std::fs::read(&input).unwrap(), before);

    // an existing other output needs --force
    std::fs::write(w.path("out.json"), "keep").unwrap();
    let (code, _, _) = run(&["genome", "sign", "unsigned.json", "out.json"], &env, w.dir.path());
    assert_ne!(code, 0);
    assert_eq!(std::fs::read_to_string(w.path("out.json")).unwrap(), "keep");
    let (code, _, _) = run(
        &["genome", "sign", "unsigned.json", "out.json", "--force"],
        &env,
        w.dir.path(),
    );
    assert_eq!(code, 0);

    // --in-place is the explicit way
    let (code, _, _) = run(&["genome", "sign", "unsigned.json", "--in-place"], &env, w.dir.path());
    assert_eq!(code, 0);
    assert_eq!(
        std::fs::read(&input).unwrap(),
        std::fs::read(w.path("out.json")).unwrap()
    );
}

#[test]
fn sign_refuses_a_key_that_is_not_the_listed_one_and_hides_the_key() {
    let w = Workdir::new();
    Genome::single().write(&w.path("g.json"));
    let wrong = test_key(7).to_pkcs8_base64();
    let (code, stdout, stderr) = run(
        &["genome", "sign", "g.json", "--key-id", "test-key-1"],
        &[("GENOME_SIGNING_PRIVATE_KEY", &wrong)],
        w.dir.path(),
    );
    assert_ne!(code, 0);
    assert!(!stdout.contains(&wrong) && !stderr.contains(&wrong));
    let (code, _, stderr) = run(&["genome", "sign", "g.json"], &[], w.dir.path());
    assert_ne!(code, 0);
    assert!(stderr.contains("GENOME_SIGNING_PRIVATE_KEY"), "{stderr}");
}

#[test]
fn verify_prints_each_signer_and_its_exit_status_says_valid_or_not() {
    let w = Workdir::new();
    let g = Genome::new(&[("a", 1), ("b", 2)], 1).signed_by(&[("a", 1), ("b", 2)]);
    g.write(&w.path("g.json"));
    let pinned = spki(1);
    let (code, stdout, _) = run(
        &["genome", "verify", "g.json", "--trusted-key", &pinned],
        &[],
        w.dir.path(),
    );
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains(&format!("genome_id: {}", g.id())));
    assert!(stdout.contains("signature \"a\": valid, pinned"));
    assert!(stdout.contains("signature \"b\": valid, NOT pinned"));
    assert!(stdout.contains("VALID"));

    let text = String::from_utf8(g.bytes())
        .unwrap()
        .replacen("Tempo API", "Tempo APl", 1);
    std::fs::write(w.path("bad.json"), text).unwrap();
    let (code, stdout, stderr) = run(
        &["genome", "verify", "bad.json"],
        &[("SETTLEGATE_TRUST__KEYS", &pinned)],
        w.dir.path(),
    );
    assert_eq!(code, 1);
    assert!(stdout.contains("INVALID"));
    assert!(stderr.starts_with("settlegate: GENOME_SIGNATURE_INVALID: "), "{stderr}");

    // with no pinned key at all, verification cannot succeed
    let (code, _, stderr) = run(&["genome", "verify", "g.json"], &[], w.dir.path());
    assert_eq!(code, 1);
    assert!(stderr.contains("CONFIG_INVALID"), "{stderr}");
}

#[test]
fn inspect_shows_a_genome_without_trusting_it() {
    let w = Workdir::new();
    let g = Genome::new(&[("evil", 9)], 1).signed_by(&[("evil", 9)]);
    g.write(&w.path("g.json"));
    let (code, stdout, _) = run(&["genome", "inspect", "g.json"], &[], w.dir.path());
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["verified"], false);
    assert_eq!(v["genome_id"], g.id());
    assert_eq!(v["signed_by"][0], "evil");
    assert_eq!(v["settlement"]["recipient"], RECIPIENT);
    let (code, _, stderr) = run(&["genome", "inspect", "missing.json"], &[], w.dir.path());
    assert_eq!(code, 1);
    assert!(stderr.starts_with("settlegate: GENOME_MISSING"), "{stderr}");
}

#[test]
fn init_reads_the_seed_variables_and_rejects_bad_ones() {
    let w = Workdir::new();
    let (_, key_json, _) = run(
        &["genome", "keygen", "k", "--private-key-out", "k.secret"],
        &[],
        w.dir.path(),
    );
    std::fs::write(w.path("k.json"), key_json).unwrap();
    let seed = [
        ("TEMPO_RECIPIENT", "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"),
        ("TEMPO_AMOUNT", "2500000"),
        ("TEMPO_ALLOWED_AGE_SECONDS", "120"),
    ];
    let (code, stdout, stderr) = run(&["genome", "init", "--signer", "k.json"], &seed, w.dir.path());
    assert_eq!(code, 0, "{stderr}");
    let g: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(g["settlement"]["recipient"], RECIPIENT);
    assert_eq!(g["settlement"]["default_price"]["amount"], "2500000");
    assert_eq!(g["settlement"]["default_price"]["asset"], ALPHA_USD);
    assert_eq!(g["settlement"]["max_age_seconds"], 120);
    assert!(g.get("signature").is_none());

    // the seed ignores an age of 1 or less; so do we
    let (_, stdout, _) = run(
        &["genome", "init", "--signer", "k.json"],
        &[seed[0], seed[1], ("TEMPO_ALLOWED_AGE_SECONDS", "1")],
        w.dir.path(),
    );
    assert_eq!(
        serde_json::from_str::<Value>(&stdout).unwrap()["settlement"]["max_age_seconds"],
        300
    );

    for bad in [
        ("TEMPO_AMOUNT", "-5"),
        ("TEMPO_AMOUNT", "ten"),
        ("TEMPO_RECIPIENT", "0xnothex"),
    ] {
        let env = [seed[0], seed[1], bad];
        let (code, _, stderr) = run(&["genome", "init", "--signer", "k.json"], &env, w.dir.path());
        assert_ne!(code, 0, "{bad:?}");
        assert!(stderr.contains(bad.0), "{stderr}");
    }
    let (code, _, stderr) = run(&["genome", "init", "--signer", "k.json"], &[], w.dir.path());
    assert_ne!(code, 0);
    assert!(stderr.contains("TEMPO_RECIPIENT"), "{stderr}");
}

/// The README's walk-through, extracted between its markers and run by bash
/// exactly as a reader would paste it, ending in a running server.
#[test]
fn the_readme_production_walkthrough_runs_as_written() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find("<!-- walkthrough:begin -->")
        .expect("README has the walkthrough markers");
    let end = readme.find("<!-- walkthrough:end -->").unwrap();
    let block = &readme[start..end];
    let script = block.split("```bash").nth(1).unwrap().split("```").next().unwrap();
    assert!(script.contains("settlegate serve"));

    let w = Workdir::new();
    let bin_dir = std::path::Path::new(BIN).parent().unwrap();
    let mut child = Command::new("bash")
        .args(["-euo", "pipefail", "-c", script])
        .current_dir(w.dir.path())
        .env_clear()
        .env(
            "PATH",
            format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap()),
        )
        .env("HOME", w.dir.path())
        .env("SETTLEGATE_SERVER__LISTEN", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let pgid = child.id();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line)
                && v["message"] == "listening"
            {
                let _ = tx.send(v["address"].as_str().unwrap().to_owned());
            }
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(30));
    let kill = || send_signal(-(pgid as i32), libc::SIGTERM);
    let Ok(addr) = addr else {
        kill();
        let out = child.wait_with_output().unwrap();
        panic!(
            "walkthrough did not reach a listening server: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let body = get_json_blocking(&format!("http://{addr}/v1/genome"));
    kill();
    child.wait().unwrap();
    assert_eq!(body["signer_key_ids"][0], "production-key-001");
    assert_eq!(body["state"], "active");
    assert!(
        !w.path("production-key-001.secret").exists(),
        "the walkthrough deletes the private key file"
    );
}

/// A blocking GET for a sync test (the async client needs a runtime).
fn get_json_blocking(url: &str) -> Value {
    ensure_tls();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async { reqwest::get(url).await.unwrap().json().await.unwrap() })
}

/// Every command's help says what it is for and shows an example; the
/// genome example runs as written (with a real recipient for `0x…`).
#[test]
fn every_help_has_an_example_and_the_genome_example_runs_as_written() {
    let w = Workdir::new();
    let help = |args: &[&str]| {
        let mut args = args.to_vec();
        args.push("--help");
        let (code, stdout, stderr) = run(&args, &[], w.dir.path());
        assert_eq!(code, 0, "{args:?}: {stderr}");
        stdout
    };
    for args in [
        &[][..],
        &["serve"],
        &["genome"],
        &["genome", "keygen"],
        &["genome", "init"],
        &["genome", "sign"],
        &["genome", "verify"],
        &["genome", "inspect"],
        &["ledger"],
        &["ledger", "webhooks"],
        &["ledger", "webhooks", "requeue"],
    ] {
        let text = help(args);
        assert!(text.contains("Example"), "{args:?} --help has no example:\n{text}");
        let named = format!("settlegate {}", args.join(" "));
        assert!(
            text.contains(named.trim()),
            "{args:?}: the example does not use the command:\n{text}"
        );
    }
    let text = help(&["genome"]);
    let steps: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("settlegate genome"))
        .collect();
    assert_eq!(steps.len(), 4, "{text}");
    for step in steps {
        let line = step.replace("0x…", "0x70997970c51812dc3a010c7d01b50e0d17dc79c8");
        let (line, stdout_to) = match line.split_once(" > ") {
            Some((l, file)) => (l.to_owned(), Some(file.trim().to_owned())),
            None => (line, None),
        };
        let args: Vec<&str> = line.split_whitespace().skip(1).collect();
        let (code, stdout, stderr) = run(&args, &[], w.dir.path());
        assert_eq!(code, 0, "{line}: {stderr}");
        if let Some(file) = stdout_to {
            std::fs::write(w.path(&file), stdout).unwrap();
        }
    }
}
