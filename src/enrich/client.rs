//! The HTTP(S) client for a vendor's lookup API, and its per-source settings.
//!
//! One `GET` per look-up, through hyper-util's pooled client: HTTP/1.1
//! connections (TLS by hyper-rustls with the ring provider and the Mozilla
//! roots from `webpki-roots`; ALPN offers only `http/1.1`) are kept for
//! [`POOL_IDLE`] and reused, so a burst of pings costs one TCP and TLS
//! handshake per concurrent call, not one per look-up.
//!
//! `http://` base URLs are accepted too, for the tests' fake API and for an
//! internal egress proxy that terminates TLS towards the vendor. Anything sent
//! over plain HTTP carries the API key in the clear, so use it only on a
//! trusted network.
//!
//! Every call is bounded: one overall timeout covers DNS, connect, the TLS
//! handshake, the request and reading the body; the body is capped at
//! [`MAX_BODY_BYTES`]. The API key is only ever inside a sensitive
//! `Authorization` header value and a [`Secret`]; it is never formatted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::header::{HeaderValue, ACCEPT, AUTHORIZATION, USER_AGENT};
use hyper::{Request, StatusCode, Uri};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::{ClientConfig, RootCertStore};

use std::collections::BTreeMap;

use super::LookupError;
use crate::secret::Secret;
use crate::vendors::{Lookup, LookupPath};

/// Largest response body read; vendor records are a few KiB, so anything
/// bigger is not what we asked for and is refused rather than buffered.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Default per-call timeout: long enough for a slow API, short enough that a
/// hung connection does not hold a concurrency permit for long.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Default number of calls in flight per source, so a burst of pings cannot
/// turn into a burst against the vendor's API.
pub const DEFAULT_MAX_CONCURRENCY: usize = 4;

/// How long an idle pooled connection is kept: vendors' APIs close idle
/// connections after about a minute; reusing one within 30 s saves a
/// handshake without holding sockets for long.
pub const POOL_IDLE: Duration = Duration::from_secs(30);

/// The longest object id put in a path; vendors' ids are numbers or short
/// hex strings, so anything longer is not an id.
const MAX_ID_LEN: usize = 128;

/// Per-source settings of a vendor's lookup API, as built from the config.
///
/// Paths are templates, one per kind of object the vendor names
/// ([`crate::vendors::Vendor::lookup_paths`]), because vendors' docs do not
/// always confirm them: when the real path differs, the operator fixes it in
/// the config instead of waiting for a release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupApi {
    /// The vendor's API, or an `http://` internal proxy; a path prefix
    /// (`http://proxy/vendor`) is kept.
    pub base_url: String,
    /// The API user's name.
    pub username: String,
    /// The API user's key; sent only as HTTP Basic, never logged.
    pub api_key: Secret,
    /// Path template (with `{id}`) per kind of object.
    pub paths: BTreeMap<String, String>,
    /// Bound on one HTTP call, from connect to the last body byte.
    pub timeout: Duration,
    /// Calls in flight at once for this source.
    pub max_concurrency: usize,
}

impl LookupApi {
    /// Settings with the vendor's default paths and the documented defaults
    /// for everything but the endpoint and the credentials.
    pub fn new(
        base_url: impl Into<String>,
        username: impl Into<String>,
        api_key: Secret,
        paths: &[LookupPath],
    ) -> Self {
        Self {
            base_url: base_url.into(),
            username: username.into(),
            api_key,
            paths: paths
                .iter()
                .map(|p| (p.kind.to_owned(), p.default_path.to_owned()))
                .collect(),
            timeout: DEFAULT_TIMEOUT,
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
        }
    }

