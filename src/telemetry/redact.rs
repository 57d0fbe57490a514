//! Masking personal data out of log lines (behaviour §9).
//!
//! Every line the logger writes passes through [`redact_line`] (see
//! [`super::RedactingWriter`]), so no call site can forget it. It masks, at any
//! depth of a JSON line and inside free text:
//!
//! - emails: `john.doe@example.com` → `joh***@example.com` (a local part of 3
//!   characters or fewer → `***@example.com`);
//! - phone numbers: `+8801234567890` → `+880****90` (a `+` and 8–15 digits, or a
//!   bare run of 10–15 digits; quantities, prices and other short numbers stay);
//! - UUIDs — order, buyer and user ids: `550e8400-e29b-…` → `550e8400-****`;
//! - bearer tokens / JWTs and passwords in connection URLs, should one ever be logged.
//!
//! Batch ids, supplier-order ids and request ids stay whole — operators need
//! them. A UUID is kept when it stands under one of [`KEEP_KEYS`] in the same
//! line (as a JSON key or a `key=value` field), wherever else in the line it
//! appears. Anything not recognised as kept is masked: forgetting to mark an
//! id costs readability, never privacy.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::LazyLock;

use regex::{Captures, Regex};
use serde_json::Value;

/// Keys (compared lower-case, without `_`) whose UUID values are kept whole.
pub const KEEP_KEYS: &[&str] = &[
    "batchid",
    "batchids",
    "supplierorderid",
    "requestid",
    "awsrequestid",
];

/// Letters and digits of any script, so `josé@exämple.com` is an email too.
static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b([\p{L}\p{N}._%+\-]+)@([\p{L}\p{N}\-]+(?:\.[\p{L}\p{N}\-]+)*\.\p{L}{2,})\b")
        .expect("email regex")
});
static UUID: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b([0-9a-f]{8})-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")
        .expect("uuid regex")
});
/// `+` and 8–15 digits (spaces or dashes between groups), or 10–15 bare digits
/// not part of a decimal number, a word or a dashed id (a UUID's last group).
static PHONE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(\+\d(?:[ \-]?\d){7,14})|(?:^|[^\d.\w\-])(\d{10,15})(?:$|[^\d.\w\-])")
        .expect("phone regex")
});
/// Phone numbers as people write them: groups of digits split by single
/// spaces or dashes, an area code in parentheses, a `+` country code with an
/// optional `(0)` — `017 1234 5678`, `01712-345678`, `(415) 555-0123`,
/// `+44 (0)20 7946 0958`. A candidate counts only with 10–15 digits (8–15 after
/// a `+`) and not touching a digit, letter, `-`, `/`, `:` or a `.` that starts
/// a decimal part (a full stop ending a sentence is fine) — so dates,
/// times, prices, quantities, order numbers and UUID tails stay readable.
static WRITTEN_PHONE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?:^|[^\d\w.\-/:+])((?:\+\d{1,3}|\(\d{2,5}\)|\d{2,5})(?:[ \-]?(?:\(\d{1,4}\)|\d{2,5})){1,6})(?:$|[^\d\w.\-/:]|\.(?:$|\D))",
    )
    .expect("written phone regex")
});
static JWT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"eyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]*").expect("jwt regex")
});
static URL_PASSWORD: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b(postgres(?:ql)?://[^:/@\s]+):[^@\s]+@").expect("url regex")
});
/// `batch_id=…`, `"batchId":"…"`, `supplierOrderId: …` in text lines.
static KEPT_FIELD: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"(?i)(?:batch_?ids?|supplier_?order_?id|(?:aws_?)?request_?id)["']?\s*[=:]\s*["']?\[?\s*([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"#,
    )
    .expect("kept field regex")
});

fn is_kept_key(key: &str) -> bool {
    let norm: String = key
        .chars()
        .filter(|c| *c != '_')
        .flat_map(char::to_lowercase)
        .collect();
    KEEP_KEYS.contains(&norm.as_str())
}

pub fn mask_email(local: &str, domain: &str) -> String {
    let kept: String = local.chars().take(3).collect();
    if local.chars().count() <= 3 {
        format!("***@{domain}")
    } else {
        format!("{kept}***@{domain}")
    }
}

pub fn mask_phone(raw: &str) -> String {
    let digits: String = raw.chars().filter(|c| c.is_ascii_digit()).collect();
    let plus = if raw.starts_with('+') { "+" } else { "" };
    let head: String = digits.chars().take(3).collect();
    let tail = &digits[digits.len().saturating_sub(2)..];
    format!("{plus}{head}****{tail}")
}

