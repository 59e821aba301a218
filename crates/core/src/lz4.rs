//! The LZ4 frame format as Litestream uses it.
//!
//! [`Lz4FrameWriter`] writes frames that Litestream v0.3.13 and v0.5 read: header bytes
//! `04 22 4D 18 64 70 B9` (independent 4 MiB blocks, content checksum, no block checksums),
//! blocks stored raw when compression does not help. [`Lz4FrameReader`] reads any valid
//! frame: linked or independent blocks, block checksums, content size, skippable frames,
//! legacy frames, and the zero-length uncompressed block Go's writer emits when the input is a
//! multiple of 4 MiB. Both stream with bounded buffers (at most one block in flight).
//!
//! # Why not `lz4_flex::frame`
//!
//! The blocks are compressed with `lz4_flex::block`, but the frame layer is our own:
//!
//! * Its `FrameDecoder` accepts a frame cut at a block boundary (no end mark, no checksum) as
//!   a clean end of data, so a truncated replica object would restore silently short; it
//!   stops early on the empty block Go's writer emits after an input that is a multiple of
//!   4 MiB; and it zero-fills a 4 MiB buffer for every block, whatever the block's size.
//! * Its `FrameEncoder` does not give today's bytes (measured with lz4_flex 0.11.7, blocks
//!   independent, content checksum on, on the test pattern of this module's tests): with
//!   4 MiB blocks, Litestream's header, the frame of 4,096 bytes is 1,149 bytes against our
//!   1,143 (its frame compressor is another code path than `block::compress_into`), and
//!   inputs over 256 KiB differ by block layout (1 MiB: 242,516 against 248,740 bytes); with
//!   256 KiB blocks its header says 256 KiB (`64 50 08`), not Litestream's `64 70 B9`. It
//!   also holds two 4 MiB buffers where our writer holds two of 256 KiB.

use std::io::{self, Read, Write};

use xxhash_rust::xxh32::{xxh32, Xxh32};

/// LZ4 frame magic number.
pub const FRAME_MAGIC: u32 = 0x184D_2204;
/// Legacy LZ4 frame magic number.
pub const LEGACY_MAGIC: u32 = 0x184C_2102;
/// The 7 header bytes Litestream's writer emits and ours reproduces.
pub const LITESTREAM_FRAME_HEADER: [u8; 7] = [0x04, 0x22, 0x4D, 0x18, 0x64, 0x70, 0xB9];
/// Block maximum size of the frames we write (4 MiB, as the header says).
pub const BLOCK_SIZE: usize = 4 << 20;
/// Uncompressed size of the blocks we actually write: the header's maximum is an upper bound
/// and every reader takes smaller blocks. 256 KiB keeps the writer's two buffers at ~0.5 MiB
/// instead of ~8 MiB (LZ4 looks back 64 KiB at most, so the ratio hardly changes).
const WRITE_BLOCK_SIZE: usize = 256 << 10;
const LEGACY_BLOCK_SIZE: usize = 8 << 20;
const UNCOMPRESSED_BIT: u32 = 0x8000_0000;
const DICT_SIZE: usize = 64 << 10;
/// Smallest first guess of a block's decoded size (grown on demand up to the block maximum).
const MIN_DECODE_BUFFER: usize = 64 << 10;

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("lz4: {}", msg.into()))
}

/// Streaming writer of one LZ4 frame with Litestream's settings. Call [`finish`](Self::finish).
pub struct Lz4FrameWriter<W: Write> {
    inner: W,
    input: Vec<u8>,
    output: Vec<u8>,
    hasher: Xxh32,
    header_written: bool,
    total_in: u64,
}

impl<W: Write> std::fmt::Debug for Lz4FrameWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lz4FrameWriter")
            .field("bytes_in", &self.total_in)
            .finish_non_exhaustive()
    }
}

