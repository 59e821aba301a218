//! [`ObjectStore`]: what a storage backend implements (list, get, put with a timestamp,
//! delete), and the blanket [`ReplicaClient`] over it that holds the replica layout once.
//!
//! A backend knows how to talk to its storage and nothing about Litestream: it lists one
//! directory (objects with size and last-modified time, and sub-directories), streams an
//! object in and out, records a writer's timestamp beside an object, and deletes. Everything
//! Litestream-specific lives here, the same for every backend:
//!
//! * the v0.3 key layout ([`crate::layout`]) and listing rules ([`crate::listing`]): names
//!   that do not parse are ignored, results are sorted, a missing directory is empty;
//! * key checks: every key and directory handed to a store is relative to the replica root
//!   and has passed [`listing::check_relative`], so stores never see `..` or absolute paths;
//! * created-at times: a written snapshot or segment is stamped with the time the store
//!   reports for it ([`PutOutcome::modified`]), else the time the write finished;
//! * deletes: WAL segments and generations are deleted through
//!   [`ObjectStore::delete_batch`], which runs [`DELETE_CONCURRENCY`] single deletes at a
//!   time unless the store has a batch request (s3's DeleteObjects);
//! * metrics: every store counts each request it sends to its storage with
//!   [`crate::metrics::record_operation`], failed ones too (a listing that needs several
//!   pages is several LIST requests; a multipart upload one PUT per request); the file
//!   and memory stores make no requests and count nothing, as Litestream v0.3's file client.
//!
//! The Litestream v0.5 (LTX) layout is composed in [`crate::ltx::keys`] over the generic
//! object methods of [`ReplicaClient`], which map one to one onto the store.

use std::fmt::Debug;

use async_trait::async_trait;
use futures::StreamExt;
use time::OffsetDateTime;

use crate::error::Result;
use crate::layout;
use crate::listing::{self, ListedObject};
use crate::pos::{Generation, Pos};
use crate::replica_client::{check_object_key, ByteStream, ReplicaClient};
use crate::replica_client::{SnapshotInfo, WalSegmentInfo};

pub mod support;

/// Single-object deletes run at once by the default [`ObjectStore::delete_batch`].
pub const DELETE_CONCURRENCY: usize = 8;

/// One directory of a store: the objects directly in it and its sub-directories.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirListing {
    /// Objects directly in the directory, named relative to it, in any order.
    pub objects: Vec<ListedObject>,
    /// Names of the sub-directories (s3 and abs: common prefixes) directly in it, in any
    /// order.
    pub dirs: Vec<String>,
}

/// An object for [`ObjectStore::put`] to store: its bytes and the writer's timestamp.
pub struct Upload {
    /// The bytes, read until EOF (streaming).
    pub data: ByteStream,
    /// The writer's timestamp, if the writer has one (Litestream v0.5's LTX files).
    pub timestamp: Option<OffsetDateTime>,
}

impl Upload {
    /// The writer's timestamp as object metadata holds it ([`format_writer_timestamp`]).
    pub fn timestamp_metadata(&self) -> Option<String> {
        self.timestamp.map(format_writer_timestamp)
    }
}

impl Debug for Upload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upload")
            .field("timestamp", &self.timestamp)
            .finish_non_exhaustive()
    }
}

/// What a store reports about an object it has just written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PutOutcome {
    /// Bytes stored.
    pub size: u64,
    /// The object's last-modified time as the store will list it, if the store learnt it
    /// while writing (file and sftp: the mtime); `None` stands for "now".
    pub modified: Option<OffsetDateTime>,
}

/// Storage for one replica: objects under keys relative to the replica root.
///
/// # Contract
///
/// * Keys and directories are `/`-separated paths relative to the replica root, without a
///   leading or trailing `/`, as [`listing::check_relative`] accepts them (`""` is the root
///   as a directory). Core checks them before calling; the store maps them under its root.
/// * [`list_dir`](Self::list_dir) of a missing directory is empty, not an error.
/// * [`get`](Self::get) of a missing object fails with an error for which
///   [`Error::is_not_found`](crate::Error::is_not_found) is true and
///   [`is_retryable`](crate::Error::is_retryable) false.
/// * [`put`](Self::put) is atomic (a reader never sees part of an object under its real
///   name), replaces an existing object, and leaves nothing visible when `data` fails.
///   With a timestamp the store records it as Litestream v0.5 does: file and sftp set the
///   file's mtime to it, s3 stores it as the `litestream-timestamp` metadata and abs as
///   `litestreamtimestamp` (RFC 3339 with nanoseconds, [`format_writer_timestamp`]).
/// * Deletes are idempotent: deleting what does not exist succeeds.
/// * Bytes pass through untouched.
/// * Errors that may go away on a repeat report
///   [`Error::is_retryable`](crate::Error::is_retryable); stores need not retry.
/// * Every request sent to a storage service is counted with
///   [`crate::metrics::record_operation`], failed ones too.
///
/// Every `ObjectStore` is a [`ReplicaClient`] through the blanket implementation in this
/// module; the `litestream-conformance` crate checks both layers.
#[async_trait]
pub trait ObjectStore: Send + Sync + Debug {
    /// The replica type: `file`, `s3`, `abs`, `gcs`, `sftp`, `memory`
    /// (what [`ReplicaClient::kind`] returns).
    const KIND: &'static str;

