//! Validated SFTP settings, built once from a resolved [`ReplicaConfig`].

use std::fmt;
use std::path::PathBuf;

use litestream_core::config::{expand_home, ReplicaConfig};
use litestream_core::{Error, Result};

use crate::first_use::{FirstUse, STRICT_ENV};
use crate::known_hosts::{parse_host_key, HostKeyPolicy};

/// Environment variable that pins the host key when neither the config's `host-key` nor the
/// URL's `?host-key=` does: `ssh-ed25519 AAAA...` or `SHA256:...`.
pub const HOST_KEY_ENV: &str = "LITESTREAM_SFTP_HOST_KEY";

/// Default SSH port when `host` has none.
pub const DEFAULT_PORT: u16 = 22;

/// Validated connection settings of one SFTP replica. `Debug` never prints the password.
#[derive(Clone)]
pub struct SftpConfig {
    /// Server host name or address (without brackets or port).
    pub host: String,
    /// Server port (default 22).
    pub port: u16,
    /// Login user.
    pub user: String,
    /// Password for `password` authentication, if any.
    pub password: Option<String>,
    /// Private key file (OpenSSH or PEM; ed25519, RSA, ECDSA) for `publickey` authentication.
    pub key_path: Option<PathBuf>,
    /// Remote replica root (absolute, or relative to the login directory).
    pub path: String,
    /// How the server's host key is checked.
    pub host_key_policy: HostKeyPolicy,
}

impl fmt::Debug for SftpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SftpConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("key_path", &self.key_path)
            .field("path", &self.path)
            .field("host_key_policy", &self.host_key_policy)
            .finish()
    }
}

impl SftpConfig {
    /// `user@host:port`, the name used in every error message.
    pub fn endpoint(&self) -> String {
        if self.host.contains(':') {
            format!("{}@[{}]:{}", self.user, self.host, self.port)
        } else {
            format!("{}@{}:{}", self.user, self.host, self.port)
        }
    }

    /// Validate a replica config (call [`ReplicaConfig::resolve`] first so URL fields are in).
    ///
    /// Keys: `host` (`HOST[:PORT]`, required), `user` (required), `password`, `key-path`,
    /// `path`, `host-key` (else `LITESTREAM_SFTP_HOST_KEY`), `known-hosts-path`,
    /// `strict-host-key-checking` (else `LITESTREAM_SFTP_STRICT_HOST_KEY_CHECKING`),
    /// `insecure-ignore-host-key`.
    ///
    /// Without `host-key` or `known-hosts-path` the policy is [`HostKeyPolicy::FirstUse`]
    /// with no store: call [`with_host_key_store`](Self::with_host_key_store) to remember
    /// first-use keys.
    pub fn from_replica_config(cfg: &ReplicaConfig) -> Result<SftpConfig> {
        let host_port = cfg
            .host
            .as_deref()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| Error::InvalidConfig("host required for sftp replica".into()))?;
        let (host, port) = split_host_port(host_port)?;
        let user = cfg
            .user
            .clone()
            .filter(|u| !u.is_empty())
            .ok_or_else(|| Error::InvalidConfig("user required for sftp replica".into()))?;
        let host_key_policy = host_key_policy(cfg, &format!("{user}@{host_port}"))?;
        Ok(SftpConfig {
            host,
            port,
            user,
            password: cfg.password.clone().filter(|p| !p.is_empty()),
            key_path: cfg
                .key_path
                .as_deref()
                .filter(|p| !p.is_empty())
                .map(expand_home)
                .transpose()?,
            path: cfg.path.clone().unwrap_or_default(),
            host_key_policy,
        })
    }

    /// Remember first-use host keys in `path` (an OpenSSH known_hosts file; the CLI uses
    /// `known_hosts` in the database's meta directory, e.g. `/data/.app.db-litestream/`).
    /// Only the default policy ([`HostKeyPolicy::FirstUse`]) uses it.
    pub fn with_host_key_store(mut self, path: PathBuf) -> SftpConfig {
        if let HostKeyPolicy::FirstUse(f) = &mut self.host_key_policy {
            f.store = Some(path);
        }
        self
    }
}

