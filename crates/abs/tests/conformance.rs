//! The `ReplicaClient` contract against Azurite, plus abs-specific cases (large snapshots in
//! blocks, wrong key, missing container, SAS/config plumbing).
//!
//! Needs the servers of `scripts/test.sh` (`TEST_ABS_*`); a missing variable is a failure.
#![allow(missing_docs, clippy::unwrap_used)]

use std::io::Cursor;

use litestream_abs::{AbsBuilder, AbsClient};
use litestream_core::config::ReplicaConfig;
use litestream_core::{ByteStream, Generation, Pos, ReplicaClient};
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use rand::RngCore;
use tokio::io::AsyncReadExt;

fn env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{name} is not set: the abs tests need Azurite; run scripts/test.sh \
             (or eval \"$(bash scripts/test-servers/start.sh)\")"
        ),
    }
}

fn random_prefix(tag: &str) -> String {
    let mut b = [0u8; 6];
    rand::rng().fill_bytes(&mut b);
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("test-abs/{tag}-{hex}")
}

fn builder(prefix: &str) -> AbsBuilder {
    AbsBuilder::new()
        .with_account(env("TEST_ABS_ACCOUNT_NAME"))
        .with_account_key(env("TEST_ABS_ACCOUNT_KEY"))
        .with_container(env("TEST_ABS_CONTAINER"))
        .with_endpoint(env("TEST_ABS_ENDPOINT"))
        .with_path(prefix)
}

fn client(tag: &str) -> AbsClient {
    builder(&random_prefix(tag)).build().unwrap()
}

fn gen(s: &str) -> Generation {
    Generation::parse(s).unwrap()
}

fn stream(data: Vec<u8>) -> ByteStream {
    Box::pin(Cursor::new(data))
}

async fn read_all(mut s: ByteStream) -> Vec<u8> {
    let mut v = Vec::new();
    s.read_to_end(&mut v).await.unwrap();
    v
}

fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

async fn cleanup(c: &AbsClient) {
    for g in c.generations().await.unwrap() {
        c.delete_generation(&g).await.unwrap();
    }
}

#[tokio::test]
async fn empty_prefix_lists_as_empty() {
    let c = client("empty");
    assert!(c.generations().await.unwrap().is_empty());
    let g = gen("0123456789abcdef");
    assert!(c.snapshots(&g).await.unwrap().is_empty());
    assert!(c.wal_segments(&g).await.unwrap().is_empty());
}

#[tokio::test]
async fn snapshots_and_wal_segments_round_trip_byte_for_byte() {
    let c = client("roundtrip");
    let g = gen("00000000000000aa");
    let snap = pseudo_random(100_000, 7);
    let info = c.write_snapshot(&g, 3, stream(snap.clone())).await.unwrap();
    assert_eq!((info.index, info.size), (3, snap.len() as u64));
    assert_eq!(read_all(c.open_snapshot(&g, 3).await.unwrap()).await, snap);

    let seg = pseudo_random(4152, 9);
    let pos = Pos::new(g.clone(), 3, 0x1038);
    let wi = c
        .write_wal_segment(&pos, stream(seg.clone()))
        .await
        .unwrap();
    assert_eq!((wi.index, wi.offset, wi.size), (3, 0x1038, 4152));
    assert_eq!(read_all(c.open_wal_segment(&pos).await.unwrap()).await, seg);

    // Empty payloads are legal objects too.
    let empty = Pos::new(g.clone(), 4, 0);
    c.write_wal_segment(&empty, stream(Vec::new()))
        .await
        .unwrap();
    assert!(read_all(c.open_wal_segment(&empty).await.unwrap())
        .await
        .is_empty());

    // Keys are exactly Litestream's.
    let store = c.object_store();
    let root = c.root().to_string();
    let key = format!("{root}/generations/00000000000000aa/snapshots/00000003.snapshot.lz4");
    assert_eq!(store.head(&Path::from(key)).await.unwrap().size, 100_000);
    let key = format!("{root}/generations/00000000000000aa/wal/00000003_00001038.wal.lz4");
    assert_eq!(store.head(&Path::from(key)).await.unwrap().size, 4152);

    // Overwrite replaces.
    c.write_snapshot(&g, 3, stream(b"new".to_vec()))
        .await
        .unwrap();
    assert_eq!(
        read_all(c.open_snapshot(&g, 3).await.unwrap()).await,
        b"new"
    );
    cleanup(&c).await;
}

