//! The de-duplication window: answer a vendor's retry of an accepted event
//! with 200 without publishing it again.
//!
//! Every retry of one vendor event maps to the same canonical id
//! ([`crate::canonical::event_id`]); the window remembers the ids accepted over
//! the configured hours, on disk, so a restart in the middle of a vendor's
//! retry series does not forget them. An id is claimed ([`DedupWindow::claim`])
//! only once its event is safe (confirmed or spooled), so a 503 never makes the
//! vendor's retry look like a duplicate. The filter is per instance and best
//! effort: consumers still de-duplicate on the message id.
//!
//! One redb file, `dedup.redb`: a time-ordered table for expiry and the cap, an
//! id-ordered table for lookups, a format number. Claims are recorded at once
//! in memory and committed in batches by one writer thread (`writer.rs`), so the
//! request path never waits for an `fsync`; a crash forgets at most the last
//! [`FLUSH_INTERVAL`] of claims, which can only cause a duplicate publish,
//! never a lost event.
//!
//! The on-disk format, the durability trade-off and the memory and disk figures
//! measured are in `docs/design/dedup.md`.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use redb::{
    Database, Durability, ReadOnlyTable, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition, TableError,
};
use sha2::{Digest, Sha256};

/// Accepted ids in time order, keyed by `accepted_at_ms (BE) ++ id` (see the module doc).
const ACCEPTED: TableDefinition<Key, ()> = TableDefinition::new("accepted");
/// Accepted ids in id order: id → `accepted_at_ms`, for lookups.
const BY_ID: TableDefinition<Id, u64> = TableDefinition::new("by_id");
/// Format version.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// The database file inside the directory given to [`DedupWindow::open`].
pub const FILE_NAME: &str = "dedup.redb";
/// The layout this code reads and writes.
const FORMAT: u64 = 2;
/// Longest a claim waits in memory before the writer commits it: the most a
/// crash can forget (plus the commit in progress).
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(200);
/// Queued claims that make the writer commit without waiting for
/// [`FLUSH_INTERVAL`]. Large, because each new id dirties its own random leaf
/// of "by_id": the bigger the batch, the more claims share a leaf write
/// (4096 instead of 1024 cut the writer's CPU per claim by about a fifth
/// under load, measured with `scripts/bench`'s gateway run).
pub const MAX_BATCH: usize = 4096;
/// Most claims queued for the writer (fewer if `max_entries` is smaller: a
/// backlog beyond the cap is pointless). When the disk stalls, the oldest are
/// dropped beyond this, which bounds the memory of unsynced claims by a
/// constant: this many queued plus at most this many in the batch being
/// committed.
pub const MAX_BACKLOG: usize = 4 * MAX_BATCH;
/// redb's page cache, part of the process's memory. Small on purpose: a
/// lookup of a random id touches the root, a few branch pages and one leaf
/// of "by_id". The branch pages (about 400 in both tables, 1.5 MiB, for a
/// million ids) are hot and stay cached; the leaves are hit at random, so
/// caching them would take memory proportional to the window for little
/// gain. A leaf that is not cached is one `pread`, normally served from the
/// OS page cache (not counted in the process's RSS). "accepted" is appended
/// to at the end and trimmed at the front, touching few pages. redb gives
/// writes at most half of this; beyond that it writes dirty pages out early.
/// The cache fills as the file grows, so its size is what RSS gains over a
/// long run: with 4 MiB the gateway grew 31 -> 35 MiB from 100k to 1M
/// requests (13 %), with 2 MiB 30 -> 31 MiB (3 %) at the same throughput.
const CACHE_BYTES: usize = 2 * 1024 * 1024;
/// Oldest entries read and deleted per step when trimming, so a large
/// expiry (after a long downtime) needs bounded memory.
const TRIM_CHUNK: usize = 1024;
/// Domain separation for ids that are not UUIDs.
const HASH_DOMAIN: &[u8] = b"hookgate/dedup-id/v1\0";

