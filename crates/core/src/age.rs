//! Client-side encryption of replica objects with [age](https://age-encryption.org), as
//! Litestream v0.3.13's per-replica `age: {identities, recipients}`.
//!
//! Every snapshot and WAL segment object is `age_encrypt(lz4_frame(payload))` in binary age
//! v1 (X25519 recipients), under its usual name. [`AgeClient`] wraps any [`ReplicaClient`]:
//! writes are encrypted to the recipients and reads decrypted with the identities, both
//! streaming on a blocking thread with bounded memory, so the engine, restore, validation
//! and retention work through it unchanged. Listings pass through untouched.
//!
//! * An object that is a plain LZ4 frame (written before encryption was turned on) is read
//!   as is.
//! * Recipients without identities: objects are written encrypted, but nothing can be read
//!   back; every read fails with [`Error::Unreadable`] naming the object. The engine then
//!   starts a new generation at start-up rather than resume one (validation cannot work);
//!   [`AgeKeys::can_decrypt`] lets callers warn at start-up.
//! * Litestream v0.5 (LTX) data has no age format: [`ReplicaClient::open_object`] is refused.
//! * Identities never appear in logs, errors or `Debug` output.

use std::fmt;
use std::io::{self, BufReader, Cursor, Read};
use std::str::FromStr;
use std::sync::Arc;

use age::x25519;
use async_trait::async_trait;
use time::OffsetDateTime;
use tokio::sync::oneshot;
use tokio_util::io::SyncIoBridge;

use crate::config::AgeConfig;
use crate::engine::stream::blocking_write_stream;
use crate::error::{Error, Result};
use crate::listing::ListedObject;
use crate::pos::{Generation, Pos};
use crate::replica_client::{ByteStream, ReplicaClient, SnapshotInfo, WalSegmentInfo};
use crate::restore::read_full;

/// The first bytes of an LZ4 frame: objects written without encryption.
const LZ4_MAGIC: [u8; 4] = [0x04, 0x22, 0x4D, 0x18];

/// Parsed age keys of one replica.
#[derive(Clone)]
pub struct AgeKeys {
    identities: Vec<x25519::Identity>,
    recipients: Vec<x25519::Recipient>,
}

impl fmt::Debug for AgeKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgeKeys")
            .field(
                "identities",
                &format_args!("[{} redacted]", self.identities.len()),
            )
            .field("recipients", &self.recipients.len())
            .finish()
    }
}

/// The non-empty, non-comment lines of an age key list.
fn key_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

impl AgeKeys {
    /// Parse `cfg` (reading its `identity-files`); `None` when it names no key at all.
    ///
    /// Each `identities`/`recipients` entry may hold several keys, one per line, as age's
    /// key files do. A bad identity is reported by position, never by value.
    pub fn from_config(cfg: &AgeConfig) -> Result<Option<AgeKeys>> {
        let mut identities = Vec::new();
        for (i, text) in cfg.identities.iter().enumerate() {
            for line in key_lines(text) {
                let id = x25519::Identity::from_str(line).map_err(|_| {
                    Error::InvalidConfig(format!(
                        "age: identity #{} is not an X25519 identity (AGE-SECRET-KEY-1...)",
                        i + 1
                    ))
                })?;
                identities.push(id);
            }
        }
        for path in &cfg.identity_files {
            let text = std::fs::read_to_string(path).map_err(|e| Error::io(path.clone(), e))?;
            let before = identities.len();
            for line in key_lines(&text) {
                let id = x25519::Identity::from_str(line).map_err(|_| {
                    Error::InvalidConfig(format!(
                        "age: identity file {path}: a line is not an X25519 identity \
                         (AGE-SECRET-KEY-1...)"
                    ))
                })?;
                identities.push(id);
            }
            if identities.len() == before {
                return Err(Error::InvalidConfig(format!(
                    "age: identity file {path} holds no identity"
                )));
            }
        }
        let mut recipients = Vec::new();
        for text in &cfg.recipients {
            for line in key_lines(text) {
                let r = x25519::Recipient::from_str(line)
                    .map_err(|e| Error::InvalidConfig(format!("age: recipient {line:?}: {e}")))?;
                recipients.push(r);
            }
        }
        if identities.is_empty() && recipients.is_empty() {
            return Ok(None);
        }
        Ok(Some(AgeKeys {
            identities,
            recipients,
        }))
    }

    /// Whether objects are encrypted when written (some recipient is configured).
    pub fn encrypts(&self) -> bool {
        !self.recipients.is_empty()
    }

    /// Whether encrypted objects can be read back (some identity is configured).
    pub fn can_decrypt(&self) -> bool {
        !self.identities.is_empty()
    }
}

/// A [`ReplicaClient`] that age-encrypts snapshots and WAL segments on their way to `inner`
/// and decrypts them on their way back.
#[derive(Debug)]
pub struct AgeClient {
    inner: Arc<dyn ReplicaClient>,
    keys: Arc<AgeKeys>,
}

impl AgeClient {
    /// Wrap `inner` with `keys`.
    pub fn new(inner: Arc<dyn ReplicaClient>, keys: AgeKeys) -> Self {
        AgeClient {
            inner,
            keys: Arc::new(keys),
        }
    }

