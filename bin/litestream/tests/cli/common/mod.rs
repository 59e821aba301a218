//! Shared helpers for the `litestream` integration tests.
//!
//! * Real Litestream binaries: `LITESTREAM_V0313_BIN` / `LITESTREAM_V0517_BIN` (set by
//!   `scripts/test.sh`; the tests panic when they are missing instead of skipping).
//! * Our binary: `CARGO_BIN_EXE_litestream`, overridable with `LITESTREAM_TEST_OUR_BIN`
//!   (e.g. point it at the real v0.3.13 to self-check the tests' expectations).
//! * Fixtures: `fixtures/v0.3.13/<name>/replica` written by the real v0.3.13, copied to a temp
//!   dir with the recorded mtimes re-applied (the file backend uses mtimes as CreatedAt).
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub mod ltx;
pub mod s3;
pub mod scenarios;

/// Names of the fixtures under `fixtures/v0.3.13/`.
pub const FIXTURES: &[&str] = &[
    "multi-index",
    "multi-generation",
    "page-1024",
    "page-65536",
    "exact-4mib",
    "pitr",
];

/// Repository root (two levels above this crate's manifest dir).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("canonicalize repo root")
}

/// `fixtures/v0.3.13/<name>`.
pub fn fixture_dir(name: &str) -> PathBuf {
    repo_root().join("fixtures").join("v0.3.13").join(name)
}

fn executable_from_env(var: &str) -> PathBuf {
    let hint = "run the tests via `bash scripts/test.sh` (it installs the real Litestream \
                binaries with scripts/install-litestream.sh and exports LITESTREAM_V0313_BIN / \
                LITESTREAM_V0517_BIN), or export the variable yourself";
    let val = match std::env::var_os(var) {
        Some(v) if !v.is_empty() => v,
        _ => panic!("{var} is not set: {hint}"),
    };
    let p = PathBuf::from(val);
    if !is_executable(&p) {
        panic!("{var}={} is not an executable file: {hint}", p.display());
    }
    p
}

/// The value of a test-server variable set by `scripts/test.sh`; panics (a failure, never a
/// skip) naming `need` (e.g. "the abs CLI tests need Azurite") when it is unset or empty.
pub fn test_env(name: &str, need: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{name} is not set: {need}; run scripts/test.sh \
             (or eval \"$(bash scripts/test-servers/start.sh)\")"
        ),
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The real Litestream v0.3.13 binary (panics with instructions if unavailable).
pub fn litestream_v0313() -> PathBuf {
    executable_from_env("LITESTREAM_V0313_BIN")
}

/// The real Litestream v0.5.17 binary (panics with instructions if unavailable).
pub fn litestream_v0517() -> PathBuf {
    executable_from_env("LITESTREAM_V0517_BIN")
}

/// Our `litestream` binary, or `$LITESTREAM_TEST_OUR_BIN` if set (for self-checking the tests
/// against the real v0.3.13: `LITESTREAM_TEST_OUR_BIN=$LITESTREAM_V0313_BIN`).
pub fn our_bin() -> PathBuf {
    if let Some(v) = std::env::var_os("LITESTREAM_TEST_OUR_BIN") {
        if !v.is_empty() {
            let p = PathBuf::from(v);
            assert!(
                is_executable(&p),
                "LITESTREAM_TEST_OUR_BIN={} is not an executable file",
                p.display()
            );
            return p;
        }
    }
    PathBuf::from(env!("CARGO_BIN_EXE_litestream"))
}

/// True when `our_bin()` was overridden (tests of deliberate differences from v0.3.13 are then
/// meaningless and skip themselves with a message).
pub fn our_bin_overridden() -> bool {
    std::env::var_os("LITESTREAM_TEST_OUR_BIN").is_some_and(|v| !v.is_empty())
}

/// When `our_bin()` is overridden, print `skipped: {why}` and return true (the caller returns):
/// for tests of deliberate differences from v0.3.13.
pub fn skip_if_our_bin_overridden(why: &str) -> bool {
    let skip = our_bin_overridden();
    if skip {
        eprintln!("skipped: {why}");
    }
    skip
}

// ------------------------------------------------------------------------------------------
// fixtures
// ------------------------------------------------------------------------------------------

/// Parse `fixtures/v0.3.13/<name>/mtimes.tsv`: relative path under `replica/` -> mtime.
pub fn fixture_mtimes(name: &str) -> BTreeMap<String, SystemTime> {
    let path = fixture_dir(name).join("mtimes.tsv");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let (rel, ts) = line
            .split_once('\t')
            .unwrap_or_else(|| panic!("bad line in {}: {line:?}", path.display()));
        out.insert(rel.to_string(), parse_unix_nanos(ts));
    }
    out
}

