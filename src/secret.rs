//! A string that must never be printed.
//!
//! Every credential hookgate holds (Basic passwords, HMAC keys, URL tokens,
//! broker URLs with passwords) lives in a [`Secret`]. Its `Debug` and
//! `Display` print `[redacted]`, so a `{:?}` of a config struct or an error
//! cannot leak it into a log line. The bytes are reachable only through
//! [`Secret::expose`], which is called where a secret is compared or sent.

use std::fmt;

/// A credential whose text is hidden from every formatter.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a credential; the caller gives up the plain `String`.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The raw bytes, for constant-time comparison or keying a MAC only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatters_never_show_the_value() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret}"), "[redacted]");
        assert_eq!(format!("{secret:?}"), "[redacted]");
        assert_eq!(format!("{:?}", Some(&secret)), "Some([redacted])");
        assert_eq!(secret.expose(), "hunter2");
    }
}
