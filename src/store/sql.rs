//! SQL store for SQLite and PostgreSQL through `sqlx`.
