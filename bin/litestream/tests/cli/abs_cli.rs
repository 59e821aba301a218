//! `abs` replicas through the `litestream` binary, against Azurite and the real Litestream
//! v0.3.13: healthcheck restore (config file and URL with `?endpoint=`), interop both ways
//! with a > 8 MiB snapshot and several WAL indexes, bad credentials / missing container, and
//! an Azurite restart during `replicate`.
//!
//! Compiled only with the `abs` cargo feature (the binary must contain the backend). Needs
//! `scripts/test.sh` (`TEST_ABS_*`, `TEST_SERVERS_DIR`, `LITESTREAM_V0313_BIN`): a missing
//! variable is a failure, never a skip.
#![cfg(feature = "abs")]
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::common::scenarios::{self, Writer};
use crate::common::{
    assert_no_secret, describe, our_bin, output_text, replicate_briefly, restore_config,
    restore_url, skip_if_our_bin_overridden, test_env, HEALTHCHECK,
};
use litestream_test_servers::Azurite;

fn env(name: &str) -> String {
    test_env(name, "the abs CLI tests need Azurite")
}

fn unique(tag: &str) -> String {
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("test-abs-cli/{tag}-{:x}-{:x}", std::process::id(), n)
}

/// The abs side of a case: a replica prefix in a container, the endpoint and the key.
struct Abs {
    prefix: String,
    endpoint: String,
    account_key: String,
    container: String,
}

/// Everything one test needs: a temp dir, a source db, a replica prefix and config files.
type Case = scenarios::Case<Abs>;

impl Case {
    fn new(tag: &str) -> Case {
        Self::with(tag, &env("TEST_ABS_ENDPOINT"), &env("TEST_ABS_CONTAINER"))
    }

    fn with(tag: &str, endpoint: &str, container: &str) -> Case {
        Case::with_replica(Abs {
            prefix: unique(tag),
            endpoint: endpoint.to_string(),
            account_key: env("TEST_ABS_ACCOUNT_KEY"),
            container: container.to_string(),
        })
    }

    /// A v0.3.13-style config file for this case (optionally with another key).
    fn config(&self, name: &str, key: Option<&str>) -> PathBuf {
        let text = format!(
            "dbs:\n  - path: {db}\n    monitor-interval: 100ms\n    replicas:\n      - type: abs\n        account-name: {acct}\n        account-key: {key}\n        bucket: {container}\n        path: {prefix}\n        endpoint: {endpoint}\n        sync-interval: 200ms\n",
            db = self.db.display(),
            acct = env("TEST_ABS_ACCOUNT_NAME"),
            key = key.unwrap_or(&self.replica.account_key),
            container = self.replica.container,
            prefix = self.replica.prefix,
            endpoint = self.replica.endpoint,
        );
        self.write_file(name, &text)
    }

    fn url(&self) -> String {
        format!(
            "abs://{}@{}/{}?endpoint={}",
            env("TEST_ABS_ACCOUNT_NAME"),
            self.replica.container,
            self.replica.prefix,
            self.replica.endpoint
        )
    }
}

/// A replica written by the real v0.3.13; our healthcheck restore from the config file restores
/// it, leaves an existing db alone, and exits 0 for an empty prefix.
#[test]
fn abs_healthcheck_restore_config_mode() {
    let case = Case::new("hc-config");
    let cfg = case.config("litestream.yml", None);
    let empty = Case {
        db: case.db.clone(),
        ..Case::new("hc-config-empty")
    };
    let empty_cfg = empty.config("empty.yml", None);
    scenarios::healthcheck_restore_config_mode(&case, &cfg, &empty_cfg);
}

