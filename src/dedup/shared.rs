//! A dedup window shared by every replica, in Redis (or Valkey, which
//! speaks the same protocol).
//!
//! **Why.** Each replica's own window only knows what that replica accepted;
//! behind one URL a vendor's retry lands on another replica about half the
//! time and would be published again.
//!
//! **Protocol.** hookgate's rule holds across replicas: an id is remembered
//! for the window only once its event is safe.
//! 1. [`SharedWindow::begin`] claims the id as *pending*: `SET key token NX
//!    PX pending_ttl`, the token unique to this request. The TTL outlives the
//!    longest a request can take (confirm timeout plus the inline look-up
//!    deadline, with margin), so a replica that dies mid-request frees the
//!    id by itself.
//! 2. Once the event is confirmed or spooled, [`SharedWindow::done`] writes
//!    `done` for the window.
//! 3. A request that ends in 503 [`SharedWindow::release`]s its claim (a
//!    compare-and-delete, so it never removes another request's claim).
//!
//! A delivery that finds `done` is a duplicate. One that finds another's
//! claim waits (polling, at most the pending TTL) for it to finish and then
//! answers as it would: duplicate if the first was kept, or claims the id
//! itself if the first was released.
//!
//! **Redis away: fail open.** Without the store a repeat cannot be
//! recognised, and refusing would lose events from vendors that never retry
//! (Sticky). So the request goes on as if the id were new (consumers still
//! de-duplicate on `id`), `hookgate_dedup_backend_errors_total` counts it,
//! `/readyz` says degraded, and the log says so once per outage.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, OnceLock};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::AsyncCommands;

/// What `done` is stored as; a pending claim stores its request's token.
const DONE: &str = "done";

/// Deletes the key only if it still holds this request's token (its SHA-1
/// is computed once; Redis caches the script after the first call).
static RELEASE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r#"if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) else return 0 end"#,
    )
});

/// How often a delivery that found another's claim looks again.
const POLL: Duration = Duration::from_millis(25);

/// Bound on one command, and on one connection attempt: a store that does
/// not answer costs a request this much at most before it fails open.
pub const COMMAND_TIMEOUT: Duration = Duration::from_millis(500);

/// The settings of a shared window.
#[derive(Clone, PartialEq, Eq)]
pub struct SharedSettings {
    /// `redis://host:6379/0` or `rediss://…`; may hold a password.
    pub url: crate::secret::Secret,
    /// Prefix of every key (`hookgate:dedup:`), so one Redis can serve several gateways.
    pub key_prefix: String,
    /// How long an accepted id is remembered.
    pub window: Duration,
    /// How long a pending claim lives if its request never finishes.
    pub pending_ttl: Duration,
}

/// Hides the URL, which may carry the password.
impl std::fmt::Debug for SharedSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedSettings")
            .field("key_prefix", &self.key_prefix)
            .field("window", &self.window)
            .field("pending_ttl", &self.pending_ttl)
            .finish_non_exhaustive()
    }
}

/// What [`SharedWindow::begin`] found.
#[derive(Debug)]
pub enum Begin {
    /// New here: go on, then [`SharedWindow::done`] or [`SharedWindow::release`].
    Fresh(Claim),
    /// Accepted before, by this replica or another: answer 200, do not publish.
    Duplicate,
    /// Another request still holds the id after the wait: answer 503.
    Busy,
}

/// A request's hold on an id; `None` inside when the store was away (fail open).
#[derive(Debug)]
pub struct Claim(Option<(String, String)>);

/// The shared window: a Redis connection that reconnects by itself.
#[derive(Clone)]
pub struct SharedWindow {
    inner: Arc<Inner>,
}

struct Inner {
    settings: SharedSettings,
    /// Set once the first connection is up; the manager reconnects after that.
    connection: OnceLock<ConnectionManager>,
    /// Whether the store is failing right now (for the log and `/readyz`).
    failing: AtomicBool,
    errors: Counter,
}

