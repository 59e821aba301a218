//! The one place where AWS SDK errors become [`litestream_core::Error`]: not-found mapping,
//! retryability, and messages that name bucket, endpoint and key but never a secret.

use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use litestream_core::support::Secrets;
use litestream_core::Error;

use crate::TYPE;

/// Where a request went: used to build error messages (its `Debug` never shows the secrets).
#[derive(Clone, Debug)]
pub(crate) struct Target {
    pub(crate) bucket: String,
    pub(crate) endpoint: Option<String>,
    /// Secrets to scrub from any message, should a lower layer echo them.
    pub(crate) secrets: Secrets,
}

impl Target {
    /// `bucket "B" (endpoint E)` for messages.
    pub(crate) fn describe(&self) -> String {
        match &self.endpoint {
            Some(e) => format!("bucket {:?} at endpoint {e}", self.bucket),
            None => format!("bucket {:?}", self.bucket),
        }
    }

    /// A backend error for `op` on `key` (empty for bucket-level operations).
    pub(crate) fn backend(&self, op: &str, key: &str, detail: String, retryable: bool) -> Error {
        let what = if key.is_empty() {
            format!("{op} {}", self.describe())
        } else {
            format!("{op} {key:?} in {}", self.describe())
        };
        Error::Backend {
            kind: TYPE,
            message: self.secrets.scrub(&format!("{what}: {detail}")),
            retryable,
            source: None,
        }
    }

    /// Convert an SDK error. `not_found_codes` are service error codes that mean the object
    /// (or upload) does not exist; those become [`Error::NotFound`] naming the key.
    pub(crate) fn sdk<E, R>(&self, op: &str, key: &str, err: SdkError<E, R>) -> Error
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + HttpStatus,
    {
        let (detail, retryable, not_found) = classify(&err);
        if not_found {
            return Error::not_found(format!("s3://{}/{key}", self.bucket));
        }
        self.backend(op, key, detail, retryable)
    }
}

/// Access to the HTTP status of a raw response, whatever its type.
pub(crate) trait HttpStatus {
    /// The HTTP status code.
    fn status_code(&self) -> u16;
}

impl HttpStatus for aws_sdk_s3::config::http::HttpResponse {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}

/// (description, retryable, not-found) of an SDK error.
fn classify<E, R>(err: &SdkError<E, R>) -> (String, bool, bool)
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + HttpStatus,
{
    match err {
        SdkError::ConstructionFailure(_) => (
            format!("cannot build request: {}", DisplayErrorContext(err)),
            false,
            false,
        ),
        SdkError::TimeoutError(_) => ("request timed out".to_string(), true, false),
        SdkError::DispatchFailure(d) => {
            let kind = if d.is_timeout() {
                "timed out"
            } else if d.is_io() {
                "connection failed"
            } else {
                "request failed"
            };
            (
                format!("{kind}: {}", DisplayErrorContext(err)),
                !d.is_user(),
                false,
            )
        }
        SdkError::ResponseError(_) => (
            format!("bad response: {}", DisplayErrorContext(err)),
            true,
            false,
        ),
        SdkError::ServiceError(se) => {
            let status = se.raw().status_code();
            let e = se.err();
            let code = e.code().unwrap_or("");
            let not_found = matches!(code, "NoSuchKey" | "NotFound" | "NoSuchUpload")
                || (status == 404 && code != "NoSuchBucket");
            let retryable = status >= 500
                || status == 429
                || matches!(
                    code,
                    "SlowDown"
                        | "Throttling"
                        | "ThrottlingException"
                        | "RequestTimeout"
                        | "RequestTimeTooSkewed"
                        | "InternalError"
                        | "ServiceUnavailable"
                );
            let msg = e.message().unwrap_or("");
            let detail = match (code.is_empty(), msg.is_empty()) {
                (false, false) => format!("{code} (HTTP {status}): {msg}"),
                (false, true) => format!("{code} (HTTP {status})"),
                _ => format!("HTTP {status}: {}", DisplayErrorContext(err)),
            };
            let detail = if code == "NoSuchBucket" && msg.is_empty() {
                format!("{detail}; the bucket does not exist")
            } else {
                detail
            };
            (detail, retryable, not_found)
        }
        _ => (format!("{}", DisplayErrorContext(err)), true, false),
    }
}

#[cfg(test)]
mod debug_tests {
    use super::{Secrets, Target};

    #[test]
    fn debug_does_not_show_secrets() {
        let mut secrets = Secrets::new();
        secrets.push("wJalrXUtnFEMI");
        let t = Target {
            bucket: "b".into(),
            endpoint: None,
            secrets,
        };
        let shown = format!("{t:?}");
        assert!(!shown.contains("wJalrXUtnFEMI"), "{shown}");
        assert!(shown.contains("1 redacted"), "{shown}");
    }
}
