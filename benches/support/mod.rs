//! Shared parts of the load harnesses: a config tree with the shipped
//! connectors, mappings and pipelines, waybill in-process, and a bounded
//! closed-loop HTTP load generator on loopback.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The same allocator as the `waybill` binary, so the harness measures what ships.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub const SECRET: &str = "bench-secret";

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The bus and store a harness runs waybill on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// The default: SQLite bus and store under the tree's data directory.
    Embedded,
    /// Kafka at `brokers` with its own topic prefix, and a PostgreSQL
    /// database of its own at `store_url`.
    Kafka {
        brokers: String,
        topic_prefix: String,
        store_url: String,
    },
}

impl Backend {
    pub fn label(&self) -> &'static str {
        match self {
            Backend::Embedded => "embedded bus and store",
            Backend::Kafka { .. } => "Kafka bus, PostgreSQL store",
        }
    }

    fn yaml(&self) -> String {
        match self {
            Backend::Embedded => "bus: { kind: embedded }\n".into(),
            Backend::Kafka {
                brokers,
                topic_prefix,
                store_url,
            } => format!(
                "bus: {{ kind: kafka, brokers: \"{brokers}\", topic_prefix: \"{topic_prefix}\" }}\n\
                 store: {{ url: \"{store_url}\" }}\n"
            ),
        }
    }
}

/// The Kafka + PostgreSQL backend when `--kafka HOST:PORT` names a broker
/// (`scripts/kafka-broker.sh start` prints one): fresh topics under a prefix
/// of their own, and a fresh database on the server `WAYBILL_TEST_POSTGRES`
/// names (default `postgres://postgres@127.0.0.1:5432`).
pub fn kafka_backend() -> Option<Backend> {
    let args: Vec<String> = std::env::args().collect();
    let brokers = args
        .iter()
        .position(|a| a == "--kafka")
        .and_then(|i| args.get(i + 1))?
        .clone();
    let server = std::env::var("WAYBILL_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    let server = server.trim_end_matches('/');
    let run = uuid::Uuid::new_v4().simple().to_string();
    let database = format!("waybill_bench_{run}");
    create_database(&format!("{server}/postgres"), &database);
    Some(Backend::Kafka {
        brokers,
        topic_prefix: format!("bench-{run}."),
        store_url: format!("{server}/{database}"),
    })
}

/// Drops the database a Kafka backend was given; the topics stay (the test
/// broker keeps them in memory only).
pub fn drop_backend(backend: &Backend) {
    if let Backend::Kafka { store_url, .. } = backend
        && let Some((server, name)) = store_url.rsplit_once('/')
    {
        admin(
            &format!("{server}/postgres"),
            format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        );
    }
}

fn create_database(admin_url: &str, name: &str) {
    admin(admin_url, format!("CREATE DATABASE {name}"));
}

/// Creates database `name` on the PostgreSQL `server` (`postgres://host:port`).
#[allow(dead_code)]
pub fn create_database_at(server: &str, name: &str) {
    create_database(&format!("{server}/postgres"), name);
}

/// Runs one statement on a thread of its own, outside the harness's runtime.
fn admin(admin_url: &str, statement: String) {
    use sqlx::Connection;
    let admin_url = admin_url.to_string();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let mut conn = sqlx::PgConnection::connect(&admin_url)
                .await
                .unwrap_or_else(|e| panic!("PostgreSQL at {admin_url}: {e}"));
            sqlx::raw_sql(sqlx::AssertSqlSafe(statement.clone()))
                .execute(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("{statement}: {e}"));
        })
    })
    .join()
    .expect("database thread");
}

