//! An S3 server that misbehaves in ways moto cannot (issue 13, item 5): a tiny in-test HTTP
//! server answering every ListObjectsV2 with the same continuation token.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use litestream_core::ReplicaClient;
use litestream_s3::S3Builder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Serve every request with a truncated ListObjectsV2 page whose continuation token is always
/// the same. Returns the endpoint and a request counter.
async fn repeating_token_server() -> (String, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let count = Arc::new(AtomicU64::new(0));
    let counter = count.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 << 10];
                let mut have = Vec::new();
                loop {
                    let Ok(n) = sock.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    have.extend_from_slice(&buf[..n]);
                    while let Some(end) = have.windows(4).position(|w| w == b"\r\n\r\n") {
                        have.drain(..end + 4);
                        counter.fetch_add(1, Ordering::Relaxed);
                        let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
                            <ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
                            <Name>b</Name><Prefix>p/generations/</Prefix><KeyCount>0</KeyCount>\
                            <MaxKeys>1000</MaxKeys><IsTruncated>true</IsTruncated>\
                            <NextContinuationToken>same-token</NextContinuationToken>\
                            </ListBucketResult>";
                        let resp = format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\n\
                             Content-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if sock.write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (format!("http://127.0.0.1:{port}"), count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_continuation_token_is_an_error_not_a_loop() {
    let (endpoint, count) = repeating_token_server().await;
    let c = S3Builder::new("b")
        .with_endpoint(&endpoint)
        .with_credentials("test", "testtest")
        .with_path("p")
        .with_max_attempts(1)
        .build()
        .await
        .expect("build");
    let res = tokio::time::timeout(Duration::from_secs(20), c.generations()).await;
    let requests = count.load(Ordering::Relaxed);
    let err = res
        .unwrap_or_else(|_| panic!("listing still looping after 20 s ({requests} requests)"))
        .expect_err("a listing that never ends");
    let msg = err.to_string();
    assert!(msg.contains("continuation token"), "{msg}");
    assert!(msg.contains("\"b\""), "names the bucket: {msg}");
    assert!(requests <= 3, "{requests} requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_verify_client_keeps_the_read_timeout() {
    // Accepts connections and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    let c = S3Builder::new("b")
        .with_endpoint(format!("http://127.0.0.1:{port}"))
        .with_credentials("test", "testtest")
        .with_path("p")
        .with_max_attempts(1)
        .with_skip_verify(true)
        .with_read_timeout(Duration::from_secs(1))
        .build()
        .await
        .expect("build");
    let res = tokio::time::timeout(Duration::from_secs(30), c.generations()).await;
    let err = res
        .expect("the skip-verify client waited more than 30 s for a silent server")
        .expect_err("a server that never answers");
    assert!(err.is_retryable(), "{err}");
}
