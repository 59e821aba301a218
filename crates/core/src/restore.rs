//! Restore: choose a generation, snapshot and WAL range exactly as Litestream v0.3.13 does, then
//! rebuild the database by applying WAL frames straight into the output file.
//!
//! The result is byte-identical to Litestream's (which replays each index through SQLite's
//! `wal_checkpoint(TRUNCATE)`): per index, every frame is written in order at its page's
//! offset and the file is then cut to the database size of the index's last commit, which is
//! what a checkpoint does. Unlike Litestream, every frame's salt and checksum chain is checked
//! and any damage is an error that names the object, segments must be contiguous, objects are
//! downloaded with bounded parallelism and retried with backoff, memory is bounded by the
//! parallelism (not the number of segments), and the output appears atomically (temporary
//! file beside it, fsync, link/rename) or not at all, with no `-wal`/`-shm` left behind.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::StreamExt;
use time::OffsetDateTime;
use tokio::io::AsyncReadExt;
use tokio::runtime::Handle;
use tokio_util::io::SyncIoBridge;

use crate::error::{Error, Result};
use crate::lz4::Lz4FrameReader;
use crate::pos::{Generation, Pos};
use crate::replica_client::{ReplicaClient, SnapshotInfo, WalSegmentInfo};
use crate::retry::RetryConfig;
use crate::wal::{db_page_size, FrameValidator, WalHeader, WAL_HEADER_SIZE};

/// Default number of concurrent downloads (`-parallelism`). Litestream's default is 8; with a
/// remote store's time to first byte (20 ms in `benches/s3_restore.sh --latency-ms 20`) 8 GETs
/// in flight made a restore of 2,340 objects take 7.7 s and 32 took 2.7 s, while against local
/// servers 8 and 32 measured the same. Memory is bounded by the prefetch budget, not by this.
pub const DEFAULT_PARALLELISM: usize = 32;

/// Most concurrent downloads a restore runs; a larger [`RestoreOptions::parallelism`] is
/// lowered to it.
pub const MAX_PARALLELISM: usize = 1024;

/// Objects up to this size are downloaded ahead of the applier into memory; larger ones are
/// streamed when their turn comes.
pub const PREFETCH_MAX: u64 = 1 << 20;

/// Requests in flight per unit of `parallelism` when prefetching small objects (more was
/// measured slower against a local S3 server whose per-request time is the bottleneck).
pub const PREFETCH_WINDOW: usize = 1;

/// Memory budget (KiB) for prefetched objects waiting to be applied: 16 MiB.
const PREFETCH_BUDGET_KIB: usize = 16 << 10;

/// What to restore and where.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// Output database path; must not exist.
    pub output: PathBuf,
    /// Restrict to this generation.
    pub generation: Option<Generation>,
    /// Restore up to and including this WAL index.
    pub index: Option<u32>,
    /// With [`index`](Self::index): apply only the segments of that index that start before
    /// this byte offset, i.e. restore the state at the replica position `(index, offset)`
    /// rather than the whole index. Validation uses it while uploads go on.
    pub until_offset: Option<u64>,
    /// Restore to the state at this time (upload times).
    pub timestamp: Option<OffsetDateTime>,
    /// Concurrent downloads (at least 1).
    pub parallelism: usize,
    /// Retry policy for every download.
    pub retry: RetryConfig,
    /// Called with the bytes read so far while a restore runs (see [`RestoreProgress`]).
    pub progress: Option<ProgressCallback>,
}

/// Progress of a running restore: compressed bytes of the snapshot and WAL segments read so
/// far, against the total listed for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestoreProgress {
    /// Compressed bytes read so far.
    pub bytes_done: u64,
    /// Compressed bytes of the snapshot and segments in the plan (listing sizes).
    pub bytes_total: u64,
    /// True on the last call, once every object was applied and the file synced.
    pub finished: bool,
}

/// A progress callback (see [`RestoreOptions::progress`]); called from a blocking thread,
/// possibly after every read, so it must be cheap and do its own throttling.
#[derive(Clone)]
pub struct ProgressCallback(pub Arc<dyn Fn(RestoreProgress) + Send + Sync>);

impl std::fmt::Debug for ProgressCallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProgressCallback")
    }
}

/// Counts bytes read through it and reports them to the callback.
pub(crate) struct ProgressReader<'a, R> {
    inner: R,
    tracker: &'a ProgressTracker,
}

impl<R: Read> Read for ProgressReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.tracker.add(n as u64);
        Ok(n)
    }
}

/// Running total for the callback (a no-op without one).
pub(crate) struct ProgressTracker {
    cb: Option<ProgressCallback>,
    done: std::sync::atomic::AtomicU64,
    total: u64,
}

impl ProgressTracker {
    pub(crate) fn new(cb: Option<ProgressCallback>, total: u64) -> Self {
        ProgressTracker {
            cb,
            done: std::sync::atomic::AtomicU64::new(0),
            total,
        }
    }

    pub(crate) fn add(&self, n: u64) {
        if let Some(cb) = &self.cb {
            let done = self.done.fetch_add(n, std::sync::atomic::Ordering::Relaxed) + n;
            (cb.0)(RestoreProgress {
                bytes_done: done.min(self.total),
                bytes_total: self.total,
                finished: false,
            });
        }
    }

    pub(crate) fn finish(&self) {
        if let Some(cb) = &self.cb {
            (cb.0)(RestoreProgress {
                bytes_done: self.total,
                bytes_total: self.total,
                finished: true,
            });
        }
    }

    pub(crate) fn reader<R: Read>(&self, inner: R) -> ProgressReader<'_, R> {
        ProgressReader {
            inner,
            tracker: self,
        }
    }
}

impl RestoreOptions {
    /// Options with Litestream's defaults for `output`.
    pub fn new(output: impl Into<PathBuf>) -> Self {
        RestoreOptions {
            output: output.into(),
            generation: None,
            index: None,
            until_offset: None,
            timestamp: None,
            parallelism: DEFAULT_PARALLELISM,
            retry: RetryConfig::default(),
            progress: None,
        }
    }
}

/// A generation with its snapshots and WAL segments, as listed once.
#[derive(Debug, Clone)]
pub struct GenerationListing {
    /// The generation.
    pub generation: Generation,
    /// Its snapshots, by index.
    pub snapshots: Vec<SnapshotInfo>,
    /// Its WAL segments, by (index, offset).
    pub wal: Vec<WalSegmentInfo>,
}

impl GenerationListing {
    /// List `generation` on `client` (one snapshot listing and one WAL listing).
    pub async fn fetch(client: &dyn ReplicaClient, generation: &Generation) -> Result<Self> {
        let (snapshots, wal) = futures::try_join!(
            client.snapshots(generation),
            client.wal_segments(generation)
        )?;
        Ok(GenerationListing {
            generation: generation.clone(),
            snapshots,
            wal,
        })
    }

