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
    let mut keys: Vec<&String> = doc.keys().filter(|k| !SIGNATURE_FIELDS.contains(&k.as_str())).collect();
    keys.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    write_object(&mut out, keys.into_iter().map(|k| (k, &doc[k])));
    out
}

/// Compact JSON with object keys sorted by byte order, at every depth.
pub fn canonical_value_bytes(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write_value(&mut out, value);
    out
}

fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => out.extend_from_slice(n.to_string().as_bytes()),
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            write_object(out, keys.into_iter().map(|k| (k, &map[k])));
        }
    }
}

fn write_object<'a>(out: &mut Vec<u8>, entries: impl Iterator<Item = (&'a String, &'a Value)>) {
    out.push(b'{');
    for (i, (key, value)) in entries.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_string(out, key);
        out.push(b':');
        write_value(out, value);
    }
    out.push(b'}');
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
    fn syntax_errors_lone_surrogates_and_non_objects_are_told_apart() {
        assert!(matches!(parse_strict(b"{\"a\":"), Err(ParseError::Syntax(_))));
        assert!(matches!(parse_strict(b"\xff"), Err(ParseError::Syntax(_))));
        assert!(parse_strict(br#"{"a":"\ud800"}"#).is_err());
        assert_eq!(parse_strict(b"[1]"), Err(ParseError::NotAnObject));
    }
}
