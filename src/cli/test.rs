//! `waybill test`: run every `mappings/**/*.test.yaml` beside the config.

use std::path::Path;

pub fn run(config_path: &Path) -> anyhow::Result<i32> {
    let base = config_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let report = crate::mapping::run_tests(base);
    super::output::line(&report.to_string())?;
    Ok(if report.failed() == 0 { 0 } else { 1 })
}
