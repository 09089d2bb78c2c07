//! Operator commands beside `serve`: `hookgate sign`, `spool`, `send` and
//! `remap`, kept out of `main.rs` so they are testable as library functions.

use std::fmt::Write as _;
use std::time::Duration;

use crate::auth::Verified;
use crate::canonical::UNMAPPED;
use crate::config::{Settings, Source};
use crate::pipeline::normalize;
use crate::publish::{Outgoing, Publisher};
use crate::spool::{Spool, SpoolError};
use crate::watchdog::Watchdog;

/// Why an operator command failed; the message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// No such source in the config.
    #[error("no source `{0}` in the config")]
    UnknownSource(String),
    /// The config has no `[spool]`.
    #[error("the config has no [spool] section")]
    NoSpool,
    /// The spool could not be opened or read.
    #[error("{0} (is a gateway running on this spool? stop it first)")]
    Spool(#[from] SpoolError),
    /// The broker did not take the spooled events.
    #[error("broker: {0}")]
    Broker(String),
    /// The configured certificate could not be read.
    #[error(transparent)]
    Tls(crate::tls::TlsError),
}

/// The request a vendor would send for `body` to `source`: URL and headers,
/// and a `curl` command that sends it, working pasted as is: `--cacert` the
/// configured certificate when it does not chain to a public root, the
/// source's URL token, Basic credentials and signature header included.
/// `body_path` is where curl reads the body from.
pub fn sign(
    settings: &Settings,
    source_id: &str,
    body: &[u8],
    body_path: &str,
) -> Result<String, ToolError> {
    let source = settings
        .sources
        .get(source_id)
        .ok_or_else(|| ToolError::UnknownSource(source_id.to_owned()))?;
    let tls = settings.server.tls.as_ref();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = format!(
        "{scheme}://{}{}",
        reachable_host(settings.server.listen),
        path_for(source)
    );
    let mut out = String::new();
    let _ = writeln!(out, "URL: {url}");
    let mut headers = vec![("Content-Type".to_owned(), "application/json".to_owned())];
    if let Some(basic) = &source.auth.methods().basic {
        headers.push(("Authorization".to_owned(), basic.header_value()));
    }
    if let Some(hmac) = &source.auth.methods().hmac {
        headers.push((hmac.scheme().header().to_owned(), hmac.sign(0, None, body)));
    }
    if let Some(standard) = &source.auth.methods().standard_webhooks {
        // A new message id each time, as a sender gives each new message;
        // send the printed request twice and the second is a retry.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let mut seed = body.to_vec();
        seed.extend_from_slice(&now.as_nanos().to_be_bytes());
        let id = format!(
            "msg_{}",
            &hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&seed))[..24]
        );
        let timestamp = now.as_secs();
        let signature = standard.sign(0, &id, timestamp, body);
        headers.push(("webhook-id".to_owned(), id));
        headers.push(("webhook-timestamp".to_owned(), timestamp.to_string()));
        headers.push(("webhook-signature".to_owned(), signature));
    }
    for (name, value) in &headers {
        let _ = writeln!(out, "{name}: {value}");
    }
    if source.auth.methods().ip_allow.is_some() {
        let _ = writeln!(
            out,
            "# this source also requires the client address to be in its ip_allow list"
        );
    }
    let _ = write!(out, "\ncurl -sS");
    if let Some(paths) = tls {
        let private = !crate::tls::chains_to_public_root(paths).map_err(ToolError::Tls)?;
        if private {
            let cert = std::fs::canonicalize(&paths.cert).unwrap_or_else(|_| paths.cert.clone());
            let _ = write!(
                out,
                " --cacert {}",
                shell_quote(&cert.display().to_string())
            );
        }
    }
    let _ = write!(out, " {}", shell_quote(&url));
    for (name, value) in &headers {
        let _ = write!(
            out,
            " \\\n  -H {}",
            shell_quote(&format!("{name}: {value}"))
        );
    }
    let _ = writeln!(
        out,
        " \\\n  --data-binary {}",
        shell_quote(&format!("@{body_path}"))
    );
    Ok(out)
}

/// The host a local curl reaches the listener at: `localhost` for a
/// loopback or every-interface address (what a dev certificate names),
/// otherwise the address itself.
fn reachable_host(listen: std::net::SocketAddr) -> String {
    let ip = listen.ip();
    if ip.is_loopback() || ip.is_unspecified() {
        format!("localhost:{}", listen.port())
    } else {
        listen.to_string()
    }
}

/// `value` as one POSIX shell word.
fn shell_quote(value: &str) -> String {
    let plain = value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"@%+=:,./-_".contains(&b));
    if plain && !value.is_empty() {
        value.to_owned()
    } else {
        format!("'{}'", value.replace('\'', r"'\''"))
    }
}

