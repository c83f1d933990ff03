//! Unit tests of expressions, templates and mappings.

use super::*;
use serde_json::json;

fn mapping(text: &str) -> Mapping {
    match Mapping::parse(Path::new("m.yaml"), text) {
        Ok(m) => m,
        Err(diagnostics) => panic!("{diagnostics:?}"),
    }
}

fn diagnostics(text: &str) -> Vec<Diagnostic> {
    match Mapping::parse(Path::new("m.yaml"), text) {
        Ok(_) => panic!("expected diagnostics"),
        Err(d) => d,
    }
}

#[test]
fn compiled_parts_can_be_shared_across_threads() {
    fn shared<T: Send + Sync>() {}
    shared::<Expr>();
    shared::<Template>();
    shared::<Mapping>();
}

#[test]
fn expressions_keep_types_and_exact_big_integers() {
    let ctx = json!({"order": {"id": 820982911946154508u64, "total": "10.5", "tags": ["a", "b"]}});
    assert_eq!(
        Expr::compile("order.id").unwrap().eval(&ctx).unwrap(),
        json!(820982911946154508u64)
    );
    assert_eq!(
        Expr::compile("order.id | id").unwrap().eval(&ctx).unwrap(),
        json!("820982911946154508")
    );
    assert_eq!(
        Expr::compile("order.id | string")
            .unwrap()
            .eval(&ctx)
            .unwrap(),
        json!("820982911946154508")
    );
    assert_eq!(
        Expr::compile("order.tags").unwrap().eval(&ctx).unwrap(),
        json!(["a", "b"])
    );
    assert!(
        Expr::compile("'b' in order.tags")
            .unwrap()
            .eval_bool(&ctx)
            .unwrap()
    );
    assert!(
        !Expr::compile("order.total == '11'")
            .unwrap()
            .eval_bool(&ctx)
            .unwrap()
    );
}

#[test]
fn expression_syntax_errors_are_reported_at_compile_time() {
    let err = Expr::compile("order.id ==").unwrap_err();
    assert!(err.contains("order.id =="), "{err}");
}

#[test]
fn lookups_through_null_are_safe_but_typos_fail() {
    let ctx = json!({"order": {"shipping_address": null, "name": "#1001", "customer": null}});
    let phone = Expr::compile("order.shipping_address.phone").unwrap();
    assert_eq!(phone.eval(&ctx).unwrap(), Value::Null);
    let deep = Expr::compile("order.customer.default_address.phone").unwrap();
    assert_eq!(deep.eval(&ctx).unwrap(), Value::Null);
    let typo = Expr::compile("order.nmae").unwrap().at("p.yaml", 7);
    let err = typo.eval(&ctx).unwrap_err();
    assert_eq!((err.file.as_str(), err.line), ("p.yaml", 7));
    assert!(err.message.contains("`order` has no field `nmae`"), "{err}");
    let unknown = Expr::compile("ordr.name").unwrap().eval(&ctx).unwrap_err();
    assert!(
        unknown.message.contains("undefined variable `ordr`"),
        "{unknown}"
    );
    let through_filter = Expr::compile("order.nmae | phone('e164')")
        .unwrap()
        .eval(&ctx)
        .unwrap_err();
    assert!(through_filter.message.contains("nmae"), "{through_filter}");
    let defaulted = Expr::compile("order.note | default('none given')").unwrap();
    assert_eq!(defaulted.eval(&ctx).unwrap(), json!("none given"));
}

#[test]
fn text_templates_render_null_as_empty_and_report_typos() {
    let ctx = json!({"a": {"x": "House 5", "y": null}, "b": null});
    assert_eq!(
        render_str("{{ a.x }} {{ a.y }}|{{ b.z }}", &ctx).unwrap(),
        "House 5 |"
    );
    let err = render_str("{{ a.x }} {{ a.typo }}", &ctx).unwrap_err();
    assert!(err.message.contains("`a` has no field `typo`"), "{err}");
}

#[test]
fn no_auto_escaping_even_for_json_like_content() {
    let ctx = json!({"name": "Ali \"The Rock\" <b>&"});
    assert_eq!(
        render_str("{{ name }}", &ctx).unwrap(),
        "Ali \"The Rock\" <b>&"
    );
}

#[test]
fn runaway_templates_run_out_of_fuel() {
    let err = render_str(
        "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
        &json!({}),
    )
    .unwrap_err();
    assert!(err.message.to_lowercase().contains("fuel"), "{err}");
}

