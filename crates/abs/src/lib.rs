//! The `abs` replica: Azure Blob Storage (and Azurite), through the `object_store` crate's
//! Azure client, with the same object names and contents as every other backend.
//!
//! # Overview
//!
//! * [`AbsClient`] implements [`litestream_core::ReplicaClient`]. Keys come from
//!   [`litestream_core::layout`]: `PATH/generations/<GEN>/snapshots/<INDEX>.snapshot.lz4` and
//!   `PATH/generations/<GEN>/wal/<INDEX>_<OFFSET>.wal.lz4` inside the container.
//! * [`AbsBuilder`] validates the settings once; [`AbsClient::from_replica_config`] builds a
//!   client from a resolved [`ReplicaConfig`] (the binary's registry calls it).
//! * [`Error`] covers configuration problems; request failures become
//!   [`litestream_core::Error`]: `NotFound` for a missing blob, `Backend` otherwise, with
//!   messages that name the account and container and never contain a key or SAS token.
//!
//! # Configuration
//!
//! | YAML key | URL form | environment | meaning |
//! | --- | --- | --- | --- |
//! | `account-name` | `abs://ACCOUNT@…` | | storage account (required) |
//! | `bucket` | `abs://…@CONTAINER/…` | | container (required; never created by this crate) |
//! | `path` | `abs://…/PATH` | | key prefix; leading `/` dropped |
//! | `endpoint` | `?endpoint=URL` | | blob service URL (default `https://ACCOUNT.blob.core.windows.net`); Azurite: `http://127.0.0.1:10000/devstoreaccount1` |
//! | `account-key` | | `LITESTREAM_AZURE_ACCOUNT_KEY` | shared key (base64) |
//! | `credential` (extension) | | | `shared-key` (default), `sas`, `managed-identity`, `workload-identity` |
//! | `sas-token` (extension) | | | SAS query string for `credential: sas` (chosen automatically when it is the only secret given) |
//! | `client-id` (extension) | | `AZURE_CLIENT_ID` (workload) | user-assigned managed identity, or the workload identity's app |
//! | `tenant-id` (extension) | | `AZURE_TENANT_ID` | workload identity tenant |
//! | | | `AZURE_FEDERATED_TOKEN_FILE` | workload identity token file (set by AKS) |
//! | | | `AZURE_MSI_ENDPOINT`, `MSI_ENDPOINT`, `IDENTITY_ENDPOINT` | managed identity token endpoint override |
//! | | | `AZURE_AUTHORITY_HOST` | login host for workload identity (sovereign clouds) |
//!
//! An `http://` endpoint is allowed (Azurite). With an endpoint the account is *not* added
//! to the URL: give the full account URL, path style for Azurite.
//!
//! # Behaviour and differences from Litestream v0.3.13
//!
//! * **Created-at times** are the blob's `Last-Modified` (from listings), while Litestream
//!   reads `Properties.CreationTime`. They differ only when a blob is overwritten: a snapshot
//!   rewritten at the same index gets a later time here (as on the `file` and `s3` backends),
//!   its first upload time in Litestream. WAL segment keys are never rewritten in normal
//!   operation. Write methods return the local time the upload started, as Litestream does.
//! * **Uploads**: payloads smaller than the part size (8 MiB) are one `Put Blob`; larger ones
//!   are uploaded as a block blob in 8 MiB blocks, at most 2 in flight (bounded memory:
//!   about 3 parts), committed with `Put Block List` so readers never see a partial blob.
//!   On failure uncommitted blocks are abandoned (Azure discards them). Content type
//!   `application/octet-stream`, as Litestream.
//! * **Retries**: `object_store` retries each request up to 3 times (100 ms–4 s backoff,
//!   30 s budget) on 5xx, 408, 429 and connection errors; errors that remain are reported with
//!   [`litestream_core::Error::is_retryable`] set for those same causes, so the engine's own
//!   retry loop takes over. Connect timeout 10 s, request timeout 120 s.
//! * **Listing**: generations with a `/` delimiter (as Litestream), snapshots and WAL segments
//!   with a flat listing; names that do not parse are ignored; results are sorted.
//! * **Deletes** are one `Delete Blob` per blob (8 concurrent); a missing blob is success.
//!
//! # Example
//!
//! ```no_run
//! # async fn demo() -> litestream_core::Result<()> {
//! use litestream_core::ReplicaClient;
//! let client = litestream_abs::AbsBuilder::new()
//!     .with_account("devstoreaccount1")
//!     .with_account_key("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==")
//!     .with_container("ls-test")
//!     .with_path("db")
//!     .with_endpoint("http://127.0.0.1:10000/devstoreaccount1")
//!     .build()?;
//! for generation in client.generations().await? {
//!     println!("{generation}");
//! }
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod builder;
mod client;
mod error;

pub use builder::{AbsBuilder, Credential, ACCOUNT_KEY_ENV, DEFAULT_PART_SIZE};
pub use client::AbsClient;
pub use error::Error;
pub use object_store::{BackoffConfig, RetryConfig};

use litestream_core::config::ReplicaConfig;

/// The replica type name: config `type`, URL scheme, metrics label and error prefix.
pub const TYPE: &str = "abs";

impl AbsClient {
    /// Build a client from a resolved replica config (call [`ReplicaConfig::resolve`] first so
    /// that an `abs://ACCOUNT@CONTAINER/path?endpoint=…` URL has been merged into the fields).
    ///
    /// Makes no request: a wrong key or a missing container is reported by the first operation.
    pub async fn from_replica_config(cfg: &ReplicaConfig) -> litestream_core::Result<AbsClient> {
        Ok(AbsBuilder::from_replica_config(cfg)?.build()?)
    }
}
