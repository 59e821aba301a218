//! `litestream restore` at the command line: the healthcheck flags, config-file mode, and
//! bad input (every case exits 1, names the object or setting, and creates nothing).
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::common::*;

fn restore_args(out: &Path, extra: &[&str], target: &str) -> Vec<String> {
    let mut v = vec!["restore".to_string()];
    v.extend(extra.iter().map(|s| s.to_string()));
    v.push("-o".into());
    v.push(out.display().to_string());
    v.push(target.to_string());
    v
}

/// Everything the command printed (logs go to stdout once a config file is loaded, as in
/// Litestream), with log-quoting undone.
fn stderr(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    )
    .replace("\\\"", "\"")
}

/// The segment files of the fixture copy, sorted.
fn segments(replica: &Path) -> Vec<PathBuf> {
    let gen = &generations(replica)[0];
    let dir = replica.join("generations").join(gen).join("wal");
    let mut v: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

fn assert_nothing_created(out: &Path) {
    assert!(!out.exists(), "{} must not exist", out.display());
    if let Some(dir) = out.parent() {
        if dir.exists() {
            let stem = out.file_name().unwrap().to_string_lossy().to_string();
            let litter: Vec<String> = fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
                .filter(|n| n.starts_with(&stem))
                .collect();
            assert!(litter.is_empty(), "temporary files left behind: {litter:?}");
        }
    }
}

#[test]
fn healthcheck_leaves_an_existing_database_untouched() {
    let fx = copy_fixture("multi-index");
    let out = fx.path().join("app.db");
    fs::write(&out, b"existing database bytes").unwrap();
    let old = SystemTime::now() - Duration::from_secs(3600);
    fs::File::options()
        .write(true)
        .open(&out)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let url = file_url(&replica_path(&fx));
    let res = run_bin(
        &our_bin(),
        restore_args(&out, &["-if-db-not-exists", "-if-replica-exists"], &url),
    );
    assert_exit(&res, 0, "healthcheck with an existing db");
    assert_eq!(fs::read(&out).unwrap(), b"existing database bytes");
    assert_eq!(fs::metadata(&out).unwrap().modified().unwrap(), old);
    assert!(stderr(&res).contains("database already exists, skipping"));
}

#[test]
fn healthcheck_with_no_replica_exits_zero_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let empty_replica = dir.path().join("empty-replica");
    let out = dir.path().join("data").join("app.db");
    let url = file_url(&empty_replica);
    let res = run_bin(
        &our_bin(),
        restore_args(&out, &["-if-db-not-exists", "-if-replica-exists"], &url),
    );
    assert_exit(&res, 0, "healthcheck with no replica");
    assert!(stderr(&res).contains("no matching backups found"));
    assert!(!out.exists());
    assert!(
        !out.parent().unwrap().exists(),
        "no directory may be created"
    );

    let res = run_bin(&our_bin(), restore_args(&out, &[], &url));
    assert_exit(&res, 1, "restore with no replica and no -if-replica-exists");
    assert!(stderr(&res).contains("no matching backups found"));
}

#[test]
fn healthcheck_restores_when_the_replica_exists() {
    let fx = copy_fixture("multi-index");
    let url = file_url(&replica_path(&fx));
    let theirs = fx.path().join("theirs.db");
    let ours = fx.path().join("volume").join("app.db");
    assert_exit(
        &run_bin(&litestream_v0313(), restore_args(&theirs, &[], &url)),
        0,
        "v0.3.13 restore",
    );
    let res = run_bin(
        &our_bin(),
        restore_args(&ours, &["-if-db-not-exists", "-if-replica-exists"], &url),
    );
    assert_exit(&res, 0, "healthcheck restore");
    assert_files_equal(&theirs, &ours, "healthcheck restore vs v0.3.13");
    assert_integrity_ok(&ours, "healthcheck restore");
    assert_no_leftovers(&ours, "healthcheck restore");
}

