//! Restore against replicas built from real SQLite WAL files, through an in-memory client:
//! several indexes and segments, transient failures retried, and damage reported.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use litestream_core::lz4::compress_to_vec;
use litestream_core::restore::{restore, RestoreOptions};
use litestream_core::wal::{split_at_commits as split_wal, WalHeader, WAL_HEADER_SIZE};
use litestream_core::MemoryClient;
use litestream_core::{
    ByteStream, Error, Generation, Pos, ReplicaClient, Result, RetryConfig, SnapshotInfo,
    WalSegmentInfo,
};
use rusqlite::Connection;
use tokio::io::{AsyncRead, ReadBuf};

type Row = (i64, String, Vec<u8>);

fn stream(bytes: Vec<u8>) -> ByteStream {
    Box::pin(io::Cursor::new(bytes))
}

fn rows(conn: &Connection) -> Vec<Row> {
    let mut st = conn
        .prepare("SELECT id, name, data FROM t ORDER BY id")
        .unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

/// A fresh WAL-mode `src.db` in `dir` with an empty table `t`, checkpointed, and its file
/// written to `client` as the snapshot at index 0 of `gen`; returns the open connection.
async fn source_with_snapshot(
    dir: &Path,
    client: &dyn ReplicaClient,
    gen: &Generation,
) -> Connection {
    let db = dir.join("src.db");
    let conn = Connection::open(&db).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode=wal; PRAGMA wal_autocheckpoint=0;
         CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, data BLOB);
         PRAGMA wal_checkpoint(TRUNCATE);",
    )
    .unwrap();
    let snapshot = std::fs::read(&db).unwrap();
    client
        .write_snapshot(gen, 0, stream(compress_to_vec(&snapshot)))
        .await
        .unwrap();
    conn
}

/// Build a replica of two WAL indexes from a live database; returns the expected rows.
async fn build_replica(dir: &Path, client: &MemoryClient, gen: &Generation) -> Vec<Row> {
    let conn = source_with_snapshot(dir, client, gen).await;
    for i in 0..40 {
        conn.execute(
            "INSERT INTO t (name, data) VALUES (?1, ?2)",
            rusqlite::params![format!("row {i}"), vec![i as u8; 3000 + i * 100]],
        )
        .unwrap();
    }
    conn.execute("DELETE FROM t WHERE id % 3 = 0", []).unwrap();
    let wal0 = std::fs::read(dir.join("src.db-wal")).unwrap();
    for (offset, bytes) in split_wal(&wal0) {
        client
            .write_wal_segment(
                &Pos::new(gen.clone(), 0, offset),
                stream(compress_to_vec(&bytes)),
            )
            .await
            .unwrap();
    }
    // Checkpoint and restart the WAL: the next write starts index 1 with new salts.
    conn.execute_batch("PRAGMA wal_checkpoint(RESTART);")
        .unwrap();
    conn.execute(
        "UPDATE t SET name = name || ' updated' WHERE id % 2 = 0",
        [],
    )
    .unwrap();
    conn.execute_batch("VACUUM;").unwrap();
    conn.execute("INSERT INTO t (name, data) VALUES ('last', x'00ff')", [])
        .unwrap();
    let wal1 = std::fs::read(dir.join("src.db-wal")).unwrap();
    for (offset, bytes) in split_wal(&wal1) {
        client
            .write_wal_segment(
                &Pos::new(gen.clone(), 1, offset),
                stream(compress_to_vec(&bytes)),
            )
            .await
            .unwrap();
    }
    rows(&conn)
}

