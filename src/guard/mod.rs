//! The last check before anything leaves for the bus: no full card numbers.
//!
//! Vendors send masked card numbers (`4444xxxxxxxxx7779`), but nothing stops
//! a merchant's custom field, an order note or a misconfigured vendor from
//! carrying a full primary account number (PAN). Publishing one would put the
//! whole event bus in PCI DSS scope. So every string and number in the
//! vendor's data is scanned for a *standalone* run of 13 to 19 digits (single
//! spaces or dashes between groups allowed, no letter or digit touching either
//! end) that passes the Luhn check, and such a run is replaced by asterisks
//! and its last four digits (`************1111`).
//!
//! The guard runs on the whole event as it is serialized for the bus
//! ([`masked_event_json`]): the vendor's data, the mapped fields (`subject`,
//! `object.id`, `vendor_event_id`, `merchant.id`, …) and an `unmapped`
//! event's raw body alike. A raw body that is JSON is parsed, masked and
//! written back (so `\u0034`-escaped digits are seen, and a numeric card
//! number becomes a masked string: the body stays JSON `remap` can read); a
//! raw body kept as base64 (not UTF-8) is decoded and masked byte-wise.
//!
//! Standalone matters: a 64-hex event id may contain long digit runs, but they
//! touch letters and are not card numbers. Luhn matters: order numbers and
//! timestamps of the right length fail it nine times in ten. A false positive
//! costs a masked id in `vendor_data`; a false negative costs a PCI incident,
//! so the rule errs on the side of masking.

use std::borrow::Cow;

use base64::Engine;
use serde_json::{Map, Value};

use crate::canonical::Event;

/// `event` serialized as it is published, with every full card number in it
/// masked; returns the bytes and how many were masked. Events with no
/// standalone run of 13 or more digits anywhere ([`may_hold_card_number`])
/// and no raw body (nearly all) are serialized once and returned as they
/// are; others go through [`masked_json`].
pub fn masked_event_json(event: &Event) -> (Vec<u8>, usize) {
    let plain = serde_json::to_vec(event).expect("canonical events always serialize");
    // A raw body may hide digits in escapes or base64: always look inside.
    if event.data.facts.unmapped.is_none() && !may_hold_card_number(&plain) {
        return (plain, 0);
    }
    // Built from the event, not parsed back from `plain`: a parser has a
    // depth limit a deep look-up record could reach, a serializer has none.
    // It cannot fail where `to_vec` just succeeded with the same impl.
    match serde_json::to_value(event) {
        Ok(value) => masked_json(value),
        Err(_) => (plain, 0),
    }
}

