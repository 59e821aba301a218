//! The `file` replica: a directory on a local (or mounted) file system, with the same layout
//! as every other backend. Writes go to a temporary name, are fsynced, then renamed, so a
//! reader never sees a partial object. Created-at times are file modification times.
#![deny(missing_docs)]

use std::io;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use litestream_core::layout;
use litestream_core::listing::{self, ListedObject};
use litestream_core::{
    ByteStream, Error, Generation, Pos, ReplicaClient, Result, SnapshotInfo, WalSegmentInfo,
};
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

    fn root_str(&self) -> String {
        self.root.to_string_lossy().into_owned()
    }

    fn io_err(path: &Path, e: io::Error) -> Error {
        if e.kind() == io::ErrorKind::NotFound {
            Error::not_found(path.display().to_string())
        } else {
            Error::io(path.display().to_string(), e)
        }
    }

    /// The directories (`dirs`) or the other entries of `dir`; a missing `dir` lists as empty.
    async fn read_dir_names(dir: &Path, dirs: bool) -> Result<Vec<ListedObject>> {
        let mut rd = match tokio::fs::read_dir(dir).await {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(dir.display().to_string(), e)),
        };
        let mut out = Vec::new();
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
            if meta.is_dir() != dirs {
                continue;
            }
            out.push(ListedObject {
                name: entry.file_name().to_string_lossy().into_owned(),
                size: meta.len(),
                modified: mtime(&meta),
            });
        }
        Ok(out)
    }

    async fn open(path: PathBuf) -> Result<ByteStream> {
        let f = tokio::fs::File::open(&path)
            .await
            .map_err(|e| Self::io_err(&path, e))?;
        Ok(Box::pin(tokio::io::BufReader::with_capacity(256 << 10, f)))
    }

    async fn write_atomic(
        path: &Path,
        mut data: ByteStream,
        mtime_at: Option<OffsetDateTime>,
    ) -> Result<(u64, OffsetDateTime)> {
        let dir = path.parent().unwrap_or(Path::new("."));
        create_dir_all_durable(dir).await?;
        let tmp = PathBuf::from(format!("{}.tmp", path.display()));
        let result = async {
            let mut f = tokio::fs::File::create(&tmp)
                .await
                .map_err(|e| Error::io(tmp.display().to_string(), e))?;
            let n = tokio::io::copy(&mut data, &mut f)
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

    async fn remove(path: &Path) -> Result<()> {
        match tokio::fs::remove_file(path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(path.display().to_string(), e)),
        }
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

fn mtime(meta: &std::fs::Metadata) -> OffsetDateTime {
    meta.modified()
        .map(OffsetDateTime::from)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

#[async_trait]
impl ReplicaClient for FileClient {
    async fn list_objects(&self, dir: &str) -> Result<Vec<ListedObject>> {
        listing::check_relative(dir, true)?;
        let mut out = Self::read_dir_names(&self.root.join(dir), false).await?;
        listing::sort_by_name(&mut out);
        Ok(out)
    }

    async fn open_object(&self, key: &str) -> Result<ByteStream> {
        listing::check_relative(key, false)?;
        Self::open(self.root.join(key)).await
    }

    async fn write_object(
        &self,
        key: &str,
        data: ByteStream,
        timestamp: OffsetDateTime,
    ) -> Result<u64> {
        litestream_core::replica_client::check_object_key(key)?;
        let path = self.root.join(key);
        let (size, _) = Self::write_atomic(&path, data, Some(timestamp)).await?;
        Ok(size)
    }

    fn supports_object_writes(&self) -> bool {
        true
    }

    async fn delete_objects(&self, keys: &[String]) -> Result<()> {
        for key in keys {
            litestream_core::replica_client::check_object_key(key)?;
            let path = self.root.join(key);
            match tokio::fs::remove_file(&path).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(path.display().to_string(), e)),
            }
        }
        Ok(())
    }

    async fn object_timestamp(&self, key: &str) -> Result<Option<OffsetDateTime>> {
        // v0.5 sets each file's mtime to its LTX header timestamp: the listed time is it.
        listing::check_relative(key, false)?;
        Ok(None)
    }

    fn kind(&self) -> &'static str {
        TYPE
    }

    async fn generations(&self) -> Result<Vec<Generation>> {
        let dir = PathBuf::from(layout::generations_dir(&self.root_str()));
        let listed = Self::read_dir_names(&dir, true).await?;
        Ok(listing::generations_from_names(
            listed.iter().map(|l| &l.name),
        ))
    }

    async fn snapshots(&self, generation: &Generation) -> Result<Vec<SnapshotInfo>> {
        let dir = PathBuf::from(layout::snapshots_dir(&self.root_str(), generation));
        let listed = Self::read_dir_names(&dir, false).await?;
        Ok(listing::snapshots_from_listing(generation, listed))
    }

    async fn wal_segments(&self, generation: &Generation) -> Result<Vec<WalSegmentInfo>> {
        let dir = PathBuf::from(layout::wal_dir(&self.root_str(), generation));
        let listed = Self::read_dir_names(&dir, false).await?;
        Ok(listing::wal_segments_from_listing(generation, listed))
    }

    async fn open_snapshot(&self, generation: &Generation, index: u32) -> Result<ByteStream> {
        Self::open(PathBuf::from(layout::snapshot_path(
            &self.root_str(),
            generation,
            index,
        )))
        .await
    }

    async fn open_wal_segment(&self, pos: &Pos) -> Result<ByteStream> {
        Self::open(PathBuf::from(layout::wal_segment_path(
            &self.root_str(),
            &pos.generation,
            pos.index,
            pos.offset,
        )))
        .await
    }

    async fn write_snapshot(
        &self,
        generation: &Generation,
        index: u32,
        data: ByteStream,
    ) -> Result<SnapshotInfo> {
        let path = PathBuf::from(layout::snapshot_path(&self.root_str(), generation, index));
        let (size, created_at) = Self::write_atomic(&path, data, None).await?;
        Ok(SnapshotInfo::new(generation, index, size, created_at))
    }

    async fn write_wal_segment(&self, pos: &Pos, data: ByteStream) -> Result<WalSegmentInfo> {
        layout::check_offset_fits_name(pos)?;
        let path = PathBuf::from(layout::wal_segment_path(
            &self.root_str(),
            &pos.generation,
            pos.index,
            pos.offset,
        ));
        let (size, created_at) = Self::write_atomic(&path, data, None).await?;
        Ok(WalSegmentInfo::at(pos, size, created_at))
    }

    async fn delete_snapshot(&self, generation: &Generation, index: u32) -> Result<()> {
        Self::remove(Path::new(&layout::snapshot_path(
            &self.root_str(),
            generation,
            index,
        )))
        .await
    }

    async fn delete_wal_segments(&self, positions: &[Pos]) -> Result<()> {
        for pos in positions {
            Self::remove(Path::new(&layout::wal_segment_path(
                &self.root_str(),
                &pos.generation,
                pos.index,
                pos.offset,
            )))
            .await?;
        }
        Ok(())
    }

    async fn delete_generation(&self, generation: &Generation) -> Result<()> {
        let dir = PathBuf::from(layout::generation_dir(&self.root_str(), generation));
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(dir.display().to_string(), e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every directory `sync_dir` fsynced (tests run in parallel: filter by your own root).
    pub(super) static SYNCED_DIRS: std::sync::Mutex<Vec<PathBuf>> =
        std::sync::Mutex::new(Vec::new());

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
        let synced: Vec<PathBuf> = SYNCED_DIRS
            .lock()
            .expect("lock")
            .iter()
            .filter(|p| p.starts_with(tmp.path()))
            .cloned()
            .collect();
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
        let synced: Vec<PathBuf> = SYNCED_DIRS
            .lock()
            .expect("lock")
            .iter()
            .filter(|p| p.starts_with(tmp.path()))
            .cloned()
            .collect();
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
