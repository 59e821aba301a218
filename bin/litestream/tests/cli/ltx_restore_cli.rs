//! Restoring Litestream v0.5 (LTX) replicas written by the real v0.5.17 on a `file://`
//! replica: byte-identical to v0.5.17's own restore (latest, `-txid`, `-timestamp`), the
//! healthcheck on an LTX-only replica, both upgrade orders between v0.3.13 and v0.5.17 on one
//! path, and damaged replicas (each an error naming the object, exit 1, nothing written).
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use crate::common::ltx::*;
use crate::common::scenarios::{assert_healthcheck_restore, Case};
use crate::common::*;

/// The replica the real v0.5.17 wrote once for the tests of this file (in cargo's
/// `target/tmp`, replaced on every run: a static is never dropped, so a temp dir would stay).
struct Shared {
    db: PathBuf,
    replica: PathBuf,
    marks: Vec<SystemTime>,
}

fn shared() -> &'static Shared {
    static S: OnceLock<Shared> = OnceLock::new();
    S.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ltx_restore_cli-shared");
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let db = dir.join("src.db");
        let replica = dir.join("replica");
        let cfg = dir.join("v0517.yml");
        let yaml = format!("url: {}", file_url(&replica));
        fs::write(&cfg, v0517_config(&db, &yaml)).unwrap();
        let marks = v0517_workload(&db, &cfg, &dir.join("replicate.log"));
        Shared { db, replica, marks }
    })
}

fn restore_file(replica: &Path) -> impl Fn(&Path, &Path, &[&str]) -> Output + '_ {
    move |bin, out, extra| restore_url(bin, &file_url(replica), out, extra, &[])
}

fn v0517_listing(replica: &Path) -> Vec<Listed> {
    let out = run_bin(
        &litestream_v0517(),
        ["ltx", "-level", "all", "-json", &file_url(replica)],
    );
    parse_ltx_json(&out)
}

/// v0.5.17's plan for a plain restore (its `restore -dry-run -json`), as replica keys.
fn v0517_plan(replica: &Path) -> Vec<String> {
    v0517_plan_with(replica, &[]).expect("v0.5.17 restore -dry-run failed")
}

/// v0.5.17's plan with `extra` flags, as replica keys; `None` when it has none.
fn v0517_plan_with(replica: &Path, extra: &[&str]) -> Option<Vec<String>> {
    let url = file_url(replica);
    let mut args = vec!["restore", "-dry-run", "-json", "-o", "/nonexistent/x.db"];
    args.extend_from_slice(extra);
    args.push(&url);
    let out = run_bin(&litestream_v0517(), args);
    if !out.status.success() {
        return None;
    }
    Some(
        parse_ltx_json(&out)
            .into_iter()
            .map(|l| format!("ltx/{}/{}-{}.ltx", l.level, l.min, l.max))
            .collect(),
    )
}

#[test]
fn restores_match_v0517_latest_txid_and_timestamp() {
    let s = shared();
    let work = tempfile::tempdir().unwrap();
    let listing = v0517_listing(&s.replica);
    let restore = restore_file(&s.replica);
    let ours = assert_ltx_interop(work.path(), &restore, &listing, &s.marks);
    assert_eq!(all_rows(&ours), all_rows(&s.db), "latest restore vs source");
}

#[test]
fn txid_flag_needs_sixteen_hex_digits_and_excludes_v03_flags() {
    let s = shared();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("x.db");
    let url = file_url(&s.replica);
    for (extra, needle) in [
        (&["-txid", "2"][..], "invalid txid format"),
        (&["-txid", "000000000000000g"][..], "invalid txid format"),
        (
            &[
                "-txid",
                "0000000000000002",
                "-generation",
                "0123456789abcdef",
            ][..],
            "-txid",
        ),
        (
            &[
                "-txid",
                "0000000000000002",
                "-timestamp",
                "2026-01-01T00:00:00Z",
            ][..],
            "TXID & timestamp",
        ),
        (&["-index", "00000001"][..], "holds only LTX"),
    ] {
        let o = restore_url(&our_bin(), &url, &out, extra, &[]);
        assert_fails_naming(&o, &out, needle, &format!("{extra:?}"));
    }
    // A TXID beyond every file: the same words as v0.5.17, exit 1, nothing written.
    let beyond = ["-txid", "7fffffffffffffff"];
    for bin in [our_bin(), litestream_v0517()] {
        let o = restore_url(&bin, &url, &out, &beyond, &[]);
        let what = format!("{} {beyond:?}", bin.display());
        assert_fails_naming(&o, &out, "no matching backup files available", &what);
    }
}

