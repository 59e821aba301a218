//! The [`ReplicaClient`] trait: the replica as the engine, restore and the CLI use it.
//!
//! Storage backends implement the smaller [`ObjectStore`](crate::store::ObjectStore) and get
//! this trait from core's blanket implementation ([`crate::store`]), which holds the key
//! layout and the listing rules once. Wrappers ([`AgeClient`](crate::age::AgeClient), test
//! fault injectors) implement it directly over another client.

use std::fmt::Debug;
use std::pin::Pin;

use async_trait::async_trait;
use time::OffsetDateTime;
use tokio::io::AsyncRead;

use crate::error::{Error, Result};
use crate::listing::ListedObject;
use crate::pos::{Generation, Pos};

/// A stream of object bytes (LZ4 frames, passed through untouched).
pub type ByteStream = Pin<Box<dyn AsyncRead + Send + 'static>>;

/// A snapshot object as listed by a replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// Generation the snapshot belongs to.
    pub generation: Generation,
    /// WAL index the snapshot was taken at.
    pub index: u32,
    /// Stored (compressed) size in bytes.
    pub size: u64,
    /// Upload time as reported by the backend (file mtime, S3 `LastModified`, ...).
    pub created_at: OffsetDateTime,
}

impl SnapshotInfo {
    /// The snapshot of `generation` at `index`, `size` bytes stored, created at `created_at`.
    pub fn new(generation: &Generation, index: u32, size: u64, created_at: OffsetDateTime) -> Self {
        SnapshotInfo {
            generation: generation.clone(),
            index,
            size,
            created_at,
        }
    }
}

/// A WAL segment object as listed by a replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalSegmentInfo {
    /// Generation the segment belongs to.
    pub generation: Generation,
    /// WAL index.
    pub index: u32,
    /// Byte offset of the segment's first byte inside that index's WAL.
    pub offset: u64,
    /// Stored (compressed) size in bytes.
    pub size: u64,
    /// Upload time as reported by the backend.
    pub created_at: OffsetDateTime,
}

impl WalSegmentInfo {
    /// The segment of `generation` starting at (`index`, `offset`), `size` bytes stored,
    /// created at `created_at`.
    pub fn new(
        generation: &Generation,
        index: u32,
        offset: u64,
        size: u64,
        created_at: OffsetDateTime,
    ) -> Self {
        WalSegmentInfo {
            generation: generation.clone(),
            index,
            offset,
            size,
            created_at,
        }
    }

    /// The segment starting at `pos`, `size` bytes stored, created at `created_at`.
    pub fn at(pos: &Pos, size: u64, created_at: OffsetDateTime) -> Self {
        Self::new(&pos.generation, pos.index, pos.offset, size, created_at)
    }

    /// The segment's start position.
    pub fn pos(&self) -> Pos {
        Pos::new(self.generation.clone(), self.index, self.offset)
    }
}

/// Refuse an object key that could leave the replica root: empty, absolute, with an empty,
/// `.` or `..` component, or a backslash.
pub fn check_object_key(key: &str) -> Result<()> {
    let bad = key.is_empty()
        || key.contains('\\')
        || key
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..");
    if bad {
        return Err(Error::InvalidArgument(format!(
            "invalid object key {key:?}: must be a relative path without empty, . or .. parts"
        )));
    }
    Ok(())
}

