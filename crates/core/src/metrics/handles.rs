//! The handles the engine keeps: one struct of prometheus children per database and per
//! replica, created on first use and forgotten by [`unregister_db`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{lock, Store, STORE};

// ------------------------------------------------------------------------------------------
// primitives
// ------------------------------------------------------------------------------------------

/// A number that can be stored in a [`Gauge`].
pub trait GaugeValue {
    /// The value as `f64` (large integers may lose precision above 2^53).
    fn to_f64(self) -> f64;
}

macro_rules! gauge_value {
    ($($t:ty),*) => { $( impl GaugeValue for $t { fn to_f64(self) -> f64 { self as f64 } } )* };
}
gauge_value!(u8, u16, u32, u64, usize, i8, i16, i32, i64, isize, f32, f64);

/// Name and help of the metrics made by `Default` (not attached to any registry).
fn detached() -> prometheus::Opts {
    prometheus::Opts::new(
        "litestream_detached",
        "A metric not attached to any registry",
    )
}

/// A monotonically increasing integer (count or bytes).
#[derive(Debug, Clone)]
pub struct Counter(prometheus::IntCounter);

impl Counter {
    /// Add one.
    pub fn inc(&self) {
        self.0.inc();
    }
    /// Add `n`.
    pub fn add(&self, n: u64) {
        self.0.inc_by(n);
    }
    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.get()
    }
}

impl Default for Counter {
    /// A counter attached to no registry.
    fn default() -> Self {
        Counter(prometheus::IntCounter::with_opts(detached()).expect(super::VALID))
    }
}

/// A monotonically increasing float, used for accumulated seconds.
#[derive(Debug, Clone)]
pub struct FloatCounter(prometheus::Counter);

impl FloatCounter {
    /// Add `v` (negative or non-finite values are ignored: counters never go down).
    pub fn add(&self, v: f64) {
        if v.is_finite() && v > 0.0 {
            self.0.inc_by(v);
        }
    }
    /// Add a duration in seconds.
    pub fn add_duration(&self, d: Duration) {
        self.add(d.as_secs_f64());
    }
    /// The current value.
    pub fn get(&self) -> f64 {
        self.0.get()
    }
}

impl Default for FloatCounter {
    /// A counter attached to no registry.
    fn default() -> Self {
        FloatCounter(prometheus::Counter::with_opts(detached()).expect(super::VALID))
    }
}

/// A value that can go up and down.
#[derive(Debug, Clone)]
pub struct Gauge(prometheus::Gauge);

impl Gauge {
    /// Set the value. Infinities are stored as ±`f64::MAX`: prometheus' encoder writes them
    /// as `inf`, which is not valid exposition text.
    pub fn set(&self, v: impl GaugeValue) {
        self.0.set(v.to_f64().clamp(f64::MIN, f64::MAX));
    }
    /// The current value.
    pub fn get(&self) -> f64 {
        self.0.get()
    }
}

impl Default for Gauge {
    /// A gauge attached to no registry.
    fn default() -> Self {
        Gauge(prometheus::Gauge::with_opts(detached()).expect(super::VALID))
    }
}

/// A point in time (stored as Unix nanoseconds; 0 = never).
#[derive(Debug, Default)]
pub struct Timestamp(AtomicU64);

impl Timestamp {
    /// Record `t`.
    pub fn set(&self, t: SystemTime) {
        let ns = t
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        self.0.store(ns.max(1), Ordering::Relaxed);
    }
    /// Record now.
    pub fn set_now(&self) {
        self.set(SystemTime::now());
    }
    /// The recorded time, if any.
    pub fn get(&self) -> Option<SystemTime> {
        match self.0.load(Ordering::Relaxed) {
            0 => None,
            ns => Some(UNIX_EPOCH + Duration::from_nanos(ns)),
        }
    }
}

// ------------------------------------------------------------------------------------------
// per database
// ------------------------------------------------------------------------------------------

/// Checkpoint counters of one (database, mode) pair.
#[derive(Debug, Default)]
pub struct CheckpointMetrics {
    /// `litestream_checkpoint_count{db,mode}`.
    pub count: Counter,
    /// `litestream_checkpoint_error_count{db,mode}`.
    pub error_count: Counter,
    /// `litestream_checkpoint_seconds{db,mode}`.
    pub seconds: FloatCounter,
}

