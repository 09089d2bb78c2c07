//! The request path, top to bottom, in one place.
//!
//! ```text
//! lookup source ─▶ per-IP limit ─▶ (handler reads the body) ─▶ authenticate
//!   ─▶ source quota ─▶ map (or `unmapped`) ─▶ seen recently? (200, not again)
//!   ─▶ serialize ─▶ publish + confirm
//!   ─▶ (not confirmed) append to the spool + fsync ─▶ claim the id in the dedup window
//! ```
//!
//! This module knows nothing of HTTP beyond headers and bytes: the handler in
//! [`crate::server`] calls [`Pipeline::lookup`] and [`Pipeline::admit`] before
//! it reads the body (so refusals cost no body bytes), then
//! [`Pipeline::process`], and turns the [`Outcome`] into a response.
//!
//! Everything a config reload may change lives in one [`Runtime`] behind an
//! `ArcSwap`. A request takes one snapshot at its start and finishes under it,
//! so a reload never changes the rules halfway through a request, and never
//! waits for requests to drain.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;
use hyper::body::Bytes;
use hyper::HeaderMap;
use time::OffsetDateTime;
use tokio_rustls::TlsAcceptor;

use crate::auth::{client_ip, AuthError, Presented, Verified};
use crate::canonical::{body_identity, event_id, Event, Mapped, UNMAPPED};
use crate::config::{ServerSettings, Source, Sources};
use crate::dedup::{Begin, DedupWindow, SharedWindow};
use crate::metrics::{Metrics, OutcomeLabel, SourceLabel, SourceReason};
use crate::publish::{EventSink, Outgoing, PublishError};
use crate::ratelimit::{IpLimiter, RetryAfter};
use crate::spool::{Spool, SpoolEntry, SpoolError};
use crate::vendors::{MapOptions, MappingError, VendorKind};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

mod lookups;
pub use lookups::{Inline, Pending, PendingLookup};

/// The reloadable part of the configuration, swapped as a whole.
pub struct Runtime {
    /// Sources by id, with their credentials and quotas.
    pub sources: Arc<Sources>,
    /// Listener limits and timeouts (address and connection cap are fixed at start).
    pub server: ServerSettings,
    /// TLS certificate in use for new connections; `None` for plain HTTP.
    pub tls: Option<TlsAcceptor>,
    /// Per-client-address guard.
    pub per_ip: Arc<IpLimiter>,
}

impl Runtime {
    /// The runtime for freshly loaded settings. With `previous`, limiters
    /// whose quota is unchanged are kept, so a reload does not hand every
    /// source and client a fresh burst, and so are unchanged look-up
    /// services with their caches. `tls` is built by the caller because
    /// reading the certificate can fail.
    pub fn new(
        mut sources: Sources,
        server: ServerSettings,
        tls: Option<TlsAcceptor>,
        previous: Option<&Runtime>,
    ) -> Self {
        let mut per_ip = Arc::new(IpLimiter::new(server.ip_rate_limit, server.ipv6_prefix_len));
        if let Some(previous) = previous {
            sources.inherit_state(&previous.sources);
            if previous.per_ip.rate() == per_ip.rate()
                && previous.per_ip.ipv6_prefix_len() == per_ip.ipv6_prefix_len()
            {
                per_ip = previous.per_ip.clone();
            }
        }
        Self {
            sources: Arc::new(sources),
            server,
            tls,
            per_ip,
        }
    }
}

/// Everything the pipeline needs from one HTTP request.
#[derive(Debug)]
pub struct Inbound {
    /// The `{token}` path segment, when present.
    pub token: Option<String>,
    /// Request headers.
    pub headers: HeaderMap,
    /// Client address, resolved through trusted proxies.
    pub client_ip: IpAddr,
    /// The raw body, exactly as received.
    pub body: Bytes,
    /// When the request arrived.
    pub received_at: SystemTime,
}

/// What became of a request.
#[derive(Debug)]
pub enum Outcome {
    /// The event is safe (confirmed by the broker, or fsynced to the spool): answer 200.
    Accepted {
        /// The canonical event id.
        event_id: String,
        /// Where it is safe, for the request log.
        safe: Safe,
    },
    /// The request failed authentication; nothing was published.
    Unauthorized(AuthError),
    /// The source is over its quota; nothing was published.
    RateLimited(RetryAfter),
    /// A repeat delivery of an event already accepted within the dedup
    /// window: answered 200 with the original id, not published again.
    Duplicate {
        /// The canonical event id (the same as the first delivery's).
        event_id: String,
    },
    /// The event could not be made safe; the vendor should retry.
    Unavailable {
        /// The canonical event id it would have had.
        event_id: String,
        /// Why.
        error: NotSafe,
    },
}

