//! Notices when one of the gateway's long-lived tasks stops on its own.
//!
//! The public listener, the admin listener, the broker connection's
//! supervisor, the spool's drain and the housekeeping timer each run as a
//! tokio task meant to live until shutdown. Tokio catches a panic inside a
//! task and carries on, so without this a panicking listener would leave a
//! process that still answers `/healthz` and holds its broker connection but
//! accepts no webhook: the worst kind of outage, one nothing restarts.
//!
//! The watchdog holds every such task in one `JoinSet`, with the
//! `CancellationToken` they stop on. An end before [`Watchdog::shut_down`]
//! (a panic, or a loop that returned) is logged with the task's name and
//! returned as a [`TaskFault`] by [`Watchdog::fault`]; `hookgate serve`
//! waits for one next to its signals, shuts the rest down cleanly and exits
//! 1, so that the service manager (systemd's `Restart=on-failure`, a
//! container runtime) starts a whole gateway again. (An end is seen by
//! whoever awaits [`Watchdog::fault`]; `serve` always does.) Shutdown is
//! ordered by [`Stage`]: the listeners first (in-flight requests finish),
//! then the spool's last drain, then the broker connection that both
//! publish through.
//! Restarting the one task in place was not chosen: the task owned state (a
//! bound socket, a half-done drain) that died with it, and a fresh process is
//! the one state known to be sound. Nothing accepted is lost by exiting:
//! every 200 was already confirmed or spooled.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;

use tokio::task::{Id, JoinError, JoinSet};
use tokio_util::sync::CancellationToken;

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

/// When a task is told to stop during shutdown: each stage once every task
/// of the stages before it has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    /// At once: listeners (which let in-flight requests finish), housekeeping.
    Serve,
    /// Once nothing can spool any more: the spool's last drain to the broker.
    Drain,
    /// Last: the broker connection, which everything before publishes through.
    Broker,
}

/// The gateway's long-lived tasks, in one `JoinSet`, with the stop signals
/// they share: reports the first that ends on its own, and stops them all
/// stage by stage ([`Stage`]).
pub struct Watchdog {
    tasks: JoinSet<()>,
    /// Name and stage of each running task.
    running: HashMap<Id, (&'static str, Stage)>,
    /// One stop signal per stage; [`Stage::Serve`]'s is [`Self::stop_signal`].
    stops: HashMap<Stage, CancellationToken>,
    first_fault: Option<TaskFault>,
}

impl Default for Watchdog {
    fn default() -> Self {
        Self::new()
    }
}

impl Watchdog {
    /// A watchdog with no tasks and no fault yet.
    pub fn new() -> Self {
        Self {
            tasks: JoinSet::new(),
            running: HashMap::new(),
            stops: [Stage::Serve, Stage::Drain, Stage::Broker]
                .into_iter()
                .map(|stage| (stage, CancellationToken::new()))
                .collect(),
            first_fault: None,
        }
    }

    /// The signal every task spawned with [`Self::spawn`] must stop on.
    pub fn stop_signal(&self) -> CancellationToken {
        self.stops[&Stage::Serve].clone()
    }

    /// Runs `work` as the long-lived task `task` of [`Stage::Serve`]; it
    /// must end soon after [`Self::stop_signal`] is cancelled.
    pub fn spawn<F>(&mut self, task: &'static str, work: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let handle = self.tasks.spawn(work);
        self.running.insert(handle.id(), (task, Stage::Serve));
    }

    /// Runs the task `task` made by `work` from the stop signal of `stage`,
    /// which shutdown cancels once every task of the stages before it has ended.
    pub fn spawn_at<F>(
        &mut self,
        task: &'static str,
        stage: Stage,
        work: impl FnOnce(CancellationToken) -> F,
    ) where
        F: Future<Output = ()> + Send + 'static,
    {
        let handle = self.tasks.spawn(work(self.stops[&stage].clone()));
        self.running.insert(handle.id(), (task, stage));
    }

    /// Resolves with the first task that ended on its own (logged with its
    /// name); pending for as long as every task runs. Cancel-safe, and a
    /// fault already seen is returned again at once.
    pub async fn fault(&mut self) -> TaskFault {
        if let Some(fault) = self.first_fault {
            return fault;
        }
        let Some(ended) = self.tasks.join_next_with_id().await else {
            // No task at all: nothing can fault.
            return std::future::pending().await;
        };
        let (task, outcome) = self.forget(ended);
        let panicked = match outcome {
            Some(error) => {
                // JoinError's text carries the panic message.
                tracing::error!(task, error = %error, "A core task panicked; the gateway is shutting down to be restarted.");
                true
            }
            None => {
                tracing::error!(
                    task,
                    "A core task stopped unexpectedly; the gateway is shutting down to be restarted."
                );
                false
            }
        };
        let fault = TaskFault { task, panicked };
        self.first_fault = Some(fault);
        fault
    }

