//! Litestream-compatible SQLite replication: the replica format, the storage traits
//! ([`ObjectStore`] for backends, [`ReplicaClient`] for the rest), the replication engine and
//! restore.
//!
//! # Overview
//!
//! * Format: [`Pos`] and [`Generation`] ([`pos`]), replica key names ([`layout`]), the LZ4
//!   frame ([`lz4`]) and the SQLite WAL ([`wal`]), all byte-compatible with Litestream v0.3.13.
//! * Storage: backends implement [`ObjectStore`] ([`store`]: list, get, put with a
//!   timestamp, delete) in their own crates (`litestream-file`, `litestream-s3`,
//!   `litestream-abs`, `litestream-sftp`); core turns every store into a [`ReplicaClient`]
//!   ([`replica_client`]) with the key layout ([`layout`]) and listing rules ([`listing`]).
//! * Restore: [`restore::restore`] rebuilds a database from a replica, byte-identical to
//!   Litestream's, applying WAL frames directly with bounded memory and retries.
//! * Litestream v0.5 replicas: [`ltx`] reads the LTX format on every backend (decoder, key
//!   layout, v0.5.17's restore plan, a streaming merge restore), writes it ([`ltx::encoder`],
//!   [`ltx::compact`], [`ltx::upload`]; not yet wired into the engine) and
//!   [`ltx::detect`] picks the format to restore when a path holds v0.3 and LTX data.
//! * Configuration: [`config`] reads `litestream.yml`, [`url`] parses replica URLs.
#![deny(missing_docs)]

pub mod age;
pub mod config;
pub mod engine;
pub mod error;
pub mod layout;
pub mod listing;
pub mod ltx;
pub mod lz4;
pub mod memory;
pub mod metrics;
pub mod pos;
pub mod replica_client;
pub mod restore;
pub mod retry;
pub mod store;
pub mod timefmt;
pub mod url;
pub mod wal;

pub use error::{Error, Result};
pub use pos::{Generation, Pos};
pub use replica_client::{ByteStream, ReplicaClient, SnapshotInfo, WalSegmentInfo};
pub use retry::RetryConfig;
pub use store::{DirListing, ObjectStore, PutOutcome};
