//! Sinks: where a pipeline's work leaves waybill.

pub mod book;
pub mod cancel;
pub mod notify;
pub mod write_back;
