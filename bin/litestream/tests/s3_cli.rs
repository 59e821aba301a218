//! `s3` replicas through the `litestream` binary, against the local S3 test server (moto) and
//! the real Litestream v0.3.13: the docker-compose healthcheck restore in URL form with
//! credentials only in the environment, interop both ways through the same bucket (with a
//! first snapshot over one multipart part), and clear errors without secrets for an endpoint
//! nobody listens on and a bucket that does not exist.
//!
//! Compiled only with the `s3` cargo feature (the binary must contain the backend). Needs
//! `scripts/test.sh` (`TEST_S3_*`, `LITESTREAM_V0313_BIN`): a missing variable is a failure,
//! never a skip.
#![cfg(feature = "s3")]
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{
    assert_exit, assert_files_equal, assert_integrity_ok, describe, litestream_v0313, our_bin, run,
};

fn env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{name} is not set: the s3 CLI tests need the local S3 server; run scripts/test.sh \
             (or eval \"$(bash scripts/test-servers/start.sh)\")"
        ),
    }
}

/// Port of the shared S3 test server.
fn s3_port() -> String {
    env("TEST_S3_ENDPOINT")
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_string()
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

const HEALTHCHECK: &[&str] = &["-if-db-not-exists", "-if-replica-exists"];

/// A temp dir, a source db and a fresh key prefix in the shared bucket.
struct Case {
    dir: tempfile::TempDir,
    db: PathBuf,
    prefix: String,
}

impl Case {
    fn new(tag: &str) -> Case {
        let dir = tempfile::tempdir().unwrap();
        let n = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        Case {
            db: dir.path().join("src.db"),
            prefix: format!("s3-cli/{tag}-{:x}-{n:x}/app.sqlite", std::process::id()),
            dir,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The healthcheck's URL form: `s3://BUCKET.localhost:PORT/PREFIX` (path style, plain HTTP).
    fn url(&self) -> String {
        format!(
            "s3://{}.localhost:{}/{}",
            env("TEST_S3_BUCKET"),
            s3_port(),
            self.prefix
        )
    }

    /// A v0.3.13-style config with the replica in the shared bucket.
    fn config(&self) -> PathBuf {
        let p = self.path("litestream.yml");
        let text = format!(
            "dbs:\n  - path: {db}\n    replicas:\n      - type: s3\n        bucket: {bucket}\n        \
             path: {prefix}\n        endpoint: {endpoint}\n        region: {region}\n        \
             force-path-style: true\n        access-key-id: {key}\n        \
             secret-access-key: {secret}\n        sync-interval: 500ms\n",
            db = self.db.display(),
            bucket = env("TEST_S3_BUCKET"),
            prefix = self.prefix,
            endpoint = env("TEST_S3_ENDPOINT"),
            region = env("TEST_S3_REGION"),
            key = env("TEST_S3_ACCESS_KEY_ID"),
            secret = env("TEST_S3_SECRET_ACCESS_KEY"),
        );
        std::fs::write(&p, text).unwrap();
        p
    }

    fn create_db(&self) {
        let conn = rusqlite::Connection::open(&self.db).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)", [])
            .unwrap();
    }
}

fn count_rows(db: &Path) -> i64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap()
}

/// Insert `rows` rows of `size` pseudo-random (incompressible) bytes.
fn insert(db: &Path, rows: usize, size: usize) {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    let mut seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    for _ in 0..rows {
        let blob: Vec<u8> = (0..size)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        conn.execute("INSERT INTO t(v) VALUES (?1)", [blob])
            .unwrap();
    }
}

fn spawn_replicate(bin: &Path, cfg: &Path, log: &Path) -> Child {
    let log = std::fs::File::create(log).unwrap();
    Command::new(bin)
        .args(["replicate", "-config"])
        .arg(cfg)
        .env_remove("LITESTREAM_CONFIG")
        .env_remove("AWS_CA_BUNDLE")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap()
}

fn sigint_and_wait(mut child: Child, log: &Path) {
    Command::new("kill")
        .arg("-INT")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            assert!(
                st.success(),
                "replicate exited with {st}; log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
            return;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("replicate did not stop after SIGINT");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A ~7.5 MiB database before replication (first snapshot over one 5 MiB part), then a
/// round of > 1000 pages (a checkpoint, so a new WAL index) and small commits.
fn workload(case: &Case, bin: &Path, tag: &str) {
    case.create_db();
    insert(&case.db, 60, 128 << 10);
    let cfg = case.config();
    let log = case.path(&format!("replicate-{tag}.log"));
    let child = spawn_replicate(bin, &cfg, &log);
    std::thread::sleep(Duration::from_secs(3));
    insert(&case.db, 40, 128 << 10);
    std::thread::sleep(Duration::from_millis(2500));
    for _ in 0..10 {
        insert(&case.db, 5, 100);
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(3));
    sigint_and_wait(child, &log);
}

/// `restore` in URL mode with credentials only in the environment (as the healthcheck runs).
fn restore_url(bin: &Path, url: &str, out: &Path, extra: &[&str], secret: &str) -> Output {
    let mut cmd = Command::new(bin);
    cmd.arg("restore")
        .args(extra)
        .arg("-o")
        .arg(out)
        .arg(url)
        .env_remove("LITESTREAM_CONFIG")
        .env_remove("LITESTREAM_ACCESS_KEY_ID")
        .env_remove("LITESTREAM_SECRET_ACCESS_KEY")
        .env_remove("AWS_CA_BUNDLE")
        .env_remove("AWS_PROFILE")
        .env("AWS_ACCESS_KEY_ID", env("TEST_S3_ACCESS_KEY_ID"))
        .env("AWS_SECRET_ACCESS_KEY", secret);
    run(&mut cmd)
}

fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A replica written by the real v0.3.13: the healthcheck command restores it (byte-identical
/// to v0.3.13's own restore), exits 0 creating nothing when there is no replica, and exits 0
/// leaving an existing database alone.
#[test]
fn s3_healthcheck_restore_url_mode_with_env_credentials() {
    let case = Case::new("healthcheck");
    workload(&case, &litestream_v0313(), "v0313");
    let secret = env("TEST_S3_SECRET_ACCESS_KEY");

    // No replica under this prefix: exit 0, nothing created.
    let none = case.path("none.db");
    let empty_url = format!("{}-nothing-here", case.url());
    let out = restore_url(&our_bin(), &empty_url, &none, HEALTHCHECK, &secret);
    assert_exit(&out, 0, "healthcheck restore without a replica");
    assert!(
        !none.exists(),
        "created {}: {}",
        none.display(),
        describe(&out)
    );

    // Replica exists: restored, identical to v0.3.13's restore of the same replica.
    let ours = case.path("ours.db");
    let out = restore_url(&our_bin(), &case.url(), &ours, HEALTHCHECK, &secret);
    assert_exit(&out, 0, "healthcheck restore of a v0.3.13 replica");
    assert_integrity_ok(&ours, "our restore");
    assert_eq!(count_rows(&ours), count_rows(&case.db));
    let theirs = case.path("theirs.db");
    let out = restore_url(&litestream_v0313(), &case.url(), &theirs, &[], &secret);
    assert_exit(&out, 0, "v0.3.13 restore");
    assert_files_equal(&theirs, &ours, "our restore vs v0.3.13's restore");

    // Database exists: exit 0, untouched.
    let before = std::fs::read(&ours).unwrap();
    let mtime = std::fs::metadata(&ours).unwrap().modified().unwrap();
    let out = restore_url(&our_bin(), &case.url(), &ours, HEALTHCHECK, &secret);
    assert_exit(&out, 0, "healthcheck restore with an existing db");
    assert_eq!(std::fs::read(&ours).unwrap(), before);
    assert_eq!(std::fs::metadata(&ours).unwrap().modified().unwrap(), mtime);
}

/// A replica we write (first snapshot over one multipart part, several WAL indexes) is
/// restored by the real v0.3.13 through the same bucket, with every row.
#[test]
fn s3_we_replicate_litestream_v0313_restores() {
    let case = Case::new("we-replicate");
    workload(&case, &our_bin(), "ours");
    let theirs = case.path("theirs.db");
    let secret = env("TEST_S3_SECRET_ACCESS_KEY");
    let out = restore_url(&litestream_v0313(), &case.url(), &theirs, &[], &secret);
    assert_exit(&out, 0, "v0.3.13 restore of our replica");
    assert_integrity_ok(&theirs, "v0.3.13 restore");
    assert_eq!(count_rows(&theirs), count_rows(&case.db));
    let ours = case.path("ours.db");
    let out = restore_url(&our_bin(), &case.url(), &ours, &[], &secret);
    assert_exit(&out, 0, "our restore of our replica");
    assert_files_equal(&theirs, &ours, "our restore vs v0.3.13's restore");
}

/// An endpoint nobody listens on and a bucket that does not exist: exit 1 with an error that
/// names bucket and endpoint, and the secret in no output.
#[test]
fn s3_bad_endpoint_and_missing_bucket_are_clear_errors_without_the_secret() {
    let case = Case::new("bad-input");
    let secret = "s3cr3t-cli-value-never-printed";

    let port = free_port();
    let url = format!("s3://lonely-bucket.localhost:{port}/app.sqlite");
    let out = restore_url(&our_bin(), &url, &case.path("a.db"), HEALTHCHECK, secret);
    assert_exit(&out, 1, "restore from an endpoint nobody listens on");
    let text = output_text(&out);
    assert!(text.contains("lonely-bucket"), "bucket not named:\n{text}");
    assert!(
        text.contains(&format!("localhost:{port}")),
        "endpoint not named:\n{text}"
    );
    assert!(!text.contains(secret), "secret leaked:\n{text}");

    let bucket = format!("no-such-bucket-{:x}", std::process::id());
    let url = format!("s3://{bucket}.localhost:{}/app.sqlite", s3_port());
    let out = restore_url(&our_bin(), &url, &case.path("b.db"), &[], secret);
    assert_exit(&out, 1, "restore from a bucket that does not exist");
    let text = output_text(&out);
    assert!(text.contains(&bucket), "bucket not named:\n{text}");
    assert!(text.contains(&s3_port()), "endpoint not named:\n{text}");
    assert!(!text.contains(secret), "secret leaked:\n{text}");
    assert!(!case.path("b.db").exists());
}