/// URL mode `abs://ACCOUNT@CONTAINER/PATH?endpoint=…` with the key only in
/// `LITESTREAM_AZURE_ACCOUNT_KEY`: restores a v0.3.13 replica, leaves an existing db alone,
/// exits 0 for an empty prefix, and never prints the key.
#[test]
fn abs_healthcheck_restore_url_mode_with_endpoint() {
    if skip_if_our_bin_overridden("Litestream v0.3.13 has no ?endpoint= for abs URLs") {
        return;
    }
    let case = Case::new("hc-url");
    let cfg = case.config("litestream.yml", None);
    scenarios::seed_with_v0313(&case, &cfg, 100, 0);
    let empty = Case::new("hc-url-empty");
    let restore = |url: &str, out: &Path| {
        restore_url(
            &our_bin(),
            url,
            out,
            HEALTHCHECK,
            &[(
                "LITESTREAM_AZURE_ACCOUNT_KEY",
                Some(&case.replica.account_key),
            )],
        )
    };
    scenarios::assert_healthcheck_restore(
        &case,
        &|out| restore(&case.url(), out),
        &|out| restore(&empty.url(), out),
        Some(&case.replica.account_key),
        "URL",
    );
}

/// v0.3.13 replicates; our restore is byte-identical to v0.3.13's own restore.
#[test]
fn abs_litestream_v0313_replicates_we_restore_identically() {
    let case = Case::new("interop-theirs");
    let cfg = case.config("litestream.yml", None);
    scenarios::interop_through_config(&case, &cfg, Writer::V0313);
}

/// We replicate; v0.3.13 restores it, identical to ours.
#[test]
fn abs_we_replicate_litestream_v0313_restores() {
    let case = Case::new("interop-ours");
    let cfg = case.config("litestream.yml", None);
    scenarios::interop_through_config(&case, &cfg, Writer::Ours);
}

/// Why the clear-error tests skip against the real v0.3.13.
const NAMES_SKIP: &str =
    "v0.3.13's message names neither account nor container (deliberate difference)";

/// Our `restore -config cfg` fails with an error naming the account and `container`, and none
/// of `secrets` in its output.
fn assert_restore_is_clear_error(case: &Case, cfg: &Path, container: &str, secrets: &[&str]) {
    let out = restore_config(&our_bin(), cfg, &case.db, &case.path("out.db"), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let text = output_text(&out);
    assert!(text.contains("devstoreaccount1"), "{}", describe(&out));
    assert!(text.contains(container), "{}", describe(&out));
    for secret in secrets {
        assert_no_secret(&text, secret);
    }
}

/// A wrong account key: restore fails naming account and container; neither restore nor
/// replicate prints either key.
#[test]
fn abs_wrong_account_key_is_a_clear_error_without_the_key() {
    if skip_if_our_bin_overridden(NAMES_SKIP) {
        return;
    }
    let case = Case::new("badkey");
    let wrong = "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktd3Jvbmcta2V5LXdyb25nLWtleQ==";
    let cfg = case.config("litestream.yml", Some(wrong));
    case.create_db();
    let container = &case.replica.container;
    assert_restore_is_clear_error(&case, &cfg, container, &[wrong, &case.replica.account_key]);

    // replicate logs the failure the same way and never prints the key.
    let log = case.path("replicate.log");
    let text = replicate_briefly(&our_bin(), &cfg, &case.db, &log);
    assert!(
        !text.contains(wrong),
        "key leaked into replicate log:\n{text}"
    );
    assert!(
        text.contains("devstoreaccount1") && text.contains(container.as_str()),
        "{text}"
    );
}

/// A container that does not exist: restore fails naming account and container, without the
/// key.
#[test]
fn abs_missing_container_is_a_clear_error() {
    if skip_if_our_bin_overridden(NAMES_SKIP) {
        return;
    }
    let container = "no-such-container-cli";
    let case = Case::with("nocontainer", &env("TEST_ABS_ENDPOINT"), container);
    let cfg = case.config("litestream.yml", None);
    case.create_db();
    assert_restore_is_clear_error(&case, &cfg, container, &[&case.replica.account_key]);
}

/// Azurite (a private one) is stopped during `replicate` and restarted a few seconds later:
/// replication resumes by itself and nothing committed is lost (checked with our restore and
/// v0.3.13's).
#[test]
fn abs_replication_survives_azurite_restart() {
    let data_root = tempfile::tempdir().unwrap();
    let mut az = Azurite::start(&data_root.path().join("azurite"));
    let container = "fault";
    az.create_container(container);

    let case = Case::with("fault", &az.endpoint(), container);
    let cfg = case.config("litestream.yml", None);
    scenarios::replication_survives_server_restart(&case, &cfg, &mut az);
    az.stop();
}
