//! A streaming, strictly validating decoder of LTX files (format version 3).
//!
//! [`LtxDecoder`] reads one file front to back with bounded memory (one page and one
//! compressed page at a time): the 100-byte header, the page frames in either encoding
//! (v0.5.0–0.5.15: one LZ4 frame per page, page flags 0; v0.5.16+: a `u32` size and a raw LZ4
//! block, page flags 1), the page index and the trailer. The file checksum (CRC-64/GO-ISO
//! over the logical content) is checked when the last page has been read, so a caller must
//! drive [`LtxDecoder::next_page`] until it returns `None` before trusting any page. Every
//! malformed or damaged file is an [`Error::Corrupt`] naming the object.

use std::io::{self, BufReader, Read};

use crate::error::{Error, Result};
use crate::lz4::{Lz4FrameReader, FRAME_MAGIC};
use crate::restore::{read_error, read_exact_or_corrupt, read_full};

use super::crc64::Crc64;

/// Size of the file header.
pub const HEADER_SIZE: usize = 100;
/// Size of a page frame header (page number, flags).
pub const PAGE_HEADER_SIZE: usize = 6;
/// Size of the trailer (post-apply checksum, file checksum).
pub const TRAILER_SIZE: usize = 16;
/// Header flag: the file carries no rolling database checksums (every v0.5 file).
pub const HEADER_FLAG_NO_CHECKSUM: u32 = 1 << 1;
/// Page flag: a `u32` size and a raw LZ4 block follow (v0.5.16+).
pub const PAGE_FLAG_SIZE: u16 = 1;
/// Bit set in every stored checksum.
pub const CHECKSUM_FLAG: u64 = 1 << 63;
const MAGIC: &[u8; 4] = b"LTX1";
/// Read buffer per open file.
const READ_BUFFER: usize = 32 << 10;

/// The SQLite lock page for `page_size`: the page holding byte 0x40000000, never stored.
pub fn lock_pgno(page_size: u32) -> u32 {
    (0x4000_0000 / page_size.max(1)) + 1
}

/// A decoded, validated LTX header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LtxHeader {
    /// Header flags (only [`HEADER_FLAG_NO_CHECKSUM`] is valid).
    pub flags: u32,
    /// Page size in bytes, a power of two from 512 to 65536.
    pub page_size: u32,
    /// Database size in pages after applying the file (0: a deletion file).
    pub commit: u32,
    /// First transaction ID covered.
    pub min_txid: u64,
    /// Last transaction ID covered.
    pub max_txid: u64,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// Rolling database checksum before the file (0 under NoChecksum).
    pub pre_apply_checksum: u64,
    /// Offset in the source WAL.
    pub wal_offset: u64,
    /// Length of the WAL range.
    pub wal_size: u64,
    /// WAL salt 1.
    pub wal_salt1: u32,
    /// WAL salt 2.
    pub wal_salt2: u32,
    /// Node ID (0 if unset).
    pub node_id: u64,
}

fn be32(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_be_bytes(w)
}

fn be64(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(w)
}

impl LtxHeader {
    /// Decode and validate a header as `superfly/ltx`'s `Header.Validate` does.
    pub fn parse(object: &str, b: &[u8; HEADER_SIZE]) -> Result<Self> {
        let bad = |why: String| Error::corrupt(object, format!("header: {why}"));
        if &b[0..4] != MAGIC {
            return Err(bad("not an LTX file (bad magic)".into()));
        }
        let h = LtxHeader {
            flags: be32(b, 4),
            page_size: be32(b, 8),
            commit: be32(b, 12),
            min_txid: be64(b, 16),
            max_txid: be64(b, 24),
            timestamp_ms: be64(b, 32) as i64,
            pre_apply_checksum: be64(b, 40),
            wal_offset: be64(b, 48),
            wal_size: be64(b, 56),
            wal_salt1: be32(b, 64),
            wal_salt2: be32(b, 68),
            node_id: be64(b, 72),
        };
        if h.flags & !HEADER_FLAG_NO_CHECKSUM != 0 {
            return Err(bad(format!("invalid flags: {:#010x}", h.flags)));
        }
        if !(512..=65536).contains(&h.page_size) || !h.page_size.is_power_of_two() {
            return Err(bad(format!("invalid page size: {}", h.page_size)));
        }
        if h.min_txid == 0 || h.max_txid == 0 || h.min_txid > h.max_txid {
            return Err(bad(format!(
                "invalid transaction ids: ({},{})",
                h.min_txid, h.max_txid
            )));
        }
        if (h.wal_offset as i64) < 0 || (h.wal_size as i64) < 0 {
            return Err(bad("negative wal offset or size".into()));
        }
        if (h.wal_salt1 != 0 || h.wal_salt2 != 0) && h.wal_offset == 0 {
            return Err(bad("wal offset required if salt exists".into()));
        }
        if h.wal_offset == 0 && h.wal_size != 0 {
            return Err(bad("wal offset required if wal size exists".into()));
        }
        if h.is_snapshot() || h.no_checksum() {
            if h.pre_apply_checksum != 0 {
                return Err(bad("pre-apply checksum not allowed".into()));
            }
        } else if h.pre_apply_checksum & CHECKSUM_FLAG == 0 {
            return Err(bad("invalid pre-apply checksum".into()));
        }
        Ok(h)
    }

