use super::*;

/// The crash test's child: set to a directory, the helper test appends there and aborts.
const CRASH_DIR_ENV: &str = "HOOKGATE_SPOOL_CRASH_DIR";
/// Set too: the child waits past `FLUSH_INTERVAL` after its removals before aborting.
const CRASH_WAIT_ENV: &str = "HOOKGATE_SPOOL_CRASH_WAIT";
const CRASH_APPENDS: usize = 50;
const CRASH_REMOVES: u64 = 10;

fn outgoing(n: usize) -> Outgoing {
    Outgoing {
        id: format!("evt_{n:05}"),
        source: "https://hookgate.test/stripe".into(),
        event_type: "payment.succeeded".into(),
        time: "2024-05-01T12:00:00Z".into(),
        routing_key: "stripe.payment.succeeded".into(),
        // Not valid UTF-8 on purpose: the body is stored as bytes.
        body: [
            b"{\"n\":".as_slice(),
            n.to_string().as_bytes(),
            b"}\xff\x00",
        ]
        .concat(),
    }
}

fn entry_size(o: &Outgoing) -> u64 {
    KEY_SIZE + encode(o, 0, 0).unwrap().len() as u64
}

#[test]
fn spool_is_send_sync_clone() {
    fn check<T: Send + Sync + Clone + 'static>() {}
    check::<Spool>();
}

#[test]
fn encoding_round_trips_and_rejects_damage() {
    let o = outgoing(7);
    let mut value = encode(&o, 1_714_564_800_123, 3).unwrap();
    let event = decode::<Outgoing>(42, &value).unwrap();
    assert_eq!(
        event,
        SpooledEvent {
            seq: 42,
            entry: o.clone(),
            enqueued_at_ms: 1_714_564_800_123,
            attempts: 3,
        }
    );
    bump(&mut value).unwrap();
    assert_eq!(decode::<Outgoing>(42, &value).unwrap().attempts, 4);

    assert!(decode::<Outgoing>(1, &value[..value.len() - 1])
        .unwrap_err()
        .contains("truncated"));
    let mut trailing = value.clone();
    trailing.push(0);
    assert!(decode::<Outgoing>(1, &trailing)
        .unwrap_err()
        .contains("trailing"));
    let mut future = value.clone();
    future[0] = 2;
    assert!(decode::<Outgoing>(1, &future)
        .unwrap_err()
        .contains("version 2"));
    assert!(bump(&mut future).is_err());
    assert!(decode::<Outgoing>(1, &[]).is_err());
}