/// Writes a config tree into `dir` with the shipped pipelines.
pub fn write_config(dir: &Path, backend: &Backend, port: u16, courier: &str, max_in_flight: usize) {
    for sub in ["connectors", "mappings", "pipelines"] {
        copy_dir(&repo().join(sub), &dir.join(sub));
    }
    let pipeline = dir.join("pipelines/shopify-orders.yaml");
    let text = std::fs::read_to_string(&pipeline).expect("pipeline");
    let text: String = text
        .lines()
        .filter(|l| !l.starts_with("max_in_flight:"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&pipeline, format!("{text}max_in_flight: {max_in_flight}\n"))
        .expect("write pipeline");
    let yaml = format!(
        "data_dir: ./data\n{}http: {{ listen: \"127.0.0.1:{port}\" }}\n\
         accounts:\n  shopify-main: {{ connector: shopify, credentials: {{ webhook_secret: \"{SECRET}\" }} }}\n  \
         courier-main: {courier}\npipelines: [ \"pipelines/*.yaml\" ]\n",
        backend.yaml()
    );
    std::fs::write(dir.join("waybill.yaml"), yaml).expect("write config");
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

/// Which parts of waybill a harness runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Run {
    /// Everything the config names.
    All,
    /// Ingest alone: the pipelines are left out once the config has been
    /// checked (with them, as a config whose store account nothing consumes
    /// is refused), so orders are enqueued and nothing books them.
    IngestOnly,
}

/// Starts waybill in-process; the returned sender stops it.
pub async fn start_waybill(
    config_path: &Path,
    run: Run,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let mut config = waybill::config::load(config_path).unwrap_or_else(|d| panic!("config: {d:?}"));
    if run == Run::IngestOnly {
        config.pipelines.clear();
    }
    let listener = waybill::runtime::bind(&config).await.expect("bind");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        waybill::runtime::run(config, listener, async move {
            let _ = stopped.await;
        })
        .await
        .expect("waybill runs");
    });
    (stop, task)
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}

/// A cash-on-delivery Shopify order with two line items, about 7 KB,
/// distinct for every `i` and the same on every run.
pub fn order(i: u64) -> Vec<u8> {
    order_from("order-cod.json", i)
}

/// [`order`] drawn from another sample under `samples/shopify/`.
pub fn order_from(sample: &str, i: u64) -> Vec<u8> {
    use rand::SeedableRng;
    let mut order: serde_json::Value = serde_json::from_slice(
        &std::fs::read(repo().join("samples/shopify").join(sample)).expect("sample"),
    )
    .expect("json");
    // Real orders differ in ids, tokens, people, addresses, items and
    // amounts; orders that differed only in their id would compress far
    // better than real ones and make storing them look cheaper than it is.
    let mut rng = rand::rngs::StdRng::seed_from_u64(i);
    vary(&mut order, "", &mut rng);
    order["id"] = serde_json::json!(6_000_000_000_000_000_000u64 + i);
    order["name"] = serde_json::json!(format!("#B{i}"));
    serde_json::to_vec(&order).expect("json")
}

const FIRST: &[&str] = &[
    "Ayesha", "Bilal", "Fatima", "Hamza", "Zainab", "Usman", "Maryam", "Ali", "Sana", "Omar",
    "Hira", "Imran", "Nadia", "Saad", "Amna", "Farhan", "Iqra", "Kashif", "Mahnoor", "Tariq",
];
const LAST: &[&str] = &[
    "Khan", "Ahmed", "Malik", "Hussain", "Qureshi", "Sheikh", "Butt", "Chaudhry", "Raza",
    "Siddiqui", "Mirza", "Javed", "Iqbal", "Aslam", "Baig", "Abbasi",
];
const CITIES: &[(&str, &str, &str)] = &[
    ("Karachi", "Sindh", "SD"),
    ("Lahore", "Punjab", "PB"),
    ("Islamabad", "Islamabad Capital Territory", "IS"),
    ("Rawalpindi", "Punjab", "PB"),
    ("Faisalabad", "Punjab", "PB"),
    ("Multan", "Punjab", "PB"),
    ("Peshawar", "Khyber Pakhtunkhwa", "KP"),
    ("Hyderabad", "Sindh", "SD"),
    ("Quetta", "Balochistan", "BA"),
];
const AREAS: &[&str] = &[
    "Gulshan-e-Iqbal",
    "DHA Phase 6",
    "Model Town",
    "Johar Town",
    "G-11/2",
    "Satellite Town",
    "Cantt",
    "Clifton Block 5",
    "Bahria Town",
    "Gulberg III",
    "North Nazimabad",
    "Hayatabad",
];
const PRODUCTS: &[&str] = &[
    "Khaddar Kurta",
    "Lawn Suit 3pc",
    "Embroidered Shawl",
    "Cotton Shalwar",
    "Peshawari Chappal",
    "Silk Dupatta",
    "Linen Waistcoat",
    "Karandi Suit",
    "Leather Khussa",
    "Printed Kameez",
];
const VARIANTS: &[&str] = &[
    "Maroon",
    "Black",
    "Olive",
    "Navy",
    "Mustard",
    "Teal",
    "Off-white",
];
const SIZES: &[&str] = &["XS", "S", "M", "L", "XL"];