#[test]
fn config_file_mode_restores_to_the_database_path() {
    let fx = copy_fixture("multi-generation");
    let replica = replica_path(&fx);
    let db = fx.path().join("db").join("app.db");
    let cfg = fx.path().join("litestream.yml");
    fs::write(
        &cfg,
        format!(
            "dbs:\n  - path: {}\n    replicas:\n      - name: backup\n        path: ${{LS_TEST_REPLICA_DIR}}\n",
            db.display()
        ),
    )
    .unwrap();
    let theirs = fx.path().join("theirs.db");
    assert_exit(
        &run_bin(
            &litestream_v0313(),
            [
                "restore",
                "-o",
                theirs.to_str().unwrap(),
                &file_url(&replica),
            ],
        ),
        0,
        "v0.3.13 restore",
    );
    let mut cmd = std::process::Command::new(our_bin());
    cmd.args([
        "restore",
        "-config",
        cfg.to_str().unwrap(),
        "-replica",
        "backup",
    ])
    .arg(&db)
    .env("LS_TEST_REPLICA_DIR", &replica);
    let res = run(&mut cmd);
    assert_exit(&res, 0, "config-mode restore");
    assert_files_equal(&theirs, &db, "config-mode restore vs v0.3.13");

    // The healthcheck in config mode leaves the now existing database alone.
    let mut cmd = std::process::Command::new(our_bin());
    cmd.args([
        "restore",
        "-config",
        cfg.to_str().unwrap(),
        "-if-db-not-exists",
    ])
    .arg(&db)
    .env("LS_TEST_REPLICA_DIR", &replica);
    assert_exit(&run(&mut cmd), 0, "config-mode healthcheck");

    // An unknown replica name and an unknown database are errors that name them.
    let other = fx.path().join("other.db");
    let mut cmd = std::process::Command::new(our_bin());
    cmd.args(["restore", "-config", cfg.to_str().unwrap(), "-o"])
        .arg(&other)
        .args(["-replica", "nosuch"])
        .arg(&db)
        .env("LS_TEST_REPLICA_DIR", &replica);
    let res = run(&mut cmd);
    assert_exit(&res, 1, "unknown replica");
    assert!(stderr(&res).contains("nosuch"), "{}", describe(&res));
    let mut cmd = std::process::Command::new(our_bin());
    cmd.args(["restore", "-config", cfg.to_str().unwrap()])
        .arg(fx.path().join("unknown.db"))
        .env("LS_TEST_REPLICA_DIR", &replica);
    let res = run(&mut cmd);
    assert_exit(&res, 1, "unknown database");
    assert!(
        stderr(&res).contains("database not found in config"),
        "{}",
        describe(&res)
    );
}

/// Run our restore of a damaged fixture copy; it must fail naming `needle`.
fn assert_restore_fails(fx: &tempfile::TempDir, needle: &str, what: &str) {
    let out = fx.path().join("out").join("restored.db");
    let url = file_url(&replica_path(fx));
    let res = run_bin(&our_bin(), restore_args(&out, &[], &url));
    assert_exit(&res, 1, what);
    assert!(
        stderr(&res).contains(needle),
        "{what}: error should mention {needle:?}\n{}",
        describe(&res)
    );
    assert_nothing_created(&out);
}

fn file_name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

/// The largest segment at a non-zero offset (its frames carry real pages).
fn big_segment(replica: &Path) -> PathBuf {
    segments(replica)
        .into_iter()
        .filter(|p| !file_name(p).ends_with("_00000000.wal.lz4"))
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap()
}

#[test]
fn bit_flip_in_a_segment_is_an_error_naming_the_segment() {
    let fx = copy_fixture("multi-index");
    let seg = big_segment(&replica_path(&fx));
    let mut bytes = fs::read(&seg).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x04;
    fs::write(&seg, bytes).unwrap();
    assert_restore_fails(&fx, &file_name(&seg), "bit flip");
}

