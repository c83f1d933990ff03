//! The `route` step: the first rule whose `when` matches names the courier
//! account; a rule without `when` is the default.
//!
//! ```yaml
//! - route:
//!     - when: "shipment.recipient.city in ['Karachi', 'Lahore']"
//!       to: courier-main
//!     - to: courier-main
//! ```

use crate::config::RouteRule;
use crate::mapping::Context;
use crate::model::Failure;

pub fn choose(rules: &[RouteRule], ctx: &Context) -> Result<String, Failure> {
    for rule in rules {
        let matched = match &rule.when {
            None => true,
            Some(expr) => expr
                .eval_bool_in(ctx)
                .map_err(|e| Failure::permanent("route", e.to_string()))?,
        };
        if matched {
            return Ok(rule.to.clone());
        }
    }
    Err(Failure::new(
        "route",
        crate::model::ErrorClass::NeedsReview,
        "no route matched and there is no default route (a rule without `when`)",
    ))
}
