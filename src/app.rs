//! One Lambda instance: the state it builds at init and keeps (settings, the
//! authenticator, the lazy connection pool), and the invocation itself —
//! adapt the event, authenticate, run the job, answer in the source's shape,
//! then one summary log line and one metric line.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use secrecy::SecretString;
use serde_json::Value;
use tracing::Instrument;

use crate::auth::{Authenticator, Credentials, Principal, Scheme};
use crate::configuration::{AuthMode, Settings};
use crate::domain::{Counts, Delivery};
use crate::error::ApiError;
use crate::event::{self, HttpRequest, Incoming, Invocation, InvocationError, JobRequest, Source};
use crate::eventbridge::EventBridgeSink;
use crate::jobs::outbox::EventSink;
use crate::jobs::{Deadline, Job, JobContext, JobType};
use crate::store::pool::DbConfigError;
use crate::store::Db;
use crate::telemetry::metrics::{emf_line, Line, MetricsSink};
use crate::telemetry::phases::{self, Phases, Timings};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Database(#[from] DbConfigError),
}

pub struct App {
    pub settings: Settings,
    pub auth: Authenticator,
    pub db: Db,
    /// Where the outbox goes: EventBridge when `EVENT_BUS_NAME` is set.
    pub events: Option<Box<dyn EventSink>>,
    /// Where the one EMF line per job goes (stdout on Lambda).
    pub metrics: MetricsSink,
    /// Still true until this instance's first invocation starts.
    cold: AtomicBool,
}

impl App {
    pub fn new(settings: Settings) -> Result<Self, StartupError> {
        if settings.auth_mode == AuthMode::None {
            tracing::warn!("AUTH_MODE=none: HTTP requests are NOT authenticated; use this for local development only");
        }
        let db = Db::new(&settings)?;
        let auth = Authenticator::new(&settings);
        let events = settings.event_bus_name.as_ref().map(|bus| {
            Box::new(EventBridgeSink::new(
                bus.clone(),
                settings.event_source.clone(),
                settings.eventbridge_endpoint.clone(),
            )) as Box<dyn EventSink>
        });
        Ok(App {
            settings,
            auth,
            db,
            events,
            metrics: MetricsSink::Stdout,
            cold: AtomicBool::new(true),
        })
    }

    pub fn with_metrics(mut self, sink: MetricsSink) -> Self {
        self.metrics = sink;
        self
    }

    /// The HS256 secret: `JWT_SECRET`, else the database secret's `jwtSecret`
    /// (read only when an HS256 token has to be checked).
    pub async fn jwt_secret(&self) -> Result<Option<SecretString>, ApiError> {
        if let Some(secret) = &self.settings.jwt_secret {
            return Ok(Some(secret.clone()));
        }
        Ok(self.db.jwt_secret().await?)
    }
}

/// What the summary line and the metrics need to know of one invocation.
#[derive(Default)]
struct Record {
    job_type: Option<JobType>,
    counts: Counts,
    delivery: Option<Delivery>,
    cold_start: bool,
    timings: Timings,
}

/// How one invocation ends, before it is shaped for Lambda.
enum Answer {
    /// A trusted source's job answered.
    Direct(Value),
    /// A proxy response, whatever its status.
    Http(u16, Value),
    /// A trusted source's job failed: the invocation fails.
    Failed(ApiError),
}

impl Answer {
    fn status(&self) -> u16 {
        match self {
            Answer::Direct(_) => 200,
            Answer::Http(status, _) => *status,
            Answer::Failed(e) => e.status(),
        }
    }
}

impl App {
    /// Handles one Lambda event from any source. Everything logged while it
    /// runs carries the request id (the `invocation` span).
    /// Every line also carries the X-Ray trace id (`xrayTraceId`), when
    /// Lambda gave one, and the phase clocks run for this invocation.
    pub async fn handle(&self, event: Value, inv: &Invocation) -> Result<Value, InvocationError> {
        let span = tracing::info_span!(
            "invocation",
            requestId = %inv.request_id,
            xrayTraceId = tracing::field::Empty
        );
        if let Some(trace) = &inv.trace_id {
            span.record("xrayTraceId", trace.as_str());
        }
        let phases = Arc::new(Phases::default());
        // Boxed: the jobs' futures are large, and a caller's stack (a test
        // thread's 2 MiB, unoptimised) should not have to hold them.
        let work = Box::pin(self.handle_in_span(event, inv, &phases));
        phases::scope(phases.clone(), work).instrument(span).await
    }

