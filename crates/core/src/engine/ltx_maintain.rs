//! Compaction and retention of an LTX replica, as Litestream v0.5.17 does them.
//!
//! * **Compaction** on wall-clock boundaries (`now` truncated to each level's interval;
//!   defaults 30 s, 5 min, 1 h for levels 1, 2, 3): the files of the level below that are
//!   newer than this level's newest (a contiguous run) are merged into one file (newest
//!   version of each page, pages past the last commit dropped; `ltx::compact`). Level 1
//!   reads the staged local L0 copies where it has them.
//! * **Snapshot retention** after each L9 snapshot: L9 files older than
//!   `snapshot.retention` are deleted, the newest always kept; then in levels 1 and up, files
//!   whose max TXID is below the oldest retained snapshot's, keeping the newest per level.
//! * **L0 retention** every `l0-retention-check-interval`: an L0 file compacted into L1 and
//!   older than `l0-retention` is deleted; the newest L0 is always kept.
//! * `retention.enabled: false` deletes nothing remotely.
//! * Level 1's newest TXID is remembered (from the start-up listing and our own compactions;
//!   forgotten after a failed one): compaction into level 1 and L0 retention do not LIST it.

use std::fs;
use std::io::{BufWriter, Read, Write};
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::time::Instant;
use tokio_util::io::SyncIoBridge;

use crate::error::{Error, Result};
use crate::ltx::compact::{compact, compacted_header};
use crate::ltx::decoder::LtxDecoder;
use crate::ltx::keys::{list_ltx_files, SNAPSHOT_LEVEL};
use crate::ltx::LtxFileInfo;

use super::ltx_build::StagedLtx;
use super::ltx_replica::LtxReplica;

/// At most this many files are merged at once (each open input holds a stream and a page
/// buffer); after a long backlog the rest follow at the next boundaries.
const MAX_COMPACTION_INPUTS: usize = 256;

/// Time until the next multiple of `iv` since the Unix epoch.
fn until_boundary(iv: Duration) -> Duration {
    let iv_ns = iv.as_nanos().max(1);
    let now = OffsetDateTime::now_utc().unix_timestamp_nanos().max(0) as u128;
    let next = (now / iv_ns + 1) * iv_ns;
    Duration::from_nanos(u64::try_from(next - now).unwrap_or(u64::MAX))
}

impl LtxReplica {
    /// When each compaction level is next due (level `i + 1` at index `i`).
    pub(super) fn compaction_schedule(&self) -> Vec<Instant> {
        self.base
            .opts
            .ltx
            .level_intervals
            .iter()
            .map(|&iv| Instant::now() + until_boundary(iv))
            .collect()
    }

    /// Compact every level that is due (lowest first) and re-arm it at its next boundary.
    pub(super) async fn compact_due(&mut self, due: &mut [Instant]) {
        let now = Instant::now();
        let intervals = self.base.opts.ltx.level_intervals.clone();
        for (i, (at, iv)) in due.iter_mut().zip(intervals).enumerate() {
            if *at > now {
                continue;
            }
            *at = Instant::now() + until_boundary(iv);
            let level = u8::try_from(i + 1).unwrap_or(SNAPSHOT_LEVEL);
            if let Err(e) = self.compact(level).await {
                tracing::warn!(replica = %self.base.name, level, error = %e, "compaction error");
                if level == 1 {
                    // The upload may have stored the file after all: list level 1 next time.
                    self.l1_max = None;
                }
            }
        }
    }

    async fn list(&self, level: u8) -> Result<Vec<LtxFileInfo>> {
        let client = Arc::clone(&self.base.client);
        self.base
            .opts
            .retry
            .run("list ltx files", || list_ltx_files(client.as_ref(), level))
            .await
    }

    async fn delete(&self, files: &[LtxFileInfo]) -> Result<()> {
        if files.is_empty() {
            return Ok(());
        }
        let kind = self.base.client.kind();
        let keys: Vec<String> = files.iter().map(|f| f.key(kind)).collect();
        let client = Arc::clone(&self.base.client);
        self.base
            .opts
            .retry
            .run("delete ltx files", || client.delete_objects(&keys))
            .await?;
        tracing::info!(replica = %self.base.name, n = keys.len(), level = files[0].level,
            "ltx files deleted");
        Ok(())
    }