fn fast_retry() -> RetryConfig {
    RetryConfig {
        max_attempts: 4,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restores_several_indexes_and_equals_the_source() {
    let dir = tempfile::tempdir().unwrap();
    let client = MemoryClient::new();
    let gen = Generation::random();
    let expected = build_replica(dir.path(), &client, &gen).await;
    let out = dir.path().join("out").join("restored.db");
    let outcome = restore(Arc::new(client), &RestoreOptions::new(&out))
        .await
        .unwrap();
    assert_eq!(outcome.max_index, 1);
    assert!(outcome.segments >= 4);
    let conn = Connection::open(&out).unwrap();
    assert_eq!(rows(&conn), expected);
    let ok: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_option_stops_at_that_index_and_beyond_newest_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let client = MemoryClient::new();
    let gen = Generation::random();
    build_replica(dir.path(), &client, &gen).await;
    let client = Arc::new(client);
    let mut opts = RestoreOptions::new(dir.path().join("i0.db"));
    opts.index = Some(0);
    let outcome = restore(client.clone(), &opts).await.unwrap();
    assert_eq!(outcome.max_index, 0);
    let conn = Connection::open(dir.path().join("i0.db")).unwrap();
    let n: i64 = conn
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 40 - 13);

    let mut opts = RestoreOptions::new(dir.path().join("i9.db"));
    opts.index = Some(9);
    let err = restore(client, &opts).await.unwrap_err();
    assert!(err.to_string().contains("00000009"), "{err}");
    assert!(!dir.path().join("i9.db").exists());
}

/// Fails the first attempt of every open, and cuts the second snapshot stream short.
#[derive(Debug)]
struct FlakyClient {
    inner: MemoryClient,
    attempts: Mutex<HashMap<String, u32>>,
}

impl FlakyClient {
    fn attempt(&self, key: String) -> u32 {
        let mut m = self.attempts.lock().unwrap();
        let n = m.entry(key).or_insert(0);
        *n += 1;
        *n
    }
}

fn unavailable() -> Error {
    Error::Backend {
        kind: "flaky",
        message: "503 slow down".into(),
        retryable: true,
        source: None,
    }
}

/// Delivers `left` bytes, then fails like a dropped connection.
struct CutShort {
    inner: ByteStream,
    left: usize,
}

impl AsyncRead for CutShort {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.left == 0 {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::ConnectionReset, "reset")));
        }
        let want = buf.remaining().min(self.left);
        let mut tmp = vec![0u8; want];
        let mut rb = ReadBuf::new(&mut tmp);
        match self.inner.as_mut().poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) => {
                let n = rb.filled().len();
                buf.put_slice(rb.filled());
                self.left -= n;
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

#[async_trait]
impl ReplicaClient for FlakyClient {
    fn kind(&self) -> &'static str {
        "flaky"
    }
    async fn generations(&self) -> Result<Vec<Generation>> {
        self.inner.generations().await
    }
    async fn snapshots(&self, g: &Generation) -> Result<Vec<SnapshotInfo>> {
        self.inner.snapshots(g).await
    }
    async fn wal_segments(&self, g: &Generation) -> Result<Vec<WalSegmentInfo>> {
        self.inner.wal_segments(g).await
    }
    async fn open_snapshot(&self, g: &Generation, index: u32) -> Result<ByteStream> {
        match self.attempt(format!("snapshot {index}")) {
            1 => Err(unavailable()),
            2 => Ok(Box::pin(CutShort {
                inner: self.inner.open_snapshot(g, index).await?,
                left: 100,
            })),
            _ => self.inner.open_snapshot(g, index).await,
        }
    }
    async fn open_wal_segment(&self, pos: &Pos) -> Result<ByteStream> {
        if self.attempt(pos.to_string()) == 1 {
            return Err(unavailable());
        }
        self.inner.open_wal_segment(pos).await
    }
    async fn write_snapshot(&self, g: &Generation, i: u32, d: ByteStream) -> Result<SnapshotInfo> {
        self.inner.write_snapshot(g, i, d).await
    }
    async fn write_wal_segment(&self, p: &Pos, d: ByteStream) -> Result<WalSegmentInfo> {
        self.inner.write_wal_segment(p, d).await
    }
    async fn delete_snapshot(&self, g: &Generation, i: u32) -> Result<()> {
        self.inner.delete_snapshot(g, i).await
    }
    async fn delete_wal_segments(&self, p: &[Pos]) -> Result<()> {
        self.inner.delete_wal_segments(p).await
    }
    async fn delete_generation(&self, g: &Generation) -> Result<()> {
        self.inner.delete_generation(g).await
    }
    async fn list_objects(&self, dir: &str) -> Result<Vec<litestream_core::listing::ListedObject>> {
        self.inner.list_objects(dir).await
    }
    async fn open_object(&self, key: &str) -> Result<ByteStream> {
        self.inner.open_object(key).await
    }
    async fn object_timestamp(&self, key: &str) -> Result<Option<time::OffsetDateTime>> {
        self.inner.object_timestamp(key).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_are_retried() {
    let dir = tempfile::tempdir().unwrap();
    let inner = MemoryClient::new();
    let gen = Generation::random();
    let expected = build_replica(dir.path(), &inner, &gen).await;
    let flaky = Arc::new(FlakyClient {
        inner: inner.clone(),
        attempts: Mutex::new(HashMap::new()),
    });
    let out = dir.path().join("retried.db");
    let mut opts = RestoreOptions::new(&out);
    opts.retry = fast_retry();
    restore(flaky, &opts).await.unwrap();
    assert_eq!(rows(&Connection::open(&out).unwrap()), expected);

    // Without retries the same faults fail the restore and leave nothing behind.
    let flaky = Arc::new(FlakyClient {
        inner,
        attempts: Mutex::new(HashMap::new()),
    });
    let out = dir.path().join("not-retried.db");
    let mut opts = RestoreOptions::new(&out);
    opts.retry = RetryConfig::none();
    assert!(restore(flaky, &opts).await.is_err());
    assert!(!out.exists());
    let litter: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("not-retried"))
        .collect();
    assert!(litter.is_empty(), "{litter:?}");
}

/// The snapshot is much larger than the database after index 0 (VACUUM shrinks it), and
/// index 1 grows it again but not back to the snapshot's size: the snapshot's pages above the
/// shrunk size must not survive, wherever the snapshot writer and the segments meet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_pages_cut_off_by_a_shrink_do_not_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let client = MemoryClient::new();
    let gen = Generation::random();
    let db = dir.path().join("src.db");
    let conn = Connection::open(&db).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode=wal; PRAGMA wal_autocheckpoint=0;
         CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, data BLOB);",
    )
    .unwrap();
    for i in 0..400 {
        conn.execute(
            "INSERT INTO t (name, data) VALUES (?1, randomblob(3000))",
            rusqlite::params![format!("big {i}")],
        )
        .unwrap();
    }
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
        .unwrap();
    let snapshot = std::fs::read(&db).unwrap();
    client
        .write_snapshot(&gen, 0, stream(compress_to_vec(&snapshot)))
        .await
        .unwrap();
    conn.execute("DELETE FROM t WHERE id > 10", []).unwrap();
    conn.execute_batch("VACUUM;").unwrap();
    let upload = |index: u32| {
        let wal = std::fs::read(dir.path().join("src.db-wal")).unwrap();
        let client = &client;
        let gen = gen.clone();
        async move {
            for (offset, bytes) in split_wal(&wal) {
                client
                    .write_wal_segment(
                        &Pos::new(gen.clone(), index, offset),
                        stream(compress_to_vec(&bytes)),
                    )
                    .await
                    .unwrap();
            }
        }
    };
    upload(0).await;
    conn.execute_batch("PRAGMA wal_checkpoint(RESTART);")
        .unwrap();
    let shrunk = std::fs::metadata(&db).unwrap().len();
    for i in 0..150 {
        conn.execute(
            "INSERT INTO t (name, data) VALUES (?1, randomblob(3000))",
            rusqlite::params![format!("again {i}")],
        )
        .unwrap();
    }
    upload(1).await;
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
        .unwrap();
    let expected = std::fs::read(&db).unwrap();
    assert!(
        shrunk * 4 < snapshot.len() as u64,
        "index 0 must shrink the file"
    );
    assert!(expected.len() * 3 / 2 < snapshot.len() && expected.len() as u64 > shrunk * 2);

    let out = dir.path().join("restored.db");
    restore(Arc::new(client.clone()), &RestoreOptions::new(&out))
        .await
        .unwrap();
    assert!(
        std::fs::read(&out).unwrap() == expected,
        "restored file differs"
    );
}

