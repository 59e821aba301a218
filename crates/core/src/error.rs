//! The core error type: variants a caller can act on, with the object or setting they concern.

use std::io;

/// Result alias used throughout the core crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Boxed source error from a backend or a lower layer.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Errors returned by the core crate and by replica clients.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The named object, generation or file does not exist.
    #[error("not found: {what}")]
    NotFound {
        /// What was looked for (an object key, a path, a generation).
        what: String,
    },
    /// An I/O error on a local path or a replica object.
    #[error("{path}: {source}")]
    Io {
        /// The path or object the operation concerned.
        path: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Stored data failed validation (bad LZ4 frame, checksum, salt, alignment).
    #[error("corrupt {object}: {reason}")]
    Corrupt {
        /// The object, segment or file that is corrupt.
        object: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A replica holds no generation that matches the request.
    #[error("no matching backups found")]
    NoMatchingBackups,
    /// A generation holds no usable snapshot.
    #[error("no snapshots available: generation={generation}")]
    NoSnapshots {
        /// The generation that was searched.
        generation: String,
    },
    /// The configuration file or a replica URL is invalid.
    #[error("{0}")]
    InvalidConfig(String),
    /// A caller-supplied option is invalid or the options contradict each other.
    #[error("{0}")]
    InvalidArgument(String),
    /// A SQLite call failed.
    #[error("sqlite {path}: {source}")]
    Sqlite {
        /// The database path.
        path: String,
        /// The underlying error.
        #[source]
        source: rusqlite::Error,
    },
    /// A replica backend failed.
    #[error("{kind} replica: {message}")]
    Backend {
        /// The backend type (`file`, `s3`, `abs`, `sftp`).
        kind: &'static str,
        /// What failed, naming bucket/host/object where known (never secrets).
        message: String,
        /// Whether retrying the same request may succeed (throttling, 5xx, dropped connection).
        retryable: bool,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
    /// The backend for a replica type is not compiled into this build.
    #[error("replica type {0:?} is not supported by this build")]
    Unsupported(String),
    /// Another replicator (this process or another) already replicates the database.
    #[error("database {db} is already being replicated by {holder} (lock {lock})")]
    AlreadyReplicating {
        /// The database path.
        db: String,
        /// Who holds the lock, e.g. `pid 1234`.
        holder: String,
        /// The lock file in the meta directory.
        lock: String,
    },
    /// The operation was cancelled (shutdown).
    #[error("cancelled")]
    Cancelled,
    /// A replica object exists but this configuration cannot read it back: an age-encrypted
    /// replica configured with recipients but no identities. The engine starts a new
    /// generation when it meets this at start-up.
    #[error("{0}")]
    Unreadable(String),
}

impl Error {
    /// Build an [`Error::Io`] for `path`.
    pub fn io(path: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Build an [`Error::Corrupt`] for `object`; `reason` is a message or a typed error such as
    /// [`WalError`](crate::wal::WalError).
    pub fn corrupt(object: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        Error::Corrupt {
            object: object.into(),
            reason: reason.to_string(),
        }
    }

    /// Build an [`Error::NotFound`].
    pub fn not_found(what: impl Into<String>) -> Self {
        Error::NotFound { what: what.into() }
    }

    /// True when this error means "the thing does not exist".
    pub fn is_not_found(&self) -> bool {
        match self {
            Error::NotFound { .. } => true,
            Error::Io { source, .. } => source.kind() == io::ErrorKind::NotFound,
            _ => false,
        }
    }

    /// True when repeating the same operation may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Backend { retryable, .. } => *retryable,
            Error::Io { source, .. } => matches!(
                source.kind(),
                io::ErrorKind::Interrupted
                    | io::ErrorKind::TimedOut
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::ConnectionRefused
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::UnexpectedEof
                    | io::ErrorKind::WouldBlock
            ),
            _ => false,
        }
    }
}
