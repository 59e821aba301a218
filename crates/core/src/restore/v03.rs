//! The v0.3 planner and reader: generations, snapshot and WAL range (spec 6.1-6.4), the
//! download with prefetch and retries, and the run of a plan into the output file.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::StreamExt;
use time::OffsetDateTime;
use tokio::io::AsyncReadExt;
use tokio::runtime::Handle;
use tokio::sync::mpsc::Receiver;
use tokio::task::JoinHandle;
use tokio_util::io::SyncIoBridge;

use crate::error::{Error, Result};
use crate::lz4::Lz4FrameReader;
use crate::pos::{Generation, Pos};
use crate::replica_client::{ReplicaClient, SnapshotInfo, WalSegmentInfo};
use crate::retry::RetryConfig;

use super::apply::{write_snapshot, Applier, PageClaims, PendingTxn, SnapshotWritten};
use super::output::{
    prepare_output, publish, sync_dir, with_read_ahead, OutputFile, ReopeningReader,
};
use super::{
    ProgressTracker, RestoreOptions, MAX_PARALLELISM, PREFETCH_BUDGET_KIB, PREFETCH_MAX,
    PREFETCH_WINDOW,
};

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

    pub(super) fn times(&self) -> impl Iterator<Item = OffsetDateTime> + '_ {
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
pub(super) fn snapshot_name(g: &Generation, index: u32) -> String {
    format!("snapshot {}", crate::layout::snapshot_path("", g, index))
}

pub(super) fn segment_name(s: &WalSegmentInfo) -> String {
    format!(
        "wal segment {}",
        crate::layout::wal_segment_path("", &s.generation, s.index, s.offset)
    )
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
pub(super) async fn execute_inner(
    client: Arc<dyn ReplicaClient>,
    plan: RestorePlan,
    opts: &RestoreOptions,
    buffered: bool,
    uncommitted_tail: Arc<AtomicBool>,
) -> Result<RestoreOutcome> {
    let output = opts.output.clone();
    let (dir, tmp, file, mut guard) = prepare_output(&output)?;
    let started = Instant::now();
    log_plan(&plan, &tmp);
    let parallelism = opts.parallelism.clamp(1, MAX_PARALLELISM);
    let (prefetch, rx) = spawn_prefetch(client.clone(), &plan, parallelism, opts.retry);
    let job = ApplyJob {
        client,
        handle: Handle::current(),
        retry: opts.retry,
        snapshot: plan.snapshot.clone(),
        generation: plan.generation.clone(),
        n_segments: plan.segments.len(),
        // Listed sizes are the replica's claims: saturate rather than overflow.
        tracker: ProgressTracker::new(
            opts.progress.clone(),
            (plan.segments.iter()).fold(plan.snapshot.size, |t, s| t.saturating_add(s.size)),
        ),
        spill_dir: dir.clone(),
        buffered,
        uncommitted_tail,
    };
    let applied = tokio::task::spawn_blocking(move || job.run(&file, rx)).await;
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

    tracing::info!(path = %output.display(), "renaming database from temporary location");
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
        segments: plan.segments.len(),
        db_size,
    })
}

fn log_plan(plan: &RestorePlan, tmp: &Path) {
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
}

