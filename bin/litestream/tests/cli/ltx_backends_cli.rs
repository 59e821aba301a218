//! Litestream v0.5 (LTX) replicas on s3 (moto), abs (Azurite) and sftp (sshd), written by the
//! real v0.5.17 with a random workload, several syncs, checkpoints and compactions (short
//! `levels` intervals): our `ltx` listing is v0.5.17's, byte for byte, in text and JSON, at
//! every level (so we find its files under its layout: `<level %04x>/` on s3, `ltx/<level>/`
//! elsewhere); the v0.3 listings say the replica holds LTX data; and our restore is
//! byte-identical to v0.5.17's at the latest point, at several `-txid` and `-timestamp` values.
//!
//! Each backend's test needs its cargo feature (the binary must contain the backend) and the
//! test servers' env (`scripts/test.sh`: `TEST_S3_*`, `TEST_ABS_*`, `TEST_SFTP_*`) plus
//! `LITESTREAM_V0517_BIN`: a missing variable is a failure, never a skip.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::common;
use crate::common::ltx::{
    assert_ltx_interop, parse_ltx_json, v0517_config, v0517_workload, Listed,
};
use crate::common::{
    assert_exit, assert_files_equal, describe, litestream_v0517, our_bin, output_text, run,
    test_env, HEALTHCHECK,
};

/// `bin ARGS` with the env a backend test runs Litestream in: no `LITESTREAM_CONFIG`, and no
/// `AWS_CA_BUNDLE` (v0.5.17's aws-sdk-go-v2 fails on every S3 call with it set).
fn run_litestream(bin: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .env_remove("LITESTREAM_CONFIG")
        .env_remove("AWS_CA_BUNDLE");
    // URL mode takes the keys from the environment, as the compose healthcheck passes them.
    if args.iter().any(|a| a.starts_with("s3://")) {
        let env = |n: &str| test_env(n, "the s3 URL form needs the test server's key");
        cmd.env("AWS_ACCESS_KEY_ID", env("TEST_S3_ACCESS_KEY_ID"))
            .env("AWS_SECRET_ACCESS_KEY", env("TEST_S3_SECRET_ACCESS_KEY"));
    }
    run(&mut cmd)
}

/// A unique replica prefix for `backend`/`tag`.
fn unique(backend: &str, tag: &str) -> String {
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("ltx-{backend}/{tag}-{:x}-{n:x}", std::process::id())
}

/// One backend case: a temp dir with the source database and the v0.5.17 config whose replica
/// is `replica_yaml`.
struct Case {
    dir: tempfile::TempDir,
    db: PathBuf,
    cfg: PathBuf,
}

impl Case {
    fn new(replica_yaml: &str) -> Case {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("src.db");
        let cfg = dir.path().join("litestream.yml");
        std::fs::write(&cfg, v0517_config(&db, replica_yaml)).unwrap();
        Case { dir, db, cfg }
    }

    fn cfg(&self) -> &str {
        self.cfg.to_str().unwrap()
    }

    fn db(&self) -> &str {
        self.db.to_str().unwrap()
    }

    /// `bin restore EXTRA -config CFG -o out DB`.
    fn restore(&self, bin: &Path, out: &Path, extra: &[&str]) -> Output {
        let mut args = vec!["restore"];
        args.extend_from_slice(extra);
        args.extend([
            "-config",
            self.cfg(),
            "-o",
            out.to_str().unwrap(),
            self.db(),
        ]);
        run_litestream(bin, &args)
    }

    /// `bin ltx ARGS -config CFG DB`, or `bin ltx ARGS URL` with a replica URL.
    fn ltx(&self, bin: &Path, args: &[&str], url: Option<&str>) -> Output {
        let mut all = vec!["ltx"];
        all.extend_from_slice(args);
        match url {
            Some(u) => all.push(u),
            None => all.extend(["-config", self.cfg(), self.db()]),
        }
        run_litestream(bin, &all)
    }
}

