//! SFTP host keys in a fresh container (issue 14): the healthcheck's restore in the seed's URL
//! form (`sftp://USER:PASSWORD@HOST:PORT/path`, nothing else), `HOME` an empty directory, against
//! a private sshd whose host key the test changes.
//!
//! First contact trusts the key and remembers it beside the database
//! (`.<db>-litestream/known_hosts`); a changed key is then refused with both fingerprints and
//! the line that accepts it, with nothing written; strict mode refuses an unknown key; a key
//! pinned in the URL (`?host-key=SHA256:...`) or in `LITESTREAM_SFTP_HOST_KEY` is the only one
//! accepted. Needs `scripts/test.sh` (`TEST_SFTP_*`): a missing variable is a failure.
#![cfg(feature = "sftp")]
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::{
    assert_exit, assert_files_equal, assert_no_secret, describe, file_url, fixture_dir, our_bin,
    output_text, restore_url, test_env, HEALTHCHECK,
};
use litestream_sftp::{fingerprint, parse_host_key};
use litestream_test_servers::PrivateSshd;

fn env(name: &str) -> String {
    test_env(name, "the sftp host key tests need the local sshd")
}

fn fp(key: &str) -> String {
    fingerprint(&parse_host_key(key).unwrap())
}

/// A copy of a fixture replica under the sshd's root, removed on drop.
struct Remote(PathBuf);

