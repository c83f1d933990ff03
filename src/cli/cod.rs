//! `waybill cod`: the COD ledger — what each courier collected and paid,
//! settlement sheets imported, remittances disputed.
//!
//! ```sh
//! waybill cod report --from 2026-12-01 --to 2026-12-31 --courier postex --format csv
//! waybill cod import --courier postex settlement-2026-12-05.csv
//! waybill cod dispute shopify:shopify-main:820982911946154508:1 --reason "CPR shows 1200, not 1450"
//! ```
//!
//! A sheet is read whole first: a malformed line, a column missing, a
//! tracking number no shipment has, or a shipment with nothing owed stops
//! the import with every problem and its line, and nothing is recorded.

use super::output;
use crate::config::Config;
use crate::connector::settlement::read_sheet;
use crate::model::cod::Judgement;
use crate::model::{BookingKey, CodState};
use crate::store::cod::{CodFilter, RemitOutcome};
use crate::store::shipments::ShipmentRecord;
use anyhow::Context;
use clap::ValueEnum;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, Default, ValueEnum)]
pub enum Format {
    /// One line per record, fields separated by tabs, control characters escaped.
    #[default]
    Table,
    /// A header row, then one row per shipment and per total (column `row`).
    Csv,
    Json,
}

#[derive(Debug, clap::Subcommand)]
pub enum CodCommand {
    /// Every COD shipment with what was expected, collected and remitted,
    /// then totals per courier, state and currency.
    Report {
        /// Only shipments booked on or after this day (YYYY-MM-DD, UTC).
        #[arg(long)]
        from: Option<String>,
        /// Only shipments booked on or before this day (YYYY-MM-DD, UTC).
        #[arg(long)]
        to: Option<String>,
        /// Only this courier connector.
        #[arg(long)]
        courier: Option<String>,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Record a courier's settlement sheet (CSV, columns as the connector's
    /// `settlement:` declares): all of it, or nothing when any line is wrong.
    Import {
        /// The courier connector whose sheet it is.
        #[arg(long)]
        courier: String,
        file: PathBuf,
    },
    /// Mark a shipment's COD `disputed`, with why.
    Dispute {
        /// Booking key SOURCE:ACCOUNT:ORDER_ID:SEQUENCE.
        key: String,
        /// Why, as it will stand in the ledger and the audit trail.
        #[arg(long)]
        reason: String,
    },
}

/// Runs one `waybill cod` command on backends the caller opened and closes.
pub async fn run(
    config: &Config,
    backends: &crate::runtime::Backends,
    command: CodCommand,
) -> anyhow::Result<i32> {
    match command {
        CodCommand::Report {
            from,
            to,
            courier,
            format,
        } => {
            let filter = CodFilter {
                from: from.as_deref().map(|d| day(d, 0)).transpose()?,
                to: to.as_deref().map(|d| day(d, 1)).transpose()?,
                courier,
            };
            let found = backends.shipments.cod_shipments(&filter).await?;
            report(&found, format)?;
            Ok(0)
        }
        CodCommand::Import { courier, file } => import(config, backends, &courier, &file).await,
        CodCommand::Dispute { key, reason } => {
            let key: BookingKey = key.parse().map_err(|e: String| anyhow::anyhow!(e))?;
            let before = backends
                .shipments
                .dispute_cod(&key, &reason)
                .await?
                .with_context(|| format!("no shipment has booking key `{key}`"))?;
            if before == CodState::NotApplicable {
                anyhow::bail!("shipment {key} has no COD to dispute (it is prepaid)");
            }
            output::line(&format!(
                "disputed {} (was {})",
                output::escape(&key.to_string()),
                before.as_str()
            ))?;
            Ok(0)
        }
    }
}

/// `text` (YYYY-MM-DD) moved by `plus` days, as a store-timestamp prefix:
/// timestamps compare as text, so a day's start is the day itself.
fn day(text: &str, plus: i64) -> anyhow::Result<String> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let date = time::Date::parse(text.trim(), &format).map_err(|_| {
        anyhow::anyhow!("`{}` is not a day such as 2026-12-01", output::escape(text))
    })?;
    let moved = date
        .checked_add(time::Duration::days(plus))
        .context("day out of range")?;
    Ok(moved.format(&format)?)
}

const COLUMNS: [&str; 13] = [
    "key",
    "reference",
    "courier",
    "account",
    "tracking_number",
    "state",
    "currency",
    "expected",
    "collected_at",
    "remitted",
    "remitted_at",
    "remittance_ref",
    "fees",
];

/// One shipment of the report, every field as text (amounts decimal).
fn fields(s: &ShipmentRecord) -> [Option<String>; 13] {
    [
        Some(s.key.to_string()),
        s.reference.clone(),
        Some(s.courier.clone()),
        Some(s.courier_account.clone()),
        Some(s.tracking_number.clone()),
        Some(s.cod_state.as_str().to_string()),
        s.cod_currency.clone(),
        s.cod_amount.clone(),
        s.cod_collected_at.clone(),
        s.cod_remitted.clone(),
        s.cod_remitted_at.clone(),
        s.cod_remittance_ref.clone(),
        s.cod_fees.clone(),
    ]
}