#[test]
fn mapping_leaves_keep_types_and_text_is_text() {
    let m = mapping(
        r#"
id: "{{ order.id }}"
name: "{{ order.name }}"
label: "Order {{ order.name }}"
fixed: 1
flag: true
nothing: null
literal: "no template here"
nested: { list: ["{{ order.id | id }}", 2] }
"#,
    );
    let out = m
        .eval(&json!({"order": {"id": 820982911946154508u64, "name": "#1001"}}))
        .unwrap();
    assert_eq!(
        out,
        json!({
            "id": 820982911946154508u64, "name": "#1001", "label": "Order #1001", "fixed": 1,
            "flag": true, "nothing": null, "literal": "no template here",
            "nested": {"list": ["820982911946154508", 2]}
        })
    );
}

#[test]
fn data_passes_through_exactly_and_is_never_evaluated() {
    let m = mapping("name: \"{{ customer }}\"\nlabel: \"To: {{ customer }}\"\n");
    for tricky in [
        "Ali \"The Rock\" {{x}}",
        "{% raw %}",
        "محمد علی، مکان نمبر ۵",
        "a\\b\n\"}",
    ] {
        let out = m.eval(&json!({"customer": tricky})).unwrap();
        assert_eq!(out["name"], json!(tricky));
        assert_eq!(out["label"], json!(format!("To: {tricky}")));
    }
}

#[test]
fn each_builds_lists_from_lists() {
    let m = mapping(
        r#"
items:
  $each: "{{ order.line_items }}"
  $as: line
  $map:
    name: "{{ line.title }}"
    quantity: "{{ line.quantity }}"
    order: "{{ order.name }}"
"#,
    );
    let ctx = json!({"order": {"name": "#1", "line_items": [{"title": "Kurta", "quantity": 2}, {"title": "Shawl", "quantity": 1}]}});
    assert_eq!(
        m.eval(&ctx).unwrap()["items"],
        json!([{"name": "Kurta", "quantity": 2, "order": "#1"}, {"name": "Shawl", "quantity": 1, "order": "#1"}])
    );
    let none = json!({"order": {"name": "#1", "line_items": null}});
    assert_eq!(m.eval(&none).unwrap()["items"], json!([]));
    let err = m
        .eval(&json!({"order": {"name": "#1", "line_items": "x"}}))
        .unwrap_err();
    assert!(err.message.contains("`$each` needs a list"), "{err}");
}

#[test]
fn eval_errors_name_the_file_line_and_key() {
    let m = mapping(
        "recipient:\n  name: \"{{ order.name }}\"\n  phone: \"{{ order.phon | phone }}\"\n",
    );
    let err = m
        .eval(&json!({"order": {"name": "x", "phone": "0300 1234567"}}))
        .unwrap_err();
    assert_eq!((err.file.as_str(), err.line), ("m.yaml", 3));
    assert!(err.message.starts_with("recipient.phone: "), "{err}");
}

#[test]
fn load_reports_every_template_error_with_its_position() {
    let found = diagnostics(
        "a: \"{{ order.id ==  }}\"\nb:\n  c: \"{% if x %}open\"\n  $bogus: 1\nitems: { $each: \"{{ x }}\" }\n",
    );
    let positions: Vec<(usize, usize)> = found.iter().map(|d| (d.line, d.column)).collect();
    assert_eq!(found.len(), 4, "{found:?}");
    assert_eq!(positions[0], (1, 4));
    assert_eq!(positions[1].0, 3);
    assert!(found[1].message.contains("b.c"), "{}", found[1].message);
    assert!(
        found[2].message.contains("unknown directive `$bogus`"),
        "{}",
        found[2].message
    );
    assert!(
        found[3].message.contains("needs a `$map`"),
        "{}",
        found[3].message
    );
    assert!(
        found[0].to_string().starts_with("m.yaml:1:4: "),
        "{}",
        found[0]
    );
}

#[test]
fn invalid_yaml_is_a_located_diagnostic() {
    let found = diagnostics("a: [1, 2\nb: c\n");
    assert_eq!(found.len(), 1);
    assert!(found[0].line > 0, "{found:?}");
}

