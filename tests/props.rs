//! Property tests on hookgate's hostile-input surfaces, without a network:
//! signatures (a body signed with one key never verifies with another) and
//! vendor mapping (never panics, and every event it would publish, mapped or
//! `unmapped`, is valid against `schemas/canonical-event.schema.json`).
//!
//! Inputs are both arbitrary (bytes, JSON values) and near-valid: the vendor
//! fixtures with one field replaced, removed or re-typed, so mapping code past
//! "invalid JSON" is exercised. Case counts are bounded so this binary runs in
//! a few seconds in debug builds; `scripts/fuzz` explores much further.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hookgate::auth::{AuthError, HmacVerifier, SignatureScheme, StandardWebhooks};
use hookgate::secret::Secret;
use hookgate::vendors::{MapOptions, VendorKind};
use hyper::header::{HeaderMap, HeaderValue};
use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::{json, Value};

// === shared helpers ===

fn config(cases: u32) -> Config {
    Config {
        cases,
        // Failures are turned into named regression tests below instead.
        failure_persistence: None,
        ..Config::default()
    }
}

fn validator() -> &'static jsonschema::Validator {
    static VALIDATOR: OnceLock<jsonschema::Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/schemas/canonical-event.schema.json"
        );
        let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        jsonschema::options()
            .should_validate_formats(true)
            .build(&schema)
            .expect("the schema compiles")
    })
}

use hookgate::test_util::option_sets;

/// What the pipeline would publish for this authenticated body, as the
/// consumer reads it back (serialized, then parsed with serde_json's defaults).
fn published(vendor: VendorKind, body: &[u8], options: &MapOptions) -> Result<Value, String> {
    // What goes on the bus: serialized through the card-number guard.
    let body = hookgate::test_util::published(vendor, "prop-source", body, options);
    serde_json::from_slice(&body).map_err(|e| format!("a consumer cannot parse the event: {e}"))
}

/// Maps `body` for `vendor` under every option set and checks the result is
/// a schema-valid event (mapped, `unknown` or `unmapped`).
fn assert_publishable(vendor: VendorKind, body: &[u8]) -> Result<(), TestCaseError> {
    for options in option_sets() {
        let event = published(vendor, body, &options).map_err(|e| {
            TestCaseError::fail(format!(
                "{}: {e}\nbody: {}",
                vendor.name(),
                String::from_utf8_lossy(body)
            ))
        })?;
        let errors: Vec<String> = validator()
            .iter_errors(&event)
            .map(|e| format!("{} at {}", e, e.instance_path))
            .collect();
        prop_assert!(
            errors.is_empty(),
            "{} ({options:?}): schema errors {errors:?}\nbody: {}\nevent: {event}",
            vendor.name(),
            String::from_utf8_lossy(body)
        );
        let kind = event["type"].as_str().unwrap_or_default();
        if kind == "unmapped" {
            prop_assert!(event["data"]["unmapped"]["reason"].is_string());
        }
    }
    Ok(())
}

fn fixture_dir(vendor: VendorKind) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(vendor.name())
}

/// Every fixture body of a vendor that is strict JSON, parsed.
fn json_fixtures(vendor: VendorKind) -> Vec<Value> {
    let mut paths: Vec<_> = std::fs::read_dir(fixture_dir(vendor))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.to_string_lossy().ends_with(".expect.json"))
        .collect();
    paths.sort();
    paths
        .iter()
        .filter_map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).ok())
        .collect()
}

/// Every fixture body of a vendor, raw (includes Strictly's shell notation).
fn raw_fixtures(vendor: VendorKind) -> Vec<Vec<u8>> {
    let mut paths: Vec<_> = std::fs::read_dir(fixture_dir(vendor))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.to_string_lossy().ends_with(".expect.json"))
        .collect();
    paths.sort();
    paths.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

fn vendor_strategy() -> impl Strategy<Value = VendorKind> {
    prop::sample::select(VendorKind::ALL.to_vec())
}

/// Arbitrary JSON values, including awkward numbers and strings.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop::sample::select(vec![
            "",
            "0",
            "-0",
            "5.00",
            "-2.05",
            "1e3",
            "NaN",
            "USD",
            "usd",
            "JPY",
            "XXX",
            "€",
            "2021-04-07 15:14:26",
            "2024-06-24T16:20:02.393-04:00",
            "9999-12-31T23:59:60Z",
            "ObjectId(\"x\")",
            "\u{0}",
            "\u{feff}",
            "🙂",
        ])
        .prop_map(Value::from),
        ".{0,24}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![
                        prop::sample::select(FIELD_NAMES.to_vec()).prop_map(str::to_owned),
                        "[a-zA-Z_$]{1,12}",
                    ],
                    inner
                ),
                0..6
            )
            .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// Field names the four mappings read, so arbitrary objects hit real paths.
