//! The `map` step: a field-mapping template turns the order into the
//! canonical shipment.
//!
//! ```yaml
//! - map: mappings/shopify/order-to-shipment.yaml
//! ```

use crate::mapping::{Context, Mapping};
use crate::model::Failure;
use crate::model::Shipment;
use serde_json::Value;

/// Evaluates the mapping and checks its output is a canonical shipment.
pub fn apply(mapping: &Mapping, ctx: &Context) -> Result<(Value, Shipment), Failure> {
    let value = mapping
        .eval_in(ctx)
        .map_err(|e| Failure::permanent("map", e.to_string()))?;
    let shipment = serde_json::from_value::<Shipment>(value.clone()).map_err(|e| {
        Failure::permanent(
            "map",
            format!(
                "{}: output is not a canonical shipment: {e}",
                mapping.path().display()
            ),
        )
    })?;
    Ok((value, shipment))
}
