//! Publishing canonical events to RabbitMQ with publisher confirms.
//!
//! One long-lived AMQP connection carries a small pool of channels, each in
//! confirm mode. A request publishes on the next channel round-robin and waits
//! for *its own* confirm: `Ack` is success; `Nack`, a returned (unroutable)
//! message, a channel error or the confirm deadline are failures the caller
//! turns into "not safe yet". Nothing here answers a vendor before the broker
//! has the event.
//!
//! A supervisor task owns the connection. It connects with a deadline,
//! declares the topology (the durable topic exchange and, as its
//! `alternate-exchange`, a fanout exchange `{exchange}.unroutable` with a
//! durable queue of the same name, so an event no consumer binds for is kept
//! rather than lost), opens the channels and publishes them as the current
//! `Link`. When a publish fails at the transport level, or the connection
//! reports it is no longer connected, the link is dropped and rebuilt with
//! exponential backoff (100 ms doubling to 5 s). While there is no link,
//! [`Publisher::publish`] fails at once with [`PublishError::Unavailable`]
//! instead of making the vendor wait.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use std::time::Duration;

use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
};
use tokio::sync::{watch, Notify};

use crate::canonical::{Event, CONTENT_TYPE};
use crate::config::BrokerSettings;
use crate::watchdog::Watchdog;

/// Why an event is not (yet) safe at the broker.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// No connection to the broker right now.
    #[error("broker unavailable")]
    Unavailable,
    /// The broker refused to take responsibility for the message.
    #[error("broker nacked the message")]
    Nacked,
    /// The exchange had no route and no alternate exchange took it.
    #[error("broker returned the message as unroutable")]
    Returned,
    /// The confirm did not arrive in time; the outcome is unknown.
    #[error("no confirm within {0:?}")]
    ConfirmTimeout(Duration),
}

/// A serialized event ready for the broker, with everything its AMQP
/// properties need; this is also what the spool stores, so a drained event
/// is published exactly as it would have been.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Event id: the AMQP `message_id` and `cloudEvents_id`.
    pub id: String,
    /// CloudEvents `source`.
    pub source: String,
    /// Canonical type: AMQP `type` and `cloudEvents_type`.
    pub event_type: String,
    /// CloudEvents `time`.
    pub time: String,
    /// `{source_id}.{type}`.
    pub routing_key: String,
    /// The serialized CloudEvent.
    pub body: Vec<u8>,
}

impl Outgoing {
    /// Serializes an event once, for the broker and (if needed) the spool.
    pub fn from_event(event: &Event) -> Self {
        Self {
            id: event.id.clone(),
            source: event.source.clone(),
            event_type: event.event_type.clone(),
            time: event.time.clone(),
            routing_key: event.routing_key(),
            body: serde_json::to_vec(event).expect("canonical events always serialize"),
        }
    }
}

/// An established connection and its confirm-mode channels.
struct Link {
    connection: Connection,
    channels: Vec<Channel>,
}

struct Inner {
    settings: BrokerSettings,
    /// The current link; swapped without a lock so publishes never contend.
    link: ArcSwapOption<Link>,
    /// Wakes the supervisor when a publish saw the link fail.
    broken: Notify,
    next_channel: AtomicUsize,
    connected: watch::Sender<bool>,
}

/// Shared handle to the broker; clone freely.
#[derive(Clone)]
pub struct Publisher {
    inner: Arc<Inner>,
}

/// Stops the supervisor and closes the AMQP connection cleanly.
pub struct PublisherTask {
    stop: watch::Sender<bool>,
    handle: tokio::task::JoinHandle<()>,
}

impl PublisherTask {
    /// Closes the connection (after in-flight publishes, which hold their own
    /// channel handles) and waits for the supervisor to finish.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.handle.await;
    }
}