/// Gives the fields of `value` that differ from order to order new values;
/// `key` is the field `value` sits under.
fn vary(value: &mut serde_json::Value, key: &str, rng: &mut rand::rngs::StdRng) {
    use rand::Rng;
    use rand::seq::IndexedRandom;
    use serde_json::{Value, json};
    let pick = |rng: &mut rand::rngs::StdRng, from: &[&str]| -> String {
        from.choose(rng).copied().unwrap_or_default().to_string()
    };
    let hex = |rng: &mut rand::rngs::StdRng, len: usize| -> String {
        (0..len)
            .map(|_| char::from_digit(rng.random_range(0..16), 16).unwrap_or('0'))
            .collect()
    };
    match value {
        Value::Object(fields) => {
            // People and places are drawn once per object so its fields agree.
            let (first, last) = (pick(rng, FIRST), pick(rng, LAST));
            let (city, province, code) = *CITIES.choose(rng).unwrap_or(&CITIES[0]);
            let product = pick(rng, PRODUCTS);
            let variant = format!("{} / {}", pick(rng, VARIANTS), pick(rng, SIZES));
            for (name, field) in fields.iter_mut() {
                let new = match (name.as_str(), &*field) {
                    (_, Value::Object(_) | Value::Array(_)) => {
                        vary(field, name, rng);
                        continue;
                    }
                    (_, Value::Null | Value::Bool(_)) => continue,
                    ("id" | "customer_id" | "checkout_id" | "product_id" | "variant_id", _) => {
                        json!(rng.random_range(100_000_000u64..1_000_000_000_000_000_000))
                    }
                    ("admin_graphql_api_id", Value::String(gid)) => {
                        let kind = gid.rsplit('/').nth(1).unwrap_or("Order");
                        json!(format!(
                            "gid://shopify/{kind}/{}",
                            rng.random_range(100_000_000u64..1_000_000_000_000_000_000)
                        ))
                    }
                    ("token" | "checkout_token", _) => json!(hex(rng, 32)),
                    ("order_status_url", _) => json!(format!(
                        "https://khaddar-house.myshopify.com/71234/orders/{}/authenticate?key={}",
                        hex(rng, 32),
                        hex(rng, 32)
                    )),
                    ("confirmation_number", _) => json!(hex(rng, 9).to_uppercase()),
                    ("browser_ip", _) => json!(format!(
                        "{}.{}.{}.{}",
                        rng.random_range(1..224),
                        rng.random::<u8>(),
                        rng.random::<u8>(),
                        rng.random_range(1..255)
                    )),
                    ("email" | "contact_email", _) => json!(format!(
                        "{}.{}{}@example.pk",
                        first.to_lowercase(),
                        last.to_lowercase(),
                        rng.random_range(1..10_000)
                    )),
                    ("created_at" | "updated_at" | "processed_at", _) => json!(format!(
                        "2026-11-{:02}T{:02}:{:02}:{:02}+05:00",
                        rng.random_range(1..29),
                        rng.random_range(0..24),
                        rng.random_range(0..60),
                        rng.random_range(0..60)
                    )),
                    ("first_name", _) => json!(first),
                    ("last_name", _) => json!(last),
                    ("name", _) if key.ends_with("address") => json!(format!("{first} {last}")),
                    ("name", _) if key == "line_items" => {
                        json!(format!("{product} - {variant}"))
                    }
                    ("title", _) => json!(product),
                    ("variant_title", _) => json!(variant),
                    ("sku", _) => json!(hex(rng, 8).to_uppercase()),
                    ("address1", _) => json!(format!(
                        "House {}, Street {}, {}",
                        rng.random_range(1..900),
                        rng.random_range(1..40),
                        pick(rng, AREAS)
                    )),
                    ("address2", _) => json!(pick(rng, AREAS)),
                    ("city", _) => json!(city),
                    ("province", _) => json!(province),
                    ("province_code", _) => json!(code),
                    ("zip", _) => json!(format!("{}", rng.random_range(10_000..99_999))),
                    ("phone", _) => {
                        json!(format!("03{:09}", rng.random_range(0..1_000_000_000u64)))
                    }
                    ("price" | "amount", Value::String(_)) if key != "total_discount_set" => {
                        json!(format!("{}.00", rng.random_range(5..100) * 50))
                    }
                    ("quantity" | "current_quantity" | "fulfillable_quantity", _) => {
                        json!(rng.random_range(1..4))
                    }
                    ("grams", _) => json!(rng.random_range(100..2000)),
                    _ => continue,
                };
                *field = new;
            }
        }
        Value::Array(items) => {
            for item in items {
                vary(item, key, rng);
            }
        }
        _ => {}
    }
}

