//! The configuration file, in two stages.
//!
//! [`RawConfig`] mirrors the TOML file exactly; a key it does not have is an
//! error (a typo is never silently ignored), and every such key is reported
//! in one run, with the path to it. [`RawConfig::build`] turns it
//! into [`Settings`]: environment references expanded, addresses and CIDRs
//! parsed, secrets wrapped, vendors resolved. It collects *every* problem
//! rather than stopping at the first, and each [`ConfigError`] names the key
//! (`source[0].auth.hmac.keys[1]`), so `hookgate check-config` can print a
//! complete list an operator fixes in one pass.
//!
//! Any string value may contain `${NAME}`, replaced by the environment
//! variable `NAME` at load time, so secrets stay out of the file. An unset
//! variable is an error naming both the key and the variable.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use crate::auth::{AuthMethods, Authenticator, BasicCredentials, HmacVerifier, IpAllowList};
use crate::enrich::{Enricher, NexioApi};
use crate::ratelimit::{Rate, SourceLimiter};
use crate::secret::Secret;
use crate::vendors::{AmountUnit, MapOptions, VendorKind};

/// Bodies above this are refused with 413 unless the config says otherwise;
/// the largest vendor body we know of is a few KiB, so 256 KiB leaves room
/// for growth while bounding memory per request.
pub const DEFAULT_MAX_BODY_BYTES: usize = 256 * 1024;
/// Request bodies being read or waiting in the pipeline share this budget
/// (`server.max_buffered_body_bytes`), whatever the protocol: without it,
/// HTTP/2's 64 streams per connection let one client hold
/// `max_connections × 64 × max_body_bytes` in memory before any
/// authentication. 64 MiB is 256 full-size bodies at once, well under the
/// shipped 512 Mi memory limit.
pub const DEFAULT_MAX_BUFFERED_BODY_BYTES: usize = 64 * 1024 * 1024;
/// The `source` label and log field of requests that name no configured
/// source (and of those refused by the per-address limit before the source
/// is looked up); reserved, so no source may have it as its id.
pub const UNKNOWN_SOURCE: &str = "unknown";
/// Connections one client address may hold open at once unless the config
/// says otherwise: a quarter of the default listener, far above what a vendor
/// opens (USAePay, the most, up to 20 per endpoint).
pub const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS: usize = 256;
/// Most `server.max_connections`: beyond any file-descriptor limit a host
/// would grant, and well within what one semaphore can count.
pub const MAX_CONNECTIONS_LIMIT: usize = 1_000_000;
/// Most `broker.channels`: each is a confirm-mode channel opened at connect
/// on one AMQP connection; RabbitMQ's default `channel_max` is 2047.
pub const MAX_CHANNELS: usize = 256;
/// Most `max_concurrency` for a source's look-ups against a vendor API.
pub const MAX_LOOKUP_CONCURRENCY: usize = 1024;

/// One problem in the configuration, tied to the key that causes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted path of the offending key, e.g. `source[1].auth.basic.password`.
    pub key: String,
    /// What is wrong and, where useful, what would be right.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Every problem found while loading a config file, in file order.
#[derive(Debug, thiserror::Error)]
#[error("{}", render_errors(.0))]
pub struct ConfigErrors(pub Vec<ConfigError>);

fn render_errors(errors: &[ConfigError]) -> String {
    let mut out = format!("{} problem(s) in the configuration:", errors.len());
    for error in errors {
        out.push_str("\n  - ");
        out.push_str(&error.to_string());
    }
    out
}

// === raw (file) shape ===

/// The file as written; see the README's config reference for each key.
#[derive(Debug, Deserialize)]
pub struct RawConfig {
    /// The public listener.
    pub server: RawServer,
    /// Where events are published.
    pub broker: RawBroker,
    /// The admin listener (health, readiness, metrics, reload); absent = off.
    pub admin: Option<RawAdmin>,
    /// Defaults applied to every source.
    pub defaults: Option<RawDefaults>,
    /// Local durable store for events the broker has not confirmed; absent = off.
    pub spool: Option<RawSpool>,
    /// The window of recently accepted event ids (on by default with a spool).
    pub dedup: Option<RawDedup>,
    /// One entry per webhook URL handed to a vendor.
    #[serde(default, rename = "source")]
    pub sources: Vec<RawSource>,
}

/// `[admin]`
#[derive(Debug, Deserialize)]
pub struct RawAdmin {
    /// `ip:port`; loopback by default so it is not exposed by accident.
    pub listen: Option<String>,
    /// Bearer token required for `/metrics` and `/admin/reload` when set.
    pub token: Option<String>,
}

/// The defaults of `[admin]`.
impl RawAdmin {
    /// `listen`: loopback, so the admin port is never exposed by accident.
    pub const LISTEN: &'static str = "127.0.0.1:9090";
}

/// `[spool]`
#[derive(Debug, Deserialize)]
pub struct RawSpool {
    /// Directory holding `spool.redb`.
    pub dir: String,
    /// Bound on spooled bytes; beyond it requests get 503.
    pub max_bytes: Option<u64>,
}

/// `[dedup]`
#[derive(Debug, Deserialize)]
pub struct RawDedup {
    /// Off switch; on by default.
    pub enabled: Option<bool>,
    /// Directory of `dedup.redb`; defaults to `spool.dir`.
    pub dir: Option<String>,
    /// How long an accepted id is remembered.
    pub window_hours: Option<u64>,
    /// Most ids remembered (about 100 bytes of memory each).
    pub max_entries: Option<u64>,
}

