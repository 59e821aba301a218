//! Every metric Litestream exposes, kept in one place: names, labels and help texts (each
//! written once, in [`FAMILIES`]), backed by the [`prometheus`] crate.
//!
//! * Backends call [`record_operation`] for every request they make
//!   (`litestream_replica_operation_total` / `litestream_replica_operation_bytes`); tests read
//!   [`operation_counts`].
//! * The engine updates per-database values through [`db`] and per-replica values through
//!   [`replica`]; both return a shared handle (prometheus children, atomics underneath), cheap
//!   to keep in a struct:
//!
//! ```
//! use litestream_core::metrics;
//! let m = metrics::db("/data/app.db");
//! m.sync_count.inc();
//! m.db_size.set(4096u64);
//! m.checkpoint("PASSIVE").count.inc();
//! let r = metrics::replica("/data/app.db", "s3");
//! r.wal_index.set(3u32);
//! r.wal_bytes.add(4152);
//! r.mark_synced();
//! assert!(metrics::render_prometheus().contains("litestream_sync_count{db=\"/data/app.db\"}"));
//! ```
//!
//! * [`render_prometheus`] produces the Prometheus text exposition format (version 0.0.4)
//!   served at `/metrics` from [`registry`]; [`replica_health`] is what `/healthz` reports.
//! * An embedder that serves its own metrics either adds its collectors to [`registry`], or
//!   adds Litestream's collectors to a registry it owns with [`register`].
//!
//! Names, types and labels are Litestream v0.3.13's (spec §10). Additions, all prefixed
//! `litestream_` and documented in their HELP text: `litestream_replica_lag_seconds`,
//! `litestream_replica_last_sync_timestamp_seconds`,
//! `litestream_db_last_sync_timestamp_seconds`. The `process_*` series of Go's client are
//! the binary's to add (it registers prometheus' process collector into [`registry`]).

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

pub use prometheus;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{CounterVec, GaugeVec, IntCounter, IntCounterVec, Opts, Registry};

mod handles;
pub use handles::{
    db, replica, replica_health, unregister_db, CheckpointMetrics, Counter, DbMetrics,
    FloatCounter, Gauge, GaugeValue, ReplicaHealth, ReplicaMetrics, Timestamp,
};

// ------------------------------------------------------------------------------------------
// metric families: the one place where names, types, help texts and labels are written
// ------------------------------------------------------------------------------------------

/// Prometheus metric type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    /// A value that only goes up.
    Counter,
    /// A value that goes up and down.
    Gauge,
}

impl MetricType {
    fn as_str(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
        }
    }
}

/// One metric family: name, type, help text and label names.
#[derive(Debug, Clone, Copy)]
pub struct Family {
    /// Metric name.
    pub name: &'static str,
    /// Counter or gauge.
    pub kind: MetricType,
    /// HELP text.
    pub help: &'static str,
    /// Label names, in the order their values are given.
    pub labels: &'static [&'static str],
}

const fn fam(
    name: &'static str,
    kind: MetricType,
    help: &'static str,
    labels: &'static [&'static str],
) -> Family {
    Family {
        name,
        kind,
        help,
        labels,
    }
}

/// The families are constants checked by the unit tests: building one cannot fail at run time.
const VALID: &str = "metric families are valid constants";

impl Family {
    fn opts(self) -> Opts {
        Opts::new(self.name, self.help)
    }
    fn int_counter_vec(self) -> IntCounterVec {
        debug_assert_eq!(self.kind, MetricType::Counter, "{}", self.name);
        IntCounterVec::new(self.opts(), self.labels).expect(VALID)
    }
    fn counter_vec(self) -> CounterVec {
        debug_assert_eq!(self.kind, MetricType::Counter, "{}", self.name);
        CounterVec::new(self.opts(), self.labels).expect(VALID)
    }
    fn gauge_vec(self) -> GaugeVec {
        debug_assert_eq!(self.kind, MetricType::Gauge, "{}", self.name);
        GaugeVec::new(self.opts(), self.labels).expect(VALID)
    }
}

use MetricType::{Counter as C, Gauge as G};

const DB: &[&str] = &["db"];
const DB_MODE: &[&str] = &["db", "mode"];
const DB_NAME: &[&str] = &["db", "name"];
const DB_NAME_STATUS: &[&str] = &["db", "name", "status"];
const TYPE_OP: &[&str] = &["replica_type", "operation"];

