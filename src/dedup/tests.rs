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

/// A file as format 1 wrote it: "accepted" (`(time, test id number)`
/// keys) and "meta", no "by_id".
fn write_format_1(dir: &Path, entries: &[(u64, usize)]) {
    let db = Database::create(dir.join(FILE_NAME)).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut accepted = txn.open_table(ACCEPTED).unwrap();
        for &(at, n) in entries {
            accepted.insert(join_key(at, &id_of(&id(n))), ()).unwrap();
        }
        txn.open_table(META).unwrap().insert("format", 1).unwrap();
    }
    txn.commit().unwrap();
    let txn = db.begin_read().unwrap();
    assert!(txn.open_table(BY_ID).is_err(), "format 1 has no by_id");
}

/// The window of the expiry tests: one minute long.
const MINUTE: Duration = Duration::from_secs(60);

/// A one-minute window in `dir` on a test clock starting at `T0`; the
/// clock comes back to move time and to reopen the file with.
fn minute_window(dir: &Path) -> (Arc<AtomicU64>, Clock, DedupWindow) {
    let (now, clock) = test_clock(T0);
    let window = DedupWindow::open_with_clock(dir, MINUTE, 1000, clock.clone()).unwrap();
    (now, clock, window)
}

/// Rows in ("accepted", "by_id") as committed.
fn table_lens(db: &Database) -> (u64, u64) {
    let txn = db.begin_read().unwrap();
    let accepted = txn.open_table(ACCEPTED).unwrap().len().unwrap();
    let by_id = txn.open_table(BY_ID).unwrap().len().unwrap();
    (accepted, by_id)
}

impl DedupWindow {
    fn table_lens(&self) -> (u64, u64) {
        let db = self.inner.shared.db.read().unwrap();
        table_lens(db.as_ref().expect("open"))
    }
}

/// The "format" a closed window's file holds.
fn file_format(dir: &Path) -> u64 {
    let db = Database::create(dir.join(FILE_NAME)).unwrap();
    let txn = db.begin_read().unwrap();
    let meta = txn.open_table(META).unwrap();
    let format = meta.get("format").unwrap().unwrap().value();
    format
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
    // At once, before the writer commits (it waits up to FLUSH_INTERVAL).
    assert!(window.seen(&id(1)));
    assert!(!window.seen(&id(2)));
    // A second claim of the same id is a no-op.
    window.claim(&id(1)).await.unwrap();
    assert!(window.unsynced_count() <= 1);
    // Non-UUID ids work too.
    window.claim("sha256:abc").await.unwrap();
    assert!(window.seen("sha256:abc"));
    assert!(!window.seen("sha256:abd"));

    // Committed: memory holds nothing, the answers come from the file.
    window.settle().await;
    assert_eq!(window.unsynced_count(), 0);
    let commits = window.commit_count();
    assert!(commits >= 1);
    assert_eq!(window.len(), 2);
    assert_eq!(window.table_lens(), (2, 2));
    assert!(window.seen(&id(1)));
    assert!(window.seen("sha256:abc"));
    assert!(!window.seen(&id(2)));
    assert!(!window.seen("sha256:abd"));

    // Claimed again once committed: the writer finds it in the file and
    // writes nothing.
    window.claim(&id(1)).await.unwrap();
    assert!(window.seen(&id(1)));
    window.settle().await;
    assert_eq!(window.unsynced_count(), 0);
    assert_eq!(window.commit_count(), commits, "nothing new to commit");
    assert_eq!(window.table_lens(), (2, 2));
}