    /// Earliest created-at time over snapshots and segments.
    pub fn created_at(&self) -> Option<OffsetDateTime> {
        self.times().min()
    }

    /// Latest created-at time over snapshots and segments.
    pub fn updated_at(&self) -> Option<OffsetDateTime> {
        self.times().max()
    }

    fn times(&self) -> impl Iterator<Item = OffsetDateTime> + '_ {
        self.snapshots
            .iter()
            .map(|s| s.created_at)
            .chain(self.wal.iter().map(|w| w.created_at))
    }

    /// Highest index present in the generation (snapshots or segments).
    pub fn newest_index(&self) -> Option<u32> {
        self.snapshots
            .iter()
            .map(|s| s.index)
            .chain(self.wal.iter().map(|w| w.index))
            .max()
    }
}

/// List every generation of `client` (optionally only `only`), with its contents.
pub async fn list_generations(
    client: &dyn ReplicaClient,
    only: Option<&Generation>,
) -> Result<Vec<GenerationListing>> {
    let mut out = Vec::new();
    for generation in client.generations().await? {
        if only.is_some_and(|g| *g != generation) {
            continue;
        }
        out.push(GenerationListing::fetch(client, &generation).await?);
    }
    Ok(out)
}

/// Pick the generation to restore from listings of one replica (spec 6.1): the one with the
/// latest update, among those whose time span contains `timestamp` if given.
pub fn choose_generation(
    listings: Vec<GenerationListing>,
    timestamp: Option<OffsetDateTime>,
) -> Option<GenerationListing> {
    let mut best: Option<(OffsetDateTime, GenerationListing)> = None;
    for l in listings {
        let (Some(created), Some(updated)) = (l.created_at(), l.updated_at()) else {
            continue;
        };
        if let Some(ts) = timestamp {
            if ts < created || ts > updated {
                continue;
            }
        }
        if best.as_ref().is_none_or(|(t, _)| updated > *t) {
            best = Some((updated, l));
        }
    }
    best.map(|(_, l)| l)
}

/// Find what to restore on `client` for `opts` (generation filter and timestamp).
pub async fn find_target(
    client: &dyn ReplicaClient,
    opts: &RestoreOptions,
) -> Result<Option<GenerationListing>> {
    let listings = list_generations(client, opts.generation.as_ref()).await?;
    Ok(choose_generation(listings, opts.timestamp))
}

/// The snapshot and WAL segments a restore will use.
#[derive(Debug, Clone)]
pub struct RestorePlan {
    /// The generation.
    pub generation: Generation,
    /// The snapshot to start from.
    pub snapshot: SnapshotInfo,
    /// Segments to apply, in order, for indexes from the snapshot's to the last one.
    pub segments: Vec<WalSegmentInfo>,
}

impl RestorePlan {
    /// Highest WAL index the plan applies (the snapshot's index when there is no WAL).
    pub fn max_index(&self) -> u32 {
        self.segments
            .last()
            .map_or(self.snapshot.index, |s| s.index)
    }
}

/// Choose snapshot and segments from a listing (spec 6.3 and 6.4), with v0.3.13's bugs fixed:
/// an index beyond the newest is an error, and a WAL range that ends below the snapshot is
/// a snapshot-only restore instead of a panic.
pub fn plan(
    listing: &GenerationListing,
    index: Option<u32>,
    timestamp: Option<OffsetDateTime>,
) -> Result<RestorePlan> {
    let generation = &listing.generation;
    if index.is_some() && timestamp.is_some() {
        return Err(Error::InvalidArgument(
            "cannot specify index & timestamp to restore".into(),
        ));
    }
    let snapshot = if let Some(n) = index {
        if let Some(newest) = listing.newest_index() {
            if n > newest {
                return Err(Error::InvalidArgument(format!(
                    "unable to locate index {n:08x} in generation {generation}: newest index is {newest:08x}"
                )));
            }
        }
        listing
            .snapshots
            .iter()
            .rfind(|s| s.index <= n)
            .cloned()
            .ok_or_else(|| Error::NoSnapshots {
                generation: generation.to_string(),
            })?
    } else {
        let mut best: Option<&SnapshotInfo> = None;
        for s in &listing.snapshots {
            if timestamp.is_some_and(|ts| s.created_at > ts) {
                continue;
            }
            if best.is_none_or(|b| s.created_at > b.created_at) {
                best = Some(s);
            }
        }
        best.cloned().ok_or_else(|| Error::NoSnapshots {
            generation: generation.to_string(),
        })?
    };

    let mut by_index: BTreeMap<u32, Vec<&WalSegmentInfo>> = BTreeMap::new();
    for seg in &listing.wal {
        if timestamp.is_some_and(|ts| seg.created_at > ts) || index.is_some_and(|n| seg.index > n) {
            break;
        }
        by_index.entry(seg.index).or_default().push(seg);
    }
    let mut segments = Vec::new();
    if let Some(&max) = by_index.keys().next_back() {
        for i in snapshot.index..=max {
            let Some(segs) = by_index.get(&i) else {
                return Err(Error::corrupt(
                    format!("generation {generation}"),
                    format!("missing WAL index: {generation}/{i:08x}"),
                ));
            };
            if segs[0].offset != 0 {
                return Err(Error::corrupt(
                    format!("generation {generation}"),
                    format!(
                        "missing initial wal segment: generation={generation} index={i:08x} offset={}",
                        segs[0].offset
                    ),
                ));
            }
            for pair in segs.windows(2) {
                if pair[1].offset <= pair[0].offset {
                    return Err(Error::corrupt(
                        format!("generation {generation}"),
                        format!("wal segments out of order: {}", pair[1].pos()),
                    ));
                }
            }
            segments.extend(segs.iter().map(|s| (*s).clone()));
        }
    }
    Ok(RestorePlan {
        generation: generation.clone(),
        snapshot,
        segments,
    })
}

/// What a restore did.
#[derive(Debug, Clone)]
pub struct RestoreOutcome {
    /// Generation restored.
    pub generation: Generation,
    /// Index of the snapshot used.
    pub snapshot_index: u32,
    /// Highest WAL index applied.
    pub max_index: u32,
    /// Number of WAL segments applied.
    pub segments: usize,
    /// Size of the restored database.
    pub db_size: u64,
}

