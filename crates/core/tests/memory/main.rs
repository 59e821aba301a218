//! The memory-bound tests, in a test binary of their own: [`counting_alloc`] is this binary's
//! global allocator and every test here takes its `SERIAL` lock, so a measured heap peak is
//! never another test's.

mod counting_alloc;

// The engine tests' helpers, for `ltx_memory`.
#[path = "../engine/common.rs"]
mod common;
#[allow(dead_code)]
#[path = "../engine/ltx_common.rs"]
mod ltx_common;

mod age_memory;
mod ltx_memory;
mod restore_hostile;
