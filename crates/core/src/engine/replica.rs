//! One replica of a database: the upload loop (one round per `sync-interval` when something
//! changed), snapshots (new generation, `snapshot-interval`, retention), retention, and the
//! start-up position calculation (`calcPos`).

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::layout;
use crate::pos::{Generation, Pos};
use crate::replica_client::{ReplicaClient, SnapshotInfo, WalSegmentInfo};
use crate::wal::align_frame;

use super::db::ShadowPos;
use super::options::ReplicaOptions;
use super::stream::{decompressed_len, lz4_file_stream};
use super::validate::{record_validation, ValidationJob, ValidationReport, ValidationStats};
use super::DbShared;

pub(crate) struct ReplicaTask {
    pub(crate) slot: usize,
    pub(crate) name: String,
    pub(crate) client: Arc<dyn ReplicaClient>,
    pub(crate) opts: ReplicaOptions,
    pub(crate) db: Arc<DbShared>,
    pub(crate) pos: Option<Pos>,
    pub(crate) pos_tx: watch::Sender<Option<Pos>>,
    pub(crate) next_snapshot: Option<Instant>,
    pub(crate) validation: Arc<std::sync::Mutex<ValidationStats>>,
    /// The generation in which this replica is known to hold a snapshot, and the newest such
    /// snapshot's index. A position in any other generation is not restorable and is not
    /// published (`pos_tx` holds `None`), so `sync_and_wait` never counts it.
    pub(crate) restorable: Option<(Generation, u32)>,
}

type ValidateRequest = oneshot::Sender<Result<ValidationReport>>;

/// What one [`ReplicaTask::upload_step`] did.
pub(super) enum Step {
    /// Uploaded a segment or moved to the next index: call again.
    More,
    /// Nothing more to upload (or nothing this step can do).
    Done,
    /// The shadow WAL file of this (earlier) position was removed locally.
    Missing(Pos),
}

/// How long a due snapshot or retention run waits for a running validation restore before it
/// looks again.
const VALIDATION_WAIT: Duration = Duration::from_millis(200);

/// Decompress an LZ4-framed stream and return its last `keep` bytes (or all of it if shorter),
/// holding no more than that in memory.
async fn decompressed_tail(
    stream: crate::replica_client::ByteStream,
    keep: u64,
    what: String,
) -> Result<Vec<u8>> {
    use std::io::Read;
    let bridge = tokio_util::io::SyncIoBridge::new(stream);
    let keep = usize::try_from(keep).unwrap_or(usize::MAX);
    tokio::task::spawn_blocking(move || {
        let mut r = crate::lz4::Lz4FrameReader::new(bridge);
        let mut tail: Vec<u8> = Vec::new();
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io(what, e)),
            };
            tail.extend_from_slice(&buf[..n]);
            if tail.len() > keep {
                tail.drain(..tail.len() - keep);
            }
        }
        Ok(tail)
    })
    .await
    .map_err(|e| Error::io("decompress task", std::io::Error::other(e)))?
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86400 * 365)
}

fn since(t: OffsetDateTime) -> Duration {
    let d = OffsetDateTime::now_utc() - t;
    d.try_into().unwrap_or(Duration::ZERO)
}

impl ReplicaTask {
    pub(super) fn set_pos(&mut self, pos: Option<Pos>) {
        if let Ok(mut v) = self.db.replica_pos.lock() {
            if let Some(slot) = v.get_mut(self.slot) {
                *slot = pos.as_ref().map(|p| (p.generation.clone(), p.index));
            }
        }
        if let Some(p) = &pos {
            let m = self.metrics();
            m.wal_index.set(p.index);
            m.wal_offset.set(p.offset);
        }
        let visible = pos
            .clone()
            .filter(|p| self.restorable.as_ref().map(|r| &r.0) == Some(&p.generation));
        self.pos = pos;
        self.pos_tx.send_replace(visible);
    }

    /// This replica's metrics (`litestream_replica_*{db,name}`).
    fn metrics(&self) -> std::sync::Arc<crate::metrics::ReplicaMetrics> {
        crate::metrics::replica(&self.db.path.to_string_lossy(), &self.name)
    }

