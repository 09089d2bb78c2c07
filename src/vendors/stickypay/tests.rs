use super::*;
use serde_json::json;

#[test]
fn many_removed_secrets_are_each_scrubbed_wherever_they_are_embedded() {
    let mut doc = serde_json::Map::new();
    for n in 0..2000 {
        doc.insert(format!("secret_{n}"), json!(format!("token-{n:06}-abcdef")));
        doc.insert(
            format!("url_{n}"),
            json!(format!("https://x.test/?t=token-{n:06}-abcdef")),
        );
        doc.insert(format!("note_{n}"), json!(format!("plain note {n}")));
    }
    let mut doc = Value::Object(doc);
    redact(&mut doc, false);
    assert!(doc.get("secret_7").is_none());
    assert_eq!(doc["url_1999"], "[redacted]");
    assert_eq!(doc["url_0"], "[redacted]");
    assert_eq!(doc["note_1999"], "plain note 1999");
}

const PRIVATE_KEY: &str = "private:5f1c9a7e-3b2d-4c8e-9f0a-1b2c3d4e5f60";

fn map_value(body: &Value, personal: bool) -> Result<Mapped, MappingError> {
    let options = MapOptions {
        vendor: crate::vendors::VendorOptions::Stickypay {
            include_personal_data: personal,
        },
        ..MapOptions::default()
    };
    let verified = crate::test_util::verified(serde_json::to_vec(body).unwrap());
    Stickypay.map(&verified, &options)
}

fn payment_body() -> Value {
    json!({
        "payment": { "userPrivateKey": PRIVATE_KEY, "email": "old@example.com" },
        "v2": {
            "event": {
                "type": "SESSION_CART_PAY",
                "id": "0b6f1f0e-8a51-4d3c-9d7e-2f1a6c0d9e11",
                "customData": { "total": 360, "currency": "GBP", "tip": 0, "discount": 0 }
            },
            "payment": {
                "id": "7d2c1a90-55e4-4b1f-8a3e-6c9b0d2e4f13",
                "userId": "payment-owner",
                "sessionPaidAt": 1707381745,
                "refundedAt": null,
                "refundedTotal": 0,
                "currency": "GBP",
                "total": 360,
                "discount": 20,
                "tip": 50,
                "gateway": "GATEWAY_NOOP",
                "name": "Timothy Payer",
                "companyName": "Payer Widgets Ltd",
                "email": "timothy.payer@example.org",
                "phone": "+447700900123",
                "address": "1 Payer Street, London",
                "paymentGatewayExtra": { "callback": format!("https://x.test/cb?key={PRIVATE_KEY}") },
                "userPrivateKey": PRIVATE_KEY
            },
            "flow": { "id": "flow-1", "userId": "flow-owner", "name": "Food and drink" },
            "sticky": { "id": "sticky-1", "userId": "sticky-owner", "name": "Room 15" },
            "session": {
                "id": "session-1",
                "crossUserSector": { "name": "Timothy Payer", "email": "timothy.payer@example.org" },
                "userSector": { "loyaltyNumber": "LOYAL-998877" },
                "applicationSector": { "paymentId": "7d2c1a90-55e4-4b1f-8a3e-6c9b0d2e4f13", "privateKey": PRIVATE_KEY }
            }
        }
    })
}

#[test]
fn without_opt_in_no_secret_and_no_personal_data_is_published() {
    let mapped = map_value(&payment_body(), false).unwrap();
    let out = serde_json::to_string(&mapped.facts).unwrap();
    for leak in [
        PRIVATE_KEY,
        "5f1c9a7e",
        "userPrivateKey",
        "privateKey",
        "timothy.payer@example.org",
        "old@example.com",
        "Timothy Payer",
        "Payer Widgets",
        "+447700900123",
        "Payer Street",
        "LOYAL-998877",
    ] {
        assert!(!out.contains(leak), "`{leak}` leaked: {out}");
    }
    assert!(mapped.facts.customer.is_none());
    // Non-personal names and the rest of the payment stay.
    assert_eq!(mapped.facts.vendor_data["flow"]["name"], "Food and drink");
    assert_eq!(mapped.facts.vendor_data["sticky"]["name"], "Room 15");
    assert_eq!(
        mapped.facts.vendor_data["payment"]["gateway"],
        "GATEWAY_NOOP"
    );
    assert_eq!(
        mapped.facts.vendor_data["payment"]["paymentGatewayExtra"]["callback"],
        "[redacted]"
    );
    assert_eq!(
        mapped.facts.vendor_data["session"]["applicationSector"]["paymentId"],
        "7d2c1a90-55e4-4b1f-8a3e-6c9b0d2e4f13"
    );
}

