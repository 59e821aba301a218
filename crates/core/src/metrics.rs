//! Process-wide counters behind Litestream's metric names, kept in one place.
//!
//! Backends call [`record_operation`] for every request they make; the metrics endpoint and
//! tests read [`operation_counts`].

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;

/// A kind of backend request, labelled as Litestream labels it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operation {
    /// Reading an object.
    Get,
    /// Writing an object (or one part of it).
    Put,
    /// Listing a prefix.
    List,
    /// Deleting objects.
    Delete,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operation::Get => "GET",
            Operation::Put => "PUT",
            Operation::List => "LIST",
            Operation::Delete => "DELETE",
        })
    }
}

/// Count and bytes of one (replica type, operation) pair.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OperationCount {
    /// Requests made (`litestream_replica_operation_total`).
    pub total: u64,
    /// Payload bytes moved (`litestream_replica_operation_bytes`).
    pub bytes: u64,
}

static OPERATIONS: Mutex<BTreeMap<(&'static str, Operation), OperationCount>> =
    Mutex::new(BTreeMap::new());

/// Record one request of `op` by a `replica_type` backend that moved `bytes` bytes.
pub fn record_operation(replica_type: &'static str, op: Operation, bytes: u64) {
    if let Ok(mut map) = OPERATIONS.lock() {
        let c = map.entry((replica_type, op)).or_default();
        c.total += 1;
        c.bytes += bytes;
    }
}

/// A snapshot of every operation counter.
pub fn operation_counts() -> Vec<(&'static str, Operation, OperationCount)> {
    OPERATIONS
        .lock()
        .map(|m| m.iter().map(|((t, o), c)| (*t, *o, *c)).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_accumulate() {
        record_operation("test-metrics", Operation::Put, 10);
        record_operation("test-metrics", Operation::Put, 5);
        let c = operation_counts()
            .into_iter()
            .find(|(t, o, _)| *t == "test-metrics" && *o == Operation::Put)
            .map(|(_, _, c)| c)
            .expect("counter");
        assert_eq!(
            c,
            OperationCount {
                total: 2,
                bytes: 15
            }
        );
    }
}