#[tokio::test]
async fn append_survives_reopen_in_order_and_stats_are_recounted() {
    let dir = tempfile::tempdir().unwrap();
    let events: Vec<Outgoing> = (0..20).map(outgoing).collect();
    let expected_bytes: u64 = events.iter().map(entry_size).sum();
    let seqs = {
        let spool: Spool = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(spool.stats(), SpoolStats::default());
        let mut seqs = Vec::new();
        for event in &events {
            seqs.push(spool.append(event).await.unwrap());
        }
        assert!(seqs.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(
            spool.stats(),
            SpoolStats {
                events: 20,
                bytes: expected_bytes
            }
        );
        spool.close().await;
        seqs
    };

    let spool: Spool = Spool::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(
        spool.stats(),
        SpoolStats {
            events: 20,
            bytes: expected_bytes
        }
    );
    let stored = spool.oldest_async(100).await.unwrap();
    assert_eq!(stored.iter().map(|e| e.seq).collect::<Vec<_>>(), seqs);
    assert_eq!(
        stored.iter().map(|e| e.entry.clone()).collect::<Vec<_>>(),
        events
    );
    assert!(stored
        .iter()
        .all(|e| e.attempts == 0 && e.enqueued_at_ms > 0));

    // Sequence numbers are never reused, even once the spool was emptied.
    for seq in &seqs {
        spool.remove(*seq).await.unwrap();
    }
    assert_eq!(spool.stats(), SpoolStats::default());
    drop(spool); // the plain drop path also joins the writer
    let spool: Spool = Spool::open(dir.path(), 1 << 20).unwrap();
    assert!(spool.oldest(10).unwrap().is_empty());
    let next = spool.append(&outgoing(99)).await.unwrap();
    assert!(next > *seqs.last().unwrap());
}

#[tokio::test]
async fn fifo_and_idempotent_remove() {
    let dir = tempfile::tempdir().unwrap();
    let spool: Spool = Spool::open(dir.path(), 1 << 24).unwrap();
    let mut seqs = Vec::new();
    for n in 0..300 {
        seqs.push(spool.append(&outgoing(n)).await.unwrap());
    }
    let first = spool.oldest(10).unwrap();
    assert_eq!(first.len(), 10);
    for (n, event) in first.iter().enumerate() {
        assert_eq!(event.seq, seqs[n]);
        assert_eq!(event.entry, outgoing(n));
    }
    assert_eq!(spool.oldest(1000).unwrap().len(), 300);

    let before = spool.stats();
    spool.remove(seqs[0]).await.unwrap();
    spool.remove(seqs[0]).await.unwrap();
    spool.remove(seqs[5]).await.unwrap();
    spool.remove(u64::MAX).await.unwrap();
    assert_eq!(spool.stats().events, before.events - 2);
    assert_eq!(
        spool.stats().bytes,
        before.bytes - entry_size(&outgoing(0)) - entry_size(&outgoing(5))
    );
    let now: Vec<u64> = spool.oldest(5).unwrap().iter().map(|e| e.seq).collect();
    assert_eq!(now, vec![seqs[1], seqs[2], seqs[3], seqs[4], seqs[6]]);

    spool.bump_attempts(seqs[1]).await.unwrap();
    spool.bump_attempts(seqs[1]).await.unwrap();
    spool.bump_attempts(seqs[0]).await.unwrap(); // gone: a no-op
    let head = &spool.oldest(1).unwrap()[0];
    assert_eq!((head.seq, head.attempts), (seqs[1], 2));
    assert_eq!(head.entry, outgoing(1));
    assert_eq!(
        spool.stats().bytes,
        before.bytes - 2 * entry_size(&outgoing(0))
    );

    // Removals and attempts are made durable when the writer stops.
    spool.close().await;
    let spool: Spool = Spool::open(dir.path(), 1 << 24).unwrap();
    let head = &spool.oldest(1).unwrap()[0];
    assert_eq!((head.seq, head.attempts), (seqs[1], 2));
    assert_eq!(spool.stats().events, 298);
}

#[tokio::test]
async fn full_refuses_and_keeps_earlier_entries() {
    let dir = tempfile::tempdir().unwrap();
    let size = entry_size(&outgoing(0));
    let spool: Spool = Spool::open(dir.path(), 3 * size + size / 2).unwrap();
    let mut seqs = Vec::new();
    for n in 0..3 {
        seqs.push(spool.append(&outgoing(n)).await.unwrap());
    }
    for n in 3..5 {
        match spool.append(&outgoing(n)).await {
            Err(SpoolError::Full { max_bytes }) => assert_eq!(max_bytes, 3 * size + size / 2),
            other => panic!("expected Full, got {other:?}"),
        }
    }
    assert_eq!(
        spool.stats(),
        SpoolStats {
            events: 3,
            bytes: 3 * size
        }
    );
    let stored = spool.oldest(10).unwrap();
    assert_eq!(
        stored.iter().map(|e| e.entry.clone()).collect::<Vec<_>>(),
        (0..3).map(outgoing).collect::<Vec<_>>()
    );

    spool.remove(seqs[0]).await.unwrap();
    let seq = spool.append(&outgoing(5)).await.unwrap();
    assert!(seq > seqs[2]);
    assert!(matches!(
        spool.append(&outgoing(6)).await,
        Err(SpoolError::Full { .. })
    ));
    assert_eq!(spool.stats().events, 3);

    // Bigger than the whole bound: refused without disturbing anything.
    let mut huge = outgoing(7);
    huge.body = vec![b'x'; 10 * size as usize];
    assert!(matches!(
        spool.append(&huge).await,
        Err(SpoolError::Full { .. })
    ));
    assert_eq!(spool.oldest(10).unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_share_commits() {
    let dir = tempfile::tempdir().unwrap();
    let spool: Spool = Spool::open(dir.path(), 1 << 26).unwrap();
    let before = spool.commit_count();
    let tasks: Vec<_> = (0..200)
        .map(|n| {
            let spool = spool.clone();
            tokio::spawn(async move { spool.append(&outgoing(n)).await })
        })
        .collect();
    let mut seqs = Vec::new();
    for task in tasks {
        seqs.push(task.await.unwrap().unwrap());
    }
    let commits = spool.commit_count() - before;
    eprintln!(
        "group commit: 200 appends, {commits} commits ({:.3} commits per append)",
        commits as f64 / 200.0
    );
    assert!(commits < 100, "{commits} commits for 200 appends");
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), 200);
    assert_eq!(spool.stats().events, 200);
    assert_eq!(spool.oldest(1000).unwrap().len(), 200);
}

#[tokio::test]
async fn notified_wakes_on_append_even_if_it_came_first() {
    let dir = tempfile::tempdir().unwrap();
    let spool: Spool = Spool::open(dir.path(), 1 << 20).unwrap();
    let waiter = {
        let spool = spool.clone();
        tokio::spawn(async move { spool.notified().await })
    };
    tokio::task::yield_now().await;
    spool.append(&outgoing(1)).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("woken")
        .unwrap();

    // An append nobody waited for is remembered for the next wait.
    spool.append(&outgoing(2)).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), spool.notified())
        .await
        .expect("remembered");
}

