//! `sftp` replicas through the `litestream` binary, against the local OpenSSH sshd and the real
//! Litestream v0.3.13: healthcheck restore (config file and URL), interop both ways with a
//! snapshot over 8 MiB and several WAL indexes, bad credentials / unknown host key, and sshd
//! killed and restarted during `replicate` (on a private sshd, never the shared one).
//!
//! Compiled only with the `sftp` cargo feature (the binary must contain the backend). Needs
//! `scripts/test.sh` (`TEST_SFTP_*`, `LITESTREAM_V0313_BIN`): a missing variable is a failure,
//! never a skip.
#![cfg(feature = "sftp")]
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{
    assert_exit, assert_files_equal, assert_integrity_ok, count_rows, describe, insert,
    litestream_v0313, our_bin, replicate_workload, restore_config, run, sigint_and_wait,
    spawn_replicate, HEALTHCHECK,
};

fn env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{name} is not set: the sftp CLI tests need the local sshd; run scripts/test.sh \
             (or eval \"$(bash scripts/test-servers/start.sh)\")"
        ),
    }
}

/// How the replica authenticates and checks the host key.
#[derive(Clone, Copy)]
enum Auth {
    /// ed25519 key + known-hosts-path.
    Key,
    /// password + pinned host-key.
    Password,
}

/// Everything one test needs: a temp dir, a source db, a remote replica dir and config files.
struct Case {
    dir: tempfile::TempDir,
    db: PathBuf,
    remote: String,
    port: String,
}

impl Case {
    fn new(tag: &str) -> Case {
        Self::on_port(tag, &env("TEST_SFTP_PORT"))
    }