/// The host key policy: opt-out, else a pin (config, URL, env), else an explicit known_hosts
/// file, else first use.
fn host_key_policy(cfg: &ReplicaConfig, who: &str) -> Result<HostKeyPolicy> {
    if cfg.insecure_ignore_host_key.unwrap_or(false) {
        return Ok(HostKeyPolicy::InsecureIgnore);
    }
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let pinned = cfg
        .host_key
        .clone()
        .filter(|k| !k.trim().is_empty())
        .map(|k| (k, "host-key"))
        .or_else(|| env(HOST_KEY_ENV).map(|k| (k, HOST_KEY_ENV)));
    if let Some((pinned, from)) = pinned {
        let pinned = pinned.trim();
        if let Some(b64) = pinned.strip_prefix("SHA256:") {
            if b64.len() != 43 {
                return Err(Error::InvalidConfig(format!(
                    "sftp replica {who}: {from} fingerprint {pinned:?} is not a SHA256 fingerprint \
                     (SHA256: and 43 base64 characters, as ssh-keygen -l prints it)"
                )));
            }
            return Ok(HostKeyPolicy::PinnedFingerprint(pinned.to_string()));
        }
        let key = parse_host_key(pinned).ok_or_else(|| {
            Error::InvalidConfig(format!(
                "sftp replica {who}: cannot parse {from} (expected \"ALGORITHM BASE64\", e.g. \"ssh-ed25519 AAAA...\", or a SHA256:... fingerprint)"
            ))
        })?;
        return Ok(HostKeyPolicy::Pinned(Box::new(key)));
    }
    if let Some(p) = cfg.known_hosts_path.as_deref().filter(|p| !p.is_empty()) {
        return Ok(HostKeyPolicy::KnownHosts(expand_home(p)?));
    }
    let strict = match cfg.strict_host_key_checking {
        Some(b) => b,
        None => match env(STRICT_ENV).map(|v| v.trim().to_ascii_lowercase()) {
            None => false,
            Some(v) if matches!(v.as_str(), "true" | "1" | "yes") => true,
            Some(v) if matches!(v.as_str(), "false" | "0" | "no") => false,
            Some(v) => {
                return Err(Error::InvalidConfig(format!(
                    "{STRICT_ENV}={v:?}: expected true or false"
                )))
            }
        },
    };
    Ok(HostKeyPolicy::FirstUse(FirstUse {
        user_known_hosts: std::env::var_os("HOME")
            .map(|h| PathBuf::from(h).join(".ssh").join("known_hosts")),
        store: None,
        strict,
    }))
}

/// `HOST[:PORT]` or `[IPV6][:PORT]` (default port 22); a bare IPv6 address is a host.
fn split_host_port(s: &str) -> Result<(String, u16)> {
    let bad = || Error::InvalidConfig(format!("sftp replica: invalid host {s:?}"));
    match litestream_core::url::split_host_port(s) {
        Some((host, None)) => Ok((host.to_string(), DEFAULT_PORT)),
        Some((host, Some(port))) => Ok((host.to_string(), port.parse().map_err(|_| bad())?)),
        None if s.starts_with('[') => Err(bad()),
        None => Ok((s.to_string(), DEFAULT_PORT)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_forms() {
        assert_eq!(
            split_host_port("h").expect("ok"),
            ("h".to_string(), DEFAULT_PORT)
        );
        assert_eq!(split_host_port("h:2022").expect("ok"), ("h".into(), 2022));
        assert_eq!(split_host_port("[::1]:2").expect("ok"), ("::1".into(), 2));
        assert!(split_host_port("h:x").is_err());
        assert!(split_host_port("[::1").is_err());
        assert_eq!(
            split_host_port("::1").expect("ok"),
            ("::1".into(), DEFAULT_PORT)
        );
    }

    #[test]
    fn debug_redacts_password() {
        let cfg = ReplicaConfig {
            host: Some("h:1".into()),
            user: Some("u".into()),
            password: Some("s3cret".into()),
            insecure_ignore_host_key: Some(true),
            ..Default::default()
        };
        let c = SftpConfig::from_replica_config(&cfg).expect("cfg");
        assert!(!format!("{c:?}").contains("s3cret"));
        assert_eq!(c.endpoint(), "u@h:1");
    }
}
