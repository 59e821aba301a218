//! `litestream replicate` in the LTX format against the real Litestream v0.5.17: a replica
//! v0.5.17 wrote is continued in LTX without any flag (drop-in for the `litestream/litestream`
//! image), and `-format ltx` starts a new LTX replica that v0.5.17 lists and restores, each on
//! file, s3 (moto), abs (Azurite) and sftp (sshd) with one shared test body per case: v0.5.17
//! restores our new replica at the latest point and at several `-txid` and `-timestamp`
//! values (each equal to the source as of that point), and a kill -9 in the middle of
//! replication leaves a replica that restores consistent and is continued after a restart;
//! the v0.5 config keys parse (those not supported here are logged by name).
//!
//! Each remote backend's tests need its cargo feature and the test servers' env
//! (`scripts/test.sh`: `TEST_S3_*`, `TEST_ABS_*`, `TEST_SFTP_*`): a missing variable is a
//! failure, never a skip.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::ltx::parse_ltx_json;
use crate::common::*;

/// A unique replica prefix for `backend`/`tag` (parallel runs share the test servers).
fn unique(backend: &str, tag: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "ltx-replicate-{backend}/{tag}-{:x}-{n:x}",
        std::process::id()
    )
}

/// The remote directory of an sftp case, removed when the test ends.
struct RemoteDir(Option<String>);

