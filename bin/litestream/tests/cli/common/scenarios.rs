//! The scenarios the backend CLI tests (`abs_cli`, `sftp_cli`, `s3_cli`) run alike, written
//! once. What differs between backends comes in as arguments: the test's local side (a
//! [`Case`]: temp dir and source database), the config file that points at the replica, a
//! closure that runs `restore` against the replica (config or URL mode, with the backend's
//! credentials), one against a fresh prefix that holds no replica, and the server to take down
//! (a [`Restartable`]).

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use super::{
    assert_exit, assert_files_equal, assert_integrity_ok, assert_no_secret, count_rows, describe,
    insert, litestream_v0313, our_bin, output_text, replicate_workload, restore_config,
    sigint_and_wait, spawn_replicate, HEALTHCHECK,
};

/// One backend test's case: its local side (a temp dir, and the source database `src.db` in
/// it) and `replica`, what the backend needs to reach the replica (prefix or remote dir,
/// endpoint, credentials, ...). Each backend test adds its own `new`, `config` and `url`.
pub struct Case<R> {
    /// The test's temp dir (outputs and logs go there).
    pub dir: tempfile::TempDir,
    /// The source database.
    pub db: PathBuf,
    /// The backend's side.
    pub replica: R,
}

impl<R> Case<R> {
    /// A fresh temp dir with (not yet created) `src.db` in it.
    pub fn with_replica(replica: R) -> Case<R> {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("src.db");
        Case { dir, db, replica }
    }

    /// A file in the temp dir.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Write `text` to a file in the temp dir (e.g. a config file); returns its path.
    pub fn write_file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Create the source database (WAL mode, table `t`).
    pub fn create_db(&self) {
        super::create_db(&self.db);
    }

    /// Rows in the source database.
    pub fn rows(&self) -> i64 {
        count_rows(&self.db)
    }

    /// Create the source database and run [`replicate_workload`] on it with `bin replicate
    /// -config cfg` (log: `replicate-<tag>.log`): a first snapshot over 8 MiB and several WAL
    /// indexes.
    pub fn workload(&self, bin: &Path, cfg: &Path, tag: &str) {
        self.create_db();
        replicate_workload(
            &self.db,
            bin,
            cfg,
            &self.path(&format!("replicate-{tag}.log")),
        );
    }
}

/// Create the source database with `before` rows of 1000 bytes, let the real v0.3.13 replicate
/// it through `cfg` for 3 s (inserting `during` more rows and waiting 2 s if `during > 0`),
/// then stop it with SIGINT: a small replica that only the real Litestream wrote.
pub fn seed_with_v0313<R>(case: &Case<R>, cfg: &Path, before: usize, during: usize) {
    case.create_db();
    insert(&case.db, before, 1000);
    let log = case.path("replicate.log");
    let child = spawn_replicate(&litestream_v0313(), cfg, &log);
    std::thread::sleep(Duration::from_secs(3));
    if during > 0 {
        insert(&case.db, during, 1000);
        std::thread::sleep(Duration::from_secs(2));
    }
    sigint_and_wait(child, &log);
}

/// The compose healthcheck's restore (`restore -if-db-not-exists -if-replica-exists`, run by
/// `restore(out)` against the case's replica and by `restore_empty(out)` against a prefix with
/// no replica) proves three things:
///
/// 1. it restores the replica: exit 0, `integrity_check` ok, every source row;
/// 2. run again, the database now exists: exit 0, its bytes and mtime untouched;
/// 3. with no replica: exit 0 and nothing created.
///
/// With `secret`, none of the three outputs contains it. `mode` ("config", "URL") labels the
/// messages. Returns the restored database (`restored.db`).
pub fn assert_healthcheck_restore<R>(
    case: &Case<R>,
    restore: &dyn Fn(&Path) -> Output,
    restore_empty: &dyn Fn(&Path) -> Output,
    secret: Option<&str>,
    mode: &str,
) -> PathBuf {
    let no_secret = |out: &Output| {
        if let Some(secret) = secret {
            assert_no_secret(&output_text(out), secret);
        }
    };

    let out_db = case.path("restored.db");
    let out = restore(&out_db);
    let what = format!("healthcheck restore ({mode})");
    assert_exit(&out, 0, &what);
    assert_integrity_ok(&out_db, &what);
    assert_eq!(count_rows(&out_db), case.rows(), "{what}");
    no_secret(&out);

    // Second run: the output exists, nothing is touched.
    let before = std::fs::read(&out_db).unwrap();
    let mtime = std::fs::metadata(&out_db).unwrap().modified().unwrap();
    let out = restore(&out_db);
    assert_exit(&out, 0, &format!("{what} with existing db"));
    assert_eq!(
        std::fs::read(&out_db).unwrap(),
        before,
        "{what}: db changed"
    );
    assert_eq!(
        std::fs::metadata(&out_db).unwrap().modified().unwrap(),
        mtime,
        "{what}: db mtime changed"
    );
    no_secret(&out);

    // An empty prefix: no replica, exit 0, no output.
    let out_db2 = case.path("restored-empty.db");
    let out = restore_empty(&out_db2);
    assert_exit(&out, 0, &format!("{what} without replica"));
    assert!(
        !out_db2.exists(),
        "created {}: {}",
        out_db2.display(),
        describe(&out)
    );
    no_secret(&out);
    out_db
}

