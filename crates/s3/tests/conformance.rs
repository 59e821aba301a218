//! The `ReplicaClient` contract against the local S3 test server (moto), plus S3-specific
//! behaviour: multipart uploads, pagination and clear errors for bad settings.

mod common;

use common::{bytes, client, env, read_all, stream};
use futures::StreamExt;
use litestream_core::config::ReplicaConfig;
use litestream_core::{layout, Generation, Pos, ReplicaClient};
use litestream_s3::{S3Builder, S3Client, MIN_PART_SIZE};

fn gen(s: &str) -> Generation {
    Generation::parse(s).expect("generation")
}

async fn put_raw(c: &S3Client, key: &str, data: &[u8]) {
    c.sdk_client()
        .put_object()
        .bucket(c.bucket())
        .key(key)
        .body(data.to_vec().into())
        .send()
        .await
        .expect("raw put");
}

async fn raw_keys(c: &S3Client) -> Vec<String> {
    let out = c
        .sdk_client()
        .list_objects_v2()
        .bucket(c.bucket())
        .prefix(format!("{}/", c.path()))
        .send()
        .await
        .expect("raw list");
    out.contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_string))
        .collect()
}

#[tokio::test]
async fn snapshots_and_wal_segments_round_trip_byte_for_byte() {
    let c = client("round-trip").await;
    let g = gen("0123456789abcdef");
    let snap = bytes(10_000, 1);
    let info = c
        .write_snapshot(&g, 3, stream(snap.clone()))
        .await
        .expect("write snapshot");
    assert_eq!((info.index, info.size), (3, snap.len() as u64));
    assert_eq!(
        read_all(c.open_snapshot(&g, 3).await.expect("open")).await,
        snap
    );

    let pos = Pos::new(g.clone(), 3, 0x4080);
    let seg = bytes(777, 2);
    let info = c
        .write_wal_segment(&pos, stream(seg.clone()))
        .await
        .expect("write wal");
    assert_eq!((info.index, info.offset, info.size), (3, 0x4080, 777));
    assert_eq!(
        read_all(c.open_wal_segment(&pos).await.expect("open")).await,
        seg
    );

    // Empty objects round-trip too.
    let empty = Pos::new(g.clone(), 4, 0);
    c.write_wal_segment(&empty, stream(Vec::new()))
        .await
        .expect("write empty");
    assert!(read_all(c.open_wal_segment(&empty).await.expect("open"))
        .await
        .is_empty());

    // Keys are exactly Litestream's.
    let mut keys = raw_keys(&c).await;
    keys.sort();
    let root = c.path().to_string();
    assert_eq!(
        keys,
        vec![
            format!("{root}/generations/0123456789abcdef/snapshots/00000003.snapshot.lz4"),
            format!("{root}/generations/0123456789abcdef/wal/00000003_00004080.wal.lz4"),
            format!("{root}/generations/0123456789abcdef/wal/00000004_00000000.wal.lz4"),
        ]
    );

    // Writing an existing key replaces it.
    let snap2 = bytes(500, 3);
    c.write_snapshot(&g, 3, stream(snap2.clone()))
        .await
        .expect("overwrite");
    assert_eq!(
        read_all(c.open_snapshot(&g, 3).await.expect("open")).await,
        snap2
    );
    assert_eq!(c.snapshots(&g).await.expect("list").len(), 1);
    c.delete_generation(&g).await.expect("cleanup");
}

