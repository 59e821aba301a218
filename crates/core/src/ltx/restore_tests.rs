use std::sync::Arc;

use time::OffsetDateTime;

use super::detect::{find_any_target, restore_any, AnyRestoreOutcome, RestoreTarget};
use super::keys::file_key;
use super::testutil::{ltx_file, page, Encoding};
use crate::memory::MemoryClient;
use crate::restore::RestoreOptions;
use crate::{Error, ReplicaClient};

fn at(secs: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_700_000_000 + secs).expect("time")
}

/// Put an LTX file at `level` on `c`.
fn put(c: &MemoryClient, level: u8, min: u64, max: u64, secs: i64, bytes: Vec<u8>) {
    c.put_object(&file_key("memory", level, min, max), bytes, at(secs), None)
        .expect("put");
}

/// Snapshot 1-1 with pages 1..=6, L0 2-2 rewriting page 3, L0 3-3 (frame encoding)
/// rewriting page 2 and shrinking the database to 4 pages.
fn replica() -> (MemoryClient, Vec<u8>) {
    let c = MemoryClient::new();
    let ps = 1024u32;
    let snap: Vec<(u32, Vec<u8>)> = (1..=6).map(|p| (p, page(ps, p))).collect();
    put(
        &c,
        9,
        1,
        1,
        1,
        ltx_file(ps, 6, 1, 1, 1000, &snap, Encoding::Block),
    );
    put(
        &c,
        0,
        1,
        1,
        1,
        ltx_file(ps, 6, 1, 1, 1000, &snap, Encoding::Block),
    );
    let p3 = vec![(3, page(ps, 33))];
    put(
        &c,
        0,
        2,
        2,
        2,
        ltx_file(ps, 6, 2, 2, 2000, &p3, Encoding::Block),
    );
    let p2 = vec![(2, page(ps, 22)), (4, page(ps, 44))];
    put(
        &c,
        0,
        3,
        3,
        3,
        ltx_file(ps, 4, 3, 3, 3000, &p2, Encoding::Frame),
    );
    let mut want = Vec::new();
    for (p, seed) in [(1, 1), (2, 22), (3, 33), (4, 44)] {
        let _ = p;
        want.extend(page(ps, seed));
    }
    (c, want)
}

#[tokio::test]
async fn merge_writes_the_newest_page_and_truncates() {
    let (c, want) = replica();
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("out.db");
    let client: Arc<dyn ReplicaClient> = Arc::new(c);
    let got = restore_any(client, &RestoreOptions::new(&out), None)
        .await
        .expect("restore");
    match got {
        AnyRestoreOutcome::Ltx(o) => assert_eq!((o.txid, o.files, o.db_size), (3, 3, 4096)),
        other => panic!("{other:?}"),
    }
    assert_eq!(std::fs::read(&out).expect("read"), want);
    assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 1);
}

#[tokio::test]
async fn txid_and_timestamp_targets() {
    let (c, _) = replica();
    let dir = tempfile::tempdir().expect("tmp");
    let client: Arc<dyn ReplicaClient> = Arc::new(c.clone());
    let out = dir.path().join("t2.db");
    restore_any(client.clone(), &RestoreOptions::new(&out), Some(2))
        .await
        .expect("restore");
    let b = std::fs::read(&out).expect("read");
    assert_eq!(b.len(), 6 * 1024);
    assert_eq!(&b[2048..3072], &page(1024, 33)[..]);
    // -timestamp uses the writer's timestamp where the backend keeps one.
    c.put_object(
        &file_key("memory", 0, 3, 3),
        ltx_file(1024, 4, 3, 3, 0, &[(2, page(1024, 22))], Encoding::Block),
        at(3),
        Some(at(100)),
    )
    .expect("put");
    let mut opts = RestoreOptions::new(dir.path().join("ts.db"));
    opts.timestamp = Some(at(50));
    let target = find_any_target(client.as_ref(), &opts, None)
        .await
        .expect("target");
    match target {
        Some(RestoreTarget::Ltx(plan)) => assert_eq!(plan.last().map(|f| f.max_txid), Some(2)),
        other => panic!("{other:?}"),
    }
}

