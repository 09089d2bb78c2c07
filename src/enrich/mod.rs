//! Enrichment: filling in thin vendor pings from the vendor's own API.
//!
//! **Why.** Some vendors send *thin pings*: an event type, status codes and
//! an object id, nothing else (Nexio's simplified webhooks, docs/vendors.md
//! §3.3). Consumers want the amount, card, merchant and time, and only the
//! vendor's lookup API has them, so the gateway asks it, with the source's
//! API user over HTTP Basic. What to look up and how a record fills the event
//! in is the vendor's knowledge ([`crate::vendors::Vendor::lookup`] and
//! [`crate::vendors::Vendor::apply_lookup`]); this module only fetches.
//!
//! **Why it must not hold up the vendor's 200.** A vendor's API may lag its
//! pings (Nexio: a new transaction "may take up to a minute" to become
//! visible), so a look-up right after the ping often answers 404
//! ([`LookupError::NotFound`]), while the vendor resends a webhook it
//! considers failed only a few times (Nexio: twice, a minute apart). So the
//! pipeline tries inline for a short deadline (about 1 s), and if that does
//! not succeed it makes the ping durable, answers 200, and retries in the
//! background on the [`next_delay`] schedule for up to [`RETRY_PERIOD`].
//!
//! **Coalescing.** One object draws several pings (one per status change,
//! plus resends), and the inline attempt and the background retry of the
//! same ping overlap. Concurrent look-ups of the same object share one HTTP
//! call: the first caller starts it as a detached task and every caller, the
//! first included, waits for its answer. Because the call is detached, a
//! caller that gives up (the 1 s inline deadline) does not cancel it: the
//! answer still lands in the cache for the background retry.
//!
//! **Cache.** Successful answers are kept for a short TTL in a size-bounded
//! cache (moka's, which also coalesces the calls), so resends and repeated
//! pings do not call the API again. Failures (including 404) are never
//! cached: the object may appear any second. A cached record may be older
//! than the ping, so vendors keep the ping's status when they apply one.
//!
//! **Bounds.** Per source: at most `max_concurrency` calls in flight (a
//! semaphore), each call bounded by one `timeout` covering connect, TLS
//! handshake, request and body, bodies capped at 1 MiB ([`client`]).
//!
//! Layout: [`client`] (settings, HTTP/TLS), [`json`] (exact decimals).

pub mod client;
pub mod json;

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::future::Cache;
use serde_json::Value;
use tokio::sync::Semaphore;

pub use client::{LookupApi, DEFAULT_MAX_CONCURRENCY, DEFAULT_TIMEOUT};

use crate::vendors::Lookup;
use client::HttpClient;

/// How long background enrichment keeps trying: vendors' lag is about a
/// minute (Nexio's "up to a minute"), so ten minutes is generous without
/// holding events for long.
pub const RETRY_PERIOD: Duration = Duration::from_secs(10 * 60);

/// The inline attempt's suggested deadline: short enough that the vendor's
/// 200 is not noticeably delayed, long enough for a warm API to answer.
pub const INLINE_DEADLINE: Duration = Duration::from_secs(1);

/// Default cache TTL: covers a vendor's resends (Nexio's 2 minutes) without
/// serving a record much staler than the pings that follow it.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(120);

/// Default number of cached records per source (a few KiB each).
pub const DEFAULT_CACHE_CAPACITY: usize = 10_000;

/// Why a look-up produced no record; the variant tells the caller whether
/// trying again can help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// 404: normal right after a ping (the vendor's API lags); retry.
    #[error("not found (yet)")]
    NotFound,
    /// 5xx, 408, 429, timeout, connection or TLS failure; retry.
    #[error("temporary failure: {0}")]
    Transient(String),
    /// 401/403/other 4xx, bad JSON, oversized body, bad settings: retrying
    /// will not help until someone fixes something.
    #[error("permanent failure: {0}")]
    Permanent(String),
}

impl LookupError {
    /// Whether [`Enricher::lookup_with_retry`] tries again after this error.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, Self::Permanent(_))
    }
}

/// Delay before background attempt number `attempt + 1` (after attempt
/// `attempt`, counting from 0): 1 s, 2 s, 4 s, … capped at 30 s. Exponential
/// so that an object that appears within seconds is found quickly, capped so
/// that one that takes the full minute is not found much later than that.
pub fn next_delay(attempt: u32) -> Duration {
    const CAP: Duration = Duration::from_secs(30);
    Duration::from_secs(1u64.checked_shl(attempt).unwrap_or(u64::MAX)).min(CAP)
}

type Answer = Result<Value, LookupError>;

/// The lookup service of one source: settings, HTTP client, cache (which
/// also coalesces concurrent look-ups of one object) and concurrency bound.
/// Cheap to clone (one `Arc`); keep one per source, because credentials,
/// cache and limits are per source.
#[derive(Clone)]
pub struct Enricher {
    inner: Arc<Inner>,
}