/// Hand-made WAL: index 0 cuts the database to 5 pages, index 1 sets it to 20 pages while
/// writing only page 3. As with Litestream's checkpoints, pages 6-20 must be zeros, not the
/// snapshot's pages (the snapshot has 40).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_between_a_shrink_and_a_later_size_are_zeros() {
    use litestream_core::wal::{encode_frame, encode_header};
    const PS: usize = 4096;
    let client = MemoryClient::new();
    let gen = Generation::random();
    let mut snapshot = Vec::new();
    for pgno in 1..=40u8 {
        snapshot.extend(std::iter::repeat_n(pgno, PS));
    }
    snapshot[..16].copy_from_slice(b"SQLite format 3\0");
    snapshot[16..18].copy_from_slice(&(PS as u16).to_be_bytes());
    client
        .write_snapshot(&gen, 0, stream(compress_to_vec(&snapshot)))
        .await
        .unwrap();
    for (index, pgno, fill, commit) in [(0u32, 2u32, 0xA2u8, 5u32), (1, 3, 0xB3, 20)] {
        let hdr = encode_header(false, PS as u32, index, (index + 1, 7));
        let header = WalHeader::parse(&hdr).unwrap();
        let (frame, _) = encode_frame(&header, header.checksum, pgno, commit, &[fill; PS]);
        let mut seg = hdr.to_vec();
        seg.extend_from_slice(&frame);
        client
            .write_wal_segment(
                &Pos::new(gen.clone(), index, 0),
                stream(compress_to_vec(&seg)),
            )
            .await
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("restored.db");
    restore(Arc::new(client), &RestoreOptions::new(&out))
        .await
        .unwrap();
    let got = std::fs::read(&out).unwrap();
    assert_eq!(got.len(), 20 * PS);
    let page = |p: usize| &got[(p - 1) * PS..p * PS];
    assert_eq!(page(1), &snapshot[..PS]);
    assert!(page(2).iter().all(|&b| b == 0xA2));
    assert!(page(3).iter().all(|&b| b == 0xB3));
    assert!(page(4).iter().all(|&b| b == 4) && page(5).iter().all(|&b| b == 5));
    for p in 6..=20 {
        assert!(page(p).iter().all(|&b| b == 0), "page {p} must be zeros");
    }
}

