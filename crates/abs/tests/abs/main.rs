//! The integration tests of `litestream-abs` against Azurite, one module per topic (one test
//! binary).

mod conformance;
mod interop;
