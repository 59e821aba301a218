//! Tests of the LTX writer and the compactor against the decoder and the spec-built writer.

use std::collections::BTreeMap;

use super::compact::compact;
use super::decoder::{lock_pgno, LtxDecoder, LtxHeader, HEADER_FLAG_NO_CHECKSUM};
use super::encoder::{write_snapshot, LtxEncoder};
use super::testutil::{ltx_file, page, Encoding};

fn encode(h: &LtxHeader, pages: &[(u32, Vec<u8>)]) -> Vec<u8> {
    let mut enc = LtxEncoder::new("test.ltx", Vec::new(), h).unwrap();
    for (p, d) in pages {
        enc.write_page(*p, d).unwrap();
    }
    let (out, sum) = enc.finish().unwrap();
    assert_eq!(sum.size, out.len() as u64);
    out
}

fn decode(b: &[u8]) -> (LtxHeader, Vec<(u32, Vec<u8>)>) {
    let mut d = LtxDecoder::new("test.ltx", b).unwrap();
    let mut buf = vec![0u8; d.header().page_size as usize];
    let mut out = Vec::new();
    while let Some(p) = d.next_page(&mut buf).unwrap() {
        out.push((p, buf.clone()));
    }
    (d.header().clone(), out)
}

/// xorshift pages: a mix of compressible and random content.
fn random_pages(
    seed: &mut u64,
    size: u32,
    pgnos: impl Iterator<Item = u32>,
) -> Vec<(u32, Vec<u8>)> {
    pgnos
        .map(|p| {
            let mut d = page(size, p);
            let n = (*seed % u64::from(size)) as usize;
            for b in d.iter_mut().take(n) {
                *seed ^= *seed << 13;
                *seed ^= *seed >> 7;
                *seed ^= *seed << 17;
                *b = *seed as u8;
            }
            (p, d)
        })
        .collect()
}

#[test]
fn round_trips_through_the_decoder_for_every_page_size() {
    let mut seed = 0x1234_5678_9abc_def1u64;
    for shift in 9..=16 {
        let size = 1u32 << shift;
        let snap = random_pages(&mut seed, size, 1..=9);
        let mut h = LtxHeader::new(size, 9, 1, 5, 1_700_000_000_123);
        h.wal_offset = 32 + 4 * (u64::from(size) + 24);
        h.wal_size = u64::from(size) + 24;
        h.wal_salt1 = 0xdead_beef;
        h.wal_salt2 = 7;
        let b = encode(&h, &snap);
        assert_eq!(decode(&b), (h, snap.clone()), "snapshot, page size {size}");
        let sparse = random_pages(&mut seed, size, [2u32, 3, 7, 40].into_iter());
        let h = LtxHeader::new(size, 40, 6, 6, 1_700_000_001_000);
        let b = encode(&h, &sparse);
        assert_eq!(decode(&b), (h, sparse), "L0, page size {size}");
    }
}

#[test]
fn output_is_stable_and_equals_the_spec_built_block_file() {
    let mut seed = 99u64;
    let pages = random_pages(&mut seed, 4096, [1u32, 2, 5, 300].into_iter());
    let h = LtxHeader::new(4096, 300, 3, 4, 1_795_690_816_369);
    let a = encode(&h, &pages);
    assert_eq!(a, encode(&h, &pages), "two encodings differ");
    assert_eq!(
        a,
        ltx_file(4096, 300, 3, 4, 1_795_690_816_369, &pages, Encoding::Block)
    );
    // Page flags 1 (block encoding), NoChecksum, pre/post-apply checksums 0.
    assert_eq!(&a[4..8], &HEADER_FLAG_NO_CHECKSUM.to_be_bytes());
    assert_eq!(&a[40..48], &[0u8; 8]);
    assert_eq!(&a[104..106], &[0, 1]);
    assert_eq!(&a[a.len() - 16..a.len() - 8], &[0u8; 8]);
}

#[test]
fn the_lock_page_is_never_stored() {
    let size = 512;
    let lock = lock_pgno(size);
    let h = LtxHeader::new(size, lock + 3, 7, 7, 1);
    let pages: Vec<_> = [lock - 1, lock, lock + 1]
        .iter()
        .map(|&p| (p, page(size, p)))
        .collect();
    let (_, got) = decode(&encode(&h, &pages));
    let nums: Vec<u32> = got.iter().map(|(p, _)| *p).collect();
    assert_eq!(nums, vec![lock - 1, lock + 1]);
}

#[test]
fn misuse_is_refused_naming_the_file() {
    let h = LtxHeader::new(512, 4, 1, 1, 1);
    let mut enc = LtxEncoder::new("x.ltx", Vec::new(), &h).unwrap();
    let err = enc.write_page(2, &page(512, 2)).unwrap_err().to_string();
    assert!(err.contains("x.ltx") && err.contains("skips"), "{err}");
    enc.write_page(1, &page(512, 1)).unwrap();
    let err = enc.write_page(1, &page(512, 1)).unwrap_err().to_string();
    assert!(err.contains("out of order"), "{err}");
    let err = enc
        .write_page(2, &page(512, 2)[..100])
        .unwrap_err()
        .to_string();
    assert!(err.contains("not the page size"), "{err}");
    let err = enc.finish().unwrap_err().to_string();
    assert!(err.contains("snapshot ends at page 1 of 4"), "{err}");
    let mut l0 = LtxEncoder::new("y.ltx", Vec::new(), &LtxHeader::new(512, 4, 2, 2, 1)).unwrap();
    let err = l0.write_page(5, &page(512, 5)).unwrap_err().to_string();
    assert!(err.contains("commit size"), "{err}");
    let mut bad = LtxHeader::new(512, 4, 2, 2, 1);
    bad.flags = 0;
    assert!(LtxEncoder::new("z.ltx", Vec::new(), &bad).is_err());
    let mut bad = LtxHeader::new(1000, 4, 2, 2, 1);
    assert!(LtxEncoder::new("z.ltx", Vec::new(), &bad).is_err());
    bad.page_size = 512;
    bad.wal_salt1 = 1;
    assert!(LtxEncoder::new("z.ltx", Vec::new(), &bad).is_err());
}

