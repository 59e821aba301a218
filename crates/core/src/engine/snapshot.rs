//! Point-in-time snapshots of a replica (issue 11 item 1): pin, upload up to the pin, then
//! write the snapshot labelled with the pinned position.

use std::sync::Arc;

use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::pos::Pos;
use crate::replica_client::{SnapshotInfo, WalSegmentInfo};

use super::db::ShadowPos;
use super::replica::{ReplicaTask, Step};
use super::stream::lz4_shared_file_stream;

impl ReplicaTask {
    /// The `snapshot-interval` snapshot, skipped when the replica already holds a snapshot of
    /// the current generation at the current index (as far as this task knows, no listing): a
    /// restore from either replays that whole index, so a new one gains nothing, and replacing
    /// the object (v0.3 snapshots are named by index) would make the times before it
    /// unrestorable.
    pub(super) async fn interval_snapshot(&mut self) -> Result<()> {
        let Some(dpos) = self.db.pos_tx.borrow().clone() else {
            return Ok(());
        };
        if self.restorable == Some((dpos.generation.clone(), dpos.index)) {
            tracing::debug!(replica = %self.name, position = %dpos.pos(),
                "snapshot skipped: the replica has one at this index");
            return Ok(());
        }
        self.snapshot().await.map(|_| ())
    }

    /// `Replica.Snapshot`, point-in-time: pin a read transaction at the current position `P`
    /// (no back-fill past `P`, no WAL restart the snapshot cannot see, engine checkpoints
    /// skipped), upload the WAL exactly up to `P`, then stream the main database file through
    /// LZ4 to the replica, labelled with `P`'s index, and only then release the pin.
    ///
    /// While pinned, the database file holds the state at the start of `P`'s index plus
    /// back-filled frames of that index up to `P` (pages a concurrent back-fill rewrites while
    /// we read may be torn, but each of them is in a frame up to `P`). A restore from this
    /// snapshot replays `P`'s index from offset 0 through at least `P`, because every such
    /// frame was uploaded (with an earlier created-at) before the snapshot object appeared:
    /// every restore by timestamp or index that picks this snapshot is consistent.
    pub(crate) async fn snapshot(&mut self) -> Result<SnapshotInfo> {
        let (vp, _guard) = self.db.pin_position(true).await?;
        let dpos = vp.pos.clone();
        let pos = dpos.pos();
        self.upload_through(&dpos).await?;
        let started = std::time::Instant::now();
        tracing::info!(replica = %self.name, position = %pos, "write snapshot");
        let db_file = self.db.db_file()?;
        let info = self
            .opts
            .retry
            .run("write snapshot", || {
                let stream = lz4_shared_file_stream(Arc::clone(&db_file));
                self.client
                    .write_snapshot(&dpos.generation, dpos.index, stream)
            })
            .await?;
        // The database file was read to its end: the pin may go.
        drop(vp);
        self.restorable = Some((dpos.generation.clone(), dpos.index));
        self.set_pos(self.pos.clone());
        tracing::info!(replica = %self.name, position = %pos, elapsed = ?started.elapsed(), sz = info.size,
            "snapshot written");
        if let Some(iv) = self.opts.snapshot_interval {
            self.next_snapshot = Some(Instant::now() + iv);
        }
        Ok(info)
    }

    /// Make every frame up to `p` durable on the replica, leaving the position exactly at `p`.
    /// A replica without a usable position in `p`'s generation (a new generation, or one that
    /// fell behind local retention) uploads `p`'s index from offset 0, after deleting whatever
    /// the replica holds of that index (segments with other boundaries would overlap).
    async fn upload_through(&mut self, p: &ShadowPos) -> Result<()> {
        let usable = self.pos.as_ref().is_some_and(|pos| {
            pos.generation == p.generation
                && (pos.index, pos.offset) <= (p.index, p.size)
                && self.db.shadow_path(&pos.generation, pos.index).exists()
        });
        if !usable {
            self.restart_index_upload(p).await?;
        }
        loop {
            match self.upload_step(Some(p)).await? {
                Step::More => {}
                Step::Done => break,
                Step::Missing(_) => self.restart_index_upload(p).await?,
            }
        }
        let target = p.pos();
        if self.pos.as_ref() != Some(&target) {
            return Err(Error::InvalidArgument(format!(
                "snapshot: replica position {} did not reach the pinned position {target}",
                self.pos.as_ref().map(|p| p.to_string()).unwrap_or_default()
            )));
        }
        Ok(())
    }

    /// Delete the segments of `index` among `segs` (one generation's listing).
    pub(super) async fn delete_index_segments(
        &self,
        segs: &[WalSegmentInfo],
        index: u32,
    ) -> Result<()> {
        let doomed: Vec<Pos> = segs
            .iter()
            .filter(|s| s.index == index)
            .map(|s| s.pos())
            .collect();
        if doomed.is_empty() {
            return Ok(());
        }
        self.opts
            .retry
            .run("delete wal segments", || {
                self.client.delete_wal_segments(&doomed)
            })
            .await
    }

    /// Drop the replica's segments of `p`'s index and set the position to its offset 0.
    async fn restart_index_upload(&mut self, p: &ShadowPos) -> Result<()> {
        let g = &p.generation;
        let segs = self
            .opts
            .retry
            .run("list wal segments", || self.client.wal_segments(g))
            .await?;
        self.delete_index_segments(&segs, p.index).await?;
        // Until the snapshot is written, a restore of this generation cannot reach the
        // position: publish none.
        self.restorable = None;
        self.set_pos(Some(Pos::new(g.clone(), p.index, 0)));
        Ok(())
    }
}
