//! The `file` replica: a directory on a local (or mounted) file system, an
//! [`ObjectStore`] (so a [`litestream_core::ReplicaClient`]) with the same layout as every
//! other backend. Writes go to a temporary name, are fsynced, then renamed, so a
//! reader never sees a partial object. Created-at times are file modification times.
#![deny(missing_docs)]

use std::io;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use litestream_core::listing::ListedObject;
use litestream_core::{ByteStream, DirListing, Error, ObjectStore, PutOutcome, Result, Upload};
use time::OffsetDateTime;
use tokio::io::AsyncWriteExt;

/// The replica type name.
pub const TYPE: &str = "file";

/// A replica stored in a local directory.
#[derive(Debug, Clone)]
pub struct FileClient {
    root: PathBuf,
}

impl FileClient {
    /// A client for the replica rooted at `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        FileClient { root: root.into() }
    }

    /// The replica root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn io_err(path: &Path, e: io::Error) -> Error {
        if e.kind() == io::ErrorKind::NotFound {
            Error::not_found(path.display().to_string())
        } else {
            Error::io(path.display().to_string(), e)
        }
    }

    /// The path of `key` (relative, checked by core) under the root.
    fn path(&self, key: &str) -> PathBuf {
        if key.is_empty() {
            self.root.clone()
        } else {
            self.root.join(key)
        }
    }

    /// The files and sub-directories of `dir`; a missing `dir` lists as empty.
    async fn read_dir(dir: &Path) -> Result<DirListing> {
        let mut rd = match tokio::fs::read_dir(dir).await {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(DirListing::default()),
            Err(e) => return Err(Error::io(dir.display().to_string(), e)),
        };
        let mut out = DirListing::default();
        loop {
            let entry = match rd.next_entry().await {
                Ok(Some(e)) => e,
                Ok(None) => break,
                Err(e) => return Err(Error::io(dir.display().to_string(), e)),
            };
            let meta = match entry.metadata().await {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(entry.path().display().to_string(), e)),
            };
            let name = entry.file_name().to_string_lossy().into_owned();
            if meta.is_dir() {
                out.dirs.push(name);
            } else {
                out.objects.push(ListedObject {
                    name,
                    size: meta.len(),
                    modified: mtime(&meta),
                });
            }
        }
        Ok(out)
    }

    /// Write `upload` to a temporary name beside `path`, set its mtime to the writer's
    /// timestamp if there is one, fsync, rename over `path`; the size and the mtime.
    async fn write_atomic(path: &Path, upload: Upload) -> Result<(u64, OffsetDateTime)> {
        let Upload {
            mut data,
            timestamp: mtime_at,
        } = upload;
        let dir = path.parent().unwrap_or(Path::new("."));
        create_dir_all_durable(dir).await?;
        let tmp = PathBuf::from(format!("{}.tmp", path.display()));
        let result = async {
            let mut f = tokio::fs::File::create(&tmp)
                .await
                .map_err(|e| Error::io(tmp.display().to_string(), e))?;
            let n = copy_large(&mut data, &mut f)
                .await
                .map_err(|e| Error::io(tmp.display().to_string(), e))?;
            f.flush()
                .await
                .map_err(|e| Error::io(tmp.display().to_string(), e))?;
            if let Some(t) = mtime_at {
                // Litestream v0.5 sets an LTX file's mtime to its header timestamp.
                let std_f = f.into_std().await;
                std_f
                    .set_modified(t.into())
                    .map_err(|e| Error::io(tmp.display().to_string(), e))?;
                f = tokio::fs::File::from_std(std_f);
            }
            f.sync_all()
                .await
                .map_err(|e| Error::io(tmp.display().to_string(), e))?;
            drop(f);
            tokio::fs::rename(&tmp, path)
                .await
                .map_err(|e| Error::io(path.display().to_string(), e))?;
            // The rename is durable only once the directory is.
            sync_dir(dir).await?;
            let meta = tokio::fs::metadata(path)
                .await
                .map_err(|e| Error::io(path.display().to_string(), e))?;
            Ok::<_, Error>((n, mtime(&meta)))
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result
    }
}

/// Bytes gathered from the stream per write to the file by [`copy_large`] (the size of the
/// engine's upload chunks; larger ones only add to peak memory: `tokio::fs::File` copies each
/// write into a buffer of its own).
const WRITE_CHUNK: usize = 256 << 10;

/// Copy `data` to `f` in writes of up to [`WRITE_CHUNK`] bytes. `tokio::io::copy` writes
/// 8 KiB at a time, and each write of a `tokio::fs::File` is a round trip to a blocking
/// thread: thousands of thread wake-ups per second under a steady replication load.
async fn copy_large(data: &mut ByteStream, f: &mut tokio::fs::File) -> io::Result<u64> {
    use tokio::io::AsyncReadExt;
    let mut buf: Vec<u8> = Vec::with_capacity(WRITE_CHUNK);
    let mut n = 0u64;
    loop {
        buf.clear();
        while buf.len() < WRITE_CHUNK {
            if data.read_buf(&mut buf).await? == 0 {
                break;
            }
        }
        if buf.is_empty() {
            return Ok(n);
        }
        f.write_all(&buf).await?;
        n += buf.len() as u64;
    }
}

