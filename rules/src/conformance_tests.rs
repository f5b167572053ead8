//! Lightning Labs Aperture's cross-implementation vectors of the `Payment`
//! scheme (`tests/fixtures/mpp-vectors/`, with their source), run against
//! the code each group concerns:
//!
//! - `canonicalization`: [`canonical_value_bytes`], the JCS of every
//!   `request`, `opaque` and receipt: all 22 vectors. The genome's rule
//!   ([`canonical_bytes`] after [`parse_strict`]) agrees on every vector
//!   it accepts but one, where Mathison's byte order is the genome's rule;
//! - `base64url`: [`b64url`], the decoder of credentials, echoed
//!   requests and opaques: all 17;
//! - `challengeHeaders`: [`ChallengeParams::header`], what
//!   `Challenge::header` writes: all 6 (the `parsed` half does not apply:
//!   settlegate parses no challenge);
//! - `challengeIds`: the HMAC input and id, with the vectors' 22-byte
//!   secret through the raw HMAC ([`Secrets::new`] refuses a key that
//!   short): all 4, the pipe collision included, which is why a realm with
//!   `|` is refused;
//! - `credentials`: [`parse_credential`] (the scheme) then
//!   [`parse_envelope`] (base64url, JSON, the echoed challenge): all 11.
//!   The vectors' method is `lightning`, so their payloads (a preimage, a
//!   `bearer` action) and their `did:key` source are not tempo's: the
//!   layer after the envelope refuses all four valid ones, as it must;
//! - `receipts`: the encoding (base64url of the receipt's JSON bytes, in
//!   the order written, not JCS): all 8; settlegate's own receipts hold
//!   only strings, so their JCS is also that plain encoding.
//!
//! Not applicable: `challengeLists` (parsing `WWW-Authenticate` lists).

use serde_json::{Map, Value};

use crate::b64url;
use crate::canonical::{canonical_bytes, canonical_value_bytes, parse_strict};
use crate::credential::{Credential, CredentialError, parse_credential};
use crate::mpp::{ChallengeParams, Echo, Secrets, b64_encode, hmac_input, parse_any_credential, parse_envelope};

const VECTORS: &str = include_str!("../../tests/fixtures/mpp-vectors/aperture-vectors.json");

fn vectors() -> Value {
    serde_json::from_str(VECTORS).expect("the vectors file is JSON")
}

fn group(name: &str) -> Vec<Value> {
    let g = vectors()[name].as_array().cloned().unwrap_or_default();
    assert!(!g.is_empty(), "no {name} vectors");
    g
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_else(|| panic!("{key} of {v}"))
}

fn opt<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn is_error(v: &Value) -> bool {
    v["error"] == Value::Bool(true)
}

