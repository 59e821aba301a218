//! The `gcs` replica: Google Cloud Storage (and GCS emulators), with the same object names and
//! contents as every other backend and as Litestream v0.3.13's `gcs` replica.
//!
//! # Overview
//!
//! * [`GcsClient`] implements [`litestream_core::ObjectStore`] (list one directory, get, put
//!   with a writer's timestamp, delete), and so [`litestream_core::ReplicaClient`] through
//!   core, which composes the names from [`litestream_core::layout`]:
//!   `PATH/generations/<GEN>/snapshots/<INDEX>.snapshot.lz4` and
//!   `PATH/generations/<GEN>/wal/<INDEX>_<OFFSET>.wal.lz4` inside the bucket.
//! * [`GcsBuilder`] validates the settings once; [`GcsClient::from_replica_config`] builds a
//!   client from a resolved [`ReplicaConfig`] (the binary's registry calls it).
//! * Requests use the GCS JSON API (`/storage/v1/…`, `/upload/storage/v1/…`) directly;
//!   `object_store`'s GCP support provides the credentials (why: see the `api` module).
//! * [`Error`] covers configuration problems; request failures become
//!   [`litestream_core::Error`]: `NotFound` for a missing object, `Backend` otherwise, with
//!   messages that name the object as `gcs://BUCKET/NAME`.
//!
//! # Configuration
//!
//! | YAML key | URL form | environment | meaning |
//! | --- | --- | --- | --- |
//! | `type: gcs` (also `gs`) | `gcs://BUCKET/PATH` (also `gs://`) | | the replica type |
//! | `bucket` | host part | | bucket (required; never created by this crate) |
//! | `path` | path part | | object name prefix; leading `/` dropped |
//! | | | `GOOGLE_APPLICATION_CREDENTIALS` | service-account key file (or authorized-user credentials) |
//! | | | `STORAGE_EMULATOR_HOST` | emulator `HOST:PORT` or URL; requests then carry no credentials |
//! | `endpoint` (extension) | | | another JSON API endpoint (URL), with credentials |
//!
//! Without `GOOGLE_APPLICATION_CREDENTIALS` the default chain applies: the gcloud
//! application-default credentials file (`~/.config/gcloud/application_default_credentials.json`),
//! then the instance metadata server (GCE, GKE, Cloud Run). Litestream v0.3.13 accepts only
//! the `gcs` spelling; `gs` is Litestream v0.5's.
//!
//! # Behaviour and differences from Litestream v0.3.13
//!
//! * **Created-at times** are the object's `timeCreated`, as Litestream reads them. Write
//!   methods return the time core stamps a finished upload with.
//! * **Uploads**: payloads smaller than the part size (8 MiB) are one `uploadType=multipart`
//!   request (retried as a whole); larger ones are a resumable upload in 8 MiB chunks (at most
//!   two in memory), each chunk retried from the byte the server reports having, so readers
//!   never see a partial object. A failed upload's session is cancelled. Content type
//!   `application/octet-stream`.
//! * **Retries**: each request is repeated up to 3 times (100 ms–4 s backoff, 30 s budget)
//!   on 5xx, 408, 429 and connection errors; errors that remain are reported with
//!   [`litestream_core::Error::is_retryable`] set for those same causes, so the engine's own
//!   retry loop takes over. Connect timeout 10 s, request timeout 120 s, and a download's body
//!   fails after 60 s without data.
//! * **Listing**: generations and directories with a `/` delimiter, pages followed; names that
//!   do not parse are ignored; results are sorted.
//! * **Deletes** are one request per object (4 concurrent); a missing object is success. A
//!   generation is found with one flat listing, not directory by directory.
//! * **Writer timestamps** (Litestream v0.5's LTX files): a put with a timestamp stores it
//!   in the `litestream-timestamp` metadata, as v0.5's `gs` replica, and
//!   [`head_timestamp`](litestream_core::ObjectStore::head_timestamp) reads it back (one
//!   metadata request).
//!
//! # Example
//!
//! ```no_run
//! # async fn demo() -> litestream_core::Result<()> {
//! use litestream_core::ReplicaClient;
//! let client = litestream_gcs::GcsBuilder::new()
//!     .with_bucket("ls-test")
//!     .with_path("db")
//!     .with_emulator_host("127.0.0.1:4443")
//!     .build()?;
//! for generation in client.generations().await? {
//!     println!("{generation}");
//! }
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod api;
mod builder;
mod client;
mod error;

pub use builder::{
    GcsBuilder, CREDENTIALS_ENV, DEFAULT_ENDPOINT, DEFAULT_PART_SIZE, EMULATOR_HOST_ENV,
};
pub use client::GcsClient;
pub use error::Error;
pub use object_store::{BackoffConfig, RetryConfig};

use litestream_core::config::ReplicaConfig;

/// The replica type name: config `type`, URL scheme, metrics label and error prefix.
pub const TYPE: &str = "gcs";

impl GcsClient {
    /// Build a client from a resolved replica config (call [`ReplicaConfig::resolve`] first so
    /// that a `gcs://BUCKET/path` URL has been merged into the fields).
    ///
    /// Makes no request: a missing bucket or rejected credentials are reported by the first
    /// operation.
    pub async fn from_replica_config(cfg: &ReplicaConfig) -> litestream_core::Result<GcsClient> {
        Ok(GcsBuilder::from_replica_config(cfg).build()?)
    }
}
