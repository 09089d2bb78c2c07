//! Publishing canonical events to RabbitMQ with publisher confirms.
//!
//! One long-lived AMQP connection carries a small pool of channels, each in
//! confirm mode. A request publishes on the next channel round-robin and waits
//! for *its own* confirm: `Ack` is success; `Nack`, a returned (unroutable)
//! message, a channel error or the confirm deadline are failures the caller
//! turns into "not safe yet". Nothing here answers a vendor before the broker
//! has the event.
//!
//! A supervisor task owns the connection. It connects with a deadline to one
//! of the configured endpoints (see [`crate::broker`] for why rotation lives
//! here and not in lapin), starting at a random one so replicas spread over a
//! cluster's nodes, and moving to the next after every failed attempt and
//! every lost connection. It declares the topology (the durable topic exchange and, as its
//! `alternate-exchange`, a fanout exchange `{exchange}.unroutable` with a
//! durable queue of the same name, so an event no consumer binds for is kept
//! rather than lost), opens the channels and publishes them as the current
//! `Link`. When a publish fails at the transport level, or the connection
//! reports it is no longer connected, the link is dropped and rebuilt with
//! exponential backoff (100 ms doubling to 5 s). While there is no link,
//! [`Publisher::publish`] fails at once with [`PublishError::Unavailable`]
//! instead of making the vendor wait.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use std::time::Duration;

use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ExchangeKind};
use tokio::sync::{watch, Notify};

use crate::broker::Endpoint;
use crate::canonical::{Event, CONTENT_TYPE};
use crate::config::BrokerSettings;
use crate::metrics::{BrokerMetrics, Metrics};
use crate::watchdog::{Stage, Watchdog};
use tokio_util::sync::CancellationToken;

/// Why an event is not (yet) safe at the broker.
#[derive(Debug, Clone, thiserror::Error)]
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
    /// The broker blocked publishing (memory or disk alarm); the reason it gave.
    #[error("broker blocked publishing: {0}")]
    Blocked(String),
}

impl PublishError {
    /// A closed-set label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Unavailable => "unavailable",
            Self::Nacked => "nack",
            Self::Returned => "returned",
            Self::ConfirmTimeout(_) => "timeout",
            Self::Blocked(_) => "blocked",
        }
    }
}

/// A publish in progress, boxed so that [`EventSink`] can be used as a
/// trait object.
pub type Publishing<'a> = Pin<Box<dyn Future<Output = Result<(), PublishError>> + Send + 'a>>;

/// Where the pipeline hands events to be confirmed: the broker link
/// ([`Publisher`]) in the gateway, a fake in the pipeline's unit tests, so
/// that every [`crate::pipeline::Outcome`] can be checked without a broker
/// (the seam svix-bridge keeps between its receivers and their outputs).
pub trait EventSink: Send + Sync {
    /// Publishes with a confirm: `Ok` once the broker has the event.
    fn publish<'a>(&'a self, event: &'a Outgoing) -> Publishing<'a>;

    /// The link's state, for readiness.
    fn state(&self) -> LinkState;

    /// Whether a connection is up right now, blocked or not.
    fn is_connected(&self) -> bool {
        !matches!(self.state(), LinkState::Down(_))
    }
}

impl EventSink for Publisher {
    fn publish<'a>(&'a self, event: &'a Outgoing) -> Publishing<'a> {
        Box::pin(Publisher::publish(self, event))
    }

    fn state(&self) -> LinkState {
        Publisher::state(self)
    }
}

/// What the broker link can do right now, for publishes, the drain and
/// readiness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkState {
    /// No connection; the last attempt's failure, if one failed.
    Down(Option<String>),
    /// Connected and taking publishes.
    Up,
    /// Connected, but the broker blocks publishing; the reason it gave.
    Blocked(String),
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
    /// Serializes an event once, for the broker and (if needed) the spool,
    /// through the card-number guard: nothing reaches the bus any other way.
    pub fn from_event(event: &Event) -> Self {
        Self::guarded(event).0
    }

    /// As [`Self::from_event`], and how many full card numbers the guard
    /// masked (for the metric and the warning).
    pub fn guarded(event: &Event) -> (Self, usize) {
        let (body, masked) = crate::guard::masked_event_json(event);
        let outgoing = Self {
            id: event.id.clone(),
            source: event.source.clone(),
            event_type: event.event_type.clone(),
            time: event.time.clone(),
            routing_key: event.routing_key(),
            body,
        };
        (outgoing, masked)
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
    state: watch::Sender<LinkState>,
    metrics: BrokerMetrics,
}

