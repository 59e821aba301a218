//! Shared helpers of the engine integration tests (included with `#[path]`, not a test).
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use litestream_core::restore::{restore, RestoreOptions};
use litestream_core::ReplicaClient;
use litestream_core::{DbOptions, Pos, ReplicaHandleConfig, ReplicaOptions, Replicator};
use litestream_file::FileClient;

/// Path of a real Litestream binary from `var`; panics (never skips) if it is not there.
pub fn litestream_bin(var: &str) -> PathBuf {
    match std::env::var_os(var).map(PathBuf::from) {
        Some(p) if p.is_file() => p,
        other => panic!(
            "{var} is {other:?}: the interop tests need the real Litestream binaries; \
             run them through `scripts/test.sh` (it installs them and sets {var})"
        ),
    }
}

/// The `embedded` example next to this test binary (built by `cargo test -p litestream-core`).
pub fn example_bin() -> PathBuf {
    // target/<profile>/deps/engine-<hash> -> target/<profile>/examples/embedded
    let exe = std::env::current_exe().expect("current exe");
    let p = exe
        .parent()
        .and_then(|d| d.parent())
        .map(|d| d.join("examples").join("embedded"))
        .expect("examples dir");
    assert!(
        p.is_file(),
        "{} not built: run `cargo test -p litestream-core` (it builds examples)",
        p.display()
    );
    p
}