const FIELD_NAMES: [&str; 40] = [
    "type",
    "event_type",
    "event_body",
    "event_id",
    "event_triggered",
    "object",
    "key",
    "amount_detail",
    "amount",
    "merchant",
    "merch_key",
    "changes",
    "old",
    "new",
    "status",
    "action",
    "data",
    "_id",
    "$oid",
    "$date",
    "$numberLong",
    "createdAt",
    "currency",
    "paymentId",
    "transactionId",
    "error",
    "amountToRefund",
    "amountRefunded",
    "eventType",
    "id",
    "transactionStatus",
    "processMethod",
    "v2",
    "event",
    "payment",
    "total",
    "sessionPaidAt",
    "refundedTotal",
    "userPrivateKey",
    "server",
];

/// Hostile raw literals spliced into otherwise valid JSON text: numbers no
/// 64-bit integer or float holds, and deep nesting.
const RAW_LITERALS: [&str; 10] = [
    "18446744073709551616",
    "-9223372036854775809",
    "9223372036854775807",
    "-9223372036854775808",
    "1e400",
    "-1e400",
    "0.000000000000000000000000000001",
    "123456789012345678901234567890.12",
    "-0.0",
    "1E+2",
];

const MARKER: &str = "__hookgate_prop_marker__";

/// One way to damage a fixture.
#[derive(Debug, Clone)]
enum Mutation {
    Replace(usize, Value),
    Remove(usize),
    Raw(usize, &'static str),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), json_value()).prop_map(|(i, v)| Mutation::Replace(i, v)),
        any::<usize>().prop_map(Mutation::Remove),
        (any::<usize>(), prop::sample::select(RAW_LITERALS.to_vec()))
            .prop_map(|(i, s)| Mutation::Raw(i, s)),
    ]
}

/// JSON pointers of every node below the root.
fn pointers(value: &Value, at: String, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let p = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                out.push(p.clone());
                pointers(v, p, out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                let p = format!("{at}/{i}");
                out.push(p.clone());
                pointers(v, p, out);
            }
        }
        _ => {}
    }
}

/// Applies mutations to a fixture and returns the body bytes.
fn mutate(mut doc: Value, mutations: &[Mutation]) -> Vec<u8> {
    let mut raw = None;
    for m in mutations {
        let mut all = Vec::new();
        pointers(&doc, String::new(), &mut all);
        if all.is_empty() {
            break;
        }
        let (index, replacement) = match m {
            Mutation::Replace(i, v) => (*i, Some(v.clone())),
            Mutation::Remove(i) => (*i, None),
            Mutation::Raw(i, s) => {
                raw = Some(*s);
                (*i, Some(Value::from(MARKER)))
            }
        };
        let pointer = &all[index % all.len()];
        let (parent, last) = pointer.rsplit_once('/').unwrap();
        let last = last.replace("~1", "/").replace("~0", "~");
        match (doc.pointer_mut(parent), replacement) {
            (Some(Value::Object(map)), Some(v)) => {
                map.insert(last, v);
            }
            (Some(Value::Object(map)), None) => {
                map.remove(&last);
            }
            (Some(Value::Array(items)), Some(v)) => {
                let i: usize = last.parse().unwrap();
                items[i] = v;
            }
            (Some(Value::Array(items)), None) => {
                let i: usize = last.parse().unwrap();
                items.remove(i);
            }
            _ => {}
        }
    }
    let text = serde_json::to_string(&doc).unwrap();
    match raw {
        Some(literal) => text.replace(&format!("\"{MARKER}\""), literal).into_bytes(),
        None => text.into_bytes(),
    }
}

fn fixtures_of_every_vendor() -> &'static Vec<(VendorKind, Value)> {
    static ALL: OnceLock<Vec<(VendorKind, Value)>> = OnceLock::new();
    ALL.get_or_init(|| {
        VendorKind::ALL
            .into_iter()
            .flat_map(|v| json_fixtures(v).into_iter().map(move |f| (v, f)))
            .collect()
    })
}

fn raw_fixtures_of_every_vendor() -> &'static Vec<(VendorKind, Vec<u8>)> {
    static ALL: OnceLock<Vec<(VendorKind, Vec<u8>)>> = OnceLock::new();
    ALL.get_or_init(|| {
        VendorKind::ALL
            .into_iter()
            .flat_map(|v| raw_fixtures(v).into_iter().map(move |f| (v, f)))
            .collect()
    })
}

