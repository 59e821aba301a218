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

/// Output buffer of an LTX file being built (a few compressed pages per `write`).
const ENCODE_BUF: usize = 128 << 10;

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

/// Bytes of frames read per `read` call when scanning frame headers (rounded down to whole
/// frames, at least one).
const SCAN_CHUNK: usize = 256 << 10;

/// The newest frame of each page in `[from, to)` of a WAL file (offsets of the page data) and
/// the database size of the last commit frame in the range (0 if none). The range is read in
/// chunks of whole frames (one `read` per [`SCAN_CHUNK`], not one per frame header).
fn scan_frames(
    f: &File,
    path: &Path,
    page_size: u32,
    from: u64,
    to: u64,
) -> Result<(BTreeMap<u32, u64>, u32)> {
    let fsz = WAL_FRAME_HEADER_SIZE + page_size as usize;
    let frames = to.saturating_sub(from) / fsz as u64;
    let mut buf = vec![0u8; (SCAN_CHUNK / fsz).max(1).min(frames as usize) * fsz];
    let mut latest = BTreeMap::new();
    let mut commit = 0;
    let mut off = from;
    let end = from + frames * fsz as u64;
    while off < end {
        let n = (buf.len() as u64).min(end - off) as usize;
        f.read_exact_at(&mut buf[..n], off)
            .map_err(|e| io_err(path, e))?;
        for (i, fh) in buf[..n].chunks_exact(fsz).enumerate() {
            let at = off + (i * fsz) as u64;
            latest.insert(be32(fh, 0), at + WAL_FRAME_HEADER_SIZE as u64);
            let c = be32(fh, 4);
            if c != 0 {
                commit = c;
            }
        }
        off += n as u64;
    }
    Ok((latest, commit))
}

/// Largest single read of [`PageReader`].
const READ_WINDOW: usize = 256 << 10;

/// Reads pages from one file, several at a time where the next ones wanted are close
/// behind (one `read` for a run of pages instead of one each): a read is extended over the
/// following wanted offsets while at least a quarter of the bytes read are wanted pages
/// (the frames of an append-heavy WAL range interleave each new page with a few rewritten
/// ones), up to [`READ_WINDOW`]. Scattered pages are read one by one.
struct PageReader<'a> {
    file: &'a File,
    page_size: usize,
    buf: Vec<u8>,
    start: u64,
    len: usize,
}

impl<'a> PageReader<'a> {
    fn new(file: &'a File, page_size: u32) -> Self {
        PageReader {
            file,
            page_size: page_size as usize,
            buf: Vec::new(),
            start: 0,
            len: 0,
        }
    }

    /// The page at `wanted[0]`; `wanted[1..]` are the offsets wanted next, in order.
    fn page(&mut self, wanted: &[u64]) -> io::Result<&[u8]> {
        let ps = self.page_size;
        let Some(&at) = wanted.first() else {
            return Err(io::Error::other("no page wanted"));
        };
        let held = self.start + self.len as u64;
        if at < self.start || at + ps as u64 > held {
            let mut end = at + ps as u64;
            let mut useful = ps as u64;
            for (prev, &next) in wanted.iter().zip(&wanted[1..]) {
                let next_end = next + ps as u64;
                if next <= *prev || next_end - at > READ_WINDOW as u64 {
                    break;
                }
                if (useful + ps as u64) * 4 < next_end - at {
                    break;
                }
                useful += ps as u64;
                end = end.max(next_end);
            }
            let n = usize::try_from(end - at).unwrap_or(ps);
            if self.buf.len() < n {
                self.buf.resize(n, 0);
            }
            self.file.read_exact_at(&mut self.buf[..n], at)?;
            self.start = at;
            self.len = n;
        }
        let from = usize::try_from(at - self.start).unwrap_or(0);
        Ok(&self.buf[from..from + ps])
    }
}

