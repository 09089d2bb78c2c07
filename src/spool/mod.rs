//! The local spool: events kept on disk while the broker is away.
//!
//! hookgate answers a vendor 200 only once an event is safe. When RabbitMQ
//! cannot confirm it, "safe" means durably written here; a drain task later
//! publishes the spooled events in arrival order and removes each one after
//! the broker confirmed it.
//!
//! # Why redb
//!
//! A hand-written segment log would need its own framing, checksums, torn-write
//! recovery, and compaction to reclaim space from entries removed out of order
//! (a confirm for entry 7 may arrive before the one for entry 3). redb gives us
//! ACID transactions committed with `fsync`, checksummed pages with crash
//! recovery on open, and deletion that reuses freed pages, so none of that code
//! is ours to get wrong. The price is a B-tree per entry instead of a pure
//! append, which is irrelevant next to the `fsync` every append must pay anyway.
//!
//! # On-disk format
//!
//! ```text
//! {dir}/spool.redb            one redb database, opened by one process at a time
//!
//! table "events"  u64 -> bytes
//!   key    sequence number, assigned by the writer in arrival order, never reused
//!          (redb orders u64 keys numerically, so iteration order = arrival order)
//!   value  version 1, big-endian integers:
//!            u8   version = 1
//!            u64  enqueued_at_ms   (Unix epoch milliseconds)
//!            u32  attempts         (failed publishes so far; fixed offset 9)
//!            5 x (u32 len, UTF-8)  id, source, event_type, time, routing_key
//!            u32 len, bytes        body (the serialized CloudEvent)
//!
//! table "meta"    &str -> u64
//!   "format"      1; a spool with a higher number was written by a newer hookgate
//!   "next_seq"    the next sequence number to hand out
//! ```
//!
//! # Group commit
//!
//! One writer thread owns every write. [`Spool::append`], [`Spool::remove`] and
//! [`Spool::bump_attempts`] send a request over a channel and wait for its
//! answer. The writer takes everything queued (up to [`MAX_BATCH_ENTRIES`]
//! requests or [`MAX_BATCH_BYTES`] of appended values), applies it in one write
//! transaction, commits, and only then answers every waiter. N concurrent
//! appends thus cost about one `fsync`, not N.
//!
//! A batch that appends commits with [`Durability::Immediate`]: the appends'
//! callers are told "safe" only after the `fsync`. A batch of only removals
//! and attempt counts commits with [`Durability::None`] (written, not synced)
//! and is made durable by the next append's commit, or by an `fsync`-only
//! commit at most [`FLUSH_INTERVAL`] later, or when the writer stops. A drain
//! removing one confirmed event at a time therefore does not pay an `fsync`
//! per event. Losing such a removal in a crash only means the event is
//! published again, which consumers tolerate (see below); losing an append
//! would lose the event, so appends never take this shortcut.
//!
//! # What a crash can and cannot do
//!
//! - An append whose future returned `Ok` was `fsync`ed and survives a process
//!   crash or power loss (as far as the disk honours `fsync`).
//! - An append that had not returned may or may not be there; its caller has
//!   not answered the vendor, who will retry.
//! - A removal (or attempt count) from the last [`FLUSH_INTERVAL`] may be
//!   undone: the event is published again, a duplicate with the same id, which
//!   consumers de-duplicate by id.
//! - On open after a crash redb verifies and repairs the file; its time grows
//!   with the file, which the bound keeps small.
//!
//! # Write errors
//!
//! After an I/O error (a full disk, most often) redb refuses every later
//! operation on that handle, also once space is back. The writer therefore
//! drops the handle and opens the file again before its next batch (redb
//! repairs what the failed commit left), and keeps trying on every batch while
//! that fails. While writes fail, [`Spool::failing_for`] says for how long:
//! readiness answers 503, and past [`MAX_WRITE_FAILURE`] housekeeping stops
//! the process so its supervisor restarts it, rather than leaving a gateway
//! that can only refuse.
//!
//! # The bound
//!
//! `max_bytes` bounds the sum, over stored entries, of key size (8) plus encoded
//! value size: what the events need, not the file size (redb adds page and
//! tree overhead and keeps freed pages for reuse). An append that would push
//! the sum past the bound fails with [`SpoolError::Full`] and stores nothing;
//! the caller then answers the vendor with an error so the vendor retries.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::store::now_ms;