/// The path a source is reached at, token included.
fn path_for(source: &Source) -> String {
    match &source.auth.methods().token {
        Some(token) => format!("/webhooks/{}/{}", source.id, token.expose()),
        None => format!("/webhooks/{}", source.id),
    }
}

fn open_spool(settings: &Settings) -> Result<Spool, ToolError> {
    let cfg = settings.spool.as_ref().ok_or(ToolError::NoSpool)?;
    Ok(Spool::open(&cfg.dir, cfg.max_bytes)?)
}

/// `hookgate spool stats`: events and bytes waiting.
pub fn spool_stats(settings: &Settings) -> Result<String, ToolError> {
    let spool = open_spool(settings)?;
    let stats = spool.stats();
    Ok(format!(
        "{}: {} event(s), {} byte(s) of {} allowed\n",
        spool.dir().display(),
        stats.events,
        stats.bytes,
        spool.max_bytes()
    ))
}

/// `hookgate spool list`: the oldest `limit` entries, one line each.
pub fn spool_list(settings: &Settings, limit: usize) -> Result<String, ToolError> {
    let spool = open_spool(settings)?;
    let mut out = String::new();
    for entry in spool.oldest(limit)? {
        let _ = writeln!(
            out,
            "{seq}\t{id}\t{key}\tenqueued_at_ms={at}\tattempts={attempts}",
            seq = entry.seq,
            id = entry.entry.id,
            key = entry.entry.routing_key,
            at = entry.enqueued_at_ms,
            attempts = entry.attempts
        );
    }
    Ok(out)
}

/// `hookgate spool purge`: deletes every spooled event (they are lost).
pub async fn spool_purge(settings: &Settings) -> Result<u64, ToolError> {
    let spool = open_spool(settings)?;
    let mut removed = 0;
    loop {
        let batch = spool.oldest_async(256).await?;
        if batch.is_empty() {
            break;
        }
        for entry in batch {
            spool.remove(entry.seq).await?;
            removed += 1;
        }
    }
    spool.close().await;
    Ok(removed)
}

/// `hookgate spool replay`: publishes every spooled event now, with confirms,
/// removing each once confirmed (what a running gateway's drain does).
pub async fn spool_replay(settings: &Settings) -> Result<u64, ToolError> {
    let spool = open_spool(settings)?;
    let broker = OneShotPublisher::connect(settings).await?;
    let publisher = &broker.publisher;
    let mut total = 0;
    let result = loop {
        let batch = match spool.oldest_async(64).await {
            Ok(batch) => batch,
            Err(e) => break Err(e.into()),
        };
        if batch.is_empty() {
            break Ok(total);
        }
        let (published, failed) = crate::drain::publish_batch(&spool, publisher, batch).await;
        total += published;
        if let Some((id, e)) = failed {
            break Err(ToolError::Broker(format!("event {id}: {e}")));
        }
    };
    broker.close().await;
    spool.close().await;
    result
}

/// A publisher for one command: connected, and closed without alarm.
struct OneShotPublisher {
    publisher: Publisher,
    /// The publisher's connection task runs under a watchdog like the
    /// gateway's; shutting it down closes the connection.
    watchdog: Watchdog,
}

impl OneShotPublisher {
    /// A publisher whose connection is up, or an error after 10 s.
    async fn connect(settings: &Settings) -> Result<Self, ToolError> {
        let mut watchdog = Watchdog::new();
        let publisher = Publisher::start(
            settings.broker.clone(),
            &crate::metrics::Metrics::new(),
            &mut watchdog,
        );
        let one_shot = OneShotPublisher {
            publisher,
            watchdog,
        };
        if one_shot
            .publisher
            .wait_connected(Duration::from_secs(10))
            .await
        {
            Ok(one_shot)
        } else {
            one_shot.close().await;
            Err(ToolError::Broker("not reachable within 10 s".into()))
        }
    }

    /// Waits for outstanding confirms and closes the connection.
    async fn close(self) {
        self.watchdog.shut_down().await;
    }
}

/// What `hookgate send` published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// The canonical event id.
    pub id: String,
    /// The canonical type (`unmapped` if the body was not understood).
    pub event_type: String,
}

/// `hookgate send`: pushes a captured body through the mapping and publishes
/// it with confirms, as if the vendor had sent it to `source_id` (for
/// recovering events from a vendor's API export). Authentication is skipped:
/// the operator vouches for the body.
pub async fn send(settings: &Settings, source_id: &str, body: Vec<u8>) -> Result<Sent, ToolError> {
    let source = settings
        .sources
        .get(source_id)
        .ok_or_else(|| ToolError::UnknownSource(source_id.to_owned()))?;
    let verified = Verified::vouched_by_operator(body);
    let now = time::OffsetDateTime::now_utc();
    let event = normalize(source.vendor, &source.id, &source.options, &verified, now);
    let outgoing = Outgoing::from_event(&event);
    publish_all(settings, std::slice::from_ref(&outgoing)).await?;
    Ok(Sent {
        id: outgoing.id,
        event_type: outgoing.event_type,
    })
}