/// An event id reduced to 16 bytes.
type Id = [u8; 16];
/// A table key: `accepted_at_ms` big-endian, then the id.
type Key = [u8; 24];
/// Milliseconds since the Unix epoch; injectable so tests control time.
type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// Why the window could not be opened or persisted.
///
/// None of these make an accepted event unsafe: the caller logs them and
/// carries on (at worst a retry is published again).
#[derive(Debug, thiserror::Error)]
pub enum DedupError {
    /// The disk or database failed.
    #[error("{context}: {source}")]
    Io {
        /// The file and what was being done (`dedup /var/dedup/dedup.redb: cannot commit`).
        context: String,
        /// What failed underneath (redb, the file system), or why claims stopped.
        #[source]
        source: crate::store::Cause,
    },
    /// The file cannot be read by this version (written by a newer hookgate,
    /// or not a de-duplication window); the message names the file.
    #[error("{0}")]
    Corrupt(String),
}

/// The ids of recently accepted events, in `{dir}/dedup.redb` (plus the
/// claims not yet committed there, in memory).
///
/// A cheap handle: clone it for every request task. Dropping the last handle
/// commits what is queued and stops the writer thread; [`DedupWindow::close`]
/// does that off the async runtime.
#[derive(Clone)]
pub struct DedupWindow {
    inner: Arc<Inner>,
}

/// Owns the writer thread: dropping it flushes, stops and joins the thread.
struct Inner {
    shared: Arc<Shared>,
    writer: Option<std::thread::JoinHandle<()>>,
}

/// What the handles and the writer thread share.
struct Shared {
    /// `{dir}/dedup.redb`, for messages.
    path: PathBuf,
    /// The open file; `None` only while the writer reopens it after a
    /// write error (redb refuses a handle that saw one, as the spool's doc says).
    db: std::sync::RwLock<Option<Database>>,
    /// Whether the last commit failed, and since when.
    health: crate::store::write_health::WriteHealth,
    window_ms: u64,
    max_entries: u64,
    clock: Clock,
    index: Mutex<Index>,
    /// Wakes the writer: a first queued claim, a full batch, a trim, closing.
    wake: Condvar,
    /// Rows in "by_id" after the last commit (or at open), for [`DedupWindow::len`].
    entries: AtomicU64,
    /// "by_id" as of the last commit, opened once by the writer and shared,
    /// so a lookup is a B-tree descent without beginning a read transaction
    /// and opening the table per request. `None` if that failed; lookups then
    /// open their own.
    snapshot: ArcSwapOption<ReadOnlyTable<Id, u64>>,
    /// Lookups in the file that failed, for rate-limiting their log lines.
    read_failures: AtomicU64,
    /// Transactions committed by the writer (each one `fsync`).
    commits: AtomicU64,
    /// Claims queued for the writer so far.
    queued: AtomicU64,
    /// Claims the writer is done with (committed, failed, or dropped from a
    /// backlog); equals `queued` when nothing is in flight.
    handled: AtomicU64,
    /// The last trim request ([`Index::trim_requests`]) the writer has carried out.
    trims_done: AtomicU64,
}

/// The in-memory state; every critical section is short and never spans an
/// `.await` or a disk access.
struct Index {
    /// Id → when it was claimed, for claims queued for the writer or in the
    /// batch it is committing: what [`DedupWindow::seen`] cannot find in the
    /// file yet. At most 2 × the backlog cap ids.
    unsynced: HashMap<Id, u64>,
    /// Claims not yet handed to the writer.
    pending: VecDeque<(u64, Id)>,
    /// When the oldest pending claim was queued.
    pending_since: Option<Instant>,
    /// Claims dropped from a full backlog since the writer last looked.
    dropped: u64,
    /// [`DedupWindow::expire`] asked the writer to trim the file.
    trim: bool,
    /// Trim requests so far; the writer reports the last one it served in
    /// [`Shared::trims_done`].
    trim_requests: u64,
    /// The last handle is gone: the writer commits what is left and stops.
    closing: bool,
    /// Why the last commit failed; cleared by the next successful one.
    failure: Option<String>,
    /// The writer thread has exited (after `closing`, or by a panic).
    stopped: bool,
}

