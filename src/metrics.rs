//! Prometheus metrics, exposed on the admin listener at `/metrics`.
//!
//! One struct owns every series so that names, help texts and label sets are
//! defined in one place (and listed in docs/operations.md). Labels are bounded: the
//! source id comes from config, statuses and reasons from closed sets; no
//! label ever holds a request value, a token or an address.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// `{source, status}`
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceStatus {
    /// Configured source id.
    pub source: String,
    /// HTTP status answered.
    pub status: u16,
}

/// `{source, reason}`
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceReason {
    /// Configured source id.
    pub source: String,
    /// A closed-set reason label.
    pub reason: &'static str,
}

/// `{source}`
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    /// Configured source id.
    pub source: String,
}

/// `{outcome}`
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// A closed-set outcome label.
    pub outcome: &'static str,
}

/// `{endpoint}`: a configured broker node as `host:port`, never its credentials.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabel {
    /// `host:port` from the configured URL.
    pub endpoint: String,
}

/// The broker connection's series, handed to its supervisor, which is the
/// only place that sees endpoints change and alarms come and go.
#[derive(Clone, Default)]
pub struct BrokerMetrics {
    /// 1 for the endpoint in use, 0 for the others.
    pub endpoints: Family<EndpointLabel, Gauge>,
    /// Moves from one endpoint to the next after a failed attempt or a lost connection.
    pub failovers: Counter,
    /// Periods in which the broker blocked publishing (memory or disk alarm).
    pub blocked: Counter,
}

impl BrokerMetrics {
    /// The gauge of one endpoint.
    pub fn endpoint(&self, name: &str) -> Gauge {
        self.endpoints
            .get_or_create(&EndpointLabel {
                endpoint: name.to_owned(),
            })
            .clone()
    }
}

/// Outcomes of `hookgate_confirms_total` (`PublishError::label` and `ack`).
pub const CONFIRM_OUTCOMES: [&str; 6] = [
    "ack",
    "nack",
    "returned",
    "timeout",
    "unavailable",
    "blocked",
];
/// Outcomes of `hookgate_enrichment_total`.
pub const ENRICHMENT_OUTCOMES: [&str; 3] = ["complete", "failed", "deferred"];
/// Outcomes of `hookgate_reloads_total`.
pub const RELOAD_OUTCOMES: [&str; 2] = ["ok", "rejected"];

