use std::sync::Arc;

use time::OffsetDateTime;

use super::detect::{find_any_target, restore_any, AnyRestoreOutcome, RestoreTarget};
use super::keys::file_key;
use super::testutil::{ltx_file, page, Encoding};
use crate::memory::MemoryClient;
use crate::restore::RestoreOptions;
use crate::{Error, ReplicaClient};

fn at(secs: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_700_000_000 + secs).expect("time")
}

/// Put an LTX file at `level` on `c`.
fn put(c: &MemoryClient, level: u8, min: u64, max: u64, secs: i64, bytes: Vec<u8>) {
    c.put_object(&file_key("memory", level, min, max), bytes, at(secs), None)
        .expect("put");
}

/// Snapshot 1-1 with pages 1..=6, L0 2-2 rewriting page 3, L0 3-3 (frame encoding)
/// rewriting page 2 and shrinking the database to 4 pages.
fn replica() -> (MemoryClient, Vec<u8>) {
    let c = MemoryClient::new();
    let ps = 1024u32;
    let snap: Vec<(u32, Vec<u8>)> = (1..=6).map(|p| (p, page(ps, p))).collect();
    put(
        &c,
        9,
        1,
        1,
        1,
        ltx_file(ps, 6, 1, 1, 1000, &snap, Encoding::Block),
    );
    put(
        &c,
        0,
        1,
        1,
        1,
        ltx_file(ps, 6, 1, 1, 1000, &snap, Encoding::Block),
    );
    let p3 = vec![(3, page(ps, 33))];
    put(
        &c,
        0,
        2,
        2,
        2,
        ltx_file(ps, 6, 2, 2, 2000, &p3, Encoding::Block),
    );
    let p2 = vec![(2, page(ps, 22)), (4, page(ps, 44))];
    put(
        &c,
        0,
        3,
        3,
        3,
        ltx_file(ps, 4, 3, 3, 3000, &p2, Encoding::Frame),
    );
    let mut want = Vec::new();
    for (p, seed) in [(1, 1), (2, 22), (3, 33), (4, 44)] {
        let _ = p;
        want.extend(page(ps, seed));
    }
    (c, want)
}

#[tokio::test]
async fn merge_writes_the_newest_page_and_truncates() {
    let (c, want) = replica();
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("out.db");
    let client: Arc<dyn ReplicaClient> = Arc::new(c);
    let got = restore_any(client, &RestoreOptions::new(&out), None)
        .await
        .expect("restore");
    match got {
        AnyRestoreOutcome::Ltx(o) => assert_eq!((o.txid, o.files, o.db_size), (3, 3, 4096)),
        other => panic!("{other:?}"),
    }
    assert_eq!(std::fs::read(&out).expect("read"), want);
    assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 1);
}

#[tokio::test]
async fn txid_and_timestamp_targets() {
    let (c, _) = replica();
    let dir = tempfile::tempdir().expect("tmp");
    let client: Arc<dyn ReplicaClient> = Arc::new(c.clone());
    let out = dir.path().join("t2.db");
    restore_any(client.clone(), &RestoreOptions::new(&out), Some(2))
        .await
        .expect("restore");
    let b = std::fs::read(&out).expect("read");
    assert_eq!(b.len(), 6 * 1024);
    assert_eq!(&b[2048..3072], &page(1024, 33)[..]);
    // -timestamp uses the writer's timestamp where the backend keeps one.
    c.put_object(
        &file_key("memory", 0, 3, 3),
        ltx_file(1024, 4, 3, 3, 0, &[(2, page(1024, 22))], Encoding::Block),
        at(3),
        Some(at(100)),
    )
    .expect("put");
    let mut opts = RestoreOptions::new(dir.path().join("ts.db"));
    opts.timestamp = Some(at(50));
    let target = find_any_target(client.as_ref(), &opts, None)
        .await
        .expect("target");
    match target {
        Some(RestoreTarget::Ltx(plan)) => assert_eq!(plan.last().map(|f| f.max_txid), Some(2)),
        other => panic!("{other:?}"),
    }
}

async fn restore_err(c: MemoryClient) -> (Error, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("out.db");
    let client: Arc<dyn ReplicaClient> = Arc::new(c);
    let err = restore_any(client, &RestoreOptions::new(&out), None)
        .await
        .expect_err("must fail");
    assert_eq!(
        std::fs::read_dir(dir.path()).expect("dir").count(),
        0,
        "left files behind"
    );
    (err, dir)
}

#[tokio::test]
async fn page_size_mismatch_names_the_file() {
    let (c, _) = replica();
    put(
        &c,
        0,
        3,
        3,
        3,
        ltx_file(512, 4, 3, 3, 0, &[(2, page(512, 1))], Encoding::Block),
    );
    let (err, _d) = restore_err(c).await;
    let msg = err.to_string();
    assert!(
        msg.contains("ltx/0/0000000000000003-0000000000000003.ltx"),
        "{msg}"
    );
    assert!(msg.contains("page size 512"), "{msg}");
}

#[tokio::test]
async fn missing_pages_and_missing_snapshot_are_errors() {
    // The snapshot level and L0 1-1 hold only pages 1..=6, but L0 2-2 grows the database to
    // 8 pages with page 8 only: page 7 comes from nowhere.
    let (c, _) = replica();
    c.delete_object(&file_key("memory", 0, 3, 3)).expect("del");
    put(
        &c,
        0,
        3,
        3,
        3,
        ltx_file(1024, 8, 3, 3, 0, &[(8, page(1024, 8))], Encoding::Block),
    );
    let (err, _d) = restore_err(c).await;
    assert!(err.to_string().contains("pages 7..=7"), "{err}");

    // No file starts at TXID 1.
    let c = MemoryClient::new();
    put(
        &c,
        0,
        2,
        2,
        2,
        ltx_file(1024, 1, 2, 2, 0, &[(1, page(1024, 1))], Encoding::Block),
    );
    let (err, _d) = restore_err(c).await;
    assert!(err.to_string().contains("no snapshot"), "{err}");
}

#[tokio::test]
async fn header_txids_must_match_the_name() {
    let (c, _) = replica();
    put(
        &c,
        0,
        3,
        3,
        3,
        ltx_file(1024, 4, 3, 4, 0, &[(2, page(1024, 1))], Encoding::Block),
    );
    let (err, _d) = restore_err(c).await;
    assert!(err.to_string().contains("not those of its name"), "{err}");
}

#[tokio::test]
async fn empty_replica_has_no_target() {
    let c = MemoryClient::new();
    let opts = RestoreOptions::new("/nonexistent/x.db");
    assert!(find_any_target(&c, &opts, None)
        .await
        .expect("ok")
        .is_none());
    assert!(find_any_target(&c, &opts, Some(3))
        .await
        .expect("ok")
        .is_none());
}
