//! Shared parts of the load harnesses: a config tree with the shipped
//! connectors, mappings and pipelines, waybill in-process, and a bounded
//! closed-loop HTTP load generator on loopback.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub const SECRET: &str = "bench-secret";

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Writes a config tree into `dir`; `pipelines` is the YAML list of pipeline globs.
pub fn write_config(dir: &Path, port: u16, courier: &str, pipelines: &str, max_in_flight: usize) {
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
        "data_dir: ./data\nbus: {{ kind: embedded }}\nhttp: {{ listen: \"127.0.0.1:{port}\" }}\n\
         accounts:\n  shopify-main: {{ connector: shopify, credentials: {{ webhook_secret: \"{SECRET}\" }} }}\n  \
         courier-main: {courier}\npipelines: {pipelines}\n"
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

/// Starts waybill in-process; the returned sender stops it.
pub async fn start_waybill(
    config_path: &Path,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let config = waybill::config::load(config_path).unwrap_or_else(|d| panic!("config: {d:?}"));
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

/// A ~5 KB signed Shopify order with a distinct id.
pub fn order(i: u64) -> Vec<u8> {
    let mut order: serde_json::Value = serde_json::from_slice(
        &std::fs::read(repo().join("samples/shopify/order-cod.json")).expect("sample"),
    )
    .expect("json");
    order["id"] = serde_json::json!(6_000_000_000_000_000_000u64 + i);
    order["name"] = serde_json::json!(format!("#B{i}"));
    serde_json::to_vec(&order).expect("json")
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
    ok.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// Headers of a signed Shopify webhook.
pub fn shopify_headers(signature: &str, topic: &str, id: u64) -> Vec<(String, String)> {
    vec![
        ("X-Shopify-Hmac-Sha256".into(), signature.to_string()),
        ("X-Shopify-Topic".into(), topic.into()),
        ("X-Shopify-Webhook-Id".into(), format!("bench-{id}")),
        ("Content-Type".into(), "application/json".into()),
    ]
}

/// Signs as Shopify does.
pub fn sign(body: &[u8]) -> String {
    waybill::sources::shopify::sign(SECRET.as_bytes(), body)
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
