//! The genome: Mathison's signed `genome.v0.1` envelope carrying our
//! `settlement` policy, and the checks that decide whether it may govern
//! money.
//!
//! Verification order, each step's failure has its own code:
//! strict parse → envelope schema → signatures against the *pinned* keys
//! (never the keys listed in the file) → validity window → settlement policy
//! → build manifest. Every signature present must verify, even when the
//! threshold is met without it: a bad signature means someone tampered with
//! something, and the operator must hear about it.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::canonical::{ParseError, canonical_bytes, parse_strict};
use crate::error::GenomeError;
use crate::keys::{PublicKey, decode_signature};
use crate::policy::SettlementPolicy;

pub const SCHEMA_VERSION: &str = "genome.v0.1";
/// A genome is a policy document, not a data set; anything bigger is refused
/// before parsing.
pub const MAX_GENOME_BYTES: usize = 1 << 20;

/// The service actions that `capabilities` governs (deny by default).
pub mod actions {
    pub const SETTLEMENT_VERIFY: &str = "settlement.verify";
    pub const SETTLEMENT_AUTHORIZE: &str = "settlement.authorize";
    pub const GENOME_READ: &str = "genome.read";
    pub const METRICS_READ: &str = "metrics.read";
    pub const ALL: [&str; 4] = [SETTLEMENT_VERIFY, SETTLEMENT_AUTHORIZE, GENOME_READ, METRICS_READ];
}

/// The keys this service trusts, from its configuration. Never from a genome.
#[derive(Clone, Debug)]
pub struct TrustRoot {
    keys: Vec<PublicKey>,
    min_threshold: u32,
}

impl TrustRoot {
    /// Distinct keys only: one key pinned twice is still one key.
    pub fn new(keys: impl IntoIterator<Item = PublicKey>, min_threshold: u32) -> Self {
        let mut distinct: Vec<PublicKey> = Vec::new();
        for k in keys {
            if !distinct.contains(&k) {
                distinct.push(k);
            }
        }
        TrustRoot {
            keys: distinct,
            min_threshold: min_threshold.max(1),
        }
    }

    pub fn is_pinned(&self, key: &PublicKey) -> bool {
        self.keys.contains(key)
    }

    pub fn keys(&self) -> &[PublicKey] {
        &self.keys
    }

