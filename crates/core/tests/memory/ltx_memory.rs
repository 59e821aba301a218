//! The LTX engine's memory bound: after a lost meta directory the whole database goes up as
//! one L0 file, built in a staged file, so the heap does not grow with the database.

use std::time::Duration;

use crate::common::app_conn;
use crate::counting_alloc::{peak_during, SERIAL};
use crate::ltx_common::{header, l0_path, page_count, start_default, stop_and_lose_meta};

/// After a lost meta directory the whole database goes up as one L0 file: built page by page
/// into a staged file and uploaded from it, so the heap grows by a small bound, not by the
/// database's size (here 48 MiB of incompressible rows).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_database_file_after_a_lost_meta_directory_streams_in_bounded_memory() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("app.db");
    let rep = dir.path().join("replica");
    let c = app_conn(&db);
    c.execute_batch(
        "CREATE TABLE big(id INTEGER PRIMARY KEY, v BLOB);
         WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 1536)
         INSERT INTO big(v) SELECT randomblob(32768) FROM n;",
    )
    .expect("fill");
    let start = || start_default(&db, &rep);
    let r = start().await;
    r.sync_and_wait(Duration::from_secs(120))
        .await
        .expect("sync");
    let before = stop_and_lose_meta(r, &rep).await;
    c.execute_batch("INSERT INTO big(v) VALUES (randomblob(100));")
        .expect("insert");
    let db_size = std::fs::metadata(&db).expect("db").len();
    let ((), peak) = peak_during(async {
        let r = start().await;
        r.sync_and_wait(Duration::from_secs(120))
            .await
            .expect("sync");
        r.shutdown().await.expect("shutdown");
    })
    .await;
    let whole = l0_path(&rep, before + 1);
    assert_eq!(
        page_count(&whole),
        header(&whole).commit,
        "a whole-database file"
    );
    let size = std::fs::metadata(&whole).expect("l0").len();
    assert!(size > 48 << 20, "{size} bytes: the whole database");
    eprintln!(
        "whole-database L0: {size} bytes (database {db_size}), peak heap growth {peak} bytes"
    );
    assert!(
        peak < 16 << 20,
        "heap grew by {peak} bytes while a {size} byte file was built and uploaded"
    );
}
