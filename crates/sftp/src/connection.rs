//! One SSH connection with one SFTP session: dialing, host key check, authentication, and the
//! classification of failures into "connection lost" (reconnect and retry) and the rest.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use litestream_core::{Error, Result};
use russh::client;
use russh::keys::{PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh_sftp::client::error::Error as SftpError;
use russh_sftp::client::RawSftpSession;
use russh_sftp::protocol::StatusCode;

use crate::config::SftpConfig;
use crate::known_hosts::HostKeyPolicy;
use crate::TYPE;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one SFTP request waits for its answer by default (russh-sftp's default).
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_CHUNK: u32 = 32 * 1024;
const MAX_CHUNK: u64 = 255 * 1024;
const POSIX_RENAME: &str = "posix-rename@openssh.com";

/// russh callbacks: only the host key check does anything.
struct Handler {
    policy: HostKeyPolicy,
    host: String,
    port: u16,
    rejection: Arc<Mutex<Option<String>>>,
}

impl client::Handler for Handler {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_public_key: &PublicKeyOrCertificate,
    ) -> std::result::Result<bool, Self::Error> {
        let verdict = match server_public_key {
            PublicKeyOrCertificate::PublicKey { key, .. } => {
                self.policy
                    .verify(&self.host, self.port, key)
                    .map_err(|e| e.0)
            }
            PublicKeyOrCertificate::Certificate(_)
                if matches!(self.policy, HostKeyPolicy::InsecureIgnore) =>
            {
                Ok(())
            }
            PublicKeyOrCertificate::Certificate(c) => Err(format!(
                "server {}:{} offered a host certificate ({}); host certificates are not supported, \
                 pin the plain host key with host-key",
                self.host,
                self.port,
                c.algorithm()
            )),
        };
        match verdict {
            Ok(()) => Ok(true),
            Err(msg) => {
                if let Ok(mut r) = self.rejection.lock() {
                    *r = Some(msg);
                }
                Ok(false)
            }
        }
    }
}

/// A live SSH connection and its SFTP session.
pub(crate) struct Conn {
    handle: client::Handle<Handler>,
    pub(crate) sftp: RawSftpSession,
    pub(crate) posix_rename: bool,
    pub(crate) read_len: u32,
    pub(crate) write_len: usize,
    /// How long each request waits for its answer.
    pub(crate) request_timeout: Duration,
}

impl Conn {
    /// True once the SSH session has ended (server gone, network dropped).
    pub(crate) fn is_closed(&self) -> bool {
        self.handle.is_closed()
    }

    /// Dial, verify the host key, authenticate and start the `sftp` subsystem, whose
    /// requests each wait at most `request_timeout` (whole seconds) for their answer.
    pub(crate) async fn connect(cfg: &SftpConfig, request_timeout: Duration) -> Result<Conn> {
        let connect = Self::connect_inner(cfg, request_timeout);
        match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(r) => r,
            Err(_) => Err(backend(
                cfg,
                format!("connect timed out after {}s", CONNECT_TIMEOUT.as_secs()),
                true,
            )),
        }
    }

    async fn connect_inner(cfg: &SftpConfig, request_timeout: Duration) -> Result<Conn> {
        // Read the key before dialing so a bad key file is reported without network noise.
        let key = match &cfg.key_path {
            Some(path) => Some(read_key(cfg, path).await?),
            None => None,
        };
        let mut handle = dial(cfg).await?;
        authenticate(cfg, &mut handle, key).await?;
        let (sftp, posix_rename, read_len, write_len) =
            open_sftp(cfg, &handle, request_timeout).await?;
        tracing::debug!(endpoint = %cfg.endpoint(), posix_rename, read_len, write_len, "sftp connected");
        Ok(Conn {
            handle,
            sftp,
            posix_rename,
            read_len,
            write_len,
            request_timeout,
        })
    }

    /// Rename `from` over `to`, atomically where the server supports `posix-rename@openssh.com`.
    pub(crate) async fn rename_over(
        &self,
        from: &str,
        to: &str,
    ) -> std::result::Result<(), SftpError> {
        if self.posix_rename {
            let mut data = Vec::with_capacity(from.len() + to.len() + 8);
            for s in [from, to] {
                data.extend_from_slice(&(s.len() as u32).to_be_bytes());
                data.extend_from_slice(s.as_bytes());
            }
            return match self.sftp.extended(POSIX_RENAME, data).await? {
                russh_sftp::protocol::Packet::Status(s) if s.status_code == StatusCode::Ok => {
                    Ok(())
                }
                russh_sftp::protocol::Packet::Status(s) => Err(SftpError::Status(s)),
                _ => Err(SftpError::UnexpectedPacket),
            };
        }
        // Plain SFTP rename refuses to overwrite: remove the target first.
        match self.sftp.remove(to).await {
            Ok(_) => {}
            Err(e) if is_no_such_file(&e) => {}
            Err(e) => return Err(e),
        }
        self.sftp.rename(from, to).await.map(|_| ())
    }
}

/// The private key at `path` (an unencrypted OpenSSH or PEM key).
async fn read_key(cfg: &SftpConfig, path: &Path) -> Result<Arc<russh::keys::PrivateKey>> {
    let text = tokio::fs::read_to_string(path).await.map_err(|e| {
        backend(
            cfg,
            format!("cannot read key-path {}: {e}", path.display()),
            false,
        )
    })?;
    // The decode error is not shown: it could quote key material.
    let key = russh::keys::decode_secret_key(&text, None).map_err(|_| {
        backend(
            cfg,
            format!(
                "cannot parse private key {} (expected an unencrypted OpenSSH or PEM key)",
                path.display()
            ),
            false,
        )
    })?;
    Ok(Arc::new(key))
}

