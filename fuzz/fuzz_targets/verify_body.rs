//! Any bytes as the JSON body of `POST /v1/verify`, through
//! `settlegate::http::verify::parse_body`: the extractor's size limit and
//! serde schema, then the handler's own checks (the handler runs the same
//! code). Nothing panics; a body over `MAX_BODY` bytes, or an object with a
//! field the schema does not name, is refused; a refusal is a 400 or a 413
//! that says why, never much longer than the body; and what is accepted is
//! what an `Authorization` header could have carried: the credential
//! re-parses with settlegate-rules's parser to itself (a `Payment` one then
//! goes on through the credential parser and the challenge checks), and
//! the resource passes its check again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use settlegate::http::gate::check_resource;
use settlegate::http::verify::{MAX_BODY, VerifyBody, parse_body};
use settlegate_rules::credential::{Credential, MAX_CREDENTIAL_LEN, TxHash, parse_credential};
use settlegate_rules::mpp::{MAX_DETAIL_CHARS, parse_payment_credential};

#[path = "common.rs"]
mod common;

/// The fields of `VerifyRequest`, all of them.
const FIELDS: [&str; 5] = ["credential", "tx_hash", "resource", "body_digest", "accept_payment"];

fn code(r: &Result<VerifyBody, settlegate::http::problem::ApiError>) -> Result<&VerifyBody, &'static str> {
    r.as_ref().map_err(|e| e.code().as_str())
}

fuzz_target!(|data: &[u8]| {
    let parsed = parse_body(data);
    match &parsed {
        Ok(body) => check_accepted(body),
        Err(e) => {
            let m = e.to_string();
            assert!(!m.is_empty(), "a refusal says why");
            // serde quotes what it refuses (a string, an unknown field),
            // escaped: the quote is cut, whatever the body holds
            assert!(
                m.chars().count() <= 100 + MAX_DETAIL_CHARS,
                "{} chars for a {}-byte body: {m}",
                m.chars().count(),
                data.len()
            );
            assert!(
                matches!(e.code().as_str(), "INVALID_REQUEST" | "INVALID_TX_HASH" | "PAYLOAD_TOO_LARGE"),
                "{}: {m}",
                e.code()
            );
            assert_eq!(e.code().as_str() == "PAYLOAD_TOO_LARGE", data.len() > MAX_BODY, "{m}");
        }
    }
    if data.len() > MAX_BODY {
        assert!(parsed.is_err(), "a body over {MAX_BODY} bytes was accepted");
        return;
    }
    // An object naming any other field is refused, whatever else it holds;
    // anything but an object is refused.
    match serde_json::from_slice(data) {
        Ok(serde_json::Value::Object(fields)) => {
            if let Some(f) = fields.keys().find(|k| !FIELDS.contains(&k.as_str())) {
                assert!(parsed.is_err(), "a body with the unknown field {f:?} was accepted");
            }
        }
        Ok(other) => assert!(parsed.is_err(), "a body that is not an object was accepted: {other}"),
        Err(_) => {}
    }
    // The limit counts bytes, whitespace too (the fuzzer's inputs are
    // shorter than it, so pad them): up to it, trailing whitespace changes
    // nothing; one byte beyond, the body is refused unread.
    let mut padded = data.to_vec();
    padded.resize(MAX_BODY, b' ');
    assert_eq!(code(&parse_body(&padded)), code(&parsed), "padded to the limit");
    padded.push(b'\n');
    assert_eq!(
        parse_body(&padded).map_err(|e| e.code().as_str()).err(),
        Some("PAYLOAD_TOO_LARGE")
    );
});

fn check_accepted(body: &VerifyBody) {
    assert!(
        body.credential.is_none() || body.malformed.is_none(),
        "a credential and a reason it is malformed: {body:?}"
    );
    if let Some(r) = &body.resource {
        assert_eq!(
            check_resource(r.clone()).ok().as_ref(),
            Some(r),
            "the resource checks again"
        );
    }
    match &body.credential {
        None => {}
        Some(Credential::Tempo(hash)) => {
            // one canonical spelling, and the header it stands for reads back as itself
            let text = hash.to_string();
            assert_eq!(text.len(), 66);
            assert_eq!(text.parse::<TxHash>().unwrap(), *hash);
            assert_eq!(parse_credential(&format!("Tempo {text}")), Ok(Credential::Tempo(*hash)));
        }
        Some(Credential::Payment(rest)) => {
            // what follows the scheme in a header: printable, trimmed, bounded
            assert!(
                !rest.is_empty() && rest.len() <= MAX_CREDENTIAL_LEN,
                "{} bytes",
                rest.len()
            );
            assert!(rest.bytes().all(|b| (0x21..0x7f).contains(&b) || b == b' '), "{rest:?}");
            assert_eq!(rest.trim(), rest);
            assert_eq!(
                parse_credential(&format!("Payment {rest}")),
                Ok(Credential::Payment(rest.clone()))
            );
            match parse_payment_credential(rest) {
                Ok(c) => common::check_parsed(&c),
                Err(e) => {
                    let m = e.to_string();
                    assert!(!m.is_empty() && m.chars().count() <= 100 + MAX_DETAIL_CHARS, "{m}");
                }
            }
        }
    }
}