struct Inner {
    /// What the service was built from, so a reload can tell whether it may
    /// keep this one (and its warm cache) instead of starting cold.
    settings: (LookupApi, Duration, usize),
    client: HttpClient,
    permits: Semaphore,
    /// Records by object, bounded by age and count. Its `try_get_with` runs
    /// one call per object however many callers ask at once, and caches only
    /// successes.
    cache: Cache<Lookup, Value>,
}

/// Shows what the service was built from (the API key stays redacted), not
/// its cache or calls in flight.
impl std::fmt::Debug for Enricher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (api, cache_ttl, cache_capacity) = &self.inner.settings;
        f.debug_struct("Enricher")
            .field("api", api)
            .field("cache_ttl", cache_ttl)
            .field("cache_capacity", cache_capacity)
            .finish_non_exhaustive()
    }
}

impl Enricher {
    /// A service for one source. Settings are not checked here (call
    /// [`LookupApi::validate`] when loading the config); invalid settings make
    /// every look-up a [`LookupError::Permanent`] naming the problem.
    pub fn new(api: LookupApi, cache_ttl: Duration, cache_capacity: usize) -> Self {
        let client = HttpClient::new(&api);
        Self::with_client(client, &api, cache_ttl, cache_capacity)
    }

    fn with_client(
        client: HttpClient,
        api: &LookupApi,
        cache_ttl: Duration,
        cache_capacity: usize,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                settings: (api.clone(), cache_ttl, cache_capacity),
                client,
                permits: Semaphore::new(api.max_concurrency.max(1)),
                cache: Cache::builder()
                    .max_capacity(cache_capacity as u64)
                    .time_to_live(cache_ttl)
                    .build(),
            }),
        }
    }

    /// Whether `other` was built from exactly the same settings; a config
    /// reload then keeps the running service, with its cache, its in-flight
    /// calls and its concurrency bound, rather than starting look-ups cold.
    pub(crate) fn same_settings(&self, other: &Enricher) -> bool {
        self.inner.settings == other.inner.settings
    }

    /// Whether two handles are the same service (one cache).
    #[cfg(test)]
    pub(crate) fn same_service(&self, other: &Enricher) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// One look-up: the cache first, then the API (bounded concurrency,
    /// per-call timeout). Concurrent look-ups of the same object share one
    /// HTTP call, which runs to completion even if every caller stops
    /// waiting (so wrap this in `tokio::time::timeout` freely): the answer
    /// still reaches the cache. Returned records come from [`json::parse_exact`]:
    /// decimals are strings.
    ///
    /// Must be called within a Tokio runtime.
    pub async fn lookup(&self, lookup: &Lookup) -> Result<Value, LookupError> {
        if let Some(hit) = self.inner.cache.get(lookup).await {
            return Ok(hit);
        }
        let inner = self.inner.clone();
        let key = lookup.clone();
        // Detached, so the inline deadline cancels the wait, not the call.
        let call = tokio::spawn(async move {
            let fetch = inner.fetch(&key);
            inner
                .cache
                .try_get_with_by_ref(&key, fetch)
                .await
                .map_err(|shared| LookupError::clone(&shared))
        });
        call.await.unwrap_or_else(|_| {
            Err(LookupError::Transient(
                "the look-up task ended without an answer".to_owned(),
            ))
        })
    }

    /// Background enrichment: [`Self::lookup`] again after each retryable
    /// failure, waiting [`next_delay`] between attempts, until it succeeds,
    /// fails permanently, or the next wait would end after `period` (use
    /// [`RETRY_PERIOD`]). Returns the last answer.
    pub async fn lookup_with_retry(&self, lookup: &Lookup, period: Duration) -> Answer {
        self.retry_with(lookup, period, next_delay).await
    }

    async fn retry_with(
        &self,
        lookup: &Lookup,
        period: Duration,
        delay: impl Fn(u32) -> Duration,
    ) -> Answer {
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            let answer = self.lookup(lookup).await;
            match &answer {
                Err(error) if error.is_retryable() => {
                    let wait = delay(attempt);
                    if started.elapsed() + wait > period {
                        return answer;
                    }
                    tracing::debug!(kind = %lookup.kind, id = %crate::scrub::one_line(&lookup.id, 128), attempt, error = %error,
                        wait_ms = wait.as_millis() as u64, "Look-up not answered yet; retrying.");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                _ => return answer,
            }
        }
    }
}

impl Inner {
    /// The HTTP call, under a concurrency permit.
    async fn fetch(&self, key: &Lookup) -> Answer {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| LookupError::Transient("look-ups are shut down".to_owned()))?;
        self.client.get(key).await
    }
}

#[cfg(test)]
mod tests;