/// Shared handle to the broker; clone freely.
#[derive(Clone)]
pub struct Publisher {
    inner: Arc<Inner>,
}

impl Publisher {
    /// Starts the connection supervisor under `watchdog`, counting into
    /// `metrics`; the publisher is usable at once and reports
    /// [`PublishError::Unavailable`] until the first connection is up. The
    /// supervisor closes last: when the watchdog shuts down, it waits for
    /// in-flight confirms (publishes hold their own channel handles) and
    /// closes the connection after every other task has ended.
    pub fn start(settings: BrokerSettings, metrics: &Metrics, watchdog: &mut Watchdog) -> Self {
        let (state, _) = watch::channel(LinkState::Down(None));
        let metrics = metrics.broker();
        for endpoint in &settings.endpoints {
            metrics.endpoint(&endpoint.name).set(0);
        }
        let inner = Arc::new(Inner {
            settings,
            link: ArcSwapOption::empty(),
            broken: Notify::new(),
            next_channel: AtomicUsize::new(0),
            state,
            metrics,
        });
        let supervised = inner.clone();
        watchdog.spawn_at("broker connection", Stage::Broker, move |stop| {
            supervise(supervised, stop)
        });
        Self { inner }
    }

    /// Whether a connection is up right now, blocked or not (for readiness).
    pub fn is_connected(&self) -> bool {
        EventSink::is_connected(self)
    }

    /// The link's state right now.
    pub fn state(&self) -> LinkState {
        self.inner.state.borrow().clone()
    }

    /// Waits until connected (blocked or not) or the deadline passes; for
    /// start-up and tests.
    pub async fn wait_connected(&self, deadline: Duration) -> bool {
        self.wait_for(deadline, |s| !matches!(s, LinkState::Down(_)))
            .await
    }

    /// Waits until the link takes publishes (connected and not blocked) or
    /// the deadline passes; the drain waits here.
    pub async fn wait_usable(&self, deadline: Duration) -> bool {
        self.wait_for(deadline, |s| matches!(s, LinkState::Up))
            .await
    }

    async fn wait_for(&self, deadline: Duration, wanted: impl FnMut(&LinkState) -> bool) -> bool {
        let mut rx = self.inner.state.subscribe();
        let reached = tokio::time::timeout(deadline, rx.wait_for(wanted)).await;
        matches!(reached, Ok(Ok(_)))
    }

    /// The current link if it takes publishes now.
    fn usable_link(&self) -> Result<Arc<Link>, PublishError> {
        if let LinkState::Blocked(reason) = &*self.inner.state.borrow() {
            return Err(PublishError::Blocked(reason.clone()));
        }
        self.inner.link.load_full().ok_or(PublishError::Unavailable)
    }

    /// Resolves with the broker's reason once it blocks publishing; pending
    /// otherwise. Raced against confirms so a blocked broker releases them.
    async fn blocked(&self) -> String {
        let mut rx = self.inner.state.subscribe();
        let reason = match rx.wait_for(|s| matches!(s, LinkState::Blocked(_))).await {
            Ok(state) => match &*state {
                LinkState::Blocked(reason) => Some(reason.clone()),
                _ => None,
            },
            Err(_) => None,
        };
        match reason {
            Some(reason) => reason,
            // The supervisor is gone: nothing will block any more.
            None => std::future::pending().await,
        }
    }

    /// Publishes one serialized event and waits for the broker's confirm.
    pub async fn publish(&self, event: &Outgoing) -> Result<(), PublishError> {
        let link = self.usable_link()?;
        let channel = self.next_channel(&link);
        let until = tokio::time::Instant::now() + self.inner.settings.confirm_timeout;
        let confirm = async {
            send(&self.inner.settings.exchange, channel, event)
                .await?
                .await
        };
        tokio::select! {
            answer = tokio::time::timeout_at(until, confirm) => self.settle(&link, answer),
            reason = self.blocked() => Err(PublishError::Blocked(reason)),
        }
    }

