//! `gcs` replicas through the `litestream` binary, against the GCS emulator
//! (`gcp-storage-emulator`) and the real Litestream v0.3.13, which reaches it through
//! `STORAGE_EMULATOR_HOST` as Google's clients do: interop both ways with a > 8 MiB first
//! snapshot (a resumable upload here) and several WAL indexes, the healthcheck restore in URL
//! form (`gcs://` and v0.5's `gs://`), a clear error for a bucket that does not exist, and a
//! `gs://` replica the real v0.5.17 wrote (LTX), and an LTX replica of ours that v0.5.17 lists,
//! restores (latest and at a `-txid`) and continues.
//!
//! Every command here runs under a time limit: one that overruns is killed and fails the test
//! with its output and the emulator's log. (A v0.3.13 restore used to hang here: it opens the
//! next WAL segment's download before reading the previous body, which deadlocks a server
//! that serves one connection at a time once a segment outgrows the socket buffers, so
//! `scripts/test-servers/start.sh` runs the emulator with a thread per connection, as real
//! GCS serves them; `-parallelism 1` does not avoid it.)
//!
//! Compiled only with the `gcs` cargo feature (the binary must contain the backend). Needs
//! `scripts/test.sh` (`TEST_GCS_*`, `TEST_SERVERS_DIR`, `LITESTREAM_V0313_BIN`): a missing
//! variable is a failure, never a skip.
#![cfg(feature = "gcs")]
#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::common::ltx::parse_ltx_json;
use crate::common::scenarios;
use crate::common::{
    all_rows, assert_exit, assert_files_equal, assert_integrity_ok, describe, insert,
    litestream_v0313, litestream_v0517, our_bin, output_text, signal_and_wait,
    spawn_replicate_with, test_env, HEALTHCHECK,
};

/// Time limit of one `restore` (they take seconds; a hang must not stall the suite).
const RESTORE_LIMIT: Duration = Duration::from_secs(90);

fn env(name: &str) -> String {
    test_env(name, "the gcs CLI tests need the GCS emulator")
}

/// The environment every command gets: the emulator, and no credentials file.
fn gcs_env() -> Vec<(&'static str, Option<String>)> {
    vec![
        ("STORAGE_EMULATOR_HOST", Some(env("TEST_GCS_EMULATOR_HOST"))),
        ("GOOGLE_APPLICATION_CREDENTIALS", None),
        ("LITESTREAM_CONFIG", None),
    ]
}

/// The last lines of the emulator's log, for failure messages.
fn emulator_log_tail() -> String {
    let path = Path::new(&env("TEST_SERVERS_DIR")).join("logs/gcs.log");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(40);
            format!(
                "--- {} (last 40 lines) ---\n{}",
                path.display(),
                lines[from..].join("\n")
            )
        }
        Err(e) => format!("(no emulator log at {}: {e})", path.display()),
    }
}

/// Run `cmd` (stdin closed, output captured) with the gcs environment; kill it and fail with
/// its output and the emulator's log if it runs longer than `limit`.
fn run_limited(cmd: &mut Command, limit: Duration, what: &str) -> Output {
    for (name, value) in gcs_env() {
        match value {
            Some(v) => cmd.env(name, v),
            None => cmd.env_remove(name),
        };
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: failed to spawn {cmd:?}: {e}"));
    // Drain both pipes on threads so a chatty child never blocks on a full pipe.
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = stdout.read_to_end(&mut b);
        b
    });
    let err_t = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = stderr.read_to_end(&mut b);
        b
    });
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = Output {
        status: match status {
            Some(st) => st,
            None => child.wait().unwrap(),
        },
        stdout: out_t.join().unwrap(),
        stderr: err_t.join().unwrap(),
    };
    if status.is_none() {
        panic!(
            "{what}: still running after {limit:?}, killed\n{}\n{}",
            describe(&output),
            emulator_log_tail()
        );
    }
    output
}

/// `bin restore EXTRA -config cfg -o out db`, time-limited.
fn restore_config(bin: &Path, cfg: &Path, db: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut cmd = Command::new(bin);
    cmd.arg("restore").args(extra);
    cmd.arg("-config").arg(cfg).arg("-o").arg(out).arg(db);
    run_limited(
        &mut cmd,
        RESTORE_LIMIT,
        &format!("restore by {}", bin.display()),
    )
}

