//! Configuration: `waybill.yaml`, pipelines, connectors and mappings.
//!
//! Files are read into raw structs exactly as written (strict: unknown keys
//! are errors), `${VAR}` / `${VAR:-default}` are substituted in parsed string
//! values, and a compile step turns everything into the checked objects below,
//! reporting every problem at once as a [`Diagnostic`].
//!
//! ```yaml
//! data_dir: ./data
//! bus: { kind: embedded }
//! http: { listen: "127.0.0.1:8080" }
//! accounts:
//!   shopify-main: { connector: shopify, credentials: { webhook_secret: "${SHOPIFY_SECRET:-dev-secret}" } }
//!   courier-main: { connector: sandbox }
//! pipelines: [ "pipelines/*.yaml" ]
//! ```

mod compile;
pub mod interpolate;
pub mod raw;

pub use crate::connector::Account;
pub use crate::diagnostic::Diagnostic;

use crate::connector::Connector;
use crate::mapping::{Expr, Mapping};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The checked, resolved configuration.
#[derive(Debug)]
pub struct Config {
    /// The main config file.
    pub path: PathBuf,
    /// Directory of the main config file; relative paths resolve against it.
    pub base_dir: PathBuf,
    pub data_dir: PathBuf,
    pub bus: BusSettings,
    pub store: StoreSettings,
    pub http: HttpSettings,
    pub accounts: BTreeMap<String, Arc<Account>>,
    pub connectors: BTreeMap<String, Arc<Connector>>,
    pub pipelines: Vec<Arc<Pipeline>>,
    /// The top-level `sync:`, defaults filled in.
    pub sync: SyncSettings,
    /// The effective `sync:` of every courier account that is polled (its
    /// connector declares `track`), overrides applied.
    pub polled_accounts: BTreeMap<String, SyncSettings>,
    /// The top-level `cod:`, defaults filled in.
    pub cod: CodSettings,
}

/// How the COD ledger judges remittances and asks couriers about payments.
#[derive(Debug, Clone, PartialEq)]
pub struct CodSettings {
    pub tolerance: rust_decimal::Decimal,
    pub payment_interval: Duration,
}

impl Default for CodSettings {
    fn default() -> Self {
        CodSettings {
            tolerance: crate::model::cod::DEFAULT_TOLERANCE
                .parse()
                .unwrap_or(rust_decimal::Decimal::ONE),
            payment_interval: Duration::from_secs(6 * 3600),
        }
    }
}

/// How the scheduler polls couriers' `track` operations.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncSettings {
    pub interval: Duration,
    pub max_interval: Duration,
    pub max_age: Duration,
    pub max_in_flight: usize,
}

impl Default for SyncSettings {
    fn default() -> Self {
        SyncSettings {
            interval: Duration::from_secs(15 * 60),
            max_interval: Duration::from_secs(6 * 3600),
            max_age: Duration::from_secs(45 * 86_400),
            max_in_flight: 32,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum BusSettings {
    Embedded,
    Kafka {
        brokers: String,
        /// Prepended to every topic and consumer group; empty by default.
        topic_prefix: String,
        properties: BTreeMap<String, String>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct StoreSettings {
    /// `sqlite://…` or `postgres://…`; resolved to `<data_dir>/waybill.db` when absent.
    pub url: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HttpSettings {
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    /// Connections served at once, besides the few kept for probes.
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
    pub body_read_timeout: Duration,
    /// Bytes of request bodies held at once while they are read.
    pub max_buffered_body_bytes: usize,
}

/// A compiled pipeline.
#[derive(Debug)]
pub struct Pipeline {
    pub name: String,
    /// Input topic.
    pub input: String,
    /// Only messages from these store accounts; empty means all.
    pub accounts: Vec<String>,
    pub steps: Vec<Step>,
    pub output: Option<String>,
    pub retry: RetryPolicy,
    pub dead_letter: String,
    /// Bound on courier requests in flight at once (cross-key concurrency).
    pub max_in_flight: usize,
    /// What an edit of an order after booking does.
    pub on_change: OnChange,
    /// File the pipeline was read from.
    pub file: PathBuf,
}

/// What a pipeline does when an order booked before maps to a different
/// shipment now (`on_change:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnChange {
    /// A `needs_review` dead letter with the field-by-field difference.
    #[default]
    Review,
    /// Nothing: the parcel goes as booked.
    Ignore,
    /// Cancel the booking at the courier, then book the order again under
    /// the next sequence.
    Rebook,
}

impl OnChange {
    /// Every value as written in YAML.
    pub const NAMES: [&'static str; 3] = ["review", "ignore", "rebook"];

    pub fn parse(text: &str) -> Option<OnChange> {
        Some(match text {
            "review" => OnChange::Review,
            "ignore" => OnChange::Ignore,
            "rebook" => OnChange::Rebook,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            OnChange::Review => "review",
            OnChange::Ignore => "ignore",
            OnChange::Rebook => "rebook",
        }
    }
}

impl Pipeline {
    /// The consumer group of this pipeline.
    pub fn group(&self) -> String {
        format!("waybill.{}", self.name)
    }
}

/// A compiled step.
#[derive(Debug)]
pub enum Step {
    Trigger(Expr),
    Map(Arc<Mapping>),
    Validate(Vec<ValidationRule>),
    Route(Vec<RouteRule>),
    Book,
    Notify(Arc<NotifyStep>),
    /// Writes tracking and statuses back to the store (`sinks::write_back`).
    WriteBack,
}

impl Step {
    /// Stage name for metrics and dead letters.
    pub fn stage(&self) -> &'static str {
        match self {
            Step::Trigger(_) => "trigger",
            Step::Map(_) => "map",
            Step::Validate(_) => "validate",
            Step::Route(_) => "route",
            Step::Book => "book",
            Step::Notify(_) => "notify",
            Step::WriteBack => "write_back",
        }
    }
}

/// A compiled `notify` step.
#[derive(Debug)]
pub struct NotifyStep {
    /// The notifier account posted through.
    pub account: String,
    /// Where the POST goes: the account's `base_url`, else the connector's.
    pub url: String,
    pub body: Arc<Mapping>,
    /// The canonical statuses notified.
    pub statuses: Vec<crate::model::Status>,
    pub signature_header: String,
    pub timeout: Duration,
}

impl Pipeline {
    /// The `notify` step, when this is a notify pipeline.
    pub fn notify(&self) -> Option<&Arc<NotifyStep>> {
        self.steps.iter().find_map(|step| match step {
            Step::Notify(notify) => Some(notify),
            _ => None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValidationRule {
    /// A recipient phone that normalises.
    Phone,
    /// A shipping address with a first line and a city.
    ShippingAddress,
    /// A non-negative COD amount; positive when payment is `cod`.
    CodAmount,
}

#[derive(Debug)]
pub struct RouteRule {
    /// `None` is the default route.
    pub when: Option<Expr>,
    /// Courier account name.
    pub to: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub initial: Duration,
    pub max_delay: Duration,
    pub max_elapsed: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 8,
            initial: Duration::from_millis(500),
            max_delay: Duration::from_secs(60),
            max_elapsed: Duration::from_secs(30 * 60),
        }
    }
}

/// Reads and compiles the configuration rooted at `path`, returning every
/// problem found.
pub fn load(path: &Path) -> Result<Config, Vec<Diagnostic>> {
    compile::load_with(path, &|name| std::env::var(name).ok())
}