/// A database with a snapshot and one WAL index holding a single large transaction; returns
/// the WAL bytes (header + frames) and the expected rows.
async fn one_big_transaction(
    dir: &Path,
    client: &MemoryClient,
    gen: &Generation,
) -> (Vec<u8>, Vec<Row>) {
    let conn = source_with_snapshot(dir, client, gen).await;
    conn.execute_batch("BEGIN").unwrap();
    for i in 0..20 {
        conn.execute(
            "INSERT INTO t (name, data) VALUES (?1, randomblob(3000))",
            rusqlite::params![format!("row {i}")],
        )
        .unwrap();
    }
    conn.execute_batch("COMMIT").unwrap();
    let wal = std::fs::read(dir.join("src.db-wal")).unwrap();
    (wal, rows(&conn))
}

/// Litestream v0.3.13 can upload part of a transaction in one segment and the rest in the
/// next: the restore carries the transaction across the boundary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_split_across_two_segments_restores() {
    let dir = tempfile::tempdir().unwrap();
    let client = MemoryClient::new();
    let gen = Generation::random();
    let (wal, expected) = one_big_transaction(dir.path(), &client, &gen).await;
    let fs = WalHeader::parse(&wal[..WAL_HEADER_SIZE])
        .unwrap()
        .frame_size();
    let segs = split_wal(&wal);
    assert_eq!(segs.len(), 1, "one transaction");
    let end = segs[0].1.len();
    let mid = WAL_HEADER_SIZE + 5 * fs;
    assert!(mid < end);
    for (offset, bytes) in [(0, &wal[..mid]), (mid, &wal[mid..end])] {
        client
            .write_wal_segment(
                &Pos::new(gen.clone(), 0, offset as u64),
                stream(compress_to_vec(bytes)),
            )
            .await
            .unwrap();
    }
    let out = dir.path().join("restored.db");
    restore(Arc::new(client), &RestoreOptions::new(&out))
        .await
        .unwrap();
    assert_eq!(rows(&Connection::open(&out).unwrap()), expected);
}

