//! The format-neutral part of a restore: the temporary output file and its atomic publish,
//! and the readers every format uses (retrying reopen, read-ahead, exact reads).
//!
//! The publish is `tempfile`'s `persist_noclobber` on the temporary file, which is created here
//! beside the output (mode 0600, `create_new`, named after the output so that a leftover one is
//! recognisable) rather than by `tempfile`'s builder, and removed by [`TempGuard`] on any error.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::retry::RetryConfig;

/// Removes the temporary output unless disarmed.
pub(crate) struct TempGuard {
    path: PathBuf,
    pub(crate) armed: bool,
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Check that `output` does not exist, create its directory and a fresh temporary file
/// beside it (removed on drop unless the guard is disarmed).
pub(crate) fn prepare_output(output: &Path) -> Result<(PathBuf, PathBuf, OutputFile, TempGuard)> {
    let out_str = output.display().to_string();
    check_output_free(output)?;
    let dir = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    create_dir_synced(&dir)?;
    let tmp = PathBuf::from(format!("{}.{:08x}.tmp", out_str, rand::random::<u32>()));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| Error::io(tmp.display().to_string(), e))?;
    let file = OutputFile {
        file,
        path: tmp.display().to_string(),
    };
    let guard = TempGuard {
        path: tmp.clone(),
        armed: true,
    };
    Ok((dir, tmp, file, guard))
}

/// Refuse to restore to `output` if it exists, or if a `-wal` or `-shm` file is beside it:
/// SQLite would apply a stale WAL left by an older database to the restored one at its first
/// open. Such files are never removed here (they may hold the only copy of some data); the
/// error names them so that an operator can move them away.
pub fn check_output_free(output: &Path) -> Result<()> {
    if output.symlink_metadata().is_ok() {
        return Err(Error::InvalidArgument(format!(
            "cannot restore, output path already exists: {}",
            output.display()
        )));
    }
    for suffix in ["-wal", "-shm"] {
        let mut stale = output.as_os_str().to_owned();
        stale.push(suffix);
        let stale = PathBuf::from(stale);
        if stale.symlink_metadata().is_ok() {
            return Err(Error::InvalidArgument(format!(
                "cannot restore to {}: {} exists beside it (left by an older database), and \
                 SQLite would apply it to the restored database; move it away first",
                output.display(),
                stale.display()
            )));
        }
    }
    Ok(())
}

/// Create `dir` and its missing ancestors (mode 0700) and fsync each new directory's parent,
/// so that the path to the restored database survives a crash.
pub(super) fn create_dir_synced(dir: &Path) -> Result<()> {
    let mut missing = Vec::new();
    let mut at = Some(dir);
    while let Some(d) = at.filter(|d| !d.as_os_str().is_empty() && d.symlink_metadata().is_err()) {
        missing.push(d);
        at = d.parent();
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io(dir.display().to_string(), e))?;
    for d in missing.iter().rev() {
        let parent = d
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        sync_dir(parent)?;
    }
    Ok(())
}

/// fsync a directory (its entries), with an error naming it.
pub(super) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir.display().to_string(), e))
}

/// Move the finished temporary file to `output` without replacing anything created there
/// in the meantime: `tempfile`'s `persist_noclobber`, an atomic `renameat2(RENAME_NOREPLACE)`,
/// or a hard link and an unlink of the temporary name where the filesystem has no
/// `RENAME_NOREPLACE` (NFS). A filesystem with neither (some FUSE and SMB mounts) gets a plain
/// rename, as Litestream always does: `output` was checked free when the restore started.
/// The caller fsyncs the directory afterwards.
pub(crate) fn publish(tmp: &Path, output: &Path) -> Result<()> {
    let tmp = tempfile::TempPath::try_from_path(tmp)
        .map_err(|e| Error::io(tmp.display().to_string(), e))?;
    let err = match tmp.persist_noclobber(output) {
        Ok(()) => return Ok(()),
        Err(err) => err,
    };
    if err.error.kind() == io::ErrorKind::AlreadyExists {
        // Dropping `err` removes the temporary file.
        return Err(Error::InvalidArgument(format!(
            "cannot restore, output path already exists: {}",
            output.display()
        )));
    }
    tracing::debug!(error = %err.error, path = %output.display(),
        "no-clobber rename and hard link unsupported here, renaming");
    err.path
        .persist(output)
        .map_err(|e| Error::io(output.display().to_string(), e.error))
}

pub(crate) fn read_error(object: &str, e: io::Error) -> Error {
    if e.kind() == io::ErrorKind::InvalidData {
        return Error::corrupt(object, e.to_string());
    }
    match e.into_inner() {
        Some(inner) => match inner.downcast::<Error>() {
            Ok(core) => *core,
            Err(other) => Error::io(object, io::Error::other(other)),
        },
        None => Error::io(object, io::Error::other("read failed")),
    }
}

/// A reader that reopens its object after a failed read and skips what it already delivered.
pub(crate) struct ReopeningReader<F> {
    what: String,
    open: F,
    inner: Option<Box<dyn Read + Send>>,
    consumed: u64,
    attempt: u32,
    retry: RetryConfig,
}

impl<F: FnMut() -> Result<Box<dyn Read + Send>>> ReopeningReader<F> {
    pub(crate) fn new(what: String, retry: RetryConfig, open: F) -> Self {
        ReopeningReader {
            what,
            open,
            inner: None,
            consumed: 0,
            attempt: 1,
            retry,
        }
    }

    /// Start from `first`, the object already opened (reads resume through `open` after an
    /// error).
    pub(crate) fn opened(mut self, first: Box<dyn Read + Send>) -> Self {
        self.inner = Some(first);
        self
    }

