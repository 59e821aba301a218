//! The database's life under a running replicator (issue 11): retention without a current
//! generation, the database appearing, being replaced or restored in place, checkpoints that
//! cannot restart the WAL (no spin), and large uncommitted transactions (no re-reading).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::common::{
    app_conn, assert_restores, dump, fast_db_opts, fast_replica_opts, finish_and_assert_restores,
    integrity, start_synced, start_with_file_replica, try_our_restore, wal_len,
};
use litestream_core::{DbOptions, ReplicaOptions};
use litestream_core::{Generation, ReplicaClient};
use litestream_file::FileClient;

fn insert(c: &rusqlite::Connection, table: &str, from: i64, n: i64) {
    c.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS {table} (id INTEGER PRIMARY KEY, v TEXT)"
    ))
    .expect("schema");
    let tx = c.unchecked_transaction().expect("tx");
    for i in from..from + n {
        tx.execute(
            &format!("INSERT INTO {table} (id, v) VALUES (?1, ?2)"),
            rusqlite::params![i, format!("{table} row {i} {}", "x".repeat(100))],
        )
        .expect("insert");
    }
    tx.commit().expect("commit");
}

/// Every file under `dir` (recursively).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

fn remove_db(db: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        match std::fs::remove_file(PathBuf::from(p)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("remove {}{suffix}: {e}", db.display()),
        }
    }
}

/// Replicate a small database into `rep` once; returns its generation and content.
async fn seed_replica(dir: &Path, rep: &Path) -> (Generation, Vec<(String, Vec<String>)>) {
    let db = dir.join("seed.db");
    let c = app_conn(&db);
    insert(&c, "t", 0, 50);
    let (r, pos) = start_synced(&db, rep, fast_replica_opts(), fast_db_opts()).await;
    r.shutdown().await.expect("shutdown seed");
    drop(c);
    (pos.generation, dump(&db))
}

/// Item 2: with no database (volume not mounted, restore not run yet) nothing of the replica is
/// ever deleted, however old it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_database_means_no_retention_even_for_old_backups() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rep = dir.path().join("replica");
    let (g, expected) = seed_replica(dir.path(), &rep).await;
    let two_days_ago = SystemTime::now() - Duration::from_secs(2 * 86400);
    let before = files_under(&rep);
    assert!(before.len() >= 2, "seed wrote a snapshot and a segment");
    for f in &before {
        std::fs::File::options()
            .write(true)
            .open(f)
            .and_then(|h| h.set_modified(two_days_ago))
            .expect("set mtime");
    }

    let missing = dir.path().join("not-mounted").join("app.db");
    std::fs::create_dir_all(missing.parent().unwrap()).expect("mkdir");
    let opts = ReplicaOptions {
        retention: Some(Duration::from_secs(1)),
        retention_check_interval: Duration::from_millis(200),
        ..fast_replica_opts()
    };
    let r = start_with_file_replica(&missing, &rep, opts, fast_db_opts()).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    r.shutdown().await.expect("shutdown");
    assert!(!missing.exists(), "replicate must not create the database");
    assert_eq!(
        files_under(&rep),
        before,
        "every object must still be there"
    );
    let client = FileClient::new(&rep);
    assert_eq!(client.generations().await.expect("generations"), vec![g]);
    assert_restores(&rep, &dir.path().join("restored.db"), &expected).await;
}