    async fn handle_in_span(
        &self,
        event: Value,
        inv: &Invocation,
        phases: &Phases,
    ) -> Result<Value, InvocationError> {
        let started = Instant::now();
        let mut record = Record {
            cold_start: self.cold.swap(false, Ordering::Relaxed),
            ..Record::default()
        };
        let (source, answer) = self.answer(event, inv, &mut record).await;
        if let Answer::Failed(e) = &answer {
            log_error(e);
        }
        record.timings = phases.timings();
        self.summarize(source, answer.status(), &record, started, inv);
        match answer {
            Answer::Direct(v) | Answer::Http(_, v) => Ok(v),
            Answer::Failed(e) => Err(InvocationError::new(&e, &inv.request_id)),
        }
    }

    /// Recognises the source and runs what it asks for.
    async fn answer(
        &self,
        event: Value,
        inv: &Invocation,
        record: &mut Record,
    ) -> (Source, Answer) {
        match event::classify(event) {
            Err(e) => (Source::Direct, Answer::Failed(e)),
            Ok(Incoming::Trusted(source, request)) => {
                let answer = match self.run_trusted(request, inv, record).await {
                    Ok(v) => Answer::Direct(v),
                    Err(e) => Answer::Failed(e),
                };
                (source, answer)
            }
            Ok(Incoming::Http(source, req)) => {
                let (status, response) = self.run_http(source, req, inv, record).await;
                (source, Answer::Http(status, response))
            }
        }
    }

