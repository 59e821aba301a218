//! What the backend crates share beyond the [`ObjectStore`] trait: the key mapping of stores
//! in a bucket ([`BucketStore`]), concurrent deletes, secrets and SDK handles kept out of
//! `Debug` and error messages ([`Secret`], [`Secrets`], [`Opaque`]), error chains on one
//! line, and builder setters ([`builder_setters!`](crate::builder_setters)).
//!
//! s3, abs and gcs keep their objects in one flat key space under a key prefix, with
//! `/`-delimited listings standing for directories. They implement [`BucketStore`] with full
//! keys; the [`ObjectStore`] over it, written once here, checks and maps the replica-relative
//! keys core uses under the prefix, and turns a store's flat listing into the deletion of a
//! directory. file and sftp have real directories and implement [`ObjectStore`] themselves.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use time::OffsetDateTime;

use super::{DirListing, ObjectStore, PutOutcome, Upload};
use crate::error::Result;
use crate::listing;
use crate::replica_client::ByteStream;

/// A store whose objects live in one flat key space (a bucket or container) under a key
/// prefix, the replica root: s3, abs and gcs. Every such store is an [`ObjectStore`] through
/// the blanket implementation in this module, which maps keys under [`root`](Self::root).
///
/// The methods take and return full keys (root included). Request counting
/// (`metrics::record_operation`) and error mapping stay with the store.
#[async_trait]
pub trait BucketStore: Send + Sync + fmt::Debug {
    /// The replica type (the store's [`ObjectStore::KIND`]).
    const KIND: &'static str;

    /// The objects and sub-directories directly under the key prefix `prefix` (`""` or
    /// ending in `/`), named relative to it.
    async fn list_delimited(&self, prefix: &str) -> Result<DirListing>;

    /// The full keys of every object below the key prefix `prefix` (no delimiter).
    async fn list_keys(&self, prefix: &str) -> Result<Vec<String>>;

    /// Open the object `key` for reading, streaming; a missing object is
    /// [`Error::is_not_found`](crate::Error::is_not_found).
    async fn open_key(&self, key: String) -> Result<ByteStream>;

    /// Store `upload` at `key` (the writer's timestamp as object metadata, see
    /// [`Upload::timestamp_metadata`]); returns the bytes stored.
    async fn upload(&self, key: &str, upload: Upload) -> Result<u64>;

    /// Delete the objects `keys`; missing ones are no error.
    async fn delete_keys(&self, keys: Vec<String>) -> Result<()>;

    /// The writer's timestamp stored in the metadata of the object `key` (one HEAD request),
    /// `None` if it has none.
    async fn head_writer_timestamp(&self, key: &str) -> Result<Option<OffsetDateTime>>;

    /// The key prefix of the replica root (`""` for the bucket's root; abs and gcs clean it
    /// with `listing::root_prefix`).
    fn root(&self) -> &str;
}

#[async_trait]
impl<B: BucketStore> ObjectStore for B {
    const KIND: &'static str = B::KIND;

    async fn list_dir(&self, dir: &str) -> Result<DirListing> {
        self.list_delimited(&listing::dir_prefix(self.root(), dir)?)
            .await
    }

    async fn get(&self, key: &str) -> Result<ByteStream> {
        self.open_key(listing::object_key(self.root(), key)?).await
    }

    /// The listed last-modified time stands for the created-at time: `modified` is `None`.
    async fn put(&self, key: &str, upload: Upload) -> Result<PutOutcome> {
        let key = listing::object_key(self.root(), key)?;
        let size = self.upload(&key, upload).await?;
        Ok(PutOutcome {
            size,
            modified: None,
        })
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.delete_keys(vec![listing::object_key(self.root(), key)?])
            .await
    }

    async fn delete_batch(&self, keys: &[String]) -> Result<()> {
        let keys = keys
            .iter()
            .map(|k| listing::object_key(self.root(), k))
            .collect::<Result<Vec<_>>>()?;
        self.delete_keys(keys).await
    }

