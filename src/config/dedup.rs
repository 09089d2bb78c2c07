//! Building `[dedup]`: this process's window, or the one shared by
//! replicas in Redis, each problem reported with the key it is about.

use super::*;

/// What a pending claim in the shared window adds to `broker.confirm_timeout_ms`.
const SHARED_DEDUP_CLAIM_MARGIN: Duration = Duration::from_secs(30);

/// `[dedup] backend = "redis"`: the window in a store every replica shares.
pub(super) fn build_shared_dedup(
    b: &mut Builder,
    raw: Option<&RawDedup>,
    broker: &BrokerSettings,
) -> Option<crate::dedup::SharedSettings> {
    let raw = raw?;
    if raw.enabled == Some(false) {
        return None;
    }
    for (key, set) in [
        ("dedup.dir", raw.dir.is_some()),
        ("dedup.max_entries", raw.max_entries.is_some()),
    ] {
        if set {
            b.error(
                key,
                "only for `backend = \"local\"`; the shared store keeps every id for the window",
            );
        }
    }
    let Some(url) = raw.redis_url.as_deref() else {
        b.error("dedup.redis_url", "required with `backend = \"redis\"`");
        return None;
    };
    let url = b.expand("dedup.redis_url", url);
    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
        b.error("dedup.redis_url", "must start with redis:// or rediss://");
    } else if let Err(e) = redis::Client::open(url.as_str()) {
        // The crate's message never quotes the URL (it may hold the password).
        b.error("dedup.redis_url", format!("not a Redis URL: {e}"));
    }
    let hours = raw.window_hours.unwrap_or(DEFAULT_DEDUP_WINDOW_HOURS);
    if hours == 0 {
        b.error(
            "dedup.window_hours",
            "must be greater than 0 (or set enabled = false)",
        );
    }
    // A claim outlives the longest request: the broker's confirm plus a
    // margin longer than any inline look-up deadline and the spool's fsync.
    let pending_ttl = broker.confirm_timeout + SHARED_DEDUP_CLAIM_MARGIN;
    Some(crate::dedup::SharedSettings {
        url: Secret::new(url),
        key_prefix: raw
            .key_prefix
            .clone()
            .unwrap_or_else(|| DEFAULT_DEDUP_KEY_PREFIX.to_owned()),
        window: Duration::from_secs(hours * 3600),
        pending_ttl,
    })
}

pub(super) fn build_dedup(
    b: &mut Builder,
    raw: Option<&RawDedup>,
    spool: Option<&SpoolSettings>,
) -> Option<DedupSettings> {
    if raw.and_then(|r| r.enabled) == Some(false) {
        return None;
    }
    let dir = match raw.and_then(|r| r.dir.as_deref()) {
        Some(dir) => PathBuf::from(b.expand_required("dedup.dir", dir)),
        None => match (spool, raw) {
            (Some(spool), _) => spool.dir.clone(),
            // No spool and no [dedup]: nothing to keep ids in; off.
            (None, None) => return None,
            (None, Some(_)) => {
                b.error(
                    "dedup.dir",
                    "missing: set it, or configure [spool] whose dir is the default",
                );
                return None;
            }
        },
    };
    let hours = raw
        .and_then(|r| r.window_hours)
        .unwrap_or(DEFAULT_DEDUP_WINDOW_HOURS);
    if hours == 0 {
        b.error(
            "dedup.window_hours",
            "must be greater than 0 (or set enabled = false)",
        );
    }
    let max_entries = raw
        .and_then(|r| r.max_entries)
        .unwrap_or(DEFAULT_DEDUP_MAX_ENTRIES);
    if max_entries == 0 {
        b.error(
            "dedup.max_entries",
            "must be greater than 0 (or set enabled = false)",
        );
    }
    Some(DedupSettings {
        dir,
        window: Duration::from_secs(hours * 3600),
        max_entries,
    })
}
