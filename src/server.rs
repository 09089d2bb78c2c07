//! The public listener: accept, TLS, HTTP, and the thin webhook handler.
//!
//! Every stage has a bound. A semaphore caps concurrent connections
//! (`server.max_connections`): beyond it, new connections wait in the kernel
//! backlog instead of costing memory. The TLS handshake runs inside the
//! connection's task under `server.handshake_timeout_ms`; the request head
//! must arrive within `server.header_timeout_ms` (slowloris); the body within
//! `server.body_timeout_ms` and under `server.max_body_bytes` (a declared
//! `Content-Length` over the cap is refused before any byte is read). Every
//! body, before its first byte is read, takes its size (the declared length,
//! else the cap) from one budget shared by all connections and streams,
//! `server.max_buffered_body_bytes`, and holds it until its request is
//! answered: a request that cannot get it within the body deadline gets 503.
//! HTTP/2 receive windows are small (64 KiB per stream, 256 KiB per
//! connection), so what a client pushes ahead of that budget stays bounded
//! per connection too. A
//! response write that makes no progress for `server.write_timeout_ms` (a
//! client that stopped reading) closes the connection, and so does
//! `server.idle_timeout_ms` without a request in progress: hyper closes an
//! idle HTTP/1 connection at the header deadline already, but an HTTP/2
//! client that answers pings would otherwise keep its slot forever.
//!
//! Idle and shutdown closes are polite: an HTTP/2 client gets a GOAWAY
//! naming the last request the gateway took, an HTTP/1 client the end of
//! its response in progress. A vendor whose request raced the close thus
//! learns it was never processed and can resend it at once, instead of
//! seeing its connection drop under an unanswered request. A client that
//! does not finish the goodbye (an HTTP/2 client that never acknowledges
//! the closing PING) is cut off after one more idle period; shutdown waits
//! for every connection up to `server.drain_timeout_ms`.
//!
//! The handler only speaks HTTP: it parses the route, reads the body, hands
//! both to [`Pipeline::process`] and turns the [`Outcome`] into a status and a
//! small JSON body. It never echoes secrets or internals.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use crate::auth::{AuthError, Presented};
use crate::body_budget::BodyBudget;
use crate::config::{ServerSettings, Source, UNKNOWN_SOURCE};
use crate::pipeline::{Inbound, NotSafe, Outcome, Pipeline, Safe};
use crate::ratelimit::RetryAfter;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{
    HeaderValue, ALLOW, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE,
};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

/// What the accept loop needs, shared by every connection.
pub struct Listener {
    /// Bound socket.
    pub tcp: TcpListener,
    /// Limits fixed at start (connection cap, header timeout); everything
    /// else is read from the pipeline's current runtime per connection.
    pub settings: ServerSettings,
    /// The request path.
    pub pipeline: Arc<Pipeline>,
}

