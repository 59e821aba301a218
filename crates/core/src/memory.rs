//! [`MemoryClient`]: an in-process [`ObjectStore`] (so a [`ReplicaClient`]) for tests and
//! embedding experiments.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use time::OffsetDateTime;
use tokio::io::AsyncReadExt;

use crate::error::{Error, Result};
use crate::layout;
use crate::listing::{self, ListedObject};
use crate::pos::Pos;
use crate::replica_client::ByteStream;
#[cfg(doc)]
use crate::replica_client::ReplicaClient;
use crate::store::{DirListing, ObjectStore, PutOutcome, Upload};

#[derive(Debug, Clone)]
struct Object {
    data: Arc<Vec<u8>>,
    created_at: OffsetDateTime,
    /// The writer's timestamp kept beside the data (s3's `litestream-timestamp`), if any.
    timestamp: Option<OffsetDateTime>,
}

/// A replica held in memory; clones share the same store.
///
/// An [`ObjectStore`] of objects by key: every key of the replica layout, v0.3 and LTX.
#[derive(Debug, Clone, Default)]
pub struct MemoryClient {
    store: Arc<Mutex<BTreeMap<String, Object>>>,
}

impl MemoryClient {
    /// An empty replica.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, BTreeMap<String, Object>>> {
        self.store.lock().map_err(|_| Error::Backend {
            kind: "memory",
            message: "store lock poisoned".into(),
            retryable: false,
            source: None,
        })
    }

    /// Set the created-at time of a stored WAL segment (tests of point-in-time restore).
    pub fn set_wal_segment_time(&self, pos: &Pos, t: OffsetDateTime) -> Result<()> {
        let key = layout::wal_segment_path("", &pos.generation, pos.index, pos.offset);
        let mut s = self.lock()?;
        let obj = s
            .get_mut(&key)
            .ok_or_else(|| Error::not_found(pos.to_string()))?;
        obj.created_at = t;
        Ok(())
    }

    /// Store `data` under the object `key` (relative to the root, `/`-separated), listed
    /// with `created_at`; `timestamp` is what [`ReplicaClient::object_timestamp`] reports
    /// (the s3 `litestream-timestamp` metadata), `None` for none.
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
            timestamp,
        };
        self.lock()?.insert(key.trim_matches('/').to_string(), obj);
        Ok(())
    }

    /// Remove the object `key` (no error if it does not exist).
    pub fn delete_object(&self, key: &str) -> Result<()> {
        self.lock()?.remove(key.trim_matches('/'));
        Ok(())
    }

    fn find(&self, key: &str) -> Result<Object> {
        self.lock()?
            .get(key)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("object {key}")))
    }
}

#[async_trait]
impl ObjectStore for MemoryClient {
    const KIND: &'static str = "memory";

    async fn list_dir(&self, dir: &str) -> Result<DirListing> {
        let prefix = listing::dir_prefix("", dir)?;
        let s = self.lock()?;
        let mut out = DirListing::default();
        let mut dirs = BTreeSet::new();
        for (key, o) in s.range(prefix.clone()..) {
            let Some(name) = key.strip_prefix(&prefix) else {
                break;
            };
            match name.split_once('/') {
                Some((sub, _)) => {
                    dirs.insert(sub.to_string());
                }
                None => out.objects.push(ListedObject {
                    name: name.to_string(),
                    size: o.data.len() as u64,
                    modified: o.created_at,
                }),
            }
        }
        out.dirs = dirs.into_iter().collect();
        Ok(out)
    }

    async fn get(&self, key: &str) -> Result<ByteStream> {
        let o = self.find(key)?;
        Ok(Box::pin(std::io::Cursor::new(o.data.as_ref().clone())))
    }

    async fn put(&self, key: &str, upload: Upload) -> Result<PutOutcome> {
        let Upload {
            mut data,
            timestamp,
        } = upload;
        let mut buf = Vec::new();
        data.read_to_end(&mut buf)
            .await
            .map_err(|e| Error::io(format!("memory object {key}"), e))?;
        let size = buf.len() as u64;
        // Like file and sftp: the writer's timestamp is the listed time.
        let created_at = timestamp.unwrap_or_else(OffsetDateTime::now_utc);
        self.put_object(key, buf, created_at, None)?;
        Ok(PutOutcome {
            size,
            modified: Some(created_at),
        })
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.delete_object(key)
    }

    async fn head_timestamp(&self, key: &str) -> Result<Option<OffsetDateTime>> {
        Ok(self.find(key)?.timestamp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replica_client::ReplicaClient;
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