/// `[defaults]`
#[derive(Debug, Deserialize)]
pub struct RawDefaults {
    /// Quota for sources that set none.
    pub rate_limit: Option<RawRate>,
}

/// `{ per_second, burst }`
#[derive(Debug, Deserialize)]
pub struct RawRate {
    /// Sustained requests per second.
    pub per_second: u32,
    /// Requests allowed at once; defaults to twice `per_second`.
    pub burst: Option<u32>,
}

/// `[server]`
#[derive(Debug, Deserialize)]
pub struct RawServer {
    /// `ip:port` to bind.
    pub listen: String,
    /// PEM certificate chain; with `tls_key`, enables TLS.
    pub tls_cert: Option<String>,
    /// PEM private key for `tls_cert`.
    pub tls_key: Option<String>,
    /// Request bodies above this many bytes get 413.
    pub max_body_bytes: Option<usize>,
    /// All request bodies being read or held at once share this many bytes.
    pub max_buffered_body_bytes: Option<usize>,
    /// Connections beyond this wait in the kernel backlog instead of costing memory.
    pub max_connections: Option<usize>,
    /// Connections one client address may hold open at once.
    pub max_connections_per_address: Option<usize>,
    /// Time allowed for the TLS handshake.
    pub handshake_timeout_ms: Option<u64>,
    /// Time allowed to receive the request head (slowloris guard).
    pub header_timeout_ms: Option<u64>,
    /// Time allowed to receive the whole body.
    pub body_timeout_ms: Option<u64>,
    /// Longest a response write may wait on a client that does not read.
    pub write_timeout_ms: Option<u64>,
    /// A connection with no request for this long is closed.
    pub idle_timeout_ms: Option<u64>,
    /// Proxies whose `X-Forwarded-For` is believed, as CIDRs; empty = never read it.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Per-client-address limit, checked before authentication.
    pub ip_rate_limit: Option<RawRate>,
    /// IPv6 clients in one network of this prefix length share one budget.
    pub ipv6_prefix_len: Option<u8>,
    /// How long in-flight requests may run after shutdown begins.
    pub drain_timeout_ms: Option<u64>,
}

/// The defaults of `[server]`, next to the keys they fill in; the
/// configuration reference (`docs/configuration.md`) is generated from them.
impl RawServer {
    /// `max_connections`.
    pub const MAX_CONNECTIONS: usize = 1024;
    /// `handshake_timeout_ms`.
    pub const HANDSHAKE_TIMEOUT_MS: u64 = 10_000;
    /// `header_timeout_ms`.
    pub const HEADER_TIMEOUT_MS: u64 = 10_000;
    /// `body_timeout_ms`.
    pub const BODY_TIMEOUT_MS: u64 = 15_000;
    /// `write_timeout_ms`.
    pub const WRITE_TIMEOUT_MS: u64 = 15_000;
    /// `idle_timeout_ms`: longer than common load balancers' idle timeouts.
    pub const IDLE_TIMEOUT_MS: u64 = 75_000;
    /// `drain_timeout_ms`: inside Kubernetes' default 30 s grace period
    /// together with the broker's confirm timeout.
    pub const DRAIN_TIMEOUT_MS: u64 = 30_000;
}

/// `[broker]`
#[derive(Debug, Deserialize)]
pub struct RawBroker {
    /// `amqp://user:pass@host:port/vhost`: the one-endpoint form of `urls`.
    pub url: Option<String>,
    /// Every node of a cluster, `amqp://` or `amqps://`; tried in turn.
    pub urls: Option<Vec<String>>,
    /// PEM bundle of CAs trusted for `amqps://` in addition to the built-in roots.
    pub ca_file: Option<String>,
    /// PEM client certificate for brokers that require one (with `client_key`).
    pub client_cert: Option<String>,
    /// PEM private key of `client_cert`.
    pub client_key: Option<String>,
    /// Topic exchange events are published to.
    pub exchange: Option<String>,
    /// How long a publish may wait for the broker's confirm before the request fails.
    pub confirm_timeout_ms: Option<u64>,
    /// How long one connection attempt may take.
    pub connect_timeout_ms: Option<u64>,
    /// Publishing channels (each in confirm mode) shared by all requests.
    pub channels: Option<usize>,
}

/// The defaults of `[broker]`.
impl RawBroker {
    /// `exchange`.
    pub const EXCHANGE: &'static str = "hookgate.events";
    /// `confirm_timeout_ms`: well inside vendors' own request timeouts
    /// (USAePay reads for 45 s), so a 503 reaches them before they give up.
    pub const CONFIRM_TIMEOUT_MS: u64 = 5_000;
    /// `connect_timeout_ms`.
    pub const CONNECT_TIMEOUT_MS: u64 = 3_000;
    /// `channels`.
    pub const CHANNELS: usize = 4;
}

/// `[[source]]`
#[derive(Debug, Deserialize)]
pub struct RawSource {
    /// The `{source_id}` in `/webhooks/{source_id}`.
    pub id: String,
    /// Which vendor module reads this source's bodies.
    pub vendor: String,
    /// How this source proves a request is genuine.
    pub auth: Option<RawAuth>,
    /// Strictly only: whether amounts are cents (`minor`) or dollars (`major`).
    pub amount_unit: Option<String>,
    /// ISO 4217 code used when the vendor's body names no currency.
    pub currency: Option<String>,
    /// StickyPay only: publish the payer's name, email, phone and address.
    pub include_personal_data: Option<bool>,
    /// This source's quota, checked after authentication.
    pub rate_limit: Option<RawRate>,
    /// Nexio only: look thin pings up at the vendor's API.
    pub enrich: Option<RawEnrich>,
}

