//! [`FileClient`] on a temporary directory against the shared `ReplicaClient` behaviour suite.

use litestream_file::FileClient;

#[tokio::test]
async fn file_client_passes_the_replica_client_suite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("replica");
    let client = FileClient::new(&root);
    litestream_conformance::run_all(&client).await;
    // The writer's timestamp is the file's mtime, as v0.5 sets it.
    assert_eq!(
        litestream_conformance::objects_written_keep_their_timestamp(&client).await,
        litestream_conformance::TimestampKept::ListedTime
    );
    // Nothing is left behind: no temporary files from the failed uploads, no generations.
    let left: Vec<_> = std::fs::read_dir(root.join("generations"))
        .expect("generations dir")
        .map(|e| e.expect("entry").path())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
