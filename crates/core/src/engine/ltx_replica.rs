//! One replica written in Litestream v0.5's LTX format.
//!
//! The engine's shadow WAL (see `db.rs`) holds every committed transaction, whole, in order;
//! this task turns it into LTX files instead of v0.3 WAL segments:
//!
//! * **L0**: one file per upload round that found committed frames in a shadow WAL index:
//!   the newest version of each page in the range, TXID = the replica's last + 1 (TXIDs as
//!   v0.5 counts them: one per sync, not per SQLite transaction), WAL offset, size and salts
//!   of the range (so Litestream v0.5 can resume after it), timestamp = now (the file's mtime,
//!   s3 `litestream-timestamp`).
//! * **A whole-database L0** when there is no continuous history to append to (first start,
//!   a new generation, a replica that fell behind local shadow retention): built at a pinned
//!   position (a read transaction, as the v0.3 snapshot in `snapshot.rs`), TXID 1 on an empty
//!   replica, else the replica's newest TXID + 1, so TXIDs never go backwards.
//! * **L9 snapshots** (`1-<txid>`), point-in-time: pinned, the replica brought exactly up to
//!   the pin, then the database as of the pin; at the first start on a replica without one
//!   and every `snapshot.interval`.
//! * Compaction and retention: `ltx_maintain.rs`.
//!
//! Local state follows v0.5's meta layout: each L0 file is staged as
//! `<meta>/ltx/0/<txid>-<txid>.ltx` before its upload and the newest is kept, so that at the
//! next start (ours or Litestream v0.5.17's) the newest L0's WAL range says where the
//! replica's history stands in the WAL, and replication continues without a full upload.
//! With several LTX replicas of one database (v0.5 allows one), the first replica (by config
//! order) stages in `ltx/`, the others in `ltx-<name>/`.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::ltx::decoder::LtxHeader;
use crate::ltx::keys::{file_name, list_all_ltx_files, parse_file_name, SNAPSHOT_LEVEL};
use crate::ltx::upload::upload_ltx_file;
use crate::ltx::LtxFileInfo;
use crate::pos::{Generation, Pos};
use crate::wal::{align_frame, WAL_HEADER_SIZE};

use super::db::{ShadowPos, ValidationPoint};
use super::ltx_build::{build_full, build_incremental, wal_range, wal_salts, StagedLtx};
use super::ltx_options::ReplicaFormat;
use super::replica::ReplicaTask;
use super::validate::ValidationReport;

type ValidateRequest = oneshot::Sender<Result<ValidationReport>>;

/// Read buffer of a staged LTX file being uploaded.
const UPLOAD_READ_BUF: usize = 256 << 10;

/// Run the replica `task` in the format its path holds (or, on an empty path, the
/// configured one): the v0.3 task itself, or an [`LtxReplica`] around it.
pub(crate) async fn run_in_format(
    task: ReplicaTask,
    mut shutdown: watch::Receiver<bool>,
    force: Arc<Notify>,
    validate_rx: mpsc::Receiver<ValidateRequest>,
) {
    let format = loop {
        match replica_format(&task).await {
            Ok(f) => break f,
            Err(e) => {
                tracing::warn!(replica = %task.name, error = %e, "cannot list the replica to find its format, retrying");
                tokio::select! {
                    _ = shutdown.changed() => return,
                    _ = tokio::time::sleep(task.opts.sync_interval.max(Duration::from_secs(1))) => {}
                }
            }
        }
    };
    match format {
        ReplicaFormat::V3 => task.run(shutdown, force, validate_rx).await,
        ReplicaFormat::Ltx => {
            LtxReplica::new(task)
                .run(shutdown, force, validate_rx)
                .await
        }
    }
}

