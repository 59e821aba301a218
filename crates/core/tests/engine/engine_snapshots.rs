//! Point-in-time snapshots (issue 11 item 1): an application that writes and runs its own
//! `PRAGMA wal_checkpoint(PASSIVE)` every 30 ms while the engine snapshots every second. A
//! restore at every snapshot's own created-at, and at every WAL index, passes
//! `integrity_check`; real Litestream v0.3.13 restores the replica equal to the source.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::{
    app_conn, dump, example_bin, integrity, litestream_bin, restore_with, start_with_file_replica,
};
use litestream_core::restore::{restore, RestoreOptions};
use litestream_core::{DbOptions, ReplicaOptions};
use litestream_core::{ReplicaClient, SnapshotInfo};
use litestream_file::FileClient;
use rand::{Rng, RngExt};
use time::format_description::well_known::Rfc3339;

/// A 12,000-row table with an index on a column the workload keeps changing.
fn seed(c: &rusqlite::Connection) {
    c.execute_batch(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, k INTEGER NOT NULL, v TEXT NOT NULL);
         CREATE INDEX t_k ON t (k);",
    )
    .expect("schema");
    let mut rng = rand::rng();
    let tx = c.unchecked_transaction().expect("tx");
    for i in 0..12_000i64 {
        let k: i64 = rng.random_range(0..1_000_000);
        tx.execute(
            "INSERT INTO t (id, k, v) VALUES (?1, ?2, ?3)",
            rusqlite::params![i, k, format!("row {i} {}", "s".repeat(80))],
        )
        .expect("insert");
    }
    tx.commit().expect("commit");
}

/// One application transaction: move rows around the index, insert and delete some.
fn app_tx(c: &rusqlite::Connection, rng: &mut impl Rng, n: i64) {
    let tx = c.unchecked_transaction().expect("tx");
    for _ in 0..4 {
        let id: i64 = rng.random_range(0..12_000 + n);
        tx.execute(
            "UPDATE t SET k = ?2, v = ?3 WHERE id = ?1",
            rusqlite::params![
                id,
                rng.random_range(0..1_000_000i64),
                format!("upd {n} {}", "u".repeat(rng.random_range(10..200)))
            ],
        )
        .expect("update");
    }
    for i in 0..2 {
        tx.execute(
            "INSERT INTO t (k, v) VALUES (?1, ?2)",
            rusqlite::params![rng.random_range(0..1_000_000i64), format!("new {n}/{i}")],
        )
        .expect("insert");
    }
    tx.execute(
        "DELETE FROM t WHERE id = ?1",
        [rng.random_range(0..12_000 + n)],
    )
    .expect("delete");
    tx.commit().expect("commit");
}

