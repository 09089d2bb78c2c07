//! The de-duplication window: answer a vendor's retry of an accepted event
//! with 200 without publishing it again.
//!
//! # Why
//!
//! Vendors retry whenever they are unsure we got an event: a timeout on their
//! side, a lost response, their own restart. USAePay keeps retrying for up to
//! 72 h, Nexio three times within two minutes, Strictly about three times.
//! Every retry of one vendor event maps to the same canonical id
//! ([`crate::canonical::event_id`]), so remembering the ids accepted over the
//! last 72 h (plus a margin; the config chooses) is enough to recognise them.
//! The window lives on disk so a restart in the middle of a vendor's retry
//! series does not forget it.
//!
//! # Claim only once safe
//!
//! An id is recorded ([`DedupWindow::claim`]) only after its event is safe:
//! confirmed by the broker or `fsync`ed to the spool. A request that failed
//! (503) claims nothing, so the vendor's retry is processed in full rather
//! than mistaken for a duplicate and dropped. Two deliveries racing through
//! the pipeline at once may both be published; the second claim is a no-op.
//!
//! # Best effort, per instance
//!
//! This filter is per instance (each gateway has its own window) and may let a
//! duplicate through: a retry that lands on another instance, a race, a claim
//! lost in a crash (below), an id evicted by the cap. Consumers therefore still
//! de-duplicate on the message id. What the filter must never do is suppress
//! an event that was not accepted; that is why claims follow safety, entries
//! are keyed by the full 128-bit id, and [`DedupWindow::seen`] checks the
//! entry's age itself instead of trusting that expiry has run.
//!
//! # On-disk format
//!
//! ```text
//! {dir}/dedup.redb             one redb database, opened by one process at a time
//!
//! table "accepted"  [u8; 24] -> ()
//!   key    bytes 0..8    accepted_at_ms, u64 big-endian (Unix epoch milliseconds)
//!          bytes 8..24   the id's 16 bytes: a canonical UUID (what event_id makes)
//!                        is stored as its 16 bytes; any other string as the first
//!                        16 bytes of SHA-256("hookgate/dedup-id/v1\0" ++ string)
//!   value  none
//!
//! table "meta"      &str -> u64
//!   "format"       1; a file with a higher number was written by a newer hookgate
//! ```
//!
//! Time comes first in the key so the table is sorted oldest first: expiry
//! deletes one key range from the front (`..(cutoff + 1) ++ 0x00 * 16`) and
//! the cap pops the first keys, both without scanning what stays. Lookups by
//! id never touch the file: at open the surviving entries (at most
//! `max_entries`) are loaded into memory, and the in-memory index answers
//! [`DedupWindow::seen`]. If an id appears twice (re-claimed after its entry
//! expired), the newer key wins at load and the older one expires on its own.
//!
//! # Durability trade-off
//!
//! A claim updates the in-memory index at once and is queued for a single
//! writer thread, which commits everything queued every [`FLUSH_INTERVAL`]
//! (measured from the oldest queued claim) or as soon as [`MAX_BATCH`] claims
//! are waiting, in one transaction with [`redb::Durability::Immediate`]. The
//! request path thus never waits for an `fsync`, and a burst of N claims costs
//! about N / 1024 + 1 `fsync`s, not N.
//!
//! The price: a crash (or power loss) forgets the claims of the last
//! [`FLUSH_INTERVAL`] plus one commit. Forgetting a claim can only cause a
//! duplicate publish of an event the vendor retries after our restart, which
//! consumers de-duplicate by id; it can never lose an event, because the event
//! itself was made safe before it was claimed. A failed commit is logged and
//! reported by the next [`DedupWindow::claim`]; its claims stay effective in
//! memory but are not retried on disk (same consequence as a crash).
//!
//! # Memory
//!
//! The index is a `HashMap<[u8; 16], u64>` plus an insertion-ordered queue for
//! expiry and the cap: about 60 to 100 bytes per entry, so `max_entries` =
//! 1 000 000 costs up to about 100 MB. With `max_entries` = N the map never
//! holds more than N ids; the oldest are evicted first.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
    TableError,
};
use sha2::{Digest, Sha256};

