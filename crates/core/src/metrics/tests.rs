//! Unit tests of the metrics: a strict exposition parser, every name, health.

use super::*;
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

/// A sample line parsed by [`parse_exposition`].
#[derive(Debug)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

fn is_name(s: &str) -> bool {
    let mut cs = s.chars();
    matches!(cs.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && cs.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// A strict parser of the text format: returns (types by family, samples) or an error
/// naming the offending line.
#[allow(clippy::type_complexity)]
fn parse_exposition(text: &str) -> Result<(BTreeMap<String, String>, Vec<Sample>), String> {
    let mut types = BTreeMap::new();
    let mut helps = BTreeMap::new();
    let mut samples = Vec::new();
    if !text.ends_with('\n') {
        return Err("no trailing newline".into());
    }
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let kw = parts.next().unwrap_or("");
            let name = parts.next().ok_or(format!("bad comment: {line}"))?;
            let arg = parts.next().ok_or(format!("bad comment: {line}"))?;
            if !is_name(name) {
                return Err(format!("bad name: {line}"));
            }
            match kw {
                "TYPE" => {
                    if !matches!(
                        arg,
                        "counter" | "gauge" | "histogram" | "summary" | "untyped"
                    ) {
                        return Err(format!("bad type: {line}"));
                    }
                    if types.insert(name.to_string(), arg.to_string()).is_some() {
                        return Err(format!("duplicate TYPE: {line}"));
                    }
                }
                "HELP" if helps.insert(name.to_string(), arg.to_string()).is_some() => {
                    return Err(format!("duplicate HELP: {line}"));
                }
                _ => {}
            }
            continue;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name_end = line.find(['{', ' ']).ok_or(format!("no value: {line}"))?;
        let name = &line[..name_end];
        if !is_name(name) {
            return Err(format!("bad metric name: {line}"));
        }
        let mut rest = &line[name_end..];
        let mut labels = Vec::new();
        if let Some(r) = rest.strip_prefix('{') {
            let mut chars = r.char_indices().peekable();
            let end: usize;
            loop {
                // label name
                let start = match chars.peek() {
                    Some((_, '}')) => {
                        end = chars.next().map(|(i, _)| i).unwrap_or(0) + 1;
                        break;
                    }
                    Some((i, _)) => *i,
                    None => return Err(format!("unterminated labels: {line}")),
                };
                let eq = r[start..].find('=').ok_or(format!("bad label: {line}"))? + start;
                let lname = &r[start..eq];
                if !is_name(lname) || lname.contains(':') {
                    return Err(format!("bad label name {lname:?}: {line}"));
                }
                while chars.peek().is_some_and(|(i, _)| *i <= eq) {
                    chars.next();
                }
                if chars.next().map(|(_, c)| c) != Some('"') {
                    return Err(format!("label value not quoted: {line}"));
                }
                let mut val = String::new();
                loop {
                    match chars.next() {
                        Some((_, '\\')) => match chars.next() {
                            Some((_, '\\')) => val.push('\\'),
                            Some((_, '"')) => val.push('"'),
                            Some((_, 'n')) => val.push('\n'),
                            _ => return Err(format!("bad escape: {line}")),
                        },
                        Some((_, '"')) => break,
                        Some((_, '\n')) | None => {
                            return Err(format!("unterminated value: {line}"))
                        }
                        Some((_, c)) => val.push(c),
                    }
                }
                labels.push((lname.to_string(), val));
                match chars.peek() {
                    Some((_, ',')) => {
                        chars.next();
                    }
                    Some((_, '}')) => {}
                    _ => return Err(format!("bad label separator: {line}")),
                }
            }
            rest = &r[end..];
        }
        let value = rest
            .strip_prefix(' ')
            .ok_or(format!("no space before value: {line}"))?;
        let value = value.split(' ').next().unwrap_or("");
        let value: f64 = match value {
            "NaN" => f64::NAN,
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().map_err(|_| format!("bad value: {line}"))?,
        };
        if !types.contains_key(name) {
            return Err(format!("sample before its TYPE: {line}"));
        }
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    Ok((types, samples))
}

fn find<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Option<&'a Sample> {
    samples.iter().find(|s| {
        s.name == name
            && s.labels.len() == labels.len()
            && labels
                .iter()
                .all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v))
    })
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
    let (types, samples) = parse_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    for f in FAMILIES {
        assert_eq!(
            types.get(f.name).map(String::as_str),
            Some(f.kind.as_str()),
            "{}",
            f.name
        );
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
        assert!(types.contains_key(name), "{name} missing");
    }
    let v = |n: &str, l: &[(&str, &str)]| {
        find(&samples, n, l)
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
    let (_, samples) = parse_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let index = find(
        &samples,
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
    let (_, samples) = parse_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let value = |n: &str, l: &[(&str, &str)]| find(&samples, n, l).map(|s| s.value);
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
