//! Request URLs that order data can never steer elsewhere.
//!
//! The operation's path is appended to the account's effective base URL (not
//! `Url::join`, which would drop the base's path), each templated segment is
//! rendered on its own and percent-encoded, and the result is checked to keep
//! the base's scheme, host and port and to start with its path, segment by
//! segment. `waybill:` stands for waybill's own HTTP server.
//!
//! ```yaml
//! base_url: "waybill:/sandbox"
//! operations:
//!   track: { request: { method: GET, path: "/track/{{ tracking_number }}" }, success: "response.status == 200" }
//! ```

use super::percent_encode_segment;
use super::{Account, Connector, Engine};
use url::Url;

/// Prefix of base URLs served by waybill itself.
pub const SELF_PREFIX: &str = "waybill:";

/// Checks a base URL as written in a connector or an account.
pub fn check_base_url(base: &str) -> Result<(), String> {
    if let Some(path) = base.strip_prefix(SELF_PREFIX) {
        if !path.starts_with('/') || path.contains(['?', '#']) {
            return Err(format!(
                "`{base}` must be `waybill:/<path>` with no query or fragment"
            ));
        }
        return Ok(());
    }
    parse_base(base).map(|_| ())
}

fn parse_base(base: &str) -> Result<Url, String> {
    let url = Url::parse(base).map_err(|err| format!("base URL `{base}` is not a URL: {err}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("base URL `{base}` must use http or https"));
    }
    if url.host().is_none() {
        return Err(format!("base URL `{base}` has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "base URL `{base}` must not have a query or fragment"
        ));
    }
    Ok(url)
}

/// Resolves a base URL, expanding `waybill:` against `self_base`.
pub fn resolve_base(base: &str, self_base: &str) -> Result<Url, String> {
    match base.strip_prefix(SELF_PREFIX) {
        Some(path) => {
            check_base_url(base)?;
            parse_base(&format!("{}{}", self_base.trim_end_matches('/'), path))
        }
        None => parse_base(base),
    }
}

/// Checks a path template as written in a connector.
pub fn check_path_template(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("path `{path}` must start with `/`"));
    }
    for segment in path.split('/').skip(1) {
        if is_template(segment) {
            let opened = segment.matches("{{").count() + segment.matches("{%").count();
            let closed = segment.matches("}}").count() + segment.matches("%}").count();
            if opened != closed {
                return Err(format!(
                    "path `{path}`: a template must sit within one segment (no `/` inside `{{{{ }}}}`)"
                ));
            }
        } else if segment.contains(['?', '#', '\\']) || segment == "." || segment == ".." {
            return Err(format!(
                "path `{path}` must not contain `?`, `#`, `\\`, `.` or `..` segments; use `query:` for parameters"
            ));
        }
    }
    Ok(())
}

pub(crate) fn is_template(segment: &str) -> bool {
    segment.contains("{{") || segment.contains("{%")
}

/// Appends `path` to `base`, rendering each templated segment with `render`,
/// then adds the query parameters and checks the result stays under `base`.
pub fn build_url(
    base: &Url,
    path: &str,
    query: &[(String, String)],
    mut render: impl FnMut(&str) -> Result<String, String>,
) -> Result<Url, String> {
    check_path_template(path)?;
    let mut segments = Vec::new();
    for segment in path.split('/').skip(1) {
        if is_template(segment) {
            let rendered = render(segment)?;
            if rendered.is_empty() || rendered.trim() == "." || rendered.trim() == ".." {
                return Err(format!(
                    "path segment `{segment}` rendered to `{rendered}`, which is not a usable segment"
                ));
            }
            segments.push(percent_encode_segment(&rendered));
        } else {
            segments.push(segment.to_string());
        }
    }
    let joined = format!(
        "{}/{}",
        base.as_str().trim_end_matches('/'),
        segments.join("/")
    );
    let mut url =
        Url::parse(&joined).map_err(|err| format!("request URL `{joined}` is not a URL: {err}"))?;
    if !query.is_empty() {
        let mut pairs = url.query_pairs_mut();
        for (name, template) in query {
            let value = render(template)?;
            pairs.append_pair(name, &value);
        }
    }
    ensure_under(base, &url)?;
    Ok(url)
}