/// Accepted ids, keyed by `accepted_at_ms (BE) ++ id` (see the module doc).
const ENTRIES: TableDefinition<Key, ()> = TableDefinition::new("accepted");
/// Format version.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// The database file inside the directory given to [`DedupWindow::open`].
pub const FILE_NAME: &str = "dedup.redb";
/// The layout this code reads and writes.
const FORMAT: u64 = 1;
/// Longest a claim waits in memory before the writer commits it: the most a
/// crash can forget (plus the commit in progress).
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(200);
/// Queued claims that make the writer commit without waiting for [`FLUSH_INTERVAL`].
pub const MAX_BATCH: usize = 1024;
/// redb's page cache: the file is read once at open and then only appended to
/// and trimmed at the front, so a small cache is plenty.
const CACHE_BYTES: usize = 4 * 1024 * 1024;
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
    /// The disk or database failed; the message names the file.
    #[error("{0}")]
    Io(String),
    /// The file cannot be read by this version (written by a newer hookgate,
    /// or not a de-duplication window); the message names the file.
    #[error("{0}")]
    Corrupt(String),
}

/// The ids of recently accepted events, in memory and in `{dir}/dedup.redb`.
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
    db: Database,
    window_ms: u64,
    max_entries: u64,
    clock: Clock,
    index: Mutex<Index>,
    /// Wakes the writer: a first queued claim, a full batch, a trim, closing.
    wake: Condvar,
    /// Transactions committed by the writer (each one `fsync`).
    commits: AtomicU64,
    /// Claims queued for the writer so far.
    queued: AtomicU64,
    /// Claims the writer is done with (committed, failed, or dropped from a
    /// backlog); equals `queued` when nothing is in flight.
    handled: AtomicU64,
}

/// The in-memory state; every critical section is short and never spans an `.await`.
struct Index {
    /// Id → when it was accepted. Never more than `max_entries` ids.
    accepted: HashMap<Id, u64>,
    /// `(accepted_at_ms, id)` in claim order, for expiry and the cap. An entry
    /// whose time no longer matches `accepted` is stale (the id was claimed
    /// again) and is skipped when it reaches the front.
    order: VecDeque<(u64, Id)>,
    /// Claims not yet handed to the writer.
    pending: VecDeque<(u64, Id)>,
    /// When the oldest pending claim was queued.
    pending_since: Option<Instant>,
    /// Claims dropped from a full backlog since the writer last looked.
    dropped: u64,
    /// `expire` removed entries: the writer should trim the file too.
    trim: bool,
    /// The last handle is gone: the writer commits what is left and stops.
    closing: bool,
    /// Why the last commit failed; cleared by the next successful one.
    failure: Option<String>,
    /// The writer thread has exited (after `closing`, or by a panic).
    stopped: bool,
}

impl DedupWindow {
    /// Opens (creating the directory and `dedup.redb` if needed), drops what is
    /// older than `window` or beyond `max_entries`, and loads the rest into
    /// memory, so retries are recognised across restarts.
    ///
    /// `window` is how long an id is remembered: the longest vendor retry
    /// horizon plus a margin (the config's default is 72 h + 1 h).
    /// `max_entries` is a hard cap protecting memory; when it is reached the
    /// oldest ids are forgotten first.
    ///
    /// Blocking (reads the whole file, and redb repairs it after a crash): call
    /// it at start-up or from `spawn_blocking`.
    pub fn open(dir: &Path, window: Duration, max_entries: u64) -> Result<Self, DedupError> {
        Self::open_with_clock(dir, window, max_entries, Arc::new(system_now_ms))
    }

    /// [`DedupWindow::open`] with a chosen clock, so tests control time.
    fn open_with_clock(
        dir: &Path,
        window: Duration,
        max_entries: u64,
        clock: Clock,
    ) -> Result<Self, DedupError> {
        let path = dir.join(FILE_NAME);
        let io = |what: &str, e: &dyn std::fmt::Display| {
            DedupError::Io(format!("dedup {}: {what}: {e}", path.display()))
        };
        let table_error = |e: TableError| match e {
            TableError::TableTypeMismatch { .. } => DedupError::Corrupt(format!(
                "dedup {}: not a de-duplication window ({e})",
                path.display()
            )),
            other => io("cannot open a table", &other),
        };
        std::fs::create_dir_all(dir).map_err(|e| io("cannot create the directory", &e))?;
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
            .map_err(|e| io("cannot open", &e))?;
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);

