//! [`AbsClient`]: the Litestream [`ObjectStore`](litestream_core::ObjectStore) (so the
//! [`litestream_core::ReplicaClient`]) over `object_store`'s Azure client.

use std::sync::Arc;

use async_trait::async_trait;
use futures::TryStreamExt;
use litestream_core::listing::{self, ListedObject};
use litestream_core::metrics::{record_operation, Operation};
use litestream_core::support::{run_concurrently, BucketStore, Opaque};
use litestream_core::{ByteStream, DirListing, Error, Result, Upload, DELETE_CONCURRENCY};
use object_store::path::Path;
use object_store::{
    Attribute, Attributes, GetOptions, ObjectMeta, ObjectStore, ObjectStoreExt,
    PutMultipartOptions, PutOptions, PutPayload, WriteMultipart,
};
use time::OffsetDateTime;

use crate::builder::Credential;
use crate::error::ErrorContext;
use crate::TYPE;

/// Blocks uploaded concurrently per snapshot (memory bound: `(this + 1) * part size`).
const UPLOAD_CONCURRENCY: usize = 2;
/// Blob metadata key under which Litestream v0.5 stores an LTX file's header timestamp
/// (RFC 3339 with nanoseconds; Azure metadata names cannot hold `-`).
const TIMESTAMP_METADATA: &str = "litestreamtimestamp";

/// A replica stored in an Azure Blob Storage container (or Azurite).
///
/// Cheap to clone; clones share the HTTP connection pool.
#[derive(Clone, Debug)]
pub struct AbsClient {
    pub(crate) store: Opaque<Arc<dyn ObjectStore>>,
    pub(crate) ctx: ErrorContext,
    pub(crate) root: String,
    pub(crate) credential: Credential,
    pub(crate) endpoint: Option<String>,
    pub(crate) part_size: usize,
}

impl AbsClient {
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
        Arc::clone(&self.store.0)
    }

    fn err(&self, op: Operation, key: &str, e: object_store::Error) -> Error {
        self.ctx.convert(op, key, e)
    }

    /// Delete the blob `key`; a missing blob is no error.
    async fn delete_blob(&self, key: String) -> Result<()> {
        let res = self.store.delete(&Path::from(key.as_str())).await;
        record_operation(TYPE, Operation::Delete, 0);
        match res {
            Ok(()) => Ok(()),
            Err(e) => match self.err(Operation::Delete, &key, e) {
                e if e.is_not_found() => Ok(()),
                e => Err(e),
            },
        }
    }

    /// Upload to `key`: one request when it fits in a part, else a block blob in parts with
    /// bounded memory, with the writer's timestamp as `litestreamtimestamp` metadata.
    /// Returns the bytes written.
    async fn upload_blob(&self, key: &str, upload: Upload) -> Result<u64> {
        let path = Path::from(key);
        let mut attrs = Attributes::new();
        attrs.insert(Attribute::ContentType, "application/octet-stream".into());
        if let Some(t) = upload.timestamp_metadata() {
            attrs.insert(Attribute::Metadata(TIMESTAMP_METADATA.into()), t.into());
        }
        let mut data = upload.data;

        let first = litestream_core::read_chunk(&mut data, self.part_size)
            .await
            .map_err(|e| Error::io(format!("abs://{}/{key}", self.ctx.container), e))?;
        if first.len() < self.part_size {
            let n = first.len() as u64;
            let opts = PutOptions {
                attributes: attrs,
                ..Default::default()
            };
            let res = self
                .store
                .put_opts(&path, PutPayload::from_bytes(first), opts)
                .await;
            record_operation(TYPE, Operation::Put, n);
            res.map_err(|e| self.err(Operation::Put, key, e))?;
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
                chunk = litestream_core::read_chunk(&mut data, self.part_size)
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
}

fn to_time(meta: &ObjectMeta) -> OffsetDateTime {
    let t = meta.last_modified;
    OffsetDateTime::from_unix_timestamp(t.timestamp())
        .map(|d| d + time::Duration::nanoseconds(i64::from(t.timestamp_subsec_nanos())))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

#[async_trait]
impl BucketStore for AbsClient {
    const KIND: &'static str = TYPE;

    /// One delimited listing (paged inside `object_store`).
    async fn list_delimited(&self, prefix: &str) -> Result<DirListing> {
        let dir = prefix.trim_end_matches('/');
        let res = self.store.list_with_delimiter(Some(&Path::from(dir))).await;
        record_operation(TYPE, Operation::List, 0);
        let res = res.map_err(|e| self.err(Operation::List, dir, e))?;
        let objects = res.objects.iter().map(|meta| ListedObject {
            name: meta.location.to_string(),
            size: meta.size,
            modified: to_time(meta),
        });
        Ok(DirListing {
            objects: listing::direct_children(prefix, objects),
            dirs: res
                .common_prefixes
                .iter()
                .filter_map(|p| p.filename().map(str::to_string))
                .collect(),
        })
    }

    async fn list_keys(&self, prefix: &str) -> Result<Vec<String>> {
        let dir = prefix.trim_end_matches('/');
        let res: std::result::Result<Vec<ObjectMeta>, _> =
            self.store.list(Some(&Path::from(dir))).try_collect().await;
        record_operation(TYPE, Operation::List, 0);
        let metas = res.map_err(|e| self.err(Operation::List, dir, e))?;
        Ok(metas.into_iter().map(|m| m.location.to_string()).collect())
    }

    async fn open_key(&self, key: String) -> Result<ByteStream> {
        let path = Path::from(key.as_str());
        let res = self.store.get(&path).await;
        let size = res.as_ref().map(|r| r.meta.size).unwrap_or(0);
        record_operation(TYPE, Operation::Get, size);
        let res = res.map_err(|e| self.err(Operation::Get, &key, e))?;
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

    async fn upload(&self, key: &str, upload: Upload) -> Result<u64> {
        self.upload_blob(key, upload).await
    }

    async fn delete_keys(&self, keys: Vec<String>) -> Result<()> {
        run_concurrently(keys, DELETE_CONCURRENCY, |key| self.delete_blob(key)).await
    }

    /// The `litestreamtimestamp` metadata: one HEAD, not counted in the operation metrics
    /// (v0.5 reads it from its listing).
    async fn head_writer_timestamp(&self, key: &str) -> Result<Option<OffsetDateTime>> {
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

    fn root(&self) -> &str {
        &self.root
    }
}
