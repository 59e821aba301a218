//! The image's `/bin/sh` and `docker stop` (issue 14): the seed's sidecar runs
//! `entrypoint: ["/bin/sh", "-c"]` + `litestream replicate ...`, and `docker stop` sends SIGTERM
//! to the container's PID 1 only (then SIGKILL after 10 s). The image is alpine, whose `/bin/sh`
//! is busybox ash; this test runs the same ash (Debian's `busybox` package, installed by
//! `scripts/test-servers/start.sh`) and checks that the shell execs litestream (the litestream
//! process is the shell's own PID) and that SIGTERM to that PID makes litestream do its final
//! sync: rows written after the last periodic sync (the replica's `sync-interval` is 1 h) are
//! in the replica. Dash, Debian's `/bin/sh`, forks instead and would leave litestream unsignalled.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common;
use crate::common::{all_rows, assert_exit, create_db, file_url, insert, our_bin, restore_url};

#[test]
fn busybox_sh_execs_litestream_and_sigterm_does_the_final_sync() {
    let busybox = Command::new("busybox").arg("true").status();
    assert!(
        busybox.is_ok_and(|s| s.success()),
        "busybox is missing: the image's /bin/sh (busybox ash) is tested with Debian's busybox; \
         run `bash scripts/test-servers/start.sh` (it installs it)"
    );
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("app.db");
    let replica = tmp.path().join("replica");
    let cfg = tmp.path().join("litestream.yml");
    fs::write(
        &cfg,
        format!(
            "dbs:\n  - path: {}\n    replicas:\n      - url: {}\n        sync-interval: 1h\n",
            db.display(),
            file_url(&replica)
        ),
    )
    .unwrap();
    create_db(&db);
    insert(&db, 50, 200);

    // What the container runs: /bin/sh -c "litestream replicate ...", litestream on PATH.
    let bin_dir = tmp.path().join("bin");
    fs::create_dir_all(&bin_dir).unwrap();
    std::os::unix::fs::symlink(our_bin(), bin_dir.join("litestream")).unwrap();
    let log = tmp.path().join("replicate.log");
    let logf = fs::File::create(&log).unwrap();
    let mut child = Command::new("busybox")
        .args(["sh", "-c"])
        .arg(format!("litestream replicate -config {}", cfg.display()))
        .env(
            "PATH",
            format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap()),
        )
        .env_remove("LITESTREAM_CONFIG")
        .stdin(Stdio::null())
        .stdout(logf.try_clone().unwrap())
        .stderr(logf)
        .spawn()
        .unwrap();
    let pid = child.id();
    common::wait_for(
        Duration::from_secs(10),
        "the shell to exec litestream",
        || fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default(),
        || fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "litestream"),
    );
    let exe = fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert_eq!(
        exe.canonicalize().unwrap(),
        our_bin().canonicalize().unwrap(),
        "PID {pid} (the shell's) is not our litestream"
    );
    common::wait_for_log(&log, "replicating to", Duration::from_secs(30));
    // The first sync happened at start; these rows wait for the next one (in an hour).
    std::thread::sleep(Duration::from_secs(2));
    insert(&db, 30, 200);
    std::thread::sleep(Duration::from_millis(1500));

    // docker stop: SIGTERM to PID 1 (the shell's PID), 10 s before SIGKILL.
    let status =
        litestream_test_servers::signal_and_wait(&mut child, "TERM", Duration::from_secs(10));
    let text = fs::read_to_string(&log).unwrap();
    let Some(status) = status else {
        let _ = child.kill();
        panic!("litestream did not exit within 10 s of SIGTERM:\n{text}");
    };
    assert!(status.success(), "replicate exited with {status}:\n{text}");

    let out = tmp.path().join("restored.db");
    let r = restore_url(&our_bin(), &file_url(&replica), &out, &[], &[]);
    assert_exit(&r, 0, "restore after docker stop");
    assert_eq!(
        all_rows(&out),
        all_rows(&db),
        "the replica lacks rows written before SIGTERM: no final sync\n{text}"
    );
}

/// The runtime stage matches the official image's conventions: alpine (busybox ash as
/// `/bin/sh`), root (no `USER`), `ENTRYPOINT ["/usr/local/bin/litestream"]`, `CMD []`.
#[test]
fn dockerfile_is_a_drop_in_for_the_official_image() {
    let text = fs::read_to_string(common::repo_root().join("Dockerfile")).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let last_from = lines
        .iter()
        .rposition(|l| l.starts_with("FROM "))
        .expect("a FROM line");
    let runtime = &lines[last_from..];
    assert!(
        runtime[0].starts_with("FROM alpine:"),
        "runtime base: {}",
        runtime[0]
    );
    assert!(
        !runtime.iter().any(|l| l.starts_with("USER ")),
        "the official image runs as root: no USER"
    );
    assert!(runtime.contains(&r#"ENTRYPOINT ["/usr/local/bin/litestream"]"#));
    assert_eq!(runtime.last(), Some(&"CMD []"));
    assert!(runtime
        .iter()
        .any(|l| l.starts_with("COPY --from=builder") && l.ends_with("/usr/local/bin/litestream")));
}

/// The image ships the release profile: stripped, no debug info (209 MB with `debug = 1`,
/// 27.8 MB measured without, every backend on); `profiling` keeps the debug info.
#[test]
fn release_profile_is_stripped_and_profiling_keeps_debug_info() {
    let text = fs::read_to_string(common::repo_root().join("Cargo.toml")).unwrap();
    let section = |name: &str| -> Vec<String> {
        text.lines()
            .skip_while(|l| l.trim() != format!("[profile.{name}]"))
            .skip(1)
            .take_while(|l| !l.starts_with('['))
            .map(|l| l.split('#').next().unwrap().replace(' ', ""))
            .filter(|l| !l.is_empty())
            .collect()
    };
    let release = section("release");
    assert!(release.contains(&"strip=true".to_string()), "{release:?}");
    assert!(release.contains(&"debug=false".to_string()), "{release:?}");
    let profiling = section("profiling");
    assert!(
        profiling.contains(&"inherits=\"release\"".to_string()),
        "{profiling:?}"
    );
    assert!(
        profiling.contains(&"debug=true".to_string()),
        "{profiling:?}"
    );
    assert!(
        profiling.contains(&"strip=false".to_string()),
        "{profiling:?}"
    );
}
