//! Replica URLs (`file://`, `s3://`, `gcs://`, `abs://`, `sftp://`) parsed into a
//! [`ReplicaConfig`], exactly as Litestream v0.3.13 reads them, plus the `endpoint`, `region`
//! and `forcePathStyle` query parameters Litestream v0.5 accepts.

use crate::config::{ReplicaConfig, ReplicaKind};
use crate::error::{Error, Result};
use crate::layout::clean;

/// True if `s` looks like a replica URL (`^\w+://`), as Litestream decides between a
/// database path and a URL.
pub fn is_url(s: &str) -> bool {
    match s.find("://") {
        Some(i) if i > 0 => s[..i]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_'),
        _ => false,
    }
}

/// Parse a replica URL into a replica configuration (type, path and backend fields).
pub fn parse_replica_url(s: &str) -> Result<ReplicaConfig> {
    let bad = |why: &str| bad_url(s, why);
    if !s.contains("://") {
        if s.contains(':') && !s.starts_with('/') {
            return Err(bad("replica url scheme required"));
        }
        return Err(Error::InvalidConfig(
            "replica url scheme required".to_string(),
        ));
    }
    let u = url::Url::parse(s).map_err(|e| bad(&e.to_string()))?;
    let kind: ReplicaKind = u.scheme().parse()?;
    if kind == ReplicaKind::File {
        return file_url(s);
    }
    let host = match (u.host_str(), u.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        (None, _) => String::new(),
    };
    let raw_path = percent_decode(u.path()).map_err(|e| bad(&e))?;
    let path = clean(&raw_path);
    let stripped = match path.trim_start_matches('/') {
        "." => String::new(),
        p => p.to_string(),
    };
    let mut rc = ReplicaConfig {
        replica_type: Some(kind.to_string()),
        path: Some(stripped),
        ..Default::default()
    };
    match kind {
        ReplicaKind::S3 => s3_url(&u, host, &mut rc).map_err(|e| bad(&e))?,
        ReplicaKind::Gcs if host.is_empty() => return Err(bad("bucket required for gcs replica")),
        ReplicaKind::Gcs => rc.bucket = Some(host),
        ReplicaKind::Abs => abs_url(&u, &mut rc).map_err(|e| bad(&e))?,
        ReplicaKind::Sftp => {
            sftp_url(&u, host, &mut rc).map_err(|e| bad(&e))?;
            // The sftp path keeps its leading slash (an absolute remote path).
            rc.path = Some(if raw_path.is_empty() {
                String::new()
            } else {
                path
            });
        }
        ReplicaKind::File => {}
    }
    Ok(rc)
}

fn bad_url(s: &str, why: &str) -> Error {
    Error::InvalidConfig(format!("invalid replica url {:?}: {why}", redact_url(s)))
}

/// `file://` URLs: Litestream folds the host into the path (`file://rel/x` is `/rel/x`).
fn file_url(s: &str) -> Result<ReplicaConfig> {
    // The scheme check allows `file:/x` and `FILE://`; only `file://` has a rest.
    let rest = match s.get(..7) {
        Some(p) if p.eq_ignore_ascii_case("file://") => &s[7..],
        _ => return Err(bad_url(s, "a file url starts with file://")),
    };
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    let path = if rest.starts_with('/') {
        rest.to_string()
    } else {
        format!("/{rest}")
    };
    let path = percent_decode(&path).map_err(|e| bad_url(s, &e))?;
    Ok(ReplicaConfig {
        replica_type: Some(ReplicaKind::File.to_string()),
        path: Some(clean(&path)),
        ..Default::default()
    })
}

/// A boolean query value as Litestream reads it.
fn truthy(v: &str) -> bool {
    matches!(v, "true" | "1" | "yes")
}

