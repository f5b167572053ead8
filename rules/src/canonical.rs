//! Strict JSON parsing and canonical bytes for signed documents.
//!
//! A signature is only as good as the bytes it covers, so the parser refuses
//! anything that two JSON implementations could read differently:
//! duplicate object keys (which value wins?), non-integer numbers and integers
//! beyond 2^53 (JavaScript rounds them), keys that look like integers
//! (JavaScript objects enumerate those first, breaking the sort order), the
//! key `__proto__` (JavaScript drops it), and lone surrogates (serde_json
//! already refuses those).
//!
//! Canonical bytes (Mathison's genome signing rule): drop the top-level `signature` and
//! `signatures`, sort object keys recursively by byte order, keep array
//! order, compact separators, UTF-8. The writer sorts explicitly instead of
//! trusting `serde_json::Map`'s iteration order, which changes to insertion
//! order when any crate in the build enables serde_json's `preserve_order`.
//!
//! [`canonical_value_bytes`] is RFC 8785 (JCS), what the `Payment` scheme's
//! `request`, `opaque` and receipts are: keys sorted by UTF-16 code units
//! (a character above U+FFFF sorts as its surrogate pair, before U+E000),
//! numbers written as ECMAScript writes the nearest double (integers beyond
//! 2^53 lose digits, `1e21` is `1e+21`, `-0` is `0`). The genome's rule
//! differs from it only where [`parse_strict`] refuses the input anyway
//! (floats, unsafe integers) or for keys mixing U+E000..U+FFFF with
//! characters above U+FFFF, where Mathison's byte order stays the rule.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Largest integer that every JSON implementation represents exactly.
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// Top-level fields that carry signatures and are therefore not signed.
pub const SIGNATURE_FIELDS: [&str; 2] = ["signature", "signatures"];

/// Why a document could not be parsed strictly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not JSON at all (syntax error, truncated input, not UTF-8).
    #[error("not valid JSON: {0}")]
    Syntax(String),
    /// JSON, but ambiguous or outside the accepted subset.
    #[error("{0}")]
    Ambiguous(String),
    /// The top-level value is not an object.
    #[error("the document must be a JSON object")]
    NotAnObject,
}

/// Parses `bytes` as JSON, refusing every construct listed in the module docs.
pub fn parse_strict(bytes: &[u8]) -> Result<Map<String, Value>, ParseError> {
    let StrictValue(value) = serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ParseError::Ambiguous(e.to_string()),
        _ => ParseError::Syntax(e.to_string()),
    })?;
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(ParseError::NotAnObject),
    }
}

/// Canonical bytes of a document: see the module docs.
pub fn canonical_bytes(doc: &Map<String, Value>) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    let keys = sorted_keys(doc, KeyOrder::Utf8Bytes)
        .into_iter()
        .filter(|k| !SIGNATURE_FIELDS.contains(&k.as_str()));
    write_object(&mut out, keys.map(|k| (k, &doc[k])), KeyOrder::Utf8Bytes);
    out
}

/// RFC 8785 (JCS) bytes of `value`: see the module docs.
pub fn canonical_value_bytes(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write_value(&mut out, value, KeyOrder::Utf16Units);
    out
}

/// How object keys are sorted: the genome's byte order, or JCS's UTF-16
/// code units. The two agree unless a key mixes U+E000..U+FFFF with
/// characters above U+FFFF.
#[derive(Clone, Copy)]
enum KeyOrder {
    Utf8Bytes,
    Utf16Units,
}

fn sorted_keys(map: &Map<String, Value>, order: KeyOrder) -> Vec<&String> {
    let mut keys: Vec<&String> = map.keys().collect();
    match order {
        KeyOrder::Utf8Bytes => keys.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes())),
        KeyOrder::Utf16Units => keys.sort_unstable_by(|a, b| a.encode_utf16().cmp(b.encode_utf16())),
    }
    keys
}

