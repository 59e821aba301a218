//! [`AbsClient`]: the [`ReplicaClient`] implementation over `object_store`'s Azure client.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::{StreamExt, TryStreamExt};
use litestream_core::layout;
use litestream_core::listing::{self, ListedObject};
use litestream_core::metrics::{record_operation, Operation};
use litestream_core::{
    ByteStream, Error, Generation, Pos, ReplicaClient, Result, SnapshotInfo, WalSegmentInfo,
};
use object_store::path::Path;
use object_store::{
    Attribute, Attributes, GetOptions, ObjectMeta, ObjectStore, ObjectStoreExt,
    PutMultipartOptions, PutOptions, PutPayload, WriteMultipart,
};
use time::OffsetDateTime;
use tokio::io::AsyncReadExt;

use crate::builder::Credential;
use crate::error::ErrorContext;
use crate::TYPE;

/// Blocks uploaded concurrently per snapshot (memory bound: `(this + 1) * part size`).
const UPLOAD_CONCURRENCY: usize = 2;
/// Concurrent deletes when a generation is removed.
const DELETE_CONCURRENCY: usize = 8;
/// Blob metadata key under which Litestream v0.5 stores an LTX file's header timestamp
/// (RFC 3339 with nanoseconds; Azure metadata names cannot hold `-`).
const TIMESTAMP_METADATA: &str = "litestreamtimestamp";

/// A replica stored in an Azure Blob Storage container (or Azurite).
///
/// Cheap to clone; clones share the HTTP connection pool.
#[derive(Clone)]
pub struct AbsClient {
    store: Arc<dyn ObjectStore>,
    ctx: ErrorContext,
    root: String,
    credential: Credential,
    endpoint: Option<String>,
    part_size: usize,
}

impl std::fmt::Debug for AbsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AbsClient")
            .field("account", &self.ctx.account)
            .field("container", &self.ctx.container)
            .field("root", &self.root)
            .field("endpoint", &self.endpoint)
            .field("credential", &self.credential)
            .finish()
    }
}

impl AbsClient {
    pub(crate) fn new(
        store: Arc<dyn ObjectStore>,
        ctx: ErrorContext,
        root: String,
        credential: Credential,
        endpoint: Option<String>,
        part_size: usize,
    ) -> Self {
        AbsClient {
            store,
            ctx,
            root,
            credential,
            endpoint,
            part_size,
        }
    }

    /// Storage account name.
    pub fn account(&self) -> &str {
        &self.ctx.account
    }

    /// Container name.
    pub fn container(&self) -> &str {
        &self.ctx.container
    }

    /// Key prefix inside the container (cleaned, no leading `/`; empty for the root).
    pub fn root(&self) -> &str {
        &self.root
    }

    /// The credential type in use.
    pub fn credential(&self) -> &Credential {
        &self.credential
    }

    /// The configured endpoint, if any.
    pub fn endpoint(&self) -> Option<&str> {
        self.endpoint.as_deref()
    }