/// Connect and check the host key; a rejected key is reported with the policy's reason.
async fn dial(cfg: &SftpConfig) -> Result<client::Handle<Handler>> {
    let config = Arc::new(client::Config {
        keepalive_interval: Some(Duration::from_secs(15)),
        keepalive_max: 3,
        ..Default::default()
    });
    let rejection = Arc::new(Mutex::new(None));
    let handler = Handler {
        policy: cfg.host_key_policy.clone(),
        host: cfg.host.clone(),
        port: cfg.port,
        rejection: rejection.clone(),
    };
    match client::connect(config, (cfg.host.as_str(), cfg.port), handler).await {
        Ok(h) => Ok(h),
        Err(e) => {
            if let Some(msg) = rejection.lock().ok().and_then(|mut r| r.take()) {
                return Err(backend(cfg, msg, false));
            }
            Err(backend(cfg, format!("connect: {e}"), true))
        }
    }
}

/// Authenticate with the key, then the password; an error says which were tried.
async fn authenticate(
    cfg: &SftpConfig,
    handle: &mut client::Handle<Handler>,
    key: Option<Arc<russh::keys::PrivateKey>>,
) -> Result<()> {
    let mut tried = Vec::new();
    if let Some(key) = key {
        tried.push("publickey");
        let hash = handle
            .best_supported_rsa_hash()
            .await
            .map_err(|e| backend(cfg, format!("ssh: {e}"), true))?
            .flatten();
        let res = handle
            .authenticate_publickey(cfg.user.clone(), PrivateKeyWithHashAlg::new(key, hash))
            .await
            .map_err(|e| backend(cfg, format!("publickey authentication: {e}"), true))?;
        if res.success() {
            return Ok(());
        }
    }
    if let Some(pw) = &cfg.password {
        tried.push("password");
        let res = handle
            .authenticate_password(cfg.user.clone(), pw.clone())
            .await
            .map_err(|e| backend(cfg, format!("password authentication: {e}"), true))?;
        if res.success() {
            return Ok(());
        }
    }
    let how = if tried.is_empty() {
        "no password or key-path configured".to_string()
    } else {
        format!("tried {}", tried.join(", "))
    };
    Err(backend(
        cfg,
        format!("authentication failed ({how})"),
        false,
    ))
}

/// Start the `sftp` subsystem: the session, whether the server renames atomically, and the
/// read and write sizes it allows.
async fn open_sftp(
    cfg: &SftpConfig,
    handle: &client::Handle<Handler>,
    request_timeout: Duration,
) -> Result<(RawSftpSession, bool, u32, usize)> {
    let channel = handle
        .channel_open_session()
        .await
        .map_err(|e| backend(cfg, format!("open session channel: {e}"), true))?;
    channel
        .request_subsystem(true, "sftp")
        .await
        .map_err(|e| backend(cfg, format!("request sftp subsystem: {e}"), true))?;
    let mut sftp = RawSftpSession::new(channel.into_stream());
    sftp.set_timeout(request_timeout.as_secs().max(1));
    let version = sftp
        .init()
        .await
        .map_err(|e| backend(cfg, format!("sftp init: {e}"), true))?;
    let posix_rename = version.extensions.contains_key(POSIX_RENAME);
    let (mut read_len, mut write_len) = (DEFAULT_CHUNK, DEFAULT_CHUNK as usize);
    if version
        .extensions
        .get("limits@openssh.com")
        .map(String::as_str)
        == Some("1")
    {
        if let Ok(l) = sftp.limits().await {
            let limits = russh_sftp::client::rawsession::Limits::from(l);
            read_len = limits.read_len.unwrap_or(MAX_CHUNK).min(MAX_CHUNK) as u32;
            write_len = limits.write_len.unwrap_or(MAX_CHUNK).min(MAX_CHUNK) as usize;
            sftp.set_limits(limits);
        }
    }
    Ok((sftp, posix_rename, read_len, write_len))
}

/// `e` as a message: a timeout says how long the server left the request unanswered.
pub(crate) fn describe(e: &SftpError, request_timeout: Duration) -> String {
    match e {
        SftpError::Timeout => format!(
            "the server did not answer within {}s",
            request_timeout.as_secs().max(1)
        ),
        e => e.to_string(),
    }
}

/// True for a `SSH_FX_NO_SUCH_FILE` status.
pub(crate) fn is_no_such_file(e: &SftpError) -> bool {
    matches!(e, SftpError::Status(s) if s.status_code == StatusCode::NoSuchFile)
}

/// True when the error means the session is gone and a new connection may succeed.
pub(crate) fn is_connection_lost(e: &SftpError) -> bool {
    match e {
        SftpError::Status(s) => matches!(
            s.status_code,
            StatusCode::NoConnection | StatusCode::ConnectionLost
        ),
        SftpError::IO(_) | SftpError::Timeout | SftpError::UnexpectedBehavior(_) => true,
        SftpError::Limited(_) | SftpError::UnexpectedPacket => false,
    }
}

/// A backend error naming the endpoint (never the password or key material).
pub(crate) fn backend(cfg: &SftpConfig, message: String, retryable: bool) -> Error {
    Error::Backend {
        kind: TYPE,
        message: format!("{}: {message}", cfg.endpoint()),
        retryable,
        source: None,
    }
}
