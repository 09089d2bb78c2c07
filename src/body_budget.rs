//! The budget of request-body bytes buffered at once, shared by every
//! connection and stream, and the return of that memory after a burst.
//!
//! A body takes its size (the declared length, else the cap) before its
//! first byte is read and holds it until its request is answered, so bodies
//! in memory never exceed `server.max_buffered_body_bytes` whatever the
//! protocol. Bounding what is held is not enough for a pod's memory limit:
//! glibc's allocator keeps freed pages mapped, and after a burst of
//! unauthenticated HTTP/2 bodies the process stayed at ~77 MiB of its
//! ~88 MiB peak (measured by `attacks::unauthenticated_http2_…`). So once a
//! burst larger than [`TRIM_AFTER_BYTES`] has passed (what is held fell to an
//! eighth of its peak), the freed heap is handed back with `malloc_trim`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};

/// A burst of buffered bodies at least this large is followed by a trim.
/// Everyday traffic (a few KiB per body) never reaches it, so the trim,
/// which walks the heap, runs only after real bursts.
pub const TRIM_AFTER_BYTES: usize = 16 * 1024 * 1024;

/// How often a finished burst is looked for.
pub const TRIM_CHECK_EVERY: Duration = Duration::from_secs(1);

/// Bytes of request body the gateway may hold in memory at once.
pub struct BodyBudget {
    permits: Semaphore,
    total: usize,
    /// Most bytes held at once since the last trim.
    peak: AtomicUsize,
}

impl BodyBudget {
    /// A budget of `total` bytes (config bounds it to `u32::MAX`).
    pub fn new(total: usize) -> Self {
        BodyBudget {
            permits: Semaphore::new(total),
            total,
            peak: AtomicUsize::new(0),
        }
    }

    /// Takes `bytes` of the budget, waiting until `deadline` at most; `None`
    /// when the budget stayed exhausted (the caller answers 503).
    pub async fn take(
        &self,
        bytes: u32,
        deadline: tokio::time::Instant,
    ) -> Option<SemaphorePermit<'_>> {
        let permit = tokio::time::timeout_at(deadline, self.permits.acquire_many(bytes))
            .await
            .ok()?
            .ok()?;
        self.peak.fetch_max(self.held(), Ordering::Relaxed);
        Some(permit)
    }

    /// Bytes held right now.
    fn held(&self) -> usize {
        self.total - self.permits.available_permits()
    }

    /// True once, after a burst of at least [`TRIM_AFTER_BYTES`] has fallen
    /// to an eighth of its peak; resets the peak to what is held now.
    pub fn burst_passed(&self) -> bool {
        let peak = self.peak.load(Ordering::Relaxed);
        let held = self.held();
        if peak < TRIM_AFTER_BYTES || held > peak / 8 {
            return false;
        }
        // Another caller may have reset it in between; only one trims.
        self.peak
            .compare_exchange(peak, held, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }

    /// Runs until dropped (the listener aborts it): after each burst, hands
    /// the allocator's free pages back to the operating system.
    pub async fn return_memory_after_bursts(&self) {
        let mut every = tokio::time::interval(TRIM_CHECK_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            if self.burst_passed() {
                // It walks the heap: a few milliseconds, off the workers.
                let _ = tokio::task::spawn_blocking(trim_heap).await;
                tracing::debug!("Returned freed memory after a burst of request bodies.");
            }
        }
    }
}

/// Hands the allocator's free pages back to the OS (glibc only; elsewhere
/// the allocator decides: the `hookgate` binary's jemalloc purges freed
/// pages itself within a second). The crate's one `unsafe` block.
#[allow(unsafe_code)]
fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; it takes no pointers.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn far() -> tokio::time::Instant {
        tokio::time::Instant::now() + Duration::from_secs(5)
    }

    #[tokio::test]
    async fn a_burst_is_reported_once_after_it_has_passed() {
        let budget = BodyBudget::new(64 << 20);
        let big = budget.take(20 << 20, far()).await.unwrap();
        assert!(!budget.burst_passed(), "still held");
        drop(big);
        assert!(budget.burst_passed());
        assert!(!budget.burst_passed(), "reported once");
    }

    #[tokio::test]
    async fn everyday_traffic_never_triggers_a_trim() {
        let budget = BodyBudget::new(64 << 20);
        for _ in 0..100 {
            let small = budget.take(8 << 10, far()).await.unwrap();
            drop(small);
        }
        assert!(!budget.burst_passed());
    }

    #[tokio::test]
    async fn a_burst_that_is_still_mostly_held_waits() {
        let budget = BodyBudget::new(64 << 20);
        let kept = budget.take(4 << 20, far()).await.unwrap();
        let burst = budget.take(16 << 20, far()).await.unwrap();
        drop(burst);
        // 4 of a 20 MiB peak is more than an eighth.
        assert!(!budget.burst_passed());
        drop(kept);
        assert!(budget.burst_passed());
    }

    #[tokio::test]
    async fn an_exhausted_budget_gives_nothing_by_the_deadline() {
        let budget = BodyBudget::new(1000);
        let _all = budget.take(1000, far()).await.unwrap();
        let soon = tokio::time::Instant::now() + Duration::from_millis(20);
        assert!(budget.take(1, soon).await.is_none());
    }
}