/// `bin restore EXTRA -o out url`, time-limited.
fn restore_url(bin: &Path, url: &str, out: &Path, extra: &[&str]) -> Output {
    let mut cmd = Command::new(bin);
    cmd.arg("restore").args(extra);
    cmd.arg("-o").arg(out).arg(url);
    run_limited(
        &mut cmd,
        RESTORE_LIMIT,
        &format!("restore {url} by {}", bin.display()),
    )
}

/// The gcs side of a case: a fresh prefix in the shared bucket.
struct Gcs {
    prefix: String,
}

/// A temp dir, a source db and a fresh prefix in the shared bucket.
type Case = scenarios::Case<Gcs>;

impl Case {
    fn new(tag: &str) -> Case {
        let n = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        Case::with_replica(Gcs {
            prefix: format!("gcs-cli/{tag}-{:x}-{n:x}/app.sqlite", std::process::id()),
        })
    }

    /// The seed's URL form: `gcs://BUCKET/PATH`.
    fn url(&self) -> String {
        format!("gcs://{}/{}", env("TEST_GCS_BUCKET"), self.replica.prefix)
    }

    /// A v0.3.13-style config file: `type: gcs`, `bucket`, `path`.
    fn config(&self) -> PathBuf {
        let text = format!(
            "dbs:\n  - path: {db}\n    monitor-interval: 100ms\n    replicas:\n      - type: gcs\n        \
             bucket: {bucket}\n        path: {prefix}\n        sync-interval: 200ms\n",
            db = self.db.display(),
            bucket = env("TEST_GCS_BUCKET"),
            prefix = self.replica.prefix,
        );
        self.write_file("litestream.yml", &text)
    }

    /// `bin replicate -config cfg` with the emulator in its environment.
    fn spawn_replicate(&self, bin: &Path, cfg: &Path, log: &Path) -> std::process::Child {
        let host = env("TEST_GCS_EMULATOR_HOST");
        spawn_replicate_with(bin, cfg, log, &[("STORAGE_EMULATOR_HOST", host.as_str())])
    }

    /// The backend CLI tests' workload (as `common::replicate_workload`): ~10 MiB before
    /// replication (a first snapshot over one 8 MiB part), three rounds of > 1000 pages (a new
    /// WAL index each) and small commits, then SIGINT.
    fn gcs_workload(&self, bin: &Path, tag: &str) {
        self.create_db();
        let cfg = self.config();
        let log = self.path(&format!("replicate-{tag}.log"));
        insert(&self.db, 80, 128 << 10);
        let child = self.spawn_replicate(bin, &cfg, &log);
        std::thread::sleep(Duration::from_secs(3));
        for _ in 0..3 {
            insert(&self.db, 40, 128 << 10);
            std::thread::sleep(Duration::from_millis(2500));
        }
        for _ in 0..20 {
            insert(&self.db, 5, 100);
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_secs(3));
        signal_and_wait(child, "INT", &log);
    }

    /// Our restore and the real v0.3.13's (config file) both have every source row and pass
    /// `integrity_check`, and are byte-identical.
    fn assert_restores_identical(&self, replica: &str) {
        let cfg = self.config();
        scenarios::assert_restore_identical_to_v0313(
            self,
            &|bin, out| restore_config(bin, &cfg, &self.db, out, &[]),
            replica,
        );
    }
}

/// v0.3.13 replicates to the emulator; our restore is byte-identical to v0.3.13's own.
#[test]
fn gcs_litestream_v0313_replicates_we_restore_identically() {
    let case = Case::new("interop-theirs");
    case.gcs_workload(&litestream_v0313(), "v0313");
    case.assert_restores_identical("v0.3.13's replica");
}

/// We replicate (the first snapshot as a resumable upload); v0.3.13 restores it, identical
/// to ours.
#[test]
fn gcs_we_replicate_litestream_v0313_restores() {
    let case = Case::new("interop-ours");
    case.gcs_workload(&our_bin(), "ours");
    case.assert_restores_identical("our replica");
}

