//! The configuration reference: every key, its default and its meaning.
//!
//! One table, [`keys`], built from the same constants the loader uses, so a
//! default is written once. `docs/configuration.md` is this table rendered
//! ([`markdown`], printed by `hookgate config-reference`); tests check that
//! the file matches, that every key listed is one the loader reads, that
//! setting every key to its documented default changes nothing, and that
//! `deploy/config.example.toml` uses only keys listed here.

use std::fmt::Write as _;

use super::{
    RawAdmin, RawBroker, RawHmac, RawServer, DEFAULT_ARCHIVE_MAX_AGE, DEFAULT_ARCHIVE_STREAM,
    DEFAULT_DEDUP_KEY_PREFIX, DEFAULT_DEDUP_MAX_ENTRIES, DEFAULT_DEDUP_WINDOW_HOURS,
    DEFAULT_IP_RATE, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_BUFFERED_BODY_BYTES,
    DEFAULT_MAX_CONNECTIONS_PER_ADDRESS, DEFAULT_SOURCE_RATE, DEFAULT_SPOOL_DRAIN_ON_STOP_MS,
    DEFAULT_SPOOL_MAX_BYTES,
};
use crate::enrich::{DEFAULT_MAX_CONCURRENCY, DEFAULT_TIMEOUT};
use crate::vendors::{AmountUnit, MapOptions, VendorKind};

/// One key of the configuration file.
#[derive(Debug, Clone)]
pub struct KeyDoc {
    /// Dotted path; `source.` keys belong to each `[[source]]` table.
    pub key: String,
    /// What applies when the key is left out.
    pub default: KeyDefault,
    /// A valid value, as TOML, for keys without a concrete default.
    pub example: Option<&'static str>,
    /// The vendor the key is for, when only one vendor reads it.
    pub vendor: Option<VendorKind>,
    /// What it does, in a sentence or two of Markdown.
    pub meaning: String,
}

