use super::*;

#[test]
fn decimal_amounts_are_exact() {
    let a = Amount::from_decimal("5.00", "USD").unwrap();
    assert_eq!((a.value.as_str(), a.minor), ("5.00", 500));
    let a = Amount::from_decimal("5", "USD").unwrap();
    assert_eq!((a.value.as_str(), a.minor), ("5.00", 500));
    let a = Amount::from_decimal("0.1", "USD").unwrap();
    assert_eq!((a.value.as_str(), a.minor), ("0.10", 10));
    let a = Amount::from_decimal("1234.500", "USD").unwrap();
    assert_eq!((a.value.as_str(), a.minor), ("1234.50", 123_450));
    let a = Amount::from_decimal("-2.05", "USD").unwrap();
    assert_eq!((a.value.as_str(), a.minor), ("-2.05", -205));
    let a = Amount::from_decimal("1500", "JPY").unwrap();
    assert_eq!((a.value.as_str(), a.minor), ("1500", 1500));
    let a = Amount::from_decimal("1.234", "KWD").unwrap();
    assert_eq!((a.value.as_str(), a.minor), ("1.234", 1234));
}

#[test]
fn bad_amounts_are_refused_not_rounded() {
    assert!(matches!(
        Amount::from_decimal("5.001", "USD"),
        Err(AmountError::TooPrecise(..))
    ));
    assert!(matches!(
        Amount::from_decimal("1e3", "USD"),
        Err(AmountError::NotDecimal(_))
    ));
    assert!(matches!(
        Amount::from_decimal("", "USD"),
        Err(AmountError::NotDecimal(_))
    ));
    assert!(matches!(
        Amount::from_decimal(".", "USD"),
        Err(AmountError::NotDecimal(_))
    ));
    assert!(matches!(
        Amount::from_decimal("99999999999999999999", "USD"),
        Err(AmountError::Overflow(_)) | Err(AmountError::NotDecimal(_))
    ));
}

#[test]
fn minor_amounts_format_with_the_currency_exponent() {
    assert_eq!(Amount::from_minor(360, "GBP").value, "3.60");
    assert_eq!(Amount::from_minor(5, "USD").value, "0.05");
    assert_eq!(Amount::from_minor(-5, "USD").value, "-0.05");
    assert_eq!(Amount::from_minor(7, "JPY").value, "7");
}

#[test]
fn empty_object_and_merchant_ids_name_nothing() {
    let mapped = Mapped {
        event_type: "unknown".into(),
        vendor_event_type: "settlement.batch.closed".into(),
        vendor_event_id: "e2".into(),
        occurred_at: None,
        facts: Facts {
            object: Some(ObjectRef {
                kind: "transaction".into(),
                id: String::new(),
            }),
            merchant: Some(Merchant { id: String::new() }),
            ..Facts::default()
        },
    };
    let event = Event::from_mapped(VendorKind::Usaepay, "s", mapped, OffsetDateTime::UNIX_EPOCH);
    assert_eq!(event.subject, None);
    assert!(event.data.facts.object.is_none() && event.data.facts.merchant.is_none());
}

#[test]
fn event_ids_are_stable_uuids_that_differ_by_source() {
    let a = event_id(VendorKind::Usaepay, "main", "abc");
    assert_eq!(a, event_id(VendorKind::Usaepay, "main", "abc"));
    assert_ne!(a, event_id(VendorKind::Usaepay, "other", "abc"));
    assert_ne!(a, event_id(VendorKind::Usaepay, "main", "abd"));
    assert_eq!(a.len(), 36);
    assert_eq!(&a[14..15], "8");
    // Ids already published must not change: computed independently
    // (SHA-256 of "hookgate/event-id/v1\0usaepay\0main\0abc", first 16
    // bytes, version 8 and the RFC 9562 variant set, in Python).
    assert_eq!(a, "5531484e-3c53-8613-839e-cf3dd5c2e373");
}