/// fsync a directory (its entries: a renamed or created file or directory in it).
async fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(test)]
    if let Ok(mut v) = tests::SYNCED_DIRS.lock() {
        v.push(dir.to_path_buf());
    }
    let d = tokio::fs::File::open(dir)
        .await
        .map_err(|e| Error::io(dir.display().to_string(), e))?;
    d.sync_all()
        .await
        .map_err(|e| Error::io(dir.display().to_string(), e))
}

/// `create_dir_all`, then fsync the parent of every directory it created, so that a new
/// generation's directories survive a crash along with the objects written into them.
async fn create_dir_all_durable(dir: &Path) -> Result<()> {
    if tokio::fs::metadata(dir).await.is_ok_and(|m| m.is_dir()) {
        return Ok(());
    }
    let mut missing = Vec::new();
    let mut p = Some(dir);
    while let Some(d) = p {
        if tokio::fs::metadata(d).await.is_ok() {
            break;
        }
        missing.push(d);
        p = d.parent().filter(|x| !x.as_os_str().is_empty());
    }
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| Error::io(dir.display().to_string(), e))?;
    for d in missing.iter().rev() {
        if let Some(parent) = d.parent().filter(|x| !x.as_os_str().is_empty()) {
            sync_dir(parent).await?;
        }
    }
    Ok(())
}

/// The result of removing `path`, where a path that does not exist counts as removed.
fn removed(path: &Path, result: io::Result<()>) -> Result<()> {
    match result {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(path.display().to_string(), e)),
    }
}

fn mtime(meta: &std::fs::Metadata) -> OffsetDateTime {
    meta.modified()
        .map(OffsetDateTime::from)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

#[async_trait]
impl ObjectStore for FileClient {
    const KIND: &'static str = TYPE;

    async fn list_dir(&self, dir: &str) -> Result<DirListing> {
        Self::read_dir(&self.path(dir)).await
    }

    async fn get(&self, key: &str) -> Result<ByteStream> {
        let path = self.path(key);
        let f = tokio::fs::File::open(&path)
            .await
            .map_err(|e| Self::io_err(&path, e))?;
        Ok(Box::pin(tokio::io::BufReader::with_capacity(256 << 10, f)))
    }

    async fn put(&self, key: &str, upload: Upload) -> Result<PutOutcome> {
        let (size, modified) = Self::write_atomic(&self.path(key), upload).await?;
        Ok(PutOutcome {
            size,
            modified: Some(modified),
        })
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key);
        removed(&path, tokio::fs::remove_file(&path).await)
    }

    async fn delete_dir(&self, dir: &str) -> Result<()> {
        let path = self.path(dir);
        removed(&path, tokio::fs::remove_dir_all(&path).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use litestream_core::{Generation, Pos, ReplicaClient};

    /// Every directory `sync_dir` fsynced (tests run in parallel: filter by your own root).
    pub(super) static SYNCED_DIRS: std::sync::Mutex<Vec<PathBuf>> =
        std::sync::Mutex::new(Vec::new());

    /// The directories below `dir` that `sync_dir` fsynced, in order.
    fn synced_below(dir: &Path) -> Vec<PathBuf> {
        let synced = SYNCED_DIRS.lock().expect("lock");
        synced
            .iter()
            .filter(|p| p.starts_with(dir))
            .cloned()
            .collect()
    }

    fn bytes(b: &'static [u8]) -> ByteStream {
        Box::pin(b)
    }

    #[tokio::test]
    async fn new_directories_and_renamed_objects_are_made_durable() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("replica");
        let c = FileClient::new(&root);
        let g = Generation::parse("0123456789abcdef").expect("generation");
        c.write_wal_segment(&Pos::new(g.clone(), 0, 0), bytes(b"wal"))
            .await
            .expect("write");
        let gen_dir = root.join("generations").join(g.as_str());
        let synced = synced_below(tmp.path());
        for want in [
            tmp.path().to_path_buf(),
            root.clone(),
            root.join("generations"),
            gen_dir.clone(),
            gen_dir.join("wal"),
        ] {
            assert!(
                synced.contains(&want),
                "{} not fsynced: {synced:?}",
                want.display()
            );
        }
        // A second object in the same directory: only the rename is made durable.
        SYNCED_DIRS
            .lock()
            .expect("lock")
            .retain(|p| !p.starts_with(tmp.path()));
        c.write_snapshot(&g, 0, bytes(b"snap"))
            .await
            .expect("snapshot");
        c.write_wal_segment(&Pos::new(g.clone(), 0, 3), bytes(b"more"))
            .await
            .expect("write");
        let synced = synced_below(tmp.path());
        assert_eq!(
            synced,
            vec![
                gen_dir.clone(),
                gen_dir.join("snapshots"),
                gen_dir.join("wal")
            ]
        );
    }
}