impl Listener {
    /// Accepts until `shutdown` flips, then lets in-flight requests finish
    /// (up to `drain`), and returns.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>, drain: Duration) {
        let limit = Arc::new(Semaphore::new(self.settings.max_connections));
        let per_address = crate::per_address::ConnectionsPerAddress::new(
            self.settings.max_connections_per_address,
            self.settings.ipv6_prefix_len,
            self.settings.trusted_proxies.clone(),
        );
        let bodies = Arc::new(BodyBudget::new(self.settings.max_buffered_body_bytes));
        let trimmer = tokio::spawn({
            let bodies = bodies.clone();
            async move { bodies.return_memory_after_bursts().await }
        });
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.settings.header_timeout)
            .max_buf_size(64 * 1024);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(64)
            .initial_stream_window_size(H2_STREAM_WINDOW)
            .initial_connection_window_size(H2_CONNECTION_WINDOW)
            .max_header_list_size(64 * 1024)
            .keep_alive_interval(Some(Duration::from_secs(30)));
        let builder = Arc::new(builder);
        let mut accept_backoff = Duration::from_millis(10);

        loop {
            let Some(permit) = connection_slot(&limit, &mut shutdown).await else {
                break;
            };
            let (stream, peer) = tokio::select! {
                accepted = self.tcp.accept() => match accepted {
                    Ok(pair) => { accept_backoff = Duration::from_millis(10); pair }
                    Err(error) => {
                        // Usually EMFILE: back off instead of spinning.
                        tracing::warn!(error = %error, "Accept failed.");
                        tokio::time::sleep(accept_backoff).await;
                        accept_backoff = (accept_backoff * 2).min(Duration::from_secs(1));
                        continue;
                    }
                },
                _ = shutdown.changed() => break,
            };
            let Some(counted) = per_address.open(peer.ip()) else {
                // Over its share: closed at once, the slot free for others.
                self.pipeline.metrics().connections_refused.inc();
                tracing::debug!(peer = %peer, "Connection refused: the address holds its limit of connections.");
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let pipeline = self.pipeline.clone();
            // TLS and timeouts come from the config in force when the connection opened.
            let runtime = pipeline.runtime();
            let tls = runtime.tls.clone();
            let handshake_timeout = runtime.server.handshake_timeout;
            let header_timeout = self.settings.header_timeout;
            let write_timeout = runtime.server.write_timeout;
            let idle_timeout = runtime.server.idle_timeout;
            let activity = Arc::new(Activity::new());
            let requests = activity.clone();
            let bodies = bodies.clone();
            let service = hyper::service::service_fn(move |req| {
                let pipeline = pipeline.clone();
                let bodies = bodies.clone();
                let busy = requests.begin();
                async move {
                    let response = handle(req, peer, pipeline, &bodies).await;
                    drop(busy);
                    Ok::<_, Infallible>(response)
                }
            });
            let builder = builder.clone();
            let mut stop = shutdown.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let _counted = counted;
                let stream: Box<dyn ClientStream> = match tls {
                    None => Box::new(stream),
                    Some(acceptor) => {
                        match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await
                        {
                            Ok(Ok(stream)) => Box::new(stream),
                            Ok(Err(error)) => {
                                tracing::debug!(peer = %peer, error = %error, "TLS handshake failed.");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(peer = %peer, "TLS handshake timed out.");
                                return;
                            }
                        }
                    }
                };
                let Some(io) = first_bytes(stream, header_timeout, write_timeout).await else {
                    return;
                };
                let conn = builder.serve_connection(TokioIo::new(io), service);
                tokio::pin!(conn);
                let mut closing = false;
                loop {
                    let why = tokio::select! {
                        _ = conn.as_mut() => break,
                        _ = activity.idle_for(header_timeout, idle_timeout) => {
                            if closing {
                                tracing::debug!(peer = %peer, "Connection cut off: the client did not finish closing.");
                                break;
                            }
                            "idle"
                        }
                        _ = stop.wait_for(|&stopping| stopping), if !closing => "shutdown",
                    };
                    tracing::debug!(peer = %peer, reason = why, "Closing the connection.");
                    conn.as_mut().graceful_shutdown();
                    activity.restart_idle_clock();
                    closing = true;
                }
            });
        }
        drop(self.tcp);
        // Every connection task holds a permit until it ends: holding them
        // all means every connection has closed.
        let every_slot = u32::try_from(self.settings.max_connections).unwrap_or(u32::MAX);
        if tokio::time::timeout(drain, limit.acquire_many(every_slot))
            .await
            .is_err()
        {
            tracing::warn!(
                drain_secs = drain.as_secs(),
                "Connections still open after the drain deadline; closing them."
            );
        }
        trimmer.abort();
    }
}