// === signatures ===

fn usaepay(keys: &[&str]) -> HmacVerifier {
    HmacVerifier::new(
        SignatureScheme::HexBody {
            header: "x-signature",
        },
        keys.iter().map(|k| Secret::new(*k)).collect(),
        Duration::from_secs(300),
    )
}

fn nexio(keys: &[&str]) -> HmacVerifier {
    HmacVerifier::new(
        SignatureScheme::TimestampedHex {
            header: "nexio-signature",
        },
        keys.iter().map(|k| Secret::new(*k)).collect(),
        Duration::from_secs(300),
    )
}

fn header(name: &'static str, value: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(name, HeaderValue::from_str(value).unwrap());
    h
}

/// Keys as an operator writes them: 1..=64 printable characters. (HMAC
/// zero-pads keys shorter than its block and hashes longer ones, so `k` and
/// `k\0`, or a 65+ byte key and its SHA-256, are the same HMAC key by design;
/// such pairs are not "other keys".)
fn key() -> impl Strategy<Value = String> {
    "[!-~]{1,64}"
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn a_body_signed_with_one_key_never_verifies_with_another(
        k in key(),
        others in prop::collection::vec(key(), 1..3),
        body in prop::collection::vec(any::<u8>(), 0..512),
        skew in -299i64..299,
    ) {
        prop_assume!(!others.contains(&k));
        let now_secs = 1_700_000_000u64;
        let now = UNIX_EPOCH + Duration::from_secs(now_secs);
        let t = now_secs.checked_add_signed(skew).unwrap();
        let other_refs: Vec<&str> = others.iter().map(String::as_str).collect();

        // USAePay: hex HMAC of the body.
        let sig = usaepay(&[&k]).sign(0, None, &body);
        let h = header("x-signature", &sig);
        prop_assert_eq!(usaepay(&[&k]).verify(&h, &body, now), Ok(()));
        prop_assert_eq!(
            usaepay(&other_refs).verify(&h, &body, now),
            Err(AuthError::SignatureMismatch)
        );
        // Listing the right key among others (a rotation) still verifies.
        let mut rotation = other_refs.clone();
        rotation.push(&k);
        prop_assert_eq!(usaepay(&rotation).verify(&h, &body, now), Ok(()));

        // Nexio legacy: t=..,v1=.. over `t.body`, within the tolerance.
        let sig = nexio(&[&k]).sign(0, Some(t), &body);
        let h = header("nexio-signature", &sig);
        prop_assert_eq!(nexio(&[&k]).verify(&h, &body, now), Ok(()));
        prop_assert_eq!(
            nexio(&other_refs).verify(&h, &body, now),
            Err(AuthError::SignatureMismatch)
        );
        prop_assert_eq!(nexio(&rotation).verify(&h, &body, now), Ok(()));
        // The `s=` spelling carries the same guarantee.
        let h = header("nexio-signature", &sig.replace("v1=", "s="));
        prop_assert_eq!(
            nexio(&other_refs).verify(&h, &body, now),
            Err(AuthError::SignatureMismatch)
        );
    }

    #[test]
    fn a_standard_webhooks_signature_fails_with_any_other_key_or_changed_byte(
        k in prop::collection::vec(any::<u8>(), 24..64),
        other in prop::collection::vec(any::<u8>(), 24..64),
        id in "msg_[A-Za-z0-9_-]{1,40}",
        body in prop::collection::vec(any::<u8>(), 0..512),
        skew in -299i64..299,
        flip in any::<prop::sample::Index>(),
        bit in 0u8..8,
        part in 0usize..3,
    ) {
        prop_assume!(k != other);
        let engine = base64::engine::general_purpose::STANDARD;
        let secret = |bytes: &[u8]| Secret::new(format!("whsec_{}", base64::Engine::encode(&engine, bytes)));
        let verifier = |keys: &[&[u8]]| {
            let keys: Vec<Secret> = keys.iter().map(|k| secret(k)).collect();
            StandardWebhooks::new(&keys, Duration::from_secs(300)).unwrap()
        };
        let now_secs = 1_700_000_000u64;
        let now = UNIX_EPOCH + Duration::from_secs(now_secs);
        let t = now_secs.checked_add_signed(skew).unwrap();
        let signature = verifier(&[&k]).sign(0, &id, t, &body);
        let headers = |id: &str, t: &str| {
            let mut h = HeaderMap::new();
            h.insert("webhook-id", HeaderValue::from_str(id).unwrap());
            h.insert("webhook-timestamp", HeaderValue::from_str(t).unwrap());
            h.insert("webhook-signature", HeaderValue::from_str(&signature).unwrap());
            h
        };
        let good = headers(&id, &t.to_string());
        prop_assert_eq!(verifier(&[&k]).verify(&good, &body, now), Ok(()));
        prop_assert_eq!(verifier(&[&other, &k]).verify(&good, &body, now), Ok(()));
        prop_assert_eq!(
            verifier(&[&other]).verify(&good, &body, now),
            Err(AuthError::WebhookMismatch)
        );
        // One changed bit of the id, the timestamp or the body.
        let refused = match part {
            0 if !body.is_empty() => {
                let mut changed = body.clone();
                changed[flip.index(body.len())] ^= 1 << bit;
                verifier(&[&k]).verify(&good, &changed, now)
            }
            1 => {
                // Another id of the same shape (a changed character).
                let at = 4 + flip.index(id.len() - 4);
                let mut changed = id.clone().into_bytes();
                changed[at] = if changed[at] == b'a' { b'b' } else { b'a' };
                let changed = String::from_utf8(changed).unwrap();
                prop_assume!(changed != id);
                verifier(&[&k]).verify(&headers(&changed, &t.to_string()), &body, now)
            }
            _ => {
                let changed = (t + 1 + u64::from(bit)).to_string();
                verifier(&[&k]).verify(&headers(&id, &changed), &body, now)
            }
        };
        prop_assert!(refused.is_err());
    }

    #[test]
    fn a_signature_never_covers_a_changed_body_or_timestamp(
        k in key(),
        body in prop::collection::vec(any::<u8>(), 0..256),
        flip in any::<prop::sample::Index>(),
        bit in 0u8..8,
        dt in 1u64..1000,
    ) {
        let now_secs = 1_700_000_000u64;
        let now = UNIX_EPOCH + Duration::from_secs(now_secs);
        let mut changed = body.clone();
        if changed.is_empty() {
            changed.push(bit);
        } else {
            let i = flip.index(changed.len());
            changed[i] ^= 1 << bit;
        }
        let sig = usaepay(&[&k]).sign(0, None, &body);
        prop_assert_eq!(
            usaepay(&[&k]).verify(&header("x-signature", &sig), &changed, now),
            Err(AuthError::SignatureMismatch)
        );
        let sig = nexio(&[&k]).sign(0, Some(now_secs), &body);
        prop_assert_eq!(
            nexio(&[&k]).verify(&header("nexio-signature", &sig), &changed, now),
            Err(AuthError::SignatureMismatch)
        );
        // Moving t (inside the window) without re-signing breaks the MAC.
        let moved = sig.replacen(&format!("t={now_secs}"), &format!("t={}", now_secs - dt.min(299)), 1);
        prop_assert_eq!(
            nexio(&[&k]).verify(&header("nexio-signature", &moved), &body, now),
            Err(AuthError::SignatureMismatch)
        );
        // A genuine signature outside the window is refused as expired.
        let old = nexio(&[&k]).sign(0, Some(now_secs - 301 - dt), &body);
        prop_assert_eq!(
            nexio(&[&k]).verify(&header("nexio-signature", &old), &body, now),
            Err(AuthError::SignatureExpired)
        );
    }

    #[test]
    fn arbitrary_signature_headers_are_refused_without_panicking(
        value in "[ -~]{0,160}",
        body in prop::collection::vec(any::<u8>(), 0..64),
        now_secs in 0u64..(1 << 36),
    ) {
        let now = UNIX_EPOCH + Duration::from_secs(now_secs);
        let h = header("x-signature", &value);
        prop_assert!(usaepay(&["k"]).verify(&h, &body, now).is_err());
        let h = header("nexio-signature", &value);
        prop_assert!(nexio(&["k"]).verify(&h, &body, now).is_err());
    }
}