        // Check the format and drop what this window no longer covers, in one
        // durable transaction, so what is loaded below is exactly what is kept.
        let now = clock();
        {
            let txn = db.begin_write().map_err(|e| io("cannot write", &e))?;
            {
                let mut meta = txn.open_table(META).map_err(table_error)?;
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
                        return Err(DedupError::Corrupt(format!(
                            "dedup {}: format {other} is not supported (this hookgate reads \
                             {FORMAT}); it was written by a newer version",
                            path.display()
                        )));
                    }
                }
                let mut table = txn.open_table(ENTRIES).map_err(table_error)?;
                trim(&mut table, now, window_ms, max_entries).map_err(|e| io("cannot trim", &e))?;
            }
            txn.commit().map_err(|e| io("cannot commit", &e))?;
        }

        // Load what is left, oldest first (the key order).
        let mut loaded = Vec::new();
        {
            let txn = db.begin_read().map_err(|e| io("cannot read", &e))?;
            let table = txn.open_table(ENTRIES).map_err(table_error)?;
            for entry in table.iter().map_err(|e| io("cannot read", &e))? {
                let (key, _) = entry.map_err(|e| io("cannot read", &e))?;
                loaded.push(split_key(&key.value()));
            }
        }
        let mut accepted = HashMap::with_capacity(loaded.len());
        for &(at, id) in &loaded {
            // Ascending times: a re-claimed id ends up with its newest time.
            accepted.insert(id, at);
        }
        let order: VecDeque<(u64, Id)> = loaded
            .into_iter()
            .filter(|(at, id)| accepted.get(id) == Some(at))
            .collect();
        let entries = accepted.len();

        let shared = Arc::new(Shared {
            path: path.clone(),
            db,
            window_ms,
            max_entries,
            clock,
            index: Mutex::new(Index {
                accepted,
                order,
                pending: VecDeque::new(),
                pending_since: None,
                dropped: 0,
                trim: false,
                closing: false,
                failure: None,
                stopped: false,
            }),
            wake: Condvar::new(),
            commits: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            handled: AtomicU64::new(0),
        });
        let writer = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("hookgate-dedup".into())
                .spawn(move || writer(shared))
                .map_err(|e| io("cannot start the writer thread", &e))?
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
    /// Cheap (a hash lookup under a short lock, no disk), for the request path.
    /// The entry's age is checked here, so an id past the window is not
    /// reported even if [`DedupWindow::expire`] has not run yet.
    pub fn seen(&self, event_id: &str) -> bool {
        let id = id_of(event_id);
        let shared = &self.inner.shared;
        let now = (shared.clock)();
        let index = shared.lock();
        index
            .accepted
            .get(&id)
            .is_some_and(|&at| shared.live(at, now))
    }

    /// Records that `event_id`'s event is now safe (broker-confirmed or
    /// spooled), so its retries are recognised by [`DedupWindow::seen`].
    ///
    /// Call it only after the event is safe, never for a request that fails:
    /// the vendor's retry of a failed request must be processed in full.
    ///
    /// Takes effect in memory at once and returns without waiting for the
    /// disk: the writer thread commits claims in batches (see the module doc),
    /// so the request path pays no `fsync`. Claiming an id that is already in
    /// the window keeps its original time (the vendor's retry horizon starts
    /// at the first delivery) and writes nothing.
    ///
    /// `Err` means the claim took effect in this process but may not survive a
    /// restart (the last commit failed, or the writer thread stopped); the
    /// event is still safe, so the caller logs it and answers 200 anyway.
    pub async fn claim(&self, event_id: &str) -> Result<(), DedupError> {
        let id = id_of(event_id);
        let shared = &self.inner.shared;
        let mut index = shared.lock();
        // Read under the lock so claim order and time order agree.
        let now = (shared.clock)();
        shared.expire_locked(&mut index, now);
        let fresh = match index.accepted.get(&id) {
            Some(&at) => !shared.live(at, now),
            None => true,
        };
        if fresh {
            index.accepted.insert(id, now);
            index.order.push_back((now, id));
            shared.expire_locked(&mut index, now);
            if shared.max_entries > 0 {
                shared.queue(&mut index, now, id);
            }
        }
        shared.health(&index)
    }

    /// Forgets ids older than the window and the oldest ids above the cap, in
    /// memory and then (by the writer thread) on disk; returns how many ids
    /// were forgotten from memory.
    ///
    /// [`DedupWindow::claim`] already does this incrementally and
    /// [`DedupWindow::seen`] checks ages itself, so this exists to release
    /// memory and disk while no claims arrive. The gateway calls it
    /// periodically. Cheap when there is nothing to do (no disk access);
    /// one batch of deletes otherwise. `Err` as for [`DedupWindow::claim`].
    pub async fn expire(&self) -> Result<u64, DedupError> {
        let shared = &self.inner.shared;
        let now = (shared.clock)();
        let mut index = shared.lock();
        let removed = shared.expire_locked(&mut index, now);
        if removed > 0 && !index.trim {
            index.trim = true;
            shared.wake.notify_one();
        }
        shared.health(&index)?;
        Ok(removed)
    }

    /// Ids currently remembered (possibly including some just past the window
    /// until the next claim or expire), for metrics.
    pub fn len(&self) -> u64 {
        self.inner.shared.lock().accepted.len() as u64
    }

    /// Whether no id is remembered.
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
        if let Ok(inner) = Arc::try_unwrap(self.inner) {
            let _ = tokio::task::spawn_blocking(move || drop(inner)).await;
        }
    }

    /// Transactions committed so far (each one `fsync`), for the batching test.
    #[cfg(test)]
    fn commit_count(&self) -> u64 {
        self.inner.shared.commits.load(Ordering::Acquire)
    }

    /// Waits until the writer is done with every claim queued so far.
    #[cfg(test)]
    async fn settle(&self) {
        let shared = &self.inner.shared;
        let deadline = Instant::now() + Duration::from_secs(20);
        while shared.handled.load(Ordering::Acquire) < shared.queued.load(Ordering::Acquire) {
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

    /// Pops expired (and stale) entries from the front of the order, then the
    /// oldest entries above the cap; returns how many ids were forgotten.
    /// Amortized O(1) per claim.
    fn expire_locked(&self, index: &mut Index, now: u64) -> u64 {
        let mut removed = 0;
        let cap = usize::try_from(self.max_entries).unwrap_or(usize::MAX);
        while let Some(&(at, id)) = index.order.front() {
            let current = index.accepted.get(&id) == Some(&at);
            if current && self.live(at, now) && index.accepted.len() <= cap {
                break;
            }
            index.order.pop_front();
            if current {
                index.accepted.remove(&id);
                removed += 1;
            }
        }
        // Stale entries behind a live one (only after the wall clock stepped
        // back) are dropped here so the order stays proportional to the map.
        if index.order.len() > 2 * index.accepted.len() + MAX_BATCH {
            let Index {
                accepted, order, ..
            } = index;
            order.retain(|(at, id)| accepted.get(id) == Some(at));
        }
        removed
    }

    /// Hands a claim to the writer, waking it when the batch starts or fills.
    fn queue(&self, index: &mut Index, at: u64, id: Id) {
        index.pending.push_back((at, id));
        self.queued.fetch_add(1, Ordering::AcqRel);
        // A backlog beyond the cap is pointless (the cap would evict it from
        // the file anyway) and only grows while the disk stalls.
        let cap = usize::try_from(self.max_entries).unwrap_or(usize::MAX);
        while index.pending.len() > cap {
            index.pending.pop_front();
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
            return Err(DedupError::Io(format!(
                "dedup {}: the writer thread has stopped",
                self.path.display()
            )));
        }
        match &index.failure {
            Some(why) => Err(DedupError::Io(format!(
                "dedup {}: claims are not being persisted: {why}",
                self.path.display()
            ))),
            None => Ok(()),
        }
    }
}

/// The single writer: waits for a batch (a full one, or the oldest claim
/// being [`FLUSH_INTERVAL`] old), commits it, repeats; commits what is left
/// and exits once the last handle is gone.
fn writer(shared: Arc<Shared>) {
    /// Marks the writer stopped even if it panics, so claims report it.
    struct Stopped<'a>(&'a Shared);
    impl Drop for Stopped<'_> {
        fn drop(&mut self) {
            self.0.lock().stopped = true;
        }
    }
    let _stopped = Stopped(&shared);

    loop {
        let (batch, trim_requested, closing, dropped) = {
            let mut index = shared.lock();
            loop {
                if index.closing || index.trim || index.pending.len() >= MAX_BATCH {
                    break;
                }
                match index.pending_since {
                    None => {
                        index = shared
                            .wake
                            .wait(index)
                            .unwrap_or_else(PoisonError::into_inner);
                    }
                    Some(since) => {
                        let left = FLUSH_INTERVAL.saturating_sub(since.elapsed());
                        if left.is_zero() {
                            break;
                        }
                        index = shared
                            .wake
                            .wait_timeout(index, left)
                            .unwrap_or_else(PoisonError::into_inner)
                            .0;
                    }
                }
            }
            index.pending_since = None;
            (
                std::mem::take(&mut index.pending),
                std::mem::take(&mut index.trim),
                index.closing,
                std::mem::take(&mut index.dropped),
            )
        };
        if dropped > 0 {
            tracing::warn!(
                file = %shared.path.display(),
                dropped,
                "De-duplication backlog over max_entries; the oldest queued claims were not persisted."
            );
        }
        if !batch.is_empty() || trim_requested {
            let result = write_batch(&shared, &batch);
            let failure = match result {
                Ok(true) => {
                    shared.commits.fetch_add(1, Ordering::AcqRel);
                    None
                }
                Ok(false) => None,
                Err(e) => {
                    tracing::error!(
                        file = %shared.path.display(),
                        error = %e,
                        claims = batch.len(),
                        "De-duplication commit failed; these claims hold in memory only."
                    );
                    Some(e.to_string())
                }
            };
            shared.lock().failure = failure;
            shared
                .handled
                .fetch_add(batch.len() as u64, Ordering::AcqRel);
        }
        if closing {
            return;
        }
    }
}

