//! The `sandbox` courier, served by waybill itself under `/sandbox/…`, so the
//! whole loop can be seen on a fresh machine without a courier account.
//!
//! - `POST /sandbox/book` takes a JSON shipment and answers
//!   `{"tracking_number": "SBX-…", "reference": …, "status": "booked"}`; the
//!   same `reference` always gets the same tracking number, so a replay
//!   never shows a duplicate.
//! - The parcel then moves one step every `step` (an account setting,
//!   default `10s`): booked → picked up → in transit → out for delivery →
//!   delivered. A shipment whose notes contain `sandbox:return` fails
//!   delivery instead and goes back: … → out for delivery → delivery failed
//!   → returning → returned. Each move is posted as a callback to waybill's
//!   own `/callbacks/sandbox/<account>`, verified as the connector's
//!   `callback:` declares (signed with the account's `callback_secret`).
//! - `GET /sandbox/track/<tracking number>` answers where the parcel is now,
//!   with its history so far.
//! - `POST /sandbox/cancel/<tracking number>` cancels a parcel that is still
//!   `booked` (`{"status": "cancelled"}`); one that moved on answers 409. A
//!   cancelled parcel stops moving, tracks as `cancelled`, and its reference
//!   may be booked again under a new tracking number.
//! - `GET /sandbox/payment/<tracking number>` answers whether the sandbox
//!   paid the merchant the parcel's COD: one step after delivery it is
//!   `settled`, with the amount booked less a fee of [`FEE_PERCENT`]% and a
//!   `SBXPAY-…` reference. A parcel booked before a restart is settled
//!   without an amount (the sandbox keeps bookings in memory only).
//!
//! Where a parcel is depends only on its booking time, the step and the
//! clock: the tracking number carries the booking time and whether the
//! parcel goes back, so `track` answers rightly after a restart too. Moves
//! that fell due while waybill was down are not posted again; the scheduled
//! `track` finds them.
//!
//! ```yaml
//! accounts:
//!   courier-main: { connector: sandbox, settings: { step: 10s } }
//! ```

use super::{Account, CallbackSpec, Connector};
use crate::clock::{parse_duration, timestamp};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use time::OffsetDateTime;
use tokio::sync::watch;

/// The connector name whose accounts the sandbox serves.
pub const CONNECTOR: &str = "sandbox";

/// Header naming the account a booking or track request is for; the
/// connector file sends it (`{{ account.name }}`).
pub const ACCOUNT_HEADER: &str = "x-sandbox-account";

/// What notes ask for a parcel that is refused and returned.
pub const RETURN_MARK: &str = "sandbox:return";

/// The step when an account sets none (or one that is not a duration).
pub const DEFAULT_STEP: Duration = Duration::from_secs(10);

/// Steps shorter than this are taken as this: a zero step would post every
/// move at once, out of any order a courier keeps.
const MIN_STEP: Duration = Duration::from_millis(10);

/// Steps longer than this are taken as this, so times stay in range.
const MAX_STEP: Duration = Duration::from_secs(30 * 24 * 3600);

/// The sandbox's fee on a COD parcel, in percent of the amount collected.
pub const FEE_PERCENT: u32 = 2;

/// Tries of each callback before it is left to polling.
const CALLBACK_ATTEMPTS: u32 = 5;

/// One place on a parcel's route: the raw status (as the connector's
/// status table knows it), its code, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Move {
    status: &'static str,
    code: &'static str,
    reason: Option<&'static str>,
}

const fn step(status: &'static str, code: &'static str) -> Move {
    Move {
        status,
        code,
        reason: None,
    }
}

const DELIVERED: &[Move] = &[
    step("booked", "BK"),
    step("picked up", "PU"),
    step("in transit", "IT"),
    step("out for delivery", "OD"),
    step("delivered", "DL"),
];

const RETURNED: &[Move] = &[
    step("booked", "BK"),
    step("picked up", "PU"),
    step("in transit", "IT"),
    step("out for delivery", "OD"),
    Move {
        status: "delivery failed",
        code: "DF",
        reason: Some("consignee refused the parcel"),
    },
    step("returning", "RT"),
    step("returned", "RD"),
];

/// A booked parcel: everything its route and times follow from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Parcel {
    /// Booking time, milliseconds since the epoch.
    booked_ms: i64,
    returns: bool,
    /// Tells apart parcels booked in the same millisecond.
    salt: u32,
}

