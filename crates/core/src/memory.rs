//! [`MemoryClient`]: an in-process [`ReplicaClient`] for tests and embedding experiments.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use time::OffsetDateTime;
use tokio::io::AsyncReadExt;

use crate::error::{Error, Result};
use crate::layout;
use crate::listing::{self, ListedObject};
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
    /// Generic objects by key (the v0.5 LTX layout), with an optional writer timestamp.
    objects: BTreeMap<String, (Object, Option<OffsetDateTime>)>,
}

impl Store {
    /// Every object under its key relative to the root, as the generic object methods see
    /// them: the generic ones and the v0.3 snapshots and segments (under their layout keys).
    fn all_objects(&self) -> impl Iterator<Item = (String, &Object, Option<OffsetDateTime>)> {
        let snapshots = self
            .snapshots
            .iter()
            .map(|((g, i), o)| (layout::snapshot_path("", g, *i), o, None));
        let segments = self
            .segments
            .iter()
            .map(|((g, i, off), o)| (layout::wal_segment_path("", g, *i, *off), o, None));
        let generic = self.objects.iter().map(|(k, (o, ts))| (k.clone(), o, *ts));
        generic.chain(snapshots).chain(segments)
    }
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

    /// The object at the relative `key` (generic or v0.3) and its writer timestamp.
    fn find_object(&self, key: &str) -> Result<(Object, Option<OffsetDateTime>)> {
        listing::check_relative(key, false)?;
        let s = self.lock()?;
        if let Some((o, ts)) = s.objects.get(key) {
            return Ok((o.clone(), *ts));
        }
        let found = s
            .all_objects()
            .find(|(k, _, _)| k == key)
            .map(|(_, o, ts)| (o.clone(), ts));
        found.ok_or_else(|| Error::not_found(format!("object {key}")))
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

impl MemoryClient {
    /// Store `data` under the generic object `key` (relative to the root, `/`-separated),
    /// listed with `created_at`; `timestamp` is what [`ReplicaClient::object_timestamp`]
    /// reports (the s3 `litestream-timestamp` metadata), `None` for none.
    pub fn put_object(
        &self,
        key: &str,
        data: Vec<u8>,
        created_at: OffsetDateTime,
        timestamp: Option<OffsetDateTime>,
    ) -> Result<()> {
        let obj = Object {
            data: Arc::new(data),
            created_at,
        };
        self.lock()?
            .objects
            .insert(key.trim_matches('/').to_string(), (obj, timestamp));
        Ok(())
    }

    /// Remove the generic object `key` (no error if it does not exist).
    pub fn delete_object(&self, key: &str) -> Result<()> {
        self.lock()?.objects.remove(key.trim_matches('/'));
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

    async fn list_objects(&self, dir: &str) -> Result<Vec<ListedObject>> {
        let prefix = listing::dir_prefix("", dir)?;
        let s = self.lock()?;
        let all = s.all_objects().map(|(key, o, _)| ListedObject {
            name: key,
            size: o.data.len() as u64,
            modified: o.created_at,
        });
        Ok(listing::direct_children(&prefix, all))
    }

    async fn open_object(&self, key: &str) -> Result<ByteStream> {
        let (o, _) = self.find_object(key)?;
        Ok(Self::reader(o.data))
    }

    async fn write_object(
        &self,
        key: &str,
        mut data: ByteStream,
        timestamp: OffsetDateTime,
    ) -> Result<u64> {
        crate::replica_client::check_object_key(key)?;
        let mut buf = Vec::new();
        data.read_to_end(&mut buf)
            .await
            .map_err(|e| Error::io(key, e))?;
        let n = buf.len() as u64;
        self.put_object(key, buf, timestamp, None)?;
        Ok(n)
    }

    fn supports_object_writes(&self) -> bool {
        true
    }

    async fn delete_objects(&self, keys: &[String]) -> Result<()> {
        for k in keys {
            crate::replica_client::check_object_key(k)?;
            self.delete_object(k)?;
        }
        Ok(())
    }

    async fn object_timestamp(&self, key: &str) -> Result<Option<OffsetDateTime>> {
        let (_, ts) = self.find_object(key)?;
        Ok(ts)
    }

    async fn delete_generation(&self, generation: &Generation) -> Result<()> {
        let mut s = self.lock()?;
        s.snapshots.retain(|k, _| k.0 != *generation);
        s.segments.retain(|k, _| k.0 != *generation);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn generic_objects_list_one_directory_level() {
        let c = MemoryClient::new();
        let t = OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("time");
        c.put_object("ltx/0/b.ltx", vec![1, 2], t, None)
            .expect("put");
        c.put_object("ltx/0/a.ltx", vec![1], t, Some(t))
            .expect("put");
        c.put_object("ltx/0/sub/c.ltx", vec![1], t, None)
            .expect("put");
        c.put_object("ltx/00/d.ltx", vec![1], t, None).expect("put");
        let names: Vec<String> = c
            .list_objects("ltx/0")
            .await
            .expect("list")
            .into_iter()
            .map(|o| o.name)
            .collect();
        assert_eq!(names, ["a.ltx", "b.ltx"]);
        assert!(c.list_objects("nope").await.expect("list").is_empty());
        let mut buf = Vec::new();
        c.open_object("ltx/0/b.ltx")
            .await
            .expect("open")
            .read_to_end(&mut buf)
            .await
            .expect("read");
        assert_eq!(buf, [1, 2]);
        assert_eq!(
            c.object_timestamp("ltx/0/a.ltx").await.expect("ts"),
            Some(t)
        );
        assert!(c
            .open_object("ltx/0/x.ltx")
            .await
            .err()
            .expect("missing")
            .is_not_found());
        c.delete_object("ltx/0/b.ltx").expect("delete");
        assert_eq!(c.list_objects("ltx/0").await.expect("list").len(), 1);
    }
}