impl<W: Write> Lz4FrameWriter<W> {
    /// A writer that emits the frame into `inner`.
    pub fn new(inner: W) -> Self {
        Lz4FrameWriter {
            inner,
            input: Vec::new(),
            output: Vec::new(),
            hasher: Xxh32::new(0),
            header_written: false,
            total_in: 0,
        }
    }

    /// Uncompressed bytes written so far.
    pub fn bytes_in(&self) -> u64 {
        self.total_in
    }

    fn write_header(&mut self) -> io::Result<()> {
        if !self.header_written {
            self.inner.write_all(&LITESTREAM_FRAME_HEADER)?;
            self.header_written = true;
        }
        Ok(())
    }

    fn flush_block(&mut self) -> io::Result<()> {
        if self.input.is_empty() {
            return Ok(());
        }
        self.write_header()?;
        let max = lz4_flex::block::get_maximum_output_size(self.input.len());
        if self.output.len() < max {
            self.output.resize(max, 0);
        }
        let n = lz4_flex::block::compress_into(&self.input, &mut self.output)
            .map_err(|e| invalid(format!("compress: {e}")))?;
        if n < self.input.len() {
            self.inner.write_all(&(n as u32).to_le_bytes())?;
            self.inner.write_all(&self.output[..n])?;
        } else {
            let word = self.input.len() as u32 | UNCOMPRESSED_BIT;
            self.inner.write_all(&word.to_le_bytes())?;
            self.inner.write_all(&self.input)?;
        }
        self.input.clear();
        Ok(())
    }

    /// Flush the last block, write the end mark and content checksum, return the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.flush_block()?;
        self.write_header()?;
        self.inner.write_all(&0u32.to_le_bytes())?;
        self.inner.write_all(&self.hasher.digest().to_le_bytes())?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for Lz4FrameWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = WRITE_BLOCK_SIZE - self.input.len();
        let n = room.min(buf.len());
        self.input.extend_from_slice(&buf[..n]);
        self.hasher.update(&buf[..n]);
        self.total_in += n as u64;
        if self.input.len() == WRITE_BLOCK_SIZE {
            self.flush_block()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Compress `data` into one complete frame in memory.
pub fn compress_to_vec(data: &[u8]) -> Vec<u8> {
    let mut w = Lz4FrameWriter::new(Vec::with_capacity(data.len() / 2 + 64));
    // Writing into a Vec cannot fail.
    let _ = w.write_all(data);
    w.finish().unwrap_or_default()
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Start,
    Blocks,
    Legacy,
    Done,
}

/// Streaming reader of one LZ4 frame (bytes after the frame are ignored, as Go's reader does).
pub struct Lz4FrameReader<R: Read> {
    inner: R,
    state: State,
    block_max: usize,
    independent: bool,
    block_checksum: bool,
    content_checksum: bool,
    content_size: Option<u64>,
    hasher: Xxh32,
    compressed: Vec<u8>,
    out: Vec<u8>,
    out_pos: usize,
    out_len: usize,
    dict: Vec<u8>,
    total_out: u64,
}

impl<R: Read> std::fmt::Debug for Lz4FrameReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lz4FrameReader")
            .field("bytes_out", &self.total_out)
            .finish_non_exhaustive()
    }
}

impl<R: Read> Lz4FrameReader<R> {
    /// A reader that decompresses the frame read from `inner`.
    pub fn new(inner: R) -> Self {
        Lz4FrameReader {
            inner,
            state: State::Start,
            block_max: BLOCK_SIZE,
            independent: true,
            block_checksum: false,
            content_checksum: false,
            content_size: None,
            hasher: Xxh32::new(0),
            compressed: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
            out_len: 0,
            dict: Vec::new(),
            total_out: 0,
        }
    }

    /// Decompressed bytes produced so far.
    pub fn bytes_out(&self) -> u64 {
        self.total_out
    }

    /// Give back the inner reader.
    pub fn into_inner(self) -> R {
        self.inner
    }