    /// The objects and sub-directories directly in `dir`.
    async fn list_dir(&self, dir: &str) -> Result<DirListing>;

    /// Open the object at `key` for reading, streaming.
    async fn get(&self, key: &str) -> Result<ByteStream>;

    /// Store `upload` at `key`: its data read until EOF, streaming, with the writer's
    /// timestamp if given (see the contract above).
    async fn put(&self, key: &str, upload: Upload) -> Result<PutOutcome>;

    /// Delete the object at `key`; a missing object is no error.
    async fn delete(&self, key: &str) -> Result<()>;

    /// Delete every object of `keys`. By default [`DELETE_CONCURRENCY`] single deletes at a
    /// time; stores with a batch request override it.
    async fn delete_batch(&self, keys: &[String]) -> Result<()> {
        let mut keys = keys.iter();
        let mut running = futures::stream::FuturesUnordered::new();
        loop {
            while running.len() < DELETE_CONCURRENCY {
                let Some(key) = keys.next() else { break };
                running.push(self.delete(key));
            }
            match running.next().await {
                Some(result) => result?,
                None => return Ok(()),
            }
        }
    }

    /// Delete `dir` with everything below it; a missing `dir` is no error. By default every
    /// object found by walking the directories with [`list_dir`](Self::list_dir), through
    /// [`delete_batch`](Self::delete_batch); stores with real directories remove those too.
    async fn delete_dir(&self, dir: &str) -> Result<()> {
        let keys = walk(self, dir).await?;
        self.delete_batch(&keys).await
    }

    /// The writer's timestamp stored beside the object at `key` (s3, abs: object metadata,
    /// one HEAD request), or `None` when the listed last-modified time stands for it (file,
    /// sftp) or the object has none.
    async fn head_timestamp(&self, key: &str) -> Result<Option<OffsetDateTime>> {
        let _ = key;
        Ok(None)
    }
}

/// The keys of every object below `dir`, depth first.
async fn walk<S: ObjectStore + ?Sized>(store: &S, dir: &str) -> Result<Vec<String>> {
    let mut keys = Vec::new();
    let mut pending = vec![dir.to_string()];
    while let Some(d) = pending.pop() {
        let listed = store.list_dir(&d).await?;
        keys.extend(listed.objects.iter().map(|o| child(&d, &o.name)));
        pending.extend(listed.dirs.iter().map(|n| child(&d, n)));
    }
    Ok(keys)
}

