//! Validation of an LTX replica (`validation-interval`, and [`super::Replicator::validate`]),
//! as the v0.3 validation in `validate.rs` does it: the database is checksummed (CRC-64/ISO)
//! as of a pinned position, the replica is brought exactly to that position (its newest TXID
//! then ends there), the replica is restored at that TXID into a temporary directory (the
//! same plan and merge as `litestream restore -txid`) and the two checksums are compared.
//!
//! The restore runs inside the replica's task: no compaction or retention of this replica
//! changes the files it reads meanwhile (uploads of this replica wait for it; other replicas
//! go on).

use std::path::PathBuf;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::ltx::format_txid;
use crate::ltx::plan::calc_restore_plan;
use crate::ltx::restore::restore_plan;
use crate::pos::Pos;
use crate::replica_client::ReplicaClient;
use crate::restore::RestoreOptions;
use crate::retry::RetryConfig;

use super::ltx_replica::LtxReplica;
use super::validate::{compare_restored, record_validation, TempDir, ValidationReport};

/// Pinning attempts before a validation gives up (a whole-database file may go past a pin,
/// the application's checkpoint may hold the database).
const ATTEMPTS: usize = 3;
/// The wait before pinning again after a failed pin.
const PIN_RETRY: std::time::Duration = std::time::Duration::from_millis(200);

impl LtxReplica {
    /// Validate the replica once; the outcome is counted ([`super::ValidationStats`],
    /// metrics) and logged as the v0.3 validation's.
    pub(super) async fn validate(&mut self) -> Result<ValidationReport> {
        let r = self.validate_once().await;
        record_validation(
            &self.base.db.path,
            &self.base.name,
            &self.base.validation,
            r.as_ref(),
        );
        r
    }

    async fn validate_once(&mut self) -> Result<ValidationReport> {
        if !self.started {
            // Find where the replica stands first (its newest TXID, the local history).
            self.sync().await?;
        }
        for attempt in 1..=ATTEMPTS {
            let (pin, db_checksum) = match self.base.db.validation_checksum().await {
                Ok(p) => p,
                // The application's own TRUNCATE/RESTART checkpoint can hold the database or
                // empty the WAL just then: pin again a little later.
                Err(e) if attempt < ATTEMPTS => {
                    tracing::debug!(replica = %self.base.name, error = %e, "validation: pin failed, retrying");
                    tokio::time::sleep(PIN_RETRY).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            self.upload_upto(&pin).await?;
            let position = pin.pos();
            if self.base.pos.as_ref() != Some(&position) || self.txid == 0 {
                continue; // a whole-database file went past the pin: pin again
            }
            // The restore's future is not `Send` (its merge holds borrowed streams), so it
            // runs on a blocking thread of its own, as the restore command runs it.
            let handle = tokio::runtime::Handle::current();
            let (client, retry, txid) = (
                Arc::clone(&self.base.client),
                self.base.opts.retry,
                self.txid,
            );
            let who = (self.base.db.path.clone(), self.base.name.clone());
            return tokio::task::spawn_blocking(move || {
                handle.block_on(restore_and_compare(
                    client,
                    retry,
                    txid,
                    who,
                    position,
                    db_checksum,
                ))
            })
            .await
            .map_err(|e| Error::io("validation task", std::io::Error::other(e)))?;
        }
        Err(Error::InvalidArgument(format!(
            "validation: the replica did not reach the pinned position in {ATTEMPTS} attempts"
        )))
    }
}

/// Restore the replica of `client` at `txid` into a temporary directory and compare it with
/// `db_checksum`, the database (`who`: its path and the replica's name) as of `position`.
async fn restore_and_compare(
    client: Arc<dyn ReplicaClient>,
    retry: RetryConfig,
    txid: u64,
    who: (PathBuf, String),
    position: Pos,
    db_checksum: u64,
) -> Result<ValidationReport> {
    let dir = TempDir::new()?;
    let out = dir.0.join("replica");
    let plan = retry
        .run("list ltx files", || {
            calc_restore_plan(client.as_ref(), Some(txid), None)
        })
        .await?;
    let mut opts = RestoreOptions::new(&out);
    opts.retry = retry;
    let restored = restore_plan(Arc::clone(&client), &plan, &opts).await?;
    if restored.txid != txid {
        return Err(Error::InvalidArgument(format!(
            "validation: the replica restored to TXID {}, not {}",
            format_txid(restored.txid),
            format_txid(txid)
        )));
    }
    tracing::debug!(replica = %who.1, txid = %format_txid(txid), files = restored.files,
        "ltx replica restored for validation");
    compare_restored(&who.0, &who.1, position, db_checksum, out).await
}