    /// True for a snapshot (min TXID 1): every page 1..=commit except the lock page.
    pub fn is_snapshot(&self) -> bool {
        self.min_txid == 1
    }

    /// True when the file carries no rolling checksums.
    pub fn no_checksum(&self) -> bool {
        self.flags & HEADER_FLAG_NO_CHECKSUM != 0
    }
}

/// Counts the bytes read through it.
#[derive(Debug)]
struct Counting<R> {
    inner: R,
    n: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let k = self.inner.read(buf)?;
        self.n += k as u64;
        Ok(k)
    }
}

/// A streaming decoder of one LTX file; see the module docs.
#[derive(Debug)]
pub struct LtxDecoder<R: Read> {
    object: String,
    inner: Counting<BufReader<R>>,
    header: LtxHeader,
    crc: Crc64,
    /// Digest of the (page, offset, size) triples seen, compared with the index's.
    seen: Crc64,
    pages: u64,
    last_pgno: u32,
    compressed: Vec<u8>,
    rolling: u64,
    done: bool,
}

impl<R: Read> LtxDecoder<R> {
    /// Read and validate the header of `object` from `inner`.
    pub fn new(object: impl Into<String>, inner: R) -> Result<Self> {
        Self::with_capacity(object, inner, READ_BUFFER)
    }

    /// [`new`](Self::new) with a read buffer of `capacity` bytes.
    pub fn with_capacity(object: impl Into<String>, inner: R, capacity: usize) -> Result<Self> {
        let object = object.into();
        let mut inner = Counting {
            inner: BufReader::with_capacity(capacity, inner),
            n: 0,
        };
        let mut b = [0u8; HEADER_SIZE];
        read_exact(&mut inner, &mut b, &object, "header")?;
        let header = LtxHeader::parse(&object, &b)?;
        let mut crc = Crc64::new();
        crc.update(&b);
        Ok(LtxDecoder {
            object,
            inner,
            header,
            crc,
            seen: Crc64::new(),
            pages: 0,
            last_pgno: 0,
            compressed: Vec::new(),
            rolling: CHECKSUM_FLAG,
            done: false,
        })
    }

    /// The file's header.
    pub fn header(&self) -> &LtxHeader {
        &self.header
    }

    /// The object name errors carry.
    pub fn object(&self) -> &str {
        &self.object
    }

    fn corrupt(&self, why: impl std::fmt::Display) -> Error {
        Error::corrupt(&self.object, why)
    }

    fn read(&mut self, buf: &mut [u8], what: &str) -> Result<()> {
        read_exact(&mut self.inner, buf, &self.object, what)
    }

