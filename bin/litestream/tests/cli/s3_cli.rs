//! `s3` replicas through the `litestream` binary, against the local S3 test server (moto) and
//! the real Litestream v0.3.13: the docker-compose healthcheck restore in URL form with
//! credentials only in the environment, interop both ways through the same bucket (with a
//! first snapshot over one multipart part), and clear errors without secrets for an endpoint
//! nobody listens on and a bucket that does not exist.
//!
//! Compiled only with the `s3` cargo feature (the binary must contain the backend). Needs
//! `scripts/test.sh` (`TEST_S3_*`, `LITESTREAM_V0313_BIN`): a missing variable is a failure,
//! never a skip.
#![cfg(feature = "s3")]
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::common;
use crate::common::scenarios;
use crate::common::{
    all_rows, assert_exit, assert_files_equal, assert_integrity_ok, count_rows, insert,
    litestream_v0313, litestream_v0517, our_bin, output_text, sigint_and_wait, spawn_replicate,
    spawn_replicate_with, test_env, HEALTHCHECK,
};
use litestream_test_servers::{free_port, Moto};

fn env(name: &str) -> String {
    test_env(name, "the s3 CLI tests need the local S3 server")
}

/// Port of the shared S3 test server.
fn s3_port() -> String {
    env("TEST_S3_ENDPOINT")
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_string()
}

/// The s3 side of a case: a fresh key prefix in the shared bucket.
struct S3 {
    prefix: String,
}

/// A temp dir, a source db and a fresh key prefix in the shared bucket.
type Case = scenarios::Case<S3>;

impl Case {
    fn new(tag: &str) -> Case {
        let n = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        Case::with_replica(S3 {
            prefix: format!("s3-cli/{tag}-{:x}-{n:x}/app.sqlite", std::process::id()),
        })
    }

    /// The healthcheck's URL form: `s3://BUCKET.localhost:PORT/PREFIX` (path style, plain HTTP).
    fn url(&self) -> String {
        format!(
            "s3://{}.localhost:{}/{}",
            env("TEST_S3_BUCKET"),
            s3_port(),
            self.replica.prefix
        )
    }

    /// A v0.3.13-style config with the replica in the shared bucket.
    fn config(&self) -> PathBuf {
        let text = format!(
            "dbs:\n  - path: {db}\n    replicas:\n      - type: s3\n        bucket: {bucket}\n        \
             path: {prefix}\n        endpoint: {endpoint}\n        region: {region}\n        \
             force-path-style: true\n        access-key-id: {key}\n        \
             secret-access-key: {secret}\n        sync-interval: 500ms\n",
            db = self.db.display(),
            bucket = env("TEST_S3_BUCKET"),
            prefix = self.replica.prefix,
            endpoint = env("TEST_S3_ENDPOINT"),
            region = env("TEST_S3_REGION"),
            key = env("TEST_S3_ACCESS_KEY_ID"),
            secret = env("TEST_S3_SECRET_ACCESS_KEY"),
        );
        self.write_file("litestream.yml", &text)
    }
}

/// A ~7.5 MiB database before replication (first snapshot over one 5 MiB part), then a
/// round of > 1000 pages (a checkpoint, so a new WAL index) and small commits.
fn workload(case: &Case, bin: &Path, tag: &str) {
    case.create_db();
    insert(&case.db, 60, 128 << 10);
    let cfg = case.config();
    let log = case.path(&format!("replicate-{tag}.log"));
    let child = spawn_replicate(bin, &cfg, &log);
    std::thread::sleep(Duration::from_secs(3));
    insert(&case.db, 40, 128 << 10);
    std::thread::sleep(Duration::from_millis(2500));
    for _ in 0..10 {
        insert(&case.db, 5, 100);
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(3));
    sigint_and_wait(child, &log);
}

/// `restore` in URL mode with the shared server's credentials only in the environment (as
/// the healthcheck runs).
fn restore_url(bin: &Path, url: &str, out: &Path, extra: &[&str], secret: &str) -> Output {
    common::s3::restore_url(bin, url, out, extra, &env("TEST_S3_ACCESS_KEY_ID"), secret)
}

