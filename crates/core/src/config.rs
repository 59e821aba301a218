//! The Litestream configuration file (`litestream.yml`): loading, `$VAR` expansion exactly as
//! Go's `os.ExpandEnv`, defaults and validation.
//!
//! Every key of Litestream v0.3.13 is accepted with its default. Unknown keys are not an error
//! (Litestream ignores them) but are reported by [`Config::unknown_keys`] so callers can warn.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::error::{Error, Result};
use crate::timefmt::parse_go_duration;

/// Default config path when neither `-config` nor `LITESTREAM_CONFIG` is given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/litestream.yml";

/// A duration as Litestream reads it: a Go duration string, or a bare integer in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GoDuration(pub Duration);

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(GoDuration(Duration::from_nanos(n))),
            Raw::Str(s) => parse_go_duration(&s)
                .map(GoDuration)
                .ok_or_else(|| serde::de::Error::custom(format!("invalid duration {s:?}"))),
        }
    }
}

/// Logging settings (`logging:`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "kebab-case")]
pub struct LoggingConfig {
    /// `debug`, `info`, `warn`/`warning`, `error` (default `info`).
    pub level: Option<String>,
    /// `text` (default) or `json`.
    #[serde(rename = "type")]
    pub log_type: Option<String>,
    /// Log to stderr instead of stdout.
    pub stderr: bool,
}

/// Client-side encryption keys (`age:`); see [`crate::age`].
#[derive(Clone, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "kebab-case")]
pub struct AgeConfig {
    /// age identities (private keys) used to decrypt. Never shown by `Debug`.
    pub identities: Vec<String>,
    /// age recipients (public keys) used to encrypt.
    pub recipients: Vec<String>,
    /// `identity-files` (extension): files holding identities, one per line (`age-keygen`
    /// output; `#` comments allowed), so that no secret key need sit in the YAML.
    pub identity_files: Vec<String>,
}