    pub(super) fn backoff(&mut self, err: &dyn std::fmt::Display) -> bool {
        if self.attempt >= self.retry.max_attempts.max(1) {
            return false;
        }
        let delay = self.retry.backoff(self.attempt);
        tracing::warn!(what = %self.what, attempt = self.attempt, error = %err, ?delay, "retrying read");
        std::thread::sleep(delay);
        self.attempt += 1;
        true
    }
}

impl<F: FnMut() -> Result<Box<dyn Read + Send>>> Read for ReopeningReader<F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.inner.is_none() {
                match (self.open)() {
                    Ok(mut r) => {
                        let skipped = io::copy(&mut (&mut r).take(self.consumed), &mut io::sink());
                        match skipped {
                            Ok(n) if n == self.consumed => self.inner = Some(r),
                            Ok(_) => {
                                return Err(io::Error::new(
                                    io::ErrorKind::InvalidData,
                                    "object became shorter between attempts",
                                ))
                            }
                            Err(e) => {
                                if !self.backoff(&e) {
                                    return Err(e);
                                }
                            }
                        }
                    }
                    Err(e) => {
                        if !(e.is_retryable() && self.backoff(&e)) {
                            return Err(io::Error::other(e));
                        }
                    }
                }
                continue;
            }
            let Some(inner) = self.inner.as_mut() else {
                continue;
            };
            match inner.read(buf) {
                Ok(n) => {
                    self.consumed += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.inner = None;
                    if !self.backoff(&e) {
                        return Err(e);
                    }
                }
            }
        }
    }
}

/// Write `data`, the pages from the `start`-th page of a chunk starting at page `first`.
pub(super) fn write_at(
    file: &OutputFile,
    first: u32,
    start: usize,
    page_size: usize,
    data: &[u8],
) -> Result<()> {
    let at = (u64::from(first - 1) + start as u64) * page_size as u64;
    file.write_all_at(data, at)
}

/// The temporary output file, whose I/O errors name it (a full disk says where).
#[derive(Debug)]
pub(crate) struct OutputFile {
    file: File,
    pub(super) path: String,
}

impl OutputFile {
    pub(crate) fn write_all_at(&self, data: &[u8], at: u64) -> Result<()> {
        self.file
            .write_all_at(data, at)
            .map_err(|e| Error::io(self.path.clone(), e))
    }

    pub(crate) fn set_len(&self, size: u64) -> Result<()> {
        self.file
            .set_len(size)
            .map_err(|e| Error::io(self.path.clone(), e))
    }

    pub(crate) fn sync_all(&self) -> Result<()> {
        self.file
            .sync_all()
            .map_err(|e| Error::io(self.path.clone(), e))
    }

    pub(crate) fn len(&self) -> Result<u64> {
        self.file
            .metadata()
            .map(|m| m.len())
            .map_err(|e| Error::io(self.path.clone(), e))
    }
}

/// Size of the chunks a read-ahead thread hands over.
pub(super) const READ_AHEAD_CHUNK: usize = 1 << 20;

/// Run `f` over `source` read by a second thread, so that downloading and LZ4 decoding
/// (with its content checksum) overlap with frame validation and writing. Memory: two chunks
/// in flight plus the one being consumed.
pub(super) fn with_read_ahead<R: Read + Send, T>(
    source: R,
    f: impl FnOnce(&mut ChunkReader) -> T,
) -> T {
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<io::Result<Vec<u8>>>(2);
        scope.spawn(move || {
            let mut source = source;
            loop {
                let mut buf = vec![0u8; READ_AHEAD_CHUNK];
                match read_full(&mut source, &mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        buf.truncate(n);
                        if tx.send(Ok(buf)).is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        break;
                    }
                }
            }
        });
        let mut reader = ChunkReader {
            rx,
            chunk: Vec::new(),
            pos: 0,
        };
        let out = f(&mut reader);
        // Dropping the receiver stops the producer at its next chunk.
        drop(reader);
        out
    })
}

/// The consuming side of [`with_read_ahead`].
pub(super) struct ChunkReader {
    rx: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    chunk: Vec<u8>,
    pos: usize,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.chunk.len() {
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    self.chunk = chunk;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
        let n = (self.chunk.len() - self.pos).min(buf.len());
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Read until `buf` is full or EOF; returns the bytes read.
pub(crate) fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Fill `buf` from `r`; EOF first is [`Error::Corrupt`] for `name` with `why`.
pub(crate) fn read_exact_or_corrupt(
    r: &mut impl Read,
    buf: &mut [u8],
    name: &str,
    why: &str,
) -> Result<()> {
    let n = read_full(r, buf).map_err(|e| read_error(name, e))?;
    if n < buf.len() {
        return Err(Error::corrupt(name, why));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_moves_the_temporary_file_into_place() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("app.db");
        let (_, tmp, file, mut guard) = prepare_output(&out).unwrap();
        file.write_all_at(b"restored", 0).unwrap();
        publish(&tmp, &out).unwrap();
        guard.armed = false;
        assert_eq!(std::fs::read(&out).unwrap(), b"restored");
        assert!(!tmp.exists(), "the temporary name is gone");
    }

    #[test]
    fn publish_never_replaces_an_output_created_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("app.db");
        let (_, tmp, file, _guard) = prepare_output(&out).unwrap();
        file.write_all_at(b"restored", 0).unwrap();
        std::fs::write(&out, b"the application's").unwrap();
        let err = publish(&tmp, &out).unwrap_err().to_string();
        assert!(err.contains("output path already exists"), "{err}");
        assert_eq!(std::fs::read(&out).unwrap(), b"the application's");
        assert!(!tmp.exists(), "the temporary file is removed");
    }
}