/// Restore the best generation of `client` (per `opts`) into `opts.output`.
pub async fn restore(
    client: Arc<dyn ReplicaClient>,
    opts: &RestoreOptions,
) -> Result<RestoreOutcome> {
    let listing = find_target(client.as_ref(), opts)
        .await?
        .ok_or(Error::NoMatchingBackups)?;
    restore_listing(client, &listing, opts).await
}

/// Restore from an already chosen generation listing.
pub async fn restore_listing(
    client: Arc<dyn ReplicaClient>,
    listing: &GenerationListing,
    opts: &RestoreOptions,
) -> Result<RestoreOutcome> {
    let mut plan = plan(listing, opts.index, opts.timestamp)?;
    if let (Some(index), Some(offset)) = (opts.index, opts.until_offset) {
        plan.segments
            .retain(|s| s.index != index || s.offset < offset);
    }
    execute(client, plan, opts).await
}

/// Path of an object for error messages.
fn snapshot_name(g: &Generation, index: u32) -> String {
    format!("snapshot {}", crate::layout::snapshot_path("", g, index))
}

fn segment_name(s: &WalSegmentInfo) -> String {
    format!(
        "wal segment {}",
        crate::layout::wal_segment_path("", &s.generation, s.index, s.offset)
    )
}

/// Removes the temporary output unless disarmed.
pub(crate) struct TempGuard {
    path: PathBuf,
    pub(crate) armed: bool,
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Run a plan: snapshot into a temporary file, apply segments, then move it into place.
///
/// Frames are written as they are read. If an index turns out to end inside a transaction
/// (Litestream v0.3.13 can leave that after a crash), the restore runs once more holding each
/// transaction until its commit frame, so that the unfinished one is left out as SQLite would.
pub async fn execute(
    client: Arc<dyn ReplicaClient>,
    plan: RestorePlan,
    opts: &RestoreOptions,
) -> Result<RestoreOutcome> {
    let uncommitted_tail = Arc::new(AtomicBool::new(false));
    let first = execute_inner(
        Arc::clone(&client),
        plan.clone(),
        opts,
        false,
        Arc::clone(&uncommitted_tail),
    )
    .await;
    match first {
        Err(e) if uncommitted_tail.load(Ordering::Relaxed) => {
            tracing::warn!(error = %e,
                "restoring again, holding each transaction until its commit frame");
            execute_inner(client, plan, opts, true, uncommitted_tail).await
        }
        r => r,
    }
}

/// [`execute`] with frames written as read (`buffered` false) or held per transaction until
/// its commit; sets `uncommitted_tail` when an index ends inside a transaction.
async fn execute_inner(
    client: Arc<dyn ReplicaClient>,
    plan: RestorePlan,
    opts: &RestoreOptions,
    buffered: bool,
    uncommitted_tail: Arc<AtomicBool>,
) -> Result<RestoreOutcome> {
    let output = opts.output.clone();
    let out_str = output.display().to_string();
    let (dir, tmp, file, mut guard) = prepare_output(&output)?;
    let started = Instant::now();
    let parallelism = opts.parallelism.clamp(1, MAX_PARALLELISM);
    let retry = opts.retry;
    let handle = Handle::current();

    tracing::info!(
        generation = %plan.generation,
        index = plan.snapshot.index,
        path = %tmp.display(),
        "restoring snapshot"
    );
    if !plan.segments.is_empty() {
        tracing::info!(
            generation = %plan.generation,
            index_min = plan.snapshot.index,
            index_max = plan.max_index(),
            segments = plan.segments.len(),
            "restoring wal files"
        );
    }

    // Segments are applied newest index first (offsets ascending within an index), so that
    // every page is written once: see `Applier`.
    let mut order = plan.segments.clone();
    order.sort_by(|x, y| y.index.cmp(&x.index).then(x.offset.cmp(&y.offset)));

    // Prefetch small segments in order, into a bounded channel: up to
    // `parallelism * PREFETCH_WINDOW` requests in flight, within a memory budget of
    // PREFETCH_BUDGET_KIB held until each object is applied.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Fetched>>(parallelism);
    let fetch_client = client.clone();
    let segments = order;
    let budget = Arc::new(tokio::sync::Semaphore::new(PREFETCH_BUDGET_KIB));
    let prefetch = tokio::spawn(async move {
        let mut stream = futures::stream::iter(segments)
            .map(|seg| {
                let client = fetch_client.clone();
                let budget = budget.clone();
                async move {
                    let permit = if seg.size > PREFETCH_MAX {
                        None
                    } else {
                        let kib = (seg.size.div_ceil(1024).max(1)) as u32;
                        Some(
                            budget
                                .acquire_many_owned(kib)
                                .await
                                .map_err(|_| Error::Cancelled)?,
                        )
                    };
                    fetch_segment(client.as_ref(), seg, retry, permit).await
                }
            })
            .buffered(parallelism.saturating_mul(PREFETCH_WINDOW));
        while let Some(item) = stream.next().await {
            let failed = item.is_err();
            if tx.send(item).await.is_err() || failed {
                break;
            }
        }
    });

    let apply_client = client.clone();
    let snapshot = plan.snapshot.clone();
    let generation = plan.generation.clone();
    let n_segments = plan.segments.len();
    let tracker = ProgressTracker {
        cb: opts.progress.clone(),
        done: std::sync::atomic::AtomicU64::new(0),
        // Listed sizes are the replica's claims: saturate rather than overflow.
        total: (plan.segments.iter()).fold(plan.snapshot.size, |t, s| t.saturating_add(s.size)),
    };
    let spill_dir = dir.clone();
    let applied = tokio::task::spawn_blocking(move || -> Result<u64> {
        let claims = Mutex::new(PageClaims::default());
        let cancel = AtomicBool::new(false);
        std::thread::scope(|scope| -> Result<u64> {
            // The snapshot streams in beside the segments and fills only the pages no segment
            // claims (see `PageClaims`), so its download overlaps theirs.
            let snapshot_writer = scope.spawn(|| -> Result<SnapshotWritten> {
                let snap_name = snapshot_name(&generation, snapshot.index);
                let (g, c, h) = (generation.clone(), apply_client.clone(), handle.clone());
                let idx = snapshot.index;
                let reader = ReopeningReader::new(snap_name.clone(), retry, move || {
                    let stream = h.block_on(c.open_snapshot(&g, idx))?;
                    Ok(Box::new(SyncIoBridge::new_with_handle(stream, h.clone()))
                        as Box<dyn Read + Send>)
                });
                let lz = Lz4FrameReader::new(tracker.reader(reader));
                let written = with_read_ahead(lz, |r| {
                    write_snapshot(&file, &claims, &snap_name, r, &cancel)
                });
                if written.is_err() {
                    cancel.store(true, Ordering::Relaxed);
                }
                written
            });
            let segments = (|| -> Result<Applier<'_>> {
                let pending = buffered.then(|| PendingTxn::new(spill_dir.clone()));
                let mut applier = Applier::new(&file, &claims, pending, &uncommitted_tail);
                for _ in 0..n_segments {
                    if cancel.load(Ordering::Relaxed) {
                        return Err(Error::Cancelled);
                    }
                    let item = rx.blocking_recv().ok_or(Error::Cancelled)??;
                    match item {
                        Fetched::Data(seg, bytes, _permit) => {
                            applier.apply(&seg, Lz4FrameReader::new(bytes.as_slice()))?;
                            tracker.add(bytes.len() as u64); // progress callback
                        }
                        Fetched::Stream(seg) => {
                            let (c, h) = (apply_client.clone(), handle.clone());
                            let pos = seg.pos();
                            let reader =
                                ReopeningReader::new(segment_name(&seg), retry, move || {
                                    let stream = h.block_on(c.open_wal_segment(&pos))?;
                                    Ok(Box::new(SyncIoBridge::new_with_handle(stream, h.clone()))
                                        as Box<dyn Read + Send>)
                                });
                            let lz = Lz4FrameReader::new(tracker.reader(reader));
                            with_read_ahead(lz, |r| applier.apply(&seg, r))?;
                        }
                    }
                }
                applier.finish_index()?;
                Ok(applier)
            })();
            if segments.is_err() {
                cancel.store(true, Ordering::Relaxed);
            }
            let snapshot_written = snapshot_writer.join().map_err(|_| {
                Error::io(
                    file.path.clone(),
                    io::Error::other("snapshot writer panicked"),
                )
            });
            // A segment that stopped only because the snapshot failed reports the snapshot's
            // error.
            let (applier, written) = match (segments, snapshot_written) {
                (Ok(a), Ok(Ok(w))) => (a, w),
                (Err(Error::Cancelled), Ok(Err(e))) | (Ok(_), Ok(Err(e))) => return Err(e),
                (Err(e), _) | (_, Err(e)) => return Err(e),
            };
            let claims = claims
                .lock()
                .map_err(|_| Error::io("restore page claims", io::Error::other("lock poisoned")))?;
            applier.finish(
                &snapshot_name(&generation, snapshot.index),
                &written,
                &claims,
            )?;
            drop(claims);
            file.sync_all()?;
            tracker.finish(); // progress callback
            file.len()
        })
    })
    .await;
    prefetch.abort();
    let db_size = match applied {
        Ok(r) => r?,
        Err(e) => {
            return Err(Error::io(
                tmp.display().to_string(),
                io::Error::other(format!("restore task failed: {e}")),
            ))
        }
    };

