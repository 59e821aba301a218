//! The memory-bound tests, in a test binary of their own: [`counting_alloc`] is this binary's
//! global allocator and every test here takes its `SERIAL` lock, so a measured heap peak is
//! never another test's.

mod counting_alloc;

mod age_memory;
mod restore_hostile;
