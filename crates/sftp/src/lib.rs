//! The `sftp` replica for litestream-rs: a directory on any SSH server, reached with
//! [russh] and [russh-sftp](russh_sftp), in exactly the layout Litestream v0.3.13 writes.
//!
//! # Overview
//!
//! * [`SftpClient`] implements [`litestream_core::ReplicaClient`]. One SSH connection per
//!   client is opened lazily on the first request, reused for every request, and re-opened
//!   with exponential backoff whenever it drops (server restart, network cut): requests that
//!   fail because the connection was lost are retried by themselves; a write whose data was
//!   already being sent fails with a retryable error and the next call reconnects.
//! * [`SftpConfig`] holds the validated settings, built from a resolved
//!   [`ReplicaConfig`](litestream_core::config::ReplicaConfig).
//! * [`HostKeyPolicy`] decides which server host keys are trusted.
//!
//! Writes go to `<name>.tmp` and are then renamed over the real name (with
//! `posix-rename@openssh.com` where the server offers it, else remove + rename), so a
//! half-uploaded segment never appears under its real name. Created-at times are remote
//! mtimes. Errors name `user@host:port` and the remote path, never the password or key.
//!
//! # Configuration
//!
//! | YAML key | URL | meaning |
//! | --- | --- | --- |
//! | `host` | `sftp://…@HOST:PORT/…` | `HOST[:PORT]`, port 22 by default (required) |
//! | `user` | `sftp://USER…` | login user (required) |
//! | `password` | `sftp://USER:PASSWORD@…` | password authentication |
//! | `key-path` | – | private key file (OpenSSH or PEM; ed25519, RSA, ECDSA), tried before the password |
//! | `path` | the URL path | remote replica directory (absolute) |
//! | `host-key` | – | the server's public key, pinned (`ssh-ed25519 AAAA…`, as Litestream v0.5) |
//! | `known-hosts-path` | – | OpenSSH known_hosts file; default `~/.ssh/known_hosts` |
//! | `insecure-ignore-host-key` | – | `true` accepts any host key |
//!
//! # Host keys
//!
//! Unlike Litestream v0.3 (which accepts any key), the server's host key is always checked
//! before credentials are sent: against `host-key` if set, else against the known_hosts
//! file (plain, `[host]:port`, wildcard, negated and hashed `|1|…` entries; `@revoked`
//! honoured). An unknown or changed key is refused with an error that carries the offered
//! key's `SHA256:` fingerprint; add the key with
//! `ssh-keyscan -p PORT HOST >> ~/.ssh/known_hosts` or pin it with `host-key`.
//!
//! **Opting out.** Users who need Litestream v0.3's behaviour (no host key check at all;
//! vulnerable to man-in-the-middle attacks) set `insecure-ignore-host-key: true` on the
//! replica. The URL form cannot carry it; use a config file.
//!
//! # Example
//!
//! ```no_run
//! use litestream_core::config::ReplicaConfig;
//! use litestream_core::ReplicaClient;
//!
//! # async fn run() -> litestream_core::Result<()> {
//! let cfg = ReplicaConfig {
//!     url: Some("sftp://lstest:secret@127.0.0.1:2022/srv/backups/app.db".into()),
//!     known_hosts_path: Some("/etc/litestream/known_hosts".into()),
//!     ..Default::default()
//! }
//! .resolve()?;
//! let client = litestream_sftp::SftpClient::from_replica_config(&cfg).await?;
//! for generation in client.generations().await? {
//!     println!("{generation}");
//! }
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod client;
mod config;
mod connection;
mod known_hosts;

pub use client::SftpClient;
pub use config::{SftpConfig, DEFAULT_PORT};
pub use known_hosts::{fingerprint, parse_host_key, HostKeyPolicy};

/// The replica type name (config `type`, URL scheme, metrics label).
pub const TYPE: &str = "sftp";
