//! One replica's settings ([`ReplicaConfig`]), its type ([`ReplicaKind`]), and the checks
//! that refuse security settings this version would otherwise ignore.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::Deserialize;

use super::{AgeConfig, GoDuration};
use crate::error::{Error, Result};

/// The storage behind a replica: the config's `type`, or a replica URL's scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ReplicaKind {
    /// `file`: a local directory.
    File,
    /// `s3`: Amazon S3 or an S3-compatible store.
    S3,
    /// `gcs` (also `gs`, Litestream v0.5's name): Google Cloud Storage.
    Gcs,
    /// `abs`: Azure Blob Storage.
    Abs,
    /// `sftp`: a directory on an SSH server.
    Sftp,
}

impl ReplicaKind {
    /// The canonical config spelling (`file`, `s3`, `gcs`, `abs`, `sftp`).
    pub fn as_str(self) -> &'static str {
        match self {
            ReplicaKind::File => "file",
            ReplicaKind::S3 => "s3",
            ReplicaKind::Gcs => "gcs",
            ReplicaKind::Abs => "abs",
            ReplicaKind::Sftp => "sftp",
        }
    }
}

impl fmt::Display for ReplicaKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parses a config `type` or URL scheme; the error names an unknown one.
impl FromStr for ReplicaKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "file" => Ok(ReplicaKind::File),
            "s3" => Ok(ReplicaKind::S3),
            "gcs" | "gs" => Ok(ReplicaKind::Gcs),
            "abs" => Ok(ReplicaKind::Abs),
            "sftp" => Ok(ReplicaKind::Sftp),
            other => Err(Error::InvalidConfig(format!(
                "unknown replica type in config: {other:?}"
            ))),
        }
    }
}

/// One replica of a database (`dbs[].replicas[]`), or the result of parsing a replica URL.
///
/// Field names are the YAML keys in kebab-case. Keys marked "extension" are not in Litestream
/// v0.3.13.
#[derive(Clone, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "kebab-case")]
pub struct ReplicaConfig {
    /// `type`: `file`, `s3`, `gcs` (also `gs`, v0.5's name), `abs` or `sftp` (default `file`,
    /// or the URL scheme).
    #[serde(rename = "type")]
    pub replica_type: Option<String>,
    /// `name` (default: the type).
    pub name: Option<String>,
    /// `url`: a replica URL; cannot be combined with `path`, `bucket` or `host`.
    pub url: Option<String>,
    /// `path`: directory (file), key prefix (s3, gcs, abs) or remote directory (sftp).
    pub path: Option<String>,
    /// `retention` (default 24h).
    pub retention: Option<GoDuration>,
    /// `retention-check-interval` (default 1h).
    pub retention_check_interval: Option<GoDuration>,
    /// `sync-interval` (default 1s).
    pub sync_interval: Option<GoDuration>,
    /// `snapshot-interval` (default off).
    pub snapshot_interval: Option<GoDuration>,
    /// `validation-interval` (default off).
    pub validation_interval: Option<GoDuration>,
    /// `access-key-id` (s3).
    pub access_key_id: Option<String>,
    /// `secret-access-key` (s3).
    pub secret_access_key: Option<String>,
    /// `region` (s3).
    pub region: Option<String>,
    /// `bucket` (s3, gcs; the container for abs).
    pub bucket: Option<String>,
    /// `endpoint` (s3, abs; gcs as an extension: another JSON API endpoint).
    pub endpoint: Option<String>,
    /// `force-path-style` (s3; default on when an endpoint is set).
    pub force_path_style: Option<bool>,
    /// `skip-verify` (s3): do not verify TLS certificates.
    pub skip_verify: Option<bool>,
    /// `account-name` (abs).
    pub account_name: Option<String>,
    /// `account-key` (abs; falls back to `LITESTREAM_AZURE_ACCOUNT_KEY`).
    pub account_key: Option<String>,
    /// `sas-token` (abs, extension).
    pub sas_token: Option<String>,
    /// `credential` (abs, extension): `shared-key`, `sas`, `managed-identity`, `workload-identity`.
    pub credential: Option<String>,
    /// `client-id` (abs, extension): managed/workload identity client ID.
    pub client_id: Option<String>,
    /// `tenant-id` (abs, extension): workload identity tenant.
    pub tenant_id: Option<String>,
    /// `host` (sftp), `HOST[:PORT]`.
    pub host: Option<String>,
    /// `user` (sftp).
    pub user: Option<String>,
    /// `password` (sftp).
    pub password: Option<String>,
    /// `key-path` (sftp): private key file.
    pub key_path: Option<String>,
    /// `host-key` (sftp, as Litestream v0.5): the pinned server public key.
    pub host_key: Option<String>,
    /// `known-hosts-path` (sftp, extension; default `~/.ssh/known_hosts`).
    pub known_hosts_path: Option<String>,
    /// `insecure-ignore-host-key` (sftp, extension): accept any host key, as Litestream v0.3 did.
    pub insecure_ignore_host_key: Option<bool>,
    /// `strict-host-key-checking` (sftp, extension; URL `?strict-host-key-checking=true`, env
    /// `LITESTREAM_SFTP_STRICT_HOST_KEY_CHECKING`): refuse host keys that are neither pinned nor
    /// known instead of trusting them on first use.
    pub strict_host_key_checking: Option<bool>,
    /// `age`: client-side encryption.
    pub age: Option<AgeConfig>,
    /// `format` (extension): `v0.3` or `ltx`, the format of a new (empty) replica path; see
    /// [`crate::engine::ReplicaFormat`].
    pub format: Option<String>,
    /// Keys this version does not know (reported, not fatal).
    #[serde(flatten)]
    pub unknown: BTreeMap<String, serde::de::IgnoredAny>,
}