// === mapping ===

/// Text made of card numbers, escapes, separators, letters and digits in any
/// order: where the card guard's cheap test and its full scan could disagree.
fn card_text() -> impl Strategy<Value = String> {
    let piece = prop::sample::select(vec![
        "4111111111111111",
        "4111 1111 1111 1111",
        "5500-0000-0000-0004",
        "378282246310005",
        "000000000000",
        "\n",
        "\u{1}",
        "\u{1f}",
        "\t",
        "\"",
        "\\",
        "x",
        "a",
        "f",
        "u",
        "1",
        "0",
        " ",
        "-",
        "é",
    ]);
    prop::collection::vec(piece, 0..8).prop_map(|pieces| pieces.concat())
}

proptest! {
    #![proptest_config(config(2048))]

    #[test]
    fn the_card_guards_fast_path_never_skips_a_card_number(
        texts in prop::collection::vec(card_text(), 1..4),
        number in prop::sample::select(vec![0u64, 4_111_111_111_111_111, 378_282_246_310_005, 4_111_111_111_111_112]),
    ) {
        let document = json!({ "data": { "vendor_data": { "notes": texts, "n": number } } });
        let (_, masked) = hookgate::guard::masked_json(document.clone());
        let serialized = serde_json::to_vec(&document).unwrap();
        prop_assert!(
            masked == 0 || hookgate::guard::may_hold_card_number(&serialized),
            "the full scan masked {masked} in {} but the cheap test saw none",
            String::from_utf8_lossy(&serialized)
        );
    }
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn arbitrary_bytes_map_or_become_unmapped(
        vendor in vendor_strategy(),
        body in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        assert_publishable(vendor, &body)?;
    }

    #[test]
    fn arbitrary_json_values_map_or_become_unmapped(
        vendor in vendor_strategy(),
        value in json_value(),
    ) {
        assert_publishable(vendor, value.to_string().as_bytes())?;
    }

    #[test]
    fn arbitrary_json_inside_each_vendors_envelope_is_publishable(
        value in json_value(),
        choice in 0usize..14,
    ) {
        // Shapes that get past each mapping's first checks.
        let (vendor, body) = match choice {
            0 => (VendorKind::Usaepay, json!({"type": "event", "event_type": "transaction.sale.success",
                  "event_id": "e1", "event_triggered": "2021-04-07 15:14:26", "event_body": value})),
            1 => (VendorKind::Usaepay, json!({"type": "event", "event_type": "settlement.batch.closed",
                  "event_id": "e2", "event_body": {"object": value}})),
            2 => (VendorKind::Strictly, json!({"_id": "s1", "action": "sale", "data": value})),
            3 => (VendorKind::Strictly, json!({"_id": "s2", "action": "refund", "data": {"amountToRefund": value}})),
            4 => (VendorKind::Nexio, json!({"eventType": "TRANSACTION", "data": value})),
            5 => (VendorKind::Nexio, json!({"id": value, "transactionStatus": 20, "eventType": "TRANSACTION"})),
            6 => (VendorKind::Stickypay, json!({"v2": {"event": {"type": "SESSION_CART_PAY", "id": "x"}, "payment": value}})),
            // The decline, fail-callback, refund and settlement readers.
            8 => (VendorKind::Nexio, json!({"eventType": "TRANSACTION_AUTHORIZED",
                  "data": {"id": "t1", "error": value.clone(), "gatewayResponse": value.clone(), "kountResponse": value, "card": {"cardType": "visa"}}})),
            9 => (VendorKind::Nexio, json!({"data": {"id": "t2", "message": "declined", "amount": value.clone(), "card": value}})),
            10 => (VendorKind::Stickypay, json!({"v2": {"event": {"type": "SESSION_CART_REFUND", "id": "r", "createdAt": value.clone(),
                   "customData": {"refundAmount": value}}, "payment": {"refundedTotal": 300, "total": 500}}})),
            11 => (VendorKind::Usaepay, json!({"type": "event", "event_type": "settlement.batch.success", "event_id": "e3",
                   "event_body": {"object": {"totalsales": value.clone(), "totalcredits": value}}})),
            12 => (VendorKind::Usaepay, json!({"type": "event", "event_type": "ach.settled", "event_id": "e4",
                   "event_body": {"object": {"key": "k"}, "changes": {"old": {"status": value.clone()}, "new": {"status": value}}}})),
            13 => (VendorKind::Strictly, json!({"_id": "s3", "action": "payment.declined", "data": {"amount": value, "currency": "usd"}})),
            _ => (VendorKind::Stickypay, json!({"v2": {"event": {"type": "SESSION_CART_PAY", "id": "x", "customData": value}}})),
        };
        assert_publishable(vendor, body.to_string().as_bytes())?;
    }

    #[test]
    fn an_optional_figure_in_any_form_never_costs_the_event_its_type(
        value in json_value(),
        choice in 0usize..4,
    ) {
        let (vendor, body, kind) = match choice {
            0 => (VendorKind::Stickypay, json!({"v2": {"event": {"type": "SESSION_CART_PAY_FAIL", "id": "f"},
                  "payment": {"id": "p", "total": value, "currency": "GBP"}}}), "payment.failed"),
            1 => (VendorKind::Usaepay, json!({"type": "event", "event_type": "settlement.batch.success", "event_id": "e5",
                  "event_body": {"object": {"key": "b", "totalsales": value}}}), "settlement.batch_succeeded"),
            2 => (VendorKind::Usaepay, json!({"type": "event", "event_type": "transaction.refund.success", "event_id": "e6",
                  "event_body": {"object": {"key": "t", "auth_amount": value}}}), "refund.succeeded"),
            _ => (VendorKind::Strictly, json!({"_id": "s4", "action": "sale", "data": {"amount": value}}), "payment.succeeded"),
        };
        let event = published(vendor, body.to_string().as_bytes(), &MapOptions::default())
            .map_err(TestCaseError::fail)?;
        prop_assert_eq!(event["type"].as_str(), Some(kind), "{}", event);
        prop_assert!(validator().is_valid(&event), "{}", event);
        // Either the figure was read, or it was skipped with a note.
        let data = &event["data"];
        let read = data.get("amount").is_some() || data["settlement"].get("sales_total").is_some();
        prop_assert!(read || data["skipped"].as_array().is_some_and(|s| !s.is_empty()) || body.to_string().contains(":null"),
            "{}", event);
    }

    #[test]
    fn mutated_fixtures_map_or_become_unmapped(
        which in any::<prop::sample::Index>(),
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let all = fixtures_of_every_vendor();
        let (vendor, doc) = &all[which.index(all.len())];
        let body = mutate(doc.clone(), &mutations);
        assert_publishable(*vendor, &body)?;
    }

    #[test]
    fn truncated_or_spliced_fixture_text_is_publishable(
        which in any::<prop::sample::Index>(),
        cut in any::<prop::sample::Index>(),
        insert in prop::sample::select(vec![
            "", "ObjectId(", "ISODate(\"\")", "NumberLong(99999999999999999999)", "\"", "\\",
            "NumberDecimal(\"1e400\")", "{", "]", "\u{0}", "\u{ff}", "'", "NumberInt(-)",
        ]),
        keep_tail in any::<bool>(),
    ) {
        let all = raw_fixtures_of_every_vendor();
        let (vendor, text) = &all[which.index(all.len())];
        let at = cut.index(text.len() + 1);
        let mut body = text[..at].to_vec();
        body.extend_from_slice(insert.as_bytes());
        if keep_tail {
            body.extend_from_slice(&text[at..]);
        }
        assert_publishable(*vendor, &body)?;
    }
}

