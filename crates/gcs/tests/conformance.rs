//! The shared `ReplicaClient` suite against the GCS emulator (`gcp-storage-emulator`), plus
//! gcs-specific cases: exact object names, resumable uploads in chunks, v0.5 timestamps in
//! metadata, a missing bucket, an unreachable server, service-account credentials.
//!
//! Needs the servers of `scripts/test.sh` (`TEST_GCS_EMULATOR_HOST`, `TEST_GCS_BUCKET`); a
//! missing variable is a failure.
#![allow(missing_docs, clippy::unwrap_used)]

use std::time::Duration;

use litestream_conformance::{payload, read_all, stream, FailingSource};
use litestream_core::{Generation, Pos, ReplicaClient};
use litestream_gcs::{BackoffConfig, GcsBuilder, GcsClient, RetryConfig};
use rand::Rng;
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{name} is not set: the gcs tests need the GCS emulator; run scripts/test.sh \
             (or eval \"$(bash scripts/test-servers/start.sh)\")"
        ),
    }
}

fn random_prefix(tag: &str) -> String {
    let mut b = [0u8; 6];
    rand::rng().fill_bytes(&mut b);
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("test-gcs/{tag}-{hex}")
}

fn builder(prefix: &str) -> GcsBuilder {
    GcsBuilder::new()
        .with_bucket(env("TEST_GCS_BUCKET"))
        .with_emulator_host(env("TEST_GCS_EMULATOR_HOST"))
        .with_path(prefix)
}

fn client(tag: &str) -> GcsClient {
    builder(&random_prefix(tag)).build().unwrap()
}

fn gen(s: &str) -> Generation {
    Generation::parse(s).unwrap()
}

async fn cleanup(c: &GcsClient) {
    for g in c.generations().await.unwrap() {
        c.delete_generation(&g).await.unwrap();
    }
}

/// The object resource as the emulator's JSON API returns it (read without our client).
async fn raw_resource(name: &str) -> Option<serde_json::Value> {
    let mut url = url::Url::parse(&format!(
        "http://{}/storage/v1/b/{}/o",
        env("TEST_GCS_EMULATOR_HOST"),
        env("TEST_GCS_BUCKET")
    ))
    .unwrap();
    url.path_segments_mut().unwrap().push(name);
    let resp = reqwest::get(url).await.unwrap();
    if resp.status() == reqwest::StatusCode::NOT_FOUND {
        return None;
    }
    assert!(resp.status().is_success(), "{}", resp.status());
    Some(serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap())
}

#[tokio::test]
async fn gcs_client_passes_the_replica_client_suite() {
    let c = client("suite");
    litestream_conformance::run_all(&c).await;
    // The writer's timestamp is the `litestream-timestamp` metadata, as v0.5 writes it.
    assert_eq!(
        litestream_conformance::objects_written_keep_their_timestamp(&c).await,
        litestream_conformance::TimestampKept::Metadata
    );
}

#[tokio::test]
async fn object_names_are_exactly_litestreams() {
    let c = client("keys");
    let g = gen("00000000000000aa");
    c.write_snapshot(&g, 3, stream(payload(1000, 7)))
        .await
        .unwrap();
    c.write_wal_segment(&Pos::new(g.clone(), 3, 0x1038), stream(payload(10, 9)))
        .await
        .unwrap();
    let root = c.root().to_string();
    let snap = format!("{root}/generations/00000000000000aa/snapshots/00000003.snapshot.lz4");
    let res = raw_resource(&snap).await.expect("snapshot object");
    assert_eq!(res["size"], "1000");
    assert_eq!(res["contentType"], "application/octet-stream");
    let wal = format!("{root}/generations/00000000000000aa/wal/00000003_00001038.wal.lz4");
    assert_eq!(raw_resource(&wal).await.expect("wal object")["size"], "10");
    // Listed times are the objects' timeCreated, as Litestream v0.3.13 reports them.
    let created = res["timeCreated"].as_str().unwrap();
    let created =
        OffsetDateTime::parse(created, &time::format_description::well_known::Rfc3339).unwrap();
    assert_eq!(c.snapshots(&g).await.unwrap()[0].created_at, created);
    cleanup(&c).await;
}

