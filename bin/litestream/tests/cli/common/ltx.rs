//! Litestream v0.5 (LTX) scenarios shared by the backend CLI tests: the real v0.5.17 writes a
//! replica with a random workload, several checkpoints and compactions (short `levels`
//! intervals), and our `restore` must be byte-identical to v0.5.17's own at the latest point,
//! at several `-txid` and several `-timestamp` values. What differs per backend comes in as
//! the replica's YAML (for the config) and a closure that runs `restore` against the replica.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, SystemTime};

use super::{
    assert_exit, assert_files_equal, assert_integrity_ok, assert_no_leftovers, create_db, describe,
    litestream_v0517, our_bin, output_text, random_blob, rfc3339_nanos, sigint_and_wait,
    spawn_replicate,
};

/// A v0.5.17 config for `db` whose replica is described by `replica_yaml` (the lines under
/// `replica:`, e.g. `url: file:///…`), with levels of 2 s and 6 s, a snapshot every 8 s,
/// L0 files removed 3 s after compaction, and checkpoints every 2 s.
pub fn v0517_config(db: &Path, replica_yaml: &str) -> String {
    let replica: String = replica_yaml
        .lines()
        .map(|l| format!("      {l}\n"))
        .collect();
    format!(
        "levels:\n  - interval: 2s\n  - interval: 6s\nsnapshot:\n  interval: 8s\n\
         l0-retention: 3s\nl0-retention-check-interval: 1s\n\
         dbs:\n  - path: {}\n    checkpoint-interval: 2s\n    min-checkpoint-page-count: 64\n\
         \x20   replica:\n{replica}",
        db.display()
    )
}

/// One round of the random workload: inserts of random sizes, updates and deletes.
pub fn random_round(db: &Path, seed: &mut u64) {
    let mut conn = rusqlite::Connection::open(db).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    let tx = conn.transaction().unwrap();
    let n = 5 + (random_blob(seed, 1)[0] % 20) as usize;
    for _ in 0..n {
        let size = 100 + (u16::from_le_bytes([random_blob(seed, 1)[0], 0]) as usize) * 30;
        tx.execute("INSERT INTO t(v) VALUES (?1)", [random_blob(seed, size)])
            .unwrap();
    }
    let k = i64::from(random_blob(seed, 1)[0] % 7);
    tx.execute("UPDATE t SET v = randomblob(200) WHERE id % 7 = ?1", [k])
        .unwrap();
    tx.execute("DELETE FROM t WHERE id % 11 = ?1", [k]).unwrap();
    tx.commit().unwrap();
}

/// Create `db` and run the real v0.5.17 `replicate -config cfg` over a random workload of 14
/// rounds (~16 s); returns instants taken between rounds, each more than a second away from
/// any write (for `-timestamp`), and leaves the replica stopped with SIGINT.
pub fn v0517_workload(db: &Path, cfg: &Path, log: &Path) -> Vec<SystemTime> {
    create_db(db);
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..3 {
        random_round(db, &mut seed);
    }
    let child = spawn_replicate(&litestream_v0517(), cfg, log);
    std::thread::sleep(Duration::from_secs(2));
    let mut marks = Vec::new();
    for round in 0..14 {
        random_round(db, &mut seed);
        std::thread::sleep(Duration::from_millis(700));
        if round % 4 == 3 {
            std::thread::sleep(Duration::from_millis(1200));
            marks.push(SystemTime::now());
            std::thread::sleep(Duration::from_millis(1200));
        }
    }
    std::thread::sleep(Duration::from_secs(4));
    sigint_and_wait(child, log);
    marks
}

/// One LTX file as `litestream ltx -level all -json` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Level.
    pub level: u8,
    /// Min TXID (16 hex digits).
    pub min: String,
    /// Max TXID (16 hex digits).
    pub max: String,
}

