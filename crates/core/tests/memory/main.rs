//! The tests that measure process-wide state, in a test binary of their own: the heap
//! ([`counting_alloc`] is this binary's global allocator), the process's inotify instances and
//! its I/O counters.
//! Every test here takes the `SERIAL` lock, so a measured peak or count is never another test's.

mod counting_alloc;

// The engine tests' helpers, for `ltx_memory`.
#[path = "../engine/common.rs"]
mod common;
#[allow(dead_code)]
#[path = "../engine/ltx_common.rs"]
mod ltx_common;

mod age_memory;
mod engine_io;
mod engine_scale;
mod ltx_memory;
mod restore_hostile;