/// Sums per (courier, state, currency).
#[derive(Debug, Default)]
struct Total {
    count: u64,
    expected: Decimal,
    remitted: Decimal,
    fees: Decimal,
}

fn totals(found: &[ShipmentRecord]) -> Totals {
    let amount = |a: &Option<String>| {
        a.as_deref()
            .and_then(|a| Decimal::from_str(a).ok())
            .unwrap_or_default()
    };
    let mut totals = Totals::new();
    for s in found {
        let currency = s.cod_currency.clone().unwrap_or_default();
        let total = totals
            .entry((s.courier.clone(), s.cod_state, currency))
            .or_default();
        total.count += 1;
        total.expected = total.expected.saturating_add(amount(&s.cod_amount));
        total.remitted = total.remitted.saturating_add(amount(&s.cod_remitted));
        total.fees = total.fees.saturating_add(amount(&s.cod_fees));
    }
    totals
}

type Totals = BTreeMap<(String, CodState, String), Total>;

fn report(found: &[ShipmentRecord], format: Format) -> anyhow::Result<()> {
    let totals = totals(found);
    match format {
        Format::Json => report_json(found, &totals),
        Format::Table => report_table(found, &totals),
        Format::Csv => report_csv(found, &totals),
    }
}

fn report_json(found: &[ShipmentRecord], totals: &Totals) -> anyhow::Result<()> {
    let shipments: Vec<Value> = found
        .iter()
        .map(|s| {
            let object: serde_json::Map<String, Value> = COLUMNS
                .iter()
                .zip(fields(s))
                .map(|(name, value)| (name.to_string(), json!(value)))
                .collect();
            Value::Object(object)
        })
        .collect();
    let totals: Vec<Value> = totals
        .iter()
        .map(|((courier, state, currency), t)| {
            json!({
                "courier": courier,
                "state": state,
                "currency": currency,
                "count": t.count,
                "expected": t.expected.to_string(),
                "remitted": t.remitted.to_string(),
                "fees": t.fees.to_string(),
            })
        })
        .collect();
    output::line(&json!({ "shipments": shipments, "totals": totals }).to_string())?;
    Ok(())
}

fn report_table(found: &[ShipmentRecord], totals: &Totals) -> anyhow::Result<()> {
    for s in found {
        let shown = fields(s).map(|f| f.unwrap_or_else(|| "-".into()));
        output::line(&output::record(shown.iter().map(String::as_str)))?;
    }
    for ((courier, state, currency), t) in totals {
        output::line(&output::record([
            "total",
            courier.as_str(),
            state.as_str(),
            currency.as_str(),
            t.count.to_string().as_str(),
            t.expected.to_string().as_str(),
            t.remitted.to_string().as_str(),
            t.fees.to_string().as_str(),
        ]))?;
    }
    Ok(())
}

fn report_csv(found: &[ShipmentRecord], totals: &Totals) -> anyhow::Result<()> {
    let header: Vec<&str> = std::iter::once("row")
        .chain(COLUMNS)
        .chain(["count"])
        .collect();
    output::line(&csv_line(header.iter().map(|h| Some(h.to_string()))))?;
    for s in found {
        let row = std::iter::once(Some("shipment".to_string()))
            .chain(fields(s))
            .chain([None]);
        output::line(&csv_line(row))?;
    }
    for ((courier, state, currency), t) in totals {
        let mut row: Vec<Option<String>> = vec![None; COLUMNS.len() + 2];
        row[0] = Some("total".into());
        row[3] = Some(courier.clone());
        row[6] = Some(state.as_str().into());
        row[7] = Some(currency.clone());
        row[8] = Some(t.expected.to_string());
        row[10] = Some(t.remitted.to_string());
        row[13] = Some(t.fees.to_string());
        row[14] = Some(t.count.to_string());
        output::line(&csv_line(row))?;
    }
    Ok(())
}

