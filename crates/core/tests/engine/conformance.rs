//! [`MemoryClient`] against the shared `ReplicaClient` behaviour suite.

use litestream_core::MemoryClient;

#[tokio::test]
async fn memory_client_passes_the_replica_client_suite() {
    let client = MemoryClient::new();
    litestream_conformance::run_all(&client).await;
    assert_eq!(
        litestream_conformance::objects_written_keep_their_timestamp(&client).await,
        litestream_conformance::TimestampKept::ListedTime
    );
}