/// Waits for a free connection slot, or for shutdown (`None`). Both
/// listeners take a slot before they accept, so a flood of connections waits
/// in the kernel backlog instead of costing a task and a file descriptor each.
pub(crate) async fn connection_slot(
    slots: &Arc<Semaphore>,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<OwnedSemaphorePermit> {
    tokio::select! {
        permit = slots.clone().acquire_owned() => permit.ok(),
        _ = shutdown.changed() => None,
    }
}

/// A client connection, TLS or plain, behind one type so that everything
/// after the handshake is written once. The dynamic call per read or write
/// is noise next to the syscall it wraps.
trait ClientStream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> ClientStream for T {}

/// Requests in progress on one connection, and when the last one ended:
/// what the idle deadline watches. A connection is idle only while no
/// request is in progress, however long a request takes.
struct Activity {
    opened: Instant,
    /// Whether any request head has arrived complete.
    began: AtomicBool,
    in_flight: AtomicUsize,
    /// When the last request ended, in ms since `opened`.
    last_ended_ms: AtomicU64,
}

/// Marks one request in progress; dropping it (also when hyper drops a
/// cancelled request) ends the request.
struct Busy(Arc<Activity>);

impl Activity {
    fn new() -> Self {
        Self {
            opened: Instant::now(),
            began: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            last_ended_ms: AtomicU64::new(0),
        }
    }

    fn begin(self: &Arc<Self>) -> Busy {
        self.began.store(true, Ordering::Release);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        Busy(self.clone())
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Starts the idle period over, as if a request had just ended: a
    /// closing connection gets one more idle period to finish its goodbye.
    fn restart_idle_clock(&self) {
        self.last_ended_ms
            .fetch_max(self.elapsed_ms(), Ordering::AcqRel);
    }

    /// Resolves once the connection has had no request in progress for
    /// `limit` (`before_first` until a first request head has arrived
    /// complete); never while one is. HTTP/1 has hyper's header deadline; an
    /// HTTP/2 client that sends its preface and then an unfinished header
    /// block is held only `before_first` (the header timeout) this way.
    async fn idle_for(&self, before_first: Duration, limit: Duration) {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        loop {
            let limit_ms = if self.began.load(Ordering::Acquire) {
                ms(limit)
            } else {
                ms(before_first.min(limit))
            };
            let wait_ms = if self.in_flight.load(Ordering::Acquire) > 0 {
                limit_ms
            } else {
                let idle_ms = self
                    .elapsed_ms()
                    .saturating_sub(self.last_ended_ms.load(Ordering::Acquire));
                if idle_ms >= limit_ms {
                    return;
                }
                limit_ms - idle_ms
            };
            tokio::time::sleep(Duration::from_millis(wait_ms)).await;
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        // Record the end first, so an idle check that sees no request in
        // progress also sees when the last one ended.
        self.0.restart_idle_clock();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Waits for the client's first bytes, at most `deadline`, and for the whole
/// HTTP/2 preface when they begin like one. hyper's own header timeout starts
/// only once it reads a request head, and protocol detection (HTTP/1 or
/// HTTP/2) would otherwise wait forever on a client that connects and stays
/// silent, or sends part of a preface: each such client would hold a
/// connection slot. The stream comes back as the [`ClientIo`] hyper serves,
/// with writes bound by `write_timeout`.
async fn first_bytes<IO>(
    mut io: IO,
    deadline: Duration,
    write_timeout: Duration,
) -> Option<ClientIo<IO>>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let mut buf = Vec::with_capacity(8 * 1024);
    let read_enough = async {
        let mut chunk = [0u8; 8 * 1024];
        loop {
            let n = io.read(&mut chunk).await.ok().filter(|n| *n > 0)?;
            buf.extend_from_slice(&chunk[..n]);
            // Keep reading while what came could still be a partial HTTP/2
            // preface: version detection would wait for the rest with no deadline.
            let partial_preface = buf.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(&buf);
            if !partial_preface {
                return Some(());
            }
        }
    };
    tokio::time::timeout(deadline, read_enough)
        .await
        .ok()
        .flatten()?;
    Some(ClientIo {
        prefix: buf,
        at: 0,
        io,
        write_timeout,
        stalled: None,
    })
}

/// The client stream as hyper sees it. Reads replay the first bytes that
/// [`first_bytes`] already took, then read on. Writes fail once one has made
/// no progress for `write_timeout` (so do flushes and shutdowns, which write
/// too): a client that stops reading its responses would otherwise hold its
/// connection slot forever once the socket buffers fill; hyper then closes
/// the connection. The timer exists only while a write waits, so a
/// connection that writes freely allocates nothing for it.
struct ClientIo<IO> {
    prefix: Vec<u8>,
    at: usize,
    io: IO,
    write_timeout: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<IO> ClientIo<IO> {
    /// Passes a write's `poll` through, starting the stall timer when it is
    /// pending and turning a write pending past the limit into an error.
    fn guard<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.stalled = None;
            return poll;
        }
        let limit = self.write_timeout;
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if timer.as_mut().poll(cx).is_ready() {
            self.stalled = None;
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client read nothing for {limit:?} (server.write_timeout_ms)"),
            )));
        }
        Poll::Pending
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for ClientIo<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.at < self.prefix.len() {
            let n = buf.remaining().min(self.prefix.len() - self.at);
            let at = self.at;
            buf.put_slice(&self.prefix[at..at + n]);
            self.at += n;
            if self.at == self.prefix.len() {
                self.prefix = Vec::new();
                self.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for ClientIo<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write(cx, data);
        self.guard(cx, poll)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.io).poll_flush(cx);
        self.guard(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.io).poll_shutdown(cx);
        self.guard(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.guard(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

type HttpResponse = Response<Full<Bytes>>;

/// HTTP/2 receive window per stream: what a client may send ahead of the
/// handler reading it. Webhook bodies are a few KiB; larger ones flow as the
/// handler reads.
pub const H2_STREAM_WINDOW: u32 = 64 * 1024;
/// HTTP/2 receive window per connection, across its streams.
pub const H2_CONNECTION_WINDOW: u32 = 256 * 1024;

/// Routes one request; see the README's status code table.
async fn handle(
    req: Request<Incoming>,
    peer: SocketAddr,
    pipeline: Arc<Pipeline>,
    bodies: &BodyBudget,
) -> HttpResponse {
    let started = Instant::now();
    let received_at = SystemTime::now();
    let rt = pipeline.runtime();
    let settings = &rt.server;
    // Every request is counted and logged once; those that name no
    // configured source (a wrong path, a probe) as source `unknown`, an id
    // no source may have.
    let answer = |source_id: &str, event: Option<Receipt>, response: HttpResponse| {
        pipeline
            .metrics()
            .request(source_id, response.status().as_u16());
        log(source_id, started, event, response)
    };
    let unknown = |response: HttpResponse| answer(UNKNOWN_SOURCE, None, response);
    let (parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // An answer before the body is read waits for the rest of a small body
    // (see `discard_body`).
    let http2 = parts.version == hyper::Version::HTTP_2;
    let early = |body: Incoming| discard_body(body, http2, declared, settings);
    let Some((source_id, token)) = parse_route(parts.uri.path()) else {
        early(body).await;
        return unknown(error(StatusCode::NOT_FOUND, "not found"));
    };
    if parts.method != Method::POST {
        early(body).await;
        let mut resp = error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
        resp.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("POST"));
        return unknown(resp);
    }
    // The per-address limit comes first, so probing for source ids costs
    // budget like any other request; its 429 is answered at once (reading
    // bodies for a flood would spend what the limit saves).
    let client_ip = match pipeline.admit(&rt, peer.ip(), &parts.headers) {
        Ok(ip) => ip,
        Err(retry) => return unknown(too_many(retry)),
    };
    let Some(source) = pipeline.lookup(&rt, source_id, token.is_some()) else {
        early(body).await;
        return unknown(error(StatusCode::NOT_FOUND, "not found"));
    };
    let token = token.map(str::to_owned);
    let finish =
        |event: Option<Receipt>, response: HttpResponse| answer(&source.id, event, response);

    // Credentials that need no body are checked before any of it is read.
    let head = Presented {
        headers: &parts.headers,
        token: token.as_deref(),
        client_ip,
        now: received_at,
    };
    if let Err(reason) = pipeline.check_head(&source, &head) {
        early(body).await;
        return finish(None, refusal(&source, reason));
    }
    if declared.is_some_and(|n| n > settings.max_body_bytes as u64) {
        early(body).await;
        return finish(None, error(StatusCode::PAYLOAD_TOO_LARGE, "body too large"));
    }
    // The body's share of the budget, held until the answer is sent.
    let deadline = tokio::time::Instant::now() + settings.body_timeout;
    let want = declared.map_or(settings.max_body_bytes, |n| n as usize);
    // Config bounds both to u32; a larger value could never be granted and
    // would end in the 503 below, not a panic.
    let want = u32::try_from(want).unwrap_or(u32::MAX);
    let Some(_budget) = bodies.take(want, deadline).await else {
        tracing::warn!(source = %source.id, "Body budget exhausted; answering 503.");
        let mut resp = error(StatusCode::SERVICE_UNAVAILABLE, "busy; retry later");
        resp.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static("1"));
        return finish(None, resp);
    };
    let read = Limited::new(body, settings.max_body_bytes).collect();
    let body = match tokio::time::timeout_at(deadline, read).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return finish(None, error(StatusCode::PAYLOAD_TOO_LARGE, "body too large"));
        }
        Ok(Err(_)) => {
            return finish(
                None,
                error(StatusCode::BAD_REQUEST, "body could not be read"),
            )
        }
        Err(_) => {
            return finish(
                None,
                error(StatusCode::REQUEST_TIMEOUT, "body not received in time"),
            )
        }
    };

    let inbound = Inbound {
        token,
        headers: parts.headers,
        client_ip,
        body,
        received_at,
    };
    // Once the body is in, the event's fate no longer depends on the client:
    // a vendor that hangs up while we wait for the confirm must not cancel
    // the dedup claim, the metrics or the log line of an event that reached
    // the broker (its retry would otherwise be published twice).
    let task = {
        let (pipeline, source) = (pipeline.clone(), source.clone());
        tokio::spawn(async move { pipeline.process(&source, inbound).await })
    };
    let outcome = match task.await {
        Ok(outcome) => outcome,
        Err(panicked) => {
            tracing::error!(source = %source.id, error = %panicked, "Request processing panicked.");
            return finish(
                None,
                error(StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
            );
        }
    };
    let (event, response) = match outcome {
        Outcome::Unauthorized(reason) => (None, refusal(&source, reason)),
        outcome => respond(outcome),
    };
    finish(event.as_ref().map(EventAnswer::receipt), response)
}

/// The event a request was answered about, for its log line.
struct EventAnswer {
    event_id: String,
    /// A repeat of an accepted event, answered 200 without publishing.
    duplicate: bool,
    /// Where an accepted event is safe.
    safe: Option<Safe>,
}

impl EventAnswer {
    fn receipt(&self) -> Receipt<'_> {
        Receipt {
            event_id: &self.event_id,
            duplicate: self.duplicate,
            safe: self.safe,
        }
    }
}

/// [`EventAnswer`] borrowed for the log line.
#[derive(Clone, Copy)]
struct Receipt<'a> {
    event_id: &'a str,
    duplicate: bool,
    safe: Option<Safe>,
}

/// The answer to a request refused by authentication, logged with its reason.
/// A source that requires several methods is told only that authentication
/// failed (the log line and `hookgate_auth_failures_total` say which), so a
/// caller cannot learn that one of its guesses was right.
fn refusal(source: &Source, reason: AuthError) -> HttpResponse {
    tracing::info!(source = %source.id, reason = reason.reason(), "Request refused by authentication.");
    let status = match reason {
        AuthError::IpNotAllowed => StatusCode::FORBIDDEN,
        _ => StatusCode::UNAUTHORIZED,
    };
    let several = source.auth.method_count() > 1;
    let text = if several && status == StatusCode::UNAUTHORIZED {
        "authentication failed".to_owned()
    } else {
        reason.to_string()
    };
    let mut resp = error(status, &text);
    let challenge = if several {
        status == StatusCode::UNAUTHORIZED && source.auth.methods().basic.is_some()
    } else {
        reason.wants_basic_challenge()
    };
    if challenge {
        resp.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"hookgate\""),
        );
    }
    resp
}