async fn restore_err(c: MemoryClient) -> (Error, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("out.db");
    let client: Arc<dyn ReplicaClient> = Arc::new(c);
    let err = restore_any(client, &RestoreOptions::new(&out), None)
        .await
        .expect_err("must fail");
    assert_eq!(
        std::fs::read_dir(dir.path()).expect("dir").count(),
        0,
        "left files behind"
    );
    (err, dir)
}

#[tokio::test]
async fn page_size_mismatch_names_the_file() {
    let (c, _) = replica();
    put(
        &c,
        0,
        3,
        3,
        3,
        ltx_file(512, 4, 3, 3, 0, &[(2, page(512, 1))], Encoding::Block),
    );
    let (err, _d) = restore_err(c).await;
    let msg = err.to_string();
    assert!(
        msg.contains("ltx/0/0000000000000003-0000000000000003.ltx"),
        "{msg}"
    );
    assert!(msg.contains("page size 512"), "{msg}");
}

#[tokio::test]
async fn missing_pages_and_missing_snapshot_are_errors() {
    // The snapshot level and L0 1-1 hold only pages 1..=6, but L0 2-2 grows the database to
    // 8 pages with page 8 only: page 7 comes from nowhere.
    let (c, _) = replica();
    c.delete_object(&file_key("memory", 0, 3, 3)).expect("del");
    put(
        &c,
        0,
        3,
        3,
        3,
        ltx_file(1024, 8, 3, 3, 0, &[(8, page(1024, 8))], Encoding::Block),
    );
    let (err, _d) = restore_err(c).await;
    assert!(err.to_string().contains("pages 7..=7"), "{err}");

    // No file starts at TXID 1.
    let c = MemoryClient::new();
    put(
        &c,
        0,
        2,
        2,
        2,
        ltx_file(1024, 1, 2, 2, 0, &[(1, page(1024, 1))], Encoding::Block),
    );
    let (err, _d) = restore_err(c).await;
    assert!(err.to_string().contains("no snapshot"), "{err}");
}

#[tokio::test]
async fn header_txids_must_match_the_name() {
    let (c, _) = replica();
    put(
        &c,
        0,
        3,
        3,
        3,
        ltx_file(1024, 4, 3, 4, 0, &[(2, page(1024, 1))], Encoding::Block),
    );
    let (err, _d) = restore_err(c).await;
    assert!(err.to_string().contains("not those of its name"), "{err}");
}

#[tokio::test]
async fn empty_replica_has_no_target() {
    let c = MemoryClient::new();
    let opts = RestoreOptions::new("/nonexistent/x.db");
    assert!(find_any_target(&c, &opts, None)
        .await
        .expect("ok")
        .is_none());
    assert!(find_any_target(&c, &opts, Some(3))
        .await
        .expect("ok")
        .is_none());
}

/// A [`MemoryClient`] whose first open of each object fails (retryable) and whose second
/// open breaks off after 100 KiB (a dropped connection); later opens work.
#[derive(Debug, Clone)]
struct Flaky {
    inner: MemoryClient,
    opens: Arc<std::sync::Mutex<std::collections::HashMap<String, u32>>>,
}

struct BreakAfter {
    inner: crate::ByteStream,
    left: usize,
}

impl tokio::io::AsyncRead for BreakAfter {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.left == 0 {
            return std::task::Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "connection reset",
            )));
        }
        let want = buf.remaining().min(self.left);
        let mut sub = tokio::io::ReadBuf::new(&mut buf.initialize_unfilled()[..want]);
        let r = self.inner.as_mut().poll_read(cx, &mut sub);
        let n = sub.filled().len();
        buf.advance(n);
        self.left -= n;
        r
    }
}

