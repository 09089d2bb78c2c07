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

use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::publish::{LinkState, Outgoing, PublishError, Publisher};
use crate::spool::{Spool, SpoolError, SpooledEvent};

/// How many entries are read from disk at a time.
const BATCH: usize = 64;

/// Drains until `stop` is cancelled, then for at most `on_stop` more while
/// anything is left (see [`drain_before_exit`]). Run it at
/// [`crate::watchdog::Stage::Drain`], so `stop` comes once no request can
/// spool any more.
pub async fn run(
    spool: Spool,
    publisher: Publisher,
    metrics: std::sync::Arc<Metrics>,
    stop: CancellationToken,
    on_stop: Duration,
) {
    keep_draining(&spool, &publisher, &metrics, &stop).await;
    drain_before_exit(&spool, &publisher, &metrics, on_stop).await;
}

async fn keep_draining(
    spool: &Spool,
    publisher: &Publisher,
    metrics: &Metrics,
    stop: &CancellationToken,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        if stop.is_cancelled() {
            return;
        }
        if !matches!(publisher.state(), LinkState::Up) {
            // Down or blocked by an alarm: wait for a link that takes publishes.
            tokio::select! {
                _ = publisher.wait_usable(Duration::from_secs(1)) => {}
                () = stop.cancelled() => return,
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
                sleep_or_stop(stop, Duration::from_secs(1)).await;
                continue;
            }
        };
        if batch.is_empty() {
            tokio::select! {
                _ = spool.notified() => {}
                // A periodic look also covers appends made while we were busy.
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                () = stop.cancelled() => return,
            }
            continue;
        }
        let (published, failed) = publish_batch(spool, publisher, batch).await;
        metrics.drained.inc_by(published);
        match failed {
            None => backoff = Duration::from_millis(100),
            Some((event_id, error)) => {
                tracing::warn!(error = %error, event_id = %event_id, retry_in_ms = backoff.as_millis() as u64, "Spooled event not confirmed; will retry.");
                sleep_or_stop(stop, backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// A stopping gateway's last pass: keeps publishing what the spool holds
/// (waiting for the broker if it is away) until it is empty or `bound` has
/// passed, and says how it ended. On a scale-down this is what keeps a
/// removed replica's events from waiting for a pod that never returns; what
/// is left stays in the spool directory for the next process on it, or for
/// `hookgate spool replay`.
pub async fn drain_before_exit(
    spool: &Spool,
    publisher: &Publisher,
    metrics: &Metrics,
    bound: Duration,
) {
    let deadline = tokio::time::Instant::now() + bound;
    let mut published_now = 0;
    loop {
        let left = spool.stats().events;
        if left == 0 {
            if published_now > 0 {
                tracing::info!(events = published_now, "Spool drained before exit.");
            }
            return;
        }
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        if remaining.is_zero() {
            tracing::warn!(
                events = left,
                dir = %spool.dir().display(),
                bound_ms = bound.as_millis() as u64,
                "Spool not empty at exit; these events stay in the directory until a gateway starts on it or `hookgate spool replay` publishes them."
            );
            return;
        }
        if !matches!(publisher.state(), LinkState::Up) {
            publisher
                .wait_usable(remaining.min(Duration::from_secs(1)))
                .await;
            continue;
        }
        let batch = match spool.oldest_async(BATCH).await {
            Ok(batch) => batch,
            Err(error) => {
                tracing::error!(error = %error, "Cannot read the spool while stopping.");
                tokio::time::sleep(remaining.min(Duration::from_millis(200))).await;
                continue;
            }
        };
        match tokio::time::timeout(remaining, publish_batch(spool, publisher, batch)).await {
            Ok((published, failed)) => {
                metrics.drained.inc_by(published);
                published_now += published;
                if failed.is_some() {
                    tokio::time::sleep(remaining.min(Duration::from_millis(200))).await;
                }
            }
            // The bound ran out mid-batch; unconfirmed entries stay.
            Err(_) => continue,
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
    let outgoing: Vec<&Outgoing> = batch.iter().map(|entry| &entry.entry).collect();
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
                failed.get_or_insert((entry.entry.id, error));
            }
        }
    }
    (published, failed)
}

async fn sleep_or_stop(stop: &CancellationToken, wait: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(wait) => {}
        () = stop.cancelled() => {}
    }
}

/// Finishes deferred look-ups until `stop` is cancelled.
///
/// Each pending entry is a mapped ping and what to look up
/// ([`crate::pipeline::PendingLookup`]). On its schedule
/// ([`crate::enrich::next_delay`] after the enqueue time) it is looked up
/// again and, once settled, published once ([`Pipeline::retry_deferred`]):
/// `complete` with the record's facts, or `failed` with the reason when the
/// look-up is refused for good or the source's retry period runs out. It
/// leaves the pending store only after the broker confirmed it or the spool
/// took it, so a restart resumes where this left off.
pub async fn enrichment(pipeline: std::sync::Arc<Pipeline>, stop: CancellationToken) {
    let Some(pending) = pipeline.pending().cloned() else {
        return;
    };
    loop {
        if stop.is_cancelled() {
            return;
        }
        let batch = match pending.oldest_async(BATCH).await {
            Ok(batch) => batch,
            Err(error) => {
                tracing::error!(error = %error, "Cannot read the pending look-ups; retrying.");
                sleep_or_stop(&stop, Duration::from_secs(1)).await;
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
            match pipeline.retry_deferred(entry, now_ms).await {
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
            () = stop.cancelled() => return,
        }
    }
}

/// Delay before attempt number `attempts + 1` (the inline attempt was the first).
fn schedule(attempts: u32) -> Duration {
    (0..=attempts).map(crate::enrich::next_delay).sum()
}
