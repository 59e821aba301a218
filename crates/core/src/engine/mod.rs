//! The replication engine: tail a live database's WAL into the shadow WAL, checkpoint, ship
//! LZ4 WAL segments and snapshots to every replica, enforce retention.
//!
//! The central type is [`Replicator`]: one per database, running on the caller's tokio
//! runtime. Several replicators (databases) can run in one process.
//!
//! ```no_run
//! # async fn demo() -> litestream_core::Result<()> {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use litestream_core::{DbOptions, ReplicaHandleConfig, Replicator};
//! # fn client() -> Arc<dyn litestream_core::ReplicaClient> { unimplemented!() }
//! let replicator = Replicator::start(
//!     "/data/app.db",
//!     vec![ReplicaHandleConfig::new(client())],
//!     DbOptions::default(),
//! )
//! .await?;
//! // ... the application writes ...
//! let durable = replicator.sync_and_wait(Duration::from_secs(10)).await?;
//! println!("replicated up to {durable}");
//! replicator.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! The local state (`.<name>-litestream/` with the `generation` file and the shadow WAL),
//! the generation rules and reason strings, the replica layout and the object contents are
//! those of Litestream v0.3.13, so either program can take over from the other. See
//! `db.rs` for how the engine avoids Litestream's permanent read lock.

mod db;
mod lifecycle;
mod lock;
mod ltx_build;
mod ltx_maintain;
mod ltx_options;
mod ltx_replica;
mod ltx_validate;
mod options;
mod replica;
mod snapshot;
pub(crate) mod stream;
mod validate;
mod walwatch;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::pos::{Generation, Pos};

use db::{DbCore, ShadowPos, ValidationPoint};
use lock::MetaLock;
pub use ltx_options::{LtxOptions, ReplicaFormat};
pub use options::{DbOptions, ReplicaHandleConfig, ReplicaOptions};
use replica::ReplicaTask;
pub use validate::{ValidationReport, ValidationStats};

/// State shared between a database's monitor loop and its replicas.
pub(crate) struct DbShared {
    path: PathBuf,
    meta: PathBuf,
    core: Mutex<DbCore>,
    pos_tx: watch::Sender<Option<ShadowPos>>,
    change_tx: watch::Sender<u64>,
    snapshotting: AtomicUsize,
    replica_pos: Mutex<Vec<Option<(Generation, u32)>>>,
    page_size: std::sync::atomic::AtomicU32,
    /// The database file, opened once and never closed while the replicator runs (see
    /// `stream::lz4_shared_file_stream` for why).
    db_file: Mutex<Option<Arc<std::fs::File>>>,
    /// One replicator per database (see [`lock`]).
    _lock: MetaLock,
    /// The WAL as the engine's own last write left it: a watcher event for a WAL that still
    /// looks like this is not the application writing (see [`monitor`]).
    own_wal: Mutex<Option<lifecycle::WalStamp>>,
    /// The last sync saw a transaction on its way into the WAL (see `DbCore::commit_in_progress`):
    /// the monitor looks again at the next tick.
    commit_in_progress: std::sync::atomic::AtomicBool,
}

impl DbShared {
    /// The shared, never-closed handle on the database file.
    fn db_file(&self) -> Result<Arc<std::fs::File>> {
        let mut guard = self
            .db_file
            .lock()
            .map_err(|_| Error::InvalidArgument("database file lock poisoned".into()))?;
        if let Some(f) = guard.as_ref() {
            return Ok(Arc::clone(f));
        }
        let f = Arc::new(
            std::fs::File::open(&self.path)
                .map_err(|e| Error::io(self.path.display().to_string(), e))?,
        );
        *guard = Some(Arc::clone(&f));
        Ok(f)
    }

    fn shadow_path(&self, g: &Generation, index: u32) -> PathBuf {
        self.meta
            .join("generations")
            .join(g.as_str())
            .join("wal")
            .join(format!("{index:08x}.wal"))
    }

    fn page_size(&self) -> u32 {
        self.page_size.load(Ordering::Relaxed)
    }

