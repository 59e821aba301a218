//! Our LTX writer against the real Litestream v0.5.17: a `file://` replica written entirely by
//! our encoder and compactor (an L9 snapshot of a real SQLite database, L0 files of the later
//! changes, L1 compactions of them and a compacted L9 snapshot, mtimes set to the header
//! timestamps as v0.5 does) restores with v0.5.17 at the latest point, at every `-txid` and at
//! a `-timestamp`, byte-identical to the checkpointed source database, and v0.5.17's `ltx`
//! command lists exactly the files we wrote. Our own restore gives the same bytes.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::common::ltx::*;
use crate::common::*;
use litestream_core::ltx::compact::compact;
use litestream_core::ltx::decoder::{LtxDecoder, LtxHeader};
use litestream_core::ltx::encoder::{write_snapshot, write_wal_range, LtxEncoder};
use litestream_core::ltx::upload::upload_ltx_file;
use litestream_file::FileClient;

/// The source database after a checkpoint: its bytes and its page size.
fn checkpointed(db: &Path) -> (Vec<u8>, u32) {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
        assert_eq!(r.get::<_, i64>(0)?, 0, "checkpoint busy");
        Ok(())
    })
    .unwrap();
    drop(conn);
    let bytes = fs::read(db).unwrap();
    let ps = u32::from(u16::from_be_bytes([bytes[16], bytes[17]]));
    let ps = if ps == 1 { 65536 } else { ps };
    let pages = u32::from_be_bytes([bytes[28], bytes[29], bytes[30], bytes[31]]);
    assert_eq!(bytes.len() as u64, u64::from(pages) * u64::from(ps));
    (bytes, ps)
}

fn exec(db: &Path, sql: &str) {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.execute_batch(sql).unwrap();
}

/// The phases of the workload, each one TXID after the initial state (TXID 1).
const PHASES: &[&str] = &[
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 150) INSERT INTO t(v) SELECT randomblob(700) FROM c;",
    "UPDATE t SET v = randomblob(300) WHERE id % 3 = 0;",
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 12) INSERT INTO t(v) SELECT randomblob(20000) FROM c;",
    "DELETE FROM t WHERE id % 2 = 0; VACUUM;",
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 40) INSERT INTO t(v) SELECT zeroblob(900) FROM c;",
];

struct Replica {
    root: PathBuf,
    client: FileClient,
    rt: tokio::runtime::Runtime,
    written: BTreeSet<String>,
}

impl Replica {
    fn put(&mut self, level: u8, h: &LtxHeader, bytes: Vec<u8>) {
        let info = self
            .rt
            .block_on(upload_ltx_file(
                &self.client,
                level,
                h,
                Box::pin(std::io::Cursor::new(bytes)),
            ))
            .unwrap();
        let key = info.key("file");
        let mtime = fs::metadata(self.root.join(&key))
            .unwrap()
            .modified()
            .unwrap();
        let want = UNIX_EPOCH + Duration::from_millis(h.timestamp_ms as u64);
        assert_eq!(mtime, want, "{key}: mtime is not the header timestamp");
        self.written.insert(key);
    }

    fn read(&self, level: u8, min: u64, max: u64) -> Vec<u8> {
        let key = format!("ltx/{level}/{min:016x}-{max:016x}.ltx");
        fs::read(self.root.join(key)).unwrap()
    }

    /// Compact the given files (oldest first) into one at `level`.
    fn compact(&mut self, level: u8, inputs: &[(u8, u64, u64)]) -> LtxHeader {
        let data: Vec<Vec<u8>> = inputs.iter().map(|&(l, a, b)| self.read(l, a, b)).collect();
        let mut decs: Vec<_> = data
            .iter()
            .map(|d| LtxDecoder::new("input", &d[..]).unwrap())
            .collect();
        let (out, _) = compact("compacted", &mut decs, Vec::new()).unwrap();
        let h = LtxDecoder::new("compacted", &out[..])
            .unwrap()
            .header()
            .clone();
        self.put(level, &h, out);
        h
    }
}

/// The L0 file taking `old` to `new`: every page that differs or is new, commit = new size.
fn l0_file(old: &[u8], new: &[u8], ps: u32, txid: u64, ts_ms: i64) -> (LtxHeader, Vec<u8>) {
    let ps_us = ps as usize;
    let commit = (new.len() / ps_us) as u32;
    let h = LtxHeader::new(ps, commit, txid, txid, ts_ms);
    let mut enc = LtxEncoder::new("l0", Vec::new(), &h).unwrap();
    for (i, page) in new.chunks(ps_us).enumerate() {
        if old.get(i * ps_us..(i + 1) * ps_us) != Some(page) {
            enc.write_page(i as u32 + 1, page).unwrap();
        }
    }
    (h, enc.finish().unwrap().0)
}

/// v0.5.17 and our `restore` of `url` with `extra` flags both give exactly `want`.
fn assert_restores(dir: &Path, url: &str, extra: &[&str], want: &[u8], tag: &str) {
    for (who, bin) in [("v0.5.17", litestream_v0517()), ("ours", our_bin())] {
        let out = dir.join(format!("{who}-{tag}.db"));
        let o = restore_url(&bin, url, &out, extra, &[]);
        let what = format!("{who} restore {extra:?}");
        assert_exit(&o, 0, &what);
        assert!(
            fs::read(&out).unwrap() == want,
            "{what}: not the source database"
        );
        assert_integrity_ok(&out, &what);
    }
}

/// v0.5.17's listing of the replica at `url`, as keys.
fn v0517_keys(url: &str) -> BTreeSet<String> {
    parse_ltx_json(&run_bin(
        &litestream_v0517(),
        ["ltx", "-level", "all", "-json", url],
    ))
    .into_iter()
    .map(|l| format!("ltx/{}/{}-{}.ltx", l.level, l.min, l.max))
    .collect()
}

