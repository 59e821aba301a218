//! Shared helpers of the engine integration tests (included with `#[path]`, not a test).
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::Command;

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
    // target/<profile>/deps/engine_crash-<hash> -> target/<profile>/examples/embedded
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