    /// Checks what can be checked before the first call, so that config
    /// loading can name the bad key instead of every look-up failing later.
    pub fn validate(&self) -> Result<(), SettingError> {
        let bad = |field: &str, message: String| {
            Err(SettingError {
                field: field.to_owned(),
                message,
            })
        };
        if let Err(message) = Target::parse(&self.base_url) {
            return bad("base_url", message);
        }
        if self.username.is_empty() || self.username.contains(':') {
            return bad(
                "username",
                "must be non-empty and must not contain `:` (HTTP Basic)".into(),
            );
        }
        if self.api_key.expose().is_empty() {
            return bad("api_key", "must not be empty".into());
        }
        for (kind, template) in &self.paths {
            let field = format!("paths.{kind}");
            if !template.starts_with('/') || !template.contains("{id}") {
                return bad(
                    &field,
                    format!("`{template}` must start with `/` and contain `{{id}}`"),
                );
            }
            if template.contains(['?', '#', ' ']) {
                return bad(
                    &field,
                    format!("`{template}` must be a plain path (no `?`, `#` or spaces)"),
                );
            }
        }
        if self.timeout.is_zero() {
            return bad("timeout", "must be greater than zero".into());
        }
        if self.max_concurrency == 0 {
            return bad("max_concurrency", "must be at least 1".into());
        }
        Ok(())
    }
}

/// A look-up setting that cannot work, with the setting it is about, so the
/// config loader can name the key without parsing a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SettingError {
    /// The setting, as named under `[source.enrich]` (`base_url`, `paths.payout`).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

/// Where requests go: parsed once from `base_url`.
#[derive(Debug, Clone)]
struct Target {
    https: bool,
    /// `host[:port]` as configured: the request URI's authority.
    authority: String,
    /// Path prefix without a trailing slash (usually empty).
    prefix: String,
}

impl Target {
    fn parse(base_url: &str) -> Result<Self, String> {
        let uri: Uri = base_url
            .parse()
            .map_err(|e| format!("`{base_url}` is not a URL ({e})"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => {
                return Err(format!(
                    "`{base_url}` must start with https:// (or http:// for a trusted proxy)"
                ))
            }
        };
        let authority = uri
            .authority()
            .ok_or_else(|| format!("`{base_url}` has no host"))?;
        if authority.as_str().contains('@') {
            return Err("must not carry credentials; use username and api_key".to_owned());
        }
        if uri.query().is_some() {
            return Err(format!("`{base_url}` must not have a query"));
        }
        if authority.host().trim_matches(['[', ']']).is_empty() {
            return Err(format!("`{base_url}` has no host"));
        }
        Ok(Self {
            https,
            authority: authority.as_str().to_owned(),
            prefix: uri.path().trim_end_matches('/').to_owned(),
        })
    }
}

/// The pooled HTTP(S) client type.
type Pooled = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// A configured client: target, credentials and connection pool, built once per source.
pub(crate) struct HttpClient {
    /// `Err` holds the configuration problem, reported by every call.
    target: Result<Target, String>,
    paths: BTreeMap<String, String>,
    authorization: HeaderValue,
    client: Pooled,
    timeout: Duration,
}

impl HttpClient {
    /// A client trusting the Mozilla root store.
    pub(crate) fn new(api: &LookupApi) -> Self {
        let roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        Self::with_roots(api, roots)
    }