    fn encrypt(&self, data: ByteStream) -> ByteStream {
        if !self.keys.encrypts() {
            return data;
        }
        let keys = self.keys.clone();
        let mut plain = SyncIoBridge::new(data);
        blocking_write_stream(move |w| {
            let recipients = keys.recipients.iter().map(|r| r as &dyn age::Recipient);
            let enc = age::Encryptor::with_recipients(recipients).map_err(io::Error::other)?;
            let mut out = enc.wrap_output(w)?;
            io::copy(&mut plain, &mut out)?;
            out.finish()?;
            Ok(())
        })
    }

    /// Decrypt `data` (the object `what`); header errors (wrong identity) are returned here.
    async fn decrypt(&self, what: String, data: ByteStream) -> Result<ByteStream> {
        let (head_tx, head_rx) = oneshot::channel::<Result<()>>();
        let keys = self.keys.clone();
        let name = what.clone();
        let bridge = SyncIoBridge::new(data);
        let stream = blocking_write_stream(move |w| {
            let mut r = BufReader::with_capacity(64 << 10, bridge);
            let mut magic = [0u8; 4];
            let n = match read_full(&mut r, &mut magic) {
                Ok(n) => n,
                Err(e) => {
                    let _ = head_tx.send(Err(Error::io(name, e)));
                    return Ok(());
                }
            };
            let mut input = Cursor::new(magic[..n].to_vec()).chain(r);
            if magic == LZ4_MAGIC {
                let _ = head_tx.send(Ok(()));
                io::copy(&mut input, w)?;
                return Ok(());
            }
            let ids = keys.identities.iter().map(|i| i as &dyn age::Identity);
            let opened = age::Decryptor::new_buffered(input).and_then(|d| d.decrypt(ids));
            let mut plain = match opened {
                Ok(p) => p,
                Err(e) => {
                    let _ = head_tx.send(Err(decrypt_error(&name, e)));
                    return Ok(());
                }
            };
            let _ = head_tx.send(Ok(()));
            io::copy(&mut plain, w)
                .map_err(|e| io::Error::new(e.kind(), format!("age: decrypting {name}: {e}")))?;
            Ok(())
        });
        match head_rx.await {
            Ok(Ok(())) => Ok(stream),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::io(
                what,
                io::Error::other("age: decryption task ended early"),
            )),
        }
    }

    /// A clear error when there is no identity to read `what` with.
    fn check_can_read(&self, what: &str) -> Result<()> {
        if self.keys.can_decrypt() {
            return Ok(());
        }
        Err(Error::Unreadable(format!(
            "age: cannot read {what}: this replica has recipients but no identities \
             (add `identities` or `identity-files` to its `age` config)"
        )))
    }
}

fn decrypt_error(what: &str, e: age::DecryptError) -> Error {
    match e {
        age::DecryptError::NoMatchingKeys => Error::InvalidConfig(format!(
            "age: none of the configured identities can decrypt {what} (wrong identity?)"
        )),
        age::DecryptError::Io(e) => Error::io(what, e),
        other => Error::corrupt(what, format!("age: {other}")),
    }
}

#[async_trait]
impl ReplicaClient for AgeClient {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    async fn generations(&self) -> Result<Vec<Generation>> {
        self.inner.generations().await
    }

    async fn snapshots(&self, generation: &Generation) -> Result<Vec<SnapshotInfo>> {
        self.inner.snapshots(generation).await
    }

    async fn wal_segments(&self, generation: &Generation) -> Result<Vec<WalSegmentInfo>> {
        self.inner.wal_segments(generation).await
    }

    async fn open_snapshot(&self, generation: &Generation, index: u32) -> Result<ByteStream> {
        let what = format!("snapshot {generation}/{index:08x}");
        self.check_can_read(&what)?;
        let data = self.inner.open_snapshot(generation, index).await?;
        self.decrypt(what, data).await
    }

    async fn open_wal_segment(&self, pos: &Pos) -> Result<ByteStream> {
        let what = format!("wal segment {pos}");
        self.check_can_read(&what)?;
        let data = self.inner.open_wal_segment(pos).await?;
        self.decrypt(what, data).await
    }

    async fn write_snapshot(
        &self,
        generation: &Generation,
        index: u32,
        data: ByteStream,
    ) -> Result<SnapshotInfo> {
        let data = self.encrypt(data);
        self.inner.write_snapshot(generation, index, data).await
    }

    async fn write_wal_segment(&self, pos: &Pos, data: ByteStream) -> Result<WalSegmentInfo> {
        let data = self.encrypt(data);
        self.inner.write_wal_segment(pos, data).await
    }

    async fn delete_snapshot(&self, generation: &Generation, index: u32) -> Result<()> {
        self.inner.delete_snapshot(generation, index).await
    }

    async fn delete_wal_segments(&self, positions: &[Pos]) -> Result<()> {
        self.inner.delete_wal_segments(positions).await
    }

    async fn delete_generation(&self, generation: &Generation) -> Result<()> {
        self.inner.delete_generation(generation).await
    }

    async fn list_objects(&self, dir: &str) -> Result<Vec<ListedObject>> {
        self.inner.list_objects(dir).await
    }

    async fn open_object(&self, key: &str) -> Result<ByteStream> {
        Err(Error::InvalidConfig(format!(
            "age: encryption is not supported for Litestream v0.5 (LTX) replicas, as in \
             Litestream v0.5; cannot read {key} (remove `age` from this replica's config)"
        )))
    }

    async fn object_timestamp(&self, key: &str) -> Result<Option<OffsetDateTime>> {
        self.inner.object_timestamp(key).await
    }
}

#[cfg(test)]
#[path = "age_tests.rs"]
mod tests;
