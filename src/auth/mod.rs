//! Request authentication, per source, over shared constant-time code.
//!
//! A source lists one or more methods in `[source.auth]`; **every** listed
//! method must pass. The order is cheapest first (IP, token, Basic, HMAC) so
//! a flood of forged requests costs as little CPU as possible. Besides the
//! vendors' own schemes, any source may use Standard Webhooks signatures
//! (`standard_webhooks.rs`), what every sender built on Svix sends. Vendors do not
//! run their own checks: a vendor module only says *where* its signature lives
//! ([`SignatureScheme`]); the comparison itself is here, once.
//!
//! The only way to obtain a [`Verified`] body is [`Authenticator::verify`],
//! and vendor mappers accept nothing else, so no code path can parse JSON
//! from a request that has not been authenticated.

mod basic;
mod ip;
mod signature;
mod standard_webhooks;

use std::net::IpAddr;
use std::time::SystemTime;

use hyper::body::Bytes;
use hyper::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub use basic::BasicCredentials;
pub use ip::{client_ip, IpAllowList};
pub use signature::{HmacVerifier, SignatureScheme};
pub use standard_webhooks::{svix_name, KeyError, StandardWebhooks, SECRET_PREFIX};

use crate::secret::Secret;

/// The methods a source is configured with; every present one must pass.
/// A plain description: only an [`Authenticator`] built from it checks
/// anything, and none is built without at least one method.
#[derive(Debug, Default)]
pub struct AuthMethods {
    /// `Authorization: Basic` credentials.
    pub basic: Option<BasicCredentials>,
    /// Signature keys and the vendor's scheme.
    pub hmac: Option<HmacVerifier>,
    /// Standard Webhooks signature keys (any vendor).
    pub standard_webhooks: Option<StandardWebhooks>,
    /// Secret URL segment.
    pub token: Option<Secret>,
    /// Allowed client networks.
    pub ip_allow: Option<IpAllowList>,
}

/// The checks configured for one source; all of them must pass.
#[derive(Debug)]
pub struct Authenticator {
    methods: AuthMethods,
}

/// An [`AuthMethods`] with no method at all would accept every request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "no authentication method: set at least one of basic, hmac, standard_webhooks, token, ip_allow"
)]
pub struct NoAuthMethod;

/// What a request presents for authentication.
#[derive(Debug)]
pub struct Presented<'a> {
    /// Request headers, for Basic and signature headers.
    pub headers: &'a HeaderMap,
    /// The `{token}` path segment, if the URL had one.
    pub token: Option<&'a str>,
    /// The client address, already resolved through trusted proxies.
    pub client_ip: IpAddr,
    /// When the request arrived, for timestamped signatures.
    pub now: SystemTime,
}

/// A request body that passed every configured check; only this module makes one.
#[derive(Debug, Clone)]
pub struct Verified {
    body: Bytes,
    /// The request's headers, kept only for sources whose map reads them.
    headers: Option<HeaderMap>,
}

impl Verified {
    /// The exact bytes the vendor sent (and signed).
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The body as shared bytes, to carry raw into an `unmapped` event.
    pub fn bytes(&self) -> &Bytes {
        &self.body
    }

    /// A body the operator vouches for: `hookgate send` (a capture from the
    /// vendor's own export) and `hookgate remap` (a body hookgate itself
    /// authenticated earlier), and `test_util` (tests only). Crate-private:
    /// never reachable from the request path, nor from outside the crate.
    pub(crate) fn vouched_by_operator(body: impl Into<Bytes>) -> Self {
        Self {
            body: body.into(),
            headers: None,
        }
    }

    /// The same body with the request's headers, for a generic source whose
    /// map reads a field from a header.
    pub fn with_headers(mut self, headers: HeaderMap) -> Self {
        self.headers = Some(headers);
        self
    }

    /// One request header as text, when the headers were kept and it is there once.
    pub fn header(&self, name: &hyper::header::HeaderName) -> Option<&str> {
        let mut values = self.headers.as_ref()?.get_all(name).iter();
        let value = values.next()?;
        if values.next().is_some() {
            return None;
        }
        value.to_str().ok()
    }
}