use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction,
};
use tokio::sync::{oneshot, Notify};

use crate::publish::Outgoing;

/// The events, keyed by sequence number.
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
/// Format version and the sequence counter.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// The database file inside the spool directory.
pub const FILE_NAME: &str = "spool.redb";
/// The spool layout this code reads and writes.
const FORMAT: u64 = 1;
/// Encoding version of one stored value.
const VALUE_VERSION: u8 = 1;
/// Bytes before the first length-prefixed field: version, enqueued_at_ms, attempts.
const VALUE_HEADER: usize = 1 + 8 + 4;
/// Offset of `attempts` inside a value.
const ATTEMPTS_OFFSET: usize = 1 + 8;
/// Size accounted for each key.
const KEY_SIZE: u64 = 8;

/// Most requests one write transaction takes, so one waiter's latency stays bounded.
pub const MAX_BATCH_ENTRIES: usize = 256;
/// Most appended bytes one write transaction takes (a single larger entry still goes alone).
pub const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Longest a removal or attempt count stays written but not `fsync`ed.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// redb's page cache: the spool is read front to back, a small cache is plenty.
const CACHE_BYTES: usize = 8 * 1024 * 1024;
/// How long writes may keep failing before the gateway stops to be restarted.
pub const MAX_WRITE_FAILURE: Duration = Duration::from_secs(300);

/// Why the spool could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// Storing the entry would exceed the configured bound; nothing was stored,
    /// so the caller must not answer the vendor 200.
    #[error("spool is full (max_bytes = {max_bytes})")]
    Full {
        /// The configured bound.
        max_bytes: u64,
    },
    /// The disk or database failed; the message names the spool directory.
    #[error("{0}")]
    Io(String),
    /// Stored data cannot be decoded (written by a newer hookgate, or damaged);
    /// the message names the spool directory and, for an entry, its sequence number.
    #[error("{0}")]
    Corrupt(String),
}

/// One stored event as the drain task sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpooledEvent {
    /// Sequence number: the handle for [`Spool::remove`] and [`Spool::bump_attempts`].
    pub seq: u64,
    /// The event exactly as the request path would have published it.
    pub outgoing: Outgoing,
    /// When it was spooled (Unix epoch milliseconds), for age metrics.
    pub enqueued_at_ms: u64,
    /// Failed publish attempts so far, for backoff and metrics.
    pub attempts: u32,
}

/// What the spool holds right now; cheap to read, for metrics and readiness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SpoolStats {
    /// Stored entries.
    pub events: u64,
    /// Sum of key and encoded value sizes: the quantity `max_bytes` bounds.
    pub bytes: u64,
}

/// A crash-safe, bounded FIFO of [`Outgoing`] events on local disk.
///
/// A cheap handle: clone it for the request path and the drain task. The
/// writer thread stops, after making every removal durable, when the last
/// handle is dropped; see [`Spool::close`] to do that off the async runtime.
#[derive(Clone)]
pub struct Spool {
    inner: Arc<Inner>,
}

/// Owns the writer thread: dropping it closes the channel and joins the thread.
struct Inner {
    state: Arc<State>,
    requests: Option<mpsc::Sender<Request>>,
    writer: Option<std::thread::JoinHandle<()>>,
}

/// What the handles and the writer thread share.
struct State {
    dir: PathBuf,
    /// The open file; `None` only while the writer reopens it.
    db: std::sync::RwLock<Option<Database>>,
    /// Whether the last commit failed, and since when.
    health: crate::store::write_health::WriteHealth,
    max_bytes: u64,
    events: AtomicU64,
    bytes: AtomicU64,
    /// Durable (fsynced) commits made by the writer thread.
    commits: AtomicU64,
    appended: Notify,
}

enum Request {
    Append {
        value: Vec<u8>,
        reply: oneshot::Sender<Result<u64, SpoolError>>,
    },
    Remove {
        seq: u64,
        reply: oneshot::Sender<Result<(), SpoolError>>,
    },
    Bump {
        seq: u64,
        reply: oneshot::Sender<Result<(), SpoolError>>,
    },
}

impl Request {
    fn appended_bytes(&self) -> usize {
        match self {
            Request::Append { value, .. } => value.len(),
            _ => 0,
        }
    }
}

