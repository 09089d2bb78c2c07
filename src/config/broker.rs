//! Building `[broker]` (one node or a cluster, amqps trust) and
//! `[archive]`, each problem reported with the key it is about.

use super::*;

/// `[archive]`: the stream's name and RabbitMQ's retention, checked here so
/// a typo fails at start rather than as a refused declaration.
pub(super) fn build_archive(b: &mut Builder, raw: &RawArchive) -> Option<ArchiveSettings> {
    let stream = raw
        .stream
        .clone()
        .unwrap_or_else(|| DEFAULT_ARCHIVE_STREAM.to_owned());
    if stream.is_empty() || stream.len() > 255 || stream.starts_with("amq.") {
        b.error(
            "archive.stream",
            "must be 1 to 255 bytes and not start with `amq.`",
        );
    }
    let max_age = raw
        .max_age
        .clone()
        .unwrap_or_else(|| DEFAULT_ARCHIVE_MAX_AGE.to_owned());
    let (digits, unit) = max_age.split_at(max_age.len().saturating_sub(1));
    if digits.is_empty()
        || !digits.bytes().all(|c| c.is_ascii_digit())
        || !matches!(unit, "Y" | "M" | "D" | "h" | "m" | "s")
    {
        b.error(
            "archive.max_age",
            format!(
                "`{max_age}` is not a RabbitMQ age: a number and one of Y, M, D, h, m, s (`7D`)"
            ),
        );
    }
    if raw.max_bytes == Some(0) {
        b.error("archive.max_bytes", "must be greater than 0");
    }
    Some(ArchiveSettings {
        stream,
        max_age,
        max_bytes: raw.max_bytes,
    })
}

pub(super) fn build_broker(b: &mut Builder, raw: &RawBroker) -> BrokerSettings {
    let listed: Vec<(String, &String)> = match (&raw.url, &raw.urls) {
        (Some(_), Some(_)) => {
            b.error(
                "broker.urls",
                "set either broker.url (one node) or broker.urls (a cluster), not both",
            );
            Vec::new()
        }
        (Some(url), None) => vec![("broker.url".to_owned(), url)],
        (None, Some(urls)) if urls.is_empty() => {
            b.error(
                "broker.urls",
                "must list at least one amqp:// or amqps:// URL",
            );
            Vec::new()
        }
        (None, Some(urls)) => urls
            .iter()
            .enumerate()
            .map(|(i, u)| (format!("broker.urls[{i}]"), u))
            .collect(),
        (None, None) => {
            b.error(
                "broker.url",
                "missing: set broker.url, or broker.urls for a cluster",
            );
            Vec::new()
        }
    };
    let mut endpoints = Vec::with_capacity(listed.len());
    for (key, raw_url) in listed {
        let url = b.expand(&key, raw_url);
        match crate::broker::Endpoint::parse(&url) {
            Ok(endpoint) => endpoints.push(endpoint),
            Err(reason) => b.error(&key, reason),
        }
    }
    let tls = build_broker_tls(b, raw);
    if (tls.ca_pem.is_some() || tls.client.is_some())
        && !endpoints.is_empty()
        && !endpoints.iter().any(|e| e.tls)
    {
        let key = if tls.ca_pem.is_some() {
            "broker.ca_file"
        } else {
            "broker.client_cert"
        };
        b.error(key, "set, but no broker URL uses amqps://");
    }
    let exchange = raw
        .exchange
        .as_deref()
        .map(|e| b.expand("broker.exchange", e))
        .unwrap_or_else(|| RawBroker::EXCHANGE.to_owned());
    if exchange.is_empty() || exchange.len() > 255 || exchange.starts_with("amq.") {
        b.error(
            "broker.exchange",
            format!("`{exchange}` is not usable: 1 to 255 characters, not starting with `amq.`"),
        );
    }
    let channels = b.count(
        "broker.channels",
        raw.channels,
        RawBroker::CHANNELS,
        MAX_CHANNELS,
    );
    BrokerSettings {
        endpoints,
        tls,
        exchange,
        confirm_timeout: b.duration_ms(
            "broker.confirm_timeout_ms",
            raw.confirm_timeout_ms,
            RawBroker::CONFIRM_TIMEOUT_MS,
        ),
        connect_timeout: b.duration_ms(
            "broker.connect_timeout_ms",
            raw.connect_timeout_ms,
            RawBroker::CONNECT_TIMEOUT_MS,
        ),
        channels,
        archive: None,
    }
}

/// Reads `broker.ca_file` and `broker.client_cert`/`client_key` now, so a
/// missing or unreadable file is a config error naming its key rather than
/// a connection failure later.
fn build_broker_tls(b: &mut Builder, raw: &RawBroker) -> crate::broker::BrokerTls {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};

    let read = |b: &mut Builder, key: &str, path: &str| -> Option<String> {
        let path = b.expand(key, path);
        match std::fs::read_to_string(&path) {
            Ok(text) => Some(text),
            Err(e) => {
                b.error(key, format!("cannot read `{path}` ({e})"));
                None
            }
        }
    };
    let certificates = |b: &mut Builder, key: &str, text: String| -> Option<String> {
        let found = CertificateDer::pem_slice_iter(text.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map(|certs| certs.len());
        match found {
            Ok(0) => b.error(key, "holds no PEM CERTIFICATE block"),
            Ok(_) => return Some(text),
            Err(e) => b.error(key, format!("is not valid PEM ({e})")),
        }
        None
    };
    let ca_pem = raw.ca_file.as_deref().and_then(|path| {
        let text = read(b, "broker.ca_file", path)?;
        certificates(b, "broker.ca_file", text)
    });
    let client = match (&raw.client_cert, &raw.client_key) {
        (Some(cert), Some(key)) => {
            let cert = read(b, "broker.client_cert", cert)
                .and_then(|text| certificates(b, "broker.client_cert", text));
            let key = read(b, "broker.client_key", key).and_then(|text| {
                match PrivateKeyDer::from_pem_slice(text.as_bytes()) {
                    Ok(_) => Some(Secret::new(text)),
                    Err(_) => {
                        b.error("broker.client_key", "holds no PEM private key");
                        None
                    }
                }
            });
            cert.zip(key)
                .map(|(cert_pem, key_pem)| crate::broker::ClientIdentity { cert_pem, key_pem })
        }
        (None, None) => None,
        (Some(_), None) => {
            b.error(
                "broker.client_key",
                "missing: client_cert is set, so client_key is required",
            );
            None
        }
        (None, Some(_)) => {
            b.error(
                "broker.client_cert",
                "missing: client_key is set, so client_cert is required",
            );
            None
        }
    };
    crate::broker::BrokerTls { ca_pem, client }
}