/// Prefetch the plan's small segments in apply order (newest index first, offsets ascending
/// within an index, so that every page is written once: see `Applier`) into a bounded
/// channel: up to `parallelism * PREFETCH_WINDOW` requests in flight, within a memory budget
/// of `PREFETCH_BUDGET_KIB` held until each object is applied.
fn spawn_prefetch(
    client: Arc<dyn ReplicaClient>,
    plan: &RestorePlan,
    parallelism: usize,
    retry: RetryConfig,
) -> (JoinHandle<()>, Receiver<Result<Fetched>>) {
    let mut segments = plan.segments.clone();
    segments.sort_by(|x, y| y.index.cmp(&x.index).then(x.offset.cmp(&y.offset)));
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Fetched>>(parallelism);
    let budget = Arc::new(tokio::sync::Semaphore::new(PREFETCH_BUDGET_KIB));
    let prefetch = tokio::spawn(async move {
        let mut stream = futures::stream::iter(segments)
            .map(|seg| {
                let client = client.clone();
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
    (prefetch, rx)
}

/// The blocking part of a v0.3 restore: the snapshot and the segments into the output.
struct ApplyJob {
    client: Arc<dyn ReplicaClient>,
    handle: Handle,
    retry: RetryConfig,
    snapshot: SnapshotInfo,
    generation: Generation,
    n_segments: usize,
    tracker: ProgressTracker,
    spill_dir: PathBuf,
    buffered: bool,
    uncommitted_tail: Arc<AtomicBool>,
}

impl ApplyJob {
    /// Write the snapshot and apply the segments (from `rx`, in apply order) into `file`,
    /// sync it and return its size.
    fn run(&self, file: &OutputFile, mut rx: Receiver<Result<Fetched>>) -> Result<u64> {
        let claims = Mutex::new(PageClaims::default());
        let cancel = AtomicBool::new(false);
        std::thread::scope(|scope| -> Result<u64> {
            // The snapshot streams in beside the segments and fills only the pages no segment
            // claims (see `PageClaims`), so its download overlaps theirs.
            let snapshot_writer = scope.spawn(|| {
                let written = self.write_snapshot(file, &claims, &cancel);
                if written.is_err() {
                    cancel.store(true, Ordering::Relaxed);
                }
                written
            });
            let segments = self.apply_segments(file, &claims, &cancel, &mut rx);
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
            let name = snapshot_name(&self.generation, self.snapshot.index);
            applier.finish(&name, &written, &claims)?;
            drop(claims);
            file.sync_all()?;
            self.tracker.finish(); // progress callback
            file.len()
        })
    }

    /// Stream the snapshot into the pages of `file` that no segment claims.
    fn write_snapshot(
        &self,
        file: &OutputFile,
        claims: &Mutex<PageClaims>,
        cancel: &AtomicBool,
    ) -> Result<SnapshotWritten> {
        let snap_name = snapshot_name(&self.generation, self.snapshot.index);
        let (g, c, h) = (
            self.generation.clone(),
            self.client.clone(),
            self.handle.clone(),
        );
        let idx = self.snapshot.index;
        let reader = ReopeningReader::new(snap_name.clone(), self.retry, move || {
            let stream = h.block_on(c.open_snapshot(&g, idx))?;
            Ok(Box::new(SyncIoBridge::new_with_handle(stream, h.clone())) as Box<dyn Read + Send>)
        });
        let lz = Lz4FrameReader::new(self.tracker.reader(reader));
        with_read_ahead(lz, |r| write_snapshot(file, claims, &snap_name, r, cancel))
    }

    /// Apply every segment from `rx`, downloaded ahead or streamed when its turn comes.
    fn apply_segments<'a>(
        &'a self,
        file: &'a OutputFile,
        claims: &'a Mutex<PageClaims>,
        cancel: &AtomicBool,
        rx: &mut Receiver<Result<Fetched>>,
    ) -> Result<Applier<'a>> {
        let pending = self
            .buffered
            .then(|| PendingTxn::new(self.spill_dir.clone()));
        let mut applier = Applier::new(file, claims, pending, &self.uncommitted_tail);
        for _ in 0..self.n_segments {
            if cancel.load(Ordering::Relaxed) {
                return Err(Error::Cancelled);
            }
            match rx.blocking_recv().ok_or(Error::Cancelled)?? {
                Fetched::Data(seg, bytes, _permit) => {
                    applier.apply(&seg, Lz4FrameReader::new(bytes.as_slice()))?;
                    self.tracker.add(bytes.len() as u64); // progress callback
                }
                Fetched::Stream(seg) => {
                    let (c, h) = (self.client.clone(), self.handle.clone());
                    let pos = seg.pos();
                    let reader = ReopeningReader::new(segment_name(&seg), self.retry, move || {
                        let stream = h.block_on(c.open_wal_segment(&pos))?;
                        Ok(Box::new(SyncIoBridge::new_with_handle(stream, h.clone()))
                            as Box<dyn Read + Send>)
                    });
                    let lz = Lz4FrameReader::new(self.tracker.reader(reader));
                    with_read_ahead(lz, |r| applier.apply(&seg, r))?;
                }
            }
        }
        applier.finish_index()?;
        Ok(applier)
    }
}

pub(super) enum Fetched {
    /// A small segment downloaded ahead; the permit returns its bytes to the budget on drop.
    Data(
        WalSegmentInfo,
        Vec<u8>,
        Option<tokio::sync::OwnedSemaphorePermit>,
    ),
    Stream(WalSegmentInfo),
}

pub(super) async fn fetch_segment(
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