#[tokio::test]
async fn large_payloads_go_up_in_resumable_chunks() {
    let c = builder(&random_prefix("chunks"))
        .with_part_size(256 << 10)
        .build()
        .unwrap();
    let g = gen("00000000000000bb");
    // Not a multiple of the chunk size, and exactly one: both ways of ending the upload.
    for (index, len) in [(1u32, (256 << 10) * 5 + 123), (2, (256 << 10) * 2)] {
        let data = payload(len, u64::from(index));
        let info = c
            .write_snapshot(&g, index, stream(data.clone()))
            .await
            .unwrap();
        assert_eq!(info.size, len as u64);
        let back = read_all(c.open_snapshot(&g, index).await.unwrap()).await;
        assert!(back == data, "snapshot {index}: {} bytes back", back.len());
    }
    // A source failing after two chunks leaves nothing behind under the name.
    let err = c
        .write_snapshot(&g, 9, FailingSource::boxed((256 << 10) * 2 + 10))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("00000009.snapshot.lz4"), "{err}");
    let indexes: Vec<u32> = c
        .snapshots(&g)
        .await
        .unwrap()
        .iter()
        .map(|s| s.index)
        .collect();
    assert_eq!(indexes, vec![1, 2]);
    cleanup(&c).await;
}

#[tokio::test]
async fn write_object_stores_the_v05_timestamp_in_metadata() {
    let c = client("objects");
    let t = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789).unwrap();
    let n = c
        .write_object(
            "ltx/0/0000000000000001-0000000000000001.ltx",
            stream(payload(300, 1)),
            t,
        )
        .await
        .unwrap();
    assert_eq!(n, 300);
    let key = "ltx/0/0000000000000001-0000000000000001.ltx";
    assert_eq!(c.object_timestamp(key).await.unwrap(), Some(t));
    let raw = raw_resource(&format!("{}/{key}", c.root())).await.unwrap();
    assert_eq!(
        raw["metadata"]["litestream-timestamp"],
        "2023-11-14T22:13:20.123456789Z"
    );
    let listed = c.list_objects("ltx/0").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].size, listed[0].name.as_str()),
        (300, "0000000000000001-0000000000000001.ltx")
    );
    assert_eq!(
        read_all(c.open_object(key).await.unwrap()).await,
        payload(300, 1)
    );
    // An object written without metadata has no writer timestamp.
    c.write_snapshot(&gen("00000000000000cc"), 1, stream(vec![1, 2, 3]))
        .await
        .unwrap();
    let snap = "generations/00000000000000cc/snapshots/00000001.snapshot.lz4";
    assert_eq!(c.object_timestamp(snap).await.unwrap(), None);
    c.delete_generation(&gen("00000000000000cc")).await.unwrap();
    assert!(c
        .open_object("ltx/0/nope.ltx")
        .await
        .err()
        .unwrap()
        .is_not_found());
}

#[tokio::test]
async fn a_missing_bucket_is_named_in_the_error() {
    let c = GcsBuilder::new()
        .with_bucket("no-such-bucket-litestream-rs")
        .with_emulator_host(env("TEST_GCS_EMULATOR_HOST"))
        .with_path("db")
        .build()
        .unwrap();
    let e = c.generations().await.unwrap_err().to_string();
    assert!(
        e.contains("bucket \"no-such-bucket-litestream-rs\" does not exist"),
        "{e}"
    );
    let e = c
        .write_snapshot(&gen("00000000000000aa"), 1, stream(vec![1]))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("gcs://no-such-bucket-litestream-rs/db/generations/"),
        "{e}"
    );
}