impl Remote {
    fn fixture(tag: &str) -> Remote {
        let dst = PathBuf::from(env("TEST_SFTP_ROOT")).join(format!(
            "hostkeys-{tag}-{}-{:x}",
            std::process::id(),
            rand_suffix()
        ));
        let st = Command::new("cp")
            .arg("-r")
            .arg(fixture_dir("multi-index").join("replica"))
            .arg(&dst)
            .status()
            .unwrap();
        assert!(st.success(), "copy fixture to {}", dst.display());
        Remote(dst)
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// The healthcheck restore, URL form, with `HOME` empty and the given extra environment.
fn healthcheck(url: &str, out: &Path, home: &Path, envs: &[(&str, Option<&str>)]) -> Output {
    let mut all: Vec<(&str, Option<&str>)> = vec![
        ("HOME", Some(home.to_str().unwrap())),
        ("LITESTREAM_SFTP_HOST_KEY", None),
        ("LITESTREAM_SFTP_STRICT_HOST_KEY_CHECKING", None),
    ];
    all.extend_from_slice(envs);
    restore_url(&our_bin(), url, out, HEALTHCHECK, &all)
}

#[test]
fn sftp_host_key_trusted_on_first_use_remembered_and_change_refused() {
    let mut sshd = PrivateSshd::start();
    let remote = Remote::fixture("tofu");
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let data = tmp.path().join("data");
    fs::create_dir_all(&home).unwrap();
    fs::create_dir_all(&data).unwrap();
    let password = env("TEST_SFTP_PASSWORD");
    let url = format!(
        "sftp://{}:{password}@127.0.0.1:{}{}",
        env("TEST_SFTP_USER"),
        sshd.port,
        remote.0.display()
    );
    let db = data.join("app.db");
    let store = data.join(".app.db-litestream").join("known_hosts");
    let expected = tmp.path().join("expected.db");
    let out = restore_url(
        &our_bin(),
        &file_url(&fixture_dir("multi-index").join("replica")),
        &expected,
        &[],
        &[],
    );
    assert_exit(&out, 0, "file restore of the fixture");

    // 1. First contact, HOME empty: trusted, fingerprint logged, key remembered beside the db.
    let old_key = sshd.host_key();
    let out = healthcheck(&url, &db, &home, &[]);
    assert_exit(&out, 0, "first contact");
    let text = output_text(&out);
    assert!(
        text.contains(&fp(&old_key)),
        "fingerprint not logged:\n{text}"
    );
    assert_no_secret(&text, &password);
    assert_files_equal(&expected, &db, "restored over sftp on first contact");
    let remembered = fs::read_to_string(&store).unwrap();
    assert_eq!(
        remembered,
        format!("[127.0.0.1]:{} {old_key}\n", sshd.port),
        "store {}",
        store.display()
    );
    assert_eq!(fs::read_dir(&home).unwrap().count(), 0, "HOME was written");

    // 2. Same key again (volume kept, database lost): accepted silently.
    fs::remove_file(&db).unwrap();
    let out = healthcheck(&url, &db, &home, &[]);
    assert_exit(&out, 0, "known key");
    assert!(
        !output_text(&out).contains("first use"),
        "{}",
        describe(&out)
    );
    assert!(db.exists());

    // 3. The server's key changes: refused, both fingerprints, the accept line, nothing written.
    let new_key = sshd.change_host_key();
    fs::remove_file(&db).unwrap();
    let out = healthcheck(&url, &db, &home, &[]);
    assert_exit(&out, 1, "changed key");
    let text = output_text(&out);
    assert!(
        text.contains("HOST KEY CHANGED")
            && text.contains(&fp(&old_key))
            && text.contains(&fp(&new_key)),
        "{text}"
    );
    assert_no_secret(&text, &password);
    assert!(!db.exists(), "restored despite a changed host key");
    let leftovers: Vec<_> = fs::read_dir(&data).unwrap().flatten().collect();
    assert_eq!(leftovers.len(), 1, "{leftovers:?}");
    assert_eq!(fs::read_to_string(&store).unwrap(), remembered);

    // The one line the error gives accepts the new key.
    let line = text
        .split("accept the new one with: ")
        .nth(1)
        .and_then(|t| t.lines().next())
        .unwrap_or_else(|| panic!("no accept line in:\n{text}"));
    let line = line.trim_end_matches(['"', '}', ' ']).replace("\\'", "'");
    let st = Command::new("sh").arg("-c").arg(&line).status().unwrap();
    assert!(st.success(), "{line}");
    let out = healthcheck(&url, &db, &home, &[]);
    assert_exit(&out, 0, "after accepting the new key");
    assert_files_equal(&expected, &db, "restored after accepting the new key");

    // 4. Pins: a fingerprint in the URL, or a key in LITESTREAM_SFTP_HOST_KEY, is the only
    //    key accepted, whatever the store says.
    fs::remove_file(&db).unwrap();
    let pinned_old = format!("{url}?host-key={}", fp(&old_key));
    let out = healthcheck(&pinned_old, &db, &home, &[]);
    assert_exit(&out, 1, "URL pin of the old key");
    assert!(
        output_text(&out).contains("host key mismatch"),
        "{}",
        describe(&out)
    );
    assert!(!db.exists());
    let out = healthcheck(
        &url,
        &db,
        &home,
        &[("LITESTREAM_SFTP_HOST_KEY", Some(old_key.as_str()))],
    );
    assert_exit(&out, 1, "env pin of the old key");
    assert!(!db.exists());
    let pinned_new = format!("{url}?host-key={}", fp(&new_key));
    let out = healthcheck(&pinned_new, &db, &home, &[]);
    assert_exit(&out, 0, "URL pin of the new key");
    assert!(db.exists());
}

#[test]
fn sftp_strict_mode_refuses_unknown_key_and_pin_works() {
    let sshd = PrivateSshd::start();
    let remote = Remote::fixture("strict");
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let data = tmp.path().join("data");
    fs::create_dir_all(&home).unwrap();
    fs::create_dir_all(&data).unwrap();
    let url = format!(
        "sftp://{}:{}@127.0.0.1:{}{}",
        env("TEST_SFTP_USER"),
        env("TEST_SFTP_PASSWORD"),
        sshd.port,
        remote.0.display()
    );
    let db = data.join("app.db");
    let key = sshd.host_key();

    let strict = [("LITESTREAM_SFTP_STRICT_HOST_KEY_CHECKING", Some("true"))];
    let out = healthcheck(&url, &db, &home, &strict);
    assert_exit(&out, 1, "strict mode, unknown key");
    let text = output_text(&out);
    assert!(
        text.contains("unknown host key") && text.contains(&fp(&key)) && text.contains("strict"),
        "{text}"
    );
    assert_eq!(fs::read_dir(&data).unwrap().count(), 0, "strict mode wrote");

    let out = healthcheck(
        &format!("{url}?strict-host-key-checking=true"),
        &db,
        &home,
        &[],
    );
    assert_exit(&out, 1, "strict mode by URL");
    assert_eq!(fs::read_dir(&data).unwrap().count(), 0, "strict mode wrote");

    // A pinned key works in strict mode (URL: the key itself, its space percent-encoded).
    let out = healthcheck(
        &format!("{url}?host-key={}", key.replace(' ', "%20")),
        &db,
        &home,
        &strict,
    );
    assert_exit(&out, 0, "pinned key, strict");
    assert!(db.exists());
}
