//! A store's `write_back:` and a courier's `tracking_page:`: the credential
//! that turns write-back on, the canonical statuses it maps, the operations
//! it runs, and the page a store shows its customer.
//!
//! ```yaml
//! write_back:
//!   credential: access_token
//!   statuses: { in_transit: IN_TRANSIT, delivered: DELIVERED }
//! tracking_page: { company: PostEx }
//! ```

use super::Compiler;
use crate::connector::definition::{FieldSpec, Operation, TrackingPage, WriteBackSpec};
use crate::connector::raw::{RawTrackingPage, RawWriteBack};
use crate::model::Status;
use crate::yaml::Located;
use std::collections::BTreeMap;

impl Compiler<'_> {
    pub(super) fn tracking_page(&mut self, page: Located<RawTrackingPage>) -> Option<TrackingPage> {
        let page = page.value;
        if page.company.value.trim().is_empty() {
            self.report(
                page.company.position(),
                "`tracking_page.company` is empty: write the carrier's name as the store shows it",
            );
        }
        let url = match page.url {
            Some(url) => match crate::mapping::Template::compile(&url.value) {
                Ok(template) => Some(template),
                Err(message) => {
                    self.report(url.position(), format!("`tracking_page.url`: {message}"));
                    return None;
                }
            },
            None => None,
        };
        Some(TrackingPage {
            company: page.company.value,
            url,
        })
    }

    /// `write_back:`: its credential is declared, its statuses are
    /// canonical, and the operations it runs are there.
    pub(super) fn write_back(
        &mut self,
        spec: Located<RawWriteBack>,
        credentials: &BTreeMap<String, FieldSpec>,
        operations: &BTreeMap<String, Operation>,
    ) -> Option<WriteBackSpec> {
        let at = spec.position();
        let spec = spec.value;
        let before = self.diagnostics.count();
        if !credentials.contains_key(&spec.credential.value) {
            let message = format!(
                "`write_back.credential` names `{}`, which `credentials:` does not declare",
                spec.credential.value
            );
            self.report(spec.credential.position(), message);
        }
        for needed in ["fulfill", "fulfillment_event", "find_fulfillment"] {
            // Written but dropped for a reported error counts as declared.
            let written = self
                .tree
                .get("operations")
                .is_some_and(|node| node.key(needed).is_some());
            if !operations.contains_key(needed) && !written {
                self.report(at, format!("`write_back` needs `operations.{needed}`"));
            }
        }
        let mut statuses = BTreeMap::new();
        for (status, event) in spec.statuses {
            if serde_json::from_value::<Status>(serde_json::Value::String(status.clone())).is_err()
            {
                self.report(
                    event.position(),
                    format!("`write_back.statuses`: `{status}` is not a canonical status (draft, booked, picked_up, in_transit, out_for_delivery, delivery_failed, on_hold, delivered, returning, returned, cancelled, exception, unknown)"),
                );
            }
            statuses.insert(status, event.value);
        }
        (self.diagnostics.count() == before).then_some(WriteBackSpec {
            credential: spec.credential.value,
            statuses,
        })
    }
}