/// One CSV line: control characters escaped as everywhere on stdout, then
/// fields holding the delimiter or a quote quoted.
fn csv_line(fields: impl IntoIterator<Item = Option<String>>) -> String {
    fields
        .into_iter()
        .map(|field| {
            let text = field.unwrap_or_default();
            let escaped = output::escape(&text);
            if escaped.contains([',', '"']) {
                format!("\"{}\"", escaped.replace('"', "\"\""))
            } else {
                escaped.into_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

async fn import(
    config: &Config,
    backends: &crate::runtime::Backends,
    courier: &str,
    file: &std::path::Path,
) -> anyhow::Result<i32> {
    let connector = config
        .connectors
        .get(courier)
        .with_context(|| format!("no connector `{}` in this config", output::escape(courier)))?;
    let spec = connector.settlement.as_ref().with_context(|| {
        format!(
            "connector `{courier}` declares no `settlement:` columns, so its sheets cannot be read (see {})",
            connector.file.display()
        )
    })?;
    let shown = file.display().to_string();
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read {}", output::escape(&shown)))?;
    let rows = match read_sheet(spec, &text) {
        Ok(rows) => rows,
        Err(errors) => {
            return refuse(&shown, errors.iter().map(|e| (e.line, e.message.clone())));
        }
    };
    let (batch, lines) = match resolve(backends, courier, &rows).await? {
        Ok(resolved) => resolved,
        Err(problems) => return refuse(&shown, problems),
    };
    let outcomes = backends
        .shipments
        .record_remittances(&batch, config.cod.tolerance, "import")
        .await?;
    let line_of = |key: &BookingKey| lines.get(&key.to_string()).copied().unwrap_or(0);
    let refused: Vec<(usize, String)> = outcomes
        .iter()
        .filter_map(|o| match o {
            RemitOutcome::Refused { key, why } => Some((line_of(key), format!("{key}: {why}"))),
            _ => None,
        })
        .collect();
    if !refused.is_empty() {
        return refuse(&shown, refused);
    }
    for outcome in &outcomes {
        let (key, what) = described(outcome);
        output::line(&output::record([
            format!("line {}", line_of(key)).as_str(),
            key.to_string().as_str(),
            what.as_str(),
        ]))?;
    }
    output::line(&format!(
        "imported {} rows from {}",
        outcomes.len(),
        output::escape(&shown)
    ))?;
    Ok(0)
}

/// Each row's remittance against its shipment, and each shipment's line;
/// or every row whose tracking number is no one shipment of `courier`.
async fn resolve(
    backends: &crate::runtime::Backends,
    courier: &str,
    rows: &[crate::connector::settlement::SheetRow],
) -> anyhow::Result<Result<Resolved, Vec<(usize, String)>>> {
    let mut problems = Vec::new();
    let mut batch = Vec::with_capacity(rows.len());
    let mut lines: BTreeMap<String, usize> = BTreeMap::new();
    for row in rows {
        let found = backends
            .shipments
            .shipments_by_courier_tracking(courier, &row.tracking_number)
            .await?;
        match found.as_slice() {
            [one] => {
                lines.insert(one.key.to_string(), row.line);
                batch.push((one.key.clone(), row.remittance.clone()));
            }
            [] => problems.push((
                row.line,
                format!(
                    "no shipment of courier `{courier}` has tracking number `{}`",
                    row.tracking_number
                ),
            )),
            several => problems.push((
                row.line,
                format!(
                    "{} shipments of courier `{courier}` have tracking number `{}` (in different accounts)",
                    several.len(),
                    row.tracking_number
                ),
            )),
        }
    }
    Ok(if problems.is_empty() {
        Ok((batch, lines))
    } else {
        Err(problems)
    })
}

/// The remittances to record, and the sheet line of each shipment's key.
type Resolved = (
    Vec<(BookingKey, crate::model::cod::Remittance)>,
    BTreeMap<String, usize>,
);

/// What recording a row did, as the import prints it.
fn described(outcome: &RemitOutcome) -> (&BookingKey, String) {
    match outcome {
        RemitOutcome::Recorded {
            key,
            from,
            to,
            judgement,
        } => {
            let checked = match judgement {
                Judgement::Matched => "matched",
                Judgement::Short => "short of expected less fees",
                Judgement::Unchecked => "no amount",
            };
            (
                key,
                format!("{} -> {} ({checked})", from.as_str(), to.as_str()),
            )
        }
        RemitOutcome::Already { key, state } => {
            (key, format!("{} already, unchanged", state.as_str()))
        }
        RemitOutcome::Refused { key, why } => (key, why.clone()),
    }
}

/// Prints every problem as `FILE:LINE: message` on stderr; nothing was recorded.
fn refuse(file: &str, problems: impl IntoIterator<Item = (usize, String)>) -> anyhow::Result<i32> {
    let mut count = 0;
    for (line, message) in problems {
        count += 1;
        eprintln!(
            "{}:{line}: {}",
            output::escape(file),
            output::escape(&message)
        );
    }
    eprintln!("{count} problems; nothing was recorded");
    Ok(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_whole_and_checked() {
        assert_eq!(day("2026-12-31", 1).unwrap(), "2027-01-01");
        assert_eq!(day(" 2026-02-28 ", 0).unwrap(), "2026-02-28");
        for bad in ["2026-13-01", "yesterday", "2026-12-01T00:00:00Z", ""] {
            assert!(day(bad, 0).is_err(), "{bad}");
        }
    }

    #[test]
    fn csv_fields_are_quoted_and_terminal_safe() {
        let line = csv_line([
            Some("plain".to_string()),
            Some("a,b".to_string()),
            Some("say \"hi\"".to_string()),
            Some("\u{1b}[31mred\nline".to_string()),
            None,
        ]);
        assert_eq!(
            line,
            "plain,\"a,b\",\"say \"\"hi\"\"\",\\u{1b}[31mred\\nline,"
        );
    }
}
