//! Shared helpers for the end-to-end suites in `tests/`.
//!
//! The root package exists only to hold the cross-crate test suites; it ships
//! no code of its own.
