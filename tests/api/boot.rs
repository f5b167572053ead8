//! Fail-closed boot: a verified genome boots; anything else stops the
//! process before a socket exists, with one stderr line naming the code.

use std::collections::HashMap;

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn a_genome_signed_by_the_pinned_key_boots_and_is_shown() {
    let w = Workdir::new();
    let g = Genome::single().signed();
    let app = Served::start(&serve_env(&w.genome(&g)));
    let (status, body) = app.get_json("/v1/genome").await;
    assert_eq!(status, 200);
    assert_eq!(body["genome_id"], g.id());
    assert_eq!(body["name"], "TEST_GENOME");
    assert_eq!(body["version"], "1.0.0");
    assert_eq!(body["signer_key_ids"], json!(["test-key-1"]));
    assert_eq!(body["state"], "active");
    assert_eq!(body["policy"]["recipient"], RECIPIENT);
    assert_eq!(body["policy"]["default_price"]["amount"], "1000000");
}

#[tokio::test]
async fn a_two_of_two_genome_boots_with_both_keys_pinned() {
    let w = Workdir::new();
    let g = Genome::new(&[("a", 1), ("b", 2)], 2).signed_by(&[("a", 1), ("b", 2)]);
    let mut env = serve_env(&w.genome(&g));
    env.insert("SETTLEGATE_TRUST__KEYS".into(), format!("{},{}", spki(1), spki(2)));
    let app = Served::start(&env);
    let (_, body) = app.get_json("/v1/genome").await;
    assert_eq!(body["signer_key_ids"], json!(["a", "b"]));
    assert_eq!(body["threshold"], 2);
}

#[tokio::test]
async fn a_seed_variable_that_agrees_with_the_genome_does_not_block_the_boot() {
    let w = Workdir::new();
    let mut env = serve_env(&w.genome(&Genome::single().signed()));
    env.insert("TEMPO_AMOUNT".into(), "1000000".into());
    env.insert(
        "TEMPO_RECIPIENT".into(),
        "0x70997970C51812dc3A010C7d01b50e0d17dc79C8".into(),
    );
    env.insert("TEMPO_ALLOWED_AGE_SECONDS".into(), "300".into());
    let app = Served::start(&env);
    assert_eq!(
        app.get_json("/readyz").await.1["components"]["genome"]["state"],
        "verified"
    );
}

#[tokio::test]
async fn a_config_file_on_the_command_line_is_layered_between_defaults_and_environment() {
    let w = Workdir::new();
    let g = Genome::single().signed();
    let genome = w.genome(&g);
    let keys = w.path("trusted-keys");
    std::fs::write(&keys, format!("# pinned\n{}\n", spki(1))).unwrap();
    let file = w.path("settlegate.toml");
    std::fs::write(
        &file,
        format!(
            "[server]\nlisten = \"127.0.0.1:1\"\n[genome]\npath = \"{}\"\n[trust]\nkeys_file = \"{}\"\n[replay]\nlocal_path = \"{}\"\n",
            genome.display(),
            keys.display(),
            w.path("replay.redb").display()
        ),
    )
    .unwrap();
    // The file sets the genome and the keys; the environment overrides its
    // listen address (port 1 would need privileges).
    let env = HashMap::from([("SETTLEGATE_SERVER__LISTEN".to_string(), "127.0.0.1:0".to_string())]);
    let app = Served::start_args(&["serve", "--config", file.to_str().unwrap()], &env);
    assert_eq!(app.get_json("/v1/genome").await.1["genome_id"], g.id());
    // a config file that does not exist stops the boot
    let r = command(&["serve", "--config", "/nonexistent.toml"], &env)
        .output()
        .unwrap();
    assert_ne!(r.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&r.stderr).starts_with("settlegate: CONFIG_INVALID: "));
}

