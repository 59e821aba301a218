//! [`GcsClient`]: the [`ReplicaClient`] implementation over the GCS JSON API.

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::{StreamExt, TryStreamExt};
use litestream_core::layout;
use litestream_core::listing::{self, ListedObject};
use litestream_core::metrics::{record_operation, Operation};
use litestream_core::{
    ByteStream, Error, Generation, Pos, ReplicaClient, Result, SnapshotInfo, WalSegmentInfo,
};
use time::OffsetDateTime;
use tokio::io::AsyncReadExt;

use crate::api::{Api, Failure, ObjectResource};
use crate::error::ErrorContext;
use crate::TYPE;

/// Concurrent deletes when a generation or a batch of segments is removed.
const DELETE_CONCURRENCY: usize = 4;
/// Object metadata key under which Litestream v0.5 stores an LTX file's header timestamp
/// (RFC 3339 with nanoseconds).
const TIMESTAMP_METADATA: &str = "litestream-timestamp";

/// A replica stored in a Google Cloud Storage bucket (or an emulator).
///
/// Cheap to clone; clones share the HTTP connection pool and the cached access token.
#[derive(Clone)]
pub struct GcsClient {
    api: Api,
    ctx: ErrorContext,
    root: String,
    endpoint: String,
    part_size: usize,
}

impl std::fmt::Debug for GcsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GcsClient")
            .field("bucket", &self.ctx.bucket)
            .field("root", &self.root)
            .field("endpoint", &self.endpoint)
            .field("part_size", &self.part_size)
            .finish()
    }
}

impl GcsClient {
    pub(crate) fn new(
        api: Api,
        ctx: ErrorContext,
        root: String,
        endpoint: String,
        part_size: usize,
    ) -> Self {
        GcsClient {
            api,
            ctx,
            root,
            endpoint,
            part_size,
        }
    }

    /// Bucket name.
    pub fn bucket(&self) -> &str {
        &self.ctx.bucket
    }

    /// Object name prefix inside the bucket (cleaned, no leading `/`; empty for the root).
    pub fn root(&self) -> &str {
        &self.root
    }

    /// The JSON API endpoint requests go to (no trailing `/`).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn err(&self, op: Operation, key: &str, f: Failure) -> Error {
        self.ctx.convert(op, key, f)
    }

    /// The objects directly under the name prefix `prefix` (`""` or ending in `/`), as full
    /// names, with their common prefixes.
    async fn list_level(&self, prefix: &str) -> Result<crate::api::Listing> {
        record_operation(TYPE, Operation::List, 0);
        self.api
            .list(prefix, true)
            .await
            .map_err(|e| self.err(Operation::List, prefix, e))
    }

    /// The objects directly under the directory `dir`, named relative to it.
    async fn list_dir(&self, dir: &str) -> Result<Vec<ListedObject>> {
        let prefix = format!("{}/", dir.trim_end_matches('/'));
        let listing = self.list_level(&prefix).await?;
        Ok(listing::direct_children(
            &prefix,
            listing.objects.iter().map(listed),
        ))
    }

    async fn open(&self, key: String) -> Result<ByteStream> {
        let resp = self
            .api
            .download(&key)
            .await
            .map_err(|e| self.err(Operation::Get, &key, e))?;
        record_operation(TYPE, Operation::Get, resp.content_length().unwrap_or(0));
        let what = self.ctx.object(&key);
        let stream = resp.bytes_stream().map_err(move |e| {
            let kind = if e.is_timeout() {
                std::io::ErrorKind::TimedOut
            } else {
                std::io::ErrorKind::ConnectionReset
            };
            std::io::Error::new(kind, format!("get {what}: {}", crate::api::one_line(&e)))
        });
        Ok(Box::pin(tokio_util::io::StreamReader::new(stream)))
    }

    /// Upload `data` to `key` with `metadata`: one request when it is smaller than a part,
    /// else a resumable upload in parts (one part in memory). Returns the bytes written.
    async fn upload(
        &self,
        key: &str,
        mut data: ByteStream,
        metadata: &[(&str, String)],
    ) -> Result<u64> {
        let read_err = |e| Error::io(self.ctx.object(key), e);
        let first = read_chunk(&mut data, self.part_size)
            .await
            .map_err(read_err)?;
        if first.len() < self.part_size {
            let n = first.len() as u64;
            self.api
                .upload_single(key, first, metadata)
                .await
                .map_err(|e| self.err(Operation::Put, key, e))?;
            record_operation(TYPE, Operation::Put, n);
            return Ok(n);
        }

        let session = self
            .api
            .resumable_start(key, metadata)
            .await
            .map_err(|e| self.err(Operation::Put, key, e))?;
        let result: Result<u64> = async {
            let mut offset = 0u64;
            let mut chunk = first;
            loop {
                // A full chunk may or may not be the last: read the next one first (two parts
                // in memory at most), so the last is sent with the total size.
                let next = if chunk.len() == self.part_size {
                    read_chunk(&mut data, self.part_size)
                        .await
                        .map_err(read_err)?
                } else {
                    Bytes::new()
                };
                let last = next.is_empty();
                let n = chunk.len() as u64;
                let total = last.then_some(offset + n);
                self.api
                    .resumable_put(&session, offset, &chunk, total)
                    .await
                    .map_err(|e| self.err(Operation::Put, key, e))?;
                record_operation(TYPE, Operation::Put, n);
                offset += n;
                if last {
                    return Ok(offset);
                }
                chunk = next;
            }
        }
        .await;
        if result.is_err() {
            // Nothing is visible until the last chunk: the object is either whole or absent.
            self.api.resumable_cancel(&session).await;
        }
        result
    }

    async fn delete_key(&self, key: String) -> Result<()> {
        record_operation(TYPE, Operation::Delete, 0);
        self.api
            .delete(&key)
            .await
            .map(|_| ())
            .map_err(|e| self.err(Operation::Delete, &key, e))
    }

    async fn delete_keys(&self, keys: Vec<String>) -> Result<()> {
        futures::stream::iter(keys.into_iter().map(|k| self.delete_key(k)))
            .buffer_unordered(DELETE_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }
}

