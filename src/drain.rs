//! The task that empties the spool into the broker.
//!
//! Oldest first, one event at a time through the same confirm-mode publisher
//! the request path uses, so a drained event is published exactly as it would
//! have been (same id, routing key and properties). An entry is removed only
//! after its confirm. While the broker is away the task waits for the
//! connection instead of spinning; after a failed publish it backs off
//! (100 ms doubling to 5 s). It runs from start-up, so whatever a previous run
//! (or a crash) left in the spool is drained first thing.

use std::time::Duration;

use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::publish::Publisher;
use crate::spool::{Spool, SpoolError};

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
        if !publisher.is_connected() {
            tokio::select! {
                _ = publisher.wait_connected(Duration::from_secs(1)) => {}
                _ = stop.changed() => return,
            }
            continue;
        }
        let batch = match spool.oldest_async(BATCH).await {
            Ok(batch) => batch,
            Err(SpoolError::Corrupt(reason)) => {
                // Cannot be published as it was; keeping it would block every later event.
                tracing::error!(spool = %spool.dir().display(), reason = %reason, "Spool entry unreadable; it is skipped and lost.");
                if let Some(seq) = corrupt_seq(&reason) {
                    let _ = spool.remove(seq).await;
                }
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
        for entry in batch {
            match publisher.publish(&entry.outgoing).await {
                Ok(()) => {
                    backoff = Duration::from_millis(100);
                    if let Err(error) = spool.remove(entry.seq).await {
                        tracing::warn!(error = %error, seq = entry.seq, "Published but not removed from the spool; it will be published again.");
                    }
                    metrics.drained.inc();
                }
                Err(error) => {
                    tracing::warn!(error = %error, event_id = %entry.outgoing.id, retry_in_ms = backoff.as_millis() as u64, "Spooled event not confirmed; will retry.");
                    let _ = spool.bump_attempts(entry.seq).await;
                    sleep_or_stop(&mut stop, backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    break;
                }
            }
        }
    }
}

async fn sleep_or_stop(stop: &mut watch::Receiver<bool>, wait: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(wait) => {}
        _ = stop.changed() => {}
    }
}

/// The sequence number named in a `Corrupt` message (`entry {seq}`).
fn corrupt_seq(reason: &str) -> Option<u64> {
    let at = reason.find("entry ")? + "entry ".len();
    reason[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn corrupt_messages_name_their_entry() {
        assert_eq!(
            super::corrupt_seq("spool /x: entry 42 is damaged"),
            Some(42)
        );
        assert_eq!(super::corrupt_seq("no number here"), None);
    }
}