/// A replica written by the real v0.3.13: the healthcheck command restores it (byte-identical
/// to v0.3.13's own restore), exits 0 creating nothing when there is no replica, and exits 0
/// leaving an existing database alone (bytes and mtime).
#[test]
fn s3_healthcheck_restore_url_mode_with_env_credentials() {
    let case = Case::new("healthcheck");
    workload(&case, &litestream_v0313(), "v0313");
    let secret = env("TEST_S3_SECRET_ACCESS_KEY");
    let empty_url = format!("{}-nothing-here", case.url());
    let ours = scenarios::assert_healthcheck_restore(
        &case,
        &|out| restore_url(&our_bin(), &case.url(), out, HEALTHCHECK, &secret),
        &|out| restore_url(&our_bin(), &empty_url, out, HEALTHCHECK, &secret),
        None,
        "URL",
    );

    // Identical to v0.3.13's restore of the same replica.
    let theirs = case.path("theirs.db");
    let out = restore_url(&litestream_v0313(), &case.url(), &theirs, &[], &secret);
    assert_exit(&out, 0, "v0.3.13 restore");
    assert_files_equal(&theirs, &ours, "our restore vs v0.3.13's restore");
}

/// A replica we write (first snapshot over one multipart part, several WAL indexes) is
/// restored by the real v0.3.13 and by the real v0.5.17 (its URL form with `?endpoint=` and
/// `forcePathStyle=true`) through the same bucket, with every row, all three restores equal.
#[test]
fn s3_we_replicate_litestream_v0313_and_v0517_restore() {
    let case = Case::new("we-replicate");
    workload(&case, &our_bin(), "ours");
    let secret = env("TEST_S3_SECRET_ACCESS_KEY");
    scenarios::assert_restore_identical_to_v0313(
        &case,
        &|bin, out| restore_url(bin, &case.url(), out, &[], &secret),
        "our replica",
    );

    // v0.5.17 (aws-sdk-go-v2 breaks with AWS_CA_BUNDLE set, so restore_url removes it).
    let v05 = case.path("v0517.db");
    let url = format!(
        "s3://{}/{}?endpoint={}&forcePathStyle=true&region={}",
        env("TEST_S3_BUCKET"),
        case.replica.prefix,
        env("TEST_S3_ENDPOINT"),
        env("TEST_S3_REGION")
    );
    let out = restore_url(&litestream_v0517(), &url, &v05, &[], &secret);
    assert_exit(&out, 0, "v0.5.17 restore of our replica");
    assert_integrity_ok(&v05, "v0.5.17 restore");
    assert_eq!(count_rows(&v05), count_rows(&case.db));
    assert_eq!(
        all_rows(&v05),
        all_rows(&case.db),
        "v0.5.17 restore vs source"
    );
}

/// An endpoint nobody listens on and a bucket that does not exist: exit 1 with an error that
/// names bucket and endpoint, and the secret in no output.
#[test]
fn s3_bad_endpoint_and_missing_bucket_are_clear_errors_without_the_secret() {
    let case = Case::new("bad-input");
    let secret = "s3cr3t-cli-value-never-printed";

    let port = free_port();
    let url = format!("s3://lonely-bucket.localhost:{port}/app.sqlite");
    let out = restore_url(&our_bin(), &url, &case.path("a.db"), HEALTHCHECK, secret);
    assert_exit(&out, 1, "restore from an endpoint nobody listens on");
    let text = output_text(&out);
    assert!(text.contains("lonely-bucket"), "bucket not named:\n{text}");
    assert!(
        text.contains(&format!("localhost:{port}")),
        "endpoint not named:\n{text}"
    );
    assert!(!text.contains(secret), "secret leaked:\n{text}");

    let bucket = format!("no-such-bucket-{:x}", std::process::id());
    let url = format!("s3://{bucket}.localhost:{}/app.sqlite", s3_port());
    let out = restore_url(&our_bin(), &url, &case.path("b.db"), &[], secret);
    assert_exit(&out, 1, "restore from a bucket that does not exist");
    let text = output_text(&out);
    assert!(text.contains(&bucket), "bucket not named:\n{text}");
    assert!(text.contains(&s3_port()), "endpoint not named:\n{text}");
    assert!(!text.contains(secret), "secret leaked:\n{text}");
    assert!(!case.path("b.db").exists());
}

/// A private moto server (own free port, killed on drop) with IAM authentication switched on:
/// one IAM user with an allow-all policy and an access key, and `bucket` created, before
/// `POST /moto-api/reset-auth 0` makes moto check every later request's key and signature.
struct AuthMoto {
    port: u16,
    key: String,
    secret: String,
    _moto: Moto,
}

