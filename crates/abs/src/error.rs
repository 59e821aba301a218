//! Errors: [`Error`] for configuration problems found while building a client, and the one
//! place where `object_store` errors become [`litestream_core::Error`] (not-found mapping,
//! retryability, and messages that name the account and container but never a secret).

use std::error::Error as StdError;

use litestream_core::metrics::Operation;
use litestream_core::support::{error_chain, Secrets};

use crate::TYPE;

/// A configuration problem found while building an [`AbsClient`](crate::AbsClient).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `account-name` is missing (config key, or the `ACCOUNT@` part of the URL).
    #[error("account-name required for abs replica")]
    MissingAccountName,
    /// `bucket` (the container) is missing (config key, or the host part of the URL).
    #[error("bucket required for abs replica")]
    MissingContainer,
    /// The selected credential needs a setting that is not there.
    #[error("abs replica: account {account} container {container}: {what}")]
    MissingCredential {
        /// Storage account name.
        account: String,
        /// Container name.
        container: String,
        /// What is missing and where to put it.
        what: String,
    },
    /// `credential` holds a value this crate does not know.
    #[error(
        "abs replica: unknown credential {0:?} (expected shared-key, sas, managed-identity or workload-identity)"
    )]
    UnknownCredential(String),
    /// `endpoint` is not a valid URL.
    #[error("abs replica: invalid endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The endpoint as configured.
        endpoint: String,
        /// Why it was rejected.
        reason: String,
    },
    /// `object_store` refused the configuration (e.g. an account key that is not base64).
    #[error(
        "abs replica: account {account} container {container}: invalid configuration: {message}"
    )]
    Build {
        /// Storage account name.
        account: String,
        /// Container name.
        container: String,
        /// The (redacted) reason.
        message: String,
    },
}

impl From<Error> for litestream_core::Error {
    fn from(e: Error) -> Self {
        litestream_core::Error::InvalidConfig(e.to_string())
    }
}

/// What a request failure means to a caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// The blob (not the container) does not exist.
    NotFound,
    /// The container does not exist.
    ContainerMissing,
    /// Credentials were rejected (401/403).
    Auth,
    /// Anything else; `true` when a repeat may succeed.
    Other(bool),
}

/// Context for turning request errors into core errors (its `Debug` never shows the secrets).
#[derive(Clone, Debug)]
pub(crate) struct ErrorContext {
    pub(crate) account: String,
    pub(crate) container: String,
    /// Strings that must never appear in a message (account key, SAS token).
    pub(crate) secrets: Secrets,
}

impl ErrorContext {
    /// Remove every configured secret from `s`.
    pub(crate) fn redact(&self, s: &str) -> String {
        self.secrets.scrub(s)
    }

    /// Convert an `object_store` error from `op` on `key` into a core error.
    pub(crate) fn convert(
        &self,
        op: Operation,
        key: &str,
        e: object_store::Error,
    ) -> litestream_core::Error {
        let class = classify(&e);
        let verb = match op {
            Operation::Get => "get",
            Operation::Put => "put",
            Operation::List => "list",
            Operation::Delete => "delete",
        };
        let account = &self.account;
        let container = &self.container;
        match class {
            Class::NotFound => {
                litestream_core::Error::not_found(format!("abs://{account}@{container}/{key}"))
            }
            Class::ContainerMissing => self.backend(
                format!(
                    "account {account} container {container}: {verb} {key}: container {container:?} does not exist in storage account {account:?} (Litestream does not create containers; create it first)"
                ),
                false,
            ),
            Class::Auth => self.backend(
                format!(
                    "account {account} container {container}: {verb} {key}: authentication failed: the storage account rejected the credentials (check account-key / LITESTREAM_AZURE_ACCOUNT_KEY, sas-token or credential): {}",
                    short_cause(&e)
                ),
                false,
            ),
            Class::Other(retryable) => self.backend(
                format!(
                    "account {account} container {container}: {verb} {key}: {}",
                    compact(&error_chain(&e))
                ),
                retryable,
            ),
        }
    }

    fn backend(&self, message: String, retryable: bool) -> litestream_core::Error {
        // The message already carries the (compacted, redacted) cause; no source is attached
        // so that `{:#}` chains print it once and a secret can never leak through a source.
        litestream_core::Error::Backend {
            kind: TYPE,
            message: self.redact(&message),
            retryable,
            source: None,
        }
    }
}

