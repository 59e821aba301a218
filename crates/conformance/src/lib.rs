//! The behaviour suite for [`ReplicaClient`]: one `pub async fn` per rule of the trait's
//! `# Contract`, and [`run_all`] to call them in turn.
//!
//! Every backend's tests build a client on a fresh, empty root (a random prefix on the test
//! server, a temporary directory, a new [`MemoryClient`](litestream_core::MemoryClient))
//! and call [`run_all`]; that is the whole contract test. Tests of what only one backend does
//! (credentials, host keys, multipart uploads, raw keys that do not parse) stay with the backend.
//!
//! Each behaviour expects an empty root, uses its own generations, and deletes them again before
//! it returns, so the behaviours can run one after the other on one client. A failed expectation
//! panics with the client's [`kind`](ReplicaClient::kind) and what was being checked.
//!
//! Behaviour that a backend may lack is to come in as an argument of the function that checks
//! it (as in object_store's suite), never as a skip; so far every backend has all of it.
//!
//! ```no_run
//! # async fn example() {
//! let client = litestream_core::MemoryClient::new();
//! litestream_conformance::run_all(&client).await;
//! # }
//! ```
// Test support: a failed expectation here is a failed test, so `expect` and `assert!` are the
// right way to report it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod objects;

pub use objects::{
    missing_objects_open_as_not_found, non_relative_keys_are_refused,
    object_listings_are_one_level_deep, objects_list_sorted_and_read_back,
    objects_written_keep_their_timestamp, TimestampKept,
};

use std::pin::Pin;
use std::task::{Context, Poll};

use litestream_core::MAX_INDEX;
use litestream_core::{ByteStream, Error, Generation, Pos, ReplicaClient, Result};
use time::OffsetDateTime;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

/// Run every behaviour of this suite against `client`, whose root must be empty.
///
/// The root is empty again when this returns.
pub async fn run_all(client: &dyn ReplicaClient) {
    empty_root_lists_as_empty(client).await;
    snapshots_round_trip(client).await;
    wal_segments_round_trip(client).await;
    writing_an_existing_key_replaces_it(client).await;
    listings_are_sorted(client).await;
    generations_are_sorted_and_deduplicated(client).await;
    missing_generation_lists_as_empty(client).await;
    missing_objects_are_not_found(client).await;
    deletes_are_idempotent(client).await;
    delete_generation_removes_only_that_generation(client).await;
    failed_upload_leaves_nothing_visible(client).await;
    wal_offset_too_large_for_its_name_is_rejected(client).await;
    object_listings_are_one_level_deep(client).await;
    objects_list_sorted_and_read_back(client).await;
    missing_objects_open_as_not_found(client).await;
    non_relative_keys_are_refused(client).await;
    objects_written_keep_their_timestamp(client).await;
}

/// An empty root has no generations, and any generation of it has no snapshots or segments.
pub async fn empty_root_lists_as_empty(c: &dyn ReplicaClient) {
    assert_root_empty(c, "empty_root_lists_as_empty").await;
    let g = generation("0123456789abcdef");
    assert!(ok(c, "snapshots of an empty root", c.snapshots(&g).await).is_empty());
    assert!(ok(c, "wal segments of an empty root", c.wal_segments(&g).await).is_empty());
}

/// Snapshots (empty, small, over 1 MiB, at index 0 and [`MAX_INDEX`]) read back byte for
/// byte, and the infos returned by the writes equal the listing's (apart from the time).
pub async fn snapshots_round_trip(c: &dyn ReplicaClient) {
    assert_root_empty(c, "snapshots_round_trip").await;
    let g = generation("00000000000000a1");
    let cases = [
        (3u32, 10_000usize),
        (0, 1),
        (MAX_INDEX, 4152),
        (7, 0),
        (9, (1 << 20) + 17),
    ];
    let mut written = Vec::new();
    for (seed, (index, len)) in (1u64..).zip(cases) {
        let data = payload(len, seed);
        let info = ok(
            c,
            "write snapshot",
            c.write_snapshot(&g, index, stream(data.clone())).await,
        );
        let kind = c.kind();
        assert_eq!(
            (&info.generation, info.index, info.size),
            (&g, index, len as u64),
            "{kind}: info returned by write_snapshot({g}, {index:08x})"
        );
        written.push((info, data));
    }
    for (info, data) in &written {
        let got = read_all(ok(c, "open", c.open_snapshot(&g, info.index).await)).await;
        assert_same_bytes(c, &got, data, &format!("snapshot {g}/{:08x}", info.index));
    }
    let listed = ok(c, "list snapshots", c.snapshots(&g).await);
    let infos: Vec<_> = written.into_iter().map(|(info, _)| info).collect();
    assert_listing_matches(c, "snapshots", &listed, &infos, |s| {
        ((s.generation.clone(), s.index, 0, s.size), s.created_at)
    });
    clear(c).await;
}

