//! Positions (issue 11 items 5 and 7): a replica ahead of the local state (a VM or disk
//! rollback, a copied data directory) starts a new generation and `sync_and_wait` never
//! acknowledges a transaction that is not on the replica; `sync_and_wait` callers do not
//! starve snapshots; the published position never moves backwards.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::common::{app_conn, assert_restores, dump, file_replica, start_with_file_replica};
use litestream_core::{ByteStream, Generation, Pos, ReplicaClient, SnapshotInfo, WalSegmentInfo};
use litestream_core::{DbOptions, ReplicaHandleConfig, ReplicaOptions, Replicator};
use litestream_file::FileClient;

fn db_opts() -> DbOptions {
    DbOptions {
        monitor_interval: Duration::from_millis(50),
        ..Default::default()
    }
}

fn insert(c: &rusqlite::Connection, from: i64, to: i64, tag: &str) {
    let tx = c.unchecked_transaction().expect("tx");
    for i in from..to {
        tx.execute(
            "INSERT INTO t (id, v) VALUES (?1, ?2)",
            rusqlite::params![i, format!("{tag} {i} {}", "x".repeat(200))],
        )
        .expect("insert");
    }
    tx.commit().expect("commit");
}

/// Copy the database, its WAL and the meta directory (not `-shm`) from `from` to `to`.
fn copy_state(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for name in ["app.db", "app.db-wal"] {
        let src = from.join(name);
        if src.exists() {
            std::fs::copy(&src, to.join(name)).expect("copy");
        } else {
            let _ = std::fs::remove_file(to.join(name));
        }
    }
    let _ = std::fs::remove_file(to.join("app.db-shm"));
    let meta_to = to.join(".app.db-litestream");
    let _ = std::fs::remove_dir_all(&meta_to);
    copy_dir(&from.join(".app.db-litestream"), &meta_to);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read dir") {
        let e = e.expect("entry");
        let dst = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &dst);
        } else if e.file_name().to_string_lossy() != "lock" {
            std::fs::copy(e.path(), &dst).expect("copy");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_ahead_of_a_rolled_back_database_starts_a_new_generation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let live = dir.path().join("live");
    let saved = dir.path().join("saved");
    std::fs::create_dir_all(&live).expect("mkdir");
    let db = live.join("app.db");
    let rep = dir.path().join("replica");
    let opts = ReplicaOptions {
        sync_interval: Duration::from_millis(20),
        ..Default::default()
    };

    // Replicate, then take a copy of the whole data directory (a VM snapshot while idle).
    let c = app_conn(&db);
    c.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        .expect("schema");
    let r = start_with_file_replica(&db, &rep, opts.clone(), db_opts()).await;
    insert(&c, 0, 50, "before");
    let before = r
        .sync_and_wait(Duration::from_secs(20))
        .await
        .expect("sync");
    copy_state(&live, &saved);

    // Replicate more, stop.
    insert(&c, 50, 120, "lost");
    r.sync_and_wait(Duration::from_secs(20))
        .await
        .expect("sync");
    r.shutdown().await.expect("shutdown");
    drop(c);

    // Roll back: the old copy comes back, the replica is ahead of it.
    copy_state(&saved, &live);
    let c = app_conn(&db);
    let r = start_with_file_replica(&db, &rep, opts, db_opts()).await;
    insert(&c, 50, 60, "after rollback");
    let acked = r
        .sync_and_wait(Duration::from_secs(20))
        .await
        .expect("sync");
    // What was acknowledged is on the replica.
    assert_restores(&rep, &dir.path().join("acknowledged-ours.db"), &dump(&db)).await;
    assert_ne!(
        acked.generation, before.generation,
        "a replica ahead of the local state must start a new generation"
    );
    r.shutdown().await.expect("shutdown");
    assert_restores(&rep, &dir.path().join("after shutdown-ours.db"), &dump(&db)).await;
}