/// Metrics of one database (label `db` = its absolute path).
#[derive(Debug)]
pub struct DbMetrics {
    /// `litestream_db_size`: main database file size at the last sync.
    pub db_size: Gauge,
    /// `litestream_wal_size`: real WAL file size.
    pub wal_size: Gauge,
    /// `litestream_total_wal_bytes`: bytes appended to the shadow WAL.
    pub total_wal_bytes: Counter,
    /// `litestream_shadow_wal_index`: highest local shadow WAL index.
    pub shadow_wal_index: Gauge,
    /// `litestream_shadow_wal_size`: total bytes of the local shadow WAL files.
    pub shadow_wal_size: Gauge,
    /// `litestream_sync_count`: database syncs.
    pub sync_count: Counter,
    /// `litestream_sync_error_count`: failed database syncs.
    pub sync_error_count: Counter,
    /// `litestream_sync_seconds`: time spent syncing.
    pub sync_seconds: FloatCounter,
    /// `litestream_db_last_sync_timestamp_seconds` (addition): last successful sync.
    pub last_sync: Timestamp,
    path: String,
    checkpoints: Mutex<BTreeMap<String, Arc<CheckpointMetrics>>>,
    /// Set by [`unregister_db`]: new checkpoint modes get detached counters.
    unregistered: AtomicBool,
}

impl DbMetrics {
    fn new(s: &Store, path: &str) -> Self {
        let l = [path];
        DbMetrics {
            db_size: Gauge(s.db_size.with_label_values(&l)),
            wal_size: Gauge(s.wal_size.with_label_values(&l)),
            total_wal_bytes: Counter(s.total_wal_bytes.with_label_values(&l)),
            shadow_wal_index: Gauge(s.shadow_wal_index.with_label_values(&l)),
            shadow_wal_size: Gauge(s.shadow_wal_size.with_label_values(&l)),
            sync_count: Counter(s.sync_count.with_label_values(&l)),
            sync_error_count: Counter(s.sync_error_count.with_label_values(&l)),
            sync_seconds: FloatCounter(s.sync_seconds.with_label_values(&l)),
            last_sync: Timestamp::default(),
            path: path.to_string(),
            checkpoints: Mutex::default(),
            unregistered: AtomicBool::new(false),
        }
    }

    /// The checkpoint counters for `mode` (`PASSIVE`, `RESTART`, `TRUNCATE`); the series
    /// appear on first use, as in Litestream.
    pub fn checkpoint(&self, mode: &str) -> Arc<CheckpointMetrics> {
        let mut modes = lock(&self.checkpoints);
        let unregistered = self.unregistered.load(Ordering::Relaxed);
        modes
            .entry(mode.to_string())
            .or_insert_with(|| {
                if unregistered {
                    return Arc::default();
                }
                let (s, l) = (&*STORE, [self.path.as_str(), mode]);
                Arc::new(CheckpointMetrics {
                    count: Counter(s.checkpoint_count.with_label_values(&l)),
                    error_count: Counter(s.checkpoint_error_count.with_label_values(&l)),
                    seconds: FloatCounter(s.checkpoint_seconds.with_label_values(&l)),
                })
            })
            .clone()
    }

    /// Record a successful sync that took `elapsed`: bumps `sync_count`, `sync_seconds` and
    /// the last sync time.
    pub fn record_sync(&self, elapsed: Duration) {
        self.sync_count.inc();
        self.sync_seconds.add_duration(elapsed);
        self.last_sync.set_now();
    }

    /// Record a failed sync that took `elapsed`: bumps `sync_count`, `sync_error_count` and
    /// `sync_seconds`.
    pub fn record_sync_error(&self, elapsed: Duration) {
        self.sync_count.inc();
        self.sync_error_count.inc();
        self.sync_seconds.add_duration(elapsed);
    }

    /// Remove this database's series from the families.
    fn unregister(&self, s: &Store) {
        let modes = {
            let modes = lock(&self.checkpoints);
            self.unregistered.store(true, Ordering::Relaxed);
            modes.keys().cloned().collect::<Vec<_>>()
        };
        let l = [self.path.as_str()];
        for g in [
            &s.db_size,
            &s.wal_size,
            &s.shadow_wal_index,
            &s.shadow_wal_size,
        ] {
            let _ = g.remove_label_values(&l);
        }
        for c in [&s.total_wal_bytes, &s.sync_count, &s.sync_error_count] {
            let _ = c.remove_label_values(&l);
        }
        let _ = s.sync_seconds.remove_label_values(&l);
        for mode in &modes {
            let l = [self.path.as_str(), mode.as_str()];
            let _ = s.checkpoint_count.remove_label_values(&l);
            let _ = s.checkpoint_error_count.remove_label_values(&l);
            let _ = s.checkpoint_seconds.remove_label_values(&l);
        }
    }
}

/// Metrics of one replica of one database (labels `db`, `name`).
#[derive(Debug)]
pub struct ReplicaMetrics {
    /// `litestream_replica_wal_bytes`: uncompressed WAL bytes sent to the replica.
    pub wal_bytes: Counter,
    /// `litestream_replica_wal_index`: replica position index.
    pub wal_index: Gauge,
    /// `litestream_replica_wal_offset`: replica position offset.
    pub wal_offset: Gauge,
    /// `litestream_replica_validation_total{status="ok"}`.
    pub validation_ok: Counter,
    /// `litestream_replica_validation_total{status="error"}`.
    pub validation_error: Counter,
    /// Last time the replica was known to hold everything the database had
    /// (`litestream_replica_last_sync_timestamp_seconds`, addition).
    pub last_sync: Timestamp,
    /// When these metrics were registered (the lag of a replica that never synced counts
    /// from here).
    registered: SystemTime,
}