    /// Run one database sync on a blocking thread; publish the position and wake replicas.
    async fn sync(self: &Arc<Self>) -> Result<Option<ShadowPos>> {
        let started = std::time::Instant::now();
        let r = self.sync_inner().await;
        let m = crate::metrics::db(&self.path.to_string_lossy());
        match &r {
            Ok(pos) => {
                m.record_sync(started.elapsed());
                if let Ok(meta) = std::fs::metadata(&self.path) {
                    m.db_size.set(meta.len());
                }
                let mut wal = self.path.clone().into_os_string();
                wal.push("-wal");
                if let Ok(meta) = std::fs::metadata(&wal) {
                    m.wal_size.set(meta.len());
                }
                if let Some(p) = pos {
                    m.shadow_wal_index.set(p.index);
                    m.shadow_wal_size.set(p.size);
                }
            }
            Err(_) => m.record_sync_error(started.elapsed()),
        }
        r
    }

    async fn sync_inner(self: &Arc<Self>) -> Result<Option<ShadowPos>> {
        // At most a few database syncs at once in the process: 1,000 databases written at
        // the same moment would otherwise each take a blocking thread (stack and malloc
        // arena) at once. The disk, not the thread count, bounds how fast they go.
        let _slot = sync_slots().acquire().await.map_err(|_| Error::Cancelled)?;
        let me = Arc::clone(self);
        let out = tokio::task::spawn_blocking(move || {
            let replica_pos = me.replica_pos.lock().map(|v| v.clone()).unwrap_or_default();
            let mut core = me
                .core
                .lock()
                .map_err(|_| Error::io("db", io::Error::other("database state poisoned")))?;
            // Read under the core mutex: a snapshot raises it under the same mutex.
            let allowed = me.snapshotting.load(Ordering::SeqCst) == 0;
            // Frames copied before a checkpoint are published at once (see `DbCore::sync`).
            let r = core.sync(&replica_pos, allowed, &mut |pos, changed| {
                me.publish(pos, changed)
            });
            me.commit_in_progress
                .store(core.commit_in_progress(), Ordering::Relaxed);
            me.page_size.store(core.page_size(), Ordering::Relaxed);
            me.after_core_sync(&mut core);
            if let Ok(out) = &r {
                if let Some(pos) = &out.pos {
                    me.publish(pos, out.changed);
                }
            }
            r
        })
        .await
        .map_err(|e| Error::io("sync task", io::Error::other(e)))??;
        Ok(out.pos)
    }

    /// Publish a new local position and wake the replicas if anything changed.
    ///
    /// Called only with the core mutex held, right after the position was computed under it,
    /// so positions are published in the order they were reached: the published position never
    /// moves backwards.
    fn publish(&self, pos: &ShadowPos, changed: bool) {
        let moved = self.pos_tx.send_if_modified(|cur| {
            if cur.as_ref() != Some(pos) {
                *cur = Some(pos.clone());
                true
            } else {
                false
            }
        });
        if moved || changed {
            self.change_tx.send_modify(|v| *v += 1);
        }
    }

    /// Pin the current position (see `validate.rs`) and compute the CRC-64/ISO of the
    /// database as of that position. The database lock is held only while pinning.
    async fn validation_checksum(self: &Arc<Self>) -> Result<(ShadowPos, u64)> {
        let me = Arc::clone(self);
        let db = self.db_file()?;
        let (vp, _) = self.pin_position(false).await?;
        let (pos, crc) = tokio::task::spawn_blocking(move || {
            let crc = validate::page_image_checksum(&db, &vp.shadow, vp.page_size, vp.pos.size)
                .map_err(|e| Error::io(me.path.display().to_string(), e))?;
            // Release the pin only after the page image was read.
            drop(vp.pin);
            Ok::<_, Error>((vp.pos, crc))
        })
        .await
        .map_err(|e| Error::io("validation task", io::Error::other(e)))??;
        Ok((pos, crc))
    }

