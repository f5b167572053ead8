//! `settlegate genome …`: the seed's production walk-through (keygen → init →
//! sign → verify → serve) as subcommands. Failures print one line
//! `settlegate: <CODE>: <detail>` on stderr and exit 1.
//!
//! Key hygiene: the private key is never printed on stdout and never
//! logged; key files are created with mode 0600 and never overwritten.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};
use settlegate_actors::GenomeSource;
use settlegate_rules::GenomeError;
use settlegate_rules::authoring::{GenomeDraft, sign_document};
use settlegate_rules::genome::{ParsedGenome, SignatureVerdict, TrustRoot, fmt_time};
use settlegate_rules::keys::{PrivateKey, PublicKey};
use settlegate_rules::primitives::parse_address;
use settlegate_rules::seed::{ALPHA_USD, SeedVars};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::{GenomeCommand, InitArgs, InspectArgs, KeygenArgs, SignArgs, VerifyArgs};
use crate::settings::{Settings, read_keys_file};

/// The environment variable Mathison's `genome-sign` reads.
pub const SIGNING_KEY_VAR: &str = "GENOME_SIGNING_PRIVATE_KEY";

/// A CLI failure: a stable code and a human sentence.
struct Failure(&'static str, String);

impl From<GenomeError> for Failure {
    fn from(e: GenomeError) -> Self {
        Failure(e.code(), e.to_string())
    }
}

fn usage(m: impl std::fmt::Display) -> Failure {
    Failure("USAGE", m.to_string())
}

fn io(path: &Path, e: std::io::Error) -> Failure {
    Failure("IO_ERROR", format!("{}: {e}", path.display()))
}

pub fn run(cmd: GenomeCommand) -> i32 {
    let result = match cmd {
        GenomeCommand::Keygen(a) => keygen(a),
        GenomeCommand::Init(a) => init(a),
        GenomeCommand::Sign(a) => sign(a),
        GenomeCommand::Verify(a) => verify(a),
        GenomeCommand::Inspect(a) => inspect(a),
    };
    match result {
        Ok(()) => 0,
        Err(Failure(code, detail)) => {
            eprintln!("settlegate: {code}: {detail}");
            1
        }
    }
}

fn keygen(a: KeygenArgs) -> Result<(), Failure> {
    check_key_id(&a.key_id)?;
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| Failure("RNG_UNAVAILABLE", e.to_string()))?;
    let key = PrivateKey::from_seed(seed);
    seed.fill(0);
    let secret = Zeroizing::new(key.to_pkcs8_base64());
    match &a.private_key_out {
        Some(path) => {
            // create_new: an existing key file is never replaced.
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| io(path, e))?;
            f.write_all(format!("{}\n", *secret).as_bytes())
                .map_err(|e| io(path, e))?;
            f.sync_all().map_err(|e| io(path, e))?;
        }
        // Mathison's keygen writes the secret to stderr (`2> secret.txt`).
        None => eprintln!("{}", *secret),
    }
    let public = json!({ "key_id": a.key_id, "alg": "ed25519", "public_key": key.public_key().to_spki_base64() });
    println!("{}", serde_json::to_string_pretty(&public).expect("json"));
    Ok(())
}

fn check_key_id(id: &str) -> Result<(), Failure> {
    if id.is_empty() || id.len() > 128 || id.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(usage("a key id is 1 to 128 characters without spaces"));
    }
    Ok(())
}

