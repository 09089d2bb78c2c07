//! Standard Webhooks signatures (standardwebhooks.com; what Svix and every
//! sender built on it use), an authentication method any source may list.
//!
//! The sender sends three headers, `webhook-id`, `webhook-timestamp` (unix
//! seconds) and `webhook-signature`, or the same with the `svix-` prefix.
//! The signed content is `{id}.{timestamp}.{raw body}`, HMAC-SHA256 under the
//! secret's bytes (the base64 after `whsec_`). The signature header is a
//! space-separated list of `v1,<base64>` entries; any entry may match any
//! configured key, so both sides can rotate keys. A timestamp further than
//! the tolerance from now, in either direction, is refused (replays and
//! clocks far off), as is an id containing `.` (it would make the signed
//! content ambiguous). Asymmetric `v1a` signatures are not supported, and a
//! header carrying only those is refused saying so.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use hmac::{Hmac, Mac};
use hyper::header::HeaderName;
use hyper::HeaderMap;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::AuthError;
use crate::secret::Secret;

type HmacSha256 = Hmac<Sha256>;

/// The prefix Standard Webhooks secrets are written with.
pub const SECRET_PREFIX: &str = "whsec_";

/// Longest `webhook-id` read; ids are short (`msg_…`), so a long one is not one.
const MAX_ID_LEN: usize = 256;

/// Most signature entries read from one header: a sender rotating keys sends
/// two or three; a header with hundreds is an attempt to cost us CPU.
const MAX_ENTRIES: usize = 16;

/// The two header spellings: the spec's and Svix's original one.
const HEADER_SETS: [[&str; 3]; 2] = [
    ["webhook-id", "webhook-timestamp", "webhook-signature"],
    ["svix-id", "svix-timestamp", "svix-signature"],
];

/// The `svix-` spelling of a Standard Webhooks header (`webhook-id` →
/// `svix-id`), from the same table the check reads, for other code that
/// reads these headers.
pub fn svix_name(name: &str) -> Option<HeaderName> {
    let [spec, svix] = HEADER_SETS;
    let at = spec.iter().position(|n| *n == name)?;
    Some(HeaderName::from_static(svix[at]))
}

/// A configured secret that is not a Standard Webhooks secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not base64 (after an optional `whsec_`).
    #[error("is not base64 after `whsec_`")]
    NotBase64,
    /// Shorter than 16 bytes once decoded: too weak to be a real secret.
    #[error("decodes to {0} bytes; Standard Webhooks secrets are 24 to 64")]
    TooShort(usize),
}

/// A source's Standard Webhooks check: keys and timestamp tolerance.
pub struct StandardWebhooks {
    /// One keyed MAC per configured secret.
    macs: Vec<HmacSha256>,
    tolerance: Duration,
}

impl std::fmt::Debug for StandardWebhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StandardWebhooks")
            .field("keys", &self.macs.len())
            .field("tolerance", &self.tolerance)
            .finish()
    }
}

/// The three headers of one request, as sent.
#[derive(Debug, Clone, Copy)]
pub struct Signed<'h> {
    /// `webhook-id`: the sender's message id, the same on every retry.
    pub id: &'h str,
    /// `webhook-timestamp`, as sent.
    pub timestamp: &'h str,
    /// `webhook-signature`, as sent.
    pub signature: &'h str,
}

impl StandardWebhooks {
    /// A verifier accepting a signature made with any of `keys` (`whsec_…`).
    pub fn new(keys: &[Secret], tolerance: Duration) -> Result<Self, (usize, KeyError)> {
        let engine = base64::engine::general_purpose::STANDARD;
        let mut macs = Vec::with_capacity(keys.len());
        for (i, key) in keys.iter().enumerate() {
            let text = key.expose();
            let text = text.strip_prefix(SECRET_PREFIX).unwrap_or(text);
            let bytes = engine
                .decode(text.trim())
                .map_err(|_| (i, KeyError::NotBase64))?;
            if bytes.len() < 16 {
                return Err((i, KeyError::TooShort(bytes.len())));
            }
            macs.push(HmacSha256::new_from_slice(&bytes).expect("HMAC accepts any key length"));
        }
        Ok(Self { macs, tolerance })
    }