#[test]
fn snapshot_of_a_database_file_holds_every_page() {
    let mut seed = 5u64;
    let pages = random_pages(&mut seed, 1024, 1..=6);
    let db: Vec<u8> = pages.iter().flat_map(|(_, d)| d.clone()).collect();
    let h = LtxHeader::new(1024, 6, 1, 3, 42);
    let (b, _) = write_snapshot("db.ltx", &db[..], &h, Vec::new()).unwrap();
    assert_eq!(decode(&b).1, pages);
    let short = LtxHeader::new(1024, 7, 1, 3, 42);
    let err = write_snapshot("db.ltx", &db[..], &short, Vec::new()).unwrap_err();
    assert!(err.to_string().contains("page 7 of 7"), "{err}");
}

#[test]
fn compaction_keeps_the_newest_page_and_drops_pages_beyond_commit() {
    let mut seed = 77u64;
    let snap = random_pages(&mut seed, 512, 1..=8);
    let l0a = random_pages(&mut seed, 512, [2u32, 8, 9, 10].into_iter());
    let l0b = random_pages(&mut seed, 512, [3u32, 8].into_iter());
    let mut a = LtxHeader::new(512, 10, 3, 3, 2000);
    a.wal_offset = 32;
    a.wal_size = 536;
    a.wal_salt1 = 9;
    let files = [
        encode(&LtxHeader::new(512, 8, 1, 2, 1000), &snap),
        encode(&a, &l0a),
        encode(&LtxHeader::new(512, 9, 4, 5, 3000), &l0b),
    ];
    let mut want: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
    for set in [&snap, &l0a, &l0b] {
        for (p, d) in set.iter() {
            want.insert(*p, d.clone());
        }
    }
    want.retain(|p, _| *p <= 9);
    let mut decs: Vec<_> = files
        .iter()
        .map(|f| LtxDecoder::new("in.ltx", &f[..]).unwrap())
        .collect();
    let (out, _) = compact("out.ltx", &mut decs, Vec::new()).unwrap();
    let (h, pages) = decode(&out);
    assert_eq!(h, LtxHeader::new(512, 9, 1, 5, 3000));
    assert_eq!(pages, want.into_iter().collect::<Vec<_>>());
    // L1 from L0s only: not a snapshot, WAL fields dropped.
    let mut decs: Vec<_> = files[1..]
        .iter()
        .map(|f| LtxDecoder::new("in.ltx", &f[..]).unwrap())
        .collect();
    let (out, _) = compact("l1.ltx", &mut decs, Vec::new()).unwrap();
    let (h, pages) = decode(&out);
    assert_eq!(h, LtxHeader::new(512, 9, 3, 5, 3000));
    let nums: Vec<u32> = pages.iter().map(|(p, _)| *p).collect();
    assert_eq!(nums, vec![2, 3, 8, 9]);
    // A gap in the TXIDs is refused.
    let mut decs: Vec<_> = [&files[0], &files[2]]
        .iter()
        .map(|f| LtxDecoder::new("in.ltx", &f[..]).unwrap())
        .collect();
    let err = compact("gap.ltx", &mut decs, Vec::new())
        .unwrap_err()
        .to_string();
    assert!(err.contains("non-contiguous"), "{err}");
}

#[test]
fn l0_from_a_wal_range_keeps_the_newest_frame_and_the_range_fields() {
    use crate::wal::{encode_frame, encode_header, WalHeader};
    let hb = encode_header(false, 1024, 3, (0xaabb, 0xccdd));
    let wh = WalHeader::parse(&hb).unwrap();
    let mut wal = hb.to_vec();
    let mut sum = wh.checksum;
    // Transaction A (pages 1, 2; commit 2), then B (3, 2 again, 4; commit 3: page 4 dropped).
    for (pgno, commit, seed) in [(1, 0, 1), (2, 2, 2), (3, 0, 3), (2, 0, 4), (4, 3, 5)] {
        let (f, s) = encode_frame(&wh, sum, pgno, commit, &page(1024, seed));
        wal.extend_from_slice(&f);
        sum = s;
    }
    let frame = 24 + 1024u64;
    let (b, h, _) = super::encoder::write_wal_range(
        "wal.ltx",
        std::io::Cursor::new(&wal),
        32 + 2 * frame,
        3 * frame,
        7,
        99,
        Vec::new(),
    )
    .unwrap();
    let mut want = LtxHeader::new(1024, 3, 7, 7, 99);
    (
        want.wal_offset,
        want.wal_size,
        want.wal_salt1,
        want.wal_salt2,
    ) = (32 + 2 * frame, 3 * frame, 0xaabb, 0xccdd);
    assert_eq!(h, want);
    assert_eq!(
        decode(&b),
        (want, vec![(2, page(1024, 4)), (3, page(1024, 3))])
    );
    let cur = std::io::Cursor::new(&wal);
    let err = super::encoder::write_wal_range("x", cur, 32, frame, 2, 1, Vec::new()).unwrap_err();
    assert!(err.to_string().contains("commit frame"), "{err}");
    let cur = std::io::Cursor::new(&wal);
    let err = super::encoder::write_wal_range("x", cur, 40, frame, 2, 1, Vec::new()).unwrap_err();
    assert!(err.to_string().contains("whole number"), "{err}");
}
