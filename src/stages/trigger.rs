//! The `trigger` step: an expression that decides whether an event is acted on.
//! Non-matching events are acknowledged and counted.
//!
//! ```yaml
//! - trigger: "event.topic == 'orders/paid'"
//! ```

use super::StageError;
use crate::mapping::{Context, Expr};

pub fn matches(expr: &Expr, ctx: &Context) -> Result<bool, StageError> {
    expr.eval_bool_in(ctx)
        .map_err(|e| StageError::permanent("trigger", e.to_string()))
}
