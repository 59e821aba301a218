//! LTX key layout and listing.
//!
//! * file, sftp, abs, gcs: `<root>/ltx/<level in decimal>/<min %016x>-<max %016x>.ltx`;
//! * s3: `<root>/<level %04x>/<min %016x>-<max %016x>.ltx` (no `ltx/` component).
//!
//! File names must match `^[0-9a-f]{16}-[0-9a-f]{16}\.ltx$`; anything else (`.tmp` uploads,
//! uppercase names) is ignored by the listing, as Litestream v0.5 does.

use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::pos::is_lower_hex;
use crate::replica_client::ReplicaClient;

/// The snapshot level: full databases, always named `0000000000000001-<max>.ltx`.
pub const SNAPSHOT_LEVEL: u8 = 9;
/// The highest level number.
pub const MAX_LEVEL: u8 = SNAPSHOT_LEVEL;

/// One LTX file as listed by a replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LtxFileInfo {
    /// Compaction level (0..=9; 9 is the snapshot level).
    pub level: u8,
    /// First transaction ID the file covers.
    pub min_txid: u64,
    /// Last transaction ID the file covers.
    pub max_txid: u64,
    /// Stored size in bytes.
    pub size: u64,
    /// Listed time (file mtime, S3 `LastModified`, ...), or the writer's timestamp where the
    /// backend keeps one apart (see [`ReplicaClient::object_timestamp`]).
    pub created_at: OffsetDateTime,
}

impl LtxFileInfo {
    /// The file's name, `<min %016x>-<max %016x>.ltx`.
    pub fn name(&self) -> String {
        file_name(self.min_txid, self.max_txid)
    }

    /// The file's key relative to the replica root on a backend of `kind`.
    pub fn key(&self, kind: &str) -> String {
        file_key(kind, self.level, self.min_txid, self.max_txid)
    }
}

/// A TXID as Litestream writes it: 16 lowercase hex digits.
pub fn format_txid(txid: u64) -> String {
    format!("{txid:016x}")
}

/// Parse a TXID as Litestream v0.5's `-txid` flag does: exactly 16 hex digits.
pub fn parse_txid(s: &str) -> Result<u64> {
    if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::InvalidArgument(format!(
            "invalid txid format: {s:?} (expected 16 hex digits, e.g. 0000000000000002)"
        )));
    }
    u64::from_str_radix(s, 16)
        .map_err(|e| Error::InvalidArgument(format!("invalid txid format: {s:?}: {e}")))
}

/// The directory of `level` relative to the replica root on a backend of `kind`.
pub fn level_dir(kind: &str, level: u8) -> String {
    if kind == "s3" {
        format!("{level:04x}")
    } else {
        format!("ltx/{level}")
    }
}

/// `<min %016x>-<max %016x>.ltx`.
pub fn file_name(min_txid: u64, max_txid: u64) -> String {
    format!("{min_txid:016x}-{max_txid:016x}.ltx")
}

/// The key of an LTX file relative to the replica root on a backend of `kind`.
pub fn file_key(kind: &str, level: u8, min_txid: u64, max_txid: u64) -> String {
    format!(
        "{}/{}",
        level_dir(kind, level),
        file_name(min_txid, max_txid)
    )
}

/// The (min, max) TXIDs of an LTX file name, or `None` if `name` is not one.
pub fn parse_file_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(".ltx")?;
    let (min, max) = stem.split_once('-')?;
    if min.len() != 16
        || max.len() != 16
        || !min.bytes().all(is_lower_hex)
        || !max.bytes().all(is_lower_hex)
    {
        return None;
    }
    Some((
        u64::from_str_radix(min, 16).ok()?,
        u64::from_str_radix(max, 16).ok()?,
    ))
}

/// Every LTX file of `level`, sorted by (min, max) TXID as Litestream's name-ordered
/// iterators return them; names that do not parse are ignored, a missing level is empty.
pub async fn list_ltx_files(client: &dyn ReplicaClient, level: u8) -> Result<Vec<LtxFileInfo>> {
    let dir = level_dir(client.kind(), level);
    let mut out: Vec<LtxFileInfo> = client
        .list_objects(&dir)
        .await?
        .into_iter()
        .filter_map(|o| {
            let (min_txid, max_txid) = parse_file_name(&o.name)?;
            Some(LtxFileInfo {
                level,
                min_txid,
                max_txid,
                size: o.size,
                created_at: o.modified,
            })
        })
        .collect();
    out.sort_by_key(|f| (f.min_txid, f.max_txid));
    Ok(out)
}

/// Every LTX file of every level 0..=9, by level then TXID.
pub async fn list_all_ltx_files(client: &dyn ReplicaClient) -> Result<Vec<LtxFileInfo>> {
    let mut out = Vec::new();
    for level in 0..=MAX_LEVEL {
        out.extend(list_ltx_files(client, level).await?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_dirs_per_backend() {
        assert_eq!(level_dir("file", 0), "ltx/0");
        assert_eq!(level_dir("sftp", 9), "ltx/9");
        assert_eq!(level_dir("abs", 3), "ltx/3");
        assert_eq!(level_dir("s3", 9), "0009");
        assert_eq!(level_dir("s3", 0), "0000");
        assert_eq!(
            file_key("s3", 1, 3, 5),
            "0001/0000000000000003-0000000000000005.ltx"
        );
        assert_eq!(
            file_key("file", 1, 3, 0x1f),
            "ltx/1/0000000000000003-000000000000001f.ltx"
        );
    }

    #[test]
    fn names_parse_strictly() {
        assert_eq!(
            parse_file_name("0000000000000003-000000000000001f.ltx"),
            Some((3, 0x1f))
        );
        for bad in [
            "0000000000000003-000000000000001F.ltx",
            "0000000000000003-000000000000001f.ltx.tmp",
            "000000000000003-000000000000001f.ltx",
            "0000000000000003_000000000000001f.ltx",
            "0000000000000003-000000000000001f",
            "+000000000000003-000000000000001f.ltx",
            "",
        ] {
            assert_eq!(parse_file_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn txids_need_sixteen_hex_digits() {
        assert_eq!(parse_txid("0000000000000002").expect("txid"), 2);
        assert_eq!(parse_txid("00000000000000Ff").expect("txid"), 255);
        for bad in [
            "2",
            "",
            "000000000000000g",
            "+000000000000002",
            "00000000000000002",
        ] {
            assert!(parse_txid(bad).is_err(), "{bad}");
        }
        assert_eq!(format_txid(0x1f), "000000000000001f");
    }
}
