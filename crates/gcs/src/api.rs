//! The GCS JSON API over `reqwest`: listing, media download, uploads (multipart and
//! resumable), metadata and delete, with retries and timeouts. Credentials come from
//! `object_store`'s GCP credential provider.
//!
//! # Why not `object_store`'s `GoogleCloudStorage` for the requests
//!
//! `object_store` speaks the GCS **XML** API for every data request (`GET /BUCKET?list-type=2`,
//! `DELETE /BUCKET/KEY`, `POST /BUCKET/KEY?uploads`, `HEAD`). The emulator the tests run
//! (`gcp-storage-emulator` from PyPI, the one real Litestream v0.3.13 works with) serves only
//! the **JSON** API plus XML `GET`/`PUT` of single objects: `object_store` cannot list or delete
//! there. The JSON API is also what Google's own clients use (Litestream's Go client lists,
//! uploads and deletes through it), and it gives `timeCreated`, which Litestream v0.3.13 reports
//! as a snapshot's or segment's creation time, and custom metadata in listings. So requests are
//! made here, and `object_store` is used for what it does well: turning
//! `GOOGLE_APPLICATION_CREDENTIALS` (service account or authorized user), the gcloud
//! application-default file or the instance metadata server into OAuth bearer tokens, cached
//! and refreshed.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use litestream_core::support::error_chain;
use object_store::gcp::GcpCredentialProvider;
use object_store::RetryConfig;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::Deserialize;
use time::OffsetDateTime;
use url::Url;

/// Google's status for "resumable upload not finished yet" (`308 Resume Incomplete`).
const RESUME_INCOMPLETE: u16 = 308;

/// Why a request failed (turned into a core error with the object's name by `error.rs`).
#[derive(Debug)]
pub(crate) enum Failure {
    /// The server answered with a status that is not a success.
    Status {
        /// HTTP status.
        status: u16,
        /// Google's error message from the JSON body, or the start of the body.
        message: String,
    },
    /// The request did not get an answer: connect, timeout, reset.
    Transport(reqwest::Error),
    /// No bearer token could be obtained.
    Credentials(String),
    /// The answer was not what the JSON API returns.
    Protocol(String),
}

impl Failure {
    /// Whether a repeat of the same request may succeed.
    pub(crate) fn retryable(&self) -> bool {
        match self {
            Failure::Status { status, .. } => matches!(status, 408 | 429 | 500..=599),
            Failure::Transport(e) => {
                e.is_connect() || e.is_timeout() || e.is_request() || e.is_body()
            }
            Failure::Credentials(_) => false,
            Failure::Protocol(_) => false,
        }
    }

    /// The HTTP status, if the server answered.
    pub(crate) fn status(&self) -> Option<u16> {
        match self {
            Failure::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Status { status, message } if message.is_empty() => {
                write!(f, "HTTP {status}")
            }
            Failure::Status { status, message } => write!(f, "HTTP {status}: {message}"),
            Failure::Transport(e) => write!(f, "{}", error_chain(e)),
            Failure::Credentials(m) => write!(f, "cannot get credentials: {m}"),
            Failure::Protocol(m) => write!(f, "unexpected answer: {m}"),
        }
    }
}

/// How requests are authorised.
#[derive(Clone)]
pub(crate) enum Auth {
    /// No `Authorization` header (emulators, as Google's clients do with `STORAGE_EMULATOR_HOST`).
    Anonymous,
    /// OAuth bearer tokens from `object_store`'s provider chain.
    Bearer(GcpCredentialProvider),
}

/// One object of a listing.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ObjectResource {
    /// Full object name.
    pub(crate) name: String,
    /// Size in bytes (a decimal string in the JSON API).
    #[serde(default, deserialize_with = "de_u64")]
    pub(crate) size: u64,
    /// Creation time (RFC 3339).
    #[serde(default)]
    pub(crate) time_created: Option<String>,
    /// Last update time (RFC 3339).
    #[serde(default)]
    pub(crate) updated: Option<String>,
    /// Custom metadata.
    #[serde(default)]
    pub(crate) metadata: Option<std::collections::BTreeMap<String, String>>,
}