#[test]
fn with_opt_in_the_payer_is_published_but_never_the_private_key() {
    let mapped = map_value(&payment_body(), true).unwrap();
    let out = serde_json::to_string(&mapped.facts).unwrap();
    assert!(!out.contains(PRIVATE_KEY), "private key leaked: {out}");
    assert!(!out.contains("5f1c9a7e"), "private key leaked: {out}");
    assert!(
        !out.contains("userPrivateKey") && !out.contains("\"privateKey\""),
        "{out}"
    );
    let customer = mapped.facts.customer.expect("customer");
    assert_eq!(customer.email.as_deref(), Some("timothy.payer@example.org"));
    assert_eq!(customer.name.as_deref(), Some("Timothy Payer"));
    assert_eq!(customer.phone.as_deref(), Some("+447700900123"));
    assert_eq!(customer.address.as_deref(), Some("1 Payer Street, London"));
    assert_eq!(
        mapped.facts.vendor_data["payment"]["email"],
        "timothy.payer@example.org"
    );
    assert_eq!(
        mapped.facts.vendor_data["session"]["userSector"]["loyaltyNumber"],
        "LOYAL-998877"
    );
}

#[test]
fn a_payment_maps_to_minor_units_paid_time_payment_and_flow_owner() {
    let mapped = map_value(&payment_body(), false).unwrap();
    assert_eq!(mapped.event_type, "payment.succeeded");
    assert_eq!(mapped.vendor_event_type, "SESSION_CART_PAY");
    assert_eq!(
        mapped.vendor_event_id,
        "0b6f1f0e-8a51-4d3c-9d7e-2f1a6c0d9e11"
    );
    let amount = mapped.facts.amount.unwrap();
    assert_eq!(
        (
            amount.value.as_str(),
            amount.minor,
            amount.currency.as_str()
        ),
        ("3.60", 360, "GBP")
    );
    assert_eq!(mapped.facts.tip.unwrap().value, "0.50");
    assert_eq!(mapped.facts.discount.unwrap().value, "0.20");
    assert_eq!(
        crate::canonical::rfc3339(mapped.occurred_at.unwrap()),
        "2024-02-08T08:42:25Z"
    );
    let object = mapped.facts.object.unwrap();
    assert_eq!(
        (object.kind.as_str(), object.id.as_str()),
        ("payment", "7d2c1a90-55e4-4b1f-8a3e-6c9b0d2e4f13")
    );
    assert_eq!(mapped.facts.merchant.unwrap().id, "flow-owner");
    // Deprecated top-level keys are not published.
    assert!(mapped.facts.vendor_data.get("v2").is_none());
    assert!(mapped.facts.vendor_data.get("event").is_some());
}

#[test]
fn event_types_map_and_unknown_ones_are_not_errors() {
    for (vendor, ours) in [
        ("SESSION_CART_PAY", "payment.succeeded"),
        ("SESSION_CART_REFUND", "refund.succeeded"),
        ("SESSION_CART_PAY_FAIL", "payment.failed"),
        ("SESSION_READ", "session.tapped"),
        ("CONNECTION_BAD", "unknown"),
        ("MESSAGE", "unknown"),
        ("CHECK_IN", "session.checked_in"),
        ("SESSION_SOMETHING_NEW", "unknown"),
        ("session_read", "unknown"),
    ] {
        let body =
            json!({ "v2": { "event": { "type": vendor, "id": "e1" }, "session": { "id": "s1" } } });
        let mapped = map_value(&body, false).unwrap();
        assert_eq!(mapped.event_type, ours, "{vendor}");
        assert_eq!(mapped.facts.object.unwrap().kind, "session");
        assert!(mapped.facts.amount.is_none());
        assert!(mapped.occurred_at.is_none());
    }
}

#[test]
fn bodies_without_v2_or_its_event_identity_are_unmapped() {
    for body in [
        json!({ "event": { "type": "SESSION_READ", "id": "e1" } }),
        json!({ "v2": null }),
        json!({ "v2": [] }),
        json!({ "v2": { "event": { "type": "SESSION_READ" } } }),
        json!({ "v2": { "event": { "id": "e1" } } }),
        json!({ "v2": { "event": { "type": "", "id": "e1" } } }),
        json!({ "v2": { "event": { "type": "SESSION_READ", "id": 7 } } }),
        json!(["v2"]),
    ] {
        assert!(map_value(&body, false).is_err(), "{body}");
    }
}

#[test]
fn non_integer_money_is_skipped_with_a_note_not_rounded_or_unmapped() {
    let mut body = payment_body();
    body["v2"]["payment"]["total"] = json!(3.6);
    let mapped = map_value(&body, false).unwrap();
    assert_eq!(mapped.event_type, "payment.succeeded");
    assert!(mapped.facts.amount.is_none(), "3.6 is not rounded");
    assert_eq!(
        mapped.facts.tip.as_ref().unwrap().minor,
        50,
        "the rest stays"
    );
    assert_eq!(mapped.facts.skipped.len(), 1);
    assert_eq!(mapped.facts.skipped[0].field, "v2.payment.total");
    assert!(!mapped.facts.skipped[0].reason.contains("3.6"));

    body["v2"]["payment"]["total"] = json!("360");
    let mapped = map_value(&body, false).unwrap();
    assert!(mapped.facts.amount.is_none());
    assert_eq!(mapped.facts.skipped[0].field, "v2.payment.total");

    let mut body = payment_body();
    body["v2"]["payment"]["currency"] = json!("pounds");
    let mapped = map_value(&body, false).unwrap();
    assert!(mapped.facts.amount.is_none() && mapped.facts.tip.is_none());
    assert_eq!(mapped.facts.skipped[0].field, "v2.payment.currency");
    assert!(!mapped.facts.skipped[0].reason.contains("pounds"));
}

