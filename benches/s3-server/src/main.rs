//! `bench-s3-server`: the local S3 server of `benches/s3_restore.sh`.
//!
//! It serves a directory as S3 (`ROOT/<bucket>/<key>`) with the `s3s-fs` storage of the `s3s`
//! project, as the `s3s-fs` binary does, with two differences that matter for a benchmark:
//!
//! * accepted sockets get `TCP_NODELAY`, as production S3 servers (and Go's net/http) do. The
//!   `s3s-fs` 0.14.1 binary leaves Nagle on, so a GET whose headers and body go out in two writes
//!   waits for the client's delayed ACK (40 ms on Linux): that measures the kernel's timers, not
//!   the client.
//! * one access-log line per request (`METHOD URI STATUS`), so the benchmark counts requests
//!   without debug tracing.
//! * at start-up, every object under ROOT that has no stored ETag gets one, computed once, in
//!   the sidecar file where s3s-fs's own `PutObject` stores it
//!   (`.bucket-B.object-K.internal.json`, B and K the URL-safe base64 of bucket and key,
//!   holding `{"e_tag": "<md5 hex>"}`). The benchmark hard-links replica files in instead of
//!   uploading them, and without the sidecar s3s-fs's `GetObject` (and `HeadObject`) hashes
//!   the whole file for the ETag on every request before sending a byte (measured: 1.3-2.1 s
//!   of server CPU per 100-200 MB restore). S3 computes the ETag at PUT and serves a GET by
//!   streaming the stored bytes; with the sidecar, s3s-fs does the same, for every client.
//!
//! * `GetObject` bodies are read from the file in chunks of 256 KiB. s3s-fs 0.14.1 streams
//!   them through `tokio::fs` with a 4 KiB buffer: one blocking-pool round trip (two thread
//!   wake-ups) per 4 KiB read and one 4 KiB socket write each, so serving 100 MB cost it about
//!   a second of CPU, mostly context switches, and the client one socket read per 4 KiB. A
//!   production store streams in large writes. Everything else (key resolution, metadata,
//!   ETag, ranges' headers, errors) is still s3s-fs's own answer: this front end calls s3s-fs's
//!   `get_object` and only replaces the body it returns with the same bytes read in larger
//!   chunks.
//!
//! `--hash-on-get` skips the stored ETags and `--get-chunk-kib 4` restores s3s-fs's own body
//! (the behaviour before 2026-12-06, for comparison).
//!
//! With `--latency-ms N` every response is held back N ms before it is sent, a stand-in for a
//! remote store's time to first byte (tens of ms for S3 from outside its region).
//!
//! Usage: `bench-s3-server --port PORT --access-key AK --secret-key SK --access-log FILE
//! [--latency-ms N] [--hash-on-get] [--get-chunk-kib N] ROOT` (listens on 127.0.0.1).

use std::fs::File;
use std::io::{LineWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use s3s::auth::SimpleAuth;
use s3s::crypto::{Checksum, Md5};
use s3s::dto::{self, StreamingBlob};
use s3s::service::S3ServiceBuilder;
use s3s::{S3Request, S3Response, S3Result, S3};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

/// Command-line options.
#[derive(Debug)]
struct Options {
    port: u16,
    access_key: String,
    secret_key: String,
    access_log: PathBuf,
    latency: std::time::Duration,
    /// `--hash-on-get`: leave objects without a stored ETag (s3s-fs then hashes on every GET).
    hash_on_get: bool,
    /// `--get-chunk-kib N`: GetObject bodies are read in chunks of N KiB (default 256; 4
    /// keeps s3s-fs's own body).
    get_chunk: usize,
    root: PathBuf,
}

fn parse_options() -> Result<Options> {
    let mut args = std::env::args().skip(1);
    let (mut port, mut ak, mut sk, mut log, mut root) = (None, None, None, None, None);
    let mut latency_ms = 0u64;
    let mut hash_on_get = false;
    let mut get_chunk_kib = 256usize;
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match a.as_str() {
            "--port" => port = Some(value("--port")?.parse::<u16>().context("--port")?),
            "--access-key" => ak = Some(value("--access-key")?),
            "--secret-key" => sk = Some(value("--secret-key")?),
            "--access-log" => log = Some(PathBuf::from(value("--access-log")?)),
            "--latency-ms" => {
                latency_ms = value("--latency-ms")?.parse().context("--latency-ms")?
            }
            "--hash-on-get" => hash_on_get = true,
            "--get-chunk-kib" => {
                get_chunk_kib = value("--get-chunk-kib")?
                    .parse()
                    .context("--get-chunk-kib")?
            }
            _ if a.starts_with('-') => bail!("unknown option {a}"),
            _ => root = Some(PathBuf::from(a)),
        }
    }
    Ok(Options {
        port: port.context("--port is required")?,
        access_key: ak.context("--access-key is required")?,
        secret_key: sk.context("--secret-key is required")?,
        access_log: log.context("--access-log is required")?,
        latency: std::time::Duration::from_millis(latency_ms),
        hash_on_get,
        get_chunk: get_chunk_kib.max(1) << 10,
        root: root.context("ROOT directory is required")?,
    })
}

