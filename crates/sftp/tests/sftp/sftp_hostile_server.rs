//! Hostile SFTP servers, in process (russh server + russh-sftp server side) on a free port of
//! 127.0.0.1: one answers every READ with zero bytes, one never ends a READDIR (new names
//! every time), one never answers a request. A restore and a listing against each must end
//! with an error naming the object or directory, within a bounded time and bounded memory.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use litestream_core::config::ReplicaConfig;
use litestream_core::layout;
use litestream_core::restore::{restore, RestoreOptions};
use litestream_core::RetryConfig;
use litestream_core::{Generation, ReplicaClient};
use litestream_sftp::SftpClient;
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::PrivateKey;
use russh::server::{Auth, ChannelOpenHandle, Msg, Session};
use russh::{Channel, ChannelId};
use russh_sftp::protocol::{
    Attrs, Data, File, FileAttributes, Handle, Name, OpenFlags, Status, StatusCode,
};
use tokio::net::TcpListener;

/// Replica root on the hostile server.
const ROOT: &str = "/replica";
/// Names a hostile READDIR answer carries (OpenSSH sends up to 100; more keeps the test fast,
/// within the client's 256 KiB packet limit).
const NAMES_PER_READDIR: usize = 5000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// A v0.3 replica of one snapshot whose READs all answer with no data (never EOF).
    EmptyReads,
    /// Every READDIR answers with new names; the directory never ends.
    EndlessReaddir,
    /// The session starts (INIT is answered), then no request is ever answered.
    Silent,
}

fn generation() -> Generation {
    Generation::parse("0123456789abcdef").expect("generation")
}

fn attrs(is_dir: bool, size: u64) -> FileAttributes {
    FileAttributes {
        size: Some(size),
        permissions: Some(if is_dir { 0o040_755 } else { 0o100_644 }),
        mtime: Some(1_700_000_000),
        atime: Some(1_700_000_000),
        ..Default::default()
    }
}

/// The SFTP side of one session.
struct SftpHandler {
    mode: Mode,
    /// Directory handles whose (finite) listing was sent already.
    listed: HashSet<String>,
    next_name: u64,
}

impl SftpHandler {
    async fn stall(&self) {
        if self.mode == Mode::Silent {
            std::future::pending::<()>().await;
        }
    }
}

impl russh_sftp::server::Handler for SftpHandler {
    type Error = StatusCode;

    fn unimplemented(&self) -> StatusCode {
        StatusCode::OpUnsupported
    }

    async fn opendir(&mut self, id: u32, path: String) -> Result<Handle, StatusCode> {
        self.stall().await;
        let g = generation();
        if self.mode == Mode::EmptyReads
            && path != layout::generations_dir(ROOT)
            && path != layout::snapshots_dir(ROOT, &g)
        {
            return Err(StatusCode::NoSuchFile);
        }
        self.listed.remove(&path);
        Ok(Handle { id, handle: path })
    }

    async fn readdir(&mut self, id: u32, handle: String) -> Result<Name, StatusCode> {
        self.stall().await;
        if self.mode == Mode::EndlessReaddir {
            let files = (0..NAMES_PER_READDIR)
                .map(|_| {
                    self.next_name += 1;
                    // Short names, no long name, only a size: many names per answer.
                    File {
                        filename: format!("{:08x}", self.next_name),
                        longname: String::new(),
                        attrs: FileAttributes {
                            size: Some(4096),
                            ..Default::default()
                        },
                    }
                })
                .collect();
            return Ok(Name { id, files });
        }
        if !self.listed.insert(handle.clone()) {
            return Err(StatusCode::Eof);
        }
        let g = generation();
        let files = if handle == layout::generations_dir(ROOT) {
            vec![File::new(g.as_str(), attrs(true, 0))]
        } else if handle == layout::snapshots_dir(ROOT, &g) {
            vec![File::new("00000000.snapshot.lz4", attrs(false, 4096))]
        } else {
            vec![File::new(layout::snapshots_dir(ROOT, &g), attrs(true, 0))]
        };
        Ok(Name { id, files })
    }

    async fn open(
        &mut self,
        id: u32,
        filename: String,
        _pflags: OpenFlags,
        _attrs: FileAttributes,
    ) -> Result<Handle, StatusCode> {
        self.stall().await;
        Ok(Handle {
            id,
            handle: filename,
        })
    }

    async fn fstat(&mut self, id: u32, _handle: String) -> Result<Attrs, StatusCode> {
        self.stall().await;
        Ok(Attrs {
            id,
            attrs: attrs(false, 4096),
        })
    }

    async fn read(
        &mut self,
        id: u32,
        _handle: String,
        _offset: u64,
        _len: u32,
    ) -> Result<Data, StatusCode> {
        self.stall().await;
        Ok(Data {
            id,
            data: Vec::new(),
        })
    }

    async fn close(&mut self, id: u32, _handle: String) -> Result<Status, StatusCode> {
        self.stall().await;
        Ok(Status {
            id,
            status_code: StatusCode::Ok,
            error_message: "Ok".into(),
            language_tag: "en-US".into(),
        })
    }
}

/// The SSH side of one connection: any password, one session channel, the `sftp` subsystem.
struct SshHandler {
    mode: Mode,
    channels: HashMap<ChannelId, Channel<Msg>>,
}

impl russh::server::Handler for SshHandler {
    type Error = russh::Error;