impl Parcel {
    fn new(returns: bool) -> Parcel {
        let now = OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
        Parcel {
            booked_ms: i64::try_from(now).unwrap_or(0),
            returns,
            salt: uuid::Uuid::new_v4().as_u128() as u32 & 0xFF_FFFF,
        }
    }

    /// `SBX-` + `D` (delivered) or `R` (returned) + the booking time in 11
    /// hex digits + 6 of salt.
    fn tracking_number(&self) -> String {
        let route = if self.returns { 'R' } else { 'D' };
        format!("SBX-{route}{:011X}{:06X}", self.booked_ms, self.salt)
    }

    fn parse(tracking_number: &str) -> Option<Parcel> {
        let rest = tracking_number.strip_prefix("SBX-")?;
        if rest.len() != 18 || !rest.is_ascii() {
            return None;
        }
        let returns = match &rest[..1] {
            "D" => false,
            "R" => true,
            _ => return None,
        };
        Some(Parcel {
            returns,
            booked_ms: i64::from_str_radix(&rest[1..12], 16).ok()?,
            salt: u32::from_str_radix(&rest[12..], 16).ok()?,
        })
    }

    fn route(&self) -> &'static [Move] {
        if self.returns { RETURNED } else { DELIVERED }
    }

    /// When move `n` happens, milliseconds since the epoch.
    fn due_ms(&self, n: usize, step: Duration) -> i64 {
        let offset = (n as i64).saturating_mul(step.as_millis() as i64);
        self.booked_ms.saturating_add(offset)
    }

    /// How many moves have happened by `now_ms` beyond the booking.
    fn moves_by(&self, now_ms: i64, step: Duration) -> usize {
        let elapsed = now_ms.saturating_sub(self.booked_ms).max(0);
        let steps = elapsed / (step.as_millis() as i64).max(1);
        usize::try_from(steps)
            .unwrap_or(usize::MAX)
            .min(self.route().len() - 1)
    }

    /// Move `n` as the courier reports it.
    fn event(&self, tracking_number: &str, n: usize, step: Duration) -> Value {
        let place = self.route()[n];
        json!({
            "tracking_number": tracking_number,
            "status": place.status,
            "code": place.code,
            "time": time_text(self.due_ms(n, step)),
            "reason": place.reason,
        })
    }
}

