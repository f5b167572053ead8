//! Any bytes as a genome file: the strict JSON parser and the envelope
//! schema never panic, and canonical bytes are a fixed point (parsing them
//! gives the same document, its signatures left out, whose canonical bytes
//! are the same again), which is what makes a signature over them mean one
//! thing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use settlegate_rules::canonical::{SIGNATURE_FIELDS, canonical_bytes, parse_strict};
use settlegate_rules::genome::ParsedGenome;

fuzz_target!(|data: &[u8]| {
    let _ = ParsedGenome::parse(data);
    if let Ok(doc) = parse_strict(data) {
        let canonical = canonical_bytes(&doc);
        let again = parse_strict(&canonical).expect("canonical bytes parse");
        let mut signed_body = doc.clone();
        for f in SIGNATURE_FIELDS {
            signed_body.remove(f);
        }
        assert_eq!(again, signed_body);
        assert_eq!(canonical_bytes(&again), canonical);
    }
});
