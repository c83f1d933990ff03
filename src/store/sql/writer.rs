//! The embedded bus writer's path for the store's frequent changes: a
//! change and its audit row as one job in the writer's next group commit,
//! run through `rusqlite` on the writer's own connection.

use super::queries::INSERT_AUDIT;
use crate::store::StoreError;
use crate::store::sqlite::Jobs;
use rusqlite::ToSql;

/// A value bound to a statement that the bus writer runs.
pub(super) type Param<'a> = dyn ToSql + Sync + 'a;

/// Runs `change` and, when it changed exactly one row, the audit row
/// `audit` (bound to [`INSERT_AUDIT`]), as one transaction in the embedded
/// bus writer's next group commit. `false` when it changed nothing, or when
/// the store has no writer (a SQLite store opened on its own, which only
/// tests do): the caller takes its general path.
pub(super) async fn change_in_one_go(
    jobs: Option<&Jobs>,
    change: &'static str,
    values: &[&Param<'_>],
    audit: &[&Param<'_>],
) -> Result<bool, StoreError> {
    let Some(jobs) = jobs else {
        return Ok(false);
    };
    let (values, audit) = (owned(values)?, owned(audit)?);
    let changed = jobs
        .run(move |conn| change_and_audit(conn, change, &values, &audit))
        .await
        .map_err(StoreError::Database)?;
    Ok(changed.is_some())
}

fn change_and_audit<P: ToSql>(
    conn: &rusqlite::Connection,
    change: &str,
    values: &[P],
    audit: &[P],
) -> rusqlite::Result<Option<()>> {
    if execute_numbered(conn, change, values)? != 1 {
        return Ok(None);
    }
    execute_numbered(conn, INSERT_AUDIT, audit)?;
    Ok(Some(()))
}

/// `values` as owned SQLite values, to be bound on another thread.
fn owned(values: &[&Param<'_>]) -> Result<Vec<rusqlite::types::Value>, StoreError> {
    use rusqlite::types::{ToSqlOutput, Value, ValueRef};
    let unsupported = || StoreError::Database("a value SQLite cannot hold".into());
    values
        .iter()
        .map(|value| match value.to_sql() {
            Ok(ToSqlOutput::Borrowed(borrowed)) => Ok(match borrowed {
                ValueRef::Null => Value::Null,
                ValueRef::Integer(i) => Value::Integer(i),
                ValueRef::Real(f) => Value::Real(f),
                ValueRef::Text(text) => Value::Text(
                    std::str::from_utf8(text)
                        .map_err(|_| unsupported())?
                        .to_string(),
                ),
                ValueRef::Blob(blob) => Value::Blob(blob.to_vec()),
            }),
            Ok(ToSqlOutput::Owned(owned)) => Ok(owned),
            Ok(_) => Err(unsupported()),
            Err(e) => Err(StoreError::Database(e.to_string())),
        })
        .collect()
}

/// Runs `sql` with `values` bound to `$1`, `$2`, … by name. The statements
/// are shared with `sqlx`, which numbers them for PostgreSQL; SQLite would
/// number them in order of first appearance.
fn execute_numbered<P: ToSql>(
    conn: &rusqlite::Connection,
    sql: &str,
    values: &[P],
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
