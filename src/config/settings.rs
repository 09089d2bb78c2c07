//! The configuration as built: validated, parsed, ready to run. Nothing here
//! is read from the file directly; `RawConfig::build` makes it.

use super::*;

/// The validated, ready-to-run configuration.
#[derive(Debug)]
pub struct Settings {
    /// The public listener.
    pub server: ServerSettings,
    /// The broker connection.
    pub broker: BrokerSettings,
    /// The admin listener, if configured.
    pub admin: Option<AdminSettings>,
    /// The durable spool, if configured.
    pub spool: Option<SpoolSettings>,
    /// The duplicate-delivery window of this process, if enabled and local.
    pub dedup: Option<DedupSettings>,
    /// The duplicate-delivery window shared by replicas, with `backend = "redis"`.
    pub shared_dedup: Option<crate::dedup::SharedSettings>,
    /// Sources by id.
    pub sources: Sources,
}

/// Where unconfirmed events are kept and how much of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolSettings {
    /// Directory of the spool database.
    pub dir: PathBuf,
    /// Bound on spooled bytes.
    pub max_bytes: u64,
    /// How long a stopping gateway keeps draining the spool to the broker,
    /// after in-flight requests finished (`Duration::ZERO`: not at all).
    pub drain_on_stop: Duration,
}

/// How repeat deliveries of an accepted event are recognised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DedupSettings {
    /// Directory of `dedup.redb`.
    pub dir: PathBuf,
    /// How long an accepted id is remembered.
    pub window: Duration,
    /// Most ids remembered.
    pub max_entries: u64,
}

/// Prefix of the shared window's keys when the config gives none.
pub const DEFAULT_DEDUP_KEY_PREFIX: &str = "hookgate:dedup:";

/// 73 hours: longer than USAePay's 72-hour retry horizon, the longest of the vendors'.
pub const DEFAULT_DEDUP_WINDOW_HOURS: u64 = 73;
/// One million ids, about 100 MB of memory.
pub const DEFAULT_DEDUP_MAX_ENTRIES: u64 = 1_000_000;

/// Spool bound when the config gives none: 1 GiB holds millions of typical events.
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 1024 * 1024 * 1024;

/// How long a stopping gateway drains its spool when the config says
/// nothing: with the 30 s request drain and the broker's close it stays
/// inside the 45 s termination grace period the Kubernetes manifests set.
pub const DEFAULT_SPOOL_DRAIN_ON_STOP_MS: u64 = 10_000;

/// Where the admin endpoints listen and who may use them.
#[derive(Debug, Clone)]
pub struct AdminSettings {
    /// Address to bind (loopback by default).
    pub listen: SocketAddr,
    /// Bearer token for `/metrics` and `/admin/reload`.
    pub token: Option<Secret>,
}

/// Requests per second per source when neither the source nor `[defaults]` say.
pub const DEFAULT_SOURCE_RATE: (u32, u32) = (200, 400);
/// Requests per second per client address; generous, since a vendor sends a
/// merchant's whole traffic from few addresses.
pub const DEFAULT_IP_RATE: (u32, u32) = (500, 1000);

/// Where and how the public listener runs.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Address to bind.
    pub listen: SocketAddr,
    /// Certificate chain and key paths; `None` means plain HTTP behind a proxy.
    pub tls: Option<TlsPaths>,
    /// Request body cap.
    pub max_body_bytes: usize,
    /// Budget of body bytes buffered across every connection and stream.
    pub max_buffered_body_bytes: usize,
    /// Concurrent connection cap.
    pub max_connections: usize,
    /// Concurrent connections per client address (trusted proxies exempt).
    pub max_connections_per_address: usize,
    /// TLS handshake deadline.
    pub handshake_timeout: Duration,
    /// Request-head deadline.
    pub header_timeout: Duration,
    /// Whole-body deadline.
    pub body_timeout: Duration,
    /// How long a write may make no progress before the connection is
    /// dropped: a client that stops reading must not hold a slot forever.
    pub write_timeout: Duration,
    /// How long a connection may go without a request. hyper closes idle
    /// HTTP/1 connections at the header deadline, but an HTTP/2 connection
    /// that answers pings would otherwise stay open, holding a slot.
    pub idle_timeout: Duration,
    /// Peers whose `X-Forwarded-For` is trusted.
    pub trusted_proxies: Vec<IpNet>,
    /// Per-client-address limit.
    pub ip_rate_limit: Rate,
    /// IPv6 prefix length sharing one per-address budget.
    pub ipv6_prefix_len: u8,
    /// Shutdown drain deadline.
    pub drain_timeout: Duration,
}