/// Our `ltx` prints exactly what v0.5.17's prints for `args` (config mode, or URL mode with
/// `url`), and exits 0 like it.
fn assert_ltx_same(case: &Case, args: &[&str], url: Option<&str>) -> Output {
    let theirs = case.ltx(&litestream_v0517(), args, url);
    let ours = case.ltx(&our_bin(), args, url);
    assert_exit(&theirs, 0, &format!("v0.5.17 ltx {args:?}"));
    assert_exit(&ours, 0, &format!("our ltx {args:?}"));
    assert_eq!(
        String::from_utf8_lossy(&ours.stdout),
        String::from_utf8_lossy(&theirs.stdout),
        "ltx {args:?}: our stdout (left) vs v0.5.17's (right)\nours: {}",
        describe(&ours)
    );
    theirs
}

/// v0.5.17 replicates the random workload to `replica_yaml`; our `ltx` listings (config mode,
/// and URL mode with `url`) are v0.5.17's, every level the workload makes is there, and the
/// v0.3 listings note the LTX data. Returns the case, the listing and the workload's marks.
fn listings_match(replica_yaml: &str, url: Option<&str>) -> (Case, Vec<Listed>, Vec<SystemTime>) {
    let case = Case::new(replica_yaml);
    let log = case.dir.path().join("replicate-v0517.log");
    let marks = v0517_workload(&case.db, &case.cfg, &log);

    let all = assert_ltx_same(&case, &["-level", "all", "-json"], None);
    let listing = parse_ltx_json(&all);
    let levels: std::collections::BTreeSet<u8> = listing.iter().map(|l| l.level).collect();
    for level in [0u8, 1, 2, 9] {
        assert!(
            levels.contains(&level),
            "v0.5.17 wrote no level {level} file (levels {levels:?}); log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    assert_ltx_same(&case, &["-level", "all"], None);
    assert_ltx_same(&case, &[], None);
    assert_ltx_same(&case, &["-level", "9"], None);
    assert_ltx_same(&case, &["-level", "5", "-json"], None);
    if url.is_some() {
        assert_ltx_same(&case, &["-level", "all"], url);
        assert_ltx_same(&case, &["-json", "-level=2"], url);
    }

    for command in ["generations", "snapshots", "wal"] {
        let out = run_litestream(&our_bin(), &[command, "-config", case.cfg(), case.db()]);
        assert_exit(&out, 0, command);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("also holds Litestream v0.5 (LTX) data"),
            "{command} does not note the LTX data: {}",
            describe(&out)
        );
        // Logs share stdout with the table, as in v0.3.13 (the v0.5 keys draw warnings).
        let stdout = String::from_utf8_lossy(&out.stdout);
        let table: Vec<&str> = stdout.lines().filter(|l| !l.starts_with("time=")).collect();
        assert_eq!(
            table.len(),
            1,
            "{command}: a v0.5-only replica has no v0.3 rows: {}",
            describe(&out)
        );
    }

    (case, listing, marks)
}

/// [`listings_match`], then our restores are byte-identical to v0.5.17's (latest, `-txid`,
/// `-timestamp`), and the healthcheck restore (`-if-db-not-exists -if-replica-exists`) restores
/// the LTX-only replica and then leaves the database alone.
fn ltx_interop(replica_yaml: &str, url: Option<&str>) {
    let (case, listing, marks) = listings_match(replica_yaml, url);
    let restore = |bin: &Path, out: &Path, extra: &[&str]| case.restore(bin, out, extra);
    let latest = assert_ltx_interop(case.dir.path(), &restore, &listing, &marks);

    // The compose healthcheck on this LTX-only replica: restores the latest state, exit 0;
    // run again, it leaves the existing database alone, exit 0.
    let hc = case.dir.path().join("healthcheck.db");
    let out = case.restore(&our_bin(), &hc, HEALTHCHECK);
    assert_exit(&out, 0, "healthcheck restore of an LTX-only replica");
    assert_files_equal(&latest, &hc, "healthcheck restore vs the latest restore");
    let before = std::fs::metadata(&hc).unwrap().modified().unwrap();
    let out = case.restore(&our_bin(), &hc, HEALTHCHECK);
    assert_exit(&out, 0, "healthcheck with the database in place");
    assert_eq!(std::fs::metadata(&hc).unwrap().modified().unwrap(), before);
    assert_files_equal(&latest, &hc, "healthcheck left the database alone");
}

/// On a file replica (whose restores `ltx_restore_cli` compares) the listings match too.
#[test]
fn file_ltx_listing_matches_v0517() {
    let dir = tempfile::tempdir().unwrap();
    let replica = dir.path().join("replica");
    let url = format!("file://{}", replica.display());
    listings_match(
        &format!("type: file\npath: {}", replica.display()),
        Some(&url),
    );
}

/// Bad `ltx` invocations fail with exit 1 and say what is wrong, as v0.5.17's do.
#[test]
fn ltx_usage_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}/replica", dir.path().display());
    let cfg = dir.path().join("litestream.yml");
    std::fs::write(
        &cfg,
        v0517_config(&dir.path().join("db"), &format!("url: {url}")),
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap();
    let cases: [(&[&str], &str); 5] = [
        (&["ltx"], "database path or replica URL required"),
        (
            &["ltx", "-level", "x", &url],
            "invalid level: must be 0-9 or",
        ),
        (
            &["ltx", "-level", "10", &url],
            "level must be between 0 and 9",
        ),
        (
            &["ltx", "-config", cfg, &url],
            "cannot specify a replica URL and the -config flag",
        ),
        (
            &["ltx", "-config", cfg, "/nowhere/db"],
            "database not found in config: /nowhere/db",
        ),
    ];
    for (args, want) in cases {
        let out = run_litestream(&our_bin(), args);
        assert_exit(&out, 1, &format!("{args:?}"));
        let text = output_text(&out);
        assert!(
            text.contains(want),
            "{args:?}: no {want:?} in {}",
            describe(&out)
        );
        let theirs = run_litestream(&litestream_v0517(), args);
        assert!(!theirs.status.success(), "v0.5.17 accepted {args:?}");
        assert!(
            output_text(&theirs).contains(want),
            "v0.5.17 {args:?}: {}",
            describe(&theirs)
        );
    }
    // An empty level lists a header only; a missing replica is no error.
    let ours = run_litestream(&our_bin(), &["ltx", &url]);
    let theirs = run_litestream(&litestream_v0517(), &["ltx", &url]);
    assert_exit(&ours, 0, "ltx of a missing replica");
    assert_eq!(
        ours.stdout,
        theirs.stdout,
        "{}\n{}",
        describe(&ours),
        describe(&theirs)
    );
}