/// Parse `SECONDS.NANOS` (nanos 9 digits; a bare integer is seconds).
pub fn parse_unix_nanos(s: &str) -> SystemTime {
    let (secs, frac) = s.split_once('.').unwrap_or((s, "0"));
    let secs: u64 = secs.parse().unwrap_or_else(|_| panic!("bad mtime {s:?}"));
    let mut frac = frac.to_string();
    assert!(frac.len() <= 9, "bad mtime {s:?}");
    while frac.len() < 9 {
        frac.push('0');
    }
    let nanos: u32 = frac.parse().unwrap_or_else(|_| panic!("bad mtime {s:?}"));
    UNIX_EPOCH + Duration::new(secs, nanos)
}

/// Copy `fixtures/v0.3.13/<name>/replica` to `<tempdir>/replica` and re-apply the recorded
/// mtimes (the file replica's CreatedAt). Panics if the fixture and mtimes.tsv disagree.
pub fn copy_fixture(name: &str) -> tempfile::TempDir {
    let src = fixture_dir(name).join("replica");
    assert!(
        src.is_dir(),
        "fixture {} missing (regenerate with fixtures/make-fixtures.sh)",
        src.display()
    );
    let tmp = tempfile::Builder::new()
        .prefix(&format!("fixture-{name}-"))
        .tempdir()
        .expect("create temp dir");
    let dst = tmp.path().join("replica");
    copy_tree(&src, &dst);
    let mtimes = fixture_mtimes(name);
    let files = list_files(&dst);
    let listed: Vec<&String> = mtimes.keys().collect();
    let found: Vec<&String> = files.iter().collect();
    assert_eq!(
        listed, found,
        "fixture {name}: mtimes.tsv and replica/ list different files"
    );
    for (rel, t) in &mtimes {
        let p = dst.join(rel);
        let f = fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap_or_else(|e| panic!("open {}: {e}", p.display()));
        f.set_modified(*t)
            .unwrap_or_else(|e| panic!("set mtime of {}: {e}", p.display()));
    }
    tmp
}

/// The replica dir inside a copied fixture.
pub fn replica_path(fixture: &tempfile::TempDir) -> PathBuf {
    fixture.path().join("replica")
}

/// `file://` URL for an absolute path.
pub fn file_url(path: &Path) -> String {
    assert!(path.is_absolute(), "{} is not absolute", path.display());
    format!("file://{}", path.display())
}

/// Copy the directory tree `src` to `dst` (file contents only, not mtimes).
pub fn copy_tree(src: &Path, dst: &Path) {
    fs::create_dir_all(dst).unwrap_or_else(|e| panic!("mkdir {}: {e}", dst.display()));
    for entry in fs::read_dir(src).unwrap_or_else(|e| panic!("read_dir {}: {e}", src.display())) {
        let entry = entry.unwrap();
        let ty = entry.file_type().unwrap();
        let to = dst.join(entry.file_name());
        if ty.is_dir() {
            copy_tree(&entry.path(), &to);
        } else {
            fs::copy(entry.path(), &to)
                .unwrap_or_else(|e| panic!("copy {}: {e}", entry.path().display()));
        }
    }
}

/// All regular files under `root`, as sorted `/`-separated relative paths.
pub fn list_files(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        {
            let entry = entry.unwrap();
            let p = entry.path();
            if entry.file_type().unwrap().is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).unwrap();
                let parts: Vec<_> = rel
                    .iter()
                    .map(|c| c.to_string_lossy().into_owned())
                    .collect();
                out.push(parts.join("/"));
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

/// Generation IDs present in a replica dir (sorted).
pub fn generations(replica: &Path) -> Vec<String> {
    let mut g: Vec<String> = fs::read_dir(replica.join("generations"))
        .expect("read generations dir")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() == 16 && n.bytes().all(|b| b.is_ascii_hexdigit()))
        .collect();
    g.sort();
    g
}

