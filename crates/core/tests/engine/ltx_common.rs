//! Helpers for the LTX engine tests, shared by the `engine` binary's `engine_ltx` and the
//! `memory` binary's `ltx_memory`: an LTX `file://` replica, and readers of its files.

use std::path::{Path, PathBuf};
use std::time::Duration;

use litestream_core::ltx::decoder::{LtxDecoder, LtxHeader, HEADER_SIZE};
use litestream_core::{
    DbOptions, LtxOptions, ReplicaFormat, ReplicaHandleConfig, ReplicaOptions, Replicator,
};

use crate::common::file_replica;

/// Engine options that sync and checkpoint quickly.
pub(crate) fn fast_opts() -> DbOptions {
    DbOptions {
        monitor_interval: Duration::from_millis(50),
        min_checkpoint_page_count: 32,
        ..Default::default()
    }
}

/// An LTX `file://` replica named "file" in `dir`, syncing every 10 ms.
pub(crate) fn ltx_replica(dir: &Path, ltx: LtxOptions) -> ReplicaHandleConfig {
    let options = ReplicaOptions {
        sync_interval: Duration::from_millis(10),
        format: ReplicaFormat::Ltx,
        ltx,
        ..Default::default()
    };
    file_replica("file", dir, options)
}

/// `(level, min, max)` of every LTX file of a `file://` replica.
pub(crate) fn ltx_files(rep: &Path) -> Vec<(u8, u64, u64)> {
    let mut out = Vec::new();
    for level in 0..=9u8 {
        let Ok(rd) = std::fs::read_dir(rep.join("ltx").join(level.to_string())) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some((a, b)) = name
                .strip_suffix(".ltx")
                .and_then(|n| n.split_once('-'))
                .and_then(|(a, b)| {
                    Some((
                        u64::from_str_radix(a, 16).ok()?,
                        u64::from_str_radix(b, 16).ok()?,
                    ))
                })
            {
                out.push((level, a, b));
            }
        }
    }
    out.sort();
    out
}

/// A replicator of `db` with one LTX replica at `rep`, default LTX options.
pub(crate) async fn start_default(db: &Path, rep: &Path) -> Replicator {
    Replicator::start(
        db,
        vec![ltx_replica(rep, LtxOptions::default())],
        fast_opts(),
    )
    .await
    .expect("start")
}

/// Stop `r` and delete its meta directory (a new container with the old replica); returns
/// the replica's newest L0 TXID.
pub(crate) async fn stop_and_lose_meta(r: Replicator, rep: &Path) -> u64 {
    let meta = r.meta_path().to_path_buf();
    r.shutdown().await.expect("shutdown");
    let before = assert_l0_contiguous(rep);
    std::fs::remove_dir_all(&meta).expect("remove meta");
    before
}

/// The path of the L0 file holding `txid` in a `file://` replica.
pub(crate) fn l0_path(rep: &Path, txid: u64) -> PathBuf {
    rep.join("ltx")
        .join("0")
        .join(format!("{txid:016x}-{txid:016x}.ltx"))
}

/// The header of an LTX file.
pub(crate) fn header(path: &Path) -> LtxHeader {
    let bytes = std::fs::read(path).expect("read ltx");
    let raw: [u8; HEADER_SIZE] = bytes[..HEADER_SIZE].try_into().expect("header");
    LtxHeader::parse("ltx", &raw).expect("parse header")
}

/// Pages stored in an LTX file.
pub(crate) fn page_count(path: &Path) -> u32 {
    let f = std::fs::File::open(path).expect("open ltx");
    let mut d = LtxDecoder::new("ltx", f).expect("decoder");
    let mut buf = vec![0u8; d.header().page_size as usize];
    let mut n = 0;
    while d.next_page(&mut buf).expect("page").is_some() {
        n += 1;
    }
    n
}

/// The L0 TXIDs of a replica must be 1..=max without a gap or a repeat.
pub(crate) fn assert_l0_contiguous(rep: &Path) -> u64 {
    let l0: Vec<(u64, u64)> = ltx_files(rep)
        .into_iter()
        .filter(|f| f.0 == 0)
        .map(|f| (f.1, f.2))
        .collect();
    for (i, (a, b)) in l0.iter().enumerate() {
        assert_eq!(a, b, "L0 files hold one TXID each: {l0:?}");
        if i > 0 {
            assert_eq!(*a, l0[i - 1].1 + 1, "L0 TXIDs contiguous: {l0:?}");
        }
    }
    l0.last().map(|f| f.1).unwrap_or(0)
}
