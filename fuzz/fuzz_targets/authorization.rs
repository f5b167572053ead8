//! Any `Authorization` value, as the handler gets it: the scheme dispatch
//! (`Tempo <hash>`, `Payment <base64url JSON>`, anything else), then the
//! `Payment` credential parser and the challenge checks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use settlegate_rules::credential::{Credential, MAX_CREDENTIAL_LEN, TxHash, parse_credential};
use settlegate_rules::mpp::parse_payment_credential;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    // A header value reaches the parser as text (actix refuses non-visible
    // bytes earlier); lossy decoding keeps every input useful.
    let value = String::from_utf8_lossy(data);
    match parse_credential(&value) {
        Ok(Credential::Tempo(hash)) => {
            assert!(value.len() <= MAX_CREDENTIAL_LEN);
            // one canonical spelling, and it reads back as itself
            let text = hash.to_string();
            assert_eq!(text.len(), 66);
            assert_eq!(text.parse::<TxHash>().unwrap(), hash);
        }
        Ok(Credential::Payment(rest)) => {
            assert!(!rest.is_empty() && value.len() <= MAX_CREDENTIAL_LEN);
            if let Ok(c) = parse_payment_credential(&rest) {
                common::check_parsed(&c);
            }
        }
        Err(e) => {
            // every refusal says why, briefly (it goes into a 4xx body):
            // an unknown scheme is quoted, 32 characters at most, each at
            // most 10 once escaped (`\u{10ffff}`)
            let m = e.to_string();
            assert!(!m.is_empty() && m.len() <= 100 + 32 * 10, "{} bytes: {m}", m.len());
        }
    }
});