/// The compose healthcheck in URL form on a replica v0.3.13 wrote: restores it (identical to
/// v0.3.13's URL-mode restore), leaves an existing db alone, exits 0 for an empty prefix;
/// v0.5's `gs://` spelling restores the same bytes.
#[test]
fn gcs_healthcheck_restore_url_mode() {
    let case = Case::new("hc-url");
    case.create_db();
    insert(&case.db, 200, 1000);
    let cfg = case.config();
    let log = case.path("replicate.log");
    let child = case.spawn_replicate(&litestream_v0313(), &cfg, &log);
    std::thread::sleep(Duration::from_secs(3));
    insert(&case.db, 50, 1000);
    std::thread::sleep(Duration::from_secs(2));
    signal_and_wait(child, "INT", &log);

    let empty = Case::new("hc-url-empty");
    let ours = scenarios::assert_healthcheck_restore(
        &case,
        &|out| restore_url(&our_bin(), &case.url(), out, HEALTHCHECK),
        &|out| restore_url(&our_bin(), &empty.url(), out, HEALTHCHECK),
        None,
        "URL",
    );
    let theirs = case.path("theirs.db");
    let out = restore_url(&litestream_v0313(), &case.url(), &theirs, &[]);
    assert_exit(&out, 0, "v0.3.13 restore in URL form");
    assert_files_equal(&theirs, &ours, "our URL-mode restore vs v0.3.13's");

    let gs = case.path("gs.db");
    let url = format!("gs://{}/{}", env("TEST_GCS_BUCKET"), case.replica.prefix);
    let out = restore_url(&our_bin(), &url, &gs, &[]);
    assert_exit(&out, 0, "restore from a gs:// URL");
    assert_files_equal(&theirs, &gs, "gs:// restore vs v0.3.13's");
}

/// A bucket that does not exist: exit 1, the bucket named, nothing written.
#[test]
fn gcs_missing_bucket_is_a_clear_error() {
    let case = Case::new("no-bucket");
    let bucket = format!("no-such-bucket-{:x}", std::process::id());
    let out_db = case.path("out.db");
    let out = restore_url(
        &our_bin(),
        &format!("gcs://{bucket}/app.sqlite"),
        &out_db,
        &[],
    );
    assert_exit(&out, 1, "restore from a bucket that does not exist");
    let text = output_text(&out);
    assert!(
        text.contains(&bucket) && text.contains("does not exist"),
        "bucket not named:\n{text}"
    );
    assert!(!out_db.exists(), "{}", describe(&out));
}

/// The real Litestream v0.5.17 replicates to a `gs://` URL (its spelling; LTX files with the
/// `litestream-timestamp` metadata); our restore from the same URL has every row.
#[test]
fn gcs_litestream_v0517_replicates_to_gs_we_restore() {
    let case = Case::new("v0517");
    case.create_db();
    insert(&case.db, 300, 1000);
    let url = format!("gs://{}/{}", env("TEST_GCS_BUCKET"), case.replica.prefix);
    let cfg = case.write_file(
        "v0517.yml",
        &format!(
            "dbs:\n  - path: {}\n    replica:\n      url: {url}\n      sync-interval: 200ms\n",
            case.db.display()
        ),
    );
    let log = case.path("replicate-v0517.log");
    let child = case.spawn_replicate(&litestream_v0517(), &cfg, &log);
    std::thread::sleep(Duration::from_secs(3));
    insert(&case.db, 100, 1000);
    std::thread::sleep(Duration::from_secs(3));
    signal_and_wait(child, "INT", &log);

    let out_db = case.path("ours.db");
    let out = restore_url(&our_bin(), &url, &out_db, &[]);
    assert_exit(&out, 0, "our restore of v0.5.17's gs:// replica");
    assert_integrity_ok(&out_db, "our restore of v0.5.17's replica");
    assert_eq!(
        all_rows(&out_db),
        all_rows(&case.db),
        "rows restored vs source"
    );
}

/// The L0 TXIDs of the replica at `url` as v0.5.17 lists them (one per file, 1.. without a
/// gap), and whether an L9 snapshot is listed; returns the newest TXID.
fn v0517_l0_contiguous(url: &str, what: &str) -> (u64, bool) {
    let mut cmd = Command::new(litestream_v0517());
    cmd.args(["ltx", "-level", "all", "-json", url]);
    let listed = parse_ltx_json(&run_limited(&mut cmd, RESTORE_LIMIT, "v0.5.17 ltx"));
    let l0: Vec<u64> = listed
        .iter()
        .filter(|l| l.level == 0)
        .map(|l| {
            assert_eq!(l.min, l.max, "{what}: one TXID per L0 file: {listed:?}");
            u64::from_str_radix(&l.max, 16).unwrap()
        })
        .collect();
    let want: Vec<u64> = (1..=l0.len() as u64).collect();
    assert_eq!(
        l0, want,
        "{what}: L0 TXIDs 1, 2, ... without a gap: {listed:?}"
    );
    (l0.len() as u64, listed.iter().any(|l| l.level == 9))
}