/// Item 7: callers that keep `sync_and_wait` busy (several at once, back to back, against a
/// slow replica) must not starve the replica's snapshots, retention and validations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_and_wait_callers_do_not_starve_snapshots_and_validation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("app.db");
    let rep = dir.path().join("replica");
    app_conn(&db)
        .execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        .expect("schema");
    let every = Duration::from_millis(300);
    let opts = ReplicaOptions {
        snapshot_interval: Some(every),
        validation_interval: Some(every),
        retention: Some(Duration::from_secs(3600)),
        retention_check_interval: every,
        ..Default::default()
    };
    // Uploads take a while (a remote replica): callers queue up behind each one.
    let slow = ReplicaHandleConfig {
        name: "busy".into(),
        client: Arc::new(SlowWalWrites {
            inner: FileClient::new(&rep),
            delay: Duration::from_millis(40),
        }),
        options: opts,
    };
    let log = capture_logs();
    let r = Arc::new(
        Replicator::start(&db, vec![slow], db_opts())
            .await
            .expect("start"),
    );
    let run_for = Duration::from_secs(4);
    let mut writers = Vec::new();
    for w in 0..4i64 {
        let (r, db) = (Arc::clone(&r), db.clone());
        writers.push(tokio::spawn(async move {
            let c = app_conn(&db);
            let started = std::time::Instant::now();
            let mut n = 0i64;
            while started.elapsed() < run_for {
                let id = w * 1_000_000 + n;
                insert(&c, id, id + 1, "busy");
                r.sync_and_wait(Duration::from_secs(20))
                    .await
                    .expect("sync");
                n += 1;
            }
            n
        }));
    }
    let mut acked = 0;
    for w in writers {
        acked += w.await.expect("writer");
    }
    let stats = r.validation_stats("busy").expect("stats");
    let runs = |what: &str| {
        let text = String::from_utf8_lossy(&log.lock().expect("log")).into_owned();
        text.lines()
            .filter(|l| l.contains("replica=busy") && l.contains(what))
            .count()
    };
    // A snapshot-interval run either writes a snapshot or skips one (same index).
    let snapshot_runs = runs("write snapshot") + runs("snapshot skipped");
    let retention_runs = runs("retention check");
    eprintln!(
        "{acked} acknowledged writes, {snapshot_runs} snapshot runs, {retention_runs} retention runs, validations {stats:?}"
    );
    assert!(acked > 20, "the writers made too little progress: {acked}");
    assert!(
        snapshot_runs >= 3,
        "snapshots starved: {snapshot_runs} runs in {run_for:?} with a 300 ms interval"
    );
    assert!(
        retention_runs >= 3,
        "retention starved: {retention_runs} runs in {run_for:?} with a 300 ms interval"
    );
    assert!(
        stats.ok + stats.error >= 3,
        "validations starved in {run_for:?} with a 300 ms interval: {stats:?}"
    );
    assert_eq!(stats.error, 0, "validations failed: {stats:?}");
    Arc::try_unwrap(r)
        .expect("sole owner")
        .shutdown()
        .await
        .expect("shutdown");
    assert_restores(&rep, &dir.path().join("busy-ours.db"), &dump(&db)).await;
}