impl Spool {
    /// Opens (creating the directory and `spool.redb` if needed) and counts what
    /// is already there, so the bound and the stats hold across restarts.
    ///
    /// Blocking: call it at start-up or from `spawn_blocking`. After a crash
    /// this includes redb's repair of the file.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Spool, SpoolError> {
        let io = |what: &str, e: &dyn std::fmt::Display| {
            SpoolError::Io(format!("spool {}: {what}: {e}", dir.display()))
        };
        std::fs::create_dir_all(dir).map_err(|e| io("cannot create the directory", &e))?;
        let db = open_file(dir).map_err(|e| io(&format!("cannot open {FILE_NAME}"), &e))?;

        // Create the tables and check the format in one durable transaction.
        {
            let txn = db.begin_write().map_err(|e| io("cannot write", &e))?;
            {
                let mut meta = txn.open_table(META).map_err(|e| io("cannot write", &e))?;
                let format = meta
                    .get("format")
                    .map_err(|e| io("cannot read", &e))?
                    .map(|v| v.value());
                match format {
                    None => {
                        meta.insert("format", FORMAT)
                            .map_err(|e| io("cannot write", &e))?;
                    }
                    Some(FORMAT) => {}
                    Some(other) => {
                        return Err(SpoolError::Corrupt(format!(
                            "spool {}: format {other} is not supported (this hookgate reads {FORMAT}); \
                             it was written by a newer version",
                            dir.display()
                        )));
                    }
                }
                txn.open_table(EVENTS).map_err(|e| io("cannot write", &e))?;
            }
            txn.commit().map_err(|e| io("cannot commit", &e))?;
        }

        // Count what is there, as a reopen after a write error does.
        let (events, bytes, next_seq) = count(&db).map_err(|e| io("cannot read", &e))?;

