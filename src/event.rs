//! The event adapter: every source of SPEC §2 in, a job out, and the answer
//! back in the source's own shape.
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

use crate::app::App;
use crate::auth::{Credentials, Principal};
use crate::error::ApiError;
use crate::jobs::{Deadline, Job, JobContext, JobType};
use crate::telemetry::metrics::{emf_line, JobCounts};
use tracing::Instrument;

/// Largest HTTP body accepted (SPEC §2: over 64 KiB is a 413).
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
}

impl Invocation {
    pub fn new(request_id: impl Into<String>, deadline: Option<Instant>) -> Self {
        Invocation {
            request_id: request_id.into(),
            deadline,
        }
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
        Invocation::new(ctx.request_id.clone(), deadline)
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
/// error whose message is the SPEC's JSON error text, so retries and
/// dead-letter queues see exactly what an HTTP caller would.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvocationError {
    pub error_type: &'static str,
    pub status: u16,
    /// `{"error": …, "timestamp": …, "requestId": …}` as text.
    pub message: String,
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

/// A request for a job from a trusted source.
struct TrustedJob {
    source: Source,
    job_type: Option<Value>,
    data: Option<Value>,
}

/// The parts of an API Gateway request this function reads.
struct HttpRequest {
    method: Method,
    headers: HeaderMap,
    body: Option<String>,
    is_base64_encoded: bool,
    /// Claims an API Gateway authorizer verified, if any.
    claims: Option<Map<String, Value>>,
}

enum Incoming {
    Trusted(TrustedJob),
    /// An API Gateway event; `Err` when it has the shape's keys but does not
    /// decode — it still gets an answer in that shape, a 400.
    Http(Source, Result<HttpRequest, ApiError>),
}

/// What the summary line and the metrics need to know of one invocation.
#[derive(Default)]
struct Record {
    job_type: Option<JobType>,
    counts: JobCounts,
}

impl App {
    /// Handles one Lambda event from any source. Everything logged while it
    /// runs carries the request id (the `invocation` span).
    pub async fn handle(&self, event: Value, inv: &Invocation) -> Result<Value, InvocationError> {
        let span = tracing::info_span!("invocation", requestId = %inv.request_id);
        self.handle_in_span(event, inv).instrument(span).await
    }

    async fn handle_in_span(
        &self,
        event: Value,
        inv: &Invocation,
    ) -> Result<Value, InvocationError> {
        let started = Instant::now();
        let mut record = Record::default();
        let (source, result) = match classify(event) {
            Err(e) => (Source::Direct, Err(e)),
            Ok(Incoming::Trusted(job)) => {
                let source = job.source;
                let result = self.run_trusted(job, inv, &mut record).await;
                (source, result.map(Answer::Direct))
            }
            Ok(Incoming::Http(source, req)) => {
                let (status, response) = self.run_http(source, req, inv, &mut record).await;
                (source, Ok(Answer::Http(status, response)))
            }
        };
        let status = match &result {
            Ok(Answer::Http(status, _)) => *status,
            Ok(Answer::Direct(_)) => 200,
            Err(e) => e.status(),
        };
        if let Err(e) = &result {
            log_error(e);
        }
        let outcome = if status < 400 {
            "ok".to_owned()
        } else {
            status.to_string()
        };
        let duration_ms = started.elapsed().as_millis() as u64;
        let job_type = record.job_type.map(|j| j.as_str()).unwrap_or("unknown");
        let c = record.counts;
        tracing::info!(
            requestId = %inv.request_id,
            jobType = job_type,
            source = source.as_str(),
            durationMs = duration_ms,
            outcome = %outcome,
            confirmed = c.confirmed,
            needsReview = c.needs_review,
            cancelled = c.cancelled,
            nearingTarget = c.nearing_target,
            skipped = c.skipped,
            ordersCancelled = c.orders_cancelled,
            ordersPlaced = c.orders_placed,
            "invocation finished"
        );
        if record.job_type.is_some() || status >= 400 {
            self.metrics.emit(&emf_line(
                job_type,
                &c,
                duration_ms,
                status >= 500,
                &inv.request_id,
            ));
        }
        match result {
            Ok(Answer::Direct(v)) | Ok(Answer::Http(_, v)) => Ok(v),
            Err(e) => {
                let body = e.body(&inv.request_id);
                Err(InvocationError {
                    error_type: e.kind(),
                    status: e.status(),
                    message: serde_json::to_string(&body).unwrap_or_else(|_| e.to_string()),
                })
            }
        }
    }

    async fn run_trusted(
        &self,
        job: TrustedJob,
        inv: &Invocation,
        record: &mut Record,
    ) -> Result<Value, ApiError> {
        let job_type = JobType::parse(job.job_type.as_ref())?;
        self.run_job(
            job_type,
            job.data.as_ref(),
            &Principal::Trusted,
            inv,
            record,
        )
        .await
    }

    /// Always answers with a proxy response; errors become their status code.
    async fn run_http(
        &self,
        source: Source,
        req: Result<HttpRequest, ApiError>,
        inv: &Invocation,
        record: &mut Record,
    ) -> (u16, Value) {
        let origin = self.settings.cors_allow_origin.as_str();
        if req.as_ref().is_ok_and(|r| r.method == Method::OPTIONS) {
            return (204, proxy_response(source, 204, None, origin));
        }
        let result = match req {
            Ok(req) => self.http_job(req, inv, record).await,
            Err(e) => Err(e),
        };
        let (status, body) = match result {
            Ok(v) => (200, v.to_string()),
            Err(e) => {
                log_error(&e);
                let body = serde_json::to_string(&e.body(&inv.request_id))
                    .unwrap_or_else(|_| "{}".to_owned());
                (e.status(), body)
            }
        };
        (status, proxy_response(source, status, Some(body), origin))
    }

    async fn http_job(
        &self,
        req: HttpRequest,
        inv: &Invocation,
        record: &mut Record,
    ) -> Result<Value, ApiError> {
        if req.method != Method::POST {
            return Err(ApiError::MethodNotAllowed(format!(
                "Method {} not allowed; use POST",
                req.method
            )));
        }
        let body = decode_body(req.body.as_deref(), req.is_base64_encoded)?;
        let principal = match self
            .auth
            .credentials(header(&req.headers, "authorization"), req.claims.as_ref())?
        {
            Credentials::Settled(principal) => principal,
            Credentials::Bearer(token) => self.auth.verify(token, &self.jwt_secret().await?)?,
        };
        let mut request = match serde_json::from_slice::<Value>(&body) {
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
        let job_type = JobType::parse(request.get("jobType"))?;
        let mut data = request.remove("data");
        if let Some(key) = header(&req.headers, "idempotency-key") {
            merge_idempotency_key(&mut data, key)?;
        }
        self.run_job(job_type, data.as_ref(), &principal, inv, record)
            .await
    }

    async fn run_job(
        &self,
        job_type: JobType,
        data: Option<&Value>,
        principal: &Principal,
        inv: &Invocation,
        record: &mut Record,
    ) -> Result<Value, ApiError> {
        record.job_type = Some(job_type);
        // The request as it came, for operators; the log writer masks personal data.
        tracing::info!(
            jobType = job_type.as_str(),
            request = %data.map(serde_json::Value::to_string).unwrap_or_default(),
            "job request"
        );
        let job = Job::parse(job_type, data, principal)?;
        let ctx = JobContext {
            db: &self.db,
            settings: &self.settings,
            principal,
            deadline: Deadline::new(inv.deadline, self.settings.deadline_margin),
        };
        let output = job.run(&ctx).await?;
        record.counts = output.counts;
        Ok(output.body)
    }
}

enum Answer {
    Direct(Value),
    Http(u16, Value),
}

fn log_error(e: &ApiError) {
    match e {
        ApiError::Internal(detail) => tracing::error!(error = %detail, "job failed"),
        other => tracing::info!(status = other.status(), error = %other, "request refused"),
    }
}

fn classify(event: Value) -> Result<Incoming, ApiError> {
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
        // The rule's `detail` may name another job; otherwise a schedule orchestrates.
        let mut detail = match obj.remove("detail") {
            Some(Value::Object(d)) => d,
            _ => Map::new(),
        };
        let job_type = detail
            .remove("jobType")
            .or_else(|| Some(Value::String(JobType::Orchestrate.as_str().into())));
        return Ok(Incoming::Trusted(TrustedJob {
            source: Source::Schedule,
            job_type,
            data: detail.remove("data"),
        }));
    }
    Ok(Incoming::Trusted(TrustedJob {
        source: Source::Direct,
        job_type: obj.remove("jobType"),
        data: obj.remove("data"),
    }))
}

/// A 400 for an event that has a source's keys but not its shape. serde's
/// words are kept (they say which field) but cut short: they may echo input.
fn malformed(what: &str, e: &serde_json::Error) -> ApiError {
    let detail: String = e.to_string().chars().take(160).collect();
    ApiError::BadRequest(format!("Malformed {what} event: {detail}"))
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
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

/// The `Idempotency-Key` header means `data.idempotencyKey` (SPEC §2).
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
fn proxy_response(source: Source, status: u16, body: Option<String>, origin: &str) -> Value {
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
        assert!(matches!(
            direct,
            Incoming::Trusted(TrustedJob {
                source: Source::Direct,
                ..
            })
        ));
        let sched = classify(
            json!({"detail-type": "Scheduled Event", "source": "aws.events", "detail": {}}),
        )
        .unwrap();
        match sched {
            Incoming::Trusted(j) => {
                assert_eq!(j.source, Source::Schedule);
                assert_eq!(j.job_type, Some(json!("orchestrate")));
            }
            _ => panic!("schedule not recognised"),
        }
        match classify(json!({"requestContext": {"http": {}}})) {
            Ok(Incoming::Http(Source::Http, Err(e))) => {
                assert!(e.to_string().starts_with("Malformed HTTP API"), "{e}")
            }
            _ => panic!("a malformed HTTP API event is still answered as HTTP"),
        }
        assert_eq!(classify(json!([1, 2])).err().unwrap().status(), 400);
    }
}