/// `[redacted]` in place of a set secret (for `Debug`).
pub(super) fn redacted(v: &Option<String>) -> Option<&'static str> {
    v.as_ref().map(|_| "[redacted]")
}

/// Secrets (`secret-access-key`, `account-key`, `sas-token`, `password`) print as
/// `[redacted]`.
impl std::fmt::Debug for ReplicaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicaConfig")
            .field("replica_type", &self.replica_type)
            .field("name", &self.name)
            .field("url", &self.url.as_deref().map(crate::url::redact_url))
            .field("path", &self.path)
            .field("retention", &self.retention)
            .field("retention_check_interval", &self.retention_check_interval)
            .field("sync_interval", &self.sync_interval)
            .field("snapshot_interval", &self.snapshot_interval)
            .field("validation_interval", &self.validation_interval)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &redacted(&self.secret_access_key))
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .field("force_path_style", &self.force_path_style)
            .field("skip_verify", &self.skip_verify)
            .field("account_name", &self.account_name)
            .field("account_key", &redacted(&self.account_key))
            .field("sas_token", &redacted(&self.sas_token))
            .field("credential", &self.credential)
            .field("client_id", &self.client_id)
            .field("tenant_id", &self.tenant_id)
            .field("host", &self.host)
            .field("user", &self.user)
            .field("password", &redacted(&self.password))
            .field("key_path", &self.key_path)
            .field("host_key", &self.host_key)
            .field("known_hosts_path", &self.known_hosts_path)
            .field("insecure_ignore_host_key", &self.insecure_ignore_host_key)
            .field("age", &self.age)
            .field("unknown", &self.unknown)
            .finish()
    }
}

impl ReplicaConfig {
    /// The replica type (`type`, default `file`; after [`resolve`](Self::resolve) also the
    /// URL's scheme). An error names an unknown type.
    pub fn kind(&self) -> Result<ReplicaKind> {
        match &self.replica_type {
            None => Ok(ReplicaKind::File),
            Some(t) => t.parse(),
        }
    }

    /// The replica name (default: its type as written).
    pub fn display_name(&self) -> String {
        self.name
            .clone()
            .or_else(|| self.replica_type.clone())
            .unwrap_or_else(|| ReplicaKind::File.to_string())
    }

    /// Refuse security settings this version would otherwise parse and ignore: a TLS or
    /// host-key setting on a replica type that does not use it, and an
    /// unknown key that names a security setting (encryption, TLS, certificates, host keys).
    /// `at` names the replica in errors (e.g. `dbs[0].replicas[1]`).
    pub fn check_security(&self, at: &str) -> Result<()> {
        let kind = match &self.url {
            Some(u) if self.replica_type.is_none() => crate::url::parse_replica_url(u)?.kind(),
            _ => self.kind(),
        };
        // An unknown type is reported by `resolve`, which names it.
        if let Ok(kind) = kind {
            let only = |key: &str, set: bool, wanted: ReplicaKind| -> Result<()> {
                if set && kind != wanted {
                    return Err(Error::InvalidConfig(format!(
                        "{at}.{key}: not supported for {kind} replicas (only {wanted}); \
                         refusing a security setting that would be ignored"
                    )));
                }
                Ok(())
            };
            only("skip-verify", self.skip_verify.is_some(), ReplicaKind::S3)?;
            only("host-key", self.host_key.is_some(), ReplicaKind::Sftp)?;
            let known_hosts = self.known_hosts_path.is_some();
            only("known-hosts-path", known_hosts, ReplicaKind::Sftp)?;
            let ignore = self.insecure_ignore_host_key.is_some();
            only("insecure-ignore-host-key", ignore, ReplicaKind::Sftp)?;
        }
        check_unknown_security_keys(self.unknown.keys(), at)
    }

    /// The secrets this replica holds (keys, tokens, passwords, age identities, a URL's
    /// password), for redaction wherever text is printed.
    pub fn secrets(&self) -> Vec<String> {
        let mut out: Vec<String> = [
            &self.secret_access_key,
            &self.account_key,
            &self.sas_token,
            &self.password,
        ]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
        if let Some(age) = &self.age {
            out.extend(age.identities.iter().cloned());
        }
        if let Some(pw) = self
            .url
            .as_deref()
            .and_then(|u| ::url::Url::parse(u).ok())
            .and_then(|u| u.password().map(str::to_string))
        {
            out.push(pw);
        }
        out.retain(|s| !s.is_empty());
        out
    }

