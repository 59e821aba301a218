//! Turning a backend's directory listing into the records [`ReplicaClient`] returns.
//!
//! Every backend lists a directory in its own way (`read_dir`, ListObjectsV2, an Azure blob
//! listing, SFTP `readdir`) and then hands the entries to these functions, which apply the
//! shared part of the [`ReplicaClient`] contract: names that do not parse (see
//! [`crate::layout`]) are ignored, and the result is sorted.
//!
//! [`ReplicaClient`]: crate::ReplicaClient

use std::collections::BTreeSet;

use time::OffsetDateTime;

use crate::layout;
use crate::pos::Generation;
use crate::replica_client::{SnapshotInfo, WalSegmentInfo};

/// One object of a directory listing, as a backend reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedObject {
    /// Name relative to the listed directory (normally its last path element).
    pub name: String,
    /// Stored size in bytes.
    pub size: u64,
    /// Last-modified time as reported by the backend (file mtime, S3 `LastModified`, ...).
    pub modified: OffsetDateTime,
}

/// The generations named by `names`, sorted and without duplicates.
///
/// Names that are not generation names ([`Generation::parse`]) are ignored.
pub fn generations_from_names<I>(names: I) -> Vec<Generation>
where
    I: IntoIterator,
    I::Item: AsRef<str>,
{
    names
        .into_iter()
        .filter_map(|n| Generation::parse(n.as_ref()))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// The snapshots of `generation` among `entries`, sorted by index.
///
/// Entries whose name is not a snapshot name ([`layout::parse_snapshot_name`]) are ignored;
/// size and created-at time are the entry's size and last-modified time.
pub fn snapshots_from_listing(
    generation: &Generation,
    entries: impl IntoIterator<Item = ListedObject>,
) -> Vec<SnapshotInfo> {
    let mut out: Vec<SnapshotInfo> = entries
        .into_iter()
        .filter_map(|e| {
            let index = layout::parse_snapshot_name(&e.name)?;
            Some(SnapshotInfo::new(generation, index, e.size, e.modified))
        })
        .collect();
    out.sort_by_key(|s| s.index);
    out
}

/// The WAL segments of `generation` among `entries`, sorted by (index, offset).
///
/// Entries whose name is not a segment name ([`layout::parse_wal_segment_name`]) are
/// ignored; size and created-at time are the entry's size and last-modified time.
pub fn wal_segments_from_listing(
    generation: &Generation,
    entries: impl IntoIterator<Item = ListedObject>,
) -> Vec<WalSegmentInfo> {
    let mut out: Vec<WalSegmentInfo> = entries
        .into_iter()
        .filter_map(|e| {
            let (index, offset) = layout::parse_wal_segment_name(&e.name)?;
            Some(WalSegmentInfo::new(
                generation, index, offset, e.size, e.modified,
            ))
        })
        .collect();
    out.sort_by_key(|s| (s.index, s.offset));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(name: &str, size: u64, secs: i64) -> ListedObject {
        ListedObject {
            name: name.to_string(),
            size,
            modified: at(secs),
        }
    }

    fn generation(s: &str) -> Generation {
        Generation::parse(s).expect("generation")
    }

    #[test]
    fn generations_are_sorted_deduplicated_and_filtered() {
        let gens = generations_from_names([
            "f520e605ae791336",
            "0000000000000001",
            "F520E605AE791336",
            "f520e605ae791336",
            "f520e605ae79133",
            "f520e605ae791336.tmp",
            "",
        ]);
        assert_eq!(
            gens,
            vec![
                generation("0000000000000001"),
                generation("f520e605ae791336")
            ]
        );
        let owned: Vec<String> = vec!["0000000000000002".into()];
        assert_eq!(
            generations_from_names(&owned),
            vec![generation("0000000000000002")]
        );
        assert!(generations_from_names(Vec::<String>::new()).is_empty());
    }

    /// Snapshots and segments out of order, with names each kind must ignore.
    fn mixed_listing() -> Vec<ListedObject> {
        vec![
            obj("00000010.snapshot.lz4", 30, 3),
            obj("00000001_00000000.wal.lz4", 6, 6),
            obj("00000002.snapshot.lz4", 20, 2),
            obj("00000000_00001000.wal.lz4", 5, 5),
            obj("00000002.snapshot.lz4.tmp", 99, 9),
            obj("0000000A.snapshot.lz4", 99, 9),
            obj("sub/00000003.snapshot.lz4", 99, 9),
            obj("00000000_00000020.wal.lz4.tmp", 99, 9),
            obj("00000000_100000000.wal.lz4", 99, 9),
            obj("00000000.wal.lz4", 99, 9),
            obj("00000000_00000000.wal.lz4", 4, 4),
            obj("00000000.snapshot.lz4", 10, 1),
        ]
    }

    fn at(secs: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(secs).expect("time")
    }

    #[test]
    fn snapshots_are_sorted_by_index_and_filtered() {
        let g = generation("f520e605ae791336");
        assert_eq!(
            snapshots_from_listing(&g, mixed_listing()),
            vec![
                SnapshotInfo::new(&g, 0, 10, at(1)),
                SnapshotInfo::new(&g, 2, 20, at(2)),
                SnapshotInfo::new(&g, 0x10, 30, at(3)),
            ]
        );
    }

    #[test]
    fn wal_segments_are_sorted_by_index_then_offset_and_filtered() {
        let g = generation("f520e605ae791336");
        assert_eq!(
            wal_segments_from_listing(&g, mixed_listing()),
            vec![
                WalSegmentInfo::new(&g, 0, 0, 4, at(4)),
                WalSegmentInfo::new(&g, 0, 0x1000, 5, at(5)),
                WalSegmentInfo::new(&g, 1, 0, 6, at(6)),
            ]
        );
    }

    #[test]
    fn empty_listings_give_empty_results() {
        let g = generation("f520e605ae791336");
        assert!(snapshots_from_listing(&g, Vec::new()).is_empty());
        assert!(wal_segments_from_listing(&g, Vec::new()).is_empty());
    }
}
