//! One tracked database: the meta directory, the shadow WAL, the engine's SQLite
//! connections and read locks, the generation rules and the checkpoint procedure.
//!
//! Everything here is blocking and runs on a blocking thread under the database's mutex.
//!
//! # Read locks
//!
//! Litestream holds one read transaction forever, which pins the WAL and starves the
//! application's checkpoints. We hold a read transaction on one of two reader connections at
//! all times instead, and move it forward on every sync: begin a new read transaction on the
//! idle reader, copy every committed frame, and only then end the old one. While a read
//! transaction with read mark `M` is open SQLite cannot restart the WAL past frames we have
//! not copied (a mark > 0 bounds back-filling to `M` and forbids a restart while later frames
//! exist; mark 0 forbids back-filling altogether), and every frame up to `M` was copied before
//! the previous read transaction ended. So application checkpoints back-fill up to our last
//! sync, and a WAL restart by the application can only happen after we copied everything of
//! the old WAL: it is a new index, not a new generation. Without that continuity (start-up,
//! lost read transaction) we apply Litestream's rules and start a new generation.

use std::cell::{Cell, OnceCell};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::raw::{c_int, c_void};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use rusqlite::Connection;

use crate::error::{Error, Result};
use crate::pos::{Generation, Pos, MAX_INDEX};
use crate::wal::{align_frame, FrameValidator, WalHeader, WAL_FRAME_HEADER_SIZE, WAL_HEADER_SIZE};

use super::lifecycle::{file_identity, shm_committed_end, CheckpointBackoff, FileId, WalStamp};
use super::options::DbOptions;

mod checkpoint;
mod conn;
mod generation;
mod shadow;
mod sync;

pub(crate) use checkpoint::{CheckpointMode, ValidationPoint};

const SEQ_UPSERT: &str =
    "INSERT INTO _litestream_seq (id, seq) VALUES (1, 1) ON CONFLICT (id) DO UPDATE SET seq = seq + 1";

/// The committed end of the shadow WAL: generation, index and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ShadowPos {
    pub(crate) generation: Generation,
    pub(crate) index: u32,
    pub(crate) size: u64,
}

impl ShadowPos {
    pub(crate) fn pos(&self) -> Pos {
        Pos::new(self.generation.clone(), self.index, self.size)
    }
}

/// What one sync did.
#[derive(Debug, Default)]
pub(crate) struct SyncOutcome {
    /// Something changed (frames copied, new index, new generation, checkpoint).
    pub(crate) changed: bool,
    /// The committed shadow position after the sync (None: no database yet).
    pub(crate) pos: Option<ShadowPos>,
}

/// The engine's connections. Only the reader holding the read lock is needed between syncs:
/// the writer and the other reader are opened when a sync needs them and closed again after
/// a sync that found nothing new (an idle database keeps one connection, not three: at 1,000
/// databases each connection costs about 25 KB of SQLite memory).
struct Conns {
    writer: OnceCell<Connection>,
    readers: [OnceCell<Connection>; 2],
    held: [bool; 2],
    active: usize,
    /// The `-shm` file, opened once after the connections (and dropped after them: fields
    /// drop in order). Opening and closing a descriptor of it for every read would drop every
    /// POSIX lock this process holds on it: our connections' read, write and checkpoint locks
    /// on the wal-index, letting the application checkpoint or restart the WAL under them.
    shm: Option<File>,
}

/// The blocking state of one database.
pub(crate) struct DbCore {
    pub(crate) path: PathBuf,
    wal_path: PathBuf,
    pub(crate) meta: PathBuf,
    opts: DbOptions,
    conns: Option<Conns>,
    page_size: u32,
    /// True while a read transaction has been held continuously since the last full copy.
    continuity: bool,
    /// Set on the first sync after start-up: the shadow tail must be trimmed to a commit.
    trimmed: bool,
    /// Device and inode of the database file the connections were opened on.
    identity: Option<FileId>,
    /// Set when the database file was found replaced (or deleted); see [`Self::take_replaced`].
    replaced: bool,
    /// Checkpoints that could not restart the WAL wait before the next attempt.
    backoff: CheckpointBackoff,
    /// The WAL as the engine's own last write (a checkpoint's `_litestream_seq` frame) left it.
    own_write: Option<WalStamp>,
    /// Consecutive failed syncs (connections are re-opened after a few, read lock or not).
    errors: u32,
    /// After the last copy the WAL held frames of the current WAL past the committed end (a
    /// commit on its way, or a large transaction); see [`Self::commit_in_progress`].
    uncommitted: bool,
    /// When [`Self::close_idle_conns`] last closed the spare connections.
    idle_closed_at: Option<Instant>,
}

