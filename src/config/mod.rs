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

use crate::auth::{
    AuthMethods, Authenticator, BasicCredentials, HmacVerifier, IpAllowList, StandardWebhooks,
};
use crate::enrich::{Enricher, LookupApi};
use crate::ratelimit::{Rate, SourceLimiter};
use crate::secret::Secret;
use crate::vendors::{AmountUnit, MapOptions, VendorKind, VendorOptions};

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

pub use raw::*;
pub use settings::*;

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
        let mut broker = build_broker(&mut b, &self.broker);
        broker.archive = self
            .archive
            .as_ref()
            .and_then(|raw| build_archive(&mut b, raw));
        let admin = self.admin.as_ref().map(|a| build_admin(&mut b, a));
        let spool = self.spool.as_ref().map(|raw| {
            let dir = b.expand_required("spool.dir", &raw.dir);
            let max_bytes = raw.max_bytes.unwrap_or(DEFAULT_SPOOL_MAX_BYTES);
            if max_bytes < 64 * 1024 {
                b.error("spool.max_bytes", "must be at least 65536");
            }
            let drain_on_stop = Duration::from_millis(
                raw.drain_on_stop_ms
                    .unwrap_or(DEFAULT_SPOOL_DRAIN_ON_STOP_MS),
            );
            SpoolSettings {
                dir: PathBuf::from(dir),
                max_bytes,
                drain_on_stop,
            }
        });
        let (dedup, shared_dedup) = match self.dedup.as_ref().and_then(|d| d.backend.as_deref()) {
            None | Some("local") => (
                build_dedup(&mut b, self.dedup.as_ref(), spool.as_ref()),
                None,
            ),
            Some("redis") => (
                None,
                build_shared_dedup(&mut b, self.dedup.as_ref(), &broker),
            ),
            Some(other) => {
                b.error(
                    "dedup.backend",
                    format!("`{other}` is not `local` or `redis`"),
                );
                (None, None)
            }
        };
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
                shared_dedup,
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

mod raw;
pub mod reference;
mod settings;
mod sources;
use sources::build_sources;
mod dedup;
use dedup::{build_dedup, build_shared_dedup};
mod broker;
use broker::{build_archive, build_broker};

#[cfg(test)]
mod tests;
