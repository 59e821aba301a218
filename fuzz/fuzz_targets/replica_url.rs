//! The replica URL parser on arbitrary text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use litestream_core::url::{is_url, parse_replica_url, redact_url};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let _ = is_url(s);
    let _ = redact_url(s);
    let _ = parse_replica_url(s);
});
