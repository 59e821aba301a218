//! `abs` replicas through the `litestream` binary, against Azurite and the real Litestream
//! v0.3.13: healthcheck restore (config file and URL with `?endpoint=`), interop both ways
//! with a > 8 MiB snapshot and several WAL indexes, bad credentials / missing container, and
//! an Azurite restart during `replicate`.
//!
//! Compiled only with the `abs` cargo feature (the binary must contain the backend). Needs
//! `scripts/test.sh` (`TEST_ABS_*`, `TEST_SERVERS_DIR`, `LITESTREAM_V0313_BIN`): a missing
//! variable is a failure, never a skip.
#![cfg(feature = "abs")]
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{
    assert_exit, assert_files_equal, assert_integrity_ok, count_rows, describe, insert,
    litestream_v0313, our_bin, our_bin_overridden, replicate_workload, restore_config, run,
    sigint_and_wait, spawn_replicate, HEALTHCHECK,
};

fn env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{name} is not set: the abs CLI tests need Azurite; run scripts/test.sh \
             (or eval \"$(bash scripts/test-servers/start.sh)\")"
        ),
    }
}

fn unique(tag: &str) -> String {
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("test-abs-cli/{tag}-{:x}-{:x}", std::process::id(), n)
}

/// Everything one test needs: a temp dir, a source db, a replica prefix and config files.
struct Case {
    dir: tempfile::TempDir,
    db: PathBuf,
    prefix: String,
    endpoint: String,
    account_key: String,
    container: String,
}

impl Case {
    fn new(tag: &str) -> Case {
        Self::with(tag, &env("TEST_ABS_ENDPOINT"), &env("TEST_ABS_CONTAINER"))
    }