/// `s3://BUCKET[.provider.host][:PORT]/PATH?endpoint=&region=&forcePathStyle=&skipVerify=`.
fn s3_url(u: &url::Url, host: String, rc: &mut ReplicaConfig) -> std::result::Result<(), String> {
    if host.is_empty() {
        return Err("bucket required for s3 replica".into());
    }
    let parsed = parse_s3_host(&host);
    rc.bucket = Some(parsed.bucket);
    rc.region = parsed.region;
    rc.endpoint = parsed.endpoint;
    if parsed.force_path_style {
        rc.force_path_style = Some(true);
    }
    for (k, v) in u.query_pairs() {
        match k.as_ref() {
            "endpoint" => rc.endpoint = Some(v.to_string()),
            "region" => rc.region = Some(v.to_string()),
            "forcePathStyle" | "force-path-style" => rc.force_path_style = Some(truthy(&v)),
            "skipVerify" | "skip-verify" => rc.skip_verify = Some(truthy(&v)),
            _ => {}
        }
    }
    Ok(())
}

/// `abs://ACCOUNT@CONTAINER/PATH?endpoint=`.
fn abs_url(u: &url::Url, rc: &mut ReplicaConfig) -> std::result::Result<(), String> {
    if !u.username().is_empty() {
        rc.account_name = Some(percent_decode(u.username())?);
    }
    rc.bucket = Some(u.host_str().unwrap_or_default().to_string());
    for (k, v) in u.query_pairs() {
        if k == "endpoint" {
            rc.endpoint = Some(v.to_string());
        }
    }
    Ok(())
}

/// `sftp://USER[:PASSWORD]@HOST[:PORT]/PATH?host-key=&strict-host-key-checking=`.
fn sftp_url(u: &url::Url, host: String, rc: &mut ReplicaConfig) -> std::result::Result<(), String> {
    rc.host = Some(host);
    if !u.username().is_empty() {
        rc.user = Some(percent_decode(u.username())?);
    }
    if let Some(p) = u.password() {
        rc.password =
            Some(percent_decode(p).map_err(|_| "invalid escape in the password".to_string())?);
    }
    // Raw query (not form-decoded: a key's base64 may hold '+').
    for pair in u.query().unwrap_or_default().split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "host-key" | "hostKey" => rc.host_key = Some(percent_decode(v)?),
            "strict-host-key-checking" => rc.strict_host_key_checking = Some(truthy(v)),
            _ => {}
        }
    }
    Ok(())
}

/// Why [`parse_http_endpoint`] refused an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// Not a URL.
    #[error("{0}")]
    Parse(#[from] url::ParseError),
    /// A scheme other than `http` or `https`.
    #[error("unsupported scheme {0:?} (use http or https)")]
    Scheme(String),
    /// No host.
    #[error("missing host")]
    MissingHost,
}

/// A backend's `endpoint` setting as a URL: `http` or `https`, with a host.
pub fn parse_http_endpoint(s: &str) -> std::result::Result<url::Url, EndpointError> {
    let url = url::Url::parse(s)?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(EndpointError::Scheme(url.scheme().to_string()));
    }
    if url.host_str().unwrap_or_default().is_empty() {
        return Err(EndpointError::MissingHost);
    }
    Ok(url)
}

/// A URL with any password replaced by `xxxxx`, safe to log.
pub fn redact_url(s: &str) -> String {
    match url::Url::parse(s) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("xxxxx"));
            u.to_string()
        }
        _ => s.to_string(),
    }
}

/// Decode `%XX` escapes as Go's `url.Parse` does: a `%` not followed by two hex digits is an
/// error (`invalid URL escape`), and so is a result that is not UTF-8. (The
/// `percent-encoding` crate decodes; it passes a bad escape through, so that is checked here.)
fn percent_decode(s: &str) -> std::result::Result<String, String> {
    for (i, _) in s.match_indices('%') {
        let escape = s.as_bytes().get(i + 1..i + 3);
        if !escape.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
            let end = s[i..].char_indices().nth(3).map_or(s.len(), |(n, _)| i + n);
            return Err(format!("invalid URL escape {:?}", &s[i..end]));
        }
    }
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|d| d.into_owned())
        .map_err(|_| format!("{s:?} decodes to invalid UTF-8"))
}