/// `[source.enrich]`: the vendor API that fills thin pings in.
#[derive(Debug, Deserialize)]
pub struct RawEnrich {
    /// `https://api.nexiopay.com` (production) or `https://api.nexiopaysandbox.com`.
    pub base_url: String,
    /// The API user's name.
    pub username: String,
    /// The API user's key.
    pub api_key: String,
    /// Bound on one HTTP call.
    pub timeout_ms: Option<u64>,
    /// Calls in flight at once.
    pub max_concurrency: Option<usize>,
    /// How long a looked-up record is reused.
    pub cache_ttl_secs: Option<u64>,
    /// Records kept in the cache.
    pub cache_capacity: Option<usize>,
    /// How long the request waits for an inline look-up before deferring it.
    pub inline_deadline_ms: Option<u64>,
    /// How long a deferred look-up is retried before the event is published thin.
    pub retry_period_secs: Option<u64>,
    /// Path templates with `{id}`, where the vendor docs leave them unconfirmed.
    pub paths: Option<RawEnrichPaths>,
}

/// `[source.enrich.paths]`
#[derive(Debug, Deserialize)]
pub struct RawEnrichPaths {
    /// Transaction look-up.
    pub transaction: Option<String>,
    /// Payout look-up.
    pub payout: Option<String>,
    /// Spendback look-up.
    pub spendback: Option<String>,
    /// Decline-recovery look-up.
    pub recovery: Option<String>,
    /// Onboarding-application look-up (production only).
    pub onboarding: Option<String>,
}

/// `[source.auth]`: every method present must pass.
#[derive(Debug, Deserialize)]
pub struct RawAuth {
    /// HTTP Basic credentials.
    pub basic: Option<RawBasic>,
    /// HMAC-SHA256 signature keys.
    pub hmac: Option<RawHmac>,
    /// Secret last path segment: `/webhooks/{source_id}/{token}`.
    pub token: Option<String>,
    /// Client addresses allowed, as CIDRs or plain addresses.
    pub ip_allow: Option<Vec<String>>,
}

/// `basic = { username, password }`
#[derive(Debug, Deserialize)]
pub struct RawBasic {
    /// Expected user name.
    pub username: String,
    /// Expected password.
    pub password: String,
}

/// `hmac = { keys = [..] }`
#[derive(Debug, Deserialize)]
pub struct RawHmac {
    /// Accepted keys; more than one during a rotation.
    pub keys: Vec<String>,
    /// For signatures that carry a timestamp: how far it may be from now.
    pub tolerance_secs: Option<u64>,
}

/// The defaults of `hmac`.
impl RawHmac {
    /// `tolerance_secs`: the common five minutes of timestamped schemes.
    pub const TOLERANCE_SECS: u64 = 300;
}

// === built shape ===

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
    /// The duplicate-delivery window, if enabled.
    pub dedup: Option<DedupSettings>,
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

/// 73 hours: longer than USAePay's 72-hour retry horizon, the longest of the vendors'.
pub const DEFAULT_DEDUP_WINDOW_HOURS: u64 = 73;
/// One million ids, about 100 MB of memory.
pub const DEFAULT_DEDUP_MAX_ENTRIES: u64 = 1_000_000;

/// Spool bound when the config gives none: 1 GiB holds millions of typical events.
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 1024 * 1024 * 1024;

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
}

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

// === loading ===

/// Reads, parses and validates a config file; the error lists every problem.
pub fn load(path: &Path) -> Result<Settings, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            key: path.display().to_string(),
            message: format!("cannot read the config file: {e}"),
        }])
    })?;
    from_toml(&text)
}

/// Parses and validates config text, expanding `${NAME}` from the environment.
pub fn from_toml(text: &str) -> Result<Settings, ConfigErrors> {
    from_toml_with_env(text, &|name| std::env::var(name).ok())
}

/// As [`from_toml`], with the environment supplied by the caller (tests).
pub fn from_toml_with_env(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Settings, ConfigErrors> {
    // toml's own Display quotes the offending line, which may hold an inline
    // secret: say where it is and what is wrong, never what it says.
    let mut unknown = Vec::new();
    let raw: Result<RawConfig, _> =
        serde_ignored::deserialize(toml::Deserializer::new(text), |path| {
            unknown.push(ConfigError {
                key: key_of(&path),
                message: "unknown key: hookgate does not read it (check its spelling \
                          against docs/configuration.md)"
                    .to_owned(),
            })
        });
    let raw = raw.map_err(|e| {
        let at = e.span().map_or(String::new(), |span| {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!(" at line {line}, column {column}")
        });
        let what = crate::scrub::without_quoted_values(e.message(), 300);
        ConfigErrors(vec![ConfigError {
            key: "config".into(),
            message: format!("TOML{at}: {what}"),
        }])
    })?;
    // Every unknown key is reported, together with every other problem, so
    // one run of `check-config` lists all there is to fix.
    match (raw.build(env), unknown.is_empty()) {
        (built, true) => built,
        (Ok(_), false) => Err(ConfigErrors(unknown)),
        (Err(ConfigErrors(more)), false) => {
            unknown.extend(more);
            Err(ConfigErrors(unknown))
        }
    }
}

/// The key a path into the TOML document names, as errors spell keys:
/// `source[1].auth.hmca`.
fn key_of(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", key_of(parent)),
        Path::Map { parent, key } => match key_of(parent) {
            at if at.is_empty() => key.clone(),
            at => format!("{at}.{key}"),
        },
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => key_of(parent),
    }
}