/// Inserts the batch and trims the file in one transaction; commits only if
/// something changed. `Ok(true)` when a transaction was committed.
fn write_batch(shared: &Shared, batch: &VecDeque<(u64, Id)>) -> Result<bool, redb::Error> {
    let mut txn = shared.db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    let changed = {
        let mut table = txn.open_table(ENTRIES)?;
        for (at, id) in batch {
            table.insert(join_key(*at, id), ())?;
        }
        let now = (shared.clock)();
        let removed = trim(&mut table, now, shared.window_ms, shared.max_entries)?;
        !batch.is_empty() || removed > 0
    };
    if changed {
        txn.commit()?;
    } else {
        txn.abort()?;
    }
    Ok(changed)
}

/// Deletes entries accepted at or before `now - window` (a key range at the
/// front), then the oldest entries above `max_entries`; returns how many.
fn trim(
    table: &mut redb::Table<'_, Key, ()>,
    now: u64,
    window_ms: u64,
    max_entries: u64,
) -> Result<u64, redb::Error> {
    let before = table.len()?;
    if let Some(cutoff) = now.checked_sub(window_ms) {
        // Keys are (time, id): everything below (cutoff + 1, 0…0) has time <= cutoff.
        let first_live = join_key(cutoff.saturating_add(1), &[0; 16]);
        let expired = match table.first()? {
            Some((key, _)) => key.value() < first_live,
            None => false,
        };
        if expired {
            table.retain_in(..first_live, |_, ()| false)?;
        }
    }
    while table.len()? > max_entries {
        if table.pop_first()?.is_none() {
            break;
        }
    }
    Ok(before - table.len()?)
}

