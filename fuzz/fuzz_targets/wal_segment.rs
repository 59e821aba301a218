//! The WAL header parser and frame validator on arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use litestream_core::wal::{FrameValidator, WalHeader, WAL_HEADER_SIZE};

fuzz_target!(|data: &[u8]| {
    let _ = litestream_core::wal::db_page_size(data);
    let Ok(header) = WalHeader::parse(data) else {
        return;
    };
    let mut v = FrameValidator::new(header);
    for frame in data[WAL_HEADER_SIZE..].chunks(header.frame_size()) {
        if v.check(frame).is_err() {
            break;
        }
    }
});