impl std::fmt::Debug for AgeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgeConfig")
            .field(
                "identities",
                &format_args!("[{} redacted]", self.identities.len()),
            )
            .field("recipients", &self.recipients)
            .field("identity_files", &self.identity_files)
            .finish()
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
fn redacted(v: &Option<String>) -> Option<&'static str> {
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
    /// The replica type after applying the URL scheme (default `file`).
    pub fn kind(&self) -> String {
        self.replica_type.clone().unwrap_or_else(|| "file".into())
    }

    /// The replica name (default: its type).
    pub fn display_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.kind())
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
        let only = |key: &str, set: bool, types: &[&str]| -> Result<()> {
            if set && !types.contains(&kind.as_str()) {
                return Err(Error::InvalidConfig(format!(
                    "{at}.{key}: not supported for {kind} replicas (only {}); refusing a \
                     security setting that would be ignored",
                    types.join(", ")
                )));
            }
            Ok(())
        };
        only("skip-verify", self.skip_verify.is_some(), &["s3"])?;
        only("host-key", self.host_key.is_some(), &["sftp"])?;
        only(
            "known-hosts-path",
            self.known_hosts_path.is_some(),
            &["sftp"],
        )?;
        only(
            "insecure-ignore-host-key",
            self.insecure_ignore_host_key.is_some(),
            &["sftp"],
        )?;
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
            let kind = from_url.kind();
            if self.path.is_some() {
                return Err(Error::InvalidConfig(format!(
                    "cannot specify url & path for {kind} replica"
                )));
            }
            if self.bucket.is_some() && matches!(kind.as_str(), "s3" | "gcs" | "abs") {
                return Err(Error::InvalidConfig(format!(
                    "cannot specify url & bucket for {kind} replica"
                )));
            }
            if self.host.is_some() && kind == "sftp" {
                return Err(Error::InvalidConfig(
                    "cannot specify url & host for sftp replica".into(),
                ));
            }
            out.replica_type = Some(kind);
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
        if out.kind() == "gs" {
            // Litestream v0.5's name for the gcs replica (v0.3.13 knows only `gcs`).
            out.replica_type = Some("gcs".into());
        }
        let kind = out.kind();
        if !matches!(kind.as_str(), "file" | "s3" | "gcs" | "abs" | "sftp") {
            return Err(Error::InvalidConfig(format!(
                "unknown replica type in config: {kind:?}"
            )));
        }
        if kind == "file" {
            if let Some(p) = &out.path {
                out.path = Some(absolute_path(p)?.to_string_lossy().into_owned());
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
fn check_unknown_security_keys<'a>(keys: impl Iterator<Item = &'a String>, at: &str) -> Result<()> {
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

/// One database (`dbs[]`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "kebab-case")]
pub struct DbConfig {
    /// `path` of the SQLite database (required).
    pub path: String,
    /// `meta-path` (default `<dir>/.<name>-litestream`).
    pub meta_path: Option<String>,
    /// `monitor-interval` (default 1s).
    pub monitor_interval: Option<GoDuration>,
    /// `checkpoint-interval` (default 1m).
    pub checkpoint_interval: Option<GoDuration>,
    /// `min-checkpoint-page-count` (default 1000).
    pub min_checkpoint_page_count: Option<u64>,
    /// `max-checkpoint-page-count` (default 10000; 0 disables RESTART checkpoints).
    pub max_checkpoint_page_count: Option<u64>,
    /// `truncate-page-count` (extension; default 500000): WAL size that forces TRUNCATE.
    pub truncate_page_count: Option<u64>,
    /// `replicas`.
    pub replicas: Vec<ReplicaConfig>,
    /// `replica` (as Litestream v0.5): a single replica.
    pub replica: Option<ReplicaConfig>,
    /// `snapshot` (as Litestream v0.5): this database's L9 snapshot interval and retention.
    pub snapshot: Option<crate::config_ltx::SnapshotConfig>,
    /// Keys this version does not know.
    #[serde(flatten)]
    pub unknown: BTreeMap<String, serde::de::IgnoredAny>,
}

impl DbConfig {
    /// Every replica: `replicas` followed by `replica`.
    pub fn all_replicas(&self) -> Vec<ReplicaConfig> {
        let mut v = self.replicas.clone();
        v.extend(self.replica.clone());
        v
    }
}

/// The whole configuration file.
#[derive(Clone, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "kebab-case")]
pub struct Config {
    /// `dbs`.
    pub dbs: Vec<DbConfig>,
    /// `addr`: metrics listen address `host:port`.
    pub addr: Option<String>,
    /// `exec`: command to run as a child (replicate only).
    pub exec: Option<String>,
    /// `access-key-id` copied into every replica without one.
    pub access_key_id: Option<String>,
    /// `secret-access-key` copied into every replica without one.
    pub secret_access_key: Option<String>,
    /// `logging`.
    pub logging: LoggingConfig,
    /// `format` (extension): `v0.3` or `ltx`, the format of new (empty) replica paths.
    pub format: Option<String>,
    /// `snapshot` (Litestream v0.5): L9 snapshot interval and retention of LTX replicas.
    pub snapshot: Option<crate::config_ltx::SnapshotConfig>,
    /// `levels` (Litestream v0.5): compaction intervals of levels 1, 2, ...
    pub levels: Option<Vec<crate::config_ltx::LevelConfig>>,
    /// `l0-retention` (Litestream v0.5, default 5m).
    pub l0_retention: Option<GoDuration>,
    /// `l0-retention-check-interval` (Litestream v0.5, default 15s).
    pub l0_retention_check_interval: Option<GoDuration>,
    /// `retention` (Litestream v0.5): `enabled: false` leaves remote deletes to the bucket.
    pub retention: Option<crate::config_ltx::RetentionConfig>,
    /// Keys this version does not know.
    #[serde(flatten)]
    pub unknown: BTreeMap<String, serde::de::IgnoredAny>,
}

/// The top-level `secret-access-key` prints as `[redacted]`.
impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("dbs", &self.dbs)
            .field("addr", &self.addr)
            .field("exec", &self.exec)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &redacted(&self.secret_access_key))
            .field("logging", &self.logging)
            .field("unknown", &self.unknown)
            .finish()
    }
}