/// The format to write `task`'s replica in: the format of the data its path holds (LTX data
/// newer than any v0.3 data is continued in LTX, v0.3 data stays v0.3), else the configured
/// one. Logged with the reason.
async fn replica_format(task: &ReplicaTask) -> Result<ReplicaFormat> {
    let client = Arc::clone(&task.client);
    let existing = task
        .opts
        .retry
        .run("list replica", || {
            crate::ltx::detect::existing_format_is_v3(client.as_ref())
        })
        .await?;
    let configured = task.opts.format;
    if !task.client.supports_object_writes() {
        if configured == ReplicaFormat::Ltx || existing == Some(false) {
            tracing::error!(replica = %task.name, r#type = task.client.kind(),
                "this replica cannot store LTX files (not implemented for this backend yet): \
                 replicating in the v0.3 format");
        }
        return Ok(ReplicaFormat::V3);
    }
    let (format, reason) = match existing {
        Some(true) => (ReplicaFormat::V3, "the replica holds v0.3 generations"),
        Some(false) => (
            ReplicaFormat::Ltx,
            "the replica holds LTX (Litestream v0.5) data, newer than any v0.3 data",
        ),
        None => (configured, "new replica: the configured format"),
    };
    if format != configured {
        tracing::warn!(replica = %task.name, format = format.as_str(), configured = configured.as_str(),
            reason, "replica format differs from the configured one: continuing the replica in its own format");
    } else {
        tracing::info!(replica = %task.name, format = format.as_str(), reason, "replica format");
    }
    Ok(format)
}

