//! Shared oracles for hookgate's fuzz targets.
//!
//! Every target must never panic; the mapping targets also check that what
//! would be published is JSON a consumer's parser accepts and carries the
//! envelope fields every consumer relies on.

use hookgate::test_util::{option_sets, verified};
use hookgate::vendors::VendorKind;
use serde_json::Value;
use time::OffsetDateTime;

/// Maps `data` as an authenticated body of `kind`, exactly as the pipeline
/// does (mapped, or `unmapped` with the vendor's redacted raw body), and
/// checks the serialized event.
pub fn map_and_check(kind: VendorKind, data: &[u8]) {
    let verified = verified(data.to_vec());
    let received = OffsetDateTime::from_unix_timestamp(hookgate::test_util::RECEIVED_AT_UNIX)
        .expect("valid time");
    for options in option_sets() {
        let event =
            hookgate::pipeline::normalize(kind, "fuzz-source", &options, &verified, received);
        let mapped = event.event_type != hookgate::canonical::UNMAPPED;
        let body = hookgate::publish::Outgoing::from_event(&event).body;
        let value: Value = serde_json::from_slice(&body).unwrap_or_else(|e| {
            panic!("published event is not JSON a consumer can parse ({e}); mapped={mapped}")
        });
        check_envelope(&value, mapped);
    }
}

fn check_envelope(event: &Value, mapped: bool) {
    assert_eq!(event["specversion"], "1.0");
    let id = event["id"].as_str().expect("id is a string");
    assert_eq!(id.len(), 36, "id is UUID-shaped: {id}");
    let kind = event["type"].as_str().expect("type is a string");
    assert!(!kind.is_empty(), "type is never empty");
    assert_eq!(
        kind == "unmapped",
        !mapped,
        "type unmapped iff mapping failed"
    );
    for key in ["time", "source", "vendor"] {
        assert!(event[key].is_string(), "{key} is a string");
    }
    let data = &event["data"];
    assert!(data["received_at"].is_string());
    assert!(data["occurred_at"].is_string());
    assert!(data["vendor_event_id"].is_string());
    if let Some(amount) = data.get("amount") {
        assert!(amount["value"].is_string(), "amount.value is a string");
        assert!(amount["minor"].is_i64(), "amount.minor is an integer");
    }
}

/// The card-number guard over any JSON document: what it publishes parses,
/// and no string in it (nor the raw body of an `unmapped` event, as JSON or
/// text) still holds a standalone, Luhn-valid run of 13 to 19 digits.
pub fn guard_and_check(data: &[u8]) {
    let Ok(document) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    // The cheap test that lets most events skip the full scan never says
    // "no card number" where the scan masks one (a raw body, which hides
    // digits in escapes or base64, always gets the scan).
    let serialized = serde_json::to_vec(&document).expect("a JSON value serializes");
    let has_raw_body = document.pointer("/data/unmapped").is_some();
    let (published, masked) = hookgate::guard::masked_json(document);
    assert!(
        masked == 0 || has_raw_body || hookgate::guard::may_hold_card_number(&serialized),
        "the guard masked {masked} card numbers its cheap test did not see"
    );
    let mut published: Value =
        serde_json::from_slice(&published).expect("the guard's output is JSON");
    // What the guard leaves alone: a UUID-shaped event id, the parsed
    // amount, the configured source id.
    if let Some(envelope) = published.as_object_mut() {
        if envelope
            .get("id")
            .is_some_and(hookgate::guard::is_uuid_shaped)
        {
            envelope.remove("id");
        }
    }
    if let Some(data) = published
        .pointer_mut("/data")
        .and_then(Value::as_object_mut)
    {
        data.remove("amount");
        data.remove("source_id");
    }
    if let Some(envelope) = published.as_object_mut() {
        envelope.remove("source");
    }
    assert_no_card_number(&published);
    if let Some(raw) = published
        .pointer("/data/unmapped/raw_body")
        .and_then(Value::as_str)
    {
        if let Ok(inner) = serde_json::from_str::<Value>(raw) {
            assert_no_card_number(&inner);
        }
    }
}

fn assert_no_card_number(value: &Value) {
    match value {
        Value::String(s) => assert!(!holds_card_number(s), "card number left in {s:?}"),
        Value::Number(n) => assert!(!holds_card_number(&n.to_string()), "card number left: {n}"),
        Value::Array(items) => items.iter().for_each(assert_no_card_number),
        Value::Object(map) => map.values().for_each(assert_no_card_number),
        Value::Bool(_) | Value::Null => {}
    }
}

/// Written apart from the guard: every standalone run of digits with single
/// space or dash separators, 13 to 19 digits long, that passes Luhn.
fn holds_card_number(text: &str) -> bool {
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if !chars[i].is_ascii_digit()
            || (i > 0 && chars[i - 1].is_alphanumeric() && chars[i - 1].is_ascii())
        {
            i += 1;
            continue;
        }
        let mut digits = Vec::new();
        let mut j = i;
        while j < chars.len() {
            if chars[j].is_ascii_digit() {
                digits.push(chars[j].to_digit(10).unwrap());
                j += 1;
            } else if matches!(chars[j], ' ' | '-')
                && chars.get(j + 1).is_some_and(char::is_ascii_digit)
            {
                j += 1;
            } else {
                break;
            }
        }
        let standalone = chars
            .get(j)
            .is_none_or(|c| !(c.is_ascii() && c.is_alphanumeric()));
        if standalone && (13..=19).contains(&digits.len()) {
            let sum: u32 = digits
                .iter()
                .rev()
                .enumerate()
                .map(|(k, &d)| {
                    if k % 2 == 1 {
                        if d * 2 > 9 {
                            d * 2 - 9
                        } else {
                            d * 2
                        }
                    } else {
                        d
                    }
                })
                .sum();
            if sum % 10 == 0 {
                return true;
            }
        }
        i = j.max(i + 1);
    }
    false
}