impl Config {
    /// Parse configuration text (after env expansion), apply top-level credentials and make
    /// database paths absolute.
    pub fn parse(text: &str) -> Result<Config> {
        let mut config: Config = if text.trim().is_empty() {
            Config::default()
        } else {
            // No snippet: the lines around an error may hold credentials.
            serde_saphyr::from_str(text).map_err(|e| {
                Error::InvalidConfig(format!("cannot parse config: {}", e.without_snippet()))
            })?
        };
        check_unknown_security_keys(config.unknown.keys(), "config")?;
        for (i, db) in config.dbs.iter().enumerate() {
            check_unknown_security_keys(db.unknown.keys(), &format!("dbs[{i}]"))?;
            for (j, r) in db.replicas.iter().enumerate() {
                r.check_security(&format!("dbs[{i}].replicas[{j}]"))?;
            }
            if let Some(r) = &db.replica {
                r.check_security(&format!("dbs[{i}].replica"))?;
            }
        }
        for db in &mut config.dbs {
            if db.path.is_empty() {
                return Err(Error::InvalidConfig("database path required".into()));
            }
            db.path = absolute_path(&db.path)?.to_string_lossy().into_owned();
            if db.min_checkpoint_page_count == Some(0) {
                return Err(Error::InvalidConfig(
                    "minimum checkpoint page count required".into(),
                ));
            }
            for r in db.replicas.iter_mut().chain(db.replica.iter_mut()) {
                if r.access_key_id.is_none() {
                    r.access_key_id = config.access_key_id.clone();
                }
                if r.secret_access_key.is_none() {
                    r.secret_access_key = config.secret_access_key.clone();
                }
            }
        }
        if let Some(t) = &config.logging.log_type {
            if !matches!(t.as_str(), "text" | "json") {
                return Err(Error::InvalidConfig(format!(
                    "invalid logging.type {t:?}: must be \"text\" or \"json\""
                )));
            }
        }
        Ok(config)
    }

    /// Read, expand (unless `expand_env` is false) and parse the file at `path`.
    pub fn load(path: &Path, expand_env: bool) -> Result<Config> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::InvalidConfig(format!(
                    "config file not found: {}",
                    path.display()
                )))
            }
            Err(e) => return Err(Error::io(path.display().to_string(), e)),
        };
        let (text, values) = if expand_env {
            expand_with_values(&text, |name| std::env::var(name).unwrap_or_default())
        } else {
            (text, Vec::new())
        };
        // A message quoting a value that came from the environment shows it redacted.
        Config::parse(&text).map_err(|e| match e {
            Error::InvalidConfig(msg) => Error::InvalidConfig(redact_values(&msg, &values)),
            other => other,
        })
    }

    /// Every secret of every replica (see [`ReplicaConfig::secrets`]) and the top-level
    /// `secret-access-key`.
    pub fn secrets(&self) -> Vec<String> {
        let mut out: Vec<String> = self.secret_access_key.iter().cloned().collect();
        for db in &self.dbs {
            for r in db.all_replicas() {
                out.extend(r.secrets());
            }
        }
        out
    }

    /// The database whose expanded absolute path equals `path`.
    pub fn db_by_path(&self, path: &str) -> Option<&DbConfig> {
        self.dbs.iter().find(|d| d.path == path)
    }

    /// Unknown keys at every level, as dotted paths, for warnings.
    pub fn unknown_keys(&self) -> Vec<String> {
        let mut out: Vec<String> = self.unknown.keys().cloned().collect();
        for (i, db) in self.dbs.iter().enumerate() {
            out.extend(db.unknown.keys().map(|k| format!("dbs[{i}].{k}")));
            for (j, r) in db.all_replicas().iter().enumerate() {
                out.extend(
                    r.unknown
                        .keys()
                        .map(|k| format!("dbs[{i}].replicas[{j}].{k}")),
                );
            }
        }
        out
    }
}

/// The config path to use: `-config`, else `LITESTREAM_CONFIG`, else `/etc/litestream.yml`.
pub fn default_config_path(flag: Option<&str>) -> Result<PathBuf> {
    if let Some(p) = flag {
        return absolute_path(p);
    }
    match std::env::var("LITESTREAM_CONFIG") {
        Ok(p) if !p.is_empty() => absolute_path(&p),
        _ => Ok(PathBuf::from(DEFAULT_CONFIG_PATH)),
    }
}

/// Expand `~` and make a path absolute and clean, as Litestream does for database paths.
pub fn absolute_path(p: &str) -> Result<PathBuf> {
    let expanded = if p == "~" || p.starts_with("~/") {
        let home = std::env::var("HOME")
            .map_err(|_| Error::InvalidConfig(format!("cannot expand {p:?}: HOME is not set")))?;
        format!("{home}{}", &p[1..])
    } else {
        p.to_string()
    };
    let path = PathBuf::from(&expanded);
    let abs = if path.is_absolute() {
        path
    } else {
        std::env::current_dir()
            .map_err(|e| Error::io(".", e))?
            .join(path)
    };
    Ok(PathBuf::from(crate::layout::clean(&abs.to_string_lossy())))
}

/// Expand `$NAME` and `${NAME}` in `text` exactly like Go's `os.ExpandEnv`.
pub fn expand_env_text(text: &str) -> String {
    expand_with(text, |name| std::env::var(name).unwrap_or_default())
}

fn is_special(b: u8) -> bool {
    matches!(b, b'*' | b'#' | b'$' | b'@' | b'!' | b'?' | b'-') || b.is_ascii_digit()
}

