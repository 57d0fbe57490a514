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

/// The value at `path` (`["app_metadata", "role"]`: the member `role` of
/// the claim `app_metadata`), whichever way each object on the way arrived:
/// a JSON object, JSON text, or Go's `map[…]` text (a member read from Go
/// text is its text, `[admin user]` or `map[…]` included).
pub fn at_path(claims: &Map<String, Value>, path: &[String]) -> Option<Value> {
    let (first, rest) = path.split_first()?;
    let mut current = claims.get(first)?.clone();
    for key in rest {
        current = member(&current, key)?;
    }
    Some(current)
}

/// Whether the claim at `path` is `wanted`, or a list holding it.
pub fn holds(claims: &Map<String, Value>, path: &[String], wanted: &str) -> bool {
    at_path(claims, path).is_some_and(|v| strings(&v).iter().any(|s| s == wanted))
}

/// The strings a claim holds: a string is one; a list (a JSON array, JSON
/// text `["a","b"]`, or Go's `[a b]`) its string elements.
pub fn strings(value: &Value) -> Vec<String> {
    match value {
        Value::String(text) => {
            let t = text.trim();
            let Some(inner) = t.strip_prefix('[').and_then(|r| r.strip_suffix(']')) else {
                return vec![text.clone()];
            };
            match serde_json::from_str::<Value>(t) {
                Ok(Value::Array(items)) => strings(&Value::Array(items)),
                _ => top_level_words(inner)
                    .into_iter()
                    .filter(|w| !w.is_empty())
                    .map(str::to_owned)
                    .collect(),
            }
        }
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

/// The member `key` of an object claim, whichever way it arrived.
fn member(value: &Value, key: &str) -> Option<Value> {
    match value {
        Value::Object(map) => map.get(key).cloned(),
        Value::String(text) => {
            let text = text.trim();
            if text.starts_with('{') {
                let parsed: Value = serde_json::from_str(text).ok()?;
                parsed.get(key).cloned()
            } else {
                go_map_member(text, key).map(|v| Value::String(v.to_owned()))
            }
        }
        _ => None,
    }
}

/// `key` of a Go map rendering, `map[k1:v1 k2:[a b] k3:map[x:y]]`, as text.
/// Entries are split on spaces outside brackets.
fn go_map_member<'t>(text: &'t str, key: &str) -> Option<&'t str> {
    let inner = text.strip_prefix("map[")?.strip_suffix(']')?;
    top_level_words(inner).into_iter().find_map(|entry| {
        let (k, v) = entry.split_once(':')?;
        (k == key && !v.is_empty()).then_some(v)
    })
}

/// `text` split on the spaces that are not inside brackets.
fn top_level_words(text: &str) -> Vec<&str> {
    let mut depth = 0usize;
    let mut start = 0;
    let mut words = Vec::new();
    for (i, c) in text.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            ' ' if depth == 0 => {
                words.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    words.push(&text[start..]);
    words
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    fn path(p: &str) -> Vec<String> {
        p.split('.').map(str::to_owned).collect()
    }

    #[test]
    fn a_member_in_every_rendering() {
        let role = path("app_metadata.role");
        let cases = [
            (
                json!({"app_metadata": {"role": "admin", "provider": "email"}}),
                Some(json!("admin")),
            ),
            (
                json!({"app_metadata": "{\"provider\":\"email\",\"role\":\"admin\"}"}),
                Some(json!("admin")),
            ),
            (
                json!({"app_metadata": "map[provider:email providers:[email phone] role:admin]"}),
                Some(json!("admin")),
            ),
            (
                json!({"app_metadata": "map[role:admin]"}),
                Some(json!("admin")),
            ),
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
            assert_eq!(at_path(&claims(c.clone()), &role), expected, "{c}");
        }
        // Deeper paths go through every rendering on the way.
        let deep = path("app_metadata.nested.role");
        for c in [
            json!({"app_metadata": "map[nested:map[role:admin] provider:email]"}),
            json!({"app_metadata": {"nested": "{\"role\":\"admin\"}"}}),
            json!({"app_metadata": "{\"nested\":{\"role\":\"admin\"}}"}),
        ] {
            assert_eq!(
                at_path(&claims(c.clone()), &deep),
                Some(json!("admin")),
                "{c}"
            );
        }
    }

    #[test]
    fn admin_as_a_string_or_in_a_list_in_every_rendering() {
        let role = path("app_metadata.role");
        let top = path("user_role");
        let cases = [
            (json!({"user_role": "admin"}), &top, true),
            (json!({"user_role": ["editor", "admin"]}), &top, true),
            (json!({"user_role": "[\"editor\",\"admin\"]"}), &top, true),
            (json!({"user_role": "[editor admin]"}), &top, true),
            (json!({"user_role": "[admin]"}), &top, true),
            (json!({"user_role": "administrator"}), &top, false),
            (json!({"user_role": "[editor]"}), &top, false),
            (json!({"user_role": ["admins"]}), &top, false),
            (json!({"user_role": 1}), &top, false),
            (json!({"app_metadata": {"role": ["admin"]}}), &role, true),
            (
                json!({"app_metadata": "map[role:[editor admin]]"}),
                &role,
                true,
            ),
            (
                json!({"app_metadata": "{\"role\":[\"admin\"]}"}),
                &role,
                true,
            ),
            (json!({"app_metadata": "map[roles:[admin]]"}), &role, false),
            (json!({"app_metadata": {"provider": "email"}}), &role, false),
        ];
        for (c, p, expected) in cases {
            assert_eq!(
                holds(&claims(c.clone()), p, "admin"),
                expected,
                "{c} at {p:?}"
            );
        }
    }

    #[test]
    fn audiences_as_a_string_or_a_list() {
        assert_eq!(strings(&json!("authenticated")), ["authenticated"]);
        assert_eq!(strings(&json!(["a", "b"])), ["a", "b"]);
        assert_eq!(strings(&json!("[a b]")), ["a", "b"]);
        assert!(strings(&json!(5)).is_empty());
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
