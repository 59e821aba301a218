//! Builds a [`ReplicaClient`] from a replica configuration: the only file that names every
//! backend. Backends not compiled in (cargo features `s3`, `abs`, `gcs`, `sftp`) give a clear error.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use litestream_core::config::{ReplicaConfig, ReplicaKind};
use litestream_core::ReplicaClient;
use litestream_core::{AgeClient, AgeKeys};

/// The file in a database's meta directory where SFTP host keys trusted on first use are
/// remembered (OpenSSH known_hosts format).
#[cfg(feature = "sftp")]
pub(crate) const SFTP_KNOWN_HOSTS: &str = "known_hosts";

/// The meta directory of the database at `db` (absolute): `meta-path` when the config sets it,
/// else `<dir>/.<name>-litestream`, as the engine derives it. Replicate, restore (`-o` path in
/// URL form) and the listing commands agree on it, so they share remembered host keys.
pub(crate) fn meta_dir(db: &Path, meta_path: Option<&str>) -> PathBuf {
    if let Some(m) = meta_path.filter(|m| !m.is_empty()) {
        return PathBuf::from(m);
    }
    let name = db.file_name().unwrap_or_default().to_string_lossy();
    db.with_file_name(format!(".{name}-litestream"))
}

/// Build the client for an already resolved replica configuration. `meta` is the database's
/// meta directory, where an SFTP replica remembers host keys trusted on first use (`None`: no
/// database path, a first-use key is trusted for this run only).
#[cfg_attr(not(feature = "sftp"), allow(unused_variables))]
pub(crate) async fn build_client(
    rc: &ReplicaConfig,
    meta: Option<&Path>,
) -> Result<Arc<dyn ReplicaClient>> {
    let client = build_backend(rc, meta).await?;
    let Some(age) = &rc.age else {
        return Ok(client);
    };
    let Some(keys) = AgeKeys::from_config(age).context("age")? else {
        return Ok(client);
    };
    if keys.encrypts() && !keys.can_decrypt() {
        tracing::warn!(
            replica = client.kind(),
            "age: recipients without identities: objects are encrypted, but start-up position \
             recovery, validation and restore cannot read this replica; a restart starts a \
             new generation from the local state instead (add identities to read it back)"
        );
    }
    Ok(Arc::new(AgeClient::new(client, keys)))
}

/// Build the storage backend itself.
#[cfg_attr(not(feature = "sftp"), allow(unused_variables))]
async fn build_backend(rc: &ReplicaConfig, meta: Option<&Path>) -> Result<Arc<dyn ReplicaClient>> {
    match rc.kind()? {
        ReplicaKind::File => {
            let path = rc
                .path
                .clone()
                .filter(|p| !p.is_empty())
                .ok_or_else(|| anyhow!("file replica path required"))?;
            Ok(Arc::new(litestream_file::FileClient::new(path)))
        }
        #[cfg(feature = "s3")]
        ReplicaKind::S3 => Ok(Arc::new(
            litestream_s3::S3Client::from_replica_config(rc).await?,
        )),
        #[cfg(feature = "abs")]
        ReplicaKind::Abs => Ok(Arc::new(
            litestream_abs::AbsClient::from_replica_config(rc).await?,
        )),
        #[cfg(feature = "gcs")]
        ReplicaKind::Gcs => Ok(Arc::new(
            litestream_gcs::GcsClient::from_replica_config(rc).await?,
        )),
        #[cfg(feature = "sftp")]
        ReplicaKind::Sftp => {
            let mut cfg = litestream_sftp::SftpConfig::from_replica_config(rc)?;
            if let Some(m) = meta {
                cfg = cfg.with_host_key_store(m.join(SFTP_KNOWN_HOSTS));
            }
            Ok(Arc::new(litestream_sftp::SftpClient::new(cfg)))
        }
        other => bail!(
            "replica type {:?} is not built into this binary",
            other.as_str()
        ),
    }
}
