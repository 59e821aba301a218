//! The engine's SQLite connections: opening them, the busy handler of the writer, and the
//! two readers whose read transactions hold the WAL (see the read-lock notes in `db`).

use super::*;

/// How often the engine's writer connection retries a busy write lock.
pub(super) const WRITE_LOCK_POLL: Duration = Duration::from_micros(100);

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
pub(super) unsafe extern "C" fn poll_busy_handler(arg: *mut c_void, count: c_int) -> c_int {
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

/// Shortest time between two [`DbCore::close_idle_conns`] that close anything.
const IDLE_CLOSE_GAP: Duration = Duration::from_secs(10);

impl DbCore {
    pub(super) fn open_conn(&self) -> Result<Connection> {
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

    /// The writer connection: `open_conn` plus the polling busy handler (see
    /// [`poll_busy_handler`]) and no automatic checkpoints.
    fn open_writer(&self) -> Result<Connection> {
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
        writer
            .execute_batch("PRAGMA wal_autocheckpoint = 0")
            .map_err(|e| self.sql_err(e))?;
        Ok(writer)
    }

    /// A reader connection (no automatic checkpoints).
    fn open_reader(&self) -> Result<Connection> {
        let r = self.open_conn()?;
        r.execute_batch("PRAGMA wal_autocheckpoint = 0")
            .map_err(|e| self.sql_err(e))?;
        Ok(r)
    }

    /// The writer connection, opened if it was closed (see [`Conns`]).
    pub(super) fn writer(&self) -> Result<&Connection> {
        let c = self.conns()?;
        if c.writer.get().is_none() {
            let _ = c.writer.set(self.open_writer()?);
        }
        c.writer
            .get()
            .ok_or_else(|| Error::InvalidArgument("writer connection not open".into()))
    }

    /// Reader connection `i`, opened if it was closed (see [`Conns`]).
    pub(super) fn reader(&self, i: usize) -> Result<&Connection> {
        let c = self.conns()?;
        if c.readers[i].get().is_none() {
            let _ = c.readers[i].set(self.open_reader()?);
        }
        c.readers[i]
            .get()
            .ok_or_else(|| Error::InvalidArgument("reader connection not open".into()))
    }

    /// Close the connections a sync of an idle database does not need: the writer (outside a
    /// transaction) and the reader not holding the read lock. The read lock stays held.
    ///
    /// At most once per [`IDLE_CLOSE_GAP`]: reopening a connection is itself a WAL event
    /// (SQLite running as root chowns the WAL on every open), which wakes the monitor for
    /// another sync that would close and reopen again.
    pub(super) fn close_idle_conns(&mut self) {
        if self
            .idle_closed_at
            .is_some_and(|t| t.elapsed() < IDLE_CLOSE_GAP)
        {
            return;
        }
        self.idle_closed_at = Some(Instant::now());
        if let Some(c) = self.conns.as_mut() {
            let mut idle = Vec::new();
            if c.writer.get().is_some_and(|w| w.is_autocommit()) {
                idle.extend(c.writer.take());
            }
            for i in 0..2 {
                if !c.held[i] {
                    idle.extend(c.readers[i].take());
                }
            }
            idle.iter().for_each(close_without_checkpoint);
        }
    }

    /// Open connections, force WAL mode, create Litestream's tables, take the read lock.
    pub(super) fn init(&mut self) -> Result<()> {
        let before = file_identity(&self.path).map_err(|e| io_err(&self.path, e))?;
        let writer = self.open_writer()?;
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
                "CREATE TABLE IF NOT EXISTS _litestream_seq (id INTEGER PRIMARY KEY, seq INTEGER);
                 CREATE TABLE IF NOT EXISTS _litestream_lock (id INTEGER);",
            )
            .map_err(|e| self.sql_err(e))?;
        let page_size: i64 = writer
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .map_err(|e| self.sql_err(e))?;
        self.page_size = u32::try_from(page_size)
            .map_err(|_| Error::corrupt(self.path.display().to_string(), "bad page size"))?;
        self.conns = Some(Conns {
            writer: OnceCell::from(writer),
            readers: Default::default(),
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

    pub(super) fn remove_tmp_files(&self, dir: &Path) {
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

    pub(super) fn conns(&self) -> Result<&Conns> {
        self.conns
            .as_ref()
            .ok_or_else(|| Error::InvalidArgument("database not initialised".into()))
    }

    pub(super) fn begin_read(&mut self, i: usize) -> Result<()> {
        if self.conns()?.held[i] {
            return Ok(());
        }
        let r = self.reader(i)?;
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

    pub(super) fn end_read(&mut self, i: usize) {
        if let Some(c) = self.conns.as_mut() {
            if c.held[i] {
                let r = c.readers[i].get().map(|r| r.execute_batch("ROLLBACK"));
                if let Some(Err(e)) = r {
                    tracing::debug!(error = %e, "rollback read tx");
                }
                c.held[i] = false;
            }
        }
    }

    pub(super) fn holds_read(&self) -> bool {
        self.conns.as_ref().is_some_and(|c| c.held[0] || c.held[1])
    }

    /// Drop connections (after an error that may have lost the read lock).
    pub(super) fn reset(&mut self) {
        if let Some(c) = self.conns.as_mut() {
            for i in 0..2 {
                if let Some(r) = c.readers[i].get().filter(|_| c.held[i]) {
                    let _ = r.execute_batch("ROLLBACK");
                }
            }
        }
        self.conns = None;
        self.continuity = false;
    }
}

/// Prepare `c` to be closed while the database stays in use: SQLite checkpoints the WAL when a
/// connection that can take an exclusive lock on the database closes, which would write to the
/// database (waking the monitor for another sync, and another close) every time an idle
/// database's spare connections are closed.
fn close_without_checkpoint(c: &Connection) {
    // SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE from sqlite3.h (SQLite 3.16+). Spelled out because
    // rusqlite's pre-generated bindings for a system SQLite (core without `bundled`) lack it;
    // an older SQLite answers SQLITE_ERROR and closes as before.
    const SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE: c_int = 1010;
    // SAFETY: the handle is valid for the lifetime of `c`; SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE
    // takes an int and a nullable int pointer.
    unsafe {
        rusqlite::ffi::sqlite3_db_config(
            c.handle(),
            SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
            1 as c_int,
            std::ptr::null_mut::<c_int>(),
        );
    }
}