/// Accumulates errors while a [`RawConfig`] is built.
struct Builder<'a> {
    env: &'a dyn Fn(&str) -> Option<String>,
    errors: Vec<ConfigError>,
}

impl Builder<'_> {
    fn error(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            key: key.into(),
            message: message.into(),
        });
    }

    /// Expands every `${NAME}` in a value, reporting unset variables by key.
    fn expand(&mut self, key: &str, value: &str) -> String {
        let mut out = String::with_capacity(value.len());
        let mut rest = value;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else {
                self.error(key, "`${` without a closing `}`");
                return out;
            };
            let name = &after[..end];
            let valid =
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                self.error(key, format!("`${{{name}}}` is not a valid variable name"));
            } else {
                match (self.env)(name) {
                    Some(v) => out.push_str(&v),
                    None => self.error(key, format!("environment variable {name} is not set")),
                }
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        out
    }

    /// Expands a value that must not end up empty; an unset variable is
    /// reported once, not again as "empty".
    fn expand_required(&mut self, key: &str, value: &str) -> String {
        let before = self.errors.len();
        let out = self.expand(key, value);
        if self.errors.len() == before && out.is_empty() {
            self.error(key, "must not be empty");
        }
        out
    }

    fn rate(&mut self, key: &str, raw: Option<&RawRate>, default: Rate) -> Rate {
        let Some(raw) = raw else { return default };
        let burst = raw.burst.unwrap_or(raw.per_second.saturating_mul(2));
        match Rate::new(raw.per_second, burst) {
            Some(rate) => rate,
            None => {
                self.error(key, "per_second and burst must be greater than 0");
                default
            }
        }
    }

    /// A count of things the gateway allocates or opens up front
    /// (connection slots, channels, concurrent calls): 1 to `max`, so a
    /// typo of a few digits is a config error naming the key, not a panic
    /// or an allocation failure at start.
    fn count(&mut self, key: &str, value: Option<usize>, default: usize, max: usize) -> usize {
        match value {
            Some(0) => {
                self.error(key, "must be greater than 0");
                default
            }
            Some(n) if n > max => {
                self.error(key, format!("must be at most {max}"));
                default
            }
            Some(n) => n,
            None => default,
        }
    }

    fn duration_ms(&mut self, key: &str, value: Option<u64>, default_ms: u64) -> Duration {
        match value {
            Some(0) => {
                self.error(key, "must be greater than 0");
                Duration::from_millis(default_ms)
            }
            Some(ms) => Duration::from_millis(ms),
            None => Duration::from_millis(default_ms),
        }
    }

    fn cidr(&mut self, key: &str, value: &str) -> Option<IpNet> {
        let value = self.expand(key, value);
        if let Ok(net) = value.parse::<IpNet>() {
            return Some(net.trunc());
        }
        if let Ok(ip) = value.parse::<std::net::IpAddr>() {
            return Some(IpNet::from(ip));
        }
        self.error(
            key,
            format!("`{value}` is not an IP address or CIDR (e.g. 203.0.113.0/24)"),
        );
        None
    }
}

impl RawConfig {
    /// Validates every key and builds the runtime settings.
    pub fn build(self, env: &dyn Fn(&str) -> Option<String>) -> Result<Settings, ConfigErrors> {
        let mut b = Builder {
            env,
            errors: Vec::new(),
        };
        let server = build_server(&mut b, &self.server);
        let broker = build_broker(&mut b, &self.broker);
        let admin = self.admin.as_ref().map(|a| build_admin(&mut b, a));
        let spool = self.spool.as_ref().map(|raw| {
            let dir = b.expand_required("spool.dir", &raw.dir);
            let max_bytes = raw.max_bytes.unwrap_or(DEFAULT_SPOOL_MAX_BYTES);
            if max_bytes < 64 * 1024 {
                b.error("spool.max_bytes", "must be at least 65536");
            }
            SpoolSettings {
                dir: PathBuf::from(dir),
                max_bytes,
            }
        });
        let dedup = build_dedup(&mut b, self.dedup.as_ref(), spool.as_ref());
        let (per_second, burst) = DEFAULT_SOURCE_RATE;
        let fallback = Rate::new(per_second, burst).expect("non-zero default");
        let default_rate = b.rate(
            "defaults.rate_limit",
            self.defaults.as_ref().and_then(|d| d.rate_limit.as_ref()),
            fallback,
        );
        let sources = build_sources(&mut b, &self.sources, default_rate);
        if b.errors.is_empty() {
            Ok(Settings {
                server: server.expect("server settings exist when no error was recorded"),
                broker,
                admin: admin.flatten(),
                dedup,
                spool,
                sources,
            })
        } else {
            Err(ConfigErrors(b.errors))
        }
    }
}

