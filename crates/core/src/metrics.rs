//! Every metric Litestream exposes, kept in one place: names, labels, storage and the
//! Prometheus text rendering.
//!
//! * Backends call [`record_operation`] for every request they make
//!   (`litestream_replica_operation_total` / `litestream_replica_operation_bytes`); tests read
//!   [`operation_counts`].
//! * The engine updates per-database values through [`db`] and per-replica values through
//!   [`replica`]; both return a shared handle backed by atomics, cheap to keep in a struct:
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
//!   served at `/metrics`; [`replica_health`] is what `/healthz` reports.
//!
//! Names, types and labels are Litestream v0.3.13's (spec §10). Additions, all prefixed
//! `litestream_` and documented in their HELP text: `litestream_replica_lag_seconds`,
//! `litestream_replica_last_sync_timestamp_seconds`,
//! `litestream_db_last_sync_timestamp_seconds`.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operation::Get => "GET",
            Operation::Put => "PUT",
            Operation::List => "LIST",
            Operation::Delete => "DELETE",
        })
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

static OPERATIONS: Mutex<BTreeMap<(&'static str, Operation), OperationCount>> =
    Mutex::new(BTreeMap::new());

/// Record one request of `op` by a `replica_type` backend that moved `bytes` bytes.
pub fn record_operation(replica_type: &'static str, op: Operation, bytes: u64) {
    let mut map = lock(&OPERATIONS);
    let c = map.entry((replica_type, op)).or_default();
    c.total += 1;
    c.bytes += bytes;
}

/// A snapshot of every operation counter.
pub fn operation_counts() -> Vec<(&'static str, Operation, OperationCount)> {
    lock(&OPERATIONS)
        .iter()
        .map(|((t, o), c)| (*t, *o, *c))
        .collect()
}

/// Lock ignoring poisoning: metrics are plain numbers, a panic elsewhere cannot leave them in a
/// state worse than "slightly off".
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

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

/// A monotonically increasing integer (count or bytes).
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Add one.
    pub fn inc(&self) {
        self.add(1);
    }
    /// Add `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A monotonically increasing float, used for accumulated seconds.
#[derive(Debug, Default)]
pub struct FloatCounter(AtomicU64);

impl FloatCounter {
    /// Add `v` (negative or non-finite values are ignored: counters never go down).
    pub fn add(&self, v: f64) {
        if !(v.is_finite() && v > 0.0) {
            return;
        }
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + v).to_bits())
            });
    }
    /// Add a duration in seconds.
    pub fn add_duration(&self, d: Duration) {
        self.add(d.as_secs_f64());
    }
    /// The current value.
    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

/// A value that can go up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    /// Set the value.
    pub fn set(&self, v: impl GaugeValue) {
        self.0.store(v.to_f64().to_bits(), Ordering::Relaxed);
    }
    /// The current value.
    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
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

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
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
#[derive(Debug, Default)]
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
    checkpoints: Mutex<BTreeMap<String, Arc<CheckpointMetrics>>>,
}