    fn with(tag: &str, endpoint: &str, container: &str) -> Case {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("src.db");
        Case {
            dir,
            db,
            prefix: unique(tag),
            endpoint: endpoint.to_string(),
            account_key: env("TEST_ABS_ACCOUNT_KEY"),
            container: container.to_string(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A v0.3.13-style config file for this case (optionally with another key).
    fn config(&self, name: &str, key: Option<&str>) -> PathBuf {
        let p = self.path(name);
        let text = format!(
            "dbs:\n  - path: {db}\n    monitor-interval: 100ms\n    replicas:\n      - type: abs\n        account-name: {acct}\n        account-key: {key}\n        bucket: {container}\n        path: {prefix}\n        endpoint: {endpoint}\n        sync-interval: 200ms\n",
            db = self.db.display(),
            acct = env("TEST_ABS_ACCOUNT_NAME"),
            key = key.unwrap_or(&self.account_key),
            container = self.container,
            prefix = self.prefix,
            endpoint = self.endpoint,
        );
        std::fs::write(&p, text).unwrap();
        p
    }

    fn url(&self) -> String {
        format!(
            "abs://{}@{}/{}?endpoint={}",
            env("TEST_ABS_ACCOUNT_NAME"),
            self.container,
            self.prefix,
            self.endpoint
        )
    }

    fn create_db(&self) {
        let conn = rusqlite::Connection::open(&self.db).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)", [])
            .unwrap();
    }

    fn rows(&self) -> i64 {
        count_rows(&self.db)
    }
}

/// The write workload: a ~10 MiB database before replication (first snapshot > 8 MiB), then
/// three rounds of > 1000 pages (each ends in a checkpoint, so a new WAL index) and small
/// commits.
fn workload_with(case: &Case, bin: &Path, cfg: &Path, tag: &str) {
    case.create_db();
    replicate_workload(
        &case.db,
        bin,
        cfg,
        &case.path(&format!("replicate-{tag}.log")),
    );
}

fn assert_no_secret(out: &Output, key: &str) {
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains(key), "account key leaked:\n{all}");
}

#[test]
fn abs_healthcheck_restore_config_mode() {
    let case = Case::new("hc-config");
    let cfg = case.config("litestream.yml", None);
    // A replica written by the real Litestream, so this test needs only our restore.
    case.create_db();
    insert(&case.db, 200, 1000);
    let log = case.path("replicate.log");
    let child = spawn_replicate(&litestream_v0313(), &cfg, &log);
    std::thread::sleep(Duration::from_secs(3));
    insert(&case.db, 50, 1000);
    std::thread::sleep(Duration::from_secs(2));
    sigint_and_wait(child, &log);

    let out_db = case.path("restored.db");
    let out = restore_config(&our_bin(), &cfg, &case.db, &out_db, HEALTHCHECK);
    assert_exit(&out, 0, "healthcheck restore (config)");
    assert_integrity_ok(&out_db, "healthcheck restore (config)");
    assert_eq!(count_rows(&out_db), case.rows());

    // Second run: the output exists, nothing is touched.
    let before = std::fs::read(&out_db).unwrap();
    let out = restore_config(&our_bin(), &cfg, &case.db, &out_db, HEALTHCHECK);
    assert_exit(&out, 0, "healthcheck restore with existing db");
    assert_eq!(std::fs::read(&out_db).unwrap(), before);

    // An empty prefix: no replica, exit 0, no output.
    let empty = Case::new("hc-config-empty");
    let cfg2 = Case {
        db: case.db.clone(),
        ..empty
    };
    let cfg2_path = cfg2.config("empty.yml", None);
    let out_db2 = case.path("restored-empty.db");
    let out = restore_config(&our_bin(), &cfg2_path, &case.db, &out_db2, HEALTHCHECK);
    assert_exit(&out, 0, "healthcheck restore without replica");
    assert!(!out_db2.exists(), "{}", describe(&out));
}

#[test]
fn abs_healthcheck_restore_url_mode_with_endpoint() {
    if our_bin_overridden() {
        eprintln!("skipped: Litestream v0.3.13 has no ?endpoint= for abs URLs");
        return;
    }
    let case = Case::new("hc-url");
    let cfg = case.config("litestream.yml", None);
    case.create_db();
    insert(&case.db, 100, 1000);
    let log = case.path("replicate.log");
    let child = spawn_replicate(&litestream_v0313(), &cfg, &log);
    std::thread::sleep(Duration::from_secs(3));
    sigint_and_wait(child, &log);

    let out_db = case.path("restored.db");
    let mut args: Vec<String> = vec!["restore".into()];
    args.extend(HEALTHCHECK.iter().map(|s| s.to_string()));
    args.extend(["-o".into(), out_db.display().to_string(), case.url()]);
    let mut cmd = Command::new(our_bin());
    cmd.args(&args)
        .env_remove("LITESTREAM_CONFIG")
        .env("LITESTREAM_AZURE_ACCOUNT_KEY", &case.account_key);
    let out = run(&mut cmd);
    assert_exit(&out, 0, "healthcheck restore (URL)");
    assert_integrity_ok(&out_db, "healthcheck restore (URL)");
    assert_eq!(count_rows(&out_db), case.rows());
    assert_no_secret(&out, &case.account_key);

    // Same URL again: db exists -> exit 0, untouched.
    let out = run(Command::new(our_bin())
        .args(&args)
        .env_remove("LITESTREAM_CONFIG")
        .env("LITESTREAM_AZURE_ACCOUNT_KEY", &case.account_key));
    assert_exit(&out, 0, "healthcheck restore (URL) with existing db");

    // A prefix with no replica: exit 0, nothing written.
    let empty = Case::new("hc-url-empty");
    let out_db2 = case.path("restored-empty.db");
    let out = run(Command::new(our_bin())
        .arg("restore")
        .args(HEALTHCHECK)
        .arg("-o")
        .arg(&out_db2)
        .arg(empty.url())
        .env_remove("LITESTREAM_CONFIG")
        .env("LITESTREAM_AZURE_ACCOUNT_KEY", &case.account_key));
    assert_exit(&out, 0, "healthcheck restore (URL) without replica");
    assert!(!out_db2.exists());
}

#[test]
fn abs_litestream_v0313_replicates_we_restore_identically() {
    let case = Case::new("interop-theirs");
    let cfg = case.config("litestream.yml", None);
    workload_with(&case, &litestream_v0313(), &cfg, "v0313");
    let reference = case.path("reference.db");
    let out = restore_config(&litestream_v0313(), &cfg, &case.db, &reference, &[]);
    assert_exit(&out, 0, "v0.3.13 restore");
    let ours = case.path("ours.db");
    let out = restore_config(&our_bin(), &cfg, &case.db, &ours, &[]);
    assert_exit(&out, 0, "our restore");
    assert_files_equal(&reference, &ours, "our restore vs v0.3.13's");
    assert_integrity_ok(&ours, "our restore");
    assert_eq!(count_rows(&ours), case.rows());
}

#[test]
fn abs_we_replicate_litestream_v0313_restores() {
    let case = Case::new("interop-ours");
    let cfg = case.config("litestream.yml", None);
    workload_with(&case, &our_bin(), &cfg, "ours");
    let theirs = case.path("theirs.db");
    let out = restore_config(&litestream_v0313(), &cfg, &case.db, &theirs, &[]);
    assert_exit(&out, 0, "v0.3.13 restore of our replica");
    assert_integrity_ok(&theirs, "v0.3.13 restore of our replica");
    assert_eq!(count_rows(&theirs), case.rows());
    let ours = case.path("ours.db");
    let out = restore_config(&our_bin(), &cfg, &case.db, &ours, &[]);
    assert_exit(&out, 0, "our restore of our replica");
    assert_files_equal(&theirs, &ours, "our restore vs v0.3.13's");
}

#[test]
fn abs_wrong_account_key_is_a_clear_error_without_the_key() {
    if our_bin_overridden() {
        eprintln!("skipped: v0.3.13's message names neither account nor container (deliberate difference)");
        return;
    }
    let case = Case::new("badkey");
    let wrong = "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktd3Jvbmcta2V5LXdyb25nLWtleQ==";
    let cfg = case.config("litestream.yml", Some(wrong));
    case.create_db();
    let out = restore_config(&our_bin(), &cfg, &case.db, &case.path("out.db"), &[]);
    assert_ne!(out.status.code(), Some(0), "{}", describe(&out));
    let stderr = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stderr.contains("devstoreaccount1"), "{}", describe(&out));
    assert!(stderr.contains(&case.container), "{}", describe(&out));
    assert_no_secret(&out, wrong);
    assert_no_secret(&out, &case.account_key);

