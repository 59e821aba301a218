//! The Litestream configuration file (`litestream.yml`): loading, `$VAR` expansion exactly as
//! Go's `os.ExpandEnv`, defaults and validation.
//!
//! The pieces: this module holds the file ([`Config`]) and each database ([`DbConfig`]);
//! `replica` one replica ([`ReplicaConfig`], [`ReplicaKind`]) and its security checks; `env`
//! the paths and `$VAR` expansion.
//!
//! Every key of Litestream v0.3.13 is accepted with its default. Unknown keys are not an error
//! (Litestream ignores them) but are reported by [`Config::unknown_keys`] so callers can warn.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::error::{Error, Result};
use crate::timefmt::parse_go_duration;

mod env;
mod replica;

pub use crate::config_ltx::{LevelConfig, RetentionConfig, SnapshotConfig};
pub use env::{
    absolute_path, default_config_path, expand_env_text, expand_home, expand_with,
    expand_with_values,
};
pub use replica::{ReplicaConfig, ReplicaKind};

use env::redact_values;
use replica::{check_unknown_security_keys, redacted};

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

/// Client-side encryption keys (`age:`); see [`AgeClient`](crate::AgeClient).
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
    pub snapshot: Option<SnapshotConfig>,
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
    pub snapshot: Option<SnapshotConfig>,
    /// `levels` (Litestream v0.5): compaction intervals of levels 1, 2, ...
    pub levels: Option<Vec<LevelConfig>>,
    /// `l0-retention` (Litestream v0.5, default 5m).
    pub l0_retention: Option<GoDuration>,
    /// `l0-retention-check-interval` (Litestream v0.5, default 15s).
    pub l0_retention_check_interval: Option<GoDuration>,
    /// `retention` (Litestream v0.5): `enabled: false` leaves remote deletes to the bucket.
    pub retention: Option<RetentionConfig>,
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

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(r0.kind().ok(), Some(ReplicaKind::S3));
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
}