/// s3s-fs, with `GetObject` bodies read in larger chunks (see the module docs).
struct Store {
    fs: s3s_fs::FileSystem,
    root: PathBuf,
    chunk: usize,
}

/// `impl S3 for Store`: the listed operations forwarded to s3s-fs unchanged, plus `$extra`
/// (the macro builds the whole impl so that `async_trait` sees expanded methods).
macro_rules! s3_impl {
    (forward { $($name:ident: $input:ident => $output:ident;)* } extra { $($extra:item)* }) => {
        #[async_trait::async_trait]
        impl S3 for Store {
            $(
                async fn $name(
                    &self,
                    req: S3Request<dto::$input>,
                ) -> S3Result<S3Response<dto::$output>> {
                    self.fs.$name(req).await
                }
            )*
            $($extra)*
        }
    };
}

s3_impl! {
    forward {
        create_bucket: CreateBucketInput => CreateBucketOutput;
        copy_object: CopyObjectInput => CopyObjectOutput;
        delete_bucket: DeleteBucketInput => DeleteBucketOutput;
        delete_object: DeleteObjectInput => DeleteObjectOutput;
        delete_objects: DeleteObjectsInput => DeleteObjectsOutput;
        get_bucket_location: GetBucketLocationInput => GetBucketLocationOutput;
        head_bucket: HeadBucketInput => HeadBucketOutput;
        head_object: HeadObjectInput => HeadObjectOutput;
        list_buckets: ListBucketsInput => ListBucketsOutput;
        list_objects: ListObjectsInput => ListObjectsOutput;
        list_objects_v2: ListObjectsV2Input => ListObjectsV2Output;
        put_object: PutObjectInput => PutObjectOutput;
        create_multipart_upload: CreateMultipartUploadInput => CreateMultipartUploadOutput;
        upload_part: UploadPartInput => UploadPartOutput;
        list_parts: ListPartsInput => ListPartsOutput;
        complete_multipart_upload: CompleteMultipartUploadInput => CompleteMultipartUploadOutput;
        abort_multipart_upload: AbortMultipartUploadInput => AbortMultipartUploadOutput;
    }
    extra {
    async fn get_object(
        &self,
        req: S3Request<dto::GetObjectInput>,
    ) -> S3Result<S3Response<dto::GetObjectOutput>> {
        let path = self.root.join(&req.input.bucket).join(&req.input.key);
        let mut resp = self.fs.get_object(req).await?;
        if self.chunk <= 4096 {
            return Ok(resp);
        }
        let out = &mut resp.output;
        let len = u64::try_from(out.content_length.unwrap_or(0)).unwrap_or(0);
        // "bytes FIRST-LAST/TOTAL" when s3s-fs answered a range.
        let start = out
            .content_range
            .as_deref()
            .and_then(|r| r.strip_prefix("bytes "))
            .and_then(|r| r.split('-').next())
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0);
        let mut file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| s3s::s3_error!(e, InternalError))?;
        file.seek(std::io::SeekFrom::Start(start))
            .await
            .map_err(|e| s3s::s3_error!(e, InternalError))?;
        let body = ReaderStream::with_capacity(file.take(len), self.chunk);
        out.body = Some(StreamingBlob::wrap(body));
        Ok(resp)
    }
    }
}

