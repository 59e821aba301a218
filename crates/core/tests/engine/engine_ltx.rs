//! The engine writing Litestream v0.5's LTX format, against the real v0.5.17 binary: it
//! restores what we write (latest, at `-txid` values, after our compaction and a restart),
//! we continue a replica and meta directory v0.5.17 left behind (TXIDs continue, no
//! whole-database re-upload), and v0.5.17 continues ours. The snapshot point-in-time test runs
//! on file, s3 (moto), abs (Azurite) and sftp (sshd): the remote ones need the test servers'
//! env (`scripts/test.sh`: `TEST_S3_*`, `TEST_ABS_*`, `TEST_SFTP_*`), a missing variable is
//! a failure, never a skip. `validation-interval` validates LTX replicas.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::common;
use crate::common::{
    app_conn, dump, integrity, litestream_bin, mixed_schema, mixed_workload_round,
};
use litestream_core::config::Config;
use litestream_core::ltx::decoder::LtxDecoder;
use litestream_core::ltx::encoder::LtxEncoder;
use litestream_core::ltx::keys::list_all_ltx_files;
use litestream_core::ReplicaClient;
use litestream_core::{LtxOptions, ReplicaFormat, ReplicaHandleConfig, Replicator};

use crate::ltx_common::{
    assert_l0_contiguous, fast_opts, header, l0_path, ltx_files, ltx_replica, page_count,
    start_default, stop_and_lose_meta,
};

/// A new, unique LTX replica on `backend` (file, s3, abs, sftp) with the test servers'
/// credentials (a missing variable fails the test); its sftp directory is removed on drop.
struct Remote {
    client: Arc<dyn ReplicaClient>,
    /// Where [`Remote::local_copy`] puts the replica's files (the replica itself on file).
    local: PathBuf,
    file: bool,
    sftp_dir: Option<PathBuf>,
}

impl Remote {
    async fn new(backend: &str, dir: &Path) -> Remote {
        let local = dir.join("replica");
        let file = litestream_file::FileClient::new(&local);
        let mut remote = Remote {
            client: Arc::new(file),
            local,
            file: backend == "file",
            sftp_dir: None,
        };
        if remote.file {
            return remote;
        }
        let env = |n: &str| {
            std::env::var(n).unwrap_or_else(|_| {
                panic!(
                    "{n} is not set: the {backend} tests need the test servers (scripts/test.sh)"
                )
            })
        };
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_nanos();
        let unique = format!("engine-ltx-{backend}/{:x}-{nanos:x}", std::process::id());
        let yaml = match backend {
            "s3" => format!(
                "type: s3\nbucket: {}\npath: {unique}\nendpoint: {}\nregion: {}\n\
                 force-path-style: true\naccess-key-id: {}\nsecret-access-key: {}",
                env("TEST_S3_BUCKET"),
                env("TEST_S3_ENDPOINT"),
                env("TEST_S3_REGION"),
                env("TEST_S3_ACCESS_KEY_ID"),
                env("TEST_S3_SECRET_ACCESS_KEY"),
            ),
            "abs" => format!(
                "type: abs\naccount-name: {}\naccount-key: {}\nbucket: {}\npath: {unique}\n\
                 endpoint: {}",
                env("TEST_ABS_ACCOUNT_NAME"),
                env("TEST_ABS_ACCOUNT_KEY"),
                env("TEST_ABS_CONTAINER"),
                env("TEST_ABS_ENDPOINT"),
            ),
            "sftp" => {
                let path = Path::new(&env("TEST_SFTP_ROOT")).join(&unique);
                let yaml = format!(
                    "type: sftp\nhost: 127.0.0.1:{}\nuser: {}\nkey-path: {}\nhost-key: \"{}\"\n\
                     path: {}",
                    env("TEST_SFTP_PORT"),
                    env("TEST_SFTP_USER"),
                    env("TEST_SFTP_KEY_PATH"),
                    env("TEST_SFTP_HOST_KEY"),
                    path.display(),
                );
                remote.sftp_dir = Some(path);
                yaml
            }
            other => panic!("unknown backend {other}"),
        };
        let replica: String = yaml.lines().map(|l| format!("      {l}\n")).collect();
        let cfg = Config::parse(&format!(
            "dbs:\n  - path: /unused.db\n    replica:\n{replica}"
        ))
        .expect("replica config");
        let rc = cfg.dbs[0].all_replicas()[0].resolve().expect("resolve");
        remote.client = match backend {
            "s3" => Arc::new(
                litestream_s3::S3Client::from_replica_config(&rc)
                    .await
                    .expect("s3 client"),
            ),
            "abs" => Arc::new(
                litestream_abs::AbsClient::from_replica_config(&rc)
                    .await
                    .expect("abs client"),
            ),
            _ => Arc::new(litestream_sftp::SftpClient::new(
                litestream_sftp::SftpConfig::from_replica_config(&rc).expect("sftp config"),
            )),
        };
        remote
    }

