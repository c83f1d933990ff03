//! The `route` step: the first rule whose `when` matches names the courier
//! account; a rule without `when` is the default.
//!
//! ```yaml
//! - route:
//!     - when: "shipment.recipient.city in ['Karachi', 'Lahore']"
//!       to: courier-main
//!     - to: courier-main
//! ```

use super::StageError;
use crate::config::RouteRule;
use crate::mapping::Context;

pub fn choose(rules: &[RouteRule], ctx: &Context) -> Result<String, StageError> {
    for rule in rules {
        let matched = match &rule.when {
            None => true,
            Some(expr) => expr
                .eval_bool_in(ctx)
                .map_err(|e| StageError::permanent("route", e.to_string()))?,
        };
        if matched {
            return Ok(rule.to.clone());
        }
    }
    Err(StageError {
        stage: "route",
        class: crate::model::ErrorClass::NeedsReview,
        message: "no route matched and there is no default route (a rule without `when`)".into(),
    })
}
