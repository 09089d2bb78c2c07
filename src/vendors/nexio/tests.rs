use super::*;
use serde_json::json;

fn map(body: &str) -> Result<Mapped, MappingError> {
    Nexio.map(
        &crate::test_util::verified(body.as_bytes().to_vec()),
        &MapOptions::default(),
    )
}

#[test]
fn retries_share_an_id_whatever_their_formatting_and_new_statuses_do_not() {
    let a = map(r#"{"eventType":"TRANSACTION","transactionStatus":10,"processMethod":10,"transactionId":211302211}"#)
        .unwrap();
    let b = map("{\n  \"transactionId\": 211302211,\n  \"processMethod\": 10,\n  \"eventType\": \"TRANSACTION\",\n  \"transactionStatus\": 10\n}")
        .unwrap();
    let settled = map(r#"{"eventType":"TRANSACTION","transactionStatus":20,"processMethod":10,"transactionId":211302211}"#)
        .unwrap();
    assert_eq!(a.vendor_event_id, "TRANSACTION:211302211:10:10");
    assert_eq!(a.vendor_event_id, b.vendor_event_id);
    assert_ne!(a.vendor_event_id, settled.vendor_event_id);

    let onboarding = r#"{"eventType":"PROCESSOR_ONBOARDING","credsReady":false,"pendingItemsUpdatedAt":null,"applicationStatus":"App Created","onboardingId":"16c3d4c3673f3b5193e56a651df0d3e4","repCode":"123Z"}"#;
    let reordered = "{ \"repCode\": \"123Z\", \"onboardingId\": \"16c3d4c3673f3b5193e56a651df0d3e4\",\n \"applicationStatus\": \"App Created\", \"pendingItemsUpdatedAt\": null, \"credsReady\": false, \"eventType\": \"PROCESSOR_ONBOARDING\" }";
    let renamed = onboarding.replace("123Z", "124Z");
    let first = map(onboarding).unwrap().vendor_event_id;
    assert!(first.starts_with("PROCESSOR_ONBOARDING:16c3d4c3673f3b5193e56a651df0d3e4:"));
    assert_eq!(
        first.len(),
        "PROCESSOR_ONBOARDING:16c3d4c3673f3b5193e56a651df0d3e4:".len() + 64
    );
    assert_eq!(first, map(reordered).unwrap().vendor_event_id);
    assert_ne!(first, map(&renamed).unwrap().vendor_event_id);
}

#[test]
fn the_legacy_vector_fixture_verifies_with_this_vendors_scheme() {
    // Self-computed vector (docs/vendors.md §5), not a vendor-published one.
    let body = include_bytes!("../../../tests/fixtures/nexio/legacy-signed-vector.json");
    assert_eq!(body.len(), 84);
    let verifier = crate::auth::HmacVerifier::new(
        Nexio.signature_scheme().unwrap(),
        vec![crate::secret::Secret::new("example-nexio-webhook-secret")],
        std::time::Duration::from_secs(300),
    );
    let mut headers = hyper::HeaderMap::new();
    headers.insert(
        "nexio-signature",
        "t=1554146049,v1=0bbe4ef0873c090e1e7b377a58eb9a7f4a0e47dfcb4529306b853e5011a7210f"
            .parse()
            .unwrap(),
    );
    let now = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_554_146_049);
    assert!(verifier.verify(&headers, body, now).is_ok());
    assert_eq!(
        map(std::str::from_utf8(body).unwrap()).unwrap().event_type,
        "payment.authorized"
    );
}

#[test]
fn api_user_credentials_never_reach_vendor_data() {
    let body = r#"{"eventType":"PROCESSOR_ONBOARDING","onboardingId":"abc","applicationStatus":"Underwriting Signed",
        "apiUserCredentials":{"apiKey":"secret-key","userName":"api@example.com"},
        "nested":{"apiUserCredentials":{"apiKey":"k2"},"list":[{"apiUserCredentials":{"apiKey":"k3"},"keep":1}]}}"#;
    let mapped = map(body).unwrap();
    let text = mapped.facts.vendor_data.to_string();
    assert!(!text.contains("apiUserCredentials"), "{text}");
    assert!(
        !text.contains("secret-key") && !text.contains("k2") && !text.contains("k3"),
        "{text}"
    );
    assert_eq!(mapped.facts.vendor_data["nested"]["list"][0]["keep"], 1);
    assert_eq!(
        mapped.facts.vendor_data["applicationStatus"],
        "Underwriting Signed"
    );
}

