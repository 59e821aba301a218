//! S3 helpers shared by `s3_cli` and `s3_faults_cli`: `restore` in URL mode with the
//! credentials only in the environment (their private moto is `litestream_test_servers::Moto`).

use std::path::Path;
use std::process::Output;

/// `bin restore EXTRA -o out url` in URL mode with the credentials only in
/// `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (as the compose healthcheck runs), every other
/// credential source (`LITESTREAM_*` keys, `AWS_PROFILE`) and `AWS_CA_BUNDLE` removed
/// (aws-sdk-go-v2 in v0.5.17 breaks with it set).
pub fn restore_url(
    bin: &Path,
    url: &str,
    out: &Path,
    extra: &[&str],
    key: &str,
    secret: &str,
) -> Output {
    super::restore_url(
        bin,
        url,
        out,
        extra,
        &[
            ("LITESTREAM_ACCESS_KEY_ID", None),
            ("LITESTREAM_SECRET_ACCESS_KEY", None),
            ("AWS_CA_BUNDLE", None),
            ("AWS_PROFILE", None),
            ("AWS_ACCESS_KEY_ID", Some(key)),
            ("AWS_SECRET_ACCESS_KEY", Some(secret)),
        ],
    )
}
