//! `litestream replicate` in the LTX format against the real Litestream v0.5.17 (`file://`):
//! a replica v0.5.17 wrote is continued in LTX without any flag (drop-in for the
//! `litestream/litestream` image), `-format ltx` starts a new LTX replica that v0.5.17 lists
//! and restores, a kill -9 in the middle of replication leaves a replica that restores
//! consistent and is continued after a restart, and the v0.5 config keys parse (those not
//! supported here are logged by name).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;

/// `(min, max)` TXIDs of the files of one level of a `file://` LTX replica, sorted.
fn level_files(rep: &Path, level: u8) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = std::fs::read_dir(rep.join("ltx").join(level.to_string()))
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    let (a, b) = n.strip_suffix(".ltx")?.split_once('-')?;
                    Some((
                        u64::from_str_radix(a, 16).ok()?,
                        u64::from_str_radix(b, 16).ok()?,
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// The L0 TXIDs are 1..=max, one per file; returns max.
fn assert_l0_contiguous(rep: &Path) -> u64 {
    let l0 = level_files(rep, 0);
    for (i, (a, b)) in l0.iter().enumerate() {
        assert_eq!(a, b, "one TXID per L0 file: {l0:?}");
        assert_eq!(*a, i as u64 + 1, "L0 TXIDs 1, 2, ... without a gap: {l0:?}");
    }
    l0.last().map_or(0, |f| f.1)
}

fn v5_config(dir: &Path, db: &Path, rep: &Path) -> PathBuf {
    let cfg = dir.join("v5.yml");
    std::fs::write(
        &cfg,
        format!(
            "dbs:\n  - path: {}\n    monitor-interval: 100ms\n    replica:\n      url: {}\n      sync-interval: 100ms\n",
            db.display(),
            file_url(rep)
        ),
    )
    .unwrap();
    cfg
}

fn spawn_url_replicate(bin: &Path, extra: &[&str], db: &Path, rep: &Path, log: &Path) -> Child {
    let log = std::fs::File::create(log).unwrap();
    Command::new(bin)
        .arg("replicate")
        .args(extra)
        .arg(db)
        .arg(file_url(rep))
        .env_remove("LITESTREAM_CONFIG")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// v0.5.17 restores the replica equal to `db` (row for row).
fn assert_v5_restores(dir: &Path, rep: &Path, db: &Path, name: &str) {
    let out = dir.join(name);
    let o = restore_url(&litestream_v0517(), &file_url(rep), &out, &[], &[]);
    assert_exit(&o, 0, "v0.5.17 restore");
    assert_integrity_ok(&out, name);
    assert_eq!(all_rows(&out), all_rows(db), "v0.5.17 restore {name}");
}

/// Wait until the replica's newest L0 TXID exceeds `txid` and then stays put for a while.
fn wait_l0_settled(rep: &Path, above: u64, log: &Path) {
    wait_for(
        Duration::from_secs(30),
        "new L0 files",
        || std::fs::read_to_string(log).unwrap_or_default(),
        || level_files(rep, 0).last().is_some_and(|f| f.1 > above),
    );
    let mut last = 0;
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(400));
        let now = level_files(rep, 0).last().map_or(0, |f| f.1);
        if now == last {
            return;
        }
        last = now;
    }
}

#[test]
fn replicate_continues_a_v0517_replica_in_ltx_without_a_flag() {
    let dir = tempfile::tempdir().unwrap();
    let (db, rep) = (dir.path().join("app.db"), dir.path().join("replica"));
    create_db(&db);
    insert(&db, 20, 3000);
    let log5 = dir.path().join("v5.log");
    let child = spawn_replicate(
        &litestream_v0517(),
        &v5_config(dir.path(), &db, &rep),
        &log5,
    );
    for _ in 0..5 {
        insert(&db, 5, 2000);
        std::thread::sleep(Duration::from_millis(200));
    }
    wait_l0_settled(&rep, 1, &log5);
    signal_and_wait(child, "TERM", &log5);
    let theirs = assert_l0_contiguous(&rep);

    // Ours, as the image's sidecar runs it: no flag, no config.
    let log = dir.path().join("ours.log");
    let child = spawn_url_replicate(&our_bin(), &[], &db, &rep, &log);
    for _ in 0..5 {
        insert(&db, 5, 2000);
        std::thread::sleep(Duration::from_millis(200));
    }
    wait_l0_settled(&rep, theirs, &log);
    signal_and_wait(child, "INT", &log);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("replica holds LTX"),
        "format reason logged:\n{text}"
    );
    assert!(
        !rep.join("generations").exists(),
        "no v0.3 data beside the LTX data:\n{text}"
    );
    let ours = assert_l0_contiguous(&rep);
    assert!(ours > theirs, "TXIDs continue: {theirs} -> {ours}");
    assert_v5_restores(dir.path(), &rep, &db, "after-ours.db");
}

