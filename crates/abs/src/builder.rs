//! [`AbsBuilder`]: validates the `type: abs` settings once and builds an [`AbsClient`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use litestream_core::config::ReplicaConfig;
use litestream_core::url::EndpointError;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::client::{HttpClient, HttpConnector};
use object_store::{ClientOptions, RetryConfig};

use litestream_core::support::{env_non_blank, non_blank, Opaque, Secret, Secrets};

use crate::client::AbsClient;
use crate::error::{Error, ErrorContext};

/// Environment variable holding the account key when `account-key` is not set (as Litestream).
pub const ACCOUNT_KEY_ENV: &str = "LITESTREAM_AZURE_ACCOUNT_KEY";

/// How requests are authorised: the `credential` config key.
#[derive(Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Credential {
    /// `shared-key` (default, as Litestream): the storage account key from `account-key`
    /// or `LITESTREAM_AZURE_ACCOUNT_KEY`.
    #[default]
    SharedKey,
    /// `sas`: the shared access signature in `sas-token` (with or without a leading `?`).
    Sas,
    /// `managed-identity`: Azure instance metadata (IMDS) tokens; `client-id` picks a
    /// user-assigned identity. `AZURE_MSI_ENDPOINT`/`MSI_ENDPOINT` override the IMDS URL.
    ManagedIdentity,
    /// `workload-identity`: AKS workload identity federation, from `client-id`/`tenant-id`
    /// (or `AZURE_CLIENT_ID`/`AZURE_TENANT_ID`) and the token file in
    /// `AZURE_FEDERATED_TOKEN_FILE`; `AZURE_AUTHORITY_HOST` overrides the login host.
    WorkloadIdentity,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Credential {
    /// Parse the `credential` config value.
    pub fn parse(s: &str) -> Result<Self, Error> {
        match s.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "shared-key" | "sharedkey" | "account-key" => Ok(Credential::SharedKey),
            "sas" | "sas-token" => Ok(Credential::Sas),
            "managed-identity" | "msi" => Ok(Credential::ManagedIdentity),
            "workload-identity" => Ok(Credential::WorkloadIdentity),
            _ => Err(Error::UnknownCredential(s.to_string())),
        }
    }

    /// The config spelling of this credential.
    pub fn as_str(&self) -> &'static str {
        match self {
            Credential::SharedKey => "shared-key",
            Credential::Sas => "sas",
            Credential::ManagedIdentity => "managed-identity",
            Credential::WorkloadIdentity => "workload-identity",
        }
    }
}

/// Settings for an [`AbsClient`], validated by [`build`](Self::build).
///
/// `Debug` never prints the account key or the SAS token.
#[derive(Clone, Default, Debug)]
pub struct AbsBuilder {
    account: Option<String>,
    account_key: Option<Secret>,
    container: Option<String>,
    path: String,
    endpoint: Option<String>,
    credential: Option<Credential>,
    sas_token: Option<Secret>,
    client_id: Option<String>,
    tenant_id: Option<String>,
    retry: Option<RetryConfig>,
    part_size: Option<usize>,
    http_connector: Option<SharedConnector>,
}

/// The [`HttpConnector`] given to [`AbsBuilder::with_http_connector`], shared by the
/// builder's clones.
#[derive(Debug, Clone)]
struct SharedConnector(Arc<dyn HttpConnector>);

impl HttpConnector for SharedConnector {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        self.0.connect(options)
    }
}

/// Default size of one block when a snapshot is uploaded in parts.
pub const DEFAULT_PART_SIZE: usize = 8 << 20;

