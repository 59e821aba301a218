//! The generic object access of [`ReplicaClient`] (`list_objects`, `open_object`,
//! `write_object`, `object_timestamp`, `delete_objects`), the layer the Litestream v0.5 (LTX)
//! layout is read and written through.
//!
//! Most behaviours list and read the objects the v0.3 methods wrote under
//! `generations/<GEN>/snapshots/` and `generations/<GEN>/wal/`: keys every backend stores
//! the same way; [`objects_written_keep_their_timestamp`] writes LTX-style keys.

use litestream_core::ltx::keys::file_key;
use litestream_core::{layout, Error, Generation, Pos, ReplicaClient};
use time::OffsetDateTime;

use crate::{
    assert_not_found, assert_root_empty, assert_same_bytes, clear, generation, ok, payload,
    put_segment, put_snapshot, read_all, stream, FailingSource,
};

/// Where a store kept the timestamp given to `write_object`
/// (what [`objects_written_keep_their_timestamp`] found).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampKept {
    /// Beside the data: [`ReplicaClient::object_timestamp`] returns it exactly (s3's
    /// `litestream-timestamp`, abs's `litestreamtimestamp` metadata).
    Metadata,
    /// As the listed time, exactly (file: the mtime).
    ListedTime,
    /// As the listed time, in whole seconds (sftp: the mtime of SFTP v3).
    ListedTimeSeconds,
}

/// `write_object` stores an object under an LTX key (the level directory of this backend
/// kind), replaces an existing one, leaves nothing when its source fails, and keeps the
/// writer's timestamp as Litestream v0.5 does; `delete_objects` removes it, idempotently.
/// Returns where the timestamp was kept, for backend tests to check theirs.
pub async fn objects_written_keep_their_timestamp(c: &dyn ReplicaClient) -> TimestampKept {
    let kind = c.kind();
    let key = file_key(kind, 0, 2, 2);
    let (dir, name) = key.rsplit_once('/').expect("level directory");
    assert!(
        ok(c, "list_objects", c.list_objects(dir).await).is_empty(),
        "{kind}: objects_written_keep_their_timestamp needs an empty root"
    );
    let t = |ms: i128| OffsetDateTime::from_unix_timestamp_nanos(ms * 1_000_000).expect("time");
    let (first, second) = (t(1_795_690_816_369), t(1_795_690_900_042));
    let old = payload(3000, 31);
    let n = ok(
        c,
        "write_object",
        c.write_object(&key, stream(old.clone()), first).await,
    );
    assert_eq!(n, old.len() as u64, "{kind}: bytes written to {key}");
    let new = payload(70_000, 32);
    ok(
        c,
        "write_object over an existing key",
        c.write_object(&key, stream(new.clone()), second).await,
    );
    let r = c
        .write_object(&key, FailingSource::boxed(1000), first)
        .await;
    assert!(
        r.is_err(),
        "{kind}: write_object from a failing source: {r:?}"
    );
    let failed = file_key(kind, 0, 3, 3);
    let r = c
        .write_object(&failed, FailingSource::boxed(0), first)
        .await;
    assert!(
        r.is_err(),
        "{kind}: write_object from a failing source: {r:?}"
    );

    let got = read_all(ok(c, "open_object", c.open_object(&key).await)).await;
    assert_same_bytes(c, &got, &new, &format!("object {key} after a replacement"));
    let listed = ok(c, "list_objects", c.list_objects(dir).await);
    let names: Vec<_> = listed.iter().map(|o| (o.name.as_str(), o.size)).collect();
    assert_eq!(
        names,
        [(name, new.len() as u64)],
        "{kind}: list_objects({dir:?}) after writes, one of them replaced, two failed"
    );
    let kept = match ok(c, "object_timestamp", c.object_timestamp(&key).await) {
        Some(ts) => {
            assert_eq!(ts, second, "{kind}: object_timestamp({key:?})");
            TimestampKept::Metadata
        }
        None if listed[0].modified == second => TimestampKept::ListedTime,
        None => {
            let whole = second - time::Duration::nanoseconds(i64::from(second.nanosecond()));
            assert_eq!(
                listed[0].modified, whole,
                "{kind}: {key} has no timestamp metadata, and its listed time is not the \
                 writer's timestamp"
            );
            TimestampKept::ListedTimeSeconds
        }
    };

    let keys = vec![key.clone(), failed];
    ok(c, "delete_objects", c.delete_objects(&keys).await);
    ok(c, "delete_objects again", c.delete_objects(&keys).await);
    assert_not_found(c, c.open_object(&key).await, "a deleted object");
    assert!(
        ok(c, "list_objects", c.list_objects(dir).await).is_empty(),
        "{kind}: list_objects({dir:?}) after delete_objects"
    );
    match c.delete_objects(&["../x".to_string()]).await {
        Err(Error::InvalidArgument(_)) => {}
        other => panic!("{kind}: delete_objects([\"../x\"]) gave {other:?}, not InvalidArgument"),
    }
    kept
}

/// `generations/<g>/snapshots`, relative to the root.
fn snapshots_dir(g: &Generation) -> String {
    layout::snapshots_dir("", g)
}