/// The milliseconds since the Unix epoch, as LTX headers carry them.
pub(super) fn now_ms() -> i64 {
    i64::try_from(OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

fn blocking_err(e: tokio::task::JoinError) -> Error {
    Error::io("ltx task", std::io::Error::other(e))
}

/// An LTX replica; see the module docs.
pub(crate) struct LtxReplica {
    /// The v0.3 task's state this reuses: name, client, options, database, position channel.
    pub(super) base: ReplicaTask,
    /// The replica's newest TXID (0: none yet).
    pub(super) txid: u64,
    /// Whether the start-up listing was done.
    pub(super) started: bool,
    /// The local staging directory (`<meta>/ltx`).
    pub(super) staging: PathBuf,
    /// The replica has no L9 snapshot yet: take one at the next sync.
    need_snapshot: bool,
    /// When the next `snapshot.interval` snapshot is due.
    pub(super) next_snapshot: Option<Instant>,
    /// The newest TXID in level 1: from the start-up listing, then our own compactions
    /// (`None`: level 1 was empty or not listed yet).
    pub(super) l1_max: Option<u64>,
}

impl LtxReplica {
    pub(crate) fn new(base: ReplicaTask) -> LtxReplica {
        let staging = if base.slot == 0 {
            base.db.meta.join("ltx")
        } else {
            base.db.meta.join(format!("ltx-{}", base.name))
        };
        LtxReplica {
            base,
            txid: 0,
            started: false,
            staging,
            need_snapshot: false,
            next_snapshot: None,
            l1_max: None,
        }
    }

    /// The staged path of a level's file.
    pub(super) fn staged_path(&self, level: u8, min: u64, max: u64) -> PathBuf {
        self.staging
            .join(level.to_string())
            .join(file_name(min, max))
    }

    fn set_pos(&mut self, pos: Option<Pos>) {
        // Every LTX position is restorable: the chain starts at a whole-database file.
        if let Some(p) = &pos {
            self.base.restorable = Some((p.generation.clone(), p.index));
        }
        self.base.set_pos(pos);
    }

    /// The upload loop; returns after the final sync on shutdown.
    async fn run(
        mut self,
        mut shutdown: watch::Receiver<bool>,
        force: Arc<Notify>,
        mut validate_rx: mpsc::Receiver<ValidateRequest>,
    ) {
        let mut next_validation = self
            .base
            .opts
            .validation_interval
            .map(|i| Instant::now() + i);
        let mut change_rx = self.base.db.change_tx.subscribe();
        let mut dirty = true;
        let mut last_sync: Option<Instant> = None;
        let mut due = self.compaction_schedule();
        let l0_check = self.base.opts.ltx.l0_retention_check_interval;
        let mut next_retention = Instant::now() + l0_check;
        loop {
            let sync_at = last_sync
                .map(|t| t + self.base.opts.sync_interval)
                .unwrap_or_else(Instant::now);
            let snap_at = self.next_snapshot.unwrap_or_else(far_future);
            let compact_at = due.iter().min().copied().unwrap_or_else(far_future);
            let val_at = next_validation.unwrap_or_else(far_future);
            tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                _ = tokio::time::sleep_until(snap_at), if self.next_snapshot.is_some() => {
                    self.next_snapshot = Some(Instant::now() + self.base.opts.ltx.snapshot_interval);
                    if let Err(e) = self.snapshot().await {
                        tracing::warn!(replica = %self.base.name, error = %e, "snapshot error");
                    }
                }
                _ = tokio::time::sleep_until(compact_at), if !due.is_empty() => {
                    self.compact_due(&mut due).await;
                }
                _ = tokio::time::sleep_until(next_retention) => {
                    next_retention = Instant::now() + l0_check;
                    if let Err(e) = self.enforce_l0_retention().await {
                        tracing::warn!(replica = %self.base.name, error = %e, "l0 retention error");
                    }
                }
                _ = tokio::time::sleep_until(val_at), if next_validation.is_some() => {
                    next_validation = self.base.opts.validation_interval.map(|i| Instant::now() + i);
                    let _ = self.validate().await;
                }
                Some(reply) = validate_rx.recv() => {
                    let _ = reply.send(self.validate().await);
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
        let _ = self.sync_logged().await;
    }

    async fn sync_logged(&mut self) -> Result<()> {
        let r = self.sync().await;
        if let Err(e) = &r {
            tracing::warn!(db = %self.base.db.path.display(), replica = %self.base.name, error = %e,
                "monitor error");
        }
        r
    }

    /// One upload round: on the first, find where the replica stands; then upload L0 files
    /// up to the local position at the round's start (a whole-database L0 where there is no
    /// continuous history), and the first L9 snapshot if the replica has none.
    pub(crate) async fn sync(&mut self) -> Result<()> {
        let cap = self
            .base
            .db
            .pos_tx
            .borrow()
            .clone()
            .ok_or_else(|| Error::InvalidArgument("no generation, waiting for data".into()))?;
        if !self.started {
            self.start(&cap).await?;
            self.started = true;
        }
        self.upload_upto(&cap).await?;
        if self.need_snapshot {
            self.snapshot().await?;
        }
        crate::metrics::replica(&self.base.db.path.to_string_lossy(), &self.base.name)
            .mark_synced();
        Ok(())
    }

    /// Start-up: the replica's newest TXID (every level), whether it has a snapshot, and
    /// whether the newest local L0 (ours or Litestream v0.5's, named by that TXID) says where
    /// that TXID stands in the current shadow WAL; if so, the history continues from there.
    async fn start(&mut self, cap: &ShadowPos) -> Result<()> {
        let client = Arc::clone(&self.base.client);
        let files = self
            .base
            .opts
            .retry
            .run("list ltx files", || list_all_ltx_files(client.as_ref()))
            .await?;
        let remote_max = files.iter().map(|f| f.max_txid).max().unwrap_or(0);
        self.txid = remote_max;
        self.l1_max = files
            .iter()
            .filter(|f| f.level == 1)
            .map(|f| f.max_txid)
            .max();
        let newest_snapshot = files
            .iter()
            .filter(|f| f.level == SNAPSHOT_LEVEL)
            .map(|f| f.created_at)
            .max();
        self.need_snapshot = newest_snapshot.is_none();
        let iv = self.base.opts.ltx.snapshot_interval;
        self.next_snapshot = Some(match newest_snapshot {
            Some(t) => Instant::now() + iv.saturating_sub(since(t)),
            None => Instant::now() + iv,
        });
        let staging = self.staging.join("0");
        let resumed = tokio::task::spawn_blocking({
            let staging = staging.clone();
            let shadow_dir = self
                .base
                .db
                .meta
                .join("generations")
                .join(cap.generation.as_str())
                .join("wal");
            let g = cap.generation.clone();
            let page_size = self.base.db.page_size();
            move || resume_point(&staging, &shadow_dir, &g, page_size, remote_max)
        })
        .await
        .map_err(blocking_err)??;
        match resumed {
            Some(pos) => {
                tracing::info!(replica = %self.base.name, txid = %crate::ltx::format_txid(remote_max),
                    position = %pos, "ltx replica continues after its newest file");
                self.set_pos(Some(pos));
            }
            None => {
                tracing::info!(replica = %self.base.name, txid = %crate::ltx::format_txid(remote_max),
                    "ltx replica: no continuous local history, a whole-database file follows");
                self.set_pos(None);
            }
        }
        Ok(())
    }

    /// Upload L0 files until the replica holds `cap` (or a later position after a
    /// whole-database file).
    pub(super) async fn upload_upto(&mut self, cap: &ShadowPos) -> Result<()> {
        let page_size = self.base.db.page_size();
        loop {
            let usable = self.base.pos.as_ref().is_some_and(|p| {
                p.generation == cap.generation && (p.index, p.offset) <= (cap.index, cap.size)
            });
            let Some(p) = self.base.pos.clone().filter(|_| usable) else {
                let past = self
                    .base
                    .pos
                    .as_ref()
                    .is_some_and(|p| p.generation == cap.generation);
                if past {
                    return Ok(()); // already past the cap (a whole-database file went further)
                }
                return self.write_full().await;
            };
            if (p.index, p.offset) >= (cap.index, cap.size) {
                return Ok(());
            }
            let path = self.base.db.shadow_path(&p.generation, p.index);
            let end = if p.index == cap.index {
                cap.size
            } else {
                match fs::metadata(&path) {
                    Ok(m) => align_frame(m.len(), page_size),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        tracing::warn!(replica = %self.base.name, position = %p,
                            "replica fell behind local shadow wal retention, a whole-database file follows");
                        self.set_pos(None);
                        continue;
                    }
                    Err(e) => return Err(Error::io(path.display().to_string(), e)),
                }
            };
            let from = p.offset.max(WAL_HEADER_SIZE as u64);
            if from < end {
                if !path.exists() {
                    self.set_pos(None);
                    continue;
                }
                let txid = self.txid + 1;
                let out = self.staged_path(0, txid, txid);
                let shadow = path.clone();
                let built = tokio::task::spawn_blocking(move || {
                    build_incremental(&shadow, from, end, page_size, txid, now_ms(), &out)
                })
                .await
                .map_err(blocking_err)??;
                if let Some(staged) = built {
                    let started = std::time::Instant::now();
                    let info = self.upload(0, &staged).await?;
                    self.txid = txid;
                    self.clean_staged_l0();
                    tracing::info!(replica = %self.base.name, txid = %crate::ltx::format_txid(txid),
                        sz = info.size, elapsed = ?started.elapsed(), "ltx file written");
                }
            }
            if p.index < cap.index {
                self.set_pos(Some(Pos::new(
                    p.generation.clone(),
                    p.index + 1,
                    WAL_HEADER_SIZE as u64,
                )));
            } else {
                self.set_pos(Some(Pos::new(p.generation.clone(), p.index, end)));
            }
        }
    }

    /// Store a staged file at `level` (from the local file, so retries can start over).
    pub(super) async fn upload(&self, level: u8, staged: &StagedLtx) -> Result<LtxFileInfo> {
        let client = Arc::clone(&self.base.client);
        let info = self
            .base
            .opts
            .retry
            .run("write ltx file", || async {
                let f = tokio::fs::File::open(&staged.path)
                    .await
                    .map_err(|e| Error::io(staged.path.display().to_string(), e))?;
                // Large reads: each read of a `tokio::fs::File` is a round trip to the
                // blocking pool (a thread wake-up), and the backends read in small pieces.
                let f = tokio::io::BufReader::with_capacity(UPLOAD_READ_BUF, f);
                upload_ltx_file(client.as_ref(), level, &staged.header, Box::pin(f)).await
            })
            .await?;
        let m = crate::metrics::replica(&self.base.db.path.to_string_lossy(), &self.base.name);
        m.wal_bytes.add(info.size);
        Ok(info)
    }

    /// Build a whole-database file `min..=max` as of the pinned position `vp` into `out`.
    async fn build_full_at(
        &self,
        vp: ValidationPoint,
        min: u64,
        max: u64,
        out: PathBuf,
    ) -> Result<(ValidationPoint, StagedLtx)> {
        let db = self.base.db.db_file()?;
        let shadow_path = self.base.db.shadow_path(&vp.pos.generation, vp.pos.index);
        let (vp, r) = tokio::task::spawn_blocking(move || {
            let r = build_full(
                &db,
                (&vp.shadow, &shadow_path),
                vp.page_size,
                vp.pos.size,
                min,
                max,
                now_ms(),
                &out,
            );
            (vp, r)
        })
        .await
        .map_err(blocking_err)?;
        Ok((vp, r?))
    }

    /// A whole-database L0 at the next TXID (TXID 1, a snapshot, on an empty replica), as of
    /// a pinned position, which becomes the replica's position.
    async fn write_full(&mut self) -> Result<()> {
        let (vp, _guard) = self.base.db.pin_position(true).await?;
        let txid = self.txid + 1;
        let min = if txid == 1 { 1 } else { txid };
        let out = self.staged_path(0, min, txid);
        let started = std::time::Instant::now();
        let (vp, staged) = self.build_full_at(vp, min, txid, out).await?;
        let info = self.upload(0, &staged).await?;
        self.txid = txid;
        if txid == 1 && self.need_snapshot {
            // TXID 1 holds the whole database: it is also the first snapshot.
            self.upload(SNAPSHOT_LEVEL, &staged).await?;
            self.need_snapshot = false;
        }
        let pos = vp.pos.pos();
        drop(vp);
        self.set_pos(Some(pos.clone()));
        self.clean_staged_l0();
        tracing::info!(replica = %self.base.name, txid = %crate::ltx::format_txid(txid), position = %pos,
            sz = info.size, elapsed = ?started.elapsed(), "ltx whole-database file written");
        Ok(())
    }

    /// An L9 snapshot `1-<txid>`, point-in-time: pin, bring the replica exactly to the pin,
    /// write the database as of the pin. Then snapshot retention.
    pub(super) async fn snapshot(&mut self) -> Result<()> {
        for _ in 0..3 {
            let (vp, _guard) = self.base.db.pin_position(true).await?;
            self.upload_upto(&vp.pos).await?;
            if self.base.pos.as_ref() != Some(&vp.pos.pos()) || self.txid == 0 {
                continue; // a whole-database file went past the pin: pin again
            }
            let txid = self.txid;
            let out = self.staged_path(SNAPSHOT_LEVEL, 1, txid);
            let started = std::time::Instant::now();
            let (vp, staged) = self.build_full_at(vp, 1, txid, out).await?;
            let r = self.upload(SNAPSHOT_LEVEL, &staged).await;
            drop(vp);
            let _ = fs::remove_file(&staged.path);
            let info = r?;
            self.need_snapshot = false;
            self.next_snapshot = Some(Instant::now() + self.base.opts.ltx.snapshot_interval);
            tracing::info!(replica = %self.base.name, txid = %crate::ltx::format_txid(txid),
                sz = info.size, elapsed = ?started.elapsed(), "snapshot written");
            return self.enforce_snapshot_retention().await;
        }
        Err(Error::InvalidArgument(
            "snapshot: the replica did not reach the pinned position".into(),
        ))
    }

    /// Remove staged L0 files that are no longer needed locally: all but the newest (which
    /// says where the history stands at the next start) and those not yet compacted into
    /// level 1 (compaction prefers the local copies).
    pub(super) fn clean_staged_l0(&self) {
        let keep_above = self.compacted_l1_max();
        let dir = self.staging.join("0");
        let Ok(rd) = fs::read_dir(&dir) else { return };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some((_, max)) = parse_file_name(&name) else {
                continue;
            };
            if max < self.txid && max <= keep_above {
                let _ = fs::remove_file(e.path());
            }
        }
    }

    /// The newest TXID compacted into level 1 (all of them without compaction levels).
    fn compacted_l1_max(&self) -> u64 {
        if self.base.opts.ltx.level_intervals.is_empty() {
            return u64::MAX;
        }
        self.l1_max.unwrap_or(0)
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86400 * 365)
}

pub(super) fn since(t: OffsetDateTime) -> Duration {
    let d = OffsetDateTime::now_utc() - t;
    d.try_into().unwrap_or(Duration::ZERO)
}

/// Where the replica's newest TXID `remote_max` stands in the shadow WAL of generation `g`
/// (`shadow_dir`), from the staged L0 file of that TXID in `staging` (`<meta>/ltx/0`):
/// the shadow index whose header has the file's WAL salts and that holds its whole WAL range.
/// Staged files past `remote_max` (never uploaded) and `.tmp` leftovers are removed.
fn resume_point(
    staging: &Path,
    shadow_dir: &Path,
    g: &Generation,
    page_size: u32,
    remote_max: u64,
) -> Result<Option<Pos>> {
    let mut newest: Option<PathBuf> = None;
    if let Ok(rd) = fs::read_dir(staging) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            match parse_file_name(&name) {
                Some((_, max)) if max > remote_max => {
                    tracing::info!(file = %e.path().display(), "removing staged ltx file the replica does not hold");
                    let _ = fs::remove_file(e.path());
                }
                Some((min, max)) if min == max && max == remote_max => newest = Some(e.path()),
                Some(_) => {}
                None if name.ends_with(".tmp") => {
                    let _ = fs::remove_file(e.path());
                }
                None => {}
            }
        }
    }
    let (Some(path), true) = (newest, remote_max > 0) else {
        return Ok(None);
    };
    let mut raw = [0u8; crate::ltx::decoder::HEADER_SIZE];
    let read = fs::File::open(&path).and_then(|f| {
        use std::io::Read;
        let mut f = f;
        f.read_exact(&mut raw)
    });
    if read.is_err() {
        return Ok(None);
    }
    let Ok(h) = LtxHeader::parse(&path.display().to_string(), &raw) else {
        return Ok(None);
    };
    let r = wal_range(&h);
    if r.offset < WAL_HEADER_SIZE as u64 || (r.salt1, r.salt2) == (0, 0) {
        return Ok(None);
    }
    let end = r.offset + r.size;
    let mut indexes: Vec<u32> = fs::read_dir(shadow_dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    let hex = n.strip_suffix(".wal")?;
                    (hex.len() == 8).then(|| u32::from_str_radix(hex, 16).ok())?
                })
                .collect()
        })
        .unwrap_or_default();
    indexes.sort_unstable();
    for &i in indexes.iter().rev() {
        let p = shadow_dir.join(format!("{i:08x}.wal"));
        let Ok(f) = fs::File::open(&p) else { continue };
        let Ok(salts) = wal_salts(&f, &p) else {
            continue;
        };
        let size = f.metadata().map(|m| m.len()).unwrap_or(0);
        if salts == (r.salt1, r.salt2)
            && align_frame(size, page_size) >= end
            && last_page_matches(&f, &path, end, page_size)
        {
            return Ok(Some(Pos::new(g.clone(), i, end)));
        }
    }
    Ok(None)
}