#[test]
fn truncated_lz4_frame_is_an_error_naming_the_segment() {
    let fx = copy_fixture("multi-index");
    let seg = big_segment(&replica_path(&fx));
    let bytes = fs::read(&seg).unwrap();
    fs::write(&seg, &bytes[..bytes.len() * 2 / 3]).unwrap();
    assert_restore_fails(&fx, &file_name(&seg), "truncated frame");
}

#[test]
fn truncated_snapshot_is_an_error_naming_the_snapshot() {
    let fx = copy_fixture("multi-index");
    let replica = replica_path(&fx);
    let gen = &generations(&replica)[0];
    let snap = replica
        .join("generations")
        .join(gen)
        .join("snapshots")
        .join("00000000.snapshot.lz4");
    let bytes = fs::read(&snap).unwrap();
    fs::write(&snap, &bytes[..bytes.len() / 2]).unwrap();
    assert_restore_fails(&fx, "00000000.snapshot.lz4", "truncated snapshot");
}

#[test]
fn missing_initial_segment_is_an_error() {
    let fx = copy_fixture("multi-index");
    let replica = replica_path(&fx);
    // The newest index that has more segments after its initial one.
    let all = segments(&replica);
    let last_index_start = all
        .iter()
        .filter(|p| file_name(p).ends_with("_00000000.wal.lz4"))
        .rfind(|p| {
            let index = file_name(p)[..8].to_string();
            all.iter()
                .filter(|q| file_name(q).starts_with(&index))
                .count()
                >= 2
        })
        .cloned()
        .expect("an index with 2+ segments");
    fs::remove_file(&last_index_start).unwrap();
    assert_restore_fails(
        &fx,
        "missing initial wal segment",
        "missing initial segment",
    );
}

#[test]
fn segment_with_the_wrong_salt_is_an_error_naming_it() {
    let fx = copy_fixture("multi-index");
    let replica = replica_path(&fx);
    // Two segments at the same non-zero offset of different indexes: same shape, other salt.
    let segs: Vec<PathBuf> = segments(&replica)
        .into_iter()
        .filter(|p| file_name(p).ends_with("_00001038.wal.lz4"))
        .collect();
    assert!(segs.len() >= 2);
    let (a, b) = (&segs[segs.len() - 2], &segs[segs.len() - 1]);
    fs::copy(a, b).unwrap();
    let res_needle = file_name(b);
    assert_restore_fails(&fx, &res_needle, "wrong salt");
    let out = fx.path().join("out").join("restored.db");
    let res = run_bin(&our_bin(), restore_args(&out, &[], &file_url(&replica)));
    assert!(stderr(&res).contains("salt"), "{}", describe(&res));
}

#[test]
fn unwritable_output_directory_is_an_error_naming_the_path() {
    let fx = copy_fixture("multi-index");
    let blocker = fx.path().join("not-a-dir");
    fs::write(&blocker, b"x").unwrap();
    let out = blocker.join("app.db");
    let res = run_bin(
        &our_bin(),
        restore_args(&out, &[], &file_url(&replica_path(&fx))),
    );
    assert_exit(&res, 1, "unwritable output");
    assert!(
        stderr(&res).contains(&blocker.display().to_string()),
        "{}",
        describe(&res)
    );
    assert!(!out.exists());
    assert_eq!(fs::read(&blocker).unwrap(), b"x");
}

#[test]
fn malformed_urls_are_errors_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("app.db");
    for (url, needle) in [
        ("ftp://host/path", "unknown replica type in config: \"ftp\""),
        ("s3://", "bucket required"),
        ("s3://bucket:notaport/x", "invalid replica url"),
    ] {
        let res = run_bin(&our_bin(), restore_args(&out, &[], url));
        assert_exit(&res, 1, url);
        assert!(stderr(&res).contains(needle), "{url}: {}", describe(&res));
        assert!(!out.exists());
    }
}

