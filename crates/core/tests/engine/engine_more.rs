//! The engine beyond the happy path: retention (spec 5.3), several replicas with one failing,
//! several databases in one process, validation (spec 5.4), and an application under a
//! steady write load that never sees SQLITE_BUSY from our checkpoints.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{
    app_conn, assert_restores, dump, fast_db_opts, fast_replica_opts, file_replica, integrity,
    litestream_bin, our_restore, restore_with, start_with_file_replica, try_our_restore,
};
use litestream_core::{DbOptions, ReplicaHandleConfig, ReplicaOptions, Replicator};
use litestream_core::{Pos, ReplicaClient};
use litestream_file::FileClient;

/// One transaction of a few rows and a blob of `blob` bytes.
fn write_tx(c: &rusqlite::Connection, n: i64, blob: usize) {
    let tx = c.unchecked_transaction().expect("tx");
    for i in 0..5 {
        tx.execute(
            "INSERT INTO t (n, v) VALUES (?1, ?2)",
            rusqlite::params![n, format!("row {n}/{i} {}", "v".repeat(50))],
        )
        .expect("insert");
    }
    let b: Vec<u8> = (0..blob)
        .map(|i| (i as u64 * 31 + n as u64) as u8)
        .collect();
    tx.execute("INSERT INTO blobs (b) VALUES (?1)", [b])
        .expect("blob");
    tx.commit().expect("commit");
}

fn schema(c: &rusqlite::Connection) {
    c.execute_batch(
        "CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, n INTEGER, v TEXT);
         CREATE TABLE IF NOT EXISTS blobs (id INTEGER PRIMARY KEY, b BLOB);",
    )
    .expect("schema");
}

fn reached(p: &Option<Pos>, target: &Pos) -> bool {
    p.as_ref().is_some_and(|p| {
        p.generation == target.generation && p.index_offset() >= target.index_offset()
    })
}