fn xml_value(resp: &str, tag: &str) -> String {
    let open = format!("<{tag}>");
    let start = resp
        .find(&open)
        .unwrap_or_else(|| panic!("no {tag} in {resp}"))
        + open.len();
    let end = start + resp[start..].find('<').unwrap();
    resp[start..end].to_string()
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl AuthMoto {
    fn start(bucket: &str, log: &Path) -> AuthMoto {
        let moto = Moto::start_logged(log);
        // Before auth is on, moto checks no signature; the Authorization header's scope only
        // routes the request to IAM.
        let iam = |body: &str| {
            let resp = moto.http(
                "POST",
                "/",
                "Content-Type: application/x-www-form-urlencoded\r\nAuthorization: \
                 AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/iam/aws4_request, \
                 SignedHeaders=host, Signature=0\r\n",
                &format!("{body}&Version=2010-05-08"),
            );
            assert!(resp.starts_with("HTTP/1.1 200"), "IAM {body}: {resp}");
            resp
        };
        iam("Action=CreateUser&UserName=litestream");
        let policy = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#;
        iam(&format!(
            "Action=PutUserPolicy&UserName=litestream&PolicyName=all&PolicyDocument={}",
            percent_encode(policy)
        ));
        let resp = iam("Action=CreateAccessKey&UserName=litestream");
        let key = xml_value(&resp, "AccessKeyId");
        let secret = xml_value(&resp, "SecretAccessKey");
        moto.create_bucket(bucket);
        let resp = moto.http(
            "POST",
            "/moto-api/reset-auth",
            "Content-Type: text/plain\r\n",
            "0",
        );
        assert!(resp.starts_with("HTTP/1.1 200"), "reset-auth: {resp}");
        AuthMoto {
            port: moto.port,
            key,
            secret,
            _moto: moto,
        }
    }
}

/// Wrong credentials against an S3 server that checks them (a private moto with IAM auth on):
/// a wrong secret for a valid key, and an unknown key, both exit 1 from `restore` with an
/// error naming bucket and endpoint and the secret in no output line; the right pair works
/// (control). `replicate` with a wrong secret in its config logs errors naming bucket and
/// endpoint, never the secret.
#[test]
fn s3_wrong_credentials_are_a_clear_error_without_the_secret() {
    let case = Case::new("wrong-creds");
    let bucket = "auth-bucket";
    let moto = AuthMoto::start(bucket, &case.path("moto.log"));
    let url = format!("s3://{bucket}.localhost:{}/app.sqlite", moto.port);
    let restore = |key: &str, secret: &str, out: &Path, extra: &[&str]| {
        common::s3::restore_url(&our_bin(), &url, out, extra, key, secret)
    };

    // Control: the right key and secret are accepted (no replica yet: exit 0, nothing made).
    let out = restore(&moto.key, &moto.secret, &case.path("ok.db"), HEALTHCHECK);
    assert_exit(&out, 0, "restore with the right credentials");
    assert!(!case.path("ok.db").exists());

    let wrong = "wR0ngSecretValueThatMustNeverBePrinted00";
    for (what, key) in [
        ("wrong secret", moto.key.as_str()),
        ("unknown key", "AKIAUNKNOWNKEY000000"),
    ] {
        let out_db = case.path("wrong.db");
        let out = restore(key, wrong, &out_db, HEALTHCHECK);
        assert_exit(&out, 1, what);
        let text = output_text(&out);
        assert!(text.contains(bucket), "{what}: bucket not named:\n{text}");
        assert!(
            text.contains(&format!("localhost:{}", moto.port)),
            "{what}: endpoint not named:\n{text}"
        );
        assert!(!text.contains(wrong), "{what}: secret leaked:\n{text}");
        assert!(
            !text.contains(&moto.secret),
            "{what}: real secret leaked:\n{text}"
        );
        assert!(!out_db.exists(), "{what}: created {}", out_db.display());
        eprintln!("{what}: {}", text.trim());
    }

    // replicate with a wrong secret in the config: errors name bucket and endpoint, never
    // the secret (in the log, at debug level too).
    case.create_db();
    insert(&case.db, 5, 100);
    let endpoint = format!("http://127.0.0.1:{}", moto.port);
    let cfg = case.path("wrong.yml");
    std::fs::write(
        &cfg,
        format!(
            "dbs:\n  - path: {db}\n    replicas:\n      - type: s3\n        bucket: {bucket}\n        \
             path: app.sqlite\n        endpoint: {endpoint}\n        region: us-east-1\n        \
             access-key-id: {key}\n        secret-access-key: {wrong}\n        \
             sync-interval: 200ms\n",
            db = case.db.display(),
            key = moto.key,
        ),
    )
    .unwrap();
    let log = case.path("replicate-wrong.log");
    let mut child = spawn_replicate_with(&our_bin(), &cfg, &log, &[("LITESTREAM_LOG", "debug")]);
    std::thread::sleep(Duration::from_secs(4));
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.lines()
            .any(|l| l.contains(bucket) && l.contains(&endpoint)),
        "no log line names bucket and endpoint:\n{text}"
    );
    assert!(
        !text.contains(wrong),
        "secret leaked into the replicate log:\n{text}"
    );
}