#[test]
fn unknown_replica_type_in_config_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let cfg = dir.path().join("litestream.yml");
    fs::write(
        &cfg,
        format!(
            "dbs:\n  - path: {}\n    replicas:\n      - type: ftpx\n        path: /x\n",
            db.display()
        ),
    )
    .unwrap();
    let res = run_bin(
        &our_bin(),
        [
            "restore",
            "-config",
            cfg.to_str().unwrap(),
            db.to_str().unwrap(),
        ],
    );
    assert_exit(&res, 1, "unknown type");
    assert!(
        stderr(&res).contains("unknown replica type in config: \"ftpx\""),
        "{}",
        describe(&res)
    );
    assert!(!db.exists());
}

#[test]
fn usage_errors_exit_one() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("app.db");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["restore"], "database path or replica URL required"),
        (vec!["restore", "-o", "x", "a", "b"], "too many arguments"),
        (vec!["restore", "file:///tmp/x"], "output path required"),
        (
            vec!["restore", "-index", "zz", "-o", "x", "file:///tmp/x"],
            "invalid hexadecimal",
        ),
        (
            vec![
                "restore",
                "-timestamp",
                "yesterday",
                "-o",
                "x",
                "file:///tmp/x",
            ],
            "ISO 8601",
        ),
        (vec!["restore", "-v"], "flag provided but not defined: -v"),
        (
            vec!["restore", "-config", "/x.yml", "-o", "x", "file:///tmp/x"],
            "cannot specify a replica URL and the -config flag",
        ),
        (vec!["nosuch"], "unknown command"),
    ];
    for (args, needle) in cases {
        let res = run_bin(&our_bin(), &args);
        assert_exit(&res, 1, &args.join(" "));
        assert!(
            stderr(&res).contains(needle),
            "{args:?} should mention {needle:?}: {}",
            describe(&res)
        );
    }
    assert!(!out.exists());
    let res = run_bin(&our_bin(), ["version"]);
    assert_exit(&res, 0, "version");
    assert!(String::from_utf8_lossy(&res.stdout).starts_with("v0.3.13"));
}

#[test]
fn databases_lists_the_same_rows_as_litestream() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("litestream.yml");
    fs::write(
        &cfg,
        format!(
            "dbs:\n  - path: {d}/a.db\n    replicas:\n      - path: {d}/ra\n      - name: second\n        url: file://{d}/rb\n  - path: {d}/sub/../b.db\n    replicas:\n      - url: s3://bucket/b\n",
            d = dir.path().display()
        ),
    )
    .unwrap();
    let theirs = run_bin(
        &litestream_v0313(),
        ["databases", "-config", cfg.to_str().unwrap()],
    );
    let ours = run_bin(&our_bin(), ["databases", "-config", cfg.to_str().unwrap()]);
    assert_exit(&theirs, 0, "v0.3.13 databases");
    assert_exit(&ours, 0, "our databases");
    assert_eq!(
        String::from_utf8_lossy(&ours.stdout),
        String::from_utf8_lossy(&theirs.stdout)
    );
}

// ------------------------------------------------------------------------------------------
// signals and leftovers (issue 13, item 6)
// ------------------------------------------------------------------------------------------

