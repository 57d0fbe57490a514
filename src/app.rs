//! One Lambda instance: the state it builds at init and keeps (settings, the
//! authenticator, the lazy connection pool, the event sink), and the
//! invocation itself: recognise the event, run the job by the one road every
//! source takes ([`App::run_job`]; HTTP requests through [`crate::http_api`]
//! first), answer in the source's shape, then one summary log line and one
//! metric line, both read from the invocation's [`InvocationReport`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;
use tracing::Instrument;

use crate::auth::{Authenticator, Principal, SharedSecret};
use crate::configuration::{AuthMode, Settings};
use crate::deadline::Deadline;
use crate::domain::{Counts, Delivery};
use crate::error::ApiError;
use crate::event::{self, Incoming, Invocation, InvocationError, Source};
use crate::eventbridge::EventBridgeSink;
use crate::http_api;
use crate::jobs::{self, Job, JobContext, JobRequest};
use crate::outbox::{EventSink, Outbox, Policy};
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
    /// `migrate`'s connections, as the owner (`MIGRATE_SECRET_ID`); `None`: `db`'s.
    pub migrate_db: Option<Db>,
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
        let migrate_db = match (&settings.database_url, &settings.migrate_secret_id) {
            (None, Some(owner)) => Some(Db::new(&Settings {
                db_secret_id: Some(owner.clone()),
                ..settings.clone()
            })?),
            (Some(_), Some(_)) => {
                tracing::warn!(
                    "MIGRATE_SECRET_ID is ignored: DATABASE_URL is set, and migrate uses it"
                );
                None
            }
            (_, None) => None,
        };
        let auth = Authenticator::new(
            &settings,
            SharedSecret::from_settings(&settings, db.secret()),
        );
        let events = settings.event_bus_name.as_ref().map(|bus| {
            Box::new(EventBridgeSink::new(
                bus.clone(),
                settings.event_source.clone(),
                settings.eventbridge_endpoint.clone(),
                settings.publish_call_timeout,
            )) as Box<dyn EventSink>
        });
        Ok(App {
            settings,
            auth,
            db,
            migrate_db,
            events,
            metrics: MetricsSink::Stdout,
            cold: AtomicBool::new(true),
        })
    }

    pub fn with_metrics(mut self, sink: MetricsSink) -> Self {
        self.metrics = sink;
        self
    }
}

/// What a job did: the summary line and the metrics read it, never the answer.
#[derive(Debug, Default, Clone, Copy)]
struct Activity {
    /// `None` when the request named no job this function knows.
    job: Option<&'static Job>,
    counts: Counts,
    /// What delivering the outbox did, when it was tried.
    delivery: Option<Delivery>,
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

/// What one invocation did, for its summary line and its metric line.
struct InvocationReport {
    source: Source,
    status: u16,
    activity: Activity,
    duration_ms: u64,
    cold_start: bool,
    timings: Timings,
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
        let cold_start = self.cold.swap(false, Ordering::Relaxed);
        let (source, activity, answer) = self.answer(event, inv).await;
        if let Answer::Failed(e) = &answer {
            e.log();
        }
        self.summarize(
            &InvocationReport {
                source,
                status: answer.status(),
                activity,
                duration_ms: started.elapsed().as_millis() as u64,
                cold_start,
                timings: phases.timings(),
            },
            inv,
        );
        match answer {
            Answer::Direct(v) | Answer::Http(_, v) => Ok(v),
            Answer::Failed(e) => Err(InvocationError::new(&e, &inv.request_id)),
        }
    }

