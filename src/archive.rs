//! The event archive: a RabbitMQ stream that keeps every published event.
//!
//! **Why a stream.** "Did USAePay's event X reach us, and as what?" and
//! "re-send yesterday 10:00-11:00 of source S" need the events themselves,
//! kept for a while. A stream queue bound to the exchange for `#` gets every
//! event the broker routes (spooled and drained ones too) with no extra
//! publish on the request path; RabbitMQ drops segments older than
//! `max_age`. Reading it is an AMQP 0-9-1 consumer with `x-stream-offset`
//! (from the start, or from a time), a prefetch and acks, as RabbitMQ
//! documents for streams; a stream never says "no more", so a scan ends when
//! nothing arrives for [`CAUGHT_UP`].
//!
//! [`declare`] runs at every connect; [`find`] and [`replay`] are
//! `hookgate archive find` and `hookgate archive replay`.

use std::io::Write;
use std::time::Duration;

use futures_core::Stream;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Connection};
use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::config::{ArchiveSettings, Settings};

/// Why an archive command could not run.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The config has no `[archive]`.
    #[error("the config has no [archive] section")]
    NotConfigured,
    /// The broker could not be reached or refused the stream.
    #[error("broker: {0}")]
    Broker(#[from] lapin::Error),
    /// The command's output could not be written.
    #[error("cannot write the output: {0}")]
    Output(#[source] std::io::Error),
}

/// A scan has caught up with the stream when nothing arrives for this long.
pub const CAUGHT_UP: Duration = Duration::from_secs(2);

/// Messages in flight to one reader.
const PREFETCH: u16 = 500;

/// A progress line on stderr every this many messages read.
const PROGRESS_EVERY: u64 = 50_000;

/// Declares the durable stream and binds it to `exchange` for every routing
/// key; redeclaring with the same arguments is a no-op.
pub async fn declare(
    connection: &Connection,
    exchange: &str,
    archive: &ArchiveSettings,
) -> Result<(), lapin::Error> {
    let channel = connection.create_channel().await?;
    let text = |s: &str| AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()));
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), text("stream"));
    args.insert("x-max-age".into(), text(&archive.max_age));
    if let Some(bytes) = archive.max_bytes {
        args.insert(
            "x-max-length-bytes".into(),
            AMQPValue::LongLongInt(i64::try_from(bytes).unwrap_or(i64::MAX)),
        );
    }
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(archive.stream.as_str().into(), durable, args)
        .await?;
    channel
        .queue_bind(
            archive.stream.as_str().into(),
            exchange.into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let _ = channel.close(200, "archive declared".into()).await;
    Ok(())
}

/// One archived event as a reader sees it.
pub struct Archived {
    /// When it was published (the message's timestamp), RFC 3339.
    pub archived_at: String,
    /// The routing key it was published with.
    pub routing_key: String,
    /// The canonical event.
    pub event: Value,
    /// The message as published, for a replay.
    pub properties: BasicProperties,
    /// The exact bytes, for a replay.
    pub body: Vec<u8>,
}

/// Reads the archive from `since` (or its start) until it has caught up or
/// `visit` says stop (`false`). Returns how many messages were read.
async fn scan(
    settings: &Settings,
    since: Option<OffsetDateTime>,
    mut visit: impl FnMut(Archived) -> bool,
) -> Result<u64, ArchiveError> {
    let archive = archive_of(settings)?;
    let connection = crate::broker::open_any(
        &settings.broker.endpoints,
        &settings.broker.tls,
        "hookgate archive",
    )
    .await?;
    let channel = connection.create_channel().await?;
    channel
        .basic_qos(PREFETCH, BasicQosOptions::default())
        .await?;
    let mut args = FieldTable::default();
    let offset = match since {
        Some(t) => AMQPValue::Timestamp(t.unix_timestamp().max(0) as u64),
        None => AMQPValue::LongString(LongString::from(&b"first"[..])),
    };
    args.insert("x-stream-offset".into(), offset);
    let mut consumer = channel
        .basic_consume(
            archive.stream.as_str().into(),
            "hookgate-archive".into(),
            BasicConsumeOptions::default(),
            args,
        )
        .await?;
    let mut read = 0u64;
    loop {
        let next = std::future::poll_fn(|cx| std::pin::Pin::new(&mut consumer).poll_next(cx));
        let delivery = match tokio::time::timeout(CAUGHT_UP, next).await {
            Err(_) | Ok(None) => break,
            Ok(Some(delivery)) => delivery?,
        };
        read += 1;
        if read.is_multiple_of(PROGRESS_EVERY) {
            eprintln!("archive: {read} events read");
        }
        let _ = delivery.acker.ack(BasicAckOptions::default()).await;
        let Ok(event) = serde_json::from_slice::<Value>(&delivery.data) else {
            continue;
        };
        let archived_at = delivery
            .properties
            .timestamp()
            .and_then(|t| OffsetDateTime::from_unix_timestamp(t as i64).ok())
            .map(crate::canonical::rfc3339)
            .unwrap_or_default();
        let keep_going = visit(Archived {
            archived_at,
            routing_key: delivery.routing_key.as_str().to_owned(),
            event,
            properties: delivery.properties.clone(),
            body: delivery.data.clone(),
        });
        if !keep_going {
            break;
        }
    }
    let _ = connection.close(200, "archive read".into()).await;
    Ok(read)
}

