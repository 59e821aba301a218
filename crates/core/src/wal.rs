//! SQLite WAL format: the 32-byte header, 24-byte frame headers, the running checksum in both
//! byte orders, and frame-aligned sizes.

use crate::error::{Error, Result};

/// Size of the WAL file header.
pub const WAL_HEADER_SIZE: usize = 32;
/// Size of a WAL frame header.
pub const WAL_FRAME_HEADER_SIZE: usize = 24;
/// WAL magic whose checksums read words little-endian.
pub const WAL_MAGIC_LE: u32 = 0x377f_0682;
/// WAL magic whose checksums read words big-endian.
pub const WAL_MAGIC_BE: u32 = 0x377f_0683;
/// The only WAL format version SQLite writes.
pub const WAL_VERSION: u32 = 3_007_000;

/// Why a WAL header or frame failed validation ([`WalHeader::parse`], [`FrameValidator::check`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WalError {
    /// Fewer than [`WAL_HEADER_SIZE`] bytes.
    #[error("wal header too short: {0} bytes")]
    HeaderTooShort(usize),
    /// The magic is neither [`WAL_MAGIC_LE`] nor [`WAL_MAGIC_BE`].
    #[error("invalid wal header magic {0:#010x}")]
    BadMagic(u32),
    /// A format version other than [`WAL_VERSION`].
    #[error("unsupported wal version {0}")]
    UnsupportedVersion(u32),
    /// A page size that is not a power of two in 512..=65536.
    #[error("invalid wal page size {0}")]
    BadPageSize(u32),
    /// The header checksum does not match the header bytes.
    #[error("wal header checksum mismatch")]
    HeaderChecksum,
    /// A frame of the wrong length for the header's page size.
    #[error("frame of {got} bytes, expected {expected}")]
    FrameSize {
        /// The length passed in.
        got: usize,
        /// `24 + page_size`.
        expected: usize,
    },
    /// The frame's salt is not the header's: the frame belongs to an earlier WAL.
    #[error(
        "frame salt {:08x}{:08x} does not match wal header salt {:08x}{:08x}",
        frame.0, frame.1, header.0, header.1
    )]
    SaltMismatch {
        /// The frame's salt-1 and salt-2.
        frame: (u32, u32),
        /// The header's salt-1 and salt-2.
        header: (u32, u32),
    },
    /// A frame for page number 0.
    #[error("frame with page number 0")]
    ZeroPageNumber,
    /// The running checksum does not match the frame's.
    #[error("frame checksum mismatch")]
    FrameChecksum,
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// A parsed WAL header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalHeader {
    /// True if checksum words are big-endian (magic `0x377f0683`).
    pub big_endian: bool,
    /// Database page size.
    pub page_size: u32,
    /// Checkpoint sequence number.
    pub checkpoint_seq: u32,
    /// Salt-1 and salt-2.
    pub salt: (u32, u32),
    /// Header checksum (seeds the frame checksum chain).
    pub checksum: (u32, u32),
}

impl WalHeader {
    /// Parse and validate a 32-byte WAL header (magic, version, page size and checksum).
    pub fn parse(b: &[u8]) -> std::result::Result<WalHeader, WalError> {
        if b.len() < WAL_HEADER_SIZE {
            return Err(WalError::HeaderTooShort(b.len()));
        }
        let magic = be32(b, 0);
        let big_endian = match magic {
            WAL_MAGIC_LE => false,
            WAL_MAGIC_BE => true,
            m => return Err(WalError::BadMagic(m)),
        };
        let version = be32(b, 4);
        if version != WAL_VERSION {
            return Err(WalError::UnsupportedVersion(version));
        }
        let page_size = be32(b, 8);
        if !(512..=65536).contains(&page_size) || !page_size.is_power_of_two() {
            return Err(WalError::BadPageSize(page_size));
        }
        let checksum = (be32(b, 24), be32(b, 28));
        if checksum_update(big_endian, (0, 0), &b[..24]) != checksum {
            return Err(WalError::HeaderChecksum);
        }
        Ok(WalHeader {
            big_endian,
            page_size,
            checkpoint_seq: be32(b, 12),
            salt: (be32(b, 16), be32(b, 20)),
            checksum,
        })
    }

    /// Size of one frame (header + page).
    pub fn frame_size(&self) -> usize {
        WAL_FRAME_HEADER_SIZE + self.page_size as usize
    }
}

/// A parsed WAL frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Page number (1-based).
    pub pgno: u32,
    /// Database size in pages after this commit, or 0 if the frame is not a commit.
    pub commit_size: u32,
    /// Salt-1 and salt-2 copied from the WAL header.
    pub salt: (u32, u32),
    /// Cumulative checksum up to and including this frame.
    pub checksum: (u32, u32),
}