        let state = Arc::new(State {
            dir: dir.to_path_buf(),
            db: std::sync::RwLock::new(Some(db)),
            health: Default::default(),
            max_bytes,
            events: AtomicU64::new(events),
            bytes: AtomicU64::new(bytes),
            commits: AtomicU64::new(0),
            appended: Notify::new(),
        });
        let (requests, rx) = mpsc::channel();
        let writer = {
            let state = state.clone();
            std::thread::Builder::new()
                .name("hookgate-spool".into())
                .spawn(move || Writer::new(state, next_seq).run(rx))
                .map_err(|e| io("cannot start the writer thread", &e))?
        };
        tracing::info!(
            dir = %dir.display(),
            events,
            bytes,
            max_bytes,
            "Spool opened."
        );
        Ok(Spool {
            inner: Arc::new(Inner {
                state,
                requests: Some(requests),
                writer: Some(writer),
            }),
        })
    }

    /// Durably appends; returns only after the commit is `fsync`ed, so `Ok`
    /// means the event survives a crash. Concurrent callers share one commit
    /// (group commit). `Err(Full)` when `stats().bytes` plus this entry would
    /// exceed `max_bytes`; nothing is stored then.
    pub async fn append(&self, outgoing: &Outgoing) -> Result<u64, SpoolError> {
        let value = encode(outgoing, now_ms(), 0).map_err(|e| self.io(&e))?;
        let (reply, rx) = oneshot::channel();
        self.send(Request::Append { value, reply })?;
        rx.await.unwrap_or_else(|_| Err(self.stopped()))
    }

    /// Up to `limit` oldest entries, in arrival order: what the drain task
    /// publishes next.
    ///
    /// Blocking (reads the file); from async code use [`Spool::oldest_async`].
    /// An undecodable entry fails the call with [`SpoolError::Corrupt`] naming
    /// its sequence number rather than being skipped silently.
    pub fn oldest(&self, limit: usize) -> Result<Vec<SpooledEvent>, SpoolError> {
        let state = &self.inner.state;
        let txn = {
            let db = state.db.read().unwrap_or_else(|p| p.into_inner());
            let db = db
                .as_ref()
                .ok_or_else(|| self.io(&"being reopened after a write error"))?;
            db.begin_read().map_err(|e| self.io(&e))?
        };
        let table = txn.open_table(EVENTS).map_err(|e| self.io(&e))?;
        let mut out = Vec::with_capacity(limit.min(1024));
        for entry in table.iter().map_err(|e| self.io(&e))?.take(limit) {
            let (key, value) = entry.map_err(|e| self.io(&e))?;
            let seq = key.value();
            let event = decode(seq, value.value()).map_err(|why| {
                SpoolError::Corrupt(format!("spool {}: entry {seq}: {why}", state.dir.display()))
            })?;
            out.push(event);
        }
        Ok(out)
    }

    /// [`Spool::oldest`] on the blocking pool, so the drain task never reads
    /// the disk on a runtime thread.
    pub async fn oldest_async(&self, limit: usize) -> Result<Vec<SpooledEvent>, SpoolError> {
        let spool = self.clone();
        tokio::task::spawn_blocking(move || spool.oldest(limit))
            .await
            .unwrap_or_else(|e| Err(self.io(&e)))
    }

    /// Removes an entry after the broker confirmed it. Idempotent: removing an
    /// absent entry (twice, or after a replayed crash) is fine.
    ///
    /// Returns once committed, but not necessarily `fsync`ed: a crash within
    /// [`FLUSH_INTERVAL`] may bring the entry back, and it is published again.
    pub async fn remove(&self, seq: u64) -> Result<(), SpoolError> {
        let (reply, rx) = oneshot::channel();
        self.send(Request::Remove { seq, reply })?;
        rx.await.unwrap_or_else(|_| Err(self.stopped()))
    }

    /// Records a failed publish attempt, for backoff and metrics. A no-op for
    /// an entry that is gone. Like [`Spool::remove`], not immediately `fsync`ed.
    pub async fn bump_attempts(&self, seq: u64) -> Result<(), SpoolError> {
        let (reply, rx) = oneshot::channel();
        self.send(Request::Bump { seq, reply })?;
        rx.await.unwrap_or_else(|_| Err(self.stopped()))
    }

    /// Entries and accounted bytes right now. Cheap (two atomics, updated by
    /// each commit, recomputed on open), for metrics and for deciding whether
    /// the drain has work.
    pub fn stats(&self) -> SpoolStats {
        let state = &self.inner.state;
        SpoolStats {
            events: state.events.load(Ordering::Acquire),
            bytes: state.bytes.load(Ordering::Acquire),
        }
    }

    /// Resolves when an append has been committed, so the drain task can sleep
    /// until there is work.
    ///
    /// Meant for one waiter (the drain task). An append that happens while
    /// nobody waits is remembered, so the pattern "read `oldest`, found
    /// nothing, await `notified`" never misses one.
    pub fn notified(&self) -> impl Future<Output = ()> + '_ {
        self.inner.state.appended.notified()
    }

    /// The configured bound.
    pub fn max_bytes(&self) -> u64 {
        self.inner.state.max_bytes
    }

    /// The spool directory, for logs.
    pub fn dir(&self) -> &Path {
        &self.inner.state.dir
    }

    /// Drops this handle; if it was the last one, stops the writer thread
    /// (making pending removals durable) and closes the file on the blocking
    /// pool. When this returns after the last handle, the directory can be
    /// opened again. Dropping the last handle does the same, but blocks the
    /// current thread for up to one commit.
    pub async fn close(self) {
        crate::store::close_if_last(self.inner).await;
    }

    /// How long writes have been failing (a full disk, an I/O error), or
    /// `None` while they succeed: readiness and housekeeping act on it.
    pub fn failing_for(&self) -> Option<Duration> {
        self.inner.state.health.failing_for()
    }

    /// Durable commits made so far (each one `fsync`), for the group-commit test.
    #[cfg(test)]
    pub(crate) fn commit_count(&self) -> u64 {
        self.inner.state.commits.load(Ordering::Acquire)
    }

    fn send(&self, request: Request) -> Result<(), SpoolError> {
        self.inner
            .requests
            .as_ref()
            .ok_or_else(|| self.stopped())?
            .send(request)
            .map_err(|_| self.stopped())
    }

    fn io(&self, e: &dyn std::fmt::Display) -> SpoolError {
        SpoolError::Io(format!("spool {}: {e}", self.inner.state.dir.display()))
    }

    fn stopped(&self) -> SpoolError {
        SpoolError::Io(format!(
            "spool {}: the writer thread has stopped",
            self.inner.state.dir.display()
        ))
    }
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("dir", &self.inner.state.dir)
            .field("max_bytes", &self.inner.state.max_bytes)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the channel stops the writer after its current batch.
        drop(self.requests.take());
        if let Some(writer) = self.writer.take() {
            if writer.join().is_err() {
                tracing::error!(dir = %self.state.dir.display(), "Spool writer thread panicked.");
            }
        }
    }
}

