//! Errors: [`Error`] for configuration problems found while building a client, and the one
//! place where request failures become [`litestream_core::Error`] (not-found mapping,
//! retryability, and messages that name the bucket and the object).

use litestream_core::metrics::Operation;

use crate::api::Failure;
use crate::TYPE;

/// A configuration problem found while building a [`GcsClient`](crate::GcsClient).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `bucket` is missing (config key, or the host part of the URL).
    #[error("bucket required for gcs replica")]
    MissingBucket,
    /// The endpoint (`endpoint`, or `STORAGE_EMULATOR_HOST`) is not a usable URL.
    #[error("gcs replica: invalid {source_name} {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// Where the endpoint came from (`endpoint` or `STORAGE_EMULATOR_HOST`).
        source_name: &'static str,
        /// The endpoint as given.
        endpoint: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The credentials file could not be used.
    #[error("gcs replica: bucket {bucket}: credentials {path:?}: {message}")]
    Credentials {
        /// Bucket name.
        bucket: String,
        /// The credentials file (`GOOGLE_APPLICATION_CREDENTIALS`), or a description of the
        /// default chain.
        path: String,
        /// What is wrong with it.
        message: String,
    },
    /// The HTTP client could not be built (TLS set-up).
    #[error("gcs replica: cannot build the HTTP client: {0}")]
    Http(String),
}

impl From<Error> for litestream_core::Error {
    fn from(e: Error) -> Self {
        litestream_core::Error::InvalidConfig(e.to_string())
    }
}

/// Turns request failures into core errors for one bucket.
#[derive(Debug, Clone)]
pub(crate) struct ErrorContext {
    pub(crate) bucket: String,
}

impl ErrorContext {
    /// `gcs://BUCKET/KEY`: how an object is named in messages.
    pub(crate) fn object(&self, key: &str) -> String {
        format!("gcs://{}/{key}", self.bucket)
    }

    /// Convert a failure of `op` on the object (or prefix, for listings) `key`.
    pub(crate) fn convert(&self, op: Operation, key: &str, f: Failure) -> litestream_core::Error {
        let verb = match op {
            Operation::Get => "get",
            Operation::Put => "put",
            Operation::List => "list",
            Operation::Delete => "delete",
        };
        let what = self.object(key);
        let bucket = &self.bucket;
        match (op, f.status()) {
            (Operation::Get, Some(404)) => litestream_core::Error::not_found(what),
            (Operation::List | Operation::Put, Some(404)) => backend(
                format!(
                    "{verb} {what}: bucket {bucket:?} does not exist (Litestream does not create \
                     buckets; create it first): {f}"
                ),
                false,
            ),
            (_, Some(401 | 403)) => backend(
                format!(
                    "{verb} {what}: access denied: check GOOGLE_APPLICATION_CREDENTIALS and the \
                     service account's roles on bucket {bucket:?}: {f}"
                ),
                false,
            ),
            _ => {
                let retryable = f.retryable();
                backend(format!("{verb} {what}: {f}"), retryable)
            }
        }
    }
}

fn backend(message: String, retryable: bool) -> litestream_core::Error {
    litestream_core::Error::Backend {
        kind: TYPE,
        message,
        retryable,
        source: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> ErrorContext {
        ErrorContext {
            bucket: "bkt".into(),
        }
    }

    fn status(status: u16) -> Failure {
        Failure::Status {
            status,
            message: "msg".into(),
        }
    }

    #[test]
    fn missing_object_is_not_found_and_named() {
        let e = ctx().convert(Operation::Get, "db/x", status(404));
        assert!(e.is_not_found());
        assert!(e.to_string().contains("gcs://bkt/db/x"), "{e}");
    }

    #[test]
    fn missing_bucket_is_said_so() {
        let e = ctx().convert(Operation::List, "db/", status(404));
        assert!(!e.is_not_found());
        assert!(
            e.to_string().contains("bucket \"bkt\" does not exist"),
            "{e}"
        );
    }

    #[test]
    fn server_errors_are_retryable_denials_are_not() {
        assert!(ctx()
            .convert(Operation::Put, "k", status(503))
            .is_retryable());
        let e = ctx().convert(Operation::Put, "k", status(403));
        assert!(!e.is_retryable());
        assert!(
            e.to_string().contains("GOOGLE_APPLICATION_CREDENTIALS"),
            "{e}"
        );
    }
}
