//! The event adapter (§2): AWS shapes in and out, nothing else. Every event
//! becomes one [`Incoming`] — a direct invocation's object, a schedule's
//! `detail`, or an HTTP request (an [`http::Request`] with the authorizer's
//! claims as an extension) — and an HTTP answer ([`http::Response`]) goes back
//! in the payload version it came in ([`Flavour`]). It knows no job, no
//! authentication and no database: [`crate::http_api`] handles HTTP requests,
//! and every source ends in the same job runner ([`crate::App`]).
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
use aws_lambda_events::encodings::Body as ProxyBody;
use aws_lambda_events::eventbridge::EventBridgeEvent;
use base64::Engine;
use serde_json::{Map, Value};

use crate::error::ApiError;

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

/// Where an invocation came from (the summary line's `source`).
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

/// Which API Gateway payload an HTTP request came in, and so the shape its
/// answer must have. Only HTTP events have one: a direct or scheduled
/// invocation cannot be answered as a proxy response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// REST API, payload 1.0.
    Rest,
    /// HTTP API or function URL, payload 2.0.
    Http,
}

/// An HTTP request as this function reads it.
pub type HttpRequest = http::Request<Body>;
/// An HTTP answer: status, headers and, but for a preflight, a JSON body.
pub type HttpResponse = http::Response<Option<String>>;

/// Claims an API Gateway authorizer verified, as the gateway handed them
/// over; an extension of the [`HttpRequest`].
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayClaims(pub Map<String, Value>);

/// An HTTP body as API Gateway carried it: text, or the base64 of bytes.
/// Decoded only on demand, so a request refused before its body is read
/// (a preflight, a wrong method) never pays for it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Body {
    text: Option<String>,
    base64: bool,
}

/// Why a body could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// More than the limit, before or after base64 decoding.
    TooLarge,
    NotBase64,
}

impl Body {
    pub fn new(text: Option<String>, base64: bool) -> Self {
        Body { text, base64 }
    }

    /// The bytes, at most `max` of them. A base64 body is measured before
    /// it is decoded too, so an oversized one is never decoded.
    pub fn bytes(&self, max: usize) -> Result<Vec<u8>, BodyError> {
        let raw = self.text.as_deref().unwrap_or("");
        let bytes = if self.base64 {
            if raw.len() > max.div_ceil(3) * 4 + 4 {
                return Err(BodyError::TooLarge);
            }
            base64::engine::general_purpose::STANDARD
                .decode(raw.trim())
                .map_err(|_| BodyError::NotBase64)?
        } else {
            raw.as_bytes().to_vec()
        };
        if bytes.len() > max {
            return Err(BodyError::TooLarge);
        }
        Ok(bytes)
    }
}

/// An event, recognised.
#[derive(Debug)]
pub enum Incoming {
    /// A direct invocation: the event itself (`{"jobType": …, "data": …}`).
    Direct(Map<String, Value>),
    /// An EventBridge schedule: its rule's `detail`, if any.
    Schedule(Option<Value>),
    /// An API Gateway event; `Err` when it has the shape's keys but does not
    /// decode — it is still answered in that shape, with a 400. Boxed: a
    /// request is much larger than the other variants.
    Http(Flavour, Result<Box<HttpRequest>, ApiError>),
}

impl Incoming {
    pub fn source(&self) -> Source {
        match self {
            Incoming::Direct(_) => Source::Direct,
            Incoming::Schedule(_) => Source::Schedule,
            Incoming::Http(Flavour::Rest, _) => Source::Rest,
            Incoming::Http(Flavour::Http, _) => Source::Http,
        }
    }
}

