//! The config loader (after env expansion) on arbitrary text, every replica resolved.
#![no_main]

use libfuzzer_sys::fuzz_target;
use litestream_core::config::{expand_with, Config};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let text = expand_with(text, |name| name.to_string());
    if let Ok(cfg) = Config::parse(&text) {
        for db in &cfg.dbs {
            for r in db.all_replicas() {
                let _ = r.resolve();
            }
        }
        let _ = format!("{cfg:?}");
    }
});
