//! Unit tests of the metrics: a strict exposition parser, every name, health.

use super::*;
use litestream_test_servers::prometheus_text::{find, kind, parse_exposition};
use std::time::Duration;

#[test]
fn counts_accumulate() {
    record_operation("test-metrics", Operation::Put, 10);
    record_operation("test-metrics", Operation::Put, 5);
    let c = operation_counts()
        .into_iter()
        .find(|(t, o, _)| *t == "test-metrics" && *o == Operation::Put)
        .map(|(_, _, c)| c)
        .expect("counter");
    assert_eq!(
        c,
        OperationCount {
            total: 2,
            bytes: 15
        }
    );
}

#[test]
fn renders_valid_exposition_with_every_name() {
    let path = "/tmp/metrics-test/app \"quoted\"\\back\nline.db";
    let m = db(path);
    m.db_size.set(8192u64);
    m.wal_size.set(4152u32);
    m.total_wal_bytes.add(4152);
    m.shadow_wal_index.set(2u32);
    m.shadow_wal_size.set(8304u64);
    m.record_sync(Duration::from_millis(1500));
    m.record_sync_error(Duration::from_millis(10));
    let cp = m.checkpoint("PASSIVE");
    cp.count.inc();
    cp.seconds.add(0.25);
    m.checkpoint("RESTART").error_count.inc();
    let r = replica(path, "s3");
    r.wal_bytes.add(100);
    r.wal_index.set(2u32);
    r.wal_offset.set(4152u64);
    r.record_validation(true);
    r.mark_synced();
    record_operation("s3", Operation::Get, 7);

    let text = render_prometheus();
    let exp = parse_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    for f in FAMILIES {
        assert_eq!(kind(&exp, f.name), Some(f.kind.as_str()), "{}", f.name);
        assert!(text.contains(&format!("# HELP {} ", f.name)));
    }
    for name in [
        "litestream_db_size",
        "litestream_wal_size",
        "litestream_total_wal_bytes",
        "litestream_shadow_wal_index",
        "litestream_shadow_wal_size",
        "litestream_sync_count",
        "litestream_sync_error_count",
        "litestream_sync_seconds",
        "litestream_checkpoint_count",
        "litestream_checkpoint_error_count",
        "litestream_checkpoint_seconds",
        "litestream_replica_wal_bytes",
        "litestream_replica_wal_index",
        "litestream_replica_wal_offset",
        "litestream_replica_validation_total",
        "litestream_replica_operation_total",
        "litestream_replica_operation_bytes",
        "litestream_replica_lag_seconds",
    ] {
        assert!(kind(&exp, name).is_some(), "{name} missing");
    }
    let v = |n: &str, l: &[(&str, &str)]| {
        find(&exp, n, l)
            .unwrap_or_else(|| panic!("{n} {l:?} missing\n{text}"))
            .value
    };
    assert_eq!(v("litestream_db_size", &[("db", path)]), 8192.0);
    assert_eq!(v("litestream_sync_count", &[("db", path)]), 2.0);
    assert_eq!(v("litestream_sync_error_count", &[("db", path)]), 1.0);
    assert!((v("litestream_sync_seconds", &[("db", path)]) - 1.51).abs() < 1e-9);
    assert_eq!(
        v(
            "litestream_checkpoint_count",
            &[("db", path), ("mode", "PASSIVE")]
        ),
        1.0
    );
    assert_eq!(
        v(
            "litestream_checkpoint_error_count",
            &[("db", path), ("mode", "RESTART")]
        ),
        1.0
    );
    assert_eq!(
        v(
            "litestream_replica_validation_total",
            &[("db", path), ("name", "s3"), ("status", "ok")]
        ),
        1.0
    );
    assert_eq!(
        v(
            "litestream_replica_wal_offset",
            &[("db", path), ("name", "s3")]
        ),
        4152.0
    );
    let lag = v(
        "litestream_replica_lag_seconds",
        &[("db", path), ("name", "s3")],
    );
    assert!((0.0..5.0).contains(&lag), "{lag}");
    assert!(
        v(
            "litestream_replica_operation_total",
            &[("replica_type", "s3"), ("operation", "GET")]
        ) >= 1.0
    );
    unregister_db(path);
    assert!(!render_prometheus().contains("metrics-test/app"));
}

#[test]
fn health_reports_lagging_replicas() {
    let path = "/tmp/metrics-test/health.db";
    let fresh = replica(path, "fresh");
    fresh.mark_synced();
    let stale = replica(path, "stale");
    stale.mark_synced_at(SystemTime::now() - Duration::from_secs(120));
    let h: Vec<_> = replica_health(Duration::from_secs(60))
        .into_iter()
        .filter(|h| h.db == path)
        .collect();
    assert_eq!(h.len(), 2);
    assert!(h[0].healthy && h[0].name == "fresh" && h[0].synced);
    assert!(!h[1].healthy && h[1].name == "stale" && h[1].lag >= Duration::from_secs(119));
    unregister_db(path);
}

#[test]
fn values_and_escapes() {
    // Values and label escapes as the exposition format wants them (integers without a
    // fractional part, `NaN`; an infinity, which prometheus' encoder would write as `inf`,
    // is stored as the largest finite value).
    let m = db("/tmp/metrics-test/a\"b\\c\nd");
    m.db_size.set(3u32);
    m.wal_size.set(0.5f64);
    m.shadow_wal_size.set(f64::NAN);
    m.shadow_wal_index.set(f64::INFINITY);
    let text = render_prometheus();
    let label = "{db=\"/tmp/metrics-test/a\\\"b\\\\c\\nd\"}";
    for (name, value) in [
        ("litestream_db_size", "3"),
        ("litestream_wal_size", "0.5"),
        ("litestream_shadow_wal_size", "NaN"),
    ] {
        assert!(
            text.contains(&format!("\n{name}{label} {value}\n")),
            "{name}\n{text}"
        );
    }
    let exp = parse_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let index = find(
        &exp,
        "litestream_shadow_wal_index",
        &[("db", "/tmp/metrics-test/a\"b\\c\nd")],
    );
    assert_eq!(index.map(|s| s.value), Some(f64::MAX), "{text}");
    unregister_db("/tmp/metrics-test/a\"b\\c\nd");
    let c = FloatCounter::default();
    c.add(-1.0);
    c.add(f64::NAN);
    c.add(0.5);
    assert_eq!(c.get(), 0.5);
}

#[test]
fn an_embedder_registry_reports_the_same_values() {
    let own = prometheus::Registry::new();
    register(&own).expect("register into an empty registry");
    let path = "/tmp/metrics-test/embedder.db";
    db(path).sync_count.add(7);
    replica(path, "r").mark_synced();
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&own.gather())
        .expect("encode");
    let exp = parse_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let value = |n: &str, l: &[(&str, &str)]| find(&exp, n, l).map(|s| s.value);
    assert_eq!(value("litestream_sync_count", &[("db", path)]), Some(7.0));
    assert!(value(
        "litestream_replica_lag_seconds",
        &[("db", path), ("name", "r")]
    )
    .is_some());
    assert!(register(&own).is_err(), "a second registration is refused");
    unregister_db(path);
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&own.gather())
        .expect("encode");
    assert!(!text.contains("embedder.db"), "{text}");
}
