//! Operator commands beside `serve`: what `hookgate sign` and `hookgate spool`
//! do, kept out of `main.rs` so they are testable as library functions.

use std::fmt::Write as _;
use std::time::Duration;

use crate::config::{Settings, Source};
use crate::publish::Publisher;
use crate::spool::{Spool, SpoolError};

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
}

/// The request a vendor would send for `body` to `source`: URL and headers,
/// as a ready-to-run `curl` command (for testing a deployment by hand).
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
    let scheme = if settings.server.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let url = format!("{scheme}://{}{}", settings.server.listen, path_for(source));
    let mut out = String::new();
    let _ = writeln!(out, "URL: {url}");
    let mut headers = vec![("Content-Type".to_owned(), "application/json".to_owned())];
    if let Some(basic) = &source.auth.basic {
        headers.push(("Authorization".to_owned(), basic.header_value()));
    }
    if let Some(hmac) = &source.auth.hmac {
        headers.push((hmac.scheme().header().to_owned(), hmac.sign(0, None, body)));
    }
    for (name, value) in &headers {
        let _ = writeln!(out, "{name}: {value}");
    }
    if source.auth.ip_allow.is_some() {
        let _ = writeln!(
            out,
            "# this source also requires the client address to be in its ip_allow list"
        );
    }
    let _ = write!(out, "\ncurl -sS {url}");
    for (name, value) in &headers {
        let _ = write!(out, " \\\n  -H '{name}: {value}'");
    }
    let _ = writeln!(out, " \\\n  --data-binary @{body_path}");
    Ok(out)
}

/// The path a source is reached at, token included.
fn path_for(source: &Source) -> String {
    match &source.auth.token {
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
            id = entry.outgoing.id,
            key = entry.outgoing.routing_key,
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
    let (publisher, task) = Publisher::start(settings.broker.clone());
    if !publisher.wait_connected(Duration::from_secs(10)).await {
        task.shutdown().await;
        return Err(ToolError::Broker("not reachable within 10 s".into()));
    }
    let mut published = 0;
    let result = loop {
        let batch = match spool.oldest_async(64).await {
            Ok(batch) => batch,
            Err(e) => break Err(e.into()),
        };
        if batch.is_empty() {
            break Ok(published);
        }
        let mut failed = None;
        for entry in batch {
            match publisher.publish(&entry.outgoing).await {
                Ok(()) => {
                    spool.remove(entry.seq).await?;
                    published += 1;
                }
                Err(e) => {
                    failed = Some(ToolError::Broker(format!(
                        "event {}: {e}",
                        entry.outgoing.id
                    )));
                    break;
                }
            }
        }
        if let Some(e) = failed {
            break Err(e);
        }
    };
    task.shutdown().await;
    spool.close().await;
    result
}
