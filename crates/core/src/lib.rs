//! Litestream-compatible SQLite replication: the replica format, the storage traits, the
//! replication engine and restore.
//!
//! # Overview
//!
//! * [`Replicator`] watches one SQLite database in WAL mode and ships its changes to replicas,
//!   each a [`ReplicaHandleConfig`]: a name, a [`ReplicaClient`] and [`ReplicaOptions`].
//!   [`Replicator::sync_and_wait`] returns once the latest transaction is on every replica.
//! * [`ReplicaClient`] is the replica-side API over generations, snapshots and WAL segments
//!   ([`Pos`], [`Generation`]). Backends implement the smaller [`ObjectStore`] (list, get, put
//!   with a timestamp, delete) in their own crates (`litestream-file`, `litestream-s3`,
//!   `litestream-abs`, `litestream-gcs`, `litestream-sftp`); every `ObjectStore` is a
//!   `ReplicaClient`. [`MemoryClient`] is an in-process one for tests.
//! * [`restore::restore`] rebuilds a database from a replica, byte-identical to Litestream's,
//!   with bounded memory and retries ([`RestoreOptions`], [`RetryConfig`]).
//! * Litestream v0.5 replicas: [`ltx`] reads and writes the LTX format, and
//!   [`ltx::detect`] picks the format to restore when a path holds v0.3 and LTX data.
//! * Configuration: [`config`] reads `litestream.yml`, [`url`] parses replica URLs; an
//!   [`Error`] says what went wrong in terms a caller can act on. [`AgeClient`] wraps a
//!   replica in age encryption.
//!
//! The formats, all byte-compatible with Litestream v0.3.13: replica key names ([`layout`]),
//! the LZ4 frame ([`lz4`]) and the SQLite WAL ([`wal`]).
//!
//! # Example
//!
//! Replicate a database to an in-memory replica, then restore it elsewhere:
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use litestream_core::{
//!     DbOptions, MemoryClient, ReplicaClient, ReplicaHandleConfig, ReplicaOptions, Replicator,
//!     RestoreOptions,
//! };
//!
//! # async fn example() -> litestream_core::Result<()> {
//! let replica: Arc<dyn ReplicaClient> = Arc::new(MemoryClient::new());
//! let handle = ReplicaHandleConfig {
//!     name: "memory".into(),
//!     client: replica.clone(),
//!     options: ReplicaOptions::default(),
//! };
//! let replicator = Replicator::start("app.db", vec![handle], DbOptions::default()).await?;
//! // ... the application writes to app.db with its own connection ...
//! let pos = replicator.sync_and_wait(Duration::from_secs(10)).await?;
//! println!("replicated up to {pos}");
//! replicator.shutdown().await?;
//!
//! let restored = litestream_core::restore::restore(replica, &RestoreOptions::new("copy.db")).await?;
//! println!("restored generation {}", restored.generation);
//! # Ok(())
//! # }
//! ```
//!
//! # Features
//!
//! * `bundled` (default): compile SQLite into the crate (rusqlite's `bundled`). Turn it off
//!   (`default-features = false`) to link the system's `libsqlite3` instead, e.g. when the
//!   application already links SQLite through another crate (sqlx, or rusqlite without
//!   `bundled`): two copies of SQLite in one process must not open the same database.
#![deny(missing_docs)]

pub use age::{AgeClient, AgeKeys};
pub use engine::{
    DbOptions, LtxOptions, ReplicaFormat, ReplicaHandleConfig, ReplicaOptions, Replicator,
    ValidationReport, ValidationStats,
};
pub use error::{BoxError, Error, Result};
pub use memory::MemoryClient;
pub use pos::{parse_index_hex, Generation, Pos, MAX_INDEX};
pub use replica_client::{
    check_object_key, ByteStream, ReplicaClient, SnapshotInfo, WalSegmentInfo,
};
pub use restore::RestoreOptions;
pub use retry::{is_retryable, RetryConfig};
pub use store::{
    format_writer_timestamp, read_chunk, DirListing, ObjectStore, PutOutcome, Upload,
    DELETE_CONCURRENCY,
};
pub use timefmt::{parse_go_duration, parse_rfc3339};
// What the backend crates share: `support::BucketStore` (s3, abs, gcs) and helpers.
pub use store::support;

// What an embedder uses by path: the config file and replica URLs, restore, the LTX format
// (v0.5) and the metrics.
pub mod config;
pub mod ltx;
pub mod metrics;
pub mod restore;
pub mod url;

// The v0.3 formats (replica key names, the LZ4 frame, the SQLite WAL) and the listing helpers a
// backend crate builds on; also what the fuzz targets and the tests that write replicas by
// hand use.
pub mod layout;
pub mod listing;
pub mod lz4;
pub mod wal;

// Their items are in the `pub use` block above (or, for `config_ltx`, in `config`).
mod age;
mod config_ltx;
mod engine;
mod error;
mod memory;
mod pos;
mod replica_client;
mod retry;
mod store;
mod timefmt;