/// Encode into `out` (via `out.tmp`, fsynced, renamed): `header`, then for each page number
/// `1..=commit` (or each key of `latest` when `db` is `None`) the page from `latest` in
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
        let mut enc = LtxEncoder::new(&name, BufWriter::with_capacity(ENCODE_BUF, file), header)?;
        let ps = u64::from(header.page_size);
        // The WAL offsets wanted, in page order (the order pages are written in).
        let wanted: Vec<u64> = latest.range(..=header.commit).map(|(_, &at)| at).collect();
        let mut next = 0;
        let mut from_wal = PageReader::new(wal.0, header.page_size);
        let mut from_db = db.map(|f| PageReader::new(f, header.page_size));
        // Read-ahead in the database file stops at its end (later pages are in the WAL).
        let db_pages = match db {
            Some(f) => f.metadata().map_err(|e| Error::io("database", e))?.len() / ps,
            None => 0,
        };
        let mut db_wanted = [0u64; 32];
        let mut put = |pgno: u32, enc: &mut LtxEncoder<BufWriter<File>>| -> Result<()> {
            if latest.contains_key(&pgno) {
                let page = from_wal
                    .page(&wanted[next..])
                    .map_err(|e| io_err(wal.1, e))?;
                next += 1;
                return enc.write_page(pgno, page);
            }
            let db = from_db.as_mut().ok_or_else(|| {
                Error::InvalidArgument(format!("{name}: page {pgno} not in the wal range"))
            })?;
            // The database pages that follow, up to the commit size (read-ahead).
            db_wanted[0] = u64::from(pgno - 1) * ps;
            let mut n = 1;
            let last = u64::from(header.commit).min(db_pages);
            for p in (u64::from(pgno) + 1..=last).take(db_wanted.len() - 1) {
                db_wanted[n] = (p - 1) * ps;
                n += 1;
            }
            let page = db
                .page(&db_wanted[..n])
                .map_err(|e| Error::io(format!("database page {pgno}"), e))?;
            enc.write_page(pgno, page)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A file of `n` pages of 512 bytes, page `i` filled with byte `i`.
    fn pages_file(n: u8) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        for i in 0..n {
            f.write_all(&[i; 512]).unwrap();
        }
        f.flush().unwrap();
        f
    }

    #[test]
    fn page_reader_returns_each_wanted_page_whatever_the_order() {
        let f = pages_file(200);
        let orders: Vec<Vec<u64>> = vec![
            (0..200).collect(),                                  // dense, ascending
            (0..200).step_by(3).collect(),                       // a third: runs are read
            (0..200).step_by(7).collect(),                       // sparse: one page a read
            vec![150, 3, 4, 5, 199, 0, 1, 120, 121, 2, 198, 60], // back and forth
        ];
        for order in orders {
            let wanted: Vec<u64> = order.iter().map(|p| p * 512).collect();
            let mut r = PageReader::new(f.as_file(), 512);
            for (i, &p) in order.iter().enumerate() {
                let page = r.page(&wanted[i..]).unwrap();
                assert_eq!(page, &[p as u8; 512][..], "page {p} of {order:?}");
            }
        }
    }

    #[test]
    fn page_reader_reads_runs_at_once_and_never_past_the_last_wanted_page() {
        let f = pages_file(100);
        // Every third page: one read covers the run (a third of the bytes are wanted).
        let wanted: Vec<u64> = (0..100).step_by(3).map(|p| p * 512).collect();
        let mut r = PageReader::new(f.as_file(), 512);
        r.page(&wanted).unwrap();
        assert_eq!(r.len, 99 * 512 + 512, "one read up to the last wanted page");
        // Every ninth page: less than a quarter wanted, one page a read.
        let wanted: Vec<u64> = (0..100).step_by(9).map(|p| p * 512).collect();
        let mut r = PageReader::new(f.as_file(), 512);
        r.page(&wanted).unwrap();
        assert_eq!(r.len, 512);
        // The last page of the file alone: no read past it.
        let mut r = PageReader::new(f.as_file(), 512);
        assert_eq!(r.page(&[99 * 512]).unwrap(), &[99u8; 512][..]);
    }
}