/// Where an accepted event is safe when the vendor gets its 200.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Safe {
    /// The broker confirmed it.
    Confirmed,
    /// Fsynced to the spool; the drain publishes it once the broker confirms.
    Spooled,
    /// Fsynced to the pending store; published once its deferred vendor
    /// look-up settles.
    AwaitingLookup,
}

impl Safe {
    /// The log field's value.
    pub fn label(self) -> &'static str {
        match self {
            Safe::Confirmed => "confirmed",
            Safe::Spooled => "spooled",
            Safe::AwaitingLookup => "awaiting_lookup",
        }
    }
}

/// Why an event is neither confirmed nor spooled.
#[derive(Debug, thiserror::Error)]
pub enum NotSafe {
    /// No spool is configured and the broker did not confirm.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// The broker did not confirm and the spool is at its bound.
    #[error("broker unavailable and the spool is full")]
    SpoolFull,
    /// The broker did not confirm and writing the spool failed.
    #[error("broker unavailable and the spool write failed: {0}")]
    SpoolFailed(#[source] SpoolError),
    /// Another replica (or request) still holds this event's id in the
    /// shared dedup window; the retry finds it kept or free.
    #[error("the same event is being handled by another request")]
    InFlightElsewhere,
}

/// The on-disk stores the pipeline writes to; all optional, all opened at start.
#[derive(Default)]
pub struct Stores {
    /// Events the broker did not confirm.
    pub spool: Option<Spool>,
    /// Pings whose look-up continues in the background.
    pub pending: Option<Spool<Pending>>,
    /// Recently accepted ids.
    pub dedup: Option<DedupWindow>,
    /// Recently accepted ids, shared with the other replicas (instead of `dedup`).
    pub shared_dedup: Option<SharedWindow>,
}

/// The shared request-processing state.
pub struct Pipeline {
    runtime: ArcSwap<Runtime>,
    sink: Arc<dyn EventSink>,
    spool: Option<Spool>,
    /// Pings waiting for a background look-up (next to the spool).
    pending: Option<Spool<Pending>>,
    dedup: Option<DedupWindow>,
    shared_dedup: Option<SharedWindow>,
    metrics: Arc<Metrics>,
}

impl Pipeline {
    /// A pipeline over `runtime`, publishing through `sink` (the broker's
    /// [`crate::publish::Publisher`] in the gateway).
    pub fn new(
        runtime: Runtime,
        sink: Arc<dyn EventSink>,
        stores: Stores,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            runtime: ArcSwap::from_pointee(runtime),
            sink,
            spool: stores.spool,
            pending: stores.pending,
            dedup: stores.dedup,
            shared_dedup: stores.shared_dedup,
            metrics,
        }
    }

    /// The pending-enrichment store, when there is a spool (the worker drains it).
    pub fn pending(&self) -> Option<&Spool<Pending>> {
        self.pending.as_ref()
    }

    /// The dedup window, when enabled (housekeeping).
    pub fn dedup(&self) -> Option<&DedupWindow> {
        self.dedup.as_ref()
    }

    /// The shared dedup window, when `backend = "redis"` (readiness).
    pub fn shared_dedup(&self) -> Option<&SharedWindow> {
        self.shared_dedup.as_ref()
    }

    /// The spool, when configured (readiness, metrics).
    pub fn spool(&self) -> Option<&Spool> {
        self.spool.as_ref()
    }

    /// The current configuration snapshot; a request keeps it to the end.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    /// Replaces the configuration for requests that start from now on.
    pub fn swap_runtime(&self, runtime: Runtime) {
        self.runtime.store(Arc::new(runtime));
    }

