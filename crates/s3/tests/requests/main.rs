//! Request counting, in its own test binary because the counters are process-wide (the other
//! tests are in the `s3` binary): writes make no LIST calls, every request is counted once, and
//! a multipart upload counts its parts.

#[path = "../s3/common.rs"]
mod common;

use common::{bytes, client, read_all, stream};
use litestream_core::metrics::{operation_counts, Operation};
use litestream_core::{Generation, Pos, ReplicaClient};

fn count(op: Operation) -> (u64, u64) {
    operation_counts()
        .into_iter()
        .find(|(t, o, _)| *t == litestream_s3::TYPE && *o == op)
        .map(|(_, _, c)| (c.total, c.bytes))
        .unwrap_or((0, 0))
}

#[tokio::test]
async fn writes_make_no_list_calls_and_every_request_is_counted() {
    let c = client("requests").await;
    let g = Generation::parse("0a0b0c0d0e0f0a0b").expect("gen");
    let list0 = count(Operation::List);
    let put0 = count(Operation::Put);
    c.write_snapshot(&g, 0, stream(bytes(1000, 1)))
        .await
        .expect("snap");
    for i in 0..10u64 {
        c.write_wal_segment(&Pos::new(g.clone(), 0, i * 4152), stream(bytes(100, i)))
            .await
            .expect("wal");
    }
    assert_eq!(
        count(Operation::List),
        list0,
        "steady-state writes must not LIST"
    );
    let put1 = count(Operation::Put);
    assert_eq!(put1.0 - put0.0, 11, "one PUT per small object");
    assert_eq!(put1.1 - put0.1, 1000 + 10 * 100);

    // Multipart: create + 2 parts + complete = 4 PUT requests.
    let big = bytes(litestream_s3::MIN_PART_SIZE + 10, 3);
    c.write_snapshot(&g, 1, stream(big.clone()))
        .await
        .expect("multipart");
    let put2 = count(Operation::Put);
    assert_eq!(put2.0 - put1.0, 4);
    assert_eq!(put2.1 - put1.1, big.len() as u64);

    let get0 = count(Operation::Get);
    let got = read_all(c.open_snapshot(&g, 1).await.expect("open")).await;
    assert_eq!(got.len(), big.len());
    let get1 = count(Operation::Get);
    assert_eq!((get1.0 - get0.0, get1.1 - get0.1), (1, big.len() as u64));

    let list1 = count(Operation::List);
    c.wal_segments(&g).await.expect("list");
    assert_eq!(count(Operation::List).0 - list1.0, 1);
    let del0 = count(Operation::Delete);
    c.delete_generation(&g).await.expect("delete");
    assert_eq!(count(Operation::Delete).0 - del0.0, 1, "one batch delete");
}
