//! The embedded bus writer's path for the store's frequent changes: a
//! change and its audit row as one job in the writer's next group commit,
//! run through `rusqlite` on the writer's own connection.

use super::queries::INSERT_AUDIT;
use crate::store::StoreError;
use crate::store::sqlite::Jobs;
use rusqlite::types::Value;
use tokio::sync::oneshot;

/// A text value to bind, owned so that the writer's thread can bind it.
pub(super) fn text(value: &str) -> Value {
    Value::Text(value.to_string())
}

/// Runs `change` and, when it changed exactly one row, the audit row
/// `audit` (bound to [`INSERT_AUDIT`]), as one transaction in the embedded
/// bus writer's next group commit. `false` when it changed nothing, or when
/// the store has no writer (a SQLite store opened on its own, which only
/// tests do): the caller takes its general path.
pub(super) async fn change_in_one_go(
    jobs: Option<&Jobs>,
    change: &'static str,
    values: Vec<Value>,
    audit: Vec<Value>,
) -> Result<bool, StoreError> {
    let Some(jobs) = jobs else {
        return Ok(false);
    };
    // The writer reports a job's error as text; declining instead, with
    // the error sent back here, keeps it typed (and still undoes the job).
    let (report, failed) = oneshot::channel();
    let changed = jobs
        .run(
            move |conn| match change_and_audit(conn, change, &values, &audit) {
                Ok(changed) => Ok(changed),
                Err(error) => {
                    let _ = report.send(error);
                    Ok(None)
                }
            },
        )
        .await
        .map_err(StoreError::WriterBatch)?;
    if let Ok(error) = failed.await {
        return Err(StoreError::Writer(error));
    }
    Ok(changed.is_some())
}

fn change_and_audit(
    conn: &rusqlite::Connection,
    change: &str,
    values: &[Value],
    audit: &[Value],
) -> rusqlite::Result<Option<()>> {
    if execute_numbered(conn, change, values)? != 1 {
        return Ok(None);
    }
    execute_numbered(conn, INSERT_AUDIT, audit)?;
    Ok(Some(()))
}

/// Runs `sql` with `values` bound to `$1`, `$2`, … by name. The statements
/// are shared with `sqlx`, which numbers them for PostgreSQL; SQLite would
/// number them in order of first appearance.
fn execute_numbered(
    conn: &rusqlite::Connection,
    sql: &str,
    values: &[Value],
) -> rusqlite::Result<usize> {
    let mut statement = conn.prepare_cached(sql)?;
    for (number, value) in values.iter().enumerate() {
        let name = format!("${}", number + 1);
        let index = statement
            .parameter_index(&name)?
            .ok_or(rusqlite::Error::InvalidParameterName(name))?;
        statement.raw_bind_parameter(index, value)?;
    }
    statement.raw_execute()
}
