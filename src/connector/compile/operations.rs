//! Operations of a connector (`book`, `track`, `track_many`, `cancel`,
//! `lookup`, `payment`): request templates, success rule, extraction, error classes
//! and timeouts, each checked where it is written.
//!
//! ```yaml
//! operations:
//!   track:
//!     request: { method: GET, path: "/track/{{ tracking_number }}" }
//!     success: "response.status == 200"
//!     extract: { status: "$.status" }
//! ```

use crate::clock::parse_duration;
use crate::connector::definition::{
    DEFAULT_TIMEOUT, Encoding, ErrorRule, Operation, ResponseFormat,
};
use crate::connector::raw::{
    RawEncoding, RawOperation, RawOperations, RawRequest, RawResponse, RawResponseFormat,
};
use crate::diagnostic::Position;
use crate::mapping::{Expr, Mapping, Template};
use crate::model::ErrorClass;
use crate::yaml::{self, Located, ReadError};
use serde_json_path::JsonPath;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::Compiler;

/// What the COD ledger reads from a `payment` answer.
pub const PAYMENT_EXTRACTS: [&str; 5] = ["settled", "remitted", "remitted_at", "reference", "fees"];

/// Methods an operation may use.
const METHODS: [reqwest::Method; 5] = [
    reqwest::Method::GET,
    reqwest::Method::POST,
    reqwest::Method::PUT,
    reqwest::Method::PATCH,
    reqwest::Method::DELETE,
];