    async fn auth_password(&mut self, _user: &str, _password: &str) -> Result<Auth, Self::Error> {
        Ok(Auth::Accept)
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.insert(channel.id(), channel);
        reply.accept().await;
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        id: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        match self.channels.remove(&id) {
            Some(channel) if name == "sftp" => {
                session.channel_success(id)?;
                let handler = SftpHandler {
                    mode: self.mode,
                    listed: HashSet::new(),
                    next_name: 0,
                };
                russh_sftp::server::run(channel.into_stream(), handler).await;
            }
            _ => session.channel_failure(id)?,
        }
        Ok(())
    }
}

/// A hostile server listening on 127.0.0.1; stops accepting when dropped.
struct HostileServer {
    port: u16,
    host_key: String,
    accept: tokio::task::JoinHandle<()>,
}

impl HostileServer {
    async fn start(mode: Mode) -> HostileServer {
        let key = PrivateKey::from(Ed25519Keypair::from_seed(&rand::random::<[u8; 32]>()));
        let host_key = key.public_key().to_openssh().expect("host key");
        let config = Arc::new(russh::server::Config {
            keys: vec![key],
            auth_rejection_time: Duration::from_millis(10),
            auth_rejection_time_initial: Some(Duration::ZERO),
            ..Default::default()
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let accept = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let handler = SshHandler {
                    mode,
                    channels: HashMap::new(),
                };
                let config = config.clone();
                tokio::spawn(async move {
                    if let Ok(session) = russh::server::run_stream(config, socket, handler).await {
                        let _ = session.await;
                    }
                });
            }
        });
        HostileServer {
            port,
            host_key,
            accept,
        }
    }

    /// A client of this server (host key pinned), with fast retries and request timeouts.
    async fn client(&self) -> SftpClient {
        let cfg = ReplicaConfig {
            replica_type: Some("sftp".into()),
            host: Some(format!("127.0.0.1:{}", self.port)),
            user: Some("hostile".into()),
            password: Some("any".into()),
            host_key: Some(self.host_key.clone()),
            path: Some(ROOT.into()),
            ..Default::default()
        };
        SftpClient::from_replica_config(&cfg.resolve().expect("resolve"))
            .await
            .expect("client")
            .with_retry(RetryConfig {
                max_attempts: 2,
                initial_backoff: Duration::from_millis(50),
                max_backoff: Duration::from_millis(100),
            })
            .with_request_timeout(Duration::from_secs(1))
    }
}

impl Drop for HostileServer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Peak resident set of this process (VmHWM), in MiB.
fn peak_rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmHWM")
        / 1024
}

/// A whole restore through `client` into a fresh directory: the error, the elapsed time, and
/// whether anything was left in the output directory.
async fn restore_error(client: SftpClient) -> (String, Duration, Vec<String>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = RestoreOptions::new(dir.path().join("restored.db"));
    opts.retry = RetryConfig {
        max_attempts: 2,
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(100),
    };
    let started = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(120), restore(Arc::new(client), &opts))
        .await
        .expect("restore hangs: no result within 120 s");
    let err = result
        .expect_err("a hostile server cannot restore")
        .to_string();
    let left: Vec<String> = std::fs::read_dir(dir.path())
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    (err, started.elapsed(), left)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_answering_read_with_no_data_fails_the_restore_naming_the_snapshot() {
    let server = HostileServer::start(Mode::EmptyReads).await;
    let (err, took, left) = restore_error(server.client().await).await;
    assert!(
        err.contains("00000000.snapshot.lz4") && err.contains("no data"),
        "{err}"
    );
    assert!(took < Duration::from_secs(30), "took {took:?}: {err}");
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_readdir_fails_the_listing_and_the_restore_naming_the_directory() {
    let server = HostileServer::start(Mode::EndlessReaddir).await;
    let before = peak_rss_mib();
    let started = Instant::now();
    let err = tokio::time::timeout(
        Duration::from_secs(120),
        server.client().await.list_objects("ltx/0"),
    )
    .await
    .expect("listing hangs: no result within 120 s")
    .expect_err("an endless directory cannot be listed")
    .to_string();
    let took = started.elapsed();
    let grown = peak_rss_mib().saturating_sub(before);
    eprintln!("endless READDIR: {took:?}, peak RSS grew {grown} MiB: {err}");
    assert!(err.contains(&format!("{ROOT}/ltx/0")), "{err}");
    assert!(err.contains("entries"), "{err}");
    assert!(took < Duration::from_secs(60), "took {took:?}");
    assert!(grown < 256, "peak RSS grew by {grown} MiB");

    let (err, took, left) = restore_error(server.client().await).await;
    assert!(err.contains(&layout::generations_dir(ROOT)), "{err}");
    assert!(took < Duration::from_secs(60), "took {took:?}");
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_answers_fails_the_listing_and_the_restore_in_bounded_time() {
    let server = HostileServer::start(Mode::Silent).await;
    let started = Instant::now();
    let err = tokio::time::timeout(
        Duration::from_secs(60),
        server.client().await.list_objects("ltx/0"),
    )
    .await
    .expect("listing hangs: no result within 60 s")
    .expect_err("a silent server cannot be listed")
    .to_string();
    let took = started.elapsed();
    assert!(err.contains(&format!("{ROOT}/ltx/0")), "{err}");
    assert!(err.contains("did not answer"), "{err}");
    // Two attempts of a 1 s request timeout (and the close of nothing), plus backoff.
    assert!(took < Duration::from_secs(15), "took {took:?}: {err}");

    let (err, took, left) = restore_error(server.client().await).await;
    assert!(err.contains(&layout::generations_dir(ROOT)), "{err}");
    assert!(err.contains("did not answer"), "{err}");
    assert!(took < Duration::from_secs(30), "took {took:?}: {err}");
    assert!(left.is_empty(), "left behind: {left:?}");
}
