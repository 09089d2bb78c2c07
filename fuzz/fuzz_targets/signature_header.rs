//! HMAC signature headers, both schemes, on arbitrary header values, bodies
//! and clocks: never panics; a forged or malformed header is never accepted;
//! a genuine one is never refused.
//!
//! Input: byte 0 = mode, bytes 1..9 = "now" (unix seconds, bounded), then the
//! header value and the body separated by the first NUL.
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use hookgate::auth::{AuthError, HmacVerifier, SignatureScheme};
use hookgate::secret::Secret;
use hyper::header::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;

const HEX: SignatureScheme = SignatureScheme::HexBody {
    header: "x-signature",
};
const STAMPED: SignatureScheme = SignatureScheme::TimestampedHex {
    header: "nexio-signature",
};

fn verifier(scheme: SignatureScheme, keys: &[&str]) -> HmacVerifier {
    HmacVerifier::new(
        scheme,
        keys.iter().map(|k| Secret::new(*k)).collect(),
        Duration::from_secs(300),
    )
}

fn headers(scheme: SignatureScheme, value: HeaderValue) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(scheme.header(), value);
    h
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 9 {
        return;
    }
    let mode = data[0];
    let secs = u64::from_le_bytes(data[1..9].try_into().unwrap()) % (1 << 36);
    let now = UNIX_EPOCH + Duration::from_secs(secs);
    let rest = &data[9..];
    let (header, body) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let ours = ["key-one", "key-two"];
    for scheme in [HEX, STAMPED] {
        let right = verifier(scheme, &ours);
        let other = verifier(scheme, &["someone-elses-key"]);
        match mode % 3 {
            // Arbitrary header value: must never verify (no key was used).
            0 => {
                let Ok(value) = HeaderValue::from_bytes(header) else {
                    continue;
                };
                let result = right.verify(&headers(scheme, value), body, now);
                assert!(result.is_err(), "{scheme:?} accepted an arbitrary header");
            }
            // A genuine signature at "now": accepted by the right keys, refused by another.
            1 => {
                let key = usize::from(mode / 3 % 2);
                let value = right.sign(key, Some(secs), body);
                let h = headers(scheme, HeaderValue::from_str(&value).unwrap());
                assert_eq!(right.verify(&h, body, now), Ok(()), "genuine refused");
                assert_eq!(
                    other.verify(&h, body, now),
                    Err(AuthError::SignatureMismatch),
                    "another key accepted"
                );
                // The same header over a different body fails.
                let mut changed = body.to_vec();
                changed.push(mode);
                assert!(right.verify(&h, &changed, now).is_err(), "body not covered");
            }
            // A genuine signature with fuzz bytes appended: parsing the
            // suffix must not panic, and a changed signature never verifies.
            _ => {
                let value = right.sign(0, Some(secs), body);
                let mut bytes = value.into_bytes();
                bytes.extend_from_slice(header);
                let Ok(value) = HeaderValue::from_bytes(&bytes) else {
                    continue;
                };
                let result = right.verify(&headers(scheme, value), body, now);
                if scheme == HEX && !header.iter().all(u8::is_ascii_whitespace) {
                    assert!(result.is_err(), "a hex signature with a suffix verified");
                }
            }
        }
    }
});