impl DbMetrics {
    /// The checkpoint counters for `mode` (`PASSIVE`, `RESTART`, `TRUNCATE`); the series
    /// appear on first use, as in Litestream.
    pub fn checkpoint(&self, mode: &str) -> Arc<CheckpointMetrics> {
        lock(&self.checkpoints)
            .entry(mode.to_string())
            .or_default()
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

impl Default for ReplicaMetrics {
    fn default() -> Self {
        ReplicaMetrics {
            wal_bytes: Counter::default(),
            wal_index: Gauge::default(),
            wal_offset: Gauge::default(),
            validation_ok: Counter::default(),
            validation_error: Counter::default(),
            last_sync: Timestamp::default(),
            registered: SystemTime::now(),
        }
    }
}

impl ReplicaMetrics {
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

type ReplicaKey = (String, String);

static DBS: Mutex<BTreeMap<String, Arc<DbMetrics>>> = Mutex::new(BTreeMap::new());
static REPLICAS: Mutex<BTreeMap<ReplicaKey, Arc<ReplicaMetrics>>> = Mutex::new(BTreeMap::new());

/// The metrics of database `path` (its absolute path, the `db` label), created on first use.
pub fn db(path: &str) -> Arc<DbMetrics> {
    lock(&DBS).entry(path.to_string()).or_default().clone()
}

/// The metrics of replica `name` of database `db`, created on first use. Registering a
/// replica (calling this once at start) makes it appear in `/healthz`.
pub fn replica(db: &str, name: &str) -> Arc<ReplicaMetrics> {
    lock(&REPLICAS)
        .entry((db.to_string(), name.to_string()))
        .or_default()
        .clone()
}

/// Forget database `path` and its replicas (e.g. when a replicator shuts down); handles
/// already held keep working but are no longer rendered.
pub fn unregister_db(path: &str) {
    lock(&DBS).remove(path);
    lock(&REPLICAS).retain(|(d, _), _| d != path);
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
    lock(&REPLICAS)
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

// ------------------------------------------------------------------------------------------
// rendering
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
    /// Label names, in rendering order.
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

use MetricType::{Counter as C, Gauge as G};

const DB: &[&str] = &["db"];
const DB_MODE: &[&str] = &["db", "mode"];
const DB_NAME: &[&str] = &["db", "name"];
const DB_NAME_STATUS: &[&str] = &["db", "name", "status"];
const TYPE_OP: &[&str] = &["replica_type", "operation"];

/// Every metric family this crate exposes, in rendering order.
pub const FAMILIES: &[Family] = &[
    fam(
        "litestream_db_size",
        G,
        "The current size of the real DB",
        DB,
    ),
    fam(
        "litestream_wal_size",
        G,
        "The current size of the real WAL",
        DB,
    ),
    fam(
        "litestream_total_wal_bytes",
        C,
        "Total number of bytes written to shadow WAL",
        DB,
    ),
    fam(
        "litestream_shadow_wal_index",
        G,
        "The current index of the shadow WAL",
        DB,
    ),
    fam(
        "litestream_shadow_wal_size",
        G,
        "Current size of shadow WAL, in bytes",
        DB,
    ),
    fam("litestream_sync_count", C, "Number of sync operations", DB),
    fam(
        "litestream_sync_error_count",
        C,
        "Number of sync errors",
        DB,
    ),
    fam(
        "litestream_sync_seconds",
        C,
        "Time spent syncing shadow WAL, in seconds",
        DB,
    ),
    fam(
        "litestream_db_last_sync_timestamp_seconds",
        G,
        "Unix time of the last successful sync of the DB",
        DB,
    ),
    fam(
        "litestream_checkpoint_count",
        C,
        "Number of checkpoint operations",
        DB_MODE,
    ),
    fam(
        "litestream_checkpoint_error_count",
        C,
        "Number of checkpoint errors",
        DB_MODE,
    ),
    fam(
        "litestream_checkpoint_seconds",
        C,
        "Time spent checkpointing WAL, in seconds",
        DB_MODE,
    ),
    fam(
        "litestream_replica_wal_bytes",
        C,
        "The number wal bytes written",
        DB_NAME,
    ),
    fam(
        "litestream_replica_wal_index",
        G,
        "The current WAL index",
        DB_NAME,
    ),
    fam(
        "litestream_replica_wal_offset",
        G,
        "The current WAL offset",
        DB_NAME,
    ),
    fam(
        "litestream_replica_validation_total",
        C,
        "The number of validations performed",
        DB_NAME_STATUS,
    ),
    fam(
        "litestream_replica_lag_seconds",
        G,
        "Seconds since the replica last held everything the DB had",
        DB_NAME,
    ),
    fam(
        "litestream_replica_last_sync_timestamp_seconds",
        G,
        "Unix time of the last successful sync of the replica",
        DB_NAME,
    ),
    fam(
        "litestream_replica_operation_total",
        C,
        "The number of replica operations performed",
        TYPE_OP,
    ),
    fam(
        "litestream_replica_operation_bytes",
        C,
        "The number of bytes used by replica operations",
        TYPE_OP,
    ),
];

/// Samples of one family: label values (matching the family's labels) and value.
type Samples = Vec<(Vec<String>, f64)>;

fn collect() -> BTreeMap<&'static str, Samples> {
    let mut out: BTreeMap<&'static str, Samples> = BTreeMap::new();
    let mut push = |name: &'static str, labels: Vec<String>, v: f64| {
        out.entry(name).or_default().push((labels, v));
    };
    let dbs: Vec<(String, Arc<DbMetrics>)> = lock(&DBS)
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (path, m) in &dbs {
        let l = || vec![path.clone()];
        push("litestream_db_size", l(), m.db_size.get());
        push("litestream_wal_size", l(), m.wal_size.get());
        push(
            "litestream_total_wal_bytes",
            l(),
            m.total_wal_bytes.get() as f64,
        );
        push("litestream_shadow_wal_index", l(), m.shadow_wal_index.get());
        push("litestream_shadow_wal_size", l(), m.shadow_wal_size.get());
        push("litestream_sync_count", l(), m.sync_count.get() as f64);
        push(
            "litestream_sync_error_count",
            l(),
            m.sync_error_count.get() as f64,
        );
        push("litestream_sync_seconds", l(), m.sync_seconds.get());
        if let Some(t) = m.last_sync.get() {
            push(
                "litestream_db_last_sync_timestamp_seconds",
                l(),
                unix_seconds(t),
            );
        }
        let cps: Vec<(String, Arc<CheckpointMetrics>)> = lock(&m.checkpoints)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (mode, c) in cps {
            let l = || vec![path.clone(), mode.clone()];
            push("litestream_checkpoint_count", l(), c.count.get() as f64);
            push(
                "litestream_checkpoint_error_count",
                l(),
                c.error_count.get() as f64,
            );
            push("litestream_checkpoint_seconds", l(), c.seconds.get());
        }
    }
    let replicas: Vec<(ReplicaKey, Arc<ReplicaMetrics>)> = lock(&REPLICAS)
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let now = SystemTime::now();
    for ((db, name), m) in &replicas {
        let l = || vec![db.clone(), name.clone()];
        push(
            "litestream_replica_wal_bytes",
            l(),
            m.wal_bytes.get() as f64,
        );
        push("litestream_replica_wal_index", l(), m.wal_index.get());
        push("litestream_replica_wal_offset", l(), m.wal_offset.get());
        for (status, c) in [("ok", &m.validation_ok), ("error", &m.validation_error)] {
            push(
                "litestream_replica_validation_total",
                vec![db.clone(), name.clone(), status.to_string()],
                c.get() as f64,
            );
        }
        push(
            "litestream_replica_lag_seconds",
            l(),
            m.lag_at(now).as_secs_f64(),
        );
        if let Some(t) = m.last_sync.get() {
            push(
                "litestream_replica_last_sync_timestamp_seconds",
                l(),
                unix_seconds(t),
            );
        }
    }
    for (t, op, c) in operation_counts() {
        let l = || vec![t.to_string(), op.to_string()];
        push("litestream_replica_operation_total", l(), c.total as f64);
        push("litestream_replica_operation_bytes", l(), c.bytes as f64);
    }
    out
}

/// Render every metric in the Prometheus text exposition format, version 0.0.4 (serve it
/// with `Content-Type: text/plain; version=0.0.4; charset=utf-8`). Every family gets its
/// `# HELP` and `# TYPE` lines even before it has samples.
pub fn render_prometheus() -> String {
    let samples = collect();
    let mut out = String::with_capacity(4096);
    for f in FAMILIES {
        let _ = writeln!(out, "# HELP {} {}", f.name, escape_help(f.help));
        let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind.as_str());
        for (values, v) in samples.get(f.name).map(Vec::as_slice).unwrap_or(&[]) {
            out.push_str(f.name);
            if !f.labels.is_empty() {
                out.push('{');
                for (i, (k, val)) in f.labels.iter().zip(values).enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{k}=\"{}\"", escape_label_value(val));
                }
                out.push('}');
            }
            out.push(' ');
            out.push_str(&format_value(*v));
            out.push('\n');
        }
    }
    out
}

