//! [`FileClient::write_object`]: LTX-style object writes with the writer's timestamp as mtime.

use std::time::{Duration, UNIX_EPOCH};

use litestream_core::ReplicaClient;
use litestream_file::FileClient;
use time::OffsetDateTime;
use tokio::io::AsyncReadExt;

fn stream(b: &[u8]) -> litestream_core::ByteStream {
    Box::pin(std::io::Cursor::new(b.to_vec()))
}

#[tokio::test]
async fn writes_atomically_with_the_timestamp_as_mtime() {
    let dir = tempfile::tempdir().expect("tempdir");
    let client = FileClient::new(dir.path());
    let key = "ltx/0/0000000000000002-0000000000000002.ltx";
    let ts = OffsetDateTime::from_unix_timestamp_nanos(1_795_690_816_369_000_000).expect("ts");
    assert_eq!(
        client
            .write_object(key, stream(b"old"), ts)
            .await
            .expect("write"),
        3
    );
    assert_eq!(
        client
            .write_object(key, stream(b"newer"), ts)
            .await
            .expect("write"),
        5
    );
    let mut got = Vec::new();
    let mut s = client.open_object(key).await.expect("open");
    s.read_to_end(&mut got).await.expect("read");
    assert_eq!(got, b"newer");
    let mtime = std::fs::metadata(dir.path().join(key))
        .expect("meta")
        .modified()
        .expect("mtime");
    assert_eq!(mtime, UNIX_EPOCH + Duration::from_millis(1_795_690_816_369));
    let listed = client.list_objects("ltx/0").await.expect("list");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].modified, ts);
    for bad in ["../x", "/etc/x", "ltx//x", ""] {
        let err = client
            .write_object(bad, stream(b"x"), ts)
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("invalid object key"),
            "{bad}: {err}"
        );
    }
    assert!(!dir.path().parent().expect("parent").join("x").exists());
}