/// Recognises the source of `event` by its keys (see the module docs) and
/// decodes it. `Err` only for an event that is not a JSON object, or a
/// schedule that does not decode; both are answered as a direct invocation.
pub fn classify(event: Value) -> Result<Incoming, ApiError> {
    let Value::Object(obj) = event else {
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
                    Flavour::Http,
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
        let request = http_request(
            req.request_context.http.method,
            req.headers,
            Body::new(req.body, req.is_base64_encoded),
            claims,
        );
        return Ok(Incoming::Http(Flavour::Http, Ok(Box::new(request))));
    }
    if context.is_some() && obj.contains_key("httpMethod") {
        let req: ApiGatewayProxyRequest = match serde_json::from_value(Value::Object(obj)) {
            Ok(req) => req,
            Err(e) => {
                return Ok(Incoming::Http(
                    Flavour::Rest,
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
        let request = http_request(
            req.http_method,
            headers,
            Body::new(req.body, req.is_base64_encoded),
            claims,
        );
        return Ok(Incoming::Http(Flavour::Rest, Ok(Box::new(request))));
    }
    let scheduled = obj.get("detail-type").and_then(Value::as_str) == Some("Scheduled Event")
        && obj.get("source").and_then(Value::as_str) == Some("aws.events");
    if scheduled {
        let schedule: EventBridgeEvent<Option<Value>> = serde_json::from_value(Value::Object(obj))
            .map_err(|e| malformed("EventBridge scheduled", &e))?;
        return Ok(Incoming::Schedule(schedule.detail));
    }
    Ok(Incoming::Direct(obj))
}

fn http_request(
    method: http::Method,
    headers: http::HeaderMap,
    body: Body,
    claims: Option<Map<String, Value>>,
) -> HttpRequest {
    let mut request = http::Request::new(body);
    *request.method_mut() = method;
    *request.headers_mut() = headers;
    if let Some(claims) = claims {
        request.extensions_mut().insert(GatewayClaims(claims));
    }
    request
}

/// A 400 for an event that has a source's keys but not its shape. serde's
/// words are kept (they say which field) but cut short: they may echo input.
fn malformed(what: &str, e: &serde_json::Error) -> ApiError {
    let detail: String = e.to_string().chars().take(160).collect();
    ApiError::BadRequest(format!("Malformed {what} event: {detail}"))
}

/// `response` as a proxy integration response of the payload version the
/// request came in.
pub fn proxy_response(flavour: Flavour, response: HttpResponse) -> Value {
    let (parts, body) = response.into_parts();
    let status_code = i64::from(parts.status.as_u16());
    let body = body.map(ProxyBody::Text);
    let value = match flavour {
        Flavour::Rest => {
            let mut r = ApiGatewayProxyResponse::default();
            r.status_code = status_code;
            r.headers = parts.headers;
            r.body = body;
            serde_json::to_value(r)
        }
        Flavour::Http => {
            let mut r = ApiGatewayV2httpResponse::default();
            r.status_code = status_code;
            r.headers = parts.headers;
            r.body = body;
            serde_json::to_value(r)
        }
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
        let max = 64;
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let body = |text: &str, base64| Body::new(Some(text.to_owned()), base64);
        assert_eq!(
            body(&b64(br#"{"jobType":"x"}"#), true).bytes(max).unwrap(),
            br#"{"jobType":"x"}"#
        );
        assert_eq!(body("%%%", true).bytes(max), Err(BodyError::NotBase64));
        let exact = "a".repeat(max);
        assert_eq!(body(&exact, false).bytes(max).unwrap().len(), max);
        assert_eq!(
            body(&b64(exact.as_bytes()), true).bytes(max).unwrap().len(),
            max
        );
        let over = "a".repeat(max + 1);
        assert_eq!(body(&over, false).bytes(max), Err(BodyError::TooLarge));
        assert_eq!(
            body(&b64(over.as_bytes()), true).bytes(max),
            Err(BodyError::TooLarge)
        );
        // Too long to be the base64 of an acceptable body: refused undecoded.
        assert_eq!(
            body(&"%".repeat(max * 2), true).bytes(max),
            Err(BodyError::TooLarge)
        );
        assert_eq!(Body::default().bytes(max).unwrap(), b"");
    }

    #[test]
    fn sources_are_recognised_by_their_keys() {
        let direct = classify(json!({"jobType": "orchestrate"})).unwrap();
        assert!(matches!(&direct, Incoming::Direct(o) if o["jobType"] == "orchestrate"));
        assert_eq!(direct.source(), Source::Direct);
        let sched = classify(
            json!({"detail-type": "Scheduled Event", "source": "aws.events", "detail": {}}),
        )
        .unwrap();
        assert!(matches!(&sched, Incoming::Schedule(Some(d)) if *d == json!({})));
        assert_eq!(sched.source(), Source::Schedule);
        let aws_sample: Value = serde_json::from_str(include_str!(
            "../tests/fixtures/aws-events/example-eventbridge-schedule.json"
        ))
        .unwrap();
        assert!(matches!(
            classify(aws_sample).unwrap(),
            Incoming::Schedule(_)
        ));
        match classify(json!({"requestContext": {"http": {}}})) {
            Ok(Incoming::Http(Flavour::Http, Err(e))) => {
                assert!(e.to_string().starts_with("Malformed HTTP API"), "{e}")
            }
            _ => panic!("a malformed HTTP API event is still answered as HTTP"),
        }
        assert_eq!(classify(json!([1, 2])).err().unwrap().status(), 400);
    }

    #[test]
    fn answers_take_the_shape_of_their_payload_version() {
        let response = || {
            http::Response::builder()
                .status(418)
                .header("content-type", "application/json")
                .body(Some("{}".to_owned()))
                .unwrap()
        };
        let v1 = proxy_response(Flavour::Rest, response());
        let v2 = proxy_response(Flavour::Http, response());
        for v in [&v1, &v2] {
            assert_eq!(v["statusCode"], 418);
            assert_eq!(v["headers"]["content-type"], "application/json");
            assert_eq!(v["body"], "{}");
        }
        assert!(v1.get("cookies").is_none(), "1.0 responses have no cookies");
        assert_eq!(v2["cookies"], json!([]), "2.0 responses have cookies");
    }
}
