//! Positions (issue 11 items 5 and 7): a replica ahead of the local state (a VM or disk
//! rollback, a copied data directory) starts a new generation and `sync_and_wait` never
//! acknowledges a transaction that is not on the replica; `sync_and_wait` callers do not
//! starve snapshots; the published position never moves backwards.
#![allow(clippy::unwrap_used)]

#[path = "engine_common.rs"]
mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{dump, integrity, litestream_bin, restore_with};
use litestream_core::engine::{DbOptions, ReplicaHandleConfig, ReplicaOptions, Replicator};
use litestream_core::restore::{restore, RestoreOptions};
use litestream_core::ReplicaClient;
use litestream_file::FileClient;

fn app_conn(db: &Path) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(db).expect("open app db");
    c.busy_timeout(Duration::from_secs(5)).expect("busy");
    c.pragma_update(None, "journal_mode", "wal").expect("wal");
    c
}

fn replica(dir: &Path, opts: ReplicaOptions) -> ReplicaHandleConfig {
    ReplicaHandleConfig {
        name: "file".into(),
        client: Arc::new(FileClient::new(dir)),
        options: opts,
    }
}

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

/// Restore `rep` with ours and with v0.3.13 and compare both with the source database.
async fn assert_restores_equal(rep: &Path, work: &Path, db: &Path, tag: &str) {
    let expected = dump(db);
    let ours = work.join(format!("{tag}-ours.db"));
    let client: Arc<dyn ReplicaClient> = Arc::new(FileClient::new(rep));
    restore(client, &RestoreOptions::new(&ours))
        .await
        .unwrap_or_else(|e| panic!("{tag}: our restore: {e}"));
    assert_eq!(integrity(&ours), "ok", "{tag}: our restore");
    assert_eq!(dump(&ours), expected, "{tag}: our restore content");
    let theirs = work.join(format!("{tag}-v0313.db"));
    restore_with(&litestream_bin("LITESTREAM_V0313_BIN"), rep, &theirs);
    assert_eq!(integrity(&theirs), "ok", "{tag}: v0.3.13 restore");
    assert_eq!(dump(&theirs), expected, "{tag}: v0.3.13 restore content");
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
    let r = Replicator::start(&db, vec![replica(&rep, opts.clone())], db_opts())
        .await
        .expect("start");
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
    let r = Replicator::start(&db, vec![replica(&rep, opts)], db_opts())
        .await
        .expect("restart");
    insert(&c, 50, 60, "after rollback");
    let acked = r
        .sync_and_wait(Duration::from_secs(20))
        .await
        .expect("sync");
    assert_ne!(
        acked.generation, before.generation,
        "a replica ahead of the local state must start a new generation"
    );
    assert_restores_equal(&rep, dir.path(), &db, "acknowledged").await;
    r.shutdown().await.expect("shutdown");
    assert_restores_equal(&rep, dir.path(), &db, "after shutdown").await;
}
