//! The `sandbox` courier, served by waybill itself under `/sandbox/…`, so the
//! whole loop can be seen on a fresh machine without a courier account.
//!
//! `POST /sandbox/book` takes a JSON shipment and answers
//! `{"tracking_number": "SBX-…", "reference": …}`; the same `reference` always
//! gets the same tracking number, so a replay never shows a duplicate.
//!
//! ```yaml
//! accounts:
//!   courier-main: { connector: sandbox }
//! ```

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// The sandbox courier's in-memory bookings.
#[derive(Debug, Clone, Default)]
pub struct Sandbox {
    /// Reference → tracking number.
    bookings: Arc<Mutex<HashMap<String, String>>>,
}

impl Sandbox {
    pub fn new() -> Self {
        Sandbox::default()
    }

    /// Routes relative to where the HTTP server mounts them (`/sandbox`).
    pub fn router(&self) -> Router {
        Router::new()
            .route("/book", post(book))
            .with_state(self.clone())
    }

    /// Distinct bookings made so far.
    pub fn bookings(&self) -> usize {
        self.bookings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// The tracking number booked for `reference`, if any.
    pub fn tracking_number(&self, reference: &str) -> Option<String> {
        self.bookings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(reference)
            .cloned()
    }

    fn book(&self, reference: &str) -> String {
        let mut bookings = self.bookings.lock().unwrap_or_else(PoisonError::into_inner);
        bookings
            .entry(reference.to_string())
            .or_insert_with(|| {
                let id = uuid::Uuid::new_v4().simple().to_string().to_uppercase();
                format!("SBX-{}", &id[..12])
            })
            .clone()
    }
}

/// The sandbox routes with fresh state, for `Router::nest("/sandbox", router())`.
pub fn router() -> Router {
    Sandbox::new().router()
}

async fn book(State(sandbox): State<Sandbox>, body: Bytes) -> Response {
    let shipment: Value = match serde_json::from_slice(&body) {
        Ok(shipment) => shipment,
        Err(err) => return bad_request(format!("the body is not JSON: {err}")),
    };
    let reference = match shipment.get("reference") {
        Some(Value::String(text)) if !text.trim().is_empty() => text.clone(),
        Some(Value::Number(number)) => number.to_string(),
        _ => return bad_request("the shipment needs a non-empty `reference`".into()),
    };
    let tracking_number = sandbox.book(&reference);
    (
        StatusCode::OK,
        axum::Json(json!({ "tracking_number": tracking_number, "reference": reference })),
    )
        .into_response()
}

fn bad_request(message: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({ "error": message })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serves `sandbox` on a loopback port, as the HTTP server would under `/sandbox`.
    pub(crate) async fn serve(sandbox: &Sandbox) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let app = Router::new().nest("/sandbox", sandbox.router());
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{address}")
    }

    async fn call(sandbox: &Sandbox, body: &str) -> (StatusCode, Value) {
        let base = serve(sandbox).await;
        let response = reqwest::Client::new()
            .post(format!("{base}/sandbox/book"))
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
        (status, response.json().await.unwrap())
    }

    #[tokio::test]
    async fn books_once_per_reference() {
        let sandbox = Sandbox::new();
        let (status, first) = call(&sandbox, r##"{"reference": "#1001", "order_id": "1"}"##).await;
        assert_eq!(status, StatusCode::OK);
        let tracking = first["tracking_number"].as_str().unwrap().to_string();
        assert!(tracking.starts_with("SBX-"));
        assert_eq!(first["reference"], "#1001");
        let (_, again) = call(&sandbox, r##"{"reference": "#1001"}"##).await;
        assert_eq!(again["tracking_number"], tracking.as_str());
        let (_, other) = call(&sandbox, r##"{"reference": "#1002"}"##).await;
        assert_ne!(other["tracking_number"], tracking.as_str());
        assert_eq!(sandbox.bookings(), 2);
        assert_eq!(sandbox.tracking_number("#1001"), Some(tracking));
    }

    #[tokio::test]
    async fn bad_requests_get_400_with_a_message() {
        let sandbox = Sandbox::new();
        for body in [
            "{not json",
            r#"{"order_id": "1"}"#,
            r#"{"reference": ""}"#,
            "[]",
        ] {
            let (status, answer) = call(&sandbox, body).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
            assert!(answer["error"].as_str().unwrap().len() > 5);
        }
        assert_eq!(sandbox.bookings(), 0);
    }
}