fn now_ms() -> i64 {
    i64::try_from(OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

fn time_text(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map(timestamp)
        .unwrap_or_default()
}

/// An account's `step` setting, within bounds.
fn step_of(account: Option<&Account>) -> Duration {
    let Some(text) = account.and_then(|a| a.settings.get("step")?.as_str()) else {
        return DEFAULT_STEP;
    };
    match parse_duration(text) {
        Ok(step) => step.clamp(MIN_STEP, MAX_STEP),
        Err(e) => {
            tracing::warn!(error = %e, "sandbox step is not a duration; using 10s");
            DEFAULT_STEP
        }
    }
}

/// The sandbox courier's in-memory bookings, and what moves its parcels.
#[derive(Debug, Clone, Default)]
pub struct Sandbox {
    /// Reference → tracking number.
    bookings: Arc<Mutex<HashMap<String, String>>>,
    /// Cancelled tracking number → when, milliseconds since the epoch.
    cancelled: Cancelled,
    /// Tracking number → the COD amount booked, as the shipment wrote it.
    amounts: Arc<Mutex<HashMap<String, String>>>,
    /// `None`: parcels do not post their moves (the sandbox alone, in tests).
    moves: Option<Arc<Moves>>,
}

impl Sandbox {
    /// A sandbox whose parcels post no callbacks.
    pub fn new() -> Self {
        Sandbox::default()
    }

    /// A sandbox whose parcels post their moves as `moves` says.
    pub fn moving(moves: Moves) -> Self {
        Sandbox {
            bookings: Arc::default(),
            cancelled: Cancelled::default(),
            amounts: Arc::default(),
            moves: Some(Arc::new(moves)),
        }
    }

    /// Routes relative to where the HTTP server mounts them (`/sandbox`).
    pub fn router(&self) -> Router {
        Router::new()
            .route("/book", post(book))
            .route("/track/{tracking_number}", get(track))
            .route("/cancel/{tracking_number}", post(cancel))
            .route("/payment/{tracking_number}", get(payment))
            .with_state(self.clone())
    }

    /// Distinct bookings made so far.
    pub fn bookings(&self) -> usize {
        self.lock().len()
    }

    /// The tracking number booked for `reference`, if any.
    pub fn tracking_number(&self, reference: &str) -> Option<String> {
        self.lock().get(reference).cloned()
    }

    /// Parcels cancelled so far.
    pub fn cancellations(&self) -> usize {
        self.cancelled.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.bookings.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The reference's tracking number, and whether it was booked just now.
    fn book(&self, reference: &str, returns: bool) -> (String, bool) {
        let mut bookings = self.lock();
        if let Some(known) = bookings.get(reference) {
            return (known.clone(), false);
        }
        let tracking_number = Parcel::new(returns).tracking_number();
        bookings.insert(reference.to_string(), tracking_number.clone());
        (tracking_number, true)
    }

    fn account(&self, headers: &HeaderMap) -> Option<Arc<Account>> {
        let name = headers.get(ACCOUNT_HEADER)?.to_str().ok()?;
        self.moves.as_ref()?.accounts.get(name).cloned()
    }
}

/// Cancelled parcels, shared with the tasks that move them.
#[derive(Debug, Clone, Default)]
struct Cancelled(Arc<Mutex<HashMap<String, i64>>>);

impl Cancelled {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, i64>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn at(&self, tracking_number: &str) -> Option<i64> {
        self.lock().get(tracking_number).copied()
    }
}

/// The sandbox routes with fresh state and no callbacks, for
/// `Router::nest("/sandbox", router())`.
pub fn router() -> Router {
    Sandbox::new().router()
}

/// Where and how parcels post their moves: waybill's own callback endpoint.
#[derive(Debug)]
pub struct Moves {
    /// waybill's own base URL, e.g. `http://127.0.0.1:8080`.
    base_url: String,
    http: reqwest::Client,
    /// The sandbox connector's callback rules, which the posts follow.
    callback: CallbackSpec,
    /// The sandbox accounts of the config, by name.
    accounts: BTreeMap<String, Arc<Account>>,
    /// Parcels stop moving when it turns true.
    stop: watch::Receiver<bool>,
}

impl Moves {
    /// Moves for the sandbox accounts among `accounts`; `None` when the
    /// sandbox connector is not loaded or takes no callbacks.
    pub fn new(
        connectors: &BTreeMap<String, Arc<Connector>>,
        accounts: &BTreeMap<String, Arc<Account>>,
        base_url: String,
        http: reqwest::Client,
        stop: watch::Receiver<bool>,
    ) -> Option<Moves> {
        let callback = connectors.get(CONNECTOR)?.callback.clone()?;
        let accounts = accounts
            .iter()
            .filter(|(_, account)| account.connector == CONNECTOR)
            .map(|(name, account)| (name.clone(), account.clone()))
            .collect();
        Some(Moves {
            base_url,
            http,
            callback,
            accounts,
            stop,
        })
    }

    /// Moves a parcel just booked for `account` along its route.
    fn start(
        self: &Arc<Self>,
        account: Arc<Account>,
        tracking_number: String,
        cancelled: Cancelled,
    ) {
        let Some(parcel) = Parcel::parse(&tracking_number) else {
            return;
        };
        let moves = self.clone();
        tokio::spawn(async move {
            moves
                .carry(&account, &tracking_number, parcel, &cancelled)
                .await
        });
    }

    async fn carry(
        &self,
        account: &Account,
        tracking_number: &str,
        parcel: Parcel,
        cancelled: &Cancelled,
    ) {
        let step = step_of(Some(account));
        for n in 1..parcel.route().len() {
            let wait = parcel.due_ms(n, step).saturating_sub(now_ms()).max(0);
            if !self.wait(Duration::from_millis(wait as u64)).await {
                return;
            }
            if cancelled.at(tracking_number).is_some() {
                return;
            }
            let body = json!({ "events": [parcel.event(tracking_number, n, step)] });
            let delivery_id = format!("{tracking_number}:{n}");
            if !self.post(account, &body, &delivery_id).await {
                return;
            }
        }
    }

    /// Sleeps for `wait`; false when told to stop first.
    async fn wait(&self, wait: Duration) -> bool {
        let mut stop = self.stop.clone();
        if *stop.borrow() {
            return false;
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => true,
            _ = stop.wait_for(|stop| *stop) => false,
        }
    }

    /// Posts one callback, retrying what may pass; false when stopping.
    async fn post(&self, account: &Account, body: &Value, delivery_id: &str) -> bool {
        let secret = account
            .credentials
            .get(self.callback.secret_credential())
            .map_or("", String::as_str);
        // Serialising a JSON value cannot fail.
        let bytes = serde_json::to_vec(body).unwrap_or_default();
        let (path, headers) = crate::sources::callback::outgoing(
            &self.callback,
            CONNECTOR,
            &account.name,
            secret,
            &bytes,
            delivery_id,
        );
        let url = format!("{}{path}", self.base_url);
        for attempt in 0..CALLBACK_ATTEMPTS {
            let mut request = self
                .http
                .post(&url)
                .body(bytes.clone())
                .timeout(Duration::from_secs(10));
            for (name, value) in &headers {
                request = request.header(name.as_str(), value.as_str());
            }
            let answer = request.send().await.map(|r| r.status());
            match answer {
                Ok(status) if status.is_success() => return true,
                // Refused for good (a secret changed, say): polling will see it.
                Ok(status) if status.is_client_error() && status.as_u16() != 408 => {
                    tracing::warn!(account = %account.name, delivery_id, status = status.as_u16(), "sandbox callback refused");
                    return true;
                }
                _ => {}
            }
            if !self.wait(Duration::from_millis(200 << attempt)).await {
                return false;
            }
        }
        tracing::warn!(account = %account.name, delivery_id, "sandbox callback not taken; left to polling");
        true
    }
}

async fn book(State(sandbox): State<Sandbox>, headers: HeaderMap, body: Bytes) -> Response {
    let shipment: Value = match serde_json::from_slice(&body) {
        Ok(shipment) => shipment,
        Err(err) => return bad_request(format!("the body is not JSON: {err}")),
    };
    let reference = match shipment.get("reference") {
        Some(Value::String(text)) if !text.trim().is_empty() => text.clone(),
        Some(Value::Number(number)) => number.to_string(),
        _ => return bad_request("the shipment needs a non-empty `reference`".into()),
    };
    let returns = shipment
        .get("notes")
        .and_then(Value::as_str)
        .is_some_and(|notes| notes.to_ascii_lowercase().contains(RETURN_MARK));
    let (tracking_number, new) = sandbox.book(&reference, returns);
    if let Some(amount) = shipment.get("cod_amount").and_then(amount_text) {
        sandbox
            .amounts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(tracking_number.clone(), amount);
    }
    if new && let (Some(moves), Some(account)) = (&sandbox.moves, sandbox.account(&headers)) {
        moves.start(account, tracking_number.clone(), sandbox.cancelled.clone());
    }
    (
        StatusCode::OK,
        axum::Json(json!({
            "tracking_number": tracking_number,
            "reference": reference,
            "status": "booked",
        })),
    )
        .into_response()
}

/// Where the parcel is now, and every move so far.
async fn track(
    State(sandbox): State<Sandbox>,
    Path(tracking_number): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(parcel) = Parcel::parse(&tracking_number) else {
        return never_issued();
    };
    if let Some(at) = sandbox.cancelled.at(&tracking_number) {
        let answer = json!({
            "tracking_number": tracking_number,
            "status": "cancelled",
            "code": "CN",
            "time": time_text(at),
            "reason": "cancelled by the shipper",
        });
        return (StatusCode::OK, axum::Json(answer)).into_response();
    }
    let step = step_of(sandbox.account(&headers).as_deref());
    let now = parcel.moves_by(now_ms(), step);
    let history: Vec<Value> = (0..=now)
        .map(|n| parcel.event(&tracking_number, n, step))
        .collect();
    let mut answer = history[now].clone();
    answer["history"] = Value::Array(history);
    (StatusCode::OK, axum::Json(answer)).into_response()
}

/// The answer to a tracking number the sandbox never issued.
fn never_issued() -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(json!({ "error": "no such sandbox tracking number" })),
    )
        .into_response()
}

/// Cancels a parcel that has not moved since it was booked.
async fn cancel(
    State(sandbox): State<Sandbox>,
    Path(tracking_number): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(parcel) = Parcel::parse(&tracking_number) else {
        return never_issued();
    };
    let step = step_of(sandbox.account(&headers).as_deref());
    let now = now_ms();
    let mut cancelled = sandbox.cancelled.lock();
    if !cancelled.contains_key(&tracking_number) {
        let moves = parcel.moves_by(now, step);
        if moves > 0 {
            let place = parcel.route()[moves].status;
            return (
                StatusCode::CONFLICT,
                axum::Json(json!({ "error": format!("the parcel is {place} already; it can no longer be cancelled") })),
            )
                .into_response();
        }
        cancelled.insert(tracking_number.clone(), now);
        // Its reference may be booked again, as a new parcel.
        sandbox
            .lock()
            .retain(|_, booked| booked != &tracking_number);
    }
    let answer = json!({ "tracking_number": tracking_number, "status": "cancelled" });
    (StatusCode::OK, axum::Json(answer)).into_response()
}

/// A COD amount as the shipment wrote it (decimal text or a number).
fn amount_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// Whether the sandbox paid the parcel's COD, and what.
async fn payment(
    State(sandbox): State<Sandbox>,
    Path(tracking_number): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(parcel) = Parcel::parse(&tracking_number) else {
        return never_issued();
    };
    let step = step_of(sandbox.account(&headers).as_deref());
    let last = parcel.route().len() - 1;
    let paid_ms = parcel.due_ms(last + 1, step);
    let cancelled = sandbox.cancelled.lock().contains_key(&tracking_number);
    if parcel.returns || cancelled || now_ms() < paid_ms {
        return (StatusCode::OK, axum::Json(json!({ "settled": false }))).into_response();
    }
    let booked = sandbox
        .amounts
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&tracking_number)
        .and_then(|a| rust_decimal::Decimal::from_str_exact(a.trim()).ok());
    let fee_of = |amount: rust_decimal::Decimal| {
        let fees = amount
            .checked_mul(rust_decimal::Decimal::from(FEE_PERCENT))?
            .checked_div(rust_decimal::Decimal::from(100))?
            .round_dp(2);
        Some((amount.checked_sub(fees)?, fees))
    };
    let (amount, fees) = match booked.and_then(fee_of) {
        Some((paid, fees)) => (Some(paid.to_string()), Some(fees.to_string())),
        None => (None, None),
    };
    (
        StatusCode::OK,
        axum::Json(json!({
            "settled": true,
            "amount": amount,
            "fees": fees,
            "paid_at": time_text(paid_ms),
            "reference": format!("SBXPAY-{}", tracking_number.trim_start_matches("SBX-")),
        })),
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
pub(crate) mod tests {
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
        assert!(tracking.starts_with("SBX-D"), "{tracking}");
        assert_eq!(first["reference"], "#1001");
        let (_, again) = call(&sandbox, r##"{"reference": "#1001"}"##).await;
        assert_eq!(again["tracking_number"], tracking.as_str());
        let (_, other) = call(&sandbox, r##"{"reference": "#1002"}"##).await;
        assert_ne!(other["tracking_number"], tracking.as_str());
        assert_eq!(sandbox.bookings(), 2);
        assert_eq!(sandbox.tracking_number("#1001"), Some(tracking));
        let (_, back) = call(
            &sandbox,
            r##"{"reference": "#1003", "notes": "Call first. SANDBOX:RETURN"}"##,
        )
        .await;
        assert!(
            back["tracking_number"]
                .as_str()
                .unwrap()
                .starts_with("SBX-R")
        );
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

    #[test]
    fn a_parcel_is_where_its_booking_time_and_step_put_it() {
        let step = Duration::from_secs(10);
        let parcel = Parcel {
            booked_ms: 1_778_576_591_000,
            returns: false,
            salt: 0xABCDEF,
        };
        let tracking = parcel.tracking_number();
        assert_eq!(Parcel::parse(&tracking), Some(parcel), "{tracking}");
        for bad in [
            "SBX-1",
            "CX-D19E1B1B5D18ABCDEF",
            "SBX-X19E1B1B5D18ABCDEF",
            "SBX-D19E1B1B5D18ABCDEG",
            "SBX-D19E1B1B5D18ABCDÉ",
        ] {
            assert_eq!(Parcel::parse(bad), None, "{bad}");
        }
        let at = |seconds: i64| parcel.moves_by(parcel.booked_ms + seconds * 1000, step);
        assert_eq!(
            [at(-5), at(0), at(9), at(10), at(35), at(40), at(1_000_000)],
            [0, 0, 0, 1, 3, 4, 4]
        );
        assert_eq!(parcel.event(&tracking, 4, step)["status"], "delivered");
        assert_eq!(
            parcel.event(&tracking, 1, step)["time"],
            time_text(parcel.booked_ms + 10_000)
        );
        let back = Parcel {
            returns: true,
            ..parcel
        };
        let route: Vec<&str> = back.route().iter().map(|m| m.status).collect();
        assert_eq!(
            route,
            [
                "booked",
                "picked up",
                "in transit",
                "out for delivery",
                "delivery failed",
                "returning",
                "returned"
            ]
        );
        assert_eq!(back.moves_by(i64::MAX, step), 6);
        assert_eq!(
            Parcel {
                booked_ms: i64::MAX,
                ..parcel
            }
            .due_ms(6, MAX_STEP),
            i64::MAX
        );
    }

    #[tokio::test]
    async fn payment_is_settled_one_step_after_delivery_less_the_fee() {
        let sandbox = Sandbox::new();
        let base = serve(&sandbox).await;
        let http = reqwest::Client::new();
        let ask = |tracking: String| {
            let http = http.clone();
            let base = base.clone();
            async move {
                let answer: Value = http
                    .get(format!("{base}/sandbox/payment/{tracking}"))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                answer
            }
        };
        let parcel = |ago_ms: i64, returns: bool| Parcel {
            booked_ms: now_ms() - ago_ms,
            returns,
            salt: 7,
        };
        let paid = parcel(60_000, false).tracking_number();
        sandbox
            .amounts
            .lock()
            .unwrap()
            .insert(paid.clone(), "1500.00".into());
        let answer = ask(paid.clone()).await;
        assert_eq!(answer["settled"], true, "{answer}");
        assert_eq!(answer["amount"], "1470.00");
        assert_eq!(answer["fees"], "30.00");
        assert!(
            answer["reference"]
                .as_str()
                .unwrap()
                .starts_with("SBXPAY-D")
        );
        let forgotten = ask(parcel(60_000, false)
            .tracking_number()
            .replace("000007", "000008"))
        .await;
        assert_eq!(forgotten["settled"], true);
        assert_eq!(forgotten["amount"], Value::Null);
        assert_eq!(
            ask(parcel(45_000, false).tracking_number()).await["settled"],
            false
        );
        assert_eq!(
            ask(parcel(600_000, true).tracking_number()).await["settled"],
            false
        );
    }

    #[tokio::test]
    async fn track_answers_the_current_move_and_the_history() {
        let sandbox = Sandbox::new();
        let base = serve(&sandbox).await;
        let http = reqwest::Client::new();
        let parcel = Parcel {
            booked_ms: now_ms() - 25_000,
            returns: true,
            salt: 1,
        };
        let answer: Value = http
            .get(format!("{base}/sandbox/track/{}", parcel.tracking_number()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(answer["status"], "in transit", "{answer}");
        assert_eq!(answer["code"], "IT");
        assert_eq!(answer["history"].as_array().unwrap().len(), 3);
        let unknown = http
            .get(format!("{base}/sandbox/track/CX-1"))
            .send()
            .await
            .unwrap();
        assert_eq!(unknown.status().as_u16(), 404);
    }

    #[tokio::test]
    async fn a_parcel_cancels_only_before_it_moves_and_its_reference_books_anew() {
        let sandbox = Sandbox::new();
        let base = serve(&sandbox).await;
        let http = reqwest::Client::new();
        let (_, booked) = call(&sandbox, r#"{"reference": "R-1"}"#).await;
        let number = booked["tracking_number"].as_str().unwrap().to_string();
        let cancel = |number: String| {
            let http = http.clone();
            let url = format!("{base}/sandbox/cancel/{number}");
            async move {
                let answer = http.post(url).send().await.unwrap();
                let status = answer.status().as_u16();
                (status, answer.json::<Value>().await.unwrap())
            }
        };
        let (status, answer) = cancel(number.clone()).await;
        assert_eq!(
            (status, answer["status"].as_str()),
            (200, Some("cancelled"))
        );
        assert_eq!(
            cancel(number.clone()).await.0,
            200,
            "cancelling twice is fine"
        );
        assert_eq!(sandbox.cancellations(), 1);
        let tracked: Value = http
            .get(format!("{base}/sandbox/track/{number}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(tracked["status"], "cancelled");
        let (_, again) = call(&sandbox, r#"{"reference": "R-1"}"#).await;
        assert_ne!(again["tracking_number"], booked["tracking_number"]);

        let moved = Parcel {
            booked_ms: now_ms() - 15_000,
            returns: false,
            salt: 2,
        };
        let (status, answer) = cancel(moved.tracking_number()).await;
        assert_eq!(status, 409);
        assert!(
            answer["error"].as_str().unwrap().contains("picked up"),
            "{answer}"
        );
        assert_eq!(cancel("CX-1".into()).await.0, 404);
    }
}
