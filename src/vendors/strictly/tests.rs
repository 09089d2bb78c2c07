use super::*;
use crate::canonical::{rfc3339, Event};
use crate::vendors::VendorKind;

fn map(body: &str, options: &MapOptions) -> Result<Mapped, MappingError> {
    Strictly.map(
        &crate::test_util::verified(body.as_bytes().to_vec()),
        options,
    )
}

#[test]
fn the_server_block_and_its_credentials_never_leave() {
    let body = r#"{"_id": ObjectId("6679c388e32ac6f528894a8f"),
        "server": {"path": "https://hooks.example/strictly?token=path-secret", "username": "hook-user",
                   "password": "s3cr3t-Pa55word"},
        "action": "sale", "data": {"amount": 600, "currency": "USD"},
        "createdAt": ISODate("2024-06-24T15:05:44.532-04:00")}"#;
    let mapped = map(body, &MapOptions::default()).unwrap();
    assert!(mapped.facts.vendor_data.get("server").is_none());
    assert_eq!(mapped.facts.vendor_data["_id"], "6679c388e32ac6f528894a8f");
    let event = Event::from_mapped(
        VendorKind::Strictly,
        "main",
        mapped.clone(),
        OffsetDateTime::UNIX_EPOCH,
    );
    for published in [
        serde_json::to_string(&event).unwrap(),
        format!("{mapped:?}"),
    ] {
        for secret in ["s3cr3t-Pa55word", "hook-user", "path-secret", "\"server\""] {
            assert!(
                !published.contains(secret),
                "`{secret}` leaked in {published}"
            );
        }
    }
}

#[test]
fn ids_and_dates_read_the_same_in_every_notation() {
    let forms = [
        r#"{"_id": "65893a0cb2e5c48ee301076a", "action": "sale", "data": {"clientId": "5ff76fb63bcf0a001c6228e0"},
            "createdAt": "2023-12-25T08:15:08.447Z"}"#,
        r#"{"_id": {"$oid": "65893a0cb2e5c48ee301076a"}, "action": "sale", "data": {"clientId": {"$oid": "5ff76fb63bcf0a001c6228e0"}},
            "createdAt": {"$date": {"$numberLong": "1703492108447"}}}"#,
        r#"{"_id": {"$oid": "65893a0cb2e5c48ee301076a"}, "action": "sale", "data": {"clientId": {"$oid": "5ff76fb63bcf0a001c6228e0"}},
            "createdAt": {"$date": 1703492108447}}"#,
        r#"{"_id": ObjectId("65893a0cb2e5c48ee301076a"), "action": "sale", "data": {"clientId": ObjectId("5ff76fb63bcf0a001c6228e0")},
            "createdAt": ISODate("2023-12-25T03:15:08.447-05:00")}"#,
    ];
    for body in forms {
        let m = map(body, &MapOptions::default()).unwrap();
        assert_eq!(m.vendor_event_id, "65893a0cb2e5c48ee301076a", "{body}");
        assert_eq!(
            m.facts.merchant.as_ref().unwrap().id,
            "5ff76fb63bcf0a001c6228e0"
        );
        assert_eq!(
            m.occurred_at.unwrap().unix_timestamp_nanos(),
            1_703_492_108_447_000_000
        );
        assert_eq!(
            m.facts.vendor_data["data"]["clientId"],
            "5ff76fb63bcf0a001c6228e0"
        );
    }
    let m = map(forms[1], &MapOptions::default()).unwrap();
    assert_eq!(m.facts.vendor_data["createdAt"], "2023-12-25T08:15:08.447Z");
    assert_eq!(rfc3339(m.occurred_at.unwrap()), "2023-12-25T08:15:08.447Z");
}

#[test]
fn actions_map_case_insensitively_and_unknown_is_not_an_error() {
    let cases = [
        ("sale", "payment.succeeded"),
        ("SALE", "payment.succeeded"),
        ("auth", "payment.authorized"),
        ("capture", "payment.captured"),
        ("void", "payment.voided"),
        ("refund", "refund.succeeded"),
        ("invoice", "invoice.paid"),
        ("invoicePaid", "invoice.paid"),
        ("invoice_paid", "invoice.paid"),
        ("invoice.paid", "invoice.paid"),
        ("paymentLink", "payment_link.paid"),
        ("paymentLinkPaid", "payment_link.paid"),
        ("payment_link", "payment_link.paid"),
        ("payment_link_paid", "payment_link.paid"),
        ("payment_link.paid", "payment_link.paid"),
        ("subscription", "subscription.paid"),
        ("SubscriptionPaid", "subscription.paid"),
        ("subscription_paid", "subscription.paid"),
        ("subscription.paid", "subscription.paid"),
        ("payment.approved", "payment.succeeded"),
        ("payment.declined", "payment.failed"),
        ("payment.refunded", "refund.succeeded"),
        ("payment.voided", "payment.voided"),
        ("subscription.created", "subscription.created"),
        ("subscription.renewed", "subscription.renewed"),
        ("subscription.cancelled", "subscription.canceled"),
        ("subscription.failed", "subscription.failed"),
        ("invoice.created", "invoice.created"),
        ("invoice.overdue", "invoice.overdue"),
        ("customer.created", "customer.created"),
        ("payment.exploded", "unknown"),
        ("", "unknown"),
    ];
    for (action, ours) in cases {
        assert_eq!(Action::of(action).event_type(false), ours, "{action}");
    }
    assert_eq!(Action::Sale.event_type(true), "payment.failed");
    assert_eq!(Action::Auth.event_type(true), "payment.failed");
    assert_eq!(Action::Refund.event_type(true), "refund.succeeded");
}

