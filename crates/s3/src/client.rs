//! [`S3Client`]: the [`ObjectStore`] (so the [`litestream_core::ReplicaClient`]) over one
//! bucket and key prefix.
//!
//! Requests: listings are ListObjectsV2 (one LIST per page), reads one GetObject, writes
//! one PutObject when the payload fits one part and otherwise CreateMultipartUpload +
//! UploadPart per part + CompleteMultipartUpload (each counted as a PUT), deletes
//! DeleteObjects in batches of 1000. Nothing lists during plain writes.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use async_trait::async_trait;
use aws_sdk_s3::primitives::ByteStream as SdkStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use litestream_core::listing::{self, ListedObject};
use litestream_core::metrics::{record_operation, Operation};
use litestream_core::support::{BucketStore, Opaque};
use litestream_core::{ByteStream, DirListing, Error, Result, Upload};
use time::OffsetDateTime;
use tokio::io::{AsyncBufRead, AsyncRead, AsyncReadExt, ReadBuf};

use crate::error::Target;
use crate::TYPE;

/// Largest number of keys in one DeleteObjects request.
const DELETE_BATCH: usize = 1000;

/// Object metadata key under which Litestream v0.5 stores an LTX file's header timestamp
/// (RFC 3339 with nanoseconds); the SDK reports it without the `x-amz-meta-` prefix.
const TIMESTAMP_METADATA: &str = "litestream-timestamp";

/// A replica stored under a key prefix of an S3 (or S3-compatible) bucket.
///
/// Build one with [`crate::S3Builder`] or [`S3Client::from_replica_config`].
#[derive(Clone, Debug)]
pub struct S3Client {
    pub(crate) client: Opaque<aws_sdk_s3::Client>,
    pub(crate) target: Target,
    pub(crate) root: String,
    pub(crate) region: String,
    pub(crate) part_size: usize,
}

fn to_offset(dt: Option<&aws_sdk_s3::primitives::DateTime>) -> OffsetDateTime {
    dt.and_then(|d| {
        let nanos = i128::from(d.secs()) * 1_000_000_000 + i128::from(d.subsec_nanos());
        OffsetDateTime::from_unix_timestamp_nanos(nanos).ok()
    })
    .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Read from `data` until `buf` holds `limit` bytes or EOF; returns true at EOF.
async fn fill(data: &mut ByteStream, buf: &mut Vec<u8>, limit: usize) -> std::io::Result<bool> {
    while buf.len() < limit {
        let want = limit - buf.len();
        let n = (&mut *data).take(want as u64).read_to_end(buf).await?;
        if n == 0 {
            return Ok(true);
        }
    }
    Ok(false)
}

/// A GetObject body whose read errors are reported as transport errors (connection reset,
/// timed out), naming the object, so callers see them as retryable: a body cut off mid-way
/// is worth reading again.
struct BodyReader {
    inner: Pin<Box<dyn AsyncBufRead + Send>>,
    what: String,
}

impl AsyncRead for BodyReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.inner.as_mut().poll_read(cx, buf) {
            Poll::Ready(Err(e)) => {
                let kind = match e.kind() {
                    io::ErrorKind::TimedOut => io::ErrorKind::TimedOut,
                    _ => io::ErrorKind::ConnectionReset,
                };
                let msg = format!("reading {}: {e}", self.what);
                Poll::Ready(Err(io::Error::new(kind, msg)))
            }
            other => other,
        }
    }
}

impl S3Client {
    /// Build a client from a resolved replica config (see [`crate::S3Builder`] for the keys).
    pub async fn from_replica_config(cfg: &litestream_core::config::ReplicaConfig) -> Result<Self> {
        crate::S3Builder::from_replica_config(cfg)?.build().await
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.target.bucket
    }

    /// The key prefix under which `generations/` lives.
    pub fn path(&self) -> &str {
        &self.root
    }

    /// The region requests are signed for (given, defaulted or looked up).
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The custom endpoint, if any.
    pub fn endpoint(&self) -> Option<&str> {
        self.target.endpoint.as_deref()
    }

    /// The underlying SDK client, for operations the trait does not cover.
    pub fn sdk_client(&self) -> &aws_sdk_s3::Client {
        &self.client
    }

