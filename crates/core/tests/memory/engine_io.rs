//! Issue 11 item 6, measured through this process's `/proc/self/io`: a bulk import that stays
//! uncommitted over many syncs is not re-read by every sync. It runs in the `memory` binary
//! under its `SERIAL` lock, so no other test's I/O is counted.

use std::time::Duration;

use litestream_core::DbOptions;

use crate::common::{
    app_conn, fast_replica_opts, finish_and_assert_restores, start_synced, wal_len,
};
use crate::counting_alloc::SERIAL;

/// `rchar` and `wchar` of this process (`/proc/self/io`).
fn proc_io() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/self/io").expect("/proc/self/io");
    let field = |name: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{name} in /proc/self/io"))
    };
    (field("rchar:"), field("wchar:"))
}

/// Item 6: a large transaction that stays uncommitted over many syncs (a bulk import) is
/// not re-read and re-spilled by every sync: the engine's extra I/O stays within 2x the WAL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_uncommitted_transaction_is_not_reread_on_every_sync() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let rep = dir.path().join("replica");
    let db = dir.path().join("app.db");
    let c = app_conn(&db);
    c.execute_batch("PRAGMA cache_size = 64; CREATE TABLE b (id INTEGER PRIMARY KEY, v BLOB)")
        .expect("schema");
    // Only explicit syncs, and no checkpoint (its back-fill is I/O of its own).
    let opts = DbOptions {
        monitor_interval: Duration::from_secs(3600),
        watch_wal: false,
        min_checkpoint_page_count: 1 << 40,
        max_checkpoint_page_count: None,
        truncate_page_count: None,
        checkpoint_interval: None,
        ..Default::default()
    };
    let (r, _) = start_synced(&db, &rep, fast_replica_opts(), opts).await;
    let wal0 = wal_len(&db);
    let (mut engine_r, mut engine_w) = (0u64, 0u64);
    c.execute_batch("BEGIN").expect("begin");
    for k in 0..24i64 {
        for j in 0..8i64 {
            let blob: Vec<u8> = (0..256 << 10)
                .map(|i| (i as i64 * 7 + k + j) as u8)
                .collect();
            c.execute("INSERT INTO b (v) VALUES (?1)", [blob])
                .expect("insert");
        }
        let (r0, w0) = proc_io();
        r.sync().await.expect("sync during the import");
        let (r1, w1) = proc_io();
        engine_r += r1 - r0;
        engine_w += w1 - w0;
    }
    let import = (engine_r, engine_w);
    c.execute_batch("COMMIT").expect("commit");
    let (r0, w0) = proc_io();
    r.sync().await.expect("sync after commit");
    let (r1, w1) = proc_io();
    engine_r += r1 - r0;
    engine_w += w1 - w0;
    let wal = wal_len(&db) - wal0;
    eprintln!(
        "wal {wal} bytes; engine read {engine_r}, wrote {engine_w} (during the import {import:?})"
    );
    assert!(wal > 40 << 20, "the import spilled to the WAL: {wal}");
    // Before the commit there is nothing to copy; each sync may look, not re-read it all.
    assert!(
        import.0 <= wal / 4 && import.1 <= wal / 4,
        "24 syncs during the import read and wrote {import:?} for a {wal}-byte WAL"
    );
    assert!(
        engine_r <= 2 * wal + (1 << 20),
        "the syncs read {engine_r} bytes for a {wal}-byte WAL"
    );
    assert!(
        engine_w <= 2 * wal + (1 << 20),
        "the syncs wrote {engine_w} bytes for a {wal}-byte WAL"
    );
    finish_and_assert_restores(r, c, &db, &rep, dir.path(), Duration::from_secs(60)).await;
}