fn archive_of(settings: &Settings) -> Result<&ArchiveSettings, ArchiveError> {
    settings
        .broker
        .archive
        .as_ref()
        .ok_or(ArchiveError::NotConfigured)
}

/// `hookgate archive find`: prints every archived event whose canonical id
/// or vendor event id is one of `ids`, one line each (or the whole event as
/// JSON). Returns how many matched.
pub async fn find(
    settings: &Settings,
    ids: &[String],
    since: Option<OffsetDateTime>,
    json: bool,
    mut out: impl Write,
) -> Result<u64, ArchiveError> {
    let mut matched = 0;
    let mut failed = None;
    scan(settings, since, |found| {
        let event = &found.event;
        let hit = ids.iter().any(|id| {
            event["id"].as_str() == Some(id)
                || event["data"]["vendor_event_id"].as_str() == Some(id)
        });
        if hit {
            matched += 1;
            let line = if json {
                event.to_string()
            } else {
                format!(
                    "{} {} {} {}",
                    found.archived_at,
                    found.routing_key,
                    event["type"].as_str().unwrap_or_default(),
                    event["id"].as_str().unwrap_or_default()
                )
            };
            if let Err(e) = writeln!(out, "{line}") {
                failed = Some(e);
                return false;
            }
        }
        true
    })
    .await?;
    match failed {
        Some(e) => Err(ArchiveError::Output(e)),
        None => Ok(matched),
    }
}

/// What `hookgate archive replay` keeps and where it publishes.
pub struct ReplayFilter {
    /// Events received at or after this time.
    pub since: OffsetDateTime,
    /// Events received before this time, when set.
    pub until: Option<OffsetDateTime>,
    /// Only these sources, when any.
    pub sources: Vec<String>,
    /// Only canonical types matching one of these topic patterns, when any.
    pub types: Vec<String>,
}

impl ReplayFilter {
    /// Whether an archived event is one to replay.
    pub fn keeps(&self, event: &Value) -> bool {
        let Some(received) = event["data"]["received_at"]
            .as_str()
            .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
        else {
            return false;
        };
        let source = event["data"]["source_id"].as_str().unwrap_or_default();
        let kind = event["type"].as_str().unwrap_or_default();
        received >= self.since
            && self.until.is_none_or(|until| received < until)
            && (self.sources.is_empty() || self.sources.iter().any(|s| s == source))
            && (self.types.is_empty() || self.types.iter().any(|p| topic_matches(p, kind)))
    }
}

/// AMQP topic matching of a dotted `kind` against `pattern`: `*` is one
/// word, `#` zero or more.
pub fn topic_matches(pattern: &str, kind: &str) -> bool {
    fn go(p: &[&str], k: &[&str]) -> bool {
        match (p.first(), k.first()) {
            (None, None) => true,
            (Some(&"#"), _) => go(&p[1..], k) || (!k.is_empty() && go(p, &k[1..])),
            (Some(&"*"), Some(_)) => go(&p[1..], &k[1..]),
            (Some(word), Some(have)) if word == have => go(&p[1..], &k[1..]),
            _ => false,
        }
    }
    let p: Vec<&str> = pattern.split('.').collect();
    let k: Vec<&str> = kind.split('.').collect();
    go(&p, &k)
}

/// How a replay ended.
#[derive(Debug, PartialEq, Eq)]
pub struct Replayed {
    /// Archived events the filter kept.
    pub matched: u64,
    /// Of those, published and confirmed (0 with `dry_run`).
    pub confirmed: u64,
}

/// Why a replay stopped before the end, and where to resume.
#[derive(Debug, thiserror::Error)]
#[error("stopped after {confirmed} confirmed: {why}; resume with --since {resume_since}")]
pub struct ReplayStopped {
    /// Published and confirmed before the stop.
    pub confirmed: u64,
    /// The `received_at` of the first event not confirmed.
    pub resume_since: String,
    /// What failed.
    pub why: String,
}