#[test]
fn canonicalization_vectors() {
    let mut failures = Vec::new();
    for v in group("canonicalization") {
        let name = text(&v, "name");
        let parsed = serde_json::from_str::<Value>(text(&v, "input"));
        if is_error(&v) {
            assert!(parsed.is_err(), "{name}: parsed");
            continue;
        }
        let parsed = parsed.unwrap_or_else(|e| panic!("{name}: {e}"));
        let ours = String::from_utf8(canonical_value_bytes(&parsed)).unwrap();
        if ours != text(&v, "canonical") {
            failures.push(format!("{name}: {ours:?} != {:?}", text(&v, "canonical")));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn the_genome_rule_is_jcs_on_what_it_accepts_but_for_keys_past_u_e000() {
    let mut accepted = Vec::new();
    for v in group("canonicalization").iter().filter(|v| !is_error(v)) {
        let Ok(doc) = parse_strict(text(v, "input").as_bytes()) else {
            continue;
        };
        let genome = String::from_utf8(canonical_bytes(&doc)).unwrap();
        let name = text(v, "name");
        if name == "member ordering across the surrogate range" {
            // Byte order puts U+10000 (F0 90 80 80) after U+FFFF (EF BF BF).
            assert_eq!(genome, "{\"\u{d7ff}\":4,\"\u{e000}\":1,\"\u{ffff}\":3,\"\u{10000}\":2}");
        } else {
            assert_eq!(genome, text(v, "canonical"), "{name}");
        }
        accepted.push(name.to_owned());
    }
    // Floats, integers beyond 2^53 and integer-like keys are refused, so
    // these are what a genome can hold.
    assert_eq!(
        accepted,
        [
            "empty object",
            "member ordering across the surrogate range",
            "nested objects and arrays",
            "literals",
            "ampersand and angle brackets are not escaped",
            "line and paragraph separators are not escaped",
            "shorthand control escapes",
            "control characters without a shorthand",
            "delete and the solidus are not escaped",
            "quote and reverse solidus",
            "non-ascii passes through as utf-8",
            "charge request",
            "session request",
        ]
    );
}

#[test]
fn base64url_vectors() {
    for v in group("base64url") {
        let name = text(&v, "name");
        let encoded = text(&v, "encoded");
        let decoded = b64url::decode(encoded);
        assert_eq!(
            b64url::is_canonical(encoded),
            v["canonical"] == Value::Bool(true),
            "{name}"
        );
        if is_error(&v) {
            assert!(decoded.is_err(), "{name}: {decoded:?}");
            continue;
        }
        let bytes = decoded.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(hex::encode(&bytes), opt(&v, "decodedHex").unwrap_or(""), "{name}");
        if v["canonical"] == Value::Bool(true) {
            assert_eq!(b64url::encode(&bytes), encoded, "{name}");
        } else {
            assert_ne!(b64url::encode(&bytes), encoded, "{name}");
        }
    }
}

#[test]
fn challenge_header_vectors() {
    for v in group("challengeHeaders") {
        let p = &v["params"];
        let params = ChallengeParams {
            id: text(p, "id"),
            realm: text(p, "realm"),
            method: text(p, "method"),
            intent: text(p, "intent"),
            request: text(p, "request"),
            expires: opt(p, "expires"),
            digest: opt(p, "digest"),
            description: opt(p, "description"),
            opaque: opt(p, "opaque"),
        };
        assert_eq!(params.header(), text(&v, "header"), "{}", text(&v, "name"));
    }
}

#[test]
fn challenge_id_vectors() {
    let secret = hex::decode(text(&vectors(), "hmacSecretHex")).unwrap();
    assert_eq!(secret.len(), 22, "shorter than the 32-byte floor: hence the raw HMAC");
    let mut ids = Vec::new();
    for v in group("challengeIds") {
        let (name, p) = (text(&v, "name"), &v["params"]);
        let input = hmac_input(
            text(p, "realm"),
            text(p, "method"),
            text(p, "intent"),
            text(p, "request"),
            opt(p, "expires"),
            opt(p, "digest"),
            opt(p, "opaque"),
        );
        assert_eq!(input, text(&v, "hmacInput"), "{name}");
        assert_eq!(b64_encode(&Secrets::id(&secret, &input)), text(p, "id"), "{name}");
        ids.push((text(p, "realm").to_owned(), text(p, "id").to_owned()));
    }
    // The last two split the same input differently: one id for two
    // parameter sets. A realm with `|` is refused at boot for that.
    assert_eq!(ids[2].1, ids[3].1);
    assert_eq!(ids[2].0, "a|b");
    assert!(crate::policy::check_realm(&ids[2].0).is_err());
}

#[test]
fn credential_vectors() {
    for v in group("credentials") {
        let name = text(&v, "name");
        let header = text(&v, "header");
        let token = match parse_credential(header) {
            Ok(Credential::Payment(token)) => token,
            Err(CredentialError::NotAPaymentCredential(_)) if name == "reject wrong scheme" => continue,
            Err(CredentialError::MalformedPayment(_)) if name == "reject empty token" => continue,
            other => panic!("{name}: {other:?}"),
        };
        let envelope = parse_envelope(&token);
        if is_error(&v) {
            assert!(envelope.is_err(), "{name}: {envelope:?}");
            assert!(parse_any_credential(&token).is_err(), "{name}");
            continue;
        }
        let envelope = envelope.unwrap_or_else(|e| panic!("{name}: {e}"));
        let json: Map<String, Value> = serde_json::from_str(text(&v, "credentialJson")).unwrap();
        let c = &json["challenge"];
        let echoed = Echo {
            id: text(c, "id").into(),
            realm: text(c, "realm").into(),
            method: text(c, "method").into(),
            intent: text(c, "intent").into(),
            request: text(c, "request").into(),
            expires: opt(c, "expires").map(Into::into),
            digest: opt(c, "digest").map(Into::into),
            opaque: opt(c, "opaque").map(Into::into),
            description: c.get("description").cloned(),
            header: None,
        };
        assert_eq!(envelope.challenge, echoed, "{name}");
        assert_eq!(
            serde_json::from_str::<Value>(envelope.payload.get()).unwrap(),
            json["payload"],
            "{name}"
        );
        assert_eq!(
            envelope.source.as_deref(),
            json.get("source").and_then(Value::as_str),
            "{name}"
        );
        // Past the envelope, the payload is the method's: a lightning
        // preimage or `bearer` action, or a did:key source, is no tempo
        // credential.
        assert!(parse_any_credential(&token).is_err(), "{name}");
    }
}

#[test]
fn receipt_vectors() {
    for v in group("receipts") {
        let name = text(&v, "name");
        let json = text(&v, "receiptJson");
        assert_eq!(b64_encode(json.as_bytes()), text(&v, "header"), "{name}");
        assert_eq!(b64url::decode(text(&v, "header")).unwrap(), json.as_bytes(), "{name}");
    }
    // JCS would rewrite a receipt's numbers beyond 2^53, which is why the
    // receipts are plain JSON; ours hold only strings, where the two agree.
    let big = group("receipts")
        .into_iter()
        .find(|v| text(v, "name") == "refund beyond the exactly representable range")
        .unwrap();
    let parsed: Value = serde_json::from_str(text(&big, "receiptJson")).unwrap();
    let jcs = String::from_utf8(canonical_value_bytes(&parsed)).unwrap();
    assert!(jcs.contains("\"refundSats\":9007199254740992"), "{jcs}");
    let hash = format!("0x{}", "ab".repeat(32)).parse().unwrap();
    let at = time::OffsetDateTime::UNIX_EPOCH;
    let charge = b64url::decode(&crate::mpp::receipt(&hash, at)).unwrap();
    let channel = format!("0x{}", "cd".repeat(32)).parse().unwrap();
    let session = crate::session::request::receipt("id", &channel, u128::MAX, 7, Some(&hash), at);
    for receipt in [serde_json::from_slice::<Value>(&charge).unwrap(), session] {
        let members = receipt.as_object().unwrap();
        assert!(members.values().all(Value::is_string), "{receipt}");
    }
}
