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
//! | `host-key` | `?host-key=` | the server's key, pinned: `ssh-ed25519 AAAA…` (as Litestream v0.5) or its `SHA256:…` fingerprint; env `LITESTREAM_SFTP_HOST_KEY` when neither is set |
//! | `known-hosts-path` | – | OpenSSH known_hosts file; when set, only its keys are accepted |
//! | `strict-host-key-checking` | `?strict-host-key-checking=true` | refuse keys that are neither pinned nor known (env `LITESTREAM_SFTP_STRICT_HOST_KEY_CHECKING=true`) |
//! | `insecure-ignore-host-key` | – | `true` accepts any host key |
//!
//! # Host keys
//!
//! Unlike Litestream v0.3 (which accepts any key), the server's host key is always checked
//! before credentials are sent, by the first of these that applies ([`HostKeyPolicy`]):
//!
//! 1. `insecure-ignore-host-key: true`: any key (Litestream v0.3's behaviour; vulnerable to
//!    man-in-the-middle attacks; config file only).
//! 2. A pin: `host-key` in the config, else `?host-key=` in the URL (percent-encode the
//!    space of a full key as `%20`; a fingerprint needs no encoding), else the environment
//!    variable `LITESTREAM_SFTP_HOST_KEY`. Only that key is accepted.
//! 3. `known-hosts-path`: only the keys that file lists for the host (plain, `[host]:port`,
//!    wildcard, negated and hashed `|1|…` entries; `@revoked` honoured).
//! 4. Otherwise (the default, [`FirstUse`]), like OpenSSH's `StrictHostKeyChecking=accept-new`:
//!    `~/.ssh/known_hosts` if it lists the host; else the key remembered in the store (the CLI
//!    keeps it on the data volume, `known_hosts` in the database's meta directory
//!    `.<db>-litestream/`, so the sidecar and its healthcheck share it and it survives
//!    container restarts); else the key is trusted on first use, its `SHA256:` fingerprint
//!    logged and remembered. A key that differs from a known or remembered one is refused
//!    with both fingerprints and the one shell line that accepts the new key. Strict mode
//!    (`strict-host-key-checking: true`, `?strict-host-key-checking=true` or
//!    `LITESTREAM_SFTP_STRICT_HOST_KEY_CHECKING=true`) refuses unknown keys instead.
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
mod first_use;
mod known_hosts;

pub use client::SftpClient;
pub use config::{SftpConfig, DEFAULT_PORT, HOST_KEY_ENV};
pub use first_use::{FirstUse, STRICT_ENV};
pub use known_hosts::{fingerprint, parse_host_key, HostKeyPolicy, HostKeyRejected};

/// The replica type name (config `type`, URL scheme, metrics label).
pub const TYPE: &str = "sftp";