/// Every series hookgate exports.
pub struct Metrics {
    registry: Registry,
    /// Answered requests by source and status.
    pub requests: Family<SourceStatus, Counter>,
    /// Authentication failures by source and reason.
    pub auth_failures: Family<SourceReason, Counter>,
    /// Requests refused by a source's quota.
    pub rate_limited: Family<SourceLabel, Counter>,
    /// Requests refused by the per-client-address guard, before authentication.
    pub ip_rate_limited: Counter,
    /// Connections closed at accept: their address held its connection limit.
    pub connections_refused: Counter,
    /// Time from publish to the broker's answer.
    pub publish_seconds: Histogram,
    /// Broker answers: ack, nack, returned, timeout, unavailable.
    pub confirms: Family<OutcomeLabel, Counter>,
    /// Authenticated bodies published as `unmapped`, by source.
    pub unmapped: Family<SourceLabel, Counter>,
    /// Config reloads by result (ok, rejected).
    pub reloads: Family<OutcomeLabel, Counter>,
    /// 1 while the broker connection is up.
    pub broker_connected: Gauge,
    /// Endpoint in use, failovers, blocked periods.
    broker: BrokerMetrics,
    /// Full card numbers masked out of vendor data before publishing, by source.
    pub pan_masked: Family<SourceLabel, Counter>,
    /// Vendor look-ups for thin pings: complete, failed, deferred (to the background).
    pub enrichment: Family<OutcomeLabel, Counter>,
    /// Repeat deliveries answered 200 without publishing again, by source.
    pub dedup_hits: Family<SourceLabel, Counter>,
    /// Calls to the shared dedup store that failed (the request went on, failing open).
    pub dedup_backend_errors: Counter,
    /// Events written to the spool because the broker did not confirm them.
    pub spooled: Counter,
    /// Spooled events published and confirmed by the drain task.
    pub drained: Counter,
    /// Events waiting in the spool.
    pub spool_events: Gauge,
    /// Bytes waiting in the spool.
    pub spool_bytes: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every series under the `hookgate_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("hookgate");
        let requests = Family::<SourceStatus, Counter>::default();
        registry.register(
            "requests",
            "Webhook requests answered, by source and HTTP status",
            requests.clone(),
        );
        let auth_failures = Family::<SourceReason, Counter>::default();
        registry.register(
            "auth_failures",
            "Requests refused by authentication, by source and reason",
            auth_failures.clone(),
        );
        let rate_limited = Family::<SourceLabel, Counter>::default();
        registry.register(
            "rate_limited",
            "Authenticated requests refused by the source's quota",
            rate_limited.clone(),
        );
        let ip_rate_limited = Counter::default();
        registry.register(
            "ip_rate_limited",
            "Requests refused by the per-client-address limit before authentication",
            ip_rate_limited.clone(),
        );
        let connections_refused = Counter::default();
        registry.register(
            "connections_refused",
            "Connections closed at accept because their address held server.max_connections_per_address",
            connections_refused.clone(),
        );
        let publish_seconds = Histogram::new(exponential_buckets(0.000_5, 2.0, 14));
        registry.register(
            "publish_seconds",
            "Time from publish to the broker's confirm",
            publish_seconds.clone(),
        );
        let confirms = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "confirms",
            "Broker answers to publishes: ack, nack, returned, timeout, unavailable",
            confirms.clone(),
        );
        let unmapped = Family::<SourceLabel, Counter>::default();
        registry.register(
            "unmapped",
            "Authenticated bodies no mapping understood, published as unmapped",
            unmapped.clone(),
        );
        let reloads = Family::<OutcomeLabel, Counter>::default();
        registry.register("reloads", "Config reloads: ok or rejected", reloads.clone());
        let broker_connected = Gauge::default();
        registry.register(
            "broker_connected",
            "1 while the broker connection is up",
            broker_connected.clone(),
        );
        let broker = BrokerMetrics::default();
        registry.register(
            "broker_endpoint",
            "1 for the broker endpoint (host:port) the connection uses, 0 for the others",
            broker.endpoints.clone(),
        );
        registry.register(
            "broker_failovers",
            "Moves to the next broker endpoint after a failed attempt or a lost connection",
            broker.failovers.clone(),
        );
        registry.register(
            "broker_blocked",
            "Periods in which the broker blocked publishing (memory or disk alarm)",
            broker.blocked.clone(),
        );
        let pan_masked = Family::<SourceLabel, Counter>::default();
        registry.register(
            "pan_masked",
            "Full card numbers masked out of vendor data before publishing",
            pan_masked.clone(),
        );
        let enrichment = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "enrichment",
            "Vendor look-ups of thin pings: complete, failed, deferred",
            enrichment.clone(),
        );
        let dedup_hits = Family::<SourceLabel, Counter>::default();
        registry.register(
            "dedup_hits",
            "Repeat deliveries of an accepted event, answered 200 and not published again",
            dedup_hits.clone(),
        );
        let dedup_backend_errors = Counter::default();
        registry.register(
            "dedup_backend_errors",
            "Calls to the shared dedup store (Redis) that failed; the event was accepted and published anyway",
            dedup_backend_errors.clone(),
        );
        let spooled = Counter::default();
        registry.register(
            "spooled",
            "Events written to the local spool because the broker did not confirm them",
            spooled.clone(),
        );
        let drained = Counter::default();
        registry.register(
            "drained",
            "Spooled events later confirmed by the broker",
            drained.clone(),
        );
        let spool_events = Gauge::default();
        registry.register(
            "spool_events",
            "Events waiting in the spool",
            spool_events.clone(),
        );
        let spool_bytes = Gauge::default();
        registry.register(
            "spool_bytes",
            "Bytes waiting in the spool",
            spool_bytes.clone(),
        );
        // Every closed-set series is exported at 0 from the start: an alert
        // on `rate(hookgate_reloads_total{outcome="rejected"}[5m])` must see 0,
        // not nothing, before the first rejected reload.
        for (family, outcomes) in [
            (&confirms, &CONFIRM_OUTCOMES[..]),
            (&enrichment, &ENRICHMENT_OUTCOMES[..]),
            (&reloads, &RELOAD_OUTCOMES[..]),
        ] {
            for &outcome in outcomes {
                let _ = family.get_or_create(&OutcomeLabel { outcome });
            }
        }
        Self {
            enrichment,
            dedup_hits,
            dedup_backend_errors,
            pan_masked,
            spooled,
            drained,
            spool_events,
            spool_bytes,
            registry,
            requests,
            auth_failures,
            rate_limited,
            ip_rate_limited,
            connections_refused,
            publish_seconds,
            confirms,
            unmapped,
            reloads,
            broker_connected,
            broker,
        }
    }

    /// The broker connection's series, for its supervisor.
    pub fn broker(&self) -> BrokerMetrics {
        self.broker.clone()
    }

    /// The Prometheus text exposition of every series.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    /// Exports the per-source counters at 0 for each configured source (at
    /// start and after a reload), so that they exist before their first event.
    pub fn export_sources<'a>(&self, sources: impl IntoIterator<Item = &'a str>) {
        for source in sources {
            let label = SourceLabel {
                source: source.to_owned(),
            };
            for family in [
                &self.rate_limited,
                &self.unmapped,
                &self.pan_masked,
                &self.dedup_hits,
            ] {
                let _ = family.get_or_create(&label);
            }
        }
    }

    /// Counts one answered request.
    pub fn request(&self, source: &str, status: u16) {
        self.requests
            .get_or_create(&SourceStatus {
                source: source.to_owned(),
                status,
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_render_with_their_labels() {
        let m = Metrics::new();
        m.request("usaepay-main", 200);
        m.request("usaepay-main", 200);
        m.auth_failures
            .get_or_create(&SourceReason {
                source: "s".into(),
                reason: "signature_mismatch",
            })
            .inc();
        let text = m.render();
        assert!(
            text.contains("hookgate_requests_total{source=\"usaepay-main\",status=\"200\"} 2"),
            "{text}"
        );
        assert!(
            text.contains(
                "hookgate_auth_failures_total{source=\"s\",reason=\"signature_mismatch\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("# TYPE hookgate_publish_seconds histogram"),
            "{text}"
        );
    }

    #[test]
    fn closed_set_and_per_source_series_exist_at_zero_before_any_event() {
        let m = Metrics::new();
        m.export_sources(["usaepay-main", "sticky-main"]);
        let text = m.render();
        for line in [
            "hookgate_rate_limited_total{source=\"usaepay-main\"} 0",
            "hookgate_rate_limited_total{source=\"sticky-main\"} 0",
            "hookgate_pan_masked_total{source=\"sticky-main\"} 0",
            "hookgate_unmapped_total{source=\"usaepay-main\"} 0",
            "hookgate_dedup_hits_total{source=\"usaepay-main\"} 0",
            "hookgate_enrichment_total{outcome=\"deferred\"} 0",
            "hookgate_reloads_total{outcome=\"rejected\"} 0",
            "hookgate_confirms_total{outcome=\"nack\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
    }
}