#[test]
fn healthcheck_restores_an_ltx_only_replica() {
    let s = shared();
    let case = Case {
        dir: tempfile::tempdir().unwrap(),
        db: s.db.clone(),
        replica: (),
    };
    let empty = case.path("empty-replica");
    let url = file_url(&s.replica);
    let ours = our_bin();
    assert_healthcheck_restore(
        &case,
        &|out| restore_url(&ours, &url, out, HEALTHCHECK, &[]),
        &|out| restore_url(&ours, &file_url(&empty), out, HEALTHCHECK, &[]),
        None,
        "ltx-only, URL",
    );
}

/// A fresh copy of the shared replica.
fn copy_replica(work: &Path, tag: &str) -> PathBuf {
    let r = work.join(format!("replica-{tag}"));
    copy_tree(&shared().replica, &r);
    r
}

/// Delete every L9 snapshot of the replica at `r` but the oldest.
fn keep_oldest_snapshot(r: &Path) {
    let mut snaps: Vec<PathBuf> = fs::read_dir(r.join("ltx/9"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    snaps.sort();
    for p in &snaps[1..] {
        fs::remove_file(p).unwrap();
    }
}

fn flip(path: &Path, at: impl Fn(usize) -> usize) {
    let mut b = fs::read(path).unwrap();
    let i = at(b.len());
    b[i] ^= 0x04;
    fs::write(path, b).unwrap();
}

/// The first file of our plan for a plain restore: of the files from TXID 1 (full
/// snapshots, any level), the one reaching furthest; ties to the higher level.
fn our_base(listing: &[Listed]) -> String {
    let l = listing
        .iter()
        .filter(|l| l.min == "0000000000000001")
        .max_by_key(|l| (l.max.clone(), l.level))
        .unwrap();
    format!("ltx/{}/{}-{}.ltx", l.level, l.min, l.max)
}

/// Copy of the shared replica with every file's mtime kept (file:// `-timestamp` restores
/// go by mtimes), all but its oldest L9 snapshot removed.
fn copy_keeping_mtimes(work: &Path, tag: &str) -> PathBuf {
    let r = copy_replica(work, tag);
    for rel in list_files(&r) {
        let mtime = fs::metadata(shared().replica.join(&rel))
            .unwrap()
            .modified()
            .unwrap();
        let f = fs::OpenOptions::new()
            .write(true)
            .open(r.join(&rel))
            .unwrap();
        f.set_modified(mtime).unwrap();
    }
    keep_oldest_snapshot(&r);
    r
}

fn txid_of(hex: &str) -> u64 {
    u64::from_str_radix(hex, 16).unwrap()
}

/// Compact the replica files `keys` (oldest first) with our compaction (the one our engine
/// writes L1+ files with) into `ltx/<level>/<min>-<max>.ltx`, with the newest input's mtime
/// as a compacting writer would give it; returns the new key.
fn compact_into(r: &Path, keys: &[String], level: u8) -> String {
    use litestream_core::ltx::{compact::compact, decoder::LtxDecoder, format_txid};
    use std::io::{BufReader, BufWriter, Write};
    // A plan may hold files that start at or before an earlier one (v0.5.17 applies a level
    // file from TXID 1 on top of the snapshot): such a file supersedes what it overlaps.
    let mut chain: Vec<&String> = Vec::new();
    for k in keys {
        let min = |k: &str| txid_of(&k[k.rfind('/').unwrap() + 1..][..16]);
        while chain.last().is_some_and(|p| min(p) >= min(k)) {
            chain.pop();
        }
        chain.push(k);
    }
    let mut inputs: Vec<LtxDecoder<BufReader<fs::File>>> = chain
        .iter()
        .map(|k| LtxDecoder::new(*k, BufReader::new(fs::File::open(r.join(k)).unwrap())))
        .collect::<Result<_, _>>()
        .unwrap();
    let (min, max) = (
        inputs[0].header().min_txid,
        inputs.last().unwrap().header().max_txid,
    );
    let key = format!("ltx/{level}/{}-{}.ltx", format_txid(min), format_txid(max));
    fs::create_dir_all(r.join(format!("ltx/{level}"))).unwrap();
    let out = BufWriter::new(fs::File::create(r.join(&key)).unwrap());
    let (mut out, _) = compact(&key, &mut inputs, out).unwrap();
    out.flush().unwrap();
    let file = out.into_inner().unwrap();
    let newest = fs::metadata(r.join(keys.last().unwrap()))
        .unwrap()
        .modified()
        .unwrap();
    file.set_modified(newest).unwrap();
    key
}

/// The replica shape where a level file starts at TXID 1 and reaches past the only L9
/// snapshot (what v0.5.17 writes when its first compactions still see the L0 file of TXID 1,
/// as in `benches/ltx_restore.sh`): v0.5.17's plan reads the snapshot and then that level
/// file, which holds the whole database again; ours starts from the level file. The output
/// is the same at the latest point, at `-txid` and at `-timestamp` targets, and ours restores
/// the latest point with the snapshot damaged, so it does not read it (it did before the
/// plan change).
///
/// Whether v0.5.17 itself writes this shape depends on its timing (three CI attempts in a row
/// gave L9 1-2 with level files from TXID 3), so the shape is built here, deterministically,
/// from the shared replica: keep only the oldest snapshot (TXID 1 to S), take v0.5.17's own
/// `-txid M` plan (the snapshot and level files up to M, for an M reaching at least as far as
/// every file that could follow the snapshot) and compact it with our compaction into one L3
/// file from TXID 1 to M, stamped with its newest input's mtime. Both tools then restore from
/// real v0.5.17 files plus that one.
#[test]
fn a_level_file_from_txid_1_past_the_snapshot_is_the_base() {
    let work = tempfile::tempdir().unwrap();
    let r = copy_keeping_mtimes(work.path(), "l3-from-1");
    let listing = v0517_listing(&r);
    let snap = listing.iter().find(|l| l.level == 9).unwrap().clone();
    assert_eq!(snap.min, "0000000000000001", "snapshot {snap:?}");
    // M must reach at least as far as any file v0.5.17 could take right after the snapshot,
    // so that v0.5.17's plan takes the new file second; of those TXIDs, one in the middle
    // whose -txid plan v0.5.17 can make.
    let frontier = listing
        .iter()
        .filter(|l| l.level != 9 && txid_of(&l.min) <= txid_of(&snap.max) + 1)
        .map(|l| txid_of(&l.max))
        .max()
        .unwrap_or(0);
    let mut maxes: Vec<u64> = listing
        .iter()
        .map(|l| txid_of(&l.max))
        .filter(|&m| m > txid_of(&snap.max) && m >= frontier)
        .collect();
    maxes.sort();
    maxes.dedup();
    assert!(!maxes.is_empty(), "nothing past the snapshot: {listing:?}");
    let mid = maxes.len() / 2;
    let mut order: Vec<u64> = maxes[mid..].to_vec();
    order.extend(maxes[..mid].iter().rev());
    let (m, inputs) = order
        .iter()
        .find_map(|&m| {
            let t = litestream_core::ltx::format_txid(m);
            let plan = v0517_plan_with(&r, &["-txid", &t])?;
            let ends = plan
                .last()
                .is_some_and(|k| k.ends_with(&format!("-{t}.ltx")));
            (ends && plan[0].starts_with("ltx/9/")).then_some((m, plan))
        })
        .unwrap_or_else(|| panic!("v0.5.17 plans no -txid in {maxes:x?}"));
    let key = compact_into(&r, &inputs, 3);
    let plan = v0517_plan(&r);
    let listing = v0517_listing(&r);
    assert_eq!(our_base(&listing), key, "our base");
    assert!(
        plan[0].starts_with("ltx/9/") && plan.get(1) == Some(&key),
        "v0.5.17's plan should read the snapshot, then {key}: {plan:?}"
    );
    eprintln!("M = {m:x}: v0.5.17's plan {plan:?}, ours starts at {key} (from {inputs:?})");

    let restore = restore_file(&r);
    let ours = assert_ltx_interop(work.path(), &restore, &listing, &shared().marks);
    assert_eq!(
        all_rows(&ours),
        all_rows(&shared().db),
        "latest restore vs source"
    );
    flip(&r.join(&plan[0]), |_| 100 + 6 + 4 + 40);
    let out = work.path().join("ours-damaged-snapshot.db");
    let o = restore_url(&our_bin(), &file_url(&r), &out, &[], &[]);
    assert_exit(&o, 0, "latest restore with the unread snapshot damaged");
    assert_files_equal(&ours, &out, "damaged snapshot");
    // The damage is real: v0.5.17, which reads the snapshot, fails on it.
    let theirs = work.path().join("v0517-damaged-snapshot.db");
    let o = restore_url(&litestream_v0517(), &file_url(&r), &theirs, &[], &[]);
    assert!(
        !o.status.success(),
        "v0.5.17 restored past a damaged snapshot"
    );
}

#[test]
fn damaged_files_are_errors_naming_the_object() {
    let s = shared();
    let work = tempfile::tempdir().unwrap();
    let plan = v0517_plan(&s.replica);
    let first = our_base(&v0517_listing(&s.replica));
    let last = plan.last().unwrap().clone();
    type Damage = Box<dyn Fn(&Path)>;
    let cases: Vec<(&str, String, Damage)> = vec![
        (
            "page",
            first.clone(),
            Box::new(|p| flip(p, |_| 100 + 6 + 4 + 40)),
        ),
        (
            "index",
            first.clone(),
            Box::new(|p| flip(p, |n| n - 16 - 8 - 2)),
        ),
        ("header", first.clone(), Box::new(|p| flip(p, |_| 37))),
        ("trailer", first.clone(), Box::new(|p| flip(p, |n| n - 1))),
        (
            "trailer-post",
            last.clone(),
            Box::new(|p| flip(p, |n| n - 12)),
        ),
        (
            "truncated",
            first.clone(),
            Box::new(|p| {
                let b = fs::read(p).unwrap();
                fs::write(p, &b[..b.len() / 2]).unwrap();
            }),
        ),
        (
            "truncated-to-header",
            last.clone(),
            Box::new(|p| {
                let b = fs::read(p).unwrap();
                fs::write(p, &b[..50]).unwrap();
            }),
        ),
    ];
    for (tag, object, damage) in cases {
        let r = copy_replica(work.path(), tag);
        damage(&r.join(&object));
        let out = work.path().join(format!("out-{tag}.db"));
        let o = restore_url(&our_bin(), &file_url(&r), &out, &[], &[]);
        assert_fails_naming(&o, &out, &object, tag);
    }
}

#[test]
fn a_missing_file_mid_range_is_an_error() {
    let s = shared();
    let work = tempfile::tempdir().unwrap();
    let listing = v0517_listing(&s.replica);
    let mut maxes: Vec<u64> = listing
        .iter()
        .map(|l| u64::from_str_radix(&l.max, 16).unwrap())
        .collect();
    maxes.sort();
    maxes.dedup();
    let t = maxes[maxes.len() / 2];
    assert!(t > 1 && t < *maxes.last().unwrap(), "{maxes:?}");
    let r = copy_replica(work.path(), "gap");
    for l in &listing {
        let (min, max) = (
            u64::from_str_radix(&l.min, 16).unwrap(),
            u64::from_str_radix(&l.max, 16).unwrap(),
        );
        if min <= t && t <= max && !(l.level == 9 && max < t) {
            fs::remove_file(r.join(format!("ltx/{}/{}-{}.ltx", l.level, l.min, l.max))).unwrap();
        }
    }
    let out = work.path().join("out-gap.db");
    let o = restore_url(&our_bin(), &file_url(&r), &out, &[], &[]);
    assert_fails_naming(&o, &out, "non-contiguous ltx files", "missing mid-range");
    // v0.5.17 refuses it too.
    let theirs = work.path().join("theirs-gap.db");
    let o = restore_url(&litestream_v0517(), &file_url(&r), &theirs, &[], &[]);
    assert!(!o.status.success(), "v0.5.17 restored a replica with a gap");
}

#[test]
fn a_file_with_another_page_size_is_an_error() {
    let work = tempfile::tempdir().unwrap();
    // A second replica, of a database with 1024-byte pages.
    let db = work.path().join("small.db");
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.pragma_update(None, "page_size", 1024).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)", [])
            .unwrap();
    }
    insert(&db, 20, 500);
    let other = work.path().join("replica-1024");
    let cfg = work.path().join("small.yml");
    fs::write(
        &cfg,
        v0517_config(&db, &format!("url: {}", file_url(&other))),
    )
    .unwrap();
    let log = work.path().join("small.log");
    let child = spawn_replicate(&litestream_v0517(), &cfg, &log);
    let l9 = other.join("ltx/9");
    let snapshot = || -> Option<PathBuf> {
        let e = fs::read_dir(&l9)
            .ok()?
            .filter_map(|e| e.ok())
            .find(|e| e.file_name().to_string_lossy().ends_with(".ltx"))?;
        Some(e.path())
    };
    wait_for(
        Duration::from_secs(30),
        "v0.5.17's first snapshot",
        || fs::read_to_string(&log).unwrap_or_default(),
        || snapshot().is_some(),
    );
    std::thread::sleep(Duration::from_millis(500));
    sigint_and_wait(child, &log);
    let snap = snapshot().unwrap();

    // Keep only the oldest snapshot, so that the plan merges several files.
    let r = copy_replica(work.path(), "pagesize");
    keep_oldest_snapshot(&r);
    let plan = v0517_plan(&r);
    assert!(plan.len() >= 2, "{plan:?}");
    let target = plan.last().unwrap().clone();
    fs::copy(&snap, r.join(&target)).unwrap();
    let out = work.path().join("out-pagesize.db");
    let o = restore_url(&our_bin(), &file_url(&r), &out, &[], &[]);
    assert_fails_naming(&o, &out, &target, "other page size");
    assert!(
        output_text(&o).contains("page size 1024"),
        "{}",
        describe(&o)
    );
}