#[async_trait::async_trait]
impl ReplicaClient for Flaky {
    fn kind(&self) -> &'static str {
        "memory"
    }
    async fn generations(&self) -> crate::Result<Vec<crate::Generation>> {
        self.inner.generations().await
    }
    async fn snapshots(&self, g: &crate::Generation) -> crate::Result<Vec<crate::SnapshotInfo>> {
        self.inner.snapshots(g).await
    }
    async fn wal_segments(
        &self,
        g: &crate::Generation,
    ) -> crate::Result<Vec<crate::WalSegmentInfo>> {
        self.inner.wal_segments(g).await
    }
    async fn open_snapshot(
        &self,
        g: &crate::Generation,
        i: u32,
    ) -> crate::Result<crate::ByteStream> {
        self.inner.open_snapshot(g, i).await
    }
    async fn open_wal_segment(&self, p: &crate::Pos) -> crate::Result<crate::ByteStream> {
        self.inner.open_wal_segment(p).await
    }
    async fn write_snapshot(
        &self,
        g: &crate::Generation,
        i: u32,
        d: crate::ByteStream,
    ) -> crate::Result<crate::SnapshotInfo> {
        self.inner.write_snapshot(g, i, d).await
    }
    async fn write_wal_segment(
        &self,
        p: &crate::Pos,
        d: crate::ByteStream,
    ) -> crate::Result<crate::WalSegmentInfo> {
        self.inner.write_wal_segment(p, d).await
    }
    async fn delete_snapshot(&self, g: &crate::Generation, i: u32) -> crate::Result<()> {
        self.inner.delete_snapshot(g, i).await
    }
    async fn delete_wal_segments(&self, p: &[crate::Pos]) -> crate::Result<()> {
        self.inner.delete_wal_segments(p).await
    }
    async fn delete_generation(&self, g: &crate::Generation) -> crate::Result<()> {
        self.inner.delete_generation(g).await
    }
    async fn list_objects(&self, dir: &str) -> crate::Result<Vec<crate::listing::ListedObject>> {
        self.inner.list_objects(dir).await
    }
    async fn open_object(&self, key: &str) -> crate::Result<crate::ByteStream> {
        let n = {
            let mut m = self.opens.lock().expect("lock");
            let n = m.entry(key.to_string()).or_insert(0);
            *n += 1;
            *n
        };
        match n {
            1 => Err(Error::Backend {
                kind: "memory",
                message: format!("503 on {key}"),
                retryable: true,
                source: None,
            }),
            2 => Ok(Box::pin(BreakAfter {
                inner: self.inner.open_object(key).await?,
                left: 100 << 10,
            })),
            _ => self.inner.open_object(key).await,
        }
    }
    async fn object_timestamp(&self, key: &str) -> crate::Result<Option<time::OffsetDateTime>> {
        self.inner.object_timestamp(key).await
    }
}

#[tokio::test]
async fn failed_opens_and_dropped_streams_are_retried() {
    let c = MemoryClient::new();
    let ps = 4096u32;
    let mut seed = 0x1234_5678_9abc_def1u64;
    let mut rnd = |n: u32| -> Vec<u8> {
        (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect()
    };
    // 400 random pages: a 1.6 MB snapshot, streamed rather than downloaded ahead.
    let snap: Vec<(u32, Vec<u8>)> = (1..=400).map(|p| (p, rnd(ps))).collect();
    put(
        &c,
        9,
        1,
        1,
        1,
        ltx_file(ps, 400, 1, 1, 0, &snap, Encoding::Block),
    );
    let small = vec![(7, rnd(ps))];
    put(
        &c,
        0,
        2,
        2,
        2,
        ltx_file(ps, 400, 2, 2, 0, &small, Encoding::Frame),
    );
    let flaky = Flaky {
        inner: c,
        opens: Arc::default(),
    };
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("out.db");
    let mut opts = RestoreOptions::new(&out);
    opts.retry.initial_backoff = std::time::Duration::from_millis(1);
    restore_any(Arc::new(flaky.clone()), &opts, None)
        .await
        .expect("restore with retries");
    let got = std::fs::read(&out).expect("read");
    let mut want: Vec<u8> = snap.iter().flat_map(|(_, d)| d.clone()).collect();
    want[6 * 4096..7 * 4096].copy_from_slice(&small[0].1);
    assert!(got == want, "restored bytes differ");
    let opens = flaky.opens.lock().expect("lock").clone();
    assert!(opens.values().all(|n| *n >= 2), "{opens:?}");
}