/// Storage for one replica: generations of snapshots and WAL segments under a root.
///
/// Every [`ObjectStore`](crate::ObjectStore) is a `ReplicaClient` (a blanket implementation
/// beside that trait).
///
/// # Contract
///
/// * Keys are exactly those of [`crate::layout`]; entries whose names do not parse are ignored
///   by the listing methods.
/// * [`generations`](Self::generations) returns names sorted ascending;
///   [`snapshots`](Self::snapshots) sorted by index; [`wal_segments`](Self::wal_segments)
///   sorted by (index, offset). A missing generation or an empty root lists as empty, not
///   as an error.
/// * Opening a missing object fails with an error for which
///   [`Error::is_not_found`](crate::Error::is_not_found) is true.
/// * Writes are atomic: a reader never sees a partly written object under its real name.
///   Writing an existing key replaces it.
/// * Deletes are idempotent: deleting something that does not exist succeeds.
/// * A WAL segment whose offset does not fit its 8-digit name is refused with
///   [`Error::InvalidArgument`]
///   ([`layout::check_offset_fits_name`](crate::layout::check_offset_fits_name)).
/// * Bytes are passed through untouched: the client never compresses or inspects payloads.
/// * The generic object methods ([`list_objects`](Self::list_objects),
///   [`open_object`](Self::open_object), [`object_timestamp`](Self::object_timestamp)) see
///   every object, the v0.3 ones included, under its key relative to the root.
/// * Errors that may go away on a repeat (throttling, 5xx, dropped connections) report
///   [`Error::is_retryable`](crate::Error::is_retryable); the client itself need not retry.
///
/// The `litestream-conformance` crate checks the rules that can be seen through this trait
/// alone; every backend's tests run it.
#[async_trait]
pub trait ReplicaClient: Send + Sync + Debug {
    /// The replica type: `file`, `s3`, `abs`, `sftp`. Used in logs, metrics and URL-mode names.
    fn kind(&self) -> &'static str;

    /// Every generation under the root, sorted.
    async fn generations(&self) -> Result<Vec<Generation>>;

    /// Every snapshot of `generation`, sorted by index.
    async fn snapshots(&self, generation: &Generation) -> Result<Vec<SnapshotInfo>>;

    /// Every WAL segment of `generation`, sorted by (index, offset).
    async fn wal_segments(&self, generation: &Generation) -> Result<Vec<WalSegmentInfo>>;

    /// Open the snapshot of `generation` at `index` for reading.
    async fn open_snapshot(&self, generation: &Generation, index: u32) -> Result<ByteStream>;

    /// Open the WAL segment starting at `pos` for reading.
    async fn open_wal_segment(&self, pos: &Pos) -> Result<ByteStream>;

    /// Store a snapshot (an LZ4 frame read from `data` until EOF).
    async fn write_snapshot(
        &self,
        generation: &Generation,
        index: u32,
        data: ByteStream,
    ) -> Result<SnapshotInfo>;

    /// Store a WAL segment starting at `pos` (an LZ4 frame read from `data` until EOF).
    async fn write_wal_segment(&self, pos: &Pos, data: ByteStream) -> Result<WalSegmentInfo>;

    /// Delete the snapshot of `generation` at `index`.
    async fn delete_snapshot(&self, generation: &Generation, index: u32) -> Result<()>;

    /// Delete the WAL segments starting at each of `positions`.
    async fn delete_wal_segments(&self, positions: &[Pos]) -> Result<()>;

    /// Delete a whole generation with everything under it.
    async fn delete_generation(&self, generation: &Generation) -> Result<()>;

    /// Every object directly under `dir`, sorted by name; sub-directories (common prefixes)
    /// are not listed and a missing directory lists as empty.
    ///
    /// `dir` is a `/`-separated path relative to the replica root, without a leading or
    /// trailing `/` (`""` is the root itself). Each [`ListedObject::name`] is relative to
    /// `dir`. This is the generic object access the Litestream v0.5 (LTX) layout is built on:
    /// core composes the keys (`ltx/<level>/…`, or `<level %04x>/…` on s3), backends only
    /// list and read.
    ///
    /// A `dir` that is not such a path (see [`listing::check_relative`](crate::listing::check_relative))
    /// is refused with [`Error::InvalidArgument`].
    async fn list_objects(&self, dir: &str) -> Result<Vec<ListedObject>>;

    /// The sub-directories (common prefixes) directly under `dir` (a path as for
    /// [`list_objects`](Self::list_objects)), sorted by name; `None` when this client cannot
    /// list them (the default, for wrappers that do not forward it): callers then list what
    /// they need directly. One LIST on object stores: a restore uses it to skip the LTX levels
    /// and the v0.3 `generations/` tree that do not exist.
    async fn list_subdirs(&self, dir: &str) -> Result<Option<Vec<String>>> {
        let _ = dir;
        Ok(None)
    }

