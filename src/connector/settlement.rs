//! Courier settlement sheets: CSV files of what a courier paid per
//! shipment, read as the connector's `settlement:` declares, for
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
//!
//! The CSV is RFC 4180: fields may be quoted (`"…"`, a quote inside written
//! `""`), quoted fields may hold the delimiter and newlines, lines end in
//! LF or CRLF, a UTF-8 byte-order mark is skipped. Header names match
//! trimmed and case-insensitive. Blank lines are skipped. Every problem is
//! reported with its line, and a sheet with any problem yields no rows.

use super::definition::SettlementSpec;
use crate::model::cod::{Remittance, parse_amount};
use rust_decimal::Decimal;

/// One row of a sheet: the shipment it pays and what it says.
#[derive(Debug, Clone, PartialEq)]
pub struct SheetRow {
    /// The line the row starts on, 1-based (the header is line 1).
    pub line: usize,
    pub tracking_number: String,
    pub remittance: Remittance,
}

/// A problem at a line of the sheet.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct SheetError {
    pub line: usize,
    pub message: String,
}

/// Reads the whole sheet; every problem found, or every row.
pub fn read_sheet(spec: &SettlementSpec, text: &str) -> Result<Vec<SheetRow>, Vec<SheetError>> {
    let records = parse_csv(text, spec.delimiter).map_err(|e| vec![e])?;
    let mut records = records.into_iter();
    let Some((header_line, header)) = records.next() else {
        return Err(vec![SheetError {
            line: 1,
            message: "the sheet is empty: expected a header row".into(),
        }]);
    };
    let columns = Columns::find(spec, header_line, &header)?;
    let mut errors = Vec::new();
    let mut rows = Vec::new();
    for (line, fields) in records {
        if fields.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        if fields.len() != header.len() {
            let message = format!(
                "{} fields where the header has {}",
                fields.len(),
                header.len()
            );
            errors.push(SheetError { line, message });
            continue;
        }
        if let Some(row) = columns.row(spec, line, &fields, &mut errors) {
            rows.push(row);
        }
    }
    duplicates(&rows, &mut errors);
    if errors.is_empty() {
        Ok(rows)
    } else {
        errors.sort_by_key(|e| e.line);
        Err(errors)
    }
}

/// Where the declared columns are in the header.
struct Columns {
    tracking: usize,
    amount: usize,
    date: Option<usize>,
    reference: Option<usize>,
    fees: Vec<usize>,
}

impl Columns {
    /// Every declared column in `header`, or a problem for each one missing.
    fn find(
        spec: &SettlementSpec,
        line: usize,
        header: &[String],
    ) -> Result<Columns, Vec<SheetError>> {
        let mut errors = Vec::new();
        let mut column = |name: &str| -> usize {
            let wanted = name.trim().to_lowercase();
            match header
                .iter()
                .position(|h| h.trim().to_lowercase() == wanted)
            {
                Some(found) => found,
                None => {
                    errors.push(SheetError {
                        line,
                        message: format!(
                            "no column `{name}` in the header (it has: {}); the connector's `settlement:` names the columns",
                            header.join(", ")
                        ),
                    });
                    usize::MAX
                }
            }
        };
        let columns = Columns {
            tracking: column(&spec.tracking_number),
            amount: column(&spec.amount),
            date: spec.date.as_deref().map(&mut column),
            reference: spec.reference.as_deref().map(&mut column),
            fees: spec.fees.iter().map(|c| column(c)).collect(),
        };
        if errors.is_empty() {
            Ok(columns)
        } else {
            Err(errors)
        }
    }

    /// One data row, or `None` with its problems added to `errors`.
    fn row(
        &self,
        spec: &SettlementSpec,
        line: usize,
        fields: &[String],
        errors: &mut Vec<SheetError>,
    ) -> Option<SheetRow> {
        let cell = |i: usize| fields[i].trim().to_string();
        let optional = |i: Option<usize>| i.map(cell).filter(|v| !v.is_empty());
        let mut bad = |what: &str, message: String| {
            errors.push(SheetError {
                line,
                message: format!("`{what}`: {message}"),
            })
        };
        let number = cell(self.tracking);
        if number.is_empty() {
            bad(&spec.tracking_number, "empty".into());
            return None;
        }
        let paid = match parse_amount(&cell(self.amount)) {
            Ok(paid) if paid >= Decimal::ZERO => Some(paid),
            Ok(_) => {
                bad(&spec.amount, "a payment cannot be negative".into());
                None
            }
            Err(e) => {
                bad(&spec.amount, e);
                None
            }
        };
        let mut fees: Option<Decimal> = None;
        for (name, index) in spec.fees.iter().zip(&self.fees) {
            let Some(text) = optional(Some(*index)) else {
                continue;
            };
            match parse_amount(&text) {
                Ok(fee) if fee >= Decimal::ZERO => {
                    fees = Some(fees.unwrap_or(Decimal::ZERO).saturating_add(fee));
                }
                Ok(_) => bad(name, "a fee cannot be negative".into()),
                Err(e) => bad(name, e),
            }
        }
        Some(SheetRow {
            line,
            tracking_number: number,
            remittance: Remittance {
                amount: Some(paid?),
                at: optional(self.date),
                reference: optional(self.reference),
                fees,
            },
        })
    }
}

/// A shipment paid on two rows is a problem on the second.
fn duplicates(rows: &[SheetRow], errors: &mut Vec<SheetError>) {
    let mut seen: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for row in rows {
        if let Some(first) = seen.insert(row.tracking_number.as_str(), row.line) {
            errors.push(SheetError {
                line: row.line,
                message: format!(
                    "tracking number `{}` is paid twice (first on line {first}); one row per shipment",
                    row.tracking_number
                ),
            });
        }
    }
}

