//! Shared helpers: a config tree in a temp dir that uses the shipped
//! connectors, mappings and pipelines, and waybill running in-process.
//!
//! The backends are chosen by `WAYBILL_TEST_BACKEND`: `embedded` (the
//! default: SQLite bus and store under the tree's data dir) or `kafka` (the
//! broker at `WAYBILL_TEST_KAFKA` with a topic prefix of the tree's own, and
//! a PostgreSQL database of its own, created on the server at
//! `WAYBILL_TEST_POSTGRES` and dropped with the tree). The same test code
//! runs on both.

use axum::Json;
use axum::extract::State;
use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use waybill::config::Config;
use waybill::connector::{Connector, WebhookSpec};
use waybill::runtime::Backends;
use waybill::sources::{delivery, webhook};

pub const SECRET: &str = "test-secret";

/// The server the per-tree databases are created on, unless
/// `WAYBILL_TEST_POSTGRES` names another.
const DEFAULT_POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The bus and store the integration tests run on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    Embedded,
    /// Kafka bus at these brokers, PostgreSQL store.
    Kafka {
        brokers: String,
    },
}

/// The backend `WAYBILL_TEST_BACKEND` asks for. Asking for Kafka without a
/// broker fails the test rather than skipping it, so a CI run can never
/// pass without having exercised Kafka.
pub fn backend() -> Backend {
    match std::env::var("WAYBILL_TEST_BACKEND").as_deref() {
        Err(_) | Ok("") | Ok("embedded") => Backend::Embedded,
        Ok("kafka") => match std::env::var("WAYBILL_TEST_KAFKA") {
            Ok(brokers) if !brokers.trim().is_empty() => Backend::Kafka { brokers },
            _ => panic!(
                "WAYBILL_TEST_BACKEND=kafka needs WAYBILL_TEST_KAFKA=host:port \
                 (scripts/kafka-broker.sh start prints one; scripts/test.sh does it all)"
            ),
        },
        Ok(other) => panic!("WAYBILL_TEST_BACKEND must be `embedded` or `kafka`, not `{other}`"),
    }
}

/// The PostgreSQL server that per-tree databases are created on, as a URL
/// of its `postgres` database. `WAYBILL_TEST_POSTGRES` may name the server
/// alone (`postgres://postgres@127.0.0.1:5432`), as the store's own tests
/// take it, or a database on it.
pub fn postgres_server() -> String {
    let given =
        std::env::var("WAYBILL_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_POSTGRES.to_string());
    format!("{}/postgres", server_base(&given))
}

/// `postgres://user@host:port` of a server URL with or without a database.
fn server_base(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url[after_scheme..].find('/') {
        Some(i) => &url[..after_scheme + i],
        None => url,
    }
}

/// A PostgreSQL database of one test's own, dropped (best effort) with it.
pub struct Database {
    pub name: String,
    pub url: String,
}

impl Database {
    pub fn create() -> Database {
        let name = format!("waybill_it_{}", uuid::Uuid::new_v4().simple());
        let server = postgres_server();
        let url = format!("{}/{name}", server_base(&server));
        if let Err(e) = admin(&server, &format!("CREATE DATABASE {name}")) {
            panic!("cannot create database {name} on {server}: {e}");
        }
        Database { name, url }
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        // FORCE: a waybill process killed by the test may leave sessions.
        let drop = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        if let Err(e) = admin(&postgres_server(), &drop) {
            eprintln!("could not drop test database {}: {e}", self.name);
        }
    }
}

/// Runs one statement on `server`, on a thread of its own so it works from
/// synchronous code inside a test's runtime as well as outside one.
fn admin(server: &str, statement: &str) -> Result<(), String> {
    use sqlx::Connection;
    let server = server.to_string();
    let statement = statement.to_string();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(async {
            let mut conn = sqlx::PgConnection::connect(&server)
                .await
                .map_err(|e| e.to_string())?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
                .execute(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            conn.close().await.map_err(|e| e.to_string())
        })
    })
    .join()
    .map_err(|_| "the database thread panicked".to_string())?
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The shipped Shopify connector's webhook rules: what the tests sign by.
pub fn shopify_webhook() -> &'static WebhookSpec {
    static SPEC: std::sync::LazyLock<WebhookSpec> = std::sync::LazyLock::new(|| {
        let connector = Connector::load(&repo().join("connectors/shopify.yaml"))
            .unwrap_or_else(|d| panic!("the shipped shopify connector loads: {d:#?}"));
        connector
            .webhook
            .expect("shopify declares its webhook rules")
    });
    &SPEC
}

