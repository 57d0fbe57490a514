//! The event adapter (§2): every AWS source in, a [`JobRequest`] out, and an
//! answer back in the source's own shape. It knows AWS shapes and nothing of
//! jobs, authentication or the database; [`crate::App`] runs the invocation.
//!
//! Sources are recognised by their keys, in this order, so a malformed event
//! gets a 400 that says what it looked like rather than "did not match any
//! variant":
//!
//! | keys                                            | source                       |
//! |-------------------------------------------------|------------------------------|
//! | `requestContext.http`                           | HTTP API / Function URL (2.0)|
//! | `httpMethod` + `requestContext`                 | REST API (1.0)               |
//! | `detail-type: Scheduled Event`, `source: aws.events` | EventBridge schedule    |
//! | anything else (expects `jobType`)               | direct invocation            |

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lambda_events::apigw::{
    ApiGatewayProxyRequest, ApiGatewayProxyResponse, ApiGatewayV2httpRequest,
    ApiGatewayV2httpResponse,
};
use aws_lambda_events::encodings::Body;
use base64::Engine;
use http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use http::Method;
use serde_json::{Map, Value};

use aws_lambda_events::eventbridge::EventBridgeEvent;

use crate::error::ApiError;

/// The job a schedule runs when its rule's `detail` names none.
pub const SCHEDULED_JOB: &str = "orchestrate";

/// Largest HTTP body accepted (behaviour §2: over 64 KiB is a 413).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

pub const CORS_ALLOW_HEADERS: &str =
    "authorization, x-client-info, apikey, content-type, idempotency-key";
pub const CORS_ALLOW_METHODS: &str = "POST, OPTIONS";

/// What the adapter needs of the Lambda context.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub request_id: String,
    /// When Lambda will stop the invocation.
    pub deadline: Option<Instant>,
    /// The X-Ray trace id Lambda handed over (`Lambda-Runtime-Trace-Id`).
    pub trace_id: Option<String>,
}

impl Invocation {
    pub fn new(request_id: impl Into<String>, deadline: Option<Instant>) -> Self {
        Invocation {
            request_id: request_id.into(),
            deadline,
            trace_id: None,
        }
    }

    /// The same invocation, traced under `trace_id`.
    pub fn with_trace(mut self, trace_id: impl Into<String>) -> Self {
        self.trace_id = Some(trace_id.into()).filter(|t: &String| !t.is_empty());
        self
    }

    /// From the runtime's context, whose deadline is milliseconds since the epoch.
    pub fn from_context(ctx: &lambda_runtime::Context) -> Self {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let remaining_ms = remaining_ms(ctx.deadline, now_ms);
        tracing::debug!(deadline = ctx.deadline, remaining_ms, "invocation deadline");
        let deadline = remaining_ms.map(|ms| Instant::now() + Duration::from_millis(ms));
        let inv = Invocation::new(ctx.request_id.clone(), deadline);
        match &ctx.xray_trace_id {
            Some(trace) => inv.with_trace(trace.clone()),
            None => inv,
        }
    }
}

/// Epoch milliseconds before 2001-09-09: no real Lambda deadline is that old.
const EPOCH_MS_FLOOR: u64 = 1_000_000_000_000;

/// Time left before the deadline. Lambda sends an epoch-millisecond deadline;
/// `cargo lambda watch` sends the function timeout itself (e.g. `600000`), so a
/// value too small to be an epoch time is read as milliseconds from now.
fn remaining_ms(deadline: u64, now_ms: u64) -> Option<u64> {
    match deadline {
        0 => None,
        d if d < EPOCH_MS_FLOOR => Some(d),
        d => Some(d.saturating_sub(now_ms)),
    }
}

/// A failed direct or EventBridge invocation: Lambda reports it as a function
/// error whose message is the JSON error text of behaviour §2, so retries and
/// dead-letter queues see exactly what an HTTP caller would.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvocationError {
    pub error_type: &'static str,
    pub status: u16,
    /// `{"error": …, "timestamp": …, "requestId": …}` as text.
    pub message: String,
}

impl InvocationError {
    /// `e` as a failed invocation of request `request_id`.
    pub fn new(e: &ApiError, request_id: &str) -> Self {
        let body = e.body(request_id);
        InvocationError {
            error_type: e.kind(),
            status: e.status(),
            message: serde_json::to_string(&body).unwrap_or_else(|_| e.to_string()),
        }
    }
}