/// An index whose last segment stops inside a transaction (Litestream v0.3.13 can leave this
/// after a crash): the unfinished transaction is left out, as SQLite and Litestream's restore
/// do, and no temporary file is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unfinished_transaction_at_the_end_of_an_index_is_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let client = MemoryClient::new();
    let gen = Generation::random();
    let (wal, _) = one_big_transaction(dir.path(), &client, &gen).await;
    let fs = WalHeader::parse(&wal[..WAL_HEADER_SIZE])
        .unwrap()
        .frame_size();
    client
        .write_wal_segment(
            &Pos::new(gen.clone(), 0, 0),
            stream(compress_to_vec(&wal[..WAL_HEADER_SIZE + 5 * fs])),
        )
        .await
        .unwrap();
    let out = dir.path().join("out").join("restored.db");
    restore(Arc::new(client), &RestoreOptions::new(&out))
        .await
        .unwrap();
    assert!(rows(&Connection::open(&out).unwrap()).is_empty());
    let litter: Vec<_> = std::fs::read_dir(out.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "restored.db")
        .collect();
    assert!(litter.is_empty(), "{litter:?}");
}

/// A committed transaction larger than the in-memory transaction buffer (so it goes through
/// the spill file) followed by an unfinished one, written as a file replica: our restore and
/// the real Litestream v0.3.13's give the same rows (the committed transaction only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_committed_then_unfinished_transaction_matches_litestream() {
    let dir = tempfile::tempdir().unwrap();
    let replica = dir.path().join("replica");
    let client = litestream_file::FileClient::new(&replica);
    let gen = Generation::random();
    let conn = source_with_snapshot(dir.path(), &client, &gen).await;
    let insert_many = |n: usize, size: usize| {
        conn.execute_batch("BEGIN").unwrap();
        for i in 0..n {
            conn.execute(
                "INSERT INTO t (name, data) VALUES (?1, randomblob(?2))",
                rusqlite::params![format!("row {i}"), size as i64],
            )
            .unwrap();
        }
        conn.execute_batch("COMMIT").unwrap();
    };
    insert_many(48, 256 << 10); // ~12 MiB: more than the 8 MiB held in memory
    let committed = rows(&conn);
    insert_many(10, 3000);
    let wal = std::fs::read(dir.path().join("src.db-wal")).unwrap();
    let fs = WalHeader::parse(&wal[..WAL_HEADER_SIZE])
        .unwrap()
        .frame_size();
    let segs = split_wal(&wal);
    assert_eq!(segs.len(), 2);
    let tail_end = segs[1].0 as usize + 4 * fs;
    for (offset, bytes) in [
        (0, &segs[0].1[..]),
        (segs[1].0, &wal[segs[1].0 as usize..tail_end]),
    ] {
        client
            .write_wal_segment(
                &Pos::new(gen.clone(), 0, offset),
                stream(compress_to_vec(bytes)),
            )
            .await
            .unwrap();
    }
    let ours = dir.path().join("ours.db");
    restore(Arc::new(client), &RestoreOptions::new(&ours))
        .await
        .unwrap();
    assert_eq!(rows(&Connection::open(&ours).unwrap()), committed);

    let theirs = dir.path().join("theirs.db");
    let bin = std::env::var_os("LITESTREAM_V0313_BIN").expect(
        "LITESTREAM_V0313_BIN must name the real Litestream v0.3.13 (scripts/test.sh sets it)",
    );
    let out = std::process::Command::new(bin)
        .args(["restore", "-o"])
        .arg(&theirs)
        .arg(format!("file://{}", replica.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(rows(&Connection::open(&theirs).unwrap()), committed);
}

/// One replica object's bytes, as stored.
enum Object {
    Snapshot(Vec<u8>),
    Segment(Pos, Vec<u8>),
}

impl Object {
    fn bytes_mut(&mut self) -> &mut Vec<u8> {
        match self {
            Object::Snapshot(b) | Object::Segment(_, b) => b,
        }
    }

    /// The object's file name, as restore errors name it.
    fn file_name(&self) -> String {
        match self {
            Object::Snapshot(_) => format!("{:08x}.snapshot.lz4", 0),
            Object::Segment(p, _) => format!("{:08x}_{:08x}.wal.lz4", p.index, p.offset),
        }
    }
}

async fn read_stream(mut s: ByteStream) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    out
}

