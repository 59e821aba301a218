//! The Litestream v0.5 keys of `litestream.yml` that drive the LTX replication path
//! (`snapshot`, `levels`, `l0-retention`, `l0-retention-check-interval`, `retention`), the
//! replica format keys (`format`, top level and per replica; an extension). The v0.5 keys that
//! are accepted but do nothing here are the binary's (it logs each by name).

use std::time::Duration;

use serde::Deserialize;

use crate::config::{Config, DbConfig, GoDuration, ReplicaConfig};
use crate::engine::{LtxOptions, ReplicaFormat, ReplicaOptions};
use crate::error::{Error, Result};

/// `snapshot:` (top level or per database, as Litestream v0.5).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "kebab-case")]
pub struct SnapshotConfig {
    /// `interval` (default 24h): an L9 snapshot this often.
    pub interval: Option<GoDuration>,
    /// `retention` (default 24h): how long L9 snapshots are kept.
    pub retention: Option<GoDuration>,
}

/// One entry of `levels:` (level 1 first).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "kebab-case")]
pub struct LevelConfig {
    /// `interval`: how often the level is compacted from the one below.
    pub interval: Option<GoDuration>,
}

/// `retention:` (top level, as Litestream v0.5).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "kebab-case")]
pub struct RetentionConfig {
    /// `enabled` (default true): false deletes nothing remotely.
    pub enabled: Option<bool>,
}

fn nonzero(d: Option<GoDuration>, what: &str) -> Result<Option<Duration>> {
    match d {
        Some(GoDuration(d)) if d.is_zero() => Err(Error::InvalidConfig(format!(
            "{what} must be greater than zero"
        ))),
        other => Ok(other.map(|g| g.0)),
    }
}

/// Parse a `format` value (`v0.3` or `ltx`), naming `what` in the error.
pub(crate) fn parse_format(s: &str, what: &str) -> Result<ReplicaFormat> {
    ReplicaFormat::parse(s).ok_or_else(|| {
        Error::InvalidConfig(format!(
            "{what}: unknown replica format {s:?} (expected \"v0.3\" or \"ltx\")"
        ))
    })
}

impl Config {
    /// The LTX options of `db` from the top-level v0.5 keys (`snapshot` may also be set per
    /// database, which wins), Litestream v0.5.17's defaults otherwise.
    pub fn ltx_options(&self, db: &DbConfig) -> Result<LtxOptions> {
        let d = LtxOptions::default();
        let snap = db.snapshot.as_ref().or(self.snapshot.as_ref());
        let level_intervals = match &self.levels {
            None => d.level_intervals,
            Some(levels) => {
                if levels.len() > 8 {
                    return Err(Error::InvalidConfig(format!(
                        "levels: at most 8 compaction levels, not {}",
                        levels.len()
                    )));
                }
                levels
                    .iter()
                    .enumerate()
                    .map(|(i, l)| {
                        nonzero(l.interval, &format!("levels[{i}].interval"))?.ok_or_else(|| {
                            Error::InvalidConfig(format!("levels[{i}].interval required"))
                        })
                    })
                    .collect::<Result<Vec<_>>>()?
            }
        };
        Ok(LtxOptions {
            level_intervals,
            snapshot_interval: nonzero(snap.and_then(|s| s.interval), "snapshot.interval")?
                .unwrap_or(d.snapshot_interval),
            snapshot_retention: nonzero(snap.and_then(|s| s.retention), "snapshot.retention")?
                .unwrap_or(d.snapshot_retention),
            // v0.5.17 accepts `l0-retention: 0` as "no minimum age".
            l0_retention: self.l0_retention.map(|g| g.0).unwrap_or(d.l0_retention),
            l0_retention_check_interval: nonzero(
                self.l0_retention_check_interval,
                "l0-retention-check-interval",
            )?
            .unwrap_or(d.l0_retention_check_interval),
            retention_enabled: self
                .retention
                .as_ref()
                .and_then(|r| r.enabled)
                .unwrap_or(d.retention_enabled),
        })
    }