fn build_server(b: &mut Builder, raw: &RawServer) -> Option<ServerSettings> {
    let listen = b.expand("server.listen", &raw.listen);
    let listen = match listen.parse::<SocketAddr>() {
        Ok(addr) => Some(addr),
        Err(_) => {
            b.error(
                "server.listen",
                format!("`{listen}` is not an ip:port address (e.g. 127.0.0.1:8443)"),
            );
            None
        }
    };
    let tls = match (&raw.tls_cert, &raw.tls_key) {
        (Some(cert), Some(key)) => Some(TlsPaths {
            cert: PathBuf::from(b.expand("server.tls_cert", cert)),
            key: PathBuf::from(b.expand("server.tls_key", key)),
        }),
        (None, None) => None,
        (Some(_), None) => {
            b.error(
                "server.tls_key",
                "missing: tls_cert is set, so tls_key is required",
            );
            None
        }
        (None, Some(_)) => {
            b.error(
                "server.tls_cert",
                "missing: tls_key is set, so tls_cert is required",
            );
            None
        }
    };
    let max_body_bytes = match raw.max_body_bytes {
        Some(0) => {
            b.error("server.max_body_bytes", "must be greater than 0");
            DEFAULT_MAX_BODY_BYTES
        }
        Some(n) => n,
        None => DEFAULT_MAX_BODY_BYTES,
    };
    let max_buffered_body_bytes = raw
        .max_buffered_body_bytes
        .unwrap_or(DEFAULT_MAX_BUFFERED_BODY_BYTES);
    if max_buffered_body_bytes < max_body_bytes {
        b.error(
            "server.max_buffered_body_bytes",
            format!("must be at least server.max_body_bytes ({max_body_bytes}), or no full-size body could be read"),
        );
    } else if max_buffered_body_bytes > u32::MAX as usize {
        b.error(
            "server.max_buffered_body_bytes",
            format!("must be at most {}", u32::MAX),
        );
    }
    let max_connections = b.count(
        "server.max_connections",
        raw.max_connections,
        RawServer::MAX_CONNECTIONS,
        MAX_CONNECTIONS_LIMIT,
    );
    let max_connections_per_address = b.count(
        "server.max_connections_per_address",
        raw.max_connections_per_address,
        DEFAULT_MAX_CONNECTIONS_PER_ADDRESS.min(max_connections),
        max_connections,
    );
    let handshake_timeout = b.duration_ms(
        "server.handshake_timeout_ms",
        raw.handshake_timeout_ms,
        RawServer::HANDSHAKE_TIMEOUT_MS,
    );
    let header_timeout = b.duration_ms(
        "server.header_timeout_ms",
        raw.header_timeout_ms,
        RawServer::HEADER_TIMEOUT_MS,
    );
    let body_timeout = b.duration_ms(
        "server.body_timeout_ms",
        raw.body_timeout_ms,
        RawServer::BODY_TIMEOUT_MS,
    );
    let write_timeout = b.duration_ms(
        "server.write_timeout_ms",
        raw.write_timeout_ms,
        RawServer::WRITE_TIMEOUT_MS,
    );
    let idle_timeout = b.duration_ms(
        "server.idle_timeout_ms",
        raw.idle_timeout_ms,
        RawServer::IDLE_TIMEOUT_MS,
    );
    let trusted_proxies = raw
        .trusted_proxies
        .iter()
        .enumerate()
        .filter_map(|(i, p)| b.cidr(&format!("server.trusted_proxies[{i}]"), p))
        .collect();
    let (per_second, burst) = DEFAULT_IP_RATE;
    let ip_rate_limit = b.rate(
        "server.ip_rate_limit",
        raw.ip_rate_limit.as_ref(),
        Rate::new(per_second, burst).expect("non-zero default"),
    );
    let ipv6_prefix_len = match raw.ipv6_prefix_len {
        Some(n @ 1..=128) => n,
        Some(_) => {
            b.error("server.ipv6_prefix_len", "must be 1 to 128");
            crate::ratelimit::DEFAULT_IPV6_PREFIX_LEN
        }
        None => crate::ratelimit::DEFAULT_IPV6_PREFIX_LEN,
    };
    let drain_timeout = b.duration_ms(
        "server.drain_timeout_ms",
        raw.drain_timeout_ms,
        RawServer::DRAIN_TIMEOUT_MS,
    );
    Some(ServerSettings {
        ip_rate_limit,
        ipv6_prefix_len,
        drain_timeout,
        listen: listen?,
        tls,
        max_body_bytes,
        max_buffered_body_bytes,
        max_connections,
        max_connections_per_address,
        handshake_timeout,
        header_timeout,
        body_timeout,
        write_timeout,
        idle_timeout,
        trusted_proxies,
    })
}

fn build_dedup(
    b: &mut Builder,
    raw: Option<&RawDedup>,
    spool: Option<&SpoolSettings>,
) -> Option<DedupSettings> {
    if raw.and_then(|r| r.enabled) == Some(false) {
        return None;
    }
    let dir = match raw.and_then(|r| r.dir.as_deref()) {
        Some(dir) => PathBuf::from(b.expand_required("dedup.dir", dir)),
        None => match (spool, raw) {
            (Some(spool), _) => spool.dir.clone(),
            // No spool and no [dedup]: nothing to keep ids in; off.
            (None, None) => return None,
            (None, Some(_)) => {
                b.error(
                    "dedup.dir",
                    "missing: set it, or configure [spool] whose dir is the default",
                );
                return None;
            }
        },
    };
    let hours = raw
        .and_then(|r| r.window_hours)
        .unwrap_or(DEFAULT_DEDUP_WINDOW_HOURS);
    if hours == 0 {
        b.error(
            "dedup.window_hours",
            "must be greater than 0 (or set enabled = false)",
        );
    }
    let max_entries = raw
        .and_then(|r| r.max_entries)
        .unwrap_or(DEFAULT_DEDUP_MAX_ENTRIES);
    if max_entries == 0 {
        b.error(
            "dedup.max_entries",
            "must be greater than 0 (or set enabled = false)",
        );
    }
    Some(DedupSettings {
        dir,
        window: Duration::from_secs(hours * 3600),
        max_entries,
    })
}

