//! Shared helpers: a config tree in a temp dir that uses the shipped
//! connectors, mappings and pipelines, and waybill running in-process.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use waybill::config::Config;
use waybill::runtime::Backends;

pub const SECRET: &str = "test-secret";

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn sample(name: &str) -> Vec<u8> {
    std::fs::read(repo().join("samples/shopify").join(name)).expect("sample order")
}

/// A config tree beside the shipped connectors, mappings and pipelines.
pub struct ConfigDir {
    pub dir: tempfile::TempDir,
}

impl ConfigDir {
    /// `courier` is the YAML of account `courier-main`.
    pub fn new(courier: &str) -> ConfigDir {
        Self::with_extra(courier, "")
    }

    pub fn with_extra(courier: &str, extra_top_level: &str) -> ConfigDir {
        let dir = tempfile::tempdir().expect("tempdir");
        for sub in ["connectors", "mappings", "pipelines"] {
            copy_dir(&repo().join(sub), &dir.path().join(sub));
        }
        let yaml = format!(
            "data_dir: ./data\n\
             bus: {{ kind: embedded }}\n\
             http: {{ listen: \"127.0.0.1:0\" }}\n\
             accounts:\n  \
               shopify-main: {{ connector: shopify, credentials: {{ webhook_secret: \"{SECRET}\" }} }}\n  \
               courier-main: {courier}\n\
             pipelines: [ \"pipelines/*.yaml\" ]\n{extra_top_level}"
        );
        std::fs::write(dir.path().join("waybill.yaml"), yaml).expect("write config");
        ConfigDir { dir }
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
        let sig = waybill::sources::shopify::sign(SECRET.as_bytes(), body);
        self.shopify_raw(
            "shopify-main",
            body,
            &[
                ("X-Shopify-Hmac-Sha256", &sig),
                ("X-Shopify-Topic", topic),
                ("X-Shopify-Webhook-Id", webhook_id),
            ],
        )
        .await
    }

    pub async fn shopify_raw(
        &self,
        account: &str,
        body: &[u8],
        headers: &[(&str, &str)],
    ) -> (u16, String) {
        let mut request = self
            .http
            .post(self.url(&format!("/webhooks/shopify/{account}")))
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

/// PostEx's success answer.
pub fn postex_ok(tracking: &str) -> serde_json::Value {
    serde_json::json!({
        "statusCode": "200",
        "statusMessage": "ORDER HAS BEEN CREATED",
        "dist": { "trackingNumber": tracking, "orderStatus": "UnBooked", "orderDate": "2026-11-22 10:00:00" }
    })
}
