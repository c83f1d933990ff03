//! Connector definitions: a YAML file in `connectors/` read strictly and
//! compiled into a checked [`Connector`], with every problem reported at once
//! as `FILE:LINE:COL: message`.
//!
//! ```yaml
//! name: sandbox
//! kind: courier
//! base_url: "waybill:/sandbox"
//! operations:
//!   book:
//!     request: { method: POST, path: /book, body: mappings/sandbox/book.yaml }
//!     success: "response.status == 200 and body.tracking_number"
//!     extract: { tracking_number: "$.tracking_number" }
//!     errors:
//!       - { when: "response.status == 409", class: needs_review }
//!     status_classes: { "500": retryable }
//!     timeout: 10s
//! statuses:
//!   table: { "Booked": booked, "Attempt Made:*": { status: delivery_failed, sub_status: attempted } }
//!   unknown: unknown
//! ```

use super::{Connector, ConnectorKind, FieldSpec, FieldType};
use crate::clock::parse_duration;
use crate::diagnostic::Diagnostic;
use crate::mapping::{Expr, Mapping, Template};
use crate::model::{ErrorClass, Status};
use serde::Deserialize;
use serde_json::Value;
use serde_json_path::JsonPath;
use serde_saphyr::{Location, Spanned};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Applied when an operation declares no `timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Operations a connector may declare.
pub const OPERATIONS: [&str; 4] = ["book", "track", "cancel", "lookup"];

/// One compiled operation (`book`, `track`, …).
#[derive(Debug)]
pub struct Operation {
    pub name: String,
    pub method: reqwest::Method,
    /// Path template appended to the base URL, e.g. `/track/{{ tracking_number }}`.
    pub path: String,
    /// Header name → value template.
    pub headers: Vec<(String, String)>,
    /// Query parameter name → value template.
    pub query: Vec<(String, String)>,
    /// Field mapping producing the JSON body.
    pub body: Option<Arc<Mapping>>,
    /// The path's templated segments and the header and query values,
    /// compiled once at load and keyed by their source text.
    pub templates: BTreeMap<String, Template>,
    /// Judged against `{response: {status, headers}, body, text}`.
    pub success: Expr,
    /// Name → JSONPath into the response body.
    pub extract: BTreeMap<String, JsonPath>,
    /// First match wins, before the per-status defaults.
    pub errors: Vec<ErrorRule>,
    /// Overrides of the default class per HTTP status.
    pub status_classes: BTreeMap<u16, ErrorClass>,
    /// Expression giving the courier's own error text, e.g. `body.statusMessage`.
    pub error_message: Option<Expr>,
    pub timeout: Duration,
}

/// `errors: [{when, class}]`.
#[derive(Debug)]
pub struct ErrorRule {
    pub when: Expr,
    pub class: ErrorClass,
}

/// How a store signs and names its webhook deliveries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSpec {
    /// Source name used in topics and booking keys, e.g. `shopify`.
    pub source: String,
    pub signature: Option<SignatureSpec>,
    /// Header carrying the store's event name, e.g. `X-Shopify-Topic`.
    pub topic_header: Option<String>,
    /// Header carrying the delivery id used for deduplication.
    pub delivery_id_header: Option<String>,
    /// Where the body holds the order id; `$.id` unless declared.
    pub order_id: OrderIdPath,
}

/// Where a webhook body holds its order id, compiled when the connector
/// loads rather than for every delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderIdPath {
    /// `$.name`: one top-level member, skimmed for without building the body.
    Member(String),
    /// Any other JSONPath, queried on the parsed body.
    Path(JsonPath),
}

impl OrderIdPath {
    pub fn parse(path: &str) -> Result<OrderIdPath, serde_json_path::ParseError> {
        let compiled = JsonPath::parse(path)?;
        let member = path.strip_prefix("$.").filter(|name| {
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        });
        Ok(match member {
            Some(name) => OrderIdPath::Member(name.to_string()),
            None => OrderIdPath::Path(compiled),
        })
    }
}

impl Default for OrderIdPath {
    fn default() -> OrderIdPath {
        OrderIdPath::Member("id".into())
    }
}

/// A signature over the raw request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureSpec {
    pub header: String,
    pub algorithm: SignatureAlgorithm,
    pub encoding: SignatureEncoding,
    /// Credential field holding the shared secret.
    pub secret: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SignatureAlgorithm {
    #[serde(rename = "hmac-sha256")]
    HmacSha256,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignatureEncoding {
    Base64,
    Hex,
}

/// How a courier's status callbacks are authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackSpec {
    /// The callback URL carries a secret path segment.
    pub path_secret: bool,
    pub signature: Option<SignatureSpec>,
}

/// At most `requests` per `per`, for each account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub requests: u32,
    pub per: Duration,
}

/// What a raw courier status means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusMatch {
    pub status: Status,
    pub sub_status: Option<String>,
}

/// Raw courier status → canonical status, matched trimmed, whitespace-collapsed
/// and case-insensitive; a key ending in `*` matches by prefix.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusTable {
    exact: BTreeMap<String, StatusMatch>,
    prefixes: Vec<(String, StatusMatch)>,
    /// Status given to anything not in the table.
    pub unknown: Status,
}

impl StatusTable {
    /// The entry for `raw`, if the table has one.
    pub fn find(&self, raw: &str) -> Option<&StatusMatch> {
        let key = normalise_status(raw);
        self.exact.get(&key).or_else(|| {
            self.prefixes
                .iter()
                .filter(|(prefix, _)| key.starts_with(prefix.as_str()))
                .max_by_key(|(prefix, _)| prefix.len())
                .map(|(_, found)| found)
        })
    }

    /// The entry for `raw`, or the table's `unknown` status.
    pub fn lookup(&self, raw: &str) -> StatusMatch {
        self.find(raw).cloned().unwrap_or(StatusMatch {
            status: self.unknown,
            sub_status: None,
        })
    }
}

fn normalise_status(raw: &str) -> String {
    raw.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConnector {
    name: Option<Spanned<String>>,
    kind: Option<Spanned<RawKind>>,
    description: Option<String>,
    credentials: Option<BTreeMap<String, Spanned<RawField>>>,
    settings: Option<BTreeMap<String, Spanned<RawField>>>,
    base_url: Option<Spanned<String>>,
    operations: Option<RawOperations>,
    webhook: Option<Spanned<RawWebhook>>,
    callback: Option<RawCallback>,
    statuses: Option<Spanned<RawStatuses>>,
    /// `rate_limit: { per_account: { requests: 10, per: 1s } }`, where a
    /// courier documents one: bookings wait for a slot before they are sent.
    rate_limit: Option<RawRateLimit>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum RawKind {
    Store,
    Courier,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum RawFieldType {
    String,
    Number,
    Bool,
    List,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawField {
    #[serde(rename = "type")]
    field_type: RawFieldType,
    #[serde(default)]
    required: bool,
    #[serde(default)]
    secret: bool,
    #[serde(default)]
    description: String,
    default: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawOperations {
    book: Option<Spanned<RawOperation>>,
    track: Option<Spanned<RawOperation>>,
    cancel: Option<Spanned<RawOperation>>,
    lookup: Option<Spanned<RawOperation>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOperation {
    request: RawRequest,
    success: Spanned<String>,
    #[serde(default)]
    extract: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    errors: Vec<RawErrorRule>,
    #[serde(default)]
    status_classes: BTreeMap<String, Spanned<ErrorClass>>,
    error_message: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequest {
    method: Spanned<String>,
    path: Spanned<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    query: BTreeMap<String, String>,
    body: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawErrorRule {
    when: Spanned<String>,
    class: ErrorClass,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    source: String,
    signature: Option<Spanned<RawSignature>>,
    topic_header: Option<String>,
    delivery_id_header: Option<String>,
    order_id: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSignature {
    header: String,
    algorithm: SignatureAlgorithm,
    encoding: SignatureEncoding,
    secret: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCallback {
    #[serde(default)]
    path_secret: bool,
    signature: Option<Spanned<RawSignature>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStatuses {
    table: BTreeMap<String, Spanned<RawStatusEntry>>,
    unknown: Option<Status>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawStatusEntry {
    Plain(Status),
    Detailed(RawStatusDetail),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStatusDetail {
    status: Status,
    sub_status: Option<String>,
}

/// The longest period a `rate_limit` may name.
const MAX_RATE_PERIOD: Duration = Duration::from_secs(24 * 3600);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    per_account: Spanned<RawRate>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRate {
    /// Requests allowed at once, and per `per` at the steady rate.
    requests: u32,
    /// A duration such as `1s` or `1m`.
    per: String,
}

impl Connector {
    /// Reads and compiles a connector file, reporting every problem. Mapping
    /// paths resolve against the parent of the file's `connectors/` folder.
    pub fn load(path: &Path) -> Result<Connector, Vec<Diagnostic>> {
        let base_dir = path
            .parent()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_default();
        Connector::load_with_base(path, &base_dir)
    }

    /// Like [`Connector::load`], with mapping paths resolved against `base_dir`.
    pub fn load_with_base(path: &Path, base_dir: &Path) -> Result<Connector, Vec<Diagnostic>> {
        let text = std::fs::read_to_string(path).map_err(|err| {
            vec![Diagnostic::new(
                path,
                0,
                0,
                format!("cannot read connector file: {err}"),
            )]
        })?;
        Connector::parse(&text, path, base_dir)
    }

    /// Compiles connector YAML read from `file`.
    pub fn parse(text: &str, file: &Path, base_dir: &Path) -> Result<Connector, Vec<Diagnostic>> {
        let mut compiler = Compiler {
            file,
            base_dir,
            diagnostics: Vec::new(),
        };
        let (raw, broken) = compiler.read(text);
        let connector = compiler.compile(raw, &broken);
        match connector {
            Some(connector) if compiler.diagnostics.is_empty() => Ok(connector),
            _ => {
                if compiler.diagnostics.is_empty() {
                    compiler.at_start("the connector could not be compiled");
                }
                let mut diagnostics = compiler.diagnostics;
                diagnostics.sort_by_key(|d| (d.file.clone(), d.line, d.column));
                Err(diagnostics)
            }
        }
    }
}

struct Compiler<'a> {
    file: &'a Path,
    base_dir: &'a Path,
    diagnostics: Vec<Diagnostic>,
}

impl Compiler<'_> {
    fn at<T>(&mut self, node: &Spanned<T>, message: impl Into<String>) {
        self.at_location(node.referenced, message);
    }

    fn at_location(&mut self, location: Location, message: impl Into<String>) {
        self.diagnostics.push(Diagnostic::new(
            self.file,
            usize::try_from(location.line()).unwrap_or(0),
            usize::try_from(location.column()).unwrap_or(0),
            message,
        ));
    }

    fn at_start(&mut self, message: impl Into<String>) {
        self.diagnostics
            .push(Diagnostic::new(self.file, 1, 1, message));
    }

    fn yaml_error(&mut self, err: &serde_saphyr::Error) {
        let message = err.without_snippet().to_string();
        // The position is reported in the diagnostic itself.
        let message = match message.rsplit_once(" at line ") {
            Some((head, _)) => head.to_string(),
            None => message,
        };
        let (line, column) = err
            .location()
            .map(|l| {
                (
                    usize::try_from(l.line()).unwrap_or(0),
                    usize::try_from(l.column()).unwrap_or(0),
                )
            })
            .unwrap_or((0, 0));
        self.diagnostics
            .push(Diagnostic::new(self.file, line, column, message));
    }

    /// Parses the whole file; when that fails, parses each top-level section
    /// on its own so that every broken section is reported, and returns the
    /// names of the sections that could not be read.
    fn read(&mut self, text: &str) -> (RawConnector, BTreeSet<String>) {
        let whole_error = match serde_saphyr::from_str::<Option<RawConnector>>(text) {
            Ok(raw) => return (raw.unwrap_or_default(), BTreeSet::new()),
            Err(err) => err,
        };
        let mut merged = RawConnector::default();
        let mut broken = BTreeSet::new();
        let before = self.diagnostics.len();
        for (key, chunk) in top_level_sections(text) {
            match serde_saphyr::from_str::<RawConnector>(&chunk) {
                Ok(part) => merge(&mut merged, part),
                Err(err) => {
                    self.yaml_error(&err);
                    broken.insert(key);
                }
            }
        }
        if self.diagnostics.len() == before {
            // The sections are fine on their own: the problem is the whole
            // (duplicate keys, a flow-style document, …).
            self.yaml_error(&whole_error);
            broken.insert(String::new());
        }
        (merged, broken)
    }

    fn compile(&mut self, raw: RawConnector, broken: &BTreeSet<String>) -> Option<Connector> {
        let missing = |key: &str| !broken.contains(key) && !broken.contains("");
        let name = match raw.name {
            Some(name) => {
                if name.value.is_empty()
                    || !name.value.chars().all(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_'
                    })
                {
                    self.at(
                        &name,
                        format!(
                            "connector name `{}` must be lowercase letters, digits, `-` or `_`",
                            name.value
                        ),
                    );
                }
                Some(name.value)
            }
            None => {
                if missing("name") {
                    self.at_start("missing `name`");
                }
                None
            }
        };
        let kind = match raw.kind.map(|k| k.value) {
            Some(RawKind::Store) => Some(ConnectorKind::Store),
            Some(RawKind::Courier) => Some(ConnectorKind::Courier),
            None => {
                if missing("kind") {
                    self.at_start("missing `kind` (expected `store` or `courier`)");
                }
                None
            }
        };
        let credentials = self.fields(raw.credentials.unwrap_or_default());
        let settings = self.fields(raw.settings.unwrap_or_default());
        if let Some(base_url) = &raw.base_url
            && let Err(message) = super::target::check_base_url(&base_url.value)
        {
            self.at(base_url, message);
        }
        let raw_operations = raw.operations.unwrap_or_default();
        let declares_book = raw_operations.book.is_some();
        let operations = self.operations(raw_operations);
        if kind == Some(ConnectorKind::Courier) && !declares_book && missing("operations") {
            self.at_start("a courier connector must declare `operations.book`");
        }
        if !operations.is_empty() && raw.base_url.is_none() && missing("base_url") {
            self.at_start(
                "missing `base_url` (accounts may override it, but the connector needs a default)",
            );
        }
        let webhook = raw
            .webhook
            .map(|webhook| self.webhook(webhook, &credentials));
        if webhook.is_some() && kind == Some(ConnectorKind::Courier) {
            self.at_start("`webhook` describes store deliveries; couriers use `callback`");
        }
        let callback = raw.callback.map(|callback| CallbackSpec {
            path_secret: callback.path_secret,
            signature: callback.signature.map(|s| self.signature(s, &credentials)),
        });
        let statuses = raw.statuses.map(|statuses| self.statuses(statuses));
        let rate_limit = raw
            .rate_limit
            .and_then(|limit| self.rate_limit(limit.per_account));
        Some(Connector {
            name: name?,
            kind: kind?,
            description: raw.description,
            credentials,
            settings,
            base_url: raw.base_url.map(|b| b.value),
            operations,
            webhook,
            callback,
            statuses,
            rate_limit,
            file: self.file.to_path_buf(),
        })
    }

    fn fields(&mut self, raw: BTreeMap<String, Spanned<RawField>>) -> BTreeMap<String, FieldSpec> {
        let mut fields = BTreeMap::new();
        for (name, node) in raw {
            let field_type = match node.value.field_type {
                RawFieldType::String => FieldType::String,
                RawFieldType::Number => FieldType::Number,
                RawFieldType::Bool => FieldType::Bool,
                RawFieldType::List => FieldType::List,
            };
            if let Some(default) = &node.value.default {
                let fits = match field_type {
                    FieldType::String => default.is_string(),
                    FieldType::Number => default.is_number(),
                    FieldType::Bool => default.is_boolean(),
                    FieldType::List => default.is_array(),
                };
                if !fits {
                    self.at(
                        &node,
                        format!("default of `{name}` does not match its type"),
                    );
                }
                if node.value.required {
                    self.at(
                        &node,
                        format!("`{name}` is required, so its default would never be used"),
                    );
                }
            }
            let spec = FieldSpec {
                field_type,
                required: node.value.required,
                secret: node.value.secret,
                description: node.value.description,
                default: node.value.default,
            };
            fields.insert(name, spec);
        }
        fields
    }

    fn operations(&mut self, raw: RawOperations) -> BTreeMap<String, Operation> {
        let mut operations = BTreeMap::new();
        let declared = [
            ("book", raw.book),
            ("track", raw.track),
            ("cancel", raw.cancel),
            ("lookup", raw.lookup),
        ];
        for (name, node) in declared {
            if let Some(operation) = node.and_then(|node| self.operation(name, node)) {
                operations.insert(name.to_string(), operation);
            }
        }
        operations
    }

    fn operation(&mut self, name: &str, node: Spanned<RawOperation>) -> Option<Operation> {
        let before = self.diagnostics.len();
        let Spanned {
            value: raw,
            referenced: location,
            ..
        } = node;
        let method =
            reqwest::Method::from_bytes(raw.request.method.value.to_ascii_uppercase().as_bytes())
                .ok()
                .filter(|m| {
                    [
                        reqwest::Method::GET,
                        reqwest::Method::POST,
                        reqwest::Method::PUT,
                        reqwest::Method::PATCH,
                        reqwest::Method::DELETE,
                    ]
                    .contains(m)
                });
        if method.is_none() {
            let message = format!(
                "unknown method `{}` (expected GET, POST, PUT, PATCH or DELETE)",
                raw.request.method.value
            );
            self.at(&raw.request.method, message);
        }
        if let Err(message) = super::target::check_path_template(&raw.request.path.value) {
            self.at(&raw.request.path, message);
        }
        let body = raw.request.body.and_then(|body| self.mapping(&body));
        let mut templates = BTreeMap::new();
        let sources = raw
            .request
            .path
            .value
            .split('/')
            .filter(|segment| super::target::is_template(segment))
            .chain(raw.request.headers.values().map(String::as_str))
            .chain(raw.request.query.values().map(String::as_str));
        for source in sources {
            match Template::compile(source) {
                Ok(template) => {
                    templates.insert(source.to_string(), template);
                }
                Err(err) => self.at(
                    &raw.request.path,
                    format!("request template `{source}`: {err}"),
                ),
            }
        }
        let success = self.expr(&raw.success, "success");
        let mut extract = BTreeMap::new();
        for (field, path) in &raw.extract {
            match JsonPath::parse(&path.value) {
                Ok(parsed) => {
                    extract.insert(field.clone(), parsed);
                }
                Err(err) => self.at(path, format!("`extract.{field}` is not a JSONPath: {err}")),
            }
        }
        if name == "book" && !raw.extract.contains_key("tracking_number") {
            self.at_location(location, "`book` must extract `tracking_number` (e.g. `extract: { tracking_number: \"$.tracking_number\" }`)");
        }
        let mut errors = Vec::new();
        for rule in &raw.errors {
            if let Some(when) = self.expr(&rule.when, "errors.when") {
                errors.push(ErrorRule {
                    when,
                    class: rule.class,
                });
            }
        }
        let mut status_classes = BTreeMap::new();
        for (code, class) in &raw.status_classes {
            match code.parse::<u16>() {
                Ok(status) if (100..=599).contains(&status) => {
                    status_classes.insert(status, class.value);
                }
                _ => self.at(
                    class,
                    format!("`status_classes` key `{code}` is not an HTTP status (100-599)"),
                ),
            }
        }
        let error_message = raw
            .error_message
            .as_ref()
            .and_then(|source| self.expr(source, "error_message"));
        let timeout = match &raw.timeout {
            Some(text) => match parse_duration(&text.value).ok() {
                Some(timeout) if !timeout.is_zero() => timeout,
                _ => {
                    self.at(
                        text,
                        format!(
                            "timeout `{}` is not a duration such as `500ms`, `30s` or `2m`",
                            text.value
                        ),
                    );
                    DEFAULT_TIMEOUT
                }
            },
            None => DEFAULT_TIMEOUT,
        };
        if self.diagnostics.len() != before {
            return None;
        }
        Some(Operation {
            name: name.to_string(),
            method: method?,
            path: raw.request.path.value,
            headers: raw.request.headers.into_iter().collect(),
            query: raw.request.query.into_iter().collect(),
            body,
            templates,
            success: success?,
            extract,
            errors,
            status_classes,
            error_message,
            timeout,
        })
    }

    fn expr(&mut self, source: &Spanned<String>, what: &str) -> Option<Expr> {
        match Expr::compile(&source.value) {
            Ok(expr) => Some(expr),
            Err(err) => {
                self.at(source, format!("`{what}` is not a valid expression: {err}"));
                None
            }
        }
    }

    fn mapping(&mut self, body: &Spanned<String>) -> Option<Arc<Mapping>> {
        let path: PathBuf = self.base_dir.join(&body.value);
        if !path.is_file() {
            self.at(
                body,
                format!(
                    "mapping file `{}` not found (paths are relative to {})",
                    body.value,
                    self.base_dir.display()
                ),
            );
            return None;
        }
        match Mapping::load(&path) {
            Ok(mapping) => Some(Arc::new(mapping)),
            Err(diagnostics) => {
                self.diagnostics.extend(diagnostics);
                None
            }
        }
    }

    fn webhook(
        &mut self,
        node: Spanned<RawWebhook>,
        credentials: &BTreeMap<String, FieldSpec>,
    ) -> WebhookSpec {
        let raw = node.value;
        let order_id = match &raw.order_id {
            None => OrderIdPath::default(),
            Some(path) => OrderIdPath::parse(&path.value).unwrap_or_else(|err| {
                self.at(path, format!("`webhook.order_id` is not a JSONPath: {err}"));
                OrderIdPath::default()
            }),
        };
        WebhookSpec {
            source: raw.source,
            signature: raw.signature.map(|s| self.signature(s, credentials)),
            topic_header: raw.topic_header,
            delivery_id_header: raw.delivery_id_header,
            order_id,
        }
    }

    fn signature(
        &mut self,
        node: Spanned<RawSignature>,
        credentials: &BTreeMap<String, FieldSpec>,
    ) -> SignatureSpec {
        let secret = &node.value.secret;
        match credentials.get(secret) {
            None => {
                let declared: Vec<&str> = credentials.keys().map(String::as_str).collect();
                let message = format!(
                    "signature secret `{secret}` is not a declared credential (declared: {})",
                    declared.join(", ")
                );
                self.at(&node, message);
            }
            Some(spec) if !spec.secret => self.at(
                &node,
                format!("credential `{secret}` signs requests, so it must be `secret: true`"),
            ),
            Some(_) => {}
        }
        if reqwest::header::HeaderName::from_bytes(node.value.header.as_bytes()).is_err() {
            self.at(
                &node,
                format!("`{}` is not a valid header name", node.value.header),
            );
        }
        SignatureSpec {
            header: node.value.header,
            algorithm: node.value.algorithm,
            encoding: node.value.encoding,
            secret: node.value.secret,
        }
    }

    fn statuses(&mut self, node: Spanned<RawStatuses>) -> StatusTable {
        let mut exact = BTreeMap::new();
        let mut prefixes = Vec::new();
        let mut seen: BTreeMap<String, String> = BTreeMap::new();
        let Spanned { value: raw, .. } = node;
        for (key, entry) in raw.table {
            let location = entry.referenced;
            let found = match entry.value {
                RawStatusEntry::Plain(status) => StatusMatch {
                    status,
                    sub_status: None,
                },
                RawStatusEntry::Detailed(detail) => StatusMatch {
                    status: detail.status,
                    sub_status: detail.sub_status,
                },
            };
            let normalised = normalise_status(&key);
            if let Some(first) = seen.insert(normalised.clone(), key.clone()) {
                let message = format!(
                    "status `{key}` and `{first}` are the same once trimmed and lowercased"
                );
                self.at_location(location, message);
            }
            match normalised.strip_suffix('*') {
                Some(prefix) => prefixes.push((prefix.to_string(), found)),
                None => {
                    exact.insert(normalised, found);
                }
            }
        }
        StatusTable {
            exact,
            prefixes,
            unknown: raw.unknown.unwrap_or(Status::Unknown),
        }
    }

    fn rate_limit(&mut self, node: Spanned<RawRate>) -> Option<RateLimit> {
        let per = parse_duration(&node.value.per)
            .ok()
            .filter(|d| !d.is_zero());
        match per {
            None => self.at(
                &node,
                format!(
                    "rate limit period `{}` is not a duration such as `1s` or `1m`",
                    node.value.per
                ),
            ),
            // Couriers document limits per second, minute or hour; a longer
            // period is a typo, and an absurd one could not be scheduled.
            Some(per) if per > MAX_RATE_PERIOD => self.at(
                &node,
                format!(
                    "rate limit period `{}` is longer than a day: write the limit per second, minute or hour",
                    node.value.per
                ),
            ),
            Some(_) => {}
        }
        if node.value.requests == 0 {
            self.at(&node, "a rate limit must allow at least one request");
        }
        Some(RateLimit {
            requests: node.value.requests,
            per: per?,
        })
    }
}