impl ObjectResource {
    /// `timeCreated` (as Litestream v0.3.13 reports it), else `updated`, else the epoch.
    pub(crate) fn created(&self) -> OffsetDateTime {
        let parse = |s: &Option<String>| {
            s.as_deref().and_then(|v| {
                OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339).ok()
            })
        };
        parse(&self.time_created)
            .or_else(|| parse(&self.updated))
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }
}

fn de_u64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Num {
        S(String),
        N(u64),
    }
    match Num::deserialize(d)? {
        Num::N(n) => Ok(n),
        Num::S(s) => s.parse().map_err(serde::de::Error::custom),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListPage {
    #[serde(default)]
    items: Vec<ObjectResource>,
    #[serde(default)]
    prefixes: Vec<String>,
    #[serde(default)]
    next_page_token: Option<String>,
}

/// A listing: objects and (with a delimiter) the common prefixes.
#[derive(Debug, Default)]
pub(crate) struct Listing {
    pub(crate) objects: Vec<ObjectResource>,
    pub(crate) prefixes: Vec<String>,
}

/// The JSON API of one bucket.
#[derive(Clone)]
pub(crate) struct Api {
    http: reqwest::Client,
    base: Url,
    bucket: String,
    auth: Auth,
    retry: RetryConfig,
    request_timeout: Duration,
}

impl Api {
    /// The API of `bucket` at `base` (`https://storage.googleapis.com` or an emulator), over
    /// an HTTP client of its own; `request_timeout` limits each request but a download's body.
    pub(crate) fn new(
        base: Url,
        bucket: String,
        auth: Auth,
        retry: RetryConfig,
        request_timeout: Duration,
    ) -> Result<Api, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            // A download's body is streamed for as long as it takes, but a server that goes
            // silent for this long fails the read.
            .read_timeout(Duration::from_secs(60))
            .pool_idle_timeout(Duration::from_secs(30))
            .user_agent(concat!("litestream-rs/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Api {
            http,
            base,
            bucket,
            auth,
            retry,
            request_timeout,
        })
    }

    /// `BASE/storage/v1/b/BUCKET/o[/NAME]`, each part one encoded path segment (a `/` in an
    /// object name becomes `%2F`, as the JSON API wants).
    fn object_url(&self, upload: bool, name: Option<&str>) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut segs) = url.path_segments_mut() {
            segs.pop_if_empty();
            if upload {
                segs.push("upload");
            }
            segs.extend(["storage", "v1", "b", self.bucket.as_str(), "o"]);
            if let Some(n) = name {
                segs.push(n);
            }
        }
        url
    }

    async fn authorize(&self, req: RequestBuilder) -> Result<RequestBuilder, Failure> {
        match &self.auth {
            Auth::Anonymous => Ok(req),
            Auth::Bearer(provider) => {
                let cred = provider
                    .get_credential()
                    .await
                    .map_err(|e| Failure::Credentials(error_chain(&e)))?;
                Ok(req.bearer_auth(&cred.bearer))
            }
        }
    }

    /// Send the request built by `build`, repeating it on retryable failures with backoff
    /// (`object_store`'s [`RetryConfig`]: attempts, delays and a time budget). Statuses in
    /// `accept` count as success besides 2xx. `timeout` bounds each attempt; `None` leaves
    /// only the client's read timeout (downloads, whose body is streamed afterwards).
    async fn send<F>(
        &self,
        build: F,
        accept: &[u16],
        timeout: Option<Duration>,
    ) -> Result<Response, Failure>
    where
        F: Fn() -> RequestBuilder,
    {
        let started = tokio::time::Instant::now();
        let mut delay = self.retry.backoff.init_backoff;
        let mut attempt = 0usize;
        loop {
            let mut req = self.authorize(build()).await?;
            if let Some(t) = timeout {
                req = req.timeout(t);
            }
            let result = match req.send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    if resp.status().is_success() || accept.contains(&status) {
                        return Ok(resp);
                    }
                    Err(failure_from(resp).await)
                }
                Err(e) => Err(Failure::Transport(e)),
            };
            let failure = match result {
                Ok(r) => return Ok(r),
                Err(f) => f,
            };
            attempt += 1;
            let budget_left = started.elapsed() + delay < self.retry.retry_timeout;
            if !failure.retryable() || attempt > self.retry.max_retries || !budget_left {
                return Err(failure);
            }
            tracing::debug!(attempt, error = %failure, "gcs request failed, retrying");
            tokio::time::sleep(delay).await;
            delay = delay
                .mul_f64(self.retry.backoff.base.max(1.0))
                .min(self.retry.backoff.max_backoff);
        }
    }

    /// Every object under `prefix`; with `delimiter` only those directly under it, plus the
    /// common prefixes. Pages are followed.
    pub(crate) async fn list(&self, prefix: &str, delimiter: bool) -> Result<Listing, Failure> {
        let mut out = Listing::default();
        let mut token: Option<String> = None;
        loop {
            let mut url = self.object_url(false, None);
            {
                let mut q = url.query_pairs_mut();
                if !prefix.is_empty() {
                    q.append_pair("prefix", prefix);
                }
                if delimiter {
                    q.append_pair("delimiter", "/");
                }
                q.append_pair(
                    "fields",
                    "items(name,size,timeCreated,updated,metadata),prefixes,nextPageToken",
                );
                if let Some(t) = &token {
                    q.append_pair("pageToken", t);
                }
            }
            let page: ListPage = self.get_json(&url).await?;
            out.objects.extend(page.items);
            out.prefixes.extend(page.prefixes);
            match page.next_page_token.filter(|t| !t.is_empty()) {
                Some(t) => token = Some(t),
                None => return Ok(out),
            }
        }
    }

    /// The object's resource (size, times, metadata).
    pub(crate) async fn metadata(&self, name: &str) -> Result<ObjectResource, Failure> {
        self.get_json(&self.object_url(false, Some(name))).await
    }

    /// GET `url` (retried, with the request timeout) and decode its JSON answer.
    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &Url) -> Result<T, Failure> {
        let resp = self
            .send(
                || self.http.get(url.clone()),
                &[],
                Some(self.request_timeout),
            )
            .await?;
        json(resp).await
    }

    /// Start a download: the response whose body is the object's bytes.
    pub(crate) async fn download(&self, name: &str) -> Result<Response, Failure> {
        let mut url = self.object_url(false, Some(name));
        url.query_pairs_mut().append_pair("alt", "media");
        self.send(|| self.http.get(url.clone()), &[], None).await
    }

    /// Delete the object; `Ok(false)` if it did not exist.
    pub(crate) async fn delete(&self, name: &str) -> Result<bool, Failure> {
        let url = self.object_url(false, Some(name));
        let resp = self
            .send(
                || self.http.delete(url.clone()),
                &[404],
                Some(self.request_timeout),
            )
            .await?;
        Ok(resp.status() != StatusCode::NOT_FOUND)
    }

    /// The object resource to send with an upload: name, content type and custom metadata.
    fn upload_metadata(name: &str, metadata: &[(&str, String)]) -> serde_json::Value {
        let meta: serde_json::Map<String, serde_json::Value> = metadata
            .iter()
            .map(|(k, v)| ((*k).to_string(), serde_json::Value::String(v.clone())))
            .collect();
        let mut obj = serde_json::json!({
            "name": name,
            "contentType": "application/octet-stream",
        });
        if !meta.is_empty() {
            obj["metadata"] = serde_json::Value::Object(meta);
        }
        obj
    }

    /// Upload `data` in one `uploadType=multipart` request (object resource + bytes).
    pub(crate) async fn upload_single(
        &self,
        name: &str,
        data: Bytes,
        metadata: &[(&str, String)],
    ) -> Result<(), Failure> {
        let meta = Self::upload_metadata(name, metadata).to_string();
        let boundary = boundary_for(&data);
        let mut body = BytesMut::with_capacity(data.len() + meta.len() + 256);
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{meta}\r\n\
                 --{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(&data);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let body = body.freeze();
        let mut url = self.object_url(true, None);
        url.query_pairs_mut()
            .append_pair("uploadType", "multipart")
            .append_pair("name", name);
        let content_type = format!("multipart/related; boundary={boundary}");
        self.send(
            || {
                self.http
                    .post(url.clone())
                    .header(reqwest::header::CONTENT_TYPE, content_type.as_str())
                    .body(body.clone())
            },
            &[],
            Some(self.request_timeout),
        )
        .await?;
        Ok(())
    }

    /// Start a resumable upload session; returns its URL.
    pub(crate) async fn resumable_start(
        &self,
        name: &str,
        metadata: &[(&str, String)],
    ) -> Result<Url, Failure> {
        let meta = Self::upload_metadata(name, metadata).to_string();
        let mut url = self.object_url(true, None);
        url.query_pairs_mut()
            .append_pair("uploadType", "resumable")
            .append_pair("name", name);
        let resp = self
            .send(
                || {
                    self.http
                        .post(url.clone())
                        .header(
                            reqwest::header::CONTENT_TYPE,
                            "application/json; charset=UTF-8",
                        )
                        .header("X-Upload-Content-Type", "application/octet-stream")
                        .body(meta.clone())
                },
                &[],
                Some(self.request_timeout),
            )
            .await?;
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Failure::Protocol("resumable upload without a Location".into()))?;
        self.base
            .join(location)
            .map_err(|e| Failure::Protocol(format!("bad resumable upload URL {location:?}: {e}")))
    }

    /// Send `chunk`, which starts at byte `start` of the object, to the session `session`.
    /// `total` is the object size when this is the last chunk. After a failure the bytes the
    /// server already has are asked for and only the rest is sent again.
    pub(crate) async fn resumable_put(
        &self,
        session: &Url,
        start: u64,
        chunk: &Bytes,
        total: Option<u64>,
    ) -> Result<(), Failure> {
        let started = tokio::time::Instant::now();
        let mut delay = self.retry.backoff.init_backoff;
        let mut attempt = 0usize;
        let mut sent_from = start;
        loop {
            let rest = chunk.slice((sent_from - start) as usize..);
            let end = sent_from + rest.len() as u64;
            let total_s = total.map_or("*".to_string(), |t| t.to_string());
            let range = if rest.is_empty() {
                format!("bytes */{total_s}")
            } else {
                format!("bytes {sent_from}-{}/{total_s}", end - 1)
            };
            let req = self
                .authorize(
                    self.http
                        .put(session.clone())
                        .header(reqwest::header::CONTENT_RANGE, range)
                        .body(rest),
                )
                .await?
                .timeout(self.request_timeout);
            let failure = match req.send().await {
                Ok(resp) if resp.status().is_success() => {
                    return if total.is_some() {
                        Ok(())
                    } else {
                        Err(Failure::Protocol(
                            "the server finished the upload before its last chunk".into(),
                        ))
                    };
                }
                Ok(resp) if resp.status().as_u16() == RESUME_INCOMPLETE => {
                    let have = persisted(&resp);
                    if have >= end && total.is_none() {
                        return Ok(());
                    }
                    if have < start || have > end {
                        return Err(Failure::Protocol(format!(
                            "resumable upload at byte {have}, expected {end}"
                        )));
                    }
                    // The last chunk answered "incomplete": send what is missing.
                    Failure::Protocol(format!("resumable upload incomplete at byte {have}"))
                }
                Ok(resp) => failure_from(resp).await,
                Err(e) => Failure::Transport(e),
            };
            attempt += 1;
            let retryable = failure.retryable() || matches!(failure, Failure::Protocol(_));
            let budget_left = started.elapsed() + delay < self.retry.retry_timeout;
            if !retryable || attempt > self.retry.max_retries || !budget_left {
                return Err(failure);
            }
            tokio::time::sleep(delay).await;
            delay = delay
                .mul_f64(self.retry.backoff.base.max(1.0))
                .min(self.retry.backoff.max_backoff);
            // Ask where the session stands, then resume from there.
            let total_s = total.map_or("*".to_string(), |t| t.to_string());
            let status = self
                .authorize(
                    self.http
                        .put(session.clone())
                        .header(reqwest::header::CONTENT_RANGE, format!("bytes */{total_s}")),
                )
                .await?
                .timeout(self.request_timeout)
                .send()
                .await;
            match status {
                Ok(resp) if resp.status().is_success() && total.is_some() => return Ok(()),
                Ok(resp) if resp.status().as_u16() == RESUME_INCOMPLETE => {
                    sent_from = persisted(&resp).clamp(start, end);
                }
                Ok(resp) => return Err(failure_from(resp).await),
                Err(_) => {} // send the same bytes again on the next round
            }
        }
    }

    /// Abandon a resumable session (best effort; unfinished sessions never become objects
    /// and expire after a week).
    pub(crate) async fn resumable_cancel(&self, session: &Url) {
        let req = match self
            .authorize(self.http.request(Method::DELETE, session.clone()))
            .await
        {
            Ok(r) => r.timeout(self.request_timeout),
            Err(_) => return,
        };
        let _ = req.send().await;
    }
}