const DB_SIZE: Family = fam(
    "litestream_db_size",
    G,
    "The current size of the real DB",
    DB,
);
const WAL_SIZE: Family = fam(
    "litestream_wal_size",
    G,
    "The current size of the real WAL",
    DB,
);
const TOTAL_WAL_BYTES: Family = fam(
    "litestream_total_wal_bytes",
    C,
    "Total number of bytes written to shadow WAL",
    DB,
);
const SHADOW_WAL_INDEX: Family = fam(
    "litestream_shadow_wal_index",
    G,
    "The current index of the shadow WAL",
    DB,
);
const SHADOW_WAL_SIZE: Family = fam(
    "litestream_shadow_wal_size",
    G,
    "Current size of shadow WAL, in bytes",
    DB,
);
const SYNC_COUNT: Family = fam("litestream_sync_count", C, "Number of sync operations", DB);
const SYNC_ERROR_COUNT: Family = fam(
    "litestream_sync_error_count",
    C,
    "Number of sync errors",
    DB,
);
const SYNC_SECONDS: Family = fam(
    "litestream_sync_seconds",
    C,
    "Time spent syncing shadow WAL, in seconds",
    DB,
);
const DB_LAST_SYNC: Family = fam(
    "litestream_db_last_sync_timestamp_seconds",
    G,
    "Unix time of the last successful sync of the DB",
    DB,
);
const CHECKPOINT_COUNT: Family = fam(
    "litestream_checkpoint_count",
    C,
    "Number of checkpoint operations",
    DB_MODE,
);
const CHECKPOINT_ERROR_COUNT: Family = fam(
    "litestream_checkpoint_error_count",
    C,
    "Number of checkpoint errors",
    DB_MODE,
);
const CHECKPOINT_SECONDS: Family = fam(
    "litestream_checkpoint_seconds",
    C,
    "Time spent checkpointing WAL, in seconds",
    DB_MODE,
);
const REPLICA_WAL_BYTES: Family = fam(
    "litestream_replica_wal_bytes",
    C,
    "The number wal bytes written",
    DB_NAME,
);
const REPLICA_WAL_INDEX: Family = fam(
    "litestream_replica_wal_index",
    G,
    "The current WAL index",
    DB_NAME,
);
const REPLICA_WAL_OFFSET: Family = fam(
    "litestream_replica_wal_offset",
    G,
    "The current WAL offset",
    DB_NAME,
);
const REPLICA_VALIDATION: Family = fam(
    "litestream_replica_validation_total",
    C,
    "The number of validations performed",
    DB_NAME_STATUS,
);
const REPLICA_LAG: Family = fam(
    "litestream_replica_lag_seconds",
    G,
    "Seconds since the replica last held everything the DB had",
    DB_NAME,
);
const REPLICA_LAST_SYNC: Family = fam(
    "litestream_replica_last_sync_timestamp_seconds",
    G,
    "Unix time of the last successful sync of the replica",
    DB_NAME,
);
const OPERATION_TOTAL: Family = fam(
    "litestream_replica_operation_total",
    C,
    "The number of replica operations performed",
    TYPE_OP,
);
const OPERATION_BYTES: Family = fam(
    "litestream_replica_operation_bytes",
    C,
    "The number of bytes used by replica operations",
    TYPE_OP,
);

/// Every metric family this crate exposes.
pub const FAMILIES: &[Family] = &[
    DB_SIZE,
    WAL_SIZE,
    TOTAL_WAL_BYTES,
    SHADOW_WAL_INDEX,
    SHADOW_WAL_SIZE,
    SYNC_COUNT,
    SYNC_ERROR_COUNT,
    SYNC_SECONDS,
    DB_LAST_SYNC,
    CHECKPOINT_COUNT,
    CHECKPOINT_ERROR_COUNT,
    CHECKPOINT_SECONDS,
    REPLICA_WAL_BYTES,
    REPLICA_WAL_INDEX,
    REPLICA_WAL_OFFSET,
    REPLICA_VALIDATION,
    REPLICA_LAG,
    REPLICA_LAST_SYNC,
    OPERATION_TOTAL,
    OPERATION_BYTES,
];

