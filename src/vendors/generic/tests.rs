use super::*;
use serde_json::json;
use std::sync::Arc;

fn raw(value: Value) -> RawMap {
    serde_json::from_value(value).unwrap()
}

fn options(map: Value) -> MapOptions {
    MapOptions {
        vendor: crate::vendors::VendorOptions::Generic(Arc::new(
            GenericMap::build(&raw(map)).unwrap(),
        )),
        ..MapOptions::default()
    }
}

fn svix_style() -> MapOptions {
    options(json!({
        "id": "header:webhook-id", "type": "/type", "time": "/timestamp",
        "object_type": "/data/object", "object_id": "/data/id",
        "amount_value": "/data/amount", "currency": "/data/currency",
        "merchant_id": "/data/account", "redact": ["/data/customer/email"],
        "types": { "charge.succeeded": "payment.succeeded", "refund.created": "refund.succeeded" }
    }))
}

fn body(value: &str) -> Verified {
    let mut headers = HeaderMap::new();
    headers.insert("webhook-id", "msg_2Lh9".parse().unwrap());
    crate::test_util::verified(value.as_bytes().to_vec()).with_headers(headers)
}

use hyper::HeaderMap;

#[test]
fn each_field_comes_from_where_the_map_says() {
    let m = Generic
        .map(
            &body(r#"{"type":"charge.succeeded","timestamp":"2024-05-01T10:00:00Z","data":{"object":"Card Charge","id":"ch_1","amount":12.10,"currency":"eur","account":"acct_9","customer":{"email":"a@b.c","name":"A"}}}"#),
            &svix_style(),
        )
        .unwrap();
    assert_eq!(m.event_type, "payment.succeeded");
    assert_eq!(m.vendor_event_type, "charge.succeeded");
    assert_eq!(m.vendor_event_id, "msg_2Lh9", "from the header");
    assert_eq!(
        crate::canonical::rfc3339(m.occurred_at.unwrap()),
        "2024-05-01T10:00:00Z"
    );
    let object = m.facts.object.unwrap();
    assert_eq!(
        (object.kind.as_str(), object.id.as_str()),
        ("card_charge", "ch_1")
    );
    let amount = m.facts.amount.unwrap();
    assert_eq!(
        (
            amount.value.as_str(),
            amount.minor,
            amount.currency.as_str()
        ),
        ("12.10", 1210, "EUR")
    );
    assert_eq!(m.facts.merchant.unwrap().id, "acct_9");
    assert!(
        m.facts.vendor_data["data"]["customer"]
            .get("email")
            .is_none(),
        "redacted"
    );
    assert_eq!(m.facts.vendor_data["data"]["customer"]["name"], "A");
}

#[test]
fn unlisted_types_are_unknown_and_missing_required_fields_are_errors() {
    let m = Generic
        .map(
            &body(r#"{"type":"dispute.opened","data":{}}"#),
            &svix_style(),
        )
        .unwrap();
    assert_eq!(m.event_type, "unknown");
    assert_eq!(m.vendor_event_type, "dispute.opened");
    let no_type = Generic
        .map(&body(r#"{"data":{}}"#), &svix_style())
        .unwrap_err();
    assert!(
        no_type.reason().contains("map.type"),
        "{}",
        no_type.reason()
    );
    let no_header = crate::test_util::verified(br#"{"type":"charge.succeeded"}"#.to_vec());
    let no_id = Generic.map(&no_header, &svix_style()).unwrap_err();
    assert!(
        no_id.reason().contains("header webhook-id"),
        "{}",
        no_id.reason()
    );
    assert!(Generic.map(&body("not json"), &svix_style()).is_err());
    assert!(
        Generic.map(&body("{}"), &MapOptions::default()).is_err(),
        "no map"
    );
}

#[test]
fn amounts_are_exact_and_odd_ones_are_skipped() {
    let minor = options(json!({"id": "/id", "type": "/type", "amount_minor": "/amount"}));
    let m = Generic
        .map(&body(r#"{"id":"e1","type":"t","amount":1250}"#), &minor)
        .unwrap();
    assert_eq!(m.facts.amount.unwrap().value, "12.50");
    let m = Generic
        .map(&body(r#"{"id":"e1","type":"t","amount":12.5}"#), &minor)
        .unwrap();
    assert!(m.facts.amount.is_none());
    assert_eq!(m.facts.skipped[0].field, "map.amount_minor");
    let value = options(json!({"id": "/id", "type": "/type", "amount_value": "/amount"}));
    for (literal, minor_units) in [("\"0.10\"", 10), ("0.1", 10), ("1e2", -1), ("100.005", -1)] {
        let m = Generic
            .map(
                &body(&format!(r#"{{"id":"e1","type":"t","amount":{literal}}}"#)),
                &value,
            )
            .unwrap();
        match minor_units {
            -1 => assert!(
                m.facts.amount.is_none() && !m.facts.skipped.is_empty(),
                "{literal}"
            ),
            n => assert_eq!(m.facts.amount.unwrap().minor, n, "{literal}"),
        }
    }
}

#[test]
fn a_bad_map_is_refused_naming_each_key() {
    let problems = GenericMap::build(&raw(json!({
        "type": "data/type",
        "object_id": "/a~2b",
        "amount_minor": "/a", "amount_value": "/b",
        "merchant_id": "header:bad header",
        "types": { "x": "Payment.Succeeded", "y": "payment.succeeded", "z": "unknown" },
        "redact": ["", "/ok"]
    })))
    .unwrap_err();
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "id",
            "type",
            "object_id",
            "merchant_id",
            "amount_value",
            "types.\"x\"",
            "redact[0]"
        ]
    );
}

#[test]
fn an_unmapped_json_body_is_redacted_too() {
    let body = br#"{"data":{"customer":{"email":"payer@example.org"},"id":"x"}}"#;
    let raw = Generic.raw_body_for_unmapped(body, &svix_style()).unwrap();
    let text = String::from_utf8(raw.into_owned()).unwrap();
    assert!(!text.contains("payer@example.org"), "{text}");
    assert!(text.contains("\"id\":\"x\""), "{text}");
    let form = b"email=payer@example.org";
    assert_eq!(
        Generic
            .raw_body_for_unmapped(form, &svix_style())
            .unwrap()
            .as_ref(),
        form,
        "not JSON: nothing a pointer names"
    );
}

#[test]
fn object_types_become_nouns_of_letters() {
    assert_eq!(noun_of("Card Charge"), "card_charge");
    assert_eq!(noun_of("v2.charge"), "v__charge");
    assert_eq!(noun_of("1e-30"), "e___");
    assert_eq!(noun_of("42"), "object");
}

#[test]
fn pointers_follow_rfc_6901() {
    assert!(check_pointer("").is_ok());
    assert!(check_pointer("/a/b~1c/~0d/0").is_ok());
    assert!(check_pointer("a/b").is_err());
    assert!(check_pointer("/a~").is_err());
    let mut doc = json!({"a": {"b/c": 1, "keep": 2}, "list": [1, 2]});
    remove_at(&mut doc, "/a/b~1c");
    remove_at(&mut doc, "/list/0");
    remove_at(&mut doc, "/missing/x");
    assert_eq!(doc, json!({"a": {"keep": 2}, "list": [2]}));
}