/// Write continuously and checkpoint (PASSIVE) every ~30 ms until `stop`.
fn run_app(db: &Path, stop: &AtomicBool) -> i64 {
    let c = app_conn(db);
    let mut rng = rand::rng();
    let mut n = 0i64;
    let mut last = std::time::Instant::now();
    while !stop.load(Ordering::SeqCst) {
        app_tx(&c, &mut rng, n);
        n += 1;
        if last.elapsed() >= Duration::from_millis(30) {
            let _: (i64, i64, i64) = c
                .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .expect("checkpoint");
            last = std::time::Instant::now();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    n
}

async fn restore_to(client: &Arc<dyn ReplicaClient>, opts: &RestoreOptions) -> String {
    match restore(Arc::clone(client), opts).await {
        Ok(_) => integrity(&opts.output),
        Err(e) => format!("restore failed: {e}"),
    }
}

/// Restore `rep` (one generation) at every snapshot's created-at, at random timestamps after
/// the first snapshot and at every index, with ours, and with real v0.3.13 at every snapshot's
/// created-at: each must pass `integrity_check`. Returns the snapshots.
async fn check_every_restore(v3: &Path, rep: &Path, work: &Path, what: &str) -> Vec<SnapshotInfo> {
    let client: Arc<dyn ReplicaClient> = Arc::new(FileClient::new(rep));
    let gens = client.generations().await.expect("generations");
    assert_eq!(gens.len(), 1, "one generation: {gens:?}");
    let g = &gens[0];
    let snaps = client.snapshots(g).await.expect("snapshots");
    let segs = client.wal_segments(g).await.expect("segments");
    // Snapshots at the same index replace each other: at least a few distinct ones.
    assert!(snaps.len() >= 3, "snapshot every second: {snaps:?}");
    let max_index = segs.iter().map(|s| s.index).max().expect("segments");

    let mut failures = Vec::new();
    let mut n = 0;
    for (i, s) in snaps.iter().enumerate() {
        let mut o = RestoreOptions::new(work.join(format!("ts-{i}.db")));
        o.timestamp = Some(s.created_at);
        let res = restore_to(&client, &o).await;
        if res != "ok" {
            failures.push(format!(
                "timestamp {} (snapshot {:08x}): {res}",
                s.created_at, s.index
            ));
        }
        n += 1;
    }
    // Random timestamps between the first snapshot and the end.
    let first = snaps.iter().map(|s| s.created_at).min().expect("snapshots");
    let last = segs.iter().map(|s| s.created_at).max().expect("segments");
    let mut rng = rand::rng();
    for i in 0..10 {
        let span = (last - first).whole_milliseconds().max(1) as i64;
        let ts = first + time::Duration::milliseconds(rng.random_range(0..=span));
        let mut o = RestoreOptions::new(work.join(format!("rts-{i}.db")));
        o.timestamp = Some(ts);
        let res = restore_to(&client, &o).await;
        if res != "ok" {
            failures.push(format!("random timestamp {ts}: {res}"));
        }
        n += 1;
    }
    for index in 0..=max_index {
        let mut o = RestoreOptions::new(work.join(format!("ix-{index}.db")));
        o.index = Some(index);
        if !snaps.iter().any(|s| s.index <= index) {
            continue;
        }
        let res = restore_to(&client, &o).await;
        if res != "ok" {
            failures.push(format!("index {index:08x}: {res}"));
        }
        n += 1;
    }
    assert!(
        failures.is_empty(),
        "{} of {n} restores failed ({} snapshots, {what}):\n{}",
        failures.len(),
        snaps.len(),
        failures.join("\n")
    );

    // Real Litestream v0.3.13 too, at every snapshot's created-at.
    for (i, s) in snaps.iter().enumerate() {
        let out = work.join(format!("v0313-ts-{i}.db"));
        let ts = s.created_at.format(&Rfc3339).expect("format");
        let o = std::process::Command::new(v3)
            .args(["restore", "-timestamp", &ts, "-o"])
            .arg(&out)
            .arg(format!("file://{}", rep.display()))
            .output()
            .expect("run v0.3.13");
        let res = if o.status.success() {
            integrity(&out)
        } else {
            format!("restore failed: {}", String::from_utf8_lossy(&o.stderr))
        };
        assert_eq!(
            res, "ok",
            "v0.3.13 restore -timestamp {ts} (snapshot {:08x})",
            s.index
        );
    }

    eprintln!(
        "{n} restores ok: {} snapshots, indexes 0..={max_index}, {what}",
        snaps.len()
    );
    snaps
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_snapshot_timestamp_and_every_index_restores_consistent() {
    let v3 = litestream_bin("LITESTREAM_V0313_BIN");
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("app.db");
    let rep = dir.path().join("replica");
    seed(&app_conn(&db));

    let opts = ReplicaOptions {
        snapshot_interval: Some(Duration::from_secs(1)),
        ..Default::default()
    };
    let r = start_with_file_replica(&db, &rep, opts, DbOptions::default()).await;
    let stop = Arc::new(AtomicBool::new(false));
    let app = {
        let (db, stop) = (db.clone(), Arc::clone(&stop));
        std::thread::spawn(move || run_app(&db, &stop))
    };
    tokio::time::sleep(Duration::from_secs(9)).await;
    stop.store(true, Ordering::SeqCst);
    let txs = app.join().expect("app");
    r.shutdown().await.expect("shutdown");

    let snaps =
        check_every_restore(&v3, &rep, dir.path(), &format!("{txs} app transactions")).await;

    // Real Litestream restores the replica equal to the source.
    let theirs = dir.path().join("v0313.db");
    restore_with(&v3, &rep, &theirs);
    assert_eq!(integrity(&theirs), "ok", "v0.3.13 restore");
    assert_eq!(dump(&theirs), dump(&db), "v0.3.13 restore content");
    assert!(snaps.len() >= 3, "{txs} app transactions");
}

/// The run: the replicating process (the `embedded` example, snapshotting every
/// second) killed with -9 after 9 s while the application writes and checkpoints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_replicator_leaves_snapshots_that_restore_consistent() {
    let v3 = litestream_bin("LITESTREAM_V0313_BIN");
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("app.db");
    let rep = dir.path().join("replica");
    seed(&app_conn(&db));
    let mut child = std::process::Command::new(example_bin())
        .arg(&db)
        .arg(&rep)
        .args(["0", "1000"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn example");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if line.starts_with("durable ") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("the replicator came up (acknowledged a transaction)");
    let stop = Arc::new(AtomicBool::new(false));
    let app = {
        let (db, stop) = (db.clone(), Arc::clone(&stop));
        std::thread::spawn(move || run_app(&db, &stop))
    };
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "the replicator exited before the kill"
    );
    child.kill().expect("kill -9");
    child.wait().expect("wait");
    stop.store(true, Ordering::SeqCst);
    let txs = app.join().expect("app");
    reader.join().expect("reader");
    let what = format!("{txs} app transactions, killed with -9");
    let snaps = check_every_restore(&v3, &rep, dir.path(), &what).await;
    assert!(snaps.len() >= 3, "{what}");
}