/// After this many consecutive failed syncs the connections are dropped and re-opened even
/// if a read lock is still held.
const REINIT_AFTER_ERRORS: u32 = 3;

impl std::fmt::Debug for DbCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbCore")
            .field("path", &self.path)
            .field("meta", &self.meta)
            .finish_non_exhaustive()
    }
}

fn io_err(path: &Path, e: io::Error) -> Error {
    Error::io(path.display().to_string(), e)
}

/// `/dir/.name-litestream` for `/dir/name`.
pub(crate) fn default_meta_path(db: &Path) -> PathBuf {
    let name = db
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = db.parent().map(Path::to_path_buf).unwrap_or_default();
    dir.join(format!(".{name}-litestream"))
}

fn wal_path_of(db: &Path) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push("-wal");
    PathBuf::from(s)
}

fn read_at(path: &Path, offset: u64, len: usize) -> Result<Option<Vec<u8>>> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(path, e)),
    };
    f.seek(SeekFrom::Start(offset))
        .map_err(|e| io_err(path, e))?;
    let mut buf = vec![0u8; len];
    match f.read_exact(&mut buf) {
        Ok(()) => Ok(Some(buf)),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(io_err(path, e)),
    }
}

fn file_size(path: &Path) -> Result<Option<u64>> {
    match fs::metadata(path) {
        Ok(m) => Ok(Some(m.len())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path, e)),
    }
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

impl DbCore {
    pub(crate) fn new(path: PathBuf, opts: DbOptions) -> DbCore {
        let meta = opts
            .meta_path
            .clone()
            .unwrap_or_else(|| default_meta_path(&path));
        DbCore {
            wal_path: wal_path_of(&path),
            path,
            meta,
            opts,
            conns: None,
            page_size: 0,
            continuity: false,
            trimmed: false,
            identity: None,
            replaced: false,
            backoff: CheckpointBackoff::default(),
            own_write: None,
            errors: 0,
            uncommitted: false,
            idle_closed_at: None,
        }
    }

    /// True if the last sync found frames of the current WAL past its committed end: a
    /// transaction being written or committed (its commit shows in the wal-index only after
    /// the frames are written and fsynced, and finishing it does not touch the WAL file).
    pub(crate) fn commit_in_progress(&self) -> bool {
        self.uncommitted
    }

    fn sql_err(&self, source: rusqlite::Error) -> Error {
        Error::Sqlite {
            path: self.path.display().to_string(),
            source,
        }
    }

    fn generations_dir(&self) -> PathBuf {
        self.meta.join("generations")
    }

    fn shadow_dir(&self, g: &Generation) -> PathBuf {
        self.generations_dir().join(g.as_str()).join("wal")
    }

    /// `generations/<GEN>/wal/<%08x>.wal` under the meta directory.
    pub(crate) fn shadow_path(&self, g: &Generation, index: u32) -> PathBuf {
        self.shadow_dir(g).join(format!("{index:08x}.wal"))
    }

    fn frame_size(&self) -> u64 {
        WAL_FRAME_HEADER_SIZE as u64 + u64::from(self.page_size)
    }

    fn wal_size_for_pages(&self, n: u64) -> u64 {
        WAL_HEADER_SIZE as u64 + n.saturating_mul(self.frame_size())
    }

    /// Release the read locks and close the connections (shutdown).
    pub(crate) fn close(&mut self) {
        self.reset();
    }

