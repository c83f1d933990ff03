//! Pipeline stages as plain functions over an envelope, testable without I/O.

pub mod validate;
