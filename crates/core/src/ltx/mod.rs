//! Litestream v0.5 replicas: the LTX file format (version 3) and its key layout.
//!
//! * [`decoder`]: a streaming, strictly validating LTX decoder; [`crc64`]: its checksum.
//! * [`plan`]: Litestream v0.5.17's restore plan (`CalcRestorePlan`).
//! * [`restore`]: the streaming k-way merge that writes a plan into the output file.
//! * [`detect`]: format detection across v0.3 and LTX data, and the restore of either.
//! * [`keys`]: where LTX files live on each backend (`ltx/<level>/…`, or `<level %04x>/…` on
//!   s3), their names (`<min %016x>-<max %016x>.ltx`) and the listing of one or all levels.
//!
//! The format is described in `shared/spec/litestream-v0.5-ltx.md`; upstream is
//! `superfly/ltx` v0.5.x as pinned by Litestream v0.5.x.

pub mod crc64;
pub mod decoder;
pub mod detect;
pub mod keys;
pub mod plan;
pub mod restore;

#[cfg(test)]
mod decoder_tests;
#[cfg(test)]
mod restore_tests;
#[cfg(test)]
pub(crate) mod testutil;

pub use keys::{
    format_txid, list_all_ltx_files, list_ltx_files, parse_txid, LtxFileInfo, MAX_LEVEL,
    SNAPSHOT_LEVEL,
};