#[tokio::test]
async fn listings_are_sorted_and_ignore_unparseable_names() {
    let c = client("listing");
    let gens = ["ffffffffffffffff", "0000000000000001", "8000000000000000"];
    for g in gens {
        c.write_snapshot(&gen(g), 0, stream(b"s".to_vec()))
            .await
            .unwrap();
    }
    let g = gen("0000000000000001");
    for idx in [0x10u32, 2, 0xa] {
        c.write_snapshot(&g, idx, stream(vec![1; idx as usize]))
            .await
            .unwrap();
    }
    for (i, o) in [(2u32, 0x2050u64), (1, 0x1038), (2, 0), (1, 0), (0x10, 0)] {
        c.write_wal_segment(&Pos::new(g.clone(), i, o), stream(vec![2; 10]))
            .await
            .unwrap();
    }
    // Junk that must be ignored.
    let store = c.object_store();
    let root = c.root();
    for junk in [
        "generations/not-a-generation/snapshots/00000000.snapshot.lz4",
        "generations/0000000000000ABC/snapshots/00000000.snapshot.lz4",
        "generations/0000000000000001/snapshots/0000001F.snapshot.lz4",
        "generations/0000000000000001/snapshots/00000001.snapshot.lz4.tmp",
        "generations/0000000000000001/snapshots/nested/00000005.snapshot.lz4",
        "generations/0000000000000001/wal/00000001.wal.lz4",
        "generations/0000000000000001/wal/00000001_100004080.wal.lz4",
        "generations/0000000000000001/wal/README",
        "generations/stray-file",
    ] {
        store
            .put(
                &Path::from(format!("{root}/{junk}")),
                PutPayload::from_static(b"junk"),
            )
            .await
            .unwrap();
    }

    let listed: Vec<String> = c
        .generations()
        .await
        .unwrap()
        .iter()
        .map(|g| g.to_string())
        .collect();
    assert_eq!(
        listed,
        ["0000000000000001", "8000000000000000", "ffffffffffffffff"]
    );
    let snaps: Vec<(u32, u64)> = c
        .snapshots(&g)
        .await
        .unwrap()
        .iter()
        .map(|s| (s.index, s.size))
        .collect();
    assert_eq!(snaps, [(0, 1), (2, 2), (0xa, 10), (0x10, 16)]);
    let segs: Vec<(u32, u64)> = c
        .wal_segments(&g)
        .await
        .unwrap()
        .iter()
        .map(|s| (s.index, s.offset))
        .collect();
    assert_eq!(segs, [(1, 0), (1, 0x1038), (2, 0), (2, 0x2050), (0x10, 0)]);
    let now = time::OffsetDateTime::now_utc();
    for s in c.snapshots(&g).await.unwrap() {
        assert!((now - s.created_at).abs() < time::Duration::minutes(5));
    }

    cleanup(&c).await;
    // stray junk outside the generations we know about
    for junk in [
        "generations/not-a-generation/snapshots/00000000.snapshot.lz4",
        "generations/0000000000000ABC/snapshots/00000000.snapshot.lz4",
        "generations/stray-file",
    ] {
        let _ = store.delete(&Path::from(format!("{root}/{junk}"))).await;
    }
}