    /// Give up generation `g` if it is still the current one (the replica holds a history this
    /// database no longer has) and sync, which starts a new generation.
    async fn abandon_generation(self: &Arc<Self>, g: &Generation) -> Result<()> {
        let me = Arc::clone(self);
        let g = g.clone();
        tokio::task::spawn_blocking(move || {
            let core = me
                .core
                .lock()
                .map_err(|_| Error::io("db", io::Error::other("database state poisoned")))?;
            core.abandon_generation(&g);
            Ok::<_, Error>(())
        })
        .await
        .map_err(|e| Error::io("abandon task", io::Error::other(e)))??;
        self.sync().await.map(|_| ())
    }

    /// Pin the current position (`DbCore::validation_point`) and publish it, both under the
    /// core mutex. With `snapshot`, also count a snapshot in progress: engine checkpoints are
    /// skipped until the returned guard is dropped. Raising the count under the same mutex as
    /// the sync that reads it leaves no window for a checkpoint decided before the pin.
    async fn pin_position(
        self: &Arc<Self>,
        snapshot: bool,
    ) -> Result<(ValidationPoint, Option<SnapshotGuard>)> {
        let me = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let mut core = me
                .core
                .lock()
                .map_err(|_| Error::io("db", io::Error::other("database state poisoned")))?;
            let vp = core.validation_point()?;
            let guard = snapshot.then(|| {
                me.snapshotting.fetch_add(1, Ordering::SeqCst);
                SnapshotGuard(Arc::clone(&me))
            });
            me.publish(&vp.pos, false);
            Ok::<_, Error>((vp, guard))
        })
        .await
        .map_err(|e| Error::io("pin task", io::Error::other(e)))?
    }
}

/// A snapshot in progress (see `DbShared::pin_position`): engine checkpoints are skipped
/// until it is dropped.
pub(crate) struct SnapshotGuard(Arc<DbShared>);

impl Drop for SnapshotGuard {
    fn drop(&mut self) {
        self.0.snapshotting.fetch_sub(1, Ordering::SeqCst);
    }
}

struct ReplicaHandle {
    name: String,
    pos_rx: watch::Receiver<Option<Pos>>,
    force: Arc<Notify>,
    validate_tx: mpsc::Sender<oneshot::Sender<Result<ValidationReport>>>,
    validation: Arc<Mutex<ValidationStats>>,
}

/// Replication of one database to one or more replicas, running on the caller's tokio
/// runtime until [`shutdown`](Self::shutdown).
pub struct Replicator {
    shared: Arc<DbShared>,
    replicas: Vec<ReplicaHandle>,
    db_shutdown: watch::Sender<bool>,
    replica_shutdown: watch::Sender<bool>,
    db_task: Option<JoinHandle<()>>,
    replica_tasks: Vec<JoinHandle<()>>,
    _watcher: Option<walwatch::WalWatch>,
}

