//! `[genome]` and `[trust]`: which genome file is served, and the pinned
//! keys (inline or from a key file) with the signatures it needs.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use settlegate_rules::keys::PublicKey;

use super::SettingsError;
use super::raw::{RawGenome, RawTrust};
use super::secrets::read_side_file;

const SECTION: &str = "trust";

#[derive(Debug)]
pub(super) struct Genome {
    pub path: Option<PathBuf>,
    pub reload_interval_seconds: u64,
    pub manifest_root: Option<PathBuf>,
    pub trusted_keys: Vec<PublicKey>,
    pub min_threshold: u32,
}

pub(super) fn validate(genome: RawGenome, trust: RawTrust) -> Result<Genome, SettingsError> {
    let fail = |m: String| Err(SettingsError::invalid(SECTION, m));
    let mut trusted_keys = Vec::new();
    for (i, k) in trust.keys.iter().enumerate().filter(|(_, k)| !k.trim().is_empty()) {
        trusted_keys.push(
            PublicKey::from_spki_base64(k)
                .map_err(|e| SettingsError::invalid(SECTION, format!("trust.keys[{i}]: {e}")))?,
        );
    }
    if let Some(path) = &trust.keys_file {
        trusted_keys.extend(read_keys_file(path)?);
    }
    if trusted_keys.is_empty() {
        return fail("no trusted keys: set trust.keys (SETTLEGATE_TRUST__KEYS) or trust.keys_file".into());
    }
    if trust.min_threshold == 0 {
        return fail("trust.min_threshold must be at least 1".into());
    }
    let distinct = settlegate_rules::genome::TrustRoot::new(trusted_keys.iter().copied(), 1)
        .keys()
        .len();
    if trust.min_threshold as usize > distinct {
        return fail(format!(
            "trust.min_threshold is {} but only {distinct} distinct keys are pinned",
            trust.min_threshold
        ));
    }
    Ok(Genome {
        path: genome.path.filter(|p| !p.as_os_str().is_empty()),
        reload_interval_seconds: genome.reload_interval_seconds,
        manifest_root: genome.manifest_root,
        trusted_keys,
        min_threshold: trust.min_threshold,
    })
}

/// Pinned keys from a file: the JSON `genome keygen` prints (one object or
/// an array), or one base64 SPKI key per line with `#` comments.
pub fn read_keys_file(path: &Path) -> Result<Vec<PublicKey>, SettingsError> {
    let text = read_side_file(path, "trust.keys_file")?;
    let bad = |what: String| SettingsError::invalid(SECTION, format!("trust.keys_file {}: {what}", path.display()));
    let trimmed = text.trim_start();
    let encoded: Vec<String> = if trimmed.starts_with('{') || trimmed.starts_with('[') {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Entry {
            Key { public_key: String },
            Plain(String),
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Doc {
            One(Entry),
            Many(Vec<Entry>),
        }
        let doc: Doc = serde_json::from_str(trimmed).map_err(|e| bad(format!("not a key list: {e}")))?;
        let entries = match doc {
            Doc::One(e) => vec![e],
            Doc::Many(v) => v,
        };
        entries
            .into_iter()
            .map(|e| match e {
                Entry::Key { public_key } => public_key,
                Entry::Plain(s) => s,
            })
            .collect()
    } else {
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_owned)
            .collect()
    };
    encoded
        .iter()
        .enumerate()
        .map(|(i, k)| PublicKey::from_spki_base64(k).map_err(|e| bad(format!("key {}: {e}", i + 1))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::testing::key;
    use super::*;

    #[test]
    fn keys_files_take_lines_or_keygen_json() {
        let dir = tempfile::tempdir().unwrap();
        let lines = dir.path().join("keys");
        std::fs::write(&lines, format!("# ops team\n{}\n\n{}\n", key(1), key(2))).unwrap();
        assert_eq!(read_keys_file(&lines).unwrap().len(), 2);
        let json = dir.path().join("key.json");
        std::fs::write(
            &json,
            format!(r#"{{"key_id":"a","alg":"ed25519","public_key":"{}"}}"#, key(3)),
        )
        .unwrap();
        assert_eq!(read_keys_file(&json).unwrap().len(), 1);
        std::fs::write(
            &json,
            format!(r#"[{{"key_id":"a","public_key":"{}"}},"{}"]"#, key(3), key(4)),
        )
        .unwrap();
        assert_eq!(read_keys_file(&json).unwrap().len(), 2);
        std::fs::write(&json, "[{}]").unwrap();
        assert!(read_keys_file(&json).is_err());
    }
}
