//! Options of a replicated database and of each of its replicas, with Litestream's defaults.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{DbConfig, ReplicaConfig};
use crate::error::{Error, Result};
use crate::replica_client::ReplicaClient;
use crate::retry::RetryConfig;

use super::ltx_options::{LtxOptions, ReplicaFormat};

/// Options of one replicated database (the `dbs[]` keys of `litestream.yml`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbOptions {
    /// Meta directory; `None` means `<dir>/.<name>-litestream` next to the database.
    pub meta_path: Option<PathBuf>,
    /// How often the WAL is polled (`monitor-interval`, default 1 s). Polling is the source of
    /// truth; file-system notifications only wake the loop early.
    pub monitor_interval: Duration,
    /// `checkpoint-interval` (default 1 min): a PASSIVE checkpoint once the main database file
    /// is older than this and the shadow WAL holds more than one frame. `None` disables it.
    pub checkpoint_interval: Option<Duration>,
    /// `min-checkpoint-page-count` (default 1000): shadow WAL size that triggers a PASSIVE
    /// checkpoint. Must be greater than zero.
    pub min_checkpoint_page_count: u64,
    /// `max-checkpoint-page-count` (default 10000): shadow WAL size that triggers a RESTART
    /// checkpoint. `None` disables it.
    pub max_checkpoint_page_count: Option<u64>,
    /// `truncate-page-count` (default 500000): real WAL size that triggers a TRUNCATE
    /// checkpoint, which also shrinks the `-wal` file. `None` disables it.
    pub truncate_page_count: Option<u64>,
    /// Busy timeout of the engine's own SQLite connections (default 1 s, as Litestream).
    pub busy_timeout: Duration,
    /// Upper bound on the bytes of old shadow WAL files kept for replicas that lag behind
    /// (default 1 GiB). A replica whose position falls out of this window starts over from a
    /// new snapshot in the same generation instead of blocking local cleanup forever.
    pub max_shadow_wal_bytes: u64,
    /// Wake the monitor loop early when the `-wal` file changes (default true).
    pub watch_wal: bool,
}

impl Default for DbOptions {
    fn default() -> Self {
        DbOptions {
            meta_path: None,
            monitor_interval: Duration::from_secs(1),
            checkpoint_interval: Some(Duration::from_secs(60)),
            min_checkpoint_page_count: 1000,
            max_checkpoint_page_count: Some(10_000),
            truncate_page_count: Some(500_000),
            busy_timeout: Duration::from_secs(1),
            max_shadow_wal_bytes: 1 << 30,
            watch_wal: true,
        }
    }
}

fn nonzero(d: Option<Duration>) -> Option<Duration> {
    d.filter(|d| !d.is_zero())
}

impl DbOptions {
    /// Options from a `dbs[]` entry; keys that are not set keep Litestream's defaults.
    pub fn from_config(c: &DbConfig) -> Result<DbOptions> {
        let d = DbOptions::default();
        let opts = DbOptions {
            meta_path: c.meta_path.as_ref().map(PathBuf::from),
            monitor_interval: c
                .monitor_interval
                .map(|g| g.0)
                .unwrap_or(d.monitor_interval),
            checkpoint_interval: match c.checkpoint_interval {
                Some(g) => nonzero(Some(g.0)),
                None => d.checkpoint_interval,
            },
            min_checkpoint_page_count: c
                .min_checkpoint_page_count
                .unwrap_or(d.min_checkpoint_page_count),
            max_checkpoint_page_count: match c.max_checkpoint_page_count {
                Some(0) => None,
                Some(n) => Some(n),
                None => d.max_checkpoint_page_count,
            },
            truncate_page_count: match c.truncate_page_count {
                Some(0) => None,
                Some(n) => Some(n),
                None => d.truncate_page_count,
            },
            ..d
        };
        opts.validate()?;
        Ok(opts)
    }

    /// Check the options the way Litestream does.
    pub fn validate(&self) -> Result<()> {
        if self.min_checkpoint_page_count == 0 {
            return Err(Error::InvalidConfig(
                "minimum checkpoint page count required".into(),
            ));
        }
        if self.monitor_interval.is_zero() {
            return Err(Error::InvalidConfig(
                "monitor interval must be greater than zero".into(),
            ));
        }
        Ok(())
    }
}

/// Options of one replica (the `dbs[].replicas[]` timing keys of `litestream.yml`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaOptions {
    /// At most one upload round per `sync-interval` (default 1 s), and none while idle.
    pub sync_interval: Duration,
    /// `snapshot-interval`: take a snapshot this often (default `None`: only on a new
    /// generation and when retention needs one).
    pub snapshot_interval: Option<Duration>,
    /// `retention` (default 24 h); `None` disables retention.
    pub retention: Option<Duration>,
    /// `retention-check-interval` (default 1 h).
    pub retention_check_interval: Duration,
    /// `validation-interval` (default `None`): this often, restore the replica up to a pinned
    /// position and compare its checksum with the database's (see
    /// [`Replicator::validate`](super::Replicator::validate)).
    pub validation_interval: Option<Duration>,
    /// Retries of each replica request.
    pub retry: RetryConfig,
    /// The format of a new (empty) replica path (default v0.3; see [`ReplicaFormat`]).
    pub format: ReplicaFormat,
    /// Options of the LTX format (used when the replica is written in LTX).
    pub ltx: LtxOptions,
}

impl Default for ReplicaOptions {
    fn default() -> Self {
        ReplicaOptions {
            sync_interval: Duration::from_secs(1),
            snapshot_interval: None,
            retention: Some(Duration::from_secs(24 * 3600)),
            retention_check_interval: Duration::from_secs(3600),
            validation_interval: None,
            retry: RetryConfig::default(),
            format: ReplicaFormat::default(),
            ltx: LtxOptions::default(),
        }
    }
}

impl ReplicaOptions {
    /// Options from a replica entry; keys that are not set keep Litestream's defaults.
    pub fn from_config(c: &ReplicaConfig) -> ReplicaOptions {
        let d = ReplicaOptions::default();
        ReplicaOptions {
            sync_interval: c.sync_interval.map(|g| g.0).unwrap_or(d.sync_interval),
            snapshot_interval: nonzero(c.snapshot_interval.map(|g| g.0)),
            retention: match c.retention {
                Some(g) => nonzero(Some(g.0)),
                None => d.retention,
            },
            retention_check_interval: c
                .retention_check_interval
                .map(|g| g.0)
                .filter(|d| !d.is_zero())
                .unwrap_or(d.retention_check_interval),
            validation_interval: nonzero(c.validation_interval.map(|g| g.0)),
            retry: d.retry,
            format: d.format,
            ltx: d.ltx,
        }
    }
}

/// One replica of a database: a name, a storage client and its options.
#[derive(Clone)]
pub struct ReplicaHandleConfig {
    /// Replica name, unique per database (Litestream's default is the replica type).
    pub name: String,
    /// Storage backend.
    pub client: Arc<dyn ReplicaClient>,
    /// Timing options.
    pub options: ReplicaOptions,
}

impl ReplicaHandleConfig {
    /// A replica named after its client's type, with default options.
    pub fn new(client: Arc<dyn ReplicaClient>) -> Self {
        ReplicaHandleConfig {
            name: client.kind().to_string(),
            client,
            options: ReplicaOptions::default(),
        }
    }
}

impl fmt::Debug for ReplicaHandleConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplicaHandleConfig")
            .field("name", &self.name)
            .field("client", &self.client)
            .field("options", &self.options)
            .finish()
    }
}
