//! The LTX reader on arbitrary bytes, then the LTX restore through the in-memory replica.
//!
//! 1. [`LtxDecoder`] decodes the input as one LTX file to its end or to its first error.
//! 2. If the header parses (and the decoder accepted the file, or for one input length in
//!    eight, so that most of the time goes to the decoder), the input is stored as an LTX file under the key its TXIDs name
//!    (level 9 for a snapshot, else level 0 after a small valid snapshot that ends just
//!    before it) and restored with `restore_any`. Every run ends in a database or an error
//!    naming a file; never a panic, and a restored database has the size the header claims.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use litestream_core::ltx::decoder::{lock_pgno, LtxDecoder, LtxHeader, HEADER_SIZE};
use litestream_core::ltx::detect::{restore_any, AnyRestoreOutcome};
use litestream_core::ltx::encoder::LtxEncoder;
use litestream_core::ltx::keys::file_key;
use litestream_core::restore::RestoreOptions;
use litestream_core::MemoryClient;
use litestream_core::ReplicaClient;
use time::OffsetDateTime;

/// One runtime for every run (building one per input would dominate the time).
static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();

/// Decode `data` page by page; the number of pages, or the error.
fn decode(data: &[u8]) -> Option<u64> {
    let mut d = LtxDecoder::with_capacity("fuzz.ltx", data, 4096).ok()?;
    let mut page = vec![0u8; d.header().page_size as usize];
    let mut pages = 0u64;
    loop {
        match d.next_page(&mut page) {
            Ok(Some(pgno)) => {
                assert!(pgno >= 1 && pgno <= d.header().commit);
                pages += 1;
            }
            Ok(None) => return Some(pages),
            Err(e) => {
                assert!(
                    e.to_string().contains("fuzz.ltx"),
                    "error without the name: {e}"
                );
                return None;
            }
        }
    }
}

/// A valid snapshot: TXIDs 1..=`max`, `commit` (≤ 4) pages of `page_size`.
fn snapshot(page_size: u32, commit: u32, max: u64) -> Option<Vec<u8>> {
    let header = LtxHeader {
        flags: litestream_core::ltx::decoder::HEADER_FLAG_NO_CHECKSUM,
        page_size,
        commit,
        min_txid: 1,
        max_txid: max,
        timestamp_ms: 1_700_000_000_000,
        pre_apply_checksum: 0,
        wal_offset: 0,
        wal_size: 0,
        wal_salt1: 0,
        wal_salt2: 0,
        node_id: 0,
    };
    let mut enc = LtxEncoder::new("snapshot.ltx", Vec::new(), &header).ok()?;
    let page = vec![0x5au8; page_size as usize];
    for pgno in 1..=commit {
        if pgno != lock_pgno(page_size) {
            enc.write_page(pgno, &page).ok()?;
        }
    }
    enc.finish().ok().map(|(out, _)| out)
}

fuzz_target!(|data: &[u8]| {
    let decoded = decode(data);
    let Some(head) = data.get(..HEADER_SIZE) else {
        return;
    };
    let mut b = [0u8; HEADER_SIZE];
    b.copy_from_slice(head);
    let Ok(h) = LtxHeader::parse("fuzz.ltx", &b) else {
        assert!(decoded.is_none());
        return;
    };
    if decoded.is_none() && data.len() % 8 != 0 {
        return;
    }
    let at = OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("time");
    let client = MemoryClient::new();
    let kind = client.kind();
    if !h.is_snapshot() {
        let Some(snap) = snapshot(h.page_size, h.commit.clamp(1, 4), h.min_txid - 1) else {
            return;
        };
        let key = file_key(kind, 9, 1, h.min_txid - 1);
        client
            .put_object(&key, snap, at, None)
            .expect("put snapshot");
    }
    let level = if h.is_snapshot() { 9 } else { 0 };
    let key = file_key(kind, level, h.min_txid, h.max_txid);
    client
        .put_object(&key, data.to_vec(), at, None)
        .expect("put file");

    let rt = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime")
    });
    let dir = std::env::temp_dir().join(format!("fuzz-ltx-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = dir.join("out.db");
    let mut opts = RestoreOptions::new(out.clone());
    opts.retry.max_attempts = 1;
    let restored = rt.block_on(restore_any(Arc::new(client), &opts, None));
    match restored {
        Ok(AnyRestoreOutcome::Ltx(o)) => {
            assert!(
                decoded.is_some(),
                "restored from a file the decoder refuses"
            );
            assert_eq!(o.page_size, h.page_size);
            let len = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(u64::MAX);
            assert_eq!(len, o.db_size);
            assert_eq!(o.db_size, u64::from(h.commit) * u64::from(h.page_size));
        }
        Ok(other) => panic!("not an LTX restore: {other:?}"),
        Err(e) => assert!(!out.exists(), "{e}: output left behind"),
    }
    let _ = std::fs::remove_dir_all(&dir);
});