    /// Open the object at `key` (relative to the replica root, as for
    /// [`list_objects`](Self::list_objects)) for reading; a missing object fails with an error
    /// for which [`Error::is_not_found`](crate::Error::is_not_found) is true, a `key` that is
    /// not a relative path with [`Error::InvalidArgument`].
    async fn open_object(&self, key: &str) -> Result<ByteStream>;

    /// Store the object at `key` (relative to the replica root, as for
    /// [`list_objects`](Self::list_objects)) from `data` read until EOF, atomically, and
    /// record `timestamp` as Litestream v0.5 does (file and sftp: the file's mtime; s3: the
    /// `litestream-timestamp` metadata). Returns the bytes stored. Keys must be relative and
    /// must not contain `.` or `..` components.
    ///
    /// Implemented for every [`ObjectStore`](crate::store::ObjectStore); wrappers that do not
    /// override it refuse it.
    async fn write_object(
        &self,
        key: &str,
        data: ByteStream,
        timestamp: OffsetDateTime,
    ) -> Result<u64> {
        let _ = (data, timestamp);
        Err(Error::InvalidArgument(format!(
            "{} replica: writing {key:?} is not implemented",
            self.kind()
        )))
    }

    /// Whether [`write_object`](Self::write_object) and
    /// [`delete_objects`](Self::delete_objects) are implemented: an LTX (Litestream v0.5)
    /// replica can be written. False unless a backend says otherwise; wrappers that do not
    /// forward those methods stay false.
    fn supports_object_writes(&self) -> bool {
        false
    }

    /// Delete the objects at `keys` (relative to the replica root, as for
    /// [`open_object`](Self::open_object)); missing ones are no error. A key that is not a
    /// relative path is refused with [`Error::InvalidArgument`] before anything is deleted.
    ///
    /// Implemented for every [`ObjectStore`](crate::store::ObjectStore); wrappers that do not
    /// override it refuse it.
    async fn delete_objects(&self, keys: &[String]) -> Result<()> {
        Err(Error::InvalidArgument(format!(
            "{} replica: deleting {} objects is not implemented",
            self.kind(),
            keys.len()
        )))
    }

    /// The timestamp a writer stored with the object at `key` beside its data, if the backend
    /// keeps one apart from the listed last-modified time: Litestream v0.5's LTX header
    /// timestamp in the object metadata, `litestream-timestamp` on s3 and
    /// `litestreamtimestamp` on abs (one HEAD request each). `None` means the object has
    /// none and the listed time stands for it (file and sftp: always, as v0.5 sets their
    /// mtimes to the LTX header's timestamp; an object written without the metadata).
    /// A missing object may be a not-found error or `None`.
    async fn object_timestamp(&self, key: &str) -> Result<Option<OffsetDateTime>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_keys_must_stay_under_the_root() {
        for ok in ["ltx/0/a.ltx", "0009/x.ltx", "a"] {
            check_object_key(ok).unwrap();
        }
        for bad in ["", "/abs", "ltx/../x", "./x", "a//b", "a/", "a\\b"] {
            assert!(check_object_key(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn constructors_fill_every_field() {
        let g = Generation::parse("f520e605ae791336").expect("generation");
        let t = OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("time");
        let s = SnapshotInfo::new(&g, 3, 10, t);
        assert_eq!(
            (&s.generation, s.index, s.size, s.created_at),
            (&g, 3, 10, t)
        );
        let pos = Pos::new(g.clone(), 4, 4152);
        let w = WalSegmentInfo::at(&pos, 20, t);
        assert_eq!(w, WalSegmentInfo::new(&g, 4, 4152, 20, t));
        assert_eq!((w.pos(), w.size, w.created_at), (pos, 20, t));
    }
}