#[tokio::test]
async fn memory_stays_bounded_and_the_file_answers() {
    const CLAIMS: usize = 50_000;
    let dir = tempfile::tempdir().unwrap();
    let window = DedupWindow::open(dir.path(), 73 * HOUR, 1_000_000).unwrap();
    for n in 0..CLAIMS {
        window.claim(&id(n)).await.unwrap();
        assert!(window.unsynced_count() <= 2 * MAX_BACKLOG);
        // Keep the backlog below MAX_BACKLOG so no claim is dropped.
        if n % 5000 == 4999 {
            window.settle().await;
        }
    }
    window.settle().await;
    assert_eq!(window.unsynced_count(), 0);
    assert_eq!(window.len(), CLAIMS as u64);
    assert_eq!(window.table_lens(), (CLAIMS as u64, CLAIMS as u64));
    for n in (0..CLAIMS).step_by(997) {
        assert!(window.seen(&id(n)), "{n}");
    }
    assert!(window.seen(&id(CLAIMS - 1)));
    for n in CLAIMS..CLAIMS + 100 {
        assert!(!window.seen(&id(n)), "{n}");
    }
    window.close().await;
    let bytes = std::fs::metadata(dir.path().join(FILE_NAME)).unwrap().len();
    eprintln!(
        "file: {bytes} bytes for {CLAIMS} ids ({:.1} bytes per id)",
        bytes as f64 / CLAIMS as f64
    );
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
        assert!(matches!(err, DedupError::Io { .. }));
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
    assert_eq!(window.table_lens(), (10, 10));
}

#[tokio::test]
async fn expiry_follows_the_injected_clock() {
    let dir = tempfile::tempdir().unwrap();
    let (now, clock, window) = minute_window(dir.path());
    window.claim(&id(1)).await.unwrap();
    now.store(T0 + 30_000, Ordering::Release);
    window.claim(&id(2)).await.unwrap();
    // A re-claim while unsynced keeps the first time.
    window.claim(&id(1)).await.unwrap();
    window.expire().await.unwrap();
    window.settle().await;
    assert_eq!(window.len(), 2);

    // Just inside, then exactly at the edge of the window for id 1.
    now.store(T0 + 59_999, Ordering::Release);
    assert!(window.seen(&id(1)));
    now.store(T0 + 60_000, Ordering::Release);
    assert!(!window.seen(&id(1)), "seen checks the age itself");
    assert!(window.seen(&id(2)));
    assert_eq!(window.len(), 2, "not trimmed yet");
    window.expire().await.unwrap();
    window.settle().await;
    assert_eq!(window.len(), 1);
    assert_eq!(window.table_lens(), (1, 1), "gone from both tables");
    let commits = window.commit_count();
    window.expire().await.unwrap();
    window.settle().await;
    assert_eq!(window.commit_count(), commits, "idempotent");
    assert_eq!(window.len(), 1);

    // Claimed again after it expired: remembered from the new time.
    window.claim(&id(1)).await.unwrap();
    assert!(window.seen(&id(1)));
    window.settle().await;
    assert!(window.seen(&id(1)));
    assert_eq!(window.table_lens(), (2, 2));

    // The file follows: reopen at a time when only the re-claim is live.
    window.close().await;
    now.store(T0 + 100_000, Ordering::Release);
    let window = DedupWindow::open_with_clock(dir.path(), MINUTE, 1000, clock.clone()).unwrap();
    assert_eq!(window.len(), 1);
    assert!(window.seen(&id(1)));
    assert!(!window.seen(&id(2)));
    window.close().await;

    // Far later: nothing survives, and the file is trimmed too.
    now.store(T0 + 10 * 60_000, Ordering::Release);
    let window = DedupWindow::open_with_clock(dir.path(), MINUTE, 1000, clock).unwrap();
    assert!(window.is_empty());
    assert_eq!(window.table_lens(), (0, 0));
}