/// Split `HOST`, `HOST:PORT`, `[IPV6]` or `[IPV6]:PORT` into host (without brackets) and
/// port (as written, possibly empty), like Go's `net.SplitHostPort` with the port optional.
/// `None` for a malformed bracket and for more than one colon outside brackets (a bare IPv6
/// address: callers that accept one take the whole text as the host).
pub fn split_host_port(s: &str) -> Option<(&str, Option<&str>)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, tail) = rest.split_once(']')?;
        return match tail.strip_prefix(':') {
            Some(port) => Some((host, Some(port))),
            None if tail.is_empty() => Some((host, None)),
            None => None,
        };
    }
    match s.split_once(':') {
        Some((_, port)) if port.contains(':') => None,
        Some((host, port)) => Some((host, Some(port))),
        None => Some((s, None)),
    }
}

/// What an S3 URL host says: bucket, and for provider hosts the region and endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Host {
    /// Bucket name.
    pub bucket: String,
    /// Region, for provider hosts that carry one.
    pub region: Option<String>,
    /// Endpoint URL with scheme, for provider hosts.
    pub endpoint: Option<String>,
    /// Path-style addressing (every provider host; not plain AWS).
    pub force_path_style: bool,
}

/// Split `BUCKET.provider.host[:port]` like Litestream's `s3.ParseHost`.
pub fn parse_s3_host(s: &str) -> S3Host {
    let (host, port) = match split_host_port(s) {
        Some((h, Some(p))) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
            (h, Some(p))
        }
        _ => (s, None),
    };
    // `^(?:(.+)\.)?SUFFIX$` -> (bucket, captured middle)
    fn strip<'a>(host: &'a str, suffix: &str) -> Option<&'a str> {
        if host == suffix {
            return Some("");
        }
        host.strip_suffix(suffix)?.strip_suffix('.')
    }
    // `^(?:(.+)\.)?PREFIX([^.]+)SUFFIX$`
    fn strip_region<'a>(host: &'a str, prefix: &str, suffix: &str) -> Option<(&'a str, &'a str)> {
        let body = host.strip_suffix(suffix)?;
        let (head, region) = match body.rfind('.') {
            Some(i) => (&body[..i], &body[i + 1..]),
            None => ("", body),
        };
        if region.is_empty() {
            return None;
        }
        let head = if prefix.is_empty() {
            head
        } else if head == prefix.trim_end_matches('.') {
            ""
        } else {
            head.strip_suffix(prefix.trim_end_matches('.'))?
                .strip_suffix('.')?
        };
        Some((head, region))
    }
    let mut scheme = "https";
    let mut out = S3Host {
        bucket: String::new(),
        region: None,
        endpoint: None,
        force_path_style: true,
    };
    if let Some(b) = strip(host, "localhost") {
        out.bucket = b.to_string();
        out.region = Some("us-east-1".into());
        scheme = "http";
        out.endpoint = Some("localhost".into());
    } else if let Some((b, r)) = strip_region(host, "s3.", ".backblazeb2.com") {
        out.bucket = b.to_string();
        out.region = Some(r.to_string());
        out.endpoint = Some(format!("s3.{r}.backblazeb2.com"));
    } else if let Some(b) = strip(host, "s3.filebase.com") {
        out.bucket = b.to_string();
        out.endpoint = Some("s3.filebase.com".into());
    } else if let Some((b, r)) = strip_region(host, "", ".digitaloceanspaces.com") {
        out.bucket = b.to_string();
        out.region = Some(r.to_string());
        out.endpoint = Some(format!("{r}.digitaloceanspaces.com"));
    } else if let Some((b, r)) = strip_region(host, "s3.", ".scw.cloud") {
        out.bucket = b.to_string();
        out.region = Some(r.to_string());
        out.endpoint = Some(format!("s3.{r}.scw.cloud"));
    } else if let Some((b, r)) = strip_region(host, "", ".linodeobjects.com") {
        out.bucket = b.to_string();
        out.region = Some(r.to_string());
        out.endpoint = Some(format!("{r}.linodeobjects.com"));
    } else {
        out.bucket = host.to_string();
        out.force_path_style = false;
    }
    if let (Some(e), Some(p)) = (&out.endpoint, port) {
        out.endpoint = Some(format!("{e}:{p}"));
    }
    if let Some(e) = &out.endpoint {
        out.endpoint = Some(format!("{scheme}://{e}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_urls_are_errors_not_panics() {
        // Found by fuzz/replica_url: a scheme of `file` without `//` after it.
        let crash = b"file:/\xdd\xbe://b//b\0\0\0\0\0\0\0\x07Ad!ta/\0\0\0\0\xdd\xbe://b.l";
        let s = String::from_utf8_lossy(crash);
        assert!(parse_replica_url(&s).is_err());
        assert!(parse_replica_url("file:/x://y").is_err());
        assert!(parse_replica_url("file:///data/%x\u{e9}")
            .unwrap_err()
            .to_string()
            .contains("invalid URL escape"));
        assert!(parse_replica_url("sftp://u%ff@h/x").is_err());
        assert_eq!(
            parse_replica_url("FILE:///data/r").unwrap().path.as_deref(),
            Some("/data/r")
        );
    }

    #[test]
    fn file_urls_fold_host_into_path() {
        let rc = parse_replica_url("file:///tmp/x").expect("url");
        assert_eq!(rc.replica_type.as_deref(), Some("file"));
        assert_eq!(rc.path.as_deref(), Some("/tmp/x"));
        let rc = parse_replica_url("file://rel/x/").expect("url");
        assert_eq!(rc.path.as_deref(), Some("/rel/x"));
    }

    #[test]
    fn s3_provider_hosts() {
        let h = parse_s3_host("mybucket.localhost:9000");
        assert_eq!(h.bucket, "mybucket");
        assert_eq!(h.endpoint.as_deref(), Some("http://localhost:9000"));
        assert_eq!(h.region.as_deref(), Some("us-east-1"));
        assert!(h.force_path_style);
        let h = parse_s3_host("b.s3.us-west-002.backblazeb2.com");
        assert_eq!(
            (h.bucket.as_str(), h.region.as_deref()),
            ("b", Some("us-west-002"))
        );
        assert_eq!(
            h.endpoint.as_deref(),
            Some("https://s3.us-west-002.backblazeb2.com")
        );
        let h = parse_s3_host("b.s3.filebase.com");
        assert_eq!(h.endpoint.as_deref(), Some("https://s3.filebase.com"));
        let h = parse_s3_host("b.nyc3.digitaloceanspaces.com");
        assert_eq!(
            (h.bucket.as_str(), h.region.as_deref()),
            ("b", Some("nyc3"))
        );
        let h = parse_s3_host("b.s3.fr-par.scw.cloud");
        assert_eq!(h.endpoint.as_deref(), Some("https://s3.fr-par.scw.cloud"));
        let h = parse_s3_host("b.us-east-1.linodeobjects.com");
        assert_eq!(
            h.endpoint.as_deref(),
            Some("https://us-east-1.linodeobjects.com")
        );
        let h = parse_s3_host("plain-bucket");
        assert_eq!(h.bucket, "plain-bucket");
        assert!(!h.force_path_style);
        assert_eq!(h.endpoint, None);
    }

    #[test]
    fn s3_urls_with_query_parameters() {
        let rc = parse_replica_url("s3://bkt/app.sqlite?endpoint=http://127.0.0.1:9000&region=eu-west-1&forcePathStyle=true")
            .expect("url");
        assert_eq!(rc.bucket.as_deref(), Some("bkt"));
        assert_eq!(rc.path.as_deref(), Some("app.sqlite"));
        assert_eq!(rc.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(rc.region.as_deref(), Some("eu-west-1"));
        assert_eq!(rc.force_path_style, Some(true));
    }

    #[test]
    fn gcs_urls_in_both_spellings() {
        for scheme in ["gcs", "gs"] {
            let rc = parse_replica_url(&format!("{scheme}://bkt/db//path/")).expect("url");
            assert_eq!(rc.replica_type.as_deref(), Some("gcs"), "{scheme}");
            assert_eq!(rc.bucket.as_deref(), Some("bkt"));
            assert_eq!(rc.path.as_deref(), Some("db/path"));
        }
        let rc = parse_replica_url("gcs://bkt").expect("url");
        assert_eq!(rc.path.as_deref(), Some(""));
        let e = parse_replica_url("gcs:///db").expect_err("no bucket");
        assert!(
            e.to_string().contains("bucket required for gcs replica"),
            "{e}"
        );
    }

    #[test]
    fn abs_and_sftp_urls() {
        let rc = parse_replica_url("abs://acct@container/db/path").expect("url");
        assert_eq!(rc.account_name.as_deref(), Some("acct"));
        assert_eq!(rc.bucket.as_deref(), Some("container"));
        assert_eq!(rc.path.as_deref(), Some("db/path"));
        let rc = parse_replica_url("sftp://u:p%40ss@host:2022/abs/dir").expect("url");
        assert_eq!(rc.host.as_deref(), Some("host:2022"));
        assert_eq!(rc.user.as_deref(), Some("u"));
        assert_eq!(rc.password.as_deref(), Some("p@ss"));
        assert_eq!(rc.path.as_deref(), Some("/abs/dir"));
        assert!(!redact_url("sftp://u:secret@h/x").contains("secret"));
    }

    #[test]
    fn sftp_url_pins_host_key() {
        let rc = parse_replica_url(
            "sftp://u:p@h:2022/x?host-key=SHA256:ab+c/d&strict-host-key-checking=true",
        )
        .expect("url");
        assert_eq!(rc.host_key.as_deref(), Some("SHA256:ab+c/d"));
        assert_eq!(rc.strict_host_key_checking, Some(true));
        assert_eq!(rc.path.as_deref(), Some("/x"));
        let rc = parse_replica_url("sftp://u@h/x?host-key=ssh-ed25519%20AAAA").expect("url");
        assert_eq!(rc.host_key.as_deref(), Some("ssh-ed25519 AAAA"));
    }

    #[test]
    fn host_port_forms() {
        assert_eq!(split_host_port("h"), Some(("h", None)));
        assert_eq!(split_host_port("h:2022"), Some(("h", Some("2022"))));
        assert_eq!(split_host_port("h:"), Some(("h", Some(""))));
        assert_eq!(split_host_port("[::1]:2"), Some(("::1", Some("2"))));
        assert_eq!(split_host_port("[::1]"), Some(("::1", None)));
        assert_eq!(split_host_port("[::1]x"), None);
        assert_eq!(split_host_port("[::1"), None);
        assert_eq!(split_host_port("::1"), None);
    }

    #[test]
    fn percent_escapes_decode_as_go() {
        assert_eq!(percent_decode("a%20b%2Fc").as_deref(), Ok("a b/c"));
        assert!(percent_decode("a%2")
            .unwrap_err()
            .contains("invalid URL escape"));
        assert!(percent_decode("a%zz").unwrap_err().contains("\"%zz\""));
        assert!(percent_decode("%ff").unwrap_err().contains("invalid UTF-8"));
    }

    #[test]
    fn bad_urls() {
        assert!(is_url("s3://x"));
        assert!(!is_url("/data/app.db"));
        assert!(parse_replica_url("ftp://x/y").is_err());
        assert!(parse_replica_url("s3://").is_err());
    }
}