impl AbsBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// A builder seeded from the environment: only `LITESTREAM_AZURE_ACCOUNT_KEY`.
    pub fn from_env() -> Self {
        AbsBuilder {
            account_key: env_non_blank(&[ACCOUNT_KEY_ENV]).map(Secret::new),
            ..Self::default()
        }
    }

    /// A builder from a resolved replica config (`account-name`, `account-key` falling back to
    /// `LITESTREAM_AZURE_ACCOUNT_KEY`, `bucket`, `path`, `endpoint`, `credential`, `sas-token`,
    /// `client-id`, `tenant-id`).
    pub fn from_replica_config(cfg: &ReplicaConfig) -> Result<Self, Error> {
        let mut b = Self::from_env();
        if let Some(k) = non_blank(cfg.account_key.clone()) {
            b.account_key = Some(Secret::new(k));
        }
        b.account = non_blank(cfg.account_name.clone());
        b.container = non_blank(cfg.bucket.clone());
        b.path = cfg.path.clone().unwrap_or_default();
        b.endpoint = non_blank(cfg.endpoint.clone());
        b.sas_token = non_blank(cfg.sas_token.clone()).map(Secret::new);
        b.client_id = non_blank(cfg.client_id.clone());
        b.tenant_id = non_blank(cfg.tenant_id.clone());
        if let Some(c) = non_blank(cfg.credential.clone()) {
            b.credential = Some(Credential::parse(&c)?);
        }
        Ok(b)
    }

    litestream_core::builder_setters! {
        /// Storage account name.
        with_account(account: impl Into<String>) -> Some;
        /// Container name (Litestream's `bucket`).
        with_container(container: impl Into<String>) -> Some;
        /// Key prefix inside the container (Litestream's `path`).
        with_path(path: impl Into<String>);
        /// Blob service endpoint, e.g. `http://127.0.0.1:10000/devstoreaccount1` for Azurite
        /// (path style: the account is the first path segment) or a sovereign-cloud URL.
        /// Default `https://ACCOUNT.blob.core.windows.net`. `http://` endpoints are allowed.
        with_endpoint(endpoint: impl Into<String>) -> Some;
        /// How requests are authorised (default: [`Credential::Sas`] when only a SAS token is
        /// configured, otherwise [`Credential::SharedKey`]).
        with_credential(credential: Credential) -> Some;
        /// Client ID of a user-assigned managed identity or of the workload identity.
        with_client_id(client_id: impl Into<String>) -> Some;
        /// Tenant of the workload identity.
        with_tenant_id(tenant_id: impl Into<String>) -> Some;
    }

    /// Storage account key (base64), for [`Credential::SharedKey`].
    pub fn with_account_key(mut self, key: impl Into<String>) -> Self {
        self.account_key = Some(Secret::new(key));
        self
    }

    /// SAS token for [`Credential::Sas`].
    pub fn with_sas_token(mut self, token: impl Into<String>) -> Self {
        self.sas_token = Some(Secret::new(token));
        self
    }

    litestream_core::builder_setters! {
        /// Retry policy of the underlying HTTP client (default: 3 retries, 100 ms..4 s
        /// backoff, at most 30 s per request). Core's retry loop still wraps every replica
        /// operation.
        with_retry(retry: RetryConfig) -> Some;
    }

    /// Size of one block for uploads in parts (default [`DEFAULT_PART_SIZE`]; at least 1 MiB).
    /// Payloads up to this size are sent in one request.
    pub fn with_part_size(mut self, bytes: usize) -> Self {
        self.part_size = Some(bytes.max(1 << 20));
        self
    }

    /// The HTTP client factory of every request (default: `object_store`'s reqwest client),
    /// e.g. to route requests through a proxy of your own or to observe them.
    pub fn with_http_connector(mut self, connector: impl HttpConnector) -> Self {
        self.http_connector = Some(SharedConnector(Arc::new(connector)));
        self
    }

    fn effective_credential(&self) -> Credential {
        match &self.credential {
            Some(c) => c.clone(),
            None if self.account_key.is_none() && self.sas_token.is_some() => Credential::Sas,
            None => Credential::SharedKey,
        }
    }

    /// Validate the settings and build the client. Makes no request.
    pub fn build(self) -> Result<AbsClient, Error> {
        let account = self.account.clone().ok_or(Error::MissingAccountName)?;
        let container = self.container.clone().ok_or(Error::MissingContainer)?;
        let credential = self.effective_credential();
        let mut options = ClientOptions::new()
            .with_connect_timeout(Duration::from_secs(10))
            .with_timeout(Duration::from_secs(120))
            .with_pool_idle_timeout(Duration::from_secs(30));
        let mut az = MicrosoftAzureBuilder::new()
            .with_account(account.clone())
            .with_container_name(container.clone())
            .with_retry(
                self.retry
                    .clone()
                    .unwrap_or_else(|| litestream_core::object_store_retry!()),
            );
        if let Some(ep) = &self.endpoint {
            if parse_endpoint(ep)?.scheme() == "http" {
                options = options.with_allow_http(true);
            }
            az = az.with_endpoint(ep.trim_end_matches('/').to_string());
        }
        if let Some(connector) = &self.http_connector {
            az = az.with_http_connector(connector.clone());
        }
        let missing = |what: &str| Error::MissingCredential {
            account: account.clone(),
            container: container.clone(),
            what: what.to_string(),
        };
        let (az, secrets) = self.authorize(az, &credential, missing)?;
        let ctx = ErrorContext {
            account: account.clone(),
            container: container.clone(),
            secrets,
        };
        let store = az
            .with_client_options(options)
            .build()
            .map_err(|e| Error::Build {
                account,
                container,
                message: ctx.redact(&litestream_core::support::error_chain(&e)),
            })?;
        Ok(AbsClient {
            store: Opaque(Arc::new(store)),
            ctx,
            root: litestream_core::listing::root_prefix(&self.path),
            credential,
            endpoint: self.endpoint.clone(),
            part_size: self.part_size.unwrap_or(DEFAULT_PART_SIZE),
        })
    }

    /// `az` set up for `credential`, and the secrets that errors must never show.
    fn authorize(
        &self,
        az: MicrosoftAzureBuilder,
        credential: &Credential,
        missing: impl Fn(&str) -> Error,
    ) -> Result<(MicrosoftAzureBuilder, Secrets), Error> {
        let mut secrets = Secrets::new();
        let az = match credential {
            Credential::SharedKey => {
                let key = self.account_key.as_ref().map(Secret::expose).ok_or_else(|| {
                    missing(
                        "account-key required (set account-key, or LITESTREAM_AZURE_ACCOUNT_KEY, or choose another credential: sas, managed-identity, workload-identity)",
                    )
                })?;
                secrets.push(key);
                az.with_access_key(key).with_credential_type("access_key")
            }
            Credential::Sas => {
                let sas = self
                    .sas_token
                    .as_ref()
                    .map(Secret::expose)
                    .ok_or_else(|| missing("sas-token required for credential sas"))?;
                let sas = sas.trim_start_matches('?').to_string();
                secrets.push(sas.clone());
                for (_, v) in sas.split('&').filter_map(|kv| kv.split_once('=')) {
                    secrets.push(v);
                }
                let pairs = object_store::azure::split_sas(&sas)
                    .map_err(|_| missing("sas-token is not a valid query string (k=v&k=v...)"))?;
                az.with_sas_authorization(pairs)
                    .with_credential_type("sas_token")
            }
            Credential::ManagedIdentity => {
                let mut az = az.with_credential_type("managed_identity");
                if let Some(id) = &self.client_id {
                    az = az.with_client_id(id.clone());
                }
                if let Some(ep) =
                    env_non_blank(&["AZURE_MSI_ENDPOINT", "MSI_ENDPOINT", "IDENTITY_ENDPOINT"])
                {
                    az = az.with_msi_endpoint(ep);
                }
                az
            }
            Credential::WorkloadIdentity => self.workload_identity(az, missing)?,
        };
        Ok((az, secrets))
    }

    /// `az` set up for AKS workload identity (client, tenant and token file are required).
    fn workload_identity(
        &self,
        az: MicrosoftAzureBuilder,
        missing: impl Fn(&str) -> Error,
    ) -> Result<MicrosoftAzureBuilder, Error> {
        // A setting from the config, else from the environment variable `env`.
        let required = |value: &Option<String>, key: &str, env: &str| {
            value
                .clone()
                .or_else(|| env_non_blank(&[env]))
                .ok_or_else(|| missing(&format!("{key} (or {env}) required for workload-identity")))
        };
        let client_id = required(&self.client_id, "client-id", "AZURE_CLIENT_ID")?;
        let tenant_id = required(&self.tenant_id, "tenant-id", "AZURE_TENANT_ID")?;
        let token_file = env_non_blank(&["AZURE_FEDERATED_TOKEN_FILE"])
            .ok_or_else(|| missing("AZURE_FEDERATED_TOKEN_FILE required for workload-identity"))?;
        let mut az = az
            .with_credential_type("workload_identity")
            .with_client_id(client_id)
            .with_tenant_id(tenant_id)
            .with_federated_token_file(token_file);
        if let Some(h) = env_non_blank(&["AZURE_AUTHORITY_HOST"]) {
            az = az.with_authority_host(h);
        }
        Ok(az)
    }
}