#[tokio::test]
async fn corrupt_entry_is_reported_with_dir_and_seq() {
    let dir = tempfile::tempdir().unwrap();
    {
        let spool: Spool = Spool::open(dir.path(), 1 << 20).unwrap();
        spool.append(&outgoing(1)).await.unwrap();
        spool.close().await;
    }
    {
        let db = Database::create(dir.path().join(FILE_NAME)).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(EVENTS)
            .unwrap()
            .insert(1000, [9u8, 1, 2].as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
    let spool: Spool = Spool::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(spool.stats().events, 2);
    assert_eq!(spool.oldest(1).unwrap().len(), 1);
    let err = spool.oldest(2).unwrap_err();
    assert!(
        matches!(err, SpoolError::CorruptEntry { seq: 1000, .. }),
        "{err}"
    );
    let message = err.to_string();
    assert!(
        message.contains(&dir.path().display().to_string()),
        "{message}"
    );
    assert!(message.contains("entry 1000"), "{message}");
    // The drain can drop it and go on.
    spool.remove(1000).await.unwrap();
    assert_eq!(spool.oldest(10).unwrap().len(), 1);
}

#[tokio::test]
async fn open_errors_name_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let spool: Spool = Spool::open(dir.path(), 1 << 20).unwrap();
    // A second open of the same file is refused while the first is alive.
    let err = Spool::<Outgoing>::open(dir.path(), 1 << 20).unwrap_err();
    assert!(matches!(err, SpoolError::Io { .. }));
    assert!(
        err.to_string().contains(&dir.path().display().to_string()),
        "{err}"
    );
    drop(spool);

    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let err = Spool::<Outgoing>::open(&file, 1 << 20).unwrap_err();
    assert!(err.to_string().contains("not-a-dir"), "{err}");
    // The cause is kept as the error's source, so a chain shows each layer once.
    let source = std::error::Error::source(&err).expect("a source");
    let cause = source.to_string();
    assert!(!cause.is_empty() && !cause.contains("not-a-dir"), "{cause}");
    assert!(err.to_string().ends_with(&format!(": {cause}")), "{err}");
}

/// Helper for `crash_keeps_every_acknowledged_append`, run in a child
/// process; a no-op when the environment variable is absent.
#[test]
fn crash_child_appends_then_aborts() {
    let Some(dir) = std::env::var_os(CRASH_DIR_ENV) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let spool: Spool = Spool::open(Path::new(&dir), 1 << 24).unwrap();
        let mut seqs = Vec::new();
        for n in 0..CRASH_APPENDS / 2 {
            seqs.push(spool.append(&outgoing(n)).await.unwrap());
        }
        let tasks: Vec<_> = (CRASH_APPENDS / 2..CRASH_APPENDS)
            .map(|n| {
                let spool = spool.clone();
                tokio::spawn(async move { spool.append(&outgoing(n)).await.unwrap() })
            })
            .collect();
        for task in tasks {
            seqs.push(task.await.unwrap());
        }
        // Not fsynced yet: a crash may undo these.
        for seq in &seqs[..CRASH_REMOVES as usize] {
            spool.remove(*seq).await.unwrap();
        }
        if std::env::var_os(CRASH_WAIT_ENV).is_some() {
            tokio::time::sleep(FLUSH_INTERVAL + Duration::from_millis(500)).await;
        }
        println!("appended {}", seqs.len());
        std::process::abort();
    });
}

