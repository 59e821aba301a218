//! [`S3Builder`]: every `type: s3` setting, validated once in [`S3Builder::build`], which
//! also picks credentials and looks up the bucket's region when it has to.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_credential_types::Credentials;
use aws_sdk_s3::config::{Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;
use litestream_core::config::ReplicaConfig;
use litestream_core::{Error, Result};

use litestream_core::support::{env_non_blank, non_blank, Opaque, Secret, Secrets};

use crate::client::S3Client;
use crate::error::Target;
use crate::TYPE;

/// Region used when an endpoint is set without a region, and for the region look-up itself.
pub const DEFAULT_REGION: &str = "us-east-1";

/// Smallest multipart part S3 accepts (except the last part), and the default part size.
pub const MIN_PART_SIZE: usize = 5 << 20;

/// Builder for an [`S3Client`].
///
/// Settings map to the replica config keys (YAML spelling in brackets): `bucket`, `path`,
/// `region`, `endpoint`, `force-path-style` (default on when an endpoint is set),
/// `skip-verify`, `access-key-id`/`secret-access-key`. Without static credentials the
/// client uses `LITESTREAM_ACCESS_KEY_ID`/`LITESTREAM_SECRET_ACCESS_KEY` when
/// `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` are unset (as Litestream does), else the AWS
/// default chain (environment, shared config and profiles, web identity, container and
/// instance roles).
#[derive(Clone, Debug, Default)]
pub struct S3Builder {
    bucket: String,
    path: String,
    region: Option<String>,
    endpoint: Option<String>,
    force_path_style: Option<bool>,
    skip_verify: bool,
    access_key_id: Option<Secret>,
    secret_access_key: Option<Secret>,
    max_attempts: u32,
    read_timeout: Duration,
    part_size: usize,
}

impl S3Builder {
    /// A builder for a replica in `bucket` with the default settings.
    pub fn new(bucket: impl Into<String>) -> Self {
        S3Builder {
            bucket: bucket.into(),
            max_attempts: 4,
            read_timeout: Duration::from_secs(120),
            part_size: MIN_PART_SIZE,
            ..Default::default()
        }
    }

    /// A builder from a resolved replica config (call [`ReplicaConfig::resolve`] first).
    pub fn from_replica_config(cfg: &ReplicaConfig) -> Result<Self> {
        let bucket = non_blank(cfg.bucket.clone())
            .ok_or_else(|| Error::InvalidConfig("bucket required for s3 replica".into()))?;
        let mut b = S3Builder::new(bucket)
            .with_path(cfg.path.clone().unwrap_or_default())
            .with_skip_verify(cfg.skip_verify.unwrap_or(false));
        b.region = non_blank(cfg.region.clone());
        b.endpoint = non_blank(cfg.endpoint.clone());
        b.force_path_style = cfg.force_path_style;
        b.access_key_id = non_blank(cfg.access_key_id.clone()).map(Secret::new);
        b.secret_access_key = non_blank(cfg.secret_access_key.clone()).map(Secret::new);
        Ok(b)
    }

    litestream_core::builder_setters! {
        /// Key prefix of the replica (`path`); `""` puts `generations/` at the bucket root.
        with_path(path: impl Into<String>);
        /// The bucket's region (`region`); looked up when unset and no endpoint is set.
        with_region(region: impl Into<String>) -> Some;
        /// A custom endpoint URL (`endpoint`), e.g. `http://127.0.0.1:9000` for MinIO.
        with_endpoint(endpoint: impl Into<String>) -> Some;
        /// Path-style addressing (`force-path-style`); default on when an endpoint is set.
        with_force_path_style(force_path_style: bool) -> Some;
    }

    /// Do not verify TLS certificates (`skip-verify`), for stores with self-signed
    /// certificates. Handshake signatures are still checked.
    pub fn with_skip_verify(mut self, on: bool) -> Self {
        self.skip_verify = on;
        self
    }

    /// Static credentials (`access-key-id`, `secret-access-key`).
    pub fn with_credentials(
        mut self,
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
    ) -> Self {
        self.access_key_id = Some(Secret::new(access_key_id));
        self.secret_access_key = Some(Secret::new(secret_access_key));
        self
    }

    /// Attempts per request, including the first, for the SDK's standard retry (default 4).
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// How long a request waits for the response to start (default 120 s), with or without
    /// `skip-verify`.
    pub fn with_read_timeout(mut self, timeout: Duration) -> Self {
        self.read_timeout = timeout;
        self
    }

    /// Multipart part size in bytes (at least 5 MiB; default 5 MiB). Payloads that fit in
    /// one part go up as a single PutObject.
    pub fn with_part_size(mut self, bytes: usize) -> Self {
        self.part_size = bytes.max(MIN_PART_SIZE);
        self
    }

    fn static_credentials(&self) -> Option<(String, String)> {
        match (&self.access_key_id, &self.secret_access_key) {
            (Some(k), Some(s)) => Some((k.expose().to_string(), s.expose().to_string())),
            _ => {
                if env_non_blank(&["AWS_ACCESS_KEY_ID"]).is_none()
                    && env_non_blank(&["AWS_SECRET_ACCESS_KEY"]).is_none()
                {
                    if let (Some(k), Some(s)) = (
                        env_non_blank(&["LITESTREAM_ACCESS_KEY_ID"]),
                        env_non_blank(&["LITESTREAM_SECRET_ACCESS_KEY"]),
                    ) {
                        return Some((k, s));
                    }
                }
                None
            }
        }
    }

    /// Validate the settings, load credentials, look up the region if needed and build the
    /// client. Makes one request only when the region must be looked up.
    pub async fn build(self) -> Result<S3Client> {
        if self.bucket.is_empty() {
            return Err(Error::InvalidConfig(
                "bucket required for s3 replica".into(),
            ));
        }
        if let Some(e) = &self.endpoint {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return Err(Error::InvalidConfig(format!(
                    "s3 endpoint {e:?} for bucket {:?} must start with http:// or https://",
                    self.bucket
                )));
            }
        }
        let creds = self.static_credentials();
        let mut secrets = Secrets::new();
        if let Some((_, secret)) = &creds {
            secrets.push(secret.clone());
        }
        let target = Target {
            bucket: self.bucket.clone(),
            endpoint: self.endpoint.clone(),
            secrets,
        };

        let connect_timeout = Duration::from_secs(10);
        let http = if self.skip_verify {
            crate::insecure::http_client(connect_timeout).map_err(|e| {
                Error::InvalidConfig(format!(
                    "cannot set up TLS without verification for bucket {:?}: {e}",
                    self.bucket
                ))
            })?
        } else {
            aws_smithy_http_client::Builder::new()
                .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                    aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
                ))
                .build_https()
        };
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http)
            .region(Region::new(DEFAULT_REGION))
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(self.max_attempts)
                    .with_initial_backoff(Duration::from_millis(200))
                    .with_max_backoff(Duration::from_secs(10)),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(connect_timeout)
                    .read_timeout(self.read_timeout)
                    .build(),
            );
        if let Some((k, s)) = &creds {
            loader = loader.credentials_provider(Credentials::new(
                k.clone(),
                s.clone(),
                None,
                None,
                "litestream",
            ));
        }
        let sdk = loader.load().await;
        let force_path_style = self.force_path_style.unwrap_or(self.endpoint.is_some());
        let make = |region: &str| {
            let mut cb = aws_sdk_s3::config::Builder::from(&sdk)
                .region(Region::new(region.to_string()))
                .force_path_style(force_path_style)
                .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
                .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
            if let Some(e) = &self.endpoint {
                cb = cb.endpoint_url(e.clone());
            }
            aws_sdk_s3::Client::from_conf(cb.build())
        };

        let region = match (&self.region, &self.endpoint) {
            (Some(r), _) => r.clone(),
            (None, Some(_)) => DEFAULT_REGION.to_string(),
            (None, None) => find_region(&make(DEFAULT_REGION), &target).await?,
        };
        Ok(S3Client {
            client: Opaque(make(&region)),
            target,
            root: self.path,
            region,
            part_size: self.part_size,
        })
    }
}

