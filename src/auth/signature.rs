//! HMAC-SHA256 signatures over the exact raw body.
//!
//! The vendor module names the scheme (which header, which bytes are signed);
//! the keys come from the source's config. Verification runs before any JSON
//! parsing, on the bytes as received, and uses `Mac::verify_slice`, which is
//! constant-time. Several keys may be configured so a key can be rotated
//! without downtime: the new one is added, the vendor is switched, the old one
//! is removed.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use hyper::HeaderMap;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::AuthError;
use crate::secret::Secret;

type HmacSha256 = Hmac<Sha256>;

/// Where a vendor puts its signature and what it signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureScheme {
    /// `header: hex(HMAC(key, body))`, no timestamp (USAePay `X-Signature`).
    HexBody {
        /// Lowercase header name.
        header: &'static str,
    },
    /// `header: t=<unix seconds>,v1=<hex>` over `t + "." + body`
    /// (Nexio legacy `Nexio-signature`); `t` must be within the tolerance.
    TimestampedHex {
        /// Lowercase header name.
        header: &'static str,
    },
}

impl SignatureScheme {
    /// The header that carries the signature.
    pub fn header(&self) -> &'static str {
        match self {
            Self::HexBody { header } | Self::TimestampedHex { header } => header,
        }
    }
}

/// A source's signature check: scheme, keys, and replay tolerance.
pub struct HmacVerifier {
    scheme: SignatureScheme,
    keys: Vec<Secret>,
    /// One keyed MAC per key, built once so each request only clones state.
    macs: Vec<HmacSha256>,
    tolerance: Duration,
}

impl std::fmt::Debug for HmacVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HmacVerifier")
            .field("scheme", &self.scheme)
            .field("keys", &self.keys)
            .field("tolerance", &self.tolerance)
            .finish()
    }
}

impl HmacVerifier {
    /// A verifier accepting a signature made with any of `keys`.
    pub fn new(scheme: SignatureScheme, keys: Vec<Secret>, tolerance: Duration) -> Self {
        let macs = keys
            .iter()
            .map(|k| {
                HmacSha256::new_from_slice(k.expose().as_bytes())
                    .expect("HMAC accepts keys of any length")
            })
            .collect();
        Self {
            scheme,
            keys,
            macs,
            tolerance,
        }
    }

    /// The scheme this source's vendor uses.
    pub fn scheme(&self) -> SignatureScheme {
        self.scheme
    }

    /// The one signature header's value: missing, repeated or not text is
    /// refused without looking at the body.
    pub fn header_value<'h>(&self, headers: &'h HeaderMap) -> Result<&'h str, AuthError> {
        let mut values = headers.get_all(self.scheme.header()).iter();
        let value = values.next().ok_or(AuthError::SignatureMissing)?;
        if values.next().is_some() {
            return Err(AuthError::SignatureMalformed);
        }
        value.to_str().map_err(|_| AuthError::SignatureMalformed)
    }

    /// Checks the request's signature header against every key.
    pub fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> Result<(), AuthError> {
        let value = self.header_value(headers)?;
        match self.scheme {
            SignatureScheme::HexBody { .. } => {
                let signature = decode_hex(value.trim())?;
                self.check(&[body], &signature)
            }
            SignatureScheme::TimestampedHex { .. } => {
                let (timestamp, signatures) = parse_timestamped(value)?;
                let signed_at = UNIX_EPOCH + Duration::from_secs(timestamp_secs(timestamp)?);
                let skew = super::clock_distance(now, signed_at);
                // The MAC is checked first so that a stale but genuine request is
                // told apart from a forgery in logs and metrics.
                // One MAC per key over the body, compared with every
                // candidate: a header with many `v1=` parts costs comparisons,
                // not full-body MACs.
                let prefix = format!("{timestamp}.");
                let expected = self.macs_of(&[prefix.as_bytes(), body]);
                let mut matched = false;
                for signature in &signatures {
                    for mac in &expected {
                        matched |= bool::from(mac.as_slice().ct_eq(signature.as_slice()));
                    }
                }
                if !matched {
                    return Err(AuthError::SignatureMismatch);
                }
                if skew > self.tolerance {
                    return Err(AuthError::SignatureExpired);
                }
                Ok(())
            }
        }
    }

    /// The MAC of `parts` under every key.
    fn macs_of(&self, parts: &[&[u8]]) -> Vec<Vec<u8>> {
        self.macs
            .iter()
            .map(|mac| {
                let mut mac = mac.clone();
                for part in parts {
                    mac.update(part);
                }
                mac.finalize().into_bytes().to_vec()
            })
            .collect()
    }

    fn check(&self, parts: &[&[u8]], signature: &[u8]) -> Result<(), AuthError> {
        let mut ok = false;
        for mac in &self.macs {
            let mut mac = mac.clone();
            for part in parts {
                mac.update(part);
            }
            // verify_slice is constant-time; every key is tried so timing does
            // not reveal which one matched.
            ok |= mac.verify_slice(signature).is_ok();
        }
        if ok {
            Ok(())
        } else {
            Err(AuthError::SignatureMismatch)
        }
    }

    /// The header value the vendor would send for `body` with key number
    /// `key_index`; `timestamp` is used by timestamped schemes (default: now).
    pub fn sign(&self, key_index: usize, timestamp: Option<u64>, body: &[u8]) -> String {
        let mut mac = self.macs[key_index].clone();
        match self.scheme {
            SignatureScheme::HexBody { .. } => {
                mac.update(body);
                hex::encode(mac.finalize().into_bytes())
            }
            SignatureScheme::TimestampedHex { .. } => {
                let t = timestamp.unwrap_or_else(|| {
                    SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or(0)
                });
                mac.update(format!("{t}.").as_bytes());
                mac.update(body);
                format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
            }
        }
    }
}