/// WAL segments (empty, small, over 1 MiB, at the largest offset a name can hold) read back
/// byte for byte, and the infos returned by the writes equal the listing's.
pub async fn wal_segments_round_trip(c: &dyn ReplicaClient) {
    assert_root_empty(c, "wal_segments_round_trip").await;
    let g = generation("00000000000000a2");
    let cases = [
        (3u32, 0x4080u64, 777usize),
        (3, 0, 4152),
        (4, 0, 0),
        (0, u64::from(u32::MAX), 9),
        (MAX_INDEX, 0x1038, (1 << 20) + 33),
    ];
    let mut written = Vec::new();
    for (seed, (index, offset, len)) in (11u64..).zip(cases) {
        let pos = Pos::new(g.clone(), index, offset);
        let data = payload(len, seed);
        let info = ok(
            c,
            "write wal segment",
            c.write_wal_segment(&pos, stream(data.clone())).await,
        );
        assert_eq!(
            (info.pos(), info.size),
            (pos.clone(), len as u64),
            "{}: info returned by write_wal_segment({pos})",
            c.kind()
        );
        written.push((info, data));
    }
    for (info, data) in &written {
        let pos = info.pos();
        let got = read_all(ok(c, "open", c.open_wal_segment(&pos).await)).await;
        assert_same_bytes(c, &got, data, &format!("wal segment {pos}"));
    }
    let listed = ok(c, "list wal segments", c.wal_segments(&g).await);
    let infos: Vec<_> = written.into_iter().map(|(info, _)| info).collect();
    assert_listing_matches(c, "wal segments", &listed, &infos, |s| {
        (
            (s.generation.clone(), s.index, s.offset, s.size),
            s.created_at,
        )
    });
    clear(c).await;
}

/// Writing a snapshot or segment that exists replaces it: one listing entry, the new bytes.
pub async fn writing_an_existing_key_replaces_it(c: &dyn ReplicaClient) {
    assert_root_empty(c, "writing_an_existing_key_replaces_it").await;
    let g = generation("00000000000000a3");
    let pos = Pos::new(g.clone(), 1, 4152);
    put_snapshot(c, &g, 1, payload(5000, 1)).await;
    put_segment(c, &pos, payload(5000, 2)).await;
    let new = b"replaced".to_vec();
    put_snapshot(c, &g, 1, new.clone()).await;
    put_segment(c, &pos, new.clone()).await;

    let got = read_all(ok(c, "open", c.open_snapshot(&g, 1).await)).await;
    assert_same_bytes(c, &got, &new, "overwritten snapshot");
    let got = read_all(ok(c, "open", c.open_wal_segment(&pos).await)).await;
    assert_same_bytes(c, &got, &new, "overwritten wal segment");
    let snaps = ok(c, "list", c.snapshots(&g).await);
    assert_eq!(
        snaps.iter().map(|s| (s.index, s.size)).collect::<Vec<_>>(),
        [(1, new.len() as u64)],
        "{}: snapshots after overwrite",
        c.kind()
    );
    let segs = ok(c, "list", c.wal_segments(&g).await);
    assert_eq!(
        segs.iter()
            .map(|s| (s.index, s.offset, s.size))
            .collect::<Vec<_>>(),
        [(1, 4152, new.len() as u64)],
        "{}: wal segments after overwrite",
        c.kind()
    );
    clear(c).await;
}

