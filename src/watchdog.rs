//! Notices when one of the gateway's long-lived tasks stops on its own.
//!
//! The public listener, the admin listener, the broker connection's
//! supervisor, the spool's drain and the housekeeping timer each run as a
//! tokio task meant to live until shutdown. Tokio catches a panic inside a
//! task and carries on, so without this a panicking listener would leave a
//! process that still answers `/healthz` and holds its broker connection but
//! accepts no webhook: the worst kind of outage, one nothing restarts.
//!
//! The watchdog spawns each such task with a small companion that waits for
//! it. An end before [`Watchdog::stand_down`] (a panic, or a loop that
//! returned) is logged with the task's name and published as a
//! [`TaskFault`]; `hookgate serve` waits for one next to its signals, shuts
//! the rest down cleanly and exits 1, so that the service manager (systemd's
//! `Restart=on-failure`, a container runtime) starts a whole gateway again.
//! Restarting the one task in place was not chosen: the task owned state (a
//! bound socket, a half-done drain) that died with it, and a fresh process is
//! the one state known to be sound. Nothing accepted is lost by exiting:
//! every 200 was already confirmed or spooled.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A long-lived task that ended while the gateway still needed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskFault {
    /// The task, as named where it was spawned (e.g. "public listener").
    pub task: &'static str,
    /// Whether it panicked; otherwise it returned early.
    pub panicked: bool,
}

impl fmt::Display for TaskFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let how = if self.panicked {
            "panicked"
        } else {
            "stopped unexpectedly"
        };
        write!(f, "the {} task {how}", self.task)
    }
}

/// Spawns the gateway's long-lived tasks and reports the first that dies.
#[derive(Default)]
pub struct Watchdog {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    standing_down: AtomicBool,
    first_fault: watch::Sender<Option<TaskFault>>,
}

impl Watchdog {
    /// A watchdog with no tasks and no fault yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Spawns `work` as the long-lived task `task`. The handle returned
    /// completes when the task has ended, whether it returned or panicked, so
    /// shutdown can wait on it without unwrapping a panic.
    pub fn spawn<F>(&self, task: &'static str, work: F) -> JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let work = tokio::spawn(work);
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let outcome = work.await;
            if shared.standing_down.load(Ordering::Acquire) {
                return;
            }
            let panicked = match outcome {
                Err(error) if error.is_panic() => {
                    // JoinError's text carries the panic message.
                    tracing::error!(
                        task,
                        error = %error,
                        "A core task panicked; the gateway is shutting down to be restarted."
                    );
                    true
                }
                _ => {
                    tracing::error!(
                        task,
                        "A core task stopped unexpectedly; the gateway is shutting down to be restarted."
                    );
                    false
                }
            };
            shared.first_fault.send_if_modified(|slot| {
                let first = slot.is_none();
                if first {
                    *slot = Some(TaskFault { task, panicked });
                }
                first
            });
        })
    }

    /// From now on tasks are expected to end: shutdown has begun.
    pub fn stand_down(&self) {
        self.shared.standing_down.store(true, Ordering::Release);
    }

    /// Resolves with the first task that ended before [`Self::stand_down`];
    /// pending for as long as every task runs. Cancel-safe: a fault that
    /// happened before the call is returned at once.
    pub async fn fault(&self) -> TaskFault {
        let mut faults = self.shared.first_fault.subscribe();
        loop {
            if let Some(fault) = *faults.borrow_and_update() {
                return fault;
            }
            // The sender lives in `self`, so this only fails if it is gone,
            // which cannot happen while `self` is borrowed.
            if faults.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Long enough for any spawned task on an idle runtime to have run.
    const SETTLE: Duration = Duration::from_millis(200);

    async fn no_fault_within(watchdog: &Watchdog, wait: Duration) -> bool {
        tokio::time::timeout(wait, watchdog.fault()).await.is_err()
    }

    async fn reported(watchdog: &Watchdog) -> TaskFault {
        tokio::time::timeout(Duration::from_secs(5), watchdog.fault())
            .await
            .expect("the task's end is reported within 5 s")
    }

    #[tokio::test]
    async fn a_panicking_task_is_reported_by_name() {
        let watchdog = Watchdog::new();
        let steady = watchdog.spawn("steady", std::future::pending());
        let dying = watchdog.spawn("public listener", async { panic!("boom") });
        let fault = reported(&watchdog).await;
        assert_eq!(
            fault,
            TaskFault {
                task: "public listener",
                panicked: true
            }
        );
        assert_eq!(fault.to_string(), "the public listener task panicked");
        // The companion handle ends cleanly even though the task panicked.
        assert!(dying.await.is_ok());
        assert!(!steady.is_finished());
    }

    #[tokio::test]
    async fn a_task_that_returns_early_is_a_fault_too() {
        let watchdog = Watchdog::new();
        watchdog.spawn("spool drain", async {});
        let fault = reported(&watchdog).await;
        assert_eq!(
            fault,
            TaskFault {
                task: "spool drain",
                panicked: false
            }
        );
        assert_eq!(
            fault.to_string(),
            "the spool drain task stopped unexpectedly"
        );
    }

    #[tokio::test]
    async fn the_first_fault_is_kept_and_returned_to_late_callers() {
        let watchdog = Watchdog::new();
        let (go, wait) = tokio::sync::oneshot::channel::<()>();
        watchdog.spawn("first", async { panic!("first") });
        tokio::time::sleep(SETTLE).await;
        watchdog.spawn("second", async move {
            let _ = wait.await;
        });
        let _ = go.send(());
        tokio::time::sleep(SETTLE).await;
        // Asked only now, after both ended.
        assert_eq!(watchdog.fault().await.task, "first");
        // And again: asking does not consume it.
        assert_eq!(watchdog.fault().await.task, "first");
    }

    #[tokio::test]
    async fn ends_after_standing_down_are_expected() {
        let watchdog = Watchdog::new();
        let (stop, stopped) = watch::channel(false);
        let mut tasks = Vec::new();
        for task in ["public listener", "admin listener"] {
            let mut stopped = stopped.clone();
            tasks.push(watchdog.spawn(task, async move {
                let _ = stopped.wait_for(|&s| s).await;
            }));
        }
        let mut housekeeping_stop = stopped.clone();
        tasks.push(watchdog.spawn("housekeeping", async move {
            let _ = housekeeping_stop.wait_for(|&s| s).await;
            panic!("a panic while stopping is not a fault either");
        }));
        assert!(
            no_fault_within(&watchdog, SETTLE).await,
            "running tasks are no fault"
        );
        watchdog.stand_down();
        stop.send_replace(true);
        for task in tasks {
            assert!(task.await.is_ok());
        }
        assert!(no_fault_within(&watchdog, SETTLE).await);
    }
}