/// One line: an XML error body is replaced by its `<Code>`, whitespace runs collapse.
fn compact(text: &str) -> String {
    let text = match text.find("<?xml") {
        Some(i) => match between(&text[i..], "<Code>", "</Code>") {
            Some(code) => format!("{}{code}", &text[..i]),
            None => text[..i].to_string(),
        },
        None => text.to_string(),
    };
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The Azure error code (`<Code>…</Code>`) and status of a failed request, as a short cause.
fn short_cause(e: &object_store::Error) -> String {
    let text = error_chain(e);
    let code = between(&text, "<Code>", "</Code>");
    match (status_of(&text), code) {
        (Some(s), Some(c)) => format!("HTTP {s} {c}"),
        (Some(s), None) => format!("HTTP {s}"),
        (None, Some(c)) => c.to_string(),
        (None, None) => text,
    }
}

fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let i = s.find(start)? + start.len();
    let j = s[i..].find(end)? + i;
    Some(&s[i..j])
}

/// The HTTP status `object_store` reports in its message ("status code: 503").
fn status_of(text: &str) -> Option<u16> {
    let i = text.find("status code: ")? + "status code: ".len();
    text.get(i..i + 3)?.parse().ok()
}

/// Decide what an `object_store` error means.
pub(crate) fn classify(e: &object_store::Error) -> Class {
    let text = error_chain(e);
    if text.contains("ContainerNotFound") {
        return Class::ContainerMissing;
    }
    match e {
        object_store::Error::NotFound { .. } => return Class::NotFound,
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => return Class::Auth,
        _ => {}
    }
    if let Some(status) = status_of(&text) {
        return match status {
            401 | 403 => Class::Auth,
            404 => Class::NotFound,
            408 | 429 | 500..=599 => Class::Other(true),
            _ => Class::Other(false),
        };
    }
    if text.contains("AuthenticationFailed") || text.contains("AuthorizationFailure") {
        return Class::Auth;
    }
    // Transport errors: connection refused/reset, timeouts, dropped bodies.
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(s) = cur {
        if let Some(h) = s.downcast_ref::<object_store::client::HttpError>() {
            use object_store::client::HttpErrorKind as K;
            return Class::Other(matches!(
                h.kind(),
                K::Connect | K::Request | K::Timeout | K::Interrupted
            ));
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as K;
            return Class::Other(matches!(
                io.kind(),
                K::TimedOut
                    | K::ConnectionReset
                    | K::ConnectionAborted
                    | K::ConnectionRefused
                    | K::BrokenPipe
                    | K::UnexpectedEof
                    | K::Interrupted
            ));
        }
        cur = s.source();
    }
    let lower = text.to_ascii_lowercase();
    Class::Other(
        lower.contains("connect")
            || lower.contains("timed out")
            || lower.contains("timeout")
            || lower.contains("connection"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_is_read_from_the_message() {
        assert_eq!(
            status_of("Server returned non-2xx status code: 503 Service Unavailable: x"),
            Some(503)
        );
        assert_eq!(status_of("nothing here"), None);
    }

    #[test]
    fn xml_bodies_are_compacted_to_their_code() {
        let t = "GET x - 500 Internal: <?xml version=\"1.0\"?>\n<Error>\n  <Code>InternalError</Code>\n</Error>";
        assert_eq!(compact(t), "GET x - 500 Internal: InternalError");
        assert_eq!(compact("a\n  b"), "a b");
    }

    fn ctx(secrets: &[&str]) -> ErrorContext {
        let mut ctx = ErrorContext {
            account: "acct".into(),
            container: "c".into(),
            secrets: Secrets::new(),
        };
        for s in secrets {
            ctx.secrets.push(*s);
        }
        ctx
    }

    #[test]
    fn secrets_stay_out_of_debug_and_messages() {
        let ctx = ctx(&["c2VjcmV0a2V5"]);
        assert!(!format!("{ctx:?}").contains("c2VjcmV0a2V5"));
        assert_eq!(ctx.redact("key=c2VjcmV0a2V5!"), "key=<redacted>!");
    }

    #[test]
    fn not_found_maps_to_core_not_found() {
        let ctx = ctx(&[]);
        let e = object_store::Error::NotFound {
            path: "x".into(),
            source: "BlobNotFound".into(),
        };
        assert!(ctx.convert(Operation::Get, "x", e).is_not_found());
        let e = object_store::Error::NotFound {
            path: "x".into(),
            source: "<Code>ContainerNotFound</Code>".into(),
        };
        let err = ctx.convert(Operation::Get, "x", e);
        assert!(!err.is_not_found());
        assert!(err.to_string().contains("container \"c\" does not exist"));
    }
}