/// Why a request was refused; each maps to a status and a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Basic` header, or not decodable.
    #[error("missing or malformed Basic credentials")]
    BasicMissing,
    /// Basic credentials did not match.
    #[error("wrong Basic credentials")]
    BasicMismatch,
    /// The vendor's signature header is absent.
    #[error("missing signature header")]
    SignatureMissing,
    /// The signature header could not be parsed.
    #[error("malformed signature header")]
    SignatureMalformed,
    /// No configured key produced the signature.
    #[error("signature does not match")]
    SignatureMismatch,
    /// The signed timestamp is outside the tolerance: a replay or a bad clock.
    #[error("signature timestamp outside the tolerance")]
    SignatureExpired,
    /// The URL carried no token but the source needs one.
    #[error("missing URL token")]
    TokenMissing,
    /// The URL token did not match.
    #[error("wrong URL token")]
    TokenMismatch,
    /// The client address is not in the allowlist.
    #[error("client address not allowed")]
    IpNotAllowed,
    /// A Standard Webhooks header (`webhook-id`, `-timestamp`, `-signature`) is absent.
    #[error("missing Standard Webhooks headers")]
    WebhookHeadersMissing,
    /// A Standard Webhooks header could not be read.
    #[error("malformed Standard Webhooks header")]
    WebhookMalformed,
    /// The `webhook-id` contains `.`, which would make the signed content ambiguous.
    #[error("webhook-id must not contain `.`")]
    WebhookIdInvalid,
    /// `webhook-timestamp` is further from now than the tolerance, either way.
    #[error("webhook-timestamp outside the tolerance")]
    WebhookTimestampOutsideTolerance,
    /// No `v1` entry matches any configured key.
    #[error("Standard Webhooks signature does not match")]
    WebhookMismatch,
    /// Only asymmetric `v1a` signatures were sent.
    #[error("asymmetric v1a signatures are not supported; configure a symmetric whsec_ key")]
    WebhookAsymmetricUnsupported,
}

impl AuthError {
    /// A short label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::BasicMissing => "basic_missing",
            Self::BasicMismatch => "basic_mismatch",
            Self::SignatureMissing => "signature_missing",
            Self::SignatureMalformed => "signature_malformed",
            Self::SignatureMismatch => "signature_mismatch",
            Self::SignatureExpired => "signature_expired",
            Self::TokenMissing => "token_missing",
            Self::TokenMismatch => "token_mismatch",
            Self::IpNotAllowed => "ip_not_allowed",
            Self::WebhookHeadersMissing => "webhook_headers_missing",
            Self::WebhookMalformed => "webhook_malformed",
            Self::WebhookIdInvalid => "webhook_id_invalid",
            Self::WebhookTimestampOutsideTolerance => "webhook_timestamp_outside_tolerance",
            Self::WebhookMismatch => "webhook_signature_mismatch",
            Self::WebhookAsymmetricUnsupported => "webhook_v1a_unsupported",
        }
    }

    /// Whether the response should carry `WWW-Authenticate: Basic`.
    pub fn wants_basic_challenge(&self) -> bool {
        matches!(self, Self::BasicMissing | Self::BasicMismatch)
    }
}

impl Authenticator {
    /// The checks for `methods`; refused when there are none, since a
    /// source without a method would accept anyone.
    pub fn new(methods: AuthMethods) -> Result<Self, NoAuthMethod> {
        let authenticator = Authenticator { methods };
        if authenticator.method_count() == 0 {
            return Err(NoAuthMethod);
        }
        Ok(authenticator)
    }

    /// What is configured (read-only), e.g. for `hookgate sign`.
    pub fn methods(&self) -> &AuthMethods {
        &self.methods
    }

    /// The checks that need no body: client address, URL token, Basic, and
    /// that exactly one signature header is there. The handler runs them
    /// before it reads the body, so a request without credentials is refused
    /// without buffering its body; [`Self::verify`] runs them again with the
    /// signature, so a [`Verified`] still comes from one place only.
    pub fn check_head(&self, presented: &Presented<'_>) -> Result<(), AuthError> {
        let AuthMethods {
            basic,
            hmac,
            standard_webhooks,
            token,
            ip_allow,
        } = &self.methods;
        if let Some(allow) = ip_allow {
            if !allow.contains(presented.client_ip) {
                return Err(AuthError::IpNotAllowed);
            }
        }
        if let Some(expected) = token {
            let given = presented.token.ok_or(AuthError::TokenMissing)?;
            if !equal_secrets(given.as_bytes(), expected.expose().as_bytes()) {
                return Err(AuthError::TokenMismatch);
            }
        }
        if let Some(basic) = basic {
            basic.verify(presented.headers)?;
        }
        if let Some(hmac) = hmac {
            hmac.header_value(presented.headers)?;
        }
        if let Some(standard) = standard_webhooks {
            standard.headers(presented.headers)?;
        }
        Ok(())
    }

    /// Runs every configured check; the body is returned verified or not at all.
    pub fn verify(&self, presented: &Presented<'_>, body: Bytes) -> Result<Verified, AuthError> {
        self.check_head(presented)?;
        if let Some(hmac) = &self.methods.hmac {
            hmac.verify(presented.headers, &body, presented.now)?;
        }
        if let Some(standard) = &self.methods.standard_webhooks {
            standard.verify(presented.headers, &body, presented.now)?;
        }
        Ok(Verified {
            body,
            headers: None,
        })
    }