impl std::fmt::Debug for Replicator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replicator")
            .field("db", &self.shared.path)
            .field(
                "replicas",
                &self.replicas.iter().map(|r| &r.name).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

fn reached(p: &Option<Pos>, target: &ShadowPos) -> bool {
    p.as_ref().is_some_and(|p| {
        p.generation == target.generation && (p.index, p.offset) >= (target.index, target.size)
    })
}

/// `path`, made absolute against the current directory.
fn absolute_db_path(path: PathBuf) -> Result<PathBuf> {
    if path.is_relative() {
        let cwd = std::env::current_dir().map_err(|e| Error::io(".", e))?;
        return Ok(cwd.join(path));
    }
    Ok(path)
}

/// Replica names must be unique (they name metrics and log lines).
fn check_replica_names(replicas: &[ReplicaHandleConfig]) -> Result<()> {
    for (i, r) in replicas.iter().enumerate() {
        if replicas[..i].iter().any(|o| o.name == r.name) {
            return Err(Error::InvalidConfig(format!(
                "duplicate replica name: {:?}",
                r.name
            )));
        }
    }
    Ok(())
}

impl Replicator {
    /// Start replicating `db_path` to `replicas`.
    ///
    /// Validates the options (unique replica names, Litestream's checks), runs a first sync
    /// (so a file that is not a SQLite database fails here; a rollback-journal database is
    /// converted to WAL mode and logged), then spawns the monitor loop and one task per
    /// replica. If the database does not exist yet the engine waits for it to appear.
    pub async fn start(
        db_path: impl Into<PathBuf>,
        replicas: Vec<ReplicaHandleConfig>,
        opts: DbOptions,
    ) -> Result<Replicator> {
        opts.validate()?;
        let path = absolute_db_path(db_path.into())?;
        check_replica_names(&replicas)?;
        let shared = Self::first_sync(&path, &opts, replicas.len()).await?;
        let wake = Arc::new(Notify::new());
        let watcher = Self::watch(&path, &opts, &wake);
        let (db_shutdown, db_shutdown_rx) = watch::channel(false);
        let (replica_shutdown, replica_shutdown_rx) = watch::channel(false);
        let db_task = tokio::spawn(monitor(
            Arc::clone(&shared),
            MonitorTimes {
                interval: opts.monitor_interval,
                idle: idle_sync_period(&opts),
                wake_gap: wake_gap(&opts, replicas.iter().map(|r| r.options.sync_interval)),
            },
            wake,
            db_shutdown_rx,
        ));
        let (handles, tasks) = Self::spawn_replicas(&shared, replicas, &replica_shutdown_rx);
        Ok(Replicator {
            shared,
            replicas: handles,
            db_shutdown,
            replica_shutdown,
            db_task: Some(db_task),
            replica_tasks: tasks,
            _watcher: watcher,
        })
    }

    /// The database's shared state, after its first sync (see [`Self::start`]).
    async fn first_sync(path: &Path, opts: &DbOptions, replicas: usize) -> Result<Arc<DbShared>> {
        // Open the database file once (never closed while we run): closing any descriptor of
        // it would drop every POSIX lock this process holds, an embedding app's included.
        let db_file = std::fs::File::open(path).ok().map(Arc::new);
        let was_wal = db_file.as_deref().and_then(journal_is_wal);
        let core = DbCore::new(path.to_path_buf(), opts.clone());
        let meta = core.meta.clone();
        let lock = MetaLock::acquire(&meta, path)?;
        let (pos_tx, _) = watch::channel(None);
        let (change_tx, _) = watch::channel(0u64);
        let shared = Arc::new(DbShared {
            path: path.to_path_buf(),
            meta,
            core: Mutex::new(core),
            pos_tx,
            change_tx,
            snapshotting: AtomicUsize::new(0),
            replica_pos: Mutex::new(vec![None; replicas]),
            page_size: Default::default(),
            db_file: Mutex::new(db_file),
            _lock: lock,
            own_wal: Mutex::new(None),
            commit_in_progress: Default::default(),
        });
        shared.sync().await?;
        if was_wal == Some(false) {
            tracing::info!(db = %path.display(), "database converted from rollback journal to WAL mode");
        }
        Ok(shared)
    }

    /// The WAL watcher that wakes the monitor loop, if enabled and available.
    fn watch(path: &Path, opts: &DbOptions, wake: &Arc<Notify>) -> Option<walwatch::WalWatch> {
        if !opts.watch_wal {
            return None;
        }
        match walwatch::watch_wal(path, Arc::clone(wake)) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(db = %path.display(), error = %e, "wal watch unavailable, polling only");
                None
            }
        }
    }

    /// Spawn one task per replica; returns their handles and join handles.
    fn spawn_replicas(
        shared: &Arc<DbShared>,
        replicas: Vec<ReplicaHandleConfig>,
        shutdown_rx: &watch::Receiver<bool>,
    ) -> (Vec<ReplicaHandle>, Vec<JoinHandle<()>>) {
        let mut handles = Vec::new();
        let mut tasks = Vec::new();
        for (slot, r) in replicas.into_iter().enumerate() {
            let (pos_tx, pos_rx) = watch::channel(None);
            let force = Arc::new(Notify::new());
            let (validate_tx, validate_rx) = mpsc::channel(4);
            let validation = Arc::new(Mutex::new(ValidationStats::default()));
            let task = ReplicaTask {
                slot,
                name: r.name.clone(),
                client: r.client,
                opts: r.options,
                db: Arc::clone(shared),
                pos: None,
                pos_tx,
                next_snapshot: None,
                validation: Arc::clone(&validation),
                restorable: None,
            };
            tasks.push(tokio::spawn(ltx_replica::run_in_format(
                task,
                shutdown_rx.clone(),
                Arc::clone(&force),
                validate_rx,
            )));
            handles.push(ReplicaHandle {
                name: r.name,
                pos_rx,
                force,
                validate_tx,
                validation,
            });
        }
        (handles, tasks)
    }

    /// The database path.
    pub fn db_path(&self) -> &Path {
        &self.shared.path
    }

    /// The meta directory (`.<name>-litestream`).
    pub fn meta_path(&self) -> &Path {
        &self.shared.meta
    }

    /// The current local position: generation, shadow WAL index and the committed size of
    /// that index. `None` until the database exists.
    pub fn position(&self) -> Option<Pos> {
        self.shared.pos_tx.borrow().as_ref().map(ShadowPos::pos)
    }

    /// The position up to which the named replica holds the WAL, restorably (`None` if unknown,
    /// or while the replica has no snapshot of the position's generation yet).
    pub fn replica_position(&self, name: &str) -> Option<Pos> {
        self.replicas
            .iter()
            .find(|r| r.name == name)
            .and_then(|r| r.pos_rx.borrow().clone())
    }

    /// Validate the named replica now (spec 5.4, see [`ValidationReport`]): pin the current
    /// position, checksum the database as of it, upload exactly up to it, restore the replica
    /// up to it into a temporary directory and compare. Returns the comparison (check
    /// [`ValidationReport::ok`]); errors if the replica is unknown or the restore fails. The
    /// counters of [`validation_stats`](Self::validation_stats) are updated either way.
    pub async fn validate(&self, name: &str) -> Result<ValidationReport> {
        let r = self
            .replicas
            .iter()
            .find(|r| r.name == name)
            .ok_or_else(|| Error::InvalidArgument(format!("replica {name:?} not found")))?;
        let (tx, rx) = oneshot::channel();
        r.validate_tx.send(tx).await.map_err(|_| Error::Cancelled)?;
        rx.await.map_err(|_| Error::Cancelled)?
    }

    /// Validation counters and last result of the named replica (`None` if unknown).
    pub fn validation_stats(&self, name: &str) -> Option<ValidationStats> {
        self.replicas
            .iter()
            .find(|r| r.name == name)
            .and_then(|r| r.validation.lock().ok().map(|v| v.clone()))
    }

    /// Names of the replicas.
    pub fn replica_names(&self) -> Vec<String> {
        self.replicas.iter().map(|r| r.name.clone()).collect()
    }

    /// Copy every transaction committed so far into the shadow WAL now, without waiting for
    /// the replicas; returns the local position.
    pub async fn sync(&self) -> Result<Option<Pos>> {
        Ok(self.shared.sync().await?.map(|p| p.pos()))
    }

    /// Sync the database now and wait until every transaction committed before this call is
    /// durable on all replicas (each replica uploads immediately, regardless of its
    /// `sync-interval`). Returns the position that is now durable everywhere. Only a position
    /// a restore can reach counts: a replica in a generation whose snapshot is not written yet
    /// has none. If a new generation starts meanwhile (e.g. the replica was found ahead of a
    /// rolled-back database), the wait follows it. Fails with an I/O error of kind `TimedOut`
    /// if that takes longer than `timeout`.
    pub async fn sync_and_wait(&self, timeout: Duration) -> Result<Pos> {
        let fut = async {
            'retarget: loop {
                let target = self.shared.sync().await?.ok_or_else(|| {
                    Error::InvalidArgument("no generation, waiting for data".into())
                })?;
                for r in &self.replicas {
                    r.force.notify_one();
                }
                for r in &self.replicas {
                    if !self.wait_replica(r, &target).await? {
                        // A new generation started meanwhile (its snapshot holds every
                        // transaction committed before this call): wait for it instead.
                        continue 'retarget;
                    }
                }
                return Ok::<_, Error>(target.pos());
            }
        };
        match tokio::time::timeout(timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(Error::io(
                self.shared.path.display().to_string(),
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("replicas not in sync after {timeout:?}"),
                ),
            )),
        }
    }

    /// Wait until replica `r` holds `target` (true), or until it holds a position in the
    /// current generation when that is no longer `target`'s (false): a position in another
    /// generation never acknowledges `target`.
    async fn wait_replica(&self, r: &ReplicaHandle, target: &ShadowPos) -> Result<bool> {
        let moved_on = |p: &Option<Pos>| {
            let current = self
                .shared
                .pos_tx
                .borrow()
                .as_ref()
                .map(|d| d.generation.clone());
            p.as_ref().is_some_and(|p| {
                p.generation != target.generation && Some(&p.generation) == current.as_ref()
            })
        };
        let mut rx = r.pos_rx.clone();
        let p = rx
            .wait_for(|p| reached(p, target) || moved_on(p))
            .await
            .map_err(|_| Error::Cancelled)?;
        Ok(reached(&p, target))
    }

    /// Stop: a final database sync, a final upload round on every replica, then release the
    /// read lock and close the engine's connections.
    pub async fn shutdown(mut self) -> Result<()> {
        self.db_shutdown.send_replace(true);
        if let Some(t) = self.db_task.take() {
            let _ = t.await;
        }
        let last = self.shared.sync().await;
        if let Err(e) = &last {
            tracing::warn!(db = %self.shared.path.display(), error = %e, "sync error");
        }
        self.replica_shutdown.send_replace(true);
        for t in self.replica_tasks.drain(..) {
            let _ = t.await;
        }
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || {
            if let Ok(mut core) = shared.core.lock() {
                core.close();
            }
        })
        .await
        .map_err(|e| Error::io("close", io::Error::other(e)))?;
        last.map(|_| ())
    }
}