    /// The underlying `object_store` (for tests and tools).
    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        Arc::clone(&self.store)
    }

    fn err(&self, op: Operation, key: &str, e: object_store::Error) -> Error {
        self.ctx.convert(op, key, e)
    }

    /// Every blob directly under the directory `dir` (no delimiter, so paged internally).
    async fn list_dir(&self, dir: &str) -> Result<Vec<ListedObject>> {
        let prefix = Path::from(dir);
        record_operation(TYPE, Operation::List, 0);
        let mut stream = self.store.list(Some(&prefix));
        let mut out = Vec::new();
        let expect_parent = format!("{}/", prefix.as_ref());
        while let Some(item) = stream.next().await {
            let meta = item.map_err(|e| self.err(Operation::List, dir, e))?;
            let key = meta.location.as_ref();
            let Some(name) = key.strip_prefix(&expect_parent) else {
                continue;
            };
            if name.contains('/') {
                continue;
            }
            out.push(ListedObject {
                name: name.to_string(),
                size: meta.size,
                modified: to_time(&meta),
            });
        }
        Ok(out)
    }

    /// The blobs directly under the key prefix `prefix` (`""` or ending in `/`), one
    /// delimited listing (paged inside `object_store`), relative to it and sorted.
    async fn list_children(&self, prefix: &str) -> Result<Vec<ListedObject>> {
        let dir = prefix.trim_end_matches('/');
        record_operation(TYPE, Operation::List, 0);
        let res = self
            .store
            .list_with_delimiter(Some(&Path::from(dir)))
            .await
            .map_err(|e| self.err(Operation::List, dir, e))?;
        let objects = res.objects.iter().map(|meta| ListedObject {
            name: meta.location.to_string(),
            size: meta.size,
            modified: to_time(meta),
        });
        Ok(listing::direct_children(prefix, objects))
    }

    /// The `litestreamtimestamp` metadata of the blob `key` (one HEAD, not counted in the
    /// operation metrics: v0.5 reads it from its listing), `None` if it has none.
    async fn head_timestamp(&self, key: &str) -> Result<Option<OffsetDateTime>> {
        let opts = GetOptions {
            head: true,
            ..Default::default()
        };
        let res = self
            .store
            .get_opts(&Path::from(key), opts)
            .await
            .map_err(|e| self.err(Operation::Get, key, e))?;
        let value = res
            .attributes
            .get(&Attribute::Metadata(TIMESTAMP_METADATA.into()));
        Ok(listing::parse_writer_timestamp(value.map(|v| v.as_ref())))
    }

    async fn open(&self, key: String) -> Result<ByteStream> {
        let path = Path::from(key.as_str());
        let res = self
            .store
            .get(&path)
            .await
            .map_err(|e| self.err(Operation::Get, &key, e))?;
        record_operation(TYPE, Operation::Get, res.meta.size);
        let ctx = self.ctx.clone();
        let stream = res.into_stream().map_err(move |e| {
            let kind = match crate::error::classify(&e) {
                crate::error::Class::Other(true) => std::io::ErrorKind::ConnectionReset,
                _ => std::io::ErrorKind::Other,
            };
            std::io::Error::new(kind, ctx.convert(Operation::Get, &key, e))
        });
        Ok(Box::pin(tokio_util::io::StreamReader::new(stream)))
    }

    /// Upload `data` to `key`: one request when it fits in a part, else a block blob in parts
    /// with bounded memory. Returns the bytes written.
    async fn upload(&self, key: &str, mut data: ByteStream) -> Result<u64> {
        let path = Path::from(key);
        let mut attrs = Attributes::new();
        attrs.insert(Attribute::ContentType, "application/octet-stream".into());

        let first = read_chunk(&mut data, self.part_size)
            .await
            .map_err(|e| Error::io(format!("abs://{}/{key}", self.ctx.container), e))?;
        if first.len() < self.part_size {
            let n = first.len() as u64;
            let opts = PutOptions {
                attributes: attrs,
                ..Default::default()
            };
            self.store
                .put_opts(&path, PutPayload::from_bytes(first), opts)
                .await
                .map_err(|e| self.err(Operation::Put, key, e))?;
            record_operation(TYPE, Operation::Put, n);
            return Ok(n);
        }

        let opts = PutMultipartOptions {
            attributes: attrs,
            ..Default::default()
        };
        let upload = self
            .store
            .put_multipart_opts(&path, opts)
            .await
            .map_err(|e| self.err(Operation::Put, key, e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, self.part_size);
        let mut total = 0u64;
        let mut chunk = first;
        let result: Result<()> = async {
            loop {
                if chunk.is_empty() {
                    break;
                }
                total += chunk.len() as u64;
                record_operation(TYPE, Operation::Put, chunk.len() as u64);
                writer.put(chunk);
                writer
                    .wait_for_capacity(UPLOAD_CONCURRENCY)
                    .await
                    .map_err(|e| self.err(Operation::Put, key, e))?;
                chunk = read_chunk(&mut data, self.part_size)
                    .await
                    .map_err(|e| Error::io(format!("abs://{}/{key}", self.ctx.container), e))?;
            }
            Ok(())
        }
        .await;
        match result {
            Ok(()) => {
                writer
                    .finish()
                    .await
                    .map_err(|e| self.err(Operation::Put, key, e))?;
                Ok(total)
            }
            Err(e) => {
                // Uncommitted blocks are never visible and Azure discards them after a week.
                let _ = writer.abort().await;
                Err(e)
            }
        }
    }

    async fn delete_key(&self, key: String) -> Result<()> {
        record_operation(TYPE, Operation::Delete, 0);
        match self.store.delete(&Path::from(key.as_str())).await {
            Ok(()) => Ok(()),
            Err(e) => match self.err(Operation::Delete, &key, e) {
                e if e.is_not_found() => Ok(()),
                e => Err(e),
            },
        }
    }
}