    /// The three headers, from one spelling (`webhook-` first, else `svix-`),
    /// each exactly once and text; an id with `.` in it is refused. Needs no
    /// body, so the handler runs it before reading one.
    pub fn headers<'h>(&self, headers: &'h HeaderMap) -> Result<Signed<'h>, AuthError> {
        let one = |name: &str| -> Result<Option<&'h str>, AuthError> {
            let mut values = headers.get_all(name).iter();
            let Some(value) = values.next() else {
                return Ok(None);
            };
            if values.next().is_some() {
                return Err(AuthError::WebhookMalformed);
            }
            value
                .to_str()
                .map(Some)
                .map_err(|_| AuthError::WebhookMalformed)
        };
        for [id, timestamp, signature] in HEADER_SETS {
            let Some(id) = one(id)? else { continue };
            let (Some(timestamp), Some(signature)) = (one(timestamp)?, one(signature)?) else {
                return Err(AuthError::WebhookHeadersMissing);
            };
            let id = id.trim();
            if id.is_empty() || id.len() > MAX_ID_LEN {
                return Err(AuthError::WebhookMalformed);
            }
            if id.contains('.') {
                return Err(AuthError::WebhookIdInvalid);
            }
            return Ok(Signed {
                id,
                timestamp: timestamp.trim(),
                signature,
            });
        }
        Err(AuthError::WebhookHeadersMissing)
    }

    /// Checks the request's headers and signature over the exact body.
    pub fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> Result<(), AuthError> {
        let signed = self.headers(headers)?;
        let timestamp = seconds(signed.timestamp)?;
        let sent = UNIX_EPOCH + Duration::from_secs(timestamp);
        let skew = super::clock_distance(now, sent);
        // The cheap check first: a stale or future-dated request costs no MAC.
        if skew > self.tolerance {
            return Err(AuthError::WebhookTimestampOutsideTolerance);
        }
        let candidates = v1_signatures(signed.signature)?;
        let mut matched = false;
        for mac in &self.macs {
            let mut mac = mac.clone();
            mac.update(signed.id.as_bytes());
            mac.update(b".");
            mac.update(signed.timestamp.as_bytes());
            mac.update(b".");
            mac.update(body);
            let expected = mac.finalize().into_bytes();
            // Every candidate against every key, whatever matched first, so
            // the time taken does not say which.
            for candidate in &candidates {
                matched |= bool::from(expected.as_slice().ct_eq(candidate.as_slice()));
            }
        }
        if matched {
            Ok(())
        } else {
            Err(AuthError::WebhookMismatch)
        }
    }

    /// The `webhook-signature` value a sender would send for this message
    /// with key number `key_index` (for `hookgate sign` and tests).
    pub fn sign(&self, key_index: usize, id: &str, timestamp: u64, body: &[u8]) -> String {
        let mut mac = self.macs[key_index].clone();
        mac.update(format!("{id}.{timestamp}.").as_bytes());
        mac.update(body);
        let engine = base64::engine::general_purpose::STANDARD;
        format!("v1,{}", engine.encode(mac.finalize().into_bytes()))
    }
}

/// Unix seconds, digits only.
fn seconds(text: &str) -> Result<u64, AuthError> {
    if text.is_empty() || text.len() > 12 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AuthError::WebhookMalformed);
    }
    text.parse().map_err(|_| AuthError::WebhookMalformed)
}

/// The decoded `v1` entries of a signature header. Entries of other
/// versions are skipped; a header with only `v1a` entries is refused as
/// unsupported, one with no readable entry as malformed.
fn v1_signatures(header: &str) -> Result<Vec<Vec<u8>>, AuthError> {
    let engine = base64::engine::general_purpose::STANDARD;
    let mut found = Vec::new();
    let mut asymmetric = false;
    for (n, entry) in header.split_ascii_whitespace().enumerate() {
        if n >= MAX_ENTRIES {
            return Err(AuthError::WebhookMalformed);
        }
        match entry.split_once(',') {
            Some(("v1", signature)) => {
                if let Ok(bytes) = engine.decode(signature) {
                    if bytes.len() == 32 {
                        found.push(bytes);
                    }
                }
            }
            Some(("v1a", _)) => asymmetric = true,
            _ => {}
        }
    }
    match (found.is_empty(), asymmetric) {
        (false, _) => Ok(found),
        (true, true) => Err(AuthError::WebhookAsymmetricUnsupported),
        (true, false) => Err(AuthError::WebhookMalformed),
    }
}

#[cfg(test)]
mod tests;