    /// Merge the files of `dst - 1` newer than `dst`'s newest into one file at `dst`.
    pub(crate) async fn compact(&mut self, dst: u8) -> Result<()> {
        if self.txid == 0 || dst == 0 || dst >= SNAPSHOT_LEVEL {
            return Ok(());
        }
        let src = dst - 1;
        // Level 1's newest TXID is known from the start-up listing and our own compactions
        // (nothing else writes level 1 while we replicate): no LIST for it.
        let dst_max = match (dst, self.l1_max) {
            (1, Some(m)) => Some(m),
            _ => self.list(dst).await?.iter().map(|f| f.max_txid).max(),
        };
        let mut run: Vec<LtxFileInfo> = Vec::new();
        for f in self.list(src).await? {
            if f.min_txid <= dst_max.unwrap_or(0) {
                continue;
            }
            if run.last().is_some_and(|l| f.min_txid != l.max_txid + 1)
                || run.len() >= MAX_COMPACTION_INPUTS
            {
                break;
            }
            run.push(f);
        }
        if dst == 1 {
            self.l1_max = dst_max;
        }
        let (Some(first), Some(last)) = (run.first(), run.last()) else {
            return Ok(());
        };
        if dst_max.is_some_and(|m| first.min_txid != m + 1) {
            tracing::warn!(replica = %self.base.name, level = dst, from = first.min_txid,
                "compaction: level {src} does not continue level {dst}, compacting anyway");
        }
        let (min, max) = (first.min_txid, last.max_txid);
        let started = std::time::Instant::now();
        let handle = tokio::runtime::Handle::current();
        let mut readers: Vec<(String, Box<dyn Read + Send>)> = Vec::new();
        let kind = self.base.client.kind();
        for f in &run {
            let local = self.staged_path(src, f.min_txid, f.max_txid);
            let key = f.key(kind);
            match (src == 0).then(|| fs::File::open(&local).ok()).flatten() {
                Some(file) => readers.push((local.display().to_string(), Box::new(file))),
                None => {
                    let client = Arc::clone(&self.base.client);
                    let stream = self
                        .base
                        .opts
                        .retry
                        .run("open ltx file", || client.open_object(&key))
                        .await?;
                    readers.push((
                        key.clone(),
                        Box::new(SyncIoBridge::new_with_handle(stream, handle.clone())),
                    ));
                }
            }
        }
        let out = self.staged_path(dst, min, max);
        let staged = tokio::task::spawn_blocking(move || -> Result<StagedLtx> {
            let mut decoders = Vec::with_capacity(readers.len());
            for (name, r) in readers {
                decoders.push(LtxDecoder::new(name, r)?);
            }
            let header = compacted_header(&decoders)?;
            if let Some(dir) = out.parent() {
                fs::create_dir_all(dir).map_err(|e| Error::io(dir.display().to_string(), e))?;
            }
            let name = out.display().to_string();
            let file = fs::File::create(&out).map_err(|e| Error::io(&name, e))?;
            let r = compact(&name, &mut decoders, BufWriter::new(file)).and_then(|(mut w, _)| {
                w.flush().map_err(|e| Error::io(&name, e))?;
                let f = w
                    .into_inner()
                    .map_err(|e| Error::io(&name, e.into_error()))?;
                f.sync_all().map_err(|e| Error::io(&name, e))
            });
            if let Err(e) = r {
                let _ = fs::remove_file(&out);
                return Err(e);
            }
            Ok(StagedLtx { path: out, header })
        })
        .await
        .map_err(|e| Error::io("compaction task", std::io::Error::other(e)))??;
        let r = self.upload(dst, &staged).await;
        let _ = fs::remove_file(&staged.path);
        let info = r?;
        tracing::info!(replica = %self.base.name, level = dst, min = %crate::ltx::format_txid(min),
            max = %crate::ltx::format_txid(max), n = run.len(), sz = info.size,
            elapsed = ?started.elapsed(), "ltx files compacted");
        if dst == 1 {
            self.l1_max = Some(max);
            self.clean_staged_l0();
        }
        Ok(())
    }

    /// Snapshot retention (see the module docs).
    pub(super) async fn enforce_snapshot_retention(&mut self) -> Result<()> {
        if !self.base.opts.ltx.retention_enabled {
            return Ok(());
        }
        let cutoff = OffsetDateTime::now_utc() - self.base.opts.ltx.snapshot_retention;
        let snaps = self.list(SNAPSHOT_LEVEL).await?;
        let Some(newest) = snaps.iter().map(|f| f.max_txid).max() else {
            return Ok(());
        };
        let (keep, old): (Vec<LtxFileInfo>, Vec<LtxFileInfo>) = snaps
            .into_iter()
            .partition(|f| f.created_at >= cutoff || f.max_txid == newest);
        self.delete(&old).await?;
        let Some(min_snapshot) = keep.iter().map(|f| f.max_txid).min() else {
            return Ok(());
        };
        for level in 1..=self.base.opts.ltx.level_intervals.len() {
            let level = u8::try_from(level).unwrap_or(SNAPSHOT_LEVEL);
            let files = self.list(level).await?;
            let newest = files.iter().map(|f| f.max_txid).max();
            let doomed: Vec<LtxFileInfo> = files
                .into_iter()
                .filter(|f| f.max_txid < min_snapshot && Some(f.max_txid) != newest)
                .collect();
            self.delete(&doomed).await?;
        }
        Ok(())
    }

    /// L0 retention (see the module docs).
    pub(super) async fn enforce_l0_retention(&mut self) -> Result<()> {
        if !self.base.opts.ltx.retention_enabled
            || self.txid == 0
            || self.base.opts.ltx.level_intervals.is_empty()
        {
            return Ok(());
        }
        let l1_max = match self.l1_max {
            Some(m) => Some(m),
            None => self.list(1).await?.iter().map(|f| f.max_txid).max(),
        };
        let Some(l1_max) = l1_max else {
            return Ok(());
        };
        self.l1_max = Some(l1_max);
        let cutoff = OffsetDateTime::now_utc() - self.base.opts.ltx.l0_retention;
        let l0 = self.list(0).await?;
        let newest = l0.iter().map(|f| f.max_txid).max();
        let doomed: Vec<LtxFileInfo> = l0
            .into_iter()
            .filter(|f| f.max_txid <= l1_max && f.created_at < cutoff && Some(f.max_txid) != newest)
            .collect();
        self.delete(&doomed).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compaction_runs_on_wall_clock_boundaries() {
        for secs in [1u64, 30, 300, 3600] {
            let iv = Duration::from_secs(secs);
            let d = until_boundary(iv);
            assert!(d > Duration::ZERO && d <= iv, "{d:?} for {iv:?}");
            let now = OffsetDateTime::now_utc().unix_timestamp_nanos() as u128;
            let at = now + d.as_nanos();
            // Within a few ms of an exact multiple of the interval.
            let off = at % iv.as_nanos();
            assert!(
                off < 50_000_000 || iv.as_nanos() - off < 50_000_000,
                "{off} ns off a boundary of {iv:?}"
            );
        }
    }
}
