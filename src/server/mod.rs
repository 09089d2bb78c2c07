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
//! both to [`Pipeline::process`] and turns the [`crate::pipeline::Outcome`] into a status and a
//! small JSON body. It never echoes secrets or internals.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use crate::body_budget::BodyBudget;
use crate::config::ServerSettings;
use crate::pipeline::Pipeline;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

mod connection;
mod handler;

use connection::{first_bytes, Activity, ClientStream};
use handler::handle;
pub(crate) use handler::json;

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
    /// Accepts until `shutdown` is cancelled, then lets in-flight requests finish
    /// (up to `drain`), and returns.
    pub async fn run(self, shutdown: CancellationToken, drain: Duration) {
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
            let Some(permit) = connection_slot(&limit, &shutdown).await else {
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
                () = shutdown.cancelled() => break,
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
            let stop = shutdown.clone();
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
                        () = stop.cancelled(), if !closing => "shutdown",
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
    shutdown: &CancellationToken,
) -> Option<OwnedSemaphorePermit> {
    tokio::select! {
        permit = slots.clone().acquire_owned() => permit.ok(),
        () = shutdown.cancelled() => None,
    }
}

/// HTTP/2 receive window per stream: what a client may send ahead of the
/// handler reading it. Webhook bodies are a few KiB; larger ones flow as the
/// handler reads.
pub const H2_STREAM_WINDOW: u32 = 64 * 1024;
/// HTTP/2 receive window per connection, across its streams.
pub const H2_CONNECTION_WINDOW: u32 = 256 * 1024;