async fn copy_objects(objects: &[Object], gen: &Generation) -> MemoryClient {
    let client = MemoryClient::new();
    for o in objects {
        match o {
            Object::Snapshot(b) => {
                client
                    .write_snapshot(gen, 0, stream(b.clone()))
                    .await
                    .unwrap();
            }
            Object::Segment(p, b) => {
                client
                    .write_wal_segment(p, stream(b.clone()))
                    .await
                    .unwrap();
            }
        }
    }
    client
}

/// Any one flipped bit in any object of a replica either makes the restore fail with an error
/// that names that object, leaving nothing at the output path, or (where the bit does not
/// matter: a match offset into a run of equal bytes decodes to the same content) restores
/// exactly the same database. Never a panic, never different contents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_bit_anywhere_is_an_error_naming_the_object_or_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let source = MemoryClient::new();
    let gen = Generation::random();
    build_replica(dir.path(), &source, &gen).await;
    let clean_out = dir.path().join("clean.db");
    restore(Arc::new(source.clone()), &RestoreOptions::new(&clean_out))
        .await
        .unwrap();
    let clean = std::fs::read(&clean_out).unwrap();

    let mut objects = vec![Object::Snapshot(
        read_stream(source.open_snapshot(&gen, 0).await.unwrap()).await,
    )];
    for seg in source.wal_segments(&gen).await.unwrap() {
        let bytes = read_stream(source.open_wal_segment(&seg.pos()).await.unwrap()).await;
        objects.push(Object::Segment(seg.pos(), bytes));
    }

    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    let (mut failed, mut unchanged) = (0, 0);
    for trial in 0..150 {
        let victim = next(objects.len());
        let len = objects[victim].bytes_mut().len();
        // Half the flips land in the frame's first or last 16 bytes (header, end mark,
        // content checksum), the rest anywhere.
        let at = if trial % 2 == 0 {
            let edge = next(32.min(len));
            if edge < 16 {
                edge
            } else {
                len - 1 - (edge - 16)
            }
        } else {
            next(len)
        };
        let bit = 1u8 << next(8);
        objects[victim].bytes_mut()[at] ^= bit;
        let client = copy_objects(&objects, &gen).await;
        objects[victim].bytes_mut()[at] ^= bit;

        let out_dir = dir.path().join(format!("trial-{trial}"));
        let out = out_dir.join("restored.db");
        let mut opts = RestoreOptions::new(&out);
        opts.retry = fast_retry();
        let what = format!(
            "trial {trial}: bit {bit:#04x} of byte {at} of {}",
            objects[victim].file_name()
        );
        match restore(Arc::new(client), &opts).await {
            Ok(_) => {
                assert!(
                    std::fs::read(&out).unwrap() == clean,
                    "{what}: restored different contents"
                );
                unchanged += 1;
            }
            Err(e) => {
                let text = e.to_string();
                assert!(
                    text.contains(&objects[victim].file_name()),
                    "{what}: the error does not name the object: {text}"
                );
                let left: Vec<_> = std::fs::read_dir(&out_dir)
                    .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
                    .unwrap_or_default();
                assert!(left.is_empty(), "{what}: left behind {left:?}");
                failed += 1;
            }
        }
    }
    eprintln!("flipped bits: {failed} caught, {unchanged} without effect");
    assert!(
        failed > 100,
        "most flips must be caught: {failed} failed, {unchanged} unchanged"
    );
}
