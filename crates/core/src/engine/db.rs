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

use std::cell::Cell;
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

const SEQ_UPSERT: &str =
    "INSERT INTO _litestream_seq (id, seq) VALUES (1, 1) ON CONFLICT (id) DO UPDATE SET seq = seq + 1";
const PENDING_SPILL: usize = 8 << 20;
/// Reads of the `-shm` wal-index header before falling back to scanning the WAL.
const SHM_READ_ATTEMPTS: usize = 8;
/// How often the engine's writer connection retries a busy write lock.
const WRITE_LOCK_POLL: Duration = Duration::from_micros(100);

/// Longest time a RESTART or TRUNCATE checkpoint holds the write lock waiting for the
/// application's readers to move past the last frame (also at most a quarter of the busy
/// timeout, so the application's writers, whose busy timeout is at least ours, never time out).
const RESTART_WAIT: Duration = Duration::from_millis(100);
const RESTART_WAIT_POLL: Duration = Duration::from_millis(1);

thread_local! {
    /// When the current wait of `poll_busy_handler` on this thread began.
    static BUSY_SINCE: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Busy handler of the engine's writer connection: retry every `WRITE_LOCK_POLL` until the
/// timeout (microseconds, carried in `arg`) has passed.
///
/// SQLite's own `busy_timeout` handler sleeps 1, 2, 5, 10, … 100 ms between attempts, so
/// against an application that commits back to back (its next transaction takes the write
/// lock microseconds after the last one released it) it almost never wins the lock: our
/// checkpoint then waits out the whole timeout, fails, and the WAL grows for a second per
/// attempt. Polling every 100 µs finds one of the gaps between two application transactions
/// within a few of them.
unsafe extern "C" fn poll_busy_handler(arg: *mut c_void, count: c_int) -> c_int {
    let timeout = Duration::from_micros(arg.addr() as u64);
    let now = Instant::now();
    let since = BUSY_SINCE.with(|s| match s.get() {
        Some(t) if count > 0 => t,
        _ => {
            s.set(Some(now));
            now
        }
    });
    if now.duration_since(since) >= timeout {
        return 0;
    }
    std::thread::sleep(WRITE_LOCK_POLL);
    1
}

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

/// Checkpoint modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CheckpointMode {
    Passive,
    Restart,
    Truncate,
}

impl CheckpointMode {
    fn as_str(self) -> &'static str {
        match self {
            CheckpointMode::Passive => "PASSIVE",
            CheckpointMode::Restart => "RESTART",
            CheckpointMode::Truncate => "TRUNCATE",
        }
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

struct Conns {
    writer: Connection,
    readers: [Connection; 2],
    held: [bool; 2],
    active: usize,
    /// The `-shm` file, opened once after the connections (and dropped after them: fields
    /// drop in order). Opening and closing a descriptor of it for every read would drop every
    /// POSIX lock this process holds on it: our connections' read, write and checkpoint locks
    /// on the wal-index, letting the application checkpoint or restart the WAL under them.
    shm: Option<File>,
}

struct VerifyInfo {
    generation: Option<Generation>,
    reason: Option<&'static str>,
    restart: bool,
    index: u32,
    shadow_size: u64,
    wal_size: u64,
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
}

/// After this many consecutive failed syncs the connections are dropped and re-opened even
/// if a read lock is still held.
const REINIT_AFTER_ERRORS: u32 = 3;

/// A position pinned for validation: the committed shadow position `pos`, a connection whose
/// read transaction holds the WAL at `pos`, and the shadow file to build the page image from.
pub(crate) struct ValidationPoint {
    pub(crate) pos: ShadowPos,
    pub(crate) pin: Connection,
    pub(crate) shadow: File,
    pub(crate) page_size: u32,
}

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

/// Bytes of WAL read per `read` call by [`copy_valid_frames`] (rounded down to whole frames).
const COPY_CHUNK: usize = 512 << 10;

/// Read whole frames of `wal` from `from` (at most `limit` bytes when given) and hand every run
/// of valid frames to `sink`, split after each commit frame: `sink(frames, ends_with_commit)`.
/// Stops at the end of the file (a partial frame is not read), at `limit`, or before the first
/// frame that does not validate. Each WAL byte is read once, straight into one chunk buffer:
/// the frames are validated and handed on from there (no per-frame copies).
///
/// The one frame loop of both copies into the shadow WAL (`DbCore::copy_committed`, bounded
/// by the wal-index, and the scanning fallback of `DbCore::copy_to_shadow_raw`).
fn copy_valid_frames(
    wal: &File,
    wal_path: &Path,
    from: u64,
    limit: Option<u64>,
    validator: &mut FrameValidator,
    mut sink: impl FnMut(&[u8], bool) -> Result<()>,
) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let fsz = validator.header().frame_size();
    let mut buf = vec![0u8; (COPY_CHUNK / fsz).max(1) * fsz];
    let mut off = from;
    let mut left = limit.unwrap_or(u64::MAX);
    loop {
        let want = (buf.len() as u64).min(left) as usize / fsz * fsz;
        if want == 0 {
            return Ok(());
        }
        let mut got = 0;
        while got < want {
            match wal.read_at(&mut buf[got..want], off + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_err(wal_path, e)),
            }
        }
        let whole = got / fsz * fsz;
        let mut run = 0;
        let mut at = 0;
        while at < whole {
            match validator.check(&buf[at..at + fsz]) {
                Ok(fh) => {
                    at += fsz;
                    if fh.commit_size != 0 {
                        sink(&buf[run..at], true)?;
                        run = at;
                    }
                }
                Err(reason) => {
                    tracing::trace!(%reason, offset = off + at as u64, "copy shadow: stop at invalid frame");
                    if run < at {
                        sink(&buf[run..at], false)?;
                    }
                    return Ok(());
                }
            }
        }
        if run < whole {
            sink(&buf[run..whole], false)?;
        }
        if whole < want {
            return Ok(());
        }
        off += whole as u64;
        left -= whole as u64;
    }
}