impl Publisher {
    /// Starts the connection supervisor under `watchdog`; the publisher is
    /// usable at once and reports [`PublishError::Unavailable`] until the
    /// first connection is up.
    pub fn start(settings: BrokerSettings, watchdog: &Watchdog) -> (Self, PublisherTask) {
        let (connected, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            settings,
            link: ArcSwapOption::empty(),
            broken: Notify::new(),
            next_channel: AtomicUsize::new(0),
            connected,
        });
        let (stop, stop_rx) = watch::channel(false);
        let handle = watchdog.spawn("broker connection", supervise(inner.clone(), stop_rx));
        (Self { inner }, PublisherTask { stop, handle })
    }

    /// Whether a connection is up right now (for readiness).
    pub fn is_connected(&self) -> bool {
        *self.inner.connected.borrow()
    }

    /// Waits until connected or the deadline passes; for start-up and tests.
    pub async fn wait_connected(&self, deadline: Duration) -> bool {
        let mut rx = self.inner.connected.subscribe();
        let connected = tokio::time::timeout(deadline, rx.wait_for(|c| *c)).await;
        matches!(connected, Ok(Ok(_)))
    }

    /// Publishes one serialized event and waits for the broker's confirm.
    pub async fn publish(&self, event: &Outgoing) -> Result<(), PublishError> {
        let link = self
            .inner
            .link
            .load_full()
            .ok_or(PublishError::Unavailable)?;
        let channel = self.next_channel(&link);
        let until = tokio::time::Instant::now() + self.inner.settings.confirm_timeout;
        let confirm = async {
            send(&self.inner.settings.exchange, channel, event)
                .await?
                .await
        };
        let answer = tokio::time::timeout_at(until, confirm).await;
        self.settle(&link, answer)
    }

    /// Publishes events in order on one channel, all confirms in flight at
    /// once, and returns each one's outcome in the same order. RabbitMQ keeps
    /// a channel's order, so a drained spool reaches the queue oldest first
    /// without paying one round trip per event.
    pub async fn publish_in_order(&self, events: &[&Outgoing]) -> Vec<Result<(), PublishError>> {
        let Some(link) = self.inner.link.load_full() else {
            return events
                .iter()
                .map(|_| Err(PublishError::Unavailable))
                .collect();
        };
        let channel = self.next_channel(&link);
        let until = tokio::time::Instant::now() + self.inner.settings.confirm_timeout;
        let mut pending = Vec::with_capacity(events.len());
        for event in events {
            pending.push(send(&self.inner.settings.exchange, channel, event).await);
        }
        let mut outcomes = Vec::with_capacity(events.len());
        for sent in pending {
            let answer = match sent {
                Ok(confirm) => tokio::time::timeout_at(until, confirm).await,
                Err(error) => Ok(Err(error)),
            };
            outcomes.push(self.settle(&link, answer));
        }
        outcomes
    }

    fn next_channel<'l>(&self, link: &'l Link) -> &'l Channel {
        let n = self.inner.next_channel.fetch_add(1, Ordering::Relaxed);
        &link.channels[n % link.channels.len()]
    }

    /// The broker's answer (or its absence) as an outcome; a transport error
    /// or a silent broker marks the link broken so it is rebuilt.
    fn settle(
        &self,
        link: &Arc<Link>,
        answer: Result<Result<Confirmation, lapin::Error>, tokio::time::error::Elapsed>,
    ) -> Result<(), PublishError> {
        match answer {
            Ok(Ok(Confirmation::Ack(None))) => Ok(()),
            Ok(Ok(Confirmation::Ack(Some(_)))) => Err(PublishError::Returned),
            Ok(Ok(Confirmation::Nack(_))) => Err(PublishError::Nacked),
            Ok(Ok(Confirmation::NotRequested)) => {
                // Cannot happen on a confirm-mode channel; treat the channel as broken.
                self.mark_broken(link);
                Err(PublishError::Unavailable)
            }
            Ok(Err(error)) => {
                tracing::warn!(error = %error, "Publish failed; reconnecting to the broker.");
                self.mark_broken(link);
                Err(PublishError::Unavailable)
            }
            Err(_) => {
                // A silent broker (or a cut network) looks like this: rebuild the link
                // so the next request does not wait the full deadline again.
                self.mark_broken(link);
                Err(PublishError::ConfirmTimeout(
                    self.inner.settings.confirm_timeout,
                ))
            }
        }
    }

    fn mark_broken(&self, failed: &Arc<Link>) {
        if clear_if_current(&self.inner.link, failed) {
            self.inner.connected.send_replace(false);
        }
        self.inner.broken.notify_one();
    }
}

/// Empties `slot` if it still holds `link` (a newer link is left alone);
/// returns whether it did.
fn clear_if_current(slot: &ArcSwapOption<Link>, link: &Arc<Link>) -> bool {
    let previous = slot.compare_and_swap(link, None);
    previous.as_ref().is_some_and(|p| Arc::ptr_eq(p, link))
}

/// Sends one persistent, mandatory message; the returned future is its confirm.
async fn send(
    exchange: &str,
    channel: &Channel,
    event: &Outgoing,
) -> Result<lapin::PublisherConfirm, lapin::Error> {
    channel
        .basic_publish(
            ShortString::from(exchange),
            ShortString::from(event.routing_key.as_str()),
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            &event.body,
            properties(event),
        )
        .await
}

