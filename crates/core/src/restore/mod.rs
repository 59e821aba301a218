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
//!
//! Layout: this module holds the options and progress reporting; `output` the format-neutral
//! part (temporary output file, atomic publish, retrying and read-ahead readers); `v03` the
//! v0.3 planner and reader with its prefetch; `apply` the v0.3 frame applier. The Litestream
//! v0.5 (LTX) planner and reader are in [`crate::ltx`] and use `output` too.

use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::Arc;

use time::OffsetDateTime;

use crate::pos::Generation;
use crate::retry::RetryConfig;

mod apply;
mod output;
mod v03;

pub use output::check_output_free;
pub(crate) use output::{
    prepare_output, publish, read_error, read_exact_or_corrupt, read_full, OutputFile,
    ReopeningReader,
};
pub use v03::{
    choose_generation, execute, find_target, list_generations, plan, restore, restore_listing,
    GenerationListing, RestoreOutcome, RestorePlan,
};

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
