//! The shared `ReplicaClient` suite against Azurite, plus abs-specific cases (raw keys, large
//! snapshots in blocks, wrong key, missing container, SAS/config plumbing).
//!
//! Needs the servers of `scripts/test.sh` (`TEST_ABS_*`); a missing variable is a failure.
#![allow(missing_docs, clippy::unwrap_used)]

use litestream_abs::{AbsBuilder, AbsClient};
use litestream_conformance::{payload, read_all, stream, FailingSource};
use litestream_core::config::ReplicaConfig;
use litestream_core::{Generation, Pos, ReplicaClient};
use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpRequest, HttpResponse, HttpService, ReqwestConnector,
};
use object_store::path::Path;
use object_store::{ClientOptions, ObjectStoreExt, PutPayload};
use rand::Rng;
use std::sync::{Arc, Mutex};

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

async fn cleanup(c: &AbsClient) {
    for g in c.generations().await.unwrap() {
        c.delete_generation(&g).await.unwrap();
    }
}

#[tokio::test]
async fn abs_client_passes_the_replica_client_suite() {
    let c = client("suite");
    litestream_conformance::run_all(&c).await;
    // The writer's timestamp is the `litestreamtimestamp` metadata, as v0.5 writes it.
    assert_eq!(
        litestream_conformance::objects_written_keep_their_timestamp(&c).await,
        litestream_conformance::TimestampKept::Metadata
    );
}

#[tokio::test]
async fn keys_are_exactly_litestreams() {
    let c = client("keys");
    let g = gen("00000000000000aa");
    c.write_snapshot(&g, 3, stream(payload(1000, 7)))
        .await
        .unwrap();
    c.write_wal_segment(&Pos::new(g.clone(), 3, 0x1038), stream(payload(10, 9)))
        .await
        .unwrap();
    let store = c.object_store();
    let root = c.root().to_string();
    let key = format!("{root}/generations/00000000000000aa/snapshots/00000003.snapshot.lz4");
    assert_eq!(store.head(&Path::from(key)).await.unwrap().size, 1000);
    let key = format!("{root}/generations/00000000000000aa/wal/00000003_00001038.wal.lz4");
    assert_eq!(store.head(&Path::from(key)).await.unwrap().size, 10);
    cleanup(&c).await;
}

