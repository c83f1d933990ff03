//! How a connector receives: a store's webhook rule and a courier's
//! callback rule (verification, where the events are, their times).
//!
//! ```yaml
//! callback:
//!   path_secret: true
//!   tracking_number: "$.trackingNumber"
//!   status: "$.orderStatus"
//! ```

use crate::connector::definition::{
    CALLBACK_SECRET, CallbackSpec, CallbackVerify, EventTime, FieldSpec, OrderIdPath,
    SignatureSpec, TimeFormat, WebhookSpec,
};
use crate::connector::raw::{RawCallback, RawSignature, RawWebhook};
use crate::diagnostic::Position;
use crate::yaml::Located;
use serde_json_path::JsonPath;
use std::collections::BTreeMap;

use super::Compiler;

impl Compiler<'_> {
    pub(super) fn webhook(
        &mut self,
        node: Located<RawWebhook>,
        credentials: &BTreeMap<String, FieldSpec>,
    ) -> WebhookSpec {
        let raw = node.value;
        let order_id = match &raw.order_id {
            None => OrderIdPath::default(),
            Some(path) => OrderIdPath::parse(&path.value).unwrap_or_else(|err| {
                self.report(
                    path.position(),
                    format!("`webhook.order_id` is not a JSONPath: {err}"),
                );
                OrderIdPath::default()
            }),
        };
        WebhookSpec {
            source: raw.source,
            signature: raw.signature.map(|s| self.signature(s, credentials)),
            topic_header: raw.topic_header,
            delivery_id_header: raw.delivery_id_header,
            order_id,
            sample_topic: raw.sample_topic,
        }
    }

    pub(super) fn signature(
        &mut self,
        node: Located<RawSignature>,
        credentials: &BTreeMap<String, FieldSpec>,
    ) -> SignatureSpec {
        self.signature_of(&node, credentials)
    }

    pub(super) fn signature_of(
        &mut self,
        node: &Located<RawSignature>,
        credentials: &BTreeMap<String, FieldSpec>,
    ) -> SignatureSpec {
        let at = node.position();
        let raw = &node.value;
        let secret = &raw.secret;
        match credentials.get(secret) {
            None => {
                let declared: Vec<&str> = credentials.keys().map(String::as_str).collect();
                let message = format!(
                    "signature secret `{secret}` is not a declared credential (declared: {})",
                    declared.join(", ")
                );
                self.report(at, message);
            }
            Some(spec) if !spec.secret => self.report(
                at,
                format!("credential `{secret}` signs requests, so it must be `secret: true`"),
            ),
            Some(_) => {}
        }
        if reqwest::header::HeaderName::from_bytes(raw.header.as_bytes()).is_err() {
            self.report(at, format!("`{}` is not a valid header name", raw.header));
        }
        SignatureSpec {
            header: raw.header.clone(),
            algorithm: raw.algorithm,
            encoding: raw.encoding,
            secret: raw.secret.clone(),
        }
    }

    /// `callback:`; `None` when anything in it is wrong (all reported).
    pub(super) fn callback(
        &mut self,
        node: Located<RawCallback>,
        credentials: &BTreeMap<String, FieldSpec>,
    ) -> Option<CallbackSpec> {
        let before = self.diagnostics.count();
        let at = node.position();
        let raw = node.value;
        let verify = self.callback_verify(at, &raw, credentials);
        if let Some(header) = &raw.delivery_id_header {
            self.header_name(header);
        }
        let events = raw
            .events
            .as_ref()
            .and_then(|p| self.json_path(p, "events"));
        let tracking_number = self.json_path(&raw.tracking_number, "tracking_number");
        let status = self.json_path(&raw.status, "status");
        let mut optional = |path: &Option<Located<String>>, what: &str| {
            path.as_ref().and_then(|p| self.json_path(p, what))
        };
        let code = optional(&raw.code, "code");
        let event_time = optional(&raw.event_time, "event_time");
        let reason = optional(&raw.reason, "reason");
        let time = self.event_time(&raw);
        if self.diagnostics.count() != before {
            return None;
        }
        Some(CallbackSpec {
            verify: verify?,
            delivery_id_header: raw.delivery_id_header.map(|h| h.value),
            events,
            tracking_number: tracking_number?,
            status: status?,
            code,
            event_time,
            reason,
            time,
        })
    }

    /// Exactly one way of verifying a callback, and the credential it needs.
    pub(super) fn callback_verify(
        &mut self,
        at: Position,
        raw: &RawCallback,
        credentials: &BTreeMap<String, FieldSpec>,
    ) -> Option<CallbackVerify> {
        let mut ways = Vec::new();
        if raw.path_secret {
            ways.push(CallbackVerify::PathSecret);
        }
        if let Some(name) = &raw.query_secret {
            if name.value.trim().is_empty() {
                self.report(
                    name.position(),
                    "`query_secret` must name a query parameter",
                );
            }
            ways.push(CallbackVerify::QuerySecret(name.value.clone()));
        }
        if let Some(name) = &raw.header_secret {
            self.header_name(name);
            ways.push(CallbackVerify::HeaderSecret(name.value.clone()));
        }
        if let Some(signature) = &raw.signature {
            let spec = self.signature_of(signature, credentials);
            ways.push(CallbackVerify::Signature(spec));
        }
        if ways.len() != 1 {
            // Unverified callbacks would let anyone move shipments.
            let message = format!(
                "`callback` must declare exactly one of `path_secret: true`, `query_secret`, \
                 `header_secret` or `signature` (found {})",
                ways.len()
            );
            self.report(at, message);
            return None;
        }
        let verify = ways.pop()?;
        if !matches!(verify, CallbackVerify::Signature(_)) {
            match credentials.get(CALLBACK_SECRET) {
                None => self.report(
                    at,
                    format!(
                        "`callback` compares a secret with credential `{CALLBACK_SECRET}`, which \
                         the connector's `credentials` must declare (`{CALLBACK_SECRET}: {{ type: string, secret: true }}`)"
                    ),
                ),
                Some(spec) if !spec.secret => self.report(
                    at,
                    format!("credential `{CALLBACK_SECRET}` verifies callbacks, so it must be `secret: true`"),
                ),
                Some(_) => {}
            }
        }
        Some(verify)
    }

    pub(super) fn header_name(&mut self, name: &Located<String>) {
        if reqwest::header::HeaderName::from_bytes(name.value.as_bytes()).is_err() {
            self.report(
                name.position(),
                format!("`{}` is not a valid header name", name.value),
            );
        }
    }

    pub(super) fn json_path(&mut self, path: &Located<String>, what: &str) -> Option<JsonPath> {
        match JsonPath::parse(&path.value) {
            Ok(parsed) => Some(parsed),
            Err(err) => {
                self.report(
                    path.position(),
                    format!("`callback.{what}` is not a JSONPath: {err}"),
                );
                None
            }
        }
    }

    /// `time_format` and `time_zone`.
    pub(super) fn event_time(&mut self, raw: &RawCallback) -> EventTime {
        let mut time = EventTime::default();
        if let Some(format) = &raw.time_format {
            match parse_time_format(&format.value) {
                Ok(parsed) => time.format = parsed,
                Err(message) => self.report(format.position(), message),
            }
        }
        if let Some(zone) = &raw.time_zone {
            match parse_zone(&zone.value) {
                Some(offset) => time.zone = offset,
                None => self.report(
                    zone.position(),
                    format!(
                        "`time_zone` `{}` is not a UTC offset such as `+05:00`, `-03:30` or `UTC`",
                        zone.value
                    ),
                ),
            }
        }
        time
    }
}

/// `rfc3339`, `unix`, `unix_ms` or a `time` format description.
fn parse_time_format(text: &str) -> Result<TimeFormat, String> {
    match text.trim() {
        "rfc3339" => Ok(TimeFormat::Rfc3339),
        "unix" => Ok(TimeFormat::Unix),
        "unix_ms" => Ok(TimeFormat::UnixMillis),
        pattern => time::format_description::parse_owned::<2>(pattern)
            .map(TimeFormat::Pattern)
            .map_err(|e| {
                format!(
                    "`time_format` `{text}` is not `rfc3339`, `unix`, `unix_ms` or a format such as \
                     `[year]-[month]-[day] [hour]:[minute]:[second]`: {e}"
                )
            }),
    }
}

/// `UTC`, `Z` or `±HH:MM`.
fn parse_zone(text: &str) -> Option<time::UtcOffset> {
    let text = text.trim();
    if matches!(text, "UTC" | "utc" | "Z" | "z") {
        return Some(time::UtcOffset::UTC);
    }
    let format = time::macros::format_description!(
        version = 2,
        "[offset_hour sign:mandatory]:[offset_minute]"
    );
    time::UtcOffset::parse(text, &format).ok()
}
