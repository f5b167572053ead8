//! The `Payment` credential's JSON, fuzzed directly (the fuzzer explores
//! JSON structure far better than base64 of it): encoded as a client would,
//! then through the parser and the challenge checks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use settlegate_rules::mpp::{MAX_DETAIL_CHARS, b64_encode, parse_payment_credential};

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    match parse_payment_credential(&b64_encode(data)) {
        Ok(c) => common::check_parsed(&c),
        Err(e) => {
            // a refusal says why, without quoting the whole credential back
            let m = e.to_string();
            assert!(!m.is_empty(), "a refusal says why");
            assert!(
                m.chars().count() <= 100 + MAX_DETAIL_CHARS,
                "{} chars: {m}",
                m.chars().count()
            );
        }
    }
});