/// 429 with the limiter's own wait as `Retry-After`.
fn too_many(retry: RetryAfter) -> HttpResponse {
    let seconds = retry.header_seconds();
    let body =
        serde_json::json!({ "error": "rate limit exceeded", "retry_after_seconds": seconds });
    let mut resp = json(StatusCode::TOO_MANY_REQUESTS, body.to_string());
    resp.headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(seconds));
    resp
}

/// Bodies up to this size are read and dropped before an early answer.
pub const DISCARD_BODY_BYTES: usize = 1024 * 1024;

/// Over HTTP/2, reads and drops what a client still sends of a body the
/// gateway answers without reading (404, 405, a refusal by the head, 413 by
/// declared length), when it declares at most [`DISCARD_BODY_BYTES`],
/// within `server.body_timeout_ms`; nothing is kept. An HTTP/2 answer sent
/// while the client is still sending ends its stream with
/// RST_STREAM(NO_ERROR), which is correct (RFC 9113 §8.1) but which Debian
/// 12's curl 7.88 reports as `curl: (92)` with no status in most tries. A
/// body declared larger is answered at once: reading it would spend more
/// than the answer is worth. HTTP/1 clients read an early answer as it is,
/// so they get it without waiting for their body.
async fn discard_body(
    body: Incoming,
    http2: bool,
    declared: Option<u64>,
    settings: &ServerSettings,
) {
    if !http2 || declared.is_some_and(|n| n > DISCARD_BODY_BYTES as u64) {
        return;
    }
    let deadline = tokio::time::Instant::now() + settings.body_timeout;
    let mut body = Limited::new(body, DISCARD_BODY_BYTES);
    while let Ok(Some(Ok(_frame))) = tokio::time::timeout_at(deadline, body.frame()).await {}
}