    tracing::info!(path = %out_str, "renaming database from temporary location");
    publish(&tmp, &output)?;
    guard.armed = false;
    sync_dir(&dir)?;
    tracing::info!(
        generation = %plan.generation,
        elapsed = ?started.elapsed(),
        "restore complete"
    );
    Ok(RestoreOutcome {
        generation: plan.generation,
        snapshot_index: plan.snapshot.index,
        max_index: plan
            .segments
            .last()
            .map_or(plan.snapshot.index, |s| s.index),
        segments: n_segments,
        db_size,
    })
}

/// Check that `output` does not exist, create its directory and a fresh temporary file
/// beside it (removed on drop unless the guard is disarmed).
pub(crate) fn prepare_output(output: &Path) -> Result<(PathBuf, PathBuf, OutputFile, TempGuard)> {
    let out_str = output.display().to_string();
    check_output_free(output)?;
    let dir = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    create_dir_synced(&dir)?;
    let tmp = PathBuf::from(format!("{}.{:08x}.tmp", out_str, rand::random::<u32>()));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| Error::io(tmp.display().to_string(), e))?;
    let file = OutputFile {
        file,
        path: tmp.display().to_string(),
    };
    let guard = TempGuard {
        path: tmp.clone(),
        armed: true,
    };
    Ok((dir, tmp, file, guard))
}

/// Refuse to restore to `output` if it exists, or if a `-wal` or `-shm` file is beside it:
/// SQLite would apply a stale WAL left by an older database to the restored one at its first
/// open. Such files are never removed here (they may hold the only copy of some data); the
/// error names them so that an operator can move them away.
pub fn check_output_free(output: &Path) -> Result<()> {
    if output.symlink_metadata().is_ok() {
        return Err(Error::InvalidArgument(format!(
            "cannot restore, output path already exists: {}",
            output.display()
        )));
    }
    for suffix in ["-wal", "-shm"] {
        let mut stale = output.as_os_str().to_owned();
        stale.push(suffix);
        let stale = PathBuf::from(stale);
        if stale.symlink_metadata().is_ok() {
            return Err(Error::InvalidArgument(format!(
                "cannot restore to {}: {} exists beside it (left by an older database), and \
                 SQLite would apply it to the restored database; move it away first",
                output.display(),
                stale.display()
            )));
        }
    }
    Ok(())
}

/// Create `dir` and its missing ancestors (mode 0700) and fsync each new directory's parent,
/// so that the path to the restored database survives a crash.
fn create_dir_synced(dir: &Path) -> Result<()> {
    let mut missing = Vec::new();
    let mut at = Some(dir);
    while let Some(d) = at.filter(|d| !d.as_os_str().is_empty() && d.symlink_metadata().is_err()) {
        missing.push(d);
        at = d.parent();
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io(dir.display().to_string(), e))?;
    for d in missing.iter().rev() {
        let parent = d
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        sync_dir(parent)?;
    }
    Ok(())
}

/// fsync a directory (its entries), with an error naming it.
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir.display().to_string(), e))
}