#[tokio::test]
async fn missing_objects_are_not_found() {
    let c = client("notfound");
    let g = gen("1234567812345678");
    let e = c.open_snapshot(&g, 0).await.err().unwrap();
    assert!(e.is_not_found(), "{e}");
    let e = c
        .open_wal_segment(&Pos::new(g.clone(), 0, 0))
        .await
        .err()
        .unwrap();
    assert!(e.is_not_found(), "{e}");
}

#[tokio::test]
async fn deletes_are_idempotent() {
    let c = client("delete");
    let g = gen("00000000000000bb");
    c.write_snapshot(&g, 1, stream(b"x".to_vec()))
        .await
        .unwrap();
    let p0 = Pos::new(g.clone(), 1, 0);
    let p1 = Pos::new(g.clone(), 1, 0x1038);
    c.write_wal_segment(&p0, stream(b"a".to_vec()))
        .await
        .unwrap();
    c.write_wal_segment(&p1, stream(b"b".to_vec()))
        .await
        .unwrap();

    c.delete_snapshot(&g, 1).await.unwrap();
    c.delete_snapshot(&g, 1).await.unwrap();
    assert!(c.snapshots(&g).await.unwrap().is_empty());

    c.delete_wal_segments(std::slice::from_ref(&p0))
        .await
        .unwrap();
    c.delete_wal_segments(&[p0.clone(), p1.clone()])
        .await
        .unwrap();
    assert!(c.wal_segments(&g).await.unwrap().is_empty());
    c.delete_generation(&gen("00000000000000cc")).await.unwrap();
}

#[tokio::test]
async fn delete_generation_removes_everything_under_it_only() {
    let c = client("delgen");
    let a = gen("000000000000000a");
    let b = gen("000000000000000b");
    for g in [&a, &b] {
        c.write_snapshot(g, 0, stream(b"s".to_vec())).await.unwrap();
        c.write_wal_segment(&Pos::new(g.clone(), 0, 0), stream(b"w".to_vec()))
            .await
            .unwrap();
    }
    c.delete_generation(&a).await.unwrap();
    assert_eq!(c.generations().await.unwrap(), vec![b.clone()]);
    assert!(c.snapshots(&a).await.unwrap().is_empty());
    assert!(c.wal_segments(&a).await.unwrap().is_empty());
    assert_eq!(c.snapshots(&b).await.unwrap().len(), 1);
    c.delete_generation(&a).await.unwrap();
    cleanup(&c).await;
    assert!(c.generations().await.unwrap().is_empty());
}

#[tokio::test]
async fn snapshot_over_8_mib_is_uploaded_in_blocks() {
    // 1 MiB parts so that a 9 MiB + 123 B snapshot takes 10 blocks.
    let c = builder(&random_prefix("large"))
        .with_part_size(1 << 20)
        .build()
        .unwrap();
    let g = gen("00000000000000dd");
    let data = pseudo_random((9 << 20) + 123, 42);
    let before = put_count();
    let info = c.write_snapshot(&g, 7, stream(data.clone())).await.unwrap();
    assert_eq!(info.size, data.len() as u64);
    assert!(put_count() - before >= 10, "expected one PUT per block");
    let back = read_all(c.open_snapshot(&g, 7).await.unwrap()).await;
    assert_eq!(back.len(), data.len());
    assert!(back == data, "large snapshot differs");
    assert_eq!(c.snapshots(&g).await.unwrap()[0].size, data.len() as u64);

    // With the default 8 MiB part size too.
    let c2 = builder(c.root()).build().unwrap();
    let data2 = pseudo_random((8 << 20) + 1, 43);
    c2.write_snapshot(&g, 8, stream(data2.clone()))
        .await
        .unwrap();
    assert!(read_all(c2.open_snapshot(&g, 8).await.unwrap()).await == data2);
    cleanup(&c).await;
}

fn put_count() -> u64 {
    litestream_core::metrics::operation_counts()
        .into_iter()
        .find(|(t, o, _)| *t == "abs" && *o == litestream_core::metrics::Operation::Put)
        .map(|(_, _, c)| c.total)
        .unwrap_or(0)
}

