//! [`MemoryClient`]: an in-process [`ReplicaClient`] for tests and embedding experiments.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use time::OffsetDateTime;
use tokio::io::AsyncReadExt;

use crate::error::{Error, Result};
use crate::layout;
use crate::pos::{Generation, Pos};
use crate::replica_client::{ByteStream, ReplicaClient, SnapshotInfo, WalSegmentInfo};

#[derive(Debug, Clone)]
struct Object {
    data: Arc<Vec<u8>>,
    created_at: OffsetDateTime,
}

#[derive(Debug, Default)]
struct Store {
    snapshots: BTreeMap<(Generation, u32), Object>,
    segments: BTreeMap<(Generation, u32, u64), Object>,
}

/// A replica held in memory; clones share the same store.
#[derive(Debug, Clone, Default)]
pub struct MemoryClient {
    store: Arc<Mutex<Store>>,
}

impl MemoryClient {
    /// An empty replica.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Store>> {
        self.store.lock().map_err(|_| Error::Backend {
            kind: "memory",
            message: "store lock poisoned".into(),
            retryable: false,
            source: None,
        })
    }

    fn reader(data: Arc<Vec<u8>>) -> ByteStream {
        Box::pin(std::io::Cursor::new(data.as_ref().clone()))
    }

    async fn read_all(mut data: ByteStream) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        data.read_to_end(&mut buf)
            .await
            .map_err(|e| Error::io("memory object", e))?;
        Ok(buf)
    }

    /// Set the created-at time of a stored object (tests of point-in-time restore).
    pub fn set_wal_segment_time(&self, pos: &Pos, t: OffsetDateTime) -> Result<()> {
        let mut s = self.lock()?;
        let key = (pos.generation.clone(), pos.index, pos.offset);
        let obj = s
            .segments
            .get_mut(&key)
            .ok_or_else(|| Error::not_found(pos.to_string()))?;
        obj.created_at = t;
        Ok(())
    }
}

#[async_trait]
impl ReplicaClient for MemoryClient {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn generations(&self) -> Result<Vec<Generation>> {
        let s = self.lock()?;
        let g: BTreeSet<Generation> = s
            .snapshots
            .keys()
            .map(|k| k.0.clone())
            .chain(s.segments.keys().map(|k| k.0.clone()))
            .collect();
        Ok(g.into_iter().collect())
    }

    async fn snapshots(&self, generation: &Generation) -> Result<Vec<SnapshotInfo>> {
        let s = self.lock()?;
        Ok(s.snapshots
            .iter()
            .filter(|(k, _)| k.0 == *generation)
            .map(|(k, o)| SnapshotInfo::new(&k.0, k.1, o.data.len() as u64, o.created_at))
            .collect())
    }

    async fn wal_segments(&self, generation: &Generation) -> Result<Vec<WalSegmentInfo>> {
        let s = self.lock()?;
        Ok(s.segments
            .iter()
            .filter(|(k, _)| k.0 == *generation)
            .map(|(k, o)| WalSegmentInfo::new(&k.0, k.1, k.2, o.data.len() as u64, o.created_at))
            .collect())
    }

    async fn open_snapshot(&self, generation: &Generation, index: u32) -> Result<ByteStream> {
        let s = self.lock()?;
        let o = s
            .snapshots
            .get(&(generation.clone(), index))
            .ok_or_else(|| Error::not_found(format!("snapshot {generation}/{index:08x}")))?;
        Ok(Self::reader(o.data.clone()))
    }

    async fn open_wal_segment(&self, pos: &Pos) -> Result<ByteStream> {
        let s = self.lock()?;
        let o = s
            .segments
            .get(&(pos.generation.clone(), pos.index, pos.offset))
            .ok_or_else(|| Error::not_found(format!("wal segment {pos}")))?;
        Ok(Self::reader(o.data.clone()))
    }

    async fn write_snapshot(
        &self,
        generation: &Generation,
        index: u32,
        data: ByteStream,
    ) -> Result<SnapshotInfo> {
        let data = Self::read_all(data).await?;
        let created_at = OffsetDateTime::now_utc();
        let size = data.len() as u64;
        self.lock()?.snapshots.insert(
            (generation.clone(), index),
            Object {
                data: Arc::new(data),
                created_at,
            },
        );
        Ok(SnapshotInfo::new(generation, index, size, created_at))
    }

    async fn write_wal_segment(&self, pos: &Pos, data: ByteStream) -> Result<WalSegmentInfo> {
        layout::check_offset_fits_name(pos)?;
        let data = Self::read_all(data).await?;
        let created_at = OffsetDateTime::now_utc();
        let size = data.len() as u64;
        self.lock()?.segments.insert(
            (pos.generation.clone(), pos.index, pos.offset),
            Object {
                data: Arc::new(data),
                created_at,
            },
        );
        Ok(WalSegmentInfo::at(pos, size, created_at))
    }

    async fn delete_snapshot(&self, generation: &Generation, index: u32) -> Result<()> {
        self.lock()?.snapshots.remove(&(generation.clone(), index));
        Ok(())
    }

    async fn delete_wal_segments(&self, positions: &[Pos]) -> Result<()> {
        let mut s = self.lock()?;
        for p in positions {
            s.segments
                .remove(&(p.generation.clone(), p.index, p.offset));
        }
        Ok(())
    }

    async fn delete_generation(&self, generation: &Generation) -> Result<()> {
        let mut s = self.lock()?;
        s.snapshots.retain(|k, _| k.0 != *generation);
        s.segments.retain(|k, _| k.0 != *generation);
        Ok(())
    }
}
