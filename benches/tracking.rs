//! Tracking at scale, on loopback:
//!
//! - `--scenario due`: the time to find and lease one tick's due shipments
//!   (`sync.max_in_flight`, 32) with 10 k, 100 k and 1 M shipments stored,
//!   all of them due, and the process's RSS after each, on SQLite (and on
//!   PostgreSQL with `--postgres`, a fresh database on the server
//!   `WAYBILL_TEST_POSTGRES` names);
//! - `--scenario sync`: polls per second of a running waybill against a
//!   stub courier answering `track` after `--latency-ms` (0 and 200), with
//!   `--due` shipments due, against the aim 0.8 × min(in-flight ÷ latency,
//!   the connector's rate limit).
//!
//! ```sh
//! cargo bench --bench tracking -- --scenario due [--postgres]
//! cargo bench --bench tracking -- --scenario sync --latency-ms 200 --seconds 10
//! ```

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use support::*;
use waybill::store::ShipmentStore;
use waybill::store::shipments::DueLease;

#[tokio::main]
async fn main() {
    match text_arg("--scenario", "due").as_str() {
        "due" => due().await,
        "sync" => sync().await,
        other => panic!("--scenario is due or sync, not {other}"),
    }
}

/// Inserts `n` shipments of courier account `courier-main`, all due, in
/// one statement that works on SQLite and PostgreSQL alike.
const FILL: &str = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $1) \
     INSERT INTO shipments (booking_key, source, account, order_id, sequence, order_key, reference, courier, \
     courier_account, tracking_number, status, raw_status, booked_at, updated_at, next_poll_at) \
     SELECT 'shopify:shopify-main:' || CAST(i AS TEXT) || ':1', 'shopify', 'shopify-main', CAST(i AS TEXT), 1, \
     'shopify-main:' || CAST(i AS TEXT), '#' || CAST(i AS TEXT), 'benchex', 'courier-main', 'BX-' || CAST(i AS TEXT), \
     'in_transit', 'moving', $2, $2, $3 FROM n";

const BOOKED_AT: &str = "2026-12-01T00:00:00.000000Z";
const DUE_AT: &str = "2026-12-01T01:00:00.000000Z";

async fn fill_sqlite(url: &str, n: i64) {
    let pool = sqlx::SqlitePool::connect(url).await.expect("sqlite");
    sqlx::query(FILL)
        .bind(n)
        .bind(BOOKED_AT)
        .bind(DUE_AT)
        .execute(&pool)
        .await
        .expect("fill");
    pool.close().await;
}

async fn fill_postgres(url: &str, n: i64) {
    let pool = sqlx::PgPool::connect(url).await.expect("postgres");
    sqlx::query(FILL)
        .bind(n)
        .bind(BOOKED_AT)
        .bind(DUE_AT)
        .execute(&pool)
        .await
        .expect("fill");
    // What autovacuum would do soon after such a load: without statistics
    // the planner does not know the due index is the way in.
    sqlx::query("ANALYZE shipments")
        .execute(&pool)
        .await
        .expect("analyze");
    pool.close().await;
}

fn rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Leases `ticks` ticks of 32 in a row; the mean and worst time per tick.
async fn lease_ticks(store: &dyn ShipmentStore, ticks: usize) -> (Duration, Duration) {
    let mut total = Duration::ZERO;
    let mut worst = Duration::ZERO;
    for _ in 0..ticks {
        let started = Instant::now();
        let leased = store
            .lease_due(DueLease {
                now: "2026-12-02T00:00:00.000000Z",
                owner: "bench",
                until: "2026-12-02T00:05:00.000000Z",
                limit: 32,
            })
            .await
            .expect("lease");
        let took = started.elapsed();
        assert_eq!(leased.len(), 32, "every tick finds 32 due");
        total += took;
        worst = worst.max(took);
    }
    (total / ticks as u32, worst)
}

async fn due() {
    let postgres = std::env::args().any(|a| a == "--postgres");
    println!(
        "| stored and due | backend | fill | lease one tick (mean of 50) | worst | RSS after |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    for n in [10_000i64, 100_000, 1_000_000] {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("waybill.db").display()
        );
        measure(n, "SQLite", &url).await;
        if postgres {
            let backend = postgres_backend();
            let Backend::Kafka { store_url, .. } = &backend else {
                unreachable!("a PostgreSQL database")
            };
            measure(n, "PostgreSQL", store_url).await;
            drop_backend(&backend);
        }
    }
}

