//! A streaming LTX writer (format version 3), the counterpart of [`super::decoder`].
//!
//! [`LtxEncoder`] writes what Litestream v0.5.16+ writes: header flag NoChecksum (pre- and
//! post-apply checksums 0), pages in ascending order as `u32` size + raw LZ4 block (page flags
//! 1), the lock page never stored, the page index (uvarint triples, a `0` terminator, a `u64`
//! length) and the trailer with the CRC-64 file checksum over the logical content. Pages go
//! to the writer as they come; only the index (a few bytes per page) stays in memory. The
//! output is a pure function of the header and the pages, so files are byte-for-byte stable.
//!
//! Header fields as v0.5 sets them:
//! * L0 (one sync): `min = max = txid`, the WAL offset, size and salts of the range read;
//! * L9 snapshot: `min = 1`, every page, the WAL range of the last frame (0 from a file);
//! * L1–L3 (compaction, [`super::compact`]): WAL fields, salts and node ID 0.

use std::io::{self, Read, Write};

use crate::error::{Error, Result};
use crate::restore::read_full;

use super::crc64::Crc64;
use super::decoder::{
    lock_pgno, LtxHeader, CHECKSUM_FLAG, HEADER_FLAG_NO_CHECKSUM, HEADER_SIZE, PAGE_FLAG_SIZE,
    PAGE_HEADER_SIZE,
};

/// What a finished file looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LtxSummary {
    /// Bytes written.
    pub size: u64,
    /// Pages stored.
    pub pages: u64,
    /// The stored file checksum (bit 63 set).
    pub checksum: u64,
}

impl LtxHeader {
    /// A NoChecksum header with every WAL field and the node ID 0.
    pub fn new(page_size: u32, commit: u32, min_txid: u64, max_txid: u64, ts_ms: i64) -> Self {
        LtxHeader {
            flags: HEADER_FLAG_NO_CHECKSUM,
            page_size,
            commit,
            min_txid,
            max_txid,
            timestamp_ms: ts_ms,
            pre_apply_checksum: 0,
            wal_offset: 0,
            wal_size: 0,
            wal_salt1: 0,
            wal_salt2: 0,
            node_id: 0,
        }
    }

    /// The 100 header bytes (reserved bytes zero).
    pub fn to_bytes(&self) -> [u8; HEADER_SIZE] {
        let mut h = [0u8; HEADER_SIZE];
        h[0..4].copy_from_slice(b"LTX1");
        h[4..8].copy_from_slice(&self.flags.to_be_bytes());
        h[8..12].copy_from_slice(&self.page_size.to_be_bytes());
        h[12..16].copy_from_slice(&self.commit.to_be_bytes());
        h[16..24].copy_from_slice(&self.min_txid.to_be_bytes());
        h[24..32].copy_from_slice(&self.max_txid.to_be_bytes());
        h[32..40].copy_from_slice(&self.timestamp_ms.to_be_bytes());
        h[40..48].copy_from_slice(&self.pre_apply_checksum.to_be_bytes());
        h[48..56].copy_from_slice(&self.wal_offset.to_be_bytes());
        h[56..64].copy_from_slice(&self.wal_size.to_be_bytes());
        h[64..68].copy_from_slice(&self.wal_salt1.to_be_bytes());
        h[68..72].copy_from_slice(&self.wal_salt2.to_be_bytes());
        h[72..80].copy_from_slice(&self.node_id.to_be_bytes());
        h
    }
}

/// A streaming writer of one LTX file; see the module docs.
#[derive(Debug)]
pub struct LtxEncoder<W: Write> {
    object: String,
    out: W,
    header: LtxHeader,
    crc: Crc64,
    offset: u64,
    index: Vec<u8>,
    pages: u64,
    last_pgno: u32,
    lock: u32,
    compressed: Vec<u8>,
}

impl<W: Write> LtxEncoder<W> {
    /// Validate `header` (it must be NoChecksum, as every v0.5 file) and write it to `out`;
    /// `object` names the file in errors.
    pub fn new(object: impl Into<String>, mut out: W, header: &LtxHeader) -> Result<Self> {
        let object = object.into();
        if header.flags != HEADER_FLAG_NO_CHECKSUM {
            return Err(Error::InvalidArgument(format!(
                "{object}: LTX header flags must be NoChecksum ({HEADER_FLAG_NO_CHECKSUM:#x}), \
                 not {:#x}",
                header.flags
            )));
        }
        let bytes = header.to_bytes();
        LtxHeader::parse(&object, &bytes)
            .map_err(|e| Error::InvalidArgument(format!("invalid LTX header: {e}")))?;
        out.write_all(&bytes).map_err(|e| Error::io(&object, e))?;
        let mut crc = Crc64::new();
        crc.update(&bytes);
        Ok(LtxEncoder {
            lock: lock_pgno(header.page_size),
            object,
            out,
            header: header.clone(),
            crc,
            offset: HEADER_SIZE as u64,
            index: Vec::new(),
            pages: 0,
            last_pgno: 0,
            compressed: Vec::new(),
        })
    }

