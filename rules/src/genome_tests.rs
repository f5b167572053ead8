//! Every genome code ([`crate::GenomeError`]), produced by the condition it
//! names, plus the attacks on Mathison's trust model.

use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::macros::datetime;

use crate::authoring::sign_document;
use crate::canonical::canonical_bytes;
use crate::genome::{ParsedGenome, SignatureVerdict, TrustRoot, VerifiedGenome};
use crate::keys::PrivateKey;
use crate::{GenomeError, genome::actions};

/// A named change to a genome document.
type Mutation = Box<dyn Fn(&mut Map<String, Value>)>;

const NOW: OffsetDateTime = datetime!(2026-11-21 12:00 UTC);

fn key(n: u8) -> PrivateKey {
    PrivateKey::from_seed([n; 32])
}

fn trust(keys: &[u8], min: u32) -> TrustRoot {
    TrustRoot::new(keys.iter().map(|n| key(*n).public_key()), min)
}

/// An unsigned genome listing `signers` as (key id, key number).
fn unsigned(signers: &[(&str, u8)], threshold: u32) -> Map<String, Value> {
    let signers: Vec<Value> = signers
        .iter()
        .map(|(id, n)| json!({"key_id": id, "alg": "ed25519", "public_key": key(*n).public_key().to_spki_base64()}))
        .collect();
    let v = json!({
        "schema_version": "genome.v0.1",
        "name": "TEST",
        "version": "1.0.0",
        "parents": [],
        "created_at": "2026-11-01T00:00:00Z",
        "authority": {"signers": signers, "threshold": threshold},
        "invariants": [{"id": "INV-1", "severity": "CRITICAL", "testable_claim": "x", "enforcement_hook": "y"}],
        "capabilities": [{"cap_id": "CAP", "risk_class": "A", "allow_actions": actions::ALL, "deny_actions": []}],
        "build_manifest": {"files": []},
        "settlement": {
            "chain_id": 42431,
            "realm": "Tempo API",
            "recipient": "0x70997970c51812dc3a010c7d01b50e0d17dc79c8",
            "assets": ["0x20c0000000000000000000000000000000000001"],
            "default_price": {"asset": "0x20c0000000000000000000000000000000000001", "amount": "1000000"}
        }
    });
    v.as_object().unwrap().clone()
}

fn bytes(doc: &Map<String, Value>) -> Vec<u8> {
    serde_json::to_vec_pretty(doc).unwrap()
}

fn sign(doc: &Map<String, Value>, signers: &[(&str, u8)]) -> Map<String, Value> {
    let mut doc = doc.clone();
    for (id, n) in signers {
        doc = sign_document(&bytes(&doc), id, &key(*n)).unwrap();
    }
    doc
}

fn verify(doc: &Map<String, Value>, trust: &TrustRoot) -> Result<VerifiedGenome, GenomeError> {
    verify_bytes(&bytes(doc), trust)
}

fn verify_bytes(b: &[u8], trust: &TrustRoot) -> Result<VerifiedGenome, GenomeError> {
    ParsedGenome::parse(b)?.verify(trust, NOW, |p| Err(std::io::Error::other(format!("no file {p}"))))
}

fn code(r: Result<VerifiedGenome, GenomeError>) -> &'static str {
    match r {
        Ok(_) => "OK",
        Err(e) => e.code(),
    }
}

#[test]
fn a_genome_signed_by_a_pinned_key_verifies() {
    let doc = sign(&unsigned(&[("k1", 1)], 1), &[("k1", 1)]);
    let g = verify(&doc, &trust(&[1], 1)).unwrap();
    assert_eq!(g.signer_key_ids, ["k1"]);
    assert_eq!(g.version.to_string(), "1.0.0");
    assert_eq!(g.id, ParsedGenome::parse(&bytes(&doc)).unwrap().id());
    assert!(actions::ALL.iter().all(|a| g.allows(a)));
}