    // replicate logs the failure the same way and never prints the key.
    let log = case.path("replicate.log");
    let child = spawn_replicate(&our_bin(), &cfg, &log);
    std::thread::sleep(Duration::from_secs(3));
    insert(&case.db, 10, 100);
    std::thread::sleep(Duration::from_secs(2));
    let _ = Command::new("kill")
        .arg("-INT")
        .arg(child.id().to_string())
        .status();
    let mut child = child;
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !text.contains(wrong),
        "key leaked into replicate log:\n{text}"
    );
    assert!(
        text.contains("devstoreaccount1") && text.contains(&case.container),
        "{text}"
    );
}

#[test]
fn abs_missing_container_is_a_clear_error() {
    if our_bin_overridden() {
        eprintln!("skipped: v0.3.13's message names neither account nor container (deliberate difference)");
        return;
    }
    let case = Case::with(
        "nocontainer",
        &env("TEST_ABS_ENDPOINT"),
        "no-such-container-cli",
    );
    let cfg = case.config("litestream.yml", None);
    case.create_db();
    let out = restore_config(&our_bin(), &cfg, &case.db, &case.path("out.db"), &[]);
    assert_ne!(out.status.code(), Some(0), "{}", describe(&out));
    let stderr = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stderr.contains("devstoreaccount1"), "{}", describe(&out));
    assert!(
        stderr.contains("no-such-container-cli"),
        "{}",
        describe(&out)
    );
    assert_no_secret(&out, &case.account_key);
}

/// A private Azurite on its own port and data dir (never the shared one), stoppable.
struct OwnAzurite {
    child: Option<Child>,
    port: u16,
}

impl OwnAzurite {
    fn start(port: u16, data: &Path) -> OwnAzurite {
        let bin =
            PathBuf::from(env("TEST_SERVERS_DIR")).join("node/node_modules/.bin/azurite-blob");
        assert!(
            bin.exists(),
            "{} missing: run scripts/test.sh",
            bin.display()
        );
        std::fs::create_dir_all(data).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data.with_extension("log"))
            .unwrap();
        let child = Command::new(bin)
            .args(["--blobHost", "127.0.0.1", "--blobPort"])
            .arg(port.to_string())
            .arg("--location")
            .arg(data)
            .args(["--skipApiVersionCheck", "--loose", "--disableTelemetry"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "own azurite did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        OwnAzurite {
            child: Some(child),
            port,
        }
    }

    fn endpoint(&self) -> String {
        format!(
            "http://127.0.0.1:{}/{}",
            self.port,
            env("TEST_ABS_ACCOUNT_NAME")
        )
    }

    fn create_container(&self, container: &str) {
        let script = PathBuf::from(env("TEST_SERVERS_DIR")).join("bin/azcontainer.py");
        let out = run(Command::new("python3")
            .arg(script)
            .arg(self.endpoint())
            .arg(container)
            .env("AZURE_ACCOUNT", env("TEST_ABS_ACCOUNT_NAME"))
            .env("AZURE_KEY", env("TEST_ABS_ACCOUNT_KEY")));
        assert_exit(&out, 0, "create container on own azurite");
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(15);
            while child.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

impl Drop for OwnAzurite {
    fn drop(&mut self) {
        self.stop();
    }
}

#[test]
fn abs_replication_survives_azurite_restart() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let data_root = tempfile::tempdir().unwrap();
    let data = data_root.path().join("azurite");
    let mut az = OwnAzurite::start(port, &data);
    let container = "fault";
    az.create_container(container);

    let case = Case::with("fault", &az.endpoint(), container);
    let cfg = case.config("litestream.yml", None);
    case.create_db();
    insert(&case.db, 100, 1000);
    let log = case.path("replicate.log");
    let child = spawn_replicate(&our_bin(), &cfg, &log);
    std::thread::sleep(Duration::from_secs(3));
    insert(&case.db, 100, 1000);
    std::thread::sleep(Duration::from_secs(2));

    az.stop();
    for _ in 0..5 {
        insert(&case.db, 20, 1000);
        std::thread::sleep(Duration::from_millis(500));
    }
    let mut az = OwnAzurite::start(port, &data);
    for _ in 0..5 {
        insert(&case.db, 20, 1000);
        std::thread::sleep(Duration::from_millis(500));
    }
    std::thread::sleep(Duration::from_secs(8));
    sigint_and_wait(child, &log);

    for (name, bin) in [("ours", our_bin()), ("v0.3.13", litestream_v0313())] {
        let out_db = case.path(&format!("restored-{name}.db"));
        let out = restore_config(&bin, &cfg, &case.db, &out_db, &[]);
        assert_exit(&out, 0, &format!("{name} restore after the outage"));
        assert_integrity_ok(&out_db, name);
        assert_eq!(
            count_rows(&out_db),
            case.rows(),
            "{name}: rows committed during the outage were lost; log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    az.stop();
}