/// Base64 of `s`, URL-safe alphabet without padding (the sidecar names of s3s-fs).
fn base64_url(s: &str) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in s.as_bytes().chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(ABC[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

/// MD5 of the file at `path`, hex.
fn md5_hex(path: &Path) -> Result<String> {
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut md5 = Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        md5.update(&buf[..n]);
    }
    Ok(md5.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Store the ETag of every object under `root/<bucket>/` that has none yet, as s3s-fs's
/// `PutObject` would have (see the module docs). Returns how many were written.
fn store_etags(root: &Path) -> Result<usize> {
    fn walk(dir: &Path, prefix: &str, out: &mut Vec<(String, PathBuf)>) -> Result<()> {
        for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let key = format!("{prefix}{name}");
            if entry.file_type()?.is_dir() {
                walk(&entry.path(), &format!("{key}/"), out)?;
            } else {
                out.push((key, entry.path()));
            }
        }
        Ok(())
    }
    let mut stored = 0;
    for bucket in std::fs::read_dir(root).with_context(|| format!("listing {}", root.display()))? {
        let bucket = bucket?;
        if !bucket.file_type()?.is_dir() {
            continue;
        }
        let name = bucket.file_name().to_string_lossy().into_owned();
        let mut objects = Vec::new();
        walk(&bucket.path(), "", &mut objects)?;
        for (key, path) in objects {
            let sidecar = root.join(format!(
                ".bucket-{}.object-{}.internal.json",
                base64_url(&name),
                base64_url(&key)
            ));
            if sidecar.exists() {
                continue;
            }
            let json = format!("{{\"e_tag\":\"{}\"}}", md5_hex(&path)?);
            std::fs::write(&sidecar, json)
                .with_context(|| format!("writing {}", sidecar.display()))?;
            stored += 1;
        }
    }
    Ok(stored)
}

#[tokio::main]
async fn main() -> Result<()> {
    let opts = parse_options()?;
    if !opts.hash_on_get {
        let started = std::time::Instant::now();
        let stored = store_etags(&opts.root)?;
        eprintln!(
            "bench-s3-server: stored the ETag of {stored} objects in {:.2} s",
            started.elapsed().as_secs_f64()
        );
    }
    let fs = s3s_fs::FileSystem::new(&opts.root)
        .map_err(|e| anyhow::anyhow!("{}: {e:?}", opts.root.display()))?;
    let root = std::fs::canonicalize(&opts.root)
        .with_context(|| format!("resolving {}", opts.root.display()))?;
    let store = Store {
        fs,
        root,
        chunk: opts.get_chunk,
    };
    let mut builder = S3ServiceBuilder::new(store);
    builder.set_auth(SimpleAuth::from_single(opts.access_key, opts.secret_key));
    let service = builder.build();
    let log = File::create(&opts.access_log)
        .with_context(|| format!("creating {}", opts.access_log.display()))?;
    let log = Arc::new(Mutex::new(LineWriter::new(log)));
    let latency = opts.latency;

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", opts.port))
        .await
        .with_context(|| format!("binding 127.0.0.1:{}", opts.port))?;
    eprintln!("bench-s3-server listening on 127.0.0.1:{}", opts.port);
    loop {
        let (socket, _) = listener.accept().await.context("accept")?;
        socket.set_nodelay(true).context("TCP_NODELAY")?;
        let service = service.clone();
        let log = log.clone();
        tokio::spawn(async move {
            let handler = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let service = service.clone();
                let log = log.clone();
                let line = format!("{} {}", req.method(), req.uri());
                async move {
                    if !latency.is_zero() {
                        tokio::time::sleep(latency).await;
                    }
                    let result = hyper::service::Service::call(&service, req).await;
                    let status = match &result {
                        Ok(resp) => resp.status().as_u16().to_string(),
                        Err(_) => "ERR".to_string(),
                    };
                    if let Ok(mut w) = log.lock() {
                        let _ = writeln!(w, "{line} {status}");
                    }
                    result
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(socket), handler)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_url_matches_s3s_fs_sidecar_names() {
        assert_eq!(super::base64_url("bench"), "YmVuY2g");
        assert_eq!(
            super::base64_url("bench/ltx/0009/0000000000000001-0000000000000001.ltx"),
            "YmVuY2gvbHR4LzAwMDkvMDAwMDAwMDAwMDAwMDAwMS0wMDAwMDAwMDAwMDAwMDAxLmx0eA"
        );
        assert_eq!(super::base64_url("ab"), "YWI");
        assert_eq!(super::base64_url("a"), "YQ");
    }
}
