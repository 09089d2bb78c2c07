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
//! Standalone matters: a 64-hex event id may contain long digit runs, but they
//! touch letters and are not card numbers. Luhn matters: order numbers and
//! timestamps of the right length fail it nine times in ten. A false positive
//! costs a masked id in `vendor_data`; a false negative costs a PCI incident,
//! so the rule errs on the side of masking.

use std::borrow::Cow;

use serde_json::Value;

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
    let bytes = text.as_bytes();
    let mut out = String::new();
    let mut count = 0;
    let mut i = 0;
    let mut copied = 0;
    while i < bytes.len() {
        let starts_run =
            bytes[i].is_ascii_digit() && (i == 0 || !bytes[i - 1].is_ascii_alphanumeric());
        if !starts_run {
            i += 1;
            continue;
        }
        // Extend over digits with single space/dash separators between them.
        let mut end = i;
        let mut digits = 0;
        let mut j = i;
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
        let standalone = end == bytes.len() || !bytes[end].is_ascii_alphanumeric();
        let run = &text[i..end];
        if standalone && (13..=19).contains(&digits) && luhn(run) {
            let all: Vec<u8> = run.bytes().filter(u8::is_ascii_digit).collect();
            if count == 0 {
                out.reserve(text.len());
            }
            out.push_str(&text[copied..i]);
            out.extend(std::iter::repeat_n('*', all.len() - 4));
            out.push_str(std::str::from_utf8(&all[all.len() - 4..]).expect("ASCII digits"));
            copied = end;
            count += 1;
        }
        i = end.max(i + 1);
    }
    if count == 0 {
        return (Cow::Borrowed(text), 0);
    }
    out.push_str(&text[copied..]);
    (Cow::Owned(out), count)
}

/// The Luhn checksum over the digits of `run` (separators ignored).
fn luhn(run: &str) -> bool {
    let mut sum = 0;
    for (k, d) in run.bytes().filter(u8::is_ascii_digit).rev().enumerate() {
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
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn full_card_numbers_are_masked_to_their_last_four() {
        assert_eq!(
            mask_text("4111111111111111"),
            (Cow::from("************1111"), 1)
        );
        assert_eq!(
            mask_text("card 4111 1111 1111 1111 ok"),
            (Cow::from("card ************1111 ok"), 1)
        );
        assert_eq!(
            mask_text("5500-0000-0000-0004"),
            (Cow::from("************0004"), 1)
        );
        // Amex, 15 digits.
        assert_eq!(mask_text("378282246310005").1, 1);
    }

    #[test]
    fn masked_numbers_ids_and_non_luhn_runs_are_left_alone() {
        for text in [
            "4444xxxxxxxxx7779",
            "c088bc2884a2c3b4043991b04d96ceda7c65043778233dedb26bfd5853705dfd",
            "4111111111111112",        // fails Luhn
            "20452842203",             // 11 digits
            "41111111111111111111",    // 20 digits
            "abc4111111111111111",     // touches a letter
            "2024-06-24T16:20:02.393", // a date
        ] {
            assert_eq!(mask_text(text), (Cow::Borrowed(text), 0), "{text}");
        }
    }

    #[test]
    fn numbers_and_nested_values_are_scanned() {
        let mut v = json!({
            "note": "pay with 4111111111111111 please",
            "nested": [{ "pan": 4012888888881881u64 }],
            "short_visa": 4222222222222u64,
            "negative": -4222222222222i64,
            "amount": 600,
            "id": "6679c388e32ac6f528894a8f"
        });
        assert_eq!(mask_pans(&mut v), 4);
        assert_eq!(v["note"], "pay with ************1111 please");
        assert_eq!(v["nested"][0]["pan"], "************1881");
        assert_eq!(v["short_visa"], "*********2222");
        assert_eq!(v["negative"], "-*********2222");
        assert_eq!(v["amount"], 600);
        assert_eq!(v["id"], "6679c388e32ac6f528894a8f");
    }
}
