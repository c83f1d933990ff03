//! The `validate` step: checks a canonical shipment against named rules and
//! reports every failure at once, in words an operator can act on.
//!
//! ```yaml
//! - validate: { rules: [phone, shipping_address, cod_amount] }
//! ```

use crate::config::ValidationRule;
use crate::mapping::{PhoneFormat, normalize_phone};
use crate::model::Shipment;
use rust_decimal::Decimal;

/// Checks `shipment` against `rules`; `Err` lists every failure.
pub fn validate(shipment: &Shipment, rules: &[ValidationRule]) -> Result<(), Vec<String>> {
    let mut failures = Vec::new();
    for rule in rules {
        match rule {
            ValidationRule::Phone => phone(shipment, &mut failures),
            ValidationRule::ShippingAddress => shipping_address(shipment, &mut failures),
            ValidationRule::CodAmount => cod_amount(shipment, &mut failures),
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures)
    }
}

fn blank(field: &Option<String>) -> bool {
    field.as_deref().is_none_or(|text| text.trim().is_empty())
}

fn phone(shipment: &Shipment, failures: &mut Vec<String>) {
    match shipment.recipient.phone.as_deref() {
        Some(phone) if normalize_phone(phone, PhoneFormat::E164).is_some() => {}
        // The mapping already tried every phone the order carries.
        None => failures.push(
            "recipient has no usable phone: shipping, billing and customer phones are all missing or invalid"
                .to_string(),
        ),
        Some(phone) => failures.push(format!("recipient phone `{phone}` is not a usable phone number")),
    }
}

fn shipping_address(shipment: &Shipment, failures: &mut Vec<String>) {
    let recipient = &shipment.recipient;
    let missing: Vec<&str> = [
        ("address line 1", &recipient.address1),
        ("city", &recipient.city),
    ]
    .into_iter()
    .filter(|(_, field)| blank(field))
    .map(|(name, _)| name)
    .collect();
    if !missing.is_empty() {
        failures.push(format!(
            "shipping address is missing its {}",
            missing.join(" and ")
        ));
    }
}

fn cod_amount(shipment: &Shipment, failures: &mut Vec<String>) {
    let amount = shipment.cod_amount;
    if amount < Decimal::ZERO {
        failures.push(format!("cod amount {amount} is negative"));
    }
    match shipment.payment.as_str() {
        "cod" if amount == Decimal::ZERO => {
            failures.push("payment is cod but the amount to collect is 0".to_string())
        }
        "cod" | "prepaid" => {}
        other => failures.push(format!("payment `{other}` is neither `cod` nor `prepaid`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Recipient;
    use std::str::FromStr;

    const ALL: [ValidationRule; 3] = [
        ValidationRule::Phone,
        ValidationRule::ShippingAddress,
        ValidationRule::CodAmount,
    ];

    fn shipment() -> Shipment {
        Shipment {
            order_id: "820982911946154508".into(),
            reference: "#1001".into(),
            sequence: 0,
            recipient: Recipient {
                name: Some("Ayesha Khan".into()),
                phone: Some("+923001234567".into()),
                email: None,
                address1: Some("House 12, Street 4, DHA Phase 5".into()),
                address2: None,
                city: Some("Karachi".into()),
                province: Some("Sindh".into()),
                zip: None,
                country_code: Some("PK".into()),
            },
            payment: "cod".into(),
            cod_amount: Decimal::from_str("2450.00").unwrap(),
            currency: Some("PKR".into()),
            items: Vec::new(),
            weight_grams: None,
            pieces: 1,
            notes: None,
            paid_at: None,
            cancelled: false,
        }
    }

    #[test]
    fn a_complete_cod_shipment_passes() {
        assert_eq!(validate(&shipment(), &ALL), Ok(()));
    }

    #[test]
    fn every_failure_is_reported_at_once() {
        let mut s = shipment();
        s.recipient.phone = None;
        s.recipient.address1 = Some("  ".into());
        s.recipient.city = None;
        s.cod_amount = Decimal::ZERO;
        let failures = validate(&s, &ALL).unwrap_err();
        assert_eq!(
            failures,
            vec![
                "recipient has no usable phone: shipping, billing and customer phones are all missing or invalid",
                "shipping address is missing its address line 1 and city",
                "payment is cod but the amount to collect is 0",
            ]
        );
    }

    #[test]
    fn unusable_phone_and_negative_amount_are_named() {
        let mut s = shipment();
        s.recipient.phone = Some("555-555-SHIP".into());
        s.cod_amount = Decimal::from_str("-5").unwrap();
        s.payment = "prepaid".into();
        let failures = validate(&s, &ALL).unwrap_err();
        assert_eq!(failures.len(), 2, "{failures:?}");
        assert!(failures[0].contains("555-555-SHIP"));
        assert!(failures[1].contains("negative"));
    }

    #[test]
    fn only_the_named_rules_run() {
        let mut s = shipment();
        s.recipient.phone = None;
        s.payment = "prepaid".into();
        s.cod_amount = Decimal::ZERO;
        assert_eq!(
            validate(
                &s,
                &[ValidationRule::ShippingAddress, ValidationRule::CodAmount]
            ),
            Ok(())
        );
        assert!(validate(&s, &[ValidationRule::Phone]).is_err());
    }
}