    fn read_u32(&mut self) -> io::Result<u32> {
        let mut b = [0u8; 4];
        read_exact_or(&mut self.inner, &mut b, "truncated frame")?;
        Ok(u32::from_le_bytes(b))
    }

    fn read_header(&mut self) -> io::Result<()> {
        loop {
            let magic = self.read_u32()?;
            match magic {
                FRAME_MAGIC => break,
                LEGACY_MAGIC => {
                    self.block_max = LEGACY_BLOCK_SIZE;
                    self.state = State::Legacy;
                    return Ok(());
                }
                m if (0x184D_2A50..=0x184D_2A5F).contains(&m) => {
                    let len = self.read_u32()?;
                    let skipped =
                        io::copy(&mut (&mut self.inner).take(len as u64), &mut io::sink())?;
                    if skipped != len as u64 {
                        return Err(invalid("truncated skippable frame"));
                    }
                }
                m => return Err(invalid(format!("bad magic number {m:#010x}"))),
            }
        }
        let mut desc = [0u8; 2];
        read_exact_or(&mut self.inner, &mut desc, "truncated frame header")?;
        let (flg, bd) = (desc[0], desc[1]);
        if flg >> 6 != 1 {
            return Err(invalid(format!(
                "unsupported frame version in FLG {flg:#04x}"
            )));
        }
        if flg & 0x02 != 0 || bd & 0x8F != 0 {
            return Err(invalid("reserved bits set in frame descriptor"));
        }
        self.independent = flg & 0x20 != 0;
        self.block_checksum = flg & 0x10 != 0;
        let has_size = flg & 0x08 != 0;
        self.content_checksum = flg & 0x04 != 0;
        let has_dict = flg & 0x01 != 0;
        self.block_max = match (bd >> 4) & 0x7 {
            4 => 64 << 10,
            5 => 256 << 10,
            6 => 1 << 20,
            7 => 4 << 20,
            c => return Err(invalid(format!("bad block size code {c}"))),
        };
        let mut descriptor = vec![flg, bd];
        if has_size {
            let mut b = [0u8; 8];
            read_exact_or(&mut self.inner, &mut b, "truncated frame header")?;
            descriptor.extend_from_slice(&b);
            self.content_size = Some(u64::from_le_bytes(b));
        }
        if has_dict {
            let mut b = [0u8; 4];
            read_exact_or(&mut self.inner, &mut b, "truncated frame header")?;
            descriptor.extend_from_slice(&b);
        }
        let mut hc = [0u8; 1];
        read_exact_or(&mut self.inner, &mut hc, "truncated frame header")?;
        let want = ((xxh32(&descriptor, 0) >> 8) & 0xFF) as u8;
        if hc[0] != want {
            return Err(invalid("frame header checksum mismatch"));
        }
        self.state = State::Blocks;
        Ok(())
    }

