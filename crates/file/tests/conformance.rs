//! [`FileClient`] on a temporary directory against the shared `ReplicaClient` behaviour suite.

use litestream_file::FileClient;

#[tokio::test]
async fn file_client_passes_the_replica_client_suite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("replica");
    litestream_conformance::run_all(&FileClient::new(&root)).await;
    // Nothing is left behind: no temporary files from the failed uploads, no generations.
    let left: Vec<_> = std::fs::read_dir(root.join("generations"))
        .expect("generations dir")
        .map(|e| e.expect("entry").path())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