/// Item 3, the compose flow: `replicate` runs before the healthcheck's `restore` creates the
/// database. The replicator never creates the file, picks up the restored database, and the
/// replica then restores to the restored data plus the application's new writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_restored_into_place_under_a_running_replicator_is_replicated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rep = dir.path().join("replica");
    let (old_gen, _) = seed_replica(dir.path(), &rep).await;
    let db = dir.path().join("app.db");
    let r = start_with_file_replica(&db, &rep, fast_replica_opts(), fast_db_opts()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!db.exists(), "replicate must not create the database file");
    assert!(r.position().is_none());

    try_our_restore(&rep, &db)
        .await
        .expect("restore into place while replicate runs");
    let c = app_conn(&db);
    insert(&c, "t", 1000, 20);
    let start = Instant::now();
    while r.position().is_none() {
        assert!(start.elapsed() < Duration::from_secs(10), "never picked up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (pos, expected) =
        finish_and_assert_restores(r, c, &db, &rep, dir.path(), Duration::from_secs(20)).await;
    assert_ne!(pos.generation, old_gen, "a new generation");
    assert!(expected
        .iter()
        .any(|(t, rows)| t == "t" && rows.len() == 70));
}

/// Item 3: a database deleted and recreated at the same path under a running replicator is a
/// new database: a new generation, never the new WAL spliced onto the old one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_replaced_at_the_same_path_starts_a_new_generation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rep = dir.path().join("replica");
    let db = dir.path().join("app.db");
    let c = app_conn(&db);
    insert(&c, "old", 0, 200);
    let (r, first) = start_synced(&db, &rep, fast_replica_opts(), fast_db_opts()).await;
    drop(c);

    remove_db(&db);
    let c = app_conn(&db);
    insert(&c, "fresh", 0, 30);
    insert(&c, "fresh", 30, 30);
    let start = Instant::now();
    loop {
        let pos = r.sync().await.expect("sync after replacement");
        if pos.is_some_and(|p| p.generation != first.generation) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the replaced database must start a new generation (still {:?})",
            r.position()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    insert(&c, "fresh", 60, 30);
    let (_, expected) =
        finish_and_assert_restores(r, c, &db, &rep, dir.path(), Duration::from_secs(20)).await;
    assert!(expected.iter().all(|(t, _)| t != "old"));
}

/// Item 4: an application reader held open keeps the WAL from restarting. The engine must not
/// checkpoint again and again (each attempt appending a `_litestream_seq` frame that wakes it
/// once more): the WAL grows by the application's writes only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_reader_causes_no_checkpoint_spin() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rep = dir.path().join("replica");
    let db = dir.path().join("app.db");
    let c = app_conn(&db);
    insert(&c, "t", 0, 10);
    let opts = DbOptions {
        min_checkpoint_page_count: 50,
        ..Default::default()
    };
    let (r, _) = start_synced(&db, &rep, fast_replica_opts(), opts).await;
    // The application's reader, held open for the whole test.
    let reader = rusqlite::Connection::open(&db).expect("reader");
    reader.execute_batch("BEGIN").expect("begin");
    let _: i64 = reader
        .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
        .expect("read");
    // Past the checkpoint threshold: 60 pages of rows.
    for k in 0..6 {
        insert(&c, "t", 100 + k * 100, 40);
    }
    let base = wal_len(&db);
    let mut app_bytes = 0u64;
    for n in 10_000..10_020 {
        let before = wal_len(&db);
        insert(&c, "t", n, 1);
        app_bytes += wal_len(&db).saturating_sub(before);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let grown = wal_len(&db) - base;
    eprintln!("wal grew {grown} bytes; the application's writes {app_bytes}");
    // The application appends about 2 frames per write (8 KB); a spinning engine appends a frame
    // per checkpoint attempt, hundreds per second (megabytes in 5 s).
    assert!(
        grown <= app_bytes + (256 << 10),
        "WAL grew {grown} bytes, the application wrote {app_bytes}"
    );
    reader.execute_batch("COMMIT").expect("end read");
    finish_and_assert_restores(r, c, &db, &rep, dir.path(), Duration::from_secs(20)).await;
}

/// Item 3: a database file the application has created but not written yet (an empty file)
/// is left alone: initialising it would write its first page with our defaults, and the
/// application's own `page_size` would be lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_database_file_is_left_for_the_application_to_create() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rep = dir.path().join("replica");
    let db = dir.path().join("app.db");
    let r = start_with_file_replica(&db, &rep, fast_replica_opts(), fast_db_opts()).await;
    std::fs::File::create(&db).expect("the application creates the file");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(std::fs::metadata(&db).expect("db").len(), 0, "untouched");
    let c = rusqlite::Connection::open(&db).expect("open");
    c.execute_batch("PRAGMA page_size = 8192; PRAGMA journal_mode = wal;")
        .expect("app setup");
    insert(&c, "t", 0, 10);
    let ps: i64 = c
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .expect("page size");
    assert_eq!(ps, 8192, "the application's page size");
    finish_and_assert_restores(r, c, &db, &rep, dir.path(), Duration::from_secs(20)).await;
}

/// The engine's read lock must survive its syncs: reading the wal-index through a `-shm`
/// descriptor that is then closed dropped every POSIX lock of the process on it, so the
/// application could checkpoint and restart the WAL under frames not yet copied (and under
/// the engine's own checkpoint: the application's database was found corrupt).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engines_read_lock_survives_its_syncs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rep = dir.path().join("replica");
    let db = dir.path().join("app.db");
    let c = app_conn(&db);
    insert(&c, "t", 0, 10);
    let opts = DbOptions {
        monitor_interval: Duration::from_secs(3600),
        watch_wal: false,
        min_checkpoint_page_count: 100_000,
        ..Default::default()
    };
    let r = start_with_file_replica(&db, &rep, fast_replica_opts(), opts).await;
    for k in 0..3 {
        insert(&c, "t", 100 + k * 100, 20);
        r.sync().await.expect("sync");
        // The engine now holds a read transaction at the WAL's end: another process's
        // TRUNCATE checkpoint can back-fill but must not restart the WAL under it. (In this
        // process SQLite's own bookkeeping hides a lost POSIX lock, hence the sqlite3 CLI.)
        let out = std::process::Command::new("sqlite3")
            .arg(&db)
            .arg("PRAGMA busy_timeout = 0; PRAGMA wal_checkpoint(TRUNCATE);")
            .output()
            .expect("the sqlite3 command-line tool must be installed");
        assert!(out.status.success(), "sqlite3: {out:?}");
        let res = String::from_utf8_lossy(&out.stdout);
        assert!(
            res.trim()
                .lines()
                .last()
                .is_some_and(|l| l.starts_with("1|")),
            "round {k}: the WAL was checkpointed under the engine's read lock: {res}"
        );
    }
    finish_and_assert_restores(r, c, &db, &rep, dir.path(), Duration::from_secs(20)).await;
}