/// Parse the output of v0.5.17's `ltx -level all -json` (or the `files` of `restore -dry-run
/// -json`).
pub fn parse_ltx_json(out: &Output) -> Vec<Listed> {
    assert_exit(out, 0, "v0.5.17 ltx listing");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    let files = match doc.get("files") {
        Some(files) => files,
        None => &doc,
    };
    let files = files
        .as_array()
        .unwrap_or_else(|| panic!("no list of LTX files: {doc}"));
    let txid = |f: &serde_json::Value, key: &str| -> String {
        let t = f[key].as_str().unwrap_or_else(|| panic!("no {key}: {f}"));
        assert!(
            t.len() == 16 && t.bytes().all(|b| b.is_ascii_hexdigit()),
            "{key} is not 16 hex digits: {f}"
        );
        t.to_string()
    };
    files
        .iter()
        .map(|f| Listed {
            level: f["level"]
                .as_u64()
                .and_then(|l| u8::try_from(l).ok())
                .unwrap_or_else(|| panic!("no level: {f}")),
            min: txid(f, "min_txid"),
            max: txid(f, "max_txid"),
        })
        .collect()
}

/// Restore with v0.5.17 and with ours (`restore(bin, out, extra)`): if v0.5.17 succeeds, ours
/// exits 0 with identical bytes; if it fails, ours exits 1 with nothing at the output.
/// Returns whether v0.5.17 succeeded.
pub fn assert_same_as_v0517(
    dir: &Path,
    restore: &dyn Fn(&Path, &Path, &[&str]) -> Output,
    extra: &[&str],
    tag: &str,
) -> bool {
    let theirs = dir.join(format!("v0517-{tag}.db"));
    let ours = dir.join(format!("ours-{tag}.db"));
    let t = restore(&litestream_v0517(), &theirs, extra);
    let o = restore(&our_bin(), &ours, extra);
    let what = format!("restore {extra:?}");
    if t.status.success() {
        assert_exit(&o, 0, &what);
        assert_files_equal(&theirs, &ours, &what);
        assert_integrity_ok(&ours, &what);
        assert_no_leftovers(&ours, &what);
        true
    } else {
        assert_exit(&o, 1, &format!("{what} (v0.5.17 failed: {})", describe(&t)));
        assert!(!ours.exists(), "{what}: output created");
        assert_no_leftovers(&ours, &what);
        false
    }
}

/// The interop scenario: given the replica v0.5.17 wrote (its `ltx -level all -json`
/// listing in `listing`, and the `marks` of [`v0517_workload`]), our restore is identical to
/// v0.5.17's at the latest point, at every third distinct max TXID (at least three of which
/// v0.5.17 can restore) and at every mark (at least two restorable).
pub fn assert_ltx_interop(
    dir: &Path,
    restore: &dyn Fn(&Path, &Path, &[&str]) -> Output,
    listing: &[Listed],
    marks: &[SystemTime],
) -> PathBuf {
    assert!(
        assert_same_as_v0517(dir, restore, &[], "latest"),
        "v0.5.17 could not restore its own replica"
    );
    let levels: std::collections::BTreeSet<u8> = listing.iter().map(|l| l.level).collect();
    assert!(
        levels.contains(&9) && levels.contains(&1) && levels.contains(&2),
        "the workload should produce snapshots and two compaction levels: {levels:?}"
    );
    let mut txids: Vec<&String> = listing.iter().map(|l| &l.max).collect();
    txids.sort();
    txids.dedup();
    let mut ok = 0;
    for (i, t) in txids.iter().enumerate().filter(|(i, _)| i % 3 == 1) {
        if assert_same_as_v0517(dir, restore, &["-txid", t], &format!("txid-{i}")) {
            ok += 1;
        }
    }
    assert!(ok >= 3, "only {ok} -txid restores succeeded: {txids:?}");
    let mut ok = 0;
    for (i, m) in marks.iter().enumerate() {
        let ts = rfc3339_nanos(*m);
        if assert_same_as_v0517(dir, restore, &["-timestamp", &ts], &format!("ts-{i}")) {
            ok += 1;
        }
    }
    assert!(ok >= 2, "only {ok} -timestamp restores succeeded");
    dir.join("ours-latest.db")
}

/// Assert `out` is a failed restore (exit 1) whose message names `object`, with nothing at
/// `db` (or beside it).
#[track_caller]
pub fn assert_fails_naming(out: &Output, db: &Path, object: &str, what: &str) {
    assert_exit(out, 1, what);
    let text = output_text(out);
    assert!(
        text.contains(object),
        "{what}: message does not name {object}:\n{text}"
    );
    assert!(!db.exists(), "{what}: {} was created", db.display());
    assert_no_leftovers(db, what);
}