    async fn run_trusted(
        &self,
        request: JobRequest,
        inv: &Invocation,
        record: &mut Record,
    ) -> Result<Value, ApiError> {
        let job_type = JobType::parse(request.job_type.as_ref())?;
        self.run_job(
            job_type,
            request.data.as_ref(),
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
        if req
            .as_ref()
            .is_ok_and(|r| r.method == http::Method::OPTIONS)
        {
            return (204, event::proxy_response(source, 204, None, origin));
        }
        let result = match req {
            Ok(req) => self.http_job(&req, inv, record).await,
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
        (
            status,
            event::proxy_response(source, status, Some(body), origin),
        )
    }

    /// POST only; the body's size is checked before the caller is
    /// authenticated, and parsed after.
    async fn http_job(
        &self,
        req: &HttpRequest,
        inv: &Invocation,
        record: &mut Record,
    ) -> Result<Value, ApiError> {
        if req.method != http::Method::POST {
            return Err(ApiError::MethodNotAllowed(format!(
                "Method {} not allowed; use POST",
                req.method
            )));
        }
        let body = req.body_bytes()?;
        let principal = self.authenticate(req).await?;
        let mut request = req.job_request(&body)?;
        let job_type = JobType::parse(request.job_type.as_ref())?;
        req.apply_idempotency_header(&mut request.data)?;
        self.run_job(job_type, request.data.as_ref(), &principal, inv, record)
            .await
    }

    /// Who the HTTP caller is: the gateway's verified claims, or a bearer token.
    async fn authenticate(&self, req: &HttpRequest) -> Result<Principal, ApiError> {
        match self
            .auth
            .credentials(req.header("authorization"), req.claims.as_ref())?
        {
            Credentials::Settled(principal) => Ok(principal),
            Credentials::Bearer(token) => {
                let secret = match Authenticator::scheme(token)? {
                    Scheme::SharedSecret => self.jwt_secret().await?,
                    Scheme::KeySet => None,
                };
                self.auth.verify(token, secret.as_ref()).await
            }
        }
    }

    /// Validates, authorizes and runs the job; records what it did.
    async fn run_job(
        &self,
        job_type: JobType,
        data: Option<&Value>,
        principal: &Principal,
        inv: &Invocation,
        record: &mut Record,
    ) -> Result<Value, ApiError> {
        record.job_type = Some(job_type);
        // At info, only what is not personal: the job, its plain fields, and
        // which keys were sent. The whole request, masked by the log writer,
        // only at debug (behaviour §9): free-form buyer data stays out of
        // production logs.
        tracing::info!(
            jobType = job_type.as_str(),
            request = %request_summary(data),
            "job request"
        );
        tracing::debug!(
            jobType = job_type.as_str(),
            request = %data.map(serde_json::Value::to_string).unwrap_or_default(),
            "job request (whole)"
        );
        let job = Job::parse(job_type, data, principal)?;
        let ctx = JobContext {
            db: &self.db,
            settings: &self.settings,
            principal,
            deadline: Deadline::new(inv.deadline, self.settings.deadline_margin),
            events: self.events.as_deref(),
        };
        let output = job.run(&ctx).await?;
        record.counts = output.counts;
        record.delivery = output.delivery;
        Ok(output.body)
    }

    /// The summary log line, and the metric line for every job (and every
    /// refused request).
    fn summarize(
        &self,
        source: Source,
        status: u16,
        record: &Record,
        started: Instant,
        inv: &Invocation,
    ) {
        let outcome = if status < 400 {
            "ok".to_owned()
        } else {
            status.to_string()
        };
        let duration_ms = started.elapsed().as_millis() as u64;
        let job_type = record.job_type.map(|j| j.as_str()).unwrap_or("unknown");
        let c = &record.counts;
        let d = record.delivery.unwrap_or_default();
        if d.failed > 0 {
            tracing::warn!(
                publishFailures = d.failed,
                eventsPending = d.pending,
                "some events were not delivered; publish-events will retry them"
            );
        }
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
            failed = c.failed,
            ordersCancelled = c.orders_cancelled,
            ordersPlaced = c.orders_placed,
            eventsPublished = d.published,
            publishFailures = d.failed,
            eventsPending = d.pending,
            coldStart = record.cold_start,
            secretMs = record.timings.secret_ms,
            connectMs = record.timings.connect_ms,
            dbMs = record.timings.db_ms,
            publishMs = record.timings.publish_ms,
            xrayTraceId = inv.trace_id.as_deref().unwrap_or(""),
            "invocation finished"
        );
        if record.job_type.is_some() || status >= 400 {
            self.metrics.emit(&emf_line(&Line {
                job_type,
                counts: c,
                delivery: record.delivery.as_ref(),
                duration_ms,
                error: status >= 500,
                cold_start: record.cold_start,
                timings: record.timings,
                request_id: &inv.request_id,
                trace_id: inv.trace_id.as_deref(),
            }));
        }
    }
}

/// Fields of a request that say what was asked without saying who asked or
/// what they wrote: they are logged at info with their values.
const PLAIN_FIELDS: &[&str] = &[
    "productCategory",
    "productVariantBase",
    "quantity",
    "dryRun",
    "limit",
    "batchId",
    "decision",
];

/// `{"productCategory":"t-shirts","quantity":50,"keys":["buyerId",…]}`: the
/// plain fields' values (scalars only) and the names of every key sent.
fn request_summary(data: Option<&Value>) -> Value {
    let Some(Value::Object(map)) = data else {
        return serde_json::json!({"keys": []});
    };
    let mut out = serde_json::Map::new();
    for field in PLAIN_FIELDS {
        if let Some(v @ (Value::String(_) | Value::Number(_) | Value::Bool(_))) = map.get(*field) {
            out.insert((*field).to_owned(), v.clone());
        }
    }
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort();
    out.insert("keys".into(), serde_json::json!(keys));
    Value::Object(out)
}

fn log_error(e: &ApiError) {
    match e {
        ApiError::Internal(detail) => tracing::error!(error = %detail, "job failed"),
        other => tracing::info!(status = other.status(), error = %other, "request refused"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_info_summary_names_keys_and_plain_fields_only() {
        let data = json!({"productCategory": "t-shirts", "productVariantBase": "crew", "quantity": 50,
                          "styleDetails": {"variant": "navy-m", "notes": "call 017 1234 5678"},
                          "buyerId": "550e8400-e29b-41d4-a716-446655440000", "idempotencyKey": "k-1"});
        let s = request_summary(Some(&data));
        assert_eq!(
            s,
            json!({"productCategory": "t-shirts", "productVariantBase": "crew", "quantity": 50,
                   "keys": ["buyerId", "idempotencyKey", "productCategory", "productVariantBase",
                            "quantity", "styleDetails"]})
        );
        let text = s.to_string();
        for personal in ["navy-m", "017", "550e8400", "k-1", "notes"] {
            assert!(!text.contains(personal), "{personal} in {text}");
        }
        // A plain field holding an object is not echoed either.
        let odd = json!({"quantity": {"email": "a@b.co"}, "batchId": "b"});
        assert_eq!(
            request_summary(Some(&odd)),
            json!({"batchId": "b", "keys": ["batchId", "quantity"]})
        );
        assert_eq!(request_summary(None), json!({"keys": []}));
    }
}
