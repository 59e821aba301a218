//! Restore from replicas shaped by someone hostile (issue 13, item 3): sizes and page numbers
//! that the replica claims must not size the output or the restore's memory, and malformed
//! objects are errors that name them, never panics.
//!
//! Memory is measured with a counting global allocator: the peak of live heap bytes while a
//! restore runs. Tests take [`SERIAL`] so that the peak is theirs alone.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use litestream_core::listing::ListedObject;
use litestream_core::lz4::compress_to_vec;
use litestream_core::restore::{restore, RestoreOptions};
use litestream_core::wal::{encode_frame, encode_header, split_at_commits as split_wal, WalHeader};
use litestream_core::{
    ByteStream, Error, Generation, Pos, ReplicaClient, Result, SnapshotInfo, WalSegmentInfo,
};
use rusqlite::Connection;
use time::OffsetDateTime;
use tokio::io::AsyncReadExt;

use crate::counting_alloc::{peak_during, SERIAL};

/// The README's bound on restore memory.
const MEMORY_BOUND: usize = 40 << 20;

/// An object body: bytes, or `n` copies of one byte produced as read (never held in memory).
#[derive(Debug, Clone)]
enum Body {
    Bytes(Arc<Vec<u8>>),
    Repeat(u8, u64),
}

impl Body {
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
    async fn list_objects(&self, _: &str) -> Result<Vec<ListedObject>> {
        Ok(Vec::new())
    }
    async fn open_object(&self, key: &str) -> Result<ByteStream> {
        Err(Error::not_found(key))
    }
    async fn object_timestamp(&self, _: &str) -> Result<Option<OffsetDateTime>> {
        Ok(None)
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
    let _serial = SERIAL.lock().await;
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
    let _serial = SERIAL.lock().await;
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
    let _serial = SERIAL.lock().await;
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
    let _serial = SERIAL.lock().await;
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
    let _serial = SERIAL.lock().await;
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

// ------------------------------------------------------------------------------------------
// Property: a randomly damaged replica restores byte-identical to the intact one, or fails
// naming the object; always within the memory bound.
// ------------------------------------------------------------------------------------------

/// A replica of a real database: snapshot at index 0, WAL indexes 0 and 1 split at commits.
fn real_replica(dir: &Path) -> (BTreeMap<u32, Obj>, BTreeMap<(u32, u64), Obj>) {
    let path = dir.join("prop.db");
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch(
        "PRAGMA page_size=1024; PRAGMA journal_mode=wal; PRAGMA wal_autocheckpoint=0;
         CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB);
         PRAGMA wal_checkpoint(TRUNCATE);",
    )
    .unwrap();
    let snapshot = std::fs::read(&path).unwrap();
    let mut segments = BTreeMap::new();
    for index in 0..2u32 {
        for i in 0..6 {
            conn.execute(
                "INSERT INTO t (v) VALUES (?1)",
                [vec![(i + index as usize * 7) as u8; 700 + i * 300]],
            )
            .unwrap();
        }
        conn.execute("DELETE FROM t WHERE id % 4 = 0", []).unwrap();
        let wal = std::fs::read(dir.join("prop.db-wal")).unwrap();
        for (offset, bytes) in split_wal(&wal) {
            segments.insert((index, offset), Obj::bytes(compress_to_vec(&bytes)));
        }
        conn.execute_batch("PRAGMA wal_checkpoint(RESTART);")
            .unwrap();
    }
    let snapshots = BTreeMap::from([(0, Obj::bytes(compress_to_vec(&snapshot)))]);
    (snapshots, segments)
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn bytes_of(o: &Obj) -> Vec<u8> {
    match &o.body {
        Body::Bytes(b) => b.as_ref().clone(),
        Body::Repeat(..) => unreachable!("real objects only"),
    }
}

/// Apply one random kind of damage; returns its description and whether the result must
/// still restore identically (damage to listings only) rather than possibly fail.
fn damage(rng: &mut Rng, h: &mut Hostile) -> String {
    let keys: Vec<(u32, u64)> = h.segments.keys().copied().collect();
    let pick = |rng: &mut Rng| keys[rng.below(keys.len())];
    match rng.below(8) {
        0 | 1 => {
            // Bit flip in a segment or the snapshot.
            let snap = rng.below(4) == 0;
            let obj = if snap {
                h.snapshots.get_mut(&0).unwrap()
            } else {
                h.segments.get_mut(&pick(rng)).unwrap()
            };
            let mut b = bytes_of(obj);
            let at = rng.below(b.len());
            b[at] ^= 1 << rng.below(8);
            *obj = Obj::bytes(b);
            format!("bit flip at {at} (snapshot: {snap})")
        }
        2 => {
            let k = pick(rng);
            let obj = h.segments.get_mut(&k).unwrap();
            let mut b = bytes_of(obj);
            let len = rng.below(b.len());
            b.truncate(len);
            *obj = Obj::bytes(b);
            format!("segment {k:?} truncated to {len}")
        }
        3 => {
            let (a, b) = (pick(rng), pick(rng));
            let (oa, ob) = (h.segments[&a].clone(), h.segments[&b].clone());
            h.segments.insert(a, ob);
            h.segments.insert(b, oa);
            format!("segments {a:?} and {b:?} swapped")
        }
        4 => {
            // A segment missing in the middle of its index. (Without the last segment of an
            // index the replica is indistinguishable from one whose WAL ended there: neither
            // Litestream nor anyone else can tell, so that is not damage this test makes.)
            let k = pick(rng);
            let last_of_index = keys.iter().filter(|x| x.0 == k.0).max() == Some(&k);
            if !last_of_index {
                h.segments.remove(&k);
            }
            format!("segment {k:?} missing")
        }
        5 => {
            let k = pick(rng);
            let dup = h.segments[&k].clone();
            let at = (k.0, k.1 + 1 + rng.below(5000) as u64);
            h.segments.entry(at).or_insert(dup);
            format!("segment {k:?} duplicated at {at:?}")
        }
        6 => {
            // Hostile listed sizes: the data is intact.
            for o in h.segments.values_mut().chain(h.snapshots.values_mut()) {
                o.listed = match rng.below(3) {
                    0 => 0,
                    1 => u64::MAX,
                    _ => rng.next() % (1 << 40),
                };
            }
            "hostile listed sizes".into()
        }
        _ => {
            // Hostile counts: thousands of junk entries after the real ones.
            let n = 1 + rng.below(3000);
            let index = keys.last().unwrap().0 + rng.below(2) as u32;
            for i in 0..n {
                h.segments.insert(
                    (index, (1 << 20) | (i as u64 * 8)),
                    Obj {
                        body: Body::Bytes(Arc::new(vec![0x5a; 16])),
                        listed: rng.next(),
                    },
                );
            }
            format!("{n} junk segments at index {index}")
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_replicas_restore_identically_or_fail_naming_the_object() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let (snapshots, segments) = real_replica(dir.path());
    let gen = Generation::random();
    let intact = Arc::new(Hostile {
        gen: gen.clone(),
        snapshots: snapshots.clone(),
        segments: segments.clone(),
    });
    let good = dir.path().join("intact.db");
    restore(intact, &RestoreOptions::new(&good)).await.unwrap();
    let expected = std::fs::read(&good).unwrap();

    let runs: usize = std::env::var("HOSTILE_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let seed: u64 = std::env::var("HOSTILE_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x9e37_79b9_7f4a_7c15);
    let mut rng = Rng(seed);
    let (mut ok, mut refused) = (0, 0);
    for run in 0..runs {
        let mut h = Hostile {
            gen: gen.clone(),
            snapshots: snapshots.clone(),
            segments: segments.clone(),
        };
        let what: Vec<String> = (0..1 + rng.below(3))
            .map(|_| damage(&mut rng, &mut h))
            .collect();
        let out = dir.path().join(format!("out-{run}.db"));
        let mut opts = RestoreOptions::new(&out);
        opts.retry.max_attempts = 1;
        let (result, peak) = peak_during(restore(Arc::new(h), &opts)).await;
        assert!(
            peak < MEMORY_BOUND,
            "run {run} ({what:?}) peaked at {peak} bytes"
        );
        match result {
            Ok(_) => {
                let got = std::fs::read(&out).unwrap();
                assert!(
                    got == expected,
                    "run {run} ({what:?}): restored a different database"
                );
                std::fs::remove_file(&out).unwrap();
                ok += 1;
            }
            Err(e) => {
                let msg = e.to_string();
                assert!(
                    msg.contains(&gen.to_string()),
                    "run {run} ({what:?}): error does not name the object: {msg}"
                );
                assert!(!out.exists(), "run {run}: output written despite {msg}");
                refused += 1;
            }
        }
    }
    eprintln!("{runs} damaged replicas: {ok} restored identically, {refused} refused");
    assert!(ok > 0 && refused > 0, "{ok} restored, {refused} refused");
}