/// The request URL keeps the base's origin and starts with its path.
fn ensure_under(base: &Url, url: &Url) -> Result<(), String> {
    let same_origin = url.scheme() == base.scheme()
        && url.host() == base.host()
        && url.port_or_known_default() == base.port_or_known_default()
        && url.username() == base.username()
        && url.password() == base.password();
    let base_segments: Vec<&str> = base
        .path_segments()
        .into_iter()
        .flatten()
        .filter(|s| !s.is_empty())
        .collect();
    let url_segments: Vec<&str> = url.path_segments().into_iter().flatten().collect();
    let under = url_segments.len() >= base_segments.len()
        && url_segments[..base_segments.len()] == base_segments[..];
    if same_origin && under && url.fragment().is_none() {
        Ok(())
    } else {
        Err(format!("request URL `{url}` leaves the base URL `{base}`"))
    }
}

/// Whether an account that writes back can reach its store: with the
/// connector's `write_back.credential` set, its base URL (the account's, or
/// the connector's template rendered from the account) must come out right.
/// Checked by `validate`, so a misconfigured account fails there.
pub fn write_back_base(connector: &Connector, account: &Account) -> Result<(), String> {
    let enabled = connector
        .write_back
        .as_ref()
        .is_some_and(|spec| account.credentials.contains_key(&spec.credential));
    match (&account.base_url, &connector.base_url) {
        (None, Some(base)) if enabled && is_template(base) => {
            account_base(base, account).map(|_| ())
        }
        _ => Ok(()),
    }
}