    /// Decode the next page into `page` (exactly one page long) and return its number, or
    /// `None` once the page block, index and trailer have been read and verified.
    pub fn next_page(&mut self, page: &mut [u8]) -> Result<Option<u32>> {
        if self.done {
            return Ok(None);
        }
        if page.len() != self.header.page_size as usize {
            return Err(Error::InvalidArgument(format!(
                "{}: page buffer of {} bytes for page size {}",
                self.object,
                page.len(),
                self.header.page_size
            )));
        }
        let start = self.inner.n;
        let mut ph = [0u8; PAGE_HEADER_SIZE];
        self.read(&mut ph, "page header")?;
        self.crc.update(&ph);
        let pgno = be32(&ph, 0);
        let flags = u16::from_be_bytes([ph[4], ph[5]]);
        if pgno == 0 && flags == 0 {
            self.finish()?;
            return Ok(None);
        }
        self.check_page_header(pgno, flags)?;
        if flags & PAGE_FLAG_SIZE != 0 {
            self.read_block(pgno, page)?;
        } else {
            self.read_frame(pgno, page)?;
        }
        self.crc.update(page);
        if !self.header.no_checksum() && self.header.is_snapshot() {
            let mut c = Crc64::new();
            c.update(&pgno.to_be_bytes());
            c.update(page);
            self.rolling = CHECKSUM_FLAG | (self.rolling ^ (c.finish() | CHECKSUM_FLAG));
        }
        let size = self.inner.n - start;
        self.seen.update(&u64::from(pgno).to_be_bytes());
        self.seen.update(&start.to_be_bytes());
        self.seen.update(&size.to_be_bytes());
        self.pages += 1;
        self.last_pgno = pgno;
        Ok(Some(pgno))
    }

    fn check_page_header(&self, pgno: u32, flags: u16) -> Result<()> {
        let h = &self.header;
        let lock = lock_pgno(h.page_size);
        if pgno == 0 {
            return Err(self.corrupt("page number 0"));
        }
        if flags & !PAGE_FLAG_SIZE != 0 {
            return Err(self.corrupt(format!("page {pgno}: invalid page flags {flags:#06x}")));
        }
        if pgno > h.commit {
            return Err(self.corrupt(format!(
                "page {pgno} beyond the commit size of {} pages",
                h.commit
            )));
        }
        if pgno == lock {
            return Err(self.corrupt(format!("holds the lock page {pgno}")));
        }
        if pgno <= self.last_pgno {
            return Err(self.corrupt(format!(
                "page {pgno} out of order after page {}",
                self.last_pgno
            )));
        }
        if h.is_snapshot() {
            let want = if self.last_pgno + 1 == lock {
                lock + 1
            } else {
                self.last_pgno + 1
            };
            if pgno != want {
                return Err(self.corrupt(format!(
                    "snapshot skips from page {} to page {pgno}",
                    self.last_pgno
                )));
            }
        }
        Ok(())
    }

    /// v0.5.16+: `u32` size, then a raw LZ4 block of exactly one page.
    fn read_block(&mut self, pgno: u32, page: &mut [u8]) -> Result<()> {
        let mut sz = [0u8; 4];
        self.read(&mut sz, "page size prefix")?;
        self.crc.update(&sz);
        let n = u32::from_be_bytes(sz) as usize;
        let max = lz4_flex::block::get_maximum_output_size(page.len());
        if n == 0 || n > max {
            return Err(self.corrupt(format!(
                "page {pgno}: compressed size {n} out of range (1..={max})"
            )));
        }
        let mut buf = std::mem::take(&mut self.compressed);
        buf.resize(n, 0);
        let read = self.read(&mut buf, "page data");
        let decoded = read.and_then(|()| {
            lz4_flex::block::decompress_into(&buf, page)
                .map_err(|e| self.corrupt(format!("page {pgno}: bad LZ4 block: {e}")))
        });
        self.compressed = buf;
        match decoded? {
            k if k == page.len() => Ok(()),
            k => Err(self.corrupt(format!(
                "page {pgno}: decompresses to {k} bytes, not {}",
                page.len()
            ))),
        }
    }

    /// v0.5.0–0.5.15: one complete LZ4 frame holding exactly one page.
    fn read_frame(&mut self, pgno: u32, page: &mut [u8]) -> Result<()> {
        let mut magic = [0u8; 4];
        self.read(&mut magic, "page frame")?;
        if u32::from_le_bytes(magic) != FRAME_MAGIC {
            return Err(self.corrupt(format!("page {pgno}: not an LZ4 frame")));
        }
        let object = self.object.clone();
        let mut lz = Lz4FrameReader::new((&magic[..]).chain(&mut self.inner));
        let got = read_full(&mut lz, page).map_err(|e| read_error(&object, e))?;
        if got != page.len() {
            return Err(self.corrupt(format!(
                "page {pgno}: frame decompresses to {got} bytes, not {}",
                page.len()
            )));
        }
        let mut extra = [0u8; 1];
        match read_full(&mut lz, &mut extra).map_err(|e| read_error(&object, e))? {
            0 => Ok(()),
            _ => Err(self.corrupt(format!(
                "page {pgno}: frame decompresses to more than one page"
            ))),
        }
    }