/// WAL indexes with at least one segment in a generation (sorted, deduplicated).
pub fn wal_indexes(replica: &Path, generation: &str) -> Vec<u32> {
    let dir = replica.join("generations").join(generation).join("wal");
    let mut v: Vec<u32> = fs::read_dir(&dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter_map(|n| {
                    let idx = n.strip_suffix(".wal.lz4")?.split_once('_')?.0.to_string();
                    u32::from_str_radix(&idx, 16).ok()
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v.dedup();
    v
}

/// Snapshot indexes of a generation (sorted).
pub fn snapshot_indexes(replica: &Path, generation: &str) -> Vec<u32> {
    let dir = replica
        .join("generations")
        .join(generation)
        .join("snapshots");
    let mut v: Vec<u32> = fs::read_dir(&dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter_map(|n| u32::from_str_radix(n.strip_suffix(".snapshot.lz4")?, 16).ok())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// `fixtures/v0.3.13/<name>/expected.tsv`: (kind, argument) -> sha256 of v0.3.13's restore.
pub fn fixture_expected(name: &str) -> BTreeMap<(String, String), String> {
    let path = fixture_dir(name).join("expected.tsv");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 3, "bad line in {}: {l:?}", path.display());
            ((f[0].to_string(), f[1].to_string()), f[2].to_string())
        })
        .collect()
}

// ------------------------------------------------------------------------------------------
// running commands
// ------------------------------------------------------------------------------------------

/// Run a command with stdin closed, capturing stdout/stderr.
pub fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap_or_else(|e| panic!("failed to spawn {cmd:?}: {e}"))
}

/// Run `bin args...` with stdin closed, capturing stdout/stderr.
pub fn run_bin<I, S>(bin: &Path, args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(bin);
    cmd.args(args);
    // Litestream reads LITESTREAM_CONFIG in config mode; keep URL-mode tests hermetic.
    cmd.env_remove("LITESTREAM_CONFIG");
    run(&mut cmd)
}

/// Human-readable dump of an Output, for assertion messages.
pub fn describe(out: &Output) -> String {
    format!(
        "exit: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// stdout followed by stderr, as text.
pub fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Assert `secret` appears nowhere in `text` (an output or a log).
#[track_caller]
pub fn assert_no_secret(text: &str, secret: &str) {
    assert!(!text.contains(secret), "secret leaked:\n{text}");
}

/// Assert the process exited with `code`.
#[track_caller]
pub fn assert_exit(out: &Output, code: i32, what: &str) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{what}: expected exit code {code}\n{}",
        describe(out)
    );
}

/// The sha256 of a file (`sha256sum`), as lowercase hex.
pub fn sha256(p: &Path) -> String {
    let out = run_bin(Path::new("sha256sum"), [p]);
    assert_exit(&out, 0, "sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Assert two files have identical bytes (reports the size and first differing offset).
#[track_caller]
pub fn assert_files_equal(expected: &Path, actual: &Path, what: &str) {
    let a =
        fs::read(expected).unwrap_or_else(|e| panic!("{what}: read {}: {e}", expected.display()));
    let b = fs::read(actual).unwrap_or_else(|e| panic!("{what}: read {}: {e}", actual.display()));
    if a != b {
        let first = a.iter().zip(b.iter()).position(|(x, y)| x != y);
        panic!(
            "{what}: {} ({} bytes) and {} ({} bytes) differ; first differing byte offset: {:?} \
             (page {:?} at 4096-byte pages)",
            expected.display(),
            a.len(),
            actual.display(),
            b.len(),
            first,
            first.map(|o| o / 4096 + 1)
        );
    }
}

/// `PRAGMA integrity_check` on a *copy* of the database (so the checked file and its
/// directory are left untouched: opening it could create `-wal`/`-shm` files).
pub fn integrity_check(db: &Path) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = dir.path().join("check.db");
    fs::copy(db, &copy).unwrap_or_else(|e| panic!("copy {}: {e}", db.display()));
    let conn = rusqlite::Connection::open(&copy).expect("open db copy");
    let mut stmt = conn.prepare("PRAGMA integrity_check").expect("prepare");
    let rows: Vec<String> = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .expect("integrity_check")
        .map(|r| r.expect("row"))
        .collect();
    rows.join("\n")
}

/// Assert `PRAGMA integrity_check` returns `ok`.
#[track_caller]
pub fn assert_integrity_ok(db: &Path, what: &str) {
    let res = integrity_check(db);
    assert_eq!(res, "ok", "{what}: integrity_check of {}", db.display());
}

/// Files next to `db` whose names start with `<db name>-` or `<db name>.` (e.g. `x.db-wal`,
/// `x.db-shm`, `x.db.tmp`, `x.db.tmp-wal`).
pub fn leftovers(db: &Path) -> Vec<String> {
    let name = db.file_name().unwrap().to_string_lossy().into_owned();
    let dir = db.parent().unwrap();
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| {
            n != &name && (n.starts_with(&format!("{name}-")) || n.starts_with(&format!("{name}.")))
        })
        .collect();
    v.sort();
    v
}

/// Assert no `-wal`, `-shm`, `.tmp*` files were left next to `db`.
#[track_caller]
pub fn assert_no_leftovers(db: &Path, what: &str) {
    let l = leftovers(db);
    assert!(
        l.is_empty(),
        "{what}: files left next to {}: {l:?}",
        db.display()
    );
}

// ------------------------------------------------------------------------------------------
// time
// ------------------------------------------------------------------------------------------

/// RFC 3339 UTC with 9 fractional digits, e.g. `2026-11-26T12:08:34.830672073Z`
/// (accepted by Go's `time.Parse(time.RFC3339, …)`).
pub fn rfc3339_nanos(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).expect("time before 1970");
    let secs = d.as_secs() as i64;
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, dd) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{dd:02}T{:02}:{:02}:{:02}.{:09}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60,
        d.subsec_nanos()
    )
}

