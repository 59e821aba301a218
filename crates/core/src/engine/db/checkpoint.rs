//! Litestream's checkpoint without the long read lock, and the validation pin.

use super::*;

/// Longest time a RESTART or TRUNCATE checkpoint holds the write lock waiting for the
/// application's readers to move past the last frame (also at most a quarter of the busy
/// timeout, so the application's writers, whose busy timeout is at least ours, never time out).
pub(super) const RESTART_WAIT: Duration = Duration::from_millis(100);
pub(super) const RESTART_WAIT_POLL: Duration = Duration::from_millis(1);
/// Most catch-up rounds (copy, then back-fill up to the copy) before a checkpoint takes the
/// application's write lock.
pub(super) const PRE_LOCK_ROUNDS: usize = 3;
/// A catch-up round that found fewer new frames than this is the last one.
pub(super) const PRE_LOCK_SMALL_FRAMES: u64 = 256;

/// Longest time a checkpoint waits for another one (the application's auto-checkpoint)
/// to release the checkpoint lock.
pub(super) const CKPT_LOCK_WAIT: Duration = Duration::from_millis(250);

/// `PRAGMA wal_checkpoint(PASSIVE)` on `conn`: `(busy, log, checkpointed)`. While another
/// checkpoint holds the checkpoint lock (`1,-1,-1`: an application's auto-checkpoint, which
/// under a steady load back-fills everything up to our read mark after our sync moved it)
/// look again every millisecond until `deadline`; a busy handler is never called for it.
fn passive_checkpoint(
    conn: &Connection,
    deadline: Instant,
) -> std::result::Result<(i64, i64, i64), rusqlite::Error> {
    loop {
        let r: (i64, i64, i64) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
        if r.0 == 0 || r.1 >= 0 || Instant::now() >= deadline {
            return Ok(r);
        }
        std::thread::sleep(RESTART_WAIT_POLL);
    }
}

/// Checkpoint modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CheckpointMode {
    Passive,
    Restart,
    Truncate,
}

impl CheckpointMode {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            CheckpointMode::Passive => "PASSIVE",
            CheckpointMode::Restart => "RESTART",
            CheckpointMode::Truncate => "TRUNCATE",
        }
    }
}

/// A position pinned for validation: the committed shadow position `pos`, a connection whose
/// read transaction holds the WAL at `pos`, and the shadow file to build the page image from.
pub(crate) struct ValidationPoint {
    pub(crate) pos: ShadowPos,
    pub(crate) pin: Connection,
    pub(crate) shadow: File,
    pub(crate) page_size: u32,
}

impl DbCore {
    /// Litestream's checkpoint, without the long read lock.
    ///
    /// Take the write lock (so the WAL is frozen), copy the rest, release our read locks,
    /// back-fill (PASSIVE), take a read lock again (mark 0 if everything was back-filled: it
    /// forbids any further back-fill), release the write lock, then write the
    /// `_litestream_seq` frame in a fresh transaction so that SQLite restarts the WAL (the
    /// writer's own read mark must be 0 for that), and copy the new index. Application
    /// writers wait for at most the copy and the back-fill (plus at most `RESTART_WAIT`: for
    /// RESTART and TRUNCATE, for readers still on older frames, so that the back-fill is
    /// complete and the WAL can restart; in every mode, for an application checkpoint that
    /// still holds the checkpoint lock). The write lock is taken with `poll_busy_handler`,
    /// which gets in between two transactions of an application that writes back to back.
    ///
    /// `copied` is called with each position copied on the way (see [`DbCore::sync`]): the
    /// frames copied before each back-fill are uploaded while it runs.
    pub(crate) fn checkpoint(
        &mut self,
        mode: CheckpointMode,
        copied: &mut dyn FnMut(&ShadowPos, bool),
    ) -> Result<ShadowPos> {
        let started = Instant::now();
        self.back_fill_before_lock(copied)?;
        self.writer()?
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(|e| self.sql_err(e))?;
        let locked = Instant::now();
        let inner = (|| -> Result<bool> {
            let (at, changed, _) = self.copy_frames()?;
            copied(&at, changed);
            self.end_read(0);
            self.end_read(1);
            let reader = self.reader(0)?;
            // RESTART and TRUNCATE wait (a bounded time, holding the write lock so the WAL
            // cannot grow meanwhile) for the application's readers that still use older
            // frames to finish, so that the WAL is fully back-filled and the next writer can
            // restart it. PASSIVE takes what it can at once, once the checkpoint lock is free
            // (see [`passive_checkpoint`]).
            let wait = RESTART_WAIT.min(self.opts.busy_timeout / 4);
            let deadline = Instant::now() + wait;
            let mut attempts = 0u32;
            let (busy, log, ckpt) = loop {
                attempts += 1;
                let (busy, log, ckpt) =
                    passive_checkpoint(reader, deadline).map_err(|e| self.sql_err(e))?;
                let done = busy == 0 && ckpt >= log;
                if !done && mode != CheckpointMode::Passive && Instant::now() < deadline {
                    std::thread::sleep(RESTART_WAIT_POLL);
                } else {
                    break (busy, log, ckpt);
                }
            };
            tracing::debug!(db = %self.path.display(), mode = mode.as_str(), attempts,
                result = %format!("{busy},{log},{ckpt}"), "checkpoint");
            let complete = busy == 0 && ckpt >= log;
            if !complete {
                tracing::debug!(db = %self.path.display(), mode = mode.as_str(),
                    "checkpoint: wal not fully back-filled (readers), it is not restarted yet");
            }
            // Only readers pinning the WAL call for a back-off; another checkpoint still
            // holding the checkpoint lock (`log` -1) is gone by the next sync.
            if complete || log >= 0 {
                self.backoff.record(
                    &at.generation,
                    at.index,
                    complete,
                    self.opts.monitor_interval,
                );
            }
            Ok(complete)
        })();
        // Never release the write lock without a read lock held (see module docs).
        let active = self.conns()?.active;
        let reread = self.begin_read(active);
        let end = self.writer()?.execute_batch("ROLLBACK");
        tracing::debug!(db = %self.path.display(), mode = mode.as_str(), held = ?locked.elapsed(),
            "checkpoint: write lock released");
        if reread.is_err() {
            self.continuity = false;
        }
        let complete = inner.map_err(|e| {
            Error::InvalidArgument(format!("checkpoint: mode={} err={e}", mode.as_str()))
        })?;
        reread?;
        end.map_err(|e| self.sql_err(e))?;
        if !complete {
            // The WAL cannot restart while a reader uses it: a `_litestream_seq` frame would
            // only grow it (and wake the watcher for another attempt).
            let (pos, _, _) = self.copy_frames()?;
            return Ok(pos);
        }
        self.restart_wal(mode)?;
        let (pos, _, _) = self.copy_frames()?;
        self.own_write = WalStamp::of(&self.wal_path);
        tracing::debug!(db = %self.path.display(), mode = mode.as_str(),
            elapsed = ?started.elapsed(), position = %pos.pos(), "checkpoint done");
        Ok(pos)
    }