/// A ~3 KB blob that depends only on `id` (so a restored row's content can be checked).
fn blob_of(id: i64) -> Vec<u8> {
    let mut x = (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..3000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Under a steady write load the WAL watcher fires on every commit; the monitor batches those
/// wake-ups into one sync per `sync-interval` (issue 11, "Cost"), so with the defaults there
/// is a ~1 s gap between syncs while the application keeps writing and its own autocheckpoint
/// (SQLite's default, every 1,000 pages) runs several times inside each gap. Nothing may be
/// lost: our read mark bounds the application's back-fill and forbids a WAL restart past
/// frames we have not copied. Every committed row is on the replica (ours and v0.3.13 restore
/// it, `integrity_check` ok), and the engine did sync about once a second, not per commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_second_sync_gap_under_steady_load_with_app_autocheckpoints_loses_nothing() {
    if std::env::var_os("ENGINE_TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("litestream_core=debug")
            .with_writer(std::io::stderr)
            .try_init();
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let rep = dir.path().join("replica");
    let db = dir.path().join("app.db");
    let c = app_conn(&db);
    c.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB NOT NULL)")
        .expect("schema");
    let autocheckpoint: i64 = c
        .query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0))
        .expect("autocheckpoint");
    assert_eq!(autocheckpoint, 1000, "SQLite's default autocheckpoint");
    // As most WAL applications run (and the cost benchmark's writer): no fsync per commit.
    c.pragma_update(None, "synchronous", "NORMAL")
        .expect("synchronous");
    // Litestream's defaults: monitor-interval 1 s, sync-interval 1 s.
    let (r, _) = start_synced(&db, &rep, ReplicaOptions::default(), DbOptions::default()).await;
    let m = litestream_core::metrics::db(&db.to_string_lossy());
    let syncs_before = m.sync_count.get();
    let wal = dir.path().join("app.db-wal");
    let writer = std::thread::spawn(move || {
        // Continuous writing, one ~3 KB row per transaction, as fast as the app can.
        let started = Instant::now();
        let (mut commits, mut wal_max) = (0i64, 0u64);
        while started.elapsed() < Duration::from_secs(4) {
            let t0 = Instant::now();
            c.execute(
                "INSERT INTO t (id, b) VALUES (?1, ?2)",
                rusqlite::params![commits + 1, blob_of(commits + 1)],
            )
            .unwrap_or_else(|e| {
                panic!(
                    "insert {} after {:?} (waited {:?}): {e}",
                    commits + 1,
                    started.elapsed(),
                    t0.elapsed()
                )
            });
            commits += 1;
            // Steady, not flat out: a debug build of the engine on a loaded 2-core machine
            // copies the WAL only a few times faster than this (~5 MB of WAL a second, still
            // well over 1,000 pages per one-second gap).
            std::thread::sleep(Duration::from_micros(1500));
            if commits % 16 == 0 {
                wal_max = wal_max.max(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
            }
        }
        (commits, wal_max, started.elapsed(), c)
    });
    let (commits, wal_max, elapsed, c) = tokio::task::spawn_blocking(move || writer.join())
        .await
        .expect("join task")
        .expect("writer thread");
    let syncs = m.sync_count.get() - syncs_before;
    eprintln!(
        "{commits} commits ({} MB of rows) in {elapsed:?}, {syncs} syncs, largest WAL {wal_max} bytes",
        commits * 3 / 1000
    );
    // The application's autocheckpoint (at 1,000 frames) ran inside the gaps: the WAL held
    // more than 1,000 frames between two of our syncs.
    assert!(
        wal_max > 1000 * (4096 + 24),
        "the WAL never passed 1,000 frames ({wal_max} bytes, {commits} commits)"
    );
    let bound = elapsed.as_secs() + 2;
    assert!(
        syncs >= 2,
        "{syncs} syncs: the monitor did not sync during the load"
    );
    assert!(
        syncs <= bound,
        "{syncs} syncs for {commits} commits in {elapsed:?}: wake-ups are not batched"
    );
    r.sync_and_wait(Duration::from_secs(30))
        .await
        .expect("final sync");
    r.shutdown().await.expect("shutdown");
    let expected = dump(&db);
    assert_eq!(integrity(&db), "ok", "the application's database");
    drop(c);
    let rows = &expected.iter().find(|(t, _)| t == "t").expect("table t").1;
    assert_eq!(rows.len() as i64, commits, "committed rows in the source");
    let out = dir.path().join("restored.db");
    assert_restores(&rep, &out, &expected).await;
    // Row contents, not only counts: every committed row, byte for byte.
    let rc = rusqlite::Connection::open(&out).expect("open restored");
    let mut st = rc
        .prepare("SELECT id, b FROM t ORDER BY id")
        .expect("prepare");
    let mut n = 0i64;
    for row in st
        .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))
        .expect("query")
    {
        let (id, b) = row.expect("row");
        n += 1;
        assert_eq!(id, n, "row ids are 1..=commits");
        assert!(b == blob_of(id), "row {id}: content differs");
    }
    assert_eq!(n, commits, "every committed row restored");
}