impl From<InvocationError> for lambda_runtime::Diagnostic {
    fn from(e: InvocationError) -> Self {
        lambda_runtime::Diagnostic {
            error_type: e.error_type.to_owned(),
            error_message: e.message,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Direct,
    Schedule,
    Rest,
    Http,
}

impl Source {
    pub fn as_str(&self) -> &'static str {
        match self {
            Source::Direct => "direct",
            Source::Schedule => "schedule",
            Source::Rest => "rest",
            Source::Http => "http",
        }
    }
}

/// A job request as a source carried it: `jobType` and `data`, not yet
/// validated.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRequest {
    pub job_type: Option<Value>,
    pub data: Option<Value>,
}

/// The parts of an API Gateway request this function reads.
#[derive(Debug)]
pub struct HttpRequest {
    pub method: Method,
    headers: HeaderMap,
    body: Option<String>,
    is_base64_encoded: bool,
    /// Claims an API Gateway authorizer verified, if any.
    pub claims: Option<Map<String, Value>>,
}

impl HttpRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as bytes, base64-decoded, size-checked (400, 413).
    pub fn body_bytes(&self) -> Result<Vec<u8>, ApiError> {
        decode_body(self.body.as_deref(), self.is_base64_encoded)
    }

    /// The job request in `body` (from [`Self::body_bytes`]): a JSON object
    /// with `jobType` and `data`.
    pub fn job_request(&self, body: &[u8]) -> Result<JobRequest, ApiError> {
        let mut request = match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(map)) => map,
            Ok(_) => {
                return Err(ApiError::BadRequest(
                    "Request body must be a JSON object".into(),
                ))
            }
            Err(_) => {
                return Err(ApiError::BadRequest(
                    "Request body is not valid JSON".into(),
                ))
            }
        };
        Ok(JobRequest {
            job_type: request.remove("jobType"),
            data: request.remove("data"),
        })
    }

    /// The `Idempotency-Key` header means `data.idempotencyKey` (§2); a body
    /// that names another key is a 400.
    pub fn apply_idempotency_header(&self, data: &mut Option<Value>) -> Result<(), ApiError> {
        match self.header("idempotency-key") {
            Some(key) => merge_idempotency_key(data, key),
            None => Ok(()),
        }
    }
}

/// An event, recognised.
#[derive(Debug)]
pub enum Incoming {
    /// A direct invocation or a schedule: trusted, answered as JSON.
    Trusted(Source, JobRequest),
    /// An API Gateway event; `Err` when it has the shape's keys but does not
    /// decode — it still gets an answer in that shape, a 400.
    Http(Source, Result<HttpRequest, ApiError>),
}

/// Recognises the source of `event` by its keys (see the module docs) and
/// decodes it. `Err` only for an event that is not a JSON object, or a
/// schedule that does not decode; both are answered as a direct invocation.
pub fn classify(event: Value) -> Result<Incoming, ApiError> {
    let Value::Object(mut obj) = event else {
        return Err(ApiError::BadRequest(
            "Event must be a JSON object with a jobType".into(),
        ));
    };
    let context = obj.get("requestContext");
    if context.and_then(|c| c.get("http")).is_some() {
        let req: ApiGatewayV2httpRequest = match serde_json::from_value(Value::Object(obj)) {
            Ok(req) => req,
            Err(e) => {
                return Ok(Incoming::Http(
                    Source::Http,
                    Err(malformed("HTTP API (payload 2.0)", &e)),
                ))
            }
        };
        let claims = req
            .request_context
            .authorizer
            .as_ref()
            .and_then(|a| a.jwt.as_ref())
            .map(|jwt| {
                jwt.claims
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect()
            });
        return Ok(Incoming::Http(
            Source::Http,
            Ok(HttpRequest {
                method: req.request_context.http.method,
                headers: req.headers,
                body: req.body,
                is_base64_encoded: req.is_base64_encoded,
                claims,
            }),
        ));
    }
    if context.is_some() && obj.contains_key("httpMethod") {
        let req: ApiGatewayProxyRequest = match serde_json::from_value(Value::Object(obj)) {
            Ok(req) => req,
            Err(e) => {
                return Ok(Incoming::Http(
                    Source::Rest,
                    Err(malformed("REST API (payload 1.0)", &e)),
                ))
            }
        };
        let claims = match req.request_context.authorizer.fields.get("claims") {
            Some(Value::Object(c)) => Some(c.clone()),
            _ => None,
        };
        let mut headers = req.multi_value_headers;
        headers.extend(req.headers);
        return Ok(Incoming::Http(
            Source::Rest,
            Ok(HttpRequest {
                method: req.http_method,
                headers,
                body: req.body,
                is_base64_encoded: req.is_base64_encoded,
                claims,
            }),
        ));
    }
    let scheduled = obj.get("detail-type").and_then(Value::as_str) == Some("Scheduled Event")
        && obj.get("source").and_then(Value::as_str) == Some("aws.events");
    if scheduled {
        let schedule: EventBridgeEvent<Option<Value>> = serde_json::from_value(Value::Object(obj))
            .map_err(|e| malformed("EventBridge scheduled", &e))?;
        // The rule's `detail` may name another job; otherwise a schedule orchestrates.
        let mut detail = match schedule.detail {
            Some(Value::Object(d)) => d,
            _ => Map::new(),
        };
        let job_type = detail
            .remove("jobType")
            .unwrap_or_else(|| Value::String(SCHEDULED_JOB.into()));
        return Ok(Incoming::Trusted(
            Source::Schedule,
            JobRequest {
                job_type: Some(job_type),
                data: detail.remove("data"),
            },
        ));
    }
    Ok(Incoming::Trusted(
        Source::Direct,
        JobRequest {
            job_type: obj.remove("jobType"),
            data: obj.remove("data"),
        },
    ))
}