    /// The replica (named "file", as [`ltx_replica`]) with `ltx` options.
    fn replica(&self, ltx: LtxOptions) -> ReplicaHandleConfig {
        let mut r = ltx_replica(&self.local, ltx);
        r.client = Arc::clone(&self.client);
        r
    }

    /// A local `file://` layout of the replica's LTX files, to check with the file helpers
    /// and v0.5.17 (on file, the replica itself).
    async fn local_copy(&self) -> PathBuf {
        if self.file {
            return self.local.clone();
        }
        let kind = self.client.kind();
        for f in list_all_ltx_files(self.client.as_ref())
            .await
            .expect("list ltx files")
        {
            let key = f.key(kind);
            let to = self
                .local
                .join("ltx")
                .join(f.level.to_string())
                .join(f.name());
            std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
            let mut from = self.client.open_object(&key).await.expect("open ltx file");
            let mut out = tokio::fs::File::create(&to).await.expect("create copy");
            tokio::io::copy(&mut from, &mut out)
                .await
                .expect("copy ltx file");
        }
        self.local.clone()
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        if let Some(d) = &self.sftp_dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// This file's workload: 30 rows and a 3–12 KB blob per transaction.
fn workload_round(c: &rusqlite::Connection, round: u32) {
    mixed_workload_round(c, round, 30, 3000..12000);
}

fn v5_restore(bin: &Path, rep: &Path, out: &Path, extra: &[&str]) {
    let o = Command::new(bin)
        .args(["restore", "-o"])
        .arg(out)
        .args(extra)
        .arg(format!("file://{}", rep.display()))
        .output()
        .expect("run litestream restore");
    assert!(
        o.status.success() && out.exists(),
        "v0.5.17 restore {extra:?} failed: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(integrity(out), "ok");
}

fn spawn_v5(bin: &Path, dir: &Path, db: &Path, rep: &Path) -> Child {
    let cfg = dir.join("litestream-v5.yml");
    std::fs::write(
        &cfg,
        format!(
            "dbs:\n  - path: {}\n    monitor-interval: 100ms\n    replica:\n      url: file://{}\n      sync-interval: 100ms\n",
            db.display(),
            rep.display()
        ),
    )
    .expect("config");
    let log = std::fs::File::create(dir.join("v5.log")).expect("log");
    Command::new(bin)
        .arg("replicate")
        .arg("-config")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn litestream v0.5.17")
}

fn stop(mut child: Child) {
    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(st.success());
    child.wait().expect("wait litestream");
}

/// Wait until the replica's newest L0 TXID stops changing (v0.5.17 has caught up).
async fn settle(rep: &Path) {
    let mut last = (0, 0);
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = (
            ltx_files(rep).len(),
            ltx_files(rep).last().map_or(0, |f| f.2),
        );
        if now == last && now.0 > 0 {
            return;
        }
        last = now;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v0517_restores_our_ltx_replica_after_compaction_and_a_restart() {
    let v5 = litestream_bin("LITESTREAM_V0517_BIN");
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("app.db");
    let rep = dir.path().join("replica");
    let c = app_conn(&db);
    mixed_schema(&c);
    let ltx = LtxOptions {
        level_intervals: vec![Duration::from_secs(1), Duration::from_secs(2)],
        ..Default::default()
    };
    let mut r = Replicator::start(&db, vec![ltx_replica(&rep, ltx.clone())], fast_opts())
        .await
        .expect("start");
    let mut before_restart = 0;
    let mut expected_at = Vec::new();
    for round in 0..12 {
        workload_round(&c, round);
        if round == 5 {
            r.sync_and_wait(Duration::from_secs(20))
                .await
                .expect("sync");
            r.shutdown().await.expect("shutdown");
            before_restart = ltx_files(&rep)
                .iter()
                .filter(|f| f.0 == 0)
                .map(|f| f.2)
                .max()
                .expect("L0 files");
            workload_round(&c, 100);
            r = Replicator::start(&db, vec![ltx_replica(&rep, ltx.clone())], fast_opts())
                .await
                .expect("restart");
        }
        if round == 8 {
            c.execute_batch("DELETE FROM blobs WHERE id % 2 = 0; VACUUM;")
                .expect("vacuum");
        }
        r.sync_and_wait(Duration::from_secs(20))
            .await
            .expect("sync");
        if round % 4 == 1 {
            let txid = ltx_files(&rep).iter().map(|f| f.2).max().expect("files");
            let state = dump(&db);
            tokio::time::sleep(Duration::from_millis(50)).await;
            let at = time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .expect("format");
            expected_at.push((txid, at, state));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    r.sync_and_wait(Duration::from_secs(20))
        .await
        .expect("sync");
    let expected = dump(&db);
    r.shutdown().await.expect("shutdown");

    let files = ltx_files(&rep);
    assert!(!rep.join("generations").exists(), "no v0.3 data: {files:?}");
    assert!(files.iter().any(|f| f.0 == 9), "an L9 snapshot: {files:?}");
    assert!(files.iter().any(|f| f.0 == 1), "L1 compactions: {files:?}");
    assert!(files.iter().any(|f| f.0 == 2), "L2 compactions: {files:?}");
    // The restart continued the TXID sequence from a staged L0, without a whole database.
    let next = l0_path(&rep, before_restart + 1);
    let h = header(&next);
    assert!(
        page_count(&next) < h.commit,
        "the first L0 after the restart is incremental ({} of {} pages)",
        page_count(&next),
        h.commit
    );
    assert_l0_contiguous(&rep);

    let out = dir.path().join("latest.db");
    v5_restore(&v5, &rep, &out, &[]);
    assert_eq!(dump(&out), expected, "v0.5.17 restore of the latest state");
    // Every L0 file is still there (l0-retention 5 min): each recorded TXID is a boundary.
    assert!(expected_at.len() >= 3);
    for (i, (txid, at, want)) in expected_at.iter().enumerate() {
        let out = dir.path().join(format!("at-{i}.db"));
        let t = format!("{txid:016x}");
        v5_restore(&v5, &rep, &out, &["-txid", &t]);
        assert_eq!(&dump(&out), want, "v0.5.17 restore at -txid {t}");
        let out = dir.path().join(format!("ts-{i}.db"));
        v5_restore(&v5, &rep, &out, &["-timestamp", at]);
        assert_eq!(&dump(&out), want, "v0.5.17 restore at -timestamp {at}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v0517_then_ours_then_v0517_continue_one_ltx_replica() {
    let v5 = litestream_bin("LITESTREAM_V0517_BIN");
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("app.db");
    let rep = dir.path().join("replica");
    let c = app_conn(&db);
    mixed_schema(&c);

    // Phase 1: real v0.5.17 replicates.
    let child = spawn_v5(&v5, dir.path(), &db, &rep);
    for round in 0..6 {
        workload_round(&c, round);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    settle(&rep).await;
    stop(child);
    let theirs = assert_l0_contiguous(&rep);
    assert!(theirs >= 2, "v0.5.17 wrote L0 files: {:?}", ltx_files(&rep));
    let out = dir.path().join("phase1.db");
    v5_restore(&v5, &rep, &out, &[]);
    assert_eq!(dump(&out), dump(&db));

    // Phase 2: ours continues the same replica from v0.5.17's meta directory.
    let r = Replicator::start(
        &db,
        vec![ltx_replica(&rep, LtxOptions::default())],
        fast_opts(),
    )
    .await
    .expect("start");
    for round in 10..16 {
        workload_round(&c, round);
        if round % 2 == 0 {
            // The application's own checkpoints restart the WAL under us.
            let _ = c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        }
        r.sync_and_wait(Duration::from_secs(20))
            .await
            .expect("sync");
    }
    let expected = dump(&db);
    r.shutdown().await.expect("shutdown");
    let ours = assert_l0_contiguous(&rep);
    assert!(ours > theirs, "we continued the TXIDs: {theirs} -> {ours}");
    let first = l0_path(&rep, theirs + 1);
    assert!(
        page_count(&first) < header(&first).commit,
        "our first L0 continues v0.5.17's history instead of re-uploading the database"
    );
    assert!(!rep.join("generations").exists(), "no generations/ tree");
    let out = dir.path().join("phase2.db");
    v5_restore(&v5, &rep, &out, &[]);
    assert_eq!(dump(&out), expected, "v0.5.17 restores what we appended");

    // Phase 3: v0.5.17 takes over again and continues our TXIDs.
    let child = spawn_v5(&v5, dir.path(), &db, &rep);
    tokio::time::sleep(Duration::from_millis(500)).await;
    for round in 20..24 {
        workload_round(&c, round);
        let _ = c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    settle(&rep).await;
    stop(child);
    let after = assert_l0_contiguous(&rep);
    assert!(
        after > ours,
        "v0.5.17 continued our TXIDs: {ours} -> {after}"
    );
    let first = l0_path(&rep, ours + 1);
    assert!(
        page_count(&first) < header(&first).commit,
        "v0.5.17 continued our history from the meta directory instead of a whole database"
    );
    let out = dir.path().join("phase3.db");
    v5_restore(&v5, &rep, &out, &[]);
    assert_eq!(
        dump(&out),
        dump(&db),
        "v0.5.17 restore after it took over again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_ltx_replicas_one_with_retention_one_without() {
    let v5 = litestream_bin("LITESTREAM_V0517_BIN");
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("app.db");
    let (rep_a, rep_b) = (dir.path().join("a"), dir.path().join("b"));
    let c = app_conn(&db);
    mixed_schema(&c);
    let fast = LtxOptions {
        level_intervals: vec![Duration::from_secs(1)],
        snapshot_interval: Duration::from_secs(2),
        snapshot_retention: Duration::from_secs(1),
        l0_retention: Duration::from_millis(300),
        l0_retention_check_interval: Duration::from_millis(300),
        ..Default::default()
    };
    let mut a = ltx_replica(&rep_a, fast.clone());
    a.name = "a".into();
    let mut b = ltx_replica(
        &rep_b,
        LtxOptions {
            retention_enabled: false,
            ..fast
        },
    );
    b.name = "b".into();
    let r = Replicator::start(&db, vec![a, b], fast_opts())
        .await
        .expect("start");
    for round in 0..20 {
        workload_round(&c, round);
        r.sync_and_wait(Duration::from_secs(20))
            .await
            .expect("sync");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let expected = dump(&db);
    r.shutdown().await.expect("shutdown");

    let (fa, fb) = (ltx_files(&rep_a), ltx_files(&rep_b));
    let count = |f: &[(u8, u64, u64)], level: u8| f.iter().filter(|x| x.0 == level).count();
    // Without retention every L0 file and every snapshot stays.
    let max_b = assert_l0_contiguous(&rep_b);
    assert_eq!(
        count(&fb, 0) as u64,
        max_b,
        "b keeps all of its L0 files: {fb:?}"
    );
    assert!(count(&fb, 9) >= 2, "b keeps its snapshots: {fb:?}");
    // With retention: compacted, old L0 files and old snapshots are gone, the newest stay.
    assert!(count(&fa, 0) < count(&fb, 0), "a deleted L0 files: {fa:?}");
    let l0_max_a = fa.iter().filter(|x| x.0 == 0).map(|x| x.2).max();
    let all_max_a = fa.iter().map(|x| x.2).max();
    assert_eq!(l0_max_a, all_max_a, "a keeps its newest L0 file: {fa:?}");
    assert!(
        count(&fa, 9) < count(&fb, 9),
        "a deleted old snapshots: {fa:?} {fb:?}"
    );
    for rep in [&rep_a, &rep_b] {
        let out = dir.path().join(format!(
            "{}.db",
            rep.file_name().unwrap_or_default().to_string_lossy()
        ));
        v5_restore(&v5, rep, &out, &[]);
        assert_eq!(dump(&out), expected, "v0.5.17 restore of {}", rep.display());
    }
}

/// Every L9 snapshot written under a steady writer (with the engine's checkpoints) holds the
/// database exactly as of its TXID: restored alone, it equals the L0 chain 1..=TXID restored
/// without any snapshot (both by v0.5.17, from a local copy of the replica on `backend`).
async fn ltx_snapshots_are_point_in_time(backend: &str) {
    let v5 = litestream_bin("LITESTREAM_V0517_BIN");
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("app.db");
    let c = app_conn(&db);
    mixed_schema(&c);
    let ltx = LtxOptions {
        level_intervals: vec![],
        snapshot_interval: Duration::from_millis(700),
        retention_enabled: false,
        ..Default::default()
    };
    let remote = Remote::new(backend, dir.path()).await;
    let r = Replicator::start(&db, vec![remote.replica(ltx)], fast_opts())
        .await
        .expect("start");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (db, stop) = (db.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let c = app_conn(&db);
            let mut round = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                workload_round(&c, round);
                round += 1;
                std::thread::sleep(Duration::from_millis(15));
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().expect("writer");
    r.sync_and_wait(Duration::from_secs(20))
        .await
        .expect("sync");
    r.shutdown().await.expect("shutdown");

    let rep = remote.local_copy().await;
    assert_l0_contiguous(&rep);
    let snaps: Vec<u64> = ltx_files(&rep)
        .into_iter()
        .filter(|f| f.0 == 9 && f.2 > 1)
        .map(|f| f.2)
        .collect();
    assert!(
        snaps.len() >= 2,
        "interval snapshots: {:?}",
        ltx_files(&rep)
    );
    // A copy of the replica without snapshots: the L0 chain from TXID 1 alone.
    let chain = dir.path().join("chain");
    std::fs::create_dir_all(chain.join("ltx").join("0")).expect("mkdir");
    for e in std::fs::read_dir(rep.join("ltx").join("0"))
        .expect("l0")
        .flatten()
    {
        std::fs::copy(e.path(), chain.join("ltx").join("0").join(e.file_name())).expect("copy");
    }
    for txid in snaps {
        // The snapshot alone.
        let only = dir.path().join(format!("only-{txid}"));
        let l9 = only.join("ltx").join("9");
        std::fs::create_dir_all(&l9).expect("mkdir");
        let name = format!("{:016x}-{txid:016x}.ltx", 1);
        std::fs::copy(rep.join("ltx").join("9").join(&name), l9.join(&name)).expect("copy");
        let (a, b) = (
            dir.path().join(format!("snap-{txid}.db")),
            dir.path().join(format!("chain-{txid}.db")),
        );
        v5_restore(&v5, &only, &a, &[]);
        v5_restore(&v5, &chain, &b, &["-txid", &format!("{txid:016x}")]);
        assert_eq!(
            dump(&a),
            dump(&b),
            "{backend}: L9 snapshot at TXID {txid} is point-in-time"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ltx_snapshots_are_point_in_time_under_a_steady_writer() {
    ltx_snapshots_are_point_in_time("file").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_ltx_snapshots_are_point_in_time_under_a_steady_writer() {
    ltx_snapshots_are_point_in_time("s3").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abs_ltx_snapshots_are_point_in_time_under_a_steady_writer() {
    ltx_snapshots_are_point_in_time("abs").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sftp_ltx_snapshots_are_point_in_time_under_a_steady_writer() {
    ltx_snapshots_are_point_in_time("sftp").await;
}

/// One database, a v0.3 replica and an LTX replica (v0.5 allows one replica per database):
/// v0.3.13 restores the first, v0.5.17 both, all equal to the source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v03_and_an_ltx_replica_of_one_database() {
    let v3 = litestream_bin("LITESTREAM_V0313_BIN");
    let v5 = litestream_bin("LITESTREAM_V0517_BIN");
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("app.db");
    let (rep3, rep5) = (dir.path().join("v3"), dir.path().join("ltx"));
    let c = app_conn(&db);
    mixed_schema(&c);
    let mut a = ltx_replica(&rep3, LtxOptions::default());
    a.name = "v3".into();
    a.options.format = ReplicaFormat::V3;
    let mut b = ltx_replica(&rep5, LtxOptions::default());
    b.name = "ltx".into();
    let r = Replicator::start(&db, vec![a, b], fast_opts())
        .await
        .expect("start");
    for round in 0..10 {
        workload_round(&c, round);
        if round % 3 == 0 {
            r.sync_and_wait(Duration::from_secs(20))
                .await
                .expect("sync");
        }
    }
    r.sync_and_wait(Duration::from_secs(20))
        .await
        .expect("sync");
    let expected = dump(&db);
    r.shutdown().await.expect("shutdown");
    assert!(rep3.join("generations").exists() && !rep3.join("ltx").exists());
    assert!(rep5.join("ltx").exists() && !rep5.join("generations").exists());
    assert_l0_contiguous(&rep5);
    let out = dir.path().join("v3.db");
    common::restore_with(&v3, &rep3, &out);
    assert_eq!(dump(&out), expected, "v0.3.13 restore of the v0.3 replica");
    for rep in [&rep3, &rep5] {
        let out = dir.path().join(format!(
            "v5-{}.db",
            rep.file_name().unwrap_or_default().to_string_lossy()
        ));
        v5_restore(&v5, rep, &out, &[]);
        assert_eq!(dump(&out), expected, "v0.5.17 restore of {}", rep.display());
    }
}

/// Without the staged L0 file (meta directory lost, e.g. a new container with the old
/// replica), the history cannot be proven continuous: the next file holds the whole database
/// at the next TXID (never a TXID again from 1), and v0.5.17 restores the result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_meta_directory_continues_the_txids_with_a_whole_database_file() {
    let v5 = litestream_bin("LITESTREAM_V0517_BIN");
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("app.db");
    let rep = dir.path().join("replica");
    let c = app_conn(&db);
    mixed_schema(&c);
    let start = || start_default(&db, &rep);
    let r = start().await;
    for round in 0..4 {
        workload_round(&c, round);
        r.sync_and_wait(Duration::from_secs(20))
            .await
            .expect("sync");
    }
    let before = stop_and_lose_meta(r, &rep).await;
    workload_round(&c, 10);
    let r = start().await;
    workload_round(&c, 11);
    r.sync_and_wait(Duration::from_secs(20))
        .await
        .expect("sync");
    let expected = dump(&db);
    r.shutdown().await.expect("shutdown");
    let after = assert_l0_contiguous(&rep);
    assert!(after > before);
    let whole = l0_path(&rep, before + 1);
    assert_eq!(
        page_count(&whole),
        header(&whole).commit,
        "the first file after the lost meta directory holds the whole database"
    );
    let out = dir.path().join("restored.db");
    v5_restore(&v5, &rep, &out, &[]);
    assert_eq!(dump(&out), expected);
}

/// The newest L0 file of a `file://` replica with one byte of one of its pages changed (a
/// valid LTX file with other content, as a faulty store or a stray writer would leave it).
fn tamper_newest_l0(rep: &Path) {
    let txid = assert_l0_contiguous(rep);
    let path = l0_path(rep, txid);
    let bytes = std::fs::read(&path).expect("read l0");
    let mut d = LtxDecoder::new("l0", &bytes[..]).expect("decoder");
    let h = d.header().clone();
    let mut enc = LtxEncoder::new("tampered", Vec::new(), &h).expect("encoder");
    let mut buf = vec![0u8; h.page_size as usize];
    let mut first = true;
    while let Some(pgno) = d.next_page(&mut buf).expect("page") {
        if first {
            let last = buf.len() - 1;
            buf[last] ^= 0x5a;
            first = false;
        }
        enc.write_page(pgno, &buf).expect("write page");
    }
    let (out, _) = enc.finish().expect("finish");
    std::fs::write(&path, out).expect("write tampered l0");
}

/// `validation-interval` on an LTX replica restores it at the replicated TXID and compares it
/// with the database then (it used to be ignored with a warning, and `validate` failed with
/// "not supported"): under writes and the app's checkpoints every validation matches, and a
/// changed page in the replica is reported as a mismatch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_interval_validates_an_ltx_replica_and_finds_a_changed_page() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("app.db");
    let rep = dir.path().join("replica");
    let c = app_conn(&db);
    mixed_schema(&c);
    let mut cfg = ltx_replica(
        &rep,
        LtxOptions {
            level_intervals: vec![],
            ..Default::default()
        },
    );
    cfg.options.validation_interval = Some(Duration::from_millis(250));
    let r = Replicator::start(&db, vec![cfg], fast_opts())
        .await
        .expect("start");
    for round in 0..12 {
        workload_round(&c, round);
        if round % 4 == 3 {
            let _ = c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        }
        tokio::time::sleep(Duration::from_millis(120)).await;
    }
    let mut stats = r.validation_stats("file").expect("stats");
    for _ in 0..100 {
        if stats.ok >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        stats = r.validation_stats("file").expect("stats");
    }
    assert!(stats.ok >= 3, "periodic validations ran: {stats:?}");
    assert_eq!(stats.error, 0, "every validation matched: {stats:?}");
    let report = r.validate("file").await.expect("validate");
    assert!(report.ok(), "on-demand validation matches: {report:?}");

    tamper_newest_l0(&rep);
    let report = r.validate("file").await.expect("validate");
    assert!(!report.ok(), "a changed page is a mismatch: {report:?}");
    let stats = r.validation_stats("file").expect("stats");
    assert!(stats.error >= 1, "the mismatch is counted: {stats:?}");
    r.shutdown().await.expect("shutdown");
}