impl ReplicaMetrics {
    fn new(s: &Store, db: &str, name: &str) -> Self {
        let l = [db, name];
        ReplicaMetrics {
            wal_bytes: Counter(s.replica_wal_bytes.with_label_values(&l)),
            wal_index: Gauge(s.replica_wal_index.with_label_values(&l)),
            wal_offset: Gauge(s.replica_wal_offset.with_label_values(&l)),
            validation_ok: Counter(s.replica_validation.with_label_values(&[db, name, "ok"])),
            validation_error: Counter(s.replica_validation.with_label_values(&[db, name, "error"])),
            last_sync: Timestamp::default(),
            registered: SystemTime::now(),
        }
    }

    /// Record that the replica is caught up with the database now (call after a successful
    /// replica sync that left nothing pending).
    pub fn mark_synced(&self) {
        self.last_sync.set_now();
    }

    /// Record that the replica holds everything the database had at `t` (e.g. the time the
    /// last uploaded WAL data was read from the database).
    pub fn mark_synced_at(&self, t: SystemTime) {
        self.last_sync.set(t);
    }

    /// Record one validation result.
    pub fn record_validation(&self, ok: bool) {
        if ok {
            self.validation_ok.inc();
        } else {
            self.validation_error.inc();
        }
    }

    /// Replication lag at `now`: time since the last successful sync, or since registration
    /// when it never synced (`litestream_replica_lag_seconds`, addition).
    pub fn lag_at(&self, now: SystemTime) -> Duration {
        let since = self.last_sync.get().unwrap_or(self.registered);
        now.duration_since(since).unwrap_or_default()
    }
}

/// The metrics of database `path` (its absolute path, the `db` label), created on first use.
pub fn db(path: &str) -> Arc<DbMetrics> {
    let s = &*STORE;
    lock(&s.dbs)
        .entry(path.to_string())
        .or_insert_with(|| Arc::new(DbMetrics::new(s, path)))
        .clone()
}

/// The metrics of replica `name` of database `db`, created on first use. Registering a
/// replica (calling this once at start) makes it appear in `/healthz`.
pub fn replica(db: &str, name: &str) -> Arc<ReplicaMetrics> {
    let s = &*STORE;
    lock(&s.replicas)
        .entry((db.to_string(), name.to_string()))
        .or_insert_with(|| Arc::new(ReplicaMetrics::new(s, db, name)))
        .clone()
}

/// Forget database `path` and its replicas (e.g. when a replicator shuts down); handles
/// already held keep working but are no longer rendered.
pub fn unregister_db(path: &str) {
    // The maps stay locked while the series go, so that a `db`/`replica` call for the same
    // path cannot pick up children that are about to be removed.
    let s = &*STORE;
    let mut dbs = lock(&s.dbs);
    if let Some(m) = dbs.remove(path) {
        m.unregister(s);
    }
    let mut replicas = lock(&s.replicas);
    let mut gone = Vec::new();
    replicas.retain(|key, _| {
        let keep = key.0 != path;
        if !keep {
            gone.push(key.clone());
        }
        keep
    });
    for (db, name) in gone {
        let l = [db.as_str(), name.as_str()];
        let _ = s.replica_wal_bytes.remove_label_values(&l);
        let _ = s.replica_wal_index.remove_label_values(&l);
        let _ = s.replica_wal_offset.remove_label_values(&l);
        for status in ["ok", "error"] {
            let _ = s
                .replica_validation
                .remove_label_values(&[&db, &name, status]);
        }
    }
}

/// Health of one replica, as `/healthz` reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaHealth {
    /// Database path (`db` label).
    pub db: String,
    /// Replica name (`name` label).
    pub name: String,
    /// Time since the last successful sync (or since registration if it never synced).
    pub lag: Duration,
    /// Whether it ever synced.
    pub synced: bool,
    /// `lag <= threshold`.
    pub healthy: bool,
}

/// Health of every registered replica against `threshold`, sorted by (db, name).
pub fn replica_health(threshold: Duration) -> Vec<ReplicaHealth> {
    let now = SystemTime::now();
    lock(&STORE.replicas)
        .iter()
        .map(|((db, name), m)| {
            let lag = m.lag_at(now);
            ReplicaHealth {
                db: db.clone(),
                name: name.clone(),
                lag,
                synced: m.last_sync.get().is_some(),
                healthy: lag <= threshold,
            }
        })
        .collect()
}