fn listed(o: &ObjectResource) -> ListedObject {
    ListedObject {
        name: o.name.clone(),
        size: o.size,
        modified: o.created(),
    }
}

/// Read up to `size` bytes (less only at EOF).
async fn read_chunk(data: &mut ByteStream, size: usize) -> std::io::Result<Bytes> {
    let mut buf = BytesMut::with_capacity(size.min(1 << 20));
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

#[async_trait]
impl ReplicaClient for GcsClient {
    fn kind(&self) -> &'static str {
        TYPE
    }

    async fn generations(&self) -> Result<Vec<Generation>> {
        let dir = layout::generations_dir(&self.root);
        let listing = self.list_level(&format!("{dir}/")).await?;
        Ok(listing::generations_from_names(
            listing
                .prefixes
                .iter()
                .filter_map(|p| p.trim_end_matches('/').rsplit('/').next()),
        ))
    }

    async fn snapshots(&self, generation: &Generation) -> Result<Vec<SnapshotInfo>> {
        let listed = self
            .list_dir(&layout::snapshots_dir(&self.root, generation))
            .await?;
        Ok(listing::snapshots_from_listing(generation, listed))
    }

    async fn wal_segments(&self, generation: &Generation) -> Result<Vec<WalSegmentInfo>> {
        let listed = self
            .list_dir(&layout::wal_dir(&self.root, generation))
            .await?;
        Ok(listing::wal_segments_from_listing(generation, listed))
    }

    async fn open_snapshot(&self, generation: &Generation, index: u32) -> Result<ByteStream> {
        self.open(layout::snapshot_path(&self.root, generation, index))
            .await
    }

    async fn open_wal_segment(&self, pos: &Pos) -> Result<ByteStream> {
        self.open(layout::wal_segment_path(
            &self.root,
            &pos.generation,
            pos.index,
            pos.offset,
        ))
        .await
    }

    async fn write_snapshot(
        &self,
        generation: &Generation,
        index: u32,
        data: ByteStream,
    ) -> Result<SnapshotInfo> {
        let started = OffsetDateTime::now_utc();
        let key = layout::snapshot_path(&self.root, generation, index);
        let size = self.upload(&key, data, &[]).await?;
        Ok(SnapshotInfo::new(generation, index, size, started))
    }

    async fn write_wal_segment(&self, pos: &Pos, data: ByteStream) -> Result<WalSegmentInfo> {
        layout::check_offset_fits_name(pos)?;
        let started = OffsetDateTime::now_utc();
        let key = layout::wal_segment_path(&self.root, &pos.generation, pos.index, pos.offset);
        let size = self.upload(&key, data, &[]).await?;
        Ok(WalSegmentInfo::at(pos, size, started))
    }

    async fn delete_snapshot(&self, generation: &Generation, index: u32) -> Result<()> {
        self.delete_key(layout::snapshot_path(&self.root, generation, index))
            .await
    }

    async fn delete_wal_segments(&self, positions: &[Pos]) -> Result<()> {
        let keys = positions
            .iter()
            .map(|p| layout::wal_segment_path(&self.root, &p.generation, p.index, p.offset))
            .collect();
        self.delete_keys(keys).await
    }

    async fn delete_generation(&self, generation: &Generation) -> Result<()> {
        let prefix = format!("{}/", layout::generation_dir(&self.root, generation));
        record_operation(TYPE, Operation::List, 0);
        let listing = self
            .api
            .list(&prefix, false)
            .await
            .map_err(|e| self.err(Operation::List, &prefix, e))?;
        self.delete_keys(listing.objects.into_iter().map(|o| o.name).collect())
            .await
    }

    async fn list_objects(&self, dir: &str) -> Result<Vec<ListedObject>> {
        let prefix = listing::dir_prefix(&self.root, dir)?;
        let level = self.list_level(&prefix).await?;
        Ok(listing::direct_children(
            &prefix,
            level.objects.iter().map(listed),
        ))
    }

    async fn open_object(&self, key: &str) -> Result<ByteStream> {
        self.open(listing::object_key(&self.root, key)?).await
    }

    async fn write_object(
        &self,
        key: &str,
        data: ByteStream,
        timestamp: OffsetDateTime,
    ) -> Result<u64> {
        litestream_core::replica_client::check_object_key(key)?;
        let full = listing::object_key(&self.root, key)?;
        // RFC 3339 with the fraction's trailing zeros trimmed, as Go's RFC3339Nano.
        let stamp = timestamp
            .to_offset(time::UtcOffset::UTC)
            .format(&time::format_description::well_known::Rfc3339)
            .map_err(|e| Error::InvalidArgument(format!("timestamp of {key:?}: {e}")))?;
        self.upload(&full, data, &[(TIMESTAMP_METADATA, stamp)])
            .await
    }

    async fn object_timestamp(&self, key: &str) -> Result<Option<OffsetDateTime>> {
        let full = listing::object_key(&self.root, key)?;
        let resource = self
            .api
            .metadata(&full)
            .await
            .map_err(|e| self.err(Operation::Get, &full, e))?;
        let value = resource
            .metadata
            .as_ref()
            .and_then(|m| m.get(TIMESTAMP_METADATA));
        Ok(listing::parse_writer_timestamp(value.map(String::as_str)))
    }
}
