//! The integration tests of `litestream-core` (one test binary: every test binary links the
//! whole dependency set). One module per topic; [`common`] holds the shared helpers.
//! The memory-bound tests are in the `memory` binary (they replace the global allocator).

mod common;

mod conformance;
mod engine_crash;
mod engine_interop;
mod engine_lifecycle;
mod engine_locks;
mod engine_ltx;
mod engine_more;
mod engine_positions;
mod engine_snapshots;
mod ltx_common;
mod restore_synthetic;