/// Replace the fixture's (only) snapshot with a FIFO that a thread feeds: the first `head`
/// bytes of the real snapshot, then, once `release` receives, the rest (or nothing if the
/// sender is dropped). A restore reading it blocks in the middle of the snapshot with its
/// temporary file created.
fn stalled_snapshot(fx: &tempfile::TempDir, head: usize) -> std::sync::mpsc::Sender<()> {
    let replica = replica_path(fx);
    let gen = &generations(&replica)[0];
    let snap_dir = replica.join("generations").join(gen).join("snapshots");
    let snap = fs::read_dir(&snap_dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let bytes = fs::read(&snap).unwrap();
    fs::remove_file(&snap).unwrap();
    let st = std::process::Command::new("mkfifo")
        .arg(&snap)
        .status()
        .unwrap();
    assert!(st.success(), "mkfifo failed");
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        use std::io::Write;
        let mut f = fs::OpenOptions::new().write(true).open(&snap).unwrap();
        let _ = f.write_all(&bytes[..head.min(bytes.len())]);
        let _ = f.flush();
        if rx.recv().is_ok() {
            let _ = f.write_all(&bytes[head.min(bytes.len())..]);
        }
    });
    tx
}

/// Files beside `out` whose names start with its name (temporary files, -wal, -shm).
fn beside(out: &Path) -> Vec<String> {
    let stem = out.file_name().unwrap().to_string_lossy().to_string();
    let Ok(dir) = fs::read_dir(out.parent().unwrap()) else {
        return Vec::new();
    };
    let mut v: Vec<String> = dir
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with(&stem))
        .collect();
    v.sort();
    v
}

fn spawn_restore(out: &Path, extra: &[&str], url: &str, log: &Path) -> std::process::Child {
    std::process::Command::new(our_bin())
        .args(restore_args(out, extra, url))
        .env_remove("LITESTREAM_CONFIG")
        .stdin(std::process::Stdio::null())
        .stdout(fs::File::create(log).unwrap())
        .stderr(fs::File::create(log.with_extension("err")).unwrap())
        .spawn()
        .unwrap()
}

fn wait_for_tmp(out: &Path, log: &Path) {
    wait_for(
        Duration::from_secs(30),
        "the restore's temporary file",
        || {
            format!(
                "beside: {:?}; log: {}",
                beside(out),
                fs::read_to_string(log.with_extension("err")).unwrap_or_default()
            )
        },
        || beside(out).iter().any(|n| n.ends_with(".tmp")),
    );
}

#[test]
fn a_signal_during_restore_removes_the_temporary_file_and_exits_one() {
    for signal in ["TERM", "INT"] {
        let fx = copy_fixture("multi-index");
        let _feed = stalled_snapshot(&fx, 100);
        let out = fx.path().join("out").join("app.db");
        let log = fx.path().join("restore.log");
        let url = file_url(&replica_path(&fx));
        let mut child = spawn_restore(&out, &[], &url, &log);
        wait_for_tmp(&out, &log);
        let st =
            litestream_test_servers::signal_and_wait(&mut child, signal, Duration::from_secs(30));
        let text = fs::read_to_string(&log).unwrap()
            + &fs::read_to_string(log.with_extension("err")).unwrap();
        let st = st.unwrap_or_else(|| {
            let _ = child.kill();
            panic!("restore ignored SIG{signal}: {text}")
        });
        assert_eq!(st.code(), Some(1), "SIG{signal}: {st}; {text}");
        assert!(text.contains(&format!("SIG{signal}")), "{text}");
        assert_eq!(beside(&out), Vec::<String>::new(), "SIG{signal}: {text}");
    }
}

#[test]
fn stale_wal_or_shm_beside_the_output_is_refused_and_kept() {
    for suffix in ["-wal", "-shm"] {
        let fx = copy_fixture("multi-index");
        let out = fx.path().join("app.db");
        let stale = PathBuf::from(format!("{}{suffix}", out.display()));
        fs::write(&stale, b"stale bytes of an older database").unwrap();
        let url = file_url(&replica_path(&fx));
        let res = run_bin(&our_bin(), restore_args(&out, &[], &url));
        assert_exit(&res, 1, &format!("restore beside a stale {suffix}"));
        let text = stderr(&res);
        assert!(text.contains(&stale.display().to_string()), "{text}");
        assert!(!out.exists());
        assert_eq!(
            fs::read(&stale).unwrap(),
            b"stale bytes of an older database"
        );
        // With -if-db-not-exists and no database, the same refusal (the db does not exist).
        let res = run_bin(&our_bin(), restore_args(&out, &["-if-db-not-exists"], &url));
        assert_exit(&res, 1, "healthcheck beside a stale file");
    }
}

