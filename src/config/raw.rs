//! The configuration file's shape, exactly as written: what serde reads,
//! before any check. Each key's default sits next to its struct, as an
//! associated constant the loader and the reference both use.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The file as written; docs/configuration.md describes each key.
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
    /// A stream on the broker keeping every published event; absent = off.
    pub archive: Option<RawArchive>,
    /// One entry per webhook URL handed to a vendor.
    #[serde(default, rename = "source")]
    pub sources: Vec<RawSource>,
}

/// `[archive]`
#[derive(Debug, Deserialize)]
pub struct RawArchive {
    /// The stream queue's name.
    pub stream: Option<String>,
    /// How long RabbitMQ keeps events (`7D`, `48h`).
    pub max_age: Option<String>,
    /// Bound on the stream's size on disk.
    pub max_bytes: Option<u64>,
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
    /// How long a stopping gateway keeps draining the spool to the broker.
    pub drain_on_stop_ms: Option<u64>,
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
    /// `local` (this process's redb window) or `redis` (shared by replicas).
    pub backend: Option<String>,
    /// The shared store, for `backend = "redis"`.
    pub redis_url: Option<String>,
    /// Prefix of the shared store's keys.
    pub key_prefix: Option<String>,
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
    /// Vendors that send thin pings: look them up at the vendor's API.
    pub enrich: Option<RawEnrich>,
    /// Generic only: where each canonical field comes from.
    pub map: Option<crate::vendors::generic::RawMap>,
}

/// `[source.enrich]`: the vendor API that fills thin pings in.
#[derive(Debug, Deserialize)]
pub struct RawEnrich {
    /// The vendor's API (or an internal proxy in front of it).
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
    /// Path templates with `{id}` by kind of object, where the vendor's docs
    /// leave them unconfirmed; the kinds are the vendor's.
    pub paths: Option<BTreeMap<String, String>>,
}

/// `[source.auth]`: every method present must pass.
#[derive(Debug, Deserialize)]
pub struct RawAuth {
    /// HTTP Basic credentials.
    pub basic: Option<RawBasic>,
    /// HMAC-SHA256 signature keys.
    pub hmac: Option<RawHmac>,
    /// Standard Webhooks (Svix) signature keys; any vendor may use them.
    pub standard_webhooks: Option<RawStandardWebhooks>,
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

/// `standard_webhooks = { keys = [..] }`
#[derive(Debug, Deserialize)]
pub struct RawStandardWebhooks {
    /// Accepted secrets, `whsec_` and base64; more than one during a rotation.
    pub keys: Vec<String>,
    /// How far `webhook-timestamp` may be from now, either way; as `hmac`'s.
    pub tolerance_secs: Option<u64>,
}

/// The defaults of `hmac`.
impl RawHmac {
    /// `tolerance_secs`: the common five minutes of timestamped schemes.
    pub const TOLERANCE_SECS: u64 = 300;
}