fn is_alnum(b: u8) -> bool {
    b == b'_' || b.is_ascii_alphanumeric()
}

/// Returns (name, width consumed after the `$`).
fn shell_name(s: &[u8]) -> (Option<&[u8]>, usize) {
    if s[0] == b'{' {
        if s.len() > 2 && is_special(s[1]) && s[2] == b'}' {
            return (Some(&s[1..2]), 3);
        }
        for i in 1..s.len() {
            if s[i] == b'}' {
                if i == 1 {
                    return (None, 2);
                }
                return (Some(&s[1..i]), i + 1);
            }
        }
        return (None, 1);
    }
    if is_special(s[0]) {
        return (Some(&s[0..1]), 1);
    }
    let n = s.iter().take_while(|b| is_alnum(**b)).count();
    if n == 0 {
        (None, 0)
    } else {
        (Some(&s[..n]), n)
    }
}

/// Replace every occurrence of the (non-trivial) `values` in `msg` with `[redacted]`.
fn redact_values(msg: &str, values: &[String]) -> String {
    let mut out = msg.to_string();
    let mut values: Vec<&String> = values.iter().filter(|v| v.trim().len() >= 3).collect();
    values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    for v in values {
        out = out.replace(v.as_str(), "[redacted]");
    }
    out
}

/// [`expand_env_text`] with a custom lookup (for tests).
pub fn expand_with(text: &str, lookup: impl Fn(&str) -> String) -> String {
    expand_with_values(text, lookup).0
}

