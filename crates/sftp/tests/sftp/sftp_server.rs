//! `SftpClient` against the local OpenSSH sshd: the shared ReplicaClient suite, authentication,
//! host key checking and bad input. Needs the env that `scripts/test.sh` exports.

use std::os::unix::fs::PermissionsExt;

use crate::common::*;
use litestream_conformance::FailingSource;
use litestream_core::{Error, Generation, Pos, ReplicaClient};
use litestream_sftp::{fingerprint, parse_host_key, SftpClient};

fn generation(s: &str) -> Generation {
    Generation::parse(s).expect("generation")
}

fn server_fingerprint() -> String {
    fingerprint(&parse_host_key(&env("TEST_SFTP_HOST_KEY")).expect("TEST_SFTP_HOST_KEY"))
}

fn tmp_files(dir: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![std::path::PathBuf::from(dir)];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(".tmp") {
                out.push(p.to_string_lossy().into_owned());
            }
        }
    }
    out
}

async fn expect_err(c: &SftpClient) -> Error {
    c.generations().await.expect_err("must fail")
}

/// The shared suite with ed25519 key auth; afterwards no temp files or directories are left.
#[tokio::test]
async fn sftp_client_passes_the_replica_client_suite() {
    let dir = RemoteDir::new("suite");
    let c = client(&key_config(&dir.path)).await;
    assert_kind(&c);
    litestream_conformance::run_all(&c).await;
    // The writer's timestamp is the file's mtime (whole seconds in SFTP v3), as v0.5 sets it.
    assert_eq!(
        litestream_conformance::objects_written_keep_their_timestamp(&c).await,
        litestream_conformance::TimestampKept::ListedTimeSeconds
    );
    assert!(
        tmp_files(&dir.path).is_empty(),
        "temp files left: {:?}",
        tmp_files(&dir.path)
    );
    let left: Vec<_> = std::fs::read_dir(format!("{}/generations", dir.path))
        .expect("generations dir")
        .map(|e| e.expect("entry").path())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// Password auth with a pinned host key (Litestream v0.5's `host-key`).
#[tokio::test]
async fn password_auth_with_pinned_host_key_round_trips() {
    let dir = RemoteDir::new("password");
    let c = client(&password_config(&dir.path)).await;
    let g = generation("00000000000000aa");
    let pos = Pos::new(g.clone(), 3, 8192);
    c.write_wal_segment(&pos, bytes(payload(4321, 9)))
        .await
        .expect("write");
    assert_eq!(
        read_all(c.open_wal_segment(&pos).await.expect("open")).await,
        payload(4321, 9)
    );
    assert_eq!(c.generations().await.expect("gens"), vec![g]);
}

/// RSA keys in PEM format authenticate (rsa-sha2 signatures).
#[tokio::test]
async fn rsa_pem_key_auth_works() {
    let dir = RemoteDir::new("rsa");
    let mut cfg = key_config(&dir.path);
    cfg.key_path = Some(env("TEST_SFTP_RSA_KEY_PATH"));
    let c = client(&cfg).await;
    c.connect().await.expect("rsa auth");
    let g = generation("00000000000000bb");
    c.write_snapshot(&g, 0, bytes(payload(10, 1)))
        .await
        .expect("write");
    assert_eq!(c.snapshots(&g).await.expect("list").len(), 1);
}

/// A snapshot bigger than 8 MiB goes through chunked writes and reads intact.
#[tokio::test]
async fn snapshot_over_8_mib_round_trips() {
    let dir = RemoteDir::new("big");
    let c = client(&key_config(&dir.path)).await;
    let g = generation("00000000000000cc");
    let data = payload(9 * 1024 * 1024 + 12345, 77);
    let info = c
        .write_snapshot(&g, 7, bytes(data.clone()))
        .await
        .expect("write");
    assert_eq!(info.size, data.len() as u64);
    let got = read_all(c.open_snapshot(&g, 7).await.expect("open")).await;
    assert!(
        got == data,
        "8 MiB+ snapshot differs (len {} vs {})",
        got.len(),
        data.len()
    );
    assert_eq!(
        c.snapshots(&g).await.expect("list")[0].size,
        data.len() as u64
    );
}

/// A missing object's error names user@host.
#[tokio::test]
async fn missing_object_error_names_user_and_host() {
    let dir = RemoteDir::new("missing");
    let c = client(&key_config(&dir.path)).await;
    let g = generation("0123456789abcdef");
    let Err(e) = c.open_wal_segment(&Pos::new(g.clone(), 1, 0)).await else {
        panic!("missing segment opened")
    };
    assert!(e.is_not_found(), "{e}");
    assert!(e.to_string().contains("lstest@127.0.0.1"), "{e}");
}

/// Names that do not parse (upper-case hex, temp files, stray dirs and files) are ignored.
#[tokio::test]
async fn unparseable_names_are_ignored() {
    let dir = RemoteDir::new("names");
    let c = client(&key_config(&dir.path)).await;
    let g = generation("00000000000000ff");
    c.write_snapshot(&g, 1, bytes(payload(10, 1)))
        .await
        .expect("snap");
    c.write_wal_segment(&Pos::new(g.clone(), 1, 0), bytes(payload(10, 1)))
        .await
        .expect("wal");
    let gdir = format!("{}/generations", dir.path);
    for d in ["not-a-generation", "00000000000000FF", "0000000000000000x"] {
        std::fs::create_dir_all(format!("{gdir}/{d}")).expect("mkdir");
    }
    std::fs::write(format!("{gdir}/0000000000000001"), b"a file, not a dir").expect("write");
    for f in [
        "0000001F.snapshot.lz4",
        "00000002.snapshot.lz4.tmp",
        "2.snapshot.lz4",
        "junk",
    ] {
        std::fs::write(format!("{gdir}/{g}/snapshots/{f}"), b"x").expect("write");
    }
    for f in [
        "00000001.wal.lz4",
        "00000001_00000000.wal.lz4.tmp",
        "00000001_0000000G.wal.lz4",
    ] {
        std::fs::write(format!("{gdir}/{g}/wal/{f}"), b"x").expect("write");
    }
    std::fs::create_dir_all(format!("{gdir}/{g}/snapshots/00000009.snapshot.lz4")).expect("dir");
    assert_eq!(c.generations().await.expect("gens"), vec![g.clone()]);
    assert_eq!(
        c.snapshots(&g)
            .await
            .expect("snaps")
            .iter()
            .map(|s| s.index)
            .collect::<Vec<_>>(),
        vec![1]
    );
    assert_eq!(c.wal_segments(&g).await.expect("wal").len(), 1);
}

/// A wrong password fails clearly, names user@host:port, and never shows the password.
#[tokio::test]
async fn wrong_password_is_a_clear_error_without_the_secret() {
    let dir = RemoteDir::new("wrongpw");
    let mut cfg = password_config(&dir.path);
    cfg.password = Some("Wr0ng-S3cret-Pa55".into());
    let c = client(&cfg).await;
    let e = expect_err(&c).await;
    let msg = format!("{e:#} {e:?}");
    assert!(msg.contains("authentication failed"), "{msg}");
    assert!(msg.contains("lstest@127.0.0.1:"), "{msg}");
    assert!(!msg.contains("Wr0ng-S3cret-Pa55"), "password leaked: {msg}");
    assert!(!format!("{c:?}").contains("Wr0ng-S3cret-Pa55"));
    assert!(!e.is_retryable(), "bad credentials are not retryable");
}

/// A missing key file and a key file that is not a key both give clear errors with the path
/// and none of the file's contents.
#[tokio::test]
async fn unreadable_or_invalid_key_file_is_a_clear_error() {
    let dir = RemoteDir::new("badkey");
    let mut cfg = key_config(&dir.path);
    cfg.key_path = Some("/nonexistent/litestream-test/id_ed25519".into());
    let e = expect_err(&client(&cfg).await).await.to_string();
    assert!(
        e.contains("cannot read key-path /nonexistent/litestream-test/id_ed25519"),
        "{e}"
    );
    assert!(e.contains("lstest@127.0.0.1:"), "{e}");

    let tmp = tempfile::tempdir().expect("tmp");
    let bad = tmp.path().join("id_bad");
    std::fs::write(
        &bad,
        "-----BEGIN OPENSSH PRIVATE KEY-----\nU0VDUkVULUtFWS1NQVRFUklBTA==\n-----END OPENSSH PRIVATE KEY-----\n",
    )
    .expect("write");
    cfg.key_path = Some(bad.to_string_lossy().into_owned());
    let e = expect_err(&client(&cfg).await).await;
    let msg = format!("{e} {e:?}");
    assert!(msg.contains("cannot parse private key"), "{msg}");
    assert!(
        !msg.contains("U0VDUkVULUtFWS1NQVRFUklBTA"),
        "key material leaked: {msg}"
    );
    assert!(!e.is_retryable());

    // A directory in place of the key file: unreadable.
    cfg.key_path = Some(tmp.path().to_string_lossy().into_owned());
    let e = expect_err(&client(&cfg).await).await.to_string();
    assert!(e.contains("cannot read key-path"), "{e}");
}

/// A known_hosts entry with a different key for [host]:port is refused with the fingerprint.
#[tokio::test]
async fn changed_host_key_is_refused_with_fingerprint() {
    let dir = RemoteDir::new("hostkey");
    let tmp = tempfile::tempdir().expect("tmp");
    let other = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGJBidcr2aWIQxoo6ANb3JwftVrspBuqwQQAdfGUD8Pe";
    let kh = tmp.path().join("known_hosts");
    let port = env("TEST_SFTP_PORT");
    std::fs::write(&kh, format!("[127.0.0.1]:{port} {other}\n")).expect("write");
    let mut cfg = key_config(&dir.path);
    cfg.known_hosts_path = Some(kh.to_string_lossy().into_owned());
    let e = expect_err(&client(&cfg).await).await;
    let msg = e.to_string();
    assert!(msg.contains("HOST KEY CHANGED"), "{msg}");
    assert!(msg.contains(&server_fingerprint()), "{msg}");
    assert!(!e.is_retryable());

    // Pinned key that differs.
    let mut cfg = password_config(&dir.path);
    cfg.host_key = Some(other.into());
    let msg = expect_err(&client(&cfg).await).await.to_string();
    assert!(
        msg.contains("host key mismatch") && msg.contains(&server_fingerprint()),
        "{msg}"
    );
    assert!(!msg.contains(&env("TEST_SFTP_PASSWORD")), "{msg}");
}

/// A host missing from known_hosts (or a missing file) is refused; the opt-out accepts it.
#[tokio::test]
async fn unknown_host_key_is_refused_unless_opted_out() {
    let dir = RemoteDir::new("unknown");
    let tmp = tempfile::tempdir().expect("tmp");
    let kh = tmp.path().join("known_hosts");
    std::fs::write(&kh, "# nothing here\n").expect("write");
    let mut cfg = key_config(&dir.path);
    cfg.known_hosts_path = Some(kh.to_string_lossy().into_owned());
    let msg = expect_err(&client(&cfg).await).await.to_string();
    assert!(
        msg.contains("unknown host key") && msg.contains(&server_fingerprint()),
        "{msg}"
    );

    cfg.known_hosts_path = Some(tmp.path().join("absent").to_string_lossy().into_owned());
    let msg = expect_err(&client(&cfg).await).await.to_string();
    assert!(msg.contains("unknown host key"), "{msg}");

    cfg.insecure_ignore_host_key = Some(true);
    client(&cfg)
        .await
        .generations()
        .await
        .expect("opt-out accepts any key");
}

/// Hashed known_hosts entries (`ssh-keygen -H`) verify.
#[tokio::test]
async fn hashed_known_hosts_entry_is_accepted() {
    let dir = RemoteDir::new("hashed");
    let tmp = tempfile::tempdir().expect("tmp");
    let kh = tmp.path().join("known_hosts");
    std::fs::copy(env("TEST_SFTP_KNOWN_HOSTS"), &kh).expect("copy");
    let st = std::process::Command::new("ssh-keygen")
        .arg("-H")
        .arg("-f")
        .arg(&kh)
        .output()
        .expect("ssh-keygen");
    assert!(st.status.success(), "{st:?}");
    let text = std::fs::read_to_string(&kh).expect("read");
    assert!(text.starts_with("|1|"), "not hashed: {text}");
    let mut cfg = key_config(&dir.path);
    cfg.known_hosts_path = Some(kh.to_string_lossy().into_owned());
    client(&cfg)
        .await
        .generations()
        .await
        .expect("hashed entry accepted");
}

/// A remote path the user may not write: a clear, non-retryable error naming the path.
#[tokio::test]
async fn remote_path_without_permission_is_a_clear_error() {
    let dir = RemoteDir::new("noperm");
    // The server's data dir is local: make a directory lstest cannot write into.
    std::fs::create_dir_all(&dir.path).expect("mkdir");
    std::fs::set_permissions(&dir.path, std::fs::Permissions::from_mode(0o555)).expect("chmod");
    let root = format!("{}/replica", dir.path);
    let c = client(&key_config(&root)).await;
    let g = generation("0000000000000abc");
    let e = c
        .write_snapshot(&g, 0, bytes(payload(10, 1)))
        .await
        .expect_err("no permission");
    let msg = e.to_string();
    assert!(msg.to_lowercase().contains("permission denied"), "{msg}");
    assert!(msg.contains(&dir.path), "{msg}");
    assert!(msg.contains("lstest@127.0.0.1:"), "{msg}");
    assert!(!e.is_retryable());
    std::fs::set_permissions(&dir.path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// Config validation: host and user are required, and a bad pinned key is rejected early.
#[tokio::test]
async fn config_errors_are_reported() {
    let mut cfg = key_config("/x");
    cfg.host = None;
    let e = SftpClient::from_replica_config(&cfg)
        .await
        .expect_err("no host");
    assert!(
        e.to_string().contains("host required for sftp replica"),
        "{e}"
    );
    let mut cfg = key_config("/x");
    cfg.user = None;
    let e = SftpClient::from_replica_config(&cfg)
        .await
        .expect_err("no user");
    assert!(
        e.to_string().contains("user required for sftp replica"),
        "{e}"
    );
    let mut cfg = key_config("/x");
    cfg.host_key = Some("not a key".into());
    let e = SftpClient::from_replica_config(&cfg)
        .await
        .expect_err("bad host key");
    assert!(e.to_string().contains("cannot parse host-key"), "{e}");
}

/// The URL form `sftp://USER:PASSWORD@HOST:PORT/abs/path` resolves into a working client.
#[tokio::test]
async fn url_form_with_password_works() {
    let dir = RemoteDir::new("url");
    let url = format!(
        "sftp://{}:{}@{}:{}{}",
        env("TEST_SFTP_USER"),
        env("TEST_SFTP_PASSWORD"),
        env("TEST_SFTP_HOST"),
        env("TEST_SFTP_PORT"),
        dir.path
    );
    let cfg = litestream_core::config::ReplicaConfig {
        url: Some(url),
        known_hosts_path: Some(env("TEST_SFTP_KNOWN_HOSTS")),
        ..Default::default()
    };
    let c = client(&cfg).await;
    assert_eq!(c.config().path, dir.path);
    let g = generation("0000000000000def");
    c.write_snapshot(&g, 0, bytes(payload(10, 1)))
        .await
        .expect("write");
    assert!(std::path::Path::new(&format!(
        "{}/generations/{g}/snapshots/00000000.snapshot.lz4",
        dir.path
    ))
    .exists());
}

/// The upload's source stream fails half way: the error says so, and the temporary file is
/// removed (the shared suite checks that nothing appears under the real name).
#[tokio::test]
async fn failing_source_stream_is_reported_and_leaves_no_temp_file() {
    let dir = RemoteDir::new("srcfail");
    let c = client(&key_config(&dir.path)).await;
    let g = generation("0000000000000f00");
    let e = c
        .write_snapshot(&g, 1, FailingSource::boxed(600 * 1024))
        .await
        .expect_err("source failure");
    assert!(e.to_string().contains("reading upload data"), "{e}");
    assert!(e.to_string().contains(FailingSource::MESSAGE), "{e}");
    assert!(
        tmp_files(&dir.path).is_empty(),
        "{:?}",
        tmp_files(&dir.path)
    );
}