#[tokio::test]
async fn listings_are_sorted_and_ignore_names_that_do_not_parse() {
    let c = client("listing").await;
    let gens = ["ffffffffffffffff", "0000000000000001", "a0a0a0a0a0a0a0a0"];
    for (i, g) in gens.iter().enumerate() {
        c.write_snapshot(&gen(g), 0, stream(vec![i as u8; 10]))
            .await
            .expect("write");
    }
    let g = gen("a0a0a0a0a0a0a0a0");
    for idx in [0x10u32, 2, 0xff] {
        c.write_snapshot(&g, idx, stream(vec![1; 5]))
            .await
            .expect("snap");
    }
    for (idx, off) in [(2u32, 0x20u64), (1, 0x1000), (1, 0), (2, 0), (1, 0x10)] {
        c.write_wal_segment(&Pos::new(g.clone(), idx, off), stream(vec![2; 3]))
            .await
            .expect("wal");
    }
    // Junk that Litestream ignores.
    let root = c.path().to_string();
    for junk in [
        "generations/not-a-generation/snapshots/00000000.snapshot.lz4",
        "generations/A0A0A0A0A0A0A0A0/snapshots/00000000.snapshot.lz4",
        "generations/a0a0a0a0a0a0a0a0/snapshots/0000001F.snapshot.lz4",
        "generations/a0a0a0a0a0a0a0a0/snapshots/00000001.snapshot.lz4.tmp",
        "generations/a0a0a0a0a0a0a0a0/snapshots/readme.txt",
        "generations/a0a0a0a0a0a0a0a0/wal/00000001.wal.lz4",
        "generations/a0a0a0a0a0a0a0a0/wal/00000001_100004080.wal.lz4",
        "generations/a0a0a0a0a0a0a0a0/wal/sub/00000001_00000000.wal.lz4",
        "generations/stray-file",
    ] {
        put_raw(&c, &format!("{root}/{junk}"), b"junk").await;
    }

    let listed: Vec<String> = c
        .generations()
        .await
        .expect("generations")
        .iter()
        .map(|g| g.to_string())
        .collect();
    assert_eq!(
        listed,
        vec!["0000000000000001", "a0a0a0a0a0a0a0a0", "ffffffffffffffff"]
    );
    let snaps: Vec<u32> = c
        .snapshots(&g)
        .await
        .expect("snapshots")
        .iter()
        .map(|s| s.index)
        .collect();
    assert_eq!(snaps, vec![0, 2, 0x10, 0xff]);
    let segs = c.wal_segments(&g).await.expect("wal");
    let segs: Vec<(u32, u64)> = segs.iter().map(|s| (s.index, s.offset)).collect();
    assert_eq!(
        segs,
        vec![(1, 0), (1, 0x10), (1, 0x1000), (2, 0), (2, 0x20)]
    );
    let s = &c.snapshots(&g).await.expect("snapshots")[0];
    assert_eq!(s.size, 10);
    assert!(s.created_at.year() >= 2024, "created_at from LastModified");

    for g in gens {
        c.delete_generation(&gen(g))
            .await
            .expect("delete generation");
    }
    // Junk under generations that are not ours stays; our generations are gone.
    assert!(c.generations().await.expect("generations").is_empty());
    let left = raw_keys(&c).await;
    assert!(
        left.iter().all(|k| !k.contains("/a0a0a0a0a0a0a0a0/")),
        "{left:?}"
    );
}

#[tokio::test]
async fn missing_objects_are_not_found_and_missing_listings_are_empty() {
    let c = client("missing").await;
    let g = gen("1111111111111111");
    assert!(c.generations().await.expect("empty root").is_empty());
    assert!(c.snapshots(&g).await.expect("no gen").is_empty());
    assert!(c.wal_segments(&g).await.expect("no gen").is_empty());
    let e = c
        .open_snapshot(&g, 0)
        .await
        .err()
        .expect("missing snapshot");
    assert!(e.is_not_found(), "{e}");
    assert!(e.to_string().contains("00000000.snapshot.lz4"), "{e}");
    let e = c
        .open_wal_segment(&Pos::new(g.clone(), 0, 0))
        .await
        .err()
        .expect("missing wal");
    assert!(e.is_not_found(), "{e}");
    assert!(!e.is_retryable());
}

#[tokio::test]
async fn deletes_are_idempotent() {
    let c = client("delete").await;
    let g = gen("2222222222222222");
    c.write_snapshot(&g, 1, stream(vec![1; 10]))
        .await
        .expect("write");
    let p1 = Pos::new(g.clone(), 1, 0);
    let p2 = Pos::new(g.clone(), 1, 0x30);
    for p in [&p1, &p2] {
        c.write_wal_segment(p, stream(vec![2; 10]))
            .await
            .expect("write");
    }
    c.delete_snapshot(&g, 1).await.expect("delete");
    c.delete_snapshot(&g, 1).await.expect("delete again");
    c.delete_snapshot(&g, 9)
        .await
        .expect("delete never written");
    assert!(c.snapshots(&g).await.expect("list").is_empty());
    c.delete_wal_segments(std::slice::from_ref(&p1))
        .await
        .expect("delete one");
    c.delete_wal_segments(&[p1.clone(), p2.clone()])
        .await
        .expect("delete both");
    c.delete_wal_segments(&[]).await.expect("delete none");
    assert!(c.wal_segments(&g).await.expect("list").is_empty());
    c.delete_generation(&g).await.expect("delete gen");
    c.delete_generation(&gen("3333333333333333"))
        .await
        .expect("delete missing gen");
}