/// Move the finished temporary file to `output` without replacing anything created there
/// in the meantime.
pub(crate) fn publish(tmp: &Path, output: &Path) -> Result<()> {
    match std::fs::hard_link(tmp, output) {
        Ok(()) => {
            let _ = std::fs::remove_file(tmp);
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(Error::InvalidArgument(format!(
            "cannot restore, output path already exists: {}",
            output.display()
        ))),
        Err(_) => {
            std::fs::rename(tmp, output).map_err(|e| Error::io(output.display().to_string(), e))
        }
    }
}

pub(crate) fn read_error(object: &str, e: io::Error) -> Error {
    if e.kind() == io::ErrorKind::InvalidData {
        return Error::corrupt(object, e.to_string());
    }
    match e.into_inner() {
        Some(inner) => match inner.downcast::<Error>() {
            Ok(core) => *core,
            Err(other) => Error::io(object, io::Error::other(other)),
        },
        None => Error::io(object, io::Error::other("read failed")),
    }
}

enum Fetched {
    /// A small segment downloaded ahead; the permit returns its bytes to the budget on drop.
    Data(
        WalSegmentInfo,
        Vec<u8>,
        Option<tokio::sync::OwnedSemaphorePermit>,
    ),
    Stream(WalSegmentInfo),
}

async fn fetch_segment(
    client: &dyn ReplicaClient,
    seg: WalSegmentInfo,
    retry: RetryConfig,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
) -> Result<Fetched> {
    if seg.size > PREFETCH_MAX {
        return Ok(Fetched::Stream(seg));
    }
    let name = segment_name(&seg);
    let pos: Pos = seg.pos();
    // Read no more than the budget taken for the listed size: an object longer than its
    // listing says (a hostile or stale listing) is streamed instead of held in memory.
    let limit = permit
        .as_ref()
        .map_or(PREFETCH_MAX, |p| p.num_permits() as u64 * 1024);
    let bytes = retry
        .run(&name, || async {
            let mut stream = client.open_wal_segment(&pos).await?.take(limit + 1);
            let mut buf = Vec::with_capacity(seg.size as usize);
            stream
                .read_to_end(&mut buf)
                .await
                .map_err(|e| Error::Backend {
                    kind: client.kind(),
                    message: format!("reading {name}: {e}"),
                    retryable: true,
                    source: Some(Box::new(e)),
                })?;
            Ok(buf)
        })
        .await?;
    if bytes.len() as u64 > limit {
        tracing::warn!(segment = %name, listed = seg.size,
            "wal segment is larger than its listing says; streaming it");
        return Ok(Fetched::Stream(seg));
    }
    Ok(Fetched::Data(seg, bytes, permit))
}

/// A reader that reopens its object after a failed read and skips what it already delivered.
pub(crate) struct ReopeningReader<F> {
    what: String,
    open: F,
    inner: Option<Box<dyn Read + Send>>,
    consumed: u64,
    attempt: u32,
    retry: RetryConfig,
}

impl<F: FnMut() -> Result<Box<dyn Read + Send>>> ReopeningReader<F> {
    pub(crate) fn new(what: String, retry: RetryConfig, open: F) -> Self {
        ReopeningReader {
            what,
            open,
            inner: None,
            consumed: 0,
            attempt: 1,
            retry,
        }
    }

    fn backoff(&mut self, err: &dyn std::fmt::Display) -> bool {
        if self.attempt >= self.retry.max_attempts.max(1) {
            return false;
        }
        let delay = self.retry.backoff(self.attempt);
        tracing::warn!(what = %self.what, attempt = self.attempt, error = %err, ?delay, "retrying read");
        std::thread::sleep(delay);
        self.attempt += 1;
        true
    }
}

impl<F: FnMut() -> Result<Box<dyn Read + Send>>> Read for ReopeningReader<F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.inner.is_none() {
                match (self.open)() {
                    Ok(mut r) => {
                        let skipped = io::copy(&mut (&mut r).take(self.consumed), &mut io::sink());
                        match skipped {
                            Ok(n) if n == self.consumed => self.inner = Some(r),
                            Ok(_) => {
                                return Err(io::Error::new(
                                    io::ErrorKind::InvalidData,
                                    "object became shorter between attempts",
                                ))
                            }
                            Err(e) => {
                                if !self.backoff(&e) {
                                    return Err(e);
                                }
                            }
                        }
                    }
                    Err(e) => {
                        if !(e.is_retryable() && self.backoff(&e)) {
                            return Err(io::Error::other(e));
                        }
                    }
                }
                continue;
            }
            let Some(inner) = self.inner.as_mut() else {
                continue;
            };
            match inner.read(buf) {
                Ok(n) => {
                    self.consumed += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.inner = None;
                    if !self.backoff(&e) {
                        return Err(e);
                    }
                }
            }
        }
    }
}

/// Words of the dense part of a [`PageSet`]: pages below `64 * DENSE_WORDS` (2^22 pages, a
/// 16 GiB database of 4 KiB pages) are bits in a vector of at most 512 KiB; higher page
/// numbers, which a hostile frame can name without the data to back them, go to a sparse map,
/// so that memory follows the frames actually read and never the page numbers they claim.
const DENSE_WORDS: usize = 1 << 16;

/// A growable set of page numbers (see [`DENSE_WORDS`]).
#[derive(Debug, Default)]
struct PageSet {
    bits: Vec<u64>,
    sparse: BTreeMap<u32, u64>,
}

impl PageSet {
    fn contains(&self, pgno: u32) -> bool {
        let (w, b) = (pgno as usize / 64, pgno % 64);
        let word = if w < DENSE_WORDS {
            self.bits.get(w).copied()
        } else {
            self.sparse.get(&(w as u32)).copied()
        };
        word.is_some_and(|word| word & (1 << b) != 0)
    }

    /// The pages in the set, ascending.
    fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        let dense = self.bits.iter().enumerate().map(|(w, &b)| (w as u32, b));
        let sparse = self.sparse.iter().map(|(&w, &b)| (w, b));
        dense.chain(sparse).flat_map(|(w, bits)| {
            (0..64u32)
                .filter(move |b| bits & (1u64 << b) != 0)
                .map(move |b| w * 64 + b)
        })
    }

    /// Insert; returns true if it was not present.
    fn insert(&mut self, pgno: u32) -> bool {
        let (w, bit) = (pgno as usize / 64, 1u64 << (pgno % 64));
        let word = if w < DENSE_WORDS {
            if self.bits.len() <= w {
                self.bits.resize(w + 1, 0);
            }
            &mut self.bits[w]
        } else {
            self.sparse.entry(w as u32).or_insert(0)
        };
        let was = *word & bit != 0;
        *word |= bit;
        !was
    }
}