/// [`expand_with`], also returning the values it substituted (to keep them out of errors).
pub fn expand_with_values(text: &str, lookup: impl Fn(&str) -> String) -> (String, Vec<String>) {
    let mut values = Vec::new();
    let s = text.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(s.len());
    let mut i = 0;
    let mut j = 0;
    while j < s.len() {
        if s[j] == b'$' && j + 1 < s.len() {
            out.extend_from_slice(&s[i..j]);
            let (name, w) = shell_name(&s[j + 1..]);
            match name {
                None if w > 0 => {}
                None => out.push(b'$'),
                Some(n) => {
                    let v = lookup(&String::from_utf8_lossy(n));
                    out.extend_from_slice(v.as_bytes());
                    values.push(v);
                }
            }
            j += w;
            i = j + 1;
        }
        j += 1;
    }
    out.extend_from_slice(&s[i.min(s.len())..]);
    (String::from_utf8_lossy(&out).into_owned(), values)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> String {
        match name {
            "FOO" => "foo".into(),
            "B" => "bee".into(),
            _ => String::new(),
        }
    }

    #[test]
    fn expands_like_go() {
        assert_eq!(expand_with("a $FOO b", env), "a foo b");
        assert_eq!(expand_with("${FOO}x", env), "foox");
        assert_eq!(expand_with("$UNSET.", env), ".");
        assert_eq!(expand_with("$$", env), "");
        assert_eq!(expand_with("x${}y", env), "xy");
        assert_eq!(expand_with("5$%", env), "5$%");
        assert_eq!(expand_with("end$", env), "end$");
        assert_eq!(expand_with("${FOO:-def}", env), "");
        assert_eq!(expand_with("$B$FOO", env), "beefoo");
        assert_eq!(expand_with("${", env), "");
    }

    #[test]
    fn parses_full_config() {
        let text = r#"
addr: ":9090"
access-key-id: AKID
secret-access-key: SECRET
logging:
  level: debug
  type: json
dbs:
  - path: /data/app.db
    monitor-interval: 10ms
    checkpoint-interval: 5
    min-checkpoint-page-count: 10
    replicas:
      - url: s3://bkt.localhost:9000/app
        sync-interval: 250ms
        retention: 1h
      - type: file
        name: local
        path: /backup/app
        some-future-key: 1
"#;
        let c = Config::parse(text).expect("parse");
        assert_eq!(c.addr.as_deref(), Some(":9090"));
        let db = &c.dbs[0];
        assert_eq!(
            db.monitor_interval,
            Some(GoDuration(Duration::from_millis(10)))
        );
        assert_eq!(
            db.checkpoint_interval,
            Some(GoDuration(Duration::from_nanos(5)))
        );
        let r0 = db.replicas[0].resolve().expect("resolve");
        assert_eq!(r0.kind(), "s3");
        assert_eq!(r0.bucket.as_deref(), Some("bkt"));
        assert_eq!(r0.access_key_id.as_deref(), Some("AKID"));
        assert_eq!(r0.force_path_style, Some(true));
        let r1 = db.replicas[1].resolve().expect("resolve");
        assert_eq!(r1.display_name(), "local");
        assert_eq!(
            c.unknown_keys(),
            vec!["dbs[0].replicas[1].some-future-key".to_string()]
        );
    }

    #[test]
    fn security_settings_are_never_parsed_and_ignored() {
        let cases = [
            (
                "      - url: abs://acct@c/p\n        skip-verify: true\n",
                "dbs[0].replicas[0].skip-verify: not supported for abs replicas",
            ),
            (
                "      - url: s3://b/p\n        host-key: ssh-ed25519 AAAA\n",
                "dbs[0].replicas[0].host-key: not supported for s3 replicas",
            ),
            (
                "      - path: /r\n        insecure-ignore-host-key: true\n",
                "insecure-ignore-host-key: not supported for file replicas",
            ),
            (
                "      - url: s3://b/p\n        sse-kms-key-id: k\n",
                "dbs[0].replicas[0].sse-kms-key-id: unknown security setting",
            ),
            (
                "      - url: s3://b/p\n        tls-ca-cert: /ca.pem\n",
                "tls-ca-cert: unknown security setting",
            ),
        ];
        for (replica, needle) in cases {
            let text = format!("dbs:\n  - path: /data/app.db\n    replicas:\n{replica}");
            let err = Config::parse(&text).expect_err(replica).to_string();
            assert!(err.contains(needle), "{replica}: {err}");
        }
        let err = Config::parse("encryption-key: x\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("config.encryption-key"), "{err}");
        // The same settings where they apply are accepted.
        let ok = "dbs:\n  - path: /d.db\n    replicas:\n      - url: s3://b/p\n        \
                  skip-verify: true\n      - url: sftp://u@h/p\n        \
                  insecure-ignore-host-key: true\n        storage-class: x\n";
        Config::parse(ok).expect("valid security settings");
    }

    #[test]
    fn gcs_replicas_in_both_spellings() {
        let text = "dbs:\n  - path: /d.db\n    replicas:\n      - type: gcs\n        \
                    bucket: b\n        path: db\n      - type: gs\n        bucket: b\n      \
                    - url: gs://b/db\n";
        let c = Config::parse(text).expect("parse");
        for r in c.dbs[0].all_replicas() {
            let r = r.resolve().expect("resolve");
            assert_eq!((r.kind().as_str(), r.bucket.as_deref()), ("gcs", Some("b")));
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
    fn debug_never_prints_secrets() {
        let text = "secret-access-key: TOPSECRET1\ndbs:\n  - path: /d.db\n    replicas:\n      \
                    - url: s3://b/p\n        secret-access-key: TOPSECRET2\n      \
                    - url: sftp://u:TOPSECRET3@h/p\n      - url: abs://a@c/p\n        \
                    account-key: TOPSECRET4\n        sas-token: TOPSECRET5\n";
        let c = Config::parse(text).expect("parse");
        let mut shown = format!("{c:?}");
        for r in c.dbs[0].all_replicas() {
            shown.push_str(&format!("{:?}", r.resolve().expect("resolve")));
        }
        assert!(!shown.contains("TOPSECRET"), "{shown}");
        assert!(shown.contains("[redacted]"), "{shown}");
        let age = AgeConfig {
            identities: vec!["AGE-SECRET-KEY-1XYZ".into()],
            ..Default::default()
        };
        assert!(!format!("{age:?}").contains("AGE-SECRET"));
    }

    #[test]
    fn parse_errors_show_no_lines_and_no_expanded_values() {
        let dir = std::env::temp_dir().join(format!("ls-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("c.yml");
        std::env::set_var("LS_TEST_PARSE_SECRET", "hunter2-very-secret: [");
        std::fs::write(
            &path,
            "dbs:\n  - path: /d.db\n    replicas:\n      - url: s3://b/p\n        \
             secret-access-key: $LS_TEST_PARSE_SECRET\n        retention: 1h\n",
        )
        .expect("write");
        let err = Config::load(&path, true).unwrap_err().to_string();
        assert!(!err.contains("hunter2"), "{err}");
        assert!(err.contains("line 5"), "{err}");
        std::fs::write(
            &path,
            "dbs:\n  - path: /d.db\n    replicas:\n      - url: s3://b/p\n        \
             secret-access-key: plainsecret\n        retention: [\n",
        )
        .expect("write");
        let err = Config::load(&path, true).unwrap_err().to_string();
        assert!(!err.contains("plainsecret"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
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
