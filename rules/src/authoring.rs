//! Building and signing genome documents (`genome init`, `genome sign`).
//! Pure: the CLI reads and writes the files.

use serde_json::{Map, Value, json};

use crate::canonical::canonical_bytes;
use crate::error::GenomeError;
use crate::genome::{ParsedGenome, SCHEMA_VERSION, actions};
use crate::keys::{PrivateKey, PublicKey};
use crate::primitives::{Address, Amount, address_lower};

/// Everything `genome init` needs for an unsigned genome.
pub struct GenomeDraft {
    pub name: String,
    pub version: String,
    pub created_at: String,
    pub not_before: Option<String>,
    pub expires_at: Option<String>,
    pub signers: Vec<(String, PublicKey)>,
    pub threshold: u32,
    pub chain_id: u64,
    pub realm: String,
    pub recipient: Address,
    pub asset: Address,
    pub amount: Amount,
    pub max_age_seconds: u64,
}

impl GenomeDraft {
    /// An unsigned genome whose capabilities allow every service action.
    pub fn build(&self) -> Map<String, Value> {
        let signers: Vec<Value> = self
            .signers
            .iter()
            .map(|(id, key)| json!({ "key_id": id, "alg": "ed25519", "public_key": key.to_spki_base64() }))
            .collect();
        let mut doc = json!({
            "schema_version": SCHEMA_VERSION,
            "name": self.name,
            "version": self.version,
            "parents": [],
            "created_at": self.created_at,
            "authority": { "signers": signers, "threshold": self.threshold },
            "invariants": [{
                "id": "SG-001",
                "severity": "CRITICAL",
                "testable_claim": "fail_closed: a payment is accepted only when every settlement rule holds",
                "enforcement_hook": "settlegate.verify",
            }],
            "capabilities": [{
                "cap_id": "CAP-SETTLEMENT",
                "risk_class": "B",
                "allow_actions": actions::ALL,
                "deny_actions": [],
            }],
            "build_manifest": { "files": [] },
            "settlement": {
                "chain_id": self.chain_id,
                "realm": self.realm,
                "recipient": address_lower(&self.recipient),
                "assets": [address_lower(&self.asset)],
                "default_price": { "asset": address_lower(&self.asset), "amount": self.amount.to_string() },
                "prices": [],
                "max_age_seconds": self.max_age_seconds,
            },
        });
        // unwrap: the literal above is an object.
        let map = doc.as_object_mut().unwrap();
        if let Some(t) = &self.not_before {
            map.insert("not_before".into(), json!(t));
        }
        if let Some(t) = &self.expires_at {
            map.insert("expires_at".into(), json!(t));
        }
        std::mem::take(map)
    }
}

/// Adds a signature by `key_id` to a genome document.
///
/// Refuses to sign when the key id is not in `authority.signers`, when the
/// private key is not the one listed there (a signature that can never
/// verify helps nobody), or when that key id already signed. One signature
/// is written as Mathison's `signature`; more become `signatures`.
pub fn sign_document(bytes: &[u8], key_id: &str, key: &PrivateKey) -> Result<Map<String, Value>, GenomeError> {
    let parsed = ParsedGenome::parse(bytes)?;
    let listed = parsed
        .signer_key(key_id)
        .ok_or_else(|| GenomeError::InvalidSchema(format!("key id {key_id:?} is not listed in authority.signers")))?;
    if *listed != key.public_key() {
        return Err(GenomeError::InvalidSchema(format!(
            "the private key does not belong to key id {key_id:?} (its public key differs from authority.signers)"
        )));
    }
    let mut entries: Vec<Value> = parsed
        .signature_entries()
        .into_iter()
        .map(|s| serde_json::to_value(s).expect("signature entries serialise"))
        .collect();
    if parsed.signature_entries().iter().any(|s| s.signer_key_id == key_id) {
        return Err(GenomeError::InvalidSchema(format!(
            "key id {key_id:?} has already signed this genome"
        )));
    }
    let mut doc = parsed.document().clone();
    let signature = key.sign_base64(&canonical_bytes(&doc));
    entries.push(json!({ "alg": "ed25519", "signer_key_id": key_id, "sig_base64": signature }));
    doc.remove("signature");
    doc.remove("signatures");
    if entries.len() == 1 {
        doc.insert("signature".into(), entries.remove(0));
    } else {
        doc.insert("signatures".into(), Value::Array(entries));
    }
    Ok(doc)
}