/// Send the engine's debug logs (this test binary's, as text) into the returned buffer.
fn capture_logs() -> Arc<std::sync::Mutex<Vec<u8>>> {
    #[derive(Clone)]
    struct Sink(Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("log").extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = Sink(Arc::clone(&buf));
    tracing_subscriber::fmt()
        .with_env_filter("litestream_core=debug")
        .with_ansi(false)
        .with_writer(move || sink.clone())
        .init();
    buf
}

/// A file replica whose WAL segment writes first wait `delay`.
#[derive(Debug)]
struct SlowWalWrites {
    inner: FileClient,
    delay: Duration,
}

#[async_trait::async_trait]
impl ReplicaClient for SlowWalWrites {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    async fn generations(&self) -> litestream_core::Result<Vec<Generation>> {
        self.inner.generations().await
    }
    async fn snapshots(&self, g: &Generation) -> litestream_core::Result<Vec<SnapshotInfo>> {
        self.inner.snapshots(g).await
    }
    async fn wal_segments(&self, g: &Generation) -> litestream_core::Result<Vec<WalSegmentInfo>> {
        self.inner.wal_segments(g).await
    }
    async fn open_snapshot(
        &self,
        g: &Generation,
        index: u32,
    ) -> litestream_core::Result<ByteStream> {
        self.inner.open_snapshot(g, index).await
    }
    async fn open_wal_segment(&self, pos: &Pos) -> litestream_core::Result<ByteStream> {
        self.inner.open_wal_segment(pos).await
    }
    async fn write_snapshot(
        &self,
        g: &Generation,
        index: u32,
        data: ByteStream,
    ) -> litestream_core::Result<SnapshotInfo> {
        self.inner.write_snapshot(g, index, data).await
    }
    async fn write_wal_segment(
        &self,
        pos: &Pos,
        data: ByteStream,
    ) -> litestream_core::Result<WalSegmentInfo> {
        tokio::time::sleep(self.delay).await;
        self.inner.write_wal_segment(pos, data).await
    }
    async fn delete_snapshot(&self, g: &Generation, index: u32) -> litestream_core::Result<()> {
        self.inner.delete_snapshot(g, index).await
    }
    async fn delete_wal_segments(&self, positions: &[Pos]) -> litestream_core::Result<()> {
        self.inner.delete_wal_segments(positions).await
    }
    async fn delete_generation(&self, g: &Generation) -> litestream_core::Result<()> {
        self.inner.delete_generation(g).await
    }
    async fn list_objects(
        &self,
        dir: &str,
    ) -> litestream_core::Result<Vec<litestream_core::listing::ListedObject>> {
        self.inner.list_objects(dir).await
    }
    async fn open_object(&self, key: &str) -> litestream_core::Result<ByteStream> {
        self.inner.open_object(key).await
    }
    async fn object_timestamp(
        &self,
        key: &str,
    ) -> litestream_core::Result<Option<time::OffsetDateTime>> {
        self.inner.object_timestamp(key).await
    }
}

/// Item 7: the published position never moves backwards, also while validations pin
/// positions beside the monitor's syncs and `sync_and_wait` callers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_published_position_never_moves_backwards() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("app.db");
    let rep = dir.path().join("replica");
    let c = app_conn(&db);
    c.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        .expect("schema");
    // A database of a few MB, so that a validation's checksum takes a while.
    for i in 0..20 {
        insert(&c, i * 1000, i * 1000 + 1000, "seed");
    }
    drop(c);
    let opts = ReplicaOptions {
        sync_interval: Duration::from_millis(10),
        ..Default::default()
    };
    let db_opts = DbOptions {
        monitor_interval: Duration::from_millis(5),
        ..db_opts()
    };
    let r = Arc::new(
        Replicator::start(&db, vec![file_replica("file", &rep, opts)], db_opts)
            .await
            .expect("start"),
    );
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (db, stop) = (db.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let c = app_conn(&db);
            let mut n = 100_000;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                insert(&c, n, n + 3, "w");
                n += 3;
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let watcher = {
        let (r, stop) = (Arc::clone(&r), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut last: Option<Pos> = None;
            let mut backwards = Vec::new();
            let mut seen = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                if let Some(p) = r.position() {
                    if let Some(l) = &last {
                        if l.generation == p.generation && p.index_offset() < l.index_offset() {
                            backwards.push(format!("{l} -> {p}"));
                        }
                    }
                    if last.as_ref() != Some(&p) {
                        seen += 1;
                    }
                    last = Some(p);
                }
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            (backwards, seen)
        })
    };
    for _ in 0..15 {
        let rep = r.validate("file").await.expect("validate");
        assert!(rep.ok(), "validation mismatch: {rep:?}");
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    writer.join().expect("writer");
    let (backwards, seen) = watcher.await.expect("watcher");
    assert!(seen > 20, "too few positions observed: {seen}");
    assert!(
        backwards.is_empty(),
        "the published position moved backwards {} times: {:?}",
        backwards.len(),
        &backwards[..backwards.len().min(5)]
    );
    Arc::try_unwrap(r)
        .expect("sole owner")
        .shutdown()
        .await
        .expect("shutdown");
}