#[test]
fn genome_id_is_sha256_of_canonical_bytes_and_ignores_signatures() {
    let doc = unsigned(&[("k1", 1), ("k2", 2)], 1);
    let id_unsigned = ParsedGenome::parse(&bytes(&doc)).unwrap().id().to_owned();
    use sha2::Digest;
    assert_eq!(id_unsigned, hex::encode(sha2::Sha256::digest(canonical_bytes(&doc))));
    let one = sign(&doc, &[("k1", 1)]);
    let two = sign(&doc, &[("k1", 1), ("k2", 2)]);
    assert_eq!(ParsedGenome::parse(&bytes(&one)).unwrap().id(), id_unsigned);
    assert_eq!(ParsedGenome::parse(&bytes(&two)).unwrap().id(), id_unsigned);
    assert!(one.contains_key("signature") && two.contains_key("signatures") && !two.contains_key("signature"));
}

#[test]
fn a_self_signed_genome_with_an_unpinned_key_is_untrusted() {
    // Mathison's hole: the file lists its own signer. Pinning key 9 only.
    let doc = sign(&unsigned(&[("attacker", 1)], 1), &[("attacker", 1)]);
    assert_eq!(code(verify(&doc, &trust(&[9], 1))), "GENOME_UNTRUSTED_SIGNER");
}

#[test]
fn an_unsigned_genome_is_refused() {
    assert_eq!(
        code(verify(&unsigned(&[("k1", 1)], 1), &trust(&[1], 1))),
        "GENOME_UNSIGNED"
    );
    let mut empty = unsigned(&[("k1", 1)], 1);
    empty.insert("signatures".into(), json!([]));
    assert_eq!(code(verify(&empty, &trust(&[1], 1))), "GENOME_UNSIGNED");
}

#[test]
fn one_key_under_two_key_ids_does_not_meet_two_of_two() {
    // authority refuses the same key twice outright...
    let doc = unsigned(&[("a", 1), ("b", 1)], 2);
    assert_eq!(
        code(verify_bytes(&bytes(&doc), &trust(&[1], 1))),
        "GENOME_INVALID_SCHEMA"
    );
    // ...and pinning the same key twice does not make two keys either.
    let doc = sign(&unsigned(&[("a", 1)], 1), &[("a", 1)]);
    let twice = TrustRoot::new([key(1).public_key(), key(1).public_key()], 2);
    let err = verify(&doc, &twice).unwrap_err();
    assert_eq!(err.code(), "GENOME_THRESHOLD_NOT_MET", "{err}");
}

#[test]
fn the_threshold_is_the_larger_of_config_and_genome() {
    let doc = sign(&unsigned(&[("a", 1), ("b", 2)], 1), &[("a", 1)]);
    assert_eq!(code(verify(&doc, &trust(&[1, 2], 1))), "OK");
    assert_eq!(code(verify(&doc, &trust(&[1, 2], 2))), "GENOME_THRESHOLD_NOT_MET");
    let doc2 = sign(&unsigned(&[("a", 1), ("b", 2)], 2), &[("a", 1)]);
    assert_eq!(code(verify(&doc2, &trust(&[1, 2], 1))), "GENOME_THRESHOLD_NOT_MET");
    let both = sign(&doc2, &[("b", 2)]);
    assert_eq!(verify(&both, &trust(&[1, 2], 1)).unwrap().signer_key_ids, ["a", "b"]);
    // a valid signature by an unpinned key does not count towards 2-of-2
    assert_eq!(code(verify(&both, &trust(&[1], 1))), "GENOME_THRESHOLD_NOT_MET");
}