impl Drop for Replicator {
    fn drop(&mut self) {
        self.db_shutdown.send_replace(true);
        self.replica_shutdown.send_replace(true);
    }
}

/// Some(true) if the database header says WAL mode, Some(false) for rollback journal.
fn journal_is_wal(f: &std::fs::File) -> Option<bool> {
    let mut h = [0u8; 20];
    std::os::unix::fs::FileExt::read_exact_at(f, &mut h, 0).ok()?;
    if &h[..16] != b"SQLite format 3\0" {
        return None;
    }
    Some(h[18] == 2)
}

/// Longest time the monitor goes without a sync while neither the database nor its WAL
/// changes: a quarter of `checkpoint-interval` (whose checkpoint of an idle database needs a
/// sync to run), within [`monitor-interval`, 15 s].
fn idle_sync_period(opts: &DbOptions) -> Duration {
    let ci = opts.checkpoint_interval.unwrap_or(Duration::from_secs(60));
    (ci / 4).clamp(
        opts.monitor_interval,
        Duration::from_secs(15).max(opts.monitor_interval),
    )
}

/// Shortest time between two syncs that a WAL change (the watcher) starts: the shortest
/// replica `sync-interval`, at most `monitor-interval`. A replica uploads at most once per
/// `sync-interval`, so copying the WAL into the shadow more often only costs CPU: under a
/// steady write load the watcher fires on every commit, and a sync per commit (each with its
/// fsync) made the engine cost more than Litestream's one sync per `monitor-interval`.
fn wake_gap(opts: &DbOptions, sync_intervals: impl Iterator<Item = Duration>) -> Duration {
    sync_intervals
        .min()
        .unwrap_or(opts.monitor_interval)
        .min(opts.monitor_interval)
}

