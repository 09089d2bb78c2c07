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
use crate::canonical::{Event, UNMAPPED};
use crate::config::{ServerSettings, Source, Sources};
use crate::dedup::DedupWindow;
use crate::metrics::{Metrics, OutcomeLabel, SourceLabel, SourceReason};
use crate::publish::{Outgoing, PublishError, Publisher};
use crate::ratelimit::{IpLimiter, RetryAfter};
use crate::spool::{Spool, SpoolError};
use crate::vendors::{MapOptions, VendorKind};

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
    /// source and client a fresh burst. `tls` is built by the caller because
    /// reading the certificate can fail.
    pub fn new(
        mut sources: Sources,
        server: ServerSettings,
        tls: Option<TlsAcceptor>,
        previous: Option<&Runtime>,
    ) -> Self {
        let mut per_ip = Arc::new(IpLimiter::new(server.ip_rate_limit));
        if let Some(previous) = previous {
            sources.inherit_limiters(&previous.sources);
            if previous.per_ip.rate() == per_ip.rate() {
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
        /// The canonical type, for the request log.
        event_type: String,
        /// Whether it went to the spool rather than straight to the broker.
        spooled: bool,
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
    SpoolFailed(String),
}

/// The shared request-processing state.
pub struct Pipeline {
    runtime: ArcSwap<Runtime>,
    publisher: Publisher,
    spool: Option<Spool>,
    dedup: Option<DedupWindow>,
    metrics: Arc<Metrics>,
}

impl Pipeline {
    /// A pipeline over `runtime`, publishing through `publisher`.
    pub fn new(
        runtime: Runtime,
        publisher: Publisher,
        spool: Option<Spool>,
        dedup: Option<DedupWindow>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            runtime: ArcSwap::from_pointee(runtime),
            publisher,
            spool,
            dedup,
            metrics,
        }
    }

    /// The dedup window, when enabled (housekeeping).
    pub fn dedup(&self) -> Option<&DedupWindow> {
        self.dedup.as_ref()
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

    /// The broker handle, for readiness checks.
    pub fn publisher(&self) -> &Publisher {
        &self.publisher
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

    /// Authenticates, applies the source quota, maps, publishes.
    pub async fn process(&self, source: &Source, inbound: Inbound) -> Outcome {
        let presented = Presented {
            headers: &inbound.headers,
            token: inbound.token.as_deref(),
            client_ip: inbound.client_ip,
            now: inbound.received_at,
        };
        let verified = match source.auth.verify(&presented, inbound.body) {
            Ok(verified) => verified,
            Err(error) => {
                self.metrics
                    .auth_failures
                    .get_or_create(&SourceReason {
                        source: source.id.clone(),
                        reason: error.reason(),
                    })
                    .inc();
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
        let (event, masked) = normalize(
            source.vendor,
            &source.id,
            &source.options,
            &verified,
            received_at,
        );
        if masked > 0 {
            tracing::warn!(source = %source.id, event_id = %event.id, masked, "Full card numbers found in the vendor's data; masked before publishing.");
            self.metrics
                .pan_masked
                .get_or_create(&SourceLabel {
                    source: source.id.clone(),
                })
                .inc_by(masked as u64);
        }
        if self.dedup.as_ref().is_some_and(|d| d.seen(&event.id)) {
            self.metrics
                .dedup_hits
                .get_or_create(&SourceLabel {
                    source: source.id.clone(),
                })
                .inc();
            return Outcome::Duplicate { event_id: event.id };
        }
        if event.event_type == UNMAPPED {
            self.metrics
                .unmapped
                .get_or_create(&SourceLabel {
                    source: source.id.clone(),
                })
                .inc();
        }

        let outgoing = Outgoing::from_event(&event);
        let started = Instant::now();
        let published = self.publisher.publish(&outgoing).await;
        self.metrics
            .publish_seconds
            .observe(started.elapsed().as_secs_f64());
        let outcome = match &published {
            Ok(()) => "ack",
            Err(PublishError::Nacked) => "nack",
            Err(PublishError::Returned) => "returned",
            Err(PublishError::ConfirmTimeout(_)) => "timeout",
            Err(PublishError::Unavailable) => "unavailable",
        };
        self.metrics
            .confirms
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
        let spooled = match (published, &self.spool) {
            (Ok(()), _) => Ok(false),
            (Err(error), None) => Err(NotSafe::Publish(error)),
            // Not confirmed: safe once fsynced locally; the drain task publishes it later.
            (Err(_), Some(spool)) => match spool.append(&outgoing).await {
                Ok(_) => {
                    self.metrics.spooled.inc();
                    Ok(true)
                }
                Err(SpoolError::Full { .. }) => Err(NotSafe::SpoolFull),
                Err(error) => {
                    tracing::error!(error = %error, event_id = %outgoing.id, "Spool write failed; the vendor is asked to retry.");
                    Err(NotSafe::SpoolFailed(error.to_string()))
                }
            },
        };
        if let (Ok(_), Some(dedup)) = (&spooled, &self.dedup) {
            // Claimed only once safe, so a 503 never makes the retry look like a duplicate.
            if let Err(error) = dedup.claim(&outgoing.id).await {
                tracing::warn!(error = %error, "Dedup window not persisted; a retry may be published twice.");
            }
        }
        match spooled {
            Ok(spooled) => Outcome::Accepted {
                event_id: outgoing.id,
                event_type: outgoing.event_type,
                spooled,
            },
            Err(error) => Outcome::Unavailable {
                event_id: outgoing.id,
                error,
            },
        }
    }
}

/// Turns a verified body into the event that will be published: the
/// vendor's mapping (or an `unmapped` event carrying the body and the reason),
/// then the card-number guard. Pure, so tests and tools run exactly what the
/// request path runs. Returns the event and how many card numbers were masked.
pub fn normalize(
    vendor_kind: VendorKind,
    source_id: &str,
    options: &MapOptions,
    verified: &Verified,
    received_at: OffsetDateTime,
) -> (Event, usize) {
    let vendor = vendor_kind.vendor();
    let mut event = match vendor.map(verified, options) {
        Ok(mapped) => Event::from_mapped(vendor_kind, source_id, mapped, received_at),
        Err(error) => {
            tracing::warn!(source = %source_id, reason = %error, "Body not understood; publishing as unmapped.");
            let raw = vendor.raw_body_for_unmapped(verified.body(), options);
            Event::unmapped(
                vendor_kind,
                source_id,
                verified.body(),
                raw.as_deref(),
                error.0,
                received_at,
            )
        }
    };
    let masked = mask_card_numbers(&mut event);
    (event, masked)
}

/// Applies the PAN guard to everything vendor-controlled in an event: the
/// parsed vendor data and, for `unmapped` events, the raw body text.
fn mask_card_numbers(event: &mut Event) -> usize {
    let mut masked = crate::guard::mask_pans(&mut event.data.facts.vendor_data);
    if let Some(unmapped) = event.data.facts.unmapped.as_mut() {
        if unmapped.raw_body_encoding == "utf8" {
            let (text, n) = crate::guard::mask_text(&unmapped.raw_body);
            if n > 0 {
                unmapped.raw_body = text;
                masked += n;
            }
        }
    }
    masked
}
