//! Shared helpers for the tests that run against the local sshd (`scripts/test.sh` starts it).
#![allow(dead_code, unreachable_pub, missing_docs)]

/// Byte streams (`bytes(data)`) and whole reads.
pub use litestream_conformance::{read_all, stream as bytes};
use litestream_core::config::ReplicaConfig;
use litestream_core::ReplicaClient;
use litestream_sftp::SftpClient;

/// An env var set by the test-server start script; panics (never skips) when unset.
pub fn env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{name} is unset: the SFTP tests need the local sshd test server; \
             run scripts/test.sh (or eval \"$(bash scripts/test-servers/start.sh)\")"
        ),
    }
}

/// A fresh, random remote directory under TEST_SFTP_ROOT, removed (best effort) on drop.
pub struct RemoteDir {
    pub path: String,
}

impl RemoteDir {
    pub fn new(tag: &str) -> RemoteDir {
        let root = env("TEST_SFTP_ROOT");
        RemoteDir {
            path: format!("{root}/{tag}-{:016x}", rand::random::<u64>()),
        }
    }
}

impl Drop for RemoteDir {
    fn drop(&mut self) {
        // The test server runs on this machine; its data directory is a local path.
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Key auth (ed25519), known_hosts verification, replica root `path`.
pub fn key_config(path: &str) -> ReplicaConfig {
    ReplicaConfig {
        replica_type: Some("sftp".into()),
        host: Some(format!(
            "{}:{}",
            env("TEST_SFTP_HOST"),
            env("TEST_SFTP_PORT")
        )),
        user: Some(env("TEST_SFTP_USER")),
        key_path: Some(env("TEST_SFTP_KEY_PATH")),
        known_hosts_path: Some(env("TEST_SFTP_KNOWN_HOSTS")),
        path: Some(path.to_string()),
        ..Default::default()
    }
}

/// Password auth, pinned host key, replica root `path`.
pub fn password_config(path: &str) -> ReplicaConfig {
    ReplicaConfig {
        replica_type: Some("sftp".into()),
        host: Some(format!(
            "{}:{}",
            env("TEST_SFTP_HOST"),
            env("TEST_SFTP_PORT")
        )),
        user: Some(env("TEST_SFTP_USER")),
        password: Some(env("TEST_SFTP_PASSWORD")),
        host_key: Some(env("TEST_SFTP_HOST_KEY")),
        path: Some(path.to_string()),
        ..Default::default()
    }
}

pub async fn client(cfg: &ReplicaConfig) -> SftpClient {
    SftpClient::from_replica_config(&cfg.resolve().expect("resolve"))
        .await
        .expect("client")
}

pub fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 9) as u8)
        .collect()
}

pub fn assert_kind(c: &SftpClient) {
    assert_eq!(c.kind(), "sftp");
}