#[test]
fn transaction_codes_map_to_the_documented_families() {
    let cases = [
        (3, "payment.authorized", "authOnlyPending"),
        (9, "payment.authorized", "authorizedPending"),
        (10, "payment.succeeded", "pending"),
        (11, "payment.authorized", "authOnly"),
        (20, "payment.settled", "settled"),
        (30, "payment.failed", "declined"),
        (32, "payment.failed", "fraudReject"),
        (39, "payment.updated", "voidPending"),
        (40, "payment.voided", "voided"),
        (50, "payment.failed", "error"),
        (77, "payment.updated", "unknown"),
    ];
    for (code, canonical, name) in cases {
        let m = map(&format!(
            r#"{{"eventType":"TRANSACTION","transactionStatus":{code},"processMethod":10,"transactionId":"t-1"}}"#
        ))
        .unwrap();
        assert_eq!(m.event_type, canonical, "{code}");
        let status = m.facts.status.unwrap();
        assert_eq!((status.code, status.name.as_str()), (Some(code), name));
    }
}

#[test]
fn payout_and_spendback_codes_become_snake_case_types() {
    let m = map(r#"{"eventType":"PAYOUT","payoutStatus":12,"transferStatus":null,"payoutId":"7"}"#)
        .unwrap();
    assert_eq!(m.event_type, "payout.pending_recipient_action");
    assert_eq!(m.vendor_event_id, "PAYOUT:7:12:");
    let m = map(r#"{"eventType":"PAYOUT","payoutStatus":61,"payoutId":7}"#).unwrap();
    assert_eq!(m.event_type, "payout.updated");
    assert_eq!(m.facts.status.unwrap().name, "unknown");
    let m = map(r#"{"eventType":"SPENDBACK","spendbackStatus":30,"spendbackId":5}"#).unwrap();
    assert_eq!(m.event_type, "spendback.review");
    let m = map(r#"{"eventType":"SPENDBACK","spendbackStatus":31,"spendbackId":5}"#).unwrap();
    assert_eq!(m.event_type, "spendback.updated");
}

#[test]
fn legacy_amounts_are_read_from_their_literal_text() {
    let m = map(r#"{"eventType":"TRANSACTION_REFUNDED","data":{"id":"x","amount":0.29,"currency":"usd","transactionDate":"2019-12-23T20:50:23.060Z"}}"#)
        .unwrap();
    let amount = m.facts.amount.unwrap();
    assert_eq!(
        (
            amount.value.as_str(),
            amount.minor,
            amount.currency.as_str()
        ),
        ("0.29", 29, "USD")
    );
    assert_eq!(m.event_type, "refund.succeeded");
    assert_eq!(m.vendor_event_id, "TRANSACTION_REFUNDED:x");
    assert!(m.occurred_at.is_some());
    let too_precise =
        map(r#"{"eventType":"TRANSACTION_SETTLED","data":{"id":"x","amount":1.005}}"#).unwrap();
    assert_eq!(too_precise.event_type, "payment.settled");
    assert!(
        too_precise.facts.amount.is_none(),
        "1.005 USD is not rounded"
    );
    assert_eq!(too_precise.facts.skipped[0].field, "data.amount");
    assert!(map(r#"{"eventType":"TRANSACTION_SETTLED","data":{"amount":1}}"#).is_err());
}

#[test]
fn a_declined_authorization_is_a_failed_payment_with_its_code() {
    let body = |data: &str| {
        format!(
            r#"{{"eventType":"TRANSACTION_AUTHORIZED","data":{{"id":"t-9","amount":5,"currency":"USD",{data}}}}}"#
        )
    };
    let cases = [
        (r#""error":"435""#, "data.error", Some("435"), "declined"),
        (
            r#""error":"431""#,
            "data.error",
            Some("431"),
            "declined_by_kount",
        ),
        (r#""error":"440""#, "data.error", Some("440"), "unknown"),
        (r#""error":436"#, "data.error", Some("436"), "unknown"),
        (
            r#""gatewayResponse":{"status":"declined"}"#,
            "data.gatewayResponse.status",
            None,
            "declined",
        ),
        (
            r#""kountResponse":{"status":"Declined"}"#,
            "data.kountResponse.status",
            None,
            "declined_by_kount",
        ),
    ];
    for (data, field, code, reason) in cases {
        let m = map(&body(data)).unwrap();
        assert_eq!(m.event_type, "payment.failed", "{data}");
        let failure = m.facts.failure.expect(data);
        assert_eq!(
            (
                failure.field.as_str(),
                failure.code.as_deref(),
                failure.reason.as_str()
            ),
            (field, code, reason)
        );
        assert_eq!(m.vendor_event_id, "TRANSACTION_AUTHORIZED:t-9");
    }
    let review = map(&body(r#""kountResponse":{"status":"review"}"#)).unwrap();
    assert_eq!(review.event_type, "payment.held");
    assert!(review.facts.failure.is_none());
    for fine in [
        r#""error":"""#,
        r#""error":null"#,
        r#""token":{"error":"","lastFour":"1111"}"#,
        r#""kountResponse":{"status":"success"}"#,
    ] {
        let m = map(&body(fine)).unwrap();
        assert_eq!(m.event_type, "payment.authorized", "{fine}");
        assert!(m.facts.failure.is_none(), "{fine}");
    }
    let refund =
        map(r#"{"eventType":"TRANSACTION_REFUNDED","data":{"id":"t-9","error":"435"}}"#).unwrap();
    assert_eq!(
        refund.event_type, "refund.succeeded",
        "a refund keeps its type"
    );
}

#[test]
fn a_fail_callback_without_an_event_type_is_a_failed_payment() {
    let m = map(r#"{"data":{"id":"t-7","amount":2.5,"currency":"usd","message":"Declined","gatewayResponse":{"status":"declined"}}}"#)
        .unwrap();
    assert_eq!(m.event_type, "payment.failed");
    assert_eq!(m.vendor_event_type, "");
    assert_eq!(m.vendor_event_id, "FAIL_CALLBACK:t-7");
    assert_eq!(m.facts.amount.unwrap().minor, 250);
    assert_eq!(
        m.facts.failure.unwrap().field,
        "data.gatewayResponse.status"
    );
    let message_only = map(r#"{"data":{"id":"t-8","message":"Card expired"}}"#).unwrap();
    assert_eq!(message_only.event_type, "payment.failed");
    assert_eq!(message_only.facts.failure.unwrap().field, "data.message");
    // Without a sign of failure, a body with no eventType stays unreadable.
    assert!(map(r#"{"data":{"id":"t-8","amount":1}}"#).is_err());
}

#[test]
fn card_brands_reach_one_vocabulary() {
    for (spelling, brand) in [
        (json!("masterCard"), "mastercard"),
        (json!("mastercard"), "mastercard"),
        (json!("americanExpress"), "amex"),
        (json!("AMEX"), "amex"),
        (json!("Visa"), "visa"),
        (json!(20), "mastercard"),
        (json!("40"), "amex"),
        (json!("Diners Club"), "diners"),
        (json!("unionPay"), "unionpay"),
    ] {
        assert_eq!(card_brand(&spelling).as_deref(), Some(brand), "{spelling}");
    }
    assert_eq!(card_brand(&json!(77)), None);
    assert_eq!(card_brand(&json!("")), None);
}

#[test]
fn saved_methods_and_subscriptions_have_types_of_their_own() {
    let card = map(r#"{"eventType":"CARD_SAVED","data":{"id":"c-1","token":{"lastFour":"4242","cardType":"masterCard"}}}"#)
        .unwrap();
    assert_eq!(card.event_type, "payment_method.saved");
    let method = card.facts.payment_method.unwrap();
    assert_eq!(
        (
            method.kind.as_str(),
            method.brand.as_deref(),
            method.last4.as_deref()
        ),
        ("card", Some("mastercard"), Some("4242"))
    );
    let echeck = map(r#"{"eventType":"ECHECK_SAVED","data":{"id":"e-1"}}"#).unwrap();
    assert_eq!(echeck.event_type, "payment_method.saved");
    assert_eq!(echeck.facts.payment_method.unwrap().kind, "echeck");
    let sub = map(r#"{"eventType":"SUBSCRIPTION_DETAILS","data":{"id":"s-1"}}"#).unwrap();
    assert_eq!(sub.event_type, "subscription.updated");
    assert_eq!(sub.facts.object.unwrap().kind, "subscription");
}

#[test]
fn bodies_without_an_event_type_are_errors_and_unknown_types_are_not() {
    assert!(map(r#"{"transactionId":1}"#).is_err());
    assert!(map(r#"{"eventType":42}"#).is_err());
    assert!(map("[1]").is_err());
    assert!(map("not json").is_err());
    assert!(map(r#"{"eventType":"TRANSACTION"}"#).is_err());
    let m = map(r#"{"eventType":"CHARGEBACK","id":1}"#).unwrap();
    assert_eq!(m.event_type, "unknown");
    assert!(m.vendor_event_id.starts_with("CHARGEBACK:"));
}
