//! A minimal LTX writer for unit tests (both page encodings), built from the spec.

use super::crc64::Crc64;
use super::decoder::{CHECKSUM_FLAG, HEADER_FLAG_NO_CHECKSUM, HEADER_SIZE, PAGE_FLAG_SIZE};

/// Page encoding of a test file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    /// v0.5.0–0.5.15: one LZ4 frame per page.
    Frame,
    /// v0.5.16+: size prefix + raw LZ4 block.
    Block,
}

/// Build a NoChecksum LTX file.
pub(crate) fn ltx_file(
    page_size: u32,
    commit: u32,
    min: u64,
    max: u64,
    ts_ms: i64,
    pages: &[(u32, Vec<u8>)],
    enc: Encoding,
) -> Vec<u8> {
    let mut out = Vec::new();
    let mut crc = Crc64::new();
    let mut h = [0u8; HEADER_SIZE];
    h[0..4].copy_from_slice(b"LTX1");
    h[4..8].copy_from_slice(&HEADER_FLAG_NO_CHECKSUM.to_be_bytes());
    h[8..12].copy_from_slice(&page_size.to_be_bytes());
    h[12..16].copy_from_slice(&commit.to_be_bytes());
    h[16..24].copy_from_slice(&min.to_be_bytes());
    h[24..32].copy_from_slice(&max.to_be_bytes());
    h[32..40].copy_from_slice(&ts_ms.to_be_bytes());
    out.extend_from_slice(&h);
    crc.update(&h);
    let mut index = Vec::new();
    for (pgno, data) in pages {
        let start = out.len() as u64;
        let flags = if enc == Encoding::Block {
            PAGE_FLAG_SIZE
        } else {
            0
        };
        let mut ph = pgno.to_be_bytes().to_vec();
        ph.extend_from_slice(&flags.to_be_bytes());
        out.extend_from_slice(&ph);
        crc.update(&ph);
        match enc {
            Encoding::Block => {
                let c = lz4_flex::block::compress(data);
                let sz = (c.len() as u32).to_be_bytes();
                out.extend_from_slice(&sz);
                crc.update(&sz);
                out.extend_from_slice(&c);
            }
            Encoding::Frame => out.extend_from_slice(&crate::lz4::compress_to_vec(data)),
        }
        crc.update(data);
        index.push((*pgno, start, out.len() as u64 - start));
    }
    out.extend_from_slice(&[0u8; 6]);
    crc.update(&[0u8; 6]);
    let mut idx = Vec::new();
    for (p, o, s) in index {
        for v in [u64::from(p), o, s] {
            put_uvarint(&mut idx, v);
        }
    }
    idx.push(0);
    idx.extend_from_slice(&(idx.len() as u64).to_be_bytes());
    out.extend_from_slice(&idx);
    crc.update(&idx);
    out.extend_from_slice(&[0u8; 8]);
    crc.update(&[0u8; 8]);
    out.extend_from_slice(&(crc.finish() | CHECKSUM_FLAG).to_be_bytes());
    out
}

fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A page of `size` bytes filled from `seed`.
pub(crate) fn page(size: u32, seed: u32) -> Vec<u8> {
    (0..size)
        .map(|i| ((i / 7).wrapping_mul(seed.wrapping_add(13)) % 251) as u8)
        .collect()
}