/// RFC 3339 UTC, whole seconds (Go's `time.RFC3339` format of a UTC time).
pub fn rfc3339_secs(t: SystemTime) -> String {
    let s = rfc3339_nanos(t);
    format!("{}Z", &s[..19])
}

// Howard Hinnant's days -> civil date algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Midpoint of two instants.
pub fn midpoint(a: SystemTime, b: SystemTime) -> SystemTime {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    lo + hi.duration_since(lo).unwrap() / 2
}

// ------------------------------------------------------------------------------------------
// replicate workloads (shared by the backend CLI tests)
// ------------------------------------------------------------------------------------------

/// Create `db` in WAL mode with the workloads' table `t(id INTEGER PRIMARY KEY, v BLOB)`.
pub fn create_db(db: &Path) {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)", [])
        .unwrap();
}

/// Every row of table `t` as (id, v), in id order.
pub fn all_rows(db: &Path) -> Vec<(i64, Vec<u8>)> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn.prepare("SELECT id, v FROM t ORDER BY id").unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

/// Rows in table `t` of `db`.
pub fn count_rows(db: &Path) -> i64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap()
}

/// Insert `rows` rows of `size` pseudo-random (incompressible) bytes.
pub fn insert(db: &Path, rows: usize, size: usize) {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    let mut seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    for _ in 0..rows {
        conn.execute(
            "INSERT INTO t(v) VALUES (?1)",
            [random_blob(&mut seed, size)],
        )
        .unwrap();
    }
}

/// `size` pseudo-random (incompressible) bytes from the xorshift state `seed` (never 0).
pub fn random_blob(seed: &mut u64, size: usize) -> Vec<u8> {
    (0..size)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            *seed as u8
        })
        .collect()
}

/// Start `bin replicate -config cfg` with stdout and stderr going to `log`.
pub fn spawn_replicate(bin: &Path, cfg: &Path, log: &Path) -> Child {
    spawn_replicate_with(bin, cfg, log, &[])
}