#[tokio::test]
async fn listings_ignore_unparseable_names() {
    let c = client("listing");
    let g = gen("0000000000000001");
    c.write_snapshot(&g, 2, stream(vec![1; 2])).await.unwrap();
    c.write_wal_segment(&Pos::new(g.clone(), 1, 0x1038), stream(vec![2; 10]))
        .await
        .unwrap();
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

    assert_eq!(c.generations().await.unwrap(), vec![g.clone()]);
    let snaps: Vec<(u32, u64)> = c
        .snapshots(&g)
        .await
        .unwrap()
        .iter()
        .map(|s| (s.index, s.size))
        .collect();
    assert_eq!(snaps, [(2, 2)]);
    let segs: Vec<(u32, u64)> = c
        .wal_segments(&g)
        .await
        .unwrap()
        .iter()
        .map(|s| (s.index, s.offset))
        .collect();
    assert_eq!(segs, [(1, 0x1038)]);

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
async fn snapshot_over_8_mib_is_uploaded_in_blocks() {
    // 1 MiB parts so that a 9 MiB + 123 B snapshot takes 10 blocks. The requests counted are
    // this client's own, seen by its HTTP connector (other tests run in parallel).
    let requests = RequestLog::default();
    let c = builder(&random_prefix("large"))
        .with_part_size(1 << 20)
        .with_http_connector(requests.clone())
        .build()
        .unwrap();
    let g = gen("00000000000000dd");
    let data = payload((9 << 20) + 123, 42);
    let info = c.write_snapshot(&g, 7, stream(data.clone())).await.unwrap();
    assert_eq!(info.size, data.len() as u64);
    let sent = requests.take();
    let put_block = sent.iter().filter(|r| r.contains("comp=block&")).count();
    let put_block_list = sent.iter().filter(|r| r.contains("comp=blocklist")).count();
    assert_eq!(
        (put_block, put_block_list, sent.len()),
        (10, 1, 11),
        "expected 10 Put Block and one Put Block List, nothing else: {sent:#?}"
    );
    assert!(sent.iter().all(|r| r.starts_with("PUT ")), "{sent:#?}");
    let back = read_all(c.open_snapshot(&g, 7).await.unwrap()).await;
    assert_eq!(back.len(), data.len());
    assert!(back == data, "large snapshot differs");
    assert_eq!(c.snapshots(&g).await.unwrap()[0].size, data.len() as u64);

    // With the default 8 MiB part size too.
    let c2 = builder(c.root()).build().unwrap();
    let data2 = payload((8 << 20) + 1, 43);
    c2.write_snapshot(&g, 8, stream(data2.clone()))
        .await
        .unwrap();
    assert!(read_all(c2.open_snapshot(&g, 8).await.unwrap()).await == data2);
    cleanup(&c).await;
}

/// An HTTP connector that hands each request to `object_store`'s default reqwest client and
/// records `METHOD path?query` of every request that succeeded.
#[derive(Debug, Clone, Default)]
struct RequestLog(Arc<Mutex<Vec<String>>>);

impl RequestLog {
    /// The requests recorded so far, in the order they were sent; the log is emptied.
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

impl HttpConnector for RequestLog {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        let inner = ReqwestConnector::default().connect(options)?;
        Ok(HttpClient::new(LoggedClient {
            inner,
            log: self.clone(),
        }))
    }
}

#[derive(Debug)]
struct LoggedClient {
    inner: HttpClient,
    log: RequestLog,
}

#[async_trait::async_trait]
impl HttpService for LoggedClient {
    async fn call(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        let line = format!("{} {}", req.method(), req.uri().path_and_query().unwrap());
        let res = self.inner.execute(req).await;
        // Attempts that failed and were retried by object_store are not the upload's requests.
        if res.as_ref().is_ok_and(|r| r.status().is_success()) {
            self.log.0.lock().unwrap().push(line);
        }
        res
    }
}

/// A source that fails after 3 MiB, i.e. after some 1 MiB blocks were staged: the write
/// fails and no blob appears (the shared suite covers the single-request case).
#[tokio::test]
async fn failed_block_upload_leaves_no_object() {
    let c = builder(&random_prefix("abort"))
        .with_part_size(1 << 20)
        .build()
        .unwrap();
    let g = gen("00000000000000ee");
    let e = c
        .write_snapshot(&g, 0, FailingSource::boxed(3 << 20))
        .await
        .err()
        .unwrap();
    assert!(e.to_string().contains(FailingSource::MESSAGE), "{e}");
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
    let c = litestream_abs::AbsClient::from_replica_config(&cfg)
        .await
        .unwrap();
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
    let e = litestream_abs::AbsClient::from_replica_config(&bad)
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
    let e = litestream_abs::AbsClient::from_replica_config(&bad)
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

/// An account SAS for Azurite's documented development key (blob service, all resource
/// types, rwdlac, valid until 2099), made with the account key as Azure does:
/// `base64(HMAC-SHA256(key, "devstoreaccount1\nrwdlac\nb\nsco\n\n2099-01-01T00:00:00Z\n\n\n2021-08-06\n\n"))`.
const VALID_SAS: &str = "sv=2021-08-06&ss=b&srt=sco&sp=rwdlac&se=2099-01-01T00:00:00Z&sig=96c2EygB3PgwPw%2FPybbUy3WlHCPrp0h%2FIdLehWe2UEU%3D";

#[tokio::test]
async fn a_valid_sas_token_writes_lists_and_reads() {
    let c = AbsBuilder::new()
        .with_account(env("TEST_ABS_ACCOUNT_NAME"))
        .with_container(env("TEST_ABS_CONTAINER"))
        .with_endpoint(env("TEST_ABS_ENDPOINT"))
        .with_path(random_prefix("sas"))
        .with_sas_token(VALID_SAS)
        .build()
        .unwrap();
    assert_eq!(c.credential(), &litestream_abs::Credential::Sas);
    let g = gen("00000000000000ab");
    let data = payload(3000, 7);
    c.write_snapshot(&g, 0, stream(data.clone())).await.unwrap();
    assert_eq!(c.generations().await.unwrap(), vec![g.clone()]);
    assert!(read_all(c.open_snapshot(&g, 0).await.unwrap()).await == data);
    // The same objects through the account key: the SAS client wrote where it said.
    let by_key = builder(c.root()).build().unwrap();
    assert_eq!(by_key.snapshots(&g).await.unwrap()[0].size, 3000);
    // Cleanup through the key: Azurite 3.35 answers a blob batch (the bulk delete) signed with
    // a SAS with 500 (measured), with the account key it works.
    by_key.delete_generation(&g).await.unwrap();
    assert!(c.generations().await.unwrap().is_empty());
}

/// Put `data` at the raw `key` with the `litestreamtimestamp` metadata `ts`, as v0.5 does.
async fn put_with_timestamp(c: &AbsClient, key: &str, data: &[u8], ts: Option<&str>) {
    let mut attributes = object_store::Attributes::new();
    if let Some(ts) = ts {
        attributes.insert(
            object_store::Attribute::Metadata("litestreamtimestamp".into()),
            ts.to_string().into(),
        );
    }
    let opts = object_store::PutOptions {
        attributes,
        ..Default::default()
    };
    c.object_store()
        .put_opts(&Path::from(key), PutPayload::from(data.to_vec()), opts)
        .await
        .unwrap();
}

/// Objects under v0.5's abs layout (`<path>/ltx/<level>/…`) list one directory at a time,
/// relative and sorted, and each reports its `litestreamtimestamp` metadata (RFC 3339 with
/// nanoseconds), `None` without it or when it does not parse.
#[tokio::test]
async fn ltx_layout_objects_list_read_and_report_writer_timestamps() {
    let c = client("ltx-objects");
    let root = c.root().to_string();
    let ts = "2026-12-06T01:02:03.123456789Z";
    let name = |min: u64, max: u64| format!("{min:016x}-{max:016x}.ltx");
    put_with_timestamp(
        &c,
        &format!("{root}/ltx/0/{}", name(2, 2)),
        b"two",
        Some(ts),
    )
    .await;
    put_with_timestamp(&c, &format!("{root}/ltx/0/{}", name(1, 1)), b"one", None).await;
    put_with_timestamp(
        &c,
        &format!("{root}/ltx/0/x/{}", name(4, 4)),
        b"deep",
        Some(ts),
    )
    .await;
    put_with_timestamp(
        &c,
        &format!("{root}/ltx/9/{}", name(1, 2)),
        b"snap",
        Some("bad"),
    )
    .await;

    let listed = c.list_objects("ltx/0").await.unwrap();
    let names: Vec<&str> = listed.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, [name(1, 1), name(2, 2)], "level 0 listing");
    assert_eq!(listed[1].size, 3);
    assert!(c.list_objects("ltx").await.unwrap().is_empty());

    let got = c
        .object_timestamp(&format!("ltx/0/{}", name(2, 2)))
        .await
        .unwrap();
    let want = litestream_core::parse_rfc3339(ts).unwrap();
    assert_eq!(got, Some(want));
    assert_eq!(want.nanosecond(), 123_456_789);
    for key in [
        format!("ltx/0/{}", name(1, 1)),
        format!("ltx/9/{}", name(1, 2)),
    ] {
        assert_eq!(c.object_timestamp(&key).await.unwrap(), None, "{key}");
    }
    let missing = c.object_timestamp(&format!("ltx/0/{}", name(9, 9))).await;
    assert!(missing.unwrap_err().is_not_found());
    let data = read_all(
        c.open_object(&format!("ltx/9/{}", name(1, 2)))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(data, b"snap");

    let store = c.object_store();
    for key in [
        format!("{root}/ltx/0/{}", name(2, 2)),
        format!("{root}/ltx/0/{}", name(1, 1)),
        format!("{root}/ltx/0/x/{}", name(4, 4)),
        format!("{root}/ltx/9/{}", name(1, 2)),
    ] {
        store.delete(&Path::from(key)).await.unwrap();
    }
}