fn build_admin(b: &mut Builder, raw: &RawAdmin) -> Option<AdminSettings> {
    let listen = raw
        .listen
        .as_deref()
        .map(|l| b.expand("admin.listen", l))
        .unwrap_or_else(|| RawAdmin::LISTEN.to_owned());
    let listen = match listen.parse::<SocketAddr>() {
        Ok(addr) => addr,
        Err(_) => {
            b.error(
                "admin.listen",
                format!("`{listen}` is not an ip:port address (e.g. 127.0.0.1:9090)"),
            );
            return None;
        }
    };
    let token = raw.token.as_deref().map(|t| {
        let before = b.errors.len();
        let t = b.expand("admin.token", t);
        if b.errors.len() == before && t.len() < 16 {
            b.error("admin.token", "must be at least 16 characters");
        }
        Secret::new(t)
    });
    Some(AdminSettings { listen, token })
}

fn build_broker(b: &mut Builder, raw: &RawBroker) -> BrokerSettings {
    let listed: Vec<(String, &String)> = match (&raw.url, &raw.urls) {
        (Some(_), Some(_)) => {
            b.error(
                "broker.urls",
                "set either broker.url (one node) or broker.urls (a cluster), not both",
            );
            Vec::new()
        }
        (Some(url), None) => vec![("broker.url".to_owned(), url)],
        (None, Some(urls)) if urls.is_empty() => {
            b.error(
                "broker.urls",
                "must list at least one amqp:// or amqps:// URL",
            );
            Vec::new()
        }
        (None, Some(urls)) => urls
            .iter()
            .enumerate()
            .map(|(i, u)| (format!("broker.urls[{i}]"), u))
            .collect(),
        (None, None) => {
            b.error(
                "broker.url",
                "missing: set broker.url, or broker.urls for a cluster",
            );
            Vec::new()
        }
    };
    let mut endpoints = Vec::with_capacity(listed.len());
    for (key, raw_url) in listed {
        let url = b.expand(&key, raw_url);
        match crate::broker::Endpoint::parse(&url) {
            Ok(endpoint) => endpoints.push(endpoint),
            Err(reason) => b.error(&key, reason),
        }
    }
    let tls = build_broker_tls(b, raw);
    if (tls.ca_pem.is_some() || tls.client.is_some())
        && !endpoints.is_empty()
        && !endpoints.iter().any(|e| e.tls)
    {
        let key = if tls.ca_pem.is_some() {
            "broker.ca_file"
        } else {
            "broker.client_cert"
        };
        b.error(key, "set, but no broker URL uses amqps://");
    }
    let exchange = raw
        .exchange
        .as_deref()
        .map(|e| b.expand("broker.exchange", e))
        .unwrap_or_else(|| RawBroker::EXCHANGE.to_owned());
    if exchange.is_empty() || exchange.len() > 255 || exchange.starts_with("amq.") {
        b.error(
            "broker.exchange",
            format!("`{exchange}` is not usable: 1 to 255 characters, not starting with `amq.`"),
        );
    }
    let channels = b.count(
        "broker.channels",
        raw.channels,
        RawBroker::CHANNELS,
        MAX_CHANNELS,
    );
    BrokerSettings {
        endpoints,
        tls,
        exchange,
        confirm_timeout: b.duration_ms(
            "broker.confirm_timeout_ms",
            raw.confirm_timeout_ms,
            RawBroker::CONFIRM_TIMEOUT_MS,
        ),
        connect_timeout: b.duration_ms(
            "broker.connect_timeout_ms",
            raw.connect_timeout_ms,
            RawBroker::CONNECT_TIMEOUT_MS,
        ),
        channels,
    }
}

