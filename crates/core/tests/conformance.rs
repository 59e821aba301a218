//! [`MemoryClient`] against the shared `ReplicaClient` behaviour suite.

use litestream_core::memory::MemoryClient;

#[tokio::test]
async fn memory_client_passes_the_replica_client_suite() {
    litestream_conformance::run_all(&MemoryClient::new()).await;
}
