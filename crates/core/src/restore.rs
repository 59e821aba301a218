//! Restore (placeholder while being written).
