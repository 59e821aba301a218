//! The shared `ReplicaClient` suite against the local S3 test server (moto), plus S3-specific
//! behaviour: raw keys, multipart uploads, pagination and clear errors for bad settings.

use crate::common;
use crate::common::{bytes, client, env, read_all, stream};
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
async fn s3_client_passes_the_replica_client_suite() {
    let c = client("suite").await;
    litestream_conformance::run_all(&c).await;
    assert!(raw_keys(&c).await.is_empty(), "{:?}", raw_keys(&c).await);
    // The writer's timestamp is the `litestream-timestamp` metadata, as v0.5 writes it.
    assert_eq!(
        litestream_conformance::objects_written_keep_their_timestamp(&c).await,
        litestream_conformance::TimestampKept::Metadata
    );
}

#[tokio::test]
async fn keys_are_exactly_litestreams() {
    let c = client("keys").await;
    let g = gen("0123456789abcdef");
    c.write_snapshot(&g, 3, stream(bytes(100, 1)))
        .await
        .expect("write snapshot");
    c.write_wal_segment(&Pos::new(g.clone(), 3, 0x4080), stream(bytes(10, 2)))
        .await
        .expect("write wal");
    let mut keys = raw_keys(&c).await;
    keys.sort();
    let root = c.path().to_string();
    assert_eq!(
        keys,
        vec![
            format!("{root}/generations/0123456789abcdef/snapshots/00000003.snapshot.lz4"),
            format!("{root}/generations/0123456789abcdef/wal/00000003_00004080.wal.lz4"),
        ]
    );
    c.delete_generation(&g).await.expect("cleanup");
}

#[tokio::test]
async fn listings_ignore_names_that_do_not_parse() {
    let c = client("listing").await;
    let g = gen("a0a0a0a0a0a0a0a0");
    c.write_snapshot(&g, 2, stream(vec![1; 10]))
        .await
        .expect("snap");
    c.write_wal_segment(&Pos::new(g.clone(), 1, 0x10), stream(vec![2; 3]))
        .await
        .expect("wal");
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

    assert_eq!(c.generations().await.expect("generations"), vec![g.clone()]);
    let snaps = c.snapshots(&g).await.expect("snapshots");
    assert_eq!(
        snaps.iter().map(|s| (s.index, s.size)).collect::<Vec<_>>(),
        vec![(2, 10)]
    );
    assert!(
        snaps[0].created_at.year() >= 2024,
        "created_at from LastModified"
    );
    let segs = c.wal_segments(&g).await.expect("wal");
    let segs: Vec<(u32, u64)> = segs.iter().map(|s| (s.index, s.offset)).collect();
    assert_eq!(segs, vec![(1, 0x10)]);

    c.delete_generation(&g).await.expect("delete generation");
    // Junk under generations that are not ours stays; our generation is gone.
    assert!(c.generations().await.expect("generations").is_empty());
    let left = raw_keys(&c).await;
    assert!(
        left.iter().all(|k| !k.contains("/a0a0a0a0a0a0a0a0/")),
        "{left:?}"
    );
}