/// Decodes a hex signature (either case); a SHA-256 MAC is exactly 32 bytes.
fn decode_hex(value: &str) -> Result<Vec<u8>, AuthError> {
    if value.len() != 64 {
        return Err(AuthError::SignatureMalformed);
    }
    hex::decode(value).map_err(|_| AuthError::SignatureMalformed)
}

fn timestamp_secs(t: &str) -> Result<u64, AuthError> {
    if t.is_empty() || t.len() > 12 || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AuthError::SignatureMalformed);
    }
    t.parse().map_err(|_| AuthError::SignatureMalformed)
}

/// Parses `t=..,v1=..[,v1=..]`. Nexio's prose says `s=` where its example
/// says `v1=`, so both are read.
fn parse_timestamped(value: &str) -> Result<(&str, Vec<Vec<u8>>), AuthError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in value.split(',') {
        let (k, v) = part
            .trim()
            .split_once('=')
            .ok_or(AuthError::SignatureMalformed)?;
        match k.trim() {
            "t" if timestamp.is_none() => timestamp = Some(v.trim()),
            "t" => return Err(AuthError::SignatureMalformed),
            "v1" | "s" => signatures.push(decode_hex(v.trim())?),
            _ => {} // unknown fields are ignored, as with other t=/v1= schemes
        }
    }
    let timestamp = timestamp.ok_or(AuthError::SignatureMalformed)?;
    if signatures.is_empty() || signatures.len() > 8 {
        return Err(AuthError::SignatureMalformed);
    }
    Ok((timestamp, signatures))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/vendors.md §5, vector 1 (self-computed from USAePay's documented algorithm).
    const USAEPAY_BODY: &str = r#"{"type":"event","event_triggered":"2021-04-07 15:14:26","event_type":"transaction.sale.success","event_body":{"merchant":{"merch_key":"7qwnw4j2kmqvrb3"},"object":{"type":"transaction","key":"1nftvzx7xtcggm3","amount_detail":{"amount":"5.00"},"authcode":"538228"}},"event_id":"c088bc2884a2c3b4043991b04d96ceda7c65043778233dedb26bfd5853705dfd"}"#;
    const USAEPAY_SIG: &str = "7d8e06674339e407b817d9ceb283342b0d6d38e730dea28b05232db532f92896";

    /// docs/vendors.md §5, vector 2 (Nexio legacy).
    const NEXIO_BODY: &str =
        r#"{"eventType":"TRANSACTION_AUTHORIZED","data":{"id":"example","merchantId":"100039"}}"#;
    const NEXIO_HEADER: &str =
        "t=1554146049,v1=0bbe4ef0873c090e1e7b377a58eb9a7f4a0e47dfcb4529306b853e5011a7210f";

    fn usaepay(keys: &[&str]) -> HmacVerifier {
        HmacVerifier::new(
            SignatureScheme::HexBody {
                header: "x-signature",
            },
            keys.iter().map(|k| Secret::new(*k)).collect(),
            Duration::from_secs(300),
        )
    }

    fn nexio(tolerance: u64) -> HmacVerifier {
        HmacVerifier::new(
            SignatureScheme::TimestampedHex {
                header: "nexio-signature",
            },
            vec![Secret::new("example-nexio-webhook-secret")],
            Duration::from_secs(tolerance),
        )
    }

    fn header(name: &'static str, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, value.parse().unwrap());
        h
    }

    #[test]
    fn usaepay_vector_verifies() {
        let v = usaepay(&["example-signature-key"]);
        let h = header("x-signature", USAEPAY_SIG);
        assert_eq!(
            v.verify(&h, USAEPAY_BODY.as_bytes(), SystemTime::now()),
            Ok(())
        );
        assert_eq!(v.sign(0, None, USAEPAY_BODY.as_bytes()), USAEPAY_SIG);
        // Upper-case hex is the same signature.
        let h = header("x-signature", &USAEPAY_SIG.to_uppercase());
        assert_eq!(
            v.verify(&h, USAEPAY_BODY.as_bytes(), SystemTime::now()),
            Ok(())
        );
    }

    #[test]
    fn usaepay_vector_fails_on_any_change() {
        let v = usaepay(&["example-signature-key"]);
        let h = header("x-signature", USAEPAY_SIG);
        let mut body = USAEPAY_BODY.as_bytes().to_vec();
        body.push(b'\n');
        assert_eq!(
            v.verify(&h, &body, SystemTime::now()),
            Err(AuthError::SignatureMismatch)
        );
        let wrong_key = usaepay(&["example-signature-kez"]);
        assert_eq!(
            wrong_key.verify(&h, USAEPAY_BODY.as_bytes(), SystemTime::now()),
            Err(AuthError::SignatureMismatch)
        );
        // Re-serialized JSON (pretty-printed) is different bytes, so it fails.
        let reserialized = serde_json::to_vec_pretty(
            &serde_json::from_str::<serde_json::Value>(USAEPAY_BODY).unwrap(),
        )
        .unwrap();
        assert_eq!(
            v.verify(&h, &reserialized, SystemTime::now()),
            Err(AuthError::SignatureMismatch)
        );
    }

    #[test]
    fn any_listed_key_verifies_during_rotation() {
        let v = usaepay(&["old-key", "example-signature-key"]);
        let h = header("x-signature", USAEPAY_SIG);
        assert_eq!(
            v.verify(&h, USAEPAY_BODY.as_bytes(), SystemTime::now()),
            Ok(())
        );
    }

    #[test]
    fn malformed_and_missing_headers_are_told_apart() {
        let v = usaepay(&["k"]);
        let now = SystemTime::now();
        assert_eq!(
            v.verify(&HeaderMap::new(), b"{}", now),
            Err(AuthError::SignatureMissing)
        );
        assert_eq!(
            v.verify(&header("x-signature", "zz"), b"{}", now),
            Err(AuthError::SignatureMalformed)
        );
        assert_eq!(
            v.verify(&header("x-signature", &"g".repeat(64)), b"{}", now),
            Err(AuthError::SignatureMalformed)
        );
    }

    #[test]
    fn nexio_vector_verifies_within_tolerance_only() {
        let signed_at = UNIX_EPOCH + Duration::from_secs(1_554_146_049);
        let h = header("nexio-signature", NEXIO_HEADER);
        let v = nexio(300);
        assert_eq!(
            v.verify(
                &h,
                NEXIO_BODY.as_bytes(),
                signed_at + Duration::from_secs(299)
            ),
            Ok(())
        );
        assert_eq!(
            v.verify(
                &h,
                NEXIO_BODY.as_bytes(),
                signed_at - Duration::from_secs(299)
            ),
            Ok(())
        );
        assert_eq!(
            v.verify(
                &h,
                NEXIO_BODY.as_bytes(),
                signed_at + Duration::from_secs(301)
            ),
            Err(AuthError::SignatureExpired)
        );
        assert_eq!(
            v.sign(0, Some(1_554_146_049), NEXIO_BODY.as_bytes()),
            NEXIO_HEADER
        );
    }

    #[test]
    fn nexio_timestamp_is_part_of_the_signed_bytes() {
        let signed_at = UNIX_EPOCH + Duration::from_secs(1_554_146_050);
        let moved = NEXIO_HEADER.replace("t=1554146049", "t=1554146050");
        let h = header("nexio-signature", &moved);
        assert_eq!(
            nexio(300).verify(&h, NEXIO_BODY.as_bytes(), signed_at),
            Err(AuthError::SignatureMismatch)
        );
    }

    #[test]
    fn nexio_accepts_the_s_spelling_and_rejects_garbage() {
        let signed_at = UNIX_EPOCH + Duration::from_secs(1_554_146_049);
        let s = NEXIO_HEADER.replace("v1=", "s=");
        assert_eq!(
            nexio(300).verify(
                &header("nexio-signature", &s),
                NEXIO_BODY.as_bytes(),
                signed_at
            ),
            Ok(())
        );
        for bad in ["v1=00", "t=abc,v1=00", "t=1,t=2,v1=00", "garbage"] {
            assert_eq!(
                nexio(300).verify(
                    &header("nexio-signature", bad),
                    NEXIO_BODY.as_bytes(),
                    signed_at
                ),
                Err(AuthError::SignatureMalformed),
                "{bad}"
            );
        }
    }

    #[test]
    fn any_of_several_v1_candidates_may_match_and_none_of_them_is_enough_alone() {
        let signed_at = UNIX_EPOCH + Duration::from_secs(1_554_146_049);
        let genuine = NEXIO_HEADER.split_once("v1=").unwrap().1;
        let decoys = (0..7).map(|i| format!("v1={}", format!("{i:x}").repeat(64)));
        let with_genuine_last = format!(
            "t=1554146049,{},v1={genuine}",
            decoys.clone().collect::<Vec<_>>().join(",")
        );
        assert_eq!(
            nexio(300).verify(
                &header("nexio-signature", &with_genuine_last),
                NEXIO_BODY.as_bytes(),
                signed_at
            ),
            Ok(())
        );
        let only_decoys = format!("t=1554146049,{}", decoys.collect::<Vec<_>>().join(","));
        assert_eq!(
            nexio(300).verify(
                &header("nexio-signature", &only_decoys),
                NEXIO_BODY.as_bytes(),
                signed_at
            ),
            Err(AuthError::SignatureMismatch)
        );
    }
}
