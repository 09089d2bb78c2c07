//! Background publishing: the spool's drain and the deferred look-ups.
//!
//! [`run`] empties the spool into the broker. [`enrichment`] finishes thin
//! pings whose vendor look-up did not settle within the request (see
//! [`crate::enrich`]).
//!
//! Oldest first, a batch of up to 64 in flight at once, through the same confirm-mode publisher
//! the request path uses, so a drained event is published exactly as it would
//! have been (same id, routing key and properties). An entry is removed only
//! after its confirm. While the broker is away the task waits for the
//! connection instead of spinning; after a failed publish it backs off
//! (100 ms doubling to 5 s). It runs from start-up, so whatever a previous run
//! (or a crash) left in the spool is drained first thing.

use std::time::Duration;

use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::publish::{LinkState, Outgoing, PublishError, Publisher};
use crate::spool::{Spool, SpoolError, SpooledEvent};

/// How many entries are read from disk at a time.
const BATCH: usize = 64;

/// Drains until `stop` flips.
pub async fn run(
    spool: Spool,
    publisher: Publisher,
    metrics: std::sync::Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        if *stop.borrow() {
            return;
        }
        if !matches!(publisher.state(), LinkState::Up) {
            // Down or blocked by an alarm: wait for a link that takes publishes.
            tokio::select! {
                _ = publisher.wait_usable(Duration::from_secs(1)) => {}
                _ = stop.changed() => return,
            }
            continue;
        }
        let batch = match spool.oldest_async(BATCH).await {
            Ok(batch) => batch,
            Err(error @ SpoolError::CorruptEntry { seq, .. }) => {
                // Cannot be published as it was; keeping it would block every later event.
                tracing::error!(error = %error, "Spool entry unreadable; it is skipped and lost.");
                let _ = spool.remove(seq).await;
                continue;
            }
            Err(error) => {
                tracing::error!(error = %error, "Cannot read the spool; retrying.");
                sleep_or_stop(&mut stop, Duration::from_secs(1)).await;
                continue;
            }
        };
        if batch.is_empty() {
            tokio::select! {
                _ = spool.notified() => {}
                // A periodic look also covers appends made while we were busy.
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.changed() => return,
            }
            continue;
        }
        let (published, failed) = publish_batch(&spool, &publisher, batch).await;
        metrics.drained.inc_by(published);
        match failed {
            None => backoff = Duration::from_millis(100),
            Some((event_id, error)) => {
                tracing::warn!(error = %error, event_id = %event_id, retry_in_ms = backoff.as_millis() as u64, "Spooled event not confirmed; will retry.");
                sleep_or_stop(&mut stop, backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Publishes a batch of spooled events in spool order with all their
/// confirms in flight at once, removing each entry only after its own
/// confirm; a failed entry stays for the next pass. Returns how many were
/// published and the first failure, if any. Shared by the drain task and
/// `hookgate spool replay`.
pub async fn publish_batch(
    spool: &Spool,
    publisher: &Publisher,
    batch: Vec<SpooledEvent>,
) -> (u64, Option<(String, PublishError)>) {
    let outgoing: Vec<&Outgoing> = batch.iter().map(|entry| &entry.outgoing).collect();
    let outcomes = publisher.publish_in_order(&outgoing).await;
    let (mut published, mut failed) = (0, None);
    for (entry, outcome) in batch.into_iter().zip(outcomes) {
        match outcome {
            Ok(()) => {
                if let Err(error) = spool.remove(entry.seq).await {
                    tracing::warn!(error = %error, seq = entry.seq, "Published but not removed from the spool; it will be published again.");
                }
                published += 1;
            }
            Err(error) => {
                let _ = spool.bump_attempts(entry.seq).await;
                failed.get_or_insert((entry.outgoing.id, error));
            }
        }
    }
    (published, failed)
}

async fn sleep_or_stop(stop: &mut watch::Receiver<bool>, wait: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(wait) => {}
        _ = stop.changed() => {}
    }
}

/// Finishes deferred look-ups until `stop` flips.
///
/// Each pending entry is the thin event as it would have been published. On
/// its schedule ([`crate::enrich::next_delay`] after the enqueue time) the
/// ping is mapped again from its `vendor_data` (the identity is derived from
/// the ping's fields, so the id is unchanged), looked up, and published once:
/// `complete` with the record's facts, or `failed` with the reason when the
/// lookup is refused for good or the source's retry period runs out. It leaves
/// the pending store only after the broker confirmed it or the spool took it,
/// so a restart resumes where this left off.
pub async fn enrichment(
    pipeline: std::sync::Arc<crate::pipeline::Pipeline>,
    mut stop: watch::Receiver<bool>,
) {
    let Some(pending) = pipeline.pending().cloned() else {
        return;
    };
    loop {
        if *stop.borrow() {
            return;
        }
        let batch = match pending.oldest_async(BATCH).await {
            Ok(batch) => batch,
            Err(error) => {
                tracing::error!(error = %error, "Cannot read the pending look-ups; retrying.");
                sleep_or_stop(&mut stop, Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut next_due = Duration::from_secs(1);
        for entry in &batch {
            let now_ms = crate::store::now_ms();
            let due_ms = entry.enqueued_at_ms + schedule(entry.attempts).as_millis() as u64;
            if due_ms > now_ms {
                next_due = next_due.min(Duration::from_millis(due_ms - now_ms));
                continue;
            }
            match finish_lookup(&pipeline, entry, now_ms).await {
                Some(outgoing) => match pipeline.deliver(&outgoing).await {
                    Ok(_) => {
                        let _ = pending.remove(entry.seq).await;
                    }
                    Err(error) => {
                        tracing::warn!(error = %error, event_id = %outgoing.id, "Enriched event not yet safe; will retry.");
                        next_due = Duration::from_secs(1);
                    }
                },
                None => {
                    let _ = pending.bump_attempts(entry.seq).await;
                }
            }
        }
        tokio::select! {
            _ = pending.notified() => {}
            _ = tokio::time::sleep(next_due.max(Duration::from_millis(50))) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Delay before attempt number `attempts + 1` (the inline attempt was the first).
fn schedule(attempts: u32) -> Duration {
    (0..=attempts).map(crate::enrich::next_delay).sum()
}

/// One background attempt: `Some(event)` when it is settled (either way),
/// `None` to try again later.
async fn finish_lookup(
    pipeline: &crate::pipeline::Pipeline,
    entry: &crate::spool::SpooledEvent,
    now_ms: u64,
) -> Option<crate::publish::Outgoing> {
    use crate::canonical::Enrichment;
    use crate::enrich::{Lookup, LookupError};
    use crate::pipeline::{settle, to_event};

    let thin: serde_json::Value = match serde_json::from_slice(&entry.outgoing.body) {
        Ok(v) => v,
        Err(_) => return Some(entry.outgoing.clone()), // cannot happen: we wrote it; publish as is
    };
    let data = &thin["data"];
    let runtime = pipeline.runtime();
    let source = data["source_id"]
        .as_str()
        .and_then(|id| runtime.sources.get(id));
    let received_at = data["received_at"]
        .as_str()
        .and_then(|t| {
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
        })
        .unwrap_or_else(time::OffsetDateTime::now_utc);
    let attempts = entry.attempts + 2; // the inline attempt, and this one
    let (Some(source), Some(enrichment)) = (source, source.and_then(|s| s.enrichment.as_ref()))
    else {
        // The source was removed or lost its look-up settings in a reload: publish thin.
        return Some(with_enrichment(
            &entry.outgoing,
            Enrichment::failed("source no longer configured for look-ups", attempts),
        ));
    };
    let body = serde_json::to_vec(&data["vendor_data"]).unwrap_or_default();
    let verified = crate::auth::Verified::vouched_by_operator(body);
    let mut mapped = match source.vendor.vendor().map(&verified, &source.options) {
        Ok(mapped) => mapped,
        Err(_) => return Some(entry.outgoing.clone()),
    };
    let lookup = Lookup::for_nexio(&mapped)?;
    let expired =
        now_ms.saturating_sub(entry.enqueued_at_ms) >= enrichment.retry_period.as_millis() as u64;
    let outcome = match enrichment.enricher.lookup(&lookup).await {
        Ok(record) => Ok(record),
        Err(LookupError::Permanent(reason)) => Err(reason),
        Err(error) if expired => Err(format!(
            "no usable record after {} s: {error}",
            enrichment.retry_period.as_secs()
        )),
        Err(_) => return None,
    };
    let label = if outcome.is_ok() {
        "complete"
    } else {
        "failed"
    };
    pipeline
        .metrics()
        .enrichment
        .get_or_create(&crate::metrics::OutcomeLabel { outcome: label })
        .inc();
    settle(
        &mut mapped,
        &lookup,
        outcome,
        source.options.include_personal_data(),
        attempts,
    );
    let event = to_event(
        source.vendor,
        &source.id,
        &source.options,
        &verified,
        Ok(mapped),
        received_at,
    );
    Some(crate::publish::Outgoing::from_event(&event))
}

/// The thin event with an `enrichment` verdict added.
fn with_enrichment(
    outgoing: &crate::publish::Outgoing,
    verdict: crate::canonical::Enrichment,
) -> crate::publish::Outgoing {
    let mut out = outgoing.clone();
    if let Ok(mut event) = serde_json::from_slice::<serde_json::Value>(&outgoing.body) {
        event["data"]["enrichment"] = serde_json::to_value(&verdict).unwrap_or_default();
        if let Ok(body) = serde_json::to_vec(&event) {
            out.body = body;
        }
    }
    out
}