/// Runs the crash child on a fresh directory; returns it once the child aborted.
fn run_crash_child(wait_for_flush: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut env = vec![(CRASH_DIR_ENV, dir.path().as_os_str())];
    if wait_for_flush {
        env.push((CRASH_WAIT_ENV, std::ffi::OsStr::new("1")));
    }
    crate::store::run_aborting_child(
        "spool::tests::crash_child_appends_then_aborts",
        &env,
        &format!("appended {CRASH_APPENDS}"),
    );
    dir
}

#[test]
fn crash_after_flush_interval_keeps_removals() {
    let dir = run_crash_child(true);
    let spool: Spool = Spool::open(dir.path(), 1 << 24).unwrap();
    let stored = spool.oldest(1000).unwrap();
    assert_eq!(stored.len(), CRASH_APPENDS - CRASH_REMOVES as usize);
    assert_eq!(stored[0].entry, outgoing(CRASH_REMOVES as usize));
}

#[test]
fn crash_keeps_every_acknowledged_append() {
    let dir = run_crash_child(false);
    let spool: Spool = Spool::open(dir.path(), 1 << 24).unwrap();
    let stored = spool.oldest(1000).unwrap();
    // Every acknowledged append is there; removals may have been undone.
    assert!(stored.len() >= CRASH_APPENDS - CRASH_REMOVES as usize);
    assert!(stored.len() <= CRASH_APPENDS);
    let removed_back = stored.len() - (CRASH_APPENDS - CRASH_REMOVES as usize);
    eprintln!(
        "after abort: {} entries, {removed_back} of {CRASH_REMOVES} removals undone",
        stored.len()
    );
    let mut ids: Vec<String> = stored.iter().map(|e| e.entry.id.clone()).collect();
    ids.sort();
    for n in CRASH_REMOVES as usize..CRASH_APPENDS {
        assert!(ids.binary_search(&outgoing(n).id).is_ok(), "lost {n}");
    }
    for event in &stored {
        let n: usize = event.entry.id["evt_".len()..].parse().unwrap();
        assert_eq!(event.entry, outgoing(n), "entry {} differs", event.seq);
    }
    assert_eq!(spool.stats().events, stored.len() as u64);
}

/// A small tmpfs mounted for one test and unmounted after it.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    /// `None` (the caller skips, saying so) unless running as root.
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        mounted.then_some(Self(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.0.path())
            .status();
    }
}

#[tokio::test]
async fn a_full_disk_fails_appends_and_the_spool_recovers_once_space_is_back() {
    let Some(disk) = Tmpfs::mount("4m") else {
        eprintln!("skipped: mounting a tmpfs needs root (CI runs as root)");
        return;
    };
    let dir = disk.0.path().join("spool");
    let spool: Spool = Spool::open(&dir, 1 << 30).unwrap();
    assert_eq!(spool.append(&outgoing(1)).await.unwrap(), 1);
    // Fill the disk to the last byte.
    let filler = disk.0.path().join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
        let small = [0u8; 512];
        while f.write_all(&small).is_ok() {}
        let _ = f.sync_all();
    }
    let mut big = outgoing(2);
    big.body = vec![b'x'; 512 * 1024];
    assert!(matches!(
        spool.append(&big).await,
        Err(SpoolError::Io { .. })
    ));
    assert!(spool.failing_for().is_some(), "the failure is visible");
    // Still failing while the disk is full, whatever is asked.
    assert!(spool.append(&big).await.is_err());

    std::fs::remove_file(&filler).unwrap();
    let seq = spool
        .append(&big)
        .await
        .expect("appends work again once space is back");
    assert!(seq >= 2);
    assert_eq!(spool.failing_for(), None);
    let held: Vec<String> = spool
        .oldest(10)
        .unwrap()
        .into_iter()
        .map(|e| e.entry.id)
        .collect();
    assert_eq!(
        held,
        ["evt_00001", "evt_00002"],
        "nothing lost, nothing doubled"
    );
    spool.close().await;
}