impl SharedWindow {
    /// A window on `settings.url`, connecting in the background (a store that
    /// is away at start-up is failed open like one that goes away later).
    /// `Err` only for a URL that cannot work.
    pub fn start(settings: SharedSettings, errors: Counter) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(settings.url.expose())?;
        let window = Self {
            inner: Arc::new(Inner {
                settings,
                connection: OnceLock::new(),
                failing: AtomicBool::new(false),
                errors,
            }),
        };
        let inner = window.inner.clone();
        tokio::spawn(async move {
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(COMMAND_TIMEOUT)
                .set_response_timeout(COMMAND_TIMEOUT)
                .set_number_of_retries(1);
            loop {
                match ConnectionManager::new_with_config(client.clone(), config.clone()).await {
                    Ok(manager) => {
                        let _ = inner.connection.set(manager);
                        inner.recovered();
                        return;
                    }
                    Err(error) => inner.failed(&error),
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        Ok(window)
    }

    /// Whether the store is unreachable right now: repeats may be published twice.
    pub fn is_failing(&self) -> bool {
        self.inner.failing.load(Ordering::Acquire)
    }

    /// Claims `id` for this request, or says it was accepted before or is
    /// still being handled elsewhere; see the module doc.
    pub async fn begin(&self, id: &str) -> Begin {
        let inner = &self.inner;
        let Some(mut connection) = inner.connection() else {
            return Begin::Fresh(Claim(None));
        };
        let key = format!("{}{id}", inner.settings.key_prefix);
        // Unique per request, not secret: it only tells claims apart.
        let token = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
        let ttl_ms = inner.settings.pending_ttl.as_millis() as u64;
        let deadline = tokio::time::Instant::now() + inner.settings.pending_ttl;
        loop {
            let claimed: redis::RedisResult<Option<String>> = redis::cmd("SET")
                .arg(&key)
                .arg(&token)
                .arg("NX")
                .arg("PX")
                .arg(ttl_ms)
                .query_async(&mut connection)
                .await;
            let found: redis::RedisResult<Option<String>> = match claimed {
                Ok(Some(_)) => {
                    inner.recovered();
                    return Begin::Fresh(Claim(Some((key, token))));
                }
                Ok(None) => connection.get(&key).await,
                Err(error) => Err(error),
            };
            match found {
                Ok(Some(value)) if value == DONE => {
                    inner.recovered();
                    return Begin::Duplicate;
                }
                // Released or expired meanwhile: claim it again at once.
                Ok(None) => continue,
                Ok(Some(_)) if tokio::time::Instant::now() + POLL > deadline => return Begin::Busy,
                Ok(Some(_)) => tokio::time::sleep(POLL).await,
                Err(error) => {
                    inner.failed(&error);
                    return Begin::Fresh(Claim(None));
                }
            }
        }
    }

    /// The claimed event is safe: remember its id for the window.
    pub async fn done(&self, claim: Claim) {
        let Some((key, _)) = claim.0 else { return };
        let inner = &self.inner;
        let Some(mut connection) = inner.connection() else {
            return;
        };
        let window_ms = inner.settings.window.as_millis() as u64;
        let stored: redis::RedisResult<()> = redis::cmd("SET")
            .arg(&key)
            .arg(DONE)
            .arg("PX")
            .arg(window_ms)
            .query_async(&mut connection)
            .await;
        match stored {
            Ok(()) => inner.recovered(),
            Err(error) => inner.failed(&error),
        }
    }

    /// The claimed event was not made safe (503): free the id for the retry.
    pub async fn release(&self, claim: Claim) {
        let Some((key, token)) = claim.0 else { return };
        let inner = &self.inner;
        let Some(mut connection) = inner.connection() else {
            return;
        };
        let released: redis::RedisResult<i64> = RELEASE
            .key(&key)
            .arg(&token)
            .invoke_async(&mut connection)
            .await;
        if let Err(error) = released {
            // The claim expires after its TTL anyway.
            inner.failed(&error);
        }
    }
}

impl Inner {
    /// A handle on the connection, or `None` (counted as a failed call)
    /// while the first connection has not been made.
    fn connection(&self) -> Option<ConnectionManager> {
        let connection = self.connection.get().cloned();
        if connection.is_none() {
            self.errors.inc();
        }
        connection
    }

    /// Counts a failed call; logs the first of an outage.
    fn failed(&self, error: &redis::RedisError) {
        self.errors.inc();
        if !self.failing.swap(true, Ordering::AcqRel) {
            tracing::warn!(error = %error, "The shared dedup store is unreachable; events are accepted and published, and repeats may be published twice until it is back.");
        }
    }

    fn recovered(&self) {
        if self.failing.swap(false, Ordering::AcqRel) {
            tracing::info!("The shared dedup store answers again.");
        }
    }
}