#[test]
fn a_met_threshold_plus_one_bad_extra_signature_is_refused() {
    let doc = sign(&unsigned(&[("a", 1), ("b", 2)], 1), &[("a", 1), ("b", 2)]);
    let mut tampered = doc.clone();
    let sigs = tampered.get_mut("signatures").unwrap().as_array_mut().unwrap();
    // b's signature replaced by a's signature over the same bytes: wrong key.
    let a_sig = sigs[0]["sig_base64"].clone();
    sigs[1]["sig_base64"] = a_sig;
    let err = verify(&tampered, &trust(&[1, 2], 1)).unwrap_err();
    assert_eq!(err.code(), "GENOME_SIGNATURE_INVALID", "{err}");
    // and a signature naming a key id that authority does not list
    let mut unknown = doc.clone();
    unknown.get_mut("signatures").unwrap().as_array_mut().unwrap()[1]["signer_key_id"] = json!("ghost");
    assert_eq!(code(verify(&unknown, &trust(&[1, 2], 1))), "GENOME_SIGNATURE_INVALID");
    // garbage base64 in an extra signature
    let mut garbage = doc;
    garbage.get_mut("signatures").unwrap().as_array_mut().unwrap()[1]["sig_base64"] = json!("AAAA");
    assert_eq!(code(verify(&garbage, &trust(&[1, 2], 1))), "GENOME_SIGNATURE_INVALID");
}

#[test]
fn a_flipped_byte_anywhere_in_the_signed_body_is_refused() {
    let doc = sign(&unsigned(&[("k1", 1)], 1), &[("k1", 1)]);
    let original = serde_json::to_vec(&doc).unwrap();
    let sig_start = find(&original, b"\"signature\":");
    let sig_end = sig_start + find(&original[sig_start..], b"}") + 1;
    let trust = trust(&[1], 1);
    let mut accepted = 0;
    for i in (0..original.len()).filter(|i| !(sig_start..sig_end).contains(i)) {
        let mut b = original.clone();
        b[i] ^= 0x01;
        if verify_bytes(&b, &trust).is_ok() {
            accepted += 1;
            eprintln!("accepted with byte {i} flipped: {}", String::from_utf8_lossy(&b));
        }
    }
    assert_eq!(accepted, 0);
}

fn find(haystack: &[u8], needle: &[u8]) -> usize {
    haystack.windows(needle.len()).position(|w| w == needle).unwrap()
}

#[test]
fn the_validity_window_is_enforced() {
    let mut doc = unsigned(&[("k1", 1)], 1);
    doc.insert("not_before".into(), json!("2026-12-01T00:00:00Z"));
    assert_eq!(
        code(verify(&sign(&doc, &[("k1", 1)]), &trust(&[1], 1))),
        "GENOME_NOT_YET_VALID"
    );
    let mut doc = unsigned(&[("k1", 1)], 1);
    doc.insert("expires_at".into(), json!("2026-11-21T11:59:59Z"));
    assert_eq!(
        code(verify(&sign(&doc, &[("k1", 1)]), &trust(&[1], 1))),
        "GENOME_EXPIRED"
    );
    let mut doc = unsigned(&[("k1", 1)], 1);
    doc.insert("not_before".into(), json!("2026-11-21T12:00:00+00:00"));
    doc.insert("expires_at".into(), json!("2026-11-21T13:00:01+01:00"));
    // not_before is inclusive; 13:00:01+01:00 is one second after now in UTC.
    let g = verify(&sign(&doc, &[("k1", 1)]), &trust(&[1], 1)).unwrap();
    assert_eq!(
        code(g.check_validity(NOW + time::Duration::SECOND).map(|_| g.clone())),
        "GENOME_EXPIRED"
    );
    // Times that parse but leave the years 0000..=9999 in UTC are refused
    // as schema errors (reading one as expired panicked while formatting it).
    for (field, t) in [
        ("expires_at", "0000-01-01T00:00:00+00:01"),
        ("not_before", "9999-12-31T23:59:59-00:01"),
    ] {
        let mut doc = unsigned(&[("k1", 1)], 1);
        doc.insert(field.into(), json!(t));
        let signing = sign_document(&bytes(&doc), "k1", &key(1)).map(|_| ());
        assert_eq!(
            signing.map_err(|e| e.code()),
            Err("GENOME_INVALID_SCHEMA"),
            "{field} {t}"
        );
        assert_eq!(
            code(verify(&doc, &trust(&[1], 1))),
            "GENOME_INVALID_SCHEMA",
            "{field} {t}"
        );
    }
}