/// The number of bytes a resumable session holds, from the `Range: bytes=0-N` of a 308.
fn persisted(resp: &Response) -> u64 {
    resp.headers()
        .get(reqwest::header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("bytes=0-"))
        .and_then(|n| n.parse::<u64>().ok())
        .map_or(0, |last| last + 1)
}

/// A multipart boundary that does not occur in `data`.
fn boundary_for(data: &[u8]) -> String {
    let mut n = 0u32;
    loop {
        let b = format!("litestream-rs-gcs-{n:08x}-boundary");
        if !data.windows(b.len()).any(|w| w == b.as_bytes()) {
            return b;
        }
        n += 1;
    }
}

async fn json<T: serde::de::DeserializeOwned>(resp: Response) -> Result<T, Failure> {
    let body = resp.bytes().await.map_err(Failure::Transport)?;
    serde_json::from_slice(&body).map_err(|e| Failure::Protocol(format!("invalid JSON: {e}")))
}

/// A failure from a non-success response: Google's JSON error message if there is one.
async fn failure_from(resp: Response) -> Failure {
    let status = resp.status().as_u16();
    let body = resp.bytes().await.unwrap_or_default();
    #[derive(Deserialize)]
    struct Outer {
        error: Inner,
    }
    #[derive(Deserialize)]
    struct Inner {
        #[serde(default)]
        message: String,
    }
    let message = match serde_json::from_slice::<Outer>(&body) {
        Ok(o) => o.error.message,
        Err(_) => String::from_utf8_lossy(&body[..body.len().min(300)])
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" "),
    };
    Failure::Status { status, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundary_avoids_the_payload() {
        let first = boundary_for(b"abc");
        let data = format!("xx{first}yy");
        assert_ne!(boundary_for(data.as_bytes()), first);
    }

    #[test]
    fn sizes_parse_from_strings_and_numbers() {
        let o: ObjectResource = serde_json::from_str(
            r#"{"name":"a","size":"12","timeCreated":"2024-01-02T03:04:05.5Z"}"#,
        )
        .expect("json");
        assert_eq!(o.size, 12);
        assert_eq!(o.created().unix_timestamp(), 1_704_164_645);
        let o: ObjectResource = serde_json::from_str(r#"{"name":"a","size":7}"#).expect("json");
        assert_eq!((o.size, o.created()), (7, OffsetDateTime::UNIX_EPOCH));
    }

    #[test]
    fn object_names_are_one_segment() {
        let api = Api::new(
            Url::parse("http://127.0.0.1:4443").expect("url"),
            "b".into(),
            Auth::Anonymous,
            RetryConfig::default(),
            Duration::from_secs(1),
        )
        .expect("api");
        assert_eq!(
            api.object_url(false, Some("db/generations/x y")).as_str(),
            "http://127.0.0.1:4443/storage/v1/b/b/o/db%2Fgenerations%2Fx%20y"
        );
        assert_eq!(
            api.object_url(true, None).as_str(),
            "http://127.0.0.1:4443/upload/storage/v1/b/b/o"
        );
    }

    #[test]
    fn retryable_statuses() {
        let f = |status| Failure::Status {
            status,
            message: String::new(),
        };
        assert!(f(503).retryable() && f(429).retryable() && f(408).retryable());
        assert!(!f(404).retryable() && !f(403).retryable());
    }
}
