//! Where RabbitMQ is and how to reach it: the configured endpoints (one node
//! or every node of a cluster), `amqps` trust, and opening one connection.
//!
//! lapin takes one URI per connection and, with auto-recovery on, reconnects
//! to that same URI forever. hookgate keeps lapin's recovery off and rotates
//! endpoints in its own connection supervisor ([`crate::publish`]): each
//! attempt opens a fresh [`Connection`] to one [`Endpoint`], and a failed
//! attempt or a lost connection moves to the next. That keeps every endpoint's
//! own credentials and vhost in force (lapin's connector hook would reuse the
//! first URI's for every node) and keeps one place that decides what a lost
//! link means for in-flight confirms: they are never replayed by the client
//! library behind the gateway's back, but spooled and drained.
//!
//! TLS is lapin's rustls support on the ring provider, like the listener.
//! Without `broker.ca_file` an `amqps://` broker must present a certificate
//! from the Mozilla root set compiled in (webpki-root-certs, the same set the
//! vendor look-up client trusts); with it, the file's certificates are trusted
//! too, which is how a private CA is added. The server name checked is the
//! URL's host. rustls speaks only TLS 1.2 and 1.3.

use std::fmt;

use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::uri::{AMQPScheme, AMQPUri};
use lapin::{Connection, ConnectionProperties};

use crate::secret::Secret;

/// One broker node: its URL (a secret, as it carries the password) and a
/// `host:port` name that is safe for logs and metric labels.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The full `amqp://` or `amqps://` URL.
    pub url: Secret,
    /// `host:port`, never the credentials.
    pub name: String,
    /// Whether the URL is `amqps://`.
    pub tls: bool,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl Endpoint {
    /// Parses a broker URL; the error never repeats the URL (it holds a
    /// password), only what is wrong with it.
    pub fn parse(url: &str) -> Result<Self, String> {
        if !(url.starts_with("amqp://") || url.starts_with("amqps://")) {
            return Err("must start with amqp:// or amqps://".to_owned());
        }
        let parsed: AMQPUri = url.parse().map_err(|_| {
            "is not a valid AMQP URL (amqp://user:pass@host:port/vhost, vhost `/` written %2f)"
                .to_owned()
        })?;
        let host = &parsed.authority.host;
        if host.is_empty() {
            return Err("names no host".to_owned());
        }
        let name = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{}", parsed.authority.port)
        } else {
            format!("{host}:{}", parsed.authority.port)
        };
        Ok(Self {
            url: Secret::new(url),
            name,
            tls: parsed.scheme == AMQPScheme::AMQPS,
        })
    }
}

/// A client certificate and its key, for brokers that authenticate clients
/// by certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// PEM certificate chain.
    pub cert_pem: String,
    /// PEM private key.
    pub key_pem: Secret,
}

/// What `amqps://` connections trust and present; read from files at load.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BrokerTls {
    /// Extra trusted CAs (PEM), from `broker.ca_file`.
    pub ca_pem: Option<String>,
    /// From `broker.client_cert` and `broker.client_key`.
    pub client: Option<ClientIdentity>,
}

impl BrokerTls {
    fn lapin_config(&self) -> OwnedTLSConfig {
        OwnedTLSConfig {
            identity: self.client.as_ref().map(|c| OwnedIdentity::PKCS8 {
                pem: c.cert_pem.as_bytes().to_vec(),
                key: c.key_pem.expose().as_bytes().to_vec(),
            }),
            cert_chain: self.ca_pem.clone(),
        }
    }
}

/// Opens one AMQP connection to `endpoint`, named `name` in the broker's
/// connection list. No deadline here: the caller bounds the attempt.
pub async fn open(
    endpoint: &Endpoint,
    tls: &BrokerTls,
    name: &str,
) -> Result<Connection, lapin::Error> {
    let props = ConnectionProperties::default().with_connection_name(name.into());
    let runtime = lapin::runtime::default_runtime()?;
    Connection::connect_with_config(endpoint.url.expose(), props, tls.lapin_config(), runtime).await
}

/// Opens a connection to the first endpoint that answers, in the configured
/// order; for one-shot commands that need a plain connection. The error is
/// the last endpoint's.
pub async fn open_any(
    endpoints: &[Endpoint],
    tls: &BrokerTls,
    name: &str,
) -> Result<Connection, lapin::Error> {
    let mut last = None;
    for endpoint in endpoints {
        match open(endpoint, tls, name).await {
            Ok(connection) => return Ok(connection),
            Err(error) => {
                tracing::warn!(endpoint = %endpoint.name, error = %error, "Cannot connect to the broker; trying the next endpoint.");
                last = Some(error);
            }
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no broker endpoint configured",
        )
        .into()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_host_and_port_without_credentials() {
        let e = Endpoint::parse("amqp://user:hunter2@rabbit-1:5673/%2f").unwrap();
        assert_eq!(e.name, "rabbit-1:5673");
        assert!(!e.tls);
        assert_eq!(format!("{e:?}"), "rabbit-1:5673");
        let e = Endpoint::parse("amqps://user:hunter2@broker.example.com/prod").unwrap();
        assert_eq!(e.name, "broker.example.com:5671");
        assert!(e.tls);
    }

    #[test]
    fn a_bad_url_is_refused_without_repeating_it() {
        for url in [
            "http://user:hunter2@rabbit:5672/",
            "amqp://user:hunter2@rabbit:notaport/",
        ] {
            let error = Endpoint::parse(url).unwrap_err();
            assert!(!error.contains("hunter2"), "{error}");
        }
    }
}