/// Reads `broker.ca_file` and `broker.client_cert`/`client_key` now, so a
/// missing or unreadable file is a config error naming its key rather than
/// a connection failure later.
fn build_broker_tls(b: &mut Builder, raw: &RawBroker) -> crate::broker::BrokerTls {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};

    let read = |b: &mut Builder, key: &str, path: &str| -> Option<String> {
        let path = b.expand(key, path);
        match std::fs::read_to_string(&path) {
            Ok(text) => Some(text),
            Err(e) => {
                b.error(key, format!("cannot read `{path}` ({e})"));
                None
            }
        }
    };
    let certificates = |b: &mut Builder, key: &str, text: String| -> Option<String> {
        let found = CertificateDer::pem_slice_iter(text.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map(|certs| certs.len());
        match found {
            Ok(0) => b.error(key, "holds no PEM CERTIFICATE block"),
            Ok(_) => return Some(text),
            Err(e) => b.error(key, format!("is not valid PEM ({e})")),
        }
        None
    };
    let ca_pem = raw.ca_file.as_deref().and_then(|path| {
        let text = read(b, "broker.ca_file", path)?;
        certificates(b, "broker.ca_file", text)
    });
    let client = match (&raw.client_cert, &raw.client_key) {
        (Some(cert), Some(key)) => {
            let cert = read(b, "broker.client_cert", cert)
                .and_then(|text| certificates(b, "broker.client_cert", text));
            let key = read(b, "broker.client_key", key).and_then(|text| {
                match PrivateKeyDer::from_pem_slice(text.as_bytes()) {
                    Ok(_) => Some(Secret::new(text)),
                    Err(_) => {
                        b.error("broker.client_key", "holds no PEM private key");
                        None
                    }
                }
            });
            cert.zip(key)
                .map(|(cert_pem, key_pem)| crate::broker::ClientIdentity { cert_pem, key_pem })
        }
        (None, None) => None,
        (Some(_), None) => {
            b.error(
                "broker.client_key",
                "missing: client_cert is set, so client_key is required",
            );
            None
        }
        (None, Some(_)) => {
            b.error(
                "broker.client_cert",
                "missing: client_key is set, so client_cert is required",
            );
            None
        }
    };
    crate::broker::BrokerTls { ca_pem, client }
}

fn build_sources(b: &mut Builder, raw: &[RawSource], default_rate: Rate) -> Sources {
    if raw.is_empty() {
        b.error(
            "source",
            "no [[source]] configured: nothing could be received",
        );
    }
    let mut seen = HashSet::new();
    let mut built = Vec::new();
    for (i, source) in raw.iter().enumerate() {
        let at = format!("source[{i}]");
        let id = source.id.clone();
        let id_ok = !id.is_empty()
            && id.len() <= 64
            && id
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-');
        if !id_ok {
            b.error(
                format!("{at}.id"),
                format!("`{id}` must be 1 to 64 characters of a-z, 0-9, `_` or `-`"),
            );
        } else if id == UNKNOWN_SOURCE {
            b.error(
                format!("{at}.id"),
                "`unknown` is reserved: requests to no configured source are counted under it",
            );
        } else if !seen.insert(id.clone()) {
            b.error(
                format!("{at}.id"),
                format!("`{id}` is used by more than one source"),
            );
        }
        let vendor = match VendorKind::from_name(&source.vendor) {
            Some(v) => Some(v),
            None => {
                b.error(
                    format!("{at}.vendor"),
                    format!(
                        "unknown vendor `{}`; expected one of: {}",
                        source.vendor,
                        VendorKind::ALL.map(|v| v.name()).join(", ")
                    ),
                );
                None
            }
        };
        let options = build_options(b, &at, source, vendor);
        let auth = match &source.auth {
            Some(auth) => build_auth(b, &at, auth, vendor),
            None => {
                b.error(
                    format!("{at}.auth"),
                    "missing: every source needs at least one of basic, hmac, token, ip_allow",
                );
                None
            }
        };
        let rate = b.rate(
            &format!("{at}.rate_limit"),
            source.rate_limit.as_ref(),
            default_rate,
        );
        let enrichment = source
            .enrich
            .as_ref()
            .and_then(|raw| build_enrichment(b, &at, raw, vendor));
        if let (Some(vendor), Some(auth)) = (vendor, auth) {
            built.push(Source {
                id,
                vendor,
                auth,
                options,
                limiter: Arc::new(SourceLimiter::new(rate)),
                enrichment,
            });
        }
    }
    Sources::from_sources(built)
}

fn build_enrichment(
    b: &mut Builder,
    at: &str,
    raw: &RawEnrich,
    vendor: Option<VendorKind>,
) -> Option<SourceEnrichment> {
    let at = format!("{at}.enrich");
    if vendor.is_some_and(|v| v != VendorKind::Nexio) {
        b.error(
            &at,
            "only vendor `nexio` sends thin pings that need a look-up",
        );
        return None;
    }
    let mut api = NexioApi::new(
        b.expand_required(&format!("{at}.base_url"), &raw.base_url),
        b.expand_required(&format!("{at}.username"), &raw.username),
        Secret::new(b.expand_required(&format!("{at}.api_key"), &raw.api_key)),
    );
    api.timeout = b.duration_ms(
        &format!("{at}.timeout_ms"),
        raw.timeout_ms,
        api.timeout.as_millis() as u64,
    );
    api.max_concurrency = b.count(
        &format!("{at}.max_concurrency"),
        raw.max_concurrency,
        api.max_concurrency,
        MAX_LOOKUP_CONCURRENCY,
    );
    if let Some(paths) = &raw.paths {
        let mut set = |value: &Option<String>, key: &str, slot: &mut String| {
            if let Some(v) = value {
                *slot = b.expand(&format!("{at}.paths.{key}"), v);
            }
        };
        set(
            &paths.transaction,
            "transaction",
            &mut api.paths.transaction,
        );
        set(&paths.payout, "payout", &mut api.paths.payout);
        set(&paths.spendback, "spendback", &mut api.paths.spendback);
        set(&paths.recovery, "recovery", &mut api.paths.recovery);
        set(&paths.onboarding, "onboarding", &mut api.paths.onboarding);
    }
    if let Err(problem) = api.validate() {
        // validate() names the field first: `base_url: ...`.
        b.error(
            format!("{at}.{}", problem.split(':').next().unwrap_or("")),
            problem.clone(),
        );
        return None;
    }
    let ttl = Duration::from_secs(
        raw.cache_ttl_secs
            .unwrap_or(crate::enrich::DEFAULT_CACHE_TTL.as_secs()),
    );
    let capacity = raw
        .cache_capacity
        .unwrap_or(crate::enrich::DEFAULT_CACHE_CAPACITY);
    let inline_deadline = b.duration_ms(
        &format!("{at}.inline_deadline_ms"),
        raw.inline_deadline_ms,
        crate::enrich::INLINE_DEADLINE.as_millis() as u64,
    );
    let retry_period = match raw.retry_period_secs {
        Some(0) => {
            b.error(format!("{at}.retry_period_secs"), "must be greater than 0");
            crate::enrich::RETRY_PERIOD
        }
        Some(secs) => Duration::from_secs(secs),
        None => crate::enrich::RETRY_PERIOD,
    };
    Some(SourceEnrichment {
        enricher: Enricher::new(api, ttl, capacity),
        inline_deadline,
        retry_period,
    })
}

