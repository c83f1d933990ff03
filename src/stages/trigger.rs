//! The `trigger` step: an expression that decides whether an event is acted on.
//! Non-matching events are acknowledged and counted.
//!
//! ```yaml
//! - trigger: "event.topic == 'orders/paid'"
//! ```

use crate::mapping::{Context, Expr};
use crate::model::Failure;

pub fn matches(expr: &Expr, ctx: &Context) -> Result<bool, Failure> {
    expr.eval_bool_in(ctx)
        .map_err(|e| Failure::permanent("trigger", e.to_string()))
}