#[test]
fn if_db_not_exists_loser_of_a_concurrent_restore_exits_zero() {
    let fx = copy_fixture("multi-index");
    let feed = stalled_snapshot(&fx, 100);
    let out = fx.path().join("app.db");
    let log = fx.path().join("restore.log");
    let url = file_url(&replica_path(&fx));
    let mut child = spawn_restore(&out, &["-if-db-not-exists"], &url, &log);
    wait_for_tmp(&out, &log);
    // Another restore wins the race while this one is downloading.
    fs::write(&out, b"the winner's database").unwrap();
    feed.send(()).unwrap();
    drop(feed);
    let st = child.wait().unwrap();
    let text =
        fs::read_to_string(&log).unwrap() + &fs::read_to_string(log.with_extension("err")).unwrap();
    assert_eq!(st.code(), Some(0), "{text}");
    assert!(text.contains("database already exists"), "{text}");
    assert_eq!(fs::read(&out).unwrap(), b"the winner's database");
    assert_eq!(beside(&out), vec!["app.db".to_string()], "{text}");
}

// ------------------------------------------------------------------------------------------
// input that used to panic (issue 13, item 4): a clear error and exit 1, never 101
// ------------------------------------------------------------------------------------------

#[test]
fn hostile_arguments_are_errors_not_panics() {
    use std::os::unix::ffi::OsStrExt;
    let fx = copy_fixture("multi-index");
    let out = fx.path().join("app.db");
    let url = file_url(&replica_path(&fx));
    let out_s = out.display().to_string();
    let cases: Vec<(Vec<std::ffi::OsString>, &str)> = vec![
        (
            vec![
                "restore".into(),
                "-o".into(),
                out_s.clone().into(),
                "file:///data/%xé".into(),
            ],
            "invalid URL escape",
        ),
        (
            vec![
                "restore".into(),
                "-o".into(),
                out_s.clone().into(),
                "sftp://u%ff@h/x".into(),
            ],
            "invalid UTF-8",
        ),
        (
            vec![
                "restore".into(),
                "-parallelism".into(),
                "2305843009213693952".into(),
                "-o".into(),
                out_s.clone().into(),
                url.clone().into(),
            ],
            "-parallelism",
        ),
        (
            vec![
                "restore".into(),
                "-o".into(),
                std::ffi::OsStr::from_bytes(b"/tmp/\xff.db").to_owned(),
                url.clone().into(),
            ],
            "not valid UTF-8",
        ),
    ];
    for (args, needle) in cases {
        let res = run_bin(&our_bin(), &args);
        assert_exit(&res, 1, &format!("{args:?}"));
        let text = stderr(&res);
        assert!(!text.contains("panicked"), "{args:?}: {text}");
        assert!(
            text.contains(needle),
            "{args:?} should mention {needle:?}: {text}"
        );
    }
    assert!(!out.exists());
}

#[test]
fn huge_duration_in_config_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let cfg = dir.path().join("litestream.yml");
    for key in ["retention", "sync-interval", "snapshot-interval"] {
        fs::write(
            &cfg,
            format!(
                "dbs:\n  - path: {}\n    replicas:\n      - path: {}\n        {key}: 99999999999999999999h\n",
                db.display(),
                dir.path().join("replica").display()
            ),
        )
        .unwrap();
        let res = run_bin(&our_bin(), ["databases", "-config", cfg.to_str().unwrap()]);
        assert_exit(&res, 1, key);
        let text = stderr(&res);
        assert!(!text.contains("panicked"), "{key}: {text}");
        assert!(text.contains("99999999999999999999h"), "{key}: {text}");
    }
}