/// Writes the restored database so that every page is written once.
///
/// Litestream replays index after index through SQLite checkpoints: each writes every
/// committed frame's page in order and then sets the file to the size of the index's last
/// commit (cutting, or extending with zeros). The final content of page `p` is therefore the
/// newest version written by the newest index, unless a later index's size cut it off (then it
/// is zero), and the snapshot's page when no index wrote it and no index's size cut it.
/// Applying indexes newest first, skipping pages a newer index already decided, and filling
/// the rest from the snapshot gives exactly that file with one write per page (the snapshot's
/// cut-off pages are zeroed at the end). The snapshot is written by a second thread while the
/// segments are applied, coordinated through [`PageClaims`]. Every frame of every segment is
/// still read and validated (salt, checksum chain, whole transactions).
struct Applier<'f> {
    file: &'f OutputFile,
    /// Shared with the snapshot writer: pages claimed here are never written by it.
    claims: &'f Mutex<PageClaims>,
    page_size: Option<u32>,
    index: Option<u32>,
    validator: Option<FrameValidator>,
    next_offset: u64,
    last_commit: Option<u32>,
    /// Segment and frame offset of that commit.
    last_commit_at: Option<(String, u64)>,
    frame: Vec<u8>,
    /// Pages whose final content a newer index decided.
    decided: PageSet,
    /// Pages written by the index being applied.
    written: PageSet,
    written_list: Vec<u32>,
    /// Smallest commit size of the newer indexes: pages above it were cut off.
    limit: Option<u32>,
    /// Size of the newest index with a commit: the final database size.
    final_pages: Option<u32>,
    /// Segment and frame offset of the commit that set `final_pages`.
    final_at: Option<(String, u64)>,
    /// Segment and offset of the first frame of a transaction still waiting for its commit.
    txn_start: Option<(String, u64)>,
    /// In buffered mode: the frames of that transaction, written at its commit.
    pending: Option<PendingTxn>,
    /// Set when an index ends inside a transaction.
    uncommitted_tail: &'f AtomicBool,
}

impl<'f> Applier<'f> {
    fn new(
        file: &'f OutputFile,
        claims: &'f Mutex<PageClaims>,
        pending: Option<PendingTxn>,
        uncommitted_tail: &'f AtomicBool,
    ) -> Self {
        Applier {
            file,
            claims,
            page_size: None,
            index: None,
            validator: None,
            next_offset: 0,
            last_commit: None,
            last_commit_at: None,
            frame: Vec::new(),
            decided: PageSet::default(),
            written: PageSet::default(),
            written_list: Vec::new(),
            limit: None,
            final_pages: None,
            final_at: None,
            txn_start: None,
            pending,
            uncommitted_tail,
        }
    }

    fn below_limit(&self, pgno: u32) -> bool {
        self.limit.is_none_or(|l| pgno <= l)
    }

    /// End of an index: pages it wrote above its own last commit size were cut off by it.
    fn finish_index(&mut self) -> Result<()> {
        if let Some((segment, offset)) = self.txn_start.take() {
            self.uncommitted_tail.store(true, Ordering::Relaxed);
            if let Some(pending) = &mut self.pending {
                // Buffered mode: the unfinished transaction was never written; SQLite (and so
                // Litestream's restore) ignores it too.
                tracing::warn!(segment = %segment, offset, frames = pending.frames,
                    "ignoring a transaction without a commit frame at the end of its wal index");
                pending.clear()?;
                return self.finish_index();
            }
            // Its frames were already written: `execute` restores again in buffered mode.
            return Err(Error::corrupt(
                &segment,
                format!(
                    "wal index {:08x} ends inside a transaction (its frames from offset {offset} \
                     have no commit frame); restore an earlier -index",
                    self.index.unwrap_or(0)
                ),
            ));
        }
        if let Some(pages) = self.last_commit.take() {
            let limit = self.limit.map_or(pages, |l| l.min(pages));
            let page_size = self.page_size.unwrap_or(0) as usize;
            let zeros = vec![0u8; page_size];
            for &p in &self.written_list {
                if p > limit {
                    self.write_page(p, &zeros)?;
                }
            }
            self.limit = Some(limit);
            if self.final_pages.is_none() {
                self.final_pages = Some(pages);
                self.final_at = self.last_commit_at.take();
            }
        }
        for p in self.written_list.drain(..) {
            self.decided.insert(p);
        }
        self.written = PageSet::default();
        self.validator = None;
        self.next_offset = 0;
        Ok(())
    }

    /// Write one committed frame's page unless a newer index decided it or cut it off.
    fn apply_page(&mut self, pgno: u32, page: &[u8]) -> Result<()> {
        if self.decided.contains(pgno) || !self.below_limit(pgno) {
            return Ok(());
        }
        if self.written.insert(pgno) {
            self.written_list.push(pgno);
            // Claim before writing, so the snapshot writer never writes after us.
            self.claims
                .lock()
                .map_err(|_| Error::io("restore page claims", io::Error::other("lock poisoned")))?
                .wal
                .insert(pgno);
        }
        self.write_page(pgno, page)
    }

    fn write_page(&self, pgno: u32, data: &[u8]) -> Result<()> {
        let at = u64::from(pgno - 1) * data.len() as u64;
        self.file.write_all_at(data, at)
    }

    fn apply(&mut self, seg: &WalSegmentInfo, mut reader: impl Read) -> Result<()> {
        let name = segment_name(seg);
        if self.index != Some(seg.index) {
            self.finish_index()?;
            self.index = Some(seg.index);
        }
        if seg.offset != self.next_offset {
            return Err(Error::corrupt(
                &name,
                format!(
                    "wal segment gap: segment starts at offset {} but the previous one ends at {}",
                    seg.offset, self.next_offset
                ),
            ));
        }
        if seg.offset == 0 {
            let mut hdr = [0u8; WAL_HEADER_SIZE];
            read_exact_or_corrupt(
                &mut reader,
                &mut hdr,
                &name,
                "segment is shorter than a wal header",
            )?;
            let header = WalHeader::parse(&hdr).map_err(|r| Error::corrupt(&name, r))?;
            match self.page_size {
                Some(p) if p != header.page_size => {
                    return Err(Error::corrupt(
                        &name,
                        format!(
                            "wal page size {} does not match the page size {p} of newer indexes",
                            header.page_size
                        ),
                    ))
                }
                _ => self.page_size = Some(header.page_size),
            }
            self.validator = Some(FrameValidator::new(header));
            self.next_offset = WAL_HEADER_SIZE as u64;
        }
        let Some(mut validator) = self.validator.take() else {
            return Err(Error::corrupt(
                &name,
                "segment without a wal header before it",
            ));
        };
        let frame_size = validator.header().frame_size();
        let mut frame = std::mem::take(&mut self.frame);
        frame.resize(frame_size, 0);
        let result = (|| {
            loop {
                let n = read_full(&mut reader, &mut frame).map_err(|e| read_error(&name, e))?;
                if n == 0 {
                    break;
                }
                if n < frame_size {
                    return Err(Error::corrupt(
                        &name,
                        format!("truncated frame at offset {}", self.next_offset),
                    ));
                }
                let fh = validator.check(&frame).map_err(|r| {
                    Error::corrupt(&name, format!("frame at offset {}: {r}", self.next_offset))
                })?;
                if fh.commit_size != 0 && fh.pgno > fh.commit_size {
                    // SQLite writes a commit's frames only for pages within its size.
                    return Err(Error::corrupt(
                        &name,
                        format!(
                            "commit frame at offset {} writes page {} beyond its database size \
                             of {} pages",
                            self.next_offset, fh.pgno, fh.commit_size
                        ),
                    ));
                }
                let page = &frame[crate::wal::WAL_FRAME_HEADER_SIZE..];
                match &mut self.pending {
                    Some(pending) => pending.push(fh.pgno, page)?,
                    None => self.apply_page(fh.pgno, page)?,
                }
                self.next_offset += frame_size as u64;
                if fh.commit_size != 0 {
                    if let Some(mut pending) = self.pending.take() {
                        let drained = pending.drain(|pgno, page| self.apply_page(pgno, page));
                        self.pending = Some(pending);
                        drained?;
                    }
                    self.last_commit = Some(fh.commit_size);
                    self.last_commit_at =
                        Some((name.clone(), self.next_offset - frame_size as u64));
                    self.txn_start = None;
                } else if self.txn_start.is_none() {
                    self.txn_start = Some((name.clone(), self.next_offset - frame_size as u64));
                }
            }
            // A transaction may go on in the next segment of this index: Litestream v0.3.13
            // can upload a shadow WAL it is still appending to, and its restore concatenates
            // the segments. Only an index that ends inside a transaction is refused.
            Ok(())
        })();
        self.frame = frame;
        self.validator = Some(validator);
        result
    }

