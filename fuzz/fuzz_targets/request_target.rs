//! Any request target through the normaliser the price rules match on
//! (`/v1/authorize`'s forwarded URI, `/v1/verify`'s resource). Nothing
//! panics; what normalises is a fixed point with no ambiguous character
//! left; spellings an upstream reads alike (letter case, an unreserved
//! character percent-encoded, a trailing slash, the query) normalise alike;
//! and under a policy with route prices the input costs what its normal
//! form costs, for GET and for HEAD.
#![no_main]

use libfuzzer_sys::fuzz_target;
use settlegate_rules::policy::SettlementPolicy;
use settlegate_rules::target::{MAX_TARGET, normalise};

fn policy() -> SettlementPolicy {
    let v = serde_json::json!({
        "chain_id": 42431, "realm": "Tempo API",
        "recipient": "0x70997970c51812dc3a010c7d01b50e0d17dc79c8",
        "assets": ["0x20c0000000000000000000000000000000000001"],
        "default_price": {"asset": "0x20c0000000000000000000000000000000000001", "amount": "1000000"},
        "prices": [
            {"resource": "GET /reports/*", "amount": "2500000"},
            {"resource": "GET /dear", "amount": "5000000"},
            {"resource": "* /cheap/*", "amount": "100000"},
            {"resource": "GET /a*", "amount": "300"}
        ]
    });
    SettlementPolicy::from_value(Some(&v)).unwrap()
}

fuzz_target!(|data: &[u8]| {
    let Ok(target) = std::str::from_utf8(data) else {
        return;
    };
    let normal = normalise(target);

    // Letter case never changes the outcome.
    let upper = target.to_ascii_uppercase();
    assert_eq!(normalise(&upper).ok(), normal.as_ref().ok().cloned(), "case: {target:?}");
    assert_eq!(normalise(&upper).is_ok(), normal.is_ok());

    let Ok(normal) = normal else {
        return;
    };
    let n = normal.as_str();
    // One meaning left: nothing an upstream could read two ways.
    assert!(n.starts_with('/'), "{n:?}");
    assert!(!n.contains(['?', '#', ';', '\\']), "{n:?}");
    assert!(!n.bytes().any(|b| b.is_ascii_uppercase() || !(0x21..=0x7e).contains(&b)), "{n:?}");
    assert!(n == "/" || !n.ends_with('/'), "{n:?}");
    for segment in n.split('/').skip(1) {
        assert!(n == "/" || !(segment.is_empty() || segment == "." || segment == ".."), "{n:?}");
    }
    let mut escapes = n.match_indices('%');
    while let Some((i, _)) = escapes.next() {
        let hex = &n[i + 1..i + 3];
        let byte = u8::from_str_radix(hex, 16).unwrap();
        assert!(byte == b' ' || byte >= 0x80, "an escape left decodable: {n:?}");
        assert_eq!(hex, hex.to_ascii_lowercase());
    }
    // A fixed point, and the other spellings of the same path.
    assert_eq!(normalise(n).as_ref(), Ok(&normal), "fixed point: {target:?}");
    let path_end = target.find(['?', '#']).unwrap_or(target.len());
    let (path, query) = target.split_at(path_end);
    assert_eq!(normalise(path).as_ref(), Ok(&normal), "the query: {target:?}");
    // (A longer spelling past the length limit is refused, never priced.)
    let slashed = format!("{path}/{query}");
    if path != "/" && !path.ends_with('/') && slashed.len() <= MAX_TARGET {
        assert_eq!(normalise(&slashed).as_ref(), Ok(&normal), "a trailing slash: {target:?}");
    }
    // the first letter or digit that is not part of an escape
    let bytes = path.as_bytes();
    let mut i = 0;
    let mut letter = None;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            i += 3;
        } else if bytes[i].is_ascii_alphanumeric() {
            letter = Some(i);
            break;
        } else {
            i += 1;
        }
    }
    if let Some(i) = letter {
        let encoded = format!("{}%{:02X}{}", &path[..i], path.as_bytes()[i], &path[i + 1..]);
        if encoded.len() <= MAX_TARGET {
            assert_eq!(normalise(&encoded).as_ref(), Ok(&normal), "an encoded letter: {target:?}");
        } else {
            assert!(normalise(&encoded).is_err(), "past the limit: {target:?}");
        }
    }
    // The price of every spelling is the price of its normal form.
    let p = policy();
    for method in ["GET", "HEAD", "POST"] {
        assert_eq!(
            p.price_for(Some(&format!("{method} {target}"))),
            p.price_for(Some(&format!("{method} {n}"))),
            "{method} {target:?}"
        );
    }
    assert_eq!(
        p.price_for(Some(&format!("HEAD {target}"))),
        p.price_for(Some(&format!("GET {target}"))),
        "HEAD {target:?}"
    );
});
