//! The sync step: open the database when it appears, detect it replaced, move the read lock
//! forward while copying frames, apply the checkpoint policy.

use super::*;

impl DbCore {
    /// One `DB.Sync`: init if needed, ensure the WAL, move the read lock forward while
    /// copying frames, checkpoint per the policy, clean up. `replica_indexes` are the
    /// indexes (in the current generation) replicas still need, `None` for a replica without
    /// a position in it; `checkpoint_allowed` is false while a snapshot is in progress.
    /// `copied(pos, changed)` is called with the position reached by the copy when a
    /// checkpoint follows, so that the replicas can upload those frames while it runs (a
    /// checkpoint back-fills and fsyncs the database: tens of milliseconds on a busy disk).
    pub(crate) fn sync(
        &mut self,
        replica_indexes: &[Option<(Generation, u32)>],
        checkpoint_allowed: bool,
        copied: &mut dyn FnMut(&ShadowPos, bool),
    ) -> Result<SyncOutcome> {
        if self.conns.is_some() {
            self.detect_replaced()?;
        }
        if self.conns.is_none() {
            // Nothing yet, or a file the application is still creating (shorter than the
            // database header): opening it now would write its first page with our defaults.
            if file_size(&self.path)?.is_none_or(|n| n < 100) {
                tracing::debug!(db = %self.path.display(), "sync: no database found");
                return Ok(SyncOutcome::default());
            }
            if let Err(e) = self.guarded(Self::init) {
                self.reset();
                return Err(e);
            }
        }
        let res = self.guarded(|core| core.sync_inner(replica_indexes, checkpoint_allowed, copied));
        if res.is_ok() {
            self.errors = 0;
            return res;
        }
        self.errors += 1;
        if !self.holds_read() || self.errors >= REINIT_AFTER_ERRORS {
            if self.holds_read() {
                tracing::warn!(db = %self.path.display(), errors = self.errors,
                    "repeated sync errors, re-opening the database");
            }
            self.errors = 0;
            self.reset();
        }
        res
    }

    /// A database deleted, or replaced by another file at the same path (recreated, restored
    /// in place), is not the one the connections hold: drop them (so nothing more is read from
    /// or written to the old file and its WAL) and clear the generation, so that the new
    /// database starts a new one instead of having its WAL spliced onto the old generation.
    pub(super) fn detect_replaced(&mut self) -> Result<()> {
        let now = file_identity(&self.path).map_err(|e| io_err(&self.path, e))?;
        if now == self.identity {
            return Ok(());
        }
        tracing::warn!(db = %self.path.display(), found = now.is_some(),
            "database file replaced or deleted under the replicator, a new generation follows");
        self.reset();
        self.identity = None;
        self.clear_generation();
        self.replaced = true;
        Ok(())
    }

    /// True once after [`Self::detect_replaced`] found the database replaced: the caller
    /// drops its own handle of the old file.
    pub(crate) fn take_replaced(&mut self) -> bool {
        std::mem::take(&mut self.replaced)
    }

    /// The WAL as the engine's last own write left it, once (see [`WalStamp`]).
    pub(crate) fn take_own_write(&mut self) -> Option<WalStamp> {
        self.own_write.take()
    }

    /// Run `f`, catching a panic: the writer's open transaction (the application's write
    /// lock, taken by `BEGIN IMMEDIATE`) is rolled back and the connections are dropped, so a
    /// bug between `BEGIN IMMEDIATE` and `ROLLBACK` never leaves the application locked out;
    /// the panic becomes an error and the next sync starts afresh.
    pub(super) fn guarded<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(self)));
        r.unwrap_or_else(|panic| {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            if let Some(w) = self.conns.as_ref().and_then(|c| c.writer.get()) {
                if !w.is_autocommit() {
                    let _ = w.execute_batch("ROLLBACK");
                }
            }
            self.reset();
            tracing::error!(db = %self.path.display(), panic = %msg, "sync panicked, write lock released");
            Err(io_err(
                &self.path,
                io::Error::other(format!("sync panicked: {msg}")),
            ))
        })
    }

    pub(super) fn sync_inner(
        &mut self,
        replica_indexes: &[Option<(Generation, u32)>],
        checkpoint_allowed: bool,
        copied: &mut dyn FnMut(&ShadowPos, bool),
    ) -> Result<SyncOutcome> {
        self.ensure_wal_exists()?;
        let started = Instant::now();
        let (mut pos, mut changed, wal_size) = self.copy_moving_read_lock()?;
        let copy_time = started.elapsed();

        // Checkpoint policy.
        let mode = if self
            .opts
            .truncate_page_count
            .is_some_and(|n| wal_size >= self.wal_size_for_pages(n))
        {
            Some(CheckpointMode::Truncate)
        } else if self
            .opts
            .max_checkpoint_page_count
            .is_some_and(|n| pos.size >= self.wal_size_for_pages(n))
        {
            Some(CheckpointMode::Restart)
        } else if pos.size >= self.wal_size_for_pages(self.opts.min_checkpoint_page_count) {
            Some(CheckpointMode::Passive)
        } else if let Some(iv) = self.opts.checkpoint_interval {
            let old_enough = fs::metadata(&self.path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .is_some_and(|age| age > iv);
            (old_enough && pos.size > self.wal_size_for_pages(1)).then_some(CheckpointMode::Passive)
        } else {
            None
        };
        if let Some(mode) = mode {
            if !self.backoff.allows(&pos.generation, pos.index) {
                tracing::trace!(db = %self.path.display(), "checkpoint skipped: backing off");
            } else if checkpoint_allowed {
                copied(&pos, changed);
                let started = Instant::now();
                let r = self.checkpoint(mode, copied);
                let m = crate::metrics::db(&self.path.to_string_lossy()).checkpoint(mode.as_str());
                m.count.inc();
                m.seconds.add_duration(started.elapsed());
                if r.is_err() {
                    m.error_count.inc();
                }
                pos = r?;
                changed = true;
                tracing::debug!(db = %self.path.display(), copy = ?copy_time,
                    checkpoint = ?started.elapsed(), mode = mode.as_str(), "sync: copied, checkpointed");
            } else {
                tracing::debug!(db = %self.path.display(), "checkpoint skipped: snapshot in progress");
            }
        }
        self.clean_shadow(&pos, replica_indexes);
        if !changed {
            self.close_idle_conns();
        }
        Ok(SyncOutcome {
            changed,
            pos: Some(pos),
        })
    }

    /// Move the read lock forward while copying: a new read transaction first, copy every
    /// committed frame, then end the old one (see the module docs). Returns what
    /// [`Self::copy_frames`] returns.
    pub(super) fn copy_moving_read_lock(&mut self) -> Result<(ShadowPos, bool, u64)> {
        let (old, new) = {
            let c = self.conns()?;
            if c.held[c.active] {
                (Some(c.active), 1 - c.active)
            } else {
                (None, c.active)
            }
        };
        self.begin_read(new)?;
        let copied = match self.copy_frames() {
            Ok(v) => v,
            Err(e) => {
                if old.is_some() {
                    self.end_read(new);
                }
                return Err(e);
            }
        };
        if let Some(o) = old {
            self.end_read(o);
        }
        if let Some(c) = self.conns.as_mut() {
            c.active = new;
        }
        self.continuity = true;
        Ok(copied)
    }
}