#[test]
fn a_refund_is_its_own_amount_with_the_running_total_beside_it() {
    let mut body = payment_body();
    body["v2"]["event"]["type"] = json!("SESSION_CART_REFUND");
    body["v2"]["event"]["customData"]["refundAmount"] = json!(100);
    body["v2"]["event"]["createdAt"] = json!(1707389000);
    body["v2"]["payment"]["refundedTotal"] = json!(300);
    body["v2"]["payment"]["refundedAt"] = json!(1707385345);
    let mapped = map_value(&body, false).unwrap();
    assert_eq!(mapped.event_type, "refund.succeeded");
    assert_eq!(mapped.facts.amount.unwrap().minor, 100);
    assert_eq!(mapped.facts.refunded_total.unwrap().minor, 300);
    assert_eq!(
        crate::canonical::rfc3339(mapped.occurred_at.unwrap()),
        "2024-02-08T10:43:20Z",
        "the event's own time, not the payment's last refund"
    );
}

#[test]
fn without_its_own_amount_a_refund_uses_the_refunded_total_when_set() {
    let mut body = payment_body();
    body["v2"]["event"]["type"] = json!("SESSION_CART_REFUND");
    body["v2"]["payment"]["refundedTotal"] = json!(200);
    body["v2"]["payment"]["refundedAt"] = json!(1707385345);
    let mapped = map_value(&body, false).unwrap();
    assert_eq!(mapped.event_type, "refund.succeeded");
    assert_eq!(mapped.facts.amount.unwrap().minor, 200);
    assert_eq!(mapped.facts.refunded_total.unwrap().minor, 200);
    assert_eq!(
        crate::canonical::rfc3339(mapped.occurred_at.unwrap()),
        "2024-02-08T09:42:25Z"
    );

    body["v2"]["payment"]["refundedTotal"] = json!(0);
    body["v2"]["payment"]["refundedAt"] = json!(null);
    let mapped = map_value(&body, false).unwrap();
    assert_eq!(mapped.facts.amount.unwrap().minor, 360);
    assert!(mapped.facts.refunded_total.is_none());
    assert!(mapped.occurred_at.is_none());
}

#[test]
fn a_failed_payment_carries_its_amount_time_and_payment() {
    let body = json!({ "v2": {
        "event": { "type": "SESSION_CART_PAY_FAIL", "id": "e-fail" },
        "payment": { "userPaymentId": "up-1", "userId": "merchant-1", "total": 999,
                     "currency": "GBP", "sessionFailedAt": 1707381745 }
    } });
    let mapped = map_value(&body, false).unwrap();
    assert_eq!(mapped.event_type, "payment.failed");
    assert_eq!(mapped.facts.amount.unwrap().value, "9.99");
    assert_eq!(mapped.facts.object.unwrap().id, "up-1");
    assert_eq!(
        mapped.facts.merchant.unwrap().id,
        "merchant-1",
        "no flow: the payment's owner"
    );
    assert_eq!(
        crate::canonical::rfc3339(mapped.occurred_at.unwrap()),
        "2024-02-08T08:42:25Z"
    );
}

#[test]
fn currency_falls_back_to_custom_data_then_the_source() {
    let mut body = payment_body();
    body["v2"]["payment"]["currency"] = json!(null);
    body["v2"]["event"]["customData"]["currency"] = json!("jpy");
    body["v2"]["payment"]["total"] = json!(1500);
    let amount = map_value(&body, false).unwrap().facts.amount.unwrap();
    assert_eq!(
        (amount.value.as_str(), amount.currency.as_str()),
        ("1500", "JPY")
    );

    body["v2"]["event"]["customData"] = json!({});
    let amount = map_value(&body, false).unwrap().facts.amount.unwrap();
    assert_eq!(
        (amount.value.as_str(), amount.currency.as_str()),
        ("15.00", "USD")
    );
}

#[test]
fn the_unmapped_raw_body_can_be_redacted_too() {
    let body = serde_json::to_vec(&payment_body()).unwrap();
    let options = MapOptions::default();
    let redacted = String::from_utf8(redacted_raw_body(&body, &options).unwrap()).unwrap();
    for leak in [
        PRIVATE_KEY,
        "timothy.payer@example.org",
        "old@example.com",
        "Timothy Payer",
    ] {
        assert!(!redacted.contains(leak), "`{leak}` leaked: {redacted}");
    }
    assert!(redacted_raw_body(b"{not json", &options).is_none());
}
