//! Restore from replicas shaped by someone hostile (issue 13, item 3): sizes and page numbers
//! that the replica claims must not size the output or the restore's memory, and malformed
//! objects are errors that name them, never panics.
//!
//! Memory is measured with a counting global allocator: the peak of live heap bytes while a
//! restore runs. Tests take [`SERIAL`] so that the peak is theirs alone.
#![allow(clippy::unwrap_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use litestream_core::lz4::compress_to_vec;
use litestream_core::restore::{restore, RestoreOptions};
use litestream_core::wal::{encode_frame, encode_header, WalHeader};
use litestream_core::{
    ByteStream, Error, Generation, Pos, ReplicaClient, Result, SnapshotInfo, WalSegmentInfo,
};
use rusqlite::Connection;
use time::OffsetDateTime;
use tokio::io::AsyncReadExt;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// One test at a time, so that the measured peak is the running test's.
static SERIAL: Mutex<()> = Mutex::new(());

/// The README's bound on restore memory.
const MEMORY_BOUND: usize = 40 << 20;

/// Run `f` and return its result with the peak heap growth while it ran.
async fn peak_during<T>(f: impl std::future::Future<Output = T>) -> (T, usize) {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let out = f.await;
    (out, PEAK.load(Ordering::Relaxed).saturating_sub(base))
}

/// An object body: bytes, or `n` copies of one byte produced as read (never held in memory).
#[derive(Debug, Clone)]
enum Body {
    Bytes(Arc<Vec<u8>>),
    Repeat(u8, u64),
}

impl Body {
    fn len(&self) -> u64 {
        match self {
            Body::Bytes(b) => b.len() as u64,
            Body::Repeat(_, n) => *n,
        }
    }
    fn stream(&self) -> ByteStream {
        match self {
            Body::Bytes(b) => Box::pin(io::Cursor::new(b.as_ref().clone())),
            Body::Repeat(byte, n) => Box::pin(tokio::io::repeat(*byte).take(*n)),
        }
    }
}

/// An object and the size its listing claims.
#[derive(Debug, Clone)]
struct Obj {
    body: Body,
    listed: u64,
}

impl Obj {
    fn bytes(b: Vec<u8>) -> Self {
        Obj {
            listed: b.len() as u64,
            body: Body::Bytes(Arc::new(b)),
        }
    }
}

/// A read-only replica of one generation whose listings say whatever the test wants.
#[derive(Debug)]
struct Hostile {
    gen: Generation,
    snapshots: BTreeMap<u32, Obj>,
    segments: BTreeMap<(u32, u64), Obj>,
}

fn refuse() -> Error {
    Error::InvalidArgument("read-only test replica".into())
}

#[async_trait]
impl ReplicaClient for Hostile {
    fn kind(&self) -> &'static str {
        "hostile"
    }
    async fn generations(&self) -> Result<Vec<Generation>> {
        Ok(vec![self.gen.clone()])
    }
    async fn snapshots(&self, g: &Generation) -> Result<Vec<SnapshotInfo>> {
        let t = OffsetDateTime::now_utc();
        Ok(self
            .snapshots
            .iter()
            .map(|(i, o)| SnapshotInfo::new(g, *i, o.listed, t))
            .collect())
    }
    async fn wal_segments(&self, g: &Generation) -> Result<Vec<WalSegmentInfo>> {
        let t = OffsetDateTime::now_utc();
        Ok(self
            .segments
            .iter()
            .map(|((i, off), o)| WalSegmentInfo::new(g, *i, *off, o.listed, t))
            .collect())
    }
    async fn open_snapshot(&self, _g: &Generation, index: u32) -> Result<ByteStream> {
        let o = self
            .snapshots
            .get(&index)
            .ok_or_else(|| Error::not_found("snapshot"))?;
        Ok(o.body.stream())
    }
    async fn open_wal_segment(&self, pos: &Pos) -> Result<ByteStream> {
        let o = self
            .segments
            .get(&(pos.index, pos.offset))
            .ok_or_else(|| Error::not_found(pos.to_string()))?;
        Ok(o.body.stream())
    }
    async fn write_snapshot(&self, _: &Generation, _: u32, _: ByteStream) -> Result<SnapshotInfo> {
        Err(refuse())
    }
    async fn write_wal_segment(&self, _: &Pos, _: ByteStream) -> Result<WalSegmentInfo> {
        Err(refuse())
    }
    async fn delete_snapshot(&self, _: &Generation, _: u32) -> Result<()> {
        Err(refuse())
    }
    async fn delete_wal_segments(&self, _: &[Pos]) -> Result<()> {
        Err(refuse())
    }
    async fn delete_generation(&self, _: &Generation) -> Result<()> {
        Err(refuse())
    }
}

/// A real checkpointed database of page size `page_size` with a few rows; returns its bytes.
fn real_db(dir: &Path, page_size: u32) -> Vec<u8> {
    let path = dir.join(format!("src-{page_size}.db"));
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch(&format!(
        "PRAGMA page_size={page_size}; PRAGMA journal_mode=wal;
         CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);
         INSERT INTO t (v) VALUES ('a'), ('b'), ('c');
         PRAGMA wal_checkpoint(TRUNCATE);"
    ))
    .unwrap();
    drop(conn);
    std::fs::read(&path).unwrap()
}

