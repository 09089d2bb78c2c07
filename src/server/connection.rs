//! One client connection: the TLS-or-plain stream behind one type, the
//! first bytes' deadline, and the activity the idle deadline watches.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

/// A client connection, TLS or plain, behind one type so that everything
/// after the handshake is written once. The dynamic call per read or write
/// is noise next to the syscall it wraps.
pub(super) trait ClientStream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> ClientStream for T {}

/// Requests in progress on one connection, and when the last one ended:
/// what the idle deadline watches. A connection is idle only while no
/// request is in progress, however long a request takes.
pub(super) struct Activity {
    opened: Instant,
    /// Whether any request head has arrived complete.
    began: AtomicBool,
    in_flight: AtomicUsize,
    /// When the last request ended, in ms since `opened`.
    last_ended_ms: AtomicU64,
}

/// Marks one request in progress; dropping it (also when hyper drops a
/// cancelled request) ends the request.
pub(super) struct Busy(Arc<Activity>);

impl Activity {
    pub(super) fn new() -> Self {
        Self {
            opened: Instant::now(),
            began: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            last_ended_ms: AtomicU64::new(0),
        }
    }

    pub(super) fn begin(self: &Arc<Self>) -> Busy {
        self.began.store(true, Ordering::Release);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        Busy(self.clone())
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Starts the idle period over, as if a request had just ended: a
    /// closing connection gets one more idle period to finish its goodbye.
    pub(super) fn restart_idle_clock(&self) {
        self.last_ended_ms
            .fetch_max(self.elapsed_ms(), Ordering::AcqRel);
    }

    /// Resolves once the connection has had no request in progress for
    /// `limit` (`before_first` until a first request head has arrived
    /// complete); never while one is. HTTP/1 has hyper's header deadline; an
    /// HTTP/2 client that sends its preface and then an unfinished header
    /// block is held only `before_first` (the header timeout) this way.
    pub(super) async fn idle_for(&self, before_first: Duration, limit: Duration) {
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
pub(super) async fn first_bytes<IO>(
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
pub(super) struct ClientIo<IO> {
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