#[tokio::test]
async fn a_reclaim_keeps_the_first_time() {
    let dir = tempfile::tempdir().unwrap();
    let (now, clock, window) = minute_window(dir.path());
    window.claim(&id(1)).await.unwrap();
    window.settle().await;
    // Claimed again once the first claim is only in the file: the writer
    // keeps the file's time.
    now.store(T0 + 40_000, Ordering::Release);
    window.claim(&id(1)).await.unwrap();
    window.settle().await;
    assert_eq!(window.unsynced_count(), 0);
    assert_eq!(window.table_lens(), (1, 1));
    now.store(T0 + 59_999, Ordering::Release);
    assert!(window.seen(&id(1)));
    now.store(T0 + 60_000, Ordering::Release);
    assert!(!window.seen(&id(1)), "the re-claim did not move the time");

    // Claimed again after expiry but before a trim: the writer replaces
    // the old entry, in both tables.
    window.claim(&id(1)).await.unwrap();
    window.settle().await;
    assert_eq!(window.table_lens(), (1, 1), "the old key is gone");
    now.store(T0 + 119_999, Ordering::Release);
    assert!(window.seen(&id(1)));
    window.expire().await.unwrap();
    window.settle().await;
    assert_eq!(window.len(), 1);
    now.store(T0 + 120_000, Ordering::Release);
    assert!(!window.seen(&id(1)));
    window.close().await;
    let window = DedupWindow::open_with_clock(dir.path(), MINUTE, 1000, clock).unwrap();
    assert!(window.is_empty());
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
    window.expire().await.unwrap();
    window.settle().await;
    assert_eq!(window.commit_count(), commits);
    assert_eq!(window.len(), 5);
    now.store(T0 + 60_000, Ordering::Release);
    window.expire().await.unwrap();
    // The writer deletes them from the file in one more commit.
    window.settle().await;
    assert_eq!(window.commit_count(), commits + 1);
    assert!(window.is_empty());
    assert_eq!(window.table_lens(), (0, 0));
}

#[tokio::test]
async fn cap_keeps_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let (now, clock) = test_clock(T0);
    let window = DedupWindow::open_with_clock(dir.path(), 73 * HOUR, 10, clock.clone()).unwrap();
    for n in 0..25 {
        now.store(T0 + n as u64, Ordering::Release);
        window.claim(&id(n)).await.unwrap();
        assert!(window.len() <= 10);
        assert!(
            window.unsynced_count() <= 2 * 10,
            "the backlog follows the cap"
        );
    }
    window.settle().await;
    assert_eq!(window.len(), 10);
    assert_eq!(window.table_lens(), (10, 10));
    for n in 0..15 {
        assert!(!window.seen(&id(n)), "{n} should be evicted");
    }
    for n in 15..25 {
        assert!(window.seen(&id(n)), "{n} should be kept");
    }
    window.expire().await.unwrap();
    window.settle().await;
    assert_eq!(window.len(), 10);
    window.close().await;

    // The file keeps the newest 10, and a smaller cap at open trims further.
    let window = DedupWindow::open_with_clock(dir.path(), 73 * HOUR, 10, clock.clone()).unwrap();
    assert_eq!(window.len(), 10);
    assert!(window.seen(&id(15)) && window.seen(&id(24)));
    window.close().await;
    let window = DedupWindow::open_with_clock(dir.path(), 73 * HOUR, 3, clock).unwrap();
    assert_eq!(window.len(), 3);
    assert_eq!(window.table_lens(), (3, 3));
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
    assert_eq!(window.unsynced_count(), 0);
    window.close().await;

    let window = DedupWindow::open(dir.path(), 73 * HOUR, 100_000).unwrap();
    assert_eq!(window.len(), CLAIMS as u64);
    assert!((0..CLAIMS).all(|n| window.seen(&id(n))));
}

#[tokio::test]
async fn a_new_file_is_written_in_the_current_format() {
    let dir = tempfile::tempdir().unwrap();
    let window = DedupWindow::open(dir.path(), HOUR, 10).unwrap();
    window.close().await;
    assert_eq!(file_format(dir.path()), FORMAT);
}

#[test]
fn pre_release_format_1_files_are_refused_with_a_way_out() {
    let dir = tempfile::tempdir().unwrap();
    write_format_1(dir.path(), &[(T0, 1)]);
    let err = DedupWindow::open(dir.path(), HOUR, 10).unwrap_err();
    assert!(matches!(err, DedupError::Corrupt(_)), "{err}");
    let message = err.to_string();
    assert!(
        message.contains(FILE_NAME) && message.contains("format 1") && message.contains("remove"),
        "{message}"
    );
}