/// Snapshots list sorted by index and segments by (index, offset), whatever the write order.
pub async fn listings_are_sorted(c: &dyn ReplicaClient) {
    assert_root_empty(c, "listings_are_sorted").await;
    let g = generation("00000000000000a4");
    for index in [0x10u32, 2, 0xff, 0, 0xa, 0x100] {
        put_snapshot(c, &g, index, vec![1; 5]).await;
    }
    let wal = [
        (2u32, 0x20u64),
        (1, 0x1000),
        (1, 0),
        (2, 0),
        (1, 0x10),
        (0x10, 0),
        (0xf, 8),
    ];
    for (index, offset) in wal {
        let pos = Pos::new(g.clone(), index, offset);
        put_segment(c, &pos, vec![2; 3]).await;
    }
    let snaps = ok(c, "list", c.snapshots(&g).await);
    assert_eq!(
        snaps.iter().map(|s| s.index).collect::<Vec<_>>(),
        [0, 2, 0xa, 0x10, 0xff, 0x100],
        "{}: snapshot listing order",
        c.kind()
    );
    let segs = ok(c, "list", c.wal_segments(&g).await);
    assert_eq!(
        segs.iter().map(|s| (s.index, s.offset)).collect::<Vec<_>>(),
        [
            (1, 0),
            (1, 0x10),
            (1, 0x1000),
            (2, 0),
            (2, 0x20),
            (0xf, 8),
            (0x10, 0)
        ],
        "{}: wal segment listing order",
        c.kind()
    );
    clear(c).await;
}

/// Generations list sorted and once each, whether they hold snapshots, segments or both.
pub async fn generations_are_sorted_and_deduplicated(c: &dyn ReplicaClient) {
    assert_root_empty(c, "generations_are_sorted_and_deduplicated").await;
    // (generation, snapshots, wal segments), written in this order.
    let gens = [
        ("ffffffffffffffff", true, true),
        ("0000000000000001", true, false),
        ("a0a0a0a0a0a0a0a0", false, true),
        ("8000000000000000", true, true),
    ];
    for (name, snapshots, segments) in gens {
        let g = generation(name);
        for index in [1u32, 0] {
            if snapshots {
                put_snapshot(c, &g, index, vec![3; 4]).await;
            }
            if segments {
                for offset in [4152u64, 0] {
                    let pos = Pos::new(g.clone(), index, offset);
                    put_segment(c, &pos, vec![4; 4]).await;
                }
            }
        }
    }
    let listed: Vec<String> = ok(c, "list generations", c.generations().await)
        .iter()
        .map(|g| g.to_string())
        .collect();
    assert_eq!(
        listed,
        [
            "0000000000000001",
            "8000000000000000",
            "a0a0a0a0a0a0a0a0",
            "ffffffffffffffff"
        ],
        "{}: generations listed",
        c.kind()
    );
    clear(c).await;
}

/// A generation that does not exist, or holds only the other kind of object, lists as empty.
pub async fn missing_generation_lists_as_empty(c: &dyn ReplicaClient) {
    assert_root_empty(c, "missing_generation_lists_as_empty").await;
    let only_snapshots = generation("00000000000000a5");
    let only_segments = generation("00000000000000a6");
    let missing = generation("00000000000000a7");
    put_snapshot(c, &only_snapshots, 0, vec![1]).await;
    let pos = Pos::new(only_segments.clone(), 0, 0);
    put_segment(c, &pos, vec![1]).await;
    let kind = c.kind();
    for g in [&missing, &only_segments] {
        let snaps = ok(c, "list snapshots", c.snapshots(g).await);
        assert!(snaps.is_empty(), "{kind}: snapshots of {g}: {snaps:?}");
    }
    for g in [&missing, &only_snapshots] {
        let segs = ok(c, "list wal segments", c.wal_segments(g).await);
        assert!(segs.is_empty(), "{kind}: wal segments of {g}: {segs:?}");
    }
    clear(c).await;
}

/// Opening a snapshot or segment that does not exist (in a missing or an existing generation,
/// or after a delete) fails with a not-found error that is not retryable.
pub async fn missing_objects_are_not_found(c: &dyn ReplicaClient) {
    assert_root_empty(c, "missing_objects_are_not_found").await;
    let missing = generation("00000000000000a8");
    let g = generation("00000000000000a9");
    assert_not_found(
        c,
        c.open_snapshot(&missing, 0).await,
        "snapshot of a missing generation",
    );
    let pos = Pos::new(missing.clone(), 0, 0);
    assert_not_found(
        c,
        c.open_wal_segment(&pos).await,
        "segment of a missing generation",
    );

    put_snapshot(c, &g, 1, vec![1; 8]).await;
    let written = Pos::new(g.clone(), 1, 0);
    put_segment(c, &written, vec![2; 8]).await;
    assert_not_found(c, c.open_snapshot(&g, 2).await, "snapshot at another index");
    for (index, offset) in [(1u32, 4152u64), (2, 0), (0, 0)] {
        let pos = Pos::new(g.clone(), index, offset);
        assert_not_found(
            c,
            c.open_wal_segment(&pos).await,
            "segment at another position",
        );
    }
    ok(c, "delete", c.delete_snapshot(&g, 1).await);
    ok(
        c,
        "delete",
        c.delete_wal_segments(std::slice::from_ref(&written)).await,
    );
    assert_not_found(c, c.open_snapshot(&g, 1).await, "deleted snapshot");
    assert_not_found(c, c.open_wal_segment(&written).await, "deleted segment");
    clear(c).await;
}