/// PEM files for the TLS listener.
#[derive(Debug, Clone)]
pub struct TlsPaths {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// How to reach RabbitMQ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerSettings {
    /// The nodes to connect to, in the configured order (at least one).
    pub endpoints: Vec<crate::broker::Endpoint>,
    /// What `amqps://` endpoints trust and present.
    pub tls: crate::broker::BrokerTls,
    /// Topic exchange for events.
    pub exchange: String,
    /// Deadline for a publisher confirm.
    pub confirm_timeout: Duration,
    /// Deadline for one connection attempt.
    pub connect_timeout: Duration,
    /// Size of the publishing channel pool.
    pub channels: usize,
    /// The stream that keeps every event the exchange routes, when `[archive]` is set.
    pub archive: Option<ArchiveSettings>,
}

/// `[archive]`: a RabbitMQ stream bound to the exchange for every routing key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveSettings {
    /// The stream queue's name.
    pub stream: String,
    /// `x-max-age`: RabbitMQ's retention (`7D`, `48h`, `30m`).
    pub max_age: String,
    /// `x-max-length-bytes`, when set.
    pub max_bytes: Option<u64>,
}

/// The archive stream's name when the config gives none.
pub const DEFAULT_ARCHIVE_STREAM: &str = "hookgate.archive";
/// The archive's retention when the config gives none.
pub const DEFAULT_ARCHIVE_MAX_AGE: &str = "7D";

/// A configured webhook endpoint: one vendor, one set of credentials.
#[derive(Debug)]
pub struct Source {
    /// The `{source_id}` path segment; also the first routing-key word.
    pub id: String,
    /// The module that reads this source's bodies.
    pub vendor: VendorKind,
    /// The checks every request must pass.
    pub auth: Authenticator,
    /// Per-source mapping choices.
    pub options: MapOptions,
    /// This source's quota; shared with the previous config on reload when unchanged.
    pub limiter: Arc<SourceLimiter>,
    /// The vendor-API look-up for thin pings, when configured.
    pub enrichment: Option<SourceEnrichment>,
}

/// A source's look-up service and its timing.
#[derive(Clone)]
pub struct SourceEnrichment {
    /// The API client with its cache and concurrency bound.
    pub enricher: Enricher,
    /// How long a request waits for the look-up before deferring it.
    pub inline_deadline: Duration,
    /// How long a deferred look-up keeps being retried.
    pub retry_period: Duration,
}

impl fmt::Debug for SourceEnrichment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceEnrichment")
            .field("enricher", &self.enricher)
            .field("inline_deadline", &self.inline_deadline)
            .field("retry_period", &self.retry_period)
            .finish_non_exhaustive()
    }
}

/// All sources, looked up by the id in the URL.
#[derive(Debug, Default)]
pub struct Sources {
    by_id: HashMap<String, Arc<Source>>,
}

impl Sources {
    /// The source for a URL's `{source_id}`, if configured.
    pub fn get(&self, id: &str) -> Option<&Arc<Source>> {
        self.by_id.get(id)
    }

    /// Every source, for start-up logging and tests.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Source>> {
        self.by_id.values()
    }

    /// Keeps the running state of what a reload did not change: the limiters
    /// (and their current budgets) of sources whose quota is the same, so a
    /// reload neither resets nor tightens them by accident, and the look-up
    /// services of sources whose `[source.enrich]` is the same, so their
    /// caches stay warm instead of every cached record being fetched again.
    pub fn inherit_state(&mut self, previous: &Sources) {
        for (id, source) in self.by_id.iter_mut() {
            let Some(old) = previous.by_id.get(id) else {
                continue;
            };
            let Some(fresh) = Arc::get_mut(source) else {
                continue;
            };
            if old.limiter.rate() == fresh.limiter.rate() {
                fresh.limiter = old.limiter.clone();
            }
            if let (Some(new), Some(running)) = (fresh.enrichment.as_mut(), old.enrichment.as_ref())
            {
                if new.enricher.same_settings(&running.enricher) {
                    new.enricher = running.enricher.clone();
                }
            }
        }
    }

    /// Builds a set directly, for tests and tools that skip the file.
    pub fn from_sources(sources: impl IntoIterator<Item = Source>) -> Self {
        Self {
            by_id: sources
                .into_iter()
                .map(|s| (s.id.clone(), Arc::new(s)))
                .collect(),
        }
    }
}