    /// Decode the next block into `out`; returns false at the end of the frame.
    fn next_block(&mut self) -> io::Result<bool> {
        let word = if self.state == State::Legacy {
            let mut b = [0u8; 4];
            let n = read_full(&mut self.inner, &mut b)?;
            if n == 0 {
                self.state = State::Done;
                return Ok(false);
            }
            if n < 4 {
                return Err(invalid("truncated legacy block"));
            }
            let w = u32::from_le_bytes(b);
            if w == LEGACY_MAGIC || w == FRAME_MAGIC {
                self.state = State::Done;
                return Ok(false);
            }
            w
        } else {
            self.read_u32()?
        };
        if word == 0 && self.state == State::Blocks {
            self.finish_frame()?;
            return Ok(false);
        }
        let raw = self.state == State::Blocks && word & UNCOMPRESSED_BIT != 0;
        let len = (word & !UNCOMPRESSED_BIT) as usize;
        let limit = if self.state == State::Legacy {
            lz4_flex::block::get_maximum_output_size(self.block_max)
        } else {
            self.block_max
        };
        if len > limit {
            return Err(invalid(format!(
                "block of {len} bytes exceeds the frame's maximum {limit}"
            )));
        }
        self.compressed.resize(len, 0);
        read_exact_or(&mut self.inner, &mut self.compressed, "truncated block")?;
        if self.block_checksum && self.state == State::Blocks {
            let sum = self.read_u32()?;
            if sum != xxh32(&self.compressed, 0) {
                return Err(invalid("block checksum mismatch"));
            }
        }
        if raw {
            std::mem::swap(&mut self.out, &mut self.compressed);
            self.out_len = len;
        } else {
            // The block decodes to at most `cap` bytes. Start from a guess that fits typical
            // ratios and grow on `OutputTooSmall`: zeroing a `cap`-sized buffer for every
            // small WAL segment cost more than decoding it.
            let cap = self
                .block_max
                .min(len.saturating_mul(256).saturating_add(64));
            let mut size = cap.min(len.saturating_mul(8).max(MIN_DECODE_BUFFER));
            self.out_len = loop {
                if self.out.len() < size {
                    self.out.resize(size, 0);
                }
                let result = if self.independent || self.dict.is_empty() {
                    lz4_flex::block::decompress_into(&self.compressed, &mut self.out[..size])
                } else {
                    lz4_flex::block::decompress_into_with_dict(
                        &self.compressed,
                        &mut self.out[..size],
                        &self.dict,
                    )
                };
                match result {
                    Ok(n) => break n,
                    Err(lz4_flex::block::DecompressError::OutputTooSmall { .. }) if size < cap => {
                        size = cap.min(size.saturating_mul(4));
                    }
                    Err(e) => return Err(invalid(format!("corrupt block: {e}"))),
                }
            };
        }
        self.out_pos = 0;
        let block = &self.out[..self.out_len];
        self.hasher.update(block);
        self.total_out += self.out_len as u64;
        if !self.independent && self.state == State::Blocks {
            self.dict.extend_from_slice(block);
            if self.dict.len() > DICT_SIZE {
                let cut = self.dict.len() - DICT_SIZE;
                self.dict.drain(..cut);
            }
        }
        Ok(true)
    }

    fn finish_frame(&mut self) -> io::Result<()> {
        if self.content_checksum {
            let sum = self.read_u32()?;
            if sum != self.hasher.digest() {
                return Err(invalid("content checksum mismatch"));
            }
        }
        if let Some(size) = self.content_size {
            if size != self.total_out {
                return Err(invalid(format!(
                    "content size {} does not match header's {size}",
                    self.total_out
                )));
            }
        }
        self.state = State::Done;
        Ok(())
    }
}

impl<R: Read> Read for Lz4FrameReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.out_pos < self.out_len {
                let n = (self.out_len - self.out_pos).min(buf.len());
                buf[..n].copy_from_slice(&self.out[self.out_pos..self.out_pos + n]);
                self.out_pos += n;
                return Ok(n);
            }
            match self.state {
                State::Done => return Ok(0),
                State::Start => self.read_header()?,
                State::Blocks | State::Legacy => {
                    if !self.next_block()? {
                        return Ok(0);
                    }
                }
            }
        }
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn read_exact_or(r: &mut impl Read, buf: &mut [u8], what: &str) -> io::Result<()> {
    if read_full(r, buf)? != buf.len() {
        return Err(invalid(what));
    }
    Ok(())
}