/// `hookgate archive replay`: re-publishes the archived events `filter`
/// keeps, with confirms, persistent, with their original ids, properties and
/// routing keys, to `exchange` (the configured one unless given); stops at
/// the first one not confirmed.
pub async fn replay(
    settings: &Settings,
    filter: &ReplayFilter,
    exchange: Option<&str>,
    dry_run: bool,
) -> Result<Result<Replayed, ReplayStopped>, ArchiveError> {
    let exchange = exchange.unwrap_or(&settings.broker.exchange).to_owned();
    let mut kept = Vec::new();
    scan(settings, Some(filter.since), |found| {
        // Past the window: a stream is in publish order, so nothing later fits.
        let received = found.event["data"]["received_at"]
            .as_str()
            .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok());
        if let (Some(until), Some(received)) = (filter.until, received) {
            if received >= until + Duration::from_secs(60) {
                return false;
            }
        }
        if filter.keeps(&found.event) {
            kept.push(found);
        }
        true
    })
    .await?;
    let matched = kept.len() as u64;
    if dry_run || kept.is_empty() {
        return Ok(Ok(Replayed {
            matched,
            confirmed: 0,
        }));
    }
    eprintln!("archive: {matched} matched; publishing to `{exchange}`");
    let mut confirmed = 0;
    let stopped = |confirmed: u64, event: &Archived, why: String| {
        Ok(Err(ReplayStopped {
            confirmed,
            resume_since: event.event["data"]["received_at"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            why,
        }))
    };
    let connection = match crate::broker::open_any(
        &settings.broker.endpoints,
        &settings.broker.tls,
        "hookgate archive replay",
    )
    .await
    {
        Ok(connection) => connection,
        Err(e) => return stopped(0, &kept[0], e.to_string()),
    };
    let channel = match connection.create_channel().await {
        Ok(channel) => channel,
        Err(e) => return stopped(0, &kept[0], e.to_string()),
    };
    if let Err(e) = channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
    {
        return stopped(0, &kept[0], e.to_string());
    }
    for event in &kept {
        let properties = event.properties.clone().with_delivery_mode(2);
        let published = channel
            .basic_publish(
                exchange.as_str().into(),
                event.routing_key.as_str().into(),
                BasicPublishOptions::default(),
                &event.body,
                properties,
            )
            .await;
        let confirm = match published {
            Ok(confirm) => tokio::time::timeout(settings.broker.confirm_timeout, confirm).await,
            Err(e) => return stopped(confirmed, event, e.to_string()),
        };
        match confirm {
            Ok(Ok(c)) if c.is_ack() => confirmed += 1,
            Ok(Ok(_)) => return stopped(confirmed, event, "the broker refused it (nack)".into()),
            Ok(Err(e)) => return stopped(confirmed, event, e.to_string()),
            Err(_) => return stopped(confirmed, event, "no confirm in time".into()),
        }
    }
    let _ = connection.close(200, "replay done".into()).await;
    Ok(Ok(Replayed { matched, confirmed }))
}

/// Reads an RFC 3339 time for `flag`.
pub fn parse_time(flag: &str, text: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(text, &Rfc3339)
        .map_err(|e| format!("{flag}: `{text}` is not an RFC 3339 time ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_patterns_match_like_the_broker() {
        assert!(topic_matches("payment.*", "payment.succeeded"));
        assert!(!topic_matches("payment.*", "refund.succeeded"));
        assert!(!topic_matches("payment.*", "payment"));
        assert!(topic_matches("#", "payment.succeeded"));
        assert!(topic_matches("payment.#", "payment"));
        assert!(topic_matches("*.succeeded", "refund.succeeded"));
        assert!(!topic_matches("payment", "payment.succeeded"));
    }

    #[test]
    fn the_window_source_and_type_filters_all_apply() {
        let at = |t: &str| parse_time("--since", t).unwrap();
        let filter = ReplayFilter {
            since: at("2026-12-01T10:00:00Z"),
            until: Some(at("2026-12-01T11:00:00Z")),
            sources: vec!["usaepay-main".into()],
            types: vec!["payment.*".into()],
        };
        let event = |source: &str, kind: &str, received: &str| serde_json::json!({"type": kind, "data": {"source_id": source, "received_at": received}});
        assert!(filter.keeps(&event(
            "usaepay-main",
            "payment.succeeded",
            "2026-12-01T10:00:00Z"
        )));
        assert!(!filter.keeps(&event(
            "usaepay-main",
            "payment.succeeded",
            "2026-12-01T11:00:00Z"
        )));
        assert!(!filter.keeps(&event(
            "usaepay-main",
            "payment.succeeded",
            "2026-12-01T09:59:59Z"
        )));
        assert!(!filter.keeps(&event(
            "sticky-main",
            "payment.succeeded",
            "2026-12-01T10:30:00Z"
        )));
        assert!(!filter.keeps(&event(
            "usaepay-main",
            "refund.succeeded",
            "2026-12-01T10:30:00Z"
        )));
        assert!(parse_time("--until", "yesterday")
            .unwrap_err()
            .contains("--until"));
    }
}
