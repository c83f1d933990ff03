//! Memory of a `waybill run` process, in a process of its own so that its
//! RSS is its own, against its idle figure in the same run:
//!
//! - `--scenario slow-clients`: 300 connections each sending a 1 MiB
//!   webhook body but its last KiB, then holding it open, and 3,000 idle
//!   connections, all re-opened a second after the server closes them (as a
//!   persistent attacker would), while `/healthz` is asked every 250 ms on a
//!   fresh connection;
//! - `--scenario steady`: signed Shopify orders posted at a fixed rate
//!   (`--rate`, default 5,000/s) to the shipped `waybill.yaml` (embedded bus
//!   and store, the shipped pipeline booking on the sandbox courier).
//!
//! ```sh
//! cargo bench --bench memory -- --scenario slow-clients --seconds 30 [--server PATH]
//! cargo bench --bench memory -- --scenario steady --seconds 60 --rate 5000 [--server PATH]
//! ```
//!
//! `--server` runs another `waybill` binary (the code before a change, say)
//! under the same load; it is given only the shipped configuration keys.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::main]
async fn main() {
    let scenario = text_arg("--scenario", "slow-clients");
    let server = PathBuf::from(text_arg("--server", env!("CARGO_BIN_EXE_waybill")));
    let seconds = Duration::from_secs(arg("--seconds", 30));
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    shipped_config(dir.path(), port);
    let waybill = Server::start(&server, dir.path(), port).await;
    println!("server: {}", server.display());
    match scenario.as_str() {
        "slow-clients" => slow_clients(&waybill, seconds).await,
        "steady" => steady(&waybill, seconds, arg("--rate", 5000)).await,
        other => panic!("--scenario is slow-clients or steady, not {other}"),
    }
    waybill.stop().await;
}

/// The shipped `waybill.yaml` and the trees it names, listening on `port`.
/// The slow-client scenario keeps the shipped pipelines too: a store
/// account that no pipeline consumes is refused, and with no order posted
/// they only wait.
fn shipped_config(dir: &Path, port: u16) {
    write_config(dir, &Backend::Embedded, port, "{ connector: sandbox }", 64);
    let shipped = std::fs::read_to_string(repo().join("waybill.yaml")).expect("waybill.yaml");
    let yaml = shipped.replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"));
    std::fs::write(dir.join("waybill.yaml"), yaml).expect("config");
}

/// A `waybill run` process.
struct Server {
    child: std::process::Child,
    base: String,
}

impl Server {
    async fn start(binary: &Path, dir: &Path, port: u16) -> Server {
        let log = std::fs::File::create(dir.join("waybill.log")).expect("log");
        let child = std::process::Command::new(binary)
            .args(["run", "--config"])
            .arg(dir.join("waybill.yaml"))
            .env("SHOPIFY_SECRET", SECRET)
            .env("RUST_LOG", "error")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn waybill");
        let server = Server {
            child,
            base: format!("127.0.0.1:{port}"),
        };
        let started = Instant::now();
        while healthz(&server.base, Duration::from_secs(1))
            .await
            .is_none()
        {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "waybill never listened"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        server
    }

    fn view(&self) -> ProcessView {
        ProcessView {
            pid: self.child.id(),
            base: self.base.clone(),
        }
    }

    /// SIGTERM, and how long it took to stop.
    async fn stop(mut self) {
        let started = Instant::now();
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = tokio::task::spawn_blocking(move || self.child.wait()).await;
        println!(
            "stopped on SIGTERM in {:.2} s",
            started.elapsed().as_secs_f64()
        );
    }
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// How long a `GET /healthz` on a fresh connection took to answer 200, or
/// `None` when it did not within `limit`.
async fn healthz(base: &str, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let answer = tokio::time::timeout(limit, async {
        let mut stream = TcpStream::connect(base).await.ok()?;
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: waybill\r\nconnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.ok()?;
        answer.starts_with(b"HTTP/1.1 200").then_some(())
    })
    .await;
    matches!(answer, Ok(Some(()))).then(|| started.elapsed())
}

/// RSS and `/healthz` samples.
#[derive(Default)]
struct Samples {
    rss: Vec<f64>,
    healthz: Vec<Option<Duration>>,
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(0.0)
}

/// Prints what the samples of one phase show.
fn report(phase: &str, samples: &Samples, idle: f64) {
    let max = samples.rss.iter().copied().fold(0.0, f64::max);
    let mut answered: Vec<Duration> = samples.healthz.iter().flatten().copied().collect();
    answered.sort();
    let failed = samples.healthz.len() - answered.len();
    let pct = |p: f64| {
        answered
            .get(((answered.len() as f64 * p) as usize).min(answered.len().saturating_sub(1)))
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
    };
    println!(
        "{phase}: RSS median {:.1} MiB, max {max:.1} MiB ({:+.1} MiB against idle {idle:.1}); \
         /healthz {} asked, {failed} unanswered within 5 s, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        median(&samples.rss),
        max - idle,
        samples.healthz.len(),
        pct(0.5),
        pct(0.99),
        answered.last().map_or(f64::NAN, |d| d.as_secs_f64() * 1e3),
    );
}

/// Idle figure: the median RSS over `seconds` with nothing sent.
async fn idle(server: &Server, seconds: Duration) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn({
        let (stop, view) = (stop.clone(), server.view());
        async move { view.sample(stop).await }
    });
    tokio::time::sleep(seconds).await;
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.await.expect("sampler");
    let idle = median(&samples.rss);
    report("idle", &samples, idle);
    idle
}

/// What a sampler task needs of the server.
struct ProcessView {
    pid: u32,
    base: String,
}

impl ProcessView {
    /// RSS (from `/proc/PID/status`) and a `/healthz` every 250 ms until `stop`.
    async fn sample(&self, stop: Arc<AtomicBool>) -> Samples {
        let mut samples = Samples::default();
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            samples
                .rss
                .push(status_kib(self.pid, "VmRSS:") as f64 / 1024.0);
            samples
                .healthz
                .push(healthz(&self.base, Duration::from_secs(5)).await);
        }
        samples
    }
}