/// Decompress one complete frame held in memory.
pub fn decompress_to_vec(frame: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    Lz4FrameReader::new(frame).read_to_end(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: usize) -> Vec<u8> {
        (0..n)
            .map(|i| ((i * 7) % 251) as u8 ^ (i / 1000) as u8)
            .collect()
    }

    #[test]
    fn frames_have_litestream_header_and_round_trip() {
        for n in [0, 1, 4096, BLOCK_SIZE, BLOCK_SIZE + 17, 2 * BLOCK_SIZE] {
            let data = sample(n);
            let frame = compress_to_vec(&data);
            assert_eq!(&frame[..7], &LITESTREAM_FRAME_HEADER);
            assert_eq!(
                decompress_to_vec(&frame).expect("decompress"),
                data,
                "n={n}"
            );
        }
    }

    #[test]
    fn highly_compressible_blocks_grow_the_decode_buffer() {
        // Zeros compress about 250:1, far beyond the first guess of the decoded size; small
        // blocks read after a large one reuse the grown buffer.
        let mut frames = Vec::new();
        for data in [vec![0u8; BLOCK_SIZE], vec![0u8; 300_000], sample(5000)] {
            let frame = compress_to_vec(&data);
            assert!(frame.len() * 8 < data.len() || data.len() == 5000);
            frames.push((frame, data));
        }
        for (frame, data) in &frames {
            assert_eq!(&decompress_to_vec(frame).expect("decompress"), data);
        }
        let mut r = Lz4FrameReader::new(frames[0].0.as_slice());
        let mut out = Vec::new();
        r.read_to_end(&mut out).expect("read");
        assert_eq!(out, frames[0].1);
    }

    #[test]
    fn incompressible_blocks_are_stored_raw() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let data: Vec<u8> = (0..10_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect();
        let frame = compress_to_vec(&data);
        let word = u32::from_le_bytes([frame[7], frame[8], frame[9], frame[10]]);
        assert_ne!(word & UNCOMPRESSED_BIT, 0);
        assert_eq!(decompress_to_vec(&frame).expect("decompress"), data);
    }

    #[test]
    fn empty_trailing_uncompressed_block_is_accepted() {
        let data = sample(1000);
        let mut frame = compress_to_vec(&data);
        // Insert a zero-length uncompressed block before the end mark, as Go's writer does.
        let end = frame.len() - 8;
        frame.splice(end..end, UNCOMPRESSED_BIT.to_le_bytes());
        assert_eq!(decompress_to_vec(&frame).expect("decompress"), data);
    }

    #[test]
    fn corruption_is_detected() {
        let data = sample(100_000);
        let frame = compress_to_vec(&data);
        let truncated = &frame[..frame.len() - 20];
        assert!(decompress_to_vec(truncated).is_err());
        let mut flipped = frame.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 0x10;
        assert!(decompress_to_vec(&flipped).is_err());
        let mut bad_sum = frame.clone();
        let last = bad_sum.len() - 1;
        bad_sum[last] ^= 1;
        assert!(decompress_to_vec(&bad_sum).is_err());
    }

    #[test]
    fn block_checksums_content_size_and_skippable_frames_are_read() {
        // Build a frame by hand: FLG with block checksum + content size + content checksum.
        let data = sample(5000);
        let block = lz4_flex::block::compress(&data);
        let flg = 0x40 | 0x20 | 0x10 | 0x08 | 0x04;
        let bd = 0x40;
        let mut desc = vec![flg, bd];
        desc.extend_from_slice(&(data.len() as u64).to_le_bytes());
        let mut frame = Vec::new();
        frame.extend_from_slice(&0x184D_2A51u32.to_le_bytes());
        frame.extend_from_slice(&3u32.to_le_bytes());
        frame.extend_from_slice(b"abc");
        frame.extend_from_slice(&FRAME_MAGIC.to_le_bytes());
        frame.extend_from_slice(&desc);
        frame.push(((xxh32(&desc, 0) >> 8) & 0xFF) as u8);
        frame.extend_from_slice(&(block.len() as u32).to_le_bytes());
        frame.extend_from_slice(&block);
        frame.extend_from_slice(&xxh32(&block, 0).to_le_bytes());
        frame.extend_from_slice(&0u32.to_le_bytes());
        frame.extend_from_slice(&xxh32(&data, 0).to_le_bytes());
        frame.extend_from_slice(b"trailing garbage is ignored");
        assert_eq!(decompress_to_vec(&frame).expect("decompress"), data);
    }
}