/// The single writer: batches requests into transactions.
struct Writer {
    state: Arc<State>,
    next_seq: u64,
    /// A write failed: the handle is unusable until the file is opened again.
    reopen: bool,
    /// Since when a non-durable commit is waiting for an `fsync`.
    dirty_since: Option<Instant>,
}

/// A request's answer before the commit decides it.
type Outcome = Result<u64, SpoolError>;

impl Writer {
    fn new(state: Arc<State>, next_seq: u64) -> Self {
        Self {
            state,
            next_seq,
            reopen: false,
            dirty_since: None,
        }
    }

    fn run(mut self, rx: mpsc::Receiver<Request>) {
        let mut carry: Option<Request> = None;
        loop {
            let first = match carry.take() {
                Some(request) => request,
                None => match self.dirty_since {
                    None => match rx.recv() {
                        Ok(request) => request,
                        Err(mpsc::RecvError) => break,
                    },
                    Some(since) => {
                        let left = FLUSH_INTERVAL.saturating_sub(since.elapsed());
                        match rx.recv_timeout(left) {
                            Ok(request) => request,
                            Err(mpsc::RecvTimeoutError::Timeout) => {
                                self.flush();
                                continue;
                            }
                            Err(mpsc::RecvTimeoutError::Disconnected) => break,
                        }
                    }
                },
            };
            let mut batch_bytes = first.appended_bytes();
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH_ENTRIES {
                match rx.try_recv() {
                    Ok(request) => {
                        let size = request.appended_bytes();
                        if size > 0 && batch_bytes + size > MAX_BATCH_BYTES {
                            carry = Some(request);
                            break;
                        }
                        batch_bytes += size;
                        batch.push(request);
                    }
                    Err(_) => break,
                }
            }
            self.commit_batch(batch);
        }
        self.flush();
    }

    /// Applies a batch in one transaction, commits, then answers every waiter.
    fn commit_batch(&mut self, batch: Vec<Request>) {
        let has_append = batch.iter().any(|r| matches!(r, Request::Append { .. }));
        let durable = has_append
            || self
                .dirty_since
                .is_some_and(|since| since.elapsed() >= FLUSH_INTERVAL);
        let first_seq = self.next_seq;
        let mut events = self.state.events.load(Ordering::Acquire);
        let mut bytes = self.state.bytes.load(Ordering::Acquire);

        let result = self
            .reopen_if_needed()
            .and_then(|()| self.apply(&batch, durable, &mut events, &mut bytes));
        let outcomes = match result {
            Ok(outcomes) => {
                if self.state.health.succeeded() {
                    tracing::info!(dir = %self.state.dir.display(), "Spool writes succeed again.");
                }
                self.state.events.store(events, Ordering::Release);
                self.state.bytes.store(bytes, Ordering::Release);
                if durable {
                    self.state.commits.fetch_add(1, Ordering::AcqRel);
                    self.dirty_since = None;
                } else if self.dirty_since.is_none() {
                    self.dirty_since = Some(Instant::now());
                }
                outcomes
            }
            Err(e) => {
                // Nothing of the batch is stored; hand its sequence numbers out again.
                self.next_seq = first_seq;
                self.reopen = true;
                self.state.health.failed();
                tracing::error!(dir = %self.state.dir.display(), error = %e, "Spool commit failed.");
                batch.iter().map(|_| Err(self.io(&e))).collect()
            }
        };
        let appended = has_append
            && outcomes
                .iter()
                .zip(&batch)
                .any(|(o, r)| matches!(r, Request::Append { .. }) && o.is_ok());
        for (request, outcome) in batch.into_iter().zip(outcomes) {
            // A waiter that gave up (dropped its future) is not an error.
            match request {
                Request::Append { reply, .. } => {
                    let _ = reply.send(outcome);
                }
                Request::Remove { reply, .. } | Request::Bump { reply, .. } => {
                    let _ = reply.send(outcome.map(|_| ()));
                }
            }
        }
        if appended {
            self.state.appended.notify_one();
        }
    }