/// Read up to `size` bytes (fewer only at EOF).
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

fn to_time(meta: &ObjectMeta) -> OffsetDateTime {
    let t = meta.last_modified;
    OffsetDateTime::from_unix_timestamp(t.timestamp())
        .map(|d| d + time::Duration::nanoseconds(i64::from(t.timestamp_subsec_nanos())))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

#[async_trait]
impl ReplicaClient for AbsClient {
    fn kind(&self) -> &'static str {
        TYPE
    }

    async fn generations(&self) -> Result<Vec<Generation>> {
        let dir = layout::generations_dir(&self.root);
        let prefix = Path::from(dir.as_str());
        record_operation(TYPE, Operation::List, 0);
        let res = self
            .store
            .list_with_delimiter(Some(&prefix))
            .await
            .map_err(|e| self.err(Operation::List, &dir, e))?;
        Ok(listing::generations_from_names(
            res.common_prefixes.iter().filter_map(|p| p.filename()),
        ))
    }

    async fn snapshots(&self, generation: &Generation) -> Result<Vec<SnapshotInfo>> {
        let dir = layout::snapshots_dir(&self.root, generation);
        let listed = self.list_dir(&dir).await?;
        Ok(listing::snapshots_from_listing(generation, listed))
    }

    async fn wal_segments(&self, generation: &Generation) -> Result<Vec<WalSegmentInfo>> {
        let dir = layout::wal_dir(&self.root, generation);
        let listed = self.list_dir(&dir).await?;
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
        let size = self.upload(&key, data).await?;
        Ok(SnapshotInfo::new(generation, index, size, started))
    }

    async fn write_wal_segment(&self, pos: &Pos, data: ByteStream) -> Result<WalSegmentInfo> {
        layout::check_offset_fits_name(pos)?;
        let started = OffsetDateTime::now_utc();
        let key = layout::wal_segment_path(&self.root, &pos.generation, pos.index, pos.offset);
        let size = self.upload(&key, data).await?;
        Ok(WalSegmentInfo::at(pos, size, started))
    }

    async fn delete_snapshot(&self, generation: &Generation, index: u32) -> Result<()> {
        self.delete_key(layout::snapshot_path(&self.root, generation, index))
            .await
    }

    async fn delete_wal_segments(&self, positions: &[Pos]) -> Result<()> {
        let keys: Vec<String> = positions
            .iter()
            .map(|p| layout::wal_segment_path(&self.root, &p.generation, p.index, p.offset))
            .collect();
        futures::stream::iter(keys.into_iter().map(|k| self.delete_key(k)))
            .buffer_unordered(DELETE_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    async fn list_objects(&self, dir: &str) -> Result<Vec<ListedObject>> {
        self.list_children(&listing::dir_prefix(&self.root, dir)?)
            .await
    }

    async fn open_object(&self, key: &str) -> Result<ByteStream> {
        self.open(listing::object_key(&self.root, key)?).await
    }

    async fn object_timestamp(&self, key: &str) -> Result<Option<OffsetDateTime>> {
        self.head_timestamp(&listing::object_key(&self.root, key)?)
            .await
    }

    async fn delete_generation(&self, generation: &Generation) -> Result<()> {
        let dir = layout::generation_dir(&self.root, generation);
        let prefix = Path::from(dir.as_str());
        record_operation(TYPE, Operation::List, 0);
        let keys: Vec<String> = self
            .store
            .list(Some(&prefix))
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .map_err(|e| self.err(Operation::List, &dir, e))?;
        futures::stream::iter(keys.into_iter().map(|k| self.delete_key(k)))
            .buffer_unordered(DELETE_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }
}