/// The records of an RFC 4180 text, each with the line it starts on.
fn parse_csv(text: &str, delimiter: u8) -> Result<Vec<(usize, Vec<String>)>, SheetError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let delimiter = char::from(delimiter);
    let mut records = Vec::new();
    let mut fields: Vec<String> = Vec::new();
    let mut field = String::new();
    let mut line = 1;
    let mut start = 1;
    let mut quoted = false;
    // Whether the field began with a quote, and whether its closing quote came.
    let mut was_quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                '\n' => {
                    line += 1;
                    field.push(c);
                }
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' if field.is_empty() && !was_quoted => {
                quoted = true;
                was_quoted = true;
            }
            '"' => {
                return Err(SheetError {
                    line,
                    message: "a quote inside an unquoted field, or text after a closing quote: quote the whole field and double the quotes in it".into(),
                });
            }
            c if c == delimiter => {
                fields.push(std::mem::take(&mut field));
                was_quoted = false;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                fields.push(std::mem::take(&mut field));
                records.push((start, std::mem::take(&mut fields)));
                was_quoted = false;
                line += 1;
                start = line;
            }
            _ if was_quoted => {
                return Err(SheetError {
                    line,
                    message: "text after a closing quote: quote the whole field".into(),
                });
            }
            _ => field.push(c),
        }
    }
    if quoted {
        return Err(SheetError {
            line: start,
            message: "a quoted field is never closed".into(),
        });
    }
    if !field.is_empty() || !fields.is_empty() || was_quoted {
        fields.push(field);
        records.push((start, fields));
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> SettlementSpec {
        SettlementSpec {
            tracking_number: "Tracking Number".into(),
            amount: "Amount Paid".into(),
            date: Some("Paid On".into()),
            reference: Some("Ref".into()),
            fees: vec!["Fee".into(), "Tax".into()],
            delimiter: b',',
        }
    }

    #[test]
    fn rows_are_read_by_header_name_with_quotes_and_crlf() {
        let text = "\u{feff}tracking number , Amount Paid,Paid On,Ref,Fee,Tax\r\n\
                    CX-1,\"1,470.00\",2026-12-05,\"CPR \"\"A\"\"\",20,10.00\r\n\
                    \r\n\
                    CX-2,900,,,,\n";
        let rows = read_sheet(&spec(), text).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].line, 2);
        assert_eq!(rows[0].tracking_number, "CX-1");
        assert_eq!(rows[0].remittance.amount.unwrap().to_string(), "1470.00");
        assert_eq!(rows[0].remittance.reference.as_deref(), Some("CPR \"A\""));
        assert_eq!(rows[0].remittance.fees.unwrap().to_string(), "30.00");
        assert_eq!(rows[1].line, 4);
        assert_eq!(rows[1].remittance.at, None);
        assert_eq!(rows[1].remittance.fees, None);
    }

    #[test]
    fn every_problem_is_reported_with_its_line_and_no_row_is_returned() {
        let text = "Tracking Number,Amount Paid,Paid On,Ref,Fee,Tax\n\
                    CX-1,abc,,,,\n\
                    CX-2,100\n\
                    ,100,,,,\n\
                    CX-3,-5,,,x,\n\
                    CX-4,10,,,,\n\
                    CX-4,10,,,,\n";
        let errors = read_sheet(&spec(), text).unwrap_err();
        let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, [2, 3, 4, 5, 5, 7], "{errors:#?}");
        assert!(
            errors[0].to_string().starts_with("line 2: `Amount Paid`"),
            "{}",
            errors[0]
        );
        assert!(
            errors[1]
                .message
                .contains("2 fields where the header has 6")
        );
        assert!(errors[5].message.contains("first on line 6"));
    }

    #[test]
    fn malformed_csv_and_missing_columns_are_clear() {
        let unclosed = read_sheet(&spec(), "Tracking Number,Amount Paid\n\"CX-1,10\n").unwrap_err();
        assert_eq!(unclosed[0].line, 2);
        assert!(unclosed[0].message.contains("never closed"));
        let stray = read_sheet(&spec(), "Tracking Number,Amount Paid\nCX\"1,10\n").unwrap_err();
        assert!(stray[0].message.contains("quote"), "{stray:?}");
        let after = read_sheet(&spec(), "a\n\"CX-1\"x,10\n").unwrap_err();
        assert_eq!(after[0].line, 2);
        let missing = read_sheet(&spec(), "Tracking,Amount Paid,Paid On,Ref,Fee\n").unwrap_err();
        let text: Vec<String> = missing.iter().map(ToString::to_string).collect();
        assert!(
            text.iter().any(|e| e.contains("`Tracking Number`")),
            "{text:?}"
        );
        assert!(text.iter().any(|e| e.contains("`Tax`")), "{text:?}");
        assert_eq!(read_sheet(&spec(), "").unwrap_err()[0].line, 1);
    }

    #[test]
    fn a_multiline_quoted_field_counts_its_lines() {
        let semi = SettlementSpec {
            delimiter: b';',
            date: None,
            reference: Some("Ref".into()),
            fees: Vec::new(),
            ..spec()
        };
        let text = "Tracking Number;Amount Paid;Ref\nCX-1;10;\"two\nlines\"\nCX-2;oops;\n";
        let errors = read_sheet(&semi, text).unwrap_err();
        assert_eq!(errors[0].line, 4, "{errors:?}");
    }
}