/// A 400 for an event that has a source's keys but not its shape. serde's
/// words are kept (they say which field) but cut short: they may echo input.
fn malformed(what: &str, e: &serde_json::Error) -> ApiError {
    let detail: String = e.to_string().chars().take(160).collect();
    ApiError::BadRequest(format!("Malformed {what} event: {detail}"))
}

/// The body as bytes, size-checked before and after base64 decoding.
fn decode_body(body: Option<&str>, is_base64: bool) -> Result<Vec<u8>, ApiError> {
    let too_large = || {
        ApiError::PayloadTooLarge(format!(
            "Request body is larger than {} KiB",
            MAX_BODY_BYTES / 1024
        ))
    };
    let raw = body.unwrap_or("");
    let bytes = if is_base64 {
        if raw.len() > MAX_BODY_BYTES.div_ceil(3) * 4 + 4 {
            return Err(too_large());
        }
        base64::engine::general_purpose::STANDARD
            .decode(raw.trim())
            .map_err(|_| ApiError::BadRequest("Request body is not valid base64".into()))?
    } else {
        raw.as_bytes().to_vec()
    };
    if bytes.len() > MAX_BODY_BYTES {
        return Err(too_large());
    }
    Ok(bytes)
}

/// The `Idempotency-Key` header means `data.idempotencyKey` (behaviour §2).
fn merge_idempotency_key(data: &mut Option<Value>, key: &str) -> Result<(), ApiError> {
    let map = match data {
        None | Some(Value::Null) => {
            *data = Some(Value::Object(Map::new()));
            match data {
                Some(Value::Object(m)) => m,
                _ => return Ok(()),
            }
        }
        Some(Value::Object(m)) => m,
        // Not an object: the job's own validation reports it.
        Some(_) => return Ok(()),
    };
    match map.get("idempotencyKey") {
        Some(Value::String(existing)) if existing != key => Err(ApiError::BadRequest(
            "idempotencyKey differs from the Idempotency-Key header".into(),
        )),
        Some(Value::String(_)) => Ok(()),
        _ => {
            map.insert("idempotencyKey".into(), Value::String(key.to_owned()));
            Ok(())
        }
    }
}

fn cors_headers(origin: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(
        HeaderName::from_static("access-control-allow-origin"),
        HeaderValue::from_str(origin).unwrap_or(HeaderValue::from_static("*")),
    );
    h.insert(
        HeaderName::from_static("access-control-allow-headers"),
        HeaderValue::from_static(CORS_ALLOW_HEADERS),
    );
    h.insert(
        HeaderName::from_static("access-control-allow-methods"),
        HeaderValue::from_static(CORS_ALLOW_METHODS),
    );
    h
}

