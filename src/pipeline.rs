//! The request path, top to bottom, in one place.
//!
//! ```text
//! lookup source ─▶ authenticate ─▶ map (or `unmapped`) ─▶ serialize ─▶ publish + confirm
//! ```
//!
//! This module knows nothing of HTTP beyond headers and bytes: the handler
//! in [`crate::server`] reads the request, calls [`Pipeline::process`], and
//! turns the [`Outcome`] into a response. Each later stage (rate limiting,
//! the durable spool, enrichment) slots in here as one more step.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use hyper::body::Bytes;
use hyper::HeaderMap;
use ipnet::IpNet;
use time::OffsetDateTime;

use crate::auth::{client_ip, AuthError, Presented};
use crate::canonical::Event;
use crate::config::{Source, Sources};
use crate::publish::{Outgoing, PublishError, Publisher};

/// Everything the pipeline needs from one HTTP request.
#[derive(Debug)]
pub struct Inbound {
    /// The `{token}` path segment, when present.
    pub token: Option<String>,
    /// Request headers.
    pub headers: HeaderMap,
    /// TCP peer address.
    pub peer: IpAddr,
    /// The raw body, exactly as received.
    pub body: Bytes,
    /// When the request arrived.
    pub received_at: SystemTime,
}

/// What became of a request.
#[derive(Debug)]
pub enum Outcome {
    /// The broker confirmed the event: safe to answer 200.
    Accepted {
        /// The canonical event id.
        event_id: String,
        /// The canonical type, for the request log.
        event_type: String,
    },
    /// The request failed authentication; nothing was published.
    Unauthorized(AuthError),
    /// The event could not be made safe; the vendor should retry.
    Unavailable {
        /// The canonical event id it would have had.
        event_id: String,
        /// Why.
        error: PublishError,
    },
}

/// The shared request-processing state.
pub struct Pipeline {
    sources: Arc<Sources>,
    publisher: Publisher,
    trusted_proxies: Vec<IpNet>,
}

impl Pipeline {
    /// A pipeline over these sources, publishing through `publisher`.
    pub fn new(sources: Arc<Sources>, publisher: Publisher, trusted_proxies: Vec<IpNet>) -> Self {
        Self {
            sources,
            publisher,
            trusted_proxies,
        }
    }

    /// The source behind a URL, if the URL's shape matches how it authenticates.
    pub fn lookup(&self, source_id: &str, has_token: bool) -> Option<Arc<Source>> {
        let source = self.sources.get(source_id)?;
        (source.auth.uses_token() == has_token).then(|| source.clone())
    }

    /// The broker handle, for readiness checks.
    pub fn publisher(&self) -> &Publisher {
        &self.publisher
    }

    /// Authenticates, maps, publishes, and reports the outcome.
    pub async fn process(&self, source: &Source, inbound: Inbound) -> Outcome {
        let presented = Presented {
            headers: &inbound.headers,
            token: inbound.token.as_deref(),
            client_ip: client_ip(inbound.peer, &inbound.headers, &self.trusted_proxies),
            now: inbound.received_at,
        };
        let verified = match source.auth.verify(&presented, inbound.body) {
            Ok(verified) => verified,
            Err(error) => return Outcome::Unauthorized(error),
        };

        let received_at = OffsetDateTime::from(inbound.received_at);
        let vendor = source.vendor.vendor();
        let event = match vendor.map(&verified, &source.options) {
            Ok(mapped) => Event::from_mapped(source.vendor, &source.id, mapped, received_at),
            Err(error) => {
                tracing::warn!(source = %source.id, reason = %error, "Body not understood; publishing as unmapped.");
                let raw = vendor.raw_body_for_unmapped(verified.body(), &source.options);
                Event::unmapped(
                    source.vendor,
                    &source.id,
                    verified.body(),
                    raw.as_deref(),
                    error.0,
                    received_at,
                )
            }
        };

        let outgoing = Outgoing::from_event(&event);
        match self.publisher.publish(&outgoing).await {
            Ok(()) => Outcome::Accepted {
                event_id: outgoing.id,
                event_type: outgoing.event_type,
            },
            Err(error) => Outcome::Unavailable {
                event_id: outgoing.id,
                error,
            },
        }
    }
}