#[tokio::test]
async fn failed_upload_leaves_no_object() {
    struct Failing(usize);
    impl tokio::io::AsyncRead for Failing {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            if self.0 == 0 {
                return std::task::Poll::Ready(Err(std::io::Error::other("source broke")));
            }
            let n = self.0.min(buf.remaining()).min(64 << 10);
            buf.put_slice(&vec![7u8; n]);
            self.0 -= n;
            std::task::Poll::Ready(Ok(()))
        }
    }
    let c = builder(&random_prefix("abort"))
        .with_part_size(1 << 20)
        .build()
        .unwrap();
    let g = gen("00000000000000ee");
    let e = c
        .write_snapshot(&g, 0, Box::pin(Failing(3 << 20)))
        .await
        .err()
        .unwrap();
    assert!(e.to_string().contains("source broke"), "{e}");
    assert!(c.snapshots(&g).await.unwrap().is_empty());
    let e = c
        .write_snapshot(&g, 1, Box::pin(Failing(10)))
        .await
        .err()
        .unwrap();
    assert!(e.to_string().contains("source broke"), "{e}");
    assert!(c.snapshots(&g).await.unwrap().is_empty());
}

fn assert_clear(e: &litestream_core::Error, key: &str, container: &str) {
    let msg = format!("{e}");
    eprintln!("error as reported: {msg}");
    let full = {
        let mut s = msg.clone();
        let mut cur = std::error::Error::source(e);
        while let Some(x) = cur {
            s.push_str(&format!(" | {x}"));
            cur = x.source();
        }
        s
    };
    assert!(msg.contains("devstoreaccount1"), "no account in {msg}");
    assert!(msg.contains(container), "no container in {msg}");
    assert!(!full.contains(key), "key leaked: {full}");
    let debug = format!("{e:?}");
    assert!(!debug.contains(key), "key leaked in Debug: {debug}");
}

#[tokio::test]
async fn wrong_account_key_is_a_clear_error_without_the_key() {
    // A valid base64 key that is not the account's.
    let wrong = "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktd3Jvbmcta2V5LXdyb25nLWtleQ==";
    let container = env("TEST_ABS_CONTAINER");
    let c = builder(&random_prefix("badkey"))
        .with_account_key(wrong)
        .build()
        .unwrap();
    let e = c.generations().await.err().unwrap();
    assert!(!e.is_retryable(), "auth failure must not be retryable: {e}");
    assert!(!e.is_not_found());
    assert!(e.to_string().contains("authentication failed"), "{e}");
    assert_clear(&e, wrong, &container);
    let e = c
        .write_snapshot(&gen("0000000000000001"), 0, stream(b"x".to_vec()))
        .await
        .err()
        .unwrap();
    assert_clear(&e, wrong, &container);
    let e = c
        .open_snapshot(&gen("0000000000000001"), 0)
        .await
        .err()
        .unwrap();
    assert!(
        !e.is_not_found(),
        "a bad key must not look like a missing object: {e}"
    );
    assert_clear(&e, wrong, &container);
}

#[tokio::test]
async fn missing_container_is_a_clear_error() {
    let key = env("TEST_ABS_ACCOUNT_KEY");
    let c = builder("db")
        .with_container("no-such-container-ls")
        .build()
        .unwrap();
    let e = c.generations().await.err().unwrap();
    assert!(!e.is_not_found(), "{e}");
    assert!(e.to_string().contains("does not exist"), "{e}");
    assert_clear(&e, &key, "no-such-container-ls");
    let e = c
        .write_wal_segment(&Pos::new(gen("0000000000000001"), 0, 0), stream(vec![1]))
        .await
        .err()
        .unwrap();
    assert!(e.to_string().contains("does not exist"), "{e}");
    assert_clear(&e, &key, "no-such-container-ls");
    let e = c
        .open_snapshot(&gen("0000000000000001"), 0)
        .await
        .err()
        .unwrap();
    assert!(!e.is_not_found(), "{e}");
    assert_clear(&e, &key, "no-such-container-ls");
}