/// A format-2 file written by hand, its rows exactly as given.
fn write_format_2(dir: &Path, accepted: &[(u64, usize)], by_id: &[(usize, u64)]) {
    let db = Database::create(dir.join(FILE_NAME)).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut table = txn.open_table(ACCEPTED).unwrap();
        for &(at, n) in accepted {
            table.insert(join_key(at, &id_of(&id(n))), ()).unwrap();
        }
        let mut table = txn.open_table(BY_ID).unwrap();
        for &(n, at) in by_id {
            table.insert(id_of(&id(n)), at).unwrap();
        }
        txn.open_table(META)
            .unwrap()
            .insert("format", FORMAT)
            .unwrap();
    }
    txn.commit().unwrap();
}

#[tokio::test]
async fn an_older_key_of_an_id_does_not_delete_its_newer_entry() {
    // An id under two "accepted" keys, its row holding the newer time:
    // expiry of the older key must leave the row alone.
    let dir = tempfile::tempdir().unwrap();
    write_format_2(
        dir.path(),
        &[(T0, 1), (T0 + 30_000, 1)],
        &[(1, T0 + 30_000)],
    );
    let (now, _clock, window) = minute_window(dir.path());
    assert_eq!(window.table_lens(), (2, 1));
    now.store(T0 + 60_000, Ordering::Release);
    window.expire().await.unwrap();
    window.settle().await;
    assert_eq!(window.table_lens(), (1, 1));
    assert!(window.seen(&id(1)), "kept with its newer time");
    now.store(T0 + 90_000, Ordering::Release);
    assert!(!window.seen(&id(1)));
}

#[tokio::test]
async fn foreign_or_newer_files_are_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = Database::create(dir.path().join(FILE_NAME)).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META).unwrap().insert("format", 3).unwrap();
        txn.commit().unwrap();
    }
    let err = DedupWindow::open(dir.path(), HOUR, 10).unwrap_err();
    assert!(matches!(err, DedupError::Corrupt(_)), "{err}");
    let message = err.to_string();
    assert!(
        message.contains(FILE_NAME) && message.contains("format 3"),
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
    assert!(err.to_string().contains(FILE_NAME), "{err}");

    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let err = DedupWindow::open(&file, HOUR, 10).unwrap_err();
    assert!(matches!(err, DedupError::Io { .. }));
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
    crate::store::run_aborting_child(
        "dedup::tests::crash_child_claims_then_aborts",
        &[(CRASH_DIR_ENV, dir.path().as_os_str())],
        &format!("claimed {}", 2 * CRASH_CLAIMS),
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
    assert_eq!(window.unsynced_count(), 0);
}

#[tokio::test]
async fn a_full_disk_fails_commits_and_the_window_recovers_once_space_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(dir.path())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped: mounting a tmpfs needs root (CI runs as root)");
        return;
    }
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(dir.path());
    let window = DedupWindow::open(&dir.path().join("dedup"), 73 * HOUR, 1_000_000).unwrap();
    window.claim("first").await.unwrap();
    window.settle().await;
    let filler = dir.path().join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        while f.write_all(&[0u8; 64 * 1024]).is_ok() {}
        while f.write_all(&[0u8; 512]).is_ok() {}
        let _ = f.sync_all();
    }
    // Enough claims that their commit must grow the file.
    for n in 0..20_000 {
        let _ = window.claim(&format!("during-{n}")).await;
    }
    window.settle().await;
    assert!(window.failing_for().is_some(), "the failure is visible");

    std::fs::remove_file(&filler).unwrap();
    let _ = window.claim("after").await;
    window.settle().await;
    assert_eq!(window.failing_for(), None, "commits succeed again");
    assert!(window.claim("after-2").await.is_ok());
    window.settle().await;
    assert!(window.seen("first") && window.seen("after"));
    window.close().await;
}
