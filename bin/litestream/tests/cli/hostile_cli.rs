//! The command line against hostile or mistaken configuration (issue 13): security settings
//! that would be ignored are refused, and nothing secret is printed.
#![allow(clippy::unwrap_used)]

use std::fs;

use crate::common::*;

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    )
}

/// Run our binary with `args`, killing it (and failing) if it is still running after 20 s:
/// a `replicate` that accepted the config would run forever.
fn run_bounded(args: &[&str]) -> std::process::Output {
    let mut child = std::process::Command::new(our_bin())
        .args(args)
        .env_remove("LITESTREAM_CONFIG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > std::time::Duration::from_secs(20) {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("{args:?} still running after 20 s: {}", text(&out));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// A security setting on a replica that would not use it (here TLS `skip-verify` on a file
/// replica) is refused by every command instead of being parsed and ignored.
#[test]
fn a_security_setting_that_would_be_ignored_is_refused_by_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    create_db(&db);
    let cfg = dir.path().join("litestream.yml");
    fs::write(
        &cfg,
        format!(
            "dbs:\n  - path: {}\n    replicas:\n      - path: {}\n        skip-verify: true\n",
            db.display(),
            dir.path().join("replica").display()
        ),
    )
    .unwrap();
    let c = cfg.to_str().unwrap();
    let out = dir.path().join("out.db");
    let o = out.to_str().unwrap();
    let d = db.to_str().unwrap();
    for args in [
        vec!["replicate", "-config", c],
        vec!["restore", "-config", c, "-o", o, d],
        vec!["databases", "-config", c],
        vec!["generations", "-config", c, d],
    ] {
        let res = run_bounded(&args);
        assert_exit(&res, 1, &args.join(" "));
        let t = text(&res);
        assert!(
            t.contains("dbs[0].replicas[0].skip-verify"),
            "{args:?}: {t}"
        );
        assert!(
            t.contains("not supported for file replicas"),
            "{args:?}: {t}"
        );
    }
    assert!(!dir.path().join("replica").exists());
    assert!(!out.exists());
}

#[test]
fn config_parse_errors_do_not_print_expanded_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("litestream.yml");
    let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY";
    for (body, env_value) in [
        // A typo on the line after the secret.
        (
            "secret-access-key: $TEST_SECRET\n        retention: [\n",
            secret.to_string(),
        ),
        // The secret itself breaks the YAML.
        (
            "secret-access-key: $TEST_SECRET\n        retention: 1h\n",
            format!("{secret}: ["),
        ),
    ] {
        fs::write(
            &cfg,
            format!(
                "dbs:\n  - path: /tmp/app.db\n    replicas:\n      - url: s3://b/p\n        {body}"
            ),
        )
        .unwrap();
        let mut cmd = std::process::Command::new(our_bin());
        cmd.args(["databases", "-config", cfg.to_str().unwrap()])
            .env("TEST_SECRET", &env_value)
            .env_remove("LITESTREAM_CONFIG");
        let res = run(&mut cmd);
        assert_exit(&res, 1, body);
        let t = text(&res);
        assert!(t.contains("cannot parse config"), "{t}");
        assert!(t.contains("line "), "the error gives a position: {t}");
        assert_no_secret(&t, secret);
    }
}
