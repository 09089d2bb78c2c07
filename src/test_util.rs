//! What tests, property tests, benchmarks and fuzz targets need from inside
//! the crate, in one place: compiled only with the `test-util` feature (the
//! crate's own tests and dev-dependents turn it on), so a production build
//! has no way to make a [`Verified`] body without authenticating it.

use std::sync::Arc;

use hyper::body::Bytes;
use time::OffsetDateTime;

use crate::auth::Verified;
use crate::vendors::generic::{GenericMap, RawMap};
use crate::vendors::{AmountUnit, MapOptions, VendorKind, VendorOptions};

/// Marks a body as authenticated without any check, for tests that exercise
/// vendors directly.
pub fn verified(body: impl Into<Bytes>) -> Verified {
    Verified::vouched_by_operator(body)
}

/// The receipt time of [`published`]: 2023-11-14T22:13:20Z.
pub const RECEIVED_AT_UNIX: i64 = 1_700_000_000;

/// A `[source.map]` reading every kind of field (pointers, a header, a
/// decimal amount, types, redaction), for the `generic` vendor.
pub fn generic_map() -> GenericMap {
    let raw: RawMap = serde_json::from_value(serde_json::json!({
        "id": "/id", "type": "/type", "time": "/timestamp",
        "object_type": "/data/object", "object_id": "/data/id",
        "amount_value": "/data/amount", "currency": "/data/currency",
        "merchant_id": "header:x-account", "redact": ["/data/customer", "/data/list/0"],
        "types": { "charge.succeeded": "payment.succeeded" }
    }))
    .expect("a valid map");
    GenericMap::build(&raw).expect("a valid map")
}

/// The per-source option sets a body is mapped under: the defaults, and the
/// other value of every switch (major units, personal data on, a 0- and a
/// 3-decimal currency, a generic map).
pub fn option_sets() -> [MapOptions; 4] {
    [
        MapOptions::default(),
        MapOptions {
            currency: "JPY".to_owned(),
            vendor: VendorOptions::Strictly {
                amount_unit: AmountUnit::Major,
            },
        },
        MapOptions {
            currency: "JPY".to_owned(),
            vendor: VendorOptions::Stickypay {
                include_personal_data: true,
            },
        },
        MapOptions {
            currency: "KWD".to_owned(),
            vendor: VendorOptions::Generic(Arc::new(generic_map())),
        },
    ]
}

/// The bytes the pipeline would publish for this authenticated body, received
/// at [`RECEIVED_AT_UNIX`]: mapped (or `unmapped`) and through the card guard.
pub fn published(
    vendor: VendorKind,
    source_id: &str,
    body: &[u8],
    options: &MapOptions,
) -> Vec<u8> {
    let received = OffsetDateTime::from_unix_timestamp(RECEIVED_AT_UNIX).expect("a valid time");
    let verified = verified(body.to_vec());
    let event = crate::pipeline::normalize(vendor, source_id, options, &verified, received);
    crate::publish::Outgoing::from_event(&event).body
}

/// A name that no other call in this process, and no earlier run on this
/// machine, has used: `prefix`, the process id, the clock's nanoseconds and a
/// counter. Tests and the benchmark name their vhosts, exchanges, queues and
/// directories with it, so two runs never share broker or disk state.
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{prefix}-{}-{:x}-{}",
        std::process::id(),
        nanos & 0xffff_ffff,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A `Key: <n> kB` figure of a `/proc` file in KiB (`VmRSS` or `VmHWM` of
/// `/proc/<pid>/status`, `MemTotal` of `/proc/meminfo`), `None` where the
/// file or the key is missing: memory bounds are checked on the process
/// itself, as the kernel counts it, in tests and the benchmark alike.
pub fn proc_kib(path: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// [`proc_kib`] of `/proc/<pid>/status`.
pub fn proc_status_kib(pid: u32, key: &str) -> Option<u64> {
    proc_kib(&format!("/proc/{pid}/status"), key)
}