    /// The format a new replica `rc` is written in: its own `format`, else the top-level
    /// `format`, else `default` (the `replicate -format` flag or v0.3).
    pub fn replica_format(
        &self,
        rc: &ReplicaConfig,
        default: ReplicaFormat,
    ) -> Result<ReplicaFormat> {
        if let Some(f) = &rc.format {
            return parse_format(f, "replica format");
        }
        match &self.format {
            Some(f) => parse_format(f, "format"),
            None => Ok(default),
        }
    }
}

impl ReplicaOptions {
    /// These options with the format and LTX options of replica `rc` of `db` in `cfg`.
    pub fn with_ltx_config(
        mut self,
        cfg: &Config,
        db: &DbConfig,
        rc: &ReplicaConfig,
        default_format: ReplicaFormat,
    ) -> Result<ReplicaOptions> {
        self.format = cfg.replica_format(rc, default_format)?;
        self.ltx = cfg.ltx_options(db)?;
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v05_keys_set_the_ltx_options_and_formats() {
        let cfg = Config::parse(
            "format: ltx\nsnapshot:\n  interval: 1h\n  retention: 2h\nlevels:\n  - interval: 10s\n  - interval: 1m\nl0-retention: 1m\nl0-retention-check-interval: 5s\nretention:\n  enabled: false\nsocket:\n  enabled: true\ndbs:\n  - path: /tmp/a.db\n    dir: /x\n    replica:\n      url: file:///tmp/r\n      format: v0.3\n  - path: /tmp/b.db\n    snapshot: { interval: 30m }\n    replica: { url: file:///tmp/s }\n",
        )
        .unwrap();
        let a = cfg.ltx_options(&cfg.dbs[0]).unwrap();
        assert_eq!(
            a,
            LtxOptions {
                level_intervals: vec![Duration::from_secs(10), Duration::from_secs(60)],
                snapshot_interval: Duration::from_secs(3600),
                snapshot_retention: Duration::from_secs(7200),
                l0_retention: Duration::from_secs(60),
                l0_retention_check_interval: Duration::from_secs(5),
                retention_enabled: false,
            }
        );
        let b = cfg.ltx_options(&cfg.dbs[1]).unwrap();
        assert_eq!(b.snapshot_interval, Duration::from_secs(1800));
        let ra = cfg.dbs[0].all_replicas();
        let rb = cfg.dbs[1].all_replicas();
        assert_eq!(
            cfg.replica_format(&ra[0], ReplicaFormat::V3).unwrap(),
            ReplicaFormat::V3
        );
        assert_eq!(
            cfg.replica_format(&rb[0], ReplicaFormat::V3).unwrap(),
            ReplicaFormat::Ltx
        );
        let unknown = cfg.unknown_keys();
        assert!(unknown.contains(&"socket".to_string()), "{unknown:?}");
    }

    #[test]
    fn bad_v05_values_are_errors_naming_the_key() {
        let bad = |text: &str, what: &str| {
            let cfg = Config::parse(text).unwrap();
            let e = cfg
                .ltx_options(&cfg.dbs[0])
                .err()
                .map(|e| e.to_string())
                .or_else(|| {
                    let r = cfg.dbs[0].all_replicas();
                    cfg.replica_format(&r[0], ReplicaFormat::V3)
                        .err()
                        .map(|e| e.to_string())
                })
                .unwrap_or_default();
            assert!(e.contains(what), "{e}");
        };
        bad(
            "levels:\n  - interval: 0s\ndbs:\n  - path: /tmp/a.db\n",
            "levels[0].interval",
        );
        bad(
            "snapshot: { interval: 0s }\ndbs:\n  - path: /tmp/a.db\n",
            "snapshot.interval",
        );
        bad(
            "format: v9\ndbs:\n  - path: /tmp/a.db\n    replica: { url: file:///tmp/r }\n",
            "unknown replica format",
        );
    }
}