/// Turns the pipeline's verdict into a status and a safe body.
fn respond(outcome: Outcome) -> (Option<EventAnswer>, HttpResponse) {
    let about = |event_id: String, duplicate: bool, safe: Option<Safe>| {
        Some(EventAnswer {
            event_id,
            duplicate,
            safe,
        })
    };
    match outcome {
        Outcome::Accepted { event_id, safe } => {
            let body = receipt(&event_id, false);
            (
                about(event_id, false, Some(safe)),
                json(StatusCode::OK, body),
            )
        }
        // Answered by `refusal`, which knows the source.
        Outcome::Unauthorized(reason) => {
            (None, error(StatusCode::UNAUTHORIZED, &reason.to_string()))
        }
        Outcome::RateLimited(retry) => (None, too_many(retry)),
        Outcome::Duplicate { event_id } => {
            let body = receipt(&event_id, true);
            (about(event_id, true, None), json(StatusCode::OK, body))
        }
        Outcome::Unavailable { event_id, error: e } => {
            match e {
                // An operator must act: the spool is full or failing, and a
                // vendor that does not retry (Sticky) loses this event.
                NotSafe::SpoolFull | NotSafe::SpoolFailed(_) => {
                    tracing::error!(event_id = %event_id, reason = %e, "Event neither confirmed nor spooled; asking the vendor to retry.")
                }
                NotSafe::Publish(_) => {
                    tracing::warn!(event_id = %event_id, reason = %e, "Event not confirmed; asking the vendor to retry.")
                }
            }
            let mut resp = error(
                StatusCode::SERVICE_UNAVAILABLE,
                "event could not be stored; retry later",
            );
            resp.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("5"));
            (about(event_id, false, None), resp)
        }
    }
}

