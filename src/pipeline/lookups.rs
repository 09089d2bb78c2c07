//! Vendor look-ups on the request path and after it.
//!
//! A mapped event that its vendor says needs a look-up
//! ([`crate::vendors::Vendor::lookup`]) is tried inline within the source's
//! deadline ([`Pipeline::enrich_inline`]). If the vendor's API has not
//! answered usefully by then and a pending store exists, the request keeps
//! what the look-up needs, a [`PendingLookup`] (source, receipt time, the
//! mapped event and its [`Lookup`]), fsyncs it and answers 200; the
//! enrichment worker ([`crate::drain::enrichment`]) then calls
//! [`Pipeline::retry_deferred`] on its schedule, which applies the answer and
//! builds the event once. Nothing reads the vendor's body a second time.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use super::Pipeline;
use crate::canonical::{Enrichment, Event, Mapped};
use crate::config::{Source, SourceEnrichment};
use crate::enrich::LookupError;
use crate::metrics::OutcomeLabel;
use crate::publish::Outgoing;
use crate::spool::{SpoolEntry, Spooled};
use crate::vendors::{Lookup, VendorKind};

/// What the inline attempt came to.
#[derive(Debug)]
pub enum Inline {
    /// The vendor needs no look-up for this event.
    NotNeeded,
    /// Settled either way (`enrichment` says which); publish now.
    Settled,
    /// Not settled within the deadline and a pending store exists: keep it
    /// there and finish it in the background.
    Deferred(Lookup),
}

/// What a deferred look-up needs, kept in the pending store until it settles.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingLookup {
    /// The source the ping came through (its look-up settings may be reloaded meanwhile).
    pub source_id: String,
    /// The vendor that mapped it, so the event keeps its vendor if the source changes.
    pub vendor: VendorKind,
    /// When the request arrived.
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
    /// What to ask the vendor's API.
    pub lookup: Lookup,
    /// The event as mapped from the ping, card numbers in `vendor_data` masked.
    pub mapped: Mapped,
}

/// One entry of the pending store.
#[derive(Debug, Clone)]
pub enum Pending {
    /// A deferred look-up.
    Lookup(Box<PendingLookup>),
    /// A finished thin event, as hookgate 0.1's pending store kept them: it
    /// is published as it is, with the look-up marked failed.
    Event(Outgoing),
}

/// A look-up is stored as its JSON (first byte `{`); an event as the main
/// spool stores it (first byte `0`, the high byte of its id's length), so a
/// pending store written before look-ups were kept this way still reads.
impl SpoolEntry for Pending {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), String> {
        match self {
            Pending::Lookup(pending) => serde_json::to_writer(out, pending)
                .map_err(|e| format!("cannot encode a pending look-up: {e}")),
            Pending::Event(outgoing) => outgoing.encode(out),
        }
    }

    fn decode(bytes: &[u8]) -> Result<Self, String> {
        match bytes.first() {
            Some(b'{') => serde_json::from_slice(bytes)
                .map(|pending| Pending::Lookup(Box::new(pending)))
                .map_err(|e| format!("pending look-up: {e}")),
            _ => Outgoing::decode(bytes).map(Pending::Event),
        }
    }
}

impl Pipeline {
    /// Tries the vendor look-up within the source's inline deadline and fills
    /// the facts in.
    pub(super) async fn enrich_inline(
        &self,
        source: &Source,
        enrichment: &SourceEnrichment,
        mapped: &mut Mapped,
    ) -> Inline {
        let vendor = source.vendor.vendor();
        let Some(lookup) = vendor.lookup(mapped) else {
            return Inline::NotNeeded;
        };
        let answer = tokio::time::timeout(
            enrichment.inline_deadline,
            enrichment.enricher.lookup(&lookup),
        )
        .await;
        let found = match answer {
            Ok(Ok(found)) => Ok(found),
            Ok(Err(LookupError::Permanent(reason))) => Err(reason),
            _ if self.pending.is_some() => {
                self.count_enrichment("deferred");
                return Inline::Deferred(lookup);
            }
            Ok(Err(error)) => Err(format!("{error}; no [spool] to retry it in the background")),
            Err(_) => Err(
                "no answer within the inline deadline; no [spool] to retry it in the background"
                    .to_owned(),
            ),
        };
        self.count_enrichment(settle(source, mapped, &lookup, found, 1));
        Inline::Settled
    }