    pub fn min_threshold(&self) -> u32 {
        self.min_threshold
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SignatureEntry {
    pub alg: String,
    pub signer_key_id: String,
    pub sig_base64: String,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Signer {
    pub key_id: String,
    pub alg: String,
    pub public_key: String,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Authority {
    pub signers: Vec<Signer>,
    pub threshold: u32,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Invariant {
    pub id: String,
    pub severity: String,
    pub testable_claim: String,
    pub enforcement_hook: String,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Capability {
    pub cap_id: String,
    pub risk_class: String,
    pub allow_actions: Vec<String>,
    pub deny_actions: Vec<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct ManifestFile {
    pub path: String,
    pub sha256: String,
}

#[derive(Clone, Debug, Deserialize)]
pub struct BuildManifest {
    pub files: Vec<ManifestFile>,
}

/// Mathison's envelope. Unknown top-level fields are accepted (and signed):
/// Mathison does the same, and that is how our `settlement` travels.
#[derive(Clone, Debug, Deserialize)]
struct Envelope {
    schema_version: String,
    name: String,
    version: String,
    parents: Vec<String>,
    created_at: String,
    authority: Authority,
    invariants: Vec<Invariant>,
    capabilities: Vec<Capability>,
    build_manifest: BuildManifest,
    #[serde(default)]
    not_before: Option<String>,
    #[serde(default)]
    expires_at: Option<String>,
    #[serde(default)]
    signature: Option<SignatureEntry>,
    #[serde(default)]
    signatures: Option<Vec<SignatureEntry>>,
}

/// What became of one signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SignatureVerdict {
    /// Verifies against the key listed for its key id; `pinned` says whether
    /// that key is one this service trusts.
    Valid { pinned: bool },
    /// Does not verify, or is not an Ed25519 signature.
    Invalid(String),
    /// Names a key id that `authority.signers` does not list.
    UnknownKeyId,
}

#[derive(Clone, Debug)]
pub struct SignatureCheck {
    pub key_id: String,
    pub verdict: SignatureVerdict,
}

/// A genome that is well-formed but not yet trusted.
#[derive(Clone, Debug)]
pub struct ParsedGenome {
    doc: Map<String, Value>,
    canonical: Vec<u8>,
    id: String,
    envelope: Envelope,
    version: semver::Version,
    validity: Validity,
    signers: Vec<(String, PublicKey)>,
}

impl ParsedGenome {
    /// Strict parse and envelope schema. No trust decision yet.
    pub fn parse(bytes: &[u8]) -> Result<Self, GenomeError> {
        if bytes.len() > MAX_GENOME_BYTES {
            return Err(GenomeError::Unreadable(format!(
                "the genome is {} bytes, more than the {MAX_GENOME_BYTES} allowed",
                bytes.len()
            )));
        }
        let doc = parse_strict(bytes).map_err(|e| match e {
            ParseError::Syntax(m) => GenomeError::Unreadable(m),
            other => GenomeError::InvalidSchema(other.to_string()),
        })?;
        let schema = GenomeError::InvalidSchema;
        let envelope: Envelope =
            serde_json::from_value(Value::Object(doc.clone())).map_err(|e| schema(format!("genome: {e}")))?;

        if envelope.schema_version != SCHEMA_VERSION {
            return Err(schema(format!(
                "schema_version is {:?}, expected {SCHEMA_VERSION:?}",
                envelope.schema_version
            )));
        }
        if envelope.name.trim().is_empty() || envelope.name.len() > 128 {
            return Err(schema("name must be 1 to 128 characters".into()));
        }
        let version = semver::Version::parse(&envelope.version)
            .map_err(|e| schema(format!("version {:?} is not semver: {e}", envelope.version)))?;
        for p in &envelope.parents {
            if !is_hex_digest(p) {
                return Err(schema(format!("parent {p:?} is not a genome id (64 hex digits)")));
            }
        }
        parse_time("created_at", &envelope.created_at)?;
        let not_before = envelope
            .not_before
            .as_deref()
            .map(|t| parse_time("not_before", t))
            .transpose()?;
        let expires_at = envelope
            .expires_at
            .as_deref()
            .map(|t| parse_time("expires_at", t))
            .transpose()?;
        if let (Some(nb), Some(exp)) = (not_before, expires_at)
            && nb >= exp
        {
            return Err(schema("not_before must be earlier than expires_at".into()));
        }

        let signers = check_authority(&envelope.authority)?;
        check_capabilities(&envelope.capabilities)?;
        for f in &envelope.build_manifest.files {
            if !is_safe_relative_path(&f.path) {
                return Err(schema(format!(
                    "build_manifest path {:?} must be relative, without ..",
                    f.path
                )));
            }
            if !is_hex_digest(&f.sha256.to_ascii_lowercase()) {
                return Err(schema(format!(
                    "build_manifest sha256 of {:?} is not 64 hex digits",
                    f.path
                )));
            }
        }
        let mut seen = HashSet::new();
        for s in signature_entries(&envelope) {
            if s.alg != "ed25519" {
                return Err(schema(format!(
                    "signature by {:?} has alg {:?}, expected \"ed25519\"",
                    s.signer_key_id, s.alg
                )));
            }
            if !seen.insert(&s.signer_key_id) {
                return Err(schema(format!("two signatures name key id {:?}", s.signer_key_id)));
            }
        }

        let canonical = canonical_bytes(&doc);
        let id = hex::encode(Sha256::digest(&canonical));
        Ok(ParsedGenome {
            doc,
            canonical,
            id,
            envelope,
            version,
            validity: Validity { not_before, expires_at },
            signers,
        })
    }

    /// Lower-case hex SHA-256 of the canonical bytes.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn canonical_bytes(&self) -> &[u8] {
        &self.canonical
    }

    pub fn name(&self) -> &str {
        &self.envelope.name
    }

    pub fn version(&self) -> &semver::Version {
        &self.version
    }

    pub fn document(&self) -> &Map<String, Value> {
        &self.doc
    }

    /// The public key that `authority.signers` lists for a key id.
    pub fn signer_key(&self, key_id: &str) -> Option<&PublicKey> {
        self.signers.iter().find(|(id, _)| id == key_id).map(|(_, k)| k)
    }

    /// The key id that `authority.signers` lists for a public key.
    pub fn key_id_of(&self, key: &PublicKey) -> Option<&str> {
        self.signers.iter().find(|(_, k)| k == key).map(|(id, _)| id.as_str())
    }

    /// `authority.signers` as (key id, key).
    pub fn signers(&self) -> &[(String, PublicKey)] {
        &self.signers
    }

    /// `authority.threshold` as written in the genome.
    pub fn authority_threshold(&self) -> u32 {
        self.envelope.authority.threshold
    }

    pub fn signature_entries(&self) -> Vec<&SignatureEntry> {
        signature_entries(&self.envelope)
    }

    /// Checks each signature over the canonical bytes, against the key its
    /// key id names in `authority`, and says whether that key is pinned.
    pub fn check_signatures(&self, trust: &TrustRoot) -> Vec<SignatureCheck> {
        self.signature_entries()
            .into_iter()
            .map(|s| {
                let verdict = match self.signer_key(&s.signer_key_id) {
                    None => SignatureVerdict::UnknownKeyId,
                    Some(key) => match decode_signature(&s.sig_base64) {
                        Err(e) => SignatureVerdict::Invalid(e.to_string()),
                        Ok(sig) if key.verify(&self.canonical, &sig) => SignatureVerdict::Valid {
                            pinned: trust.is_pinned(key),
                        },
                        Ok(_) => SignatureVerdict::Invalid("does not verify over the canonical bytes".into()),
                    },
                };
                SignatureCheck {
                    key_id: s.signer_key_id.clone(),
                    verdict,
                }
            })
            .collect()
    }

    /// Full verification. `read_manifest_file` returns the bytes of a file
    /// listed in `build_manifest` (relative path); it is the only I/O and the
    /// caller owns it (its error is quoted in `GENOME_MANIFEST_MISMATCH`).
    pub fn verify(
        self,
        trust: &TrustRoot,
        now: OffsetDateTime,
        read_manifest_file: impl FnMut(&str) -> std::io::Result<Vec<u8>>,
    ) -> Result<VerifiedGenome, GenomeError> {
        let signer_key_ids = self.verify_trust(trust)?;
        self.validity.check(now)?;
        let policy = SettlementPolicy::from_value(self.doc.get("settlement"))?;
        check_manifest(&self.envelope.build_manifest, read_manifest_file)?;
        Ok(VerifiedGenome {
            id: self.id,
            name: self.envelope.name,
            version: self.version,
            created_at: self.envelope.created_at,
            validity: self.validity,
            signer_key_ids,
            threshold: trust.min_threshold().max(self.envelope.authority.threshold),
            invariant_ids: self.envelope.invariants.into_iter().map(|i| i.id).collect(),
            capabilities: self.envelope.capabilities,
            policy,
        })
    }

    /// The trust decision of genome.md. Returns the key ids whose valid
    /// signatures counted.
    fn verify_trust(&self, trust: &TrustRoot) -> Result<Vec<String>, GenomeError> {
        let checks = self.check_signatures(trust);
        if checks.is_empty() {
            return Err(GenomeError::Unsigned);
        }
        for c in &checks {
            match &c.verdict {
                SignatureVerdict::Invalid(why) => {
                    return Err(GenomeError::SignatureInvalid(format!(
                        "signature by {:?}: {why}",
                        c.key_id
                    )));
                }
                SignatureVerdict::UnknownKeyId => {
                    return Err(GenomeError::SignatureInvalid(format!(
                        "signature names key id {:?}, which authority.signers does not list",
                        c.key_id
                    )));
                }
                SignatureVerdict::Valid { .. } => {}
            }
        }
        // Count distinct pinned *keys*, not key ids: one key listed under two
        // ids is one signer.
        let mut counted: Vec<&PublicKey> = Vec::new();
        let mut counted_ids = Vec::new();
        let mut unpinned = Vec::new();
        for c in &checks {
            // unwrap: a Valid verdict means the key id resolved.
            let key = self.signer_key(&c.key_id).unwrap();
            match c.verdict {
                SignatureVerdict::Valid { pinned: true } if !counted.contains(&key) => {
                    counted.push(key);
                    counted_ids.push(c.key_id.clone());
                }
                SignatureVerdict::Valid { pinned: false } => unpinned.push(c.key_id.as_str()),
                _ => {}
            }
        }
        let threshold = trust.min_threshold().max(self.envelope.authority.threshold) as usize;
        if counted.len() >= threshold {
            return Ok(counted_ids);
        }
        if counted.is_empty() && !unpinned.is_empty() {
            return Err(GenomeError::UntrustedSigner(format!(
                "signed only by {unpinned:?}, whose key is not pinned in this service's trust configuration"
            )));
        }
        let mut detail = format!("{} of {threshold} required distinct pinned keys signed", counted.len());
        if !unpinned.is_empty() {
            detail.push_str(&format!("; not pinned: {unpinned:?}"));
        }
        if checks.len() > counted.len() + unpinned.len() {
            detail.push_str("; several key ids share one key, which counts once");
        }
        Err(GenomeError::ThresholdNotMet(detail))
    }
}

/// The optional validity window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    pub not_before: Option<OffsetDateTime>,
    pub expires_at: Option<OffsetDateTime>,
}

impl Validity {
    pub fn check(&self, now: OffsetDateTime) -> Result<(), GenomeError> {
        if let Some(nb) = self.not_before
            && now < nb
        {
            return Err(GenomeError::NotYetValid(format!("not valid before {}", fmt_time(nb))));
        }
        if let Some(exp) = self.expires_at
            && now >= exp
        {
            return Err(GenomeError::Expired(format!("expired at {}", fmt_time(exp))));
        }
        Ok(())
    }
}

/// A genome that passed every check at some instant. It can still expire:
/// ask [`VerifiedGenome::check_validity`] before relying on it.
#[derive(Clone, Debug)]
pub struct VerifiedGenome {
    pub id: String,
    pub name: String,
    pub version: semver::Version,
    pub created_at: String,
    pub validity: Validity,
    pub signer_key_ids: Vec<String>,
    pub threshold: u32,
    pub invariant_ids: Vec<String>,
    pub capabilities: Vec<Capability>,
    pub policy: SettlementPolicy,
}

impl VerifiedGenome {
    pub fn check_validity(&self, now: OffsetDateTime) -> Result<(), GenomeError> {
        self.validity.check(now)
    }

    /// The capability ceiling: allowed by some capability, denied by none.
    /// An empty list allows nothing.
    pub fn allows(&self, action: &str) -> bool {
        let listed = |list: &Vec<String>| list.iter().any(|a| a == action);
        self.capabilities.iter().any(|c| listed(&c.allow_actions))
            && !self.capabilities.iter().any(|c| listed(&c.deny_actions))
    }

    /// Public summary: no secrets (a genome holds none, but keep it explicit).
    pub fn summary(&self) -> Value {
        json!({
            "genome_id": self.id,
            "name": self.name,
            "version": self.version.to_string(),
            "created_at": self.created_at,
            "not_before": self.validity.not_before.map(fmt_time),
            "expires_at": self.validity.expires_at.map(fmt_time),
            "signer_key_ids": self.signer_key_ids,
            "threshold": self.threshold,
            "invariants": self.invariant_ids,
            "allowed_actions": actions::ALL.iter().filter(|a| self.allows(a)).collect::<Vec<_>>(),
            "policy": self.policy.summary(),
        })
    }
}

fn signature_entries(e: &Envelope) -> Vec<&SignatureEntry> {
    e.signature.iter().chain(e.signatures.iter().flatten()).collect()
}

fn check_authority(a: &Authority) -> Result<Vec<(String, PublicKey)>, GenomeError> {
    let schema = GenomeError::InvalidSchema;
    if a.signers.is_empty() {
        return Err(schema("authority.signers is empty".into()));
    }
    let mut out: Vec<(String, PublicKey)> = Vec::with_capacity(a.signers.len());
    for s in &a.signers {
        if s.alg != "ed25519" {
            return Err(schema(format!(
                "signer {:?} has alg {:?}, expected \"ed25519\"",
                s.key_id, s.alg
            )));
        }
        if s.key_id.is_empty() || s.key_id.len() > 128 || s.key_id.chars().any(char::is_control) {
            return Err(schema("a signer key_id must be 1 to 128 printable characters".into()));
        }
        let key = PublicKey::from_spki_base64(&s.public_key)
            .map_err(|e| schema(format!("public_key of {:?}: {e}", s.key_id)))?;
        if out.iter().any(|(id, _)| id == &s.key_id) {
            return Err(schema(format!("authority.signers lists key id {:?} twice", s.key_id)));
        }
        if let Some((other, _)) = out.iter().find(|(_, k)| *k == key) {
            return Err(schema(format!(
                "authority.signers lists one public key under two key ids ({other:?} and {:?})",
                s.key_id
            )));
        }
        out.push((s.key_id.clone(), key));
    }
    if a.threshold == 0 || a.threshold as usize > a.signers.len() {
        return Err(schema(format!(
            "authority.threshold is {}, it must be between 1 and the {} listed signers",
            a.threshold,
            a.signers.len()
        )));
    }
    Ok(out)
}

fn check_capabilities(caps: &[Capability]) -> Result<(), GenomeError> {
    let mut ids = HashSet::new();
    for c in caps {
        if c.cap_id.is_empty() || !ids.insert(&c.cap_id) {
            return Err(GenomeError::InvalidSchema(format!(
                "capability id {:?} is empty or listed twice",
                c.cap_id
            )));
        }
    }
    Ok(())
}

fn check_manifest(
    manifest: &BuildManifest,
    mut read: impl FnMut(&str) -> std::io::Result<Vec<u8>>,
) -> Result<(), GenomeError> {
    for f in &manifest.files {
        let bytes = read(&f.path).map_err(|e| GenomeError::ManifestMismatch(format!("{}: {e}", f.path)))?;
        let actual = hex::encode(Sha256::digest(&bytes));
        if actual != f.sha256.to_ascii_lowercase() {
            return Err(GenomeError::ManifestMismatch(format!(
                "{}: sha256 is {actual}, the genome expects {}",
                f.path, f.sha256
            )));
        }
    }
    Ok(())
}

fn is_hex_digest(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn is_safe_relative_path(p: &str) -> bool {
    !p.is_empty()
        && !p.starts_with('/')
        && !p.contains('\\')
        && !p.contains('\0')
        && p.split('/').all(|part| !part.is_empty() && part != ".." && part != ".")
}

fn parse_time(field: &str, s: &str) -> Result<OffsetDateTime, GenomeError> {
    let quoted = || crate::primitives::quote_bounded(s, 64);
    let t = OffsetDateTime::parse(s, &Rfc3339)
        .map_err(|e| GenomeError::InvalidSchema(format!("{field} {} is not an RFC 3339 time: {e}", quoted())))?;
    // In UTC it must still be a year 0000 to 9999: `0000-01-01T00:00:00+00:01`
    // parses but is year -1 in UTC, which neither formats nor compares
    // safely (`fmt_time` would panic on it).
    const FIRST: i64 = -62_167_219_200; // 0000-01-01T00:00:00Z
    const LAST: i64 = 253_402_300_799; // 9999-12-31T23:59:59Z
    if !(FIRST..=LAST).contains(&t.unix_timestamp()) {
        return Err(GenomeError::InvalidSchema(format!(
            "{field} {} is outside the years 0000 to 9999 in UTC",
            quoted()
        )));
    }
    Ok(t)
}

/// RFC 3339 in UTC, as shown in responses.
pub fn fmt_time(t: OffsetDateTime) -> String {
    // unwrap: every OffsetDateTime in the years 0..=9999 formats as RFC 3339.
    t.to_offset(time::UtcOffset::UTC).format(&Rfc3339).unwrap()
}
