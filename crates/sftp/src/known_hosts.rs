//! Host key verification: a pinned `host-key` (key or `SHA256:` fingerprint), an OpenSSH
//! `known_hosts` file (plain, wildcard, negated, hashed `|1|` and `[host]:port` entries,
//! `@revoked` markers), trust on first use ([`FirstUse`], the default), or the explicit opt-out.

use std::path::{Path, PathBuf};

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use russh::keys::{HashAlg, PublicKey};

use crate::first_use::FirstUse;

/// How the server's host key is checked before any credentials are sent.
#[derive(Debug, Clone)]
pub enum HostKeyPolicy {
    /// Accept exactly this key (config `host-key`, as Litestream v0.5 accepts it; URL
    /// `?host-key=`; env `LITESTREAM_SFTP_HOST_KEY`).
    Pinned(Box<PublicKey>),
    /// Accept exactly the key with this `SHA256:` fingerprint (`host-key: SHA256:...`).
    PinnedFingerprint(String),
    /// Accept only the keys an OpenSSH `known_hosts` file lists for the host and port
    /// (`known-hosts-path` set explicitly: unknown keys are refused).
    KnownHosts(PathBuf),
    /// The default: `~/.ssh/known_hosts` when it lists the host, else the key remembered
    /// beside the database, else trust on first use (unless strict).
    FirstUse(FirstUse),
    /// Accept any key (`insecure-ignore-host-key: true`; Litestream v0.3's behaviour).
    InsecureIgnore,
}

/// A host key refused by a [`HostKeyPolicy`]; the message names the host, the offered key's
/// fingerprint and how to accept it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct HostKeyRejected(pub String);

/// `SHA256:<base64>` fingerprint of `key`, as `ssh-keygen -l` prints it.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// The host name as known_hosts writes it: `host` on port 22, else `[host]:port`.
pub(crate) fn known_hosts_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

/// A known_hosts line for `key` at `host:port`.
pub(crate) fn known_hosts_line(host: &str, port: u16, key: &PublicKey) -> String {
    let b64 = key.to_openssh().unwrap_or_default();
    let mut f = b64.split_whitespace();
    let (alg, data) = (f.next().unwrap_or_default(), f.next().unwrap_or_default());
    format!("{} {alg} {data}", known_hosts_name(host, port))
}

/// Parse a pinned host key: `ALGO BASE64 [comment]`, a known_hosts line `HOSTS ALGO BASE64`,
/// or a bare base64 blob.
pub fn parse_host_key(text: &str) -> Option<PublicKey> {
    let fields: Vec<&str> = text.split_whitespace().collect();
    for pair in fields.windows(2) {
        if let Ok(k) = PublicKey::from_openssh(&format!("{} {}", pair[0], pair[1])) {
            return Some(k);
        }
    }
    fields
        .first()
        .and_then(|b| russh::keys::parse_public_key_base64(b).ok())
}

impl HostKeyPolicy {
    /// Check `key` presented by `host:port`. The error's message, for the user, names the
    /// host and the key's SHA256 fingerprint.
    pub fn verify(&self, host: &str, port: u16, key: &PublicKey) -> Result<(), HostKeyRejected> {
        self.check(host, port, key).map_err(HostKeyRejected)
    }