fn write_value(out: &mut Vec<u8>, value: &Value, order: KeyOrder) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => out.extend_from_slice(number(n).as_bytes()),
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item, order);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let keys = sorted_keys(map, order);
            write_object(out, keys.into_iter().map(|k| (k, &map[k])), order);
        }
    }
}

fn write_object<'a>(out: &mut Vec<u8>, entries: impl Iterator<Item = (&'a String, &'a Value)>, order: KeyOrder) {
    out.push(b'{');
    for (i, (key, value)) in entries.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_string(out, key);
        out.push(b':');
        write_value(out, value, order);
    }
    out.push(b'}');
}

/// A JSON number as JCS writes it: a safe integer as its digits, anything
/// else as ECMAScript writes the nearest double. (The genome's numbers are
/// safe integers, which both rules write alike.)
fn number(n: &Number) -> String {
    if let Some(u) = n.as_u64().filter(|u| *u <= MAX_SAFE_INTEGER) {
        return u.to_string();
    }
    if let Some(i) = n.as_i64().filter(|i| i.unsigned_abs() <= MAX_SAFE_INTEGER) {
        return i.to_string();
    }
    match n.as_f64() {
        Some(f) => ecmascript_number(f),
        // Only with serde_json's `arbitrary_precision`, which no crate here
        // enables: the literal as it came.
        None => n.to_string(),
    }
}

/// ECMAScript's `Number::toString` of a finite double (ECMA-262
/// section 6.1.6.1.20, which RFC 8785 section 3.2.2.3 adopts): the
/// shortest digits that round-trip, positional while the decimal exponent
/// is in (-6, 21], exponential otherwise, with an explicit exponent sign.
pub fn ecmascript_number(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        // Both zeros are "0"; JSON has no NaN or infinity (serde_json's
        // `Number` cannot hold one).
        return "0".into();
    }
    let sign = if v < 0.0 { "-" } else { "" };
    // Rust's `{:e}` without a precision writes the shortest round-trip
    // digits: `d[.ddd]e<exponent>`.
    let sci = format!("{:e}", v.abs());
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let k = digits.len() as i32;
    let n = exponent + 1;
    let body = if k <= n && n <= 21 {
        format!("{digits}{}", "0".repeat((n - k) as usize))
    } else if 0 < n && n <= 21 {
        format!("{}.{}", &digits[..n as usize], &digits[n as usize..])
    } else if -6 < n && n <= 0 {
        format!("0.{}{digits}", "0".repeat(n.unsigned_abs() as usize))
    } else {
        let e = n - 1;
        let e_sign = if e < 0 { '-' } else { '+' };
        match digits.split_at(1) {
            (d, "") => format!("{d}e{e_sign}{}", e.unsigned_abs()),
            (d, rest) => format!("{d}.{rest}e{e_sign}{}", e.unsigned_abs()),
        }
    };
    format!("{sign}{body}")
}

/// serde_json escapes exactly what `JSON.stringify` escapes: `"`, `\`, and
/// control characters (`\b \t \n \f \r`, otherwise `\u00XX` in lower case);
/// everything else, `/` and U+2028 included, is written as raw UTF-8.
fn write_string(out: &mut Vec<u8>, s: &str) {
    // unwrap: serialising a &str into a Vec cannot fail.
    serde_json::to_writer(&mut *out, s).unwrap();
}