/// A WAL segment (header and frames, LZ4-compressed) of `(pgno, commit_size, page)` frames.
fn wal_segment(page_size: u32, frames: &[(u32, u32, Vec<u8>)]) -> Vec<u8> {
    let hdr = encode_header(false, page_size, 0, (7, 9));
    let header = WalHeader::parse(&hdr).unwrap();
    let mut out = hdr.to_vec();
    let mut sum = header.checksum;
    for (pgno, commit, page) in frames {
        let (f, s) = encode_frame(&header, sum, *pgno, *commit, page);
        out.extend_from_slice(&f);
        sum = s;
    }
    compress_to_vec(&out)
}

fn replica(snapshot: Obj, segments: Vec<((u32, u64), Obj)>) -> Arc<Hostile> {
    Arc::new(Hostile {
        gen: Generation::random(),
        snapshots: BTreeMap::from([(0, snapshot)]),
        segments: segments.into_iter().collect(),
    })
}

/// Assert `err` is an error naming `object` and that nothing is left at or beside `out`.
fn assert_refused(err: &Error, object: &str, out: &Path) {
    let msg = err.to_string();
    assert!(msg.contains(object), "error does not name {object}: {msg}");
    assert!(!out.exists(), "{} was written", out.display());
    let dir = out.parent().unwrap();
    let left: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("out"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_commit_size_is_refused_naming_the_segment() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let db = real_db(dir.path(), 4096);
    // One valid frame rewriting page 1, whose commit claims 2^28 pages: a 1 TiB database.
    let page1 = db[..4096].to_vec();
    let seg = wal_segment(4096, &[(1, 1 << 28, page1)]);
    let client = replica(
        Obj::bytes(compress_to_vec(&db)),
        vec![((0, 0), Obj::bytes(seg))],
    );
    let out = dir.path().join("out.db");
    let err = restore(client, &RestoreOptions::new(&out))
        .await
        .expect_err("a 1 TiB database from a 4 KiB replica was restored");
    assert_refused(&err, "wal/00000000_00000000.wal.lz4", &out);
    assert!(err.to_string().contains("268435456"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_frame_beyond_its_own_database_size_is_refused() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let db = real_db(dir.path(), 4096);
    let pages = (db.len() / 4096) as u32;
    let seg = wal_segment(4096, &[(pages + 5, pages, vec![0u8; 4096])]);
    let client = replica(
        Obj::bytes(compress_to_vec(&db)),
        vec![((0, 0), Obj::bytes(seg))],
    );
    let out = dir.path().join("out.db");
    let err = restore(client, &RestoreOptions::new(&out))
        .await
        .unwrap_err();
    assert_refused(&err, "wal/00000000_00000000.wal.lz4", &out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_page_number_does_not_size_memory() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let db = real_db(dir.path(), 512);
    // A transaction that spills page 2^31 (1 TiB into the file) and then commits page 1 at
    // the snapshot's size: the commit cuts the far page off, so the result is the snapshot.
    let seg = wal_segment(
        512,
        &[
            (1 << 31, 0, vec![0xab; 512]),
            (1, (db.len() / 512) as u32, db[..512].to_vec()),
        ],
    );
    let client = replica(
        Obj::bytes(compress_to_vec(&db)),
        vec![((0, 0), Obj::bytes(seg))],
    );
    let out = dir.path().join("out.db");
    let (result, peak) = peak_during(restore(client, &RestoreOptions::new(&out))).await;
    assert!(peak < MEMORY_BOUND, "restore peaked at {peak} bytes");
    match result {
        Ok(_) => assert_eq!(std::fs::read(&out).unwrap(), db),
        Err(e) => assert_refused(&e, "wal/00000000_00000000.wal.lz4", &out),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_listed_at_zero_bytes_is_not_read_whole_into_memory() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let db = real_db(dir.path(), 4096);
    let client = replica(
        Obj::bytes(compress_to_vec(&db)),
        vec![(
            (0, 0),
            Obj {
                body: Body::Repeat(0x5a, 256 << 20),
                listed: 0,
            },
        )],
    );
    let out = dir.path().join("out.db");
    let (result, peak) = peak_during(restore(client, &RestoreOptions::new(&out))).await;
    assert!(peak < MEMORY_BOUND, "restore peaked at {peak} bytes");
    assert_refused(&result.unwrap_err(), "wal/00000000_00000000.wal.lz4", &out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_with_page_size_zero_is_an_error_naming_it() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let good = real_db(dir.path(), 4096);
    for raw in [0u16, 3, 256, 1000] {
        let mut db = good.clone();
        db[16..18].copy_from_slice(&raw.to_be_bytes());
        let client = replica(Obj::bytes(compress_to_vec(&db)), vec![]);
        let out = dir.path().join("out.db");
        let err = restore(client, &RestoreOptions::new(&out))
            .await
            .unwrap_err();
        assert_refused(&err, "snapshots/00000000.snapshot.lz4", &out);
        assert!(err.to_string().contains("page size"), "{err}");
    }
}