/// Splits `/webhooks/{source_id}[/{token}]`. Segments are matched raw, not
/// percent-decoded, so `%2F` or `..` can never reach another source.
fn parse_route(path: &str) -> Option<(&str, Option<&str>)> {
    let rest = path.strip_prefix("/webhooks/")?;
    let mut parts = rest.split('/');
    let source = parts.next().filter(|s| !s.is_empty())?;
    let token = match parts.next() {
        None => None,
        Some(t) if !t.is_empty() => Some(t),
        Some(_) => return None,
    };
    if parts.next().is_some() {
        return None;
    }
    Some((source, token))
}

/// A small JSON response; shared with the admin listener.
pub(crate) fn json(status: StatusCode, body: String) -> HttpResponse {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// The body of a 200, `{"id":...}` with `"duplicate":true` for a retry:
/// written straight from borrowed fields, since every accepted request
/// sends one.
fn receipt(event_id: &str, duplicate: bool) -> String {
    #[derive(serde::Serialize)]
    struct Receipt<'a> {
        id: &'a str,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        duplicate: bool,
    }
    serde_json::to_string(&Receipt {
        id: event_id,
        duplicate,
    })
    .unwrap_or_default()
}

fn error(status: StatusCode, reason: &str) -> HttpResponse {
    json(status, serde_json::json!({ "error": reason }).to_string())
}

