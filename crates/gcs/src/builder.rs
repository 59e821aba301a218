//! [`GcsBuilder`]: validates the `type: gcs` settings once and builds a [`GcsClient`].

use std::time::Duration;

use litestream_core::config::ReplicaConfig;
use litestream_core::support::{env_non_blank, error_chain, non_blank, Opaque};
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::{ClientOptions, RetryConfig};
use url::Url;

use crate::api::{Api, Auth};
use crate::client::GcsClient;
use crate::error::{Error, ErrorContext};

/// Environment variable naming the credentials file (service-account JSON, or an authorized
/// user's application-default credentials), as Google's clients and Litestream read it.
pub const CREDENTIALS_ENV: &str = "GOOGLE_APPLICATION_CREDENTIALS";

/// Environment variable pointing Google's clients at an emulator (`HOST:PORT`, or a URL);
/// requests then carry no credentials, as in Google's own clients.
pub const EMULATOR_HOST_ENV: &str = "STORAGE_EMULATOR_HOST";

/// The public GCS endpoint.
pub const DEFAULT_ENDPOINT: &str = "https://storage.googleapis.com";

/// Default size of one chunk of a resumable upload (a multiple of 256 KiB, as GCS requires).
/// Payloads smaller than this are sent in one request.
pub const DEFAULT_PART_SIZE: usize = 8 << 20;

/// Settings for a [`GcsClient`], validated by [`build`](Self::build).
#[derive(Clone, Debug, Default)]
pub struct GcsBuilder {
    bucket: Option<String>,
    path: String,
    endpoint: Option<String>,
    emulator_host: Option<String>,
    credentials_file: Option<String>,
    retry: Option<RetryConfig>,
    part_size: Option<usize>,
    request_timeout: Option<Duration>,
}

impl GcsBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// A builder seeded from the environment: `STORAGE_EMULATOR_HOST` and
    /// `GOOGLE_APPLICATION_CREDENTIALS`.
    pub fn from_env() -> Self {
        GcsBuilder {
            emulator_host: env_non_blank(&[EMULATOR_HOST_ENV]),
            credentials_file: env_non_blank(&[CREDENTIALS_ENV]),
            ..Self::default()
        }
    }

    /// A builder from a resolved replica config (`bucket`, `path`, and the `endpoint`
    /// extension) and the environment ([`from_env`](Self::from_env)).
    pub fn from_replica_config(cfg: &ReplicaConfig) -> Self {
        let mut b = Self::from_env();
        b.bucket = non_blank(cfg.bucket.clone());
        b.path = cfg.path.clone().unwrap_or_default();
        b.endpoint = non_blank(cfg.endpoint.clone());
        b
    }

    litestream_core::builder_setters! {
        /// Bucket name.
        with_bucket(bucket: impl Into<String>) -> Some;
        /// Key prefix inside the bucket (Litestream's `path`).
        with_path(path: impl Into<String>);
        /// An emulator, as `STORAGE_EMULATOR_HOST` gives it: `HOST:PORT` (plain HTTP) or a
        /// URL. Requests carry no credentials.
        with_emulator_host(emulator_host: impl Into<String>) -> Some;
        /// Another JSON API endpoint (a URL; `http://` allowed), with credentials as for GCS.
        /// Wins over the emulator host.
        with_endpoint(endpoint: impl Into<String>) -> Some;
        /// The credentials file (what `GOOGLE_APPLICATION_CREDENTIALS` names): a
        /// service-account key or an authorized user's application-default credentials.
        with_credentials_file(credentials_file: impl Into<String>) -> Some;
        /// Retry policy of each request (default: 3 retries, 100 ms..4 s backoff, at most
        /// 30 s). Core's retry loop still wraps every replica operation.
        with_retry(retry: RetryConfig) -> Some;
    }

    /// Size of one chunk of a resumable upload (default [`DEFAULT_PART_SIZE`]); rounded up to
    /// a multiple of 256 KiB, as GCS requires.
    pub fn with_part_size(mut self, bytes: usize) -> Self {
        const QUANTUM: usize = 256 << 10;
        self.part_size = Some(bytes.max(1).div_ceil(QUANTUM) * QUANTUM);
        self
    }

    /// Time limit of one request other than a download's body (default 120 s).
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = Some(timeout);
        self
    }

    /// Validate the settings and build the client. Makes no request; a credentials file is
    /// read and its key parsed here.
    pub fn build(self) -> Result<GcsClient, Error> {
        let bucket = self.bucket.clone().ok_or(Error::MissingBucket)?;
        let retry = self
            .retry
            .clone()
            .unwrap_or_else(|| litestream_core::object_store_retry!());
        let (base, anonymous) = match (&self.endpoint, &self.emulator_host) {
            (Some(ep), _) => (parse_endpoint("endpoint", ep)?, false),
            (None, Some(host)) => {
                let url = if host.contains("://") {
                    host.clone()
                } else {
                    format!("http://{host}")
                };
                (parse_endpoint(EMULATOR_HOST_ENV, &url)?, true)
            }
            (None, None) => (parse_endpoint("endpoint", DEFAULT_ENDPOINT)?, false),
        };

        let auth = if anonymous {
            Auth::Anonymous
        } else {
            let mut gcp = GoogleCloudStorageBuilder::new()
                .with_bucket_name(bucket.clone())
                .with_retry(retry.clone())
                .with_client_options(
                    ClientOptions::new()
                        .with_connect_timeout(Duration::from_secs(10))
                        .with_timeout(Duration::from_secs(60)),
                );
            if let Some(p) = &self.credentials_file {
                gcp = gcp.with_application_credentials(p.clone());
            }
            let store = gcp.build().map_err(|e| Error::Credentials {
                bucket: bucket.clone(),
                path: self.credentials_file.clone().unwrap_or_else(|| {
                    format!("{CREDENTIALS_ENV} unset: application default credentials")
                }),
                message: error_chain(&e),
            })?;
            Auth::Bearer(store.credentials().clone())
        };

        let endpoint_desc = base.as_str().trim_end_matches('/').to_string();
        let request_timeout = self.request_timeout.unwrap_or(Duration::from_secs(120));
        let api = Api::new(base, bucket.clone(), auth, retry, request_timeout)
            .map_err(|e| Error::Http(error_chain(&e)))?;
        Ok(GcsClient {
            api: Opaque(api),
            ctx: ErrorContext { bucket },
            root: litestream_core::listing::root_prefix(&self.path),
            endpoint: endpoint_desc,
            part_size: self.part_size.unwrap_or(DEFAULT_PART_SIZE),
        })
    }
}