/// Litestream v0.5's `lastPageMatch`: the last WAL frame before `end` (if any) is in the LTX
/// file at `ltx` with the same content, so the file was built from this very WAL.
fn last_page_matches(shadow: &fs::File, ltx: &Path, end: u64, page_size: u32) -> bool {
    use std::os::unix::fs::FileExt;
    let fsz = crate::wal::WAL_FRAME_HEADER_SIZE as u64 + u64::from(page_size);
    if end < WAL_HEADER_SIZE as u64 + fsz {
        return true; // no frame: the salts alone say it
    }
    let mut frame = vec![0u8; fsz as usize];
    if shadow.read_exact_at(&mut frame, end - fsz).is_err() {
        return false;
    }
    let pgno = u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]);
    let want = &frame[crate::wal::WAL_FRAME_HEADER_SIZE..];
    let Ok(file) = fs::File::open(ltx) else {
        return false;
    };
    let name = ltx.display().to_string();
    let Ok(mut dec) = crate::ltx::decoder::LtxDecoder::new(name, std::io::BufReader::new(file))
    else {
        return false;
    };
    if dec.header().page_size != page_size {
        return false;
    }
    let mut buf = vec![0u8; page_size as usize];
    loop {
        match dec.next_page(&mut buf) {
            Ok(Some(p)) if p == pgno => return buf == want,
            Ok(Some(p)) if p > pgno => return false,
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return false,
        }
    }
}
