//! [`SftpClient`]: the [`ObjectStore`] (so the [`litestream_core::ReplicaClient`]) over one
//! lazily opened, reused SFTP connection.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use litestream_core::config::ReplicaConfig;
use litestream_core::layout;
use litestream_core::listing::ListedObject;
use litestream_core::metrics::{record_operation, Operation};
use litestream_core::RetryConfig;
use litestream_core::{ByteStream, DirListing, Error, ObjectStore, PutOutcome, Result, Upload};
use russh_sftp::client::error::Error as SftpError;
use russh_sftp::protocol::{FileAttributes, OpenFlags, StatusCode};
use time::OffsetDateTime;
use tokio::io::AsyncReadExt;

use crate::config::SftpConfig;
use crate::connection::{
    backend, describe, is_connection_lost, is_no_such_file, Conn, REQUEST_TIMEOUT,
};
use crate::TYPE;

/// A replica stored in a directory on an SFTP server.
///
/// Cheap to share behind an `Arc`; all methods take `&self`. The SSH connection is opened on
/// first use, reused by every request, and re-opened (with backoff) whenever it drops.
pub struct SftpClient {
    cfg: Arc<SftpConfig>,
    conn: tokio::sync::Mutex<Option<Arc<Conn>>>,
    retry: RetryConfig,
    request_timeout: std::time::Duration,
}

impl fmt::Debug for SftpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SftpClient")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

/// One directory entry: whether it is a directory, and its name, size and mtime.
struct Entry {
    is_dir: bool,
    object: ListedObject,
}