/// Wait until the named replica holds everything up to `target`.
async fn wait_replica(r: &Replicator, name: &str, target: &Pos, timeout: Duration) {
    let start = Instant::now();
    while !reached(&r.replica_position(name), target) {
        assert!(
            start.elapsed() < timeout,
            "replica {name} stuck at {:?}, want {target}",
            r.replica_position(name)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Shadow WAL files of the current generation: (index, size), ascending.
fn shadow_files(meta: &Path) -> Vec<(u32, u64)> {
    let g = std::fs::read_to_string(meta.join("generation")).expect("generation");
    let dir = meta.join("generations").join(g.trim()).join("wal");
    let mut v: Vec<(u32, u64)> = std::fs::read_dir(&dir)
        .expect("shadow dir")
        .filter_map(|e| {
            let e = e.ok()?;
            let name = e.file_name().to_string_lossy().into_owned();
            let i = u32::from_str_radix(name.strip_suffix(".wal")?, 16).ok()?;
            Some((i, e.metadata().ok()?.len()))
        })
        .collect();
    v.sort_unstable();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_old_generations_snapshots_and_segments_and_replica_restores() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("app.db");
    let rep = dir.path().join("replica");
    let c = app_conn(&db);
    schema(&c);

    // An old generation: replicate a little, stop, and lose the meta directory so the next
    // start begins a new generation.
    let r = start_with_file_replica(&db, &rep, fast_replica_opts(), fast_db_opts()).await;
    write_tx(&c, 0, 3000);
    let old = r
        .sync_and_wait(Duration::from_secs(20))
        .await
        .expect("sync")
        .generation;
    r.shutdown().await.expect("shutdown");
    std::fs::remove_dir_all(dir.path().join(".app.db-litestream")).expect("rm meta");

    let retention = Duration::from_secs(2);
    let check = Duration::from_millis(300);
    let opts = ReplicaOptions {
        retention: Some(retention),
        retention_check_interval: check,
        snapshot_interval: Some(Duration::from_millis(700)),
        ..fast_replica_opts()
    };
    let r = start_with_file_replica(&db, &rep, opts, fast_db_opts()).await;
    let current = r.position().expect("pos").generation;
    assert_ne!(
        current, old,
        "a lost meta directory must start a new generation"
    );
    let started = Instant::now();
    let mut n = 1;
    while started.elapsed() < Duration::from_secs(6) {
        write_tx(&c, n, 6000);
        n += 1;
        if n % 10 == 0 {
            r.sync_and_wait(Duration::from_secs(20))
                .await
                .expect("sync");
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let pos = r
        .sync_and_wait(Duration::from_secs(20))
        .await
        .expect("sync");
    let expected = dump(&db);
    r.shutdown().await.expect("shutdown");
    assert!(pos.index >= 3, "several indexes expected, got {pos}");

    let client = FileClient::new(&rep);
    let gens = client.generations().await.expect("generations");
    assert_eq!(
        gens,
        vec![current.clone()],
        "the old generation (no snapshot within retention) must be deleted"
    );
    let snaps = client.snapshots(&current).await.expect("snapshots");
    let k = snaps.iter().map(|s| s.index).min().expect("a snapshot");
    assert!(
        k > 0,
        "the first snapshot (index 0) is older than retention: {snaps:?}"
    );
    let now = time::OffsetDateTime::now_utc();
    for s in &snaps {
        let age: Duration = (now - s.created_at).try_into().unwrap_or_default();
        assert!(
            age < retention + check + Duration::from_secs(2),
            "snapshot {} is {age:?} old, beyond retention: {snaps:?}",
            s.index
        );
    }
    let segs = client.wal_segments(&current).await.expect("wal");
    assert!(
        segs.iter().all(|s| s.index >= k),
        "segments below the oldest retained snapshot {k} must be deleted: {:?}",
        segs.iter().map(|s| s.pos().to_string()).collect::<Vec<_>>()
    );
    assert!(
        segs.iter().any(|s| s.index == k && s.offset == 0),
        "the segments of the retained snapshot's index {k} must be kept"
    );
    assert_restores(&rep, &dir.path().join("retention-ours.db"), &expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_replica_blocks_neither_the_healthy_one_nor_local_cleanup_and_catches_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("app.db");
    let good = dir.path().join("good");
    let bad = dir.path().join("bad");
    let c = app_conn(&db);
    schema(&c);
    let bound: u64 = 256 << 10;
    let opts = DbOptions {
        max_shadow_wal_bytes: bound,
        ..fast_db_opts()
    };
    let r = Replicator::start(
        &db,
        vec![
            file_replica("good", &good, fast_replica_opts()),
            file_replica("bad", &bad, fast_replica_opts()),
        ],
        opts,
    )
    .await
    .expect("start");
    for n in 0..10 {
        write_tx(&c, n, 2000);
    }
    let first = r
        .sync_and_wait(Duration::from_secs(20))
        .await
        .expect("sync");

    // Break the second replica: its directory becomes a regular file (chmod does not stop
    // root, ENOTDIR does). Keep its content aside for the recovery.
    let aside = dir.path().join("bad.aside");
    std::fs::rename(&bad, &aside).expect("move aside");
    std::fs::write(&bad, b"not a directory").expect("file");

    for n in 10..400 {
        write_tx(&c, n, 8000);
        if n % 20 == 0 {
            let target = r.sync().await.expect("sync").expect("pos");
            wait_replica(&r, "good", &target, Duration::from_secs(20)).await;
        }
    }
    let target = r.sync().await.expect("sync").expect("pos");
    wait_replica(&r, "good", &target, Duration::from_secs(20)).await;
    assert!(
        target.index > first.index + 10,
        "the load must produce many indexes: {first} -> {target}"
    );
    let bad_pos = r.replica_position("bad");
    assert!(
        !reached(&bad_pos, &target),
        "the broken replica cannot be in sync: {bad_pos:?}"
    );

    // Local cleanup went on despite the broken replica: old shadow files (all but the
    // newest three) stay within the bound.
    let files = shadow_files(r.meta_path());
    let old: u64 = files.iter().rev().skip(3).map(|f| f.1).sum();
    assert!(
        old <= bound,
        "old shadow wal files hold {old} bytes, bound {bound}: {files:?}"
    );
    assert!(
        files.first().is_some_and(|f| f.0 > first.index),
        "the index the broken replica needs was removed: {files:?}"
    );
    let expected = dump(&db);
    let out = our_restore(&good, dir.path().join("good-while-bad.db")).await;
    assert_eq!(integrity(&out), "ok");
    assert_eq!(
        dump(&out),
        expected,
        "healthy replica while the other fails"
    );

    // Recovery: the broken replica catches up (from a new snapshot) and restores.
    std::fs::remove_file(&bad).expect("rm file");
    // The engine retries meanwhile and may create the replica directory again before the
    // rename: clear what it made (the outage's leftovers) and move the real replica back.
    for attempt in 0.. {
        match std::fs::rename(&aside, &bad) {
            Ok(()) => break,
            Err(_) if attempt < 50 => {
                let _ = std::fs::remove_dir_all(&bad);
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("move back: {e}"),
        }
    }
    for n in 400..420 {
        write_tx(&c, n, 2000);
    }
    let pos = r
        .sync_and_wait(Duration::from_secs(30))
        .await
        .expect("both replicas in sync after recovery");
    assert_eq!(pos.generation, first.generation, "no new generation");
    // The final sync at shutdown may add Litestream's own `_litestream_seq` frame: compare
    // with the database as it is once the replicator has stopped.
    r.shutdown().await.expect("shutdown");
    let expected = dump(&db);
    assert_restores(&bad, &dir.path().join("recovered-ours.db"), &expected).await;
    assert_restores(&good, &dir.path().join("good-ours.db"), &expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_databases_replicate_independently_in_one_process() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut dbs = Vec::new();
    for i in 0..3 {
        let db = dir.path().join(format!("db{i}.sqlite"));
        let rep = dir.path().join(format!("replica{i}"));
        let c = app_conn(&db);
        schema(&c);
        let r = start_with_file_replica(&db, &rep, fast_replica_opts(), fast_db_opts()).await;
        dbs.push((db, rep, c, r));
    }
    // Interleaved writes of different sizes, with syncs of one database while the others
    // keep writing.
    for n in 0..150i64 {
        for (i, (_, _, c, _)) in dbs.iter().enumerate() {
            if n % (i as i64 + 1) == 0 {
                write_tx(c, n * 10 + i as i64, 1000 + 3000 * i);
            }
        }
        if n % 25 == 0 {
            let k = (n / 25) as usize % dbs.len();
            dbs[k]
                .3
                .sync_and_wait(Duration::from_secs(20))
                .await
                .expect("sync");
        }
    }
    let mut gens = Vec::new();
    for (db, rep, _, r) in dbs.iter() {
        let pos = r
            .sync_and_wait(Duration::from_secs(20))
            .await
            .expect("sync");
        gens.push(pos.generation.clone());
        let expected = dump(db);
        let out = our_restore(
            rep,
            dir.path().join(format!(
                "restored-{}",
                db.file_name().unwrap().to_string_lossy()
            )),
        )
        .await;
        assert_eq!(integrity(&out), "ok");
        assert_eq!(dump(&out), expected, "{}", db.display());
        let on_replica = FileClient::new(rep).generations().await.expect("gens");
        assert_eq!(
            on_replica,
            vec![pos.generation.clone()],
            "{}",
            rep.display()
        );
    }
    gens.sort();
    gens.dedup();
    assert_eq!(gens.len(), 3, "each database has its own generation");
    let expected0 = dump(&dbs[0].0);
    let rep0 = dbs[0].1.clone();
    for (_, _, _, r) in dbs.drain(..) {
        r.shutdown().await.expect("shutdown");
    }
    let v3 = litestream_bin("LITESTREAM_V0313_BIN");
    let out = dir.path().join("db0-v0313.db");
    restore_with(&v3, &rep0, &out);
    assert_eq!(dump(&out), expected0);
}

/// Flip one byte inside `marker` in every snapshot of the replica (re-encoded as LZ4).
fn corrupt_snapshots(rep: &Path, marker: &[u8]) -> usize {
    let mut n = 0;
    for g in std::fs::read_dir(rep.join("generations")).expect("gens") {
        let sdir = g.expect("entry").path().join("snapshots");
        let Ok(rd) = std::fs::read_dir(&sdir) else {
            continue;
        };
        for s in rd {
            let p = s.expect("entry").path();
            let raw = std::fs::read(&p).expect("read snapshot");
            let mut data = litestream_core::lz4::decompress_to_vec(&raw).expect("lz4");
            let at = data
                .windows(marker.len())
                .position(|w| w == marker)
                .expect("marker in snapshot");
            data[at + 3] ^= 0x20;
            std::fs::write(&p, litestream_core::lz4::compress_to_vec(&data)).expect("write");
            n += 1;
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_reports_ok_on_a_healthy_replica_and_mismatch_on_a_corrupted_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("app.db");
    let rep = dir.path().join("replica");
    let c = app_conn(&db);
    schema(&c);
    // Pages that no later transaction touches: the corruption below stays visible.
    let marker = b"STATIC-PAGE-MARKER-";
    let big: Vec<u8> = marker.iter().copied().cycle().take(20_000).collect();
    c.execute_batch("CREATE TABLE s (b BLOB)").expect("s");
    c.execute("INSERT INTO s (b) VALUES (?1)", [big])
        .expect("static");
    let opts = ReplicaOptions {
        validation_interval: Some(Duration::from_millis(300)),
        ..fast_replica_opts()
    };
    let r = start_with_file_replica(&db, &rep, opts, fast_db_opts()).await;

    // Under a write load with our checkpoints (several indexes), the periodic validator
    // and on-demand validations all match.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let db = db.clone();
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let c = app_conn(&db);
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                write_tx(&c, n, 3000);
                n += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            n
        })
    };
    let start_pos = r.position().expect("pos");
    for _ in 0..3 {
        let rep = r.validate("file").await.expect("validate");
        assert!(rep.ok(), "healthy replica must validate: {rep:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let t = Instant::now();
    while r.validation_stats("file").expect("stats").ok < 6 {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "periodic validator: {:?}",
            r.validation_stats("file")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let written = writer.join().expect("writer");
    let stats = r.validation_stats("file").expect("stats");
    assert_eq!(stats.error, 0, "no validation may fail: {stats:?}");
    let end_pos = r.position().expect("pos");
    assert!(
        end_pos.index > start_pos.index,
        "validations ran across indexes: {start_pos} -> {end_pos} ({written} txs)"
    );
    assert_eq!(end_pos.generation, start_pos.generation);

    // Corrupt the replica's snapshot: the next validation is a mismatch.
    assert!(corrupt_snapshots(&rep, marker) >= 1);
    let report = r.validate("file").await.expect("validate after corruption");
    assert!(
        !report.ok(),
        "corrupted replica must not validate: {report:?}"
    );
    let after = r.validation_stats("file").expect("stats");
    assert!(after.error >= 1, "{after:?}");
    assert_eq!(after.last, Some(report));
    r.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_never_sees_busy_and_the_wal_stays_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("app.db");
    let rep = dir.path().join("replica");
    let c = app_conn(&db);
    schema(&c);
    let opts = DbOptions {
        monitor_interval: Duration::from_millis(10),
        min_checkpoint_page_count: 8,
        max_checkpoint_page_count: Some(64),
        checkpoint_interval: Some(Duration::from_millis(100)),
        ..Default::default()
    };
    let r = start_with_file_replica(&db, &rep, fast_replica_opts(), opts).await;
    let wal = dir.path().join("app.db-wal");
    let stop = Arc::new(AtomicBool::new(false));
    let max_wal = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (stop, max_wal, wal) = (Arc::clone(&stop), Arc::clone(&max_wal), wal.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                if let Ok(m) = std::fs::metadata(&wal) {
                    max_wal.fetch_max(m.len(), Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    // One writer thread (the application's writes) and one thread of short reads. (A reader
    // whose transactions overlap without pause starves every checkpoint, SQLite's own
    // included: no WAL can be reset while a reader uses it.)
    let reader = {
        let (db, stop) = (db.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let c = rusqlite::Connection::open(&db).expect("open");
            c.busy_timeout(Duration::from_secs(1))
                .expect("busy timeout");
            while !stop.load(Ordering::SeqCst) {
                let _: Option<i64> = c
                    .query_row("SELECT MAX(id) FROM t", [], |r| r.get(0))
                    .unwrap_or_else(|e| panic!("reader: {e}"));
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let writers: Vec<_> = (0..1)
        .map(|w| {
            let db = db.clone();
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let c = rusqlite::Connection::open(&db).expect("open");
                c.busy_timeout(Duration::from_secs(1))
                    .expect("busy timeout");
                let mut n = 0i64;
                let started = Instant::now();
                while started.elapsed() < Duration::from_secs(5) {
                    // Any error (SQLITE_BUSY included) fails the test.
                    let tx = c.unchecked_transaction().expect("begin");
                    tx.execute(
                        "INSERT INTO t (n, v) VALUES (?1, ?2)",
                        rusqlite::params![n * 2 + w, "w".repeat(2000)],
                    )
                    .unwrap_or_else(|e| panic!("writer {w}: insert: {e}"));
                    tx.commit()
                        .unwrap_or_else(|e| panic!("writer {w}: commit: {e}"));
                    n += 1;
                }
                stop.store(true, Ordering::SeqCst);
                n
            })
        })
        .collect();
    let total: i64 = writers.into_iter().map(|h| h.join().expect("writer")).sum();
    stop.store(true, Ordering::SeqCst);
    sampler.join().expect("sampler");
    reader.join().expect("reader");
    let pos = r
        .sync_and_wait(Duration::from_secs(20))
        .await
        .expect("sync");
    r.shutdown().await.expect("shutdown");
    // After the shutdown: its final sync may checkpoint, which bumps `_litestream_seq`.
    let expected = dump(&db);
    let max = max_wal.load(Ordering::SeqCst);
    // The bound: the WAL is restarted after every checkpoint (the engine's writer polls for the
    // write lock every 100 µs instead of SQLite's 1..100 ms back-off, so it gets in between two
    // application transactions; RESTART waits up to 100 ms for readers on old frames), so it only
    // holds what the application appends during one sync-and-checkpoint cycle. That is 1-2 MB
    // here (about 1000 frames/s in a debug build, cycles of tens of ms), a few times 64 pages;
    // 16 MiB leaves room for a slow cycle on a loaded machine (an 11.7 MB outlier was seen
    // once under heavy load). Without the fix it grew to 8-32 MB in 5 s: the checkpoint
    // waited out its busy timeout on almost every attempt.
    let bound: u64 = 16 << 20;
    eprintln!(
        "{total} transactions, max WAL {max} bytes, {} indexes",
        pos.index
    );
    assert!(total > 200, "the writers made too little progress: {total}");
    assert!(max <= bound, "WAL grew to {max} bytes (bound {bound})");
    assert!(pos.index >= 5, "our checkpoints must have run: {pos}");
    let out = our_restore(&rep, dir.path().join("restored.db")).await;
    assert_eq!(dump(&out), expected);
}

/// A file replica whose snapshot reads first wait `delay`: a validation restore takes at least
/// that long (the engine reads snapshots only to validate).
#[derive(Debug)]
struct SlowSnapshotReads {
    inner: FileClient,
    delay: Duration,
}

#[async_trait::async_trait]
impl ReplicaClient for SlowSnapshotReads {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    async fn generations(&self) -> litestream_core::Result<Vec<litestream_core::Generation>> {
        self.inner.generations().await
    }
    async fn snapshots(
        &self,
        g: &litestream_core::Generation,
    ) -> litestream_core::Result<Vec<litestream_core::SnapshotInfo>> {
        self.inner.snapshots(g).await
    }
    async fn wal_segments(
        &self,
        g: &litestream_core::Generation,
    ) -> litestream_core::Result<Vec<litestream_core::WalSegmentInfo>> {
        self.inner.wal_segments(g).await
    }
    async fn open_snapshot(
        &self,
        g: &litestream_core::Generation,
        index: u32,
    ) -> litestream_core::Result<litestream_core::ByteStream> {
        tokio::time::sleep(self.delay).await;
        self.inner.open_snapshot(g, index).await
    }
    async fn open_wal_segment(
        &self,
        pos: &Pos,
    ) -> litestream_core::Result<litestream_core::ByteStream> {
        self.inner.open_wal_segment(pos).await
    }
    async fn write_snapshot(
        &self,
        g: &litestream_core::Generation,
        index: u32,
        data: litestream_core::ByteStream,
    ) -> litestream_core::Result<litestream_core::SnapshotInfo> {
        self.inner.write_snapshot(g, index, data).await
    }
    async fn write_wal_segment(
        &self,
        pos: &Pos,
        data: litestream_core::ByteStream,
    ) -> litestream_core::Result<litestream_core::WalSegmentInfo> {
        self.inner.write_wal_segment(pos, data).await
    }
    async fn delete_snapshot(
        &self,
        g: &litestream_core::Generation,
        index: u32,
    ) -> litestream_core::Result<()> {
        self.inner.delete_snapshot(g, index).await
    }
    async fn delete_wal_segments(&self, positions: &[Pos]) -> litestream_core::Result<()> {
        self.inner.delete_wal_segments(positions).await
    }
    async fn delete_generation(
        &self,
        g: &litestream_core::Generation,
    ) -> litestream_core::Result<()> {
        self.inner.delete_generation(g).await
    }
    async fn list_objects(
        &self,
        dir: &str,
    ) -> litestream_core::Result<Vec<litestream_core::listing::ListedObject>> {
        self.inner.list_objects(dir).await
    }
    async fn open_object(&self, key: &str) -> litestream_core::Result<litestream_core::ByteStream> {
        self.inner.open_object(key).await
    }
    async fn object_timestamp(
        &self,
        key: &str,
    ) -> litestream_core::Result<Option<time::OffsetDateTime>> {
        self.inner.object_timestamp(key).await
    }
}

/// Uploads go on while a validation restores: with a restore slowed to 3 s, a transaction
/// committed meanwhile reaches the replica well within 2 s, and the validation still matches
/// (it compares the position it pinned, not the newer one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_go_on_while_a_validation_restores() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("app.db");
    let c = app_conn(&db);
    schema(&c);
    for n in 0..20 {
        write_tx(&c, n, 2000);
    }
    let slow = ReplicaHandleConfig {
        name: "slow".into(),
        client: Arc::new(SlowSnapshotReads {
            inner: FileClient::new(dir.path().join("replica")),
            delay: Duration::from_secs(3),
        }),
        options: fast_replica_opts(),
    };
    let r = Replicator::start(&db, vec![slow], fast_db_opts())
        .await
        .expect("start");
    r.sync_and_wait(Duration::from_secs(10))
        .await
        .expect("initial sync");
    let started = Instant::now();
    let validation = r.validate("slow");
    let writes = async {
        // Let the validation pin its position and start restoring.
        tokio::time::sleep(Duration::from_millis(500)).await;
        write_tx(&c, 100, 2000);
        let t = Instant::now();
        let pos = r.sync_and_wait(Duration::from_secs(2)).await;
        (pos, t.elapsed())
    };
    let (report, (pos, took)) = tokio::join!(validation, writes);
    let report = report.expect("validate");
    let pos = pos.expect("a commit made during the validation must reach the replica");
    assert!(report.ok(), "{report:?}");
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "the restore was slowed"
    );
    assert!(took < Duration::from_secs(2), "upload waited {took:?}");
    let validated = &report.position;
    assert!(
        (pos.index, pos.offset) > (validated.index, validated.offset),
        "{pos} must be past the validated {validated}"
    );
    r.shutdown().await.expect("shutdown");
}

/// A second replicator on the same database (an embedding app beside a sidecar, Litestream
/// issue #422) is refused with an error naming the database and the holder; the first keeps
/// replicating, and once it has shut down the database can be replicated again, in the same
/// generation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_replicator_on_the_same_database_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("app.db");
    let rep = dir.path().join("replica");
    let other_rep = dir.path().join("other-replica");
    let c = app_conn(&db);
    schema(&c);
    write_tx(&c, 1, 1000);
    let first = start_with_file_replica(&db, &rep, fast_replica_opts(), fast_db_opts()).await;
    let err = Replicator::start(
        &db,
        vec![file_replica("file", &other_rep, fast_replica_opts())],
        fast_db_opts(),
    )
    .await
    .expect_err("a second replicator on the same database must be refused");
    let text = err.to_string();
    assert!(
        matches!(err, litestream_core::Error::AlreadyReplicating { .. }),
        "{text}"
    );
    assert!(
        text.contains(&db.display().to_string())
            && text.contains(&format!("pid {}", std::process::id())),
        "the error should name the database and the holder: {text}"
    );
    assert!(
        !other_rep.exists(),
        "the refused replicator must not have written anything"
    );

    write_tx(&c, 2, 1000);
    let pos = first
        .sync_and_wait(Duration::from_secs(20))
        .await
        .expect("sync");
    first.shutdown().await.expect("shutdown");

    let again = start_with_file_replica(&db, &rep, fast_replica_opts(), fast_db_opts()).await;
    write_tx(&c, 3, 1000);
    let pos2 = again
        .sync_and_wait(Duration::from_secs(20))
        .await
        .expect("sync");
    assert_eq!(pos2.generation, pos.generation, "the generation goes on");
    again.shutdown().await.expect("shutdown");
    let expected = dump(&db);
    assert_restores(&rep, &dir.path().join("after-refusal-ours.db"), &expected).await;
}

/// Wait until the replica restores to exactly `expected`.
async fn wait_restorable(rep: &Path, work: &Path, tag: &str, expected: &[(String, Vec<String>)]) {
    let start = Instant::now();
    for attempt in 0.. {
        let out = work.join(format!("{tag}-{attempt}.db"));
        if try_our_restore(rep, &out).await.is_ok() && dump(&out) == expected {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{tag}: the replica was not repaired within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Delete `dir` like an operator wiping a bucket would, while the engine may still be writing
/// into it: a file created between the listing and the `rmdir` makes the removal fail with
/// `DirectoryNotEmpty`, so try again (a bounded number of times).
fn wipe(dir: &Path) {
    for attempt in 0.. {
        match std::fs::remove_dir_all(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty && attempt < 50 => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("wipe {}: {e}", dir.display()),
        }
    }
}

/// Objects deleted behind the engine's back (a wiped bucket; a lifecycle rule that expired the
/// start of the current WAL index) leave a replica that Litestream v0.3.13 would keep
/// appending to without it ever restoring again ("missing initial wal segment"). The retention
/// check notices and repairs it: a new snapshot and, where needed, the current index uploaded
/// again from offset 0. No WAL index change happens meanwhile (no checkpoint), so only the
/// repair can make it restorable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_objects_were_deleted_repairs_itself() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("app.db");
    let rep = dir.path().join("replica");
    let c = app_conn(&db);
    schema(&c);
    let opts = ReplicaOptions {
        sync_interval: Duration::from_millis(20),
        retention: Some(Duration::from_secs(3600)),
        retention_check_interval: Duration::from_millis(300),
        ..Default::default()
    };
    let db_opts = DbOptions {
        monitor_interval: Duration::from_millis(50),
        ..Default::default()
    };
    let r = start_with_file_replica(&db, &rep, opts, db_opts).await;
    for n in 0..5 {
        write_tx(&c, n, 1000);
    }
    let before = r
        .sync_and_wait(Duration::from_secs(20))
        .await
        .expect("sync");

    // 1. Everything deleted.
    wipe(&rep.join("generations"));
    for n in 5..10 {
        write_tx(&c, n, 1000);
    }
    r.sync_and_wait(Duration::from_secs(20))
        .await
        .expect("sync");
    wait_restorable(&rep, dir.path(), "wiped", &dump(&db)).await;

    // 2. Only the first segment of the current index deleted.
    let wal_dir = rep
        .join("generations")
        .join(before.generation.to_string())
        .join("wal");
    let first = wal_dir.join(format!("{:08x}_00000000.wal.lz4", before.index));
    for n in 10..15 {
        write_tx(&c, n, 1000);
    }
    r.sync_and_wait(Duration::from_secs(20))
        .await
        .expect("sync");
    std::fs::remove_file(&first).expect("delete the initial segment");
    for n in 15..20 {
        write_tx(&c, n, 1000);
    }
    let after = r
        .sync_and_wait(Duration::from_secs(20))
        .await
        .expect("sync");
    assert_eq!(
        (after.generation.clone(), after.index),
        (before.generation.clone(), before.index),
        "the test needs the same generation and WAL index throughout"
    );
    wait_restorable(&rep, dir.path(), "expired", &dump(&db)).await;

    r.shutdown().await.expect("shutdown");
    let expected = dump(&db);
    assert_restores(&rep, &dir.path().join("repaired-ours.db"), &expected).await;
}
