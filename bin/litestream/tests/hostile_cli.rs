//! The command line against hostile or mistaken configuration (issue 13): security settings
//! that would be ignored are refused, and nothing secret is printed.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs;

use common::*;

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    )
}

#[test]
fn age_encryption_in_config_is_refused_by_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    create_db(&db);
    let cfg = dir.path().join("litestream.yml");
    fs::write(
        &cfg,
        format!(
            "dbs:\n  - path: {}\n    replicas:\n      - path: {}\n        age:\n          \
             recipients: [age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p]\n",
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
        let res = run_bin(&our_bin(), &args);
        assert_exit(&res, 1, &args.join(" "));
        let t = text(&res);
        assert!(t.contains("dbs[0].replicas[0].age"), "{args:?}: {t}");
        assert!(t.contains("not supported"), "{args:?}: {t}");
    }
    assert!(
        !dir.path().join("replica").exists(),
        "replicated without encryption"
    );
    assert!(!out.exists());
}