/// A templated base URL rendered from the account alone (its credentials
/// and settings, never order data), which must come out a bare
/// `http(s)://host[:port]`: a value such as `shop.example/x?y` or
/// `user@host` is refused, so the account's values choose a host and nothing else.
pub(crate) fn account_base(template: &str, account: &Account) -> Result<String, String> {
    let ctx = Engine::context(account, serde_json::Map::new());
    let rendered = crate::mapping::render_str(template, &ctx).map_err(|e| {
        format!(
            "account `{}` cannot make its base URL `{template}` from its credentials and settings ({e}); set the value it names, or the account's `base_url`",
            account.name
        )
    })?;
    let url = url::Url::parse(&rendered).map_err(|e| {
        format!(
            "base URL `{template}` of account `{}` gives `{rendered}`, not a URL ({e}); set the value it names, or the account's `base_url`",
            account.name
        )
    })?;
    let bare = matches!(url.scheme(), "http" | "https")
        && url.host_str().is_some_and(|h| !h.is_empty())
        && url.username().is_empty()
        && url.password().is_none()
        && url.path() == "/"
        && url.query().is_none()
        && url.fragment().is_none()
        && !rendered.trim_end_matches('/').ends_with(['.', ':']);
    if !bare {
        return Err(format!(
            "base URL `{template}` of account `{}` must give a bare `https://host`, not `{rendered}`",
            account.name
        ));
    }
    Ok(rendered.trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redact::Secrets;
    use serde_json::Map;
    use std::collections::BTreeMap;

    fn base() -> Url {
        resolve_base(
            "https://api.example.com/services/api",
            "http://127.0.0.1:8080",
        )
        .unwrap()
    }

    fn build(path: &str, value: &str) -> Result<Url, String> {
        build_url(&base(), path, &[], |_| Ok(value.to_string()))
    }

    #[test]
    fn appends_paths_instead_of_joining() {
        let url = build("/order/v3/create-order", "").unwrap();
        assert_eq!(
            url.as_str(),
            "https://api.example.com/services/api/order/v3/create-order"
        );
        let trailing = resolve_base("https://api.example.com/services/api/", "x").unwrap();
        let url = build_url(&trailing, "/book", &[], |_| Ok(String::new())).unwrap();
        assert_eq!(url.as_str(), "https://api.example.com/services/api/book");
    }

    #[test]
    fn waybill_prefix_resolves_to_self_base() {
        let url = resolve_base("waybill:/sandbox", "http://127.0.0.1:8080/").unwrap();
        assert_eq!(url.as_str(), "http://127.0.0.1:8080/sandbox");
        assert!(resolve_base("waybill:sandbox", "http://127.0.0.1:8080").is_err());
    }

    #[test]
    fn hostile_values_stay_in_one_segment() {
        let hostile = [
            "../../admin",
            "..%2F..%2Fadmin",
            "x?admin=1",
            "x#frag",
            "//evil.example.com/x",
            "https://evil.example.com/",
            "a/b",
            "\\..\\x",
            "%2e%2e",
        ];
        for value in hostile {
            let url = build("/track/{{ tracking_number }}", value).unwrap();
            assert_eq!(url.host_str(), Some("api.example.com"), "{value}");
            assert!(
                url.path().starts_with("/services/api/track/"),
                "{value} gave {url}"
            );
            assert_eq!(
                url.path_segments().unwrap().count(),
                4,
                "{value} gave {url}"
            );
            assert!(
                url.query().is_none() && url.fragment().is_none(),
                "{value} gave {url}"
            );
        }
    }

    #[test]
    fn dot_segments_and_empty_values_are_refused() {
        for value in ["..", ".", "", " .. "] {
            assert!(
                build("/track/{{ tracking_number }}", value).is_err(),
                "{value:?}"
            );
        }
    }

    #[test]
    fn templates_must_not_span_segments() {
        for template in ["/a/{{ x / y }}", "/a/../b", "/a?x=1", "a"] {
            assert!(check_path_template(template).is_err(), "{template}");
        }
        assert!(check_path_template("/track/{{ tracking_number }}").is_ok());
    }

    #[test]
    fn query_values_are_encoded() {
        let query = vec![("cn".to_string(), "{{ x }}".to_string())];
        let url = build_url(&base(), "/track", &query, |_| Ok("1&admin=true#x".into())).unwrap();
        assert_eq!(url.query_pairs().count(), 1);
        assert_eq!(url.query_pairs().next().unwrap().1, "1&admin=true#x");
    }

    #[test]
    fn base_urls_are_checked() {
        for url in [
            "ftp://x.example.com",
            "https://x.example.com/a?b=1",
            "not a url",
        ] {
            assert!(check_base_url(url).is_err(), "{url}");
        }
        assert!(check_base_url("https://x.example.com/a").is_ok());
    }

    #[test]
    fn origin_and_prefix_are_enforced() {
        let base = base();
        for (url, allowed) in [
            ("https://api.example.com/services/api/x", true),
            ("https://api.example.com/services/apix", false),
            ("https://evil.example.com/services/api/x", false),
            ("https://api.example.com:8443/services/api/x", false),
            ("http://api.example.com/services/api/x", false),
        ] {
            let under = ensure_under(&base, &Url::parse(url).unwrap());
            assert_eq!(under.is_ok(), allowed, "{url}");
        }
    }

    fn shop_account(domain: Option<&str>) -> Account {
        let mut credentials = BTreeMap::new();
        if let Some(domain) = domain {
            credentials.insert("shop_domain".to_string(), domain.to_string());
        }
        Account {
            name: "shop".into(),
            connector: "shop".into(),
            credentials,
            settings: Map::new(),
            base_url: None,
            active: true,
            rate_limit: None,
            secrets: Secrets::default(),
        }
    }

    #[test]
    fn a_templated_base_url_names_a_host_and_nothing_else() {
        let template = "https://{{ credentials.shop_domain }}";
        assert_eq!(
            account_base(template, &shop_account(Some("example.myshopify.com"))).unwrap(),
            "https://example.myshopify.com"
        );
        for hostile in [
            "evil.example/steal",
            "user@evil.example",
            "example.myshopify.com?x=1",
            "example.myshopify.com#f",
            "",
        ] {
            assert!(
                account_base(template, &shop_account(Some(hostile))).is_err(),
                "{hostile}"
            );
        }
        let missing = account_base(template, &shop_account(None)).unwrap_err();
        assert!(missing.contains("shop_domain"), "{missing}");
    }
}
