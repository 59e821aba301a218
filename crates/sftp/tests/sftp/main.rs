//! The integration tests of `litestream-sftp`, one module per topic (one test binary);
//! [`common`] holds the shared helpers.

mod common;

mod sftp_fault;
mod sftp_hostile_server;
mod sftp_server;
