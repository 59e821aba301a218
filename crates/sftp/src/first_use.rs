//! Trust on first use (OpenSSH's `StrictHostKeyChecking=accept-new`), with the trusted key
//! remembered on the data volume beside the database, so a fresh container (no
//! `~/.ssh/known_hosts`, nothing in the URL) can reach its server and a later impersonator
//! cannot.
//!
//! The store is an OpenSSH known_hosts file (by default `.<db>-litestream/known_hosts`, the
//! database's meta directory, set by the caller with
//! [`SftpConfig::with_host_key_store`](crate::SftpConfig::with_host_key_store)). Readers and
//! writers hold an exclusive `flock` on it while they check and append, so the sidecar's
//! `replicate` and its healthcheck's `restore` meeting a server at the same moment record one
//! key.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use russh::keys::PublicKey;

use crate::known_hosts::{check_file, check_text, fingerprint, known_hosts_line, refusal, Verdict};

/// Environment switch for strict mode: `true`/`1`/`yes` refuses unknown host keys.
pub const STRICT_ENV: &str = "LITESTREAM_SFTP_STRICT_HOST_KEY_CHECKING";

/// The default host key policy: the user's known_hosts, then the remembered key, then trust on
/// first use (or, in strict mode, refusal).
#[derive(Debug, Clone, Default)]
pub struct FirstUse {
    /// `~/.ssh/known_hosts`; consulted first when it lists the host (a changed key there is
    /// refused). Missing file: skipped.
    pub user_known_hosts: Option<PathBuf>,
    /// Where first-use keys are remembered. `None` (no database path, e.g. `generations URL`):
    /// a first-use key is accepted for this process only.
    pub store: Option<PathBuf>,
    /// Strict mode (`strict-host-key-checking: true` or [`STRICT_ENV`]): a key found neither in
    /// known_hosts nor in the store is refused.
    pub strict: bool,
}

impl FirstUse {
    /// Check (and on first use remember) `key` offered by `host:port`.
    pub(crate) fn verify(&self, host: &str, port: u16, key: &PublicKey) -> Result<(), String> {
        if let Some(path) = &self.user_known_hosts {
            match check_file(path, host, port, key) {
                Verdict::Match => return Ok(()),
                Verdict::Unknown { .. } => {}
                other => return Err(refusal(&other, path, host, port, key)),
            }
        }
        let fp = fingerprint(key);
        let Some(store) = &self.store else {
            if self.strict {
                return Err(self.unknown(host, port, key));
            }
            tracing::warn!(
                host = %host, port, fingerprint = %fp,
                "sftp: trusting host key on first use for this run only (no database path to remember it beside)"
            );
            return Ok(());
        };
        // Strict mode never writes, so it only reads (a missing store is empty).
        let mut file = if self.strict {
            None
        } else {
            Some(open_locked(store)?)
        };
        let mut text = String::new();
        let read = match file.as_mut() {
            Some(f) => f.read_to_string(&mut text).map(|_| ()),
            None => match std::fs::read_to_string(store) {
                Ok(t) => {
                    text = t;
                    Ok(())
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e),
            },
        };
        read.map_err(|e| format!("cannot read host key store {}: {e}", store.display()))?;
        match (check_text(&text, host, port, key), file.as_mut()) {
            (Verdict::Match, _) => Ok(()),
            (Verdict::Unknown { .. }, None) => Err(self.unknown(host, port, key)),
            (Verdict::Unknown { .. }, Some(file)) => {
                remember(file, &text, store, host, port, key)?;
                tracing::warn!(
                    host = %host, port, fingerprint = %fp, store = %store.display(),
                    "sftp: trusting host key on first use; remembered (a different key will be refused)"
                );
                Ok(())
            }
            (changed @ Verdict::Changed { .. }, _) => Err(format!(
                "{}; if the server's key was changed on purpose, accept the new one with: {}",
                refusal(&changed, store, host, port, key),
                accept_line(&text, store, host, port, key)
            )),
            (revoked, _) => Err(refusal(&revoked, store, host, port, key)),
        }
    }

    fn unknown(&self, host: &str, port: u16, key: &PublicKey) -> String {
        let where_ = match (&self.user_known_hosts, &self.store) {
            (Some(k), Some(s)) => format!("{} nor in {}", k.display(), s.display()),
            (Some(k), None) => k.display().to_string(),
            (None, Some(s)) => s.display().to_string(),
            (None, None) => "any known_hosts file".into(),
        };
        format!(
            "unknown host key for {host}:{port}: {} {} is not in {where_}, and strict host key \
             checking is on; pin it with host-key: \"{}\" (or ?host-key= in the URL, or \
             LITESTREAM_SFTP_HOST_KEY)",
            key.algorithm(),
            fingerprint(key),
            fingerprint(key)
        )
    }
}

