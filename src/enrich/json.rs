//! JSON parsing that never turns a decimal into a float.
//!
//! Nexio's records carry money as JSON numbers in major units (`"amount":
//! 1.15`). `serde_json::Value` (without `arbitrary_precision`, which this
//! crate does not enable) stores such a number as an `f64`, and the literal
//! text is gone: the amount could come back as `1.1499999999999999`. So
//! look-up bodies are parsed with [`parse_exact`]: it walks the document with
//! `RawValue`, keeps integers that fit `i64`/`u64` as JSON numbers, and keeps
//! every other number (`1.15`, `1e3`, huge integers) as a **string holding
//! its exact literal**. Vendors read amounts from that text when they apply a
//! record ([`crate::vendors::Vendor::apply_lookup`]).
//! The price is that such numbers appear as strings in `vendor_data.lookup`.

use std::collections::BTreeMap;

use serde_json::value::RawValue;
use serde_json::{Map, Number, Value};

/// Deeper documents are refused; Nexio records nest a handful of levels, and
/// each level re-scans its subtree, so the cap also bounds the work.
const MAX_DEPTH: usize = 64;

/// Parses JSON into a `Value` whose non-integer numbers are strings holding
/// their exact literal text; see the module doc for why.
pub fn parse_exact(bytes: &[u8]) -> Result<Value, String> {
    let raw: &RawValue = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    convert(raw, 0)
}

fn convert(raw: &RawValue, depth: usize) -> Result<Value, String> {
    if depth > MAX_DEPTH {
        return Err(format!("nested deeper than {MAX_DEPTH} levels"));
    }
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'{') => {
            let members: BTreeMap<String, &RawValue> =
                serde_json::from_str(text).map_err(|e| e.to_string())?;
            let mut map = Map::new();
            for (key, value) in members {
                map.insert(key, convert(value, depth + 1)?);
            }
            Ok(Value::Object(map))
        }
        Some(b'[') => {
            let items: Vec<&RawValue> = serde_json::from_str(text).map_err(|e| e.to_string())?;
            items
                .into_iter()
                .map(|item| convert(item, depth + 1))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array)
        }
        Some(b'-' | b'0'..=b'9') => Ok(if let Ok(n) = text.parse::<i64>() {
            Value::Number(Number::from(n))
        } else if let Ok(n) = text.parse::<u64>() {
            Value::Number(Number::from(n))
        } else {
            Value::String(text.to_owned())
        }),
        _ => serde_json::from_str(text).map_err(|e| e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_keep_their_literal_and_integers_stay_numbers() {
        let v = parse_exact(
            br#" {"amount": 1.15, "tiny": 0.1000000000000000055511151231257827, "id": 211302211,
                 "neg": -5, "big": 123456789012345678901234567890, "exp": 1e3,
                 "nested": [{"a": 2.50}, null, true, "s\u00e9"]} "#,
        )
        .unwrap();
        assert_eq!(v["amount"], "1.15");
        assert_eq!(v["tiny"], "0.1000000000000000055511151231257827");
        assert_eq!(v["id"], 211302211);
        assert!(v["id"].is_i64());
        assert_eq!(v["neg"], -5);
        assert_eq!(v["big"], "123456789012345678901234567890");
        assert_eq!(v["exp"], "1e3");
        assert_eq!(v["nested"][0]["a"], "2.50");
        assert_eq!(v["nested"][1], Value::Null);
        assert_eq!(v["nested"][2], true);
        assert_eq!(v["nested"][3], "sé");
    }

    #[test]
    fn malformed_and_absurdly_deep_documents_are_refused() {
        assert!(parse_exact(b"{\"a\":").is_err());
        assert!(parse_exact(b"{} trailing").is_err());
        assert!(parse_exact(b"").is_err());
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert!(parse_exact(deep.as_bytes()).is_err());
        let ok = format!("{}{}", "[".repeat(20), "]".repeat(20));
        assert!(parse_exact(ok.as_bytes()).is_ok());
    }
}
