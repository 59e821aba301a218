//! The `s3` replica: a [`ReplicaClient`](litestream_core::ReplicaClient) over an S3 bucket
//! or an S3-compatible store (MinIO, B2, R2, DigitalOcean, Scaleway, Linode, Filebase), with
//! the key layout of Litestream v0.3.13.
//!
//! # Overview
//!
//! * [`S3Builder`] holds every `type: s3` setting and builds an [`S3Client`]; or call
//!   [`S3Client::from_replica_config`] with a resolved
//!   [`ReplicaConfig`](litestream_core::config::ReplicaConfig).
//! * Uploads stream: payloads that fit one part (5 MiB) are one PutObject, larger ones a
//!   multipart upload reading one part at a time (bounded memory), aborted on failure.
//! * Checksum headers are sent only when an operation requires them, so S3-compatible stores
//!   work; the SDK's standard retry mode retries throttling, 5xx and connection errors, and
//!   errors that remain report [`is_retryable`](litestream_core::Error::is_retryable).
//! * Every request is counted with [`litestream_core::metrics::record_operation`].
//!
//! # Example
//!
//! ```no_run
//! # async fn demo() -> litestream_core::Result<()> {
//! use litestream_core::ReplicaClient;
//! let client = litestream_s3::S3Builder::new("my-bucket")
//!     .with_path("db")
//!     .with_endpoint("http://127.0.0.1:9000")
//!     .with_credentials("test", "testtest")
//!     .build()
//!     .await?;
//! for generation in client.generations().await? {
//!     println!("{generation}");
//! }
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod builder;
mod client;
mod error;
mod insecure;

pub use builder::{S3Builder, DEFAULT_REGION, MIN_PART_SIZE};
pub use client::S3Client;

/// The replica type name, metrics label and URL scheme.
pub const TYPE: &str = "s3";