/// Deleting snapshots, segments and generations that do not exist (any more) succeeds.
pub async fn deletes_are_idempotent(c: &dyn ReplicaClient) {
    assert_root_empty(c, "deletes_are_idempotent").await;
    let g = generation("00000000000000aa");
    put_snapshot(c, &g, 1, vec![1; 10]).await;
    let p1 = Pos::new(g.clone(), 1, 0);
    let p2 = Pos::new(g.clone(), 1, 0x30);
    for p in [&p1, &p2] {
        put_segment(c, p, vec![2; 10]).await;
    }
    ok(c, "delete snapshot", c.delete_snapshot(&g, 1).await);
    ok(c, "delete snapshot again", c.delete_snapshot(&g, 1).await);
    ok(
        c,
        "delete a snapshot never written",
        c.delete_snapshot(&g, 9).await,
    );
    assert!(ok(c, "list", c.snapshots(&g).await).is_empty());

    ok(
        c,
        "delete one segment",
        c.delete_wal_segments(std::slice::from_ref(&p1)).await,
    );
    ok(
        c,
        "delete it again with another",
        c.delete_wal_segments(&[p1.clone(), p2.clone()]).await,
    );
    ok(c, "delete no segments", c.delete_wal_segments(&[]).await);
    assert!(ok(c, "list", c.wal_segments(&g).await).is_empty());

    ok(c, "delete generation", c.delete_generation(&g).await);
    ok(c, "delete generation again", c.delete_generation(&g).await);
    let never = generation("00000000000000ab");
    ok(
        c,
        "delete a generation never written",
        c.delete_generation(&never).await,
    );
    ok(
        c,
        "delete a snapshot of it",
        c.delete_snapshot(&never, 0).await,
    );
    let pos = Pos::new(never, 0, 0);
    ok(
        c,
        "delete a segment of it",
        c.delete_wal_segments(&[pos]).await,
    );
    assert_root_empty(c, "deletes_are_idempotent (after deleting everything)").await;
}

/// Deleting a generation removes all of its snapshots and segments and nothing of any other.
pub async fn delete_generation_removes_only_that_generation(c: &dyn ReplicaClient) {
    assert_root_empty(c, "delete_generation_removes_only_that_generation").await;
    let keep = generation("00000000000000ac");
    let drop = generation("00000000000000ad");
    for g in [&keep, &drop] {
        for index in [0u32, 1] {
            put_snapshot(c, g, index, payload(64, 5)).await;
            let pos = Pos::new(g.clone(), index, 0);
            put_segment(c, &pos, payload(64, 6)).await;
        }
    }
    ok(c, "delete generation", c.delete_generation(&drop).await);
    let kind = c.kind();
    let gens = ok(c, "list generations", c.generations().await);
    assert_eq!(
        gens,
        std::slice::from_ref(&keep),
        "{kind}: generations after the delete"
    );
    assert!(
        ok(c, "list", c.snapshots(&drop).await).is_empty(),
        "{kind}: snapshots of {drop}"
    );
    assert!(
        ok(c, "list", c.wal_segments(&drop).await).is_empty(),
        "{kind}: segments of {drop}"
    );
    assert_not_found(
        c,
        c.open_snapshot(&drop, 0).await,
        "snapshot of a deleted generation",
    );
    assert_eq!(
        ok(c, "list", c.snapshots(&keep).await).len(),
        2,
        "{kind}: kept snapshots"
    );
    assert_eq!(
        ok(c, "list", c.wal_segments(&keep).await).len(),
        2,
        "{kind}: kept segments"
    );
    let got = read_all(ok(c, "open kept snapshot", c.open_snapshot(&keep, 1).await)).await;
    assert_same_bytes(c, &got, &payload(64, 5), "kept snapshot");
    let pos = Pos::new(keep.clone(), 1, 0);
    let got = read_all(ok(c, "open kept segment", c.open_wal_segment(&pos).await)).await;
    assert_same_bytes(c, &got, &payload(64, 6), "kept segment");
    clear(c).await;
}