impl DedupWindow {
    /// Opens (creating the directory and `dedup.redb` if needed) and drops what is older than `window` or beyond
    /// `max_entries`, so retries are recognised across restarts. The ids stay
    /// on disk: nothing is loaded into memory.
    ///
    /// `window` is how long an id is remembered: the longest vendor retry
    /// horizon plus a margin (the config's default is 72 h + 1 h).
    /// `max_entries` is a hard cap on the ids kept in the file (about 143
    /// bytes of disk each, see the module doc; memory does not depend on it);
    /// when it is reached the oldest ids are forgotten first.
    ///
    /// Blocking (redb repairs the file after a crash, expired ids are
    /// deleted): call it at start-up or from
    /// `spawn_blocking`.
    pub fn open(dir: &Path, window: Duration, max_entries: u64) -> Result<Self, DedupError> {
        Self::open_with_clock(dir, window, max_entries, Arc::new(crate::store::now_ms))
    }

    /// [`DedupWindow::open`] with a chosen clock, so tests control time.
    fn open_with_clock(
        dir: &Path,
        window: Duration,
        max_entries: u64,
        clock: Clock,
    ) -> Result<Self, DedupError> {
        let path = dir.join(FILE_NAME);
        let io = |what: &str, e: crate::store::Cause| DedupError::Io {
            context: format!("dedup {}: {what}", path.display()),
            source: e,
        };
        let table_error = |e: TableError| match e {
            TableError::TableTypeMismatch { .. } => DedupError::Corrupt(format!(
                "dedup {}: not a de-duplication window ({e})",
                path.display()
            )),
            other => io("cannot open a table", crate::store::cause(other)),
        };
        std::fs::create_dir_all(dir)
            .map_err(|e| io("cannot create the directory", crate::store::cause(e)))?;
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
            .map_err(|e| io("cannot open", crate::store::cause(e)))?;
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);

