//! The HTTP server against slow, stalled, vanishing and too many clients:
//! header and body timeouts, the connection cap, idle connections giving
//! way, the probes' reserve, the body budget, and how a body that was not
//! read whole is answered.
//! Raw TCP on loopback, so each test controls exactly what is sent.

use crate::common::*;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A tree whose `http:` also says `limits` (YAML flow-map entries).
fn dir_with_http(limits: &str) -> ConfigDir {
    let dir = ConfigDir::new("{ connector: sandbox }");
    dir.edit("waybill.yaml", |text| {
        text.replace(
            "http: { listen: \"127.0.0.1:0\" }",
            &format!("http: {{ listen: \"127.0.0.1:0\", {limits} }}"),
        )
    });
    dir
}

async fn connect(app: &App) -> TcpStream {
    TcpStream::connect(app.addr).await.expect("connect")
}

/// Reads until the server closes the connection, or `limit` passes;
/// returns what was read and whether it closed.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (String, bool) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&seen).into(), true),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&seen).into(), false),
        }
    }
}

/// A signed Shopify delivery's request head for `body`, declaring `length`.
fn webhook_head(body: &[u8], length: usize, webhook_id: &str) -> String {
    let mut head = format!(
        "POST /webhooks/shopify/shopify-main HTTP/1.1\r\nhost: waybill\r\nconnection: close\r\ncontent-length: {length}\r\n"
    );
    for (name, value) in shopify_headers(body, "orders/paid", webhook_id) {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head
}

/// Posts a whole signed order over a connection of its own; the answer.
async fn post_whole(app: &App, body: &[u8], webhook_id: &str) -> String {
    let mut stream = connect(app).await;
    let head = webhook_head(body, body.len(), webhook_id);
    stream.write_all(head.as_bytes()).await.expect("head");
    stream.write_all(body).await.expect("body");
    read_until_closed(&mut stream, Duration::from_secs(10))
        .await
        .0
}

async fn get(stream: &mut TcpStream, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nhost: waybill\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("request");
    read_until_closed(stream, Duration::from_secs(10)).await.0
}

/// The value of the metric line starting with `prefix`, 0 when absent.
fn metric(metrics: &str, prefix: &str) -> u64 {
    metrics
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn metric_reaches(app: &App, prefix: &str, at_least: u64) {
    eventually(Duration::from_secs(10), prefix, || async {
        (metric(&app.metrics().await, prefix) >= at_least).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_client_that_sends_no_head_in_time_is_closed() {
    let dir = dir_with_http("header_read_timeout: 200ms");
    let app = App::start(&dir).await;
    let mut silent = connect(&app).await;
    let mut partial = connect(&app).await;
    partial
        .write_all(b"POST /webhooks/shopify/shopify-main HTTP/1.1\r\nhost: w\r\n")
        .await
        .expect("part of a head");
    let started = Instant::now();
    for stream in [&mut silent, &mut partial] {
        let (_, closed) = read_until_closed(stream, Duration::from_secs(10)).await;
        assert!(closed, "the server closed the connection");
    }
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    metric_reaches(
        &app,
        "waybill_http_connections_refused_total{reason=\"header_timeout\"}",
        2,
    )
    .await;
    // A client that sends its request in time is served as before.
    let mut prompt = connect(&app).await;
    assert!(
        get(&mut prompt, "/healthz")
            .await
            .starts_with("HTTP/1.1 200")
    );
    app.stop().await;
}

#[tokio::test]
async fn a_body_that_stalls_is_answered_408_timeout() {
    let dir = dir_with_http("body_read_timeout: 300ms");
    let app = App::start(&dir).await;
    let body = sample("order-cod.json");
    let mut stream = connect(&app).await;
    let head = webhook_head(&body, body.len(), "stalls");
    stream.write_all(head.as_bytes()).await.expect("head");
    stream
        .write_all(&body[..100])
        .await
        .expect("part of the body");
    let (answer, _) = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("http.body_read_timeout"), "{answer}");
    let metrics = app.metrics().await;
    assert!(metrics.contains("outcome=\"timeout\"} 1"), "{metrics}");
    assert!(!metrics.contains("too_large"), "{metrics}");
    app.stop().await;
}

#[tokio::test]
async fn a_client_gone_before_its_body_is_counted_aborted_not_too_large() {
    let dir = ConfigDir::new("{ connector: sandbox }");
    let app = App::start(&dir).await;
    let body = sample("order-cod.json");
    let mut stream = connect(&app).await;
    let head = webhook_head(&body, body.len(), "gone");
    stream.write_all(head.as_bytes()).await.expect("head");
    stream
        .write_all(&body[..100])
        .await
        .expect("part of the body");
    stream.flush().await.expect("flush");
    // The server must have started reading the body before the client goes.
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(stream);
    metric_reaches(
        &app,
        "waybill_webhooks_received_total{source=\"shopify\",account=\"shopify-main\",outcome=\"aborted\"}",
        1,
    )
    .await;
    assert!(!app.metrics().await.contains("too_large"));
    app.stop().await;
}

/// A connection that has sent part of a request head, so it is no longer
/// idle and keeps its slot.
async fn half_a_head(app: &App) -> TcpStream {
    let mut stream = connect(app).await;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .expect("half a head");
    stream
}

#[tokio::test]
async fn idle_connections_give_way_to_new_ones_when_the_server_is_full() {
    let dir = dir_with_http("max_connections: 3, header_read_timeout: 60s");
    let app = App::start(&dir).await;
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(connect(&app).await);
        // Accepted in this order, so the first is the oldest.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let body = sample("order-cod.json");
    let answer = post_whole(&app, &body, "makes-room").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let (_, closed) = read_until_closed(&mut idle[0], Duration::from_secs(10)).await;
    assert!(closed, "the oldest idle connection made room");
    metric_reaches(
        &app,
        "waybill_http_connections_refused_total{reason=\"evicted_idle\"}",
        1,
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn past_max_connections_only_probes_are_served_then_none() {
    let dir = dir_with_http("max_connections: 3, header_read_timeout: 60s");
    let app = App::start(&dir).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(half_a_head(&app).await);
    }
    // Let the server read what they sent.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut probe = connect(&app).await;
    let answer = get(&mut probe, "/healthz").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let mut probe = connect(&app).await;
    let answer = get(&mut probe, "/metrics").await;
    assert!(answer.contains("waybill_http_open_connections"), "{answer}");
    let body = sample("order-cod.json");
    let answer = post_whole(&app, &body, "over-the-cap").await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    // The probes' reserve held too: refused at once.
    for _ in 0..16 {
        held.push(half_a_head(&app).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let mut refused = connect(&app).await;
    let (answer, closed) = read_until_closed(&mut refused, Duration::from_secs(10)).await;
    assert!(closed && started.elapsed() < Duration::from_secs(5));
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 503"),
        "{answer}"
    );
    drop(held);
    // Once they are gone, webhooks are served again.
    eventually(Duration::from_secs(10), "a webhook served", || async {
        let answer = post_whole(&app, &body, "after-the-cap").await;
        answer.starts_with("HTTP/1.1 200").then_some(())
    })
    .await;
    let metrics = app.metrics().await;
    assert!(
        metric(
            &metrics,
            "waybill_http_connections_refused_total{reason=\"probes_only\"}"
        ) >= 1,
        "{metrics}"
    );
    assert!(
        metric(
            &metrics,
            "waybill_http_connections_refused_total{reason=\"connection_limit\"}"
        ) >= 1,
        "{metrics}"
    );
    app.stop().await;
}

#[tokio::test]
async fn bodies_past_the_buffer_budget_are_answered_503_busy() {
    let dir = dir_with_http(
        "max_body_bytes: 16384, max_buffered_body_bytes: 32768, body_read_timeout: 60s",
    );
    let app = App::start(&dir).await;
    // Two stalled bodies that declare 16,000 bytes hold the whole budget.
    let mut stalled = Vec::new();
    for i in 0..2 {
        let mut stream = connect(&app).await;
        let filler = vec![b' '; 16_000];
        let head = webhook_head(&filler, filler.len(), &format!("stalled-{i}"));
        stream.write_all(head.as_bytes()).await.expect("head");
        stream.write_all(&filler[..100]).await.expect("part");
        stalled.push(stream);
    }
    let body = sample("order-cod.json");
    let mut n = 0;
    let answer = eventually(Duration::from_secs(10), "a 503", || {
        n += 1;
        let id = format!("while-full-{n}");
        let app = &app;
        let body = &body;
        async move {
            let answer = post_whole(app, body, &id).await;
            answer.starts_with("HTTP/1.1 503").then_some(answer)
        }
    })
    .await;
    assert!(answer.contains("max_buffered_body_bytes"), "{answer}");
    // Probes never read a body, so the budget does not touch them.
    let mut probe = connect(&app).await;
    assert!(
        get(&mut probe, "/healthz")
            .await
            .starts_with("HTTP/1.1 200")
    );
    drop(stalled);
    eventually(Duration::from_secs(10), "a webhook served", || async {
        let answer = post_whole(&app, &body, "after").await;
        answer.starts_with("HTTP/1.1 200").then_some(())
    })
    .await;
    let metrics = app.metrics().await;
    assert!(metrics.contains("outcome=\"busy\"}"), "{metrics}");
    app.stop().await;
}
