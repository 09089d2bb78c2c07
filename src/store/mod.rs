//! What the on-disk stores (the spool and the dedup window, both redb files
//! with a writer thread) share: the clock they stamp entries with, how long
//! their writes have been failing, and closing the file off the async
//! workers. A leaf module: it depends on nothing else in the gateway.

pub mod write_health;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// The cause kept inside a store's I/O error (a redb or `io::Error`, or a
/// message of ours): shared, so one failed commit can be reported to every
/// request that waited on it, and a real `source()` so `{:#}` and error
/// reporters show the chain.
pub type Cause = Arc<dyn std::error::Error + Send + Sync>;

/// Any error, or a message, as a [`Cause`].
pub fn cause(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Cause {
    Arc::from(error.into())
}

/// Milliseconds since the Unix epoch (0 for a clock before 1970): the stamp
/// stored with spooled entries and remembered ids.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Drops a store's shared state if this is the last handle to it, on the
/// blocking pool: dropping the last handle of a spool or dedup store joins
/// its writer thread after a final commit, which must not stall a runtime
/// worker. Returns once the file is closed, so the directory can be opened
/// again.
pub(crate) async fn close_if_last<T: Send + 'static>(shared: Arc<T>) {
    if let Ok(inner) = Arc::try_unwrap(shared) {
        let _ = tokio::task::spawn_blocking(move || drop(inner)).await;
    }
}

/// Runs one of this test binary's own tests, `test`, in a child process
/// with `env` set (a crash test's child, which writes to a store and then
/// aborts), and returns what it printed once it has died. Panics if the
/// child exited normally or did not print `finished` (its last step before
/// aborting).
#[cfg(test)]
pub(crate) fn run_aborting_child(
    test: &str,
    env: &[(&str, &std::ffi::OsStr)],
    finished: &str,
) -> String {
    let mut command = std::process::Command::new(std::env::current_exe().unwrap());
    command.args(["--exact", test, "--nocapture", "--test-threads=1"]);
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(!output.status.success(), "the child must abort: {stdout}");
    assert!(
        stdout.contains(finished),
        "the child did not get to `{finished}`: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}