/// Wait (up to 60 s) until the newest L0 TXID at `url` is above `above` and has not moved
/// for over a second (the writer caught up with the source); returns it.
fn wait_l0_settled(url: &str, above: u64, what: &str) -> u64 {
    let start = Instant::now();
    let mut last = (0, Instant::now());
    loop {
        let (now, _) = v0517_l0_contiguous(url, what);
        if now != last.0 {
            last = (now, Instant::now());
        } else if now > above && last.1.elapsed() > Duration::from_millis(1200) {
            return now;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{what}: newest L0 TXID {now}, still not settled above {above}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// `bin restore EXTRA url` has exactly `want` (rows) and passes `integrity_check`.
fn assert_restores_rows(
    bin: &Path,
    url: &str,
    extra: &[&str],
    want: &[(i64, Vec<u8>)],
    out: &Path,
) {
    let o = restore_url(bin, url, out, extra);
    let what = format!("restore {extra:?} by {}", bin.display());
    assert_exit(&o, 0, &what);
    assert_integrity_ok(out, &what);
    assert!(all_rows(out) == want, "{what}: not the source's rows");
}

/// LTX on GCS (v0.5's `gs://` spelling, the emulator reached through `STORAGE_EMULATOR_HOST`
/// by both binaries): our `replicate` in the LTX format; our restore and v0.5.17's give the
/// source (latest, and at the TXID of an earlier batch), v0.5.17 lists our files as its own;
/// then v0.5.17 continues our replica (TXIDs go on) and our restore reads the result.
#[test]
fn gcs_ltx_replica_round_trip_and_v0517_continues_it() {
    let case = Case::new("ltx");
    case.create_db();
    insert(&case.db, 100, 1000);
    let url = format!("gs://{}/{}", env("TEST_GCS_BUCKET"), case.replica.prefix);
    let replica = format!(
        "dbs:\n  - path: {}\n    monitor-interval: 100ms\n    replica:\n      url: {url}\n      sync-interval: 200ms\n",
        case.db.display()
    );
    let ours_cfg = case.write_file("ours.yml", &format!("format: ltx\n{replica}"));
    let log = case.path("replicate-ours.log");
    let child = case.spawn_replicate(&our_bin(), &ours_cfg, &log);
    let start = wait_l0_settled(&url, 0, "ours, start");
    insert(&case.db, 50, 1000);
    let first = wait_l0_settled(&url, start, "ours, first batch");
    let rows_first = all_rows(&case.db);
    insert(&case.db, 50, 1000);
    wait_l0_settled(&url, first, "ours, second batch");
    signal_and_wait(child, "INT", &log);
    let (ours, snapshot) = v0517_l0_contiguous(&url, "ours");
    assert!(snapshot, "v0.5.17 lists our L9 snapshot");
    assert!(
        ours > first,
        "a file after the first batch: {first} -> {ours}"
    );
    let rows = all_rows(&case.db);
    for (who, bin) in [("ours", our_bin()), ("v0517", litestream_v0517())] {
        let out = case.path(&format!("{who}-latest.db"));
        assert_restores_rows(&bin, &url, &[], &rows, &out);
        let out = case.path(&format!("{who}-first.db"));
        let t = format!("{first:016x}");
        assert_restores_rows(&bin, &url, &["-txid", &t], &rows_first, &out);
    }

    // v0.5.17 takes over the replica and the meta directory.
    let theirs_cfg = case.write_file("v0517.yml", &replica);
    let log = case.path("replicate-v0517.log");
    let child = case.spawn_replicate(&litestream_v0517(), &theirs_cfg, &log);
    std::thread::sleep(Duration::from_secs(2));
    insert(&case.db, 50, 1000);
    // Settled above ours and contiguous: v0.5.17 continued our TXIDs.
    let theirs = wait_l0_settled(&url, ours, "v0.5.17 after ours");
    signal_and_wait(child, "INT", &log);
    let after = v0517_l0_contiguous(&url, "v0.5.17 after ours").0;
    assert!(after >= theirs, "TXIDs never go back: {theirs} -> {after}");
    let out = case.path("ours-after-v0517.db");
    assert_restores_rows(&our_bin(), &url, &[], &all_rows(&case.db), &out);
}