    /// The file's header.
    pub fn header(&self) -> &LtxHeader {
        &self.header
    }

    fn misuse(&self, why: String) -> Error {
        Error::InvalidArgument(format!("{}: {why}", self.object))
    }

    /// Append page `pgno` (exactly one page of `data`). Pages must come in ascending order,
    /// within the commit size, and a snapshot (min TXID 1) must hold every page; the lock
    /// page is never stored (passing it is a no-op).
    pub fn write_page(&mut self, pgno: u32, data: &[u8]) -> Result<()> {
        let h = &self.header;
        if data.len() != h.page_size as usize {
            return Err(self.misuse(format!(
                "page {pgno} is {} bytes, not the page size {}",
                data.len(),
                h.page_size
            )));
        }
        if pgno == self.lock {
            return Ok(());
        }
        if pgno == 0 || pgno > h.commit {
            return Err(self.misuse(format!(
                "page {pgno} outside 1..={} (the commit size)",
                h.commit
            )));
        }
        if pgno <= self.last_pgno {
            return Err(self.misuse(format!(
                "page {pgno} out of order after page {}",
                self.last_pgno
            )));
        }
        if h.is_snapshot() && pgno != self.next_snapshot_page() {
            return Err(self.misuse(format!(
                "snapshot skips from page {} to page {pgno}",
                self.last_pgno
            )));
        }
        self.compressed
            .resize(lz4_flex::block::get_maximum_output_size(data.len()), 0);
        let n = lz4_flex::block::compress_into(data, &mut self.compressed)
            .map_err(|e| self.misuse(format!("page {pgno}: LZ4 compression failed: {e}")))?;
        let mut ph = [0u8; PAGE_HEADER_SIZE + 4];
        ph[0..4].copy_from_slice(&pgno.to_be_bytes());
        ph[4..6].copy_from_slice(&PAGE_FLAG_SIZE.to_be_bytes());
        ph[6..10].copy_from_slice(&(n as u32).to_be_bytes());
        self.write(&ph)?;
        let body = std::mem::take(&mut self.compressed);
        let written = self.write(&body[..n]);
        self.compressed = body;
        written?;
        self.crc.update(&ph);
        self.crc.update(data);
        let size = (ph.len() + n) as u64;
        for v in [u64::from(pgno), self.offset, size] {
            put_uvarint(&mut self.index, v);
        }
        self.offset += size;
        self.pages += 1;
        self.last_pgno = pgno;
        Ok(())
    }

    fn next_snapshot_page(&self) -> u32 {
        let next = self.last_pgno + 1;
        if next == self.lock {
            next + 1
        } else {
            next
        }
    }

    fn write(&mut self, b: &[u8]) -> Result<()> {
        self.out
            .write_all(b)
            .map_err(|e| Error::io(&self.object, e))
    }

    /// Write the end of the page block, the index and the trailer, flush, and return the
    /// writer with a summary. A snapshot missing pages is refused.
    pub fn finish(mut self) -> Result<(W, LtxSummary)> {
        if self.header.is_snapshot() {
            let c = self.header.commit;
            let last = if c == self.lock { c - 1 } else { c };
            if self.last_pgno != last {
                return Err(self.misuse(format!("snapshot ends at page {} of {c}", self.last_pgno)));
            }
        }
        let mut tail = Vec::with_capacity(PAGE_HEADER_SIZE + self.index.len() + 9 + 8);
        tail.extend_from_slice(&[0u8; PAGE_HEADER_SIZE]);
        let mut index = std::mem::take(&mut self.index);
        index.push(0);
        let len = index.len() as u64;
        tail.extend_from_slice(&index);
        tail.extend_from_slice(&len.to_be_bytes());
        tail.extend_from_slice(&0u64.to_be_bytes());
        self.crc.update(&tail);
        let checksum = self.crc.finish() | CHECKSUM_FLAG;
        tail.extend_from_slice(&checksum.to_be_bytes());
        self.write(&tail)?;
        self.out.flush().map_err(|e| Error::io(&self.object, e))?;
        let summary = LtxSummary {
            size: self.offset + tail.len() as u64,
            pages: self.pages,
            checksum,
        };
        Ok((self.out, summary))
    }
}

