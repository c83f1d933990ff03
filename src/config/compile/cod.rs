//! `cod:`: how the COD ledger judges remittances and how often collected
//! shipments' payments are asked about.
//!
//! ```yaml
//! cod: { tolerance: "1.00", payment_interval: 6h }
//! ```

use super::Compiler;
use crate::config::CodSettings;
use crate::config::raw::RawCod;
use crate::yaml::{self, Node};
use rust_decimal::Decimal;
use std::path::Path;
use std::str::FromStr;

impl Compiler<'_> {
    /// The `cod:` settings, defaults filled in, every problem reported.
    pub(super) fn cod(&mut self, file: &Path, node: Option<&Node>) -> CodSettings {
        let defaults = CodSettings::default();
        let Some(node) = node else {
            return defaults;
        };
        let mut errors = Vec::new();
        let raw = yaml::parse_lenient::<RawCod>(node, &mut errors);
        self.report_node_errors(file, errors);
        let Some(raw) = raw else {
            return defaults;
        };
        let tolerance = match &raw.tolerance {
            None => defaults.tolerance,
            Some(text) => match Decimal::from_str(text.value.trim()) {
                Ok(t) if t >= Decimal::ZERO => t,
                _ => {
                    self.report(
                        file,
                        text.position(),
                        format!(
                            "`tolerance` `{}` is not an amount of at least 0: write a decimal string such as \"1.00\"",
                            text.value
                        ),
                    );
                    defaults.tolerance
                }
            },
        };
        let payment_interval = match &raw.payment_interval {
            None => defaults.payment_interval,
            Some(d) if d.value.0.is_zero() => {
                self.report(
                    file,
                    d.position(),
                    "`payment_interval` must be longer than 0, e.g. `6h`",
                );
                defaults.payment_interval
            }
            Some(d) => d.value.0,
        };
        CodSettings {
            tolerance,
            payment_interval,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::compile::load_with;

    fn load(extra: &str) -> Result<crate::config::Config, Vec<crate::diagnostic::Diagnostic>> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("waybill.yaml");
        std::fs::write(&path, format!("pipelines: [p.yaml]\n{extra}")).unwrap();
        let pipeline = "name: p\ninput: { topic: dlq.p }\nsteps:\n  - trigger: \"true\"\n";
        std::fs::write(dir.path().join("p.yaml"), pipeline).unwrap();
        load_with(&path, &|_| None)
    }

    #[test]
    fn defaults_and_overrides() {
        let config = load("").unwrap();
        assert_eq!(config.cod.tolerance.to_string(), "1.00");
        assert_eq!(config.cod.payment_interval.as_secs(), 6 * 3600);
        let config = load("cod: { tolerance: \"0.50\", payment_interval: 30m }\n").unwrap();
        assert_eq!(config.cod.tolerance.to_string(), "0.50");
        assert_eq!(config.cod.payment_interval.as_secs(), 1800);
    }

    #[test]
    fn bad_values_are_reported_where_written() {
        let errors =
            load("cod:\n  tolerance: \"-1\"\n  payment_interval: 0s\n  grace: 1\n").unwrap_err();
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert!(
            text.iter()
                .any(|e| e.contains(":3:") && e.contains("tolerance")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|e| e.contains(":4:") && e.contains("payment_interval")),
            "{text:?}"
        );
        assert!(text.iter().any(|e| e.contains("grace")), "{text:?}");
    }
}