fn v0313_config(db: &Path, replica: &Path) -> String {
    format!(
        "dbs:\n  - path: {}\n    replicas:\n      - url: {}\n",
        db.display(),
        file_url(replica)
    )
}

/// Run `bin replicate` on `db` for ~5 s with `rows` rows written while it runs.
fn replicate_some(bin: &Path, cfg: &Path, db: &Path, log: &Path, rows: usize) {
    let child = spawn_replicate(bin, cfg, log);
    std::thread::sleep(Duration::from_secs(2));
    insert(db, rows, 700);
    std::thread::sleep(Duration::from_secs(3));
    sigint_and_wait(child, log);
}

/// One database replicated to one path by two Litestream versions in turn: 25 rows, then
/// `first` replicates while 10 more are written, then `second` while 15 more are written.
fn two_writers(v0517_first: bool) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let work = tempfile::tempdir().unwrap();
    let (db, replica) = (work.path().join("app.db"), work.path().join("replica"));
    let v3 = work.path().join("v3.yml");
    let v5 = work.path().join("v5.yml");
    fs::write(&v3, v0313_config(&db, &replica)).unwrap();
    let yaml = format!("url: {}", file_url(&replica));
    fs::write(&v5, v0517_config(&db, &yaml)).unwrap();
    create_db(&db);
    insert(&db, 25, 700);
    let mut runs = [(litestream_v0313(), v3), (litestream_v0517(), v5)];
    if v0517_first {
        runs.reverse();
    }
    for ((bin, cfg), (log, rows)) in runs.iter().zip([("a.log", 10), ("b.log", 15)]) {
        replicate_some(bin, cfg, &db, &work.path().join(log), rows);
    }
    assert!(replica.join("generations").is_dir() && replica.join("ltx").is_dir());
    (work, db, replica)
}

