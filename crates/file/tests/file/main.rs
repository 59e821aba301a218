//! The integration tests of `litestream-file`, one module per topic (one test binary).

mod conformance;
mod write_object;