/// One log line per routed request: never the path (it may hold a token),
/// never a header or a body.
fn log(
    source_id: &str,
    started: Instant,
    event: Option<Receipt>,
    mut response: HttpResponse,
) -> HttpResponse {
    let request_id = next_request_id();
    let status = response.status().as_u16();
    let latency_ms = latency_ms(started.elapsed());
    tracing::info!(
        request_id = %request_id,
        source = %source_id,
        status,
        event_id = event.map_or("", |e| e.event_id),
        duplicate = event.is_some_and(|e| e.duplicate),
        safe = event.and_then(|e| e.safe).map_or("", Safe::label),
        latency_ms,
        "Request handled."
    );
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

/// Milliseconds to the microsecond (`0.302`, not `0.30196900000000004`).
fn latency_ms(elapsed: Duration) -> f64 {
    elapsed.as_micros() as f64 / 1000.0
}

/// A process-unique request id: the start time of the process (so ids from
/// two runs differ) and a counter (so ids in one run are ordered).
fn next_request_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static EPOCH: OnceLock<u64> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(|| {
        SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    });
    format!("{epoch:x}-{:x}", COUNTER.fetch_add(1, Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::{latency_ms, parse_route};

    #[test]
    fn latency_is_logged_to_the_microsecond() {
        let elapsed = std::time::Duration::from_nanos(301_969_123);
        assert_eq!(latency_ms(elapsed), 301.969);
        assert_eq!(latency_ms(std::time::Duration::from_nanos(302_999)), 0.302);
    }

    #[test]
    fn routes_are_matched_raw() {
        assert_eq!(
            parse_route("/webhooks/usaepay-main"),
            Some(("usaepay-main", None))
        );
        assert_eq!(
            parse_route("/webhooks/sticky/abc"),
            Some(("sticky", Some("abc")))
        );
        assert_eq!(parse_route("/webhooks/"), None);
        assert_eq!(parse_route("/webhooks/a/"), None);
        assert_eq!(parse_route("/webhooks/a/b/c"), None);
        assert_eq!(parse_route("/webhooks//a"), None);
        assert_eq!(parse_route("/other/a"), None);
        assert_eq!(parse_route("/webhooks/a%2Fb"), Some(("a%2Fb", None)));
    }
}