    /// One flat listing of every key below `dir` (not a walk directory by directory), then
    /// [`delete_keys`](BucketStore::delete_keys).
    async fn delete_dir(&self, dir: &str) -> Result<()> {
        let keys = self
            .list_keys(&listing::dir_prefix(self.root(), dir)?)
            .await?;
        self.delete_keys(keys).await
    }

    async fn head_timestamp(&self, key: &str) -> Result<Option<OffsetDateTime>> {
        self.head_writer_timestamp(&listing::object_key(self.root(), key)?)
            .await
    }
}

/// Run the requests `each` makes of `items`, `concurrency` at a time; the first error ends
/// it (requests still running are dropped).
pub async fn run_concurrently<T, F, Fut>(items: Vec<T>, concurrency: usize, each: F) -> Result<()>
where
    F: FnMut(T) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    futures::stream::iter(items.into_iter().map(each))
        .buffer_unordered(concurrency.max(1))
        .try_for_each(|()| async { Ok(()) })
        .await
}

/// A client handle whose `Debug` prints only its type (an SDK client: its own `Debug` is
/// long, and some print credentials). Derefs to the handle.
#[derive(Clone, Default)]
pub struct Opaque<T>(pub T);

impl<T> std::ops::Deref for Opaque<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Opaque<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{}>", std::any::type_name::<T>())
    }
}

/// A secret setting (a key, a password, a token): `Debug` prints `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wrap `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Strings that must never appear in an error message (account keys, SAS tokens and their
/// parts): [`scrub`](Self::scrub) replaces them. `Debug` prints only how many there are.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secrets(Vec<String>);

impl Secrets {
    /// Shorter strings are not scrubbed: they would mangle messages and hide nothing.
    pub const MIN_LEN: usize = 4;

    /// No secrets.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add `secret` to the strings to scrub.
    pub fn push(&mut self, secret: impl Into<String>) {
        self.0.push(secret.into());
    }

    /// `message` with every secret replaced by `<redacted>`.
    pub fn scrub(&self, message: &str) -> String {
        let mut out = message.to_string();
        for s in self.0.iter().filter(|s| s.len() >= Self::MIN_LEN) {
            out = out.replace(s.as_str(), "<redacted>");
        }
        out
    }
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{} redacted]", self.0.len())
    }
}

/// A setting's value unless it is unset or blank (only whitespace): how the backends read
/// optional config keys and environment variables.
pub fn non_blank(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}

/// The first of the environment variables `names` that is set and not blank.
pub fn env_non_blank(names: &[&str]) -> Option<String> {
    names.iter().find_map(|n| non_blank(std::env::var(n).ok()))
}

/// `e` and its causes on one line, `: `-separated; a cause whose text the line already holds
/// is left out (many errors repeat their source's message).
pub fn error_chain(e: &(dyn StdError + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let msg = s.to_string();
        if !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        cur = s.source();
    }
    out
}

