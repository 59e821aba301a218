//! The scale case of issue 11: many databases in one directory. It counts the process's
//! inotify instances, so it runs in the `memory` binary under its `SERIAL` lock.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common;
use crate::common::{assert_restores, dump, fast_replica_opts, start_with_file_replica};
use crate::counting_alloc::SERIAL;
use litestream_core::DbOptions;

fn app_conn(db: &Path) -> rusqlite::Connection {
    let c = common::app_conn(db);
    c.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        .expect("schema");
    c
}

fn insert(c: &rusqlite::Connection, id: i64) {
    c.execute("INSERT INTO t (id, v) VALUES (?1, 'row')", [id])
        .expect("insert");
}

/// inotify instances this process holds (`/proc/self/fd` links to `anon_inode:inotify`).
fn inotify_instances() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .flatten()
        .filter(|e| {
            std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().contains("inotify"))
        })
        .count()
}

/// The scale case: many databases in one directory share one watcher (not one inotify
/// instance each, which runs out of the per-user limit), and idle databases are not synced
/// on every monitor tick.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn databases_in_one_directory_share_one_watcher_and_idle_ones_are_not_synced() {
    // Counts the process's inotify instances: no other test may hold a watcher meanwhile.
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("mkdir");
    let before = inotify_instances();
    let opts = DbOptions {
        monitor_interval: Duration::from_millis(20),
        ..Default::default()
    };
    let mut reps = Vec::new();
    let mut dbs = Vec::new();
    for i in 0..40 {
        let db = data.join(format!("db{i}.db"));
        let c = app_conn(&db);
        insert(&c, 0);
        let rep = dir.path().join(format!("rep{i}"));
        let r = start_with_file_replica(&db, &rep, fast_replica_opts(), opts.clone()).await;
        reps.push(r);
        dbs.push((db, c));
    }
    let during = inotify_instances();
    assert!(
        during <= before + 1,
        "40 databases in one directory hold {} inotify instances",
        during - before
    );
    for r in &reps {
        r.sync_and_wait(Duration::from_secs(20))
            .await
            .expect("sync");
    }
    // Idle: no monitor syncs while nothing changes (a sync every 20 ms would be ~50 a second).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let syncs = |db: &Path| {
        litestream_core::metrics::db(&db.to_string_lossy())
            .sync_count
            .get()
    };
    let counts: Vec<u64> = dbs.iter().map(|(db, _)| syncs(db)).collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle: u64 = dbs
        .iter()
        .zip(&counts)
        .map(|((db, _), n)| syncs(db) - n)
        .sum();
    assert!(
        idle <= 40,
        "{idle} syncs of 40 idle databases in 1 s (50 ticks each)"
    );
    // A write to one idle database is still picked up and uploaded without being asked.
    let old = reps[7].position().expect("pos");
    insert(&dbs[7].1, 100);
    let start = Instant::now();
    while reps[7]
        .replica_position("file")
        .is_none_or(|p| p.index_offset() <= old.index_offset())
    {
        assert!(start.elapsed() < Duration::from_secs(10), "never uploaded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for r in reps {
        r.shutdown().await.expect("shutdown");
    }
    // The watcher's thread closes its instance shortly after the last registration drops.
    let start = Instant::now();
    while inotify_instances() > before {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the shared watcher must stop with the last replicator"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let expected = dump(&dbs[7].0);
    assert_restores(
        &dir.path().join("rep7"),
        &dir.path().join("r7.db"),
        &expected,
    )
    .await;
}
