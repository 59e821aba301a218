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

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::common::scenarios::{self, Writer};
use crate::common::{
    assert_no_secret, describe, our_bin, output_text, replicate_briefly, restore_config,
    restore_url, test_env, HEALTHCHECK,
};
use litestream_test_servers::PrivateSshd;

fn env(name: &str) -> String {
    test_env(name, "the sftp CLI tests need the local sshd")
}

/// How the replica authenticates and checks the host key.
#[derive(Clone, Copy)]
enum Auth {
    /// ed25519 key + known-hosts-path.
    Key,
    /// password + pinned host-key.
    Password,
}

/// The sftp side of a case: the remote replica dir (removed on drop) and the server's port.
struct Sftp {
    remote: String,
    port: String,
}

impl Drop for Sftp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.remote);
    }
}

/// Everything one test needs: a temp dir, a source db, a remote replica dir and config files.
type Case = scenarios::Case<Sftp>;

impl Case {
    fn new(tag: &str) -> Case {
        Self::on_port(tag, &env("TEST_SFTP_PORT"))
    }

    fn on_port(tag: &str, port: &str) -> Case {
        let n = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        Case::with_replica(Sftp {
            remote: format!(
                "{}/test-sftp-cli/{tag}-{:x}-{:x}",
                env("TEST_SFTP_ROOT"),
                std::process::id(),
                n
            ),
            port: port.to_string(),
        })
    }

    /// A v0.3.13-style config file (v0.3.13 ignores `known-hosts-path` / `host-key`).
    fn config(&self, name: &str, auth: Auth, password: Option<&str>) -> PathBuf {
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
            port = self.replica.port,
            user = env("TEST_SFTP_USER"),
            remote = self.replica.remote,
        );
        self.write_file(name, &text)
    }

    fn url(&self) -> String {
        format!(
            "sftp://{}:{}@127.0.0.1:{}{}",
            env("TEST_SFTP_USER"),
            env("TEST_SFTP_PASSWORD"),
            self.replica.port,
            self.replica.remote
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
}

/// A replica written by the real v0.3.13 (key auth); our healthcheck restore from the config
/// file restores it, leaves an existing db alone, and exits 0 for an empty remote dir.
#[test]
fn sftp_healthcheck_restore_config_mode() {
    let case = Case::new("hc-config");
    let cfg = case.config("litestream.yml", Auth::Key, None);
    let mut empty = Case::new("hc-config-empty");
    empty.db = case.db.clone();
    let empty_cfg = empty.config("empty.yml", Auth::Key, None);
    scenarios::healthcheck_restore_config_mode(&case, &cfg, &empty_cfg);
}

/// URL mode `sftp://USER:PASSWORD@HOST:PORT/abs/path`: restores with the host key from
/// ~/.ssh/known_hosts; without it, in strict mode, the restore is refused with the key's
/// fingerprint (trust on first use is `sftp_host_keys_cli.rs`); the password never appears
/// in the output.
#[test]
fn sftp_healthcheck_restore_url_mode() {
    let case = Case::new("hc-url");
    let cfg = case.config("litestream.yml", Auth::Password, None);
    scenarios::seed_with_v0313(&case, &cfg, 100, 0);
    let password = env("TEST_SFTP_PASSWORD");
    let restore = |url: &str, out: &Path, home: &Path| {
        restore_url(
            &our_bin(),
            url,
            out,
            HEALTHCHECK,
            &[
                ("HOME", Some(home.to_str().unwrap())),
                ("LITESTREAM_SFTP_STRICT_HOST_KEY_CHECKING", Some("true")),
            ],
        )
    };

    // No known_hosts entry, strict mode: refused, with the fingerprint, without the password.
    let bare_home = case.path("bare-home");
    std::fs::create_dir_all(&bare_home).unwrap();
    let refused_db = case.path("refused.db");
    let out = restore(&case.url(), &refused_db, &bare_home);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let text = output_text(&out);
    assert!(
        text.contains("unknown host key") && text.contains("SHA256:"),
        "{text}"
    );
    assert_no_secret(&text, &password);
    assert!(!refused_db.exists());

    let home = case.home_with_known_hosts();
    let empty = Case::new("hc-url-empty");
    scenarios::assert_healthcheck_restore(
        &case,
        &|out| restore(&case.url(), out, &home),
        &|out| restore(&empty.url(), out, &home),
        Some(&password),
        "URL",
    );
}

/// v0.3.13 replicates (key auth); our restore is byte-identical to v0.3.13's own restore.
#[test]
fn sftp_litestream_v0313_replicates_we_restore_identically() {
    let case = Case::new("interop-theirs");
    let cfg = case.config("litestream.yml", Auth::Key, None);
    scenarios::interop_through_config(&case, &cfg, Writer::V0313);
}

/// We replicate (password auth, pinned host key); v0.3.13 restores it, identical to ours.
#[test]
fn sftp_we_replicate_litestream_v0313_restores() {
    let case = Case::new("interop-ours");
    let cfg = case.config("litestream.yml", Auth::Password, None);
    scenarios::interop_through_config(&case, &cfg, Writer::Ours);
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
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let text = output_text(&out);
    assert!(text.contains("lstest@127.0.0.1:"), "{}", describe(&out));
    assert!(text.contains("authentication failed"), "{}", describe(&out));
    assert_no_secret(&text, wrong);

    let log = case.path("replicate.log");
    let text = replicate_briefly(&our_bin(), &cfg, &case.db, &log);
    assert_no_secret(&text, wrong);
    assert!(text.contains("lstest@127.0.0.1:"), "{text}");
}

/// sshd (with its sessions) is killed during `replicate` and restarted a few seconds later:
/// replication resumes by itself and nothing committed is lost (checked with our restore and
/// v0.3.13's).
#[test]
fn sftp_replication_survives_sshd_kill_and_restart() {
    let mut sshd = PrivateSshd::start();
    let case = Case::on_port("fault", &sshd.port.to_string());
    let cfg = case.config("litestream.yml", Auth::Password, None);
    scenarios::replication_survives_server_restart(&case, &cfg, &mut sshd);
    drop(sshd);
}
