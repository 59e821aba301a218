//! Faults: the server dies and comes back while a client is in use. Uses its OWN sshd on a
//! free port (`litestream_test_servers::PrivateSshd`: same config and keys as the shared test
//! server, different Port), never the shared one.

use std::time::Duration;

use crate::common::*;
use litestream_core::RetryConfig;
use litestream_core::{Generation, Pos, ReplicaClient};
use litestream_sftp::SftpClient;
use litestream_test_servers::PrivateSshd;

/// sshd is killed (with its sessions) and restarted while segments are being written: the
/// client reconnects by itself, later writes succeed, and every committed segment is intact.
#[tokio::test]
async fn client_reconnects_after_sshd_is_killed_and_restarted() {
    let mut sshd = PrivateSshd::start();
    let dir = RemoteDir::new("fault");
    let mut cfg = password_config(&dir.path);
    cfg.host = Some(format!("127.0.0.1:{}", sshd.port));
    let client = SftpClient::from_replica_config(&cfg)
        .await
        .expect("client")
        .with_retry(RetryConfig {
            max_attempts: 12,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
        });
    let g = Generation::parse("00000000000fa017").expect("gen");
    let seg = |i: u32| Pos::new(g.clone(), i, 0);

    for i in 0..5 {
        client
            .write_wal_segment(&seg(i), bytes(payload(3000, i as u8)))
            .await
            .expect("write before the crash");
    }

    sshd.kill();
    // Down for a while; the restart happens in the background while the client is waiting.
    let restarter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        sshd.restart();
        sshd
    });

    // Listing and writing during the outage block in the reconnect loop, then succeed.
    let listed = client
        .wal_segments(&g)
        .await
        .expect("list across the restart");
    assert_eq!(listed.len(), 5);
    let sshd = restarter.join().expect("restart thread");
    for i in 5..10 {
        client
            .write_wal_segment(&seg(i), bytes(payload(3000, i as u8)))
            .await
            .expect("write after the restart");
    }

    assert_eq!(
        sshd.accepted_logins(),
        2,
        "one login before the crash, one after"
    );
    let listed = client.wal_segments(&g).await.expect("list");
    assert_eq!(
        listed.iter().map(|s| s.index).collect::<Vec<_>>(),
        (0..10).collect::<Vec<_>>()
    );
    for i in 0..10 {
        let got = read_all(client.open_wal_segment(&seg(i)).await.expect("open")).await;
        assert_eq!(got, payload(3000, i as u8), "segment {i}");
    }
    drop(sshd);
}

/// With the server gone for good, requests fail with a retryable error naming the endpoint
/// (after the configured attempts) instead of hanging.
#[tokio::test]
async fn dead_server_gives_a_retryable_error() {
    let mut sshd = PrivateSshd::start();
    let port = sshd.port;
    let dir = RemoteDir::new("dead");
    let mut cfg = password_config(&dir.path);
    cfg.host = Some(format!("127.0.0.1:{port}"));
    let client = SftpClient::from_replica_config(&cfg)
        .await
        .expect("client")
        .with_retry(RetryConfig {
            max_attempts: 2,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(50),
        });
    client.generations().await.expect("first request");
    sshd.kill();
    let e = client.generations().await.expect_err("server is gone");
    assert!(e.is_retryable(), "{e}");
    assert!(
        e.to_string().contains(&format!("lstest@127.0.0.1:{port}")),
        "{e}"
    );
    assert!(!e.to_string().contains(&env("TEST_SFTP_PASSWORD")), "{e}");
}

/// sshd dies while a snapshot is being uploaded: the write fails with a retryable error, the
/// half-written object never appears under its real name, and after the restart the same
/// write succeeds on a new connection.
#[tokio::test]
async fn half_written_upload_is_never_visible_under_its_real_name() {
    use tokio::io::AsyncWriteExt;

    let mut sshd = PrivateSshd::start();
    let dir = RemoteDir::new("halfwrite");
    let mut cfg = key_config(&dir.path);
    cfg.host = Some(format!("127.0.0.1:{}", sshd.port));
    cfg.known_hosts_path = None;
    cfg.host_key = Some(env("TEST_SFTP_HOST_KEY"));
    let client = SftpClient::from_replica_config(&cfg)
        .await
        .expect("client")
        .with_retry(RetryConfig {
            max_attempts: 12,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
        });
    let g = Generation::parse("00000000000ba1f0").expect("gen");
    let real = format!(
        "{}/generations/{g}/snapshots/00000003.snapshot.lz4",
        dir.path
    );

    let (mut tx, rx) = tokio::io::duplex(64 * 1024);
    let feeder = tokio::spawn(async move {
        for i in 0..200u32 {
            if tx.write_all(&payload(64 * 1024, i as u8)).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let upload = tokio::spawn({
        let client = std::sync::Arc::new(client);
        let g = g.clone();
        let c = client.clone();
        async move { (c.write_snapshot(&g, 3, Box::pin(rx)).await, client) }
    });
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        !std::path::Path::new(&real).exists(),
        "visible while uploading"
    );
    sshd.kill();
    let (result, client) = upload.await.expect("join");
    feeder.abort();
    let e = result.expect_err("upload must fail when the server dies");
    assert!(e.is_retryable(), "{e}");
    assert!(
        !std::path::Path::new(&real).exists(),
        "half-written snapshot visible"
    );

    sshd.restart();
    let data = payload(3 * 1024 * 1024, 5);
    client
        .write_snapshot(&g, 3, bytes(data.clone()))
        .await
        .expect("write after restart");
    assert_eq!(
        read_all(client.open_snapshot(&g, 3).await.expect("open")).await,
        data
    );
    assert_eq!(client.snapshots(&g).await.expect("list").len(), 1);
}

/// One connection per client: many requests, a single SSH login.
#[tokio::test]
async fn one_connection_is_reused_for_all_requests() {
    let sshd = PrivateSshd::start();
    let dir = RemoteDir::new("reuse");
    let mut cfg = key_config(&dir.path);
    cfg.host = Some(format!("127.0.0.1:{}", sshd.port));
    cfg.known_hosts_path = None;
    cfg.host_key = Some(env("TEST_SFTP_HOST_KEY"));
    let client = SftpClient::from_replica_config(&cfg).await.expect("client");
    assert_eq!(sshd.accepted_logins(), 0, "connecting is lazy");
    let g = Generation::parse("000000000000c0de").expect("gen");
    for i in 0..10 {
        let pos = Pos::new(g.clone(), i, 0);
        client
            .write_wal_segment(&pos, bytes(payload(100, i as u8)))
            .await
            .expect("write");
        read_all(client.open_wal_segment(&pos).await.expect("open")).await;
        client.wal_segments(&g).await.expect("list");
    }
    client.generations().await.expect("gens");
    assert_eq!(sshd.accepted_logins(), 1);
}