    /// List under the key `prefix` (`""` for the bucket root; paginated, one LIST per
    /// page): with `delimited`, the objects directly under it and its sub-"directories"
    /// (common prefixes); without, every object below it. Names are relative to `prefix`.
    async fn list_prefix(&self, prefix: &str, delimited: bool) -> Result<DirListing> {
        let mut out = DirListing::default();
        let mut token: Option<String> = None;
        let mut seen = std::collections::HashSet::new();
        loop {
            let mut req = self
                .client
                .list_objects_v2()
                .bucket(&self.target.bucket)
                .prefix(prefix);
            if delimited {
                req = req.delimiter("/");
            }
            if let Some(t) = &token {
                req = req.continuation_token(t);
            }
            let page = req.send().await;
            record_operation(TYPE, Operation::List, 0);
            let page = page.map_err(|e| self.target.sdk("list", prefix, e))?;
            for p in page.common_prefixes() {
                if let Some(name) = p
                    .prefix()
                    .and_then(|p| p.strip_prefix(prefix))
                    .map(|p| p.trim_end_matches('/'))
                    .filter(|n| !n.is_empty())
                {
                    out.dirs.push(name.to_string());
                }
            }
            for o in page.contents() {
                let Some(key) = o.key() else { continue };
                let Some(name) = key.strip_prefix(prefix).filter(|n| !n.is_empty()) else {
                    continue;
                };
                out.objects.push(ListedObject {
                    name: name.to_string(),
                    size: o.size().unwrap_or(0).max(0) as u64,
                    modified: to_offset(o.last_modified()),
                });
            }
            match page.next_continuation_token() {
                Some(t) if page.is_truncated() == Some(true) => {
                    // A server that hands out a token it gave before would page forever.
                    if !seen.insert(t.to_string()) {
                        return Err(self.target.backend(
                            "list",
                            prefix,
                            format!(
                                "the server repeated continuation token {t:?}; listing stopped"
                            ),
                            false,
                        ));
                    }
                    token = Some(t.to_string());
                }
                _ => break,
            }
        }
        Ok(out)
    }

    /// Upload to `key`: one PutObject if it fits one part, else multipart, with the writer's
    /// timestamp as `litestream-timestamp` metadata. Returns the bytes stored.
    async fn upload_object(&self, key: &str, upload: Upload) -> Result<u64> {
        let metadata = upload
            .timestamp_metadata()
            .map(|t| std::collections::HashMap::from([(TIMESTAMP_METADATA.to_string(), t)]));
        let mut data = upload.data;
        let io_err = |e: std::io::Error| Error::io(format!("s3://{}/{key}", self.target.bucket), e);
        let mut buf = Vec::with_capacity(self.part_size.min(1 << 20));
        // Read one byte past a part so an exactly-part-sized payload is a single PUT.
        let eof = fill(&mut data, &mut buf, self.part_size + 1)
            .await
            .map_err(io_err)?;
        if eof {
            let n = buf.len() as u64;
            record_operation(TYPE, Operation::Put, n);
            self.client
                .put_object()
                .bucket(&self.target.bucket)
                .key(key)
                .set_metadata(metadata)
                .content_length(n as i64)
                .body(SdkStream::from(buf))
                .send()
                .await
                .map_err(|e| self.target.sdk("put", key, e))?;
            return Ok(n);
        }

        record_operation(TYPE, Operation::Put, 0);
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.target.bucket)
            .key(key)
            .set_metadata(metadata)
            .send()
            .await
            .map_err(|e| self.target.sdk("create multipart upload", key, e))?;
        let Some(upload_id) = created.upload_id().map(str::to_string) else {
            return Err(self.target.backend(
                "create multipart upload",
                key,
                "no upload id in response".into(),
                true,
            ));
        };
        let result = self.upload_parts(key, &upload_id, data, buf).await;
        if result.is_err() {
            record_operation(TYPE, Operation::Delete, 0);
            if let Err(e) = self
                .client
                .abort_multipart_upload()
                .bucket(&self.target.bucket)
                .key(key)
                .upload_id(&upload_id)
                .send()
                .await
            {
                tracing::warn!(
                    key,
                    error = %self.target.sdk("abort multipart upload", key, e),
                    "cannot abort multipart upload"
                );
            }
        }
        result
    }

    async fn upload_parts(
        &self,
        key: &str,
        upload_id: &str,
        mut data: ByteStream,
        mut pending: Vec<u8>,
    ) -> Result<u64> {
        let io_err = |e: std::io::Error| Error::io(format!("s3://{}/{key}", self.target.bucket), e);
        let mut parts = Vec::new();
        let mut total = 0u64;
        let mut number = 1i32;
        loop {
            // `pending` holds at most part_size + 1 bytes: send part_size, carry the rest.
            let eof = fill(&mut data, &mut pending, self.part_size)
                .await
                .map_err(io_err)?;
            let mut rest = if pending.len() > self.part_size {
                pending.split_off(self.part_size)
            } else {
                Vec::new()
            };
            let last = eof && rest.is_empty();
            if !pending.is_empty() {
                let n = pending.len() as u64;
                record_operation(TYPE, Operation::Put, n);
                let body = std::mem::take(&mut pending);
                let out = self
                    .client
                    .upload_part()
                    .bucket(&self.target.bucket)
                    .key(key)
                    .upload_id(upload_id)
                    .part_number(number)
                    .content_length(n as i64)
                    .body(SdkStream::from(body))
                    .send()
                    .await
                    .map_err(|e| self.target.sdk(&format!("upload part {number} of"), key, e))?;
                parts.push(
                    CompletedPart::builder()
                        .part_number(number)
                        .set_e_tag(out.e_tag().map(str::to_string))
                        .build(),
                );
                total += n;
                number += 1;
            }
            if last {
                break;
            }
            pending = std::mem::take(&mut rest);
            pending.reserve(self.part_size.saturating_sub(pending.len()));
        }
        record_operation(TYPE, Operation::Put, 0);
        self.client
            .complete_multipart_upload()
            .bucket(&self.target.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.target.sdk("complete multipart upload", key, e))?;
        Ok(total)
    }
}