/// The vectors of every family whose values are stored (the derived ones are computed at
/// collection, see [`Derived`]), plus the handles given out, so that a database can be
/// forgotten and the health of every replica listed.
struct Store {
    db_size: GaugeVec,
    wal_size: GaugeVec,
    total_wal_bytes: IntCounterVec,
    shadow_wal_index: GaugeVec,
    shadow_wal_size: GaugeVec,
    sync_count: IntCounterVec,
    sync_error_count: IntCounterVec,
    sync_seconds: CounterVec,
    checkpoint_count: IntCounterVec,
    checkpoint_error_count: IntCounterVec,
    checkpoint_seconds: CounterVec,
    replica_wal_bytes: IntCounterVec,
    replica_wal_index: GaugeVec,
    replica_wal_offset: GaugeVec,
    replica_validation: IntCounterVec,
    operation_total: IntCounterVec,
    operation_bytes: IntCounterVec,
    dbs: Mutex<BTreeMap<String, Arc<DbMetrics>>>,
    replicas: Mutex<BTreeMap<ReplicaKey, Arc<ReplicaMetrics>>>,
    operations: Mutex<BTreeMap<(&'static str, Operation), [IntCounter; 2]>>,
    registry: Registry,
}

type ReplicaKey = (String, String);

static STORE: LazyLock<Store> = LazyLock::new(|| {
    let store = Store {
        db_size: DB_SIZE.gauge_vec(),
        wal_size: WAL_SIZE.gauge_vec(),
        total_wal_bytes: TOTAL_WAL_BYTES.int_counter_vec(),
        shadow_wal_index: SHADOW_WAL_INDEX.gauge_vec(),
        shadow_wal_size: SHADOW_WAL_SIZE.gauge_vec(),
        sync_count: SYNC_COUNT.int_counter_vec(),
        sync_error_count: SYNC_ERROR_COUNT.int_counter_vec(),
        sync_seconds: SYNC_SECONDS.counter_vec(),
        checkpoint_count: CHECKPOINT_COUNT.int_counter_vec(),
        checkpoint_error_count: CHECKPOINT_ERROR_COUNT.int_counter_vec(),
        checkpoint_seconds: CHECKPOINT_SECONDS.counter_vec(),
        replica_wal_bytes: REPLICA_WAL_BYTES.int_counter_vec(),
        replica_wal_index: REPLICA_WAL_INDEX.gauge_vec(),
        replica_wal_offset: REPLICA_WAL_OFFSET.gauge_vec(),
        replica_validation: REPLICA_VALIDATION.int_counter_vec(),
        operation_total: OPERATION_TOTAL.int_counter_vec(),
        operation_bytes: OPERATION_BYTES.int_counter_vec(),
        dbs: Mutex::default(),
        replicas: Mutex::default(),
        operations: Mutex::default(),
        registry: Registry::new(),
    };
    for c in store.collectors() {
        store.registry.register(c).expect(VALID);
    }
    store
});

impl Store {
    fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.db_size.clone()),
            Box::new(self.wal_size.clone()),
            Box::new(self.total_wal_bytes.clone()),
            Box::new(self.shadow_wal_index.clone()),
            Box::new(self.shadow_wal_size.clone()),
            Box::new(self.sync_count.clone()),
            Box::new(self.sync_error_count.clone()),
            Box::new(self.sync_seconds.clone()),
            Box::new(self.checkpoint_count.clone()),
            Box::new(self.checkpoint_error_count.clone()),
            Box::new(self.checkpoint_seconds.clone()),
            Box::new(self.replica_wal_bytes.clone()),
            Box::new(self.replica_wal_index.clone()),
            Box::new(self.replica_wal_offset.clone()),
            Box::new(self.replica_validation.clone()),
            Box::new(self.operation_total.clone()),
            Box::new(self.operation_bytes.clone()),
            Box::new(Derived::new()),
        ]
    }
}

/// The registry `/metrics` serves: Litestream's families, plus whatever the embedder (or
/// the binary: the `process_*` series) registers into it.
pub fn registry() -> &'static Registry {
    &STORE.registry
}

/// Add Litestream's collectors to a registry the embedder owns (they keep reporting the
/// same values as [`registry`]'s). Fails if `registry` already has a family of that name.
pub fn register(registry: &Registry) -> prometheus::Result<()> {
    STORE
        .collectors()
        .into_iter()
        .try_for_each(|c| registry.register(c))
}

/// The families computed at collection time from the handles: replication lag, and the
/// last-sync timestamps (present once something synced).
#[derive(Debug)]
struct Derived {
    descs: Vec<Desc>,
}