/// A `serde_json::Value` that only deserialises from unambiguous JSON.
struct StrictValue(Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        if v.unsigned_abs() > MAX_SAFE_INTEGER {
            return Err(E::custom(format!("integer {v} is beyond 2^53 - 1")));
        }
        Ok(Value::Number(Number::from(v)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        if v > MAX_SAFE_INTEGER {
            return Err(E::custom(format!("integer {v} is beyond 2^53 - 1")));
        }
        Ok(Value::Number(Number::from(v)))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Err(E::custom(format!(
            "non-integer number {v} (amounts are decimal strings)"
        )))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictValue(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut entries = BTreeMap::new();
        while let Some(key) = access.next_key::<String>()? {
            check_key(&key).map_err(de::Error::custom)?;
            let StrictValue(value) = access.next_value()?;
            if entries.insert(key.clone(), value).is_some() {
                return Err(de::Error::custom(format!("duplicate key {key:?}")));
            }
        }
        Ok(Value::Object(entries.into_iter().collect()))
    }
}

/// Why an object key has no canonical form that JavaScript would keep.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
enum KeyError {
    #[error("the key \"__proto__\" is not allowed")]
    Proto,
    #[error("the key {0:?} looks like an integer, which JavaScript would reorder")]
    Integer(String),
}

fn check_key(key: &str) -> Result<(), KeyError> {
    if key == "__proto__" {
        return Err(KeyError::Proto);
    }
    if !key.is_empty() && key.bytes().all(|b| b.is_ascii_digit()) {
        return Err(KeyError::Integer(key.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_javascript_would_drop_or_reorder_are_refused() {
        assert_eq!(check_key("__proto__"), Err(KeyError::Proto));
        assert_eq!(KeyError::Proto.to_string(), r#"the key "__proto__" is not allowed"#);
        assert_eq!(check_key("42"), Err(KeyError::Integer("42".into())));
        assert_eq!(
            check_key("42").unwrap_err().to_string(),
            r#"the key "42" looks like an integer, which JavaScript would reorder"#
        );
        assert_eq!(check_key(""), Ok(()));
        assert_eq!(check_key("4a"), Ok(()));
    }

    fn canon(json: &str) -> String {
        String::from_utf8(canonical_bytes(&parse_strict(json.as_bytes()).unwrap())).unwrap()
    }

    #[test]
    fn nested_objects_are_sorted_and_arrays_keep_order() {
        let input = r#"{ "b": 1, "a": { "d": [3, 1, {"z": true, "y": null}], "c": "x" } }"#;
        assert_eq!(canon(input), r#"{"a":{"c":"x","d":[3,1,{"y":null,"z":true}]},"b":1}"#);
    }

    #[test]
    fn signature_fields_are_dropped_only_at_top_level() {
        let input = r#"{"signature":{"a":1},"signatures":[1],"x":{"signature":"kept","signatures":[]}}"#;
        assert_eq!(canon(input), r#"{"x":{"signature":"kept","signatures":[]}}"#);
    }

    #[test]
    fn unicode_is_raw_utf8_and_controls_are_escaped_like_json_stringify() {
        // \u00e9 arrives escaped and leaves raw; U+2028 and "/" stay raw; a
        // control character leaves as a lower-case \u escape.
        let input = "{\"s\":\"caf\\u00e9 \u{2028} / \\u0001 \\n \\\" \\\\ \u{1F600}\"}";
        assert_eq!(
            canon(input),
            "{\"s\":\"café \u{2028} / \\u0001 \\n \\\" \\\\ \u{1F600}\"}"
        );
    }

    #[test]
    fn keys_sort_by_utf8_bytes() {
        // Byte order puts U+FF5E (EF BD 9E) before U+1F600 (F0 9F 98 80);
        // upper case before lower case; a prefix before its extensions.
        let input = "{\"\u{1F600}\":1,\"\u{FF5E}\":2,\"é\":3,\"b\":4,\"B\":5,\"ab\":6,\"a\":7}";
        assert_eq!(
            canon(input),
            "{\"B\":5,\"a\":7,\"ab\":6,\"b\":4,\"é\":3,\"\u{FF5E}\":2,\"\u{1F600}\":1}"
        );
    }

    #[test]
    fn whitespace_and_key_order_do_not_change_the_bytes() {
        let a = canon("{\n  \"a\" : [ 1 , 2 ],\n  \"b\" : { \"y\" : 1, \"x\" : 2 }\n}");
        let b = canon(r#"{"b":{"x":2,"y":1},"a":[1,2]}"#);
        assert_eq!(a, b);
        assert_eq!(a, r#"{"a":[1,2],"b":{"x":2,"y":1}}"#);
    }

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        for doc in [
            r#"{"a":1,"a":1}"#,
            r#"{"x":{"a":1,"b":2,"a":3}}"#,
            r#"{"x":[{"k":1,"k":2}]}"#,
        ] {
            let err = parse_strict(doc.as_bytes()).unwrap_err();
            assert!(
                matches!(err, ParseError::Ambiguous(ref m) if m.contains("duplicate key")),
                "{doc}: {err}"
            );
        }
    }

    #[test]
    fn floats_and_unsafe_integers_are_refused() {
        for doc in [
            r#"{"a":1.0}"#,
            r#"{"a":1e3}"#,
            r#"{"a":[0.5]}"#,
            r#"{"a":9007199254740992}"#,
            r#"{"a":-9007199254740992}"#,
            r#"{"a":123456789012345678901234567890}"#,
        ] {
            assert!(
                matches!(parse_strict(doc.as_bytes()), Err(ParseError::Ambiguous(_))),
                "{doc}"
            );
        }
        assert!(parse_strict(br#"{"a":9007199254740991,"b":-9007199254740991}"#).is_ok());
    }

    #[test]
    fn integer_like_keys_and_proto_are_refused() {
        for doc in [r#"{"1":true}"#, r#"{"x":{"007":true}}"#, r#"{"__proto__":{}}"#] {
            assert!(
                matches!(parse_strict(doc.as_bytes()), Err(ParseError::Ambiguous(_))),
                "{doc}"
            );
        }
        assert!(parse_strict(br#"{"1a":true,"-1":true,"":true}"#).is_ok());
    }

    #[test]
    fn numbers_are_written_as_ecmascript_writes_them() {
        for (v, js) in [
            (0.0, "0"),
            (-0.0, "0"),
            (1.5e-7, "1.5e-7"),
            (1.23e-18, "1.23e-18"),
            (123456.789, "123456.789"),
            (-1e-6, "-0.000001"),
            (1.25e21, "1.25e+21"),
            (9007199254740993.0, "9007199254740992"),
            (f64::MAX, "1.7976931348623157e+308"),
            (f64::MIN_POSITIVE, "2.2250738585072014e-308"),
        ] {
            assert_eq!(ecmascript_number(v), js, "{v:e}");
        }
        // Safe integers keep their digits; beyond 2^53, the double's.
        let n = |u: u64| number(&Number::from(u));
        assert_eq!(n(MAX_SAFE_INTEGER), "9007199254740991");
        assert_eq!(n(u64::MAX), "18446744073709552000");
        assert_eq!(number(&Number::from(i64::MIN)), "-9223372036854776000");
    }

    #[test]
    fn jcs_sorts_keys_by_utf16_units_and_the_genome_by_bytes() {
        let v: Value = serde_json::from_str("{\"\u{e000}\":1,\"\u{10000}\":2,\"a\":3}").unwrap();
        assert_eq!(
            String::from_utf8(canonical_value_bytes(&v)).unwrap(),
            "{\"a\":3,\"\u{10000}\":2,\"\u{e000}\":1}"
        );
        assert_eq!(
            canon("{\"\u{e000}\":1,\"\u{10000}\":2,\"a\":3}"),
            "{\"a\":3,\"\u{e000}\":1,\"\u{10000}\":2}"
        );
    }

    #[test]
    fn syntax_errors_lone_surrogates_and_non_objects_are_told_apart() {
        assert!(matches!(parse_strict(b"{\"a\":"), Err(ParseError::Syntax(_))));
        assert!(matches!(parse_strict(b"\xff"), Err(ParseError::Syntax(_))));
        assert!(parse_strict(br#"{"a":"\ud800"}"#).is_err());
        assert_eq!(parse_strict(b"[1]"), Err(ParseError::NotAnObject));
    }
}