#[async_trait]
impl BucketStore for S3Client {
    const KIND: &'static str = TYPE;

    async fn list_delimited(&self, prefix: &str) -> Result<DirListing> {
        self.list_prefix(prefix, true).await
    }

    async fn list_keys(&self, prefix: &str) -> Result<Vec<String>> {
        let listed = self.list_prefix(prefix, false).await?;
        Ok(listed
            .objects
            .into_iter()
            .map(|l| format!("{prefix}{}", l.name))
            .collect())
    }

    async fn open_key(&self, key: String) -> Result<ByteStream> {
        let res = self
            .client
            .get_object()
            .bucket(&self.target.bucket)
            .key(&key)
            .send()
            .await;
        let len = match &res {
            Ok(out) => out.content_length().unwrap_or(0).max(0) as u64,
            Err(_) => 0,
        };
        record_operation(TYPE, Operation::Get, len);
        let out = res.map_err(|e| self.target.sdk("get", &key, e))?;
        Ok(Box::pin(BodyReader {
            inner: Box::pin(out.body.into_async_read()),
            what: format!("s3://{}/{key}", self.target.bucket),
        }))
    }

    async fn upload(&self, key: &str, upload: Upload) -> Result<u64> {
        self.upload_object(key, upload).await
    }

    /// In batches of 1000 (DeleteObjects).
    async fn delete_keys(&self, keys: Vec<String>) -> Result<()> {
        for batch in keys.chunks(DELETE_BATCH) {
            let objects = batch
                .iter()
                .map(|k| {
                    ObjectIdentifier::builder()
                        .key(k)
                        .build()
                        .map_err(|e| self.target.backend("delete", k, e.to_string(), false))
                })
                .collect::<Result<Vec<_>>>()?;
            let first = batch.first().map(String::as_str).unwrap_or("");
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| self.target.backend("delete", first, e.to_string(), false))?;
            record_operation(TYPE, Operation::Delete, 0);
            let out = self
                .client
                .delete_objects()
                .bucket(&self.target.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| self.target.sdk("delete", first, e))?;
            if let Some(err) = out.errors().iter().find(|e| e.code() != Some("NoSuchKey")) {
                let code = err.code().unwrap_or("error");
                let retryable = matches!(code, "InternalError" | "SlowDown" | "ServiceUnavailable");
                return Err(self.target.backend(
                    "delete",
                    err.key().unwrap_or(first),
                    format!("{code}: {}", err.message().unwrap_or("")),
                    retryable,
                ));
            }
        }
        Ok(())
    }

    /// The `litestream-timestamp` metadata: one HeadObject, not counted in the operation
    /// metrics, as v0.5 does not count it.
    async fn head_writer_timestamp(&self, key: &str) -> Result<Option<OffsetDateTime>> {
        let out = self
            .client
            .head_object()
            .bucket(&self.target.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.target.sdk("head", key, e))?;
        let value = out.metadata().and_then(|m| m.get(TIMESTAMP_METADATA));
        Ok(listing::parse_writer_timestamp(value.map(String::as_str)))
    }

    fn root(&self) -> &str {
        &self.root
    }
}