    fn on_port(tag: &str, port: &str) -> Case {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("src.db");
        let n = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        Case {
            db,
            remote: format!(
                "{}/test-sftp-cli/{tag}-{:x}-{:x}",
                env("TEST_SFTP_ROOT"),
                std::process::id(),
                n
            ),
            port: port.to_string(),
            dir,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A v0.3.13-style config file (v0.3.13 ignores `known-hosts-path` / `host-key`).
    fn config(&self, name: &str, auth: Auth, password: Option<&str>) -> PathBuf {
        let p = self.path(name);
        let auth_lines = match auth {
            Auth::Key => format!(
                "        key-path: {}\n        known-hosts-path: {}\n",
                env("TEST_SFTP_KEY_PATH"),
                env("TEST_SFTP_KNOWN_HOSTS")
            ),
            Auth::Password => format!(
                "        password: {}\n        host-key: \"{}\"\n",
                password
                    .map(str::to_string)
                    .unwrap_or_else(|| env("TEST_SFTP_PASSWORD")),
                env("TEST_SFTP_HOST_KEY")
            ),
        };
        let text = format!(
            "dbs:\n  - path: {db}\n    monitor-interval: 100ms\n    replicas:\n      - type: sftp\n        host: 127.0.0.1:{port}\n        user: {user}\n{auth_lines}        path: {remote}\n        sync-interval: 200ms\n",
            db = self.db.display(),
            port = self.port,
            user = env("TEST_SFTP_USER"),
            remote = self.remote,
        );
        std::fs::write(&p, text).unwrap();
        p
    }

    fn url(&self) -> String {
        format!(
            "sftp://{}:{}@127.0.0.1:{}{}",
            env("TEST_SFTP_USER"),
            env("TEST_SFTP_PASSWORD"),
            self.port,
            self.remote
        )
    }

    /// A HOME whose `.ssh/known_hosts` knows the test server (the URL form cannot carry a
    /// known-hosts-path, so URL-mode restores use the default `~/.ssh/known_hosts`).
    fn home_with_known_hosts(&self) -> PathBuf {
        let home = self.path("home");
        std::fs::create_dir_all(home.join(".ssh")).unwrap();
        std::fs::copy(env("TEST_SFTP_KNOWN_HOSTS"), home.join(".ssh/known_hosts")).unwrap();
        home
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

impl Drop for Case {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.remote);
    }
}

/// A ~10 MiB database before replication (first snapshot > 8 MiB), then three rounds of
/// more than 1000 pages (each ends in a checkpoint, so a new WAL index) and small commits.
fn workload_with(case: &Case, bin: &Path, cfg: &Path, tag: &str) {
    case.create_db();
    replicate_workload(
        &case.db,
        bin,
        cfg,
        &case.path(&format!("replicate-{tag}.log")),
    );
}

fn assert_no_secret(text: &str, secret: &str) {
    assert!(!text.contains(secret), "secret leaked:\n{text}");
}

fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A replica written by the real v0.3.13 (key auth); our healthcheck restore from the config
/// file restores it, leaves an existing db alone, and exits 0 for an empty remote dir.
#[test]
fn sftp_healthcheck_restore_config_mode() {
    let case = Case::new("hc-config");
    let cfg = case.config("litestream.yml", Auth::Key, None);
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

    let before = std::fs::read(&out_db).unwrap();
    let out = restore_config(&our_bin(), &cfg, &case.db, &out_db, HEALTHCHECK);
    assert_exit(&out, 0, "healthcheck restore with existing db");
    assert_eq!(std::fs::read(&out_db).unwrap(), before);

    let mut empty = Case::new("hc-config-empty");
    empty.db = case.db.clone();
    let cfg2 = empty.config("empty.yml", Auth::Key, None);
    let out_db2 = case.path("restored-empty.db");
    let out = restore_config(&our_bin(), &cfg2, &case.db, &out_db2, HEALTHCHECK);
    assert_exit(&out, 0, "healthcheck restore without replica");
    assert!(!out_db2.exists(), "{}", describe(&out));
}

/// URL mode `sftp://USER:PASSWORD@HOST:PORT/abs/path`: restores with the host key from
/// ~/.ssh/known_hosts; without it the restore is refused with the key's fingerprint; the
/// password never appears in the output.
#[test]
fn sftp_healthcheck_restore_url_mode() {
    let case = Case::new("hc-url");
    let cfg = case.config("litestream.yml", Auth::Password, None);
    case.create_db();
    insert(&case.db, 100, 1000);
    let log = case.path("replicate.log");
    let child = spawn_replicate(&litestream_v0313(), &cfg, &log);
    std::thread::sleep(Duration::from_secs(3));
    sigint_and_wait(child, &log);
    let password = env("TEST_SFTP_PASSWORD");

    // No known_hosts entry: refused, with the fingerprint and without the password.
    let bare_home = case.path("bare-home");
    std::fs::create_dir_all(&bare_home).unwrap();
    let out_db = case.path("restored.db");
    let out = run(Command::new(our_bin())
        .arg("restore")
        .args(HEALTHCHECK)
        .arg("-o")
        .arg(&out_db)
        .arg(case.url())
        .env_remove("LITESTREAM_CONFIG")
        .env("HOME", &bare_home));
    assert_ne!(out.status.code(), Some(0), "{}", describe(&out));
    let text = output_text(&out);
    assert!(
        text.contains("unknown host key") && text.contains("SHA256:"),
        "{text}"
    );
    assert_no_secret(&text, &password);
    assert!(!out_db.exists());

    let home = case.home_with_known_hosts();
    let args = |out: &Path| -> Vec<String> {
        let mut a: Vec<String> = vec!["restore".into()];
        a.extend(HEALTHCHECK.iter().map(|s| s.to_string()));
        a.extend(["-o".into(), out.display().to_string(), case.url()]);
        a
    };
    let out = run(Command::new(our_bin())
        .args(args(&out_db))
        .env_remove("LITESTREAM_CONFIG")
        .env("HOME", &home));
    assert_exit(&out, 0, "healthcheck restore (URL)");
    assert_integrity_ok(&out_db, "healthcheck restore (URL)");
    assert_eq!(count_rows(&out_db), case.rows());
    assert_no_secret(&output_text(&out), &password);

    let out = run(Command::new(our_bin())
        .args(args(&out_db))
        .env_remove("LITESTREAM_CONFIG")
        .env("HOME", &home));
    assert_exit(&out, 0, "healthcheck restore (URL) with existing db");

    let empty = Case::new("hc-url-empty");
    let out_db2 = case.path("restored-empty.db");
    let out = run(Command::new(our_bin())
        .arg("restore")
        .args(HEALTHCHECK)
        .arg("-o")
        .arg(&out_db2)
        .arg(empty.url())
        .env_remove("LITESTREAM_CONFIG")
        .env("HOME", &home));
    assert_exit(&out, 0, "healthcheck restore (URL) without replica");
    assert!(!out_db2.exists());
}

/// v0.3.13 replicates (key auth); our restore is byte-identical to v0.3.13's own restore.
#[test]
fn sftp_litestream_v0313_replicates_we_restore_identically() {
    let case = Case::new("interop-theirs");
    let cfg = case.config("litestream.yml", Auth::Key, None);
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

/// We replicate (password auth, pinned host key); v0.3.13 restores it, identical to ours.
#[test]
fn sftp_we_replicate_litestream_v0313_restores() {
    let case = Case::new("interop-ours");
    let cfg = case.config("litestream.yml", Auth::Password, None);
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

/// A wrong password: restore fails naming user@host:port; neither restore nor replicate
/// prints the password.
#[test]
fn sftp_wrong_password_is_a_clear_error_without_the_password() {
    let case = Case::new("badpw");
    let wrong = "Wr0ng-CLI-S3cret";
    let cfg = case.config("litestream.yml", Auth::Password, Some(wrong));
    case.create_db();
    let out = restore_config(&our_bin(), &cfg, &case.db, &case.path("out.db"), &[]);
    assert_ne!(out.status.code(), Some(0), "{}", describe(&out));
    let text = output_text(&out);
    assert!(text.contains("lstest@127.0.0.1:"), "{}", describe(&out));
    assert!(text.contains("authentication failed"), "{}", describe(&out));
    assert_no_secret(&text, wrong);

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
    assert_no_secret(&text, wrong);
    assert!(text.contains("lstest@127.0.0.1:"), "{text}");
}

/// A private sshd (same config and keys as the shared one, its own port).
struct PrivateSshd {
    config: PathBuf,
    port: u16,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl PrivateSshd {
    fn start() -> PrivateSshd {
        let shared = PathBuf::from(env("TEST_SFTP_KNOWN_HOSTS"))
            .parent()
            .unwrap()
            .join("sshd_config");
        let text = std::fs::read_to_string(&shared).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("sshd_config");
        let body: String = text
            .lines()
            .filter(|l| !l.starts_with("Port ") && !l.starts_with("PidFile "))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(&config, format!("Port {port}\nPidFile none\n{body}")).unwrap();
        let mut s = PrivateSshd {
            config,
            port,
            child: None,
            _dir: dir,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let child = Command::new("/usr/sbin/sshd")
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "private sshd did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kill the listener and its per-connection children by pid (like a crash).
    fn kill(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        for p in descendants(child.id()) {
            let _ = Command::new("kill").arg("-9").arg(p.to_string()).status();
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for PrivateSshd {
    fn drop(&mut self) {
        self.kill();
    }
}

fn descendants(root: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        if let Some(ppid) = rest
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok())
        {
            parent_of.push((pid, ppid));
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for (c, pp) in &parent_of {
            if *pp == p && !out.contains(c) {
                out.push(*c);
                frontier.push(*c);
            }
        }
    }
    out
}

/// sshd (with its sessions) is killed during `replicate` and restarted a few seconds later:
/// replication resumes by itself and nothing committed is lost (checked with our restore and
/// v0.3.13's).
#[test]
fn sftp_replication_survives_sshd_kill_and_restart() {
    let mut sshd = PrivateSshd::start();
    let case = Case::on_port("fault", &sshd.port.to_string());
    let cfg = case.config("litestream.yml", Auth::Password, None);
    case.create_db();
    insert(&case.db, 100, 1000);
    let log = case.path("replicate.log");
    let child = spawn_replicate(&our_bin(), &cfg, &log);
    std::thread::sleep(Duration::from_secs(3));
    insert(&case.db, 100, 1000);
    std::thread::sleep(Duration::from_secs(2));

    sshd.kill();
    for _ in 0..5 {
        insert(&case.db, 20, 1000);
        std::thread::sleep(Duration::from_millis(500));
    }
    sshd.spawn();
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
    drop(sshd);
}
