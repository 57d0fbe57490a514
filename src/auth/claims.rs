//! Reading claims that may have come through API Gateway, which hands every
//! claim of a verified JWT over as a **string**: numbers as text (`"1700000000"`),
//! booleans as `"true"`, arrays as `[a b]`, and objects either as JSON text
//! (`{"role":"admin"}`) or in Go's map rendering (`map[provider:email role:admin]`).
//! Claims of a token we verified ourselves arrive as real JSON; both are read
//! here, so the role rules see the same values either way.

use serde_json::{Map, Value};

/// A string claim.
pub fn string<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    claims.get(name).and_then(Value::as_str)
}

/// A boolean claim: `true`, or API Gateway's `"true"`.
pub fn boolean(claims: &Map<String, Value>, name: &str) -> bool {
    match claims.get(name) {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

/// A string member of an object claim (`app_metadata.role`), whichever way
/// the object arrived: a JSON object, JSON text, or Go's `map[…]` text.
pub fn member(claims: &Map<String, Value>, object: &str, key: &str) -> Option<String> {
    match claims.get(object)? {
        Value::Object(map) => map.get(key)?.as_str().map(str::to_owned),
        Value::String(text) => {
            let text = text.trim();
            if text.starts_with('{') {
                let parsed: Value = serde_json::from_str(text).ok()?;
                parsed.get(key)?.as_str().map(str::to_owned)
            } else {
                go_map_member(text, key)
            }
        }
        _ => None,
    }
}

/// `key` of a Go map rendering, `map[k1:v1 k2:[a b] k3:map[x:y]]`, when its
/// value is a plain word. Entries are split on spaces outside brackets.
fn go_map_member(text: &str, key: &str) -> Option<String> {
    let inner = text.strip_prefix("map[")?.strip_suffix(']')?;
    let mut depth = 0usize;
    let mut start = 0;
    let mut entries = Vec::new();
    for (i, c) in inner.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            ' ' if depth == 0 => {
                entries.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    entries.push(&inner[start..]);
    entries.into_iter().find_map(|entry| {
        let (k, v) = entry.split_once(':')?;
        (k == key && !v.is_empty() && !v.contains('[')).then(|| v.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn app_metadata_role_in_every_rendering() {
        let cases = [
            (
                json!({"app_metadata": {"role": "admin", "provider": "email"}}),
                Some("admin"),
            ),
            (
                json!({"app_metadata": "{\"provider\":\"email\",\"role\":\"admin\"}"}),
                Some("admin"),
            ),
            (
                json!({"app_metadata": "map[provider:email providers:[email phone] role:admin]"}),
                Some("admin"),
            ),
            (json!({"app_metadata": "map[role:admin]"}), Some("admin")),
            (
                json!({"app_metadata": "map[nested:map[role:admin] provider:email]"}),
                None,
            ),
            (
                json!({"app_metadata": "map[provider:email providers:[email]]"}),
                None,
            ),
            (json!({"app_metadata": "map[providers:[role:admin]]"}), None),
            (json!({"app_metadata": "role:admin"}), None),
            (json!({"app_metadata": "{not json"}), None),
            (json!({"app_metadata": 7}), None),
            (json!({}), None),
        ];
        for (c, expected) in cases {
            assert_eq!(
                member(&claims(c.clone()), "app_metadata", "role").as_deref(),
                expected,
                "{c}"
            );
        }
    }

    #[test]
    fn booleans_as_json_or_text() {
        assert!(boolean(
            &claims(json!({"is_anonymous": true})),
            "is_anonymous"
        ));
        assert!(boolean(
            &claims(json!({"is_anonymous": "true"})),
            "is_anonymous"
        ));
        assert!(!boolean(
            &claims(json!({"is_anonymous": "false"})),
            "is_anonymous"
        ));
        assert!(!boolean(
            &claims(json!({"is_anonymous": false})),
            "is_anonymous"
        ));
        assert!(!boolean(&claims(json!({})), "is_anonymous"));
    }
}