    fn check(&self, host: &str, port: u16, key: &PublicKey) -> Result<(), String> {
        let fp = fingerprint(key);
        let alg = key.algorithm().to_string();
        match self {
            HostKeyPolicy::InsecureIgnore => Ok(()),
            HostKeyPolicy::Pinned(pinned) => {
                if pinned.key_data() == key.key_data() {
                    Ok(())
                } else {
                    Err(format!(
                        "host key mismatch for {host}:{port}: server offered {alg} {fp}, \
                         but host-key pins {} {}",
                        pinned.algorithm(),
                        fingerprint(pinned)
                    ))
                }
            }
            HostKeyPolicy::PinnedFingerprint(want) => {
                if *want == fp {
                    Ok(())
                } else {
                    Err(format!(
                        "host key mismatch for {host}:{port}: server offered {alg} {fp}, \
                         but host-key pins {want}"
                    ))
                }
            }
            HostKeyPolicy::FirstUse(first) => first.verify(host, port, key),
            HostKeyPolicy::KnownHosts(path) => match check_file(path, host, port, key) {
                Verdict::Match => Ok(()),
                Verdict::Unknown { file_error } => Err(format!(
                    "unknown host key for {host}:{port}: {alg} {fp} is not in {}{}; add it \
                     (ssh-keyscan -p {port} {host}), pin it with host-key, or set \
                     insecure-ignore-host-key: true",
                    path.display(),
                    file_error.map(|e| format!(" ({e})")).unwrap_or_default()
                )),
                other => Err(refusal(&other, path, host, port, key)),
            },
        }
    }
}

/// The message for a revoked or changed key (`verdict` is neither `Match` nor `Unknown`).
pub(crate) fn refusal(
    verdict: &Verdict,
    path: &Path,
    host: &str,
    port: u16,
    key: &PublicKey,
) -> String {
    let (alg, fp) = (key.algorithm(), fingerprint(key));
    match verdict {
        Verdict::Changed { line, recorded } => format!(
            "HOST KEY CHANGED for {host}:{port}: server offered {alg} {fp}, but {}:{line} \
             records {} {}; refusing to connect (someone may be impersonating the server)",
            path.display(),
            recorded.algorithm(),
            fingerprint(recorded)
        ),
        _ => format!(
            "host key for {host}:{port} ({alg} {fp}) is marked @revoked in {}",
            path.display()
        ),
    }
}

/// What a known_hosts file says about a host's key.
#[derive(Debug)]
pub(crate) enum Verdict {
    Match,
    Revoked,
    /// The host is listed, but with other keys only (the first of them at `line`).
    Changed {
        line: usize,
        recorded: Box<PublicKey>,
    },
    Unknown {
        file_error: Option<String>,
    },
}

pub(crate) fn check_file(path: &Path, host: &str, port: u16, key: &PublicKey) -> Verdict {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            return Verdict::Unknown {
                file_error: Some(e.to_string()),
            }
        }
    };
    check_text(&text, host, port, key)
}

/// Check `key` against known_hosts `text`. Any entry for the host with another key, of any
/// algorithm, makes an unmatched key `Changed` (a server that suddenly offers another key type
/// is not trusted anew).
pub(crate) fn check_text(text: &str, host: &str, port: u16, key: &PublicKey) -> Verdict {
    let name = known_hosts_name(host, port);
    let mut matched = false;
    let mut changed = None;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let Some(mut hosts) = fields.next() else {
            continue;
        };
        let mut marker = None;
        if hosts.starts_with('@') {
            marker = Some(hosts);
            let Some(h) = fields.next() else { continue };
            hosts = h;
        }
        let (Some(alg), Some(b64)) = (fields.next(), fields.next()) else {
            continue;
        };
        if !host_matches(hosts, &name) {
            continue;
        }
        let Ok(recorded) = PublicKey::from_openssh(&format!("{alg} {b64}")) else {
            continue;
        };
        let same = recorded.key_data() == key.key_data();
        match marker {
            Some("@revoked") if same => return Verdict::Revoked,
            Some(_) => continue,
            None => {}
        }
        if same {
            matched = true;
        } else if changed.is_none() {
            changed = Some((i + 1, recorded));
        }
    }
    match (matched, changed) {
        (true, _) => Verdict::Match,
        (false, Some((line, recorded))) => Verdict::Changed {
            line,
            recorded: Box::new(recorded),
        },
        (false, None) => Verdict::Unknown { file_error: None },
    }
}