fn join_key(at: u64, id: &Id) -> Key {
    let mut key = [0; 24];
    key[..8].copy_from_slice(&at.to_be_bytes());
    key[8..].copy_from_slice(id);
    key
}

fn split_key(key: &Key) -> (u64, Id) {
    let at = u64::from_be_bytes(key[..8].try_into().expect("8 bytes"));
    let id = key[8..].try_into().expect("16 bytes");
    (at, id)
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
    digest[..16].try_into().expect("16 bytes")
}

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (either case) to its 16 bytes.
fn parse_uuid(text: &str) -> Option<Id> {
    let bytes = text.as_bytes();
    if bytes.len() != 36 || [8, 13, 18, 23].iter().any(|&i| bytes[i] != b'-') {
        return None;
    }
    let mut digits = [0u8; 32];
    let mut n = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if ![8, 13, 18, 23].contains(&i) {
            digits[n] = b;
            n += 1;
        }
    }
    let mut id = [0u8; 16];
    hex::decode_to_slice(digits, &mut id).ok()?;
    Some(id)
}

fn system_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonical::event_id;
    use crate::vendors::VendorKind;

    /// The crash test's child: set to a directory, the helper test claims there and aborts.
    const CRASH_DIR_ENV: &str = "HOOKGATE_DEDUP_CRASH_DIR";
    const CRASH_CLAIMS: usize = 50;
    const HOUR: Duration = Duration::from_secs(3600);
    const T0: u64 = 1_714_564_800_000;

    fn id(n: usize) -> String {
        event_id(VendorKind::Usaepay, "main", &format!("txn-{n}"))
    }

    /// A clock the test moves by hand.
    fn test_clock(start: u64) -> (Arc<AtomicU64>, Clock) {
        let now = Arc::new(AtomicU64::new(start));
        let reader = now.clone();
        (now, Arc::new(move || reader.load(Ordering::Acquire)))
    }

    #[test]
    fn window_is_send_sync_clone() {
        fn check<T: Send + Sync + Clone + 'static>() {}
        check::<DedupWindow>();
    }

    #[test]
    fn ids_map_to_16_bytes() {
        let uuid = id(1);
        let bytes = id_of(&uuid);
        assert_eq!(hex::encode(bytes), uuid.replace('-', ""));
        assert_eq!(id_of(&uuid.to_uppercase()), bytes);
        assert_ne!(id_of(&id(2)), bytes);
        // Not UUIDs: hashed, deterministic, distinct.
        assert_eq!(id_of("evt_1"), id_of("evt_1"));
        assert_ne!(id_of("evt_1"), id_of("evt_2"));
        assert!(parse_uuid("0123456789abcdef0123456789abcdef0123").is_none());
        assert!(parse_uuid("0123456g-89ab-cdef-0123-456789abcdef").is_none());
        assert_eq!(split_key(&join_key(T0, &bytes)), (T0, bytes));
        assert!(join_key(1, &[0xff; 16]) < join_key(2, &[0; 16]));
    }

    #[tokio::test]
    async fn claim_then_seen() {
        let dir = tempfile::tempdir().unwrap();
        let window = DedupWindow::open(dir.path(), 73 * HOUR, 1000).unwrap();
        assert!(window.is_empty());
        assert!(!window.seen(&id(1)));
        window.claim(&id(1)).await.unwrap();
        assert!(window.seen(&id(1)));
        assert!(!window.seen(&id(2)));
        // A second claim of the same id is a no-op.
        window.claim(&id(1)).await.unwrap();
        assert_eq!(window.len(), 1);
        // Non-UUID ids work too.
        window.claim("sha256:abc").await.unwrap();
        assert!(window.seen("sha256:abc"));
        assert!(!window.seen("sha256:abd"));
        assert_eq!(window.len(), 2);
    }

    #[tokio::test]
    async fn survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let window = DedupWindow::open(dir.path(), 73 * HOUR, 1000).unwrap();
            for n in 0..10 {
                window.claim(&id(n)).await.unwrap();
            }
            // A second open of the same file is refused while the first is alive,
            // with the file named.
            let err = DedupWindow::open(dir.path(), 73 * HOUR, 1000).unwrap_err();
            assert!(matches!(err, DedupError::Io(_)));
            assert!(err.to_string().contains(FILE_NAME), "{err}");
            // Closed right away: the queued claims are committed on the way out.
            window.close().await;
        }
        let window = DedupWindow::open(dir.path(), 73 * HOUR, 1000).unwrap();
        assert_eq!(window.len(), 10);
        for n in 0..10 {
            assert!(window.seen(&id(n)), "{n}");
        }
        assert!(!window.seen(&id(10)));
        drop(window); // the plain drop path also flushes and joins
        let window = DedupWindow::open(dir.path(), 73 * HOUR, 1000).unwrap();
        assert_eq!(window.len(), 10);
    }

    #[tokio::test]
    async fn expiry_follows_the_injected_clock() {
        let dir = tempfile::tempdir().unwrap();
        let window_len = Duration::from_secs(60);
        let (now, clock) = test_clock(T0);
        let window =
            DedupWindow::open_with_clock(dir.path(), window_len, 1000, clock.clone()).unwrap();
        window.claim(&id(1)).await.unwrap();
        now.store(T0 + 30_000, Ordering::Release);
        window.claim(&id(2)).await.unwrap();
        // A re-claim keeps the first time.
        window.claim(&id(1)).await.unwrap();
        assert_eq!(window.expire().await.unwrap(), 0);

        // Just inside, then exactly at the edge of the window for id 1.
        now.store(T0 + 59_999, Ordering::Release);
        assert!(window.seen(&id(1)));
        now.store(T0 + 60_000, Ordering::Release);
        assert!(!window.seen(&id(1)), "seen checks the age itself");
        assert!(window.seen(&id(2)));
        assert_eq!(window.len(), 2);
        assert_eq!(window.expire().await.unwrap(), 1);
        assert_eq!(window.len(), 1);
        assert_eq!(window.expire().await.unwrap(), 0, "idempotent");

        // Claimed again after it expired: remembered from the new time.
        window.claim(&id(1)).await.unwrap();
        assert!(window.seen(&id(1)));
        window.settle().await;

        // The file follows: reopen at a time when only the re-claim is live.
        window.close().await;
        now.store(T0 + 100_000, Ordering::Release);
        let window =
            DedupWindow::open_with_clock(dir.path(), window_len, 1000, clock.clone()).unwrap();
        assert_eq!(window.len(), 1);
        assert!(window.seen(&id(1)));
        assert!(!window.seen(&id(2)));
        window.close().await;

        // Far later: nothing survives, and the file is trimmed too.
        now.store(T0 + 10 * 60_000, Ordering::Release);
        let window = DedupWindow::open_with_clock(dir.path(), window_len, 1000, clock).unwrap();
        assert!(window.is_empty());
        window.close().await;
        let db = Database::create(dir.path().join(FILE_NAME)).unwrap();
        let txn = db.begin_read().unwrap();
        assert_eq!(txn.open_table(ENTRIES).unwrap().len().unwrap(), 0);
    }

    #[tokio::test]
    async fn expire_trims_the_file_while_idle() {
        let dir = tempfile::tempdir().unwrap();
        let (now, clock) = test_clock(T0);
        let window =
            DedupWindow::open_with_clock(dir.path(), Duration::from_secs(60), 1000, clock).unwrap();
        for n in 0..5 {
            window.claim(&id(n)).await.unwrap();
        }
        window.settle().await;
        let commits = window.commit_count();
        assert_eq!(commits, 1);
        // Nothing to expire: no transaction.
        assert_eq!(window.expire().await.unwrap(), 0);
        now.store(T0 + 60_000, Ordering::Release);
        assert_eq!(window.expire().await.unwrap(), 5);
        // The writer deletes them from the file in one more commit.
        let deadline = Instant::now() + Duration::from_secs(10);
        while window.commit_count() == commits {
            assert!(Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(window.commit_count(), commits + 1);
        let shared = &window.inner.shared;
        let txn = shared.db.begin_read().unwrap();
        assert_eq!(txn.open_table(ENTRIES).unwrap().len().unwrap(), 0);
    }

    #[tokio::test]
    async fn cap_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let (now, clock) = test_clock(T0);
        let window =
            DedupWindow::open_with_clock(dir.path(), 73 * HOUR, 10, clock.clone()).unwrap();
        for n in 0..25 {
            now.store(T0 + n as u64, Ordering::Release);
            window.claim(&id(n)).await.unwrap();
            assert!(window.len() <= 10);
        }
        assert_eq!(window.len(), 10);
        for n in 0..15 {
            assert!(!window.seen(&id(n)), "{n} should be evicted");
        }
        for n in 15..25 {
            assert!(window.seen(&id(n)), "{n} should be kept");
        }
        assert_eq!(window.expire().await.unwrap(), 0);
        window.close().await;

        // The file keeps the newest 10, and a smaller cap at open trims further.
        let window =
            DedupWindow::open_with_clock(dir.path(), 73 * HOUR, 10, clock.clone()).unwrap();
        assert_eq!(window.len(), 10);
        assert!(window.seen(&id(15)) && window.seen(&id(24)));
        window.close().await;
        let window = DedupWindow::open_with_clock(dir.path(), 73 * HOUR, 3, clock).unwrap();
        assert_eq!(window.len(), 3);
        assert!(!window.seen(&id(21)));
        assert!(window.seen(&id(22)) && window.seen(&id(23)) && window.seen(&id(24)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_claims_share_commits() {
        const CLAIMS: usize = 5000;
        let dir = tempfile::tempdir().unwrap();
        let window = DedupWindow::open(dir.path(), 73 * HOUR, 100_000).unwrap();
        let before = window.commit_count();
        let tasks: Vec<_> = (0..CLAIMS)
            .map(|n| {
                let window = window.clone();
                tokio::spawn(async move {
                    window.claim(&id(n)).await.unwrap();
                    assert!(window.seen(&id(n)));
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        window.settle().await;
        let commits = window.commit_count() - before;
        eprintln!(
            "batching: {CLAIMS} claims, {commits} commits ({:.4} commits per claim)",
            commits as f64 / CLAIMS as f64
        );
        assert!(commits >= 1);
        assert!(commits <= 20, "{commits} commits for {CLAIMS} claims");
        assert_eq!(window.len(), CLAIMS as u64);
        window.close().await;

        let window = DedupWindow::open(dir.path(), 73 * HOUR, 100_000).unwrap();
        assert_eq!(window.len(), CLAIMS as u64);
        assert!((0..CLAIMS).all(|n| window.seen(&id(n))));
    }

    #[tokio::test]
    async fn foreign_or_newer_files_are_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = Database::create(dir.path().join(FILE_NAME)).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(META).unwrap().insert("format", 2).unwrap();
            txn.commit().unwrap();
        }
        let err = DedupWindow::open(dir.path(), HOUR, 10).unwrap_err();
        assert!(matches!(err, DedupError::Corrupt(_)), "{err}");
        let message = err.to_string();
        assert!(
            message.contains(FILE_NAME) && message.contains("format 2"),
            "{message}"
        );

        let other = tempfile::tempdir().unwrap();
        {
            let db = Database::create(other.path().join(FILE_NAME)).unwrap();
            let txn = db.begin_write().unwrap();
            let wrong: TableDefinition<u64, u64> = TableDefinition::new("accepted");
            txn.open_table(wrong).unwrap().insert(1, 2).unwrap();
            txn.commit().unwrap();
        }
        let err = DedupWindow::open(other.path(), HOUR, 10).unwrap_err();
        assert!(matches!(err, DedupError::Corrupt(_)), "{err}");

        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"x").unwrap();
        let err = DedupWindow::open(&file, HOUR, 10).unwrap_err();
        assert!(matches!(err, DedupError::Io(_)));
        assert!(err.to_string().contains("not-a-dir"), "{err}");
    }

    /// Helper for `crash_keeps_claims_older_than_one_flush`, run in a child
    /// process; a no-op when the environment variable is absent.
    #[test]
    fn crash_child_claims_then_aborts() {
        let Some(dir) = std::env::var_os(CRASH_DIR_ENV) else {
            return;
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let window = DedupWindow::open(Path::new(&dir), 73 * HOUR, 10_000).unwrap();
            let tasks: Vec<_> = (0..CRASH_CLAIMS)
                .map(|n| {
                    let window = window.clone();
                    tokio::spawn(async move { window.claim(&id(n)).await.unwrap() })
                })
                .collect();
            for task in tasks {
                task.await.unwrap();
            }
            // Past one flush interval (with room for the commit's fsync): these must survive.
            tokio::time::sleep(FLUSH_INTERVAL * 5).await;
            // Claimed right before the crash: may or may not survive.
            for n in CRASH_CLAIMS..2 * CRASH_CLAIMS {
                window.claim(&id(n)).await.unwrap();
            }
            println!("claimed {}", 2 * CRASH_CLAIMS);
            std::process::abort();
        });
    }

    #[test]
    fn crash_keeps_claims_older_than_one_flush() {
        let dir = tempfile::tempdir().unwrap();
        let output = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "dedup::tests::crash_child_claims_then_aborts",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CRASH_DIR_ENV, dir.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(!output.status.success(), "the child must abort: {stdout}");
        assert!(
            stdout.contains(&format!("claimed {}", 2 * CRASH_CLAIMS)),
            "child did not finish its claims: {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let window = DedupWindow::open(dir.path(), 73 * HOUR, 10_000).unwrap();
        for n in 0..CRASH_CLAIMS {
            assert!(window.seen(&id(n)), "lost claim {n} made before the flush");
        }
        let late = (CRASH_CLAIMS..2 * CRASH_CLAIMS)
            .filter(|&n| window.seen(&id(n)))
            .count();
        eprintln!("after abort: {late} of {CRASH_CLAIMS} last-moment claims survived");
        assert_eq!(window.len(), (CRASH_CLAIMS + late) as u64);
    }
}