fn parse_endpoint(source_name: &'static str, s: &str) -> Result<Url, Error> {
    let bad = |reason: String| Error::InvalidEndpoint {
        source_name,
        endpoint: s.to_string(),
        reason,
    };
    let url = litestream_core::url::parse_http_endpoint(s.trim_end_matches('/'))
        .map_err(|e| bad(e.to_string()))?;
    if url.query().is_some() {
        return Err(bad("a query is not allowed".into()));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_is_required() {
        assert!(matches!(
            GcsBuilder::new().with_emulator_host("127.0.0.1:1").build(),
            Err(Error::MissingBucket)
        ));
    }

    #[test]
    fn emulator_host_takes_host_port_or_url() {
        for host in ["127.0.0.1:4443", "http://127.0.0.1:4443/"] {
            let c = GcsBuilder::new()
                .with_bucket("b")
                .with_emulator_host(host)
                .build()
                .expect("client");
            assert_eq!(c.endpoint(), "http://127.0.0.1:4443", "{host}");
        }
    }

    #[test]
    fn bad_settings_are_named_in_the_error() {
        let bucket = || GcsBuilder::new().with_bucket("b");
        let cases = [
            (bucket().with_emulator_host("ftp://x"), EMULATOR_HOST_ENV),
            (
                bucket().with_credentials_file("/nonexistent/sa.json"),
                "/nonexistent/sa.json",
            ),
        ];
        for (b, named) in cases {
            let e = b.build().err().map(|e| e.to_string()).unwrap_or_default();
            assert!(e.contains(named), "{named}: {e}");
        }
    }

    #[test]
    fn part_size_is_a_multiple_of_256k() {
        let b = GcsBuilder::new().with_part_size(300 << 10);
        assert_eq!(b.part_size, Some(512 << 10));
    }
}
