//! [`GcsClient`]: the [`BucketStore`] (so the [`litestream_core::ObjectStore`] and the
//! [`litestream_core::ReplicaClient`], through core's blanket implementations) over the GCS
//! JSON API.

use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt;
use litestream_core::listing::ListedObject;
use litestream_core::metrics::{record_operation, Operation};
use litestream_core::support::{error_chain, run_concurrently, BucketStore, Opaque};
use litestream_core::{ByteStream, DirListing, Error, Result, Upload};
use time::OffsetDateTime;

use crate::api::{Api, Failure, Listing};
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
#[derive(Clone, Debug)]
pub struct GcsClient {
    pub(crate) api: Opaque<Api>,
    pub(crate) ctx: ErrorContext,
    pub(crate) root: String,
    pub(crate) endpoint: String,
    pub(crate) part_size: usize,
}

impl GcsClient {
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

    /// Everything under the name prefix `prefix`, pages followed; with `delimited`, objects
    /// in sub-directories are folded into `prefixes`. Counted as one LIST.
    async fn list(&self, prefix: &str, delimited: bool) -> Result<Listing> {
        record_operation(TYPE, Operation::List, 0);
        self.api
            .list(prefix, delimited)
            .await
            .map_err(|e| self.err(Operation::List, prefix, e))
    }

    /// Upload `data` to `key` with `metadata`: one request when it is smaller than a part,
    /// else a resumable upload in parts (one part in memory). Returns the bytes written.
    async fn upload_object(
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
}

#[async_trait]
impl BucketStore for GcsClient {
    const KIND: &'static str = TYPE;

    async fn list_delimited(&self, prefix: &str) -> Result<DirListing> {
        let listing = self.list(prefix, true).await?;
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

    async fn list_keys(&self, prefix: &str) -> Result<Vec<String>> {
        let listing = self.list(prefix, false).await?;
        Ok(listing.objects.into_iter().map(|o| o.name).collect())
    }

    async fn open_key(&self, key: String) -> Result<ByteStream> {
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
            std::io::Error::new(kind, format!("get {what}: {}", error_chain(&e)))
        });
        Ok(Box::pin(tokio_util::io::StreamReader::new(stream)))
    }

    /// As Litestream v0.5's `gs` replica: the writer's timestamp in object metadata.
    async fn upload(&self, key: &str, upload: Upload) -> Result<u64> {
        let metadata: Vec<(&str, String)> = upload
            .timestamp_metadata()
            .map(|t| (TIMESTAMP_METADATA, t))
            .into_iter()
            .collect();
        self.upload_object(key, upload.data, &metadata).await
    }

    async fn delete_keys(&self, keys: Vec<String>) -> Result<()> {
        run_concurrently(keys, DELETE_CONCURRENCY, |k| self.delete_key(k)).await
    }

    async fn head_writer_timestamp(&self, key: &str) -> Result<Option<OffsetDateTime>> {
        let resource = self
            .api
            .metadata(key)
            .await
            .map_err(|e| self.err(Operation::Get, key, e))?;
        let value = resource
            .metadata
            .as_ref()
            .and_then(|m| m.get(TIMESTAMP_METADATA));
        Ok(litestream_core::listing::parse_writer_timestamp(
            value.map(String::as_str),
        ))
    }

    fn root(&self) -> &str {
        &self.root
    }
}