/// Append `v` as an unsigned LEB128 varint (Go `binary.PutUvarint`).
pub(crate) fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Write an L9-style snapshot of the SQLite database read from `db` (a checkpointed database
/// file, read one page at a time) into `out`. `header.commit` must be the database's page
/// count and `header.min_txid` 1; a database shorter than that is an error.
pub fn write_snapshot<R: Read, W: Write>(
    object: &str,
    mut db: R,
    header: &LtxHeader,
    out: W,
) -> Result<(W, LtxSummary)> {
    let mut enc = LtxEncoder::new(object, out, header)?;
    let mut page = vec![0u8; header.page_size as usize];
    for pgno in 1..=header.commit {
        let n = read_full(&mut db, &mut page).map_err(|e| Error::io(object, e))?;
        if n != page.len() {
            return Err(Error::io(
                object,
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("database ends in page {pgno} of {}", header.commit),
                ),
            ));
        }
        enc.write_page(pgno, &page)?;
    }
    enc.finish()
}

/// Write the L0 file of the WAL range `offset..offset + size` of `wal` (whole frames ending
/// with a commit frame, already validated by the caller) as TXID `txid`: the newest copy of
/// each page in the range, pages beyond the last commit's database size dropped, header
/// WAL offset, size and salts those of the range (as Litestream v0.5 sets them). Only the
/// page map (page number → frame offset) is kept in memory; pages are read back one at a
/// time.
pub fn write_wal_range<R: Read + io::Seek, W: Write>(
    object: &str,
    mut wal: R,
    offset: u64,
    size: u64,
    txid: u64,
    ts_ms: i64,
    out: W,
) -> Result<(W, LtxHeader, LtxSummary)> {
    use crate::wal::{FrameHeader, WalHeader, WAL_FRAME_HEADER_SIZE, WAL_HEADER_SIZE};
    let bad = |why: String| Error::corrupt(object, why);
    let io_err = |e: io::Error| Error::io(object, e);
    let mut hb = [0u8; WAL_HEADER_SIZE];
    wal.seek(io::SeekFrom::Start(0)).map_err(io_err)?;
    wal.read_exact(&mut hb).map_err(io_err)?;
    let wh = WalHeader::parse(&hb).map_err(|e| bad(e.to_string()))?;
    let frame = wh.frame_size() as u64;
    if size == 0
        || offset < WAL_HEADER_SIZE as u64
        || !(offset - WAL_HEADER_SIZE as u64).is_multiple_of(frame)
        || !size.is_multiple_of(frame)
    {
        return Err(Error::InvalidArgument(format!(
            "{object}: WAL range {offset}+{size} is not a whole number of {frame}-byte frames"
        )));
    }
    let mut map = std::collections::BTreeMap::new();
    let mut commit = 0u32;
    let mut fh = [0u8; WAL_FRAME_HEADER_SIZE];
    let mut at = offset;
    while at < offset + size {
        wal.seek(io::SeekFrom::Start(at)).map_err(io_err)?;
        wal.read_exact(&mut fh).map_err(io_err)?;
        let h = FrameHeader::parse(&fh);
        if h.salt != wh.salt || h.pgno == 0 {
            return Err(bad(format!(
                "frame at offset {at} does not belong to this WAL"
            )));
        }
        map.insert(h.pgno, at);
        commit = h.commit_size;
        at += frame;
    }
    if commit == 0 {
        return Err(Error::InvalidArgument(format!(
            "{object}: WAL range {offset}+{size} does not end with a commit frame"
        )));
    }
    let mut header = LtxHeader::new(wh.page_size, commit, txid, txid, ts_ms);
    (header.wal_offset, header.wal_size) = (offset, size);
    (header.wal_salt1, header.wal_salt2) = wh.salt;
    let mut enc = LtxEncoder::new(object, out, &header)?;
    let mut page = vec![0u8; wh.page_size as usize];
    for (&pgno, &at) in map.range(..=commit) {
        wal.seek(io::SeekFrom::Start(at + WAL_FRAME_HEADER_SIZE as u64))
            .map_err(io_err)?;
        wal.read_exact(&mut page).map_err(io_err)?;
        enc.write_page(pgno, &page)?;
    }
    let (out, summary) = enc.finish()?;
    Ok((out, header, summary))
}