fn merge(into: &mut RawConnector, part: RawConnector) {
    macro_rules! take {
        ($($field:ident),*) => { $( if part.$field.is_some() { into.$field = part.$field; } )* };
    }
    take!(
        name,
        kind,
        description,
        credentials,
        settings,
        base_url,
        operations,
        webhook,
        callback,
        statuses,
        rate_limit
    );
}

/// Splits a block-mapping document into its top-level sections, each padded
/// with blank lines so that positions in it are positions in the file.
fn top_level_sections(text: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let starts: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, line)| {
            line.chars()
                .next()
                .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '"' || c == '\'')
        })
        .map(|(index, _)| index)
        .collect();
    let mut sections = Vec::new();
    for (i, &start) in starts.iter().enumerate() {
        let end = starts.get(i + 1).copied().unwrap_or(lines.len());
        let key = lines[start]
            .split(':')
            .next()
            .unwrap_or_default()
            .trim_matches(['"', '\'', ' '])
            .to_string();
        let mut chunk = "\n".repeat(start);
        for line in &lines[start..end] {
            chunk.push_str(line);
            chunk.push('\n');
        }
        sections.push((key, chunk));
    }
    sections
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }

    fn parse(text: &str) -> Result<Connector, Vec<Diagnostic>> {
        Connector::parse(text, Path::new("connectors/test.yaml"), &repo())
    }

    #[test]
    fn every_shipped_connector_loads() {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(repo().join("connectors")).unwrap() {
            let path = entry.unwrap().path();
            let connector =
                Connector::load(&path).unwrap_or_else(|d| panic!("{}: {d:#?}", path.display()));
            names.push(connector.name);
        }
        names.sort();
        assert_eq!(names, ["postex", "sandbox", "shopify"]);
    }

    #[test]
    fn shopify_exposes_its_webhook_rule() {
        let shopify = Connector::load(&repo().join("connectors/shopify.yaml")).unwrap();
        assert_eq!(shopify.kind, ConnectorKind::Store);
        let webhook = shopify.webhook.unwrap();
        assert_eq!(webhook.source, "shopify");
        let signature = webhook.signature.unwrap();
        assert_eq!(signature.header, "X-Shopify-Hmac-Sha256");
        assert_eq!(signature.algorithm, SignatureAlgorithm::HmacSha256);
        assert_eq!(signature.encoding, SignatureEncoding::Base64);
        assert_eq!(signature.secret, "webhook_secret");
        assert_eq!(webhook.topic_header.as_deref(), Some("X-Shopify-Topic"));
        assert_eq!(
            webhook.delivery_id_header.as_deref(),
            Some("X-Shopify-Webhook-Id")
        );
        assert!(
            shopify.credentials["webhook_secret"].secret
                && shopify.credentials["webhook_secret"].required
        );
        assert!(!shopify.credentials["shop_domain"].required);
        assert_eq!(
            shopify.settings["cod_gateways"].default,
            Some(serde_json::json!(["Cash on Delivery (COD)"]))
        );
    }

    #[test]
    fn postex_statuses_normalise() {
        // The table does not depend on the body mapping, so stand one in.
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("mappings/postex")).unwrap();
        std::fs::write(
            dir.path().join("mappings/postex/book.yaml"),
            "\"{{ shipment }}\"\n",
        )
        .unwrap();
        let postex =
            Connector::load_with_base(&repo().join("connectors/postex.yaml"), dir.path()).unwrap();
        assert!(postex.has_operation("book") && !postex.has_operation("lookup"));
        let table = postex.statuses.unwrap();
        assert_eq!(table.lookup("  UnBooked ").status, Status::Booked);
        assert_eq!(
            table.lookup("unbooked").sub_status.as_deref(),
            Some("awaiting_handover")
        );
        assert_eq!(
            table.lookup("Out  For   Delivery").status,
            Status::OutForDelivery
        );
        assert_eq!(
            table.lookup("Attempt Made: customer not home").status,
            Status::DeliveryFailed
        );
        assert_eq!(table.lookup("Teleported").status, Status::Unknown);
        assert!(table.find("Teleported").is_none());
    }

    #[test]
    fn several_mistakes_give_several_diagnostics() {
        let text = "\
name: Bad Name
kind: courier
credentials:
  token: { type: strng, secret: true }
base_url: ftp://example.com
operations:
  book:
    request: { method: FETCH, path: order }
    success: \"response.status == 200\"
    timeout: soon
statuses:
  table: { \"Delivered\": delivered, \"delivered \": delivered }
colour: blue
";
        let diagnostics = parse(text).unwrap_err();
        let lines: Vec<usize> = diagnostics.iter().map(|d| d.line).collect();
        let text: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
        assert!(
            text.iter().all(|d| d.starts_with("connectors/test.yaml:")),
            "{text:#?}"
        );
        for expected in [4, 13] {
            assert!(
                lines.contains(&expected),
                "no diagnostic on line {expected}: {text:#?}"
            );
        }
        assert!(text.iter().any(|d| d.contains("strng")), "{text:#?}");
        assert!(text.iter().any(|d| d.contains("colour")), "{text:#?}");
    }

    #[test]
    fn semantic_mistakes_are_all_reported_with_positions() {
        let text = "\
name: Bad Name
kind: courier
base_url: ftp://example.com
operations:
  book:
    request: { method: FETCH, path: order, body: mappings/none.yaml }
    success: \"response.status == 200\"
    status_classes: { \"999\": retryable }
    timeout: soon
statuses:
  table: { \"Delivered\": delivered, \"delivered \": delivered }
";
        let diagnostics = parse(text).unwrap_err();
        let text: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
        for expected in [
            "test.yaml:1:7: connector name",
            "test.yaml:3:11: base URL",
            "FETCH",
            "path `order` must start with `/`",
            "mappings/none.yaml",
            "must extract `tracking_number`",
            "999",
            "timeout `soon`",
            "same once trimmed",
        ] {
            assert!(
                text.iter().any(|d| d.contains(expected)),
                "missing `{expected}` in {text:#?}"
            );
        }
    }

    #[test]
    fn missing_name_and_kind_are_reported() {
        let diagnostics = parse("description: nothing else\n").unwrap_err();
        let text: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
        assert!(
            text.iter().any(|d| d.contains("missing `name`")),
            "{text:#?}"
        );
        assert!(
            text.iter().any(|d| d.contains("missing `kind`")),
            "{text:#?}"
        );
    }

    #[test]
    fn signature_secret_must_be_a_secret_credential() {
        let text = "\
name: shop
kind: store
credentials:
  key: { type: string }
webhook:
  source: shop
  signature: { header: X-Sig, algorithm: hmac-sha256, encoding: hex, secret: nope }
";
        let diagnostics = parse(text).unwrap_err();
        assert_eq!(diagnostics.len(), 1, "{diagnostics:#?}");
        assert_eq!(diagnostics[0].line, 7);
        assert!(
            diagnostics[0]
                .message
                .contains("`nope` is not a declared credential")
        );
    }

    #[test]
    fn the_order_id_path_is_compiled_at_load() {
        let store = |order_id: &str| {
            format!(
                "name: shop\nkind: store\nwebhook:\n  source: shop\n  order_id: \"{order_id}\"\n"
            )
        };
        let webhook = |text: &str| parse(text).unwrap().webhook.unwrap();
        assert_eq!(
            webhook("name: shop\nkind: store\nwebhook: { source: shop }\n").order_id,
            OrderIdPath::Member("id".into())
        );
        assert_eq!(
            webhook(&store("$.number")).order_id,
            OrderIdPath::Member("number".into())
        );
        assert!(matches!(
            webhook(&store("$.order.id")).order_id,
            OrderIdPath::Path(_)
        ));
        assert!(
            OrderIdPath::parse("$.1st").is_err(),
            "a shorthand member name starts with a letter or `_`"
        );
        let diagnostics = parse(&store("$.order[")).unwrap_err();
        assert_eq!(diagnostics.len(), 1, "{diagnostics:#?}");
        assert_eq!(diagnostics[0].line, 5);
        assert!(
            diagnostics[0]
                .message
                .contains("`webhook.order_id` is not a JSONPath")
        );
    }

    #[test]
    fn rate_limits_are_checked() {
        let courier = |rate: &str| {
            format!("name: c\nkind: store\nrate_limit: {{ per_account: {{ {rate} }} }}\n")
        };
        let limit = parse(&courier("requests: 10, per: 1s"))
            .unwrap()
            .rate_limit
            .unwrap();
        assert_eq!(limit.requests, 10);
        assert_eq!(limit.per, Duration::from_secs(1));
        for (rate, problem) in [
            ("requests: 0, per: 1s", "at least one request"),
            ("requests: 1, per: soon", "is not a duration"),
            ("requests: 1, per: 0s", "is not a duration"),
            (
                "requests: 1, per: 18446744073709551615ms",
                "longer than a day",
            ),
        ] {
            let diagnostics = parse(&courier(rate)).unwrap_err();
            assert!(
                diagnostics.iter().any(|d| d.message.contains(problem)),
                "{rate}: {diagnostics:#?}"
            );
            assert_eq!(diagnostics[0].line, 3, "{rate}");
        }
    }
}
