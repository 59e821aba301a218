//! Shared helpers for the S3 tests: the test server from the environment, random prefixes,
//! and creating buckets (the private moto server is `litestream_test_servers::Moto`).
#![allow(dead_code, unreachable_pub, missing_docs)]

/// Byte streams, whole reads and deterministic incompressible payloads (`bytes(len, seed)`).
pub use litestream_conformance::{payload as bytes, read_all, stream};
use litestream_core::ByteStream;
use litestream_s3::{S3Builder, S3Client};

/// One of the `TEST_S3_*` variables; panics (never skips) when it is unset.
pub fn env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{name} is not set: the S3 tests need the local S3 test server; run scripts/test.sh \
             (or eval \"$(bash scripts/test-servers/start.sh)\")"
        ),
    }
}

/// A fresh random key prefix, so tests never see each other's objects.
pub fn random_prefix(test: &str) -> String {
    format!("s3-tests/{test}-{:016x}", rand::random::<u64>())
}

/// A builder for the shared test server with a fresh prefix.
pub fn builder(test: &str) -> S3Builder {
    S3Builder::new(env("TEST_S3_BUCKET"))
        .with_endpoint(env("TEST_S3_ENDPOINT"))
        .with_region(env("TEST_S3_REGION"))
        .with_credentials(
            env("TEST_S3_ACCESS_KEY_ID"),
            env("TEST_S3_SECRET_ACCESS_KEY"),
        )
        .with_path(random_prefix(test))
}

/// A client for the shared test server with a fresh prefix.
pub async fn client(test: &str) -> S3Client {
    builder(test).build().await.expect("build s3 client")
}

/// Read a whole stream, returning read errors as the core error (retryable when transient).
pub async fn try_read_all(mut s: ByteStream) -> litestream_core::Result<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .await
        .map_err(|e| litestream_core::Error::io("stream", e))?;
    Ok(out)
}

/// Create `bucket` through `client` (ignoring "already exists").
pub async fn create_bucket(client: &S3Client, bucket: &str) {
    if let Err(e) = client
        .sdk_client()
        .create_bucket()
        .bucket(bucket)
        .send()
        .await
    {
        let text = format!("{}", aws_sdk_s3::error::DisplayErrorContext(&e));
        assert!(text.contains("BucketAlready"), "create bucket: {text}");
    }
}