fn init(a: InitArgs) -> Result<(), Failure> {
    let seed =
        SeedVars::from_lookup(|k| std::env::var(k).ok()).map_err(|e| Failure("CONFIG_INVALID", e.to_string()))?;
    let mut signers: Vec<(String, PublicKey)> = Vec::new();
    for path in &a.signers {
        let text = std::fs::read_to_string(path).map_err(|e| io(path, e))?;
        #[derive(serde::Deserialize)]
        struct KeyJson {
            key_id: String,
            public_key: String,
        }
        let k: KeyJson = serde_json::from_str(&text)
            .map_err(|e| usage(format!("{}: not the JSON of `genome keygen`: {e}", path.display())))?;
        check_key_id(&k.key_id)?;
        let key = PublicKey::from_spki_base64(&k.public_key)
            .map_err(|e| usage(format!("{}: public_key: {e}", path.display())))?;
        signers.push((k.key_id, key));
    }
    let recipient = match &a.recipient {
        Some(r) => parse_address(r).map_err(usage)?,
        None => seed
            .recipient
            .ok_or_else(|| usage("a recipient is required: --recipient or TEMPO_RECIPIENT"))?,
    };
    let amount = match &a.amount {
        Some(v) => v.parse().map_err(usage)?,
        None => seed
            .amount
            .ok_or_else(|| usage("a price is required: --amount or TEMPO_AMOUNT (atomic units)"))?,
    };
    let asset = match &a.token {
        Some(t) => parse_address(t).map_err(usage)?,
        // unwrap: a constant, valid address.
        None => seed.token.unwrap_or_else(|| parse_address(ALPHA_USD).unwrap()),
    };
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).expect("0 ns is valid");
    let expires_at = match (&a.expires_at, a.valid_for_days) {
        (Some(t), _) => Some(t.clone()),
        (None, Some(days)) => Some(fmt_time(now + time::Duration::days(days.into()))),
        (None, None) => None,
    };
    let draft = GenomeDraft {
        name: a.name,
        version: a.version,
        created_at: fmt_time(now),
        not_before: a.not_before,
        expires_at,
        signers,
        threshold: a.threshold,
        chain_id: a.chain_id,
        realm: a.realm,
        recipient,
        asset,
        amount,
        max_age_seconds: a.max_age_seconds.unwrap_or(seed.max_age_or_default()),
    };
    let doc = draft.build();
    // Refuse to write a genome that could never verify (bad version, threshold…).
    let text = pretty(&doc);
    let parsed = ParsedGenome::parse(text.as_bytes())?;
    settlegate_rules::policy::SettlementPolicy::from_value(parsed.document().get("settlement"))?;
    write_output(a.out.as_deref(), &text, a.force, None)
}

fn sign(a: SignArgs) -> Result<(), Failure> {
    let input = std::fs::read(&a.input).map_err(|e| io(&a.input, e))?;
    let encoded = match &a.key_file {
        Some(path) => Zeroizing::new(std::fs::read_to_string(path).map_err(|e| io(path, e))?),
        None => Zeroizing::new(
            std::env::var(SIGNING_KEY_VAR)
                .map_err(|_| usage(format!("no private key: pass --key-file or set {SIGNING_KEY_VAR}")))?,
        ),
    };
    let key = PrivateKey::from_pkcs8_base64(&encoded)
        .map_err(|e| Failure("KEY_INVALID", format!("the private key is {e}")))?;
    drop(encoded);
    let parsed = ParsedGenome::parse(&input)?;
    let key_id = match a.key_id.or(a.key_id_positional) {
        Some(id) => id,
        None => parsed
            .key_id_of(&key.public_key())
            .ok_or_else(|| usage("the private key matches no key in authority.signers"))?
            .to_owned(),
    };
    let signed = sign_document(&input, &key_id, &key)?;
    let output = if a.in_place {
        Some(a.input.as_path())
    } else {
        a.output.as_deref()
    };
    write_output(
        output,
        &pretty(&signed),
        a.force || a.in_place,
        (!a.in_place).then_some(a.input.as_path()),
    )?;
    if let Some(out) = output {
        eprintln!("signed {} as {key_id:?} -> {}", a.input.display(), out.display());
    }
    Ok(())
}