/// Frames validated but not yet known to be committed: in memory, spilled to a file if large.
struct Pending {
    mem: Vec<u8>,
    spill: Option<(File, PathBuf, u64)>,
}

impl Pending {
    fn len(&self) -> u64 {
        self.mem.len() as u64 + self.spill.as_ref().map_or(0, |s| s.2)
    }
    fn push(&mut self, frame: &[u8], tmp: &Path) -> Result<()> {
        self.mem.extend_from_slice(frame);
        if self.mem.len() >= PENDING_SPILL {
            if self.spill.is_none() {
                let f = OpenOptions::new()
                    .create(true)
                    .truncate(true)
                    .read(true)
                    .write(true)
                    .open(tmp)
                    .map_err(|e| io_err(tmp, e))?;
                self.spill = Some((f, tmp.to_path_buf(), 0));
            }
            if let Some((f, p, n)) = self.spill.as_mut() {
                f.write_all(&self.mem).map_err(|e| io_err(p, e))?;
                *n += self.mem.len() as u64;
            }
            self.mem.clear();
        }
        Ok(())
    }
    /// Append everything pending to `out` and reset.
    fn drain_into(&mut self, out: &mut File, out_path: &Path) -> Result<()> {
        if let Some((mut f, p, n)) = self.spill.take() {
            f.seek(SeekFrom::Start(0)).map_err(|e| io_err(&p, e))?;
            let copied = io::copy(&mut (&mut f).take(n), out).map_err(|e| io_err(out_path, e))?;
            drop(f);
            let _ = fs::remove_file(&p);
            if copied != n {
                return Err(io_err(
                    &p,
                    io::Error::new(io::ErrorKind::UnexpectedEof, "short spill file"),
                ));
            }
        }
        out.write_all(&self.mem).map_err(|e| io_err(out_path, e))?;
        self.mem.clear();
        Ok(())
    }
    fn discard(&mut self) {
        if let Some((_, p, _)) = self.spill.take() {
            let _ = fs::remove_file(p);
        }
        self.mem.clear();
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
        }
    }

    /// True if the last sync found frames of the current WAL past its committed end: a
    /// transaction being written or committed (its commit shows in the wal-index only after
    /// the frames are written and fsynced, and finishing it does not touch the WAL file).
    pub(crate) fn commit_in_progress(&self) -> bool {
        self.uncommitted
    }

    /// Whether the real WAL holds a frame with its header's salts at `offset` (just past the
    /// copied, committed frames).
    fn frame_after(&self, offset: u64) -> bool {
        use std::os::unix::fs::FileExt;
        let Ok(wal) = File::open(&self.wal_path) else {
            return false;
        };
        let mut hdr = [0u8; WAL_HEADER_SIZE];
        let mut fh = [0u8; WAL_FRAME_HEADER_SIZE];
        wal.read_exact_at(&mut hdr, 0).is_ok()
            && wal.read_exact_at(&mut fh, offset).is_ok()
            && fh[8..16] == hdr[16..24]
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

    fn open_conn(&self) -> Result<Connection> {
        // Never create the database: it appears when the application or a restore makes it.
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
            | rusqlite::OpenFlags::SQLITE_OPEN_URI
            | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let c = Connection::open_with_flags(&self.path, flags).map_err(|e| self.sql_err(e))?;
        c.busy_timeout(self.opts.busy_timeout)
            .map_err(|e| self.sql_err(e))?;
        // The engine's connections read a page or two: no lookaside buffers (about 120 KB
        // per connection by default, three connections per database).
        // SAFETY: the handle is valid for the lifetime of `c`; a null buffer with size and
        // count 0 is how SQLITE_DBCONFIG_LOOKASIDE turns lookaside off.
        unsafe {
            rusqlite::ffi::sqlite3_db_config(
                c.handle(),
                rusqlite::ffi::SQLITE_DBCONFIG_LOOKASIDE,
                std::ptr::null_mut::<c_void>(),
                0 as c_int,
                0 as c_int,
            );
        }
        // They read `_litestream_seq` only (the schema page and one more): a tiny page
        // cache. Below 3 pages SQLite also skips the page cache's up-front bulk allocation
        // (min(20, cache_size) pages, ~35 KB per connection at 8), so pages are allocated
        // as they are read: three connections per database, 1,000 databases.
        c.execute_batch("PRAGMA cache_size = 2")
            .map_err(|e| self.sql_err(e))?;
        // Keep the -wal file when our connection is the last to close, as Litestream does,
        // so that a restart can keep the generation.
        let mut one: std::os::raw::c_int = 1;
        // SAFETY: the handle is valid for the lifetime of `c`; the argument is an int as
        // SQLITE_FCNTL_PERSIST_WAL requires.
        unsafe {
            rusqlite::ffi::sqlite3_file_control(
                c.handle(),
                c"main".as_ptr(),
                rusqlite::ffi::SQLITE_FCNTL_PERSIST_WAL,
                (&mut one as *mut std::os::raw::c_int).cast(),
            );
        }
        Ok(c)
    }

    /// Open connections, force WAL mode, create Litestream's tables, take the read lock.
    fn init(&mut self) -> Result<()> {
        let before = file_identity(&self.path).map_err(|e| io_err(&self.path, e))?;
        let writer = self.open_conn()?;
        let timeout_us = usize::try_from(self.opts.busy_timeout.as_micros()).unwrap_or(usize::MAX);
        // SAFETY: the handle is valid for the lifetime of `writer`; the handler only reads
        // its argument as an integer.
        let rc = unsafe {
            rusqlite::ffi::sqlite3_busy_handler(
                writer.handle(),
                Some(poll_busy_handler),
                std::ptr::without_provenance_mut(timeout_us),
            )
        };
        if rc != rusqlite::ffi::SQLITE_OK {
            return Err(self.sql_err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rc),
                Some("busy handler".into()),
            )));
        }
        let mode: String = writer
            .query_row("PRAGMA journal_mode = wal", [], |r| r.get(0))
            .map_err(|e| self.sql_err(e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::InvalidArgument(format!(
                "enable wal failed, mode={mode:?}"
            )));
        }
        writer
            .execute_batch(
                "PRAGMA wal_autocheckpoint = 0;
                 CREATE TABLE IF NOT EXISTS _litestream_seq (id INTEGER PRIMARY KEY, seq INTEGER);
                 CREATE TABLE IF NOT EXISTS _litestream_lock (id INTEGER);",
            )
            .map_err(|e| self.sql_err(e))?;
        let page_size: i64 = writer
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .map_err(|e| self.sql_err(e))?;
        let r0 = self.open_conn()?;
        let r1 = self.open_conn()?;
        for c in [&r0, &r1] {
            c.execute_batch("PRAGMA wal_autocheckpoint = 0")
                .map_err(|e| self.sql_err(e))?;
        }
        self.page_size = u32::try_from(page_size)
            .map_err(|_| Error::corrupt(self.path.display().to_string(), "bad page size"))?;
        self.conns = Some(Conns {
            writer,
            readers: [r0, r1],
            held: [false, false],
            active: 0,
            shm: None,
        });
        self.begin_read(0)?;
        let shm = File::open(self.shm_path()).ok();
        if let Some(c) = self.conns.as_mut() {
            c.shm = shm;
        }
        // The file the connections hold: the same before and after opening them.
        let after = file_identity(&self.path).map_err(|e| io_err(&self.path, e))?;
        if before.is_none() || before != after {
            return Err(io_err(
                &self.path,
                io::Error::other("database file replaced while it was opened"),
            ));
        }
        self.identity = after;
        fs::create_dir_all(&self.meta).map_err(|e| io_err(&self.meta, e))?;
        self.remove_tmp_files(&self.meta.clone());
        self.continuity = false;
        self.trimmed = false;
        tracing::debug!(db = %self.path.display(), page_size, "init: database opened");
        Ok(())
    }

    fn remove_tmp_files(&self, dir: &Path) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                self.remove_tmp_files(&p);
            } else if p.extension().is_some_and(|x| x == "tmp") {
                let _ = fs::remove_file(&p);
            }
        }
    }

    fn conns(&self) -> Result<&Conns> {
        self.conns
            .as_ref()
            .ok_or_else(|| Error::InvalidArgument("database not initialised".into()))
    }

    fn begin_read(&mut self, i: usize) -> Result<()> {
        let c = self.conns()?;
        if c.held[i] {
            return Ok(());
        }
        let r = &c.readers[i];
        let res = r.execute_batch("BEGIN").and_then(|_| {
            r.query_row("SELECT COUNT(1) FROM _litestream_seq", [], |row| {
                row.get::<_, i64>(0)
            })
        });
        if let Err(e) = res {
            let _ = r.execute_batch("ROLLBACK");
            return Err(self.sql_err(e));
        }
        if let Some(c) = self.conns.as_mut() {
            c.held[i] = true;
        }
        Ok(())
    }

    fn end_read(&mut self, i: usize) {
        if let Some(c) = self.conns.as_mut() {
            if c.held[i] {
                if let Err(e) = c.readers[i].execute_batch("ROLLBACK") {
                    tracing::debug!(error = %e, "rollback read tx");
                }
                c.held[i] = false;
            }
        }
    }

    fn holds_read(&self) -> bool {
        self.conns.as_ref().is_some_and(|c| c.held[0] || c.held[1])
    }

    /// Drop connections (after an error that may have lost the read lock).
    fn reset(&mut self) {
        if let Some(c) = self.conns.as_mut() {
            for i in 0..2 {
                if c.held[i] {
                    let _ = c.readers[i].execute_batch("ROLLBACK");
                }
            }
        }
        self.conns = None;
        self.continuity = false;
    }

    /// Release the read locks and close the connections (shutdown).
    pub(crate) fn close(&mut self) {
        self.reset();
    }

    /// The current generation from the `generation` file (trusted only if exactly 16 hex).
    pub(crate) fn current_generation(&self) -> Option<Generation> {
        let s = fs::read_to_string(self.meta.join("generation")).ok()?;
        Generation::parse(s.trim())
    }

    fn write_generation(&self, g: &Generation) -> Result<()> {
        let tmp = self.meta.join("generation.tmp");
        let dst = self.meta.join("generation");
        let mut f = File::create(&tmp).map_err(|e| io_err(&tmp, e))?;
        f.write_all(format!("{g}\n").as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(|e| io_err(&tmp, e))?;
        fs::rename(&tmp, &dst).map_err(|e| io_err(&dst, e))?;
        sync_dir(&self.meta);
        Ok(())
    }

    fn clear_generation(&self) {
        let _ = fs::remove_file(self.meta.join("generation"));
    }

    /// Clear the `generation` file if `g` is still the current generation, so that the next
    /// sync starts a new one (a replica is ahead of the local state).
    pub(crate) fn abandon_generation(&self, g: &Generation) {
        if self.current_generation().as_ref() == Some(g) {
            tracing::warn!(db = %self.path.display(), generation = %g, "abandoning generation");
            self.clear_generation();
        }
    }

    /// Shadow WAL indexes of a generation, ascending.
    pub(crate) fn shadow_indexes(&self, g: &Generation) -> Result<Vec<u32>> {
        let dir = self.shadow_dir(g);
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&dir, e)),
        };
        let mut out = Vec::new();
        for e in rd {
            let e = e.map_err(|e| io_err(&dir, e))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(hex) = name.strip_suffix(".wal") {
                if hex.len() == 8 {
                    if let Ok(i) = u32::from_str_radix(hex, 16) {
                        out.push(i);
                    }
                }
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// Create the WAL if it is missing or shorter than its header.
    fn ensure_wal_exists(&self) -> Result<()> {
        if file_size(&self.wal_path)?.unwrap_or(0) >= WAL_HEADER_SIZE as u64 {
            return Ok(());
        }
        self.conns()?
            .writer
            .execute(SEQ_UPSERT, [])
            .map_err(|e| self.sql_err(e))?;
        Ok(())
    }

    fn verify(&self) -> Result<VerifyInfo> {
        let mut info = VerifyInfo {
            generation: None,
            reason: None,
            restart: false,
            index: 0,
            shadow_size: 0,
            wal_size: 0,
        };
        let Some(g) = self.current_generation() else {
            info.reason = Some("no generation exists");
            return Ok(info);
        };
        info.generation = Some(g.clone());
        let wal_size = file_size(&self.wal_path)?.unwrap_or(0);
        info.wal_size = wal_size;
        let Some(&index) = self.shadow_indexes(&g)?.last() else {
            info.reason = Some("no shadow wal");
            return Ok(info);
        };
        info.index = index;
        if index >= MAX_INDEX {
            info.reason = Some("max index exceeded");
            return Ok(info);
        }
        let shadow = self.shadow_path(&g, index);
        let Some(raw) = file_size(&shadow)? else {
            info.reason = Some("no shadow wal");
            return Ok(info);
        };
        info.shadow_size = align_frame(raw, self.page_size);
        if info.shadow_size < WAL_HEADER_SIZE as u64 {
            info.reason = Some("short shadow wal");
            return Ok(info);
        }
        let real_hdr = read_at(&self.wal_path, 0, WAL_HEADER_SIZE)?;
        let shadow_hdr = read_at(&shadow, 0, WAL_HEADER_SIZE)?;
        info.restart = real_hdr != shadow_hdr;
        if info.restart && self.continuity {
            // The application restarted the WAL after we had copied all of it (see the
            // module docs): a new index, not a new generation.
            return Ok(info);
        }
        if info.restart && !self.continuity {
            // Litestream's start-up check (verifyHeadersMatch) clears the generation.
            tracing::warn!(db = %self.path.display(),
                "init: cannot determine last wal position, clearing generation");
            self.clear_generation();
            info.reason = Some("no generation exists");
            return Ok(info);
        }
        if info.shadow_size > align_frame(wal_size, self.page_size) {
            info.reason = Some("wal truncated by another process");
            return Ok(info);
        }
        if info.shadow_size > WAL_HEADER_SIZE as u64 {
            let fsz = self.frame_size();
            let off = info.shadow_size - fsz;
            let a = read_at(&self.wal_path, off, fsz as usize)?;
            let b = read_at(&shadow, off, fsz as usize)?;
            if a.is_none() || a != b {
                info.reason = Some("wal overwritten by another process");
                return Ok(info);
            }
        }
        Ok(info)
    }

    /// Copy committed, valid frames from the real WAL (from `shadow_size`) into the shadow
    /// file `shadow`. Returns the new shadow size.
    fn copy_to_shadow(&self, shadow: &Path, shadow_size: u64) -> Result<u64> {
        let end = self.copy_to_shadow_raw(shadow, shadow_size)?;
        crate::metrics::db(&self.path.to_string_lossy())
            .total_wal_bytes
            .add(end.saturating_sub(shadow_size));
        Ok(end)
    }

    fn copy_to_shadow_raw(&self, shadow: &Path, shadow_size: u64) -> Result<u64> {
        let hdr_bytes = read_at(shadow, 0, WAL_HEADER_SIZE)?
            .ok_or_else(|| Error::corrupt(shadow.display().to_string(), "short shadow wal"))?;
        let hdr = WalHeader::parse(&hdr_bytes)
            .map_err(|r| Error::corrupt(shadow.display().to_string(), r))?;
        let fsz = self.frame_size();
        let last = if shadow_size > WAL_HEADER_SIZE as u64 {
            let fh = read_at(shadow, shadow_size - fsz, WAL_FRAME_HEADER_SIZE)?
                .ok_or_else(|| Error::corrupt(shadow.display().to_string(), "short shadow wal"))?;
            let be = |i: usize| u32::from_be_bytes([fh[i], fh[i + 1], fh[i + 2], fh[i + 3]]);
            (be(16), be(20))
        } else {
            hdr.checksum
        };
        let mut validator = FrameValidator::resume(hdr, last);
        let wal = match File::open(&self.wal_path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(shadow_size),
            Err(e) => return Err(io_err(&self.wal_path, e)),
        };
        let shm = self.conns.as_ref().and_then(|c| c.shm.as_ref());
        // The two copies of the wal-index header differ while a writer updates them (for
        // microseconds): look again rather than fall back to scanning.
        let committed_end = shm.and_then(|f| {
            (0..SHM_READ_ATTEMPTS).find_map(|attempt| {
                if attempt > 0 {
                    std::thread::yield_now();
                }
                shm_committed_end(f, &hdr_bytes, self.page_size)
            })
        });
        if let Some(end) = committed_end {
            if end >= shadow_size {
                return self.copy_committed(wal, shadow, shadow_size, end, validator);
            }
        }
        // Scan no further than the WAL's size now: a scan that followed an application
        // writing faster than it reads would never end (the rest waits for the next sync).
        let wal_len = wal.metadata().map_err(|e| io_err(&self.wal_path, e))?.len();
        let mut tmp_name = shadow.as_os_str().to_owned();
        tmp_name.push(".tmp");
        let tmp = PathBuf::from(tmp_name);
        let mut pending = Pending {
            mem: Vec::new(),
            spill: None,
        };
        let mut out: Option<File> = None;
        let mut size = shadow_size;
        let res = (|| -> Result<u64> {
            copy_valid_frames(
                &wal,
                &self.wal_path,
                shadow_size,
                Some(wal_len.saturating_sub(shadow_size)),
                &mut validator,
                |frames, commit| {
                    pending.push(frames, &tmp)?;
                    if !commit {
                        return Ok(());
                    }
                    if out.is_none() {
                        let f = OpenOptions::new()
                            .write(true)
                            .open(shadow)
                            .map_err(|e| io_err(shadow, e))?;
                        f.set_len(size).map_err(|e| io_err(shadow, e))?;
                        out = Some(f);
                    }
                    if let Some(f) = out.as_mut() {
                        f.seek(SeekFrom::Start(size))
                            .map_err(|e| io_err(shadow, e))?;
                        let n = pending.len();
                        pending.drain_into(f, shadow)?;
                        size += n;
                    }
                    Ok(())
                },
            )?;
            if let Some(f) = out.as_mut() {
                f.sync_data().map_err(|e| io_err(shadow, e))?;
            }
            Ok(size)
        })();
        pending.discard();
        res
    }

    fn shm_path(&self) -> PathBuf {
        let mut s = self.path.as_os_str().to_owned();
        s.push("-shm");
        PathBuf::from(s)
    }

    /// Copy the frames of `wal` in `[from, end)`, known committed from the wal-index (see
    /// [`shm_committed_end`]), straight into `shadow`, validating them on the way. Frames
    /// past `end` (an uncommitted transaction, however large) are not read at all. If a frame
    /// does not validate the shadow is cut back to the last commit frame before it.
    fn copy_committed(
        &self,
        wal: File,
        shadow: &Path,
        from: u64,
        end: u64,
        mut validator: FrameValidator,
    ) -> Result<u64> {
        if end == from {
            return Ok(from);
        }
        let mut f = OpenOptions::new()
            .write(true)
            .open(shadow)
            .map_err(|e| io_err(shadow, e))?;
        f.set_len(from).map_err(|e| io_err(shadow, e))?;
        f.seek(SeekFrom::Start(from))
            .map_err(|e| io_err(shadow, e))?;
        let (mut size, mut committed) = (from, from);
        copy_valid_frames(
            &wal,
            &self.wal_path,
            from,
            Some(end - from),
            &mut validator,
            |frames, commit| {
                f.write_all(frames).map_err(|e| io_err(shadow, e))?;
                size += frames.len() as u64;
                if commit {
                    committed = size;
                }
                Ok(())
            },
        )?;
        if committed < size {
            f.set_len(committed).map_err(|e| io_err(shadow, e))?;
        }
        f.sync_data().map_err(|e| io_err(shadow, e))?;
        Ok(committed)
    }

    /// Trim the shadow file to its last commit frame (after a crash mid-append).
    fn trim_to_commit(&self, shadow: &Path, size: u64) -> Result<u64> {
        let fsz = self.frame_size();
        let mut f = File::open(shadow).map_err(|e| io_err(shadow, e))?;
        let mut end = WAL_HEADER_SIZE as u64;
        let mut off = WAL_HEADER_SIZE as u64;
        let mut fh = [0u8; 8];
        while off + fsz <= size {
            f.seek(SeekFrom::Start(off))
                .map_err(|e| io_err(shadow, e))?;
            f.read_exact(&mut fh).map_err(|e| io_err(shadow, e))?;
            off += fsz;
            if fh[4..8] != [0, 0, 0, 0] {
                end = off;
            }
        }
        drop(f);
        if end < size {
            tracing::warn!(path = %shadow.display(), from = size, to = end,
                "trimming shadow wal to last commit");
            let f = OpenOptions::new()
                .write(true)
                .open(shadow)
                .map_err(|e| io_err(shadow, e))?;
            f.set_len(end).map_err(|e| io_err(shadow, e))?;
            f.sync_all().map_err(|e| io_err(shadow, e))?;
        }
        Ok(end)
    }

    /// Start a shadow file for `index` with the real WAL's header, then copy its frames.
    fn start_shadow_index(&self, g: &Generation, index: u32) -> Result<u64> {
        let hdr = read_at(&self.wal_path, 0, WAL_HEADER_SIZE)?.ok_or_else(|| {
            Error::corrupt(
                self.wal_path.display().to_string(),
                "primary wal header: EOF",
            )
        })?;
        WalHeader::parse(&hdr)
            .map_err(|r| Error::corrupt(self.wal_path.display().to_string(), r))?;
        let dir = self.shadow_dir(g);
        fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
        let p = self.shadow_path(g, index);
        let mut f = File::create(&p).map_err(|e| io_err(&p, e))?;
        f.write_all(&hdr)
            .and_then(|_| f.sync_all())
            .map_err(|e| io_err(&p, e))?;
        drop(f);
        sync_dir(&dir);
        self.copy_to_shadow(&p, WAL_HEADER_SIZE as u64)
    }

    fn create_generation(&mut self, reason: &str) -> Result<ShadowPos> {
        let g = Generation::random();
        let size = self.start_shadow_index(&g, 0)?;
        self.write_generation(&g)?;
        self.clean_generations(&g);
        tracing::info!(db = %self.path.display(), generation = %g, reason, "sync: new generation");
        Ok(ShadowPos {
            generation: g,
            index: 0,
            size,
        })
    }

    fn clean_generations(&self, keep: &Generation) {
        let dir = self.generations_dir();
        let Ok(rd) = fs::read_dir(&dir) else { return };
        for e in rd.flatten() {
            if e.file_name().to_string_lossy() != keep.as_str() {
                if let Err(err) = fs::remove_dir_all(e.path()) {
                    tracing::warn!(path = %e.path().display(), error = %err, "clean: remove generation");
                }
            }
        }
    }

    /// Verify and copy new frames into the shadow WAL (handling a WAL restart and the
    /// generation rules). Returns (position, changed, real WAL size before copy).
    fn copy_frames(&mut self) -> Result<(ShadowPos, bool, u64)> {
        let info = self.verify()?;
        if let Some(reason) = info.reason {
            let pos = self.create_generation(reason)?;
            self.trimmed = true;
            return Ok((pos, true, info.wal_size));
        }
        let g = info
            .generation
            .clone()
            .ok_or_else(|| Error::InvalidArgument("no generation".into()))?;
        let shadow = self.shadow_path(&g, info.index);
        let mut size = info.shadow_size;
        if !self.trimmed {
            size = self.trim_to_commit(&shadow, size)?;
            self.trimmed = true;
        }
        let new_size = self.copy_to_shadow(&shadow, size)?;
        let mut changed = new_size != size;
        let mut pos = ShadowPos {
            generation: g.clone(),
            index: info.index,
            size: new_size,
        };
        if info.restart {
            let index = info.index + 1;
            let size = self.start_shadow_index(&g, index)?;
            tracing::debug!(db = %self.path.display(), index, "sync: new wal index");
            pos = ShadowPos {
                generation: g,
                index,
                size,
            };
            changed = true;
        }
        self.uncommitted = self.frame_after(pos.size);
        Ok((pos, changed, info.wal_size))
    }

    /// One `DB.Sync`: init if needed, ensure the WAL, move the read lock forward while
    /// copying frames, checkpoint per the policy, clean up. `replica_indexes` are the
    /// indexes (in the current generation) replicas still need, `None` for a replica without
    /// a position in it; `checkpoint_allowed` is false while a snapshot is in progress.
    pub(crate) fn sync(
        &mut self,
        replica_indexes: &[Option<(Generation, u32)>],
        checkpoint_allowed: bool,
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
        let res = self.guarded(|core| core.sync_inner(replica_indexes, checkpoint_allowed));
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
    fn detect_replaced(&mut self) -> Result<()> {
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
    fn guarded<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(self)));
        r.unwrap_or_else(|panic| {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            if let Some(c) = self.conns.as_ref() {
                if !c.writer.is_autocommit() {
                    let _ = c.writer.execute_batch("ROLLBACK");
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

    fn sync_inner(
        &mut self,
        replica_indexes: &[Option<(Generation, u32)>],
        checkpoint_allowed: bool,
    ) -> Result<SyncOutcome> {
        self.ensure_wal_exists()?;
        let (mut pos, mut changed, wal_size) = self.copy_moving_read_lock()?;

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
                let started = Instant::now();
                let r = self.checkpoint(mode);
                let m = crate::metrics::db(&self.path.to_string_lossy()).checkpoint(mode.as_str());
                m.count.inc();
                m.seconds.add_duration(started.elapsed());
                if r.is_err() {
                    m.error_count.inc();
                }
                pos = r?;
                changed = true;
            } else {
                tracing::debug!(db = %self.path.display(), "checkpoint skipped: snapshot in progress");
            }
        }
        self.clean_shadow(&pos, replica_indexes);
        Ok(SyncOutcome {
            changed,
            pos: Some(pos),
        })
    }

    /// Move the read lock forward while copying: a new read transaction first, copy every
    /// committed frame, then end the old one (see the module docs). Returns what
    /// [`Self::copy_frames`] returns.
    fn copy_moving_read_lock(&mut self) -> Result<(ShadowPos, bool, u64)> {
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

    /// Litestream's checkpoint, without the long read lock.
    ///
    /// Take the write lock (so the WAL is frozen), copy the rest, release our read locks,
    /// back-fill (PASSIVE), take a read lock again (mark 0 if everything was back-filled: it
    /// forbids any further back-fill), release the write lock, then write the
    /// `_litestream_seq` frame in a fresh transaction so that SQLite restarts the WAL (the
    /// writer's own read mark must be 0 for that), and copy the new index. Application
    /// writers wait for at most the copy and the back-fill (plus, for RESTART and TRUNCATE, at
    /// most `RESTART_WAIT` for readers still on older frames, so that the back-fill is
    /// complete and the WAL can restart). The write lock is taken with `poll_busy_handler`,
    /// which gets in between two transactions of an application that writes back to back.
    pub(crate) fn checkpoint(&mut self, mode: CheckpointMode) -> Result<ShadowPos> {
        let started = Instant::now();
        // Copy and back-fill what can be done without the write lock first: under a steady
        // load the WAL holds a whole sync interval of frames, and back-filling them all under
        // the write lock stalls the application for as long. Catch up with the application's
        // writes since the sync's copy (moving our read mark, which bounds the back-fill, so
        // no frame we have not copied is back-filled), then back-fill up to it. Under the
        // lock only the frames written since remain to copy and back-fill.
        self.copy_moving_read_lock()?;
        let pre = self
            .conns()?
            .writer
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
            });
        tracing::trace!(db = %self.path.display(), result = ?pre, "checkpoint: back-fill before the write lock");
        self.conns()?
            .writer
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(|e| self.sql_err(e))?;
        let locked = Instant::now();
        let inner = (|| -> Result<bool> {
            let (at, _, _) = self.copy_frames()?;
            self.end_read(0);
            self.end_read(1);
            let c = self.conns()?;
            // RESTART and TRUNCATE wait (a bounded time, holding the write lock so the WAL
            // cannot grow meanwhile) for the application's readers that still use older
            // frames to finish, so that the WAL is fully back-filled and the next writer can
            // restart it. PASSIVE takes what it can at once.
            let deadline = (mode != CheckpointMode::Passive)
                .then(|| Instant::now() + RESTART_WAIT.min(self.opts.busy_timeout / 4));
            let mut attempts = 0u32;
            let (busy, log, ckpt) = loop {
                attempts += 1;
                let (busy, log, ckpt): (i64, i64, i64) = c.readers[0]
                    .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                    })
                    .map_err(|e| self.sql_err(e))?;
                let done = busy == 0 && ckpt >= log;
                match deadline {
                    Some(d) if !done && Instant::now() < d => {
                        std::thread::sleep(RESTART_WAIT_POLL);
                    }
                    _ => break (busy, log, ckpt),
                }
            };
            tracing::debug!(db = %self.path.display(), mode = mode.as_str(), attempts,
                result = %format!("{busy},{log},{ckpt}"), "checkpoint");
            let complete = busy == 0 && ckpt >= log;
            if !complete {
                tracing::debug!(db = %self.path.display(), mode = mode.as_str(),
                    "checkpoint: wal not fully back-filled (readers), it is not restarted yet");
            }
            self.backoff.record(
                &at.generation,
                at.index,
                complete,
                self.opts.monitor_interval,
            );
            Ok(complete)
        })();
        // Never release the write lock without a read lock held (see module docs).
        let active = self.conns()?.active;
        let reread = self.begin_read(active);
        let end = self.conns()?.writer.execute_batch("ROLLBACK");
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
        let c = self.conns()?;
        if mode == CheckpointMode::Truncate {
            c.writer
                .execute_batch("PRAGMA journal_size_limit = 0")
                .map_err(|e| self.sql_err(e))?;
        }
        let seq = c.writer.execute(SEQ_UPSERT, []);
        if mode == CheckpointMode::Truncate {
            let _ = c.writer.execute_batch("PRAGMA journal_size_limit = -1");
        }
        seq.map_err(|e| self.sql_err(e))?;
        let (pos, _, _) = self.copy_frames()?;
        self.own_write = WalStamp::of(&self.wal_path);
        tracing::debug!(db = %self.path.display(), mode = mode.as_str(),
            elapsed = ?started.elapsed(), position = %pos.pos(), "checkpoint done");
        Ok(pos)
    }

    /// Pin a position for validation (see `validate.rs`): under the write lock copy every
    /// committed frame into the shadow WAL, then open a read transaction on a new connection,
    /// which sees exactly that position and keeps SQLite from back-filling or restarting the
    /// WAL past it until it is dropped. Application writers wait for at most the copy.
    pub(crate) fn validation_point(&mut self) -> Result<ValidationPoint> {
        self.conns()?
            .writer
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
        let end = self.conns()?.writer.execute_batch("ROLLBACK");
        let (pos, pin, shadow) = inner?;
        end.map_err(|e| self.sql_err(e))?;
        Ok(ValidationPoint {
            pos,
            pin,
            shadow,
            page_size: self.page_size,
        })
    }

    /// Local shadow-WAL retention: keep what the slowest replica needs (minus one extra
    /// older file, as Litestream), but never more than `max_shadow_wal_bytes` of old files.
    fn clean_shadow(&self, pos: &ShadowPos, replica_indexes: &[Option<(Generation, u32)>]) {
        let g = &pos.generation;
        let Ok(indexes) = self.shadow_indexes(g) else {
            return;
        };
        let mut min: Option<u32> = None;
        for r in replica_indexes {
            let i = match r {
                Some((rg, i)) if rg == g => *i,
                _ => 0,
            };
            min = Some(min.map_or(i, |m| m.min(i)));
        }
        let keep_from = match min {
            Some(m) if m > 0 => m - 1,
            _ => 0,
        };
        let mut budget = self.opts.max_shadow_wal_bytes;
        let mut over = false;
        for &i in indexes.iter().rev() {
            if i + 1 >= pos.index {
                continue; // the current index and the one before are always kept
            }
            let p = self.shadow_path(g, i);
            let sz = file_size(&p).ok().flatten().unwrap_or(0);
            if !over && sz <= budget {
                budget -= sz;
            } else {
                over = true;
            }
            if i < keep_from || over {
                if over && i >= keep_from {
                    tracing::warn!(db = %self.path.display(), index = i,
                        "shadow wal retention bound reached, removing wal still needed by a lagging replica");
                }
                if let Err(e) = fs::remove_file(&p) {
                    tracing::warn!(path = %p.display(), error = %e, "clean: remove shadow wal");
                }
            }
        }
    }

    /// The page size (0 before init).
    pub(crate) fn page_size(&self) -> u32 {
        self.page_size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A panic between `BEGIN IMMEDIATE` and `ROLLBACK` (here inside [`DbCore::guarded`], as
    /// every sync and checkpoint runs) must not leave the application's write lock held.
    #[test]
    fn a_panic_holding_the_write_lock_releases_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("app.db");
        let app = Connection::open(&db).expect("app");
        app.execute_batch("PRAGMA journal_mode=wal; CREATE TABLE t(x);")
            .expect("schema");
        let mut core = DbCore::new(db.clone(), DbOptions::default());
        core.sync(&[], true).expect("first sync");
        let r: Result<()> = core.guarded(|c| {
            c.conns()?
                .writer
                .execute_batch("BEGIN IMMEDIATE")
                .expect("write lock");
            panic!("bug while holding the write lock");
        });
        assert!(r.is_err(), "the panic becomes an error");
        app.execute_batch("BEGIN IMMEDIATE; INSERT INTO t VALUES (1); COMMIT")
            .expect("the application can write again at once");
        core.sync(&[], true).expect("the next sync starts afresh");
        core.close();
    }

    /// Sync errors that keep coming while a read lock is held (here: the writer left inside
    /// a transaction, so every checkpoint's `BEGIN IMMEDIATE` fails) re-open the database
    /// after a few attempts instead of failing forever.
    #[test]
    fn repeated_sync_errors_with_a_read_lock_held_reinitialise() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("app.db");
        let app = Connection::open(&db).expect("app");
        app.busy_timeout(Duration::from_secs(5))
            .expect("busy timeout");
        app.execute_batch("PRAGMA journal_mode=wal; CREATE TABLE t(x);")
            .expect("schema");
        let opts = DbOptions {
            min_checkpoint_page_count: 1,
            ..DbOptions::default()
        };
        let mut core = DbCore::new(db.clone(), opts);
        core.sync(&[], true).expect("first sync");
        core.conns()
            .expect("conns")
            .writer
            .execute_batch("BEGIN")
            .expect("a transaction left open");
        let (mut failures, mut recovered) = (0, false);
        for _ in 0..6 {
            match core.sync(&[], true) {
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
        core.sync(&[], true).expect("sync after re-init");
        core.close();
    }
}
