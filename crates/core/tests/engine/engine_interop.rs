//! The engine against the real Litestream binaries: v0.3.13 and v0.5.17 restore what we
//! replicate, and we take over a database and meta directory left by v0.3.13.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{
    app_conn, dump, integrity, litestream_bin, mixed_schema, mixed_workload_round, restore_with,
    start_with_file_replica,
};
use litestream_core::{DbOptions, ReplicaOptions};

fn fast_opts() -> DbOptions {
    DbOptions {
        monitor_interval: Duration::from_millis(50),
        min_checkpoint_page_count: 32,
        ..Default::default()
    }
}

/// This file's workload: 40 rows and a 5–20 KB blob per transaction.
fn workload_round(c: &rusqlite::Connection, round: u32) {
    mixed_workload_round(c, round, 40, 5000..20000);
}

/// `sync-interval` 10 ms.
fn replica_opts() -> ReplicaOptions {
    ReplicaOptions {
        sync_interval: Duration::from_millis(10),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_litestream_restores_our_replica_under_a_mixed_workload() {
    let v3 = litestream_bin("LITESTREAM_V0313_BIN");
    let v5 = litestream_bin("LITESTREAM_V0517_BIN");
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("app.db");
    let rep = dir.path().join("replica");
    let c = app_conn(&db);
    mixed_schema(&c);

    let mut r = start_with_file_replica(&db, &rep, replica_opts(), fast_opts()).await;
    let generation = r.position().expect("position").generation;
    for round in 0..12 {
        workload_round(&c, round);
        if round == 5 {
            // Restart of the replicator in the middle: the generation must be kept.
            r.sync_and_wait(Duration::from_secs(20))
                .await
                .expect("sync");
            r.shutdown().await.expect("shutdown");
            r = start_with_file_replica(&db, &rep, replica_opts(), fast_opts()).await;
            assert_eq!(r.position().expect("pos").generation, generation);
        }
        if round == 8 {
            c.execute_batch("DELETE FROM blobs WHERE id % 2 = 0; VACUUM;")
                .expect("vacuum");
        }
        if round % 3 == 0 {
            r.sync_and_wait(Duration::from_secs(20))
                .await
                .expect("sync");
        }
    }
    let pos = r
        .sync_and_wait(Duration::from_secs(20))
        .await
        .expect("sync");
    let expected = dump(&db);
    assert_eq!(pos.generation, generation, "no new generation expected");
    assert!(pos.index >= 2, "several WAL indexes expected, got {pos}");
    r.shutdown().await.expect("shutdown");

    for (bin, name) in [(&v3, "v3.db"), (&v5, "v5.db")] {
        let out = dir.path().join("restored").join(name);
        restore_with(bin, &rep, &out);
        assert_eq!(integrity(&out), "ok", "{}", bin.display());
        assert_eq!(dump(&out), expected, "restore by {}", bin.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_from_litestream_v0313_keeps_generation() {
    let v3 = litestream_bin("LITESTREAM_V0313_BIN");
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("app.db");
    let rep = dir.path().join("replica");
    let c = app_conn(&db);
    mixed_schema(&c);
    let cfg = dir.path().join("litestream.yml");
    std::fs::write(
        &cfg,
        format!(
            "dbs:\n  - path: {}\n    monitor-interval: 100ms\n    replicas:\n      - url: file://{}\n        sync-interval: 100ms\n",
            db.display(),
            rep.display()
        ),
    )
    .expect("config");
    let mut child = Command::new(&v3)
        .arg("replicate")
        .arg("-config")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn litestream");
    for round in 0..10 {
        workload_round(&c, round);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(st.success());
    child.wait().expect("wait litestream");
    let meta = dir.path().join(".app.db-litestream");
    let theirs = std::fs::read_to_string(meta.join("generation")).expect("generation file");

    // Writes while nobody replicates, then ours takes over.
    workload_round(&c, 100);
    let r = start_with_file_replica(&db, &rep, replica_opts(), fast_opts()).await;
    assert_eq!(
        r.position().expect("pos").generation.as_str(),
        theirs.trim(),
        "our replicator must keep Litestream's generation"
    );
    for round in 101..106 {
        workload_round(&c, round);
    }
    r.sync_and_wait(Duration::from_secs(20))
        .await
        .expect("sync");
    let expected = dump(&db);
    r.shutdown().await.expect("shutdown");
    let gens = std::fs::read_dir(rep.join("generations"))
        .expect("gens")
        .count();
    assert_eq!(gens, 1, "one generation on the replica");

    let out = dir.path().join("restored.db");
    restore_with(&v3, &rep, &out);
    assert_eq!(integrity(&out), "ok");
    assert_eq!(dump(&out), expected);
}
