//! The local spool: events kept on disk while the broker is away.
//!
//! hookgate answers a vendor 200 only once an event is safe. When RabbitMQ
//! cannot confirm it, "safe" means durably written here; a drain task later
//! publishes the spooled events in arrival order and removes each one after
//! the broker confirmed it.
//!
//! One redb file, `spool.redb` (ACID commits with `fsync`, checksummed pages,
//! crash recovery on open), written by one thread (`writer.rs`) that groups
//! concurrent appends into one commit. An append is answered only after its
//! `fsync`; removals ride along with the next commit, so a crash can at most
//! publish an event twice (consumers de-duplicate on its id), never lose one.
//! `max_bytes` bounds the stored events; a full spool refuses the append
//! ([`SpoolError::Full`]) and the vendor is asked to retry.
//!
//! The on-disk format, group commit, crash cases, write-error recovery and the
//! bound are described in `docs/design/spool.md`.

use std::future::Future;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::store::{cause, now_ms};

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
#[derive(Debug, Clone, thiserror::Error)]
pub enum SpoolError {
    /// Storing the entry would exceed the configured bound; nothing was stored,
    /// so the caller must not answer the vendor 200.
    #[error("spool is full (max_bytes = {max_bytes})")]
    Full {
        /// The configured bound.
        max_bytes: u64,
    },
    /// The disk or database failed.
    #[error("{context}: {source}")]
    Io {
        /// The spool directory and what was being done (`spool /var/spool: cannot commit`).
        context: String,
        /// What failed underneath (redb, the file system).
        #[source]
        source: crate::store::Cause,
    },
    /// The file cannot be read as a spool (written by a newer hookgate, or
    /// damaged); the message names the spool directory.
    #[error("{0}")]
    Corrupt(String),
    /// One stored entry cannot be decoded; the others can. Its sequence
    /// number is kept so the drain can skip it rather than stall behind it.
    #[error("spool {dir}: entry {seq}: {why}")]
    CorruptEntry {
        /// The spool directory, for the message.
        dir: String,
        /// The entry's sequence number: the handle for [`Spool::remove`].
        seq: u64,
        /// What is wrong with it.
        why: String,
    },
}

/// What a spool can hold: an entry that writes itself to bytes and reads
/// itself back. The spool adds its own header (enqueue time, attempts) and
/// never looks inside; the main spool holds [`Outgoing`] events, the
/// pending-look-up store holds what a deferred look-up needs.
pub trait SpoolEntry: Sized + Send + 'static {
    /// Appends this entry's bytes to `out`; `Err` says why it cannot be stored.
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), String>;
    /// Reads an entry back from what [`SpoolEntry::encode`] wrote; the error
    /// says what is wrong with the bytes.
    fn decode(bytes: &[u8]) -> Result<Self, String>;
}

/// One stored entry as the task that empties the spool sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spooled<E = Outgoing> {
    /// Sequence number: the handle for [`Spool::remove`] and [`Spool::bump_attempts`].
    pub seq: u64,
    /// The entry exactly as it was appended (for the main spool, the event
    /// exactly as the request path would have published it).
    pub entry: E,
    /// When it was spooled (Unix epoch milliseconds), for age metrics.
    pub enqueued_at_ms: u64,
    /// Failed publish attempts so far, for backoff and metrics.
    pub attempts: u32,
}

/// A spooled event, as the drain task publishes it.
pub type SpooledEvent = Spooled<Outgoing>;

/// What the spool holds right now; cheap to read, for metrics and readiness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SpoolStats {
    /// Stored entries.
    pub events: u64,
    /// Sum of key and encoded value sizes: the quantity `max_bytes` bounds.
    pub bytes: u64,
}

/// A crash-safe, bounded FIFO of entries (by default [`Outgoing`] events) on
/// local disk.
///
/// A cheap handle: clone it for the request path and the drain task. The
/// writer thread stops, after making every removal durable, when the last
/// handle is dropped; see [`Spool::close`] to do that off the async runtime.
pub struct Spool<E = Outgoing> {
    inner: Arc<Inner>,
    entries: PhantomData<fn() -> E>,
}

impl<E> Clone for Spool<E> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            entries: PhantomData,
        }
    }
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

impl<E: SpoolEntry> Spool<E> {
    /// Opens (creating the directory and `spool.redb` if needed) and counts what
    /// is already there, so the bound and the stats hold across restarts.
    ///
    /// Blocking: call it at start-up or from `spawn_blocking`. After a crash
    /// this includes redb's repair of the file.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self, SpoolError> {
        let io = |what: &str, e: crate::store::Cause| SpoolError::Io {
            context: format!("spool {}: {what}", dir.display()),
            source: e,
        };
        std::fs::create_dir_all(dir).map_err(|e| io("cannot create the directory", cause(e)))?;
        let db = open_file(dir).map_err(|e| io(&format!("cannot open {FILE_NAME}"), cause(e)))?;

