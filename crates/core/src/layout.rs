//! Replica key layout: `generations/<GEN>/snapshots/<INDEX>.snapshot.lz4` and
//! `generations/<GEN>/wal/<INDEX>_<OFFSET>.wal.lz4`, with `format_*`/`parse_*` pairs.
//!
//! Names use 8 lowercase hex digits for index and offset, exactly as Litestream v0.3.13;
//! names that do not match are ignored by the listing code of every backend.

use crate::error::{Error, Result};
use crate::pos::{is_lower_hex, Generation, Pos};

/// Directory under a replica root that holds every generation.
pub const GENERATIONS_DIR: &str = "generations";
/// Suffix of snapshot objects.
pub const SNAPSHOT_SUFFIX: &str = ".snapshot.lz4";
/// Suffix of WAL segment objects.
pub const WAL_SEGMENT_SUFFIX: &str = ".wal.lz4";

/// Join key parts with `/` and clean the result like Go's `path.Join`.
pub fn join(parts: &[&str]) -> String {
    let joined = parts
        .iter()
        .filter(|p| !p.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join("/");
    clean(&joined)
}

/// Clean a slash-separated path like Go's `path.Clean` (empty input gives `.`).
pub fn clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if out.last().is_some_and(|p| *p != "..") {
                    out.pop();
                } else if !rooted {
                    out.push("..");
                }
            }
            p => out.push(p),
        }
    }
    let body = out.join("/");
    match (rooted, body.is_empty()) {
        (true, _) => format!("/{body}"),
        (false, true) => ".".to_string(),
        (false, false) => body,
    }
}

/// `ROOT/generations`.
pub fn generations_dir(root: &str) -> String {
    join(&[root, GENERATIONS_DIR])
}

/// `ROOT/generations/<GEN>`.
pub fn generation_dir(root: &str, generation: &Generation) -> String {
    join(&[root, GENERATIONS_DIR, generation.as_str()])
}

/// `ROOT/generations/<GEN>/snapshots`.
pub fn snapshots_dir(root: &str, generation: &Generation) -> String {
    join(&[root, GENERATIONS_DIR, generation.as_str(), "snapshots"])
}

/// `ROOT/generations/<GEN>/wal`.
pub fn wal_dir(root: &str, generation: &Generation) -> String {
    join(&[root, GENERATIONS_DIR, generation.as_str(), "wal"])
}

/// `ROOT/generations/<GEN>/snapshots/<INDEX>.snapshot.lz4`.
pub fn snapshot_path(root: &str, generation: &Generation, index: u32) -> String {
    join(&[
        &snapshots_dir(root, generation),
        &format_snapshot_name(index),
    ])
}

/// `ROOT/generations/<GEN>/wal/<INDEX>_<OFFSET>.wal.lz4`.
pub fn wal_segment_path(root: &str, generation: &Generation, index: u32, offset: u64) -> String {
    join(&[
        &wal_dir(root, generation),
        &format_wal_segment_name(index, offset),
    ])
}

/// `%08x.snapshot.lz4`.
pub fn format_snapshot_name(index: u32) -> String {
    format!("{index:08x}{SNAPSHOT_SUFFIX}")
}

/// Parse a snapshot base name (`^([0-9a-f]{8})\.snapshot\.lz4$`) into its index.
pub fn parse_snapshot_name(name: &str) -> Option<u32> {
    let hex = name.strip_suffix(SNAPSHOT_SUFFIX)?;
    parse_hex8(hex)
}

/// `%08x_%08x.wal.lz4`.
///
/// Offsets of 2^32 and above would need more than 8 digits; Litestream v0.3.13 writes such
/// names but never reads them back, so writers must refuse them (see [`offset_fits_name`]).
pub fn format_wal_segment_name(index: u32, offset: u64) -> String {
    format!("{index:08x}_{offset:08x}{WAL_SEGMENT_SUFFIX}")
}

/// True if `offset` can be written in the 8-hex-digit segment name that v0.3.13 reads.
pub fn offset_fits_name(offset: u64) -> bool {
    offset <= u64::from(u32::MAX)
}

/// Refuse a segment position whose offset does not fit its name ([`offset_fits_name`]).
///
/// Backends call this before writing a WAL segment; the error is
/// [`Error::InvalidArgument`].
pub fn check_offset_fits_name(pos: &Pos) -> Result<()> {
    if offset_fits_name(pos.offset) {
        return Ok(());
    }
    Err(Error::InvalidArgument(format!(
        "wal offset {} of {pos} does not fit an 8-digit segment name",
        pos.offset
    )))
}

/// Parse a WAL segment base name (`^([0-9a-f]{8})_([0-9a-f]{8})\.wal\.lz4$`).
pub fn parse_wal_segment_name(name: &str) -> Option<(u32, u64)> {
    let stem = name.strip_suffix(WAL_SEGMENT_SUFFIX)?;
    let (index, offset) = stem.split_once('_')?;
    Some((parse_hex8(index)?, u64::from(parse_hex8(offset)?)))
}

fn parse_hex8(s: &str) -> Option<u32> {
    if s.len() != 8 || !s.bytes().all(is_lower_hex) {
        return None;
    }
    u32::from_str_radix(s, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(format_snapshot_name(0x1f), "0000001f.snapshot.lz4");
        assert_eq!(parse_snapshot_name("0000001f.snapshot.lz4"), Some(0x1f));
        assert_eq!(
            format_wal_segment_name(1, 0x4080),
            "00000001_00004080.wal.lz4"
        );
        assert_eq!(
            parse_wal_segment_name("00000001_00004080.wal.lz4"),
            Some((1, 0x4080))
        );
    }

    #[test]
    fn names_that_do_not_match_are_ignored() {
        assert_eq!(parse_snapshot_name("0000001F.snapshot.lz4"), None);
        assert_eq!(parse_snapshot_name("1f.snapshot.lz4"), None);
        assert_eq!(parse_snapshot_name("0000001f.snapshot.lz4.tmp"), None);
        assert_eq!(parse_wal_segment_name("00000001.wal.lz4"), None);
        assert_eq!(parse_wal_segment_name("00000001_100004080.wal.lz4"), None);
        assert_eq!(parse_wal_segment_name("00000001_0000408g.wal.lz4"), None);
    }

    #[test]
    fn offsets_beyond_the_name_are_refused() {
        let g = Generation::parse("f520e605ae791336").expect("gen");
        let fits = Pos::new(g.clone(), 1, u64::from(u32::MAX));
        assert!(check_offset_fits_name(&fits).is_ok());
        let too_far = Pos::new(g, 1, u64::from(u32::MAX) + 1);
        let err = check_offset_fits_name(&too_far).expect_err("offset too large");
        assert!(matches!(err, Error::InvalidArgument(_)));
        assert_eq!(
            err.to_string(),
            format!("wal offset 4294967296 of {too_far} does not fit an 8-digit segment name")
        );
    }

    #[test]
    fn paths_join_like_go() {
        let g = Generation::parse("f520e605ae791336").expect("gen");
        assert_eq!(
            snapshot_path("", &g, 0),
            "generations/f520e605ae791336/snapshots/00000000.snapshot.lz4"
        );
        assert_eq!(
            wal_segment_path(".", &g, 1, 0),
            "generations/f520e605ae791336/wal/00000001_00000000.wal.lz4"
        );
        assert_eq!(
            wal_segment_path("/r/x/", &g, 1, 0),
            "/r/x/generations/f520e605ae791336/wal/00000001_00000000.wal.lz4"
        );
        assert_eq!(clean("a//b/./c/.."), "a/b");
        assert_eq!(clean("/../a"), "/a");
    }
}