/// Builder setters by value, `with_x(mut self, x) -> Self`, one per line of the table:
///
/// * `with_x(x: impl Into<T>) -> Some;` sets the `Option<T>` field `x` to `Some(x.into())`;
/// * `with_x(x: impl Into<T>);` sets the field `x` to `x.into()`;
/// * `with_x(x: T) -> Some;` sets the `Option<T>` field `x` to `Some(x)`.
///
/// Each line takes its doc comment. Use it inside the builder's `impl` block:
///
/// ```
/// #[derive(Default)]
/// struct Builder {
///     bucket: Option<String>,
///     path: String,
///     retries: Option<u32>,
/// }
///
/// impl Builder {
///     litestream_core::builder_setters! {
///         /// The bucket.
///         with_bucket(bucket: impl Into<String>) -> Some;
///         /// The key prefix.
///         with_path(path: impl Into<String>);
///         /// Retries per request.
///         with_retries(retries: u32) -> Some;
///     }
/// }
///
/// let b = Builder::default().with_bucket("b").with_path("db").with_retries(3);
/// assert_eq!((b.bucket.as_deref(), b.path.as_str(), b.retries), (Some("b"), "db", Some(3)));
/// ```
#[macro_export]
macro_rules! builder_setters {
    () => {};
    ($(#[$doc:meta])* $name:ident($field:ident: impl Into<$t:ty>) -> Some; $($rest:tt)*) => {
        $(#[$doc])*
        pub fn $name(mut self, $field: impl Into<$t>) -> Self {
            self.$field = Some($field.into());
            self
        }
        $crate::builder_setters!($($rest)*);
    };
    ($(#[$doc:meta])* $name:ident($field:ident: impl Into<$t:ty>); $($rest:tt)*) => {
        $(#[$doc])*
        pub fn $name(mut self, $field: impl Into<$t>) -> Self {
            self.$field = $field.into();
            self
        }
        $crate::builder_setters!($($rest)*);
    };
    ($(#[$doc:meta])* $name:ident($field:ident: $t:ty) -> Some; $($rest:tt)*) => {
        $(#[$doc])*
        pub fn $name(mut self, $field: $t) -> Self {
            self.$field = Some($field);
            self
        }
        $crate::builder_setters!($($rest)*);
    };
}

/// The retry policy of the backends built on the `object_store` crate's HTTP client (abs,
/// and gcs for its credentials and requests): 3 retries with 100 ms..4 s exponential backoff,
/// at most 30 s per request; core's retry loop still wraps every replica operation.
///
/// A macro because core does not depend on `object_store`: `object_store_retry!()` is an
/// `object_store::RetryConfig` in the crate that calls it.
#[macro_export]
macro_rules! object_store_retry {
    () => {
        object_store::RetryConfig {
            backoff: object_store::BackoffConfig {
                init_backoff: ::std::time::Duration::from_millis(100),
                max_backoff: ::std::time::Duration::from_secs(4),
                base: 2.0,
            },
            max_retries: 3,
            retry_timeout: ::std::time::Duration::from_secs(30),
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_stay_out_of_debug_and_messages() {
        let key = Secret::new("c2VjcmV0a2V5");
        assert_eq!(format!("{key:?}"), "<redacted>");
        assert_eq!(key.expose(), "c2VjcmV0a2V5");
        let mut secrets = Secrets::new();
        secrets.push(key.expose());
        secrets.push("abc");
        assert_eq!(format!("{secrets:?}"), "[2 redacted]");
        assert_eq!(
            secrets.scrub("key=c2VjcmV0a2V5! abc"),
            "key=<redacted>! abc"
        );
    }

    #[test]
    fn error_chain_names_each_cause_once() {
        let inner = std::io::Error::other("connection reset");
        let outer = std::io::Error::other(inner);
        assert_eq!(error_chain(&outer), "connection reset");
        #[derive(Debug)]
        struct Wrap(std::io::Error);
        impl fmt::Display for Wrap {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("get x")
            }
        }
        impl StdError for Wrap {
            fn source(&self) -> Option<&(dyn StdError + 'static)> {
                Some(&self.0)
            }
        }
        let e = Wrap(std::io::Error::other("timed out"));
        assert_eq!(error_chain(&e), "get x: timed out");
    }

    #[tokio::test]
    async fn run_concurrently_stops_at_the_first_error() {
        let ran = std::sync::Mutex::new(Vec::new());
        let result = run_concurrently(vec![1, 2, 3], 1, |i| {
            ran.lock().expect("lock").push(i);
            async move {
                if i == 2 {
                    Err(crate::Error::InvalidArgument("two".into()))
                } else {
                    Ok(())
                }
            }
        })
        .await;
        assert!(result.is_err());
        assert_eq!(*ran.lock().expect("lock"), [1, 2]);
    }
}
