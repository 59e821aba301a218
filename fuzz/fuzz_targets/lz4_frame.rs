//! The LZ4 frame reader on arbitrary bytes: an error or data, never a panic, a hang or
//! unbounded memory (output is read in 64 KiB chunks and capped at 64 MiB).
#![no_main]

use std::io::Read;

use libfuzzer_sys::fuzz_target;
use litestream_core::lz4::Lz4FrameReader;

fuzz_target!(|data: &[u8]| {
    let mut r = Lz4FrameReader::new(data);
    let mut buf = vec![0u8; 64 << 10];
    let mut total = 0usize;
    while let Ok(n) = r.read(&mut buf) {
        if n == 0 || total > 64 << 20 {
            break;
        }
        total += n;
    }
});