// === regression and edge cases found while hardening ===

/// Every fixture, untouched, is publishable under every option set.
#[test]
fn every_fixture_is_publishable_under_every_option_set() {
    for (vendor, body) in raw_fixtures_of_every_vendor() {
        assert_publishable(*vendor, body).unwrap();
    }
}

/// Found by `arbitrary_json_inside_each_vendors_envelope_is_publishable`:
/// an empty object key or merchant key gave an empty `subject` and
/// `data.object.id`, which the schema (rightly) refuses.
#[test]
fn empty_ids_in_a_body_are_publishable() {
    let bodies: [(VendorKind, &str); 2] = [
        (
            VendorKind::Usaepay,
            r#"{"event_body":{"object":{"key":""}},"event_id":"e2","event_type":"settlement.batch.closed","type":"event"}"#,
        ),
        (
            VendorKind::Usaepay,
            r#"{"event_body":{"merchant":{"merch_key":""},"object":{"type":"transaction","key":"k1","amount":"1.00"}},"event_id":"e3","event_type":"transaction.sale.success","type":"event"}"#,
        ),
    ];
    for (vendor, body) in bodies {
        assert_publishable(vendor, body.as_bytes()).unwrap();
    }
}

/// Numbers beyond i64/u64/f64 in the fields each mapping reads as amounts or
/// times: mapped exactly or `unmapped`, never wrapped or panicking.
#[test]
fn overflowing_numbers_in_amount_and_time_fields_are_publishable() {
    let bodies: Vec<(VendorKind, String)> = RAW_LITERALS
        .iter()
        .flat_map(|n| {
            [
                (VendorKind::Usaepay, format!(r#"{{"type":"event","event_type":"transaction.sale.success","event_id":"e","event_body":{{"object":{{"type":"transaction","key":"k","refnum":{n},"amount_detail":{{"amount":{n}}}}}}}}}"#)),
                (VendorKind::Usaepay, format!(r#"{{"type":"event","event_type":"settlement.batch.closed","event_id":"e","event_body":{{"object":{{"totalsales":"{}","totalcredits":{n}}}}}}}"#, n.trim_start_matches('-'))),
                (VendorKind::Strictly, format!(r#"{{"_id":"x","action":"sale","data":{{"amount":{n},"currency":"USD"}}}}"#)),
                (VendorKind::Strictly, format!(r#"{{"_id":"x","action":"sale","data":{{"amount":NumberLong({n}),"currency":"USD"}},"createdAt":{n}}}"#)),
                (VendorKind::Strictly, format!(r#"{{"_id":"x","action":"refund","data":{{"amountToRefund":NumberDecimal("{n}")}}}}"#)),
                (VendorKind::Nexio, format!(r#"{{"eventType":"TRANSACTION","id":{n},"transactionStatus":{n},"processMethod":{n}}}"#)),
                (VendorKind::Stickypay, format!(r#"{{"v2":{{"event":{{"type":"SESSION_CART_PAY","id":"x"}},"payment":{{"total":{n},"tip":{n},"discount":{n},"sessionPaidAt":{n},"currency":"USD"}}}}}}"#)),
                (VendorKind::Stickypay, format!(r#"{{"v2":{{"event":{{"type":"SESSION_CART_REFUND","id":"x"}},"payment":{{"total":1,"refundedTotal":{n},"refundedAt":{n},"currency":"USD"}}}}}}"#)),
            ]
        })
        .collect();
    for (vendor, body) in bodies {
        assert_publishable(vendor, body.as_bytes())
            .unwrap_or_else(|e| panic!("{}: {body}: {e}", vendor.name()));
    }
}

/// Authenticated bodies nested as deep as the JSON parser accepts: whatever
/// is published must still be JSON that a consumer using serde_json's default
/// limits can read (otherwise it is a poison message on the queue).
#[test]
fn deeply_nested_bodies_stay_readable_by_consumers() {
    for depth in [64usize, 120, 126, 127, 128, 129, 400, 10_000] {
        let nested = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
        let bodies = [
            (
                VendorKind::Usaepay,
                format!(
                    r#"{{"type":"event","event_type":"transaction.sale.success","event_id":"e","event_body":{{"object":{{"type":"transaction","key":"k","amount_detail":{{"amount":"5.00"}}}}}},"extra":{nested}}}"#
                ),
            ),
            (
                VendorKind::Strictly,
                format!(
                    r#"{{"_id":"x","action":"sale","data":{{"amount":600,"currency":"USD"}},"extra":{nested}}}"#
                ),
            ),
            (
                VendorKind::Nexio,
                format!(
                    r#"{{"eventType":"TRANSACTION","id":"t1","transactionStatus":20,"processMethod":"card","extra":{nested}}}"#
                ),
            ),
            (
                VendorKind::Stickypay,
                format!(
                    r#"{{"v2":{{"event":{{"type":"SESSION_CART_PAY","id":"x"}},"payment":{{"total":360,"currency":"GBP","sessionPaidAt":1707381745}},"extra":{nested}}}}}"#
                ),
            ),
        ];
        for (vendor, body) in bodies {
            assert_publishable(vendor, body.as_bytes())
                .unwrap_or_else(|e| panic!("{} depth {depth}: {e}", vendor.name()));
        }
    }
}

/// Duplicate keys: serde_json keeps the last, and what is published must
/// agree with one reading, not mix both (the amount and the id come from the
/// same occurrence).
#[test]
fn duplicate_keys_are_read_one_way_and_publishable() {
    let body = r#"{"type":"event","event_type":"transaction.sale.success","event_id":"first","event_triggered":"2021-04-07 15:14:26","event_body":{"object":{"type":"transaction","key":"k","amount_detail":{"amount":"5.00"}}},"event_id":"second","event_body":{"object":{"type":"transaction","key":"k2","amount_detail":{"amount":"7.00"}}}}"#;
    assert_publishable(VendorKind::Usaepay, body.as_bytes()).unwrap();
    let event = published(VendorKind::Usaepay, body.as_bytes(), &MapOptions::default()).unwrap();
    let data = &event["data"];
    match event["type"].as_str().unwrap() {
        "unmapped" => {}
        _ => {
            // Consistent: id, object and amount all from the same (last) occurrence.
            assert_eq!(data["vendor_event_id"], "second", "{event}");
            assert_eq!(data["object"]["id"], "k2", "{event}");
            assert_eq!(data["amount"]["minor"], 700, "{event}");
        }
    }
}

/// Non-UTF-8 bodies are never mapped: they are carried base64 as `unmapped`
/// (or withheld, for Sticky, whose bodies may hold personal data).
#[test]
fn invalid_utf8_is_unmapped_for_every_vendor() {
    let body: &[u8] = b"{\"type\":\"event\",\"event_id\":\"\xff\xfe\"}";
    for vendor in VendorKind::ALL {
        assert_publishable(vendor, body).unwrap();
        let event = published(vendor, body, &MapOptions::default()).unwrap();
        assert_eq!(event["type"], "unmapped", "{}: {event}", vendor.name());
        let unmapped = &event["data"]["unmapped"];
        let raw = unmapped["raw_body"].as_str().unwrap();
        if vendor == VendorKind::Stickypay {
            assert!(
                !raw.contains("event_id"),
                "Sticky withholds what it cannot redact"
            );
        } else {
            assert_eq!(unmapped["raw_body_encoding"], "base64", "{event}");
        }
    }
}

/// The clock used by the timestamped scheme is the request's; a header from
/// the far future is as expired as one from the past.
#[test]
fn nexio_signatures_from_the_future_are_expired_too() {
    let now_secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let body = b"{}";
    let v = nexio(&["k"]);
    let now = UNIX_EPOCH + Duration::from_secs(now_secs);
    let ahead = v.sign(0, Some(now_secs + 301), body);
    assert_eq!(
        v.verify(&header("nexio-signature", &ahead), body, now),
        Err(AuthError::SignatureExpired)
    );
    // A 12-digit timestamp (year ~33 658) parses and is refused, not overflowed.
    let far = v.sign(0, Some(999_999_999_999), body);
    assert_eq!(
        v.verify(&header("nexio-signature", &far), body, now),
        Err(AuthError::SignatureExpired)
    );
    // 13 digits is malformed.
    let too_far = v.sign(0, Some(9_999_999_999_999), body);
    assert_eq!(
        v.verify(&header("nexio-signature", &too_far), body, now),
        Err(AuthError::SignatureMalformed)
    );
}

/// The README promises Strictly's `server` block (delivery URL and Basic
/// credentials) and Nexio's `apiUserCredentials` are never published. That
/// must hold for bodies the mapping refuses too: an `unmapped` event carries
/// the raw body, so it must be redacted (or withheld) like Sticky's.
#[test]
fn secrets_in_unmappable_bodies_are_never_published() {
    let cases: [(VendorKind, &str, &[&str]); 4] = [
        // An `action` that is not a string makes the record unmappable.
        (
            VendorKind::Strictly,
            r#"{"_id":"x","server":{"path":"https://hooks.example/s?token=path-secret","username":"hook-user","password":"s3cr3t-Pa55word"},"action":{"name":"sale"},"data":{"amount":600}}"#,
            &["s3cr3t-Pa55word", "path-secret"],
        ),
        // Shell notation the relaxed reader refuses.
        (
            VendorKind::Strictly,
            r#"{"_id":ObjectId("x","y"),"server":{"path":"https://hooks.example/s?token=path-secret","username":"hook-user","password":"s3cr3t-Pa55word"},"action":"sale"}"#,
            &["s3cr3t-Pa55word", "path-secret"],
        ),
        // No eventType: unmappable.
        (
            VendorKind::Nexio,
            r#"{"onboardingId":"o1","apiUserCredentials":{"apiKey":"live-api-key-1234","userName":"api-user@example.com"}}"#,
            &["live-api-key-1234"],
        ),
        // Sticky, for comparison: already redacted.
        (
            VendorKind::Stickypay,
            r#"{"v2":{"event":{"id":"x"},"payment":{"userPrivateKey":"sticky-private-key-99"}}}"#,
            &["sticky-private-key-99"],
        ),
    ];
    let mut leaks = Vec::new();
    for (i, (vendor, body, secrets)) in cases.into_iter().enumerate() {
        for options in option_sets() {
            let event = published(vendor, body.as_bytes(), &options).unwrap();
            assert_eq!(event["type"], "unmapped", "{}: {event}", vendor.name());
            let text = event.to_string();
            for secret in secrets {
                let leak = format!(
                    "case {i} ({}): `{secret}` published in data.unmapped.raw_body",
                    vendor.name()
                );
                if text.contains(secret) && !leaks.contains(&leak) {
                    leaks.push(leak);
                }
            }
        }
    }
    assert!(leaks.is_empty(), "secrets published:\n{}", leaks.join("\n"));
}
