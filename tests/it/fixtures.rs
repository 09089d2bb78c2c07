//! Fixtures live in `tests/fixtures/<vendor>/`. Every body file (`*.json`,
//! `*.txt`) has a sibling `<name>.expect.json` holding what the vendor's docs
//! say the event means: a subset of the expected canonical event, plus
//! optional `_options` (per-source mapping options), `_absent` (dotted
//! paths that must not appear) and `_source` (where the body's shape comes
//! from, when the name does not say). The expectations are written by hand from the
//! docs, never captured from the code's output.

use std::path::{Path, PathBuf};

use hookgate::vendors::{AmountUnit, MapOptions, VendorKind, VendorOptions};
use serde_json::Value;

use crate::support::{schema_validator, subset_mismatch};

pub fn fixture_dir(vendor: VendorKind) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(vendor.name())
}

/// `(body path, expectation)` for every fixture of a vendor.
pub fn fixtures(vendor: VendorKind) -> Vec<(PathBuf, Value)> {
    let mut out = Vec::new();
    let dir = fixture_dir(vendor);
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.ends_with(".expect.json") {
            continue;
        }
        let stem = name.rsplit_once('.').map(|(s, _)| s).unwrap_or(&name);
        let expect_path = dir.join(format!("{stem}.expect.json"));
        let expect = std::fs::read_to_string(&expect_path)
            .unwrap_or_else(|_| panic!("{} has no {}", path.display(), expect_path.display()));
        let expect: Value = serde_json::from_str(&expect)
            .unwrap_or_else(|e| panic!("{}: {e}", expect_path.display()));
        out.push((path, expect));
    }
    out
}

/// The `[source.map]` the `generic` fixtures are read with.
pub fn generic_map() -> hookgate::vendors::generic::GenericMap {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/generic.map.toml");
    let raw: hookgate::vendors::generic::RawMap =
        toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    hookgate::vendors::generic::GenericMap::build(&raw).unwrap()
}

/// The mapping options a fixture asks for (and, for the `generic`
/// fixtures, their map; other vendors ignore it).
pub fn options_from(expect: &Value) -> MapOptions {
    let mut options = MapOptions {
        vendor: VendorOptions::Generic(std::sync::Arc::new(generic_map())),
        ..MapOptions::default()
    };
    if let Some(o) = expect.get("_options") {
        if let Some(unit) = o.get("amount_unit").and_then(Value::as_str) {
            options.vendor = VendorOptions::Strictly {
                amount_unit: match unit {
                    "major" => AmountUnit::Major,
                    _ => AmountUnit::Minor,
                },
            };
        }
        if let Some(c) = o.get("currency").and_then(Value::as_str) {
            options.currency = c.to_owned();
        }
        if let Some(p) = o.get("include_personal_data").and_then(Value::as_bool) {
            options.vendor = VendorOptions::Stickypay {
                include_personal_data: p,
            };
        }
    }
    options
}

/// The receipt time [`map_fixture`] uses, as published: what an
/// expectation says for a body that carries no time of its own.
pub const RECEIVED_AT: &str = "2023-11-14T22:13:20Z";

/// Runs a body through the vendor's real mapping and the card guard, exactly
/// as the pipeline does.
pub fn map_fixture(
    vendor: VendorKind,
    source_id: &str,
    body: &[u8],
    options: &MapOptions,
) -> Value {
    let published = hookgate::test_util::published(vendor, source_id, body, options);
    serde_json::from_slice(&published).unwrap()
}

/// Adds a full test card number next to the vendor's own fields (at the top
/// level and inside `data`/`v2`/`event_body`), where a careless merchant note would sit.
fn plant_card_number(body: &[u8]) -> Option<Vec<u8>> {
    let mut doc: Value = serde_json::from_slice(body).ok()?;
    let note = Value::from("customer note: card 4111 1111 1111 1111 exp 12/30");
    doc.as_object_mut()?
        .insert("hookgate_note".into(), note.clone());
    for key in ["data", "v2", "event_body"] {
        if let Some(inner) = doc.get_mut(key).and_then(Value::as_object_mut) {
            inner.insert("hookgate_note".into(), note.clone());
            inner.insert("hookgate_pan".into(), Value::from(4_012_888_888_881_881u64));
        }
    }
    serde_json::to_vec(&doc).ok()
}

#[test]
fn no_full_card_number_survives_mapping_of_any_fixture() {
    let mut planted = 0;
    for vendor in VendorKind::ALL {
        for (path, expect) in fixtures(vendor) {
            let original = std::fs::read(&path).unwrap();
            let mut bodies = vec![original.clone()];
            if let Some(with_pan) = plant_card_number(&original) {
                bodies.push(with_pan);
                planted += 1;
            }
            for body in bodies {
                let event = map_fixture(vendor, "fixture-source", &body, &options_from(&expect));
                let text = event.to_string();
                let (_, left) = hookgate::guard::mask_text(&text);
                assert_eq!(
                    left,
                    0,
                    "{}: a card number is published: {text}",
                    path.display()
                );
                assert!(
                    !text.contains("4111 1111 1111 1111") && !text.contains("4012888888881881"),
                    "{}",
                    path.display()
                );
            }
        }
    }
    assert!(
        planted > 20,
        "card numbers were planted in the JSON fixtures ({planted})"
    );
}