/// Any event-shaped JSON document serialized with every full card number
/// masked, as [`masked_event_json`] does for an [`Event`]: the same rule for
/// the fuzz target and the tests, which build their documents by hand.
pub fn masked_json(mut value: Value) -> (Vec<u8>, usize) {
    // The event id is hookgate's own UUID-shaped hash, and its last groups
    // can read as a Luhn-valid run of digits: masking it would change the id
    // consumers de-duplicate on (and part it from the AMQP message_id).
    // Everything else is scanned, envelope included.
    let own_id = match value.as_object_mut() {
        Some(envelope) if envelope.get("id").is_some_and(is_uuid_shaped) => envelope.remove("id"),
        _ => None,
    };
    // The source id comes from the config, not from a body, and names the
    // source in `source` and `data.source_id`: an operator may well pick a
    // number for it.
    let own_source = value.as_object_mut().and_then(|e| e.remove("source"));
    let own_source_id = value
        .pointer_mut("/data")
        .and_then(Value::as_object_mut)
        .and_then(|data| data.remove("source_id"));
    // The typed facts (everything in `data` but the vendor's own data and
    // an unmapped body) hold numbers hookgate parsed: amounts (`minor` an
    // integer, `value` its decimal text, as the schema requires), status
    // codes, counts. Masking one would break its type; the vendor's own
    // field stays in `vendor_data`, scanned. Their strings (ids, names) are
    // scanned like everything else.
    let mut typed = Map::new();
    if let Some(data) = value.pointer_mut("/data").and_then(Value::as_object_mut) {
        let keys: Vec<String> = data
            .keys()
            .filter(|k| !matches!(k.as_str(), "vendor_data" | "unmapped"))
            .cloned()
            .collect();
        for key in keys {
            if let Some(fact) = data.remove(&key) {
                typed.insert(key, fact);
            }
        }
    }
    let mut masked = 0;
    if let Some(unmapped) = value.pointer_mut("/data/unmapped") {
        masked += mask_raw_body(unmapped);
    }
    masked += mask_pans(&mut value);
    let mut removed = Vec::new();
    masked += mask_typed_facts(&mut typed, "", &mut removed);
    if !removed.is_empty() {
        // Said where a consumer looks for fields left out, never quoting the value.
        let notes = typed
            .entry("skipped")
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(notes) = notes {
            notes.extend(removed.into_iter().map(|field| {
                serde_json::json!({
                    "field": field,
                    "reason": "looked like a full card number; removed before publishing",
                })
            }));
        }
    }
    if let (Some(id), Some(envelope)) = (own_id, value.as_object_mut()) {
        envelope.insert("id".to_owned(), id);
    }
    if let Some(data) = value.pointer_mut("/data").and_then(Value::as_object_mut) {
        data.extend(typed);
        if let Some(source_id) = own_source_id {
            data.insert("source_id".to_owned(), source_id);
        }
    }
    if let (Some(source), Some(envelope)) = (own_source, value.as_object_mut()) {
        envelope.insert("source".to_owned(), source);
    }
    let body = serde_json::to_vec(&value).expect("a JSON value serializes");
    (body, masked)
}

/// Whether `value` is a string shaped like hookgate's event ids (the guard
/// leaves those alone, as it leaves the numbers hookgate parsed, and the
/// configured source id):
/// 8-4-4-4-12 hexadecimal digits.
pub fn is_uuid_shaped(value: &Value) -> bool {
    // 36 characters is the hyphenated form only (not simple, braced or URN).
    value
        .as_str()
        .is_some_and(|text| text.len() == 36 && uuid::Uuid::try_parse(text).is_ok())
}

/// Masks the strings of typed facts. A parsed number there cannot become
/// a masked string (the schema types it), so a number that holds a card
/// number is removed with its field, and an amount whose `minor` holds one
/// goes whole; `data.amount` itself is left as it is (see above). Each
/// removed field's path under `data` (`settlement.sales_total`) is pushed to
/// `removed`, for `data.skipped`.
fn mask_typed_facts(map: &mut Map<String, Value>, at: &str, removed: &mut Vec<String>) -> usize {
    let top = at.is_empty();
    let path = |key: &str| {
        if top {
            key.to_owned()
        } else {
            format!("{at}.{key}")
        }
    };
    let holds_card = |n: &Value| {
        let mut copy = n.clone();
        mask_pans(&mut copy) > 0
    };
    let is_amount = |v: &Value| v.get("minor").is_some() && v.get("currency").is_some();
    let mut masked = 0;
    map.retain(|key, v| {
        let drop = match v {
            _ if top && key == "amount" => false,
            Value::Number(_) => holds_card(v),
            _ if is_amount(v) => v.get("minor").is_some_and(holds_card),
            _ => false,
        };
        if drop {
            masked += 1;
            removed.push(path(key));
        }
        !drop
    });
    for (key, v) in map.iter_mut() {
        if (top && key == "amount") || is_amount(v) {
            continue;
        }
        masked += match v {
            Value::Object(inner) => mask_typed_facts(inner, &path(key), removed),
            Value::Array(items) => items
                .iter_mut()
                .enumerate()
                .map(|(i, item)| match item {
                    Value::Object(inner) => {
                        mask_typed_facts(inner, &format!("{}[{i}]", path(key)), removed)
                    }
                    Value::Number(_) => 0,
                    other => mask_pans(other),
                })
                .sum(),
            Value::Number(_) => 0,
            other => mask_pans(other),
        };
    }
    masked
}

