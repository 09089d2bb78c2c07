//! The guard's rules, case by case: what is masked, what is left alone.

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

fn published(event: &Value) -> (Value, usize) {
    let (bytes, n) = masked_json(event.clone());
    (serde_json::from_slice(&bytes).expect("still JSON"), n)
}

#[test]
fn mapped_fields_are_scanned_not_only_the_vendor_data() {
    let event = json!({
        "subject": "4111111111111111",
        "data": { "object": { "id": "4012888888881881" }, "vendor_event_id": "x 5500-0000-0000-0004" }
    });
    let (out, n) = published(&event);
    assert_eq!(n, 3);
    assert_eq!(out["subject"], "************1111");
    assert_eq!(out["data"]["object"]["id"], "************1881");
    assert_eq!(out["data"]["vendor_event_id"], "x ************0004");
}

#[test]
fn an_event_without_long_digit_runs_is_serialized_once_and_untouched() {
    let event = json!({ "id": "c9440ac4-0dfd-84f3-b5e7-52682989c27b", "time": "2021-04-07T15:14:26Z", "minor": 500 });
    let (bytes, n) = masked_json(event.clone());
    assert_eq!(n, 0);
    assert_eq!(bytes, serde_json::to_vec(&event).unwrap());
}

#[test]
fn a_json_raw_body_stays_json_and_escaped_digits_are_seen() {
    let raw = r#"{"pan":4111111111111111,"note":"\u0034111111111111111 x"}"#;
    let event = json!({ "data": { "unmapped": { "raw_body_encoding": "utf8", "raw_body": raw } } });
    let (out, n) = published(&event);
    assert_eq!(n, 2);
    let body: Value = serde_json::from_str(out["data"]["unmapped"]["raw_body"].as_str().unwrap())
        .expect("the masked raw body is still JSON, so remap can read it");
    assert_eq!(body["pan"], "************1111");
    assert_eq!(body["note"], "************1111 x");
}

#[test]
fn a_text_raw_body_with_escaped_digits_is_masked() {
    let raw = r#"not json: card \u00341\u00311111111111111 ok"#;
    let event = json!({ "data": { "unmapped": { "raw_body_encoding": "utf8", "raw_body": raw } } });
    let (out, n) = published(&event);
    assert_eq!(n, 1);
    assert_eq!(
        out["data"]["unmapped"]["raw_body"],
        "not json: card ************1111 ok"
    );
}

#[test]
fn a_base64_raw_body_is_decoded_masked_and_encoded_again() {
    let engine = base64::engine::general_purpose::STANDARD;
    let mut raw = b"\xff\xfe card=4111111111111111;".to_vec();
    raw.push(0x80);
    let event = json!({ "data": { "unmapped": { "raw_body_encoding": "base64", "raw_body": engine.encode(&raw) } } });
    let (out, n) = published(&event);
    assert_eq!(n, 1);
    let decoded = engine
        .decode(out["data"]["unmapped"]["raw_body"].as_str().unwrap())
        .unwrap();
    assert_eq!(&decoded[..2], b"\xff\xfe", "the other bytes are kept");
    assert!(decoded.windows(16).all(|w| w != b"4111111111111111"));
    assert!(decoded.windows(16).any(|w| w == b"************1111"));
}

#[test]
fn the_envelope_hookgate_writes_is_never_masked() {
    // A UUID-shaped id whose last groups form a Luhn-valid 16-digit run.
    let id = "cd011ee8-bb6d-87e6-8712-345678901456";
    let (digits, _) = mask_text("8712-345678901456");
    assert_ne!(
        digits, "8712-345678901456",
        "the run itself would be masked"
    );
    let event = json!({ "id": id, "subject": "4111111111111111", "data": {} });
    let (out, n) = published(&event);
    assert_eq!(n, 1);
    assert_eq!(out["id"], id);
    assert_eq!(out["subject"], "************1111");
}