/// A write whose source stream fails (at once or after 600 KiB) fails, and leaves neither a
/// new object nor a changed old one: writes are atomic.
pub async fn failed_upload_leaves_nothing_visible(c: &dyn ReplicaClient) {
    assert_root_empty(c, "failed_upload_leaves_nothing_visible").await;
    let g = generation("00000000000000ae");
    let old = payload(100, 7);
    let old_pos = Pos::new(g.clone(), 1, 0);
    put_snapshot(c, &g, 1, old.clone()).await;
    put_segment(c, &old_pos, old.clone()).await;
    let kind = c.kind();
    for fail_after in [0usize, 600 << 10] {
        for index in [2u32, 1] {
            let r = c
                .write_snapshot(&g, index, FailingSource::boxed(fail_after))
                .await;
            assert!(
                r.is_err(),
                "{kind}: snapshot {index} written from a failing source: {r:?}"
            );
            let pos = Pos::new(g.clone(), index, 0);
            let r = c
                .write_wal_segment(&pos, FailingSource::boxed(fail_after))
                .await;
            assert!(
                r.is_err(),
                "{kind}: segment {pos} written from a failing source: {r:?}"
            );
        }
        let snaps = ok(c, "list", c.snapshots(&g).await);
        assert_eq!(
            snaps.iter().map(|s| (s.index, s.size)).collect::<Vec<_>>(),
            [(1, old.len() as u64)],
            "{kind}: snapshots after failed uploads of {fail_after} bytes"
        );
        let segs = ok(c, "list", c.wal_segments(&g).await);
        assert_eq!(
            segs.iter().map(|s| (s.pos(), s.size)).collect::<Vec<_>>(),
            [(old_pos.clone(), old.len() as u64)],
            "{kind}: wal segments after failed uploads of {fail_after} bytes"
        );
        assert_not_found(
            c,
            c.open_snapshot(&g, 2).await,
            "snapshot whose upload failed",
        );
        let pos = Pos::new(g.clone(), 2, 0);
        assert_not_found(
            c,
            c.open_wal_segment(&pos).await,
            "segment whose upload failed",
        );
        let got = read_all(ok(c, "open", c.open_snapshot(&g, 1).await)).await;
        assert_same_bytes(c, &got, &old, "snapshot after a failed overwrite");
        let got = read_all(ok(c, "open", c.open_wal_segment(&old_pos).await)).await;
        assert_same_bytes(c, &got, &old, "segment after a failed overwrite");
    }
    clear(c).await;
}

/// A WAL segment whose offset needs more than the 8 hex digits of its name is refused with
/// [`Error::InvalidArgument`] and nothing is written.
pub async fn wal_offset_too_large_for_its_name_is_rejected(c: &dyn ReplicaClient) {
    assert_root_empty(c, "wal_offset_too_large_for_its_name_is_rejected").await;
    let g = generation("00000000000000af");
    let kind = c.kind();
    for offset in [u64::from(u32::MAX) + 1, u64::MAX] {
        let pos = Pos::new(g.clone(), 1, offset);
        match c.write_wal_segment(&pos, stream(vec![1; 8])).await {
            Err(Error::InvalidArgument(_)) => {}
            other => panic!("{kind}: write_wal_segment({pos}) gave {other:?}, not InvalidArgument"),
        }
    }
    assert!(
        ok(c, "list", c.wal_segments(&g).await).is_empty(),
        "{kind}: segments written"
    );
    clear(c).await;
}

/// A byte stream over `data`.
pub fn stream(data: Vec<u8>) -> ByteStream {
    Box::pin(std::io::Cursor::new(data))
}

/// Read a whole stream; a read error fails the test.
pub async fn read_all(mut s: ByteStream) -> Vec<u8> {
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.expect("read object stream");
    out
}

/// `len` deterministic pseudo-random bytes for `seed` (incompressible, so stored sizes are the
/// payload sizes even for a backend that compressed, which none may).
pub fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// An upload source that yields some bytes and then fails with an I/O error.
#[derive(Debug)]
pub struct FailingSource {
    left: usize,
}

impl FailingSource {
    /// The message of the error the source fails with.
    pub const MESSAGE: &'static str = "conformance: upload source failed";