/// The bucket's region, as Litestream finds it: GetBucketLocation (empty means us-east-1),
/// falling back to HeadBucket's `x-amz-bucket-region`.
async fn find_region(client: &aws_sdk_s3::Client, target: &Target) -> Result<String> {
    litestream_core::metrics::record_operation(TYPE, litestream_core::metrics::Operation::Get, 0);
    let first = match client
        .get_bucket_location()
        .bucket(&target.bucket)
        .send()
        .await
    {
        Ok(out) => {
            let r = out
                .location_constraint()
                .map(|c| c.as_str().to_string())
                .unwrap_or_default();
            return Ok(match r.as_str() {
                "" => DEFAULT_REGION.to_string(),
                "EU" => "eu-west-1".to_string(),
                _ => r,
            });
        }
        Err(e) => target.sdk("find region of", "", e),
    };
    litestream_core::metrics::record_operation(TYPE, litestream_core::metrics::Operation::Get, 0);
    match client.head_bucket().bucket(&target.bucket).send().await {
        Ok(out) => {
            if let Some(r) = out.bucket_region().filter(|r| !r.is_empty()) {
                return Ok(r.to_string());
            }
        }
        Err(e) => {
            if let Some(r) = e
                .raw_response()
                .and_then(|r| r.headers().get("x-amz-bucket-region"))
                .filter(|r| !r.is_empty())
            {
                return Ok(r.to_string());
            }
        }
    }
    Err(Error::InvalidConfig(target.secrets.scrub(&format!(
        "cannot find the region of s3 bucket {:?}; set `region` in the replica config \
         (or `?region=` in the URL): {first}",
        target.bucket
    ))))
}