    /// After a failed write, drops the unusable handle and opens the file
    /// again (redb repairs it), then recounts what it holds: the failed
    /// commit is either wholly there or wholly not.
    fn reopen_if_needed(&mut self) -> Result<(), redb::Error> {
        if !self.reopen {
            return Ok(());
        }
        let mut slot = self.state.db.write().unwrap_or_else(|p| p.into_inner());
        // The old handle holds the file lock; it must go before the new open.
        *slot = None;
        let db = open_file(&self.state.dir)?;
        let (events, bytes, next_seq) = count(&db)?;
        *slot = Some(db);
        self.state.events.store(events, Ordering::Release);
        self.state.bytes.store(bytes, Ordering::Release);
        self.next_seq = self.next_seq.max(next_seq);
        self.reopen = false;
        tracing::info!(dir = %self.state.dir.display(), events, "Spool reopened after a write error.");
        Ok(())
    }

    /// Writes the batch into one transaction and commits it. `Err` means the
    /// whole transaction failed; per-request refusals (full, corrupt) are `Ok`
    /// outcomes of their own.
    fn apply(
        &mut self,
        batch: &[Request],
        durable: bool,
        events: &mut u64,
        bytes: &mut u64,
    ) -> Result<Vec<Outcome>, redb::Error> {
        let start = self.next_seq;
        let db = self.state.db.read().unwrap_or_else(|p| p.into_inner());
        let mut txn = db
            .as_ref()
            .ok_or(redb::Error::DatabaseClosed)?
            .begin_write()?;
        txn.set_durability(if durable {
            Durability::Immediate
        } else {
            Durability::None
        })?;
        let mut outcomes = Vec::with_capacity(batch.len());
        {
            let mut table = txn.open_table(EVENTS)?;
            for request in batch {
                let outcome = match request {
                    Request::Append { value, .. } => {
                        let size = KEY_SIZE + value.len() as u64;
                        if bytes.saturating_add(size) > self.state.max_bytes {
                            Err(SpoolError::Full {
                                max_bytes: self.state.max_bytes,
                            })
                        } else {
                            let seq = self.next_seq;
                            self.next_seq += 1;
                            table.insert(seq, value.as_slice())?;
                            *events += 1;
                            *bytes += size;
                            Ok(seq)
                        }
                    }
                    Request::Remove { seq, .. } => {
                        if let Some(old) = table.remove(*seq)? {
                            *events = events.saturating_sub(1);
                            *bytes = bytes.saturating_sub(KEY_SIZE + old.value().len() as u64);
                        }
                        Ok(*seq)
                    }
                    Request::Bump { seq, .. } => {
                        let current = table.get(*seq)?.map(|v| v.value().to_vec());
                        match current {
                            None => Ok(*seq),
                            Some(mut value) => match bump(&mut value) {
                                Ok(()) => {
                                    table.insert(*seq, value.as_slice())?;
                                    Ok(*seq)
                                }
                                Err(why) => Err(SpoolError::Corrupt(format!(
                                    "spool {}: entry {seq}: {why}",
                                    self.state.dir.display()
                                ))),
                            },
                        }
                    }
                };
                outcomes.push(outcome);
            }
        }
        if self.next_seq != start {
            store_next_seq(&txn, self.next_seq)?;
        }
        txn.commit()?;
        Ok(outcomes)
    }

    /// Makes pending non-durable commits durable: an `fsync`-only commit.
    fn flush(&mut self) {
        if self.dirty_since.is_none() {
            return;
        }
        if self.reopen {
            return;
        }
        let result = (|| -> Result<(), redb::Error> {
            let db = self.state.db.read().unwrap_or_else(|p| p.into_inner());
            let mut txn = db
                .as_ref()
                .ok_or(redb::Error::DatabaseClosed)?
                .begin_write()?;
            txn.set_durability(Durability::Immediate)?;
            txn.commit()?;
            Ok(())
        })();
        match result {
            Ok(()) => {
                self.state.commits.fetch_add(1, Ordering::AcqRel);
                self.dirty_since = None;
            }
            Err(e) => {
                // Keep dirty: the next batch or timeout tries again. The worst case is
                // replayed removals, i.e. duplicate publishes.
                self.dirty_since = Some(Instant::now());
                tracing::error!(dir = %self.state.dir.display(), error = %e, "Spool flush failed.");
            }
        }
    }

    fn io(&self, e: &dyn std::fmt::Display) -> SpoolError {
        SpoolError::Io(format!("spool {}: {e}", self.state.dir.display()))
    }
}

/// Opens (or creates) the spool's file, repairing it after a crash.
fn open_file(dir: &Path) -> Result<Database, redb::DatabaseError> {
    redb::Builder::new()
        .set_cache_size(CACHE_BYTES)
        .create(dir.join(FILE_NAME))
}