fn child(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// Read up to `size` bytes of `data` (fewer only at its end): one part of an upload in parts.
/// Memory grows with what arrives, 1 MiB at a time, not with `size` up front.
pub async fn read_chunk(data: &mut ByteStream, size: usize) -> std::io::Result<bytes::Bytes> {
    use tokio::io::AsyncReadExt;
    let mut buf = bytes::BytesMut::with_capacity(size.min(1 << 20));
    while buf.len() < size {
        if buf.capacity() == buf.len() {
            buf.reserve((size - buf.len()).min(1 << 20));
        }
        let want = size - buf.len();
        let n = (&mut *data).take(want as u64).read_buf(&mut buf).await?;
        if n == 0 {
            break;
        }
    }
    Ok(buf.freeze())
}

/// A time as Go's `time.RFC3339Nano` formats it in UTC (`2006-01-02T15:04:05.999999999Z`,
/// trailing zeros of the fraction dropped): how Litestream v0.5 stores a writer's timestamp
/// in object metadata.
pub fn format_writer_timestamp(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    let mut out = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    let nanos = t.nanosecond();
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

/// Path of a v0.3 object relative to the replica root.
fn rel(path: String) -> String {
    path.trim_start_matches("./").to_string()
}

#[async_trait]
impl<S: ObjectStore> ReplicaClient for S {
    fn kind(&self) -> &'static str {
        S::KIND
    }

    async fn generations(&self) -> Result<Vec<Generation>> {
        let listed = self.list_dir(layout::GENERATIONS_DIR).await?;
        Ok(listing::generations_from_names(listed.dirs))
    }

    async fn snapshots(&self, generation: &Generation) -> Result<Vec<SnapshotInfo>> {
        let listed = self
            .list_dir(&rel(layout::snapshots_dir("", generation)))
            .await?;
        Ok(listing::snapshots_from_listing(generation, listed.objects))
    }

    async fn wal_segments(&self, generation: &Generation) -> Result<Vec<WalSegmentInfo>> {
        let listed = self.list_dir(&rel(layout::wal_dir("", generation))).await?;
        Ok(listing::wal_segments_from_listing(
            generation,
            listed.objects,
        ))
    }

    async fn open_snapshot(&self, generation: &Generation, index: u32) -> Result<ByteStream> {
        self.get(&rel(layout::snapshot_path("", generation, index)))
            .await
    }

    async fn open_wal_segment(&self, pos: &Pos) -> Result<ByteStream> {
        self.get(&segment_key(pos)).await
    }

    async fn write_snapshot(
        &self,
        generation: &Generation,
        index: u32,
        data: ByteStream,
    ) -> Result<SnapshotInfo> {
        let key = rel(layout::snapshot_path("", generation, index));
        let out = self.put(&key, v03_upload(data)).await?;
        Ok(SnapshotInfo::new(
            generation,
            index,
            out.size,
            created_at(&out),
        ))
    }

    async fn write_wal_segment(&self, pos: &Pos, data: ByteStream) -> Result<WalSegmentInfo> {
        layout::check_offset_fits_name(pos)?;
        let out = self.put(&segment_key(pos), v03_upload(data)).await?;
        Ok(WalSegmentInfo::at(pos, out.size, created_at(&out)))
    }

    async fn delete_snapshot(&self, generation: &Generation, index: u32) -> Result<()> {
        self.delete(&rel(layout::snapshot_path("", generation, index)))
            .await
    }

    async fn delete_wal_segments(&self, positions: &[Pos]) -> Result<()> {
        let keys: Vec<String> = positions.iter().map(segment_key).collect();
        self.delete_batch(&keys).await
    }

    async fn delete_generation(&self, generation: &Generation) -> Result<()> {
        self.delete_dir(&rel(layout::generation_dir("", generation)))
            .await
    }

    async fn list_objects(&self, dir: &str) -> Result<Vec<ListedObject>> {
        listing::check_relative(dir, true)?;
        let mut objects = self.list_dir(dir).await?.objects;
        objects.retain(|o| !o.name.is_empty() && !o.name.contains('/'));
        listing::sort_by_name(&mut objects);
        Ok(objects)
    }

    async fn list_subdirs(&self, dir: &str) -> Result<Option<Vec<String>>> {
        listing::check_relative(dir, true)?;
        let mut dirs = self.list_dir(dir).await?.dirs;
        dirs.sort();
        Ok(Some(dirs))
    }

    async fn open_object(&self, key: &str) -> Result<ByteStream> {
        listing::check_relative(key, false)?;
        self.get(key).await
    }

    async fn write_object(
        &self,
        key: &str,
        data: ByteStream,
        timestamp: OffsetDateTime,
    ) -> Result<u64> {
        check_object_key(key)?;
        let upload = Upload {
            data,
            timestamp: Some(timestamp),
        };
        Ok(self.put(key, upload).await?.size)
    }

    fn supports_object_writes(&self) -> bool {
        true
    }

    async fn delete_objects(&self, keys: &[String]) -> Result<()> {
        for key in keys {
            check_object_key(key)?;
        }
        self.delete_batch(keys).await
    }

    async fn object_timestamp(&self, key: &str) -> Result<Option<OffsetDateTime>> {
        listing::check_relative(key, false)?;
        self.head_timestamp(key).await
    }
}

fn segment_key(pos: &Pos) -> String {
    rel(layout::wal_segment_path(
        "",
        &pos.generation,
        pos.index,
        pos.offset,
    ))
}

/// A v0.3 snapshot or WAL segment: no writer's timestamp.
fn v03_upload(data: ByteStream) -> Upload {
    Upload {
        data,
        timestamp: None,
    }
}

fn created_at(out: &PutOutcome) -> OffsetDateTime {
    out.modified.unwrap_or_else(OffsetDateTime::now_utc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writer_timestamps_format_like_go_rfc3339_nano() {
        let t = |nanos: i128| OffsetDateTime::from_unix_timestamp_nanos(nanos).expect("time");
        assert_eq!(
            format_writer_timestamp(t(1_796_518_923_123_456_789)),
            "2026-12-06T01:02:03.123456789Z"
        );
        assert_eq!(
            format_writer_timestamp(t(1_796_518_923_120_000_000)),
            "2026-12-06T01:02:03.12Z"
        );
        assert_eq!(
            format_writer_timestamp(t(1_796_518_923_000_000_000)),
            "2026-12-06T01:02:03Z"
        );
        let back = listing::parse_writer_timestamp(Some("2026-12-06T01:02:03.12Z"));
        assert_eq!(back, Some(t(1_796_518_923_120_000_000)));
    }

    #[test]
    fn v03_keys_are_relative_to_the_root() {
        let g = Generation::parse("f520e605ae791336").expect("generation");
        assert_eq!(
            segment_key(&Pos::new(g.clone(), 1, 0x10)),
            "generations/f520e605ae791336/wal/00000001_00000010.wal.lz4"
        );
        assert_eq!(
            rel(layout::generation_dir("", &g)),
            "generations/f520e605ae791336"
        );
        assert_eq!(child("", "a"), "a");
        assert_eq!(child("a/b", "c"), "a/b/c");
    }
}