impl Drop for RemoteDir {
    fn drop(&mut self) {
        if let Some(d) = &self.0 {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// The YAML lines under `replica:` for a new unique replica on `backend` (file, s3, abs,
/// sftp), with the test servers' credentials (a missing variable is a failure), and the
/// remote directory to clean up.
fn replica_yaml(backend: &str, dir: &Path, tag: &str) -> (String, RemoteDir) {
    let env = |n: &str| test_env(n, "the LTX replicate backend tests need the test servers");
    let yaml = match backend {
        "file" => format!("url: {}", file_url(&dir.join("replica"))),
        "s3" => format!(
            "type: s3\nbucket: {}\npath: {}/app.sqlite\nendpoint: {}\nregion: {}\n\
             force-path-style: true\naccess-key-id: {}\nsecret-access-key: {}",
            env("TEST_S3_BUCKET"),
            unique("s3", tag),
            env("TEST_S3_ENDPOINT"),
            env("TEST_S3_REGION"),
            env("TEST_S3_ACCESS_KEY_ID"),
            env("TEST_S3_SECRET_ACCESS_KEY"),
        ),
        "abs" => format!(
            "type: abs\naccount-name: {}\naccount-key: {}\nbucket: {}\npath: {}/app.sqlite\n\
             endpoint: {}",
            env("TEST_ABS_ACCOUNT_NAME"),
            env("TEST_ABS_ACCOUNT_KEY"),
            env("TEST_ABS_CONTAINER"),
            unique("abs", tag),
            env("TEST_ABS_ENDPOINT"),
        ),
        "sftp" => {
            let remote = format!("{}/{}", env("TEST_SFTP_ROOT"), unique("sftp", tag));
            let yaml = format!(
                "type: sftp\nhost: 127.0.0.1:{}\nuser: {}\nkey-path: {}\nhost-key: \"{}\"\n\
                 path: {remote}/app.sqlite",
                env("TEST_SFTP_PORT"),
                env("TEST_SFTP_USER"),
                env("TEST_SFTP_KEY_PATH"),
                env("TEST_SFTP_HOST_KEY"),
            );
            return (yaml, RemoteDir(Some(remote)));
        }
        other => panic!("unknown backend {other}"),
    };
    (yaml, RemoteDir(None))
}

/// One case: a temp dir with the source database and the config (read by v0.5.17 and by
/// ours) whose one replica is a new unique path on the backend.
struct Case {
    dir: tempfile::TempDir,
    db: PathBuf,
    cfg: PathBuf,
    _remote: RemoteDir,
}

impl Case {
    fn new(backend: &str, tag: &str) -> Case {
        Case::with_config(backend, tag, "", "", "")
    }

    /// A case whose config also has the top-level lines `top`, the database lines `db_lines`
    /// (each line ending in a newline, indented as a key of the database) and the replica
    /// lines `replica_lines` (unindented).
    fn with_config(
        backend: &str,
        tag: &str,
        top: &str,
        db_lines: &str,
        replica_lines: &str,
    ) -> Case {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app.db");
        let (yaml, remote) = replica_yaml(backend, dir.path(), tag);
        let yaml = format!("{yaml}\n{replica_lines}");
        let replica: String = yaml.lines().map(|l| format!("      {l}\n")).collect();
        let cfg = dir.path().join("litestream.yml");
        std::fs::write(
            &cfg,
            format!(
                "{top}dbs:\n  - path: {}\n    monitor-interval: 100ms\n{db_lines}    replica:\n{replica}      sync-interval: 100ms\n",
                db.display()
            ),
        )
        .unwrap();
        Case {
            dir,
            db,
            cfg,
            _remote: remote,
        }
    }

    fn log(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `bin replicate EXTRA -config CFG` (no `LITESTREAM_CONFIG`, no `AWS_CA_BUNDLE`).
    fn spawn(&self, bin: &Path, extra: &[&str], log: &Path) -> Child {
        let log = std::fs::File::create(log).unwrap();
        Command::new(bin)
            .arg("replicate")
            .args(extra)
            .arg("-config")
            .arg(&self.cfg)
            .env_remove("LITESTREAM_CONFIG")
            .env_remove("AWS_CA_BUNDLE")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    /// v0.5.17 `ARGS -config CFG DB` (no `AWS_CA_BUNDLE`, which v0.5.17 fails with).
    fn v0517(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(litestream_v0517());
        cmd.args(args)
            .arg("-config")
            .arg(&self.cfg)
            .arg(&self.db)
            .env_remove("LITESTREAM_CONFIG")
            .env_remove("AWS_CA_BUNDLE");
        run(&mut cmd)
    }

    /// v0.5.17's `ltx -level all -json` listing of the replica, as `(level, min, max)`.
    fn listing(&self) -> Vec<(u8, u64, u64)> {
        let o = self.v0517(&["ltx", "-level", "all", "-json"]);
        assert_exit(&o, 0, "v0.5.17 ltx");
        parse_ltx_json(&o)
            .into_iter()
            .map(|l| {
                (
                    l.level,
                    u64::from_str_radix(&l.min, 16).unwrap(),
                    u64::from_str_radix(&l.max, 16).unwrap(),
                )
            })
            .collect()
    }

    /// The L0 files as v0.5.17 lists them are TXIDs 1..=max, one per file; returns max.
    fn assert_l0_contiguous(&self) -> u64 {
        let l0: Vec<(u64, u64)> = self
            .listing()
            .into_iter()
            .filter(|f| f.0 == 0)
            .map(|f| (f.1, f.2))
            .collect();
        for (i, (a, b)) in l0.iter().enumerate() {
            assert_eq!(a, b, "one TXID per L0 file: {l0:?}");
            assert_eq!(*a, i as u64 + 1, "L0 TXIDs 1, 2, ... without a gap: {l0:?}");
        }
        l0.last().map_or(0, |f| f.1)
    }

    fn newest_l0(&self) -> u64 {
        self.listing()
            .into_iter()
            .filter(|f| f.0 == 0)
            .map(|f| f.2)
            .max()
            .unwrap_or(0)
    }

    /// Wait until the newest L0 TXID exceeds `above` and then stays put for a while.
    fn wait_l0_settled(&self, above: u64, log: &Path) {
        wait_for(
            Duration::from_secs(30),
            "new L0 files",
            || std::fs::read_to_string(log).unwrap_or_default(),
            || self.newest_l0() > above,
        );
        let mut last = 0;
        for _ in 0..30 {
            std::thread::sleep(Duration::from_millis(500));
            let now = self.newest_l0();
            if now == last {
                return;
            }
            last = now;
        }
    }

    /// v0.5.17 restores the replica equal to the source (row for row).
    fn assert_v5_restores(&self, name: &str) {
        let out = self.dir.path().join(name);
        let o = self.v0517(&["restore", "-o", out.to_str().unwrap()]);
        assert_exit(&o, 0, "v0.5.17 restore");
        assert_integrity_ok(&out, name);
        assert_eq!(all_rows(&out), all_rows(&self.db), "v0.5.17 restore {name}");
    }

    /// v0.5.17's `restore -timestamp at` gives exactly `want` (rows).
    fn assert_v5_restores_at(
        &self,
        at: std::time::SystemTime,
        want: &[(i64, Vec<u8>)],
        name: &str,
    ) {
        self.assert_v5_restores_with(&["-timestamp", &rfc3339_nanos(at)], want, name);
    }

    /// v0.5.17's `restore FLAGS` gives exactly `want` (rows).
    fn assert_v5_restores_with(&self, flags: &[&str], want: &[(i64, Vec<u8>)], name: &str) {
        let out = self.dir.path().join(name);
        let mut args = vec!["restore"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["-o", out.to_str().unwrap()]);
        let o = self.v0517(&args);
        assert_exit(&o, 0, &format!("v0.5.17 restore {flags:?}"));
        assert_integrity_ok(&out, name);
        let got = all_rows(&out);
        assert!(
            got == want,
            "v0.5.17 restore {flags:?}: {} rows, the source had {} then",
            got.len(),
            want.len()
        );
    }

    /// No v0.3 `generations/` tree beside the LTX data (v0.3.13 would list one).
    fn assert_no_generations(&self, log: &str) {
        let mut cmd = Command::new(litestream_v0313());
        cmd.arg("generations")
            .arg("-config")
            .arg(&self.cfg)
            .arg(&self.db)
            .env_remove("LITESTREAM_CONFIG")
            .env_remove("AWS_CA_BUNDLE");
        let o = run(&mut cmd);
        assert_exit(&o, 0, "v0.3.13 generations");
        let text = String::from_utf8_lossy(&o.stdout).to_string();
        assert!(
            text.lines().skip(1).all(|l| l.trim().is_empty()),
            "no v0.3 generation beside the LTX data:\n{}\nlog:\n{log}",
            describe(&o)
        );
    }
}

/// Acceptance (i): v0.5.17 writes an LTX replica, ours continues it in LTX without any flag
/// (TXIDs go on), and v0.5.17 restores the source.
fn continues_a_v0517_replica(backend: &str) {
    let case = Case::new(backend, "continue");
    create_db(&case.db);
    insert(&case.db, 20, 3000);
    let log5 = case.log("v5.log");
    let child = case.spawn(&litestream_v0517(), &[], &log5);
    for _ in 0..5 {
        insert(&case.db, 5, 2000);
        std::thread::sleep(Duration::from_millis(200));
    }
    case.wait_l0_settled(1, &log5);
    signal_and_wait(child, "TERM", &log5);
    let theirs = case.assert_l0_contiguous();
    let rows_theirs = all_rows(&case.db);
    // A point after v0.5.17's files and before any of ours (their timestamps must be later);
    // over a second before ours starts, as sftp keeps mtimes in whole seconds.
    std::thread::sleep(Duration::from_millis(300));
    let between = std::time::SystemTime::now();
    std::thread::sleep(Duration::from_millis(1100));

    // Ours, as the image's sidecar runs it: no flag.
    let log = case.log("ours.log");
    let child = case.spawn(&our_bin(), &[], &log);
    for _ in 0..5 {
        insert(&case.db, 5, 2000);
        std::thread::sleep(Duration::from_millis(200));
    }
    case.wait_l0_settled(theirs, &log);
    signal_and_wait(child, "INT", &log);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("replica holds LTX"),
        "format reason logged:\n{text}"
    );
    case.assert_no_generations(&text);
    let ours = case.assert_l0_contiguous();
    assert!(ours > theirs, "TXIDs continue: {theirs} -> {ours}");
    case.assert_v5_restores("after-ours.db");
    case.assert_v5_restores_at(between, &rows_theirs, "at-handover.db");
}

/// Acceptance (ii): `replicate -format ltx` starts a new LTX replica that v0.5.17 lists (L0
/// and the L9 snapshot) and restores equal to the source: at the latest point, and at the
/// TXID and at a time after each replicated batch of writes (the source's rows then). The
/// replica's `validation-interval` validates it meanwhile (restore and compare), every time ok.
fn format_ltx_starts_a_replica_v0517_reads(backend: &str) {
    let case = Case::with_config(backend, "format", "", "", "validation-interval: 1s");
    create_db(&case.db);
    insert(&case.db, 30, 3000);
    let log = case.log("ours.log");
    let child = case.spawn(&our_bin(), &["-format", "ltx"], &log);
    let mut points = Vec::new();
    let mut newest = 0;
    for _ in 0..4 {
        insert(&case.db, 5, 2000);
        case.wait_l0_settled(newest, &log);
        newest = case.newest_l0();
        // After the batch's file and over a second before the next one (sftp keeps mtimes
        // in whole seconds).
        std::thread::sleep(Duration::from_millis(300));
        points.push((newest, std::time::SystemTime::now(), all_rows(&case.db)));
        std::thread::sleep(Duration::from_millis(1100));
    }
    signal_and_wait(child, "INT", &log);
    let text = std::fs::read_to_string(&log).unwrap();
    case.assert_no_generations(&text);
    let listing = case.listing();
    assert!(
        listing.iter().any(|f| f.0 == 9),
        "v0.5.17 lists an L9 snapshot: {listing:?}\nlog:\n{text}"
    );
    let max = case.assert_l0_contiguous();
    assert!(max > 1, "several L0 files: {listing:?}");
    assert_eq!(max, newest, "no file after the last batch: {listing:?}");
    let validations = text
        .lines()
        .filter(|l| l.contains("validator") && l.contains("ok"))
        .count();
    assert!(
        validations >= 3 && !text.contains("validator error"),
        "{validations} validations ok, none failed:\n{text}"
    );
    case.assert_v5_restores("restored.db");
    for (i, (txid, at, rows)) in points.iter().enumerate() {
        let t = format!("{txid:016x}");
        case.assert_v5_restores_with(&["-txid", &t], rows, &format!("txid-{i}.db"));
        case.assert_v5_restores_at(*at, rows, &format!("at-{i}.db"));
    }
}

#[test]
fn file_replicate_continues_a_v0517_replica_in_ltx_without_a_flag() {
    continues_a_v0517_replica("file");
}

#[test]
fn file_format_ltx_flag_starts_an_ltx_replica_that_v0517_lists_and_restores() {
    format_ltx_starts_a_replica_v0517_reads("file");
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

#[cfg(feature = "s3")]
#[test]
fn s3_replicate_continues_a_v0517_replica_in_ltx_without_a_flag() {
    continues_a_v0517_replica("s3");
}

#[cfg(feature = "s3")]
#[test]
fn s3_format_ltx_flag_starts_an_ltx_replica_that_v0517_lists_and_restores() {
    format_ltx_starts_a_replica_v0517_reads("s3");
}

#[cfg(feature = "abs")]
#[test]
fn abs_replicate_continues_a_v0517_replica_in_ltx_without_a_flag() {
    continues_a_v0517_replica("abs");
}

#[cfg(feature = "abs")]
#[test]
fn abs_format_ltx_flag_starts_an_ltx_replica_that_v0517_lists_and_restores() {
    format_ltx_starts_a_replica_v0517_reads("abs");
}

#[cfg(feature = "sftp")]
#[test]
fn sftp_replicate_continues_a_v0517_replica_in_ltx_without_a_flag() {
    continues_a_v0517_replica("sftp");
}

#[cfg(feature = "sftp")]
#[test]
fn sftp_format_ltx_flag_starts_an_ltx_replica_that_v0517_lists_and_restores() {
    format_ltx_starts_a_replica_v0517_reads("sftp");
}

/// The v0.5 keys of the kill -9 test's config: top level, and of the database.
const V05_TOP_KEYS: &str = "format: ltx\nsocket:\n  enabled: true\nmcp-addr: \":3001\"\nlevels:\n  - interval: 1s\n  - interval: 3s\nsnapshot:\n  interval: 1h\n  retention: 24h\nl0-retention: 5m\nretention:\n  enabled: true\n";
const V05_DB_KEYS: &str = "    busy-timeout: 1s\n";

/// A kill -9 in the middle of replication under a writer that never stops: v0.5.17 restores
/// a prefix of the source (whole transactions only), and after a restart the replica is
/// continued (TXIDs without a gap) and restores equal to the source. Also: the v0.5 keys
/// parse, those not supported here are logged by name, L1 compaction runs.
fn kill_9_mid_replication(backend: &str) {
    let case = Case::with_config(backend, "kill9", V05_TOP_KEYS, V05_DB_KEYS, "");
    let db = case.db.clone();
    create_db(&db);
    insert(&db, 20, 3000);
    let log = case.log("ours.log");
    let mut child = case.spawn(&our_bin(), &[], &log);

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
    // Until several L0 files and a level-1 compaction (every 1 s) are there, the writer
    // still going.
    wait_for(
        Duration::from_secs(30),
        "L0 files and an L1 compaction",
        || std::fs::read_to_string(&log).unwrap_or_default(),
        || {
            let l = case.listing();
            l.iter().any(|f| f.0 == 1) && l.iter().any(|f| f.0 == 0 && f.2 > 3)
        },
    );
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

    // Whatever the kill interrupted, the replica restores to a prefix of the source.
    let out = case.dir.path().join("after-kill.db");
    let o = case.v0517(&["restore", "-o", out.to_str().unwrap()]);
    assert_exit(&o, 0, "v0.5.17 restore after kill -9");
    assert_integrity_ok(&out, "after kill -9");
    let got = all_rows(&out);
    let want = all_rows(&db);
    assert!(
        got.len() <= want.len() && got[..] == want[..got.len()],
        "{backend}: a prefix of the source"
    );
    let before = case.assert_l0_contiguous();

    // Restart: the replica is continued and catches up.
    let child = case.spawn(&our_bin(), &[], &log);
    insert(&db, 5, 2000);
    case.wait_l0_settled(before, &log);
    signal_and_wait(child, "INT", &log);
    case.assert_l0_contiguous();
    case.assert_v5_restores("after-restart.db");
}

#[test]
fn kill_9_mid_replication_leaves_a_consistent_ltx_replica_and_v05_keys_parse() {
    kill_9_mid_replication("file");
}

#[cfg(feature = "s3")]
#[test]
fn s3_kill_9_mid_replication_leaves_a_consistent_ltx_replica() {
    kill_9_mid_replication("s3");
}

#[cfg(feature = "abs")]
#[test]
fn abs_kill_9_mid_replication_leaves_a_consistent_ltx_replica() {
    kill_9_mid_replication("abs");
}

#[cfg(feature = "sftp")]
#[test]
fn sftp_kill_9_mid_replication_leaves_a_consistent_ltx_replica() {
    kill_9_mid_replication("sftp");
}