fn lookup<'a>(value: &'a Value, dotted: &str) -> Option<&'a Value> {
    dotted.split('.').try_fold(value, |v, key| v.get(key))
}

#[test]
fn every_vendor_has_fixtures() {
    for vendor in VendorKind::ALL {
        assert!(
            fixtures(vendor).len() >= 3,
            "{} needs fixtures in {}",
            vendor.name(),
            fixture_dir(vendor).display()
        );
    }
}

#[test]
fn every_fixture_maps_to_a_schema_valid_event_with_the_documented_values() {
    let validator = schema_validator();
    let mut failures = Vec::new();
    for vendor in VendorKind::ALL {
        for (path, expect) in fixtures(vendor) {
            let body = std::fs::read(&path).unwrap();
            let event = map_fixture(vendor, "fixture-source", &body, &options_from(&expect));
            let name = path
                .strip_prefix(env!("CARGO_MANIFEST_DIR"))
                .unwrap()
                .display()
                .to_string();
            let errors: Vec<String> = validator
                .iter_errors(&event)
                .map(|e| format!("{e} at {}", e.instance_path))
                .collect();
            if !errors.is_empty() {
                failures.push(format!("{name}: schema: {errors:?}"));
            }
            let mut wanted = expect.clone();
            if let Some(obj) = wanted.as_object_mut() {
                obj.remove("_options");
                obj.remove("_absent");
                obj.remove("_source");
            }
            if let Some(mismatch) = subset_mismatch(&wanted, &event, "") {
                failures.push(format!("{name}: {mismatch}\n  event: {event}"));
            }
            for absent in expect
                .get("_absent")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let absent = absent.as_str().unwrap();
                if lookup(&event, absent).is_some() {
                    failures.push(format!("{name}: `{absent}` should be absent"));
                }
            }
            assert_eq!(event["source"], "/sources/fixture-source");
            assert_eq!(event["data"]["vendor"], vendor.name());
        }
    }
    assert!(
        failures.is_empty(),
        "{} fixture failure(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn the_same_body_always_gets_the_same_id_and_other_sources_another() {
    for vendor in VendorKind::ALL {
        for (path, expect) in fixtures(vendor) {
            let body = std::fs::read(&path).unwrap();
            let options = options_from(&expect);
            let a = map_fixture(vendor, "one", &body, &options);
            let b = map_fixture(vendor, "one", &body, &options);
            let c = map_fixture(vendor, "two", &body, &options);
            assert_eq!(a["id"], b["id"], "{}", path.display());
            assert_ne!(a["id"], c["id"], "{}", path.display());
        }
    }
}

/// Fixtures that are the same vendor event on purpose: the signed test
/// vector is the seed's sale, byte-compact; Strictly's doc samples come in
/// each of the encodings it posts (form text, JSON, MongoDB extended JSON).
const SAME_EVENT: &[&[&str]] = &[
    &[
        "usaepay/seed-transaction-sale-success.json",
        "usaepay/signed-vector-sale-success.json",
    ],
    &["strictly/doc-sale-cash.txt", "strictly/json-sale-cash.json"],
    &[
        "strictly/doc-refund-card.txt",
        "strictly/extjson-relaxed-refund-card.json",
        "strictly/json-refund-card.json",
    ],
    &[
        "strictly/doc-sale-card.txt",
        "strictly/extjson-canonical-sale-card.json",
        "strictly/json-sale-card.json",
    ],
];

#[test]
fn distinct_fixtures_are_distinct_events() {
    // Sent one after another (the walkthrough does), fixtures sharing an id
    // would be answered as duplicates and never published.
    let mut by_id: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for vendor in VendorKind::ALL {
        for (path, expect) in fixtures(vendor) {
            let body = std::fs::read(&path).unwrap();
            let event = map_fixture(vendor, "one", &body, &options_from(&expect));
            let name = format!(
                "{}/{}",
                vendor.name(),
                path.file_name().unwrap().to_string_lossy()
            );
            by_id
                .entry(event["id"].as_str().unwrap().to_owned())
                .or_default()
                .push(name);
        }
    }
    let shared: Vec<&Vec<String>> = by_id
        .values()
        .filter(|names| names.len() > 1 && !SAME_EVENT.iter().any(|same| names.as_slice() == *same))
        .collect();
    assert!(shared.is_empty(), "fixtures with one event id: {shared:?}");
}
