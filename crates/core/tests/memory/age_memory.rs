//! age encryption and decryption stream with bounded memory (issue 16): an 8 MiB object goes
//! through [`AgeClient`] both ways while a counting global allocator watches the peak of live
//! heap bytes; neither direction may hold the object (nor a large part of it) in memory.
#![allow(clippy::unwrap_used)]

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use litestream_core::config::AgeConfig;
use litestream_core::{AgeClient, AgeKeys};
use litestream_core::{ByteStream, Generation, ReplicaClient};
use litestream_file::FileClient;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

use crate::counting_alloc::{peak_during, SERIAL};

/// Test keys (generated for these tests only).
const SK: &str = "AGE-SECRET-KEY-19QCFTFFX5U7TYY56HA0VNDEH9T2AMV63V8YPQJUFXCVKK4A5NV0SAUPNFS";
const PK: &str = "age1pjpfvdx82rldgfu4ven3ga9vs2vfdvnz39v76jre4cv88flrysssky69ta";

/// The object size.
const SIZE: u64 = 8 << 20;

/// The bound on heap growth while one object streams through: half the object (measured:
/// about 1.5 MiB each way, the stream's chunks in flight).
const BOUND: usize = 4 << 20;

/// `left` pseudo-random bytes made as they are read (never held in memory); byte `p` of the
/// sequence depends only on `p`, so any two readers agree however they chunk their reads.
struct Generated {
    pos: u64,
    left: u64,
}

impl Generated {
    fn new(len: u64) -> Generated {
        Generated { pos: 0, left: len }
    }
}

/// splitmix64 of `x`.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl AsyncRead for Generated {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = usize::try_from(self.left)
            .unwrap_or(usize::MAX)
            .min(buf.remaining())
            .min(64 << 10);
        let mut chunk = Vec::with_capacity(n + 8);
        let first = self.pos / 8;
        let skip = (self.pos % 8) as usize;
        let mut word = first;
        while chunk.len() < n + skip {
            chunk.extend_from_slice(&mix(word).to_le_bytes());
            word += 1;
        }
        buf.put_slice(&chunk[skip..skip + n]);
        self.pos += n as u64;
        self.left -= n as u64;
        Poll::Ready(Ok(()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_8_mib_object_streams_through_age_both_ways_in_bounded_memory() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = AgeConfig {
        identities: vec![SK.into()],
        recipients: vec![PK.into()],
        identity_files: vec![],
    };
    let keys = AgeKeys::from_config(&cfg).unwrap().unwrap();
    let file: Arc<dyn ReplicaClient> = Arc::new(FileClient::new(dir.path()));
    let client = AgeClient::new(file.clone(), keys);
    let g = Generation::parse("0123456789abcdef").unwrap();

    let data: ByteStream = Box::pin(Generated::new(SIZE));
    let (written, peak) = peak_during(client.write_snapshot(&g, 1, data)).await;
    written.unwrap();
    eprintln!("encrypting {SIZE} bytes: heap peak +{peak} bytes");
    let mut raw = file.open_snapshot(&g, 1).await.unwrap();
    let mut head = [0u8; 22];
    raw.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"age-encryption.org/v1\n");
    drop(raw);
    assert!(
        peak < BOUND,
        "encrypting {SIZE} bytes grew the heap by {peak} bytes"
    );

    let (read, peak) = peak_during(async {
        let mut s = client.open_snapshot(&g, 1).await.unwrap();
        let mut check = Generated::new(SIZE);
        let mut got = vec![0u8; 64 << 10];
        let mut want = vec![0u8; 64 << 10];
        let mut total = 0u64;
        loop {
            let n = s.read(&mut got).await.unwrap();
            if n == 0 {
                break;
            }
            check.read_exact(&mut want[..n]).await.unwrap();
            assert_eq!(got[..n], want[..n], "decrypted bytes differ at {total}");
            total += n as u64;
        }
        total
    })
    .await;
    assert_eq!(read, SIZE);
    eprintln!("decrypting {SIZE} bytes: heap peak +{peak} bytes");
    assert!(
        peak < BOUND,
        "decrypting {SIZE} bytes grew the heap by {peak} bytes"
    );
}