/// Closed-loop load: `connections` workers post for `duration` (or until
/// `max_requests`), each request built by `make(i)`. Returns successes/s.
pub async fn load<F>(
    url: &str,
    connections: usize,
    duration: Duration,
    max_requests: u64,
    make: F,
) -> f64
where
    F: Fn(u64) -> (Vec<u8>, Vec<(String, String)>) + Send + Sync + 'static,
{
    let make = Arc::new(make);
    // One client for every worker: building one loads the TLS roots, which
    // would otherwise cost more than the requests measured.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .build()
        .expect("client");
    let next = Arc::new(AtomicU64::new(0));
    let ok = Arc::new(AtomicU64::new(0));
    let cpu_at_start = cpu_seconds();
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let (make, next, ok, url, http) = (
            make.clone(),
            next.clone(),
            ok.clone(),
            url.to_string(),
            http.clone(),
        );
        workers.spawn(async move {
            while started.elapsed() < duration {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= max_requests {
                    break;
                }
                let (body, headers) = make(i);
                let mut request = http.post(&url).body(body);
                for (name, value) in headers {
                    request = request.header(name, value);
                }
                if let Ok(response) = request.send().await
                    && response.status().is_success()
                {
                    ok.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    while workers.join_next().await.is_some() {}
    let done = ok.load(Ordering::Relaxed) as f64;
    let rate = done / started.elapsed().as_secs_f64();
    if let (Some(before), Some(after)) = (cpu_at_start, cpu_seconds()) {
        // Less sensitive to other load on the machine than the rate.
        println!(
            "  {rate:.0} req/s, {:.0} µs of CPU per request (load generator included)",
            (after - before) * 1e6 / done.max(1.0)
        );
    }
    rate
}

/// CPU time (user + system) this process has used, from /proc.
pub fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// The shipped Shopify connector's webhook rules: what the benchmarks sign by.
pub fn shopify_webhook() -> &'static waybill::connector::WebhookSpec {
    static SPEC: std::sync::LazyLock<waybill::connector::WebhookSpec> =
        std::sync::LazyLock::new(|| {
            let connector =
                waybill::connector::Connector::load(&repo().join("connectors/shopify.yaml"))
                    .unwrap_or_else(|d| panic!("the shipped shopify connector loads: {d:#?}"));
            connector
                .webhook
                .expect("shopify declares its webhook rules")
        });
    &SPEC
}

/// Headers of a signed Shopify webhook, named as the connector declares.
pub fn shopify_headers(signature: &str, topic: &str, id: u64) -> Vec<(String, String)> {
    let spec = shopify_webhook();
    let mut headers = Vec::with_capacity(4);
    if let Some(rule) = &spec.signature {
        headers.push((rule.header.clone(), signature.to_string()));
    }
    if let Some(name) = &spec.topic_header {
        headers.push((name.clone(), topic.into()));
    }
    if let Some(name) = &spec.delivery_id_header {
        headers.push((name.clone(), format!("bench-{id}")));
    }
    headers.push(("Content-Type".into(), "application/json".into()));
    headers
}

/// Signs as the Shopify connector declares.
pub fn sign(body: &[u8]) -> String {
    let rule = shopify_webhook()
        .signature
        .as_ref()
        .expect("shopify signs its webhooks");
    waybill::sources::webhook::sign(rule, SECRET.as_bytes(), body)
}

/// `--name VALUE` style argument with a default.
pub fn text_arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_string())
}

/// `--seconds N` style argument with a default.
pub fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
