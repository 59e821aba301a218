//! [`GcsClient`]: the [`ObjectStore`] implementation over the GCS JSON API (and so a
//! [`litestream_core::ReplicaClient`], through core's blanket implementation, which holds the
//! v0.3 layout).

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use litestream_core::format_writer_timestamp;
use litestream_core::layout;
use litestream_core::listing::ListedObject;
use litestream_core::metrics::{record_operation, Operation};
use litestream_core::{ByteStream, DirListing, Error, ObjectStore, PutOutcome, Result};
use time::OffsetDateTime;

use crate::api::{Api, Failure};
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

    /// The full object name of `key` (relative to the root).
    fn full(&self, key: &str) -> String {
        layout::join(&[&self.root, key])
    }

    /// The name prefix that lists the directory `dir` (relative to the root; `""` is the
    /// root): `""` or ending in `/`.
    fn dir_prefix(&self, dir: &str) -> String {
        let joined = self.full(dir);
        match joined.trim_matches('/') {
            "" | "." => String::new(),
            d => format!("{d}/"),
        }
    }

    /// The objects and sub-directories directly under the name prefix `prefix`, named
    /// relative to it (one delimited listing, pages followed).
    async fn list_children(&self, prefix: &str) -> Result<DirListing> {
        record_operation(TYPE, Operation::List, 0);
        let listing = self
            .api
            .list(prefix, true)
            .await
            .map_err(|e| self.err(Operation::List, prefix, e))?;
        let objects = listing
            .objects
            .iter()
            .filter_map(|o| {
                let name = o.name.strip_prefix(prefix)?;
                (!name.is_empty() && !name.contains('/')).then(|| ListedObject {
                    name: name.to_string(),
                    size: o.size,
                    modified: o.created(),
                })
            })
            .collect();
        let dirs = listing
            .prefixes
            .iter()
            .filter_map(|p| p.strip_prefix(prefix))
            .map(|d| d.trim_end_matches('/'))
            .filter(|d| !d.is_empty() && !d.contains('/'))
            .map(str::to_string)
            .collect();
        Ok(DirListing { objects, dirs })
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
        let first = litestream_core::read_chunk(&mut data, self.part_size)
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
                    litestream_core::read_chunk(&mut data, self.part_size)
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

#[async_trait]
impl ObjectStore for GcsClient {
    fn store_kind(&self) -> &'static str {
        TYPE
    }

    async fn list_dir(&self, dir: &str) -> Result<DirListing> {
        self.list_children(&self.dir_prefix(dir)).await
    }

    async fn get(&self, key: &str) -> Result<ByteStream> {
        self.open(self.full(key)).await
    }

    async fn put(
        &self,
        key: &str,
        data: ByteStream,
        timestamp: Option<OffsetDateTime>,
    ) -> Result<PutOutcome> {
        // As Litestream v0.5's `gs` replica: the writer's timestamp in object metadata.
        let metadata: Vec<(&str, String)> = timestamp
            .map(|t| (TIMESTAMP_METADATA, format_writer_timestamp(t)))
            .into_iter()
            .collect();
        let size = self.upload(&self.full(key), data, &metadata).await?;
        Ok(PutOutcome {
            size,
            modified: None,
        })
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.delete_key(self.full(key)).await
    }

    async fn delete_batch(&self, keys: &[String]) -> Result<()> {
        self.delete_keys(keys.iter().map(|k| self.full(k)).collect())
            .await
    }

    /// One flat listing of everything under `dir` (no walk directory by directory).
    async fn delete_dir(&self, dir: &str) -> Result<()> {
        let prefix = self.dir_prefix(dir);
        record_operation(TYPE, Operation::List, 0);
        let listing = self
            .api
            .list(&prefix, false)
            .await
            .map_err(|e| self.err(Operation::List, &prefix, e))?;
        self.delete_keys(listing.objects.into_iter().map(|o| o.name).collect())
            .await
    }

    async fn head_timestamp(&self, key: &str) -> Result<Option<OffsetDateTime>> {
        let full = self.full(key);
        let resource = self
            .api
            .metadata(&full)
            .await
            .map_err(|e| self.err(Operation::Get, &full, e))?;
        let value = resource
            .metadata
            .as_ref()
            .and_then(|m| m.get(TIMESTAMP_METADATA));
        Ok(litestream_core::listing::parse_writer_timestamp(
            value.map(String::as_str),
        ))
    }
}