/// Masks the card numbers of an `unmapped` event's raw body in place, as
/// JSON when it parses, as bytes when it is base64, as text otherwise.
fn mask_raw_body(unmapped: &mut Value) -> usize {
    let is_base64 = unmapped["raw_body_encoding"] == "base64";
    let Some(Value::String(raw)) = unmapped.get_mut("raw_body") else {
        return 0;
    };
    if is_base64 {
        let engine = base64::engine::general_purpose::STANDARD;
        let Ok(bytes) = engine.decode(raw.as_bytes()) else {
            return 0;
        };
        let (masked, n) = mask_bytes(&bytes);
        if n > 0 {
            *raw = engine.encode(masked);
        }
        return n;
    }
    if let Ok(mut doc) = serde_json::from_str::<Value>(raw) {
        let n = mask_pans(&mut doc);
        if n > 0 {
            *raw = serde_json::to_string(&doc).expect("a JSON value serializes");
        }
        return n;
    }
    // Not JSON: digits may still be written as \u0030-\u0039 escapes.
    let decoded = decode_digit_escapes(raw);
    let (masked, n) = mask_text(&decoded);
    if n > 0 {
        *raw = masked.into_owned();
    }
    n
}

/// `text` with `\u0030`…`\u0039` (any hex case) written as the digit.
fn decode_digit_escapes(text: &str) -> Cow<'_, str> {
    if !text.contains("\\u003") && !text.contains("\\U003") {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(['\\']) {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        let digit = tail
            .get(..6)
            .filter(|e| e[1..4].eq_ignore_ascii_case("u00") && e.as_bytes()[4] == b'3')
            .and_then(|e| char::from(e.as_bytes()[5]).to_digit(10));
        match digit {
            Some(d) => {
                out.push(char::from(b'0' + d as u8));
                rest = &tail[6..];
            }
            None => {
                out.push('\\');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// Whether serialized JSON may hold a card number that [`masked_json`]
/// would mask: the cheap test that lets nearly every event be serialized
/// only once. It scans the bytes as [`mask_bytes`] does, with two rules
/// loosened so that it never says no where the masker, which reads the
/// parsed strings, would mask: a run may also start right after an escape
/// (`\n` and `\u001f` end in a letter in the JSON text, but stand for no
/// letter in the string; `\u0001`'s digits even join the run), so no Luhn
/// check and no upper length. A run touching a letter or digit at its end is
/// never a card number, in the text as in the string: hex ids with long digit
/// runs (`…e3000000000000000001`) take the fast path.
pub fn may_hold_card_number(json: &[u8]) -> bool {
    let mut i = 0;
    while i < json.len() {
        let may_start = json[i].is_ascii_digit()
            && (starts_standalone(json, i) || json[i.saturating_sub(6)..i].contains(&b'\\'));
        if !may_start {
            i += 1;
            continue;
        }
        let (end, digits) = digit_run(json, i);
        if digits >= 13 && ends_standalone(json, end) {
            return true;
        }
        i = end.max(i + 1);
    }
    false
}

/// Whether a run starting at `at` has no letter or digit right before it.
fn starts_standalone(bytes: &[u8], at: usize) -> bool {
    at == 0 || !bytes[at - 1].is_ascii_alphanumeric()
}

/// Whether a run ending before `end` has no letter or digit right after it.
fn ends_standalone(bytes: &[u8], end: usize) -> bool {
    end == bytes.len() || !bytes[end].is_ascii_alphanumeric()
}

/// The run of digits starting at `start` (single spaces or dashes between
/// digits allowed): where it ends, and how many digits it holds.
fn digit_run(bytes: &[u8], start: usize) -> (usize, usize) {
    let (mut end, mut digits, mut j) = (start, 0, start);
    while j < bytes.len() {
        if bytes[j].is_ascii_digit() {
            digits += 1;
            j += 1;
            end = j;
        } else if (bytes[j] == b' ' || bytes[j] == b'-')
            && j + 1 < bytes.len()
            && bytes[j + 1].is_ascii_digit()
            && digits > 0
        {
            j += 1;
        } else {
            break;
        }
    }
    (end, digits)
}

/// Masks card-number-like runs everywhere in `value`; returns how many.
pub fn mask_pans(value: &mut Value) -> usize {
    match value {
        Value::String(s) => {
            let (masked, n) = mask_text(s);
            if n > 0 {
                *s = masked.into_owned();
            }
            n
        }
        // An integer under 13 digits cannot hold a card number: most numbers
        // (amounts, counts, ids) are not written out to be scanned.
        Value::Number(n)
            if n.as_i64()
                .map(i64::unsigned_abs)
                .or(n.as_u64())
                .is_some_and(|u| u < SHORTEST_PAN) =>
        {
            0
        }
        Value::Number(n) => {
            let text = n.to_string();
            let (masked, count) = mask_text(&text);
            if count > 0 {
                *value = Value::String(masked.into_owned());
            }
            count
        }
        Value::Array(items) => items.iter_mut().map(mask_pans).sum(),
        Value::Object(map) => map.values_mut().map(mask_pans).sum(),
        Value::Bool(_) | Value::Null => 0,
    }
}

/// The smallest number with 13 digits, the shortest card number masked.
const SHORTEST_PAN: u64 = 1_000_000_000_000;

/// Masks card-number-like runs in a text; returns the new text and how many.
/// Text without one (nearly all of it) is returned borrowed: the guard scans
/// every string of every event, and should not copy each one to do so.
pub fn mask_text(text: &str) -> (Cow<'_, str>, usize) {
    match mask_bytes(text.as_bytes()) {
        (Cow::Borrowed(_), n) => (Cow::Borrowed(text), n),
        (Cow::Owned(bytes), n) => (
            Cow::Owned(String::from_utf8(bytes).expect("only ASCII digits are replaced")),
            n,
        ),
    }
}

/// [`mask_text`] over bytes that need not be UTF-8 (a raw body kept as
/// base64): runs are ASCII, so the bytes around them are left as they are.
pub fn mask_bytes(bytes: &[u8]) -> (Cow<'_, [u8]>, usize) {
    let mut out: Vec<u8> = Vec::new();
    let mut count = 0;
    let mut i = 0;
    let mut copied = 0;
    while i < bytes.len() {
        if !(bytes[i].is_ascii_digit() && starts_standalone(bytes, i)) {
            i += 1;
            continue;
        }
        let (end, digits) = digit_run(bytes, i);
        let run = &bytes[i..end];
        if ends_standalone(bytes, end) && (13..=19).contains(&digits) && luhn(run) {
            let all: Vec<u8> = run.iter().copied().filter(u8::is_ascii_digit).collect();
            if count == 0 {
                out.reserve(bytes.len());
            }
            out.extend_from_slice(&bytes[copied..i]);
            out.extend(std::iter::repeat_n(b'*', all.len() - 4));
            out.extend_from_slice(&all[all.len() - 4..]);
            copied = end;
            count += 1;
        }
        i = end.max(i + 1);
    }
    if count == 0 {
        return (Cow::Borrowed(bytes), 0);
    }
    out.extend_from_slice(&bytes[copied..]);
    (Cow::Owned(out), count)
}

/// The Luhn checksum over the digits of `run` (separators ignored).
fn luhn(run: &[u8]) -> bool {
    let mut sum = 0;
    for (k, d) in run
        .iter()
        .copied()
        .filter(u8::is_ascii_digit)
        .rev()
        .enumerate()
    {
        let mut v = u32::from(d - b'0');
        if k % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum % 10 == 0
}

#[cfg(test)]
mod tests;