/// Healthcheck in config mode: on a replica the real v0.3.13 wrote through `cfg`, our
/// `restore -if-db-not-exists -if-replica-exists -config` proves what
/// [`assert_healthcheck_restore`] lists; `empty_cfg` is the same config with a fresh, empty
/// prefix.
pub fn healthcheck_restore_config_mode<R>(case: &Case<R>, cfg: &Path, empty_cfg: &Path) {
    seed_with_v0313(case, cfg, 200, 50);
    let ours = our_bin();
    assert_healthcheck_restore(
        case,
        &|out| restore_config(&ours, cfg, &case.db, out, HEALTHCHECK),
        &|out| restore_config(&ours, empty_cfg, &case.db, out, HEALTHCHECK),
        None,
        "config",
    );
}

/// `restore(bin, out)` restores `replica` (who wrote it: "v0.3.13's replica", "our replica")
/// with the real v0.3.13 and with ours: both exit 0 and pass `integrity_check` with every
/// source row, and our restore is byte-identical to v0.3.13's.
pub fn assert_restore_identical_to_v0313<R>(
    case: &Case<R>,
    restore: &dyn Fn(&Path, &Path) -> Output,
    replica: &str,
) {
    let theirs = case.path("theirs.db");
    let ours = case.path("ours.db");
    for (who, bin, out_db) in [
        ("v0.3.13", litestream_v0313(), &theirs),
        ("our", our_bin(), &ours),
    ] {
        let what = format!("{who} restore of {replica}");
        let out = restore(&bin, out_db);
        assert_exit(&out, 0, &what);
        assert_integrity_ok(out_db, &what);
        assert_eq!(count_rows(out_db), case.rows(), "{what}");
    }
    assert_files_equal(&theirs, &ours, "our restore vs v0.3.13's");
}

/// Who runs `replicate` in [`interop_through_config`].
pub enum Writer {
    /// The real Litestream v0.3.13.
    V0313,
    /// Our binary.
    Ours,
}

/// Interop through a config file, either way: `writer` runs the [`Case::workload`] (snapshot
/// over 8 MiB, several WAL indexes) through `cfg`; then, restoring with `restore -config cfg`,
/// [`assert_restore_identical_to_v0313`] (v0.3.13 and we both restore every row, and our
/// restore is byte-identical to v0.3.13's).
pub fn interop_through_config<R>(case: &Case<R>, cfg: &Path, writer: Writer) {
    let (bin, tag, replica) = match writer {
        Writer::V0313 => (litestream_v0313(), "v0313", "v0.3.13's replica"),
        Writer::Ours => (our_bin(), "ours", "our replica"),
    };
    case.workload(&bin, cfg, tag);
    assert_restore_identical_to_v0313(
        case,
        &|bin, out| restore_config(bin, cfg, &case.db, out, &[]),
        replica,
    );
}

/// A replica server the test owns (never a shared one) that can go down and come back on the
/// same address with its data.
pub trait Restartable {
    /// Take the server down (stop or kill it, with its open connections).
    fn stop(&mut self);
    /// Bring it back on the same address and data.
    fn restart(&mut self);
}

/// sshd: killed (SIGKILL, with its sessions, like a crash), then started again.
impl Restartable for litestream_test_servers::PrivateSshd {
    fn stop(&mut self) {
        self.kill();
    }

    fn restart(&mut self) {
        litestream_test_servers::PrivateSshd::restart(self);
    }
}

/// Azurite: SIGTERM (SIGKILL after 15 s), then started again with the same data.
impl Restartable for litestream_test_servers::Azurite {
    fn stop(&mut self) {
        litestream_test_servers::Azurite::stop(self);
    }

    fn restart(&mut self) {
        litestream_test_servers::Azurite::restart(self);
    }
}

/// The server behind `cfg` goes down while our `replicate` runs and comes back a few seconds
/// later; rows are committed before, during and after the outage. Replication resumes by
/// itself and nothing committed is lost: after SIGINT, our restore and v0.3.13's both exit 0,
/// pass `integrity_check` and have every source row.
pub fn replication_survives_server_restart<R>(
    case: &Case<R>,
    cfg: &Path,
    server: &mut dyn Restartable,
) {
    case.create_db();
    insert(&case.db, 100, 1000);
    let log = case.path("replicate.log");
    let child = spawn_replicate(&our_bin(), cfg, &log);
    std::thread::sleep(Duration::from_secs(3));
    insert(&case.db, 100, 1000);
    std::thread::sleep(Duration::from_secs(2));

    server.stop();
    for _ in 0..5 {
        insert(&case.db, 20, 1000);
        std::thread::sleep(Duration::from_millis(500));
    }
    server.restart();
    for _ in 0..5 {
        insert(&case.db, 20, 1000);
        std::thread::sleep(Duration::from_millis(500));
    }
    std::thread::sleep(Duration::from_secs(8));
    sigint_and_wait(child, &log);

    for (name, bin) in [("ours", our_bin()), ("v0.3.13", litestream_v0313())] {
        let out_db = case.path(&format!("restored-{name}.db"));
        let out = restore_config(&bin, cfg, &case.db, &out_db, &[]);
        assert_exit(&out, 0, &format!("{name} restore after the outage"));
        assert_integrity_ok(&out_db, name);
        assert_eq!(
            count_rows(&out_db),
            case.rows(),
            "{name}: rows committed during the outage were lost; log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
}
