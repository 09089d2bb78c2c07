//! Since when a store's writes have been failing.
//!
//! The spool and the dedup window each have one writer thread that records
//! here whether its last commit succeeded. Readiness and housekeeping read
//! [`WriteHealth::failing_for`] to answer 503 (or degraded) and, past a
//! bound, to stop the process for a restart.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::now_ms;

/// When writes started failing (Unix epoch ms), 0 while they succeed.
#[derive(Debug, Default)]
pub struct WriteHealth {
    failing_since_ms: AtomicU64,
}

impl WriteHealth {
    /// Records a failed write; the first of a run starts the clock.
    pub fn failed(&self) {
        let _ = self.failing_since_ms.compare_exchange(
            0,
            now_ms().max(1),
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }

    /// Records a successful write; true when it ends a run of failures.
    pub fn succeeded(&self) -> bool {
        self.failing_since_ms.swap(0, Ordering::AcqRel) != 0
    }

    /// How long writes have been failing, `None` while they succeed.
    pub fn failing_for(&self) -> Option<Duration> {
        match self.failing_since_ms.load(Ordering::Acquire) {
            0 => None,
            since => Some(Duration::from_millis(now_ms().saturating_sub(since))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_of_failures_is_timed_from_its_first_and_ended_by_a_success() {
        let health = WriteHealth::default();
        assert_eq!(health.failing_for(), None);
        assert!(!health.succeeded(), "no run to end");
        health.failed();
        let first = health.failing_since_ms.load(Ordering::Acquire);
        health.failed();
        assert_eq!(health.failing_since_ms.load(Ordering::Acquire), first);
        assert!(health.failing_for().is_some());
        assert!(health.succeeded(), "a success ends the run");
        assert_eq!(health.failing_for(), None);
    }
}
