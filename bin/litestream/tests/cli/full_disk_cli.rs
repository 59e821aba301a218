//! A full disk under each of the three places litestream writes: the restore's output
//! directory, a `file://` replica and the meta directory (shadow WAL). Each is a small tmpfs
//! mounted for the test (the tests run as root, as in CI; a failed mount panics). Expected:
//! an error that names the file and says the disk is full, nothing half-written left behind,
//! and, once space is freed, the work completes with nothing lost.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::*;

const ENOSPC: &str = "No space left on device";

/// A tmpfs of a given size mounted on a fresh directory; unmounted on drop.
struct SmallDisk {
    dir: PathBuf,
}

impl SmallDisk {
    /// Mount a tmpfs of `size` (e.g. `"1m"`) on `dir` (created if missing).
    fn mount(dir: &Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mounting a {size} tmpfs on {} failed (these tests need root or CAP_SYS_ADMIN, as \
             CI has): {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk {
            dir: dir.to_path_buf(),
        }
    }

    /// Free space: grow the tmpfs to `size`, keeping its files.
    fn grow(&self, size: &str) {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.dir)
            .status()
            .unwrap();
        assert!(st.success(), "remounting {} failed", self.dir.display());
    }

    fn files(&self) -> Vec<String> {
        list_files(&self.dir)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// A WAL-mode database with ~2.5 MiB of incompressible rows, checkpointed into the main file.
fn source_db(dir: &Path) -> PathBuf {
    let db = dir.join("app.db");
    create_db(&db);
    insert(&db, 40, 64 << 10);
    checkpoint(&db);
    db
}

fn checkpoint(db: &Path) {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
}

fn write_config(dir: &Path, db: &Path, meta: Option<&Path>, replica: &Path) -> PathBuf {
    let meta = meta
        .map(|m| format!("    meta-path: {}\n", m.display()))
        .unwrap_or_default();
    let cfg = dir.join("litestream.yml");
    std::fs::write(
        &cfg,
        format!(
            "dbs:\n  - path: {}\n{meta}    replicas:\n      - url: {}\n",
            db.display(),
            file_url(replica)
        ),
    )
    .unwrap();
    cfg
}

/// Restore the replica into a fresh file and check that it holds exactly the source's rows.
fn assert_replica_equals_source(replica: &Path, db: &Path, dir: &Path, what: &str) {
    let out = dir.join(format!("check-{what}.db"));
    let res = restore_url(&our_bin(), &file_url(replica), &out, &[], &[]);
    assert_exit(&res, 0, &format!("restore after {what}"));
    assert_integrity_ok(&out, what);
    assert_eq!(all_rows(&out), all_rows(db), "{what}: restored rows differ");
}

/// The first log line that says the disk is full names a file under `dir`.
fn assert_full_disk_logged_naming(log: &Path, dir: &Path) {
    let text = std::fs::read_to_string(log).unwrap();
    let line = text.lines().find(|l| l.contains(ENOSPC)).unwrap();
    assert!(
        line.contains(&dir.display().to_string()),
        "the error should name the file under {} it could not write: {line}",
        dir.display()
    );
}

#[test]
fn restore_onto_a_full_disk_names_the_file_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let db = source_db(tmp.path());
    let replica = tmp.path().join("replica");
    let cfg = write_config(tmp.path(), &db, None, &replica);
    let log = tmp.path().join("replicate.log");
    replicate_briefly(&our_bin(), &cfg, &db, &log);

    let disk = SmallDisk::mount(&tmp.path().join("data"), "1m");
    let out = disk.dir.join("app.db");
    let res = restore_url(&our_bin(), &file_url(&replica), &out, &[], &[]);
    assert_exit(&res, 1, "restore onto a 1 MiB disk");
    let text = output_text(&res);
    let tmp_prefix = format!("{}.", out.display());
    assert!(
        text.contains(ENOSPC) && text.contains(&tmp_prefix),
        "the error should say the disk is full and name the file being written:\n{text}"
    );
    assert_eq!(
        text.matches(ENOSPC).count(),
        1,
        "the cause should be said once:\n{text}"
    );
    assert!(
        disk.files().is_empty(),
        "nothing may be left on the full disk: {:?}",
        disk.files()
    );

    // With space the same command restores everything.
    disk.grow("64m");
    let res = restore_url(&our_bin(), &file_url(&replica), &out, &[], &[]);
    assert_exit(&res, 0, "restore after space was freed");
    assert_integrity_ok(&out, "restore after space was freed");
    assert_eq!(all_rows(&out), all_rows(&db));
}

#[test]
fn a_full_replica_disk_is_reported_and_replication_catches_up_when_space_frees() {
    let tmp = tempfile::tempdir().unwrap();
    let db = source_db(tmp.path());
    let disk = SmallDisk::mount(&tmp.path().join("replica-disk"), "1m");
    let replica = disk.dir.join("replica");
    let cfg = write_config(tmp.path(), &db, None, &replica);
    let log = tmp.path().join("replicate.log");

    let child = spawn_replicate(&our_bin(), &cfg, &log);
    wait_for_log(&log, ENOSPC, Duration::from_secs(30));
    insert(&db, 20, 1000); // commits made while the replica's disk is full
    std::thread::sleep(Duration::from_secs(2));
    assert_full_disk_logged_naming(&log, &replica);

    disk.grow("64m");
    wait_for_log(&log, "snapshot written", Duration::from_secs(30));
    insert(&db, 20, 1000);
    std::thread::sleep(Duration::from_secs(3));
    sigint_and_wait(child, &log);

    let leftovers: Vec<_> = disk
        .files()
        .into_iter()
        .filter(|f| f.ends_with(".tmp"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "temporary files left in the replica: {leftovers:?}"
    );
    assert_eq!(generations(&replica).len(), 1, "one generation expected");
    assert_replica_equals_source(&replica, &db, tmp.path(), "a full replica disk");
}

#[test]
fn a_full_meta_disk_is_reported_and_the_generation_goes_on_when_space_frees() {
    let tmp = tempfile::tempdir().unwrap();
    let db = source_db(tmp.path());
    let disk = SmallDisk::mount(&tmp.path().join("meta-disk"), "300k");
    let meta = disk.dir.join("app-litestream");
    let replica = tmp.path().join("replica");
    let cfg = write_config(tmp.path(), &db, Some(&meta), &replica);
    let log = tmp.path().join("replicate.log");

    let child = spawn_replicate(&our_bin(), &cfg, &log);
    wait_for_log(&log, "wal segment written", Duration::from_secs(30));
    // ~500 KiB of WAL does not fit beside the shadow WAL on a 300 KiB disk.
    insert(&db, 500, 1000);
    wait_for_log(&log, ENOSPC, Duration::from_secs(30));
    assert_full_disk_logged_naming(&log, &meta);
    let rows_while_full = count_rows(&db);

    disk.grow("64m");
    insert(&db, 20, 1000);
    std::thread::sleep(Duration::from_secs(3));
    sigint_and_wait(child, &log);

    assert!(count_rows(&db) > rows_while_full);
    assert_eq!(
        generations(&replica).len(),
        1,
        "a full meta disk must not start a new generation"
    );
    assert_replica_equals_source(&replica, &db, tmp.path(), "a full meta disk");
}
