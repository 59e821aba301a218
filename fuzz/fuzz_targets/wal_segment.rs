//! The WAL header parser and frame validator on arbitrary bytes. An input that starts with
//! the LZ4 frame magic (every seed: the fixtures' `.wal.lz4` segments) is decompressed first,
//! up to 1 MiB and as far as it decodes, so that mutations reach the frames behind a valid,
//! checksummed WAL header instead of stopping at the header.
#![no_main]

use std::io::Read;

use libfuzzer_sys::fuzz_target;
use litestream_core::lz4::{Lz4FrameReader, FRAME_MAGIC};
use litestream_core::wal::{FrameValidator, WalHeader, WAL_HEADER_SIZE};

/// `data` decompressed as far as it decodes (at most 1 MiB).
fn decompressed(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut r = Lz4FrameReader::new(data);
    let mut buf = vec![0u8; 64 << 10];
    while out.len() < 1 << 20 {
        match r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    out
}

fn check(wal: &[u8]) {
    let _ = litestream_core::wal::db_page_size(wal);
    let Ok(header) = WalHeader::parse(wal) else {
        return;
    };
    let mut v = FrameValidator::new(header);
    for frame in wal[WAL_HEADER_SIZE..].chunks(header.frame_size()) {
        if v.check(frame).is_err() {
            break;
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() >= 4 && data[..4] == FRAME_MAGIC.to_le_bytes() {
        check(&decompressed(data));
    } else {
        check(data);
    }
});