    /// After the end-of-pages marker: the index, the trailer, the checksums, end of file.
    fn finish(&mut self) -> Result<()> {
        let h = &self.header;
        if h.is_snapshot() {
            let lock = lock_pgno(h.page_size);
            let last = if h.commit == lock { lock - 1 } else { h.commit };
            if self.last_pgno != last {
                return Err(self.corrupt(format!(
                    "snapshot ends at page {} of {}",
                    self.last_pgno, h.commit
                )));
            }
        }
        self.read_index()?;
        let mut t = [0u8; TRAILER_SIZE];
        self.read(&mut t, "trailer")?;
        self.crc.update(&t[..8]);
        let (post, file) = (be64(&t, 0), be64(&t, 8));
        if self.header.no_checksum() {
            if post != 0 {
                return Err(self.corrupt("trailer: post-apply checksum not allowed"));
            }
        } else if post & CHECKSUM_FLAG == 0 {
            return Err(self.corrupt("trailer: invalid post-apply checksum"));
        }
        if file & CHECKSUM_FLAG == 0 {
            return Err(self.corrupt("trailer: invalid file checksum"));
        }
        let want = self.crc.finish() | CHECKSUM_FLAG;
        if file != want {
            return Err(self.corrupt(format!(
                "file checksum mismatch: trailer {file:016x}, content {want:016x}"
            )));
        }
        if !self.header.no_checksum() && self.header.is_snapshot() && post != self.rolling {
            return Err(self.corrupt(format!(
                "post-apply checksum {post:016x} does not match the pages' {:016x}",
                self.rolling
            )));
        }
        let mut extra = [0u8; 1];
        if read_full(&mut self.inner, &mut extra).map_err(|e| read_error(&self.object, e))? != 0 {
            return Err(self.corrupt("data after the trailer"));
        }
        self.done = true;
        Ok(())
    }

    fn read_index(&mut self) -> Result<()> {
        // Each entry is at most 5 + 10 + 10 varint bytes.
        let max_len = self.pages.saturating_mul(25).saturating_add(1);
        let mut len = 0u64;
        let mut digest = Crc64::new();
        let mut entries = 0u64;
        loop {
            let (pgno, n) = self.read_varint(max_len - len.min(max_len))?;
            len += n;
            if pgno == 0 {
                break;
            }
            let (offset, n) = self.read_varint(max_len - len.min(max_len))?;
            len += n;
            let (size, n) = self.read_varint(max_len - len.min(max_len))?;
            len += n;
            digest.update(&pgno.to_be_bytes());
            digest.update(&offset.to_be_bytes());
            digest.update(&size.to_be_bytes());
            entries += 1;
        }
        let mut b = [0u8; 8];
        self.read(&mut b, "page index size")?;
        self.crc.update(&b);
        if u64::from_be_bytes(b) != len {
            return Err(self.corrupt(format!(
                "page index: size field {} but the index is {len} bytes",
                u64::from_be_bytes(b)
            )));
        }
        if entries != self.pages || digest.finish() != self.seen.finish() {
            return Err(self.corrupt(format!(
                "page index does not match the {} pages in the file",
                self.pages
            )));
        }
        Ok(())
    }

    /// One unsigned LEB128 varint (Go `binary.Uvarint`), at most `budget` bytes.
    fn read_varint(&mut self, budget: u64) -> Result<(u64, u64)> {
        let mut v = 0u64;
        for i in 0..10u64 {
            if i >= budget {
                return Err(self.corrupt("page index longer than its pages allow"));
            }
            let mut b = [0u8; 1];
            self.read(&mut b, "page index")?;
            self.crc.update(&b);
            if i == 9 && b[0] > 1 {
                break;
            }
            v |= u64::from(b[0] & 0x7f) << (7 * i);
            if b[0] & 0x80 == 0 {
                return Ok((v, i + 1));
            }
        }
        Err(self.corrupt("page index: varint overflows 64 bits"))
    }
}

fn read_exact(r: &mut impl Read, buf: &mut [u8], object: &str, what: &str) -> Result<()> {
    read_exact_or_corrupt(r, buf, object, &format!("truncated in the {what}"))
}