/// Masks free text, keeping the UUIDs in `keep` (lower-case) whole.
pub fn redact_text<'a>(text: &'a str, keep: &HashSet<String>) -> Cow<'a, str> {
    let mut out = Cow::Borrowed(text);
    let mut apply = |re: &Regex, f: &dyn Fn(&Captures) -> String| {
        if re.is_match(&out) {
            out = Cow::Owned(re.replace_all(&out, |c: &Captures| f(c)).into_owned());
        }
    };
    apply(&URL_PASSWORD, &|c| format!("{}:***@", &c[1]));
    apply(&JWT, &|_| "<jwt>".to_owned());
    apply(&EMAIL, &|c| mask_email(&c[1], &c[2]));
    apply(&UUID, &|c| {
        if keep.contains(&c[0].to_ascii_lowercase()) {
            c[0].to_owned()
        } else {
            format!("{}-****", &c[1])
        }
    });
    apply(&PHONE, &|c| match (c.get(1), c.get(2)) {
        (Some(plus), _) => mask_phone(plus.as_str()),
        (None, Some(bare)) => {
            // Keep the separators the pattern consumed around a bare number.
            let whole = &c[0];
            let start = bare.start() - c.get(0).map_or(0, |m| m.start());
            format!(
                "{}{}{}",
                &whole[..start],
                mask_phone(bare.as_str()),
                &whole[start + bare.as_str().len()..]
            )
        }
        _ => c[0].to_owned(),
    });
    apply(&WRITTEN_PHONE, &|c| {
        let whole = &c[0];
        let Some(number) = c.get(1) else {
            return whole.to_owned();
        };
        let digits = number.as_str().chars().filter(char::is_ascii_digit).count();
        let plus = number.as_str().starts_with('+');
        let is_phone = if plus {
            (8..=15).contains(&digits)
        } else {
            (10..=15).contains(&digits)
        };
        if !is_phone {
            return whole.to_owned();
        }
        let start = number.start() - c.get(0).map_or(0, |m| m.start());
        format!(
            "{}{}{}",
            &whole[..start],
            mask_phone(number.as_str()),
            &whole[start + number.as_str().len()..]
        )
    });
    out
}

fn collect_kept(v: &Value, under_kept_key: bool, keep: &mut HashSet<String>) {
    match v {
        Value::String(s) if under_kept_key => {
            for m in UUID.find_iter(s) {
                keep.insert(m.as_str().to_ascii_lowercase());
            }
        }
        Value::Array(items) => items
            .iter()
            .for_each(|i| collect_kept(i, under_kept_key, keep)),
        Value::Object(map) => {
            for (k, v) in map {
                collect_kept(v, is_kept_key(k), keep);
            }
        }
        _ => {}
    }
}