    /// After the segments and the snapshot are written: check that their page sizes agree,
    /// zero the snapshot's pages that a newer index's size cut off, and set the final size.
    fn finish(self, name: &str, snapshot: &SnapshotWritten, claims: &PageClaims) -> Result<()> {
        if let Some(p) = self.page_size {
            if p != snapshot.page_size {
                return Err(Error::corrupt(
                    name,
                    format!(
                        "database page size {} does not match the wal page size {p}",
                        snapshot.page_size
                    ),
                ));
            }
        }
        let page_size = snapshot.page_size as usize;
        if let (Some(limit), Some(final_pages)) = (self.limit, self.final_pages) {
            let zeros = vec![0u8; page_size];
            for p in claims.snapshot.iter() {
                if p > limit && p <= final_pages && !claims.wal.contains(p) {
                    self.write_page(p, &zeros)?;
                }
            }
        }
        let size = match self.final_pages {
            Some(p) => {
                self.check_final_size(p, snapshot.page_size, claims)?;
                u64::from(p) * page_size as u64
            }
            None => snapshot.bytes,
        };
        self.file.set_len(size)
    }

    /// Refuse a final size that the replica does not back with pages: every page of a
    /// database SQLite wrote is in the snapshot or in a frame of a later index (SQLite writes
    /// each page it adds), except the lock-byte page at 1 GiB, which it never writes. A
    /// commit claiming more (a hostile size would make a sparse file of up to 256 TiB) is
    /// malformed.
    fn check_final_size(&self, pages: u32, page_size: u32, claims: &PageClaims) -> Result<()> {
        let in_db = |p: &u32| *p <= pages;
        let from_wal = claims.wal.iter().take_while(in_db).count() as u64;
        let from_snapshot = claims
            .snapshot
            .iter()
            .take_while(in_db)
            .filter(|p| !claims.wal.contains(*p))
            .count() as u64;
        let present = from_wal + from_snapshot;
        let lock_page = (1u64 << 30) / u64::from(page_size) + 1;
        let lock_page_missing = u64::from(pages) >= lock_page
            && !claims.wal.contains(lock_page as u32)
            && !claims.snapshot.contains(lock_page as u32);
        if present + u64::from(lock_page_missing) >= u64::from(pages) {
            return Ok(());
        }
        let (segment, offset) = self.final_at.clone().unwrap_or_default();
        Err(Error::corrupt(
            &segment,
            format!(
                "malformed: the commit frame at offset {offset} gives a database of {pages} \
                 pages ({} bytes), but the snapshot and wal segments hold only {present} of \
                 those pages",
                u64::from(pages) * u64::from(page_size)
            ),
        ))
    }
}

/// Frames held in memory per transaction in buffered mode; beyond this they go to a file.
const PENDING_MEMORY: usize = 8 << 20;

/// The frames (page number and page) of the transaction being read, in order, kept until its
/// commit frame arrives: up to [`PENDING_MEMORY`] in memory, the rest in an unlinked temporary
/// file beside the output.
#[derive(Debug)]
struct PendingTxn {
    dir: PathBuf,
    mem: Vec<u8>,
    spill: Option<File>,
    spilled: u64,
    frames: u64,
    record: usize,
}

impl PendingTxn {
    fn new(dir: PathBuf) -> Self {
        PendingTxn {
            dir,
            mem: Vec::new(),
            spill: None,
            spilled: 0,
            frames: 0,
            record: 0,
        }
    }

    fn push(&mut self, pgno: u32, page: &[u8]) -> Result<()> {
        self.record = 4 + page.len();
        self.frames += 1;
        if self.spilled == 0 && self.mem.len() + self.record <= PENDING_MEMORY {
            self.mem.extend_from_slice(&pgno.to_le_bytes());
            self.mem.extend_from_slice(page);
            return Ok(());
        }
        let file = match &self.spill {
            Some(f) => f,
            None => self.spill.insert(spill_file(&self.dir)?),
        };
        let mut rec = Vec::with_capacity(self.record);
        rec.extend_from_slice(&pgno.to_le_bytes());
        rec.extend_from_slice(page);
        file.write_all_at(&rec, self.spilled)
            .map_err(|e| Error::io("restore transaction buffer", e))?;
        self.spilled += rec.len() as u64;
        Ok(())
    }

    /// Hand every held frame, in order, to `f`; then forget them.
    fn drain(&mut self, mut f: impl FnMut(u32, &[u8]) -> Result<()>) -> Result<()> {
        let record = self.record.max(5);
        for rec in self.mem.chunks(record) {
            f(pgno_of(rec), &rec[4..])?;
        }
        if let Some(file) = &self.spill {
            let mut buf = vec![0u8; record * (READ_AHEAD_CHUNK / record).max(1)];
            let mut at = 0u64;
            while at < self.spilled {
                let n = buf.len().min((self.spilled - at) as usize);
                file.read_exact_at(&mut buf[..n], at)
                    .map_err(|e| Error::io("restore transaction buffer", e))?;
                for rec in buf[..n].chunks(record) {
                    f(pgno_of(rec), &rec[4..])?;
                }
                at += n as u64;
            }
        }
        self.clear()
    }

    fn clear(&mut self) -> Result<()> {
        self.mem.clear();
        self.frames = 0;
        if self.spilled > 0 {
            self.spilled = 0;
            if let Some(file) = &self.spill {
                file.set_len(0)
                    .map_err(|e| Error::io("restore transaction buffer", e))?;
            }
        }
        Ok(())
    }
}