    /// Publishes events in order on one channel, all confirms in flight at
    /// once, and returns each one's outcome in the same order. RabbitMQ keeps
    /// a channel's order, so a drained spool reaches the queue oldest first
    /// without paying one round trip per event.
    pub async fn publish_in_order(&self, events: &[&Outgoing]) -> Vec<Result<(), PublishError>> {
        let link = match self.usable_link() {
            Ok(link) => link,
            Err(error) => return events.iter().map(|_| Err(error.clone())).collect(),
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
                Ok(confirm) => tokio::select! {
                    answer = tokio::time::timeout_at(until, confirm) => answer,
                    reason = self.blocked() => {
                        outcomes.push(Err(PublishError::Blocked(reason)));
                        continue;
                    }
                },
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
            Ok(Ok(Confirmation::Nack(_))) => {
                // RabbitMQ nacks what a queue cannot take: a quorum queue
                // without a leader, a length limit with reject-publish. A
                // channel that began publishing to a quorum queue while its
                // leader was down keeps nacking even after a new leader is
                // elected (seen on RabbitMQ 3.10 after a node was killed), so
                // rebuild the link: fresh channels find the current leader.
                self.mark_broken(link);
                Err(PublishError::Nacked)
            }
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
            self.inner.state.send_replace(LinkState::Down(None));
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

async fn supervise(inner: Arc<Inner>, stop: CancellationToken) {
    let endpoints = &inner.settings.endpoints;
    // A random first endpoint spreads replicas over a cluster's nodes.
    let mut at = fastrand::usize(..endpoints.len());
    let move_on = |at: &mut usize| {
        if endpoints.len() > 1 {
            *at = (*at + 1) % endpoints.len();
            inner.metrics.failovers.inc();
        }
    };
    let mut backoff = Duration::from_millis(100);
    loop {
        if stop.is_cancelled() {
            break;
        }
        let endpoint = &endpoints[at];
        let attempt = tokio::time::timeout(
            inner.settings.connect_timeout,
            connect(&inner.settings, endpoint),
        );
        let failure = tokio::select! {
            result = attempt => match result {
                Ok(Ok(link)) => Ok(Arc::new(link)),
                Ok(Err(error)) => Err(error.to_string()),
                Err(_) => Err(format!("no answer within {:?}", inner.settings.connect_timeout)),
            },
            () = stop.cancelled() => break,
        };
        let link = match failure {
            Ok(link) => link,
            Err(reason) => {
                tracing::warn!(endpoint = %endpoint.name, error = %reason, retry_in_ms = backoff.as_millis() as u64, "Cannot connect to the broker.");
                inner.state.send_replace(LinkState::Down(Some(format!(
                    "{}: {reason}",
                    endpoint.name
                ))));
                if !back_off(&mut backoff, &stop).await {
                    break;
                }
                move_on(&mut at);
                continue;
            }
        };
        let connected_at = tokio::time::Instant::now();
        let mut events: Option<Events> = Some(Box::pin(link.connection.events_listener()));
        inner.link.store(Some(link.clone()));
        let gauge = inner.metrics.endpoint(&endpoint.name);
        gauge.set(1);
        if link.connection.status().blocked() {
            block(&inner, "blocked at connect".to_owned());
        } else {
            inner.state.send_replace(LinkState::Up);
        }
        tracing::info!(endpoint = %endpoint.name, exchange = %inner.settings.exchange, channels = link.channels.len(), "Connected to the broker.");

        // Stay here while the link is healthy.
        loop {
            tokio::select! {
                _ = inner.broken.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                () = stop.cancelled() => {}
                event = next_event(&mut events) => match event {
                    lapin::Event::ConnectionBlocked(reason) => block(&inner, reason),
                    lapin::Event::ConnectionUnblocked => {
                        tracing::info!(endpoint = %endpoint.name, "The broker unblocked publishing.");
                        inner.state.send_replace(LinkState::Up);
                    }
                    _ => {}
                },
            }
            let still_current = inner
                .link
                .load()
                .as_ref()
                .is_some_and(|l| Arc::ptr_eq(l, &link));
            let healthy = still_current
                && link.connection.status().connected()
                && link.channels.iter().all(|c| c.status().connected());
            if stop.is_cancelled() || !healthy {
                break;
            }
        }
        gauge.set(0);
        clear_if_current(&inner.link, &link);
        inner.state.send_replace(LinkState::Down(None));
        if stop.is_cancelled() {
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
        tracing::warn!(endpoint = %endpoint.name, "Broker connection lost; reconnecting.");
        let _ = tokio::time::timeout(
            Duration::from_millis(200),
            link.connection.close(320, "reconnecting".into()),
        )
        .await;
        move_on(&mut at);
        // A link that broke within a second (a broker that nacks everything,
        // a node that accepts and then drops us) is retried with the backoff,
        // so a persistent fault does not become a reconnect storm.
        if connected_at.elapsed() < Duration::from_secs(1) {
            if !back_off(&mut backoff, &stop).await {
                break;
            }
        } else {
            backoff = Duration::from_millis(100);
        }
    }
}

/// Waits out `backoff` and doubles it (to 5 s at most); false when asked to
/// stop meanwhile.
async fn back_off(backoff: &mut Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(*backoff) => {}
        () = stop.cancelled() => return false,
    }
    *backoff = (*backoff * 2).min(Duration::from_secs(5));
    true
}

/// Records that the broker blocked publishing, releasing waiting confirms.
fn block(inner: &Inner, reason: String) {
    tracing::warn!(reason = %reason, "The broker blocked publishing (a resource alarm); new events are spooled until it unblocks.");
    inner.metrics.blocked.inc();
    inner.state.send_replace(LinkState::Blocked(reason));
}

type Events = std::pin::Pin<Box<dyn futures_core::Stream<Item = lapin::Event> + Send>>;

/// The next connection event; pending forever once the stream has ended
/// (the connection is gone, which the supervisor's health check sees).
async fn next_event(events: &mut Option<Events>) -> lapin::Event {
    if let Some(stream) = events {
        if let Some(event) = std::future::poll_fn(|cx| stream.as_mut().poll_next(cx)).await {
            return event;
        }
    }
    *events = None;
    std::future::pending().await
}

async fn connect(settings: &BrokerSettings, endpoint: &Endpoint) -> Result<Link, lapin::Error> {
    let connection = crate::broker::open(endpoint, &settings.tls, "hookgate").await?;
    declare_topology(&connection, &settings.exchange).await?;
    if let Some(archive) = &settings.archive {
        if let Err(error) = crate::archive::declare(&connection, &settings.exchange, archive).await
        {
            // Events still flow; only the archive misses them.
            tracing::error!(stream = %archive.stream, error = %error, "Cannot declare the archive stream; events are published but not archived.");
        }
    }
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

/// Declares the event exchange and its alternate exchange (durable;
/// redeclaring with the same arguments is a no-op), then the queue that keeps
/// unroutable events. Exchanges are cluster-wide metadata, so a failure there
/// is a failed connection; the queue lives on nodes that may be down, so a
/// failure there is logged and the connection is used anyway (what the
/// broker cannot park is still confirmed, as for any unbound key).
pub async fn declare_topology(connection: &Connection, exchange: &str) -> Result<(), lapin::Error> {
    let unroutable = format!("{exchange}.unroutable");
    let channel = connection.create_channel().await?;
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
    let mut args = FieldTable::default();
    args.insert(
        "alternate-exchange".into(),
        AMQPValue::LongString(LongString::from(unroutable.as_bytes().to_vec())),
    );
    channel
        .exchange_declare(exchange.into(), ExchangeKind::Topic, durable, args)
        .await?;
    let _ = channel.close(200, "exchanges declared".into()).await;
    if let Err(error) = declare_parking_queue(connection, &unroutable).await {
        tracing::warn!(queue = %unroutable, error = %error, "Cannot declare the queue for unroutable events (its node may be down); publishing anyway.");
    }
    Ok(())
}

/// The durable queue behind the alternate exchange: a quorum queue, so it
/// survives the loss of a node like the consumers' queues do. A classic queue
/// of that name from an older deployment is kept as it is (RabbitMQ refuses
/// to redeclare a queue with another type, and converting means a new queue).
async fn declare_parking_queue(connection: &Connection, queue: &str) -> Result<(), lapin::Error> {
    let mut channel = connection.create_channel().await?;
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from(&b"quorum"[..])),
    );
    let declared = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            args,
        )
        .await;
    match declared {
        Ok(_) => {}
        Err(error) if precondition_failed(&error) => {
            // The broker closed the channel; the existing queue stays.
            channel = connection.create_channel().await?;
        }
        Err(error) => return Err(error),
    }
    channel
        .queue_bind(
            queue.into(),
            queue.into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let _ = channel.close(200, "parking queue declared".into()).await;
    Ok(())
}

/// Whether the broker refused a declaration as inequivalent to what exists.
fn precondition_failed(error: &lapin::Error) -> bool {
    const PRECONDITION_FAILED: u16 = 406;
    matches!(error.kind(), lapin::ErrorKind::ProtocolError(e) if e.get_id() == PRECONDITION_FAILED)
}