#[tokio::test]
async fn missing_object_errors_name_the_key() {
    let c = client("missing").await;
    let g = gen("1111111111111111");
    let e = c
        .open_snapshot(&g, 0)
        .await
        .err()
        .expect("missing snapshot");
    assert!(e.is_not_found(), "{e}");
    assert!(e.to_string().contains("00000000.snapshot.lz4"), "{e}");
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
    let endpoint = format!("http://127.0.0.1:{}", litestream_test_servers::free_port());
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
    let secret = env("TEST_S3_SECRET_ACCESS_KEY");
    let c = S3Builder::new(&bucket)
        .with_endpoint(&endpoint)
        .with_credentials(env("TEST_S3_ACCESS_KEY_ID"), &secret)
        .build()
        .await
        .expect("build");
    let e = c.generations().await.expect_err("no bucket");
    let msg = e.to_string();
    assert!(msg.contains(&bucket), "{msg}");
    assert!(msg.contains(&endpoint), "{msg}");
    assert!(msg.contains("NoSuchBucket"), "{msg}");
    assert!(!msg.contains(&secret), "{msg}");
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

/// The test server checks signatures (moto with IAM auth, see scripts/test-servers/start.sh):
/// every other test here proves that a request signed with the configured key is accepted;
/// this one that a wrong secret, from the builder or from the replica config, is refused, and
/// that nothing was written with it.
#[tokio::test]
async fn a_wrong_secret_key_is_refused_by_the_server() {
    let g = gen("7777777777777777");
    let wrong = common::builder("wrong-secret")
        .with_credentials(env("TEST_S3_ACCESS_KEY_ID"), SECRET)
        .with_max_attempts(1)
        .build()
        .await
        .expect("build needs no request");
    let e = wrong
        .write_snapshot(&g, 0, stream(vec![1; 10]))
        .await
        .expect_err("a wrong secret must be refused");
    let msg = format!("{e} / {e:?}");
    assert!(msg.contains("SignatureDoesNotMatch"), "{msg}");
    assert!(!msg.contains(SECRET), "{msg}");
    assert!(!e.is_retryable(), "{msg}");
    let right = common::builder("wrong-secret")
        .with_path(wrong.path())
        .build()
        .await
        .expect("build");
    assert!(right.snapshots(&g).await.expect("list").is_empty());

    // The same through the replica config (no environment fallback: scripts/test.sh exports
    // no AWS_* / LITESTREAM_* keys, so the config's keys are the only ones).
    let cfg = ReplicaConfig {
        bucket: Some(env("TEST_S3_BUCKET")),
        endpoint: Some(env("TEST_S3_ENDPOINT")),
        region: Some(env("TEST_S3_REGION")),
        path: Some(wrong.path().to_string()),
        access_key_id: Some(env("TEST_S3_ACCESS_KEY_ID")),
        secret_access_key: Some(SECRET.to_string()),
        ..Default::default()
    }
    .resolve()
    .expect("resolve");
    let c = S3Client::from_replica_config(&cfg).await.expect("client");
    let e = c
        .generations()
        .await
        .expect_err("a wrong secret must be refused");
    assert!(e.to_string().contains("SignatureDoesNotMatch"), "{e}");
}

/// Put `data` at the raw `key` with the `litestream-timestamp` metadata `ts`, as v0.5 does.
async fn put_with_timestamp(c: &S3Client, key: &str, data: &[u8], ts: Option<&str>) {
    c.sdk_client()
        .put_object()
        .bucket(c.bucket())
        .key(key)
        .set_metadata(ts.map(|t| [("litestream-timestamp".to_string(), t.to_string())].into()))
        .body(data.to_vec().into())
        .send()
        .await
        .expect("raw put");
}

/// Objects under v0.5's s3 layout (`<path>/<level %04x>/…`, no `ltx/`) list one directory
/// at a time, relative, sorted, and each reports its `litestream-timestamp` metadata
/// (RFC 3339 with nanoseconds), `None` without it or when it does not parse.
#[tokio::test]
async fn ltx_layout_objects_list_read_and_report_writer_timestamps() {
    let c = client("ltx-objects").await;
    let root = c.path().to_string();
    let ts = "2026-12-06T01:02:03.123456789Z";
    let name = |min: u64, max: u64| format!("{min:016x}-{max:016x}.ltx");
    put_with_timestamp(&c, &format!("{root}/0000/{}", name(2, 2)), b"two", Some(ts)).await;
    put_with_timestamp(&c, &format!("{root}/0000/{}", name(1, 1)), b"one", None).await;
    put_with_timestamp(
        &c,
        &format!("{root}/0000/{}.tmp", name(3, 3)),
        b"t",
        Some(ts),
    )
    .await;
    put_with_timestamp(
        &c,
        &format!("{root}/0000/x/{}", name(4, 4)),
        b"deep",
        Some(ts),
    )
    .await;
    put_with_timestamp(
        &c,
        &format!("{root}/0009/{}", name(1, 2)),
        b"snap",
        Some("garbage"),
    )
    .await;

    let listed = c.list_objects("0000").await.expect("list level 0");
    let names: Vec<&str> = listed.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(
        names,
        [name(1, 1), name(2, 2), format!("{}.tmp", name(3, 3))],
        "level 0 listing"
    );
    assert_eq!(listed[1].size, 3);
    assert!(c.list_objects("ltx/0").await.expect("list").is_empty());
    assert!(c.list_objects("").await.expect("list root").is_empty());

    let got = c
        .object_timestamp(&format!("0000/{}", name(2, 2)))
        .await
        .expect("timestamp");
    let want = litestream_core::parse_rfc3339(ts).expect("time");
    assert_eq!(got, Some(want));
    assert_eq!(want.nanosecond(), 123_456_789);
    for key in [
        format!("0000/{}", name(1, 1)),
        format!("0009/{}", name(1, 2)),
    ] {
        assert_eq!(
            c.object_timestamp(&key).await.expect("timestamp"),
            None,
            "{key}"
        );
    }
    let missing = c.object_timestamp(&format!("0000/{}", name(9, 9))).await;
    assert!(missing.expect_err("missing").is_not_found());
    let data = read_all(
        c.open_object(&format!("0009/{}", name(1, 2)))
            .await
            .expect("open"),
    )
    .await;
    assert_eq!(data, b"snap");

    let keys = raw_keys(&c).await;
    c.sdk_client()
        .delete_objects()
        .bucket(c.bucket())
        .delete(
            aws_sdk_s3::types::Delete::builder()
                .set_objects(Some(
                    keys.iter()
                        .map(|k| {
                            aws_sdk_s3::types::ObjectIdentifier::builder()
                                .key(k)
                                .build()
                                .unwrap()
                        })
                        .collect(),
                ))
                .build()
                .unwrap(),
        )
        .send()
        .await
        .expect("clean up");
}
