//! HTTP Basic, as sent by Strictly and optionally by USAePay.

use base64::Engine;
use hyper::header::AUTHORIZATION;
use hyper::HeaderMap;

use super::{equal_secrets, AuthError};
use crate::secret::Secret;

/// Expected Basic credentials; the user name is not secret but is still
/// compared in constant time so a probe cannot learn it byte by byte.
#[derive(Debug)]
pub struct BasicCredentials {
    username: String,
    password: Secret,
}

impl BasicCredentials {
    /// Credentials a request must present.
    pub fn new(username: &str, password: Secret) -> Self {
        Self {
            username: username.to_owned(),
            password,
        }
    }

    /// The header value a vendor would send, for `hookgate sign` and tests.
    pub fn header_value(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password.expose());
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }

    /// Checks `Authorization: Basic ...` against the configured pair.
    pub fn verify(&self, headers: &HeaderMap) -> Result<(), AuthError> {
        let (user, pass) = parse(headers).ok_or(AuthError::BasicMissing)?;
        // Both comparisons always run: no early exit tells which half was wrong.
        let user_ok = equal_secrets(&user, self.username.as_bytes());
        let pass_ok = equal_secrets(&pass, self.password.expose().as_bytes());
        if user_ok & pass_ok {
            Ok(())
        } else {
            Err(AuthError::BasicMismatch)
        }
    }
}

/// Splits a Basic header into user and password bytes; `None` when absent or malformed.
fn parse(headers: &HeaderMap) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None; // two Authorization headers: ambiguous, refuse
    }
    let value = value.to_str().ok()?.trim();
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    Some((decoded[..colon].to_vec(), decoded[colon + 1..].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, value.parse().unwrap());
        h
    }

    fn creds() -> BasicCredentials {
        BasicCredentials::new("webhook-user", Secret::new("webhook-pass"))
    }

    #[test]
    fn accepts_the_documented_vector() {
        // docs/vendors.md §5 vector 3: webhook-user:webhook-pass
        assert_eq!(
            creds().verify(&with("Basic d2ViaG9vay11c2VyOndlYmhvb2stcGFzcw==")),
            Ok(())
        );
        assert_eq!(
            creds().verify(&with("basic d2ViaG9vay11c2VyOndlYmhvb2stcGFzcw==")),
            Ok(())
        );
        assert_eq!(
            creds().header_value(),
            "Basic d2ViaG9vay11c2VyOndlYmhvb2stcGFzcw=="
        );
    }

    #[test]
    fn refuses_wrong_or_malformed_credentials() {
        // webhook-user:webhook-pasS
        assert_eq!(
            creds().verify(&with("Basic d2ViaG9vay11c2VyOndlYmhvb2stcGFzUw==")),
            Err(AuthError::BasicMismatch)
        );
        assert_eq!(
            creds().verify(&HeaderMap::new()),
            Err(AuthError::BasicMissing)
        );
        assert_eq!(
            creds().verify(&with("Bearer abc")),
            Err(AuthError::BasicMissing)
        );
        assert_eq!(
            creds().verify(&with("Basic !!!")),
            Err(AuthError::BasicMissing)
        );
        // "nocolon"
        assert_eq!(
            creds().verify(&with("Basic bm9jb2xvbg==")),
            Err(AuthError::BasicMissing)
        );
    }

    #[test]
    fn password_may_contain_colons() {
        let c = BasicCredentials::new("u", Secret::new("p:a:ss"));
        assert_eq!(c.verify(&with(&c.header_value())), Ok(()));
    }
}