fn redact_value(v: &mut Value, keep: &HashSet<String>) {
    match v {
        Value::String(s) => {
            if let Cow::Owned(masked) = redact_text(s, keep) {
                *s = masked;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| redact_value(i, keep)),
        Value::Object(map) => {
            // Keys can carry data too (a map keyed by email, say).
            let renamed: Vec<(String, String)> = map
                .keys()
                .filter_map(|k| match redact_text(k, keep) {
                    Cow::Owned(m) => Some((k.clone(), m)),
                    Cow::Borrowed(_) => None,
                })
                .collect();
            for (old, new) in renamed {
                if let Some(value) = map.remove(&old) {
                    map.insert(new, value);
                }
            }
            map.values_mut().for_each(|v| redact_value(v, keep));
        }
        _ => {}
    }
}

/// Masks a JSON value in place (kept ids are read from the value itself).
pub fn redact_json(v: &mut Value) {
    let mut keep = HashSet::new();
    collect_kept(v, false, &mut keep);
    redact_value(v, &keep);
}

/// Masks one log line: a JSON object line value by value, any other line as text.
pub fn redact_line(line: &str) -> String {
    let trimmed = line.trim_end_matches(['\n', '\r']);
    if trimmed.starts_with('{') {
        if let Ok(mut v) = serde_json::from_str::<Value>(trimmed) {
            redact_json(&mut v);
            return v.to_string();
        }
    }
    let keep: HashSet<String> = KEPT_FIELD
        .captures_iter(trimmed)
        .map(|c| c[1].to_ascii_lowercase())
        .collect();
    redact_text(trimmed, &keep).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn text(s: &str) -> String {
        redact_text(s, &HashSet::new()).into_owned()
    }

    #[test]
    fn emails() {
        let cases = [
            ("john.doe@example.com", "joh***@example.com"),
            ("abc@example.com", "***@example.com"),
            ("jo@shop.co.uk", "***@shop.co.uk"),
            (
                "Mail ANNA.B+tag@Example.ORG now",
                "Mail ANN***@Example.ORG now",
            ),
            (
                "a@x.io and bob.smith@corp.example.com",
                "***@x.io and bob***@corp.example.com",
            ),
            ("no email @ here", "no email @ here"),
        ];
        for (input, expected) in cases {
            assert_eq!(text(input), expected, "{input}");
        }
    }

    #[test]
    fn phones_but_not_quantities_or_prices() {
        let cases = [
            ("+8801234567890", "+880****90"),
            ("call +880 1234-567890 today", "call +880****90 today"),
            ("+14155550123", "+141****23"),
            ("01712345678", "017****78"),
            ("quantity 50 at 12.60", "quantity 50 at 12.60"),
            ("quantity 1000000", "quantity 1000000"),
            ("total 1234567.89", "total 1234567.89"),
            ("price 12345678901.50", "price 12345678901.50"),
            ("fill 62.5%", "fill 62.5%"),
            ("+1234", "+1234"),
            ("2026-11-29T12:00:00Z", "2026-11-29T12:00:00Z"),
        ];
        for (input, expected) in cases {
            assert_eq!(text(input), expected, "{input}");
        }
    }

    #[test]
    fn phones_as_people_write_them() {
        let cases = [
            ("017 1234 5678", "017****78"),
            ("call 01712-345678 now", "call 017****78 now"),
            ("(415) 555-0123", "415****23"),
            ("tel: (415) 555-0123.", "tel: 415****23."),
            ("+44 (0)20 7946 0958", "+440****58"),
            ("+1 415 555 0123", "+141****23"),
            ("josé@exämple.com", "jos***@exämple.com"),
            ("Müller.Jörg@beispiel.de", "Mül***@beispiel.de"),
            ("李@例子.中国", "***@例子.中国"),
        ];
        for (input, expected) in cases {
            assert_eq!(text(input), expected, "{input}");
        }
    }

    #[test]
    fn numbers_that_are_not_phones_stay_readable() {
        let stays = [
            "quantity 50, 120 units",
            "quantity 1000000",
            "buyerPrice 12.60 total 1,260.00",
            "price 12345678901.50",
            "2026-11-29",
            "2026-11-29 12:00:00",
            "2026-11-29T12:00:00.123Z",
            "window 2026-12-06 09:30 UTC",
            "BO-20261129-3F2A9C1B7E40",
            "BATCH-b1000000",
            "id 550e8400-****",
            "fill 62.5% of 200",
            "12 34 56",
            "sizes 38 40 42 44",
            "lead 14 days, moq 200, 4 styles",
            "v1.2.3",
            "10:30-11:45",
        ];
        for input in stays {
            assert_eq!(text(input), input, "{input}");
        }
    }

    #[test]
    fn uuids_are_masked_unless_kept() {
        let id = "550e8400-e29b-41d4-a716-446655440000";
        assert_eq!(text(id), "550e8400-****");
        assert_eq!(
            text(&format!("order {id} failed")),
            "order 550e8400-**** failed"
        );
        let keep: HashSet<String> = [id.to_owned()].into();
        assert_eq!(
            redact_text(&format!("batch {id}"), &keep),
            format!("batch {id}")
        );
    }

    #[test]
    fn secrets_never_pass() {
        assert_eq!(
            text("postgres://app:hunter2@db.internal:5432/shop"),
            "postgres://app:***@db.internal:5432/shop"
        );
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoic2VydmljZV9yb2xlIn0.c2lnbmF0dXJl";
        assert_eq!(text(&format!("Bearer {jwt}")), "Bearer <jwt>");
    }

    #[test]
    fn json_lines_are_masked_at_any_depth_with_batch_ids_kept() {
        let batch = "ba000000-0000-4000-8000-000000000001";
        let buyer = "550e8400-e29b-41d4-a716-446655440000";
        let line = json!({
            "message": format!("order for {buyer} into {batch}"),
            "batchId": batch,
            "requestId": "8f5a8a2e-3b1c-4b7e-9d2f-0a1b2c3d4e5f",
            "request": {"buyerId": buyer, "quantity": 50,
                        "styleDetails": {"variant": "navy-m",
                                         "contact": {"email": "jane.roe@example.com",
                                                     "phones": ["+8801234567890"]},
                                         "notes": "ring 01712345678 or mail ab@x.co"}},
            "span": {"requestId": "8f5a8a2e-3b1c-4b7e-9d2f-0a1b2c3d4e5f"},
            "durationMs": 1583348638390u64
        })
        .to_string();
        let out: Value = serde_json::from_str(&redact_line(&line)).unwrap();
        assert_eq!(
            out["message"],
            format!("order for 550e8400-**** into {batch}")
        );
        assert_eq!(out["batchId"], batch);
        assert_eq!(out["requestId"], "8f5a8a2e-3b1c-4b7e-9d2f-0a1b2c3d4e5f");
        assert_eq!(out["request"]["buyerId"], "550e8400-****");
        assert_eq!(out["request"]["quantity"], 50);
        let sd = &out["request"]["styleDetails"];
        assert_eq!(sd["contact"]["email"], "jan***@example.com");
        assert_eq!(sd["contact"]["phones"][0], "+880****90");
        assert_eq!(sd["notes"], "ring 017****78 or mail ***@x.co");
        assert_eq!(
            out["durationMs"], 1583348638390u64,
            "numbers are not phones"
        );
    }

    #[test]
    fn text_lines_keep_batch_ids_named_as_fields() {
        let batch = "ba000000-0000-4000-8000-000000000001";
        let line = format!("WARN batch_id={batch} buyer=550e8400-e29b-41d4-a716-446655440000 note=\"{batch} late\"");
        assert_eq!(
            redact_line(&line),
            format!("WARN batch_id={batch} buyer=550e8400-**** note=\"{batch} late\"")
        );
    }
}