#[cfg(feature = "s3")]
#[test]
fn s3_ltx_listing_and_restore_match_v0517() {
    let env = |n: &str| test_env(n, "the s3 LTX interop test needs the local S3 server");
    let path = format!("{}/app.sqlite", unique("s3", "interop"));
    let url = format!(
        "s3://{}/{path}?endpoint={}&forcePathStyle=true&region={}",
        env("TEST_S3_BUCKET"),
        env("TEST_S3_ENDPOINT"),
        env("TEST_S3_REGION"),
    );
    ltx_interop(
        &format!(
            "type: s3\nbucket: {}\npath: {path}\nendpoint: {}\nregion: {}\n\
             force-path-style: true\naccess-key-id: {}\nsecret-access-key: {}\n\
             sync-interval: 200ms",
            env("TEST_S3_BUCKET"),
            env("TEST_S3_ENDPOINT"),
            env("TEST_S3_REGION"),
            env("TEST_S3_ACCESS_KEY_ID"),
            env("TEST_S3_SECRET_ACCESS_KEY"),
        ),
        Some(&url),
    );
}

#[cfg(feature = "abs")]
#[test]
fn abs_ltx_listing_and_restore_match_v0517() {
    let env = |n: &str| test_env(n, "the abs LTX interop test needs Azurite");
    ltx_interop(
        &format!(
            "type: abs\naccount-name: {}\naccount-key: {}\nbucket: {}\npath: {}/app.sqlite\n\
         endpoint: {}\nsync-interval: 200ms",
            env("TEST_ABS_ACCOUNT_NAME"),
            env("TEST_ABS_ACCOUNT_KEY"),
            env("TEST_ABS_CONTAINER"),
            unique("abs", "interop"),
            env("TEST_ABS_ENDPOINT"),
        ),
        None,
    );
}