#[test]
fn format_ltx_flag_starts_an_ltx_replica_that_v0517_lists_and_restores() {
    let dir = tempfile::tempdir().unwrap();
    let (db, rep) = (dir.path().join("app.db"), dir.path().join("replica"));
    create_db(&db);
    insert(&db, 30, 3000);
    let log = dir.path().join("ours.log");
    let child = spawn_url_replicate(&our_bin(), &["-format", "ltx"], &db, &rep, &log);
    for _ in 0..5 {
        insert(&db, 5, 2000);
        std::thread::sleep(Duration::from_millis(200));
    }
    wait_l0_settled(&rep, 1, &log);
    signal_and_wait(child, "INT", &log);
    assert!(!rep.join("generations").exists());
    assert!(!level_files(&rep, 9).is_empty(), "an L9 snapshot");
    let max = assert_l0_contiguous(&rep);
    let o = run_bin(
        &litestream_v0517(),
        [
            "ltx".to_string(),
            "-level".into(),
            "all".into(),
            file_url(&rep),
        ],
    );
    assert_exit(&o, 0, "v0.5.17 ltx");
    let listed = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        listed.contains(&format!("{max:016x}")),
        "v0.5.17 lists our newest TXID {max}:\n{listed}"
    );
    assert_v5_restores(dir.path(), &rep, &db, "restored.db");

    let bad = run_bin(
        &our_bin(),
        ["replicate", "-format", "v7", "x.db", "file:///tmp/x"],
    );
    assert_exit(&bad, 1, "bad -format");
    assert!(
        output_text(&bad).contains("unknown replica format"),
        "{}",
        describe(&bad)
    );
}

#[test]
fn kill_9_mid_replication_leaves_a_consistent_ltx_replica_and_v05_keys_parse() {
    let dir = tempfile::tempdir().unwrap();
    let (db, rep) = (dir.path().join("app.db"), dir.path().join("replica"));
    create_db(&db);
    insert(&db, 20, 3000);
    let cfg = dir.path().join("litestream.yml");
    std::fs::write(
        &cfg,
        format!(
            "format: ltx\nsocket:\n  enabled: true\nmcp-addr: \":3001\"\nlevels:\n  - interval: 1s\n  - interval: 3s\nsnapshot:\n  interval: 1h\n  retention: 24h\nl0-retention: 5m\nretention:\n  enabled: true\ndbs:\n  - path: {}\n    monitor-interval: 100ms\n    busy-timeout: 1s\n    replica:\n      url: {}\n      sync-interval: 100ms\n",
            db.display(),
            file_url(&rep)
        ),
    )
    .unwrap();
    let log = dir.path().join("ours.log");
    let mut child = spawn_replicate(&our_bin(), &cfg, &log);

    // A writer that never stops while we are killed.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (db, stop) = (db.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                insert(&db, 3, 1500);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    wait_l0_settled(&rep, 3, &log);
    std::thread::sleep(Duration::from_millis(700));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    for key in ["socket", "mcp-addr", "dbs[0].busy-timeout"] {
        assert!(
            text.lines()
                .any(|l| l.contains("not supported here") && l.contains(key)),
            "warning naming {key}:\n{text}"
        );
    }
    assert!(
        !level_files(&rep, 1).is_empty(),
        "L1 compactions ran:\n{text}"
    );

    // Whatever the kill interrupted, the replica restores to a prefix of the source.
    let out = dir.path().join("after-kill.db");
    let o = restore_url(&litestream_v0517(), &file_url(&rep), &out, &[], &[]);
    assert_exit(&o, 0, "v0.5.17 restore after kill -9");
    assert_integrity_ok(&out, "after kill -9");
    let got = all_rows(&out);
    let want = all_rows(&db);
    assert!(
        got.len() <= want.len() && got[..] == want[..got.len()],
        "a prefix of the source"
    );
    let before = assert_l0_contiguous(&rep);

    // Restart: the replica is continued and catches up.
    let child = spawn_replicate(&our_bin(), &cfg, &log);
    insert(&db, 5, 2000);
    wait_l0_settled(&rep, before, &log);
    signal_and_wait(child, "INT", &log);
    assert_l0_contiguous(&rep);
    assert_v5_restores(dir.path(), &rep, &db, "after-restart.db");
}