impl Derived {
    const FAMILIES: [Family; 3] = [DB_LAST_SYNC, REPLICA_LAG, REPLICA_LAST_SYNC];

    fn new() -> Self {
        let descs = Self::FAMILIES
            .iter()
            .flat_map(|f| {
                f.gauge_vec()
                    .desc()
                    .into_iter()
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .collect();
        Derived { descs }
    }
}

impl Collector for Derived {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let [db_sync, lag, replica_sync] = Self::FAMILIES.map(Family::gauge_vec);
        for (path, m) in snapshot(&STORE.dbs) {
            if let Some(t) = m.last_sync.get() {
                db_sync.with_label_values(&[path]).set(unix_seconds(t));
            }
        }
        let now = SystemTime::now();
        for ((db, name), m) in snapshot(&STORE.replicas) {
            let labels = [db.as_str(), name.as_str()];
            lag.with_label_values(&labels)
                .set(m.lag_at(now).as_secs_f64());
            if let Some(t) = m.last_sync.get() {
                replica_sync.with_label_values(&labels).set(unix_seconds(t));
            }
        }
        [db_sync, lag, replica_sync]
            .iter()
            .flat_map(Collector::collect)
            .collect()
    }
}

/// A copy of a handle map, so that no lock is held while reading the handles.
fn snapshot<K: Clone, V>(map: &Mutex<BTreeMap<K, Arc<V>>>) -> Vec<(K, Arc<V>)> {
    lock(map)
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Lock ignoring poisoning: metrics are plain numbers, a panic elsewhere cannot leave them in a
/// state worse than "slightly off".
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ------------------------------------------------------------------------------------------
// backend operations (kept API: record_operation / operation_counts)
// ------------------------------------------------------------------------------------------

/// A kind of backend request, labelled as Litestream labels it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operation {
    /// Reading an object.
    Get,
    /// Writing an object (or one part of it).
    Put,
    /// Listing a prefix.
    List,
    /// Deleting objects.
    Delete,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Get => "GET",
            Operation::Put => "PUT",
            Operation::List => "LIST",
            Operation::Delete => "DELETE",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Count and bytes of one (replica type, operation) pair.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OperationCount {
    /// Requests made (`litestream_replica_operation_total`).
    pub total: u64,
    /// Payload bytes moved (`litestream_replica_operation_bytes`).
    pub bytes: u64,
}

/// Record one request of `op` by a `replica_type` backend that moved `bytes` bytes.
pub fn record_operation(replica_type: &'static str, op: Operation, bytes: u64) {
    let s = &*STORE;
    let mut ops = lock(&s.operations);
    let [total, moved] = ops.entry((replica_type, op)).or_insert_with(|| {
        let labels = [replica_type, op.as_str()];
        [
            s.operation_total.with_label_values(&labels),
            s.operation_bytes.with_label_values(&labels),
        ]
    });
    total.inc();
    moved.inc_by(bytes);
}

/// A snapshot of every operation counter.
pub fn operation_counts() -> Vec<(&'static str, Operation, OperationCount)> {
    lock(&STORE.operations)
        .iter()
        .map(|((t, o), [total, bytes])| {
            let count = OperationCount {
                total: total.get(),
                bytes: bytes.get(),
            };
            (*t, *o, count)
        })
        .collect()
}

// ------------------------------------------------------------------------------------------
// rendering
// ------------------------------------------------------------------------------------------

/// Render every metric of [`registry`] in the Prometheus text exposition format, version
/// 0.0.4 (serve it with `Content-Type: text/plain; version=0.0.4; charset=utf-8`). Every
/// Litestream family gets its `# HELP` and `# TYPE` lines even before it has samples
/// (prometheus' encoder leaves such families out; dashboards and our tests look for them).
pub fn render_prometheus() -> String {
    let gathered = registry().gather();
    let mut out = String::with_capacity(4096);
    // Encoding into a String fails only on an empty family, which `gather` never returns.
    if let Err(e) = prometheus::TextEncoder::new().encode_utf8(&gathered, &mut out) {
        tracing::warn!(error = %e, "metrics: cannot encode");
    }
    for f in FAMILIES {
        if !gathered.iter().any(|g| g.name() == f.name) {
            let help = f.help.replace('\\', "\\\\").replace('\n', "\\n");
            let _ = writeln!(out, "# HELP {} {help}", f.name);
            let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind.as_str());
        }
    }
    out
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests;
