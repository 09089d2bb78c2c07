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

/// A reader of the archive stream, from a time or from its start; one
/// connection, with a channel to publish on for a replay.
struct Reader {
    connection: Connection,
    consumer: lapin::Consumer,
    read: u64,
}

impl Reader {
    async fn open(
        settings: &Settings,
        since: Option<OffsetDateTime>,
    ) -> Result<Self, ArchiveError> {
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
        let consumer = channel
            .basic_consume(
                archive.stream.as_str().into(),
                "hookgate-archive".into(),
                BasicConsumeOptions::default(),
                args,
            )
            .await?;
        Ok(Self {
            connection,
            consumer,
            read: 0,
        })
    }

    /// The next archived event, or `None` once the reader has caught up
    /// (nothing for [`CAUGHT_UP`]). Messages that are not JSON are skipped.
    async fn next(&mut self) -> Result<Option<Archived>, ArchiveError> {
        loop {
            let consumer = &mut self.consumer;
            let next = std::future::poll_fn(|cx| std::pin::Pin::new(&mut *consumer).poll_next(cx));
            let delivery = match tokio::time::timeout(CAUGHT_UP, next).await {
                Err(_) | Ok(None) => return Ok(None),
                Ok(Some(delivery)) => delivery?,
            };
            self.read += 1;
            if self.read.is_multiple_of(PROGRESS_EVERY) {
                eprintln!("archive: {} events read", self.read);
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
            return Ok(Some(Archived {
                archived_at,
                routing_key: delivery.routing_key.as_str().to_owned(),
                event,
                properties: delivery.properties,
                body: delivery.data,
            }));
        }
    }

    async fn close(self) {
        let _ = self.connection.close(200, "archive read".into()).await;
    }
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
    let mut reader = Reader::open(settings, since).await?;
    let mut matched = 0;
    while let Some(found) = reader.next().await? {
        let event = &found.event;
        let hit = ids.iter().any(|id| {
            event["id"].as_str() == Some(id)
                || event["data"]["vendor_event_id"].as_str() == Some(id)
        });
        if !hit {
            continue;
        }
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
        writeln!(out, "{line}").map_err(ArchiveError::Output)?;
    }
    reader.close().await;
    Ok(matched)
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
    /// The `received_at` of the first event not confirmed (or the window's
    /// start, if none was reached).
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
    let exchange = exchange.unwrap_or(&settings.broker.exchange);
    // Read to the end of the stream, not to `until`: an event spooled while
    // the broker was away was archived after events received later than it.
    let mut reader = Reader::open(settings, Some(filter.since)).await?;
    let (mut matched, mut confirmed) = (0, 0);
    // Where a resumed replay must start: the first event not yet confirmed.
    let mut resume_since = crate::canonical::rfc3339(filter.since);
    let mut publishing = None;
    let outcome = loop {
        let found = match reader.next().await {
            Ok(Some(found)) => found,
            Ok(None) => break Ok(()),
            Err(e) => break Err(e.to_string()),
        };
        if !filter.keeps(&found.event) {
            continue;
        }
        matched += 1;
        if dry_run {
            continue;
        }
        if let Some(received) = found.event["data"]["received_at"].as_str() {
            resume_since = received.to_owned();
        }
        if publishing.is_none() {
            eprintln!("archive: publishing to `{exchange}`");
            let opened = async {
                let channel = reader.connection.create_channel().await?;
                channel
                    .confirm_select(ConfirmSelectOptions::default())
                    .await?;
                Ok::<_, lapin::Error>(channel)
            };
            match opened.await {
                Ok(channel) => publishing = Some(channel),
                Err(e) => break Err(e.to_string()),
            }
        }
        let Some(channel) = &publishing else {
            unreachable!("opened just above")
        };
        if let Err(why) =
            publish_confirmed(channel, exchange, &found, settings.broker.confirm_timeout).await
        {
            break Err(why);
        }
        confirmed += 1;
    };
    reader.close().await;
    Ok(match outcome {
        Ok(()) => Ok(Replayed { matched, confirmed }),
        Err(why) => Err(ReplayStopped {
            confirmed,
            resume_since,
            why,
        }),
    })
}

/// Publishes one archived event as it was (body, properties, routing key),
/// persistent, and waits for the broker's confirm.
async fn publish_confirmed(
    channel: &lapin::Channel,
    exchange: &str,
    event: &Archived,
    confirm_timeout: Duration,
) -> Result<(), String> {
    let confirm = channel
        .basic_publish(
            exchange.into(),
            event.routing_key.as_str().into(),
            BasicPublishOptions::default(),
            &event.body,
            event.properties.clone().with_delivery_mode(2),
        )
        .await
        .map_err(|e| e.to_string())?;
    match tokio::time::timeout(confirm_timeout, confirm).await {
        Ok(Ok(c)) if c.is_ack() => Ok(()),
        Ok(Ok(_)) => Err("the broker refused it (nack)".into()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no confirm in time".into()),
    }
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