/// Builds the environment of a boot that must be refused.
type Setup = Box<dyn Fn(&Workdir) -> HashMap<String, String>>;
/// (expected code, how to break the boot)
type Case = (&'static str, Setup);

fn with_genome(g: Genome) -> Setup {
    Box::new(move |w| serve_env(&w.genome(&g)))
}

fn raw_genome(text: String) -> Setup {
    Box::new(move |w| {
        let p = w.path("genome.json");
        std::fs::write(&p, &text).unwrap();
        serve_env(&p)
    })
}

fn cases() -> Vec<Case> {
    let signed = String::from_utf8(Genome::single().signed().bytes()).unwrap();
    vec![
        ("GENOME_MISSING", Box::new(|w| serve_env(&w.path("nope.json")))),
        (
            "GENOME_MISSING",
            Box::new(|w| {
                let mut env = serve_env(&w.path("x"));
                env.remove("SETTLEGATE_GENOME__PATH");
                env
            }),
        ),
        ("GENOME_UNREADABLE", raw_genome("{\"schema_version\": ".into())),
        ("GENOME_UNREADABLE", Box::new(|w| serve_env(w.dir.path()))),
        (
            "GENOME_INVALID_SCHEMA",
            raw_genome(signed.replacen(
                "\"name\": \"TEST_GENOME\",",
                "\"name\": \"TEST_GENOME\", \"name\": \"OTHER\",",
                1,
            )),
        ),
        (
            "GENOME_INVALID_SCHEMA",
            raw_genome(signed.replacen("\"chain_id\": 42431", "\"chain_id\": 42431.5", 1)),
        ),
        ("GENOME_UNSIGNED", with_genome(Genome::single())),
        (
            "GENOME_UNTRUSTED_SIGNER",
            with_genome(Genome::new(&[("other", 2)], 1).signed_by(&[("other", 2)])),
        ),
        (
            "GENOME_SIGNATURE_INVALID",
            raw_genome(signed.replacen("\"amount\": \"1000000\"", "\"amount\": \"1000001\"", 1)),
        ),
        (
            "GENOME_THRESHOLD_NOT_MET",
            Box::new(|w| {
                let g = Genome::new(&[("a", 1), ("b", 2)], 1).signed_by(&[("a", 1)]);
                let mut env = serve_env(&w.genome(&g));
                env.insert("SETTLEGATE_TRUST__KEYS".into(), format!("{},{}", spki(1), spki(2)));
                env.insert("SETTLEGATE_TRUST__MIN_THRESHOLD".into(), "2".into());
                env
            }),
        ),
        (
            "GENOME_NOT_YET_VALID",
            with_genome(
                Genome::single()
                    .set("/not_before", json!("2099-01-01T00:00:00Z"))
                    .signed(),
            ),
        ),
        (
            "GENOME_EXPIRED",
            with_genome(
                Genome::single()
                    .set("/expires_at", json!("2020-01-01T00:00:00Z"))
                    .signed(),
            ),
        ),
        (
            "GENOME_POLICY_INVALID",
            with_genome(
                Genome::single()
                    .set("/settlement/default_price/amount", json!("0"))
                    .signed(),
            ),
        ),
        (
            "GENOME_POLICY_INVALID",
            with_genome(Genome::single().remove("settlement").signed()),
        ),
        (
            "GENOME_MANIFEST_MISMATCH",
            Box::new(|w| {
                std::fs::write(w.path("policy-notes.txt"), "tampered").unwrap();
                let g = Genome::single()
                    .set(
                        "/build_manifest/files",
                        json!([{"path": "policy-notes.txt", "sha256": "0".repeat(64)}]),
                    )
                    .signed();
                serve_env(&w.genome(&g))
            }),
        ),
        (
            "GENOME_POLICY_CONFLICT",
            Box::new(|w| {
                let mut env = serve_env(&w.genome(&Genome::single().signed()));
                env.insert("TEMPO_AMOUNT".into(), "5000000".into());
                env
            }),
        ),
        (
            "GENOME_POLICY_CONFLICT",
            Box::new(|w| {
                let mut env = serve_env(&w.genome(&Genome::single().signed()));
                env.insert(
                    "TEMPO_RECIPIENT".into(),
                    "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266".into(),
                );
                env
            }),
        ),
        (
            "CONFIG_INVALID",
            Box::new(|w| {
                let mut env = serve_env(&w.genome(&Genome::single().signed()));
                env.remove("SETTLEGATE_TRUST__KEYS");
                env
            }),
        ),
        (
            "CONFIG_INVALID",
            Box::new(|w| {
                let mut env = serve_env(&w.genome(&Genome::single().signed()));
                env.insert("SETTLEGATE_RPC__URLS".into(), "not-a-url".into());
                env
            }),
        ),
        (
            "CONFIG_INVALID",
            Box::new(|w| {
                let mut env = serve_env(&w.genome(&Genome::single().signed()));
                env.insert("TEMPO_AMOUNT".into(), "lots".into());
                env
            }),
        ),
    ]
}

#[test]
fn every_refusal_exits_non_zero_with_its_code_and_never_accepts_a_connection() {
    let mut failures = Vec::new();
    for (i, (code, setup)) in cases().into_iter().enumerate() {
        let w = Workdir::new();
        let r = run_refused(&setup(&w));
        let lines: Vec<&str> = r.stderr.lines().collect();
        let ok = r.code.is_some_and(|c| c != 0)
            && lines.len() == 1
            && lines[0].starts_with(&format!("settlegate: {code}: "))
            && r.accepted_connections == 0
            && r.attempts >= 1;
        if !ok {
            failures.push(format!(
                "case {i} ({code}): exit {:?}, {} accepted of {} attempts, stderr {:?}",
                r.code, r.accepted_connections, r.attempts, r.stderr
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// (expected code, how to break the boot, what the line says, what it
/// must not show)
type Refusal<'a> = (
    &'static str,
    Box<dyn Fn(&Workdir) -> HashMap<String, String> + 'a>,
    &'static str,
    Option<&'static str>,
);

/// The `Payment` scheme's boot rules: a weak challenge secret (inline, in
/// a file, or the previous one) and a realm the SDKs share or that breaks
/// the HMAC input stop the boot with the rule, never the secret.
#[test]
fn weak_payment_secrets_and_the_shared_default_realm_stop_the_boot() {
    let realm = |r: &str| Genome::single().set("/settlement/realm", json!(r)).signed();
    let secret = |w: &Workdir, key: &str, value: &str| {
        let mut env = serve_env(&w.genome(&Genome::single().signed()));
        env.insert(key.into(), value.into());
        if key.contains("PREVIOUS") {
            env.insert(
                "SETTLEGATE_PAYMENT__SECRET".into(),
                "a-strong-enough-secret-Kq81vXz0pLm3Nw7Rt".into(),
            );
            env.insert(
                "SETTLEGATE_PAYMENT__PREVIOUS_SECRET_UNTIL".into(),
                "2099-01-01T00:00:00Z".into(),
            );
        }
        env
    };
    let uniform = "Z".repeat(44);
    let repeating = "hunter2-".repeat(5);
    let cases: Vec<Refusal<'_>> = vec![
        (
            "CONFIG_INVALID",
            Box::new(|w| secret(w, "SETTLEGATE_PAYMENT__SECRET", &uniform)),
            "payment.secret has only 1 distinct byte values",
            Some("ZZZZ"),
        ),
        (
            "CONFIG_INVALID",
            Box::new(|w| secret(w, "SETTLEGATE_PAYMENT__SECRET", &repeating)),
            "payment.secret repeats a unit of 8 bytes",
            Some("hunter2"),
        ),
        (
            "CONFIG_INVALID",
            Box::new(|w| {
                let file = w.path("payment-secret");
                std::fs::write(&file, format!("{repeating}\n")).unwrap();
                secret(w, "SETTLEGATE_PAYMENT__SECRET_FILE", file.to_str().unwrap())
            }),
            "payment.secret repeats a unit of 8 bytes",
            Some("hunter2"),
        ),
        (
            "CONFIG_INVALID",
            Box::new(|w| secret(w, "SETTLEGATE_PAYMENT__PREVIOUS_SECRET", &repeating)),
            "payment.previous_secret repeats a unit of 8 bytes",
            Some("hunter2"),
        ),
        (
            "CONFIG_INVALID",
            Box::new(|w| secret(w, "SETTLEGATE_PAYMENT__SECRET", "my-server-secret")),
            "payment.secret must be at least 32 bytes, got 16",
            Some("my-server"),
        ),
        (
            "GENOME_POLICY_INVALID",
            Box::new(move |w| serve_env(&w.genome(&realm("MPP Payment")))),
            "settlement.realm must not be \"MPP Payment\"",
            None,
        ),
        (
            "GENOME_POLICY_INVALID",
            Box::new(move |w| serve_env(&w.genome(&realm("mpp payment")))),
            "the MPP SDKs' default realm",
            None,
        ),
        (
            "GENOME_POLICY_INVALID",
            Box::new(move |w| serve_env(&w.genome(&realm("api|tempo")))),
            "settlement.realm must not contain `|`",
            None,
        ),
    ];
    let mut failures = Vec::new();
    for (i, (code, setup, says, hidden)) in cases.into_iter().enumerate() {
        let w = Workdir::new();
        let r = run_refused(&setup(&w));
        let line = r.stderr.trim_end();
        let ok = r.code.is_some_and(|c| c != 0)
            && !line.contains('\n')
            && line.starts_with(&format!("settlegate: {code}: "))
            && line.contains(says)
            && hidden.is_none_or(|h| !line.contains(h))
            && r.accepted_connections == 0;
        if !ok {
            failures.push(format!(
                "case {i} ({code}, {says}): exit {:?}, stderr {:?}",
                r.code, r.stderr
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    // The nearest realms that are not the default still boot.
    let w = Workdir::new();
    let app = Served::start(&serve_env(&w.genome(&realm("MPP Payments API"))));
    drop(app);
}

#[test]
fn a_refused_boot_never_prints_a_configured_secret() {
    let w = Workdir::new();
    let mut env = serve_env(&w.path("missing.json"));
    env.insert(
        "SETTLEGATE_REDIS__URL".into(),
        "redis://:hunter2-secret@127.0.0.1:6379/0 bad".into(),
    );
    let r = run_refused(&env);
    assert_ne!(r.code, Some(0));
    assert!(!r.stderr.contains("hunter2"), "{}", r.stderr);
}