/// Publishes with confirms through a short-lived publisher.
async fn publish_all(settings: &Settings, events: &[Outgoing]) -> Result<(), ToolError> {
    let broker = OneShotPublisher::connect(settings).await?;
    let result = async {
        for outgoing in events {
            broker
                .publisher
                .publish(outgoing)
                .await
                .map_err(|e| ToolError::Broker(format!("event {}: {e}", outgoing.id)))?;
        }
        Ok(())
    }
    .await;
    broker.close().await;
    result
}

/// What `hookgate remap` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RemapReport {
    /// Parked events that now map, published under their original ids.
    pub remapped: u64,
    /// Events that still do not map; left on the queue.
    pub still_unmapped: u64,
    /// Messages that are not hookgate `unmapped` events or name an unknown source; left on the queue.
    pub skipped: u64,
}

/// `hookgate remap`: re-runs the mapping over `unmapped` events parked on
/// `queue` (each carries its raw body). After an upgrade that teaches
/// hookgate a new body shape, those become real canonical events, published
/// with their original ids; each parked message is acknowledged only after
/// its replacement is confirmed. What still does not map stays on the queue.
pub async fn remap(settings: &Settings, queue: &str) -> Result<RemapReport, ToolError> {
    use lapin::options::{BasicAckOptions, BasicGetOptions, BasicRejectOptions};

    let broker = |e: lapin::Error| ToolError::Broker(e.to_string());
    let connection = crate::broker::open_any(
        &settings.broker.endpoints,
        &settings.broker.tls,
        "hookgate remap",
    )
    .await
    .map_err(broker)?;
    let channel = connection.create_channel().await.map_err(broker)?;
    let broker_link = OneShotPublisher::connect(settings).await?;
    let publisher = &broker_link.publisher;
    let mut report = RemapReport::default();
    let mut kept = Vec::new();
    let outcome = loop {
        // Messages taken without auto-ack stay invisible until this channel
        // acks or rejects them, so each parked event is looked at once per run.
        let message = match channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: false })
            .await
        {
            Ok(Some(message)) => message,
            Ok(None) => break Ok(()),
            Err(e) => break Err(broker(e)),
        };
        let delivery = message.delivery;
        match remapped_event(settings, &delivery.data) {
            Remapped::Event(outgoing) => {
                if let Err(e) = publisher.publish(&outgoing).await {
                    kept.push(delivery);
                    break Err(ToolError::Broker(format!("event {}: {e}", outgoing.id)));
                }
                delivery
                    .ack(BasicAckOptions::default())
                    .await
                    .map_err(broker)?;
                report.remapped += 1;
            }
            Remapped::StillUnmapped => {
                report.still_unmapped += 1;
                kept.push(delivery);
            }
            Remapped::NotOurs => {
                report.skipped += 1;
                kept.push(delivery);
            }
        }
    };
    for delivery in kept {
        let _ = delivery.reject(BasicRejectOptions { requeue: true }).await;
    }
    broker_link.close().await;
    let _ = connection.close(200, "remap done".into()).await;
    outcome.map(|()| report)
}

enum Remapped {
    Event(Outgoing),
    StillUnmapped,
    NotOurs,
}

/// The replacement for one parked `unmapped` message, if it now maps.
fn remapped_event(settings: &Settings, message: &[u8]) -> Remapped {
    use base64::Engine;
    let Ok(parked) = serde_json::from_slice::<serde_json::Value>(message) else {
        return Remapped::NotOurs;
    };
    let data = &parked["data"];
    let (Some(id), Some(source_id), Some(raw), Some(encoding)) = (
        parked["id"].as_str(),
        data["source_id"].as_str(),
        data["unmapped"]["raw_body"].as_str(),
        data["unmapped"]["raw_body_encoding"].as_str(),
    ) else {
        return Remapped::NotOurs;
    };
    let Some(source) = settings.sources.get(source_id) else {
        return Remapped::NotOurs;
    };
    let body = match encoding {
        "utf8" => raw.as_bytes().to_vec(),
        "base64" => match base64::engine::general_purpose::STANDARD.decode(raw) {
            Ok(bytes) => bytes,
            Err(_) => return Remapped::NotOurs,
        },
        _ => return Remapped::NotOurs,
    };
    let received_at = data["received_at"]
        .as_str()
        .and_then(|t| {
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
        })
        .unwrap_or_else(time::OffsetDateTime::now_utc);
    let verified = Verified::vouched_by_operator(body);
    let mut event = normalize(
        source.vendor,
        &source.id,
        &source.options,
        &verified,
        received_at,
    );
    if event.event_type == UNMAPPED {
        return Remapped::StillUnmapped;
    }
    // Consumers that saw the parked event can tell the replacement by its id.
    event.id = id.to_owned();
    Remapped::Event(Outgoing::from_event(&event))
}
