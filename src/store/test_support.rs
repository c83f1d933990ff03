//! PostgreSQL databases for the store's tests: each test creates its own on
//! the test server and drops it afterwards.

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

/// The server the PostgreSQL tests create their databases on.
fn postgres_server() -> String {
    std::env::var("WAYBILL_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// A fresh, empty database `waybill_test_<random>`: its name, its URL, and
/// the server's admin pool to drop it with ([`drop_database`]).
pub(crate) async fn create_database() -> (String, String, PgPool) {
    let server = postgres_server();
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(&format!("{server}/postgres"))
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {server} is required for these tests: {e}"));
    let name = format!("waybill_test_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await
        .unwrap();
    let url = format!("{server}/{name}");
    (name, url, admin)
}

pub(crate) async fn drop_database(name: &str, admin: &PgPool) {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(admin)
    .await
    .unwrap();
}
