//! Builds a [`ReplicaClient`] from a replica configuration: the only file that names every
//! backend. Backends not compiled in (cargo features `s3`, `abs`, `sftp`) give a clear error.

use std::sync::Arc;

use anyhow::{anyhow, bail, Result};
use litestream_core::config::ReplicaConfig;
use litestream_core::ReplicaClient;

/// Build the client for an already resolved replica configuration.
pub(crate) async fn build_client(rc: &ReplicaConfig) -> Result<Arc<dyn ReplicaClient>> {
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
