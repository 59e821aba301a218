//! The Litestream v0.5 keys of `litestream.yml` that this binary accepts but does nothing with:
//! `replicate` and the other commands log each by name instead of calling it unknown.

/// Litestream v0.5 keys accepted here without effect, with what they are (logged as a
/// warning naming the key). Top-level keys.
const UNSUPPORTED_V05_KEYS: &[(&str, &str)] = &[
    ("socket", "the control socket"),
    ("mcp-addr", "the MCP server"),
    ("heartbeat-url", "heartbeat pings"),
    ("heartbeat-interval", "heartbeat pings"),
    (
        "validation",
        "v0.5 validation (use per-replica validation-interval)",
    ),
    ("verify-compaction", "compaction verification"),
    ("shutdown-sync-timeout", "the shutdown sync timeout"),
    ("shutdown-sync-interval", "the shutdown sync interval"),
];

/// Per-database Litestream v0.5 keys accepted here without effect.
const UNSUPPORTED_V05_DB_KEYS: &[(&str, &str)] = &[
    ("dir", "directory replication"),
    ("pattern", "directory replication"),
    ("recursive", "directory replication"),
    ("watch", "directory replication"),
    ("meta-dir", "the v0.5 meta directory option (use meta-path)"),
    ("busy-timeout", "the busy timeout option"),
    (
        "truncate-page-n",
        "the v0.5 truncate threshold (use truncate-page-count)",
    ),
    ("max-sync-wal-bytes", "the sync size limit"),
    ("restore-if-db-not-exists", "restore on replicate start"),
];

/// What an unknown key that Litestream v0.5 knows stands for (`key` as reported by
/// `Config::unknown_keys`: `socket`, `dbs[0].dir`, ...), or `None` for a truly unknown key.
pub(crate) fn unsupported_v05_key(key: &str) -> Option<&'static str> {
    if let Some((_, what)) = UNSUPPORTED_V05_KEYS.iter().find(|(k, _)| *k == key) {
        return Some(what);
    }
    let (_, last) = key.rsplit_once('.')?;
    if key.contains(".replica") {
        return None;
    }
    UNSUPPORTED_V05_DB_KEYS
        .iter()
        .find(|(k, _)| *k == last)
        .map(|(_, what)| *what)
}

#[cfg(test)]
mod tests {
    use super::unsupported_v05_key;
    use litestream_core::config::Config;

    #[test]
    fn v05_keys_name_what_they_stand_for() {
        let cfg = Config::parse(
            "socket:\n  enabled: true\ndbs:\n  - path: /tmp/a.db\n    dir: /x\n    replica:\n      url: file:///tmp/r\n",
        )
        .unwrap();
        let unknown = cfg.unknown_keys();
        assert!(unknown.contains(&"socket".to_string()), "{unknown:?}");
        assert!(unknown.contains(&"dbs[0].dir".to_string()), "{unknown:?}");
        assert_eq!(unsupported_v05_key("socket"), Some("the control socket"));
        assert_eq!(
            unsupported_v05_key("dbs[0].dir"),
            Some("directory replication")
        );
        assert_eq!(unsupported_v05_key("dbs[0].replicas[0].dir"), None);
        assert_eq!(unsupported_v05_key("nonsense"), None);
    }
}