#[test]
fn amounts_are_exact_in_the_configured_unit() {
    let major = MapOptions {
        vendor: crate::vendors::VendorOptions::Strictly {
            amount_unit: AmountUnit::Major,
        },
        ..MapOptions::default()
    };
    // An amount that cannot be read exactly is skipped with a note, the
    // event keeps its type; `Err` here is that note's field.
    let amount = |body: &str, options: &MapOptions| {
        let m = map(body, options).unwrap();
        assert_eq!(
            m.event_type,
            Action::of(&m.vendor_event_type).event_type(false)
        );
        m.facts
            .amount
            .ok_or_else(|| m.facts.skipped[0].field.clone())
    };
    let a = amount(
        r#"{"action":"sale","data":{"amount":600}}"#,
        &MapOptions::default(),
    )
    .unwrap();
    assert_eq!(
        (a.value.as_str(), a.minor, a.currency.as_str()),
        ("6.00", 600, "USD")
    );
    let a = amount(
        r#"{"action":"sale","data":{"amount":600,"currency":"eur"}}"#,
        &major,
    )
    .unwrap();
    assert_eq!(
        (a.value.as_str(), a.minor, a.currency.as_str()),
        ("600.00", 60000, "EUR")
    );
    let a = amount(r#"{"action":"sale","data":{"amount":12.5}}"#, &major).unwrap();
    assert_eq!((a.value.as_str(), a.minor), ("12.50", 1250));
    let a = amount(
        r#"{"action":"sale","data":{"amount":NumberDecimal("0.10")}}"#,
        &major,
    )
    .unwrap();
    assert_eq!(a.minor, 10);
    let a = amount(
        r#"{"action":"sale","data":{"amount":{"$numberLong":"700"}}}"#,
        &MapOptions::default(),
    )
    .unwrap();
    assert_eq!(a.minor, 700);
    let a = amount(
        r#"{"action":"sale","data":{"amount":600.0}}"#,
        &MapOptions::default(),
    )
    .unwrap();
    assert_eq!(a.minor, 600);
    assert!(amount(
        r#"{"action":"sale","data":{"amount":12.5}}"#,
        &MapOptions::default()
    )
    .is_err());
    assert!(amount(
        r#"{"action":"sale","data":{"amount":1e3}}"#,
        &MapOptions::default()
    )
    .is_err());
    assert!(amount(
        r#"{"action":"sale","data":{"amount":"600"}}"#,
        &MapOptions::default()
    )
    .is_err());
    assert_eq!(
        amount(
            r#"{"action":"sale","data":{"amount":600,"currency":"dollars"}}"#,
            &major
        ),
        Err("data.currency".to_owned())
    );
    assert_eq!(
        amount(r#"{"action":"sale","data":{"amount":"600"}}"#, &major),
        Err("data.amount".to_owned()),
        "a string is not a number in either unit"
    );
    let refund =
        r#"{"action":"refund","data":{"amount":900,"amountRefunded":500,"amountToRefund":300}}"#;
    assert_eq!(amount(refund, &MapOptions::default()).unwrap().minor, 300);
    let refund = r#"{"action":"refund","data":{"amount":900,"amountRefunded":500}}"#;
    assert_eq!(amount(refund, &MapOptions::default()).unwrap().minor, 500);
    assert!(map(
        r#"{"action":"sale","data":{"amount":null}}"#,
        &MapOptions::default()
    )
    .unwrap()
    .facts
    .amount
    .is_none());
}

#[test]
fn identity_falls_back_to_the_composite_then_the_body_hash() {
    let m = map(
        r#"{"action":"paymentLink","data":{"paymentLinkId":"L1","paymentId":"P1","transactionId":"T1"}}"#,
        &MapOptions::default(),
    )
    .unwrap();
    assert_eq!(m.vendor_event_id, "paymentLink:L1:T1");
    let m = map(
        r#"{"action":"sale","data":{"paymentId":{"$oid":"abc"}}}"#,
        &MapOptions::default(),
    )
    .unwrap();
    assert_eq!(m.vendor_event_id, "sale:abc:");
    let body = r#"{"action":"sale","data":{}}"#;
    let m = map(body, &MapOptions::default()).unwrap();
    assert_eq!(m.vendor_event_id, body_identity(body.as_bytes()));
    assert!(m.occurred_at.is_none());
}

#[test]
fn non_records_are_errors() {
    for body in [
        "",
        "not json",
        "[1,2]",
        r#"{"data":{}}"#,
        r#"{"action": 5}"#,
        "{\"action\": \"sale\"",
    ] {
        assert!(map(body, &MapOptions::default()).is_err(), "{body}");
    }
    assert!(Strictly
        .map(
            &crate::test_util::verified(vec![0xff, 0xfe]),
            &MapOptions::default()
        )
        .is_err());
}
