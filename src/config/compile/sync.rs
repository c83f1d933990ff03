//! `sync:`: how the scheduler polls couriers, at the top level and
//! overridden per courier account, key by key.
//!
//! ```yaml
//! sync: { interval: 15m, max_interval: 6h, max_age: 45d, max_in_flight: 32 }
//! accounts:
//!   courier-main: { connector: postex, credentials: { token: "${POSTEX_TOKEN}" }, sync: { interval: 30m } }
//! ```

use super::Compiler;
use crate::config::SyncSettings;
use crate::config::raw::{RawDuration, RawSync};
use crate::connector::{Connector, ConnectorKind};
use crate::yaml::{self, Located, Node};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

impl Compiler<'_> {
    /// The top-level settings and every courier account's effective ones.
    pub(super) fn sync(
        &mut self,
        file: &Path,
        top: Option<&Node>,
        accounts: &BTreeMap<String, Node>,
        connectors: &BTreeMap<String, Arc<Connector>>,
    ) -> (SyncSettings, BTreeMap<String, SyncSettings>) {
        let defaults = self.read_sync(file, top, &SyncSettings::default());
        let mut by_account = BTreeMap::new();
        for (name, node) in accounts {
            let connector = node
                .get("connector")
                .and_then(Node::scalar_text)
                .and_then(|c| connectors.get(&c));
            let written = node.get("sync");
            if let (Some(written), Some(connector)) = (written, connector)
                && !polled(connector)
            {
                let why = match connector.kind {
                    ConnectorKind::Courier => format!(
                        "account `{name}`: connector `{}` declares no `track` or `track_many` operation, so there is nothing to poll; remove `sync:`",
                        connector.name
                    ),
                    ConnectorKind::Store => format!(
                        "account `{name}` is a store account; only courier accounts are polled, so remove `sync:`"
                    ),
                    ConnectorKind::Notifier => format!(
                        "account `{name}` is a notifier account; only courier accounts are polled, so remove `sync:`"
                    ),
                };
                self.report(file, written.position(), why);
                continue;
            }
            if connector.is_some_and(|c| polled(c)) {
                by_account.insert(name.clone(), self.read_sync(file, written, &defaults));
            }
        }
        (defaults, by_account)
    }

    /// `node` read as a [`RawSync`] over `base`, checked.
    fn read_sync(&mut self, file: &Path, node: Option<&Node>, base: &SyncSettings) -> SyncSettings {
        let Some(node) = node else {
            return base.clone();
        };
        let mut errors = Vec::new();
        let raw = yaml::parse_lenient::<RawSync>(node, &mut errors);
        self.report_node_errors(file, errors);
        let Some(raw) = raw else {
            return base.clone();
        };
        let pick = |d: &Option<Located<RawDuration>>, fallback: Duration| {
            d.as_ref().map_or(fallback, |d| d.value.0)
        };
        let settings = SyncSettings {
            interval: pick(&raw.interval, base.interval),
            max_interval: pick(&raw.max_interval, base.max_interval),
            max_age: pick(&raw.max_age, base.max_age),
            max_in_flight: raw
                .max_in_flight
                .as_ref()
                .map_or(base.max_in_flight, |m| m.value),
        };
        let at =
            |d: &Option<Located<RawDuration>>| d.as_ref().map_or(node.position(), |d| d.position());
        if settings.interval.is_zero() {
            self.report(
                file,
                at(&raw.interval),
                "`interval` must be longer than 0".to_string(),
            );
        }
        if settings.max_interval < settings.interval {
            self.report(
                file,
                at(&raw.max_interval),
                format!(
                    "`max_interval` ({}) must be at least `interval` ({})",
                    shown(&raw.max_interval, settings.max_interval),
                    shown(&raw.interval, settings.interval)
                ),
            );
        }
        if settings.max_age <= settings.interval {
            self.report(
                file,
                at(&raw.max_age),
                "`max_age` must be longer than `interval`".to_string(),
            );
        }
        if let Some(m) = &raw.max_in_flight
            && m.value == 0
        {
            self.report(
                file,
                m.position(),
                "`max_in_flight` must be at least 1".to_string(),
            );
        }
        settings
    }
}

/// A duration as a message shows it: as written when it came from `${VAR}`
/// substitution (never expanded), in seconds otherwise.
fn shown(written: &Option<Located<RawDuration>>, value: Duration) -> String {
    written
        .as_ref()
        .and_then(|d| d.written.clone())
        .unwrap_or_else(|| format!("{}s", value.as_secs()))
}

/// Whether the scheduler polls accounts of `connector`.
fn polled(connector: &Connector) -> bool {
    connector.kind == ConnectorKind::Courier
        && (connector.has_operation("track") || connector.has_operation("track_many"))
}