#[test]
fn card_numbers_in_parsed_numbers_go_with_their_field() {
    // Found by the property tests: a Luhn-valid 19-digit status code.
    let pan_like = 6_108_084_805_156_127_280u64;
    let event = json!({ "data": {
        "status": { "field": "spendbackStatus", "code": pan_like, "name": "unknown" },
        "settlement": { "sales_count": pan_like,
                        "sales_total": { "minor": 4111111111111111i64, "value": "41111111111111.11", "currency": "USD" } },
        "refunded_total": { "minor": 4111111111111111i64, "value": "41111111111111.11", "currency": "USD" },
        "merchant": { "id": "4111111111111111" },
        "vendor_data": { "spendbackStatus": pan_like, "note": "4111111111111111" }
    }});
    let (out, n) = published(&event);
    // A card number in a parsed number is not published, and no field
    // changes type: the number goes with its field, the amount whole.
    assert!(out["data"]["status"].get("code").is_none(), "{out}");
    assert_eq!(out["data"]["status"]["name"], "unknown");
    assert!(
        out["data"]["settlement"].get("sales_count").is_none(),
        "{out}"
    );
    assert!(
        out["data"]["settlement"].get("sales_total").is_none(),
        "{out}"
    );
    assert!(out["data"].get("refunded_total").is_none(), "{out}");
    assert_eq!(
        out["data"]["merchant"]["id"], "************1111",
        "strings are scanned"
    );
    assert!(
        out["data"]["vendor_data"]["spendbackStatus"].is_string(),
        "the vendor's own field is masked"
    );
    assert_eq!(out["data"]["vendor_data"]["note"], "************1111");
    assert!(!out.to_string().contains("6108084805156127280"));
    assert_eq!(n, 7, "{out}");
    // Each removed field is named in `data.skipped`, its value never quoted.
    let skipped: Vec<&str> = out["data"]["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        skipped,
        [
            "refunded_total",
            "settlement.sales_count",
            "settlement.sales_total",
            "status.code"
        ],
        "{out}"
    );
    assert!(!out["data"]["skipped"].to_string().contains("4111"));
}

#[test]
fn only_a_uuid_shaped_id_is_left_alone() {
    // Found by fuzzing: a card number under an envelope key must still go.
    let event = json!({
        "time": { "unmapped": { "raw_body": "{\"pan\":4111111111111111}" } },
        "id": "4111111111111111"
    });
    let (out, n) = published(&event);
    assert_eq!(n, 2, "{out}");
    assert_eq!(out["id"], "************1111");
    assert!(!out.to_string().contains("4111111111111111"));
}

#[test]
fn the_parsed_amount_keeps_its_types() {
    // Found by the property tests: a 19-digit amount that passes Luhn.
    let event = json!({ "data": {
        "amount": { "minor": -5816907958169603492i64, "value": "-58169079581696034.92" },
        "vendor_data": { "amountToRefund": -5816907958169603492i64 }
    }});
    let (out, n) = published(&event);
    assert_eq!(n, 1, "{out}");
    assert_eq!(out["data"]["amount"]["minor"], -5816907958169603492i64);
    assert_eq!(
        out["data"]["vendor_data"]["amountToRefund"],
        "-***************3492"
    );
}

#[test]
fn a_numeric_source_id_from_the_config_is_kept() {
    let event = json!({
        "source": "/sources/4111111111111111",
        "data": { "source_id": "4111111111111111", "vendor_data": { "n": "4111111111111111" } }
    });
    let (out, n) = published(&event);
    assert_eq!(n, 1, "{out}");
    assert_eq!(out["source"], "/sources/4111111111111111");
    assert_eq!(out["data"]["source_id"], "4111111111111111");
}

#[test]
fn the_cheap_test_sees_every_card_number_the_masker_masks() {
    // Each string is masked by the full scan; its JSON text must not pass
    // the cheap test, whatever escape sits before the number.
    for text in [
        "4111111111111111",
        "pay 4111 1111 1111 1111 now",
        "\n4111111111111111",
        "\u{1}4111111111111111",
        "\u{1f}4111111111111111",
        "\t4111111111111111\r",
        "\"4111111111111111\"",
        "\\4111111111111111",
        "x1 4111111111111111", // the run after the separator stands alone
    ] {
        let document = json!({ "note": text });
        assert_eq!(masked_json(document.clone()).1, 1, "{text:?} is masked");
        let serialized = serde_json::to_vec(&document).unwrap();
        assert!(
            may_hold_card_number(&serialized),
            "{}",
            String::from_utf8_lossy(&serialized)
        );
    }
    assert!(may_hold_card_number(br#"{"pan":4111111111111111}"#));
}

#[test]
fn hex_ids_with_long_digit_runs_take_the_fast_path() {
    // Ids whose digit runs touch a letter (64-hex hashes, zero-padded
    // counters) are no card number: serialized once, as they are.
    for id in [
        "c088bc2884a2c3b4043991b04d96ceda7c65043778233dedb26bfd5853705dfd",
        "18e0c1d2a3b4c5d6000000000000000000000000000000000000000000001a2b",
        "4111111111111111abc",
    ] {
        let event = json!({ "data": { "vendor_event_id": id } });
        assert!(
            !may_hold_card_number(&serde_json::to_vec(&event).unwrap()),
            "{id}"
        );
        assert_eq!(masked_json(event).1, 0, "{id}");
    }
}