#[test]
fn ambiguous_json_is_invalid_schema_and_broken_json_is_unreadable() {
    let trust = trust(&[1], 1);
    let good = String::from_utf8(bytes(&sign(&unsigned(&[("k1", 1)], 1), &[("k1", 1)]))).unwrap();
    let dup = good.replacen("\"name\": \"TEST\",", "\"name\": \"TEST\",\n  \"name\": \"EVIL\",", 1);
    assert_ne!(dup, good);
    assert_eq!(code(verify_bytes(dup.as_bytes(), &trust)), "GENOME_INVALID_SCHEMA");
    let float = good.replacen("\"chain_id\": 42431", "\"chain_id\": 42431.0", 1);
    assert_ne!(float, good);
    assert_eq!(code(verify_bytes(float.as_bytes(), &trust)), "GENOME_INVALID_SCHEMA");
    assert_eq!(
        code(verify_bytes(&good.as_bytes()[..good.len() - 2], &trust)),
        "GENOME_UNREADABLE"
    );
    assert_eq!(code(verify_bytes(b"", &trust)), "GENOME_UNREADABLE");
}

#[test]
fn envelope_schema_errors() {
    let t = trust(&[1], 1);
    let cases: Vec<(&str, Mutation)> = vec![
        (
            "schema_version",
            Box::new(|d| {
                d.insert("schema_version".into(), json!("genome.v9"));
            }),
        ),
        (
            "missing name",
            Box::new(|d| {
                d.remove("name");
            }),
        ),
        (
            "version",
            Box::new(|d| {
                d.insert("version".into(), json!("v1"));
            }),
        ),
        (
            "created_at",
            Box::new(|d| {
                d.insert("created_at".into(), json!("yesterday"));
            }),
        ),
        (
            "parents",
            Box::new(|d| {
                d.insert("parents".into(), json!(["abc"]));
            }),
        ),
        (
            "threshold 0",
            Box::new(|d| {
                d["authority"]["threshold"] = json!(0);
            }),
        ),
        (
            "threshold > signers",
            Box::new(|d| {
                d["authority"]["threshold"] = json!(2);
            }),
        ),
        (
            "alg",
            Box::new(|d| {
                d["authority"]["signers"][0]["alg"] = json!("rsa");
            }),
        ),
        (
            "public key",
            Box::new(|d| {
                d["authority"]["signers"][0]["public_key"] = json!("AAAA");
            }),
        ),
        (
            "manifest path",
            Box::new(|d| {
                d["build_manifest"]["files"] = json!([{"path": "../etc/passwd", "sha256": "0".repeat(64)}]);
            }),
        ),
        (
            "capabilities type",
            Box::new(|d| {
                d.insert("capabilities".into(), json!({}));
            }),
        ),
    ];
    for (what, mutate) in cases {
        let mut doc = unsigned(&[("k1", 1)], 1);
        mutate(&mut doc);
        let err = verify_bytes(&bytes(&doc), &t).unwrap_err();
        assert_eq!(err.code(), "GENOME_INVALID_SCHEMA", "{what}: {err}");
    }
}

#[test]
fn policy_errors_come_after_trust() {
    let t = trust(&[1], 1);
    let cases: Vec<(&str, Mutation)> = vec![
        (
            "no settlement",
            Box::new(|d| {
                d.remove("settlement");
            }),
        ),
        (
            "missing recipient",
            Box::new(|d| {
                d["settlement"].as_object_mut().unwrap().remove("recipient");
            }),
        ),
        (
            "malformed address",
            Box::new(|d| {
                d["settlement"]["recipient"] = json!("0x70997970c51812dc3a010c7d01b50e0d17dc79");
            }),
        ),
        (
            "zero amount",
            Box::new(|d| {
                d["settlement"]["default_price"]["amount"] = json!("0");
            }),
        ),
    ];
    for (what, mutate) in cases {
        let mut doc = unsigned(&[("k1", 1)], 1);
        mutate(&mut doc);
        let signed = sign(&doc, &[("k1", 1)]);
        let err = verify(&signed, &t).unwrap_err();
        assert_eq!(err.code(), "GENOME_POLICY_INVALID", "{what}: {err}");
        // unsigned, the same document is refused for its signature first
        assert_eq!(code(verify(&doc, &t)), "GENOME_UNSIGNED", "{what}");
    }
}