#[test]
fn tables_feed_lookup() {
    let m = mapping(
        r#"
$tables:
  cities: { "khi": "Karachi", "Lahore Cantt": "Lahore" }
a: "{{ lookup('cities', 'KHI') }}"
b: "{{ lookup('cities', ' lahore   cantt ') }}"
c: "{{ lookup('cities', 'Quetta', 'Quetta') }}"
d: "{{ lookup({'x': 1}, 'x') }}"
"#,
    );
    assert_eq!(
        m.eval(&json!({})).unwrap(),
        json!({"a": "Karachi", "b": "Lahore", "c": "Quetta", "d": 1})
    );
}

#[test]
fn money_phone_and_weight_filters_in_templates() {
    let m = mapping(
        r#"
cod: "{{ order.total | money }}"
cod_number: "{{ order.total | money_number }}"
whole: "{{ '1500.00' | money_number }}"
int_money: "{{ 1500 | money }}"
float_money: "{{ 598.94 | money }}"
phone: "{{ order.phone | phone('local_pk') }}"
bad_phone: "{{ '555-555-SHIP' | phone }}"
grams: "{{ 1.25 | grams('kg') }}"
kg: "{{ 1250 | kg }}"
clean: "{{ '  a \t b  ' | clean }}"
path: "{{ jsonpath(order, '$.set.shop.amount') }}"
"#,
    );
    let ctx = json!({"order": {"total": "598.945", "phone": "+92 300 1234567", "set": {"shop": {"amount": "12.00"}}}});
    assert_eq!(
        m.eval(&ctx).unwrap(),
        json!({
            "cod": "598.95", "cod_number": 598.95, "whole": 1500, "int_money": "1500.00",
            "float_money": "598.94", "phone": "03001234567", "bad_phone": null, "grams": 1250,
            "kg": 1.25, "clean": "a b", "path": "12.00"
        })
    );
    let err = mapping("x: \"{{ 'abc' | money }}\"")
        .eval(&json!({}))
        .unwrap_err();
    assert!(err.message.contains("`abc` is not a number"), "{err}");
}

#[test]
fn shipped_mapping_tests_pass() {
    let report = run_tests(Path::new(env!("CARGO_MANIFEST_DIR")));
    assert!(report.files >= 2, "{report}");
    assert_eq!(report.failed(), 0, "{report}");
}

fn shipped(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// The shipped Shopify mapping applied to a shipped sample order.
pub(crate) fn sample_shipment(sample: &str) -> crate::model::Shipment {
    let mapping = Mapping::load(&shipped("mappings/shopify/order-to-shipment.yaml")).unwrap();
    let order: Value =
        serde_json::from_str(&std::fs::read_to_string(shipped(sample)).unwrap()).unwrap();
    let ctx = json!({
        "order": order,
        "event": {"topic": "orders/create", "account": "shopify-main", "source": "shopify", "headers": {}},
        "account": {"name": "shopify-main", "settings": {"cod_gateways": ["Cash on Delivery (COD)"]}},
    });
    serde_json::from_value(mapping.eval(&ctx).unwrap()).unwrap()
}

#[test]
fn canonical_shipment_maps_to_a_postex_body() {
    let shipment = serde_json::to_value(sample_shipment("samples/shopify/order-cod.json")).unwrap();
    let book = Mapping::load(&shipped("mappings/postex/book.yaml")).unwrap();
    let ctx = json!({"shipment": shipment, "account": {"name": "courier-main", "settings": {}}, "credentials": {}});
    let body = book.eval(&ctx).unwrap();
    assert_eq!(body["invoicePayment"], json!(5050));
    assert_eq!(body["customerPhone"], json!("03001234567"));
    assert_eq!(body["items"], json!(3));
    assert!(body.get("pickupAddressCode").is_none(), "{body}");
}

#[test]
fn let_values_are_in_scope_in_order_and_optional_keys_drop_nulls() {
    let m = mapping(
        r#"
$let:
  a: "{{ input.x | default(none) }}"
  b: "{{ 'has a' if a else 'no a' }}"
out: "{{ b }}"
"kept?": "{{ a }}"
plain: "{{ a }}"
"#,
    );
    assert_eq!(
        m.eval(&json!({"input": {}})).unwrap(),
        json!({"out": "no a", "plain": null})
    );
    assert_eq!(
        m.eval(&json!({"input": {"x": 0}})).unwrap(),
        json!({"out": "no a", "kept": 0, "plain": 0})
    );
    let bad = diagnostics("$let: { \"1x\": \"{{ a }}\" }\nout: 1\n");
    assert!(bad[0].message.contains("$let.1x"), "{}", bad[0].message);
}