/// Database syncs (blocking threads) allowed at once in this process; see
/// `DbShared::sync_inner`.
fn sync_slots() -> &'static tokio::sync::Semaphore {
    static SLOTS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    SLOTS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        tokio::sync::Semaphore::new((2 * cores).max(4))
    })
}

/// Shortest time the monitor syncs at every tick after a WAL write that was not committed yet
/// when it woke the monitor (see [`monitor`]).
const RECHECK_AFTER_WAKE: Duration = Duration::from_secs(2);

/// The monitor loop's clocks (see [`monitor`]).
struct MonitorTimes {
    /// `monitor-interval`.
    interval: Duration,
    /// See [`idle_sync_period`].
    idle: Duration,
    /// See [`wake_gap`].
    wake_gap: Duration,
}

/// The database file and its WAL as the monitor last saw them before a sync.
fn db_stamps(shared: &DbShared) -> (Option<lifecycle::WalStamp>, Option<lifecycle::WalStamp>) {
    let mut wal = shared.path.clone().into_os_string();
    wal.push("-wal");
    (
        lifecycle::WalStamp::of(&shared.path),
        lifecycle::WalStamp::of(Path::new(&wal)),
    )
}

/// The monitor loop: a sync every `monitor-interval` (skipped while neither the database
/// nor its WAL changed, for up to `idle`), and early on a WAL change, but not sooner than
/// `wake_gap` after the previous sync began (WAL changes in between are batched).
async fn monitor(
    shared: Arc<DbShared>,
    times: MonitorTimes,
    wake: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    let MonitorTimes {
        interval,
        idle,
        wake_gap,
    } = times;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    // What the last sync started from (None: sync at the next tick; the first sync in
    // `start` may have seen an older state than the one now).
    let mut last: Option<(_, tokio::time::Instant)> = None;
    let mut last_sync: Option<tokio::time::Instant> = None;
    // Sync at every tick until then, whatever the stamps say (see below).
    let mut recheck_until: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            _ = tick.tick() => {
                let rechecking = recheck_until.is_some_and(|t| tokio::time::Instant::now() < t);
                if let Some((stamps, at)) = &last {
                    if !rechecking && *stamps == db_stamps(&shared) && at.elapsed() < idle {
                        continue;
                    }
                }
            }
            _ = wake.notified() => {
                // Let a burst of WAL writes settle a little, and batch the ones that come
                // sooner than `wake_gap` after the last sync.
                let settle = tokio::time::Instant::now() + Duration::from_millis(2);
                let due = last_sync.map_or(settle, |t: tokio::time::Instant| (t + wake_gap).max(settle));
                tokio::select! {
                    biased;
                    _ = shutdown.changed() => break,
                    _ = tokio::time::sleep_until(due) => {}
                }
                if shared.wal_is_own_write() {
                    continue;
                }
            }
        }
        let now = tokio::time::Instant::now();
        last_sync = Some(now);
        last = Some((db_stamps(&shared), now));
        let before = shared.pos_tx.borrow().clone();
        let synced = shared.sync().await;
        match &synced {
            Ok(p) if *p != before => recheck_until = None,
            Ok(_) if shared.commit_in_progress.load(Ordering::Relaxed) => {
                // Nothing new committed, but a transaction is on its way into the WAL (its
                // frames are written, and fsynced, before the wal-index says they are
                // committed, and finishing the commit does not touch the WAL file). The stamps
                // taken above already include its frames, so sync at every tick for a while,
                // until the commit shows (or the WAL changes again).
                if recheck_until.is_none() {
                    recheck_until = Some(now + (interval * 5).max(RECHECK_AFTER_WAKE));
                }
            }
            _ => recheck_until = None,
        }
        if let Err(e) = synced {
            last = None;
            tracing::warn!(db = %shared.path.display(), error = %e, "sync error");
            // Back off for a whole interval: our own recovery writes touch the WAL and would
            // otherwise wake us again at once.
            tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                _ = tokio::time::sleep(interval.max(Duration::from_millis(100))) => {}
            }
            tick.reset();
        }
    }
}

/// The database's life under the monitor (see `lifecycle.rs`).
impl DbShared {
    /// After a database sync: forget the handle of a database file that was replaced (the
    /// next snapshot reads the new one), remember the engine's own WAL write.
    fn after_core_sync(&self, core: &mut DbCore) {
        if core.take_replaced() {
            if let Ok(mut f) = self.db_file.lock() {
                *f = None;
            }
        }
        if let Some(stamp) = core.take_own_write() {
            if let Ok(mut w) = self.own_wal.lock() {
                *w = Some(stamp);
            }
        }
    }

    /// True if the WAL is exactly as the engine's own last write left it: a watcher event
    /// for it is the engine waking itself.
    fn wal_is_own_write(&self) -> bool {
        let Ok(guard) = self.own_wal.lock() else {
            return false;
        };
        let Some(own) = guard.as_ref() else {
            return false;
        };
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        lifecycle::WalStamp::of(Path::new(&wal)).as_ref() == Some(own)
    }
}