/// What the attacking connections saw.
#[derive(Default)]
struct Seen {
    answered_503: AtomicU64,
    answered_408: AtomicU64,
    answered_other: AtomicU64,
    closed_silently: AtomicU64,
    connect_failed: AtomicU64,
}

impl Seen {
    fn record(&self, answer: &[u8]) {
        let counter = if answer.is_empty() {
            &self.closed_silently
        } else if answer.starts_with(b"HTTP/1.1 503") {
            &self.answered_503
        } else if answer.starts_with(b"HTTP/1.1 408") {
            &self.answered_408
        } else {
            &self.answered_other
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn print(&self, what: &str) {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        println!(
            "{what}: answered 503 {} · 408 {} · other {} · closed without an answer {} · connect failed {}",
            n(&self.answered_503),
            n(&self.answered_408),
            n(&self.answered_other),
            n(&self.closed_silently),
            n(&self.connect_failed),
        );
    }
}

/// 300 partial 1 MiB bodies and 3,000 idle connections for `seconds`.
async fn slow_clients(server: &Server, seconds: Duration) {
    let idle_rss = idle(server, Duration::from_secs(3)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let bodies = Arc::new(Seen::default());
    let idlers = Arc::new(Seen::default());
    let mut attackers = tokio::task::JoinSet::new();
    for i in 0..300 {
        let (stop, seen, base) = (stop.clone(), bodies.clone(), server.base.clone());
        attackers.spawn(async move { partial_body(&base, i, &stop, &seen).await });
    }
    for _ in 0..3000 {
        let (stop, seen, base) = (stop.clone(), idlers.clone(), server.base.clone());
        attackers.spawn(async move { idle_connection(&base, &stop, &seen).await });
    }
    let flood_stop = stop.clone();
    tokio::spawn(async move {
        tokio::time::sleep(seconds).await;
        flood_stop.store(true, Ordering::Relaxed);
    });
    let samples = server.view().sample(stop.clone()).await;
    println!(
        "slow clients: 300 partial 1 MiB bodies and 3,000 idle connections for {} s",
        seconds.as_secs()
    );
    report("under the flood", &samples, idle_rss);
    attackers.abort_all();
    while attackers.join_next().await.is_some() {}
    bodies.print("partial bodies");
    idlers.print("idle connections");
    let after = idle(server, Duration::from_secs(3)).await;
    println!("after the flood: RSS {after:.1} MiB");
    print_metrics(&server.base, "waybill_http_connections_refused_total").await;
    print_metrics(&server.base, "waybill_webhooks_received_total").await;
}

/// Sends a webhook head declaring 1 MiB and all of the body but its last
/// KiB, then holds the connection until the server answers or closes it;
/// again a second later, until `stop`.
async fn partial_body(base: &str, i: u64, stop: &AtomicBool, seen: &Seen) {
    let chunk = vec![b'x'; 64 * 1024];
    let headers = shopify_headers(&sign(b"never sent whole"), "orders/paid", i);
    let mut head = String::from(
        "POST /webhooks/shopify/shopify-main HTTP/1.1\r\nhost: waybill\r\ncontent-length: 1048576\r\n",
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut stream) = TcpStream::connect(base).await else {
            seen.connect_failed.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        let mut sent = stream.write_all(head.as_bytes()).await.is_ok();
        for _ in 0..15 {
            sent = sent && stream.write_all(&chunk).await.is_ok();
        }
        // The 16th chunk, but its last KiB.
        sent = sent && stream.write_all(&chunk[..63 * 1024]).await.is_ok();
        let _ = sent;
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer).await;
        seen.record(&answer);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Connects and sends nothing until the server closes the connection;
/// again a second later, until `stop`.
async fn idle_connection(base: &str, stop: &AtomicBool, seen: &Seen) {
    while !stop.load(Ordering::Relaxed) {
        match TcpStream::connect(base).await {
            Ok(mut stream) => {
                let mut answer = Vec::new();
                let _ = stream.read_to_end(&mut answer).await;
                seen.record(&answer);
            }
            Err(_) => {
                seen.connect_failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn print_metrics(base: &str, prefix: &str) {
    let Ok(text) = reqwest::get(format!("http://{base}/metrics")).await else {
        return;
    };
    for line in text.text().await.unwrap_or_default().lines() {
        if line.starts_with(prefix) {
            println!("  {line}");
        }
    }
}

/// Orders posted at `rate` a second for `seconds`, RSS sampled throughout.
async fn steady(server: &Server, seconds: Duration, rate: u64) {
    let idle_rss = idle(server, Duration::from_secs(3)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn({
        let (stop, view) = (stop.clone(), server.view());
        async move { view.sample(stop).await }
    });
    let url = format!("http://{}/webhooks/shopify/shopify-main", server.base);
    let started = Instant::now();
    let (sent, ok) = paced(&url, rate, seconds).await;
    // The posting falls behind its schedule when the server (or the load
    // generator beside it) cannot keep up, so the rate achieved is counted
    // over the time the posting really took, not the time asked for.
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.await.expect("sampler");
    println!(
        "steady: {rate}/s asked for {} s: {sent} posted, {ok} answered 200 in {:.1} s ({:.0}/s achieved)",
        seconds.as_secs(),
        took.as_secs_f64(),
        ok as f64 / took.as_secs_f64()
    );
    report("at a steady rate", &samples, idle_rss);
    let last: Vec<f64> = samples.rss.iter().rev().take(40).copied().collect();
    println!("  RSS over the last 10 s: median {:.1} MiB", median(&last));
    print_metrics(&server.base, "waybill_webhooks_received_total").await;
    print_metrics(&server.base, "waybill_courier_requests_total").await;
}

/// Posts distinct signed orders (topic `orders/paid`, so the shipped
/// pipeline books each) on 64 connections, request `i` not before
/// `i / rate` s from the start; returns how many were posted and answered 200.
async fn paced(url: &str, rate: u64, seconds: Duration) -> (u64, u64) {
    // Templates whose ids are replaced per request: varying whole orders
    // for every request would cost the load generator more than the server.
    let templates: Arc<Vec<(Vec<u8>, String)>> = Arc::new(
        (0..1024u64)
            .map(|j| {
                let body = order_from("order-prepaid.json", j);
                (body, format!("{}", 6_000_000_000_000_000_000u64 + j))
            })
            .collect(),
    );
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .expect("client");
    let (next, ok) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let total = rate * seconds.as_secs();
    let started = tokio::time::Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let (templates, http, next, ok, url) = (
            templates.clone(),
            http.clone(),
            next.clone(),
            ok.clone(),
            url.to_string(),
        );
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                tokio::time::sleep_until(started + Duration::from_secs_f64(i as f64 / rate as f64))
                    .await;
                let (body, signature) = order_number(&templates, i);
                let mut request = http.post(&url).body(body);
                for (name, value) in shopify_headers(&signature, "orders/paid", i) {
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
    (
        total.min(next.load(Ordering::Relaxed)),
        ok.load(Ordering::Relaxed),
    )
}

/// Order `i`: a template with its id replaced by one of `i`'s own (of the
/// same width), signed.
fn order_number(templates: &[(Vec<u8>, String)], i: u64) -> (Vec<u8>, String) {
    let (template, id) = &templates[(i % templates.len() as u64) as usize];
    let mut body = template.clone();
    let new_id = format!("{}", 6_000_000_000_000_000_000u64 + i);
    if let Some(at) = body.windows(id.len()).position(|w| w == id.as_bytes()) {
        body[at..at + id.len()].copy_from_slice(new_id.as_bytes());
    }
    let signature = sign(&body);
    (body, signature)
}