/// Does the comma-separated pattern list (or hashed entry) match `name`?
fn host_matches(patterns: &str, name: &str) -> bool {
    if let Some(rest) = patterns.strip_prefix("|1|") {
        return hashed_matches(rest, name);
    }
    let mut any = false;
    for pat in patterns.split(',') {
        if let Some(neg) = pat.strip_prefix('!') {
            if glob(neg, name) {
                return false;
            }
        } else if glob(pat, name) {
            any = true;
        }
    }
    any
}

fn hashed_matches(rest: &str, name: &str) -> bool {
    let b64 = base64::engine::general_purpose::STANDARD;
    let Some((salt, hash)) = rest.split_once('|') else {
        return false;
    };
    let (Ok(salt), Ok(hash)) = (b64.decode(salt), b64.decode(hash)) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<sha1::Sha1>::new_from_slice(&salt) else {
        return false;
    };
    mac.update(name.as_bytes());
    mac.verify_slice(&hash).is_ok()
}

/// OpenSSH-style glob (`*`, `?`), case-insensitive.
fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.to_ascii_lowercase().chars().collect();
    let t: Vec<char> = text.to_ascii_lowercase().chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Two ed25519 public keys for the unit tests.
    pub(crate) const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDxT1vuW28QjmJGwief9uoZee+bhIpQZCOYL60OKVfUh";
    pub(crate) const OTHER: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGJBidcr2aWIQxoo6ANb3JwftVrspBuqwQQAdfGUD8Pe";

    fn key(s: &str) -> PublicKey {
        parse_host_key(s).expect("key")
    }

    #[test]
    fn entries_match_by_host_port_hash_and_pattern() {
        // Hashed entry generated as `ssh-keygen -H` does for "[127.0.0.1]:2022 KEY".
        let salt = [7u8; 20];
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(&salt).expect("mac");
        mac.update(b"[127.0.0.1]:2022");
        let hash = mac.finalize().into_bytes();
        let b64 = base64::engine::general_purpose::STANDARD;
        let hashed = format!("|1|{}|{} {KEY}\n", b64.encode(salt), b64.encode(hash));
        let plain = format!("example.org {KEY}\n[127.0.0.1]:2022 {KEY}\n");
        let patterns = format!("*.example.org,!bad.example.org {KEY}\n");
        let revoked = format!("@revoked * {OTHER}\n* {OTHER}\n");
        let cases = [
            (&plain, "example.org", 22, KEY, "match"),
            (&plain, "127.0.0.1", 2022, KEY, "match"),
            (&plain, "127.0.0.1", 22, KEY, "unknown"),
            (&hashed, "127.0.0.1", 2022, KEY, "match"),
            (&hashed, "127.0.0.2", 2022, KEY, "unknown"),
            (&patterns, "a.example.org", 22, OTHER, "changed at 1"),
            (&patterns, "bad.example.org", 22, OTHER, "unknown"),
            (&revoked, "x", 22, OTHER, "revoked"),
        ];
        for (text, host, port, offered, want) in cases {
            let got = match check_text(text, host, port, &key(offered)) {
                Verdict::Match => "match".to_string(),
                Verdict::Revoked => "revoked".to_string(),
                Verdict::Changed { line, .. } => format!("changed at {line}"),
                Verdict::Unknown { .. } => "unknown".to_string(),
            };
            assert_eq!(got, want, "{host}:{port} offering {offered} to {text:?}");
        }
    }

    #[test]
    fn pinned_key_forms_parse() {
        let k = key(KEY);
        assert_eq!(key(&format!("{KEY} comment")).key_data(), k.key_data());
        assert_eq!(key(&format!("[h]:22 {KEY}")).key_data(), k.key_data());
        let err = HostKeyPolicy::Pinned(Box::new(key(OTHER)))
            .verify("h", 22, &k)
            .expect_err("mismatch");
        assert!(err.0.contains(&fingerprint(&k)), "{err}");
    }
}
