//! The database's life under a running replicator: which file the engine's connections hold
//! (a database deleted and recreated, or restored in place, is a new database), the committed
//! end of the WAL from the wal-index (so an uncommitted bulk import is not re-read on every
//! sync), and the back-off of checkpoints that could not restart the WAL.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::pos::Generation;
use crate::wal::WAL_HEADER_SIZE;

/// Device and inode of a file.
pub(crate) type FileId = (u64, u64);

/// Device and inode of `path`; `None` if there is no file there.
pub(crate) fn file_identity(path: &Path) -> io::Result<Option<FileId>> {
    match std::fs::metadata(path) {
        Ok(m) => Ok(Some((m.dev(), m.ino()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Size of the wal-index header (`WalIndexHdr`), stored twice at the start of the `-shm` file.
const WAL_INDEX_HDR: usize = 48;
const WAL_INDEX_VERSION: u32 = 3_007_000;

/// The end (byte offset) of the last committed frame of the WAL whose header is `wal_hdr`,
/// from the wal-index header in the `-shm` file (SQLite's documented `walformat`: two equal
/// copies of a 48-byte header holding `mxFrame`, the page size and the WAL salts).
///
/// `None` when that cannot be known for sure (no `-shm`, the copies differ because a writer is
/// updating them, another WAL's salts, another page size): the caller then scans the WAL.
pub(crate) fn shm_committed_end(
    shm: &std::fs::File,
    wal_hdr: &[u8],
    page_size: u32,
) -> Option<u64> {
    if wal_hdr.len() < WAL_HEADER_SIZE {
        return None;
    }
    let mut buf = [0u8; 2 * WAL_INDEX_HDR];
    std::os::unix::fs::FileExt::read_exact_at(shm, &mut buf, 0).ok()?;
    let (a, b) = buf.split_at(WAL_INDEX_HDR);
    if a != b {
        return None;
    }
    let u32_at = |i: usize| u32::from_ne_bytes([a[i], a[i + 1], a[i + 2], a[i + 3]]);
    let is_init = a[12];
    let sz = u16::from_ne_bytes([a[14], a[15]]);
    let sz_page = u32::from(sz & 0xff00) | (u32::from(sz & 1) << 16);
    if u32_at(0) != WAL_INDEX_VERSION || is_init != 1 || sz_page != page_size {
        return None;
    }
    // The salts are copied byte for byte from the WAL header (bytes 16..24).
    if a[32..40] != wal_hdr[16..24] {
        return None;
    }
    let mx_frame = u64::from(u32_at(16));
    let frame = 24 + u64::from(page_size);
    Some(WAL_HEADER_SIZE as u64 + mx_frame * frame)
}

/// Longest pause between two checkpoint attempts that could not restart the WAL.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Checkpoints that did not back-fill the whole WAL (a reader still uses it) cannot restart
/// it; trying again at once only holds the application's write lock for nothing. After such a
/// checkpoint the next one waits, twice as long each time (from the monitor interval up to
/// 30 s), until a checkpoint completes or the WAL index changes.
#[derive(Debug, Default)]
pub(crate) struct CheckpointBackoff {
    blocked: Option<Blocked>,
}

#[derive(Debug)]
struct Blocked {
    generation: Generation,
    index: u32,
    until: Instant,
    delay: Duration,
}

impl CheckpointBackoff {
    /// May a checkpoint run now on `generation`/`index`?
    pub(crate) fn allows(&self, generation: &Generation, index: u32) -> bool {
        match &self.blocked {
            Some(b) if b.generation == *generation && b.index == index => Instant::now() >= b.until,
            _ => true,
        }
    }

    /// Record a checkpoint's outcome: `complete` if it back-filled the whole WAL.
    pub(crate) fn record(
        &mut self,
        generation: &Generation,
        index: u32,
        complete: bool,
        base: Duration,
    ) {
        if complete {
            self.blocked = None;
            return;
        }
        let delay = match &self.blocked {
            Some(b) if b.generation == *generation && b.index == index => {
                (b.delay * 2).min(MAX_BACKOFF)
            }
            _ => base.clamp(Duration::from_millis(100), MAX_BACKOFF),
        };
        tracing::debug!(?delay, "checkpoint could not restart the wal, backing off");
        self.blocked = Some(Blocked {
            generation: generation.clone(),
            index,
            until: Instant::now() + delay,
            delay,
        });
    }
}

/// What the engine's own last WAL write left behind: a file-system event for a WAL that
/// still looks like this is the engine waking itself, not the application writing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WalStamp {
    id: FileId,
    len: u64,
    mtime: (i64, i64),
}

impl WalStamp {
    /// The WAL at `path` now (`None` if missing).
    pub(crate) fn of(path: &Path) -> Option<WalStamp> {
        let m = std::fs::metadata(path).ok()?;
        Some(WalStamp {
            id: (m.dev(), m.ino()),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shm_committed_end_follows_commits_not_uncommitted_frames() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("a.db");
        let c = rusqlite::Connection::open(&db).expect("open");
        c.execute_batch("PRAGMA journal_mode=wal; PRAGMA cache_size=2; CREATE TABLE t(v BLOB);")
            .expect("schema");
        let wal = dir.path().join("a.db-wal");
        let shm = dir.path().join("a.db-shm");
        let hdr = || std::fs::read(&wal).expect("wal")[..WAL_HEADER_SIZE].to_vec();
        let shm = std::fs::File::open(&shm).expect("shm");
        let end = shm_committed_end(&shm, &hdr(), 4096).expect("end");
        assert_eq!(end, std::fs::metadata(&wal).expect("wal").len());
        // An uncommitted transaction larger than the cache spills frames into the WAL.
        c.execute_batch("BEGIN").expect("begin");
        for _ in 0..20 {
            c.execute("INSERT INTO t VALUES (zeroblob(20000))", [])
                .expect("insert");
        }
        let len = std::fs::metadata(&wal).expect("wal").len();
        assert!(len > end, "spilled frames");
        assert_eq!(shm_committed_end(&shm, &hdr(), 4096), Some(end));
        c.execute_batch("COMMIT").expect("commit");
        let committed = shm_committed_end(&shm, &hdr(), 4096).expect("end");
        assert_eq!(committed, std::fs::metadata(&wal).expect("wal").len());
        assert_eq!(shm_committed_end(&shm, &hdr(), 1024), None, "page size");
        let mut other = hdr();
        other[16] ^= 1;
        assert_eq!(shm_committed_end(&shm, &other, 4096), None, "salts");
    }

    #[test]
    fn backoff_doubles_until_a_checkpoint_completes_or_the_index_changes() {
        let g = Generation::random();
        let mut b = CheckpointBackoff::default();
        assert!(b.allows(&g, 1));
        b.record(&g, 1, false, Duration::from_millis(100));
        assert!(!b.allows(&g, 1));
        assert!(b.allows(&g, 2), "a new index is not blocked");
        b.record(&g, 1, false, Duration::from_millis(100));
        assert_eq!(
            b.blocked.as_ref().map(|x| x.delay),
            Some(Duration::from_millis(200))
        );
        b.record(&g, 1, true, Duration::from_millis(100));
        assert!(b.allows(&g, 1));
    }
}