impl Compiler<'_> {
    pub(super) fn operations(&mut self, raw: RawOperations) -> BTreeMap<String, Operation> {
        let declared = [
            ("book", raw.book),
            ("track", raw.track),
            ("track_many", raw.track_many),
            ("cancel", raw.cancel),
            ("lookup", raw.lookup),
            ("payment", raw.payment),
            ("label", raw.label),
            ("cities", raw.cities),
            ("token", raw.token),
            ("open_fulfillments", raw.open_fulfillments),
            ("fulfill", raw.fulfill),
            ("find_fulfillment", raw.find_fulfillment),
            ("fulfillment_event", raw.fulfillment_event),
        ];
        let mut operations = BTreeMap::new();
        for (name, node) in declared {
            if let Some(operation) = node.and_then(|node| self.operation(name, node)) {
                operations.insert(name.to_string(), operation);
            }
        }
        operations
    }

    /// One operation, or `None` when anything in it is wrong (all reported).
    pub(super) fn operation(
        &mut self,
        name: &str,
        node: Located<RawOperation>,
    ) -> Option<Operation> {
        let before = self.diagnostics.count();
        let at = node.position();
        let raw = node.value;
        let method = self.method(&raw.request.method);
        if let Err(message) = crate::connector::target::check_path_template(&raw.request.path.value)
        {
            self.report(raw.request.path.position(), message);
        }
        let body = raw
            .request
            .body
            .as_ref()
            .and_then(|body| self.mapping(body));
        let templates = self.request_templates(&raw.request);
        let success = self.expr(&raw.success, "success");
        let extract = self.extract(&raw.extract);
        let extract_lists = raw
            .extract
            .iter()
            .filter(|(_, path)| selects_several(&path.value))
            .map(|(name, _)| name.clone())
            .collect();
        if name == "book" && !raw.extract.contains_key("tracking_number") {
            self.report(at, "`book` must extract `tracking_number` (e.g. `extract: { tracking_number: \"$.tracking_number\" }`)");
        }
        if name == "payment" {
            self.payment_extract(at, &raw.extract);
        }
        if name == "fulfill" && !raw.extract.contains_key("fulfillment_id") {
            self.report(at, "`fulfill` must extract `fulfillment_id`, the id later status events are written to");
        }
        let errors = raw
            .errors
            .iter()
            .filter_map(|rule| self.error_rule(rule))
            .collect();
        let status_classes = self.status_classes(&raw.status_classes);
        let error_message = raw
            .error_message
            .as_ref()
            .and_then(|source| self.expr(source, "error_message"));
        let timeout = self.timeout(raw.timeout.as_ref());
        let (each, max_batch) = self.batch(name, at, &raw);
        self.required_extracts(name, at, &raw);
        let encoding = self.encoding(&raw.request);
        let response = self.response_format(raw.response.as_ref());
        if self.diagnostics.count() != before {
            return None;
        }
        let values = |pairs: BTreeMap<String, Located<String>>| {
            pairs.into_iter().map(|(k, v)| (k, v.value)).collect()
        };
        Some(Operation {
            name: name.to_string(),
            method: method?,
            path: raw.request.path.value,
            headers: values(raw.request.headers),
            query: values(raw.request.query),
            body,
            encoding,
            response,
            templates,
            success: success?,
            extract,
            extract_lists,
            errors,
            status_classes,
            error_message,
            timeout,
            each,
            max_batch,
        })
    }

    /// One rule of `errors:`; `retry_after` only where retrying is allowed.
    fn error_rule(&mut self, rule: &crate::connector::raw::RawErrorRule) -> Option<ErrorRule> {
        let when = self.expr(&rule.when, "errors.when")?;
        let retry_after = match &rule.retry_after {
            Some(source) if rule.class != ErrorClass::Retryable => {
                self.report(
                    source.position(),
                    "`retry_after` is only for rules of class `retryable`",
                );
                None
            }
            Some(source) => Some(self.expr(source, "errors.retry_after")?),
            None => None,
        };
        Some(ErrorRule {
            when,
            class: rule.class,
            retry_after,
        })
    }

    /// `find_fulfillment`'s `each` and its items' required names.
    fn fulfillment_items(&mut self, at: Position, raw: &RawOperation) -> Option<JsonPath> {
        for needed in ["fulfillment_id", "tracking_numbers"] {
            if !raw.extract.contains_key(needed) {
                self.report(
                    at,
                    format!("`find_fulfillment` must extract `{needed}` from each item"),
                );
            }
        }
        if let Some(m) = &raw.max_batch {
            self.report(
                m.position(),
                "`max_batch` belongs to `track_many` only; remove it from `find_fulfillment`",
            );
        }
        match &raw.each {
            Some(source) => match JsonPath::parse(&source.value) {
                Ok(parsed) => Some(parsed),
                Err(err) => {
                    self.report(
                        source.position(),
                        format!("`each` is not a JSONPath: {err}"),
                    );
                    None
                }
            },
            None => {
                self.report(at, "`find_fulfillment` needs `each`: the JSONPath of the answer's fulfillments, e.g. `each: \"$.data.order.fulfillments[*]\"`");
                None
            }
        }
    }

    /// `each` and `max_batch`: required on `track_many`, refused elsewhere.
    pub(super) fn batch(
        &mut self,
        name: &str,
        at: Position,
        raw: &RawOperation,
    ) -> (Option<JsonPath>, Option<usize>) {
        if name == "cities" {
            if let Some(m) = &raw.max_batch {
                self.report(
                    m.position(),
                    "`max_batch` belongs to `track_many` only; remove it from `cities`",
                );
            }
            let Some(source) = &raw.each else {
                self.report(at, "`cities` needs `each`: the JSONPath of the answer's cities, e.g. `each: \"$.city_list[*]\"`");
                return (None, None);
            };
            return (self.operation_path(source, "each"), None);
        }
        if name == "find_fulfillment" {
            return (self.fulfillment_items(at, raw), None);
        }
        if name != "track_many" {
            for (key, written) in [
                ("each", raw.each.as_ref().map(|e| e.position())),
                ("max_batch", raw.max_batch.as_ref().map(|m| m.position())),
            ] {
                if let Some(position) = written {
                    self.report(
                        position,
                        format!("`{key}` belongs to `track_many`, `cities` and `find_fulfillment` only; remove it from `{name}`"),
                    );
                }
            }
            return (None, None);
        }
        for needed in ["tracking_number", "status"] {
            if !raw.extract.contains_key(needed) {
                self.report(at, format!("`track_many` must extract `{needed}` from each item (e.g. `extract: {{ tracking_number: \"$.trackingNumber\", status: \"$.status\" }}`)"));
            }
        }
        let each = match &raw.each {
            Some(source) => match JsonPath::parse(&source.value) {
                Ok(parsed) => Some(parsed),
                Err(err) => {
                    self.report(
                        source.position(),
                        format!("`each` is not a JSONPath: {err}"),
                    );
                    None
                }
            },
            None => {
                self.report(at, "`track_many` needs `each`: the JSONPath of the answer's items, e.g. `each: \"$.dist[*]\"`");
                None
            }
        };
        let max_batch = match &raw.max_batch {
            Some(m) if m.value == 0 => {
                self.report(m.position(), "`max_batch` must be at least 1");
                None
            }
            Some(m) => Some(m.value),
            None => {
                self.report(at, "`track_many` needs `max_batch`: the most tracking numbers one request may carry");
                None
            }
        };
        (each, max_batch)
    }

    /// `payment` must extract `settled` and nothing the ledger does not read.
    fn payment_extract(&mut self, at: Position, extract: &BTreeMap<String, Located<String>>) {
        if !extract.contains_key("settled") {
            self.report(at, "`payment` must extract `settled`, whether the courier paid (e.g. `extract: { settled: \"$.dist.settle\" }`)");
        }
        for (name, path) in extract {
            if !PAYMENT_EXTRACTS.contains(&name.as_str()) {
                self.report(
                    path.position(),
                    format!(
                        "`payment` does not read `extract.{name}`: expected one of {}",
                        PAYMENT_EXTRACTS.join(", ")
                    ),
                );
            }
        }
    }

    /// `request.encoding`, which needs a body to encode.
    fn encoding(&mut self, request: &RawRequest) -> Encoding {
        let encoding = match request.encoding.as_ref().map(|e| e.value) {
            None | Some(RawEncoding::Json) => Encoding::Json,
            Some(RawEncoding::Form) => Encoding::Form,
            Some(RawEncoding::Query) => Encoding::Query,
        };
        if encoding != Encoding::Json
            && request.body.is_none()
            && let Some(written) = &request.encoding
        {
            self.report(
                written.position(),
                "`encoding` says how the body mapping is sent; name one with `body:`",
            );
        }
        encoding
    }

    /// What `cities` and `token` must extract for the engine to use them.
    fn required_extracts(&mut self, name: &str, at: Position, raw: &RawOperation) {
        let needed: &[&str] = match name {
            "cities" => &["name", "id"],
            "token" => &["token"],
            _ => &[],
        };
        for field in needed {
            if !raw.extract.contains_key(*field) {
                self.report(
                    at,
                    format!("`{name}` must extract `{field}` (e.g. `extract: {{ {field}: \"$.{field}\" }}`)"),
                );
            }
        }
    }

    fn operation_path(&mut self, source: &Located<String>, what: &str) -> Option<JsonPath> {
        match JsonPath::parse(&source.value) {
            Ok(parsed) => Some(parsed),
            Err(err) => {
                self.report(
                    source.position(),
                    format!("`{what}` is not a JSONPath: {err}"),
                );
                None
            }
        }
    }

    /// `response:`; `content_types` make sense for `binary` only.
    fn response_format(&mut self, raw: Option<&Located<RawResponse>>) -> ResponseFormat {
        let Some(raw) = raw else {
            return ResponseFormat::Json;
        };
        match raw.value.format {
            Some(RawResponseFormat::Binary) => ResponseFormat::Binary {
                content_types: raw
                    .value
                    .content_types
                    .iter()
                    .map(|t| t.trim().to_ascii_lowercase())
                    .collect(),
            },
            None | Some(RawResponseFormat::Json) => {
                if !raw.value.content_types.is_empty() {
                    self.report(
                        raw.position(),
                        "`content_types` applies to `format: binary` answers only",
                    );
                }
                ResponseFormat::Json
            }
        }
    }

    pub(super) fn method(&mut self, method: &Located<String>) -> Option<reqwest::Method> {
        let parsed = reqwest::Method::from_bytes(method.value.to_ascii_uppercase().as_bytes())
            .ok()
            .filter(|m| METHODS.contains(m));
        if parsed.is_none() {
            let message = format!(
                "unknown method `{}` (expected GET, POST, PUT, PATCH or DELETE)",
                method.value
            );
            self.report(method.position(), message);
        }
        parsed
    }

    /// The path's templated segments and the header and query values,
    /// compiled once and keyed by their source text.
    pub(super) fn request_templates(&mut self, request: &RawRequest) -> BTreeMap<String, Template> {
        let path = &request.path;
        let segments = path
            .value
            .split('/')
            .filter(|segment| crate::connector::target::is_template(segment))
            .map(|segment| (segment, path.position()));
        let values = request
            .headers
            .values()
            .chain(request.query.values())
            .map(|value| (value.value.as_str(), value.position()));
        let mut templates = BTreeMap::new();
        for (source, at) in segments.chain(values) {
            match Template::compile(source) {
                Ok(template) => {
                    templates.insert(source.to_string(), template);
                }
                Err(err) => self.report(at, format!("request template `{source}`: {err}")),
            }
        }
        templates
    }

    pub(super) fn extract(
        &mut self,
        raw: &BTreeMap<String, Located<String>>,
    ) -> BTreeMap<String, JsonPath> {
        let mut extract = BTreeMap::new();
        for (field, path) in raw {
            match JsonPath::parse(&path.value) {
                Ok(parsed) => {
                    extract.insert(field.clone(), parsed);
                }
                Err(err) => self.report(
                    path.position(),
                    format!("`extract.{field}` is not a JSONPath: {err}"),
                ),
            }
        }
        extract
    }

    pub(super) fn status_classes(
        &mut self,
        raw: &BTreeMap<String, Located<ErrorClass>>,
    ) -> BTreeMap<u16, ErrorClass> {
        let mut classes = BTreeMap::new();
        for (code, class) in raw {
            match code.parse::<u16>() {
                Ok(status) if (100..=599).contains(&status) => {
                    classes.insert(status, class.value);
                }
                _ => self.report(
                    class.position(),
                    format!("`status_classes` key `{code}` is not an HTTP status (100-599)"),
                ),
            }
        }
        classes
    }

    pub(super) fn timeout(&mut self, raw: Option<&Located<String>>) -> std::time::Duration {
        let Some(text) = raw else {
            return DEFAULT_TIMEOUT;
        };
        match parse_duration(&text.value) {
            Ok(timeout) if !timeout.is_zero() => timeout,
            _ => {
                let message = format!(
                    "timeout `{}` is not a duration such as `500ms`, `30s` or `2m`",
                    text.value
                );
                self.report(text.position(), message);
                DEFAULT_TIMEOUT
            }
        }
    }

    pub(super) fn expr(&mut self, source: &Located<String>, what: &str) -> Option<Expr> {
        match Expr::compile(&source.value) {
            Ok(expr) => Some(expr),
            Err(err) => {
                self.report(
                    source.position(),
                    format!("`{what}` is not a valid expression: {err}"),
                );
                None
            }
        }
    }

    /// The body mapping; a file that is missing or cannot be read is
    /// reported where it is named.
    pub(super) fn mapping(&mut self, body: &Located<String>) -> Option<Arc<Mapping>> {
        let path: PathBuf = self.base_dir.join(&body.value);
        if !path.is_file() {
            let message = format!(
                "mapping file `{}` not found (paths are relative to {})",
                body.value,
                self.base_dir.display()
            );
            self.report(body.position(), message);
            return None;
        }
        let compiled = match yaml::read(&path) {
            Ok(tree) => Mapping::compile(&path, &tree),
            Err(ReadError::Syntax(e)) => Err(vec![super::syntax_error(&path, &e)]),
            Err(ReadError::Io { source, .. }) => {
                let message = format!("mapping file `{}` cannot be read: {source}", body.value);
                self.report(body.position(), message);
                return None;
            }
        };
        match compiled {
            Ok(mapping) => Some(Arc::new(mapping)),
            Err(diagnostics) => {
                self.diagnostics.extend(diagnostics);
                None
            }
        }
    }
}

/// Whether a JSONPath can select more than one value: a wildcard, a
/// descendant segment, a filter, a slice or a union.
fn selects_several(path: &str) -> bool {
    path.contains("[*]")
        || path.contains(".*")
        || path.contains("..")
        || path.contains("[?")
        || path.contains(':')
        || path.contains(',')
}