    /// Stops every task, stage by stage: [`Stage::Serve`] at once, each
    /// later stage once the earlier ones have ended; returns when all have.
    /// A panic while stopping is logged, not reported.
    pub async fn shut_down(mut self) {
        loop {
            for (stage, stop) in &self.stops {
                if !self.running.values().any(|(_, s)| s < stage) {
                    stop.cancel();
                }
            }
            let Some(ended) = self.tasks.join_next_with_id().await else {
                return;
            };
            if let (task, Some(error)) = self.forget(ended) {
                tracing::error!(task, error = %error, "A task panicked while stopping.");
            }
        }
    }

    /// Drops what is kept about an ended task: its name, and the panic if it panicked.
    fn forget(&mut self, ended: Result<(Id, ()), JoinError>) -> (&'static str, Option<JoinError>) {
        let (id, panic) = match ended {
            Ok((id, ())) => (id, None),
            Err(error) => (error.id(), error.is_panic().then_some(error)),
        };
        let task = self.running.remove(&id).map_or("unnamed", |(task, _)| task);
        (task, panic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    async fn no_fault_within(watchdog: &mut Watchdog, wait: Duration) -> bool {
        tokio::time::timeout(wait, watchdog.fault()).await.is_err()
    }

    async fn reported(watchdog: &mut Watchdog) -> TaskFault {
        tokio::time::timeout(Duration::from_secs(5), watchdog.fault())
            .await
            .expect("the task's end is reported within 5 s")
    }

    #[tokio::test]
    async fn a_panicking_task_is_reported_by_name() {
        let mut watchdog = Watchdog::new();
        watchdog.spawn("steady", std::future::pending());
        watchdog.spawn("public listener", async { panic!("boom") });
        let fault = reported(&mut watchdog).await;
        assert_eq!(
            fault,
            TaskFault {
                task: "public listener",
                panicked: true
            }
        );
        assert_eq!(fault.to_string(), "the public listener task panicked");
    }

    #[tokio::test]
    async fn a_task_that_returns_early_is_a_fault_too() {
        let mut watchdog = Watchdog::new();
        watchdog.spawn("steady", std::future::pending());
        watchdog.spawn("spool drain", async {});
        let fault = reported(&mut watchdog).await;
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
        let mut watchdog = Watchdog::new();
        let (go, wait) = tokio::sync::oneshot::channel::<()>();
        watchdog.spawn("first", async { panic!("first") });
        watchdog.spawn("second", async move {
            let _ = wait.await;
        });
        assert_eq!(reported(&mut watchdog).await.task, "first");
        let _ = go.send(());
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Asked again after the second ended too: still the first.
        assert_eq!(watchdog.fault().await.task, "first");
    }

    #[tokio::test]
    async fn running_tasks_are_no_fault_and_shutdown_stops_them_in_order() {
        let mut watchdog = Watchdog::new();
        let others_done = Arc::new(AtomicBool::new(false));
        for task in ["public listener", "admin listener"] {
            let stop = watchdog.stop_signal();
            let done = others_done.clone();
            watchdog.spawn(task, async move {
                stop.cancelled().await;
                // Stopping takes a while (in-flight requests finish).
                tokio::time::sleep(Duration::from_millis(100)).await;
                done.store(true, Ordering::SeqCst);
            });
        }
        let stop = watchdog.stop_signal();
        watchdog.spawn("housekeeping", async move {
            stop.cancelled().await;
            panic!("a panic while stopping is not a fault either");
        });
        let closed_after_the_others = Arc::new(AtomicBool::new(false));
        let (done, closed) = (others_done.clone(), closed_after_the_others.clone());
        watchdog.spawn_at("broker connection", Stage::Broker, move |stop| async move {
            stop.cancelled().await;
            closed.store(done.load(Ordering::SeqCst), Ordering::SeqCst);
        });
        assert!(
            no_fault_within(&mut watchdog, Duration::from_millis(200)).await,
            "running tasks are no fault"
        );
        tokio::time::timeout(Duration::from_secs(5), watchdog.shut_down())
            .await
            .expect("every task stops");
        assert!(
            closed_after_the_others.load(Ordering::SeqCst),
            "the broker connection was told to stop only after the listeners ended"
        );
    }
}