/// Escape a label value: `\` → `\\`, `"` → `\"`, newline → `\n`.
pub fn escape_label_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Format a sample value as Prometheus expects (`NaN`, `+Inf`, `-Inf`, integers without a
/// fractional part).
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_accumulate() {
        record_operation("test-metrics", Operation::Put, 10);
        record_operation("test-metrics", Operation::Put, 5);
        let c = operation_counts()
            .into_iter()
            .find(|(t, o, _)| *t == "test-metrics" && *o == Operation::Put)
            .map(|(_, _, c)| c)
            .expect("counter");
        assert_eq!(
            c,
            OperationCount {
                total: 2,
                bytes: 15
            }
        );
    }

    /// A sample line parsed by [`parse_exposition`].
    #[derive(Debug)]
    struct Sample {
        name: String,
        labels: Vec<(String, String)>,
        value: f64,
    }

    fn is_name(s: &str) -> bool {
        let mut cs = s.chars();
        matches!(cs.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
            && cs.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }

    /// A strict parser of the text format: returns (types by family, samples) or an error
    /// naming the offending line.
    #[allow(clippy::type_complexity)]
    fn parse_exposition(text: &str) -> Result<(BTreeMap<String, String>, Vec<Sample>), String> {
        let mut types = BTreeMap::new();
        let mut helps = BTreeMap::new();
        let mut samples = Vec::new();
        if !text.ends_with('\n') {
            return Err("no trailing newline".into());
        }
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# ") {
                let mut parts = rest.splitn(3, ' ');
                let kw = parts.next().unwrap_or("");
                let name = parts.next().ok_or(format!("bad comment: {line}"))?;
                let arg = parts.next().ok_or(format!("bad comment: {line}"))?;
                if !is_name(name) {
                    return Err(format!("bad name: {line}"));
                }
                match kw {
                    "TYPE" => {
                        if !matches!(
                            arg,
                            "counter" | "gauge" | "histogram" | "summary" | "untyped"
                        ) {
                            return Err(format!("bad type: {line}"));
                        }
                        if types.insert(name.to_string(), arg.to_string()).is_some() {
                            return Err(format!("duplicate TYPE: {line}"));
                        }
                    }
                    "HELP" if helps.insert(name.to_string(), arg.to_string()).is_some() => {
                        return Err(format!("duplicate HELP: {line}"));
                    }
                    _ => {}
                }
                continue;
            }
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let name_end = line.find(['{', ' ']).ok_or(format!("no value: {line}"))?;
            let name = &line[..name_end];
            if !is_name(name) {
                return Err(format!("bad metric name: {line}"));
            }
            let mut rest = &line[name_end..];
            let mut labels = Vec::new();
            if let Some(r) = rest.strip_prefix('{') {
                let mut chars = r.char_indices().peekable();
                let end: usize;
                loop {
                    // label name
                    let start = match chars.peek() {
                        Some((_, '}')) => {
                            end = chars.next().map(|(i, _)| i).unwrap_or(0) + 1;
                            break;
                        }
                        Some((i, _)) => *i,
                        None => return Err(format!("unterminated labels: {line}")),
                    };
                    let eq = r[start..].find('=').ok_or(format!("bad label: {line}"))? + start;
                    let lname = &r[start..eq];
                    if !is_name(lname) || lname.contains(':') {
                        return Err(format!("bad label name {lname:?}: {line}"));
                    }
                    while chars.peek().is_some_and(|(i, _)| *i <= eq) {
                        chars.next();
                    }
                    if chars.next().map(|(_, c)| c) != Some('"') {
                        return Err(format!("label value not quoted: {line}"));
                    }
                    let mut val = String::new();
                    loop {
                        match chars.next() {
                            Some((_, '\\')) => match chars.next() {
                                Some((_, '\\')) => val.push('\\'),
                                Some((_, '"')) => val.push('"'),
                                Some((_, 'n')) => val.push('\n'),
                                _ => return Err(format!("bad escape: {line}")),
                            },
                            Some((_, '"')) => break,
                            Some((_, '\n')) | None => {
                                return Err(format!("unterminated value: {line}"))
                            }
                            Some((_, c)) => val.push(c),
                        }
                    }
                    labels.push((lname.to_string(), val));
                    match chars.peek() {
                        Some((_, ',')) => {
                            chars.next();
                        }
                        Some((_, '}')) => {}
                        _ => return Err(format!("bad label separator: {line}")),
                    }
                }
                rest = &r[end..];
            }
            let value = rest
                .strip_prefix(' ')
                .ok_or(format!("no space before value: {line}"))?;
            let value = value.split(' ').next().unwrap_or("");
            let value: f64 = match value {
                "NaN" => f64::NAN,
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse().map_err(|_| format!("bad value: {line}"))?,
            };
            if !types.contains_key(name) {
                return Err(format!("sample before its TYPE: {line}"));
            }
            samples.push(Sample {
                name: name.to_string(),
                labels,
                value,
            });
        }
        Ok((types, samples))
    }

    fn find<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Option<&'a Sample> {
        samples.iter().find(|s| {
            s.name == name
                && s.labels.len() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v))
        })
    }

    #[test]
    fn renders_valid_exposition_with_every_name() {
        let path = "/tmp/metrics-test/app \"quoted\"\\back\nline.db";
        let m = db(path);
        m.db_size.set(8192u64);
        m.wal_size.set(4152u32);
        m.total_wal_bytes.add(4152);
        m.shadow_wal_index.set(2u32);
        m.shadow_wal_size.set(8304u64);
        m.record_sync(Duration::from_millis(1500));
        m.record_sync_error(Duration::from_millis(10));
        let cp = m.checkpoint("PASSIVE");
        cp.count.inc();
        cp.seconds.add(0.25);
        m.checkpoint("RESTART").error_count.inc();
        let r = replica(path, "s3");
        r.wal_bytes.add(100);
        r.wal_index.set(2u32);
        r.wal_offset.set(4152u64);
        r.record_validation(true);
        r.mark_synced();
        record_operation("s3", Operation::Get, 7);

        let text = render_prometheus();
        let (types, samples) = parse_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        for f in FAMILIES {
            assert_eq!(
                types.get(f.name).map(String::as_str),
                Some(f.kind.as_str()),
                "{}",
                f.name
            );
            assert!(text.contains(&format!("# HELP {} ", f.name)));
        }
        for name in [
            "litestream_db_size",
            "litestream_wal_size",
            "litestream_total_wal_bytes",
            "litestream_shadow_wal_index",
            "litestream_shadow_wal_size",
            "litestream_sync_count",
            "litestream_sync_error_count",
            "litestream_sync_seconds",
            "litestream_checkpoint_count",
            "litestream_checkpoint_error_count",
            "litestream_checkpoint_seconds",
            "litestream_replica_wal_bytes",
            "litestream_replica_wal_index",
            "litestream_replica_wal_offset",
            "litestream_replica_validation_total",
            "litestream_replica_operation_total",
            "litestream_replica_operation_bytes",
            "litestream_replica_lag_seconds",
        ] {
            assert!(types.contains_key(name), "{name} missing");
        }
        let v = |n: &str, l: &[(&str, &str)]| {
            find(&samples, n, l)
                .unwrap_or_else(|| panic!("{n} {l:?} missing\n{text}"))
                .value
        };
        assert_eq!(v("litestream_db_size", &[("db", path)]), 8192.0);
        assert_eq!(v("litestream_sync_count", &[("db", path)]), 2.0);
        assert_eq!(v("litestream_sync_error_count", &[("db", path)]), 1.0);
        assert!((v("litestream_sync_seconds", &[("db", path)]) - 1.51).abs() < 1e-9);
        assert_eq!(
            v(
                "litestream_checkpoint_count",
                &[("db", path), ("mode", "PASSIVE")]
            ),
            1.0
        );
        assert_eq!(
            v(
                "litestream_checkpoint_error_count",
                &[("db", path), ("mode", "RESTART")]
            ),
            1.0
        );
        assert_eq!(
            v(
                "litestream_replica_validation_total",
                &[("db", path), ("name", "s3"), ("status", "ok")]
            ),
            1.0
        );
        assert_eq!(
            v(
                "litestream_replica_wal_offset",
                &[("db", path), ("name", "s3")]
            ),
            4152.0
        );
        let lag = v(
            "litestream_replica_lag_seconds",
            &[("db", path), ("name", "s3")],
        );
        assert!((0.0..5.0).contains(&lag), "{lag}");
        assert!(
            v(
                "litestream_replica_operation_total",
                &[("replica_type", "s3"), ("operation", "GET")]
            ) >= 1.0
        );
        unregister_db(path);
        assert!(!render_prometheus().contains("metrics-test/app"));
    }

    #[test]
    fn health_reports_lagging_replicas() {
        let path = "/tmp/metrics-test/health.db";
        let fresh = replica(path, "fresh");
        fresh.mark_synced();
        let stale = replica(path, "stale");
        stale.mark_synced_at(SystemTime::now() - Duration::from_secs(120));
        let h: Vec<_> = replica_health(Duration::from_secs(60))
            .into_iter()
            .filter(|h| h.db == path)
            .collect();
        assert_eq!(h.len(), 2);
        assert!(h[0].healthy && h[0].name == "fresh" && h[0].synced);
        assert!(!h[1].healthy && h[1].name == "stale" && h[1].lag >= Duration::from_secs(119));
        unregister_db(path);
    }

    #[test]
    fn values_and_escapes() {
        assert_eq!(format_value(3.0), "3");
        assert_eq!(format_value(0.5), "0.5");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(escape_label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        let c = FloatCounter::default();
        c.add(-1.0);
        c.add(f64::NAN);
        c.add(0.5);
        assert_eq!(c.get(), 0.5);
    }
}