/// What a left-out key means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyDefault {
    /// The key must be given.
    Required,
    /// Left out, the feature it configures is off or absent; the text says what.
    Unset(&'static str),
    /// Left out, this value applies; a TOML literal.
    Value(String),
    /// Left out, the value follows from other keys; the text says how.
    Derived(&'static str),
}

impl KeyDoc {
    /// A valid value for this key, as TOML: its default when it has one.
    pub fn value(&self) -> Option<String> {
        match &self.default {
            KeyDefault::Value(v) => Some(v.clone()),
            _ => self.example.map(str::to_owned),
        }
    }
}

fn key(key: impl Into<String>, default: KeyDefault, meaning: impl Into<String>) -> KeyDoc {
    KeyDoc {
        key: key.into(),
        default,
        example: None,
        vendor: None,
        meaning: meaning.into(),
    }
}

fn value(v: impl ToString) -> KeyDefault {
    KeyDefault::Value(v.to_string())
}

fn text(v: &str) -> KeyDefault {
    KeyDefault::Value(format!("\"{v}\""))
}

fn rate((per_second, burst): (u32, u32)) -> KeyDefault {
    KeyDefault::Value(format!("{{ per_second = {per_second}, burst = {burst} }}"))
}

impl KeyDoc {
    fn example(mut self, toml: &'static str) -> Self {
        self.example = Some(toml);
        self
    }

    fn vendor(mut self, vendor: impl Into<Option<VendorKind>>) -> Self {
        self.vendor = vendor.into();
        self
    }
}

/// Every key hookgate reads, in file order.
pub fn keys() -> Vec<KeyDoc> {
    use KeyDefault::{Derived, Required, Unset};
    let options = MapOptions::default();
    // `[source.enrich]` is read for the vendors that send thin pings.
    let thin: Vec<VendorKind> = VendorKind::ALL
        .into_iter()
        .filter(|v| !v.vendor().lookup_paths().is_empty())
        .collect();
    let enrich_vendor = match thin.as_slice() {
        [only] => Some(*only),
        _ => None,
    };
    let unit = match options.amount_unit() {
        AmountUnit::Minor => "minor",
        AmountUnit::Major => "major",
    };
    let mut keys = vec![
        key("server.listen", Required, "`ip:port` to bind.").example("\"127.0.0.1:8443\""),
        key("server.tls_cert", Unset("none: plain HTTP"), "PEM certificate chain, leaf first. Both `tls_cert` and `tls_key` or neither; without them hookgate serves **plain HTTP** and warns at start: only behind a TLS-terminating proxy. TLS 1.2 and 1.3, ALPN `h2` and `http/1.1`.").example("\"dev/cert.pem\""),
        key("server.tls_key", Unset("none: plain HTTP"), "PEM private key of `tls_cert`.").example("\"dev/key.pem\""),
        key("server.max_body_bytes", value(DEFAULT_MAX_BODY_BYTES), "Larger bodies get 413; a declared `Content-Length` over the cap is refused before reading."),
        key("server.max_buffered_body_bytes", value(DEFAULT_MAX_BUFFERED_BODY_BYTES), "All request bodies being read or processed at once share this budget, whatever the protocol (HTTP/2 carries 64 streams per connection); a request that cannot get its share within `body_timeout_ms` gets 503 with `Retry-After: 1`. At least `max_body_bytes`."),
        key("server.max_connections", value(RawServer::MAX_CONNECTIONS), "Concurrent connections (1 to 1,000,000); more wait in the kernel backlog."),
        key("server.max_connections_per_address", value(DEFAULT_MAX_CONNECTIONS_PER_ADDRESS), "Connections one client address (an IPv6 client's network, see `ipv6_prefix_len`) may hold open at once, at most `max_connections`; one more is closed at accept and counted in `hookgate_connections_refused_total`. Peers in `trusted_proxies` are not counted."),
        key("server.handshake_timeout_ms", value(RawServer::HANDSHAKE_TIMEOUT_MS), "TLS handshake deadline."),
        key("server.header_timeout_ms", value(RawServer::HEADER_TIMEOUT_MS), "Request head deadline (slowloris guard); also the first HTTP/2 header block's."),
        key("server.body_timeout_ms", value(RawServer::BODY_TIMEOUT_MS), "Whole-body deadline; past it, 408."),
        key("server.write_timeout_ms", value(RawServer::WRITE_TIMEOUT_MS), "A response write that makes no progress this long (the client stopped reading) closes the connection."),
        key("server.idle_timeout_ms", value(RawServer::IDLE_TIMEOUT_MS), "A connection with no request in progress this long is closed gracefully (HTTP/2: `GOAWAY`, then cut off if the client has not closed within one more period; idle HTTP/1 connections already close at `header_timeout_ms`)."),
        key("server.trusted_proxies", value("[]"), "CIDRs of proxies whose `X-Forwarded-For` is believed (for `ip_allow` and the per-address limits); empty means the TCP peer is the client."),
        key("server.ip_rate_limit", rate(DEFAULT_IP_RATE), "Per client address, before authentication."),
        key("server.ipv6_prefix_len", value(crate::ratelimit::DEFAULT_IPV6_PREFIX_LEN), "IPv6 clients in one network of this prefix length share one `ip_rate_limit` budget and one connection cap (a client can choose any address in its /64); IPv4-mapped addresses count as IPv4."),
        key("server.drain_timeout_ms", value(RawServer::DRAIN_TIMEOUT_MS), "How long in-flight requests may finish after SIGTERM."),
        key("broker.url", Derived("one of `url` and `urls` is required"), "`amqp://user:pass@host:port/vhost` or `amqps://…`: one broker node.").example("\"amqp://guest:guest@127.0.0.1:5672/%2f\""),
        key("broker.urls", Derived("one of `url` and `urls` is required"), "Every node of a cluster, e.g. `[\"amqps://u:p@rabbit-1:5671/%2f\", \"amqps://u:p@rabbit-2:5671/%2f\"]`; each process starts at a random entry and moves to the next after every failed attempt and every lost connection ([rabbitmq-cluster.md](rabbitmq-cluster.md)).").example("[\"amqp://guest:guest@127.0.0.1:5672/%2f\"]"),
        key("broker.ca_file", Unset("none: the Mozilla roots compiled in"), "PEM bundle of CAs trusted for `amqps://` in addition to the built-in roots (a private CA).").example("\"dev/rabbitmq-ca.pem\""),
        key("broker.client_cert", Unset("none"), "PEM client certificate, with `client_key`, for brokers that require one.").example("\"dev/client.pem\""),
        key("broker.client_key", Unset("none"), "PEM private key of `client_cert`.").example("\"dev/client.key\""),
        key("broker.exchange", text(RawBroker::EXCHANGE), "Durable topic exchange, declared at start."),
        key("broker.confirm_timeout_ms", value(RawBroker::CONFIRM_TIMEOUT_MS), "How long a request waits for the broker's confirm before it is spooled, or answered 503 without a spool."),
        key("broker.connect_timeout_ms", value(RawBroker::CONNECT_TIMEOUT_MS), "One connection attempt."),
        key("broker.channels", value(RawBroker::CHANNELS), "Confirm-mode publishing channels shared by all requests (1 to 256)."),
        key("admin.listen", text(RawAdmin::LISTEN), "Admin endpoints (`/healthz`, `/readyz`, `/metrics`, `/admin/reload`); without an `[admin]` table there is no admin listener."),
        key("admin.token", Unset("none: no token asked"), "Bearer token for `/metrics` and `/admin/reload`.").example("\"${HOOKGATE_ADMIN_TOKEN}\""),
        key("defaults.rate_limit", rate(DEFAULT_SOURCE_RATE), "Quota of sources that set none."),
        key("spool.dir", Unset("none: no spool, an unconfirmed event is answered 503"), "Directory of the durable spool (`spool.redb`); one process per directory.").example("\"/var/lib/hookgate/spool\""),
        key("spool.max_bytes", value(DEFAULT_SPOOL_MAX_BYTES), "Bound on spooled event bytes; when full, requests get 503 with `Retry-After` instead of the spool growing."),
        key("spool.drain_on_stop_ms", value(DEFAULT_SPOOL_DRAIN_ON_STOP_MS), "On SIGTERM, after in-flight requests finish, how long the gateway keeps publishing what its spool holds before it exits (0: not at all); what is left stays in `spool.dir`, and the log says how many and where. Keep `server.drain_timeout_ms` + this inside the orchestrator's grace period."),
        key("dedup.enabled", Derived("`true` when a spool (or `dedup.dir`) is configured"), "Remember accepted event ids, so a vendor's repeat delivery is answered 200 with the original id and **not published again**.").example("true"),
        key("dedup.dir", Derived("`spool.dir`"), "Directory of `dedup.redb`.").example("\"/var/lib/hookgate/dedup\""),
        key("dedup.window_hours", value(DEFAULT_DEDUP_WINDOW_HOURS), "How long an id is remembered: longer than USAePay's 72-hour retry horizon, the longest of the four vendors."),
        key("dedup.max_entries", value(DEFAULT_DEDUP_MAX_ENTRIES), "Cap on remembered ids, a disk budget: they live in `dedup.redb` (about 143 bytes of disk each), memory does not grow with them; the oldest go first."),
        key("dedup.backend", text("local"), "`local`: this process's window in `dedup.redb`. `redis`: one window in Redis (or Valkey) shared by every replica behind the URL, so a retry that lands on another replica is still recognised; Redis away, events are accepted and published (fail open), `hookgate_dedup_backend_errors_total` counts it and `/readyz` says degraded."),
        key("dedup.redis_url", Derived("required with `backend = \"redis\"`"), "`redis://host:6379/0` or `rediss://…` (TLS); the password from `${ENV}`.").example("\"redis://127.0.0.1:6379/0\""),
        key("dedup.key_prefix", text(DEFAULT_DEDUP_KEY_PREFIX), "Prefix of the shared window's keys, so gateways of different environments can share one Redis."),
        key("archive.stream", text(DEFAULT_ARCHIVE_STREAM), "Without an `[archive]` table there is none. A RabbitMQ stream queue declared at start and bound to the exchange for every routing key, so every event the broker routes (spooled and drained ones too) is kept there: `hookgate archive find` and `archive replay` read it ([consumers.md](consumers.md))."),
        key("archive.max_age", text(DEFAULT_ARCHIVE_MAX_AGE), "How long the stream keeps events (`x-max-age`: a number and Y, M, D, h, m or s)."),
        key("archive.max_bytes", Unset("none: bounded by age only"), "Bound on the stream's size on disk (`x-max-length-bytes`); the oldest segments go first.").example("10737418240"),
        key("source.id", Required, "`[a-z0-9_-]{1,64}`, unique: the URL is `/webhooks/{id}`.").example("\"usaepay-main\""),
        key("source.vendor", Required, "`usaepay`, `strictly`, `nexio`, `stickypay`, or `generic` (read by `source.map`).").example("\"usaepay\""),
        key("source.currency", text(&options.currency), "ISO 4217 code used when a body names no currency (USAePay never does)."),
        key("source.amount_unit", text(unit), "Whether Strictly's numeric amounts are cents (`minor`) or dollars (`major`).").vendor(VendorKind::Strictly),
        key("source.include_personal_data", value(options.include_personal_data()), "Publish the payer's name, email, phone and address (`data.customer`).").vendor(VendorKind::Stickypay),
        key("source.rate_limit", Derived("`defaults.rate_limit`"), "`{ per_second, burst }`: this source's quota, checked after authentication; a reload changes it live.").example("{ per_second = 50, burst = 100 }"),
        key("source.auth.basic", Unset("none: not asked"), "`{ username, password }`: `Authorization: Basic`, both parts compared in constant time.").example("{ username = \"hook\", password = \"${BASIC_PASSWORD}\" }"),
        key("source.auth.hmac.keys", Unset("none: no signature asked"), "Signature keys: the signature over the exact raw body must verify with one of them (list two while rotating). The vendor decides the header: USAePay `X-Signature` (hex HMAC-SHA256 of the body); Nexio legacy `Nexio-signature: t=..,v1=..` (HMAC-SHA256 of `t.body`). Refused for vendors that cannot sign.").example("[\"${SIGNATURE_KEY}\"]"),
        key("source.auth.hmac.tolerance_secs", value(RawHmac::TOLERANCE_SECS), "For signatures that carry a timestamp: how far it may be from now, either way."),
        key("source.auth.standard_webhooks.keys", Unset("none: not asked"), "Standard Webhooks secrets (`whsec_` and base64), for any sender that signs the Svix way: `webhook-id`, `webhook-timestamp` and `webhook-signature` (or the `svix-` names) must verify over `id.timestamp.body` with one of them; any `v1` entry may match any key (list two while rotating). Asymmetric `v1a` signatures are refused. Any vendor.").example("[\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"]"),
        key("source.auth.standard_webhooks.tolerance_secs", value(RawHmac::TOLERANCE_SECS), "How far `webhook-timestamp` may be from now, either way."),
        key("source.auth.token", Unset("none: not asked"), "Secret URL segment (at least 16 of `A-Za-z0-9_-`): the URL becomes `/webhooks/{id}/{token}`. For vendors that cannot sign.").example("\"0123456789abcdef0123456789abcdef\""),
        key("source.auth.ip_allow", Unset("none: any address"), "Addresses or CIDRs the client must come from (Nexio publishes its ranges; keep them in config).").example("[\"127.0.0.0/8\"]"),
        key("source.map.id", Derived("required with `vendor = \"generic\"`"), "Where the vendor's event id is: an RFC 6901 JSON pointer into the body (`\"/id\"`) or `\"header:NAME\"` (`\"header:webhook-id\"`, which also reads `svix-id`). With the source, it makes the event id, so a sender's retry dedups. Missing from a body: the event is `unmapped`.").example("\"header:webhook-id\"").vendor(VendorKind::Generic),
        key("source.map.type", Derived("required with `vendor = \"generic\"`"), "Where the vendor's event type is (pointer or header). Missing from a body: `unmapped`.").example("\"/type\"").vendor(VendorKind::Generic),
        key("source.map.time", Unset("none: the receipt time"), "Where the event's time is: RFC 3339, or unix seconds.").example("\"/timestamp\"").vendor(VendorKind::Generic),
        key("source.map.object_type", Unset("none: `object`"), "Where the object's type is; lowercased into a noun (`Card Charge` → `card_charge`).").example("\"/data/object\"").vendor(VendorKind::Generic),
        key("source.map.object_id", Unset("none: no `data.object`"), "Where the object's id is; also the event's `subject`.").example("\"/data/id\"").vendor(VendorKind::Generic),
        key("source.map.amount_minor", Unset("none: no amount"), "Where an integer amount in minor units is (`1250` is 12.50). Not with `amount_value`.").example("\"/data/amount\"").vendor(VendorKind::Generic),
        key("source.map.amount_value", Unset("none: no amount"), "Where a decimal amount in major units is, as a string or a number, read exactly. Not with `amount_minor`.").example("\"/data/amount_decimal\"").vendor(VendorKind::Generic),
        key("source.map.currency", Derived("`source.currency`"), "Where the amount's ISO 4217 currency is.").example("\"/data/currency\"").vendor(VendorKind::Generic),
        key("source.map.merchant_id", Unset("none"), "Where the merchant account's id is.").example("\"/data/account\"").vendor(VendorKind::Generic),
        key("source.map.types", Unset("none: every type is `unknown`"), "Vendor event type → canonical type (`\"charge.succeeded\" = \"payment.succeeded\"`); a type not listed is `unknown`, its vendor type kept.").example("{ \"charge.succeeded\" = \"payment.succeeded\" }").vendor(VendorKind::Generic),
        key("source.map.redact", Unset("none"), "Pointers removed from `vendor_data` before publishing (the card-number guard runs on what is left).").example("[\"/data/customer/email\"]").vendor(VendorKind::Generic),
        key("source.enrich.base_url", Unset("none: thin pings are published thin"), format!("The vendor API that fills thin pings in: Nexio's are `{}` and `{}` (or an `http://` internal proxy).", crate::vendors::nexio::lookup::PRODUCTION_BASE_URL, crate::vendors::nexio::lookup::SANDBOX_BASE_URL)).example("\"https://api.nexiopaysandbox.com\"").vendor(enrich_vendor),
        key("source.enrich.username", Derived("required in `[source.enrich]`"), "The API user's name.").example("\"api-user@example.com\"").vendor(enrich_vendor),
        key("source.enrich.api_key", Derived("required in `[source.enrich]`"), "The API user's key; sent only as HTTP Basic, never logged.").example("\"${NEXIO_API_KEY}\"").vendor(enrich_vendor),
        key("source.enrich.timeout_ms", value(DEFAULT_TIMEOUT.as_millis()), "Bound on one HTTP call, from connect to the last body byte.").vendor(enrich_vendor),
        key("source.enrich.max_concurrency", value(DEFAULT_MAX_CONCURRENCY), "Calls in flight at once for this source (1 to 1024).").vendor(enrich_vendor),
        key("source.enrich.cache_ttl_secs", value(crate::enrich::DEFAULT_CACHE_TTL.as_secs()), "How long a looked-up record is reused (it covers Nexio's resends).").vendor(enrich_vendor),
        key("source.enrich.cache_capacity", value(crate::enrich::DEFAULT_CACHE_CAPACITY), "Records kept in the cache.").vendor(enrich_vendor),
        key("source.enrich.inline_deadline_ms", value(crate::enrich::INLINE_DEADLINE.as_millis()), "How long a request waits for the look-up before the ping is kept durably and looked up in the background (needs `[spool]`).").vendor(enrich_vendor),
        key("source.enrich.retry_period_secs", value(crate::enrich::RETRY_PERIOD.as_secs()), "How long a deferred look-up is retried before the event is published thin, with `enrichment.status = \"failed\"`.").vendor(enrich_vendor),
    ];
    for vendor in thin {
        for path in vendor.vendor().lookup_paths() {
            keys.push(
                key(
                    format!("source.enrich.paths.{}", path.kind),
                    text(path.default_path),
                    format!("Path template of {}; `{{id}}` is the object id.", path.what),
                )
                .vendor(vendor),
            );
        }
    }
    keys
}

/// The reference as Markdown: `docs/configuration.md`.
pub fn markdown() -> String {
    let mut out = String::from(
        "<!-- Generated by `hookgate config-reference`; a test keeps it equal to the code. -->\n\
         # Configuration reference\n\n\
         One TOML file. A key hookgate does not read is an error, and `hookgate check-config` \
         lists every problem in one run. Any string may contain `${NAME}`, replaced by the \
         environment variable `NAME` at load time (an unset variable is an error naming the key), \
         so secrets stay out of the file. Relative paths are relative to the working directory. \
         A commented sample is [`deploy/config.example.toml`](../deploy/config.example.toml).\n\n\
         Keys under `source.` belong to each `[[source]]` table. Every method listed under \
         `source.auth` must pass, and a source with no method is an error: there is no open mode.\n\n\
         | key | default | meaning |\n|---|---|---|\n",
    );
    for doc in keys() {
        let default = match &doc.default {
            KeyDefault::Required => "required".to_owned(),
            KeyDefault::Unset(what) | KeyDefault::Derived(what) => (*what).to_owned(),
            KeyDefault::Value(v) => format!("`{v}`"),
        };
        let only = doc
            .vendor
            .map(|v| format!("`{}` only: ", v.name()))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "| `{}` | {} | {only}{} |",
            doc.key,
            default.replace('|', "\\|"),
            doc.meaning.replace('|', "\\|")
        );
    }
    out
}

#[cfg(test)]
mod tests;
