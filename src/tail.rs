//! `hookgate tail`: the first thing to run to see that events flow. It
//! binds a temporary queue (exclusive, deleted when tail ends) to the
//! config's exchange and prints each canonical event as it is published,
//! one summary line or one JSON line. It takes nothing from anyone else's
//! queue and leaves nothing behind.

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::io::Write;
use std::pin::Pin;

use futures_core::Stream;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use serde_json::Value;

use crate::config::Settings;
use crate::tools::ToolError;

/// How each event is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One line: routing key, type, id, subject, amount; `(duplicate)` for
    /// an id already printed.
    Summary,
    /// The whole event as one JSON line (pipe it to `jq`).
    Json,
}

/// Ids remembered to mark repeats; the oldest are forgotten beyond this, so
/// a tail left running for days stays small.
pub const REMEMBERED_IDS: usize = 100_000;

/// Prints every event published to the exchange under one of `patterns`
/// until `stop` resolves (Ctrl-C); returns how many it printed. Declares the
/// exchange as the gateway does, so tail may start first.
pub async fn tail(
    settings: &Settings,
    patterns: &[String],
    format: Format,
    mut out: impl Write,
    stop: impl Future<Output = ()>,
) -> Result<u64, ToolError> {
    let broker = |e: lapin::Error| ToolError::Broker(e.to_string());
    let exchange = settings.broker.exchange.as_str();
    let connection = crate::broker::open_any(
        &settings.broker.endpoints,
        &settings.broker.tls,
        "hookgate tail",
    )
    .await
    .map_err(broker)?;
    crate::publish::declare_topology(&connection, exchange)
        .await
        .map_err(broker)?;
    let channel = connection.create_channel().await.map_err(broker)?;
    // Server-named, exclusive and auto-delete: gone when tail's connection is.
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(broker)?;
    let queue = queue.name().as_str().to_owned();
    for pattern in patterns {
        channel
            .queue_bind(
                queue.as_str().into(),
                exchange.into(),
                pattern.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(broker)?;
    }
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "hookgate-tail".into(),
            // Nothing to redeliver: the queue dies with this process.
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(broker)?;
    eprintln!(
        "tail: watching `{exchange}` for {}; Ctrl-C ends it",
        patterns
            .iter()
            .map(|p| format!("`{p}`"))
            .collect::<Vec<_>>()
            .join(", ")
    );

    let mut seen = SeenIds::default();
    let mut printed = 0;
    tokio::pin!(stop);
    let ended = loop {
        let next = std::future::poll_fn(|cx| Pin::new(&mut consumer).poll_next(cx));
        let delivery = tokio::select! {
            () = &mut stop => break Ok(()),
            next = next => match next {
                Some(Ok(delivery)) => delivery,
                Some(Err(e)) => break Err(broker(e)),
                None => break Err(ToolError::Broker("the broker ended the consumer".into())),
            },
        };
        let line = match format {
            Format::Json => String::from_utf8_lossy(&delivery.data).into_owned(),
            Format::Summary => {
                let event: Value = serde_json::from_slice(&delivery.data).unwrap_or_default();
                let repeat = event["id"].as_str().is_some_and(|id| !seen.insert(id));
                summary(delivery.routing_key.as_str(), &event, repeat)
            }
        };
        // A closed pipe (`| head`) ends tail like Ctrl-C does.
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            break Ok(());
        }
        printed += 1;
    };
    let _ = connection.close(200, "tail done".into()).await;
    ended.map(|()| printed)
}

/// One event as a line: `routing-key type id subject=S 3.60 GBP`, with
/// `(duplicate)` at the end when its id was printed before (consumers
/// de-duplicate on `id`; this shows when they would).
pub fn summary(routing_key: &str, event: &Value, duplicate: bool) -> String {
    let text = |v: &Value| v.as_str().unwrap_or("-").to_owned();
    let mut line = format!(
        "{routing_key} {} {} subject={}",
        text(&event["type"]),
        text(&event["id"]),
        text(&event["subject"]),
    );
    let amount = &event["data"]["amount"];
    if let (Some(value), Some(currency)) = (amount["value"].as_str(), amount["currency"].as_str()) {
        line.push_str(&format!(" {value} {currency}"));
    }
    if duplicate {
        line.push_str(" (duplicate)");
    }
    line
}

/// The last [`REMEMBERED_IDS`] ids printed.
#[derive(Default)]
struct SeenIds {
    ids: HashSet<String>,
    order: VecDeque<String>,
}

impl SeenIds {
    /// False when `id` was seen already.
    fn insert(&mut self, id: &str) -> bool {
        if self.ids.contains(id) {
            return false;
        }
        if self.order.len() == REMEMBERED_IDS {
            if let Some(oldest) = self.order.pop_front() {
                self.ids.remove(&oldest);
            }
        }
        self.ids.insert(id.to_owned());
        self.order.push_back(id.to_owned());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_summary_names_the_event_and_its_amount() {
        let event = json!({
            "id": "0b6c2f6e-9f59-5c36-8a3f-2f1b8f5b1c11",
            "type": "payment.succeeded",
            "subject": "pay_123",
            "data": { "amount": { "value": "3.60", "minor": 360, "currency": "GBP" } }
        });
        assert_eq!(
            summary("sticky-main.payment.succeeded", &event, false),
            "sticky-main.payment.succeeded payment.succeeded \
             0b6c2f6e-9f59-5c36-8a3f-2f1b8f5b1c11 subject=pay_123 3.60 GBP"
        );
        assert!(summary("k", &event, true).ends_with("3.60 GBP (duplicate)"));
    }

    #[test]
    fn a_summary_without_amount_or_subject_says_so() {
        let event = json!({ "id": "e1", "type": "unmapped", "data": {} });
        assert_eq!(
            summary("s.unmapped", &event, false),
            "s.unmapped unmapped e1 subject=-"
        );
    }

    #[test]
    fn seen_ids_mark_repeats_and_forget_the_oldest() {
        let mut seen = SeenIds::default();
        assert!(seen.insert("a"));
        assert!(!seen.insert("a"));
        for i in 0..REMEMBERED_IDS {
            seen.insert(&i.to_string());
        }
        assert!(
            seen.insert("a"),
            "forgotten after {REMEMBERED_IDS} newer ids"
        );
        assert_eq!(seen.order.len(), REMEMBERED_IDS);
        assert_eq!(seen.ids.len(), REMEMBERED_IDS);
    }
}
