//! Placeholder.
pub struct TestReport;
pub struct CaseFailure;
pub fn run_tests() {}