fn verify(a: VerifyArgs) -> Result<(), Failure> {
    // The record floor is the service's setting: checked when the
    // settings are read, not with keys given on the command line.
    let (trust, record_floor) = if !a.trusted_keys.is_empty() || a.trusted_keys_file.is_some() {
        let mut keys = a
            .trusted_keys
            .iter()
            .map(|k| {
                PublicKey::from_spki_base64(k).map_err(|e| Failure("CONFIG_INVALID", format!("--trusted-key: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(f) = &a.trusted_keys_file {
            keys.extend(read_keys_file(f).map_err(|e| Failure("CONFIG_INVALID", e.to_string()))?);
        }
        (TrustRoot::new(keys, a.min_threshold), None)
    } else {
        let s = Settings::load(a.config.as_deref()).map_err(|e| Failure("CONFIG_INVALID", e.to_string()))?;
        (
            TrustRoot::new(s.trusted_keys, s.min_threshold),
            Some(s.replay_min_record_ttl),
        )
    };
    let seed =
        SeedVars::from_lookup(|k| std::env::var(k).ok()).map_err(|e| Failure("CONFIG_INVALID", e.to_string()))?;
    let source = GenomeSource {
        manifest_root: a.manifest_root.clone().unwrap_or_else(|| parent_dir(&a.path)),
        path: a.path.clone(),
        trust: trust.clone(),
        seed,
        record_floor,
    };

    // Per-signer verdicts first (when the file parses), then the decision
    // that `serve` would make.
    if let Ok(bytes) = std::fs::read(&a.path)
        && let Ok(parsed) = ParsedGenome::parse(&bytes)
    {
        println!("genome_id: {}", parsed.id());
        println!("name: {}  version: {}", parsed.name(), parsed.version());
        for c in parsed.check_signatures(&trust) {
            let verdict = match c.verdict {
                SignatureVerdict::Valid { pinned: true } => "valid, pinned".to_owned(),
                SignatureVerdict::Valid { pinned: false } => "valid, NOT pinned (does not count)".to_owned(),
                SignatureVerdict::Invalid(why) => format!("INVALID ({why})"),
                SignatureVerdict::UnknownKeyId => "INVALID (key id not in authority.signers)".to_owned(),
            };
            println!("signature {:?}: {verdict}", c.key_id);
        }
    }
    match source.load(OffsetDateTime::now_utc()) {
        Ok(g) => {
            println!(
                "VALID: signed by {:?}, {} of {} required distinct pinned keys",
                g.signer_key_ids,
                g.signer_key_ids.len(),
                g.threshold
            );
            Ok(())
        }
        Err(e) => {
            println!("INVALID: {}: {e}", e.code());
            Err(e.into())
        }
    }
}

fn inspect(a: InspectArgs) -> Result<(), Failure> {
    let bytes = std::fs::read(&a.path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => GenomeError::Missing(format!("no genome file at {}", a.path.display())).into(),
        _ => io(&a.path, e),
    })?;
    let parsed = ParsedGenome::parse(&bytes)?;
    let doc = parsed.document();
    let field = |k: &str| doc.get(k).cloned().unwrap_or(Value::Null);
    let summary = json!({
        "verified": false,
        "note": "inspect does not check signatures or trust; use `genome verify`",
        "genome_id": parsed.id(),
        "schema_version": field("schema_version"),
        "name": parsed.name(),
        "version": parsed.version().to_string(),
        "parents": field("parents"),
        "created_at": field("created_at"),
        "not_before": field("not_before"),
        "expires_at": field("expires_at"),
        "authority": {
            "threshold": parsed.authority_threshold(),
            "signers": parsed.signers().iter().map(|(id, k)| json!({"key_id": id, "public_key": k.to_spki_base64()})).collect::<Vec<_>>(),
        },
        "signed_by": parsed.signature_entries().iter().map(|s| s.signer_key_id.clone()).collect::<Vec<_>>(),
        "capabilities": field("capabilities"),
        "build_manifest": field("build_manifest"),
        "settlement": field("settlement"),
    });
    println!("{}", serde_json::to_string_pretty(&summary).expect("json"));
    Ok(())
}

fn pretty(doc: &Map<String, Value>) -> String {
    let mut s = serde_json::to_string_pretty(doc).expect("a JSON map serialises");
    s.push('\n');
    s
}

fn parent_dir(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Writes `text` to `out`, or stdout when `None`. Never replaces `protect`
/// (the input of `sign`), and replaces another existing file only with
/// `force`. The write goes to a temporary file that is renamed into place,
/// so a crash never leaves a half-written genome.
fn write_output(out: Option<&Path>, text: &str, force: bool, protect: Option<&Path>) -> Result<(), Failure> {
    let Some(out) = out else {
        print!("{text}");
        return Ok(());
    };
    if let Some(input) = protect
        && same_file(input, out)
    {
        return Err(usage(format!(
            "refusing to overwrite the input {}; use --in-place to sign it in place",
            input.display()
        )));
    }
    if out.exists() && !force {
        return Err(usage(format!("{} exists; pass --force to replace it", out.display())));
    }
    let dir = parent_dir(out);
    let name = out
        .file_name()
        .ok_or_else(|| usage("the output path has no file name"))?;
    let tmp = dir.join(format!(".{}.{}.tmp", name.to_string_lossy(), std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).mode(0o644).open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, out)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(out, e));
    }
    Ok(())
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}