    /// A client trusting `roots` only (tests use a self-signed CA).
    pub(crate) fn with_roots(api: &LookupApi, roots: RootCertStore) -> Self {
        let target = api
            .validate()
            .map_err(|e| e.to_string())
            .and_then(|()| Target::parse(&api.base_url));
        let credentials = format!("{}:{}", api.username, api.api_key.expose());
        let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
        let mut authorization = HeaderValue::from_str(&format!("Basic {encoded}"))
            .expect("base64 is a valid header value");
        authorization.set_sensitive(true);
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(api.timeout));
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(roots))
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_max_idle_per_host(api.max_concurrency.max(1))
            .build(connector);
        Self {
            target,
            paths: api.paths.clone(),
            authorization,
            client,
            timeout: api.timeout,
        }
    }

    /// `GET`s one object and classifies the answer; the whole call is bounded
    /// by the configured timeout.
    pub(crate) async fn get(&self, lookup: &Lookup) -> Result<serde_json::Value, LookupError> {
        let target = self
            .target
            .as_ref()
            .map_err(|e| LookupError::Permanent(format!("lookup API settings are invalid: {e}")))?;
        let template = self.paths.get(&lookup.kind).ok_or_else(|| {
            LookupError::Permanent(format!("no path for `{}` look-ups", lookup.kind))
        })?;
        let path = format!(
            "{}{}",
            target.prefix,
            template.replace("{id}", &path_segment(&lookup.id)?)
        );
        let started = Instant::now();
        let answer = tokio::time::timeout(self.timeout, self.exchange(target, &path)).await;
        let (status, body) = match answer {
            Ok(result) => result?,
            Err(_) => {
                return Err(LookupError::Transient(format!(
                    "GET {path}: no complete answer within {} ms",
                    self.timeout.as_millis()
                )))
            }
        };
        tracing::debug!(
            kind = %lookup.kind,
            path = %path,
            status = status.as_u16(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "Look-up answered."
        );
        classify(&path, status, &body)
    }

    /// One request on a pooled connection, reading at most
    /// [`MAX_BODY_BYTES`] of body.
    async fn exchange(
        &self,
        target: &Target,
        path: &str,
    ) -> Result<(StatusCode, Bytes), LookupError> {
        let scheme = if target.https { "https" } else { "http" };
        let request = Request::get(format!("{scheme}://{}{path}", target.authority))
            .header(AUTHORIZATION, self.authorization.clone())
            .header(ACCEPT, "application/json")
            .header(USER_AGENT, concat!("hookgate/", env!("CARGO_PKG_VERSION")))
            .body(Empty::<Bytes>::new())
            .map_err(|e| LookupError::Permanent(format!("GET {path}: bad request: {e}")))?;
        let response = self.client.request(request).await.map_err(|e| {
            let cause = causes(&e);
            if e.is_connect() {
                LookupError::Transient(format!(
                    "cannot connect to {} (TCP or TLS): {cause}",
                    target.authority
                ))
            } else {
                LookupError::Transient(format!("GET {path}: HTTP exchange failed: {cause}"))
            }
        })?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    LookupError::Permanent(format!(
                        "response body larger than {MAX_BODY_BYTES} bytes"
                    ))
                } else {
                    LookupError::Transient(format!("reading the response body failed: {e}"))
                }
            })?
            .to_bytes();
        Ok((status, body))
    }
}

