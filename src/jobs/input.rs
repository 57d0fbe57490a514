//! Reading a job's `data` object field by field, with messages that name the
//! field. Serde's derive would report "invalid type: floating point `1.5`,
//! expected i64 at line 1 column 9"; callers deserve "quantity must be an integer".

use serde_json::{Map, Value};
use uuid::Uuid;

use crate::error::ApiError;

static EMPTY: std::sync::LazyLock<Map<String, Value>> = std::sync::LazyLock::new(Map::new);

pub struct Data<'a> {
    map: &'a Map<String, Value>,
}

fn invalid(msg: String) -> ApiError {
    ApiError::BadRequest(msg)
}

impl<'a> Data<'a> {
    /// `data` may be absent or null (every field optional then), else an object.
    pub fn new(data: Option<&'a Value>) -> Result<Self, ApiError> {
        match data {
            None | Some(Value::Null) => Ok(Data { map: &EMPTY }),
            Some(Value::Object(map)) => Ok(Data { map }),
            Some(_) => Err(invalid("data must be a JSON object".into())),
        }
    }

    /// The field's value, treating JSON `null` as absent.
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(invalid(format!("{key} must be true or false"))),
        }
    }

    /// An integer in `min..=max`. `5.0`, `"5"` and `5.5` are refused: a number
    /// that is not written as an integer is not one.
    pub fn opt_int(&self, key: &str, min: i64, max: i64) -> Result<Option<i64>, ApiError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        match v.as_i64() {
            Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
            _ => Err(invalid(format!(
                "{key} must be an integer from {min} to {max}"
            ))),
        }
    }

    pub fn req_int(&self, key: &str, min: i64, max: i64) -> Result<i64, ApiError> {
        self.opt_int(key, min, max)?
            .ok_or_else(|| invalid(format!("{key} is required")))
    }

    /// A string, trimmed, of 1..=`max_chars` characters.
    pub fn opt_str(&self, key: &str, max_chars: usize) -> Result<Option<&'a str>, ApiError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let s = v
            .as_str()
            .ok_or_else(|| invalid(format!("{key} must be a string")))?
            .trim();
        if s.is_empty() {
            return Err(invalid(format!("{key} must not be empty")));
        }
        if s.contains('\0') {
            return Err(invalid(format!("{key} must not contain NUL characters")));
        }
        if s.chars().count() > max_chars {
            return Err(invalid(format!(
                "{key} must be at most {max_chars} characters"
            )));
        }
        Ok(Some(s))
    }

    pub fn req_str(&self, key: &str, max_chars: usize) -> Result<&'a str, ApiError> {
        self.opt_str(key, max_chars)?
            .ok_or_else(|| invalid(format!("{key} is required")))
    }

    pub fn opt_uuid(&self, key: &str) -> Result<Option<Uuid>, ApiError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        v.as_str()
            .and_then(|s| Uuid::parse_str(s.trim()).ok())
            .map(Some)
            .ok_or_else(|| invalid(format!("{key} must be a UUID")))
    }

    pub fn req_uuid(&self, key: &str) -> Result<Uuid, ApiError> {
        self.opt_uuid(key)?
            .ok_or_else(|| invalid(format!("{key} is required")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn msg(r: Result<impl std::fmt::Debug, ApiError>) -> String {
        let e = r.unwrap_err();
        assert_eq!(e.status(), 400);
        e.to_string()
    }

    #[test]
    fn data_must_be_an_object_or_absent() {
        assert!(Data::new(None).is_ok());
        assert!(Data::new(Some(&Value::Null)).is_ok());
        assert_eq!(
            msg(Data::new(Some(&json!([1]))).map(|_| ())),
            "data must be a JSON object"
        );
    }

    #[test]
    fn integers_are_integers() {
        let v = json!({"a": 5, "f": 5.0, "h": 5.5, "s": "5", "big": 1e30, "neg": -1});
        let d = Data::new(Some(&v)).unwrap();
        assert_eq!(d.opt_int("a", 1, 10).unwrap(), Some(5));
        assert_eq!(d.opt_int("missing", 1, 10).unwrap(), None);
        for key in ["f", "h", "s", "big", "neg"] {
            assert_eq!(
                msg(d.opt_int(key, 1, 10)),
                format!("{key} must be an integer from 1 to 10")
            );
        }
        assert_eq!(msg(d.req_int("missing", 1, 10)), "missing is required");
    }

    #[test]
    fn strings_are_trimmed_and_bounded() {
        let v = json!({"s": "  tee  ", "e": "   ", "n": 3, "long": "abcdef", "u": "ünï", "nul": "a\u{0}b"});
        let d = Data::new(Some(&v)).unwrap();
        assert_eq!(d.opt_str("s", 10).unwrap(), Some("tee"));
        assert_eq!(msg(d.opt_str("e", 10)), "e must not be empty");
        assert_eq!(msg(d.opt_str("n", 10)), "n must be a string");
        assert_eq!(
            msg(d.opt_str("long", 5)),
            "long must be at most 5 characters"
        );
        assert_eq!(
            d.opt_str("u", 3).unwrap(),
            Some("ünï"),
            "counts characters, not bytes"
        );
    }

    #[test]
    fn uuids_and_bools() {
        let v = json!({"id": "550e8400-e29b-41d4-a716-446655440000", "bad": "550e8400", "t": true, "tb": "true"});
        let d = Data::new(Some(&v)).unwrap();
        assert!(d.req_uuid("id").is_ok());
        assert_eq!(msg(d.req_uuid("bad")), "bad must be a UUID");
        assert_eq!(d.opt_bool("t").unwrap(), Some(true));
        assert_eq!(msg(d.opt_bool("tb")), "tb must be true or false");
    }
}