fn build_options(
    b: &mut Builder,
    at: &str,
    raw: &RawSource,
    vendor: Option<VendorKind>,
) -> MapOptions {
    let mut options = MapOptions::default();
    if let Some(unit) = &raw.amount_unit {
        if vendor.is_some_and(|v| v != VendorKind::Strictly) {
            b.error(
                format!("{at}.amount_unit"),
                "only used by vendor `strictly`",
            );
        }
        match unit.as_str() {
            "minor" => options.amount_unit = AmountUnit::Minor,
            "major" => options.amount_unit = AmountUnit::Major,
            other => b.error(
                format!("{at}.amount_unit"),
                format!("`{other}` is not `minor` or `major`"),
            ),
        }
    }
    if let Some(currency) = &raw.currency {
        let currency = b.expand(&format!("{at}.currency"), currency);
        if currency.len() == 3 && currency.bytes().all(|c| c.is_ascii_uppercase()) {
            options.currency = currency;
        } else {
            b.error(
                format!("{at}.currency"),
                format!("`{currency}` is not an ISO 4217 code such as USD"),
            );
        }
    }
    if let Some(include) = raw.include_personal_data {
        if vendor.is_some_and(|v| v != VendorKind::Stickypay) {
            b.error(
                format!("{at}.include_personal_data"),
                "only used by vendor `stickypay`",
            );
        }
        options.include_personal_data = include;
    }
    options
}

fn build_auth(
    b: &mut Builder,
    at: &str,
    raw: &RawAuth,
    vendor: Option<VendorKind>,
) -> Option<Authenticator> {
    let at = format!("{at}.auth");
    let mut auth = AuthMethods::default();
    let mut methods = 0;
    if let Some(basic) = &raw.basic {
        methods += 1;
        let username = b.expand_required(&format!("{at}.basic.username"), &basic.username);
        let password = b.expand_required(&format!("{at}.basic.password"), &basic.password);
        if username.contains(':') {
            b.error(format!("{at}.basic.username"), "must not contain `:`");
        }
        auth.basic = Some(BasicCredentials::new(&username, Secret::new(password)));
    }
    if let Some(hmac) = &raw.hmac {
        methods += 1;
        let scheme = vendor.and_then(|v| v.vendor().signature_scheme());
        if let (Some(v), None) = (vendor, scheme) {
            b.error(
                format!("{at}.hmac"),
                format!(
                    "vendor `{}` does not sign its webhooks; use basic, token or ip_allow",
                    v.name()
                ),
            );
        }
        if hmac.keys.is_empty() {
            b.error(format!("{at}.hmac.keys"), "must list at least one key");
        }
        let keys: Vec<Secret> = hmac
            .keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let key = format!("{at}.hmac.keys[{i}]");
                Secret::new(b.expand_required(&key, k))
            })
            .collect();
        let tolerance = Duration::from_secs(hmac.tolerance_secs.unwrap_or(RawHmac::TOLERANCE_SECS));
        if let Some(scheme) = scheme {
            auth.hmac = Some(HmacVerifier::new(scheme, keys, tolerance));
        }
    }
    if let Some(token) = &raw.token {
        methods += 1;
        let before = b.errors.len();
        let token = b.expand(&format!("{at}.token"), token);
        if b.errors.len() == before && token.len() < 16
            || !token
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        {
            b.error(
                format!("{at}.token"),
                "must be at least 16 characters of A-Z, a-z, 0-9, `-` or `_` (generate one with `openssl rand -hex 24`)",
            );
        }
        auth.token = Some(Secret::new(token));
    }
    if let Some(list) = &raw.ip_allow {
        methods += 1;
        if list.is_empty() {
            b.error(
                format!("{at}.ip_allow"),
                "must list at least one address or CIDR",
            );
        }
        let nets = list
            .iter()
            .enumerate()
            .filter_map(|(i, n)| b.cidr(&format!("{at}.ip_allow[{i}]"), n))
            .collect();
        auth.ip_allow = Some(IpAllowList::new(nets));
    }
    match Authenticator::new(auth) {
        Ok(auth) => Some(auth),
        // An hmac table for a vendor that does not sign leaves no method
        // built; that is reported above with its key.
        Err(_) if methods > 0 => None,
        Err(no_method) => {
            b.error(at, format!("{no_method}"));
            None
        }
    }
}

pub mod reference;

#[cfg(test)]
mod tests;