/// A proxy integration response in the shape of the source's payload version.
pub fn proxy_response(source: Source, status: u16, body: Option<String>, origin: &str) -> Value {
    let headers = cors_headers(origin);
    let body = body.map(Body::Text);
    let value = if source == Source::Rest {
        let mut r = ApiGatewayProxyResponse::default();
        r.status_code = i64::from(status);
        r.headers = headers;
        r.body = body;
        serde_json::to_value(r)
    } else {
        let mut r = ApiGatewayV2httpResponse::default();
        r.status_code = i64::from(status);
        r.headers = headers;
        r.body = body;
        serde_json::to_value(r)
    };
    value.unwrap_or_else(|_| serde_json::json!({"statusCode": 500}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn deadlines_from_lambda_and_from_the_local_emulator() {
        let now = 1_795_955_563_145;
        assert_eq!(remaining_ms(now + 30_000, now), Some(30_000));
        assert_eq!(remaining_ms(now - 5, now), Some(0), "already past");
        assert_eq!(
            remaining_ms(600_000, now),
            Some(600_000),
            "cargo lambda sends the timeout"
        );
        assert_eq!(remaining_ms(0, now), None);
    }

    #[test]
    fn base64_bodies_are_decoded_and_size_checked() {
        let b64 = base64::engine::general_purpose::STANDARD.encode(br#"{"jobType":"x"}"#);
        assert_eq!(
            decode_body(Some(&b64), true).unwrap(),
            br#"{"jobType":"x"}"#
        );
        assert_eq!(decode_body(Some("%%%"), true).unwrap_err().status(), 400);
        let exact = "a".repeat(MAX_BODY_BYTES);
        assert!(decode_body(Some(&exact), false).is_ok());
        let over = "a".repeat(MAX_BODY_BYTES + 1);
        assert_eq!(decode_body(Some(&over), false).unwrap_err().status(), 413);
        let over64 = base64::engine::general_purpose::STANDARD.encode(over.as_bytes());
        assert_eq!(decode_body(Some(&over64), true).unwrap_err().status(), 413);
    }

    #[test]
    fn idempotency_header_fills_or_must_match_the_body() {
        let mut none = None;
        merge_idempotency_key(&mut none, "k1").unwrap();
        assert_eq!(none, Some(json!({"idempotencyKey": "k1"})));
        let mut same = Some(json!({"idempotencyKey": "k1"}));
        merge_idempotency_key(&mut same, "k1").unwrap();
        let mut other = Some(json!({"idempotencyKey": "k2"}));
        assert_eq!(
            merge_idempotency_key(&mut other, "k1")
                .unwrap_err()
                .status(),
            400
        );
    }

    #[test]
    fn sources_are_recognised_by_their_keys() {
        let direct = classify(json!({"jobType": "orchestrate"})).unwrap();
        assert!(matches!(direct, Incoming::Trusted(Source::Direct, _)));
        let sched = classify(
            json!({"detail-type": "Scheduled Event", "source": "aws.events", "detail": {}}),
        )
        .unwrap();
        match sched {
            Incoming::Trusted(Source::Schedule, j) => {
                assert_eq!(j.job_type, Some(json!("orchestrate")));
            }
            _ => panic!("schedule not recognised"),
        }
        let aws_sample: Value = serde_json::from_str(include_str!(
            "../tests/fixtures/aws-events/example-eventbridge-schedule.json"
        ))
        .unwrap();
        assert!(matches!(
            classify(aws_sample).unwrap(),
            Incoming::Trusted(Source::Schedule, JobRequest { job_type: Some(Value::String(j)), data: None }) if j == "orchestrate"
        ));
        let overridden = classify(
            json!({"detail-type": "Scheduled Event", "source": "aws.events",
            "detail": {"jobType": "review-batch", "data": {"x": 1}}}),
        )
        .unwrap();
        assert!(matches!(
            overridden,
            Incoming::Trusted(Source::Schedule, JobRequest { job_type: Some(Value::String(j)), data: Some(_) }) if j == "review-batch"
        ));
        match classify(json!({"requestContext": {"http": {}}})) {
            Ok(Incoming::Http(Source::Http, Err(e))) => {
                assert!(e.to_string().starts_with("Malformed HTTP API"), "{e}")
            }
            _ => panic!("a malformed HTTP API event is still answered as HTTP"),
        }
        assert_eq!(classify(json!([1, 2])).err().unwrap().status(), 400);
    }
}