    /// After a complete back-fill: write the `_litestream_seq` frame in a fresh transaction so
    /// that SQLite restarts the WAL (TRUNCATE also has it truncate the file to zero bytes).
    fn restart_wal(&self, mode: CheckpointMode) -> Result<()> {
        let writer = self.writer()?;
        if mode == CheckpointMode::Truncate {
            writer
                .execute_batch("PRAGMA journal_size_limit = 0")
                .map_err(|e| self.sql_err(e))?;
        }
        let seq = writer.execute(SEQ_UPSERT, []);
        if mode == CheckpointMode::Truncate {
            let _ = writer.execute_batch("PRAGMA journal_size_limit = -1");
        }
        seq.map_err(|e| self.sql_err(e))?;
        Ok(())
    }

    /// Copy and back-fill what can be done without the write lock first: under a steady load
    /// the WAL holds a whole sync interval of frames, and back-filling them all under the
    /// write lock stalls the application for as long. Catch up with the application's writes
    /// since the sync's copy (moving our read mark, which bounds the back-fill, so no frame we
    /// have not copied is back-filled), then back-fill up to it; the application writes more
    /// meanwhile (a back-fill of tens of megabytes and its fsync take a while), so a few
    /// rounds, until one finds little new. Under the lock only the frames written since remain.
    fn back_fill_before_lock(&mut self, copied: &mut dyn FnMut(&ShadowPos, bool)) -> Result<()> {
        let mut before: Option<ShadowPos> = None;
        for _ in 0..PRE_LOCK_ROUNDS {
            let (caught_up, changed, _) = self.copy_moving_read_lock()?;
            copied(&caught_up, changed);
            let small = before.as_ref().is_some_and(|b| {
                b.generation == caught_up.generation
                    && b.index == caught_up.index
                    && caught_up.size.saturating_sub(b.size)
                        < PRE_LOCK_SMALL_FRAMES * self.frame_size()
            });
            before = Some(caught_up);
            if small {
                break;
            }
            let deadline = Instant::now() + CKPT_LOCK_WAIT;
            let pre = passive_checkpoint(self.writer()?, deadline);
            tracing::trace!(db = %self.path.display(), result = ?pre, "checkpoint: back-fill before the write lock");
        }
        Ok(())
    }

    /// Pin a position for validation (see `validate.rs`): under the write lock copy every
    /// committed frame into the shadow WAL, then open a read transaction on a new connection,
    /// which sees exactly that position and keeps SQLite from back-filling or restarting the
    /// WAL past it until it is dropped. Application writers wait for at most the copy.
    pub(crate) fn validation_point(&mut self) -> Result<ValidationPoint> {
        self.writer()?
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(|e| self.sql_err(e))?;
        let inner = (|| -> Result<(ShadowPos, Connection, File)> {
            let (pos, _, _) = self.copy_frames()?;
            let pin = self.open_conn()?;
            pin.execute_batch("BEGIN")
                .and_then(|_| {
                    pin.query_row("SELECT COUNT(1) FROM _litestream_seq", [], |r| {
                        r.get::<_, i64>(0)
                    })
                })
                .map_err(|e| self.sql_err(e))?;
            let p = self.shadow_path(&pos.generation, pos.index);
            let shadow = File::open(&p).map_err(|e| io_err(&p, e))?;
            Ok((pos, pin, shadow))
        })();
        let end = self.writer()?.execute_batch("ROLLBACK");
        let (pos, pin, shadow) = inner?;
        end.map_err(|e| self.sql_err(e))?;
        Ok(ValidationPoint {
            pos,
            pin,
            shadow,
            page_size: self.page_size,
        })
    }
}