    /// Recognises the source and runs what it asks for.
    async fn answer(&self, event: Value, inv: &Invocation) -> (Source, Activity, Answer) {
        let incoming = match event::classify(event) {
            Ok(incoming) => incoming,
            Err(e) => return (Source::Direct, Activity::default(), Answer::Failed(e)),
        };
        let source = incoming.source();
        let trusted = match incoming {
            Incoming::Direct(obj) => JobRequest::from_object(obj),
            Incoming::Schedule(detail) => JobRequest::scheduled(detail),
            Incoming::Http(flavour, request) => {
                // API Gateway stops waiting at 30 s: an HTTP job stops starting work sooner.
                let budget = Instant::now() + self.settings.http_budget;
                let (activity, response) = http_api::serve(
                    request,
                    &self.auth,
                    &self.settings.cors_allow_origin,
                    &inv.request_id,
                    |job, principal| async move {
                        self.run_job(job, &principal, inv, Some(budget)).await
                    },
                )
                .await;
                let status = response.status().as_u16();
                let answer = Answer::Http(status, event::proxy_response(flavour, response));
                return (source, activity.unwrap_or_default(), answer);
            }
        };
        // Direct and EventBridge invocations are trusted: IAM already decided.
        let (activity, result) = self.run_job(trusted, &Principal::Trusted, inv, None).await;
        let answer = match result {
            Ok(v) => Answer::Direct(v),
            Err(e) => Answer::Failed(e),
        };
        (source, activity, answer)
    }

    /// The one road every source ends in: runs the job `request` names for
    /// `principal` within this invocation's deadline, and by `stop_by` (an
    /// HTTP request's budget) when that is sooner.
    async fn run_job(
        &self,
        request: JobRequest,
        principal: &Principal,
        inv: &Invocation,
        stop_by: Option<Instant>,
    ) -> (Activity, Result<Value, ApiError>) {
        let deadline = Deadline::new(inv.deadline, self.settings.deadline_margin);
        let ctx = JobContext {
            db: &self.db,
            migrate_db: self.migrate_db.as_ref().unwrap_or(&self.db),
            settings: &self.settings,
            principal,
            deadline: match stop_by {
                Some(at) => deadline.no_later_than(at),
                None => deadline,
            },
            outbox: Outbox::new(
                &self.db,
                self.events.as_deref(),
                Policy {
                    concurrency: self.settings.publish_concurrency,
                    max_attempts: self.settings.publish_max_attempts,
                    call_timeout: self.settings.publish_call_timeout,
                },
            ),
        };
        let (job, result) = jobs::run(request, &ctx).await;
        let mut activity = Activity {
            job,
            ..Activity::default()
        };
        let result = result.map(|report| {
            activity.counts = report.counts;
            activity.delivery = report.delivery;
            report.body
        });
        (activity, result)
    }

    /// The summary log line, and the metric line for every job (and every
    /// refused request).
    fn summarize(&self, r: &InvocationReport, inv: &Invocation) {
        let outcome = if r.status < 400 {
            "ok".to_owned()
        } else {
            r.status.to_string()
        };
        let job_type = r.activity.job.map(|j| j.name).unwrap_or("unknown");
        let c = &r.activity.counts;
        let d = r.activity.delivery.unwrap_or_default();
        // Only deliveries of the whole outbox read the backlog; the field is
        // left out otherwise.
        let pending = d.backlog.map(|b| b.pending);
        if d.failed > 0 {
            tracing::warn!(
                publishFailures = d.failed,
                eventsSetAside = d.set_aside,
                eventsPending = pending,
                "some events were not delivered; publish-events will retry them"
            );
        }
        tracing::info!(
            requestId = %inv.request_id,
            jobType = job_type,
            source = r.source.as_str(),
            durationMs = r.duration_ms,
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
            eventsSetAside = d.set_aside,
            eventsPending = pending,
            coldStart = r.cold_start,
            secretMs = r.timings.secret_ms,
            connectMs = r.timings.connect_ms,
            dbMs = r.timings.db_ms,
            publishMs = r.timings.publish_ms,
            xrayTraceId = inv.trace_id.as_deref().unwrap_or(""),
            "invocation finished"
        );
        if r.activity.job.is_some() || r.status >= 400 {
            self.metrics.emit(&emf_line(&Line {
                job_type,
                counts: c,
                delivery: r.activity.delivery.as_ref(),
                duration_ms: r.duration_ms,
                error: r.status >= 500,
                cold_start: r.cold_start,
                timings: r.timings,
                request_id: &inv.request_id,
                trace_id: inv.trace_id.as_deref(),
            }));
        }
    }
}