#[tokio::test]
async fn unreachable_endpoint_is_retryable() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let retry = litestream_abs::RetryConfig {
        max_retries: 0,
        ..Default::default()
    };
    let c = builder("db")
        .with_endpoint(format!("http://127.0.0.1:{port}/devstoreaccount1"))
        .with_retry(retry)
        .build()
        .unwrap();
    let e = c.generations().await.err().unwrap();
    assert!(e.is_retryable(), "{e:?}");
    assert_clear(&e, &env("TEST_ABS_ACCOUNT_KEY"), &env("TEST_ABS_CONTAINER"));
}

#[tokio::test]
async fn replica_config_with_env_key_and_url_endpoint_works() {
    // Config as the binary passes it: resolved from a URL with ?endpoint=, key from the env
    // fallback (set by scripts/test.sh as LITESTREAM_AZURE_ACCOUNT_KEY).
    assert_eq!(
        env("LITESTREAM_AZURE_ACCOUNT_KEY"),
        env("TEST_ABS_ACCOUNT_KEY")
    );
    let prefix = random_prefix("cfg");
    let url = format!(
        "abs://{}@{}/{}?endpoint={}",
        env("TEST_ABS_ACCOUNT_NAME"),
        env("TEST_ABS_CONTAINER"),
        prefix,
        env("TEST_ABS_ENDPOINT")
    );
    let cfg = ReplicaConfig {
        url: Some(url),
        ..Default::default()
    }
    .resolve()
    .unwrap();
    let c = litestream_abs::from_replica_config(&cfg).await.unwrap();
    assert_eq!(c.root(), prefix);
    let g = gen("00000000000000ff");
    c.write_snapshot(&g, 0, stream(b"hello".to_vec()))
        .await
        .unwrap();
    assert_eq!(c.generations().await.unwrap(), vec![g.clone()]);
    cleanup(&c).await;

    // Missing settings are config errors naming the key.
    let bad = ReplicaConfig {
        replica_type: Some("abs".into()),
        account_name: Some("acct".into()),
        ..Default::default()
    };
    let e = litestream_abs::from_replica_config(&bad)
        .await
        .err()
        .unwrap();
    assert!(e.to_string().contains("bucket required"), "{e}");
    let bad = ReplicaConfig {
        replica_type: Some("abs".into()),
        account_name: Some("acct".into()),
        bucket: Some("c".into()),
        credential: Some("kerberos".into()),
        ..Default::default()
    };
    let e = litestream_abs::from_replica_config(&bad)
        .await
        .err()
        .unwrap();
    assert!(e.to_string().contains("unknown credential"), "{e}");
}

#[tokio::test]
async fn sas_token_credential_is_used() {
    // Azurite accepts only SAS tokens it can verify; a garbage one must fail as an auth
    // error, and the token must not leak into the message.
    let sas =
        "sv=2021-08-06&ss=b&srt=sco&sp=rwdlac&se=2099-01-01T00:00:00Z&sig=Zm9vYmFyYmF6cXV4c2VjcmV0";
    let c = AbsBuilder::new()
        .with_account(env("TEST_ABS_ACCOUNT_NAME"))
        .with_container(env("TEST_ABS_CONTAINER"))
        .with_endpoint(env("TEST_ABS_ENDPOINT"))
        .with_sas_token(sas)
        .build()
        .unwrap();
    assert_eq!(c.credential(), &litestream_abs::Credential::Sas);
    let e = c.generations().await.err().unwrap();
    assert!(!e.is_retryable(), "{e}");
    let full = format!("{e} {e:?}");
    assert!(
        !full.contains("Zm9vYmFyYmF6cXV4c2VjcmV0"),
        "sas leaked: {full}"
    );
}