        // Check the format and drop what this window no longer covers, in
        // one durable transaction.
        let now = clock();
        let entries = {
            let txn = db
                .begin_write()
                .map_err(|e| io("cannot write", crate::store::cause(e)))?;
            let counts = {
                let mut meta = txn.open_table(META).map_err(table_error)?;
                let format = meta
                    .get("format")
                    .map_err(|e| io("cannot read", crate::store::cause(e)))?
                    .map(|v| v.value());
                match format {
                    // A new file, or one this code wrote.
                    None | Some(FORMAT) => {}
                    Some(other) if other > FORMAT => {
                        return Err(DedupError::Corrupt(format!(
                            "dedup {}: format {other} is not supported (this hookgate reads \
                             {FORMAT}); it was written by a newer version",
                            path.display()
                        )));
                    }
                    Some(other) => {
                        return Err(DedupError::Corrupt(format!(
                            "dedup {}: format {other} was written before the first release \
                             and is not read (this hookgate reads {FORMAT}); remove the file \
                             to start an empty window (only repeats of past events go \
                             undetected)",
                            path.display()
                        )));
                    }
                }
                let mut accepted = txn.open_table(ACCEPTED).map_err(table_error)?;
                let mut by_id = txn.open_table(BY_ID).map_err(table_error)?;
                if format.is_none() {
                    meta.insert("format", FORMAT)
                        .map_err(|e| io("cannot write", crate::store::cause(e)))?;
                }
                trim(&mut accepted, &mut by_id, now, window_ms, max_entries)
                    .map_err(|e| io("cannot trim", crate::store::cause(e)))?;
                by_id
                    .len()
                    .map_err(|e| io("cannot read", crate::store::cause(e)))?
            };
            txn.commit()
                .map_err(|e| io("cannot commit", crate::store::cause(e)))?;
            counts
        };
        let shared = Arc::new(Shared {
            path: path.clone(),
            db: std::sync::RwLock::new(Some(db)),
            health: Default::default(),
            window_ms,
            max_entries,
            clock,
            index: Mutex::new(Index {
                unsynced: HashMap::new(),
                pending: VecDeque::new(),
                pending_since: None,
                dropped: 0,
                trim: false,
                trim_requests: 0,
                closing: false,
                failure: None,
                stopped: false,
            }),
            wake: Condvar::new(),
            entries: AtomicU64::new(entries),
            snapshot: ArcSwapOption::empty(),
            read_failures: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            handled: AtomicU64::new(0),
            trims_done: AtomicU64::new(0),
        });
        shared.refresh_snapshot();
        let writer = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("hookgate-dedup".into())
                .spawn(move || writer(shared))
                .map_err(|e| io("cannot start the writer thread", crate::store::cause(e)))?
        };
        tracing::info!(
            file = %path.display(),
            entries,
            window_s = window.as_secs(),
            max_entries,
            "De-duplication window opened."
        );
        Ok(Self {
            inner: Arc::new(Inner {
                shared,
                writer: Some(writer),
            }),
        })
    }

    /// Whether `event_id` was accepted (claimed) within the window: if so, the
    /// request is a vendor's retry and is answered 200 with this id without
    /// publishing again.
    ///
    /// For the request path: a hash lookup under a short lock (claims not yet
    /// committed), then one B-tree lookup in the snapshot of "by_id" the
    /// writer published after its last commit, so no read transaction is
    /// begun and no `fsync` is waited for; a page missing from redb's cache
    /// is one `pread`. The entry's age is checked here, so an id past the
    /// window is not reported even if the file has not been trimmed yet. If the file
    /// cannot be read, the answer is `false` (the event is processed in full)
    /// and the failure is logged, rate-limited.
    pub fn seen(&self, event_id: &str) -> bool {
        let id = id_of(event_id);
        let shared = &self.inner.shared;
        let now = (shared.clock)();
        let unsynced = shared.lock().unsynced.get(&id).copied();
        if unsynced.is_some_and(|at| shared.live(at, now)) {
            return true;
        }
        match shared.stored(&id) {
            Ok(at) => at.is_some_and(|at| shared.live(at, now)),
            Err(error) => {
                shared.read_failed(&error);
                false
            }
        }
    }

    /// Records that `event_id`'s event is now safe (broker-confirmed or
    /// spooled), so later deliveries of it are recognised by [`DedupWindow::seen`].
    ///
    /// Takes effect at once (in memory) and returns without touching the
    /// disk: the writer thread commits claims in batches (see the module doc),
    /// so the request path pays no `fsync` and no read. Claiming an id that is
    /// already in the window keeps its original time (the vendor's retry
    /// horizon starts at the first delivery) and writes nothing.
    ///
    /// `Err` means the claim took effect in this process but may not survive a
    /// restart (the last commit failed, or the writer thread stopped); the
    /// event is still safe, so the caller logs it and answers 200 anyway.
    pub async fn claim(&self, event_id: &str) -> Result<(), DedupError> {
        let id = id_of(event_id);
        let shared = &self.inner.shared;
        let mut index = shared.lock();
        if shared.max_entries > 0 {
            // Read under the lock so queue order and time order agree.
            let now = (shared.clock)();
            let queued = index
                .unsynced
                .get(&id)
                .is_some_and(|&at| shared.live(at, now));
            if !queued {
                shared.queue(&mut index, now, id);
            }
        }
        shared.health(&index)
    }

    /// Asks the writer thread to delete, from the file, the ids older than the
    /// window and the oldest ids above the cap; returns without waiting.
    ///
    /// The writer already does this with every batch of claims, and
    /// [`DedupWindow::seen`] checks ages itself, so this exists to release
    /// disk space while no claims arrive. The gateway calls it periodically.
    /// When there is nothing to delete the writer commits nothing (no
    /// `fsync`). `Err` as for [`DedupWindow::claim`].
    pub async fn expire(&self) -> Result<(), DedupError> {
        let shared = &self.inner.shared;
        let mut index = shared.lock();
        if !index.trim {
            index.trim = true;
            index.trim_requests += 1;
            shared.wake.notify_one();
        }
        shared.health(&index)
    }

    /// How long commits have been failing (a full disk, an I/O error), or
    /// `None` while they succeed: readiness and housekeeping act on it.
    pub fn failing_for(&self) -> Option<Duration> {
        self.inner.shared.health.failing_for()
    }

    /// Ids in the file after the writer's last commit, for metrics and logs.
    /// Lags by up to one commit: claims not yet committed are not counted,
    /// and ids just past the window count until the next trim.
    pub fn len(&self) -> u64 {
        self.inner.shared.entries.load(Ordering::Acquire)
    }

    /// Whether [`DedupWindow::len`] is zero.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The database file, for logs.
    pub fn path(&self) -> &Path {
        &self.inner.shared.path
    }

    /// Drops this handle; if it was the last one, commits the queued claims,
    /// stops the writer thread and closes the file on the blocking pool. When
    /// this returns after the last handle, the directory can be opened again.
    /// Dropping the last handle does the same but blocks the current thread
    /// for up to one commit.
    pub async fn close(self) {
        crate::store::close_if_last(self.inner).await;
    }

    /// Transactions committed so far (each one `fsync`), for the batching test.
    #[cfg(test)]
    fn commit_count(&self) -> u64 {
        self.inner.shared.commits.load(Ordering::Acquire)
    }

    /// Claims held in memory because the file does not have them yet.
    #[cfg(test)]
    fn unsynced_count(&self) -> usize {
        self.inner.shared.lock().unsynced.len()
    }

    /// Waits until the writer is done with every claim queued and every trim
    /// requested so far.
    #[cfg(test)]
    async fn settle(&self) {
        let shared = &self.inner.shared;
        let trims = shared.lock().trim_requests;
        let deadline = Instant::now() + Duration::from_secs(20);
        while shared.handled.load(Ordering::Acquire) < shared.queued.load(Ordering::Acquire)
            || shared.trims_done.load(Ordering::Acquire) < trims
        {
            assert!(Instant::now() < deadline, "the writer did not catch up");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl std::fmt::Debug for DedupWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shared = &self.inner.shared;
        f.debug_struct("DedupWindow")
            .field("path", &shared.path)
            .field("window_ms", &shared.window_ms)
            .field("max_entries", &shared.max_entries)
            .field("len", &self.len())
            .finish()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        {
            let mut index = self.shared.lock();
            index.closing = true;
            self.shared.wake.notify_one();
        }
        if let Some(writer) = self.writer.take() {
            if writer.join().is_err() {
                tracing::error!(file = %self.shared.path.display(), "De-duplication writer thread panicked.");
            }
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Index> {
        // Nothing panics while holding the lock; if something did, the index
        // is still a valid (if incomplete) filter.
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether an entry accepted at `at` is still inside the window at `now`.
    fn live(&self, at: u64, now: u64) -> bool {
        at.saturating_add(self.window_ms) > now
    }

    /// When the file says `id` was accepted (whether or not that is still
    /// inside the window), as of the last commit: never waits for the commit
    /// in progress.
    fn stored(&self, id: &Id) -> Result<Option<u64>, redb::Error> {
        let table = match self.snapshot.load_full() {
            Some(table) => table,
            // Never stored back: only the writer may publish a snapshot, or
            // an older one could replace the one its commit just published.
            None => Arc::new(self.open_by_id()?),
        };
        Ok(table.get(id)?.map(|v| v.value()))
    }

    /// "by_id" as of the last commit.
    fn open_by_id(&self) -> Result<ReadOnlyTable<Id, u64>, redb::Error> {
        let db = self.db.read().unwrap_or_else(PoisonError::into_inner);
        let db = db.as_ref().ok_or(redb::Error::DatabaseClosed)?;
        Ok(db.begin_read()?.open_table(BY_ID)?)
    }

    /// Publishes "by_id" as just committed for [`Shared::stored`]. Must run
    /// after a commit and before its claims leave `unsynced`, so every claim
    /// is always visible in one of the two.
    fn refresh_snapshot(&self) {
        match self.open_by_id() {
            Ok(table) => self.snapshot.store(Some(Arc::new(table))),
            Err(error) => {
                self.snapshot.store(None);
                tracing::warn!(
                    file = %self.path.display(),
                    error = %error,
                    "De-duplication snapshot not refreshed; lookups open the file each time."
                );
            }
        }
    }

    /// After a failed commit: lets go of the lookup snapshot and the old
    /// handle (which holds the file lock) and opens the file again. A lookup
    /// may still hold the old snapshot for a moment, so the open is retried
    /// briefly before the batch is given up.
    fn reopen(&self) -> Result<(), redb::Error> {
        self.snapshot.store(None);
        let mut slot = self.db.write().unwrap_or_else(PoisonError::into_inner);
        *slot = None;
        let mut tries = 0;
        let db = loop {
            match redb::Builder::new()
                .set_cache_size(CACHE_BYTES)
                .create(&self.path)
            {
                Ok(db) => break db,
                Err(redb::DatabaseError::DatabaseAlreadyOpen) if tries < 20 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(e.into()),
            }
        };
        *slot = Some(db);
        drop(slot);
        self.refresh_snapshot();
        tracing::info!(file = %self.path.display(), "De-duplication file reopened after a write error.");
        Ok(())
    }

    /// Logs a failed lookup: the first, then the 2nd, 4th, 8th… so a broken
    /// disk cannot flood the log.
    fn read_failed(&self, error: &redb::Error) {
        let failures = self.read_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures.is_power_of_two() {
            tracing::warn!(
                file = %self.path.display(),
                error = %error,
                failures,
                "De-duplication lookup failed; the delivery is treated as new."
            );
        }
    }

    /// Records a claim as unsynced and hands it to the writer, waking it when
    /// the batch starts or fills.
    fn queue(&self, index: &mut Index, at: u64, id: Id) {
        index.unsynced.insert(id, at);
        index.pending.push_back((at, id));
        self.queued.fetch_add(1, Ordering::AcqRel);
        // A backlog beyond the cap is pointless (the cap would evict it from
        // the file anyway) and only grows while the disk stalls.
        let cap = usize::try_from(self.max_entries)
            .unwrap_or(usize::MAX)
            .min(MAX_BACKLOG);
        while index.pending.len() > cap {
            if let Some((at, id)) = index.pending.pop_front() {
                if index.unsynced.get(&id) == Some(&at) {
                    index.unsynced.remove(&id);
                }
            }
            index.dropped += 1;
            self.handled.fetch_add(1, Ordering::AcqRel);
        }
        if index.pending_since.is_none() {
            index.pending_since = Some(Instant::now());
            self.wake.notify_one();
        } else if index.pending.len() == MAX_BATCH {
            self.wake.notify_one();
        }
    }

    /// `Err` when claims may not reach the disk.
    fn health(&self, index: &Index) -> Result<(), DedupError> {
        if index.stopped {
            return Err(DedupError::Io {
                context: format!("dedup {}", self.path.display()),
                source: crate::store::cause("the writer thread has stopped"),
            });
        }
        match &index.failure {
            Some(why) => Err(DedupError::Io {
                context: format!(
                    "dedup {}: claims are not being persisted",
                    self.path.display()
                ),
                source: crate::store::cause(why.clone()),
            }),
            None => Ok(()),
        }
    }
}

fn join_key(at: u64, id: &Id) -> Key {
    let mut key = [0; 24];
    key[..8].copy_from_slice(&at.to_be_bytes());
    key[8..].copy_from_slice(id);
    key
}

fn split_key(key: &Key) -> (u64, Id) {
    let mut at = [0; 8];
    at.copy_from_slice(&key[..8]);
    let mut id = [0; 16];
    id.copy_from_slice(&key[8..]);
    (u64::from_be_bytes(at), id)
}

/// An event id as 16 bytes: a hyphenated UUID (what `canonical::event_id`
/// produces) exactly, anything else by hash (see the module doc).
fn id_of(event_id: &str) -> Id {
    if let Some(uuid) = parse_uuid(event_id) {
        return uuid;
    }
    let digest = Sha256::new()
        .chain_update(HASH_DOMAIN)
        .chain_update(event_id.as_bytes())
        .finalize();
    let mut id = [0; 16];
    id.copy_from_slice(&digest[..16]);
    id
}

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (either case) to its 16 bytes.
/// Only that form (36 characters): the other spellings `uuid` parses
/// (simple, braced, URN) would give a second string the same key.
fn parse_uuid(text: &str) -> Option<Id> {
    if text.len() != 36 {
        return None;
    }
    uuid::Uuid::try_parse(text).ok().map(uuid::Uuid::into_bytes)
}

pub mod shared;
mod writer;
pub use shared::{Begin, SharedSettings, SharedWindow};
use writer::{trim, writer};

#[cfg(test)]
mod tests;