/// Directories that do not exist list as empty, and so do directories that hold only
/// sub-directories (the root, `generations`, a generation): listings are one level deep.
pub async fn object_listings_are_one_level_deep(c: &dyn ReplicaClient) {
    assert_root_empty(c, "object_listings_are_one_level_deep").await;
    let g = generation("00000000000000b1");
    let kind = c.kind();
    let missing = [
        "ltx/0",
        "0009",
        "ltx",
        "generations",
        &snapshots_dir(&g),
        "",
    ];
    for dir in missing {
        let listed = ok(c, "list a missing directory", c.list_objects(dir).await);
        assert!(
            listed.is_empty(),
            "{kind}: list_objects({dir:?}) on an empty root: {listed:?}"
        );
    }
    put_snapshot(c, &g, 1, vec![1; 3]).await;
    put_segment(c, &Pos::new(g.clone(), 1, 0), vec![2; 3]).await;
    let gen_dir = layout::generation_dir("", &g);
    for dir in ["", "generations", gen_dir.as_str()] {
        let listed = ok(
            c,
            "list a directory of directories",
            c.list_objects(dir).await,
        );
        assert!(
            listed.is_empty(),
            "{kind}: list_objects({dir:?}) lists sub-directories: {listed:?}"
        );
    }
    clear(c).await;
}

/// Objects list by their name relative to the directory, sorted by name, with the size and
/// time the v0.3 listings report; each reads back byte for byte and has no writer timestamp.
pub async fn objects_list_sorted_and_read_back(c: &dyn ReplicaClient) {
    assert_root_empty(c, "objects_list_sorted_and_read_back").await;
    let g = generation("00000000000000b2");
    let kind = c.kind();
    let mut written = Vec::new();
    for (seed, (index, len)) in (21u64..).zip([(0x10u32, 300usize), (2, 0), (0xab, 5000), (0, 17)])
    {
        let data = payload(len, seed);
        put_snapshot(c, &g, index, data.clone()).await;
        written.push((layout::format_snapshot_name(index), data));
    }
    put_segment(c, &Pos::new(g.clone(), 3, 0x1000), vec![5; 9]).await;
    written.sort();

    let dir = snapshots_dir(&g);
    let listed = ok(c, "list_objects", c.list_objects(&dir).await);
    let snapshots = ok(c, "list snapshots", c.snapshots(&g).await);
    let got: Vec<_> = listed
        .iter()
        .map(|o| (o.name.as_str(), o.size, o.modified))
        .collect();
    let want: Vec<_> = written
        .iter()
        .zip(&snapshots)
        .map(|((name, data), s)| (name.as_str(), data.len() as u64, s.created_at))
        .collect();
    assert_eq!(
        got, want,
        "{kind}: list_objects({dir:?}) vs the snapshots written and listed"
    );

    for (name, data) in &written {
        let key = format!("{dir}/{name}");
        let read = read_all(ok(c, "open_object", c.open_object(&key).await)).await;
        assert_same_bytes(c, &read, data, &format!("object {key}"));
        let ts = ok(c, "object_timestamp", c.object_timestamp(&key).await);
        assert_eq!(
            ts, None,
            "{kind}: object_timestamp({key:?}) of an object stored without one"
        );
    }
    let wal = layout::wal_dir("", &g);
    let names: Vec<_> = ok(c, "list_objects", c.list_objects(&wal).await)
        .into_iter()
        .map(|o| o.name)
        .collect();
    assert_eq!(
        names,
        [layout::format_wal_segment_name(3, 0x1000)],
        "{kind}: list_objects({wal:?})"
    );
    clear(c).await;
}

/// Opening a key that does not exist (in a missing or an existing directory, or one deleted)
/// fails with a not-found error that is not retryable.
pub async fn missing_objects_open_as_not_found(c: &dyn ReplicaClient) {
    assert_root_empty(c, "missing_objects_open_as_not_found").await;
    let g = generation("00000000000000b3");
    let dir = snapshots_dir(&g);
    let key = format!("{dir}/{}", layout::format_snapshot_name(1));
    assert_not_found(
        c,
        c.open_object("ltx/0/0000000000000001-0000000000000001.ltx")
            .await,
        "a key in a missing directory",
    );
    assert_not_found(
        c,
        c.open_object(&key).await,
        "a key in a missing generation",
    );
    put_snapshot(c, &g, 2, vec![1; 8]).await;
    assert_not_found(
        c,
        c.open_object(&key).await,
        "another key in an existing directory",
    );
    ok(c, "delete snapshot", c.delete_snapshot(&g, 2).await);
    let deleted = format!("{dir}/{}", layout::format_snapshot_name(2));
    assert_not_found(c, c.open_object(&deleted).await, "a deleted key");
    clear(c).await;
}

/// Keys and directories that are not relative paths (leading or trailing `/`, `..`, empty
/// parts) are refused with [`Error::InvalidArgument`], before any request.
pub async fn non_relative_keys_are_refused(c: &dyn ReplicaClient) {
    let kind = c.kind();
    for bad in [
        "/etc/passwd",
        "../outside",
        "ltx/../../x",
        "ltx//0",
        "ltx/0/",
    ] {
        match c.open_object(bad).await {
            Err(Error::InvalidArgument(_)) => {}
            Err(e) => panic!("{kind}: open_object({bad:?}) gave {e:?}, not InvalidArgument"),
            Ok(_) => panic!("{kind}: open_object({bad:?}) succeeded"),
        }
        match c.list_objects(bad).await {
            Err(Error::InvalidArgument(_)) => {}
            other => panic!("{kind}: list_objects({bad:?}) gave {other:?}, not InvalidArgument"),
        }
        match c.object_timestamp(bad).await {
            Err(Error::InvalidArgument(_)) => {}
            other => {
                panic!("{kind}: object_timestamp({bad:?}) gave {other:?}, not InvalidArgument")
            }
        }
    }
}
