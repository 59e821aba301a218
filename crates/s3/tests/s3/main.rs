//! The integration tests of `litestream-s3`, one module per topic (one test binary); [`common`]
//! holds the shared helpers. The request-counting test is in the `requests` binary (it reads
//! process-wide counters that the tests here would bump).

mod common;

mod conformance;
mod faults;
mod hostile_server;