    /// One background attempt at a deferred look-up: `Some(event)` when it
    /// is settled either way (publish it, then drop the entry), `None` to try
    /// again later.
    pub async fn retry_deferred(&self, entry: &Spooled<Pending>, now_ms: u64) -> Option<Outgoing> {
        let pending = match &entry.entry {
            Pending::Lookup(pending) => pending,
            Pending::Event(thin) => {
                return Some(with_verdict(
                    thin,
                    Enrichment::failed("kept by an earlier hookgate version; not looked up", 1),
                ))
            }
        };
        let attempts = entry.attempts + 2; // the inline attempt, and this one
        let runtime = self.runtime();
        let source = runtime.sources.get(&pending.source_id);
        let mut mapped = pending.mapped.clone();
        let Some((source, enrichment)) = source.and_then(|s| Some((s, s.enrichment.as_ref()?)))
        else {
            // The source was removed or lost its look-up settings in a reload: publish thin.
            mapped.facts.enrichment = Some(Enrichment::failed(
                "source no longer configured for look-ups",
                attempts,
            ));
            return Some(self.outgoing(pending, mapped));
        };
        let expired = Duration::from_millis(now_ms.saturating_sub(entry.enqueued_at_ms))
            >= enrichment.retry_period;
        let found = match enrichment.enricher.lookup(&pending.lookup).await {
            Ok(record) => Ok(record),
            Err(LookupError::Permanent(reason)) => Err(reason),
            Err(error) if expired => Err(format!(
                "no usable record after {} s: {error}",
                enrichment.retry_period.as_secs()
            )),
            Err(_) => return None,
        };
        self.count_enrichment(settle(
            source,
            &mut mapped,
            &pending.lookup,
            found,
            attempts,
        ));
        Some(self.outgoing(pending, mapped))
    }

    /// The event of a settled look-up, guarded as every published event is.
    fn outgoing(&self, pending: &PendingLookup, mapped: Mapped) -> Outgoing {
        let event = Event::from_mapped(
            pending.vendor,
            &pending.source_id,
            mapped,
            pending.received_at,
        );
        self.guarded(&event)
    }

    fn count_enrichment(&self, outcome: &'static str) {
        self.metrics
            .enrichment
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }
}

/// Records the result of a look-up in the event through the source's
/// vendor: the record's facts and `complete`, or the reason and `failed`
/// (the ping's facts stay). Returns the metric label.
fn settle(
    source: &Source,
    mapped: &mut Mapped,
    lookup: &Lookup,
    found: Result<Value, String>,
    attempts: u32,
) -> &'static str {
    let applied = found.and_then(|record| {
        source
            .vendor
            .vendor()
            .apply_lookup(mapped, lookup, &record, &source.options)
    });
    let (verdict, label) = match applied {
        Ok(()) => (Enrichment::complete(attempts), "complete"),
        Err(reason) => (Enrichment::failed(reason, attempts), "failed"),
    };
    mapped.facts.enrichment = Some(verdict);
    label
}

/// A thin event kept by an earlier version, with an `enrichment` verdict added.
fn with_verdict(outgoing: &Outgoing, verdict: Enrichment) -> Outgoing {
    let mut out = outgoing.clone();
    if let Ok(mut event) = serde_json::from_slice::<Value>(&outgoing.body) {
        event["data"]["enrichment"] = serde_json::to_value(&verdict).unwrap_or_default();
        if let Ok(body) = serde_json::to_vec(&event) {
            out.body = body;
        }
    }
    out
}