    /// Where events go, for readiness checks.
    pub fn sink(&self) -> &dyn EventSink {
        self.sink.as_ref()
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The source behind a URL, if the URL's shape matches how it authenticates.
    pub fn lookup(&self, rt: &Runtime, source_id: &str, has_token: bool) -> Option<Arc<Source>> {
        let source = rt.sources.get(source_id)?;
        (source.auth.uses_token() == has_token).then(|| source.clone())
    }

    /// The client address and whether it may send now; checked before the
    /// body is read and before any authentication work.
    pub fn admit(
        &self,
        rt: &Runtime,
        peer: IpAddr,
        headers: &HeaderMap,
    ) -> Result<IpAddr, RetryAfter> {
        let client = client_ip(peer, headers, &rt.server.trusted_proxies);
        rt.per_ip.check(client).inspect_err(|_| {
            self.metrics.ip_rate_limited.inc();
        })?;
        Ok(client)
    }

    /// Refuses a request whose body-free credentials fail (see
    /// [`crate::auth::Authenticator::check_head`]) before its body is read;
    /// counted like any refusal.
    pub fn check_head(&self, source: &Source, presented: &Presented<'_>) -> Result<(), AuthError> {
        source
            .auth
            .check_head(presented)
            .inspect_err(|error| self.count_refusal(source, error))
    }

    fn count_refusal(&self, source: &Source, error: &AuthError) {
        self.metrics
            .auth_failures
            .get_or_create(&SourceReason {
                source: source.id.clone(),
                reason: error.reason(),
            })
            .inc();
    }

    /// Authenticates, applies the source quota, maps, publishes.
    pub async fn process(&self, source: &Source, inbound: Inbound) -> Outcome {
        let presented = Presented {
            headers: &inbound.headers,
            token: inbound.token.as_deref(),
            client_ip: inbound.client_ip,
            now: inbound.received_at,
        };
        let verified = match source.auth.verify(&presented, inbound.body) {
            // Only a map reads headers: they move into the body, no copy.
            Ok(verified) if source.options.generic().is_some() => {
                verified.with_headers(inbound.headers)
            }
            Ok(verified) => verified,
            Err(error) => {
                self.count_refusal(source, &error);
                return Outcome::Unauthorized(error);
            }
        };

        if let Err(retry) = source.limiter.check() {
            self.metrics
                .rate_limited
                .get_or_create(&SourceLabel {
                    source: source.id.clone(),
                })
                .inc();
            return Outcome::RateLimited(retry);
        }

        let received_at = OffsetDateTime::from(inbound.received_at);
        let mut mapped = source.vendor.vendor().map(&verified, &source.options);

        // The id is known before any look-up, so repeats cost no API call.
        let event_id = match &mapped {
            Ok(m) => event_id(source.vendor, &source.id, &m.vendor_event_id),
            Err(_) => event_id(source.vendor, &source.id, &body_identity(verified.body())),
        };
        if self.dedup.as_ref().is_some_and(|d| d.seen(&event_id)) {
            self.count(&self.metrics.dedup_hits, &source.id);
            return Outcome::Duplicate { event_id };
        }
        let claim = match &self.shared_dedup {
            None => None,
            Some(shared) => match shared.begin(&event_id).await {
                Begin::Fresh(claim) => Some(claim),
                Begin::Duplicate => {
                    self.count(&self.metrics.dedup_hits, &source.id);
                    return Outcome::Duplicate { event_id };
                }
                Begin::Busy => {
                    return Outcome::Unavailable {
                        event_id,
                        error: NotSafe::InFlightElsewhere,
                    }
                }
            },
        };

        let inline = match (&mut mapped, &source.enrichment) {
            (Ok(m), Some(enrichment)) => self.enrich_inline(source, enrichment, m).await,
            _ => Inline::NotNeeded,
        };

        let safe = match (inline, mapped, &self.pending) {
            // Safe once fsynced; the enrichment worker publishes it when the look-up settles.
            (Inline::Deferred(lookup), Ok(mapped), Some(pending)) => {
                let entry = self.pending_lookup(source, lookup, mapped, received_at);
                append(pending, &entry, &event_id)
                    .await
                    .map(|()| Safe::AwaitingLookup)
            }
            (_, mapped, _) => {
                let event = to_event(
                    source.vendor,
                    &source.id,
                    &source.options,
                    &verified,
                    mapped,
                    received_at,
                );
                if event.event_type == UNMAPPED {
                    self.count(&self.metrics.unmapped, &source.id);
                }
                self.deliver(&self.guarded(&event)).await
            }
        };
        if let (Ok(_), Some(dedup)) = (&safe, &self.dedup) {
            // Claimed only once safe, so a 503 never makes the retry look like a duplicate.
            if let Err(error) = dedup.claim(&event_id).await {
                tracing::warn!(error = %error, "Dedup window not persisted; a retry may be published twice.");
            }
        }
        if let (Some(shared), Some(claim)) = (&self.shared_dedup, claim) {
            match &safe {
                Ok(_) => shared.done(claim).await,
                Err(_) => shared.release(claim).await,
            }
        }
        match safe {
            Ok(safe) => Outcome::Accepted { event_id, safe },
            Err(error) => Outcome::Unavailable { event_id, error },
        }
    }

    /// What the pending store keeps for a look-up that continues in the
    /// background; card numbers in the vendor's data are masked before it
    /// reaches the disk, as they would be before the bus.
    fn pending_lookup(
        &self,
        source: &Source,
        lookup: crate::vendors::Lookup,
        mut mapped: Mapped,
        received_at: OffsetDateTime,
    ) -> Pending {
        let masked = crate::guard::mask_pans(&mut mapped.facts.vendor_data);
        if masked > 0 {
            tracing::warn!(source = %source.id, masked, "Full card numbers found in the vendor's data; masked before keeping the ping.");
            self.count_by(&self.metrics.pan_masked, &source.id, masked as u64);
        }
        Pending::Lookup(Box::new(PendingLookup {
            source_id: source.id.clone(),
            vendor: source.vendor,
            received_at,
            lookup,
            mapped,
        }))
    }

    /// Publishes with confirms, or (not confirmed) appends to the spool.
    /// Shared by requests and the enrichment worker.
    pub async fn deliver(&self, outgoing: &Outgoing) -> Result<Safe, NotSafe> {
        let started = Instant::now();
        let published = self.sink.publish(outgoing).await;
        self.metrics
            .publish_seconds
            .observe(started.elapsed().as_secs_f64());
        let outcome = match &published {
            Ok(()) => "ack",
            Err(error) => error.label(),
        };
        self.metrics
            .confirms
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
        match (published, &self.spool) {
            (Ok(()), _) => Ok(Safe::Confirmed),
            (Err(error), None) => Err(NotSafe::Publish(error)),
            // Not confirmed: safe once fsynced locally; the drain task publishes it later.
            (Err(_), Some(spool)) => {
                append(spool, outgoing, &outgoing.id).await?;
                self.metrics.spooled.inc();
                Ok(Safe::Spooled)
            }
        }
    }

    /// The event as it goes on the bus, through the card guard; masked card
    /// numbers are logged and counted against the event's source.
    fn guarded(&self, event: &Event) -> Outgoing {
        let (outgoing, masked) = Outgoing::guarded(event);
        if masked > 0 {
            let source = &event.data.source_id;
            tracing::warn!(source = %source, event_id = %event.id, masked, "Full card numbers found in the vendor's data; masked before publishing.");
            self.count_by(&self.metrics.pan_masked, source, masked as u64);
        }
        outgoing
    }

    fn count(&self, family: &Family<SourceLabel, Counter>, source: &str) {
        self.count_by(family, source, 1);
    }

    fn count_by(&self, family: &Family<SourceLabel, Counter>, source: &str, n: u64) {
        family
            .get_or_create(&SourceLabel {
                source: source.to_owned(),
            })
            .inc_by(n);
    }
}

/// Appends to a spool (the main one or the pending-look-up one).
async fn append<E: SpoolEntry>(spool: &Spool<E>, entry: &E, event_id: &str) -> Result<(), NotSafe> {
    match spool.append(entry).await {
        Ok(_) => Ok(()),
        Err(SpoolError::Full { .. }) => Err(NotSafe::SpoolFull),
        Err(error) => {
            tracing::error!(error = %error, event_id = %event_id, "Spool write failed; the vendor is asked to retry.");
            Err(NotSafe::SpoolFailed(error))
        }
    }
}

/// Maps a verified body and builds the event that will be published; pure,
/// so tests and tools run exactly what the request path runs. The card
/// guard runs when the event is serialized ([`Outgoing::from_event`]).
pub fn normalize(
    vendor_kind: VendorKind,
    source_id: &str,
    options: &MapOptions,
    verified: &Verified,
    received_at: OffsetDateTime,
) -> Event {
    let mapped = vendor_kind.vendor().map(verified, options);
    to_event(
        vendor_kind,
        source_id,
        options,
        verified,
        mapped,
        received_at,
    )
}

/// The event for a mapping result: the mapped event, or an `unmapped` one
/// carrying the (redacted) body and the reason.
pub fn to_event(
    vendor_kind: VendorKind,
    source_id: &str,
    options: &MapOptions,
    verified: &Verified,
    mapped: Result<Mapped, MappingError>,
    received_at: OffsetDateTime,
) -> Event {
    let vendor = vendor_kind.vendor();
    match mapped {
        Ok(mapped) => Event::from_mapped(vendor_kind, source_id, mapped, received_at),
        Err(error) => {
            tracing::warn!(source = %source_id, reason = %error, "Body not understood; publishing as unmapped.");
            let raw = vendor.raw_body_for_unmapped(verified.body(), options);
            Event::unmapped(
                vendor_kind,
                source_id,
                verified.body(),
                raw.as_deref(),
                error.into_reason(),
                received_at,
            )
        }
    }
}

#[cfg(test)]
mod tests;