#[test]
fn the_build_manifest_must_match() {
    let content = b"fn main() {}\n";
    use sha2::Digest;
    let digest = hex::encode(sha2::Sha256::digest(content));
    let mut doc = unsigned(&[("k1", 1)], 1);
    doc["build_manifest"]["files"] = json!([{"path": "src/main.rs", "sha256": digest}]);
    let signed = bytes(&sign(&doc, &[("k1", 1)]));
    let t = trust(&[1], 1);
    let with = |c: &'static [u8]| {
        ParsedGenome::parse(&signed)
            .unwrap()
            .verify(&t, NOW, move |_| Ok(c.to_vec()))
    };
    assert_eq!(code(with(content)), "OK");
    assert_eq!(code(with(b"fn main() { evil() }\n")), "GENOME_MANIFEST_MISMATCH");
    assert_eq!(code(verify_bytes(&signed, &t)), "GENOME_MANIFEST_MISMATCH");
}

#[test]
fn capabilities_are_a_deny_by_default_ceiling() {
    let caps = |v: Value| {
        let mut doc = unsigned(&[("k1", 1)], 1);
        doc.insert("capabilities".into(), v);
        verify(&sign(&doc, &[("k1", 1)]), &trust(&[1], 1)).unwrap()
    };
    let none = caps(json!([]));
    assert!(actions::ALL.iter().all(|a| !none.allows(a)));
    let some = caps(json!([
        {"cap_id": "A", "risk_class": "A", "allow_actions": ["settlement.verify", "genome.read"], "deny_actions": []},
        {"cap_id": "B", "risk_class": "A", "allow_actions": [], "deny_actions": ["genome.read"]}
    ]));
    assert!(some.allows("settlement.verify"));
    assert!(!some.allows("genome.read"), "a deny anywhere wins");
    assert!(!some.allows("metrics.read"), "not allowed anywhere");
}

#[test]
fn mathison_unknown_fields_are_signed_and_kept() {
    let mut doc = unsigned(&[("k1", 1)], 1);
    doc.insert("x_extension".into(), json!({"nested": [1, "two"]}));
    let signed = sign(&doc, &[("k1", 1)]);
    assert!(verify(&signed, &trust(&[1], 1)).is_ok());
    let mut changed = signed.clone();
    changed["x_extension"]["nested"][0] = json!(2);
    assert_eq!(code(verify(&changed, &trust(&[1], 1))), "GENOME_SIGNATURE_INVALID");
}

#[test]
fn signature_checks_report_each_signer() {
    let doc = sign(&unsigned(&[("a", 1), ("b", 2)], 1), &[("a", 1), ("b", 2)]);
    let parsed = ParsedGenome::parse(&bytes(&doc)).unwrap();
    let checks = parsed.check_signatures(&trust(&[1], 1));
    assert_eq!(checks[0].verdict, SignatureVerdict::Valid { pinned: true });
    assert_eq!(checks[1].verdict, SignatureVerdict::Valid { pinned: false });
}

#[test]
fn signing_refuses_a_key_that_does_not_match_its_key_id() {
    let doc = unsigned(&[("a", 1)], 1);
    assert!(sign_document(&bytes(&doc), "a", &key(2)).is_err());
    assert!(sign_document(&bytes(&doc), "zz", &key(1)).is_err());
    let signed = sign(&doc, &[("a", 1)]);
    assert!(
        sign_document(&bytes(&signed), "a", &key(1)).is_err(),
        "no double signature"
    );
}
