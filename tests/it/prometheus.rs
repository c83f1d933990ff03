//! `/metrics` as a real Prometheus server (Debian's `prometheus` package)
//! scrapes it: the target is up, with no scrape error, and waybill's series
//! can be queried after an order went through intake, booking and tracking.

use crate::common::*;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A Prometheus server scraping one target every 500 ms, stopped on drop.
struct Prometheus {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn scraping(target: std::net::SocketAddr) -> Prometheus {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global: {{ scrape_interval: 500ms, scrape_timeout: 400ms }}\n\
                 scrape_configs:\n  \
                   - job_name: waybill\n    \
                     static_configs: [{{ targets: [\"{target}\"] }}]\n"
            ),
        )
        .expect("write prometheus.yml");
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "this test needs a real Prometheus server: install Debian's `prometheus` \
                     package (apt-get install prometheus); starting `prometheus` failed: {e}"
                )
            });
        Prometheus {
            child,
            base: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        }
    }

    async fn api(&self, path: &str) -> Option<serde_json::Value> {
        let answer = reqwest::get(format!("{}{path}", self.base)).await.ok()?;
        answer.json().await.ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn a_real_prometheus_scrapes_every_metric_without_error() {
    let dir = ConfigDir::new("{ connector: sandbox }");
    let app = App::start(&dir).await;
    let order = order_with("order-cod.json", |o| {
        o["id"] = serde_json::json!(9_500_000_030_u64)
    });
    assert_eq!(app.shopify(&order, "orders/paid", "prom-1").await.0, 200);
    let prometheus = Prometheus::scraping(app.addr);
    let target = eventually(Duration::from_secs(60), "a scrape of waybill", || async {
        let targets = prometheus.api("/api/v1/targets").await?;
        let target = targets["data"]["activeTargets"][0].clone();
        let health = target["health"].as_str()?;
        (health != "unknown").then_some(target)
    })
    .await;
    assert_eq!(target["health"], "up", "{target:#}");
    assert_eq!(target["lastError"], "", "{target:#}");
    let series = eventually(Duration::from_secs(60), "the webhook counter", || async {
        let query = "/api/v1/query?query=waybill_webhooks_received_total";
        let answer = prometheus.api(query).await?;
        let result = answer["data"]["result"].as_array()?.clone();
        (!result.is_empty()).then_some(result)
    })
    .await;
    assert_eq!(series[0]["metric"]["outcome"], "accepted", "{series:?}");
    app.stop().await;
}
