//! The `validate` step: checks a canonical shipment against named rules.
//!
//! ```yaml
//! - validate: { rules: [phone, shipping_address, cod_amount] }
//! ```