/// The `endpoint` as a URL: `http` or `https`, with a host.
fn parse_endpoint(endpoint: &str) -> Result<url::Url, Error> {
    litestream_core::url::parse_http_endpoint(endpoint).map_err(|e| {
        let hint = match e {
            EndpointError::Parse(_) => " (expected http://HOST[:PORT][/ACCOUNT] or https://...)",
            _ => "",
        };
        Error::InvalidEndpoint {
            endpoint: endpoint.to_string(),
            reason: format!("{e}{hint}"),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_names_parse() {
        assert_eq!(
            Credential::parse("managed_identity").ok(),
            Some(Credential::ManagedIdentity)
        );
        assert_eq!(Credential::parse("SAS").ok(), Some(Credential::Sas));
        assert!(Credential::parse("password").is_err());
    }

    #[test]
    fn missing_settings_are_named() {
        let e = AbsBuilder::new().with_container("c").build().err();
        assert!(matches!(e, Some(Error::MissingAccountName)));
        let e = AbsBuilder::new().with_account("a").build().err();
        assert!(matches!(e, Some(Error::MissingContainer)));
        let e = AbsBuilder::new()
            .with_account("a")
            .with_container("c")
            .with_credential(Credential::Sas)
            .build()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("account a container c"), "{e}");
        assert!(e.contains("sas-token"), "{e}");
    }

    #[test]
    fn debug_hides_secrets() {
        let b = AbsBuilder::new()
            .with_account_key("c2VjcmV0")
            .with_sas_token("sig=abc");
        let s = format!("{b:?}");
        assert!(!s.contains("c2VjcmV0") && !s.contains("sig=abc"), "{s}");
    }

    #[test]
    fn bad_endpoint_is_rejected() {
        let e = AbsBuilder::new()
            .with_account("a")
            .with_container("c")
            .with_account_key("a2V5")
            .with_endpoint("127.0.0.1:10000")
            .build()
            .err();
        assert!(matches!(e, Some(Error::InvalidEndpoint { .. })));
    }
}