        // Create the tables and check the format in one durable transaction.
        {
            let txn = db.begin_write().map_err(|e| io("cannot write", cause(e)))?;
            {
                let mut meta = txn
                    .open_table(META)
                    .map_err(|e| io("cannot write", cause(e)))?;
                let format = meta
                    .get("format")
                    .map_err(|e| io("cannot read", cause(e)))?
                    .map(|v| v.value());
                match format {
                    None => {
                        meta.insert("format", FORMAT)
                            .map_err(|e| io("cannot write", cause(e)))?;
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
                txn.open_table(EVENTS)
                    .map_err(|e| io("cannot write", cause(e)))?;
            }
            txn.commit().map_err(|e| io("cannot commit", cause(e)))?;
        }

        // Count what is there, as a reopen after a write error does.
        let (events, bytes, next_seq) = count(&db).map_err(|e| io("cannot read", cause(e)))?;

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
                .map_err(|e| io("cannot start the writer thread", cause(e)))?
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
            entries: PhantomData,
        })
    }

    /// Durably appends; returns only after the commit is `fsync`ed, so `Ok`
    /// means the event survives a crash. Concurrent callers share one commit
    /// (group commit). `Err(Full)` when `stats().bytes` plus this entry would
    /// exceed `max_bytes`; nothing is stored then.
    pub async fn append(&self, entry: &E) -> Result<u64, SpoolError> {
        let value = encode(entry, now_ms(), 0).map_err(|e| self.io(e))?;
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
    pub fn oldest(&self, limit: usize) -> Result<Vec<Spooled<E>>, SpoolError> {
        let state = &self.inner.state;
        let txn = {
            let db = state.db.read().unwrap_or_else(|p| p.into_inner());
            let db = db
                .as_ref()
                .ok_or_else(|| self.io("being reopened after a write error"))?;
            db.begin_read().map_err(|e| self.io(e))?
        };
        let table = txn.open_table(EVENTS).map_err(|e| self.io(e))?;
        let mut out = Vec::with_capacity(limit.min(1024));
        for entry in table.iter().map_err(|e| self.io(e))?.take(limit) {
            let (key, value) = entry.map_err(|e| self.io(e))?;
            let seq = key.value();
            let event = decode(seq, value.value()).map_err(|why| SpoolError::CorruptEntry {
                dir: state.dir.display().to_string(),
                seq,
                why,
            })?;
            out.push(event);
        }
        Ok(out)
    }

    /// [`Spool::oldest`] on the blocking pool, so the drain task never reads
    /// the disk on a runtime thread.
    pub async fn oldest_async(&self, limit: usize) -> Result<Vec<Spooled<E>>, SpoolError> {
        let spool = self.clone();
        tokio::task::spawn_blocking(move || spool.oldest(limit))
            .await
            .unwrap_or_else(|e| Err(self.io(e)))
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

    fn io(&self, e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> SpoolError {
        io_error(&self.inner.state.dir, e)
    }

    fn stopped(&self) -> SpoolError {
        self.io("the writer thread has stopped")
    }
}

impl<E: SpoolEntry> std::fmt::Debug for Spool<E> {
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

/// An I/O error of the spool in `dir`.
fn io_error(dir: &Path, e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> SpoolError {
    SpoolError::Io {
        context: format!("spool {}", dir.display()),
        source: cause(e),
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

/// Encodes one value: the spool's header (version, enqueue time, attempts),
/// then the entry's own bytes.
fn encode<E: SpoolEntry>(entry: &E, enqueued_at_ms: u64, attempts: u32) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(VALUE_HEADER + 256);
    out.push(VALUE_VERSION);
    out.extend_from_slice(&enqueued_at_ms.to_be_bytes());
    out.extend_from_slice(&attempts.to_be_bytes());
    entry.encode(&mut out)?;
    Ok(out)
}

/// Decodes one value; the error says what is wrong with it.
fn decode<E: SpoolEntry>(seq: u64, value: &[u8]) -> Result<Spooled<E>, String> {
    let mut reader = Reader { rest: value };
    let version = reader.take(1)?[0];
    if version != VALUE_VERSION {
        return Err(format!(
            "encoding version {version} is not supported (this hookgate reads {VALUE_VERSION})"
        ));
    }
    let enqueued_at_ms = u64::from_be_bytes(reader.take(8)?.try_into().expect("8 bytes"));
    let attempts = u32::from_be_bytes(reader.take(4)?.try_into().expect("4 bytes"));
    Ok(Spooled {
        seq,
        entry: E::decode(reader.rest)?,
        enqueued_at_ms,
        attempts,
    })
}

/// An event is stored as six length-prefixed fields: id, source, type, time,
/// routing key, body.
impl SpoolEntry for Outgoing {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), String> {
        let fields: [&[u8]; 6] = [
            self.id.as_bytes(),
            self.source.as_bytes(),
            self.event_type.as_bytes(),
            self.time.as_bytes(),
            self.routing_key.as_bytes(),
            &self.body,
        ];
        out.reserve(fields.iter().map(|f| 4 + f.len()).sum::<usize>());
        for field in fields {
            let len = u32::try_from(field.len())
                .map_err(|_| format!("a field of {} bytes is too large to spool", field.len()))?;
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(field);
        }
        Ok(())
    }

    fn decode(bytes: &[u8]) -> Result<Self, String> {
        let mut reader = Reader { rest: bytes };
        let id = reader.text("id")?;
        let source = reader.text("source")?;
        let event_type = reader.text("event_type")?;
        let time = reader.text("time")?;
        let routing_key = reader.text("routing_key")?;
        let body = reader.field()?.to_vec();
        if !reader.rest.is_empty() {
            return Err(format!("{} trailing bytes", reader.rest.len()));
        }
        Ok(Outgoing {
            id,
            source,
            event_type,
            time,
            routing_key,
            body,
        })
    }
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

mod writer;
use writer::Writer;

#[cfg(test)]
mod tests;
