//! The replication engine (being written): tail the WAL, keep the shadow WAL, checkpoint,
//! ship segments and snapshots, enforce retention.