/// Entries, their accounted bytes and the next free sequence number.
fn count(db: &Database) -> Result<(u64, u64, u64), redb::Error> {
    let (mut events, mut bytes, mut next_seq) = (0u64, 0u64, 1u64);
    let txn = db.begin_read()?;
    if let Some(stored) = txn.open_table(META)?.get("next_seq")? {
        next_seq = stored.value().max(1);
    }
    let table = txn.open_table(EVENTS)?;
    for entry in table.iter()? {
        let (key, value) = entry?;
        events += 1;
        bytes += KEY_SIZE + value.value().len() as u64;
        next_seq = next_seq.max(key.value().saturating_add(1));
    }
    Ok((events, bytes, next_seq))
}

fn store_next_seq(txn: &WriteTransaction, next_seq: u64) -> Result<(), redb::Error> {
    let mut meta = txn.open_table(META)?;
    meta.insert("next_seq", next_seq)?;
    Ok(())
}

/// Encodes one value (see the module doc for the layout).
fn encode(outgoing: &Outgoing, enqueued_at_ms: u64, attempts: u32) -> Result<Vec<u8>, String> {
    let fields: [&[u8]; 6] = [
        outgoing.id.as_bytes(),
        outgoing.source.as_bytes(),
        outgoing.event_type.as_bytes(),
        outgoing.time.as_bytes(),
        outgoing.routing_key.as_bytes(),
        &outgoing.body,
    ];
    let size = VALUE_HEADER + fields.iter().map(|f| 4 + f.len()).sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.push(VALUE_VERSION);
    out.extend_from_slice(&enqueued_at_ms.to_be_bytes());
    out.extend_from_slice(&attempts.to_be_bytes());
    for field in fields {
        let len = u32::try_from(field.len())
            .map_err(|_| format!("a field of {} bytes is too large to spool", field.len()))?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(field);
    }
    Ok(out)
}

/// Decodes one value; the error says what is wrong with it.
fn decode(seq: u64, value: &[u8]) -> Result<SpooledEvent, String> {
    let mut reader = Reader { rest: value };
    let version = reader.take(1)?[0];
    if version != VALUE_VERSION {
        return Err(format!(
            "encoding version {version} is not supported (this hookgate reads {VALUE_VERSION})"
        ));
    }
    let enqueued_at_ms = u64::from_be_bytes(reader.take(8)?.try_into().expect("8 bytes"));
    let attempts = u32::from_be_bytes(reader.take(4)?.try_into().expect("4 bytes"));
    let id = reader.text("id")?;
    let source = reader.text("source")?;
    let event_type = reader.text("event_type")?;
    let time = reader.text("time")?;
    let routing_key = reader.text("routing_key")?;
    let body = reader.field()?.to_vec();
    if !reader.rest.is_empty() {
        return Err(format!("{} trailing bytes", reader.rest.len()));
    }
    Ok(SpooledEvent {
        seq,
        outgoing: Outgoing {
            id,
            source,
            event_type,
            time,
            routing_key,
            body,
        },
        enqueued_at_ms,
        attempts,
    })
}

/// Increments `attempts` in place (it has a fixed offset and width).
fn bump(value: &mut [u8]) -> Result<(), String> {
    match value.first() {
        Some(&VALUE_VERSION) if value.len() >= VALUE_HEADER => {}
        Some(&VALUE_VERSION) => return Err("truncated".into()),
        Some(version) => {
            return Err(format!(
                "encoding version {version} is not supported (this hookgate reads {VALUE_VERSION})"
            ))
        }
        None => return Err("empty value".into()),
    }
    let slot = &mut value[ATTEMPTS_OFFSET..ATTEMPTS_OFFSET + 4];
    let attempts = u32::from_be_bytes((&*slot).try_into().expect("4 bytes"));
    slot.copy_from_slice(&attempts.saturating_add(1).to_be_bytes());
    Ok(())
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.rest.len() < n {
            return Err("truncated".into());
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn field(&mut self) -> Result<&'a [u8], String> {
        let len = u32::from_be_bytes(self.take(4)?.try_into().expect("4 bytes"));
        self.take(len as usize)
    }

    fn text(&mut self, name: &str) -> Result<String, String> {
        let bytes = self.field()?;
        String::from_utf8(bytes.to_vec()).map_err(|_| format!("{name} is not UTF-8"))
    }
}

#[cfg(test)]
mod tests;
