//! `Authorization: Basic` parsing on arbitrary header bytes: never panics, and
//! only the configured pair, in exactly one header, is ever accepted.
#![no_main]

use hookgate::auth::{AuthError, BasicCredentials};
use hookgate::secret::Secret;
use hyper::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let creds = BasicCredentials::new("webhook-user", Secret::new("webhook-pass"));
    // NUL separates several Authorization headers (NUL is never valid in one).
    let mut headers = HeaderMap::new();
    for part in data.split(|&b| b == 0) {
        let Ok(value) = HeaderValue::from_bytes(part) else {
            return;
        };
        headers.append(AUTHORIZATION, value);
    }
    match creds.verify(&headers) {
        Ok(()) => {
            let values: Vec<_> = headers.get_all(AUTHORIZATION).iter().collect();
            assert_eq!(
                values.len(),
                1,
                "accepted with several Authorization headers"
            );
            let text = values[0]
                .to_str()
                .expect("accepted header is visible ASCII");
            let (scheme, rest) = text.trim().split_once(' ').expect("scheme and credentials");
            assert!(scheme.eq_ignore_ascii_case("basic"));
            let decoded = {
                use base64_check::decode;
                decode(rest.trim())
            };
            assert_eq!(decoded.as_deref(), Some(&b"webhook-user:webhook-pass"[..]));
        }
        Err(AuthError::BasicMissing | AuthError::BasicMismatch) => {}
        Err(other) => panic!("Basic check returned a non-Basic error: {other:?}"),
    }
});

/// A tiny independent base64 decoder (standard alphabet, padding required),
/// so the oracle does not share code with the implementation under test.
mod base64_check {
    pub fn decode(text: &str) -> Option<Vec<u8>> {
        let bytes = text.as_bytes();
        if bytes.len() % 4 != 0 {
            return None;
        }
        let val = |c: u8| -> Option<u32> {
            Some(match c {
                b'A'..=b'Z' => c - b'A',
                b'a'..=b'z' => c - b'a' + 26,
                b'0'..=b'9' => c - b'0' + 52,
                b'+' => 62,
                b'/' => 63,
                _ => return None,
            } as u32)
        };
        let mut out = Vec::new();
        for (i, chunk) in bytes.chunks(4).enumerate() {
            let last = i == bytes.len() / 4 - 1;
            let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
            if pad > 2 || (pad > 0 && !last) {
                return None;
            }
            let mut n = 0u32;
            for &c in &chunk[..4 - pad] {
                n = (n << 6) | val(c)?;
            }
            n <<= 6 * pad as u32;
            let got = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
            out.extend_from_slice(&got[..3 - pad]);
        }
        Some(out)
    }
}
