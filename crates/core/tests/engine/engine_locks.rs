//! The engine must never drop this process's SQLite locks on the database file: if it did,
//! another process closing its last connection would checkpoint and delete the WAL under us.
//! (Closing any descriptor of a file drops every POSIX lock the process holds on it.)
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use litestream_core::restore::{restore, RestoreOptions};
use litestream_core::{DbOptions, ReplicaHandleConfig, Replicator};
use litestream_file::FileClient;

/// Insert rows from another process that then closes its (only) connection.
fn write_from_other_process(db: &std::path::Path, n: u32) {
    let script = format!(
        "import sqlite3\nc = sqlite3.connect({db:?})\nc.executemany('INSERT INTO t (x) VALUES (?)', [(i,) for i in range({n})])\nc.commit()\nc.close()\n",
        db = db.display().to_string()
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .output()
        .unwrap();
    assert!(out.status.success(), "python3 writer failed: {out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_processes_closing_their_connection_never_delete_the_wal() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode=wal; CREATE TABLE t (id INTEGER PRIMARY KEY, x INTEGER);",
        )
        .unwrap();
    }
    let replica = dir.path().join("replica");
    let client = Arc::new(FileClient::new(&replica));
    let replicator = Replicator::start(
        &db,
        vec![ReplicaHandleConfig::new(client.clone())],
        DbOptions::default(),
    )
    .await
    .unwrap();
    // The first sync of a new generation takes a snapshot, which reads the database file.
    replicator
        .sync_and_wait(Duration::from_secs(20))
        .await
        .unwrap();
    for round in 0..3 {
        write_from_other_process(&db, 200);
        let wal = std::path::PathBuf::from(format!("{}-wal", db.display()));
        assert!(
            wal.exists(),
            "round {round}: the -wal file was deleted by another process"
        );
        replicator
            .sync_and_wait(Duration::from_secs(20))
            .await
            .unwrap();
    }
    replicator.shutdown().await.unwrap();

    let out = dir.path().join("restored.db");
    restore(client, &RestoreOptions::new(&out)).await.unwrap();
    let c = rusqlite::Connection::open(&out).unwrap();
    let n: i64 = c
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 600);
}
