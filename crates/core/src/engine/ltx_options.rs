//! Which format a replica is written in, and the options of the LTX (Litestream v0.5) path.

use std::time::Duration;

/// The format a replica is written in (`format:` per replica or at the top level of
/// `litestream.yml`, `replicate -format`). A replica path that already holds data keeps its
/// format whatever this says: LTX data newer than any v0.3 data is continued in LTX, v0.3
/// data stays v0.3 (see `engine/ltx_replica.rs`). This only decides for an empty path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReplicaFormat {
    /// Litestream v0.3.13's generations, snapshots and WAL segments (the default: readable
    /// by both v0.3.13 and v0.5.x, and by every earlier v0.5 release on file and s3).
    #[default]
    V3,
    /// Litestream v0.5's LTX files in levels (readable by v0.5.16 and later only).
    Ltx,
}

impl ReplicaFormat {
    /// Parse `v0.3`/`v3`/`generations` or `ltx`/`v0.5`/`v5` (case-insensitive).
    pub fn parse(s: &str) -> Option<ReplicaFormat> {
        match s.trim().to_ascii_lowercase().as_str() {
            "v0.3" | "v3" | "0.3" | "generations" => Some(ReplicaFormat::V3),
            "ltx" | "v0.5" | "v5" | "0.5" => Some(ReplicaFormat::Ltx),
            _ => None,
        }
    }

    /// `v0.3` or `ltx`.
    pub fn as_str(self) -> &'static str {
        match self {
            ReplicaFormat::V3 => "v0.3",
            ReplicaFormat::Ltx => "ltx",
        }
    }
}

/// Options of an LTX replica, with Litestream v0.5.17's defaults (its global keys
/// `snapshot.interval`, `snapshot.retention`, `levels`, `l0-retention`,
/// `l0-retention-check-interval`, `retention.enabled`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LtxOptions {
    /// Compaction intervals of levels 1, 2, 3, ... (`levels: [{interval: 30s}, ...]`;
    /// default 30 s, 5 min, 1 h). At most 8 levels (level 9 holds snapshots).
    pub level_intervals: Vec<Duration>,
    /// `snapshot.interval` (default 24 h): an L9 snapshot this often; one is also taken at
    /// the first start on a replica without one.
    pub snapshot_interval: Duration,
    /// `snapshot.retention` (default 24 h): L9 snapshots older than this are deleted (the
    /// newest is always kept), and with them the L1+ files they make unnecessary.
    pub snapshot_retention: Duration,
    /// `l0-retention` (default 5 min): an L0 file compacted into L1 is deleted once older
    /// than this (the newest L0 file is always kept).
    pub l0_retention: Duration,
    /// `l0-retention-check-interval` (default 15 s).
    pub l0_retention_check_interval: Duration,
    /// `retention.enabled` (default true): false leaves every remote file in place (bucket
    /// lifecycle rules do the deleting).
    pub retention_enabled: bool,
}

impl Default for LtxOptions {
    fn default() -> Self {
        LtxOptions {
            level_intervals: vec![
                Duration::from_secs(30),
                Duration::from_secs(300),
                Duration::from_secs(3600),
            ],
            snapshot_interval: Duration::from_secs(24 * 3600),
            snapshot_retention: Duration::from_secs(24 * 3600),
            l0_retention: Duration::from_secs(300),
            l0_retention_check_interval: Duration::from_secs(15),
            retention_enabled: true,
        }
    }
}