fn pgno_of(rec: &[u8]) -> u32 {
    u32::from_le_bytes([rec[0], rec[1], rec[2], rec[3]])
}

/// A temporary file in `dir` that is already unlinked: it goes away with its handle.
fn spill_file(dir: &Path) -> Result<File> {
    let path = dir.join(format!(
        ".litestream-restore-{:016x}.txn",
        rand::random::<u64>()
    ));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| Error::io(path.display().to_string(), e))?;
    let _ = std::fs::remove_file(&path);
    Ok(file)
}

/// Who wrote which page, shared by the segment applier and the snapshot writer that run side
/// by side. The applier claims a page (under the lock) before it writes it; the snapshot writer
/// checks and writes under the lock, skipping claimed pages. Either way the newer content
/// lands last.
#[derive(Debug, Default)]
struct PageClaims {
    /// Pages some WAL segment wrote (their final content, or zeros for cut-off pages).
    wal: PageSet,
    /// Pages the snapshot wrote.
    snapshot: PageSet,
}

/// What the snapshot writer found.
#[derive(Debug)]
struct SnapshotWritten {
    page_size: u32,
    bytes: u64,
}

/// Write the snapshot's pages that no segment claimed, in runs of up to 1 MiB.
fn write_snapshot(
    file: &OutputFile,
    claims: &Mutex<PageClaims>,
    name: &str,
    mut reader: impl Read,
    cancel: &AtomicBool,
) -> Result<SnapshotWritten> {
    let mut header = [0u8; 100];
    read_exact_or_corrupt(
        &mut reader,
        &mut header,
        name,
        "snapshot is shorter than a database header",
    )?;
    let page_size = db_page_size(&header).map_err(|e| match e {
        Error::Corrupt { reason, .. } => Error::corrupt(name, format!("snapshot: {reason}")),
        other => other,
    })?;
    let ps = page_size as usize;
    let pages_per_chunk = ((1 << 20) / ps).max(1);
    let mut chunk = vec![0u8; pages_per_chunk * ps];
    chunk[..100].copy_from_slice(&header);
    let mut filled = 100;
    let mut first: u32 = 1;
    let mut bytes: u64 = 0;
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Err(Error::Cancelled);
        }
        let n = read_full(&mut reader, &mut chunk[filled..]).map_err(|e| read_error(name, e))?;
        let len = filled + n;
        filled = 0;
        if len == 0 {
            break;
        }
        bytes += len as u64;
        let mut claims = claims
            .lock()
            .map_err(|_| Error::io("restore page claims", io::Error::other("lock poisoned")))?;
        // Runs of consecutive unclaimed pages, each written with one call.
        let mut run: Option<usize> = None;
        for (i, page) in chunk[..len].chunks(ps).enumerate() {
            let pgno = first.saturating_add(i as u32);
            let claimed = claims.wal.contains(pgno);
            if !claimed {
                claims.snapshot.insert(pgno);
            }
            match (run, claimed) {
                (None, false) => run = Some(i),
                (Some(start), true) => {
                    write_at(file, first, start, ps, &chunk[start * ps..i * ps])?;
                    run = None;
                }
                _ => {}
            }
            if page.len() < ps {
                break;
            }
        }
        if let Some(start) = run {
            write_at(file, first, start, ps, &chunk[start * ps..len])?;
        }
        drop(claims);
        if len < chunk.len() {
            break;
        }
        first = first.saturating_add(pages_per_chunk as u32);
    }
    Ok(SnapshotWritten { page_size, bytes })
}

/// Write `data`, the pages from the `start`-th page of a chunk starting at page `first`.
fn write_at(
    file: &OutputFile,
    first: u32,
    start: usize,
    page_size: usize,
    data: &[u8],
) -> Result<()> {
    let at = (u64::from(first - 1) + start as u64) * page_size as u64;
    file.write_all_at(data, at)
}

/// The temporary output file, whose I/O errors name it (a full disk says where).
#[derive(Debug)]
pub(crate) struct OutputFile {
    file: File,
    path: String,
}

impl OutputFile {
    pub(crate) fn write_all_at(&self, data: &[u8], at: u64) -> Result<()> {
        self.file
            .write_all_at(data, at)
            .map_err(|e| Error::io(self.path.clone(), e))
    }

    pub(crate) fn set_len(&self, size: u64) -> Result<()> {
        self.file
            .set_len(size)
            .map_err(|e| Error::io(self.path.clone(), e))
    }

    pub(crate) fn sync_all(&self) -> Result<()> {
        self.file
            .sync_all()
            .map_err(|e| Error::io(self.path.clone(), e))
    }

    pub(crate) fn len(&self) -> Result<u64> {
        self.file
            .metadata()
            .map(|m| m.len())
            .map_err(|e| Error::io(self.path.clone(), e))
    }
}

/// Size of the chunks a read-ahead thread hands over.
const READ_AHEAD_CHUNK: usize = 1 << 20;

/// Run `f` over `source` read by a second thread, so that downloading and LZ4 decoding
/// (with its content checksum) overlap with frame validation and writing. Memory: two chunks
/// in flight plus the one being consumed.
fn with_read_ahead<R: Read + Send, T>(source: R, f: impl FnOnce(&mut ChunkReader) -> T) -> T {
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<io::Result<Vec<u8>>>(2);
        scope.spawn(move || {
            let mut source = source;
            loop {
                let mut buf = vec![0u8; READ_AHEAD_CHUNK];
                match read_full(&mut source, &mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        buf.truncate(n);
                        if tx.send(Ok(buf)).is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        break;
                    }
                }
            }
        });
        let mut reader = ChunkReader {
            rx,
            chunk: Vec::new(),
            pos: 0,
        };
        let out = f(&mut reader);
        // Dropping the receiver stops the producer at its next chunk.
        drop(reader);
        out
    })
}

/// The consuming side of [`with_read_ahead`].
struct ChunkReader {
    rx: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    chunk: Vec<u8>,
    pos: usize,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.chunk.len() {
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    self.chunk = chunk;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
        let n = (self.chunk.len() - self.pos).min(buf.len());
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Read until `buf` is full or EOF; returns the bytes read.
pub(crate) fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Fill `buf` from `r`; EOF first is [`Error::Corrupt`] for `name` with `why`.
pub(crate) fn read_exact_or_corrupt(
    r: &mut impl Read,
    buf: &mut [u8],
    name: &str,
    why: &str,
) -> Result<()> {
    let n = read_full(r, buf).map_err(|e| read_error(name, e))?;
    if n < buf.len() {
        return Err(Error::corrupt(name, why));
    }
    Ok(())
}
