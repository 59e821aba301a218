//! Building LTX files from the engine's local state (blocking code): an L0 file from a
//! committed range of one shadow WAL index, and a whole-database file (a full L0 or an L9
//! snapshot) from a pinned position. Files are staged in the meta directory
//! (`<meta>/ltx/0/<min>-<max>.ltx`, Litestream v0.5's layout), written to `.tmp`, fsynced and
//! renamed; only the page index (a few bytes per page) is held in memory.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufWriter};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::ltx::decoder::LtxHeader;
use crate::ltx::encoder::LtxEncoder;
use crate::wal::{WAL_FRAME_HEADER_SIZE, WAL_HEADER_SIZE};

/// A staged LTX file.
#[derive(Debug, Clone)]
pub(crate) struct StagedLtx {
    /// Where it is.
    pub(crate) path: PathBuf,
    /// Its header.
    pub(crate) header: LtxHeader,
}

/// The WAL range an LTX file was built from (header fields `wal_offset`, `wal_size`, salts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WalRange {
    pub(crate) offset: u64,
    pub(crate) size: u64,
    pub(crate) salt1: u32,
    pub(crate) salt2: u32,
}

fn io_err(path: &Path, e: io::Error) -> Error {
    Error::io(path.display().to_string(), e)
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The salts of a shadow (or real) WAL file's header.
pub(crate) fn wal_salts(f: &File, path: &Path) -> Result<(u32, u32)> {
    let mut h = [0u8; WAL_HEADER_SIZE];
    f.read_exact_at(&mut h, 0).map_err(|e| io_err(path, e))?;
    Ok((be32(&h, 16), be32(&h, 20)))
}

/// The newest frame of each page in `[from, to)` of a WAL file (offsets of the page data) and
/// the database size of the last commit frame in the range (0 if none).
fn scan_frames(
    f: &File,
    path: &Path,
    page_size: u32,
    from: u64,
    to: u64,
) -> Result<(BTreeMap<u32, u64>, u32)> {
    let fsz = WAL_FRAME_HEADER_SIZE as u64 + u64::from(page_size);
    let mut latest = BTreeMap::new();
    let mut commit = 0;
    let mut fh = [0u8; WAL_FRAME_HEADER_SIZE];
    let mut off = from;
    while off + fsz <= to {
        f.read_exact_at(&mut fh, off).map_err(|e| io_err(path, e))?;
        latest.insert(be32(&fh, 0), off + WAL_FRAME_HEADER_SIZE as u64);
        let c = be32(&fh, 4);
        if c != 0 {
            commit = c;
        }
        off += fsz;
    }
    Ok((latest, commit))
}

/// Encode into `out` (via `out.tmp`, fsynced, renamed): `header`, then for each page number
/// `1..=commit` (or each key of `latest` when `full` is false) the page from `latest` in
/// `wal`, else from `db`.
fn encode(
    out: &Path,
    header: &LtxHeader,
    wal: (&File, &Path),
    latest: &BTreeMap<u32, u64>,
    db: Option<&File>,
) -> Result<StagedLtx> {
    if let Some(dir) = out.parent() {
        fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    }
    let mut tmp = out.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let name = out.display().to_string();
    let file = File::create(&tmp).map_err(|e| io_err(&tmp, e))?;
    let r = (|| -> Result<()> {
        let mut enc = LtxEncoder::new(&name, BufWriter::with_capacity(1 << 20, file), header)?;
        let mut buf = vec![0u8; header.page_size as usize];
        let ps = u64::from(header.page_size);
        let mut put = |pgno: u32, enc: &mut LtxEncoder<BufWriter<File>>| -> Result<()> {
            match latest.get(&pgno) {
                Some(&at) => wal
                    .0
                    .read_exact_at(&mut buf, at)
                    .map_err(|e| io_err(wal.1, e))?,
                None => {
                    let db = db.ok_or_else(|| {
                        Error::InvalidArgument(format!("{name}: page {pgno} not in the wal range"))
                    })?;
                    db.read_exact_at(&mut buf, u64::from(pgno - 1) * ps)
                        .map_err(|e| Error::io(format!("database page {pgno}"), e))?;
                }
            }
            enc.write_page(pgno, &buf)
        };
        if db.is_some() {
            for pgno in 1..=header.commit {
                put(pgno, &mut enc)?;
            }
        } else {
            for &pgno in latest.keys().filter(|&&p| p <= header.commit) {
                put(pgno, &mut enc)?;
            }
        }
        let (w, _) = enc.finish()?;
        let f = w.into_inner().map_err(|e| io_err(&tmp, e.into_error()))?;
        f.sync_all().map_err(|e| io_err(&tmp, e))
    })();
    if let Err(e) = r {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, out).map_err(|e| io_err(out, e))?;
    if let Some(dir) = out.parent() {
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(StagedLtx {
        path: out.to_path_buf(),
        header: header.clone(),
    })
}

/// An L0 file for TXID `txid` (never 1: the first file is a whole database) from the
/// committed range `[from, to)` of the shadow WAL index file `shadow`: the newest version of
/// each page up to the range's last commit. `None` when the range holds no commit.
pub(crate) fn build_incremental(
    shadow: &Path,
    from: u64,
    to: u64,
    page_size: u32,
    txid: u64,
    timestamp_ms: i64,
    out: &Path,
) -> Result<Option<StagedLtx>> {
    if txid < 2 {
        return Err(Error::InvalidArgument(format!(
            "an incremental LTX file cannot have TXID {txid}"
        )));
    }
    let f = File::open(shadow).map_err(|e| io_err(shadow, e))?;
    let (latest, commit) = scan_frames(&f, shadow, page_size, from, to)?;
    if commit == 0 {
        return Ok(None);
    }
    let (salt1, salt2) = wal_salts(&f, shadow)?;
    let mut h = LtxHeader::new(page_size, commit, txid, txid, timestamp_ms);
    h.wal_offset = from;
    h.wal_size = to - from;
    h.wal_salt1 = salt1;
    h.wal_salt2 = salt2;
    encode(out, &h, (&f, shadow), &latest, None).map(Some)
}

/// A whole-database file `min_txid..=max_txid` (an L0 file after a discontinuity, TXID 1, or
/// an L9 snapshot with `min_txid` 1) of the database as of `end` in the shadow WAL index
/// `shadow`, while a read transaction pins that position: the database file overlaid with
/// the index's frames up to `end`. The WAL fields name the last frame (the header alone
/// when the index has none), as Litestream v0.5 does, so that v0.5 resumes after it.
#[allow(clippy::too_many_arguments)]
pub(crate) fn build_full(
    db: &File,
    shadow: (&File, &Path),
    page_size: u32,
    end: u64,
    min_txid: u64,
    max_txid: u64,
    timestamp_ms: i64,
    out: &Path,
) -> Result<StagedLtx> {
    let hdr = WAL_HEADER_SIZE as u64;
    let (latest, mut commit) = scan_frames(shadow.0, shadow.1, page_size, hdr, end)?;
    if commit == 0 {
        // Every frame of the index is back-filled: the database header is current.
        let mut h = [0u8; 32];
        db.read_exact_at(&mut h, 0)
            .map_err(|e| Error::io("database header", e))?;
        commit = be32(&h, 28);
        if commit == 0 {
            let len = db.metadata().map_err(|e| Error::io("database", e))?.len();
            commit = u32::try_from(len / u64::from(page_size)).unwrap_or(u32::MAX);
        }
    }
    let (salt1, salt2) = wal_salts(shadow.0, shadow.1)?;
    let fsz = WAL_FRAME_HEADER_SIZE as u64 + u64::from(page_size);
    let mut h = LtxHeader::new(page_size, commit, min_txid, max_txid, timestamp_ms);
    (h.wal_offset, h.wal_size) = if end >= hdr + fsz {
        (end - fsz, fsz)
    } else {
        (hdr, 0)
    };
    h.wal_salt1 = salt1;
    h.wal_salt2 = salt2;
    encode(out, &h, shadow, &latest, Some(db))
}

/// The WAL range of an LTX file's header.
pub(crate) fn wal_range(h: &LtxHeader) -> WalRange {
    WalRange {
        offset: h.wal_offset,
        size: h.wal_size,
        salt1: h.wal_salt1,
        salt2: h.wal_salt2,
    }
}