#[test]
fn upgrade_v0313_then_v0517_restores_the_newest() {
    let (work, db, replica) = two_writers(false);
    let restore = restore_file(&replica);
    assert!(assert_same_as_v0517(work.path(), &restore, &[], "upgrade"));
    let ours = work.path().join("ours-upgrade.db");
    assert_eq!(count_rows(&ours), 50);
    assert_eq!(all_rows(&ours), all_rows(&db));
}

#[test]
fn rollback_v0517_then_v0313_restores_the_newest() {
    let (work, db, replica) = two_writers(true);
    let url = file_url(&replica);
    let theirs = work.path().join("v0313.db");
    let ours = work.path().join("ours.db");
    assert_exit(
        &restore_url(&litestream_v0313(), &url, &theirs, &[], &[]),
        0,
        "v0.3.13 restore",
    );
    let o = restore_url(&our_bin(), &url, &ours, &[], &[]);
    assert_exit(&o, 0, "our restore");
    assert!(
        output_text(&o).contains("format=v0.3"),
        "format choice not logged: {}",
        describe(&o)
    );
    assert_files_equal(&theirs, &ours, "rollback restore vs v0.3.13");
    assert_eq!(count_rows(&ours), 50);
    assert_eq!(all_rows(&ours), all_rows(&db));
}