/// AMQP properties: persistent, identified, and carrying the CloudEvents
/// AMQP-binding headers so header-based consumers need not parse the body.
/// Public so the broker-ceiling benchmark publishes exactly what the gateway
/// publishes.
pub fn properties(event: &Outgoing) -> BasicProperties {
    let mut headers = FieldTable::default();
    let text = |s: &str| AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()));
    headers.insert("cloudEvents_id".into(), text(&event.id));
    headers.insert("cloudEvents_source".into(), text(&event.source));
    headers.insert("cloudEvents_type".into(), text(&event.event_type));
    headers.insert("cloudEvents_specversion".into(), text("1.0"));
    headers.insert("cloudEvents_time".into(), text(&event.time));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    BasicProperties::default()
        .with_message_id(event.id.as_str().into())
        .with_content_type(CONTENT_TYPE.into())
        .with_delivery_mode(2)
        .with_type(event.event_type.as_str().into())
        .with_timestamp(now)
        .with_app_id("hookgate".into())
        .with_headers(headers)
}

async fn supervise(inner: Arc<Inner>, mut stop: watch::Receiver<bool>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        if *stop.borrow() {
            break;
        }
        let attempt =
            tokio::time::timeout(inner.settings.connect_timeout, connect(&inner.settings));
        let link = tokio::select! {
            result = attempt => match result {
                Ok(Ok(link)) => Some(Arc::new(link)),
                Ok(Err(error)) => {
                    tracing::warn!(error = %error, retry_in_ms = backoff.as_millis() as u64, "Cannot connect to the broker.");
                    None
                }
                Err(_) => {
                    tracing::warn!(retry_in_ms = backoff.as_millis() as u64, "Broker connection attempt timed out.");
                    None
                }
            },
            _ = stop.changed() => break,
        };
        let Some(link) = link else {
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.changed() => break,
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
            continue;
        };
        backoff = Duration::from_millis(100);
        inner.link.store(Some(link.clone()));
        inner.connected.send_replace(true);
        tracing::info!(exchange = %inner.settings.exchange, channels = link.channels.len(), "Connected to the broker.");

        // Stay here while the link is healthy.
        loop {
            tokio::select! {
                _ = inner.broken.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = stop.changed() => {}
            }
            let still_current = inner
                .link
                .load()
                .as_ref()
                .is_some_and(|l| Arc::ptr_eq(l, &link));
            let healthy = still_current
                && link.connection.status().connected()
                && link.channels.iter().all(|c| c.status().connected());
            if *stop.borrow() || !healthy {
                break;
            }
        }
        clear_if_current(&inner.link, &link);
        inner.connected.send_replace(false);
        if *stop.borrow() {
            // Wait for in-flight confirms, then close politely.
            for channel in &link.channels {
                let _ = tokio::time::timeout(
                    inner.settings.confirm_timeout,
                    channel.wait_for_confirms(),
                )
                .await;
            }
            let _ = tokio::time::timeout(
                Duration::from_secs(2),
                link.connection.close(200, "hookgate shutting down".into()),
            )
            .await;
            tracing::info!("Broker connection closed.");
            break;
        }
        tracing::warn!("Broker connection lost; reconnecting.");
        let _ = tokio::time::timeout(
            Duration::from_millis(200),
            link.connection.close(320, "reconnecting".into()),
        )
        .await;
    }
}

async fn connect(settings: &BrokerSettings) -> Result<Link, lapin::Error> {
    let props = ConnectionProperties::default().with_connection_name("hookgate".into());
    let connection = Connection::connect(settings.url.expose(), props).await?;
    let setup = connection.create_channel().await?;
    declare_topology(&setup, &settings.exchange).await?;
    let _ = setup.close(200, "topology declared".into()).await;
    let mut channels = Vec::with_capacity(settings.channels);
    for _ in 0..settings.channels {
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        channels.push(channel);
    }
    Ok(Link {
        connection,
        channels,
    })
}

/// Declares the event exchange and its alternate exchange and queue. All are
/// durable; redeclaring with the same arguments is a no-op on the broker.
pub async fn declare_topology(channel: &Channel, exchange: &str) -> Result<(), lapin::Error> {
    let unroutable = format!("{exchange}.unroutable");
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    channel
        .exchange_declare(
            unroutable.as_str().into(),
            ExchangeKind::Fanout,
            durable,
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_declare(
            unroutable.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_bind(
            unroutable.as_str().into(),
            unroutable.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut args = FieldTable::default();
    args.insert(
        "alternate-exchange".into(),
        AMQPValue::LongString(LongString::from(unroutable.into_bytes())),
    );
    channel
        .exchange_declare(exchange.into(), ExchangeKind::Topic, durable, args)
        .await
}