/// The signature Shopify would send with `body`, keyed with `secret`.
pub fn shopify_sign(secret: &[u8], body: &[u8]) -> String {
    let rule = shopify_webhook().signature.as_ref().expect("shopify signs");
    webhook::sign(rule, secret, body)
}

/// Headers of a Shopify delivery signed with the test secret.
pub fn shopify_headers(body: &[u8], topic: &str, webhook_id: &str) -> Vec<(String, String)> {
    delivery::headers(
        shopify_webhook(),
        SECRET.as_bytes(),
        body,
        topic,
        webhook_id,
    )
}

pub fn sample(name: &str) -> Vec<u8> {
    std::fs::read(repo().join("samples/shopify").join(name)).expect("sample order")
}

/// A config tree beside the shipped connectors, mappings and pipelines.
pub struct ConfigDir {
    pub dir: tempfile::TempDir,
    /// The Kafka topic prefix of this tree (`None` on the embedded backend).
    pub topic_prefix: Option<String>,
    /// Held only to be dropped after `dir`: the tree's PostgreSQL
    /// database, on Kafka.
    _database: Option<Database>,
}

impl ConfigDir {
    /// `courier` is the YAML of account `courier-main`.
    pub fn new(courier: &str) -> ConfigDir {
        Self::with_extra(courier, "")
    }

    pub fn with_extra(courier: &str, extra_top_level: &str) -> ConfigDir {
        Self::on(backend(), courier, extra_top_level)
    }