/// `litestream restore -o OUT file://REPLICA` with a real binary; panics on failure.
pub fn restore_with(bin: &Path, replica: &Path, out: &Path) {
    let url = format!("file://{}", replica.display());
    let o = Command::new(bin)
        .args(["restore", "-o"])
        .arg(out)
        .arg(&url)
        .output()
        .expect("run litestream restore");
    assert!(
        o.status.success() && out.exists(),
        "{} restore failed: {}\n{}",
        bin.display(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Every user table (and `_litestream_seq`) with its rows as text, in rowid order.
pub fn dump(db: &Path) -> Vec<(String, Vec<String>)> {
    let c = rusqlite::Connection::open(db).expect("open");
    let mut tables: Vec<String> = c
        .prepare("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")
        .expect("prepare")
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    tables.retain(|t| t != "_litestream_lock");
    let mut out = Vec::new();
    for t in tables {
        let mut st = c
            .prepare(&format!(
                "SELECT quote(t.rowid), * FROM \"{t}\" AS t ORDER BY t.rowid"
            ))
            .expect("prepare");
        let n = st.column_count();
        let rows: Vec<String> = st
            .query_map([], |r| {
                let mut s = String::new();
                for i in 0..n {
                    let v: rusqlite::types::Value = r.get(i)?;
                    s.push_str(&format!("{v:?}|"));
                }
                Ok(s)
            })
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        out.push((t, rows));
    }
    out
}

/// The application's connection: WAL mode, a 5 s busy timeout.
pub fn app_conn(db: &Path) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(db).expect("open app db");
    c.busy_timeout(std::time::Duration::from_secs(5))
        .expect("busy");
    c.pragma_update(None, "journal_mode", "wal").expect("wal");
    c
}

/// `PRAGMA integrity_check` result.
pub fn integrity(db: &Path) -> String {
    let c = rusqlite::Connection::open(db).expect("open");
    c.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check")
}

/// A `file://` replica named `name` in `dir`.
pub fn file_replica(name: &str, dir: &Path, options: ReplicaOptions) -> ReplicaHandleConfig {
    ReplicaHandleConfig {
        name: name.into(),
        client: Arc::new(FileClient::new(dir)),
        options,
    }
}

/// Start a [`Replicator`] on `db` with one `file://` replica named `file` in `replica_dir`;
/// panics on failure.
pub async fn start_with_file_replica(
    db: &Path,
    replica_dir: &Path,
    replica: ReplicaOptions,
    opts: DbOptions,
) -> Replicator {
    Replicator::start(db, vec![file_replica("file", replica_dir, replica)], opts)
        .await
        .unwrap_or_else(|e| panic!("start replicating {}: {e}", db.display()))
}

/// [`start_with_file_replica`], then wait (20 s at most) until the replica holds the latest
/// transaction; returns the replicator and that position.
pub async fn start_synced(
    db: &Path,
    replica_dir: &Path,
    replica: ReplicaOptions,
    opts: DbOptions,
) -> (Replicator, Pos) {
    let r = start_with_file_replica(db, replica_dir, replica, opts).await;
    let pos = r
        .sync_and_wait(Duration::from_secs(20))
        .await
        .unwrap_or_else(|e| panic!("first sync of {}: {e}", db.display()));
    (r, pos)
}

/// Replica options for tests: `sync-interval` 20 ms.
pub fn fast_replica_opts() -> ReplicaOptions {
    ReplicaOptions {
        sync_interval: Duration::from_millis(20),
        ..Default::default()
    }
}

/// Database options for tests: `monitor-interval` 50 ms, a checkpoint every 16 pages.
pub fn fast_db_opts() -> DbOptions {
    DbOptions {
        monitor_interval: Duration::from_millis(50),
        min_checkpoint_page_count: 16,
        ..Default::default()
    }
}

/// Restore the `file://` replica `rep` with our restore into `out`.
pub async fn try_our_restore(rep: &Path, out: &Path) -> litestream_core::Result<()> {
    let client: Arc<dyn ReplicaClient> = Arc::new(FileClient::new(rep));
    restore(client, &RestoreOptions::new(out)).await.map(|_| ())
}

/// Restore the `file://` replica `rep` with our restore into `out` (panics on failure) and
/// return `out`.
pub async fn our_restore(rep: &Path, out: PathBuf) -> PathBuf {
    try_our_restore(rep, &out).await.unwrap_or_else(|e| {
        panic!(
            "our restore of {} into {}: {e}",
            rep.display(),
            out.display()
        )
    });
    out
}

/// Restore `rep` with ours into `out` and with real Litestream v0.3.13 beside it
/// (`out` with the extension `v0313.db`); both must pass `integrity_check` and hold `expected`.
pub async fn assert_restores(rep: &Path, out: &Path, expected: &[(String, Vec<String>)]) {
    let tag = out.display().to_string();
    let ours = our_restore(rep, out.to_path_buf()).await;
    assert_eq!(integrity(&ours), "ok", "{tag}: our restore");
    assert_same(&dump(&ours), expected, &format!("{tag}: our restore"));
    let theirs = out.with_extension("v0313.db");
    restore_with(&litestream_bin("LITESTREAM_V0313_BIN"), rep, &theirs);
    assert_eq!(integrity(&theirs), "ok", "{tag}: v0.3.13 restore");
    assert_same(&dump(&theirs), expected, &format!("{tag}: v0.3.13 restore"));
}

/// The usual end of an engine test: wait (up to `timeout`) until the replica holds the latest
/// transaction, take the source's dump, stop the replicator, close the application's
/// connection `app`, and check both restores of `rep` against the dump ([`assert_restores`],
/// into `restored.db` under `dir`). Returns the position reached and the dump.
pub async fn finish_and_assert_restores(
    r: Replicator,
    app: rusqlite::Connection,
    db: &Path,
    rep: &Path,
    dir: &Path,
    timeout: Duration,
) -> (Pos, Vec<(String, Vec<String>)>) {
    let pos = r.sync_and_wait(timeout).await.expect("sync");
    let expected = dump(db);
    r.shutdown().await.expect("shutdown");
    drop(app);
    assert_restores(rep, &dir.join("restored.db"), &expected).await;
    (pos, expected)
}

/// Compare two dumps, reporting the first difference only (rows are long).
pub fn assert_same(got: &[(String, Vec<String>)], want: &[(String, Vec<String>)], what: &str) {
    for ((gt, gr), (wt, wr)) in got.iter().zip(want) {
        assert_eq!(gt, wt, "{what}: tables");
        if let Some(i) = (0..gr.len().max(wr.len())).find(|&i| gr.get(i) != wr.get(i)) {
            let short = |r: Option<&String>| r.map(|r| r.chars().take(60).collect::<String>());
            panic!(
                "{what}: table {gt} differs at row {i}: got {:?}, want {:?} ({} vs {} rows)",
                short(gr.get(i)),
                short(wr.get(i)),
                gr.len(),
                wr.len()
            );
        }
    }
    assert_eq!(got.len(), want.len(), "{what}: table count");
}

/// The tables of [`mixed_workload_round`]: `t (id, round, v)` and `blobs (id, b)`.
pub fn mixed_schema(c: &rusqlite::Connection) {
    c.execute_batch(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, round INTEGER, v TEXT);
         CREATE TABLE blobs (id INTEGER PRIMARY KEY, b BLOB);",
    )
    .expect("schema");
}

/// One transaction of a mixed workload on [`mixed_schema`]'s tables: `rows` random text
/// inserts, one random blob of a size in `blob_bytes`, an update and a delete of rows chosen
/// by `round`.
pub fn mixed_workload_round(
    c: &rusqlite::Connection,
    round: u32,
    rows: usize,
    blob_bytes: std::ops::Range<usize>,
) {
    use rand::RngExt;
    let mut rng = rand::rng();
    let tx = c.unchecked_transaction().expect("tx");
    for _ in 0..rows {
        let n: usize = rng.random_range(10..200);
        let text: String = (0..n)
            .map(|_| rng.random_range(b'a'..=b'z') as char)
            .collect();
        tx.execute(
            "INSERT INTO t (round, v) VALUES (?1, ?2)",
            rusqlite::params![round, text],
        )
        .expect("insert");
    }
    let blob: Vec<u8> = (0..rng.random_range(blob_bytes))
        .map(|_| rng.random())
        .collect();
    tx.execute("INSERT INTO blobs (b) VALUES (?1)", [blob])
        .expect("blob");
    tx.execute(
        "UPDATE t SET v = v || '-u' WHERE id % 7 = ?1",
        [i64::from(round % 7)],
    )
    .expect("update");
    tx.execute("DELETE FROM t WHERE id % 11 = ?1", [i64::from(round % 11)])
        .expect("delete");
    tx.commit().expect("commit");
}

/// Size of the database's WAL file (0 when there is none).
pub fn wal_len(db: &Path) -> u64 {
    let mut p = db.as_os_str().to_owned();
    p.push("-wal");
    std::fs::metadata(PathBuf::from(p)).map_or(0, |m| m.len())
}
