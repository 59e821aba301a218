//! Bridges between blocking file I/O + LZ4 and the async [`ByteStream`] the clients take,
//! with bounded memory (one LZ4 block plus a few channel chunks in flight).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::io::{StreamReader, SyncIoBridge};

use crate::error::{Error, Result};
use crate::lz4::{Lz4FrameReader, Lz4FrameWriter};
use crate::replica_client::ByteStream;

const CHUNK: usize = 256 << 10;
/// Chunks the producer may be ahead of the upload (each up to `CHUNK` bytes): two keep the
/// compression and the upload running side by side; more only added to peak memory.
const PIPELINE_CHUNKS: usize = 2;
/// Bytes read from a file per `read` call by [`lz4_file_stream`].
const READ_CHUNK: usize = 256 << 10;

struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "upload stream closed"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(b);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Stream `len` bytes (or to EOF when `None`) of `path` from `offset`, LZ4-framed.
///
/// The file is opened when the stream is created; the reading and compression run on a
/// blocking thread. A short file (fewer than `len` bytes) ends the stream with an error.
pub(crate) fn lz4_file_stream(path: PathBuf, offset: u64, len: Option<u64>) -> ByteStream {
    let opened = File::open(&path);
    producer_stream(move |cw| {
        let mut f = opened?;
        f.seek(SeekFrom::Start(offset))?;
        let mut w = Lz4FrameWriter::new(cw);
        // Large reads (io::copy would read 8 KiB at a time: thousands of system calls for
        // one segment of a busy database).
        let mut buf = vec![0u8; READ_CHUNK];
        let mut left = len.unwrap_or(u64::MAX);
        let mut n = 0u64;
        while left > 0 {
            let want = (buf.len() as u64).min(left) as usize;
            let got = match f.read(&mut buf[..want]) {
                Ok(0) => break,
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            w.write_all(&buf[..got])?;
            n += got as u64;
            left -= got as u64;
        }
        if let Some(want) = len {
            if n != want {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{}: read {n} of {want} bytes", path.display()),
                ));
            }
        }
        w.finish()
    })
}

/// A byte stream fed by `produce` on a blocking thread. `produce` writes into the
/// [`ChannelWriter`] and returns it; its error ends the stream with that error. If the
/// producer vanishes without finishing (it panicked, or the runtime dropped it before it
/// ran) the stream ends with an error too, never a clean end: an upload must not commit a
/// truncated object.
fn producer_stream<F>(produce: F) -> ByteStream
where
    F: FnOnce(ChannelWriter) -> io::Result<ChannelWriter> + Send + 'static,
{
    let (tx, mut rx) = mpsc::channel::<io::Result<Bytes>>(PIPELINE_CHUNKS);
    let done = Arc::new(AtomicBool::new(false));
    let finished = Arc::clone(&done);
    tokio::task::spawn_blocking(move || {
        let cw = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK),
        };
        match produce(cw).and_then(|mut cw| cw.send()) {
            Ok(()) => finished.store(true, Ordering::Release),
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
            }
        }
    });
    let mut ended = false;
    let stream = futures::stream::poll_fn(move |cx| match rx.poll_recv(cx) {
        Poll::Ready(None) if !ended && !done.load(Ordering::Acquire) => {
            ended = true;
            Poll::Ready(Some(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "upload producer ended without finishing the stream",
            ))))
        }
        other => other,
    });
    Box::pin(StreamReader::new(stream))
}

/// Reads a shared file handle positionally, so that the handle is never closed.
///
/// Closing any descriptor of the database file drops every POSIX lock this process holds on
/// it, SQLite's included; without our SHARED lock another process closing its last
/// connection would checkpoint and delete the WAL under us. So the database file is opened
/// once per replicator and only ever read through this reader.
struct SharedFileReader {
    file: Arc<File>,
    pos: u64,
}

impl Read for SharedFileReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = std::os::unix::fs::FileExt::read_at(self.file.as_ref(), buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// Stream the whole of a shared (never closed) file handle, LZ4-framed.
pub(crate) fn lz4_shared_file_stream(file: Arc<File>) -> ByteStream {
    producer_stream(move |cw| {
        let mut r = SharedFileReader { file, pos: 0 };
        let mut w = Lz4FrameWriter::new(cw);
        io::copy(&mut r, &mut w)?;
        w.finish()
    })
}

/// Decompress an LZ4-framed stream and count its bytes (used to find a segment's length).
pub(crate) async fn decompressed_len(stream: ByteStream, what: String) -> Result<u64> {
    let bridge = SyncIoBridge::new(stream);
    tokio::task::spawn_blocking(move || {
        let mut r = Lz4FrameReader::new(bridge);
        io::copy(&mut r, &mut io::sink()).map_err(|e| Error::io(what, e))
    })
    .await
    .map_err(|e| Error::io("decompress task", io::Error::other(e)))?
}

/// Run `f` on a blocking thread and stream what it writes, in bounded chunks (a few in flight).
///
/// An error returned by `f` ends the stream with that error, and a producer that vanishes
/// (see [`producer_stream`]) ends it with an error too, so a reader never mistakes a failed
/// producer for a short object.
pub(crate) fn blocking_write_stream<F>(f: F) -> ByteStream
where
    F: FnOnce(&mut dyn Write) -> io::Result<()> + Send + 'static,
{
    producer_stream(move |mut cw| {
        f(&mut cw)?;
        Ok(cw)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn a_producer_that_vanishes_ends_the_stream_with_an_error() {
        let mut s = producer_stream(|mut cw| {
            cw.write_all(b"part of an object")?;
            cw.send()?;
            panic!("producer gone");
        });
        let mut out = Vec::new();
        let err = s
            .read_to_end(&mut out)
            .await
            .expect_err("must not end cleanly");
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe, "{err}");
    }

    #[tokio::test]
    async fn a_finished_producer_ends_the_stream_cleanly() {
        let mut s = producer_stream(|mut cw| {
            cw.write_all(b"whole")?;
            Ok(cw)
        });
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.expect("clean end");
        assert_eq!(out, b"whole");
    }
}
