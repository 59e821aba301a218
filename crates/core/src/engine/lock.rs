//! One replicator per database: an exclusive advisory lock (`flock`) on `lock` in the meta
//! directory, held for as long as the replicator runs.
//!
//! Two processes replicating one database (a sidecar beside an application that embeds the
//! library, or two sidecars) take turns overwriting each other's shadow WAL and keep starting
//! new generations (Litestream issue #422). Litestream v0.3.13 ignores the extra file in the
//! meta directory, so a replica and its meta directory stay interchangeable with it.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::error::{Error, Result};

/// Name of the lock file inside the meta directory.
pub(crate) const LOCK_FILE: &str = "lock";

/// The held lock; released when dropped (or when the process ends, however it ends).
#[derive(Debug)]
pub(crate) struct MetaLock {
    _file: File,
}

impl MetaLock {
    /// Lock the meta directory `meta` of `db` (created if missing), or fail with
    /// [`Error::AlreadyReplicating`] naming the process that holds it.
    pub(crate) fn acquire(meta: &Path, db: &Path) -> Result<MetaLock> {
        std::fs::create_dir_all(meta).map_err(|e| Error::io(meta.display().to_string(), e))?;
        let path = meta.join(LOCK_FILE);
        let io_err = |e| Error::io(path.display().to_string(), e);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = match holder.trim() {
                    "" => "another process".to_string(),
                    h => h.to_string(),
                };
                return Err(Error::AlreadyReplicating {
                    db: db.display().to_string(),
                    holder,
                    lock: path.display().to_string(),
                });
            }
            Err(TryLockError::Error(e)) => return Err(io_err(e)),
        }
        // Who holds it, for the other process's error message.
        let me = format!("pid {}\n", std::process::id());
        file.set_len(0)
            .and_then(|_| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(me.as_bytes()))
            .map_err(io_err)?;
        Ok(MetaLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_fails_naming_the_holder_and_frees_on_drop() {
        let dir = tempfile::tempdir().expect("tempdir");
        let meta = dir.path().join(".app.db-litestream");
        let db = dir.path().join("app.db");
        let first = MetaLock::acquire(&meta, &db).expect("first lock");
        let err = MetaLock::acquire(&meta, &db).expect_err("second lock must fail");
        let text = err.to_string();
        assert!(text.contains(&db.display().to_string()), "{text}");
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        drop(first);
        MetaLock::acquire(&meta, &db).expect("lock after release");
    }
}