/// The older page encoding (v0.5.0–0.5.15: one LZ4 frame per page): a replica the real
/// v0.5.15 wrote (`fixtures/v0.5.15/make-fixture.sh`) restores byte-identically to v0.5.15's
/// own restores (sha256 recorded in `expected.tsv`), latest and at every TXID it reached.
#[test]
fn v0515_fixture_with_frame_encoded_pages_restores_identically() {
    let fixture = repo_root().join("fixtures/v0.5.15/basic");
    let work = tempfile::tempdir().unwrap();
    let replica = work.path().join("replica");
    copy_tree(&fixture.join("replica"), &replica);
    // Every file stores its pages as LZ4 frames (page flags 0, frame magic after the header).
    for rel in list_files(&replica) {
        let b = fs::read(replica.join(&rel)).unwrap();
        assert_eq!(&b[104..106], &[0, 0], "{rel}: page flags");
        assert_eq!(
            &b[106..110],
            &[0x04, 0x22, 0x4d, 0x18],
            "{rel}: LZ4 frame magic"
        );
    }
    let expected = fs::read_to_string(fixture.join("expected.tsv")).unwrap();
    let mut n = 0;
    for line in expected.lines() {
        let (what, sha) = line.split_once('\t').unwrap();
        let extra: Vec<&str> = match what.strip_prefix("txid ") {
            Some(t) => vec!["-txid", t],
            None => vec![],
        };
        let out = work.path().join(format!("out-{n}.db"));
        let o = restore_url(&our_bin(), &file_url(&replica), &out, &extra, &[]);
        assert_exit(&o, 0, what);
        assert_eq!(sha256(&out), sha, "{what}: differs from v0.5.15's restore");
        assert_integrity_ok(&out, what);
        n += 1;
    }
    assert!(n >= 5, "expected.tsv has {n} entries");
}