/// Open (creating it and its directory) and exclusively lock the store.
fn open_locked(store: &Path) -> Result<File, String> {
    let fail = |what: &str, e: std::io::Error| {
        format!("cannot {what} host key store {}: {e}", store.display())
    };
    if let Some(dir) = store.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| fail("create the directory of", e))?;
    }
    let file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(store)
        .map_err(|e| fail("open", e))?;
    file.lock().map_err(|e| fail("lock", e))?;
    Ok(file)
}

/// Append the key's line (after a newline if the file lacks a final one) and fsync.
fn remember(
    file: &mut File,
    text: &str,
    store: &Path,
    host: &str,
    port: u16,
    key: &PublicKey,
) -> Result<(), String> {
    let sep = if text.is_empty() || text.ends_with('\n') {
        ""
    } else {
        "\n"
    };
    let line = format!("{sep}{}\n", known_hosts_line(host, port, key));
    file.seek(SeekFrom::End(0))
        .and_then(|_| file.write_all(line.as_bytes()))
        .and_then(|_| file.sync_all())
        .map_err(|e| format!("cannot remember host key in {}: {e}", store.display()))
}

/// The shell line that makes the store accept `key` (and forget the host's old key): a
/// rewrite when the store holds only this host, else an append.
fn accept_line(text: &str, store: &Path, host: &str, port: u16, key: &PublicKey) -> String {
    let line = shell_quote(&known_hosts_line(host, port, key));
    let path = shell_quote(&store.to_string_lossy());
    let only_this_host = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .all(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|h| h == crate::known_hosts::known_hosts_name(host, port))
        });
    if only_this_host {
        format!("echo {line} > {path}")
    } else {
        format!("echo {line} >> {path}")
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::known_hosts::tests::{KEY, OTHER};
    use crate::parse_host_key;

    #[test]
    fn first_use_remembers_then_refuses_a_changed_key() {
        let tmp = tempfile::tempdir().expect("tmp");
        let store = tmp.path().join(".app.db-litestream").join("known_hosts");
        let tofu = FirstUse {
            user_known_hosts: Some(tmp.path().join("absent")),
            store: Some(store.clone()),
            strict: false,
        };
        let (k, other) = (
            parse_host_key(KEY).expect("k"),
            parse_host_key(OTHER).expect("o"),
        );
        tofu.verify("h", 2022, &k).expect("first use");
        let text = std::fs::read_to_string(&store).expect("store");
        assert_eq!(text, format!("[h]:2022 {KEY}\n"));
        tofu.verify("h", 2022, &k).expect("same key again");
        let err = tofu.verify("h", 2022, &other).expect_err("changed");
        assert!(
            err.contains(&fingerprint(&k)) && err.contains(&fingerprint(&other)),
            "{err}"
        );
        assert!(
            err.contains(&format!("echo '[h]:2022 {OTHER}' > '")),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(&store).expect("store"), text);
        // Another host on the same store is its own first use; the accept line then appends.
        tofu.verify("g", 22, &other).expect("other host");
        let err = tofu.verify("h", 2022, &other).expect_err("changed");
        assert!(
            err.contains(&format!("echo '[h]:2022 {OTHER}' >> '")),
            "{err}"
        );
    }

    #[test]
    fn strict_mode_refuses_unknown_keys_and_writes_nothing() {
        let tmp = tempfile::tempdir().expect("tmp");
        let store = tmp.path().join("known_hosts");
        let strict = FirstUse {
            user_known_hosts: None,
            store: Some(store.clone()),
            strict: true,
        };
        let k = parse_host_key(KEY).expect("k");
        let err = strict.verify("h", 22, &k).expect_err("strict");
        assert!(
            err.contains("strict") && err.contains(&fingerprint(&k)),
            "{err}"
        );
        assert!(!store.exists(), "strict mode created the store");
        let no_store = FirstUse {
            strict: true,
            ..Default::default()
        };
        assert!(no_store.verify("h", 22, &k).is_err());
        FirstUse::default()
            .verify("h", 22, &k)
            .expect("no store: accepted for this run");
    }
}