impl FrameHeader {
    /// Parse a 24-byte frame header.
    pub fn parse(b: &[u8]) -> FrameHeader {
        FrameHeader {
            pgno: be32(b, 0),
            commit_size: be32(b, 4),
            salt: (be32(b, 8), be32(b, 12)),
            checksum: (be32(b, 16), be32(b, 20)),
        }
    }
}

/// SQLite's running WAL checksum over `data` (length a multiple of 8), continuing from `seed`.
pub fn checksum_update(big_endian: bool, seed: (u32, u32), data: &[u8]) -> (u32, u32) {
    let (mut s0, mut s1) = seed;
    let mut chunks = data.chunks_exact(8);
    if big_endian {
        for c in &mut chunks {
            s0 = s0
                .wrapping_add(u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                .wrapping_add(s1);
            s1 = s1
                .wrapping_add(u32::from_be_bytes([c[4], c[5], c[6], c[7]]))
                .wrapping_add(s0);
        }
    } else {
        for c in &mut chunks {
            s0 = s0
                .wrapping_add(u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .wrapping_add(s1);
            s1 = s1
                .wrapping_add(u32::from_le_bytes([c[4], c[5], c[6], c[7]]))
                .wrapping_add(s0);
        }
    }
    (s0, s1)
}

/// Validates a WAL frame by frame: salt, checksum chain and page number.
#[derive(Debug, Clone)]
pub struct FrameValidator {
    header: WalHeader,
    running: (u32, u32),
}

impl FrameValidator {
    /// Start after `header` (the chain is seeded with the header checksum).
    pub fn new(header: WalHeader) -> Self {
        FrameValidator {
            header,
            running: header.checksum,
        }
    }

    /// Continue a chain from a known last checksum (the last frame already validated).
    pub fn resume(header: WalHeader, last_checksum: (u32, u32)) -> Self {
        FrameValidator {
            header,
            running: last_checksum,
        }
    }

    /// The header this validator checks against.
    pub fn header(&self) -> &WalHeader {
        &self.header
    }

    /// The checksum of the last accepted frame (or the header checksum).
    pub fn running_checksum(&self) -> (u32, u32) {
        self.running
    }

    /// Check one whole frame (`24 + page_size` bytes); on success the chain advances.
    pub fn check(&mut self, frame: &[u8]) -> std::result::Result<FrameHeader, WalError> {
        if frame.len() != self.header.frame_size() {
            return Err(WalError::FrameSize {
                got: frame.len(),
                expected: self.header.frame_size(),
            });
        }
        let fh = FrameHeader::parse(frame);
        if fh.salt != self.header.salt {
            return Err(WalError::SaltMismatch {
                frame: fh.salt,
                header: self.header.salt,
            });
        }
        if fh.pgno == 0 {
            return Err(WalError::ZeroPageNumber);
        }
        let be = self.header.big_endian;
        let sum = checksum_update(be, self.running, &frame[..8]);
        let sum = checksum_update(be, sum, &frame[WAL_FRAME_HEADER_SIZE..]);
        if sum != fh.checksum {
            return Err(WalError::FrameChecksum);
        }
        self.running = sum;
        Ok(fh)
    }
}

/// Round a WAL size down to a whole number of frames (`0` if smaller than the header).
pub fn align_frame(size: u64, page_size: u32) -> u64 {
    let header = WAL_HEADER_SIZE as u64;
    if size < header {
        return 0;
    }
    let frame = (WAL_FRAME_HEADER_SIZE as u64) + u64::from(page_size);
    header + (size - header) / frame * frame
}

/// Read the page size from a SQLite database header (bytes 16..18; `1` means 65536).
pub fn db_page_size(header: &[u8]) -> Result<u32> {
    if header.len() < 100 || &header[..16] != b"SQLite format 3\0" {
        return Err(Error::corrupt("database", "not a SQLite database header"));
    }
    let raw = u16::from_be_bytes([header[16], header[17]]);
    let size = if raw == 1 { 65536 } else { u32::from(raw) };
    if size < 512 || !size.is_power_of_two() {
        return Err(Error::corrupt(
            "database",
            format!("invalid page size {size} in the database header"),
        ));
    }
    Ok(size)
}

/// The committed prefix of a WAL file split after every commit frame into `(offset, bytes)`
/// pieces, as Litestream uploads segments (for tests and tools; stops at the first frame of
/// another salt, i.e. the end of the current WAL).
pub fn split_at_commits(wal: &[u8]) -> Vec<(u64, Vec<u8>)> {
    let Ok(header) = WalHeader::parse(wal) else {
        return Vec::new();
    };
    let fs = header.frame_size();
    let (mut segs, mut start, mut at) = (Vec::new(), 0usize, WAL_HEADER_SIZE);
    while at + fs <= wal.len() {
        let fh = FrameHeader::parse(&wal[at..at + WAL_FRAME_HEADER_SIZE]);
        if fh.salt != header.salt {
            break;
        }
        at += fs;
        if fh.commit_size != 0 {
            segs.push((start as u64, wal[start..at].to_vec()));
            start = at;
        }
    }
    segs
}

/// Build a valid WAL header (for writers and tests).
pub fn encode_header(
    big_endian: bool,
    page_size: u32,
    checkpoint_seq: u32,
    salt: (u32, u32),
) -> [u8; 32] {
    let mut b = [0u8; 32];
    let magic = if big_endian {
        WAL_MAGIC_BE
    } else {
        WAL_MAGIC_LE
    };
    b[0..4].copy_from_slice(&magic.to_be_bytes());
    b[4..8].copy_from_slice(&WAL_VERSION.to_be_bytes());
    b[8..12].copy_from_slice(&page_size.to_be_bytes());
    b[12..16].copy_from_slice(&checkpoint_seq.to_be_bytes());
    b[16..20].copy_from_slice(&salt.0.to_be_bytes());
    b[20..24].copy_from_slice(&salt.1.to_be_bytes());
    let sum = checksum_update(big_endian, (0, 0), &b[..24]);
    b[24..28].copy_from_slice(&sum.0.to_be_bytes());
    b[28..32].copy_from_slice(&sum.1.to_be_bytes());
    b
}

/// Build a valid frame continuing the chain at `prev` (for writers and tests); returns the
/// frame bytes and its checksum.
pub fn encode_frame(
    header: &WalHeader,
    prev: (u32, u32),
    pgno: u32,
    commit_size: u32,
    page: &[u8],
) -> (Vec<u8>, (u32, u32)) {
    let mut f = vec![0u8; WAL_FRAME_HEADER_SIZE + page.len()];
    f[0..4].copy_from_slice(&pgno.to_be_bytes());
    f[4..8].copy_from_slice(&commit_size.to_be_bytes());
    f[8..12].copy_from_slice(&header.salt.0.to_be_bytes());
    f[12..16].copy_from_slice(&header.salt.1.to_be_bytes());
    f[WAL_FRAME_HEADER_SIZE..].copy_from_slice(page);
    let sum = checksum_update(header.big_endian, prev, &f[..8]);
    let sum = checksum_update(header.big_endian, sum, page);
    f[16..20].copy_from_slice(&sum.0.to_be_bytes());
    f[20..24].copy_from_slice(&sum.1.to_be_bytes());
    (f, sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_frames_validate_in_both_byte_orders() {
        for be in [false, true] {
            let hb = encode_header(be, 1024, 7, (0x1234, 0x5678));
            let h = WalHeader::parse(&hb).expect("header");
            assert_eq!(h.big_endian, be);
            let mut v = FrameValidator::new(h);
            let (f1, s1) = encode_frame(&h, h.checksum, 1, 0, &[1u8; 1024]);
            let (f2, _) = encode_frame(&h, s1, 2, 2, &[2u8; 1024]);
            assert_eq!(v.check(&f1).expect("f1").commit_size, 0);
            assert_eq!(v.check(&f2).expect("f2").commit_size, 2);
            let mut bad = f2.clone();
            bad[100] ^= 1;
            let mut v2 = FrameValidator::resume(h, s1);
            assert!(v2.check(&bad).is_err());
        }
    }

    #[test]
    fn bad_headers_are_rejected() {
        let mut hb = encode_header(false, 4096, 0, (1, 2));
        hb[25] ^= 1;
        assert!(WalHeader::parse(&hb).is_err());
        let hb = encode_header(false, 3000, 0, (1, 2));
        assert!(WalHeader::parse(&hb).is_err());
    }

    #[test]
    fn wrong_salt_is_rejected() {
        let h = WalHeader::parse(&encode_header(false, 512, 0, (1, 2))).expect("h");
        let other = WalHeader { salt: (3, 4), ..h };
        let (f, _) = encode_frame(&other, h.checksum, 1, 1, &[0u8; 512]);
        let err = FrameValidator::new(h).check(&f).unwrap_err();
        assert_eq!(
            err,
            WalError::SaltMismatch {
                frame: (3, 4),
                header: (1, 2)
            }
        );
        assert!(err.to_string().contains("salt"));
    }

    #[test]
    fn sizes_align_to_frames() {
        assert_eq!(align_frame(10, 4096), 0);
        assert_eq!(align_frame(32, 4096), 32);
        assert_eq!(align_frame(32 + 4120 * 3 + 100, 4096), 32 + 4120 * 3);
    }
}
