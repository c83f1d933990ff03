//! Sinks: where a pipeline's work leaves waybill.

pub mod book;
pub mod write_back;