fn new_replica(root: &Path) -> Replica {
    Replica {
        client: FileClient::new(root),
        root: root.to_path_buf(),
        rt: tokio::runtime::Runtime::new().unwrap(),
        written: BTreeSet::new(),
    }
}

#[test]
fn v0517_restores_and_lists_a_replica_we_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("src.db");
    create_db(&db);
    exec(&db, "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 200) INSERT INTO t(v) SELECT randomblob(500) FROM c;");
    let root = dir.path().join("replica");
    let mut r = new_replica(&root);
    let base_ms = (SystemTime::now() - Duration::from_secs(3600))
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let ts = |txid: u64| base_ms + txid as i64 * 10_000;
    let (s1, ps) = checkpointed(&db);
    let mut states = vec![s1.clone()];
    let h1 = LtxHeader::new(ps, (s1.len() / ps as usize) as u32, 1, 1, ts(1));
    let (snap, _) = write_snapshot("snapshot", &s1[..], &h1, Vec::new()).unwrap();
    // v0.5 writes TXID 1 both as the first L0 file and as the first snapshot.
    r.put(0, &h1, snap.clone());
    r.put(9, &h1, snap);
    for (i, sql) in PHASES.iter().enumerate() {
        exec(&db, sql);
        let (next, _) = checkpointed(&db);
        let txid = i as u64 + 2;
        let (h, bytes) = l0_file(states.last().unwrap(), &next, ps, txid, ts(txid));
        r.put(0, &h, bytes);
        states.push(next);
    }
    let last = states.len() as u64;
    assert!(
        states[4].len() < states[3].len(),
        "VACUUM did not shrink the database"
    );
    let l1 = r.compact(1, &[(0, 2, 2), (0, 3, 3)]);
    assert_eq!((l1.min_txid, l1.max_txid, l1.timestamp_ms), (2, 3, ts(3)));
    r.compact(1, &[(0, 4, 4), (0, 5, 5)]);
    let l9 = r.compact(9, &[(9, 1, 1), (1, 2, 3), (1, 4, 5)]);
    assert_eq!(
        (
            l9.min_txid,
            l9.max_txid,
            l9.timestamp_ms,
            l9.commit as usize
        ),
        (1, 5, ts(5), states[4].len() / ps as usize)
    );

    let url = file_url(&root);
    let check = |extra: &[&str], want: &[u8], tag: &str| {
        assert_restores(dir.path(), &url, extra, want, tag)
    };
    check(&[], &states[last as usize - 1], "latest");
    for txid in 1..=last {
        let t = format!("{txid:016x}");
        check(
            &["-txid", &t],
            &states[txid as usize - 1],
            &format!("txid-{txid}"),
        );
    }
    let mid = UNIX_EPOCH + Duration::from_millis((ts(2) + 5_000) as u64);
    check(
        &["-timestamp", &rfc3339_nanos(mid)],
        &states[1],
        "timestamp",
    );

    let listed = v0517_keys(&url);
    assert_eq!(listed, r.written, "v0.5.17 lists other files than we wrote");
}

/// The database `db` (with its `-wal`) as it would be after a checkpoint, without touching it:
/// a copy is checkpointed.
fn checkpointed_copy(db: &Path, scratch: &Path) -> Vec<u8> {
    let _ = fs::remove_dir_all(scratch);
    fs::create_dir_all(scratch).unwrap();
    let copy = scratch.join("copy.db");
    fs::copy(db, &copy).unwrap();
    fs::copy(wal_path(db), wal_path(&copy)).unwrap();
    checkpointed(&copy).0
}

fn wal_path(db: &Path) -> PathBuf {
    PathBuf::from(format!("{}-wal", db.display()))
}

#[test]
fn l0_files_cut_from_the_real_wal_restore_with_v0517() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("src.db");
    create_db(&db);
    // One connection for the whole test: no automatic checkpoint, no checkpoint on close.
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
    conn.execute_batch(PHASES[0]).unwrap();
    let (s1, ps) = checkpointed(&db);
    let root = dir.path().join("replica");
    let mut r = new_replica(&root);
    let ts = |txid: u64| 1_790_000_000_000 + txid as i64 * 1_000;
    let h1 = LtxHeader::new(ps, (s1.len() / ps as usize) as u32, 1, 1, ts(1));
    let (snap, _) = write_snapshot("snapshot", &s1[..], &h1, Vec::new()).unwrap();
    r.put(9, &h1, snap);
    let mut states = vec![s1];
    let mut wal_end = 0u64;
    for (i, sql) in PHASES[1..].iter().enumerate() {
        conn.execute_batch(sql).unwrap();
        let txid = i as u64 + 2;
        let size = fs::metadata(wal_path(&db)).unwrap().len();
        let start = wal_end.max(32);
        let wal = fs::File::open(wal_path(&db)).unwrap();
        let (bytes, h, _) =
            write_wal_range("l0", wal, start, size - start, txid, ts(txid), Vec::new()).unwrap();
        assert_eq!((h.wal_offset, h.wal_size), (start, size - start));
        assert_ne!((h.wal_salt1, h.wal_salt2), (0, 0));
        r.put(0, &h, bytes);
        wal_end = size;
        states.push(checkpointed_copy(&db, &dir.path().join("scratch")));
    }
    drop(conn);
    let url = file_url(&root);
    let last = states.len();
    assert_restores(dir.path(), &url, &[], &states[last - 1], "latest");
    for txid in 1..=last {
        let t = format!("{txid:016x}");
        assert_restores(dir.path(), &url, &["-txid", &t], &states[txid - 1], &t);
    }
    assert_eq!(v0517_keys(&url), r.written);
}