/// The remote directory of an sftp case, removed when the test ends.
#[cfg(feature = "sftp")]
struct RemoteDir(String);

#[cfg(feature = "sftp")]
impl Drop for RemoteDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(feature = "sftp")]
#[test]
fn sftp_ltx_listing_and_restore_match_v0517() {
    let env = |n: &str| test_env(n, "the sftp LTX interop test needs the local sshd");
    let remote = RemoteDir(format!(
        "{}/{}",
        env("TEST_SFTP_ROOT"),
        unique("sftp", "interop")
    ));
    ltx_interop(
        &format!(
            "type: sftp\nhost: 127.0.0.1:{}\nuser: {}\nkey-path: {}\nhost-key: \"{}\"\n\
         path: {}/app.sqlite\nsync-interval: 200ms",
            env("TEST_SFTP_PORT"),
            env("TEST_SFTP_USER"),
            env("TEST_SFTP_KEY_PATH"),
            env("TEST_SFTP_HOST_KEY"),
            remote.0,
        ),
        None,
    );
}

/// A v0.3 config with two replicas (which v0.5 refuses): `ltx` asks for `-replica NAME` and,
/// given one, lists that replica (here a missing one: the header only).
#[test]
fn ltx_of_a_database_with_two_replicas_needs_replica() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let cfg = dir.path().join("litestream.yml");
    let text = format!(
        "dbs:\n  - path: {db}\n    replicas:\n      - name: a\n        path: {d}/a\n      \
         - name: b\n        path: {d}/b\n",
        db = db.display(),
        d = dir.path().display()
    );
    std::fs::write(&cfg, text).unwrap();
    let (cfg, db) = (cfg.to_str().unwrap(), db.to_str().unwrap());
    let out = run_litestream(&our_bin(), &["ltx", "-config", cfg, db]);
    assert_exit(&out, 1, "ltx of two replicas");
    assert!(
        output_text(&out).contains("choose the one to list with -replica NAME"),
        "{}",
        describe(&out)
    );
    let out = run_litestream(&our_bin(), &["ltx", "-replica", "b", "-config", cfg, db]);
    assert_exit(&out, 0, "ltx -replica b");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "level  min_txid  max_txid  size  created\n"
    );
}

/// A replica path holding both formats (v0.3.13's `multi-index` fixture plus the v0.5.15
/// fixture's `ltx/`): `generations`, `snapshots` and `wal` list the v0.3 data exactly as
/// v0.3.13 does and note the LTX data on stderr; `ltx` lists the LTX data exactly as v0.5.17.
#[test]
fn mixed_replica_listings_match_both_upstreams() {
    let fx = common::copy_fixture("multi-index");
    let replica = common::replica_path(&fx);
    common::copy_tree(
        &common::repo_root().join("fixtures/v0.5.15/basic/replica/ltx"),
        &replica.join("ltx"),
    );
    let url = common::file_url(&replica);
    for command in ["snapshots", "wal"] {
        let ours = run_litestream(&our_bin(), &[command, &url]);
        let theirs = run_litestream(&common::litestream_v0313(), &[command, &url]);
        assert_exit(&ours, 0, command);
        assert_eq!(
            String::from_utf8_lossy(&ours.stdout),
            String::from_utf8_lossy(&theirs.stdout),
            "{command}: ours (left) vs v0.3.13's (right)"
        );
        assert!(
            String::from_utf8_lossy(&ours.stderr).contains(
                "also holds Litestream v0.5 (LTX) data: 13 LTX file(s), newest TXID \
                 000000000000000f"
            ),
            "{command}: {}",
            describe(&ours)
        );
    }
    let ours = run_litestream(&our_bin(), &["generations", &url]);
    assert_exit(&ours, 0, "generations");
    assert!(
        String::from_utf8_lossy(&ours.stdout).lines().count() > 1,
        "generations lists the v0.3 generations: {}",
        describe(&ours)
    );
    assert!(String::from_utf8_lossy(&ours.stderr).contains("(LTX) data"));
    let case = Case::new(&format!("url: {url}"));
    assert_ltx_same(&case, &["-level", "all"], Some(&url));
    assert_ltx_same(&case, &["-level", "all", "-json"], Some(&url));
}
