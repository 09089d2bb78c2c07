//! Shared oracles for hookgate's fuzz targets.
//!
//! Every target must never panic; the mapping targets also check that what
//! would be published is JSON a consumer's parser accepts and carries the
//! envelope fields every consumer relies on.

use hookgate::auth::Verified;
use hookgate::vendors::{AmountUnit, MapOptions, VendorKind};
use serde_json::Value;
use time::OffsetDateTime;

/// The per-source option sets a body is mapped under: the defaults, and the
/// other value of every switch (major units, personal data on, a 0- and a
/// 3-decimal currency).
pub fn option_sets() -> [MapOptions; 3] {
    [
        MapOptions::default(),
        MapOptions {
            amount_unit: AmountUnit::Major,
            currency: "JPY".to_owned(),
            include_personal_data: true,
        },
        MapOptions {
            amount_unit: AmountUnit::Minor,
            currency: "KWD".to_owned(),
            include_personal_data: false,
        },
    ]
}

/// Maps `data` as an authenticated body of `kind`, exactly as the pipeline
/// does (mapped, or `unmapped` with the vendor's redacted raw body), and
/// checks the serialized event.
pub fn map_and_check(kind: VendorKind, data: &[u8]) {
    let verified = Verified::assume_verified_for_tests(data.to_vec());
    let received = OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("valid time");
    for options in option_sets() {
        let (event, _) =
            hookgate::pipeline::normalize(kind, "fuzz-source", &options, &verified, received);
        let mapped = event.event_type != hookgate::canonical::UNMAPPED;
        let text = serde_json::to_string(&event).expect("a canonical event always serializes");
        let value: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!("published event is not JSON a consumer can parse ({e}); mapped={mapped}")
        });
        check_envelope(&value, mapped);
    }
}

fn check_envelope(event: &Value, mapped: bool) {
    assert_eq!(event["specversion"], "1.0");
    let id = event["id"].as_str().expect("id is a string");
    assert_eq!(id.len(), 36, "id is UUID-shaped: {id}");
    let kind = event["type"].as_str().expect("type is a string");
    assert!(!kind.is_empty(), "type is never empty");
    assert_eq!(
        kind == "unmapped",
        !mapped,
        "type unmapped iff mapping failed"
    );
    for key in ["time", "source", "vendor"] {
        assert!(event[key].is_string(), "{key} is a string");
    }
    let data = &event["data"];
    assert!(data["received_at"].is_string());
    assert!(data["occurred_at"].is_string());
    assert!(data["vendor_event_id"].is_string());
    if let Some(amount) = data.get("amount") {
        assert!(amount["value"].is_string(), "amount.value is a string");
        assert!(amount["minor"].is_i64(), "amount.minor is an integer");
    }
}