/// Fills the store at `url` with `n` due shipments and prints one row:
/// the fill's time, one tick's lease (mean and worst of 50) and RSS.
async fn measure(n: i64, label: &str, url: &str) {
    let store = waybill::store::sql::SqlStore::connect(url)
        .await
        .expect("store");
    let started = Instant::now();
    if url.starts_with("sqlite:") {
        fill_sqlite(url, n).await;
    } else {
        fill_postgres(url, n).await;
    }
    let fill = started.elapsed();
    let (mean, worst) = lease_ticks(&store, 50).await;
    println!(
        "| {n} | {label} | {:.1} s | {:.2} ms | {:.2} ms | {:.0} MB |",
        fill.as_secs_f64(),
        mean.as_secs_f64() * 1e3,
        worst.as_secs_f64() * 1e3,
        rss_mb()
    );
    store.close().await;
}

/// A fresh PostgreSQL database (the Kafka side is unused here).
fn postgres_backend() -> Backend {
    let server = std::env::var("WAYBILL_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    let server = server.trim_end_matches('/').to_string();
    let name = format!("waybill_bench_{}", uuid::Uuid::new_v4().simple());
    create_database_at(&server, &name);
    Backend::Kafka {
        brokers: String::new(),
        topic_prefix: String::new(),
        store_url: format!("{server}/{name}"),
    }
}

/// The stub courier: answers `GET /track/{cn}` after `latency`, counting.
async fn stub(latency: Duration, polls: Arc<AtomicU64>) -> String {
    use axum::routing::get;
    let app = axum::Router::new().route(
        "/track/{cn}",
        get(move || {
            let polls = polls.clone();
            async move {
                if !latency.is_zero() {
                    tokio::time::sleep(latency).await;
                }
                polls.fetch_add(1, Ordering::Relaxed);
                axum::Json(serde_json::json!({ "state": "moving" }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

/// A courier that only tracks, `rate` requests per second at most.
fn benchex(rate: u64) -> String {
    format!(
        "name: benchex\nkind: courier\ndescription: \"A stub courier for the sync benchmark\"\n\
         base_url: http://127.0.0.1:9\n\
         rate_limit: {{ per_account: {{ requests: {rate}, per: 1s }} }}\n\
         operations:\n  book:\n    request: {{ method: POST, path: /book, body: mappings/sandbox/book.yaml }}\n    \
         success: \"response.status == 200\"\n    extract: {{ tracking_number: \"$.tracking_number\" }}\n  \
         track:\n    request: {{ method: GET, path: \"/track/{{{{ tracking_number }}}}\" }}\n    \
         success: \"response.status == 200\"\n    extract: {{ status: \"$.state\" }}\n\
         statuses:\n  table: {{ \"moving\": in_transit }}\n"
    )
}

async fn sync() {
    let latency = Duration::from_millis(arg("--latency-ms", 0));
    let seconds = Duration::from_secs(arg("--seconds", 10));
    let due = arg("--due", 20_000) as i64;
    let rate = arg("--rate-limit", 400);
    let in_flight = arg("--in-flight", 32);
    let polls = Arc::new(AtomicU64::new(0));
    let base = stub(latency, polls.clone()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    write_config(
        dir.path(),
        &Backend::Embedded,
        port,
        &format!("{{ connector: benchex, base_url: \"{base}\" }}"),
        64,
    );
    std::fs::write(dir.path().join("connectors/benchex.yaml"), benchex(rate)).expect("connector");
    let config_path = dir.path().join("waybill.yaml");
    let text = std::fs::read_to_string(&config_path).expect("config");
    std::fs::write(
        &config_path,
        format!(
            "{text}sync: {{ interval: 1h, max_interval: 2h, max_age: 3650d, max_in_flight: {in_flight} }}\n"
        ),
    )
    .expect("config");
    // Migrate, then fill, before waybill starts.
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("data/waybill.db").display()
    );
    std::fs::create_dir_all(dir.path().join("data")).expect("data dir");
    let store = waybill::store::sql::SqlStore::connect(&url)
        .await
        .expect("store");
    store.close().await;
    fill_sqlite(&url, due).await;
    let (stop, task) = start_waybill(&config_path, Run::All).await;
    // The first tick is a second in; measure from the second poll on.
    let warm = Instant::now();
    while polls.load(Ordering::Relaxed) == 0 && warm.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let from = polls.load(Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(seconds).await;
    let done = polls.load(Ordering::Relaxed) - from;
    let took = started.elapsed().as_secs_f64();
    let _ = stop.send(());
    let _ = task.await;
    let per_second = done as f64 / took;
    let by_latency = if latency.is_zero() {
        f64::INFINITY
    } else {
        in_flight as f64 / latency.as_secs_f64()
    };
    let ceiling = by_latency.min(rate as f64);
    println!(
        "latency {} ms, max_in_flight {in_flight}, rate limit {rate}/s: {per_second:.0} polls/s, \
         ceiling {ceiling:.0}/s, ratio {:.2} (aim >= 0.80)",
        latency.as_millis(),
        per_second / ceiling
    );
}