    /// A source that yields `len` bytes and then fails.
    pub fn new(len: usize) -> Self {
        FailingSource { left: len }
    }

    /// [`FailingSource::new`] as a [`ByteStream`].
    pub fn boxed(len: usize) -> ByteStream {
        Box::pin(Self::new(len))
    }
}

impl AsyncRead for FailingSource {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.left == 0 {
            return Poll::Ready(Err(std::io::Error::other(Self::MESSAGE)));
        }
        let n = self.left.min(buf.remaining()).min(64 << 10);
        buf.put_slice(&vec![7u8; n]);
        self.left -= n;
        Poll::Ready(Ok(()))
    }
}

fn generation(s: &str) -> Generation {
    Generation::parse(s).expect("valid generation name")
}

/// The result's value, or a panic naming the backend and the step.
fn ok<T>(c: &dyn ReplicaClient, step: &str, r: Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("{}: {step}: {e} ({e:?})", c.kind()))
}

/// Write a snapshot of `data`; a failure fails the test.
async fn put_snapshot(c: &dyn ReplicaClient, g: &Generation, index: u32, data: Vec<u8>) {
    ok(
        c,
        "write snapshot",
        c.write_snapshot(g, index, stream(data)).await,
    );
}

/// Write a WAL segment of `data`; a failure fails the test.
async fn put_segment(c: &dyn ReplicaClient, pos: &Pos, data: Vec<u8>) {
    ok(
        c,
        "write wal segment",
        c.write_wal_segment(pos, stream(data)).await,
    );
}

/// A listed or written object as (generation, index, offset, size), and its time.
type Entry = ((Generation, u32, u64, u64), OffsetDateTime);

/// The `listed` entries are the `written` ones in (index, offset) order, and every time in
/// either is close to now (the times themselves may differ: a backend may report its clock at
/// the write and the object's stored time in the listing).
fn assert_listing_matches<T>(
    c: &dyn ReplicaClient,
    what: &str,
    listed: &[T],
    written: &[T],
    entry: impl Fn(&T) -> Entry,
) {
    let (got, got_times): (Vec<_>, Vec<_>) = listed.iter().map(&entry).unzip();
    let (mut want, want_times): (Vec<_>, Vec<_>) = written.iter().map(&entry).unzip();
    want.sort();
    assert_eq!(
        got,
        want,
        "{}: {what} listed (generation, index, offset, size) vs written, in order",
        c.kind()
    );
    for t in got_times.into_iter().chain(want_times) {
        assert_recent(c, t, &format!("{what} created_at"));
    }
}

/// Fail unless the root has no generations: each behaviour needs a fresh root.
async fn assert_root_empty(c: &dyn ReplicaClient, behaviour: &str) {
    let gens = ok(c, "list generations", c.generations().await);
    assert!(
        gens.is_empty(),
        "{}: {behaviour} needs an empty root (a fresh prefix); found generations {gens:?}",
        c.kind()
    );
}

/// Delete every generation, leaving the root empty for the next behaviour.
async fn clear(c: &dyn ReplicaClient) {
    for g in ok(c, "list generations", c.generations().await) {
        ok(c, "delete generation", c.delete_generation(&g).await);
    }
    assert_root_empty(c, "clean-up").await;
}

fn assert_not_found(c: &dyn ReplicaClient, r: Result<ByteStream>, what: &str) {
    let kind = c.kind();
    match r {
        Err(e) => {
            assert!(
                e.is_not_found(),
                "{kind}: opening {what}: not a not-found error: {e:?}"
            );
            assert!(
                !e.is_retryable(),
                "{kind}: opening {what}: retryable not-found: {e:?}"
            );
        }
        Ok(_) => panic!("{kind}: opening {what} succeeded"),
    }
}

fn assert_same_bytes(c: &dyn ReplicaClient, got: &[u8], want: &[u8], what: &str) {
    // Not assert_eq!: a megabyte of bytes in a panic message helps nobody.
    assert!(
        got == want,
        "{}: {what} read back differs ({} bytes read, {} written)",
        c.kind(),
        got.len(),
        want.len()
    );
}

/// Times must come from a clock close to ours (the backend's, a file's mtime, ...).
fn assert_recent(c: &dyn ReplicaClient, t: OffsetDateTime, what: &str) {
    let off = (OffsetDateTime::now_utc() - t).abs();
    assert!(
        off < time::Duration::minutes(10),
        "{}: {what} {t} is {off} away from now",
        c.kind()
    );
}
