//! `settlement:`: the columns of a courier's settlement sheets, read by
//! `waybill cod import`.
//!
//! ```yaml
//! settlement:
//!   tracking_number: "Tracking Number"
//!   amount: "Amount Paid"
//!   date: "Payment Date"
//!   reference: "CPR Number"
//!   fees: ["Delivery Charges", "GST"]
//! ```

use super::Compiler;
use crate::connector::definition::{ConnectorKind, SettlementSpec};
use crate::connector::raw::RawSettlement;
use crate::yaml::Located;

impl Compiler<'_> {
    pub(super) fn settlement(
        &mut self,
        node: Located<RawSettlement>,
        kind: Option<ConnectorKind>,
    ) -> Option<SettlementSpec> {
        let at = node.position();
        let raw = node.value;
        if kind == Some(ConnectorKind::Store) {
            self.report(
                at,
                "`settlement` describes a courier's COD settlement sheets; remove it from a store",
            );
            return None;
        }
        let before = self.diagnostics.count();
        let columns = [
            Some(&raw.tracking_number),
            Some(&raw.amount),
            raw.date.as_ref(),
            raw.reference.as_ref(),
        ]
        .into_iter()
        .flatten()
        .chain(raw.fees.iter());
        let mut seen: Vec<String> = Vec::new();
        for column in columns {
            let name = column.value.trim().to_lowercase();
            if name.is_empty() {
                self.report(
                    column.position(),
                    "a settlement column name cannot be empty",
                );
            } else if seen.contains(&name) {
                self.report(
                    column.position(),
                    format!("column `{}` is named twice in `settlement`", column.value),
                );
            }
            seen.push(name);
        }
        let delimiter = match &raw.delimiter {
            None => b',',
            Some(d) => match d.value.as_bytes() {
                [byte] if !matches!(byte, b'"' | b'\r' | b'\n') && byte.is_ascii() => *byte,
                _ => {
                    self.report(
                        d.position(),
                        "`delimiter` must be one ASCII character other than a quote or newline, e.g. \",\" or \";\"",
                    );
                    b','
                }
            },
        };
        if self.diagnostics.count() != before {
            return None;
        }
        Some(SettlementSpec {
            tracking_number: raw.tracking_number.value,
            amount: raw.amount.value,
            date: raw.date.map(|d| d.value),
            reference: raw.reference.map(|r| r.value),
            fees: raw.fees.into_iter().map(|f| f.value).collect(),
            delimiter,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::connector::Connector;

    fn compile(kind: &str, settlement: &str) -> Result<Connector, Vec<String>> {
        let dir = tempfile::tempdir().unwrap();
        let yaml = format!(
            "name: c\nkind: {kind}\nbase_url: http://unused.example.com\noperations:\n  book:\n    request: {{ method: POST, path: /b }}\n    success: \"response.status == 200\"\n    extract: {{ tracking_number: \"$.t\" }}\nsettlement:\n{settlement}"
        );
        Connector::parse(&yaml, &dir.path().join("c.yaml"), dir.path())
            .map_err(|d| d.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn columns_are_checked_where_written() {
        let good = compile(
            "courier",
            "  tracking_number: CN\n  amount: Paid\n  fees: [Fee, Tax]\n  delimiter: \";\"\n",
        )
        .unwrap();
        let spec = good.settlement.unwrap();
        assert_eq!((spec.fees.len(), spec.delimiter), (2, b';'));
        let errors = compile(
            "courier",
            "  tracking_number: CN\n  amount: \" cn \"\n  fees: [\"\"]\n  delimiter: \"ab\"\n",
        )
        .unwrap_err();
        assert!(
            errors
                .iter()
                .any(|e| e.contains(":11:") && e.contains("named twice")),
            "{errors:?}"
        );
        assert!(
            errors.iter().any(|e| e.contains("cannot be empty")),
            "{errors:?}"
        );
        assert!(
            errors
                .iter()
                .any(|e| e.contains(":13:") && e.contains("delimiter")),
            "{errors:?}"
        );
        let missing = compile("courier", "  amount: Paid\n").unwrap_err();
        assert!(
            missing.iter().any(|e| e.contains("tracking_number")),
            "{missing:?}"
        );
    }
}
