//! Builds a [`ReplicaClient`] from a replica configuration: the only file that names every
//! backend. Backends not compiled in (cargo features `s3`, `abs`, `sftp`) give a clear error.

use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use litestream_core::age::{AgeClient, AgeKeys};
use litestream_core::config::ReplicaConfig;
use litestream_core::ReplicaClient;

/// Build the client for an already resolved replica configuration.
pub(crate) async fn build_client(rc: &ReplicaConfig) -> Result<Arc<dyn ReplicaClient>> {
    let client = build_backend(rc).await?;
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
             recovery, validation and restore cannot read this replica"
        );
    }
    Ok(Arc::new(AgeClient::new(client, keys)))
}

/// Build the storage backend itself.
async fn build_backend(rc: &ReplicaConfig) -> Result<Arc<dyn ReplicaClient>> {
    let kind = rc.kind();
    match kind.as_str() {
        "file" => {
            let path = rc
                .path
                .clone()
                .filter(|p| !p.is_empty())
                .ok_or_else(|| anyhow!("file replica path required"))?;
            Ok(Arc::new(litestream_file::FileClient::new(path)))
        }
        #[cfg(feature = "s3")]
        "s3" => Ok(Arc::new(
            litestream_s3::S3Client::from_replica_config(rc).await?,
        )),
        #[cfg(feature = "abs")]
        "abs" => Ok(Arc::new(
            litestream_abs::AbsClient::from_replica_config(rc).await?,
        )),
        #[cfg(feature = "sftp")]
        "sftp" => Ok(Arc::new(
            litestream_sftp::SftpClient::from_replica_config(rc).await?,
        )),
        other => bail!("replica type {other:?} is not built into this binary"),
    }
}