#[tokio::test]
async fn an_unreachable_server_is_a_retryable_error_naming_the_object() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let c = GcsBuilder::new()
        .with_bucket("b")
        .with_emulator_host(format!("127.0.0.1:{port}"))
        .with_path("db")
        .with_retry(RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(10),
                max_backoff: Duration::from_millis(20),
                base: 2.0,
            },
            max_retries: 2,
            retry_timeout: Duration::from_secs(5),
        })
        .build()
        .unwrap();
    let e = c
        .open_snapshot(&gen("00000000000000aa"), 1)
        .await
        .err()
        .unwrap();
    assert!(e.is_retryable(), "{e}");
    assert!(
        e.to_string()
            .contains("gcs://b/db/generations/00000000000000aa/snapshots/00000001.snapshot.lz4"),
        "{e}"
    );
}

/// A service-account key made here with openssl (PKCS#8 PEM), as a JSON key file.
fn service_account_file(dir: &std::path::Path) -> std::path::PathBuf {
    let out = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ])
        .output()
        .expect("openssl must be installed for this test");
    assert!(out.status.success(), "openssl genpkey failed");
    let pem = String::from_utf8(out.stdout).unwrap();
    let json = serde_json::json!({
        "type": "service_account",
        "project_id": "litestream-rs-test",
        "private_key_id": "0123456789abcdef",
        "private_key": pem,
        "client_email": "litestream@litestream-rs-test.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": "https://oauth2.googleapis.com/token",
    });
    let path = dir.join("sa.json");
    std::fs::write(&path, json.to_string()).unwrap();
    path
}

#[tokio::test]
async fn service_account_credentials_sign_every_request() {
    let dir = tempfile::tempdir().unwrap();
    let sa = service_account_file(dir.path());

    // What goes over the wire: one request to a listener that records it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 16 << 10];
        let mut n = 0;
        while !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
            let m = sock.read(&mut buf[n..]).await.unwrap();
            assert!(m > 0, "connection closed before the headers");
            n += m;
        }
        let body = br#"{"kind":"storage#objects"}"#;
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        sock.write_all(head.as_bytes()).await.unwrap();
        sock.write_all(body).await.unwrap();
        String::from_utf8_lossy(&buf[..n]).to_string()
    });
    let c = GcsBuilder::new()
        .with_bucket("b")
        .with_endpoint(format!("http://{addr}"))
        .with_credentials_file(sa.to_string_lossy())
        .build()
        .unwrap();
    assert!(c.generations().await.unwrap().is_empty());
    let request = server.await.unwrap();
    let auth = request
        .lines()
        .find_map(|l| {
            l.strip_prefix("authorization: ")
                .or_else(|| l.strip_prefix("Authorization: "))
        })
        .unwrap_or_else(|| panic!("no Authorization header in:\n{request}"));
    let jwt = auth.strip_prefix("Bearer ").expect("a bearer token");
    assert_eq!(jwt.split('.').count(), 3, "a signed JWT: {jwt}");

    // And the same credentials against the emulator, which ignores them: a full round trip.
    let c = GcsBuilder::new()
        .with_bucket(env("TEST_GCS_BUCKET"))
        .with_endpoint(format!("http://{}", env("TEST_GCS_EMULATOR_HOST")))
        .with_credentials_file(sa.to_string_lossy())
        .with_path(random_prefix("sa"))
        .build()
        .unwrap();
    let g = gen("00000000000000dd");
    c.write_snapshot(&g, 1, stream(payload(100, 3)))
        .await
        .unwrap();
    assert_eq!(
        read_all(c.open_snapshot(&g, 1).await.unwrap()).await,
        payload(100, 3)
    );
    cleanup(&c).await;
}

#[tokio::test]
async fn a_bad_credentials_file_is_refused_at_build() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sa.json");
    std::fs::write(&path, r#"{"type":"service_account","private_key":"nope"}"#).unwrap();
    let e = GcsBuilder::new()
        .with_bucket("b")
        .with_credentials_file(path.to_string_lossy())
        .build()
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("sa.json") && e.contains("bucket b"), "{e}");
}
