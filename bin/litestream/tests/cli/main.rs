//! The integration tests of the `litestream` binary, in one test binary (every test binary
//! links the whole SDK set): one module per topic, [`common`] holds the shared helpers.
//! Run one module with e.g. `bash scripts/test.sh -p litestream-cli --test cli restore_cli::`.

mod common;

mod abs_cli;
mod age_cli;
mod compose_deploy;
mod fixtures_interop;
mod full_disk_cli;
mod gcs_cli;
mod hostile_cli;
mod image_shell;
mod logs_metrics;
mod ltx_backends_cli;
mod ltx_replicate_cli;
mod ltx_restore_cli;
mod ltx_write_cli;
mod metrics_limits_cli;
mod replicate_cli;
mod restore_cli;
mod restore_fsync_cli;
mod s3_cli;
mod s3_faults_cli;
mod sftp_cli;
mod sftp_host_keys_cli;