    /// A tree on the given backend, whatever `WAYBILL_TEST_BACKEND` says.
    pub fn on(backend: Backend, courier: &str, extra_top_level: &str) -> ConfigDir {
        let dir = tempfile::tempdir().expect("tempdir");
        for sub in ["connectors", "mappings", "pipelines"] {
            copy_dir(&repo().join(sub), &dir.path().join(sub));
        }
        let (backends, topic_prefix, database) = match backend {
            Backend::Embedded => ("bus: { kind: embedded }\n".to_string(), None, None),
            Backend::Kafka { brokers } => {
                let prefix = format!("it-{}.", uuid::Uuid::new_v4().simple());
                let database = Database::create();
                let yaml = format!(
                    "bus: {{ kind: kafka, brokers: \"{brokers}\", topic_prefix: \"{prefix}\", \
                     properties: {{ session.timeout.ms: \"6000\" }} }}\n\
                     store: {{ url: \"{}\" }}\n",
                    database.url
                );
                (yaml, Some(prefix), Some(database))
            }
        };
        let yaml = format!(
            "data_dir: ./data\n\
             {backends}\
             http: {{ listen: \"127.0.0.1:0\" }}\n\
             accounts:\n  \
               shopify-main: {{ connector: shopify, credentials: {{ webhook_secret: \"{SECRET}\" }} }}\n  \
               courier-main: {courier}\n\
             pipelines: [ \"pipelines/*.yaml\" ]\n{extra_top_level}"
        );
        std::fs::write(dir.path().join("waybill.yaml"), yaml).expect("write config");
        ConfigDir {
            dir,
            topic_prefix,
            _database: database,
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("waybill.yaml")
    }

    /// Rewrites a file of the tree.
    pub fn edit(&self, relative: &str, f: impl FnOnce(String) -> String) {
        let path = self.dir.path().join(relative);
        let text = std::fs::read_to_string(&path).expect("read");
        std::fs::write(&path, f(text)).expect("write");
    }

    pub fn load(&self) -> Config {
        match waybill::config::load(&self.path()) {
            Ok(c) => c,
            Err(d) => panic!("config does not load: {d:#?}"),
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

/// waybill running in-process on a loopback port.
pub struct App {
    pub addr: std::net::SocketAddr,
    pub backends: Backends,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    pub http: reqwest::Client,
}

impl App {
    pub async fn start(dir: &ConfigDir) -> App {
        let config = Arc::new(dir.load());
        let backends = waybill::runtime::open_backends(&config)
            .await
            .expect("open backends");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn({
            let config = config.clone();
            let backends = backends.clone();
            async move {
                waybill::runtime::run_with(config, backends, listener, async move {
                    let _ = stopped.await;
                })
                .await
                .expect("waybill runs");
            }
        });
        App {
            addr,
            backends,
            stop: Some(stop),
            task: Some(task),
            http: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Posts a Shopify webhook signed with the test secret.
    pub async fn shopify(&self, body: &[u8], topic: &str, webhook_id: &str) -> (u16, String) {
        let headers = shopify_headers(body, topic, webhook_id);
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        self.shopify_raw("shopify-main", body, &headers).await
    }

    pub async fn shopify_raw(
        &self,
        account: &str,
        body: &[u8],
        headers: &[(&str, &str)],
    ) -> (u16, String) {
        let mut request = self
            .http
            .post(self.url(&delivery::path(shopify_webhook(), account)))
            .body(body.to_vec());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("send webhook");
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    }

    pub async fn metrics(&self) -> String {
        self.http
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("waybill stopped cleanly");
        }
    }
}

/// Polls `check` until it returns `Some`, or panics after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if started.elapsed() > limit {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sets a JSON order's fields for a test case.
pub fn order_with(sample_name: &str, edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let mut order: serde_json::Value = serde_json::from_slice(&sample(sample_name)).expect("json");
    edit(&mut order);
    serde_json::to_vec(&order).expect("json")
}

/// All dead letters of a pipeline.
pub async fn dead_letters(app: &App, pipeline: &str) -> Vec<waybill::model::Record> {
    app.backends
        .bus
        .read(&format!("dlq.{pipeline}"), 0, 10_000)
        .await
        .unwrap_or_default()
}

/// The dead letters of `pipeline` once there is at least one.
pub async fn first_dead_letters(app: &App, pipeline: &str) -> Vec<waybill::model::Record> {
    eventually(Duration::from_secs(60), "a dead letter", || async {
        let letters = dead_letters(app, pipeline).await;
        (!letters.is_empty()).then_some(letters)
    })
    .await
}

/// PostEx's success answer.
pub fn postex_ok(tracking: &str) -> serde_json::Value {
    serde_json::json!({
        "statusCode": "200",
        "statusMessage": "ORDER HAS BEEN CREATED",
        "dist": { "trackingNumber": tracking, "orderStatus": "UnBooked", "orderDate": "2026-11-22 10:00:00" }
    })
}

/// A courier answering the sandbox connector's booking requests, counting
/// every request per order reference.
pub struct CountingCourier {
    pub url: String,
    counts: Arc<Mutex<HashMap<String, u32>>>,
}

impl CountingCourier {
    pub async fn start() -> CountingCourier {
        type Counts = Arc<Mutex<HashMap<String, u32>>>;
        async fn book(
            State(counts): State<Counts>,
            Json(shipment): Json<serde_json::Value>,
        ) -> Json<serde_json::Value> {
            let reference = shipment["reference"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            *counts
                .lock()
                .expect("lock")
                .entry(reference.clone())
                .or_default() += 1;
            // Courier APIs are slow; this keeps several requests in flight.
            tokio::time::sleep(Duration::from_millis(20)).await;
            Json(serde_json::json!({
                "tracking_number": format!("STUB-{reference}"),
                "reference": reference
            }))
        }
        let counts: Counts = Arc::default();
        let app = axum::Router::new()
            .route("/book", axum::routing::post(book))
            .with_state(counts.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        CountingCourier {
            url: format!("http://{addr}"),
            counts,
        }
    }

    /// The YAML of a `courier-main` account booking here.
    pub fn account(&self) -> String {
        format!("{{ connector: sandbox, base_url: \"{}\" }}", self.url)
    }

    /// Booking requests received so far, per reference.
    pub fn counts(&self) -> HashMap<String, u32> {
        self.counts.lock().expect("lock").clone()
    }
}

/// A COD order of its own (id and name from `tag` and `i`), and its reference.
pub fn numbered_order(tag: &str, i: usize) -> (String, Vec<u8>) {
    let reference = format!("#{tag}{i}");
    let body = order_with("order-cod.json", |o| {
        o["id"] = serde_json::json!(7_100_000_000_000_000_000u64 + i as u64);
        o["name"] = serde_json::json!(reference);
    });
    (reference, body)
}

/// Posts a signed Shopify webhook to `base` (`http://host:port`), returning
/// the status (0 when no answer came within 10 s) and how long it took.
pub async fn post_order(
    http: &reqwest::Client,
    base: &str,
    body: &[u8],
    topic: &str,
    webhook_id: &str,
) -> (u16, Duration) {
    let headers = shopify_headers(body, topic, webhook_id);
    let started = Instant::now();
    let mut request = http.post(format!(
        "{base}{}",
        delivery::path(shopify_webhook(), "shopify-main")
    ));
    for (name, value) in &headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let response = request
        .body(body.to_vec())
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    let status = response.map(|r| r.status().as_u16()).unwrap_or(0);
    (status, started.elapsed())
}

/// A port free on loopback right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}

/// A `waybill run` process, killed when dropped so a failing test leaves
/// none behind.
pub struct Process(pub std::process::Child);

impl Process {
    /// Starts `waybill run` on `config`, its log appended to `log`.
    pub fn spawn(config: &Path, log: &Path) -> Process {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("log file");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_waybill"))
            .arg("run")
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn waybill");
        Process(child)
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        self.0.kill().expect("kill -9");
        let _ = self.0.wait();
    }

    /// Stops it cleanly (SIGTERM) and waits.
    pub fn terminate(mut self) {
        // `kill` is the portable way to send SIGTERM.
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status();
        let _ = self.0.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until the waybill at `base` answers `/healthz`.
pub async fn wait_healthy(http: &reqwest::Client, base: &str) {
    eventually(Duration::from_secs(30), "waybill to listen", || async {
        http.get(format!("{base}/healthz"))
            .send()
            .await
            .ok()
            .filter(|r| r.status().is_success())
            .map(|_| ())
    })
    .await;
}

/// Every shipment of `app`'s store (up to 1,000), most recently changed
/// first; `None` while the store cannot answer.
pub async fn all_shipments(app: &App) -> Option<Vec<waybill::store::shipments::ShipmentRecord>> {
    app.backends
        .shipments
        .shipments(&waybill::store::shipments::ShipmentFilter {
            limit: 1000,
            ..Default::default()
        })
        .await
        .ok()
}

/// A PostEx courier account on `base_url` (a `wiremock` server's URI).
pub fn postex_at(base_url: &str) -> String {
    format!(
        "{{ connector: postex, credentials: {{ token: \"tok-secret\" }}, base_url: \"{base_url}\" }}"
    )
}

/// Runs `waybill ARGS --config <the tree>`, asserting it succeeds; its stdout.
pub fn waybill_cli(dir: &ConfigDir, args: &[&str]) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_waybill"))
        .args(args)
        .arg("--config")
        .arg(dir.path())
        .output()
        .expect("run waybill");
    assert!(output.status.success(), "waybill {args:?}: {output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs `waybill ARGS --config <the tree>` off the async runtime, whatever
/// its exit: the exit code, stdout and stderr.
pub async fn waybill_cli_result(dir: &ConfigDir, args: &[&str]) -> (i32, String, String) {
    let config = dir.path();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_waybill"))
            .args(&args)
            .arg("--config")
            .arg(&config)
            .output()
            .expect("run waybill");
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    })
    .await
    .expect("join")
}