/// [`spawn_replicate`] with extra environment variables (e.g. `LITESTREAM_LOG=debug`).
pub fn spawn_replicate_with(bin: &Path, cfg: &Path, log: &Path, envs: &[(&str, &str)]) -> Child {
    let log = std::fs::File::create(log).unwrap();
    Command::new(bin)
        .args(["replicate", "-config"])
        .arg(cfg)
        .env_remove("LITESTREAM_CONFIG")
        .env_remove("AWS_CA_BUNDLE")
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// SIGINT a `replicate` child and wait (60 s at most) for a successful exit.
pub fn sigint_and_wait(child: Child, log: &Path) {
    signal_and_wait(child, "INT", log);
}

/// Send `SIG<signal>` (e.g. `"INT"`, `"TERM"`) to a `replicate` child and wait (60 s at most)
/// for a successful exit; a failure or a timeout panics with the log.
pub fn signal_and_wait(mut child: Child, signal: &str, log: &Path) {
    match litestream_test_servers::signal_and_wait(&mut child, signal, Duration::from_secs(60)) {
        Some(st) => assert!(
            st.success(),
            "replicate exited with {st}; log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        ),
        None => {
            let _ = child.kill();
            panic!(
                "replicate did not stop after SIG{signal}; log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
    }
}

/// Run `bin replicate -config cfg` for about 5 s with one small write to `db` in between, stop
/// it with SIGINT whatever state it is in (it may be failing on purpose, e.g. with bad
/// credentials), and return its log.
pub fn replicate_briefly(bin: &Path, cfg: &Path, db: &Path, log: &Path) -> String {
    let mut child = spawn_replicate(bin, cfg, log);
    std::thread::sleep(Duration::from_secs(3));
    insert(db, 10, 100);
    std::thread::sleep(Duration::from_secs(2));
    let _ = Command::new("kill")
        .arg("-INT")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
    std::fs::read_to_string(log).unwrap()
}

/// Wait until `cond` holds, panicking with `what` (and `dump`) after `timeout`.
pub fn wait_for(
    timeout: Duration,
    what: &str,
    dump: impl Fn() -> String,
    mut cond: impl FnMut() -> bool,
) {
    let start = std::time::Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}\n{}",
            dump()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Wait (at most `timeout`) until the file `log` contains `needle`; panic with the log if not.
pub fn wait_for_log(log: &Path, needle: &str, timeout: Duration) {
    let text = || std::fs::read_to_string(log).unwrap_or_default();
    wait_for(
        timeout,
        &format!("{needle:?} in {}", log.display()),
        text,
        || text().contains(needle),
    );
}

/// The healthcheck flags of the compose deployments.
pub const HEALTHCHECK: &[&str] = &["-if-db-not-exists", "-if-replica-exists"];

/// The backend CLI tests' write workload around `replicate -config cfg` on an existing `db`:
/// ~10 MiB before replication (first snapshot > 8 MiB), then three rounds of > 1000 pages
/// (each ends in a checkpoint, so a new WAL index) and small commits, then SIGINT.
pub fn replicate_workload(db: &Path, bin: &Path, cfg: &Path, log: &Path) {
    insert(db, 80, 128 << 10);
    let child = spawn_replicate(bin, cfg, log);
    std::thread::sleep(Duration::from_secs(3));
    for _ in 0..3 {
        insert(db, 40, 128 << 10);
        std::thread::sleep(Duration::from_millis(2500));
    }
    for _ in 0..20 {
        insert(db, 5, 100);
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(3));
    sigint_and_wait(child, log);
}

/// `bin restore EXTRA -config cfg -o out db`.
pub fn restore_config(bin: &Path, cfg: &Path, db: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut cmd = Command::new(bin);
    cmd.arg("restore")
        .args(extra)
        .arg("-config")
        .arg(cfg)
        .arg("-o")
        .arg(out)
        .arg(db)
        .env_remove("LITESTREAM_CONFIG");
    run(&mut cmd)
}

/// `bin restore EXTRA -o out url` (URL mode) without `LITESTREAM_CONFIG`; each `(name, value)`
/// of `envs` sets the variable, or removes it when the value is `None`.
pub fn restore_url(
    bin: &Path,
    url: &str,
    out: &Path,
    extra: &[&str],
    envs: &[(&str, Option<&str>)],
) -> Output {
    let mut cmd = Command::new(bin);
    cmd.arg("restore")
        .args(extra)
        .arg("-o")
        .arg(out)
        .arg(url)
        .env_remove("LITESTREAM_CONFIG");
    for (name, value) in envs {
        match value {
            Some(v) => cmd.env(name, v),
            None => cmd.env_remove(name),
        };
    }
    run(&mut cmd)
}