    /// The upload loop; returns after the final sync on shutdown.
    pub(crate) async fn run(
        mut self,
        mut shutdown: watch::Receiver<bool>,
        force: Arc<Notify>,
        mut validate_rx: mpsc::Receiver<ValidateRequest>,
    ) {
        let mut next_validation = self.opts.validation_interval.map(|i| Instant::now() + i);
        let mut validating = tokio::task::JoinSet::new();
        let mut change_rx = self.db.change_tx.subscribe();
        let mut dirty = true;
        let mut last_sync: Option<Instant> = None;
        let retention_period = self
            .opts
            .retention
            .map(|r| r.min(self.opts.retention_check_interval));
        let mut next_retention = retention_period.map(|p| Instant::now() + p);
        loop {
            let sync_at = last_sync
                .map(|t| t + self.opts.sync_interval)
                .unwrap_or_else(Instant::now);
            let snap_at = self.next_snapshot.unwrap_or_else(far_future);
            let ret_at = next_retention.unwrap_or_else(far_future);
            let val_at = next_validation.unwrap_or_else(far_future);
            tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                // Due timers and validation requests come before `force`: callers of
                // `sync_and_wait` back to back keep `force` always ready and would starve them
                // (a snapshot also uploads everything up to its pinned position, which serves
                // those callers too). Each timer is re-armed into the future when taken.
                Some(_) = validating.join_next(), if !validating.is_empty() => {}
                // While a validation restore reads this generation, no snapshot or retention
                // changes what it reads: both wait for it.
                _ = tokio::time::sleep_until(snap_at), if self.next_snapshot.is_some() => {
                    if !validating.is_empty() {
                        self.next_snapshot = Some(Instant::now() + VALIDATION_WAIT);
                        continue;
                    }
                    self.next_snapshot = self.opts.snapshot_interval.map(|i| Instant::now() + i);
                    if let Err(e) = self.interval_snapshot().await {
                        tracing::warn!(replica = %self.name, error = %e, "snapshotter error");
                    }
                }
                _ = tokio::time::sleep_until(ret_at), if next_retention.is_some() => {
                    if !validating.is_empty() {
                        next_retention = Some(Instant::now() + VALIDATION_WAIT);
                        continue;
                    }
                    next_retention = retention_period.map(|p| Instant::now() + p);
                    tracing::debug!(replica = %self.name, "retention check");
                    if let Err(e) = self.enforce_retention().await {
                        tracing::warn!(replica = %self.name, error = %e, "retainer error");
                    }
                }
                _ = tokio::time::sleep_until(val_at), if next_validation.is_some() => {
                    next_validation = self.opts.validation_interval.map(|i| Instant::now() + i);
                    if validating.is_empty() {
                        if let Ok(job) = self.start_validation().await {
                            validating.spawn(async move {
                                let _ = job.run().await;
                            });
                        }
                    }
                }
                Some(reply) = validate_rx.recv() => {
                    match self.start_validation().await {
                        Ok(job) => {
                            validating.spawn(async move {
                                let _ = reply.send(job.run().await);
                            });
                        }
                        Err(e) => {
                            let _ = reply.send(Err(e));
                        }
                    }
                }
                _ = force.notified() => {
                    change_rx.borrow_and_update();
                    dirty = false;
                    last_sync = Some(Instant::now());
                    if self.sync_logged().await.is_err() { dirty = true; }
                }
                r = change_rx.changed(), if !dirty => {
                    if r.is_err() { break; }
                    dirty = true;
                }
                _ = tokio::time::sleep_until(sync_at), if dirty => {
                    change_rx.borrow_and_update();
                    dirty = false;
                    last_sync = Some(Instant::now());
                    if self.sync_logged().await.is_err() { dirty = true; }
                }
            }
        }
        // Validations still running are cancelled; their temporary restores are removed.
        validating.shutdown().await;
        // Final sync on shutdown.
        let _ = self.sync_logged().await;
    }

    async fn sync_logged(&mut self) -> Result<()> {
        let r = self.sync().await;
        if let Err(e) = &r {
            tracing::warn!(db = %self.db.path.display(), replica = %self.name, error = %e, "monitor error");
        }
        r
    }

    /// `Replica.Sync`: make sure the replica has a snapshot and a position in the current
    /// generation, then upload every new part of the shadow WAL.
    ///
    /// One round uploads up to the local position at its start, not until it catches up:
    /// against a steady writer and a slow replica that would never end, and nothing else
    /// (snapshots, retention, validation) would run meanwhile. The next round takes the rest.
    pub(crate) async fn sync(&mut self) -> Result<()> {
        let cap = self.db.pos_tx.borrow().clone();
        self.sync_upto(cap.as_ref()).await?;
        self.metrics().mark_synced();
        Ok(())
    }

    /// [`sync`](Self::sync), uploading nothing past `cap` when it is given.
    async fn sync_upto(&mut self, cap: Option<&ShadowPos>) -> Result<()> {
        let mut abandoned = false;
        loop {
            let dpos =
                self.db.pos_tx.borrow().clone().ok_or_else(|| {
                    Error::InvalidArgument("no generation, waiting for data".into())
                })?;
            let g = dpos.generation.clone();
            let in_gen = self.pos.as_ref().map(|p| &p.generation) == Some(&g);
            if in_gen && self.restorable.as_ref().map(|r| &r.0) != Some(&g) {
                // A snapshot of this generation failed half-way (its WAL is uploaded, the
                // snapshot object is not): take it again before uploading anything else.
                self.snapshot().await?;
            } else if !in_gen {
                let snaps = self
                    .opts
                    .retry
                    .run("list snapshots", || self.client.snapshots(&g))
                    .await?;
                if snaps.is_empty() {
                    // The snapshot uploads its index up to its pinned position first and
                    // leaves this replica's position exactly there.
                    self.snapshot().await?;
                    let now = self.db.pos_tx.borrow().clone();
                    if now.map(|p| p.generation) != Some(g.clone()) {
                        return Err(Error::InvalidArgument(
                            "generation changed during snapshot, exiting sync".into(),
                        ));
                    }
                } else if !self.resume_position(&g, &snaps, dpos, !abandoned).await? {
                    abandoned = true;
                    continue;
                }
            }
            while self.sync_wal(cap).await? {}
            return Ok(());
        }
    }

    /// Start-up in generation `g`, whose snapshots are `snaps` (not empty): adjust the next
    /// snapshot time, compute the replica's position (`calcPos`) and, with `check`, compare it
    /// with the local state at `dpos` or later. A replica ahead of the local state (a VM or disk
    /// rollback, a copied data directory) holds a history this database no longer has: never
    /// append to it nor count its position as durable, abandon the generation (a new one
    /// starts) and return false.
    async fn resume_position(
        &mut self,
        g: &Generation,
        snaps: &[SnapshotInfo],
        dpos: ShadowPos,
        check: bool,
    ) -> Result<bool> {
        if self.next_snapshot.is_none() {
            if let (Some(iv), Some(last)) = (
                self.opts.snapshot_interval,
                snaps.iter().map(|s| s.created_at).max(),
            ) {
                let next = iv.saturating_sub(since(last));
                tracing::info!(replica = %self.name, previous = %last, next = ?next, "snapshot interval adjusted");
                self.next_snapshot = Some(Instant::now() + next);
            }
        }
        let (pos, last) = match self.calc_pos(g).await {
            Err(e @ Error::Unreadable(_)) => {
                // The replica cannot be read back (age recipients without identities): where
                // its last segment ends is unknown. Rewriting that segment from the local
                // shadow WAL would lose its original time (point-in-time restores), appending
                // after a guessed end would leave a gap or an overlap: start a new generation
                // from the local state instead; the old one stays restorable.
                tracing::warn!(replica = %self.name, error = %e,
                    "replica position cannot be read back, starting a new generation from the local state");
                self.db.abandon_generation(g).await?;
                return Ok(false);
            }
            r => r?,
        };
        // The local position now (the monitor may have moved it on).
        let local = self.db.pos_tx.borrow().clone().unwrap_or(dpos);
        if check
            && !self
                .replica_matches_local(&pos, last.as_ref(), &local)
                .await?
        {
            tracing::warn!(replica = %self.name, replica_position = %pos, local_position = %local.pos(),
                "replica is ahead of the local state (database rolled back or copied?), starting a new generation");
            self.db.abandon_generation(g).await?;
            return Ok(false);
        }
        tracing::debug!(replica = %self.name, position = %pos, "replica position calculated");
        if let Some(i) = snaps.iter().map(|s| s.index).max() {
            self.restorable = Some((g.clone(), i));
        }
        self.set_pos(Some(pos));
        Ok(true)
    }

    /// `calcPos`: after the newest snapshot, the end of the newest WAL segment. Also returns
    /// that segment's own position (`None` when the position is a snapshot's index start).
    async fn calc_pos(&self, g: &Generation) -> Result<(Pos, Option<Pos>)> {
        let snaps = self
            .opts
            .retry
            .run("list snapshots", || self.client.snapshots(g))
            .await?;
        let snap_index = snaps
            .iter()
            .map(|s| s.index)
            .max()
            .ok_or_else(|| Error::NoSnapshots {
                generation: g.to_string(),
            })?;
        let segs = self
            .opts
            .retry
            .run("list wal segments", || self.client.wal_segments(g))
            .await?;
        let Some(last) = segs.iter().max_by_key(|s| (s.index, s.offset)) else {
            return Ok((Pos::new(g.clone(), snap_index, 0), None));
        };
        if last.index < snap_index {
            return Ok((Pos::new(g.clone(), snap_index, 0), None));
        }
        let lpos = last.pos();
        let n = self
            .opts
            .retry
            .run("read wal segment", || async {
                let s = self.client.open_wal_segment(&lpos).await?;
                decompressed_len(s, lpos.to_string()).await
            })
            .await?;
        Ok((Pos::new(g.clone(), last.index, last.offset + n), Some(lpos)))
    }

    /// Whether the replica's position `pos` (the end of its newest segment `last`) is part of
    /// the local history at `local`: not past it, and the segment's last frame equal to the
    /// local shadow WAL's bytes at the same offset (frames carry the WAL's salts and running
    /// checksums, so an equal last frame means an equal index up to it). A segment of an
    /// index whose local shadow file is gone is older than local retention: nothing to compare.
    async fn replica_matches_local(
        &self,
        pos: &Pos,
        last: Option<&Pos>,
        local: &ShadowPos,
    ) -> Result<bool> {
        if pos.generation != local.generation {
            return Ok(true);
        }
        if (pos.index, pos.offset) > (local.index, local.size) {
            return Ok(false);
        }
        let Some(last) = last else {
            return Ok(true);
        };
        let shadow = self.db.shadow_path(&pos.generation, pos.index);
        if !shadow.exists() {
            return Ok(true);
        }
        let keep = u64::from(self.db.page_size()) + crate::wal::WAL_FRAME_HEADER_SIZE as u64;
        let tail = self
            .opts
            .retry
            .run("read wal segment", || async {
                let s = self.client.open_wal_segment(last).await?;
                decompressed_tail(s, keep, last.to_string()).await
            })
            .await?;
        let at = pos.offset - tail.len() as u64;
        let mut mine = vec![0u8; tail.len()];
        let read = std::fs::File::open(&shadow)
            .and_then(|f| std::os::unix::fs::FileExt::read_exact_at(&f, &mut mine, at));
        match read {
            Ok(()) => Ok(mine == tail),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
            Err(e) => Err(Error::io(shadow.display().to_string(), e)),
        }
    }

    /// Upload the next part of the shadow WAL; false when there is nothing more to do. A
    /// replica that fell behind local shadow WAL retention starts over from a new snapshot.
    async fn sync_wal(&mut self, cap: Option<&ShadowPos>) -> Result<bool> {
        match self.upload_step(cap).await? {
            Step::More => Ok(true),
            Step::Done => Ok(false),
            Step::Missing(pos) => {
                tracing::warn!(replica = %self.name, position = %pos,
                    "replica fell behind local shadow wal retention, restarting from a new snapshot");
                self.set_pos(None);
                // The snapshot uploads its own index from offset 0 and leaves the position
                // at the pinned position.
                self.snapshot().await?;
                Ok(true)
            }
        }
    }

    /// One step of [`sync_wal`](Self::sync_wal): upload the rest of the position's index (up
    /// to `cap` when given), or move to the next index.
    pub(super) async fn upload_step(&mut self, cap: Option<&ShadowPos>) -> Result<Step> {
        let Some(pos) = self.pos.clone() else {
            return Ok(Step::Done);
        };
        let Some(mut dpos) = self.db.pos_tx.borrow().clone() else {
            return Ok(Step::Done);
        };
        if let Some(c) = cap {
            if c.generation != dpos.generation {
                return Ok(Step::Done);
            }
            dpos = c.clone();
        }
        if dpos.generation != pos.generation || pos.index > dpos.index {
            return Ok(Step::Done);
        }
        let path = self.db.shadow_path(&pos.generation, pos.index);
        let end = if pos.index == dpos.index {
            dpos.size
        } else {
            match std::fs::metadata(&path) {
                Ok(m) => align_frame(m.len(), self.db.page_size()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Ok(Step::Missing(pos));
                }
                Err(e) => return Err(Error::io(path.display().to_string(), e)),
            }
        };
        if pos.offset >= end {
            if pos.offset > end {
                // Past a cap is normal (a snapshot in this round uploaded further).
                if cap.is_none() {
                    tracing::warn!(replica = %self.name, position = %pos, end,
                        "replica position is past the local shadow wal");
                }
                return Ok(Step::Done);
            }
            if pos.index < dpos.index {
                self.set_pos(Some(Pos::new(pos.generation.clone(), pos.index + 1, 0)));
                return Ok(Step::More);
            }
            return Ok(Step::Done);
        }
        if !layout::offset_fits_name(pos.offset) {
            return Err(Error::InvalidArgument(format!(
                "wal offset {} does not fit a v0.3 segment name",
                pos.offset
            )));
        }
        let started = std::time::Instant::now();
        tracing::debug!(replica = %self.name, position = %pos, "write wal segment");
        let len = end - pos.offset;
        self.opts
            .retry
            .run("write wal segment", || {
                let stream = lz4_file_stream(path.clone(), pos.offset, Some(len));
                self.client.write_wal_segment(&pos, stream)
            })
            .await?;
        tracing::info!(replica = %self.name, position = %pos, elapsed = ?started.elapsed(), sz = len,
            "wal segment written");
        self.metrics().wal_bytes.add(len);
        self.set_pos(Some(Pos::new(pos.generation.clone(), pos.index, end)));
        Ok(Step::More)
    }

    /// Validation, first half (spec 5.4, `validate.rs`): checksum the database as of a pinned
    /// position and upload exactly up to it. The returned job restores and compares; it runs
    /// beside this task, so uploads go on meanwhile. A failure here is recorded at once.
    pub(crate) async fn start_validation(&mut self) -> Result<ValidationJob> {
        match self.pin_validation_position().await {
            Ok((position, db_checksum)) => Ok(ValidationJob {
                client: Arc::clone(&self.client),
                retry: self.opts.retry,
                db_path: self.db.path.clone(),
                replica: self.name.clone(),
                stats: Arc::clone(&self.validation),
                position,
                db_checksum,
            }),
            Err(e) => {
                record_validation(&self.db.path, &self.name, &self.validation, Err(&e));
                Err(e)
            }
        }
    }

    async fn pin_validation_position(&mut self) -> Result<(Pos, u64)> {
        // A first attempt may find the replica without a position in the pinned generation
        // (a new generation needs a snapshot, which is labelled with a later index); the
        // next one then starts from a replica that has one.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (pin, crc) = self.db.validation_checksum().await?;
            self.sync_upto(Some(&pin)).await?;
            let target = pin.pos();
            if self.pos.as_ref() == Some(&target) {
                return Ok((target, crc));
            }
            if attempt >= 3 {
                return Err(Error::InvalidArgument(format!(
                    "validation: replica position {} did not reach {target}",
                    self.pos.as_ref().map(|p| p.to_string()).unwrap_or_default()
                )));
            }
        }
    }

    /// Whether a restore of generation `g` (whose snapshots are in `all` and WAL segments in
    /// `segs`) can reach this replica's position: a snapshot exists, and every WAL index from
    /// the newest snapshot's up to the position has its initial segment (each index's upload
    /// starts at offset 0). Objects deleted by someone else (a wiped bucket, a lifecycle rule)
    /// break that; the engine lists only at start-up and at retention checks, so this is
    /// where it notices.
    fn current_generation_restorable(
        &self,
        g: &Generation,
        all: &[(Generation, Vec<SnapshotInfo>)],
        segs: &[WalSegmentInfo],
    ) -> bool {
        let Some(newest) = all
            .iter()
            .filter(|(x, _)| x == g)
            .flat_map(|(_, s)| s.iter().map(|s| s.index))
            .max()
        else {
            return false;
        };
        let Some(pos) = self.pos.as_ref().filter(|p| p.generation == *g) else {
            return true;
        };
        // The last index this replica has uploaded something of.
        let last = if pos.offset > 0 {
            pos.index
        } else {
            match pos.index.checked_sub(1) {
                Some(i) => i,
                None => return true,
            }
        };
        (newest..=last).all(|i| segs.iter().any(|s| s.index == i && s.offset == 0))
    }

    /// After a snapshot at index `i`, a restore from it needs index `i`'s WAL from offset 0.
    /// If the replica lost that segment, drop what is left of index `i` and upload the index
    /// again from its start (the local shadow WAL of the replica's index is always kept).
    /// `segs` lists the snapshot's generation (the snapshot does not change its segments).
    async fn ensure_initial_segment(
        &mut self,
        snap: &SnapshotInfo,
        segs: &[WalSegmentInfo],
    ) -> Result<()> {
        let Some(pos) = self.pos.clone() else {
            return Ok(());
        };
        if pos.generation != snap.generation || pos.index != snap.index || pos.offset == 0 {
            return Ok(());
        }
        if segs.iter().any(|s| s.index == snap.index && s.offset == 0) {
            return Ok(());
        }
        self.delete_index_segments(segs, snap.index).await?;
        tracing::warn!(replica = %self.name, generation = %snap.generation, index = snap.index,
            "replica lost the start of the current wal index, uploading it again from offset 0");
        self.set_pos(Some(Pos::new(snap.generation.clone(), snap.index, 0)));
        while self.sync_wal(None).await? {}
        Ok(())
    }

    /// Retention (spec 5.3), except that the current generation is never deleted: if it has
    /// no snapshot inside the window a new one is taken. A current generation that can no
    /// longer be restored (see [`Self::current_generation_restorable`]) gets a new snapshot
    /// and, where needed, its current WAL index uploaded again.
    pub(crate) async fn enforce_retention(&mut self) -> Result<()> {
        let Some(retention) = self.opts.retention else {
            return Ok(());
        };
        let cutoff = OffsetDateTime::now_utc() - retention;
        let current = self.db.pos_tx.borrow().clone().map(|p| p.generation);
        // Only ever relative to a generation this replicator writes and this replica holds:
        // with no database (a volume not mounted, a restore not run yet) or before the first
        // upload of the current generation, every backup may still be the only copy.
        let Some(current) = current.filter(|c| self.pos.as_ref().map(|p| &p.generation) == Some(c))
        else {
            tracing::debug!(replica = %self.name, "retention skipped: no current generation on this replica yet");
            return Ok(());
        };
        let mut all = self.list_all_snapshots().await?;
        // The current generation's segments, listed once: the repair below only touches the
        // snapshot's index, the deletions further down only indexes below every retained
        // snapshot.
        let current_segs = self
            .opts
            .retry
            .run("list wal segments", || self.client.wal_segments(&current))
            .await?;
        self.keep_current_restorable(&current, &current_segs, &mut all, cutoff)
            .await?;
        for (g, snaps) in &all {
            let segs = (*g == current).then_some(current_segs.as_slice());
            self.delete_before_retained(g, snaps, segs, cutoff, *g == current)
                .await?;
        }
        Ok(())
    }

    /// Every generation of the replica with its snapshots.
    async fn list_all_snapshots(&self) -> Result<Vec<(Generation, Vec<SnapshotInfo>)>> {
        let gens = self
            .opts
            .retry
            .run("list generations", || self.client.generations())
            .await?;
        let mut all = Vec::new();
        for g in &gens {
            let snaps = self
                .opts
                .retry
                .run("list snapshots", || self.client.snapshots(g))
                .await?;
            all.push((g.clone(), snaps));
        }
        Ok(all)
    }

    /// Retention step 1: take a snapshot of the current generation (added to `all`) when no
    /// snapshot of any generation, or none of the current one, is inside the window, or the
    /// current generation cannot be restored (and then upload its current WAL index again
    /// where needed).
    async fn keep_current_restorable(
        &mut self,
        current: &Generation,
        current_segs: &[WalSegmentInfo],
        all: &mut Vec<(Generation, Vec<SnapshotInfo>)>,
        cutoff: OffsetDateTime,
    ) -> Result<()> {
        let retained_in = |g: Option<&Generation>| {
            all.iter()
                .any(|(x, s)| g.is_none_or(|g| g == x) && s.iter().any(|s| s.created_at >= cutoff))
        };
        let any_retained = retained_in(None);
        let current_retained = retained_in(Some(current));
        let restorable = self.current_generation_restorable(current, all, current_segs);
        if any_retained && current_retained && restorable {
            return Ok(());
        }
        if !restorable {
            tracing::warn!(replica = %self.name,
                "replica cannot be restored (its objects were deleted behind our back?), repairing it");
        }
        let info = self.snapshot().await?;
        if *current == info.generation {
            self.ensure_initial_segment(&info, current_segs).await?;
        }
        match all.iter_mut().find(|(g, _)| *g == info.generation) {
            Some((_, s)) => {
                s.retain(|x| x.index != info.index);
                s.push(info);
            }
            None => all.push((info.generation.clone(), vec![info])),
        }
        Ok(())
    }

    /// Retention step 2, for generation `g` with snapshots `snaps`: delete the snapshots and
    /// WAL segments below its oldest snapshot inside the window, or the whole generation if
    /// none is (never the current one). `segs`: its segments when already listed.
    async fn delete_before_retained(
        &self,
        g: &Generation,
        snaps: &[SnapshotInfo],
        segs: Option<&[WalSegmentInfo]>,
        cutoff: OffsetDateTime,
        is_current: bool,
    ) -> Result<()> {
        let retained = snaps.iter().filter(|s| s.created_at >= cutoff);
        let Some(k) = retained.map(|s| s.index).min() else {
            if !is_current {
                self.opts
                    .retry
                    .run("delete generation", || self.client.delete_generation(g))
                    .await?;
                tracing::info!(replica = %self.name, generation = %g, "generation deleted");
            }
            return Ok(());
        };
        for s in snaps.iter().filter(|s| s.index < k) {
            self.opts
                .retry
                .run("delete snapshot", || {
                    self.client.delete_snapshot(g, s.index)
                })
                .await?;
            tracing::info!(replica = %self.name, generation = %g, index = k, "snapshot deleted");
        }
        let listed;
        let segs = match segs {
            Some(segs) => segs,
            None => {
                listed = self
                    .opts
                    .retry
                    .run("list wal segments", || self.client.wal_segments(g))
                    .await?;
                &listed
            }
        };
        let old: Vec<Pos> = segs
            .iter()
            .filter(|s| s.index < k)
            .map(|s| s.pos())
            .collect();
        if !old.is_empty() {
            self.opts
                .retry
                .run("delete wal segments", || {
                    self.client.delete_wal_segments(&old)
                })
                .await?;
            tracing::info!(replica = %self.name, generation = %g, index = k, n = old.len(),
                "wal segmented deleted before");
        }
        Ok(())
    }
}
