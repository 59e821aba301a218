//! Fault tests against a private moto server on its own port (never the shared one): the
//! server going away and coming back, and a proxy that answers a share of requests with
//! 500/503 or drops connections.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common;
use crate::common::{bytes, read_all, stream};
use litestream_core::{Generation, Pos, ReplicaClient, RetryConfig};
use litestream_s3::{S3Builder, S3Client};
use litestream_test_servers::Moto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const BUCKET: &str = "fault-bucket";

async fn client_for(endpoint: &str, attempts: u32) -> S3Client {
    S3Builder::new(BUCKET)
        .with_endpoint(endpoint)
        .with_credentials("test", "testtest")
        .with_path(common::random_prefix("faults"))
        .with_max_attempts(attempts)
        .build()
        .await
        .expect("build")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_recovers_after_the_server_is_stopped_and_started_again() {
    let mut moto = Moto::start();
    let c = client_for(&moto.endpoint(), 2).await;
    common::create_bucket(&c, BUCKET).await;
    let g = Generation::parse("abcdefabcdefabcd").expect("gen");
    c.write_snapshot(&g, 0, stream(bytes(1000, 1)))
        .await
        .expect("write");

    moto.stop();
    let e = c
        .write_wal_segment(&Pos::new(g.clone(), 0, 0), stream(vec![1; 10]))
        .await
        .expect_err("server is down");
    assert!(e.is_retryable(), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains(BUCKET) && msg.contains(&moto.endpoint()),
        "{msg}"
    );
    let e = c.open_snapshot(&g, 0).await.err().expect("server is down");
    assert!(e.is_retryable() && !e.is_not_found(), "{e}");

    // Back up (moto keeps data in memory, so the bucket is recreated): the same client,
    // with its connection pool, works again without being rebuilt.
    moto.restart();
    common::create_bucket(&c, BUCKET).await;
    let seg = bytes(5000, 2);
    let pos = Pos::new(g.clone(), 0, 0);
    c.write_wal_segment(&pos, stream(seg.clone()))
        .await
        .expect("write after restart");
    assert_eq!(
        read_all(c.open_wal_segment(&pos).await.expect("open")).await,
        seg
    );
}

/// A TCP proxy that, per connection, answers 503 or 500, drops the connection, cuts it off
/// after a short while, or passes it through. Returns its port and a fault counter.
async fn flaky_proxy(upstream: u16) -> (u16, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let port = listener.local_addr().expect("addr").port();
    let faults = Arc::new(AtomicU64::new(0));
    let counter = faults.clone();
    tokio::spawn(async move {
        let mut n: u64 = 0;
        loop {
            let Ok((mut down, _)) = listener.accept().await else {
                return;
            };
            n += 1;
            let faults = counter.clone();
            tokio::spawn(async move {
                match n % 5 {
                    0 | 2 => {
                        faults.fetch_add(1, Ordering::SeqCst);
                        let mut buf = [0u8; 1024];
                        let _ = down.read(&mut buf).await;
                        let status = if n.is_multiple_of(5) {
                            "503 Service Unavailable"
                        } else {
                            "500 Internal Server Error"
                        };
                        let _ = down
                            .write_all(
                                format!(
                                    "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                                )
                                .as_bytes(),
                            )
                            .await;
                    }
                    4 => {
                        faults.fetch_add(1, Ordering::SeqCst);
                        drop(down);
                    }
                    _ => {
                        let Ok(mut up) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                            return;
                        };
                        // Every 7th passed-through connection is cut off mid-way.
                        let limit = if n % 7 == 1 {
                            Duration::from_millis(20)
                        } else {
                            Duration::from_secs(3600)
                        };
                        let _ = tokio::time::timeout(
                            limit,
                            tokio::io::copy_bidirectional(&mut down, &mut up),
                        )
                        .await;
                    }
                }
            });
        }
    });
    (port, faults)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_and_reads_survive_500s_503s_and_dropped_connections() {
    let moto = Moto::start();
    let direct = client_for(&moto.endpoint(), 1).await;
    common::create_bucket(&direct, BUCKET).await;
    let (port, faults) = flaky_proxy(moto.port).await;
    let c = client_for(&format!("http://127.0.0.1:{port}"), 3).await;
    let retry = RetryConfig {
        max_attempts: 10,
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
    };
    let g = Generation::parse("0102030405060708").expect("gen");
    let mut expected = Vec::new();
    for i in 0..20u32 {
        let pos = Pos::new(g.clone(), i / 5, u64::from(i % 5) * 4152);
        let data = bytes(3000 + i as usize * 100, u64::from(i));
        retry
            .run("write wal", || {
                c.write_wal_segment(&pos, stream(data.clone()))
            })
            .await
            .expect("write through flaky proxy");
        expected.push((pos, data));
    }
    let snap = bytes(litestream_s3::MIN_PART_SIZE + 4096, 99);
    retry
        .run("write snapshot", || {
            c.write_snapshot(&g, 3, stream(snap.clone()))
        })
        .await
        .expect("multipart through flaky proxy");

    let listed = retry
        .run("list", || c.wal_segments(&g))
        .await
        .expect("list");
    assert_eq!(listed.len(), expected.len());
    for (pos, data) in &expected {
        let got = retry
            .run("read", || async {
                common::try_read_all(c.open_wal_segment(pos).await?).await
            })
            .await
            .expect("read through flaky proxy");
        assert_eq!(&got, data, "{pos}");
    }
    let got = retry
        .run("read snapshot", || async {
            common::try_read_all(c.open_snapshot(&g, 3).await?).await
        })
        .await
        .expect("read snapshot");
    assert!(got == snap, "snapshot differs");
    assert!(
        faults.load(Ordering::SeqCst) > 5,
        "the proxy injected faults"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_verify_accepts_a_self_signed_certificate_and_verification_rejects_it() {
    let moto = Moto::start_with_tls(true);
    let build = |skip: bool| {
        S3Builder::new(BUCKET)
            .with_endpoint(moto.endpoint())
            .with_credentials("test", "testtest")
            .with_path(common::random_prefix("tls"))
            .with_skip_verify(skip)
            .with_max_attempts(1)
            .build()
    };
    let insecure = build(true).await.expect("build");
    common::create_bucket(&insecure, BUCKET).await;
    let g = Generation::parse("0f0f0f0f0f0f0f0f").expect("gen");
    let data = bytes(litestream_s3::MIN_PART_SIZE + 1, 5);
    insecure
        .write_snapshot(&g, 0, stream(data.clone()))
        .await
        .expect("write over TLS without verification");
    let back = read_all(insecure.open_snapshot(&g, 0).await.expect("open")).await;
    assert!(back == data, "snapshot over TLS differs");
    assert_eq!(insecure.snapshots(&g).await.expect("list").len(), 1);

    let verifying = build(false).await.expect("build");
    let e = verifying
        .snapshots(&g)
        .await
        .expect_err("a self-signed certificate must be rejected without skip-verify");
    let msg = e.to_string();
    assert!(
        msg.contains(BUCKET) && msg.contains(&moto.endpoint()),
        "{msg}"
    );
}
