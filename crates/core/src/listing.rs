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

use crate::error::{Error, Result};
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

/// Check that `path` is a key or directory relative to a replica root, as
/// [`ReplicaClient::list_objects`](crate::ReplicaClient::list_objects) and
/// [`ReplicaClient::open_object`](crate::ReplicaClient::open_object) take them: `/`-separated,
/// no leading or trailing `/`, no empty, `.` or `..` element. `""` (the root) passes only as a
/// directory (`dir`).
pub fn check_relative(path: &str, dir: bool) -> Result<()> {
    if path.is_empty() && dir {
        return Ok(());
    }
    if path
        .split('/')
        .any(|p| p.is_empty() || p == "." || p == "..")
    {
        let what = if dir { "directory" } else { "key" };
        return Err(Error::InvalidArgument(format!(
            "replica {what} {path:?} is not a relative path (no leading or trailing '/', \
             no empty, '.' or '..' parts)"
        )));
    }
    Ok(())
}

/// The root key prefix of a replica configured with `path`: leading slashes dropped (keys
/// are relative to the bucket or container) and `.`/`..`/`//` cleaned as Go's `path.Join`
/// does; `""` for the bucket's root.
pub fn root_prefix(path: &str) -> String {
    let cleaned = layout::clean(path.trim_start_matches('/'));
    if cleaned == "." {
        String::new()
    } else {
        cleaned.trim_start_matches('/').to_string()
    }
}

/// The full key of the object `key` (relative, see [`check_relative`]) under `root`.
pub fn object_key(root: &str, key: &str) -> Result<String> {
    check_relative(key, false)?;
    Ok(layout::join(&[root, key]))
}

/// The key prefix that lists the directory `dir` (relative, see [`check_relative`]) under
/// `root`: `""` for an empty root and directory, else the joined path with a trailing `/`.
pub fn dir_prefix(root: &str, dir: &str) -> Result<String> {
    check_relative(dir, true)?;
    let joined = layout::join(&[root, dir]);
    Ok(match joined.as_str() {
        "." => String::new(),
        "/" => "/".to_string(),
        _ => format!("{joined}/"),
    })
}

/// The objects directly under `prefix` among `keys` (full keys with their size and
/// last-modified time), named relative to it and sorted by name: what
/// [`ReplicaClient::list_objects`](crate::ReplicaClient::list_objects) returns. Keys outside
/// `prefix` or in a sub-directory of it are dropped.
pub fn direct_children<I>(prefix: &str, keys: I) -> Vec<ListedObject>
where
    I: IntoIterator<Item = ListedObject>,
{
    let mut out: Vec<ListedObject> = keys
        .into_iter()
        .filter_map(|mut o| {
            let name = o.name.strip_prefix(prefix)?;
            if name.is_empty() || name.contains('/') {
                return None;
            }
            o.name = name.to_string();
            Some(o)
        })
        .collect();
    sort_by_name(&mut out);
    out
}

/// Sort a listing by name, as [`ReplicaClient::list_objects`](crate::ReplicaClient::list_objects)
/// returns it.
pub fn sort_by_name(objects: &mut [ListedObject]) {
    objects.sort_by(|a, b| a.name.cmp(&b.name));
}

/// The writer's timestamp Litestream v0.5 stores in object metadata (`litestream-timestamp`
/// on s3, `litestreamtimestamp` on abs; RFC 3339 with nanoseconds), or `None` if `value` is
/// missing or does not parse (v0.5 then uses the listed time too).
pub fn parse_writer_timestamp(value: Option<&str>) -> Option<OffsetDateTime> {
    let value = value?;
    match crate::timefmt::parse_rfc3339(value.trim()) {
        Ok(t) => Some(t),
        Err(_) => {
            tracing::warn!(
                value,
                "ignoring an unparseable litestream timestamp in object metadata"
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_prefix_is_cleaned() {
        assert_eq!(root_prefix(""), "");
        assert_eq!(root_prefix("."), "");
        assert_eq!(root_prefix("/a//b/"), "a/b");
        assert_eq!(root_prefix("a/../b/./c"), "b/c");
        assert_eq!(root_prefix("db"), "db");
    }

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

    #[test]
    fn relative_paths_are_checked() {
        for ok in ["ltx/0", "0000", "generations/x/snapshots/a.lz4", "a"] {
            check_relative(ok, false).expect(ok);
            check_relative(ok, true).expect(ok);
        }
        check_relative("", true).expect("root dir");
        for bad in ["", "/ltx", "ltx/", "ltx//0", "../x", "ltx/./0", "ltx/.."] {
            let e = check_relative(bad, false).expect_err(bad);
            assert!(e.to_string().contains("not a relative path"), "{e}");
            if !bad.is_empty() {
                check_relative(bad, true).expect_err(bad);
            }
        }
    }

    #[test]
    fn keys_and_prefixes_join_the_root() {
        assert_eq!(
            object_key("db", "0000/a.ltx").expect("key"),
            "db/0000/a.ltx"
        );
        assert_eq!(object_key("", "ltx/0/a.ltx").expect("key"), "ltx/0/a.ltx");
        assert_eq!(
            object_key("/srv/r", "ltx/9/a").expect("key"),
            "/srv/r/ltx/9/a"
        );
        assert!(object_key("db", "../other").is_err());
        assert_eq!(dir_prefix("db", "0009").expect("prefix"), "db/0009/");
        assert_eq!(dir_prefix("db", "").expect("prefix"), "db/");
        assert_eq!(dir_prefix("", "").expect("prefix"), "");
        assert_eq!(dir_prefix("", "ltx/1").expect("prefix"), "ltx/1/");
        assert_eq!(dir_prefix("/", "").expect("prefix"), "/");
        assert!(dir_prefix("db", "/abs").is_err());
    }

    #[test]
    fn direct_children_are_relative_sorted_and_shallow() {
        let got = direct_children(
            "db/0000/",
            vec![
                obj("db/0000/b.ltx", 2, 2),
                obj("db/0000/sub/c.ltx", 3, 3),
                obj("db/00001/x.ltx", 4, 4),
                obj("db/0000/", 0, 0),
                obj("db/0000/a.ltx", 1, 1),
            ],
        );
        assert_eq!(got, vec![obj("a.ltx", 1, 1), obj("b.ltx", 2, 2)]);
    }

    #[test]
    fn writer_timestamps_parse_rfc3339_nano() {
        let t = parse_writer_timestamp(Some("2026-12-06T01:02:03.123456789Z")).expect("time");
        assert_eq!(t.unix_timestamp(), 1_796_518_923);
        assert_eq!(t.nanosecond(), 123_456_789);
        assert_eq!(parse_writer_timestamp(Some("not a time")), None);
        assert_eq!(parse_writer_timestamp(None), None);
    }
}