    /// Resolve `url` into fields (explicit fields win) and check the combination rules.
    pub fn resolve(&self) -> Result<ReplicaConfig> {
        self.check_security("replica")?;
        let mut out = self.clone();
        if let Some(p) = &self.path {
            if crate::url::is_url(p) {
                return Err(Error::InvalidConfig(format!(
                    "replica path cannot be a url, please use the 'url' field instead: {}",
                    crate::url::redact_url(p)
                )));
            }
        }
        if let Some(u) = &self.url {
            let from_url = crate::url::parse_replica_url(u)?;
            let kind = from_url.kind()?;
            if self.path.is_some() {
                return Err(Error::InvalidConfig(format!(
                    "cannot specify url & path for {kind} replica"
                )));
            }
            if self.bucket.is_some()
                && matches!(kind, ReplicaKind::S3 | ReplicaKind::Gcs | ReplicaKind::Abs)
            {
                return Err(Error::InvalidConfig(format!(
                    "cannot specify url & bucket for {kind} replica"
                )));
            }
            if self.host.is_some() && kind == ReplicaKind::Sftp {
                return Err(Error::InvalidConfig(
                    "cannot specify url & host for sftp replica".into(),
                ));
            }
            out.replica_type = Some(kind.to_string());
            macro_rules! fill {
                ($($f:ident),*) => { $( if out.$f.is_none() { out.$f = from_url.$f.clone(); } )* };
            }
            fill!(
                path,
                bucket,
                region,
                endpoint,
                account_name,
                host,
                user,
                password,
                skip_verify,
                host_key,
                strict_host_key_checking
            );
            if from_url.force_path_style == Some(true) && out.force_path_style.is_none() {
                out.force_path_style = Some(true);
            }
        }
        // The canonical name (`gs`, Litestream v0.5's name for gcs, becomes `gcs`).
        let kind = out.kind()?;
        out.replica_type = Some(kind.to_string());
        if kind == ReplicaKind::File {
            if let Some(p) = &out.path {
                out.path = Some(super::absolute_path(p)?.to_string_lossy().into_owned());
            }
        }
        Ok(out)
    }
}

/// Words that make an unknown key a security setting (`sse-kms-key-id`, `tls-ca-cert`, ...).
const SECURITY_WORDS: &[&str] = &[
    "age",
    "sse",
    "kms",
    "encrypt",
    "encryption",
    "encrypted",
    "tls",
    "ssl",
    "cert",
    "certificate",
    "ca",
    "verify",
    "insecure",
    "cipher",
    "recipients",
    "identities",
    "hostkey",
    "fingerprint",
];

/// Refuse unknown keys that name a security setting: ignoring them would silently weaken
/// what the user asked for.
pub(super) fn check_unknown_security_keys<'a>(
    keys: impl Iterator<Item = &'a String>,
    at: &str,
) -> Result<()> {
    for key in keys {
        let lower = key.to_ascii_lowercase();
        let security = lower
            .split(['-', '_', '.'])
            .any(|w| SECURITY_WORDS.contains(&w))
            || lower.contains("host-key")
            || lower.contains("known-hosts");
        if security {
            return Err(Error::InvalidConfig(format!(
                "{at}.{key}: unknown security setting; refusing to ignore it"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn gcs_replicas_in_both_spellings() {
        let text = "dbs:\n  - path: /d.db\n    replicas:\n      - type: gcs\n        \
                    bucket: b\n        path: db\n      - type: gs\n        bucket: b\n      \
                    - url: gs://b/db\n";
        let c = Config::parse(text).expect("parse");
        for r in c.dbs[0].all_replicas() {
            let r = r.resolve().expect("resolve");
            assert_eq!(
                (r.kind().ok(), r.bucket.as_deref()),
                (Some(ReplicaKind::Gcs), Some("b"))
            );
            assert_eq!(r.replica_type.as_deref(), Some("gcs"));
        }
        let bad = ReplicaConfig {
            url: Some("gcs://b/db".into()),
            bucket: Some("other".into()),
            ..Default::default()
        };
        let e = bad.resolve().expect_err("url and bucket");
        assert!(e
            .to_string()
            .contains("cannot specify url & bucket for gcs replica"));
    }

    #[test]
    fn rejects_bad_combinations() {
        let r = ReplicaConfig {
            url: Some("s3://b/p".into()),
            path: Some("x".into()),
            ..Default::default()
        };
        assert!(r
            .resolve()
            .unwrap_err()
            .to_string()
            .contains("cannot specify url & path"));
        let r = ReplicaConfig {
            replica_type: Some("ftp".into()),
            ..Default::default()
        };
        assert!(r
            .resolve()
            .unwrap_err()
            .to_string()
            .contains("unknown replica type in config: \"ftp\""));
        let r = ReplicaConfig {
            path: Some("s3://b/p".into()),
            ..Default::default()
        };
        assert!(r
            .resolve()
            .unwrap_err()
            .to_string()
            .contains("please use the 'url' field"));
    }
}