    /// The page size (0 before init).
    pub(crate) fn page_size(&self) -> u32 {
        self.page_size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An application database in WAL mode with a table `t`, its connection (busy timeout
    /// 5 s) and a `DbCore` on it with `opts`.
    fn app_and_core(opts: DbOptions) -> (tempfile::TempDir, Connection, DbCore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("app.db");
        let app = Connection::open(&db).expect("app");
        app.busy_timeout(Duration::from_secs(5))
            .expect("busy timeout");
        app.execute_batch("PRAGMA journal_mode=wal; CREATE TABLE t(x);")
            .expect("schema");
        (dir, app, DbCore::new(db, opts))
    }

    /// One sync with no replicas and no interest in early positions.
    fn sync(core: &mut DbCore) -> Result<SyncOutcome> {
        core.sync(&[], true, &mut |_, _| {})
    }

    /// A panic between `BEGIN IMMEDIATE` and `ROLLBACK` (here inside [`DbCore::guarded`], as
    /// every sync and checkpoint runs) must not leave the application's write lock held.
    #[test]
    fn a_panic_holding_the_write_lock_releases_it() {
        let (_dir, app, mut core) = app_and_core(DbOptions::default());
        sync(&mut core).expect("first sync");
        let r: Result<()> = core.guarded(|c| {
            c.writer()?
                .execute_batch("BEGIN IMMEDIATE")
                .expect("write lock");
            panic!("bug while holding the write lock");
        });
        assert!(r.is_err(), "the panic becomes an error");
        app.execute_batch("BEGIN IMMEDIATE; INSERT INTO t VALUES (1); COMMIT")
            .expect("the application can write again at once");
        sync(&mut core).expect("the next sync starts afresh");
        core.close();
    }

    /// Sync errors that keep coming while a read lock is held (here: the writer left inside
    /// a transaction, so every checkpoint's `BEGIN IMMEDIATE` fails) re-open the database
    /// after a few attempts instead of failing forever.
    #[test]
    fn repeated_sync_errors_with_a_read_lock_held_reinitialise() {
        let (_dir, app, mut core) = app_and_core(DbOptions {
            min_checkpoint_page_count: 1,
            ..DbOptions::default()
        });
        sync(&mut core).expect("first sync");
        core.writer()
            .expect("writer")
            .execute_batch("BEGIN")
            .expect("a transaction left open");
        let (mut failures, mut recovered) = (0, false);
        for _ in 0..6 {
            match sync(&mut core) {
                Ok(_) => {
                    recovered = true;
                    break;
                }
                Err(_) => {
                    assert!(core.holds_read() || core.conns.is_none());
                    failures += 1;
                }
            }
        }
        assert!(failures >= 1, "the stuck writer must make a sync fail");
        assert!(recovered, "{failures} failed syncs: never re-initialised");
        assert!(
            failures <= REINIT_AFTER_ERRORS,
            "{failures} failed syncs: never re-initialised"
        );
        app.execute("INSERT INTO t VALUES (1)", [])
            .expect("the application writes again");
        sync(&mut core).expect("sync after re-init");
        core.close();
    }

    /// After a sync that found nothing new only the connection holding the read lock stays
    /// open (see [`Conns`]); the read lock still pins the WAL, and the next sync reopens what
    /// it needs and continues the same generation.
    #[test]
    fn an_idle_sync_keeps_only_the_read_lock_connection() {
        let (_dir, app, mut core) = app_and_core(DbOptions::default());
        let first = sync(&mut core).expect("first sync");
        let idle = sync(&mut core).expect("idle sync");
        assert!(!idle.changed);
        let c = core.conns().expect("conns");
        assert!(c.writer.get().is_none(), "writer closed");
        assert_eq!(c.readers.iter().filter(|r| r.get().is_some()).count(), 1);
        assert!(core.holds_read());
        let stamps = |core: &DbCore| (WalStamp::of(&core.path), WalStamp::of(&core.wal_path));
        let s0 = stamps(&core);
        sync(&mut core).expect("idle sync");
        let s1 = stamps(&core);
        sync(&mut core).expect("idle sync");
        assert_eq!(s0, s1, "an idle sync leaves the files alone");
        assert_eq!(s1, stamps(&core), "an idle sync leaves the files alone");
        app.execute("INSERT INTO t VALUES (1)", []).expect("write");
        let (busy, _, _): (i64, i64, i64) = app
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .expect("app checkpoint");
        assert_eq!(busy, 1, "our read lock keeps the WAL from being truncated");
        let after = core
            .sync(&[], true, &mut |_, _| {})
            .expect("sync after write");
        assert!(after.changed);
        let (a, b) = (first.pos.expect("pos"), after.pos.expect("pos"));
        assert_eq!(a.generation, b.generation, "same generation");
        assert!(b.size > a.size || b.index > a.index);
        core.close();
    }

    /// A sync that checkpoints hands the position its copy reached to `copied` before the
    /// checkpoint's back-fill, so replicas upload those frames meanwhile.
    #[test]
    fn a_checkpointing_sync_reports_copied_frames_before_the_checkpoint() {
        let (_dir, app, mut core) = app_and_core(DbOptions {
            min_checkpoint_page_count: 1,
            ..DbOptions::default()
        });
        sync(&mut core).expect("first sync");
        app.execute("INSERT INTO t VALUES (randomblob(3000))", [])
            .expect("write");
        let mut seen = Vec::new();
        let out = core
            .sync(&[], true, &mut |p, _| seen.push(p.clone()))
            .expect("sync");
        let end = out.pos.expect("pos");
        let early = seen.first().expect("a position before the checkpoint");
        assert!(
            early.size > WAL_HEADER_SIZE as u64,
            "frames copied: {early:?}"
        );
        assert!(
            (early.index, early.size) < (end.index, end.size),
            "{early:?} then {end:?}"
        );
        core.close();
    }
}
