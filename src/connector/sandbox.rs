//! The `sandbox` courier, served by waybill itself under `/sandbox/…`, so the
//! whole loop can be seen on a fresh machine without a courier account.
//!
//! ```yaml
//! accounts:
//!   courier-main: { connector: sandbox }
//! ```