fn mtime(attrs: &FileAttributes) -> OffsetDateTime {
    attrs
        .mtime
        .and_then(|t| OffsetDateTime::from_unix_timestamp(i64::from(t)).ok())
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

impl SftpClient {
    /// A client for validated settings. Nothing is dialed until the first request.
    pub fn new(cfg: SftpConfig) -> SftpClient {
        SftpClient {
            cfg: Arc::new(cfg),
            conn: tokio::sync::Mutex::new(None),
            retry: RetryConfig::default(),
            request_timeout: REQUEST_TIMEOUT,
        }
    }

    /// Replace how often and how patiently requests are retried after a dropped connection.
    pub fn with_retry(mut self, retry: RetryConfig) -> SftpClient {
        self.retry = retry;
        self
    }

    /// Replace how long one SFTP request may wait for its answer (default 10 s, at least
    /// 1 s; whole seconds). A request without an answer by then counts as a lost connection:
    /// the client reconnects and retries it as [`with_retry`](Self::with_retry) allows.
    pub fn with_request_timeout(mut self, timeout: std::time::Duration) -> SftpClient {
        self.request_timeout = timeout.max(std::time::Duration::from_secs(1));
        self
    }

    /// Build a client from a resolved replica config (`host`, `user`, `password`, `key-path`,
    /// `path`, `host-key`, `known-hosts-path`, `insecure-ignore-host-key`). The connection is
    /// made lazily, on the first request.
    pub async fn from_replica_config(cfg: &ReplicaConfig) -> Result<SftpClient> {
        Ok(SftpClient::new(SftpConfig::from_replica_config(cfg)?))
    }

    /// The validated settings.
    pub fn config(&self) -> &SftpConfig {
        &self.cfg
    }

    /// Connect now (instead of on the first request) and report any connection, host key or
    /// authentication error.
    pub async fn connect(&self) -> Result<()> {
        self.conn().await.map(|_| ())
    }

    async fn conn(&self) -> Result<Arc<Conn>> {
        let mut guard = self.conn.lock().await;
        if let Some(c) = guard.as_ref() {
            if !c.is_closed() {
                return Ok(c.clone());
            }
            tracing::info!(endpoint = %self.cfg.endpoint(), "sftp connection lost; reconnecting");
        }
        *guard = None;
        let c = Arc::new(Conn::connect(&self.cfg, self.request_timeout).await?);
        *guard = Some(c.clone());
        Ok(c)
    }

    async fn invalidate(&self, conn: &Arc<Conn>) {
        let mut guard = self.conn.lock().await;
        if guard.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
            *guard = None;
        }
    }

    /// The remote path of `key` (relative, checked by core) under the root.
    fn path(&self, key: &str) -> String {
        layout::join(&[&self.cfg.path, key])
    }

    fn err(&self, op: &str, path: &str, e: &SftpError) -> Error {
        backend(
            &self.cfg,
            format!("{op} {path}: {}", describe(e, self.request_timeout)),
            is_connection_lost(e),
        )
    }

    /// Run `f` on the shared connection; on a dropped connection reconnect with backoff and
    /// try again. `Ok(Err(e))` from `f` is a protocol error returned as is.
    async fn run<T, F, Fut>(&self, op: &str, path: &str, f: F) -> Result<T>
    where
        F: Fn(Arc<Conn>) -> Fut,
        Fut: Future<Output = std::result::Result<T, SftpError>>,
    {
        let mut attempt = 1;
        loop {
            let result = match self.conn().await {
                Ok(conn) => match f(conn.clone()).await {
                    Ok(v) => return Ok(v),
                    Err(e) => {
                        if is_connection_lost(&e) {
                            self.invalidate(&conn).await;
                        }
                        self.err(op, path, &e)
                    }
                },
                Err(e) => e,
            };
            if !result.is_retryable() || attempt >= self.retry.max_attempts.max(1) {
                return Err(result);
            }
            let delay = self.retry.backoff(attempt);
            tracing::warn!(op, path, attempt, error = %result, ?delay, "sftp request failed; retrying");
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    async fn list(&self, dir: &str) -> Result<Vec<Entry>> {
        let entries = self
            .run("readdir", dir, |c| async move {
                let handle = match c.sftp.opendir(dir).await {
                    Ok(h) => h.handle,
                    Err(e) if is_no_such_file(&e) => return Ok(Vec::new()),
                    Err(e) => return Err(e),
                };
                let mut out = Vec::new();
                let mut empty_pages = 0u32;
                let result = loop {
                    match c.sftp.readdir(handle.as_str()).await {
                        Ok(name) => {
                            empty_pages = if name.files.is_empty() {
                                empty_pages + 1
                            } else {
                                0
                            };
                            if let Some(why) =
                                readdir_limit(out.len() + name.files.len(), empty_pages)
                            {
                                // Limited: not retried (the server would do it again).
                                break Err(SftpError::Limited(why));
                            }
                            for f in name.files {
                                if f.filename == "." || f.filename == ".." {
                                    continue;
                                }
                                out.push(Entry {
                                    is_dir: f.attrs.is_dir(),
                                    object: ListedObject {
                                        size: f.attrs.size.unwrap_or(0),
                                        modified: mtime(&f.attrs),
                                        name: f.filename,
                                    },
                                });
                            }
                        }
                        Err(SftpError::Status(s)) if s.status_code == StatusCode::Eof => {
                            break Ok(out)
                        }
                        Err(e) => break Err(e),
                    }
                };
                let _ = c.sftp.close(handle).await;
                result
            })
            .await?;
        record_operation(TYPE, Operation::List, 0);
        Ok(entries)
    }

    async fn open(&self, path: String) -> Result<ByteStream> {
        let p = path.as_str();
        let opened = self
            .run("open", p, |c| async move {
                let h = match c
                    .sftp
                    .open(p, OpenFlags::READ, FileAttributes::default())
                    .await
                {
                    Ok(h) => h.handle,
                    Err(e) if is_no_such_file(&e) => return Ok(None),
                    Err(e) => return Err(e),
                };
                let size = match c.sftp.fstat(h.as_str()).await {
                    Ok(a) => a.attrs.size,
                    Err(e) => {
                        let _ = c.sftp.close(h).await;
                        return Err(e);
                    }
                };
                Ok(Some((c, h, size)))
            })
            .await?;
        let Some((conn, handle, size)) = opened else {
            return Err(Error::not_found(format!("{}:{path}", self.cfg.endpoint())));
        };
        record_operation(TYPE, Operation::Get, size.unwrap_or(0));
        let reader = RemoteReader {
            conn,
            handle,
            offset: 0,
            what: format!("{}:{path}", self.cfg.endpoint()),
            empty: 0,
        };
        let stream = futures::stream::unfold(Some(reader), |state| async move {
            let mut r = state?;
            match r
                .conn
                .sftp
                .read(r.handle.as_str(), r.offset, r.conn.read_len)
                .await
            {
                Ok(d) if d.data.is_empty() && r.empty + 1 >= MAX_EMPTY_READS => {
                    let _ = r.conn.sftp.close(r.handle.as_str()).await;
                    let msg = format!(
                        "read {}: the server answered READ at offset {} with no data {} times \
                         (neither data nor end of file)",
                        r.what, r.offset, MAX_EMPTY_READS
                    );
                    Some((
                        Err(std::io::Error::new(std::io::ErrorKind::InvalidData, msg)),
                        None,
                    ))
                }
                Ok(d) => {
                    r.empty = if d.data.is_empty() { r.empty + 1 } else { 0 };
                    r.offset += d.data.len() as u64;
                    Some((Ok(bytes::Bytes::from(d.data)), Some(r)))
                }
                Err(SftpError::Status(s)) if s.status_code == StatusCode::Eof => {
                    let _ = r.conn.sftp.close(r.handle.as_str()).await;
                    None
                }
                Err(e) => {
                    let _ = r.conn.sftp.close(r.handle.as_str()).await;
                    let kind = if is_connection_lost(&e) {
                        std::io::ErrorKind::ConnectionAborted
                    } else {
                        std::io::ErrorKind::Other
                    };
                    Some((
                        Err(std::io::Error::new(
                            kind,
                            format!("read {}: {}", r.what, describe(&e, r.conn.request_timeout)),
                        )),
                        None,
                    ))
                }
            }
        });
        Ok(Box::pin(tokio_util::io::StreamReader::new(stream)))
    }

    /// Create `dir` and its missing parents.
    async fn mkdir_all(&self, c: &Conn, dir: &str) -> std::result::Result<(), SftpError> {
        let mut missing = Vec::new();
        let mut cur = dir.to_string();
        loop {
            if cur.is_empty() || cur == "/" || cur == "." {
                break;
            }
            match c.sftp.stat(cur.as_str()).await {
                Ok(_) => break,
                Err(e) if is_no_such_file(&e) => {}
                Err(e) => return Err(e),
            }
            missing.push(cur.clone());
            match cur.rfind('/') {
                Some(0) => cur = "/".into(),
                Some(i) => cur.truncate(i),
                None => cur.clear(),
            }
        }
        for d in missing.iter().rev() {
            if let Err(e) = c.sftp.mkdir(d.as_str(), FileAttributes::default()).await {
                // Lost a race with another writer? Then the directory exists now.
                match c.sftp.stat(d.as_str()).await {
                    Ok(a) if a.attrs.is_dir() => {}
                    _ => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// Write `data` to `<path>.tmp`, set its mtime to `timestamp` if given (as Litestream
    /// v0.5 does for LTX files), then rename it over `path`. Returns (size, mtime).
    async fn write_atomic(&self, path: &str, upload: Upload) -> Result<(u64, OffsetDateTime)> {
        let Upload {
            mut data,
            timestamp,
        } = upload;
        let tmp = format!("{path}.tmp");
        let dir = path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
        let t = tmp.as_str();
        // Opening the temporary file consumes nothing from `data`, so it may be retried.
        let (conn, handle) = self
            .run("create", t, |c| async move {
                let flags = OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE;
                let h = match c.sftp.open(t, flags, FileAttributes::default()).await {
                    Ok(h) => h,
                    Err(e) if is_no_such_file(&e) && !dir.is_empty() => {
                        self.mkdir_all(&c, dir).await?;
                        c.sftp.open(t, flags, FileAttributes::default()).await?
                    }
                    Err(e) => return Err(e),
                };
                Ok((c, h.handle))
            })
            .await?;

        // Set when the upload's source stream failed: the connection is fine then.
        let mut local_failure = false;
        let result = async {
            let mut offset = 0u64;
            let mut buf = vec![0u8; conn.write_len];
            loop {
                let mut n = 0;
                while n < buf.len() {
                    let m = data.read(&mut buf[n..]).await.map_err(|e| {
                        local_failure = true;
                        Error::io(format!("reading upload data for {path}"), e)
                    })?;
                    if m == 0 {
                        break;
                    }
                    n += m;
                }
                if n == 0 {
                    break;
                }
                conn.sftp
                    .write(handle.as_str(), offset, buf[..n].to_vec())
                    .await
                    .map_err(|e| self.err("write", t, &e))?;
                offset += n as u64;
                if n < buf.len() {
                    break;
                }
            }
            conn.sftp
                .close(handle.as_str())
                .await
                .map_err(|e| self.err("close", t, &e))?;
            if let Some(ts) = timestamp {
                let secs = u32::try_from(ts.unix_timestamp()).map_err(|_| {
                    Error::InvalidArgument(format!(
                        "sftp: timestamp {ts} of {path} does not fit an SFTP file time"
                    ))
                })?;
                let attrs = FileAttributes {
                    atime: Some(secs),
                    mtime: Some(secs),
                    ..FileAttributes::empty()
                };
                conn.sftp
                    .setstat(t, attrs)
                    .await
                    .map_err(|e| self.err("setstat", t, &e))?;
            }
            conn.rename_over(t, path)
                .await
                .map_err(|e| self.err("rename", path, &e))?;
            let attrs = conn
                .sftp
                .stat(path)
                .await
                .map_err(|e| self.err("stat", path, &e))?;
            Ok::<_, Error>((offset, mtime(&attrs.attrs)))
        }
        .await;
        match &result {
            Ok((n, _)) => record_operation(TYPE, Operation::Put, *n),
            Err(e) => {
                if e.is_retryable() && !local_failure {
                    // The session is gone; the next request reconnects.
                    self.invalidate(&conn).await;
                } else {
                    let _ = conn.sftp.close(handle.as_str()).await;
                    let _ = conn.sftp.remove(t).await;
                }
            }
        }
        result
    }

    async fn remove(&self, path: &str) -> Result<()> {
        self.run("remove", path, |c| async move {
            removed(c.sftp.remove(path).await)
        })
        .await?;
        record_operation(TYPE, Operation::Delete, 0);
        Ok(())
    }

    /// Remove `dir` and everything below it (depth first). A missing `dir` is fine.
    async fn remove_all(&self, dir: &str) -> Result<()> {
        let mut stack = vec![(dir.to_string(), false)];
        while let Some((d, expanded)) = stack.pop() {
            if expanded {
                let p = d.as_str();
                self.run(
                    "rmdir",
                    p,
                    |c| async move { removed(c.sftp.rmdir(p).await) },
                )
                .await?;
                record_operation(TYPE, Operation::Delete, 0);
                continue;
            }
            let entries = self.list(&d).await?;
            stack.push((d.clone(), true));
            for e in entries {
                let child = layout::join(&[&d, &e.object.name]);
                if e.is_dir {
                    stack.push((child, false));
                } else {
                    self.remove(&child).await?;
                }
            }
        }
        Ok(())
    }
}

/// The result of a removal, where a file or directory that does not exist counts as removed.
fn removed<T>(result: std::result::Result<T, SftpError>) -> std::result::Result<(), SftpError> {
    match result {
        Ok(_) => Ok(()),
        Err(e) if is_no_such_file(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

/// State of an open remote file being streamed.
struct RemoteReader {
    conn: Arc<Conn>,
    handle: String,
    offset: u64,
    what: String,
    /// READ answers in a row that held no data (neither data nor EOF: a broken server).
    empty: u32,
}

/// Empty READ answers in a row after which a read fails instead of asking forever.
const MAX_EMPTY_READS: u32 = 8;

/// Most entries a directory listing accepts (a server that never ends READDIR stops here).
/// A million entries hold ~100 MiB; a replica directory holds one per WAL segment or LTX
/// file of one generation or level, far fewer under any retention.
const MAX_DIR_ENTRIES: usize = 1_000_000;

/// READDIR answers in a row without an entry after which a listing fails.
const MAX_EMPTY_READDIRS: u32 = 8;

/// Why a listing must stop: too many entries, or too many empty READDIR answers in a row.
fn readdir_limit(entries: usize, empty_pages: u32) -> Option<String> {
    if entries > MAX_DIR_ENTRIES {
        return Some(format!(
            "directory listing exceeds {MAX_DIR_ENTRIES} entries; the server does not end it"
        ));
    }
    if empty_pages >= MAX_EMPTY_READDIRS {
        return Some(format!(
            "the server answered READDIR {empty_pages} times in a row with no entry and no end"
        ));
    }
    None
}

#[async_trait]
impl ObjectStore for SftpClient {
    const KIND: &'static str = TYPE;

    async fn list_dir(&self, dir: &str) -> Result<DirListing> {
        let mut out = DirListing::default();
        for e in self.list(&self.path(dir)).await? {
            if e.is_dir {
                out.dirs.push(e.object.name);
            } else {
                out.objects.push(e.object);
            }
        }
        Ok(out)
    }

    async fn get(&self, key: &str) -> Result<ByteStream> {
        self.open(self.path(key)).await
    }

    async fn put(&self, key: &str, upload: Upload) -> Result<PutOutcome> {
        let (size, modified) = self.write_atomic(&self.path(key), upload).await?;
        Ok(PutOutcome {
            size,
            modified: Some(modified),
        })
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.remove(&self.path(key)).await
    }

    async fn delete_dir(&self, dir: &str) -> Result<()> {
        self.remove_all(&self.path(dir)).await
    }
}

#[cfg(test)]
mod hostile_tests {
    use super::*;

    #[test]
    fn endless_or_empty_readdir_answers_stop_the_listing() {
        assert_eq!(readdir_limit(10, 0), None);
        assert_eq!(readdir_limit(10, MAX_EMPTY_READDIRS - 1), None);
        assert!(readdir_limit(10, MAX_EMPTY_READDIRS)
            .is_some_and(|m| m.contains("no entry and no end")));
        assert!(readdir_limit(MAX_DIR_ENTRIES + 1, 0).is_some_and(|m| m.contains("exceeds")));
    }
}