/// An error and its causes on one line (`a: b: c`): the client's own text
/// says only "client error (Connect)".
fn causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The TLS client settings: TLS 1.2+, ring, `http/1.1` only.
fn tls_config(roots: RootCertStore) -> ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("ring supports TLS 1.2 and 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// Status → outcome: 404 is "not visible yet" (a vendor's API may lag its
/// pings; Nexio's by up to a minute), 408/429/5xx are worth retrying, other
/// 4xx and 3xx are not.
fn classify(path: &str, status: StatusCode, body: &[u8]) -> Result<serde_json::Value, LookupError> {
    if status.is_success() {
        return super::json::parse_exact(body).map_err(|e| {
            LookupError::Permanent(format!("GET {path}: {status}: body is not JSON: {e}"))
        });
    }
    let what = format!("GET {path}: {status}{}", excerpt(body));
    match status.as_u16() {
        404 => Err(LookupError::NotFound),
        408 | 429 | 500..=599 => Err(LookupError::Transient(what)),
        _ => Err(LookupError::Permanent(what)),
    }
}

/// The start of an error body, printable and short, for the error message.
fn excerpt(body: &[u8]) -> String {
    let text: String = String::from_utf8_lossy(&body[..body.len().min(200)])
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let text = text.trim();
    if text.is_empty() {
        String::new()
    } else {
        format!(": {text}")
    }
}

/// An object id as one path segment: unreserved characters as they are,
/// everything else percent-encoded, so an id can never add path segments or
/// a query. `.`/`..` and over-long ids are refused.
fn path_segment(id: &str) -> Result<String, LookupError> {
    if id.is_empty() || id == "." || id == ".." || id.len() > MAX_ID_LEN {
        return Err(LookupError::Permanent(format!(
            "`{}` is not a usable object id",
            id.chars().take(40).collect::<String>()
        )));
    }
    Ok(percent_encoding::utf8_percent_encode(id, NOT_UNRESERVED).to_string())
}

/// Everything but RFC 3986's unreserved characters (`A-Z a-z 0-9 - . _ ~`).
const NOT_UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

#[cfg(test)]
mod tests {
    use super::*;

    const PATHS: &[LookupPath] = &[
        LookupPath {
            kind: "transaction",
            default_path: "/transaction/v3/{id}",
            what: "a transaction",
        },
        LookupPath {
            kind: "payout",
            default_path: "/payout/v3/{id}",
            what: "a payout",
        },
    ];
    const BASE: &str = "https://api.example.com";

    fn api(base: &str) -> LookupApi {
        LookupApi::new(base, "user@example.com", Secret::new("k"), PATHS)
    }

    #[test]
    fn base_urls_are_checked_up_front() {
        assert!(api(BASE).validate().is_ok());
        assert!(api("https://api.example.com:8443/v2").validate().is_ok());
        assert!(api("http://127.0.0.1:8080/vendor/").validate().is_ok());
        for bad in [
            "ftp://api.example.com",
            "api.example.com",
            "https://user:pw@api.example.com",
            "https://api.example.com/?x=1",
            "",
        ] {
            let error = api(bad).validate().unwrap_err();
            assert_eq!(error.field, "base_url", "{bad}: {error}");
        }
        let t = Target::parse("http://[::1]:9/vendor/").unwrap();
        assert_eq!(
            (t.authority.as_str(), t.prefix.as_str(), t.https),
            ("[::1]:9", "/vendor", false)
        );
        let t = Target::parse(BASE).unwrap();
        assert_eq!(
            (t.authority.as_str(), t.prefix.as_str(), t.https),
            ("api.example.com", "", true)
        );
    }

    #[test]
    fn other_settings_are_checked_and_named() {
        let mut a = api(BASE);
        a.username = "a:b".into();
        assert_eq!(a.validate().unwrap_err().field, "username");
        let mut a = api(BASE);
        a.paths.insert("payout".into(), "/payout/v3".into());
        assert_eq!(a.validate().unwrap_err().field, "paths.payout");
        let mut a = api(BASE);
        a.max_concurrency = 0;
        assert_eq!(a.validate().unwrap_err().field, "max_concurrency");
        let a = LookupApi::new(BASE, "u", Secret::new(""), PATHS);
        assert_eq!(a.validate().unwrap_err().field, "api_key");
    }

    #[test]
    fn ids_cannot_escape_their_path_segment() {
        assert_eq!(path_segment("211302211").unwrap(), "211302211");
        assert_eq!(
            path_segment("16c3d4c3673f3b5193e56a651df0d3e4").unwrap(),
            "16c3d4c3673f3b5193e56a651df0d3e4"
        );
        assert_eq!(path_segment("a/../b?c#d").unwrap(), "a%2F..%2Fb%3Fc%23d");
        assert!(path_segment("..").is_err());
        assert!(path_segment("").is_err());
        assert!(path_segment(&"9".repeat(200)).is_err());
    }

    #[test]
    fn the_debug_form_of_the_settings_hides_the_key() {
        let a = LookupApi::new(BASE, "u", Secret::new("very-secret-key"), PATHS);
        let text = format!("{a:?}");
        assert!(!text.contains("very-secret-key"), "{text}");
    }
}