    /// How many methods the source requires; with more than one, a refusal
    /// does not say which failed (the metric label still does), so one
    /// secret cannot be guessed apart from the others.
    pub fn method_count(&self) -> usize {
        let m = &self.methods;
        usize::from(m.ip_allow.is_some())
            + usize::from(m.token.is_some())
            + usize::from(m.basic.is_some())
            + usize::from(m.hmac.is_some())
            + usize::from(m.standard_webhooks.is_some())
    }

    /// Whether the source is reached through `/webhooks/{id}/{token}`.
    pub fn uses_token(&self) -> bool {
        self.methods.token.is_some()
    }
}

/// How far `at` is from `now`, in either direction: signed timestamps are
/// refused as far in the future as in the past.
fn clock_distance(now: SystemTime, at: SystemTime) -> std::time::Duration {
    match now.duration_since(at) {
        Ok(age) => age,
        Err(ahead) => ahead.duration(),
    }
}

/// Compares two secrets in time independent of where they differ and of
/// their lengths: both sides are hashed to 32 bytes first, then compared
/// with `subtle`.
pub fn equal_secrets(given: &[u8], expected: &[u8]) -> bool {
    let a = Sha256::digest(given);
    let b = Sha256::digest(expected);
    a.ct_eq(&b).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn presented<'a>(headers: &'a HeaderMap, token: Option<&'a str>, ip: &str) -> Presented<'a> {
        Presented {
            headers,
            token,
            client_ip: ip.parse().unwrap(),
            now: SystemTime::now(),
        }
    }

    #[test]
    fn an_authenticator_without_a_method_cannot_be_built() {
        assert_eq!(
            Authenticator::new(AuthMethods::default()).unwrap_err(),
            NoAuthMethod
        );
    }

    #[test]
    fn every_configured_method_must_pass() {
        let auth = Authenticator::new(AuthMethods {
            token: Some(Secret::new("0123456789abcdef")),
            ip_allow: Some(IpAllowList::new(vec!["10.0.0.0/8".parse().unwrap()])),
            ..Default::default()
        })
        .unwrap();
        let headers = HeaderMap::new();
        let body = Bytes::from_static(b"{}");
        assert!(auth
            .verify(
                &presented(&headers, Some("0123456789abcdef"), "10.1.2.3"),
                body.clone()
            )
            .is_ok());
        assert_eq!(
            auth.verify(
                &presented(&headers, Some("0123456789abcdef"), "192.0.2.1"),
                body.clone()
            )
            .unwrap_err(),
            AuthError::IpNotAllowed
        );
        assert_eq!(
            auth.verify(
                &presented(&headers, Some("0123456789abcdeX"), "10.1.2.3"),
                body.clone()
            )
            .unwrap_err(),
            AuthError::TokenMismatch
        );
        assert_eq!(
            auth.verify(&presented(&headers, None, "10.1.2.3"), body)
                .unwrap_err(),
            AuthError::TokenMissing
        );
    }

    #[test]
    fn hmac_and_basic_together_both_apply() {
        let auth = Authenticator::new(AuthMethods {
            basic: Some(BasicCredentials::new(
                "webhook-user",
                Secret::new("webhook-pass"),
            )),
            hmac: Some(HmacVerifier::new(
                SignatureScheme::HexBody {
                    header: "x-signature",
                },
                vec![Secret::new("k")],
                Duration::from_secs(300),
            )),
            ..Default::default()
        })
        .unwrap();
        let body = Bytes::from_static(b"{\"a\":1}");
        let mut headers = HeaderMap::new();
        headers.insert(
            "authorization",
            "Basic d2ViaG9vay11c2VyOndlYmhvb2stcGFzcw=="
                .parse()
                .unwrap(),
        );
        // Right Basic, no signature.
        assert_eq!(
            auth.verify(&presented(&headers, None, "127.0.0.1"), body.clone())
                .unwrap_err(),
            AuthError::SignatureMissing
        );
        let sig = auth.methods().hmac.as_ref().unwrap().sign(0, None, &body);
        headers.insert("x-signature", sig.parse().unwrap());
        assert!(auth
            .verify(&presented(&headers, None, "127.0.0.1"), body.clone())
            .is_ok());
        headers.remove("authorization");
        assert_eq!(
            auth.verify(&presented(&headers, None, "127.0.0.1"), body)
                .unwrap_err(),
            AuthError::BasicMissing
        );
    }

    #[test]
    fn equal_secrets_is_exact() {
        assert!(equal_secrets(b"abc", b"abc"));
        assert!(!equal_secrets(b"abc", b"abd"));
        assert!(!equal_secrets(b"abc", b"abcd"));
        assert!(!equal_secrets(b"", b"a"));
    }
}