#[tokio::test]
async fn delete_generation_removes_only_that_generation() {
    let c = client("delete-gen").await;
    let keep = gen("4444444444444444");
    let drop = gen("5555555555555555");
    for g in [&keep, &drop] {
        c.write_snapshot(g, 0, stream(vec![0; 4]))
            .await
            .expect("snap");
        c.write_wal_segment(&Pos::new(g.clone(), 0, 0), stream(vec![0; 4]))
            .await
            .expect("wal");
    }
    c.delete_generation(&drop).await.expect("delete");
    assert_eq!(c.generations().await.expect("gens"), vec![keep.clone()]);
    assert!(c.snapshots(&drop).await.expect("snaps").is_empty());
    assert!(c.wal_segments(&drop).await.expect("wal").is_empty());
    assert_eq!(c.snapshots(&keep).await.expect("snaps").len(), 1);
    c.delete_generation(&keep).await.expect("cleanup");
}

#[tokio::test]
async fn listings_and_deletes_paginate_past_1000_objects() {
    let c = client("paginate").await;
    let g = gen("6666666666666666");
    let n = 1_050u64;
    futures::stream::iter(0..n)
        .map(|i| {
            let c = c.clone();
            let g = g.clone();
            async move {
                c.write_wal_segment(
                    &Pos::new(g, (i / 100) as u32, (i % 100) * 4152),
                    stream(vec![7; 8]),
                )
                .await
                .expect("write")
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    let segs = c.wal_segments(&g).await.expect("list");
    assert_eq!(segs.len() as u64, n);
    assert!(segs
        .windows(2)
        .all(|w| (w[0].index, w[0].offset) < (w[1].index, w[1].offset)));
    let positions: Vec<Pos> = segs.iter().map(|s| s.pos()).collect();
    c.delete_wal_segments(&positions)
        .await
        .expect("delete 1050");
    assert!(c.wal_segments(&g).await.expect("list").is_empty());
}

#[tokio::test]
async fn snapshot_larger_than_one_part_round_trips_through_multipart() {
    let c = client("multipart").await;
    let g = gen("7777777777777777");
    // 2 full parts + a short last part.
    let big = bytes(2 * MIN_PART_SIZE + 123_457, 7);
    let info = c
        .write_snapshot(&g, 0, stream(big.clone()))
        .await
        .expect("multipart write");
    assert_eq!(info.size, big.len() as u64);
    let back = read_all(c.open_snapshot(&g, 0).await.expect("open")).await;
    assert!(
        back == big,
        "multipart snapshot differs ({} vs {} bytes)",
        back.len(),
        big.len()
    );
    let listed = c.snapshots(&g).await.expect("list");
    assert_eq!(listed[0].size, big.len() as u64);

    // Exactly one part is a single PUT; one byte more is a 2-part upload.
    for (idx, len) in [(1u32, MIN_PART_SIZE), (2, MIN_PART_SIZE + 1)] {
        let data = bytes(len, u64::from(idx));
        c.write_snapshot(&g, idx, stream(data.clone()))
            .await
            .expect("write");
        assert!(read_all(c.open_snapshot(&g, idx).await.expect("open")).await == data);
    }
    c.delete_generation(&g).await.expect("cleanup");
}

#[tokio::test]
async fn from_replica_config_reads_the_url_form_and_defaults_path_style() {
    // s3://BUCKET.localhost:PORT/path -> endpoint http://localhost:PORT, path style, us-east-1.
    let endpoint = env("TEST_S3_ENDPOINT");
    let port = endpoint.rsplit(':').next().expect("port");
    let prefix = common::random_prefix("url");
    let cfg = ReplicaConfig {
        url: Some(format!(
            "s3://{}.localhost:{port}/{prefix}",
            env("TEST_S3_BUCKET")
        )),
        access_key_id: Some(env("TEST_S3_ACCESS_KEY_ID")),
        secret_access_key: Some(env("TEST_S3_SECRET_ACCESS_KEY")),
        ..Default::default()
    }
    .resolve()
    .expect("resolve");
    let c = S3Client::from_replica_config(&cfg).await.expect("client");
    assert_eq!(c.region(), "us-east-1");
    assert_eq!(c.path(), prefix);
    let g = gen("8888888888888888");
    c.write_snapshot(&g, 0, stream(vec![9; 9]))
        .await
        .expect("write");
    assert_eq!(c.generations().await.expect("gens"), vec![g.clone()]);
    assert_eq!(
        layout::snapshot_path(c.path(), &g, 0),
        format!("{prefix}/generations/8888888888888888/snapshots/00000000.snapshot.lz4")
    );
    c.delete_generation(&g).await.expect("cleanup");
}

#[tokio::test]
async fn bucket_is_required() {
    let e = S3Client::from_replica_config(&ReplicaConfig::default())
        .await
        .expect_err("no bucket");
    assert!(
        e.to_string().contains("bucket required for s3 replica"),
        "{e}"
    );
    let e = S3Builder::new("b")
        .with_endpoint("localhost:9000")
        .build()
        .await
        .expect_err("endpoint without scheme");
    assert!(e.to_string().contains("http://"), "{e}");
}

const SECRET: &str = "s3cr3t-value-that-must-never-appear";

#[tokio::test]
async fn endpoint_nobody_listens_on_gives_a_clear_retryable_error_without_secrets() {
    let endpoint = format!("http://127.0.0.1:{}", common::free_port());
    let c = S3Builder::new("some-bucket")
        .with_endpoint(&endpoint)
        .with_credentials("AKIDEXAMPLE", SECRET)
        .with_max_attempts(2)
        .build()
        .await
        .expect("build needs no request");
    let e = c.generations().await.expect_err("nobody listens");
    let msg = format!("{e} / {e:?}");
    assert!(msg.contains("some-bucket"), "{msg}");
    assert!(msg.contains(&endpoint), "{msg}");
    assert!(!msg.contains(SECRET), "{msg}");
    assert!(e.is_retryable(), "{msg}");
    assert!(!e.is_not_found());
    let e = c
        .write_snapshot(&gen("9999999999999999"), 0, stream(vec![1]))
        .await
        .expect_err("put fails");
    let msg = e.to_string();
    assert!(
        msg.contains("some-bucket") && msg.contains(&endpoint),
        "{msg}"
    );
    assert!(msg.contains("00000000.snapshot.lz4"), "{msg}");
    assert!(!format!("{c:?}").contains(SECRET));
}

#[tokio::test]
async fn missing_bucket_gives_a_clear_error_naming_bucket_and_endpoint() {
    let bucket = format!("no-such-bucket-{:08x}", rand::random::<u32>());
    let endpoint = env("TEST_S3_ENDPOINT");
    let c = S3Builder::new(&bucket)
        .with_endpoint(&endpoint)
        .with_credentials(env("TEST_S3_ACCESS_KEY_ID"), SECRET)
        .build()
        .await
        .expect("build");
    let e = c.generations().await.expect_err("no bucket");
    let msg = e.to_string();
    assert!(msg.contains(&bucket), "{msg}");
    assert!(msg.contains(&endpoint), "{msg}");
    assert!(msg.contains("NoSuchBucket"), "{msg}");
    assert!(!msg.contains(SECRET), "{msg}");
    assert!(!e.is_retryable(), "{msg}");
    assert!(
        !e.is_not_found(),
        "a missing bucket is not a missing object: {msg}"
    );
    let e = c
        .open_snapshot(&gen("9999999999999999"), 0)
        .await
        .err()
        .expect("no bucket");
    assert!(!e.is_not_found(), "{e}");
    assert!(e.to_string().contains(&bucket), "{e}");
}
