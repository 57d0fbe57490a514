//! The jobs of behaviour §1, one file each, listed once in [`JOBS`].
//!
//! Every job parses its `data` into a validated request (400 on the first bad
//! field), then runs it and hands back a [`Report`]: its answer, what it did
//! (counts) and what it asks to be delivered after its commit, within which
//! budget. [`run`] is the one road every source ends in: it finds the job,
//! checks who may run it ([`admit`]: the app's roles table is asked here,
//! only when a buyer asks for what only an admin may do), parses, runs, and
//! delivers what the job asked — the same way for every job. Jobs know nothing of AWS: the event adapter and
//! the HTTP front hand them a principal, a deadline and the database, and
//! shape whatever they answer.
//!
//! Adding a job is its file (a request type, its `parse`, [`Run`] and a
//! [`Job`] line) and one line in [`JOBS`].

pub mod input;
pub mod migrate;
pub mod orchestrate;
pub mod process_order;
pub mod publish_events;
pub mod review_batch;

use std::future::Future;
use std::pin::Pin;

use serde::Serialize;
use serde_json::{Map, Value};

use uuid::Uuid;

use crate::auth::Principal;
use crate::configuration::{QualifiedName, Settings};
use crate::deadline::Deadline;
use crate::domain::{Counts, Delivery};
use crate::error::ApiError;
use crate::outbox::{Ask, Outbox};
use crate::store::{roles, Db, StoreError};
use input::Data;

/// Every job, by wire name. Adding a job: its file, and one line here.
pub const JOBS: &[Job] = &[
    orchestrate::JOB,
    process_order::JOB,
    review_batch::JOB,
    migrate::JOB,
    publish_events::JOB,
];

/// The job a schedule runs when its rule's `detail` names none.
pub const SCHEDULED_JOB: &str = "orchestrate";

/// One line of [`JOBS`]: a job's name, who may run it, what of its request
/// may be logged, and how its `data` becomes something to run.
pub struct Job {
    /// `jobType` on the wire.
    pub name: &'static str,
    pub access: Access,
    /// Fields of `data` that say what was asked without saying who asked or
    /// what they wrote: logged at info with their values (behaviour §9).
    pub plain_fields: &'static [&'static str],
    /// Validates `data` for the principal into the job's request.
    pub parse: Parse,
}

/// A job's parser: `data` and the caller in, a request ready to run out.
pub type Parse = fn(&Data<'_>, &Principal) -> Result<Box<dyn Run>, ApiError>;

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

impl Job {
    /// The job named `raw`, a 400 when it names none.
    pub fn find(raw: Option<&Value>) -> Result<&'static Job, ApiError> {
        let name = raw.and_then(Value::as_str);
        JOBS.iter()
            .find(|j| Some(j.name) == name)
            .ok_or_else(|| ApiError::BadRequest("Invalid job type".into()))
    }
}

/// Who may run a job (behaviour §3). Direct and EventBridge invocations may
/// run every job; authentication says who an HTTP caller is, this says what
/// they may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Direct invocation only, never over HTTP.
    Trusted,
    /// Admins (and trusted sources).
    Admins,
    /// Admins and buyers. `acting_for` names the field of `data` saying whom
    /// the request acts for (absent: the buyer); a buyer acting for someone
    /// else needs to be an admin. The job's parser enforces it (it knows the
    /// request); [`admit`] uses the name to ask the roles table first.
    Buyers { acting_for: &'static str },
}

/// Whether `principal` may run `job` at all.
pub fn authorize(job: &Job, principal: &Principal) -> Result<(), ApiError> {
    let allowed = match (job.access, principal) {
        (_, Principal::Trusted) => true,
        (Access::Trusted, _) => {
            return Err(ApiError::Forbidden(format!(
                "{} is accepted only by direct invocation",
                job.name
            )))
        }
        (_, Principal::Admin { .. }) => true,
        (Access::Buyers { .. }, Principal::Buyer { .. }) => true,
        (Access::Buyers { .. }, Principal::Anonymous) => {
            return Err(ApiError::Forbidden(
                "Anonymous users may not place orders".into(),
            ))
        }
        _ => false,
    };
    if allowed {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "This role may not run {}",
            job.name
        )))
    }
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A validated request, ready to run.
pub trait Run: Send + std::fmt::Debug {
    fn run<'a>(self: Box<Self>, ctx: &'a JobContext<'a>)
        -> BoxFuture<'a, Result<Report, ApiError>>;
}

/// A buyer asking for what only an admin may do — a job of admins, or
/// acting for someone else — is an admin when the app's roles table
/// (`ADMIN_ROLES_TABLE`) says so: this is the user to look up, if any.
fn wants_admin(job: &Job, data: Option<&Value>, principal: &Principal) -> Option<Uuid> {
    let Principal::Buyer { user_id } = principal else {
        return None;
    };
    match job.access {
        Access::Admins => Some(*user_id),
        Access::Buyers { acting_for } => data
            .and_then(|d| d.get(acting_for))
            .and_then(Value::as_str)
            .and_then(|s| Uuid::parse_str(s.trim()).ok())
            .filter(|other| other != user_id)
            .map(|_| *user_id),
        Access::Trusted => None,
    }
}

/// Who runs `job`: the caller, when they may ([`authorize`]); a buyer the
/// app's roles table names an admin, as an admin, when the job needs one
/// ([`wants_admin`]). The table is asked then only — one indexed statement on
/// a connection of the job's pool, given back before the job takes its own,
/// never cached (a revoked row counts from the next request); an outage is
/// a 503.
async fn admit(
    job: &Job,
    data: Option<&Value>,
    ctx: &JobContext<'_>,
) -> Result<Principal, ApiError> {
    if let (Some(user), Some(table)) = (
        wants_admin(job, data, ctx.principal),
        &ctx.settings.admin_roles_table,
    ) {
        if is_table_admin(ctx.db, table, user).await? {
            let admin = Principal::Admin {
                user_id: Some(user),
            };
            authorize(job, &admin)?;
            return Ok(admin);
        }
    }
    authorize(job, ctx.principal)?;
    Ok(ctx.principal.clone())
}

async fn is_table_admin(db: &Db, table: &QualifiedName, user: Uuid) -> Result<bool, ApiError> {
    let conn = db.get().await?;
    roles::is_admin(&conn.sql(), table, user)
        .await
        .map_err(|e| match e.outage() {
            Some(_) => e.into(),
            // The table, its columns or the role's SELECT on it: the operator's to fix.
            None => ApiError::Internal(format!("looking up ADMIN_ROLES_TABLE {table}: {e}")),
        })
}

/// What a job gets to work with.
pub struct JobContext<'a> {
    pub db: &'a Db,
    /// The owner's connections (`MIGRATE_SECRET_ID`), for `migrate`; `db` when unset.
    pub migrate_db: &'a Db,
    pub settings: &'a Settings,
    pub principal: &'a Principal,
    pub deadline: Deadline,
    /// Only `publish-events` delivers itself; every other job asks, in its report.
    pub outbox: Outbox<'a>,
}

/// A job request as a source carried it: `jobType` and `data`, not yet validated.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct JobRequest {
    pub job_type: Option<Value>,
    pub data: Option<Value>,
}

impl JobRequest {
    /// `{"jobType": …, "data": …}`: a direct invocation's event, an HTTP body.
    pub fn from_object(mut obj: Map<String, Value>) -> Self {
        JobRequest {
            job_type: obj.remove("jobType"),
            data: obj.remove("data"),
        }
    }

    /// A schedule's rule `detail`: it may name another job and its data;
    /// otherwise a schedule runs [`SCHEDULED_JOB`].
    pub fn scheduled(detail: Option<Value>) -> Self {
        let mut detail = match detail {
            Some(Value::Object(d)) => d,
            _ => Map::new(),
        };
        JobRequest {
            job_type: Some(
                detail
                    .remove("jobType")
                    .unwrap_or_else(|| Value::String(SCHEDULED_JOB.into())),
            ),
            data: detail.remove("data"),
        }
    }
}

/// What a job hands back.
#[derive(Debug)]
pub struct Report {
    /// The answer.
    pub body: Value,
    /// What it did, for the summary line and the metrics.
    pub counts: Counts,
    /// Events to deliver after the commit, and for how long.
    pub deliver: Option<Ask>,
    /// What delivering did, when it was tried.
    pub delivery: Option<Delivery>,
}

impl Report {
    /// A report answering `body`, having counted nothing.
    pub fn answer(body: impl Serialize) -> Result<Self, ApiError> {
        Ok(Report {
            body: serde_json::to_value(body)
                .map_err(|e| ApiError::Internal(format!("serialize response: {e}")))?,
            counts: Counts::default(),
            deliver: None,
            delivery: None,
        })
    }

    pub fn counted(mut self, counts: Counts) -> Self {
        self.counts = counts;
        self
    }

    /// Asks for delivery after the commit.
    pub fn delivering(mut self, ask: Ask) -> Self {
        self.deliver = Some(ask);
        self
    }

    /// What delivering did (the delivering job's own report).
    pub fn delivered(mut self, delivery: Delivery) -> Self {
        self.delivery = Some(delivery);
        self
    }
}

/// Runs the job `request` names for `ctx.principal`: finds it, authorizes,
/// validates `data`, runs it, then delivers the events it asked for (behaviour
/// §10). Delivery never changes the job's answer: a failure is logged and
/// counted, and a later `publish-events` run delivers what is left. Returns
/// the job (when one was named) with the outcome, so that a refusal is still
/// reported under its job.
pub async fn run(
    request: JobRequest,
    ctx: &JobContext<'_>,
) -> (Option<&'static Job>, Result<Report, ApiError>) {
    let job = match Job::find(request.job_type.as_ref()) {
        Ok(job) => job,
        Err(e) => return (None, Err(e)),
    };
    (Some(job), run_found(job, request.data.as_ref(), ctx).await)
}

async fn run_found(
    job: &'static Job,
    data: Option<&Value>,
    ctx: &JobContext<'_>,
) -> Result<Report, ApiError> {
    let principal = admit(job, data, ctx).await?;
    // Only once the caller may run the job (a refused request is logged as
    // its job and the reason: anyone holding a token, the public anon key
    // included, must not write what they like into the logs). At info, only
    // what is not personal: the job, its plain fields, and which keys were
    // sent. The whole request, masked by the log writer, only at debug
    // (behaviour §9): free-form buyer data stays out of production logs.
    tracing::info!(
        jobType = job.name,
        request = %request_summary(data),
        "job request"
    );
    tracing::debug!(
        jobType = job.name,
        request = %data.map(serde_json::Value::to_string).unwrap_or_default(),
        "job request (whole)"
    );
    let ctx = &JobContext {
        principal: &principal,
        ..*ctx
    };
    let request = (job.parse)(&Data::new(data)?, &principal)?;
    let mut report = request.run(ctx).await?;
    if let Some(ask) = report.deliver.take() {
        if let Some(delivery) = ctx.outbox.after_job(ask, ctx.deadline).await {
            report.delivery = Some(delivery);
        }
    }
    Ok(report)
}

/// `{"productCategory":"t-shirts","quantity":50,"keys":["buyerId",…]}`: the
/// plain fields' values (scalars only) and the names of every key sent. A
/// field any job declares plain is shown, whatever the job.
fn request_summary(data: Option<&Value>) -> Value {
    let Some(Value::Object(map)) = data else {
        return serde_json::json!({"keys": []});
    };
    let mut out = Map::new();
    for field in JOBS.iter().flat_map(|j| j.plain_fields) {
        if let Some(v @ (Value::String(_) | Value::Number(_) | Value::Bool(_))) = map.get(*field) {
            out.insert((*field).to_owned(), v.clone());
        }
    }
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort();
    out.insert("keys".into(), serde_json::json!(keys));
    Value::Object(out)
}

/// The store's failures as callers see them: outages are 503 with the
/// store's own words; everything else is a 500 whose detail only the logs get.
impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e.outage() {
            Some(reason) => {
                if matches!(e, StoreError::Db(_)) {
                    tracing::error!(error = %e, "database unavailable");
                }
                ApiError::Unavailable(format!("Database unavailable: {reason}"))
            }
            None => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<tokio_postgres::Error> for ApiError {
    fn from(e: tokio_postgres::Error) -> Self {
        StoreError::from(e).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use uuid::Uuid;

    fn job(name: &str) -> &'static Job {
        Job::find(Some(&json!(name))).expect("a job")
    }

    #[test]
    fn the_table_names_every_job_once() {
        let names: Vec<&str> = JOBS.iter().map(|j| j.name).collect();
        assert_eq!(
            names,
            [
                "orchestrate",
                "process-order",
                "review-batch",
                "migrate",
                "publish-events"
            ]
        );
        for bad in [json!("explode"), json!(42), Value::Null] {
            assert_eq!(Job::find(Some(&bad)).unwrap_err().status(), 400, "{bad}");
        }
        assert_eq!(Job::find(None).unwrap_err().to_string(), "Invalid job type");
    }

    #[test]
    fn authorization_table() {
        let admin = Principal::Admin { user_id: None };
        let buyer = Principal::Buyer {
            user_id: Uuid::nil(),
        };
        // (job, principal, allowed)
        let cases = [
            ("orchestrate", Principal::Trusted, true),
            ("migrate", Principal::Trusted, true),
            ("orchestrate", admin.clone(), true),
            ("review-batch", admin.clone(), true),
            ("process-order", admin.clone(), true),
            ("publish-events", admin.clone(), true),
            ("migrate", admin.clone(), false),
            ("orchestrate", buyer.clone(), false),
            ("review-batch", buyer.clone(), false),
            ("publish-events", buyer.clone(), false),
            ("process-order", buyer.clone(), true),
            ("migrate", buyer, false),
            ("process-order", Principal::NoRole, false),
            ("process-order", Principal::Anonymous, false),
            ("orchestrate", Principal::Anonymous, false),
        ];
        for (name, p, allowed) in cases {
            let got = authorize(job(name), &p);
            assert_eq!(got.is_ok(), allowed, "{name} {p:?}");
            if let Err(e) = got {
                assert_eq!(e.status(), 403);
            }
        }
        assert_eq!(
            authorize(job("migrate"), &Principal::NoRole)
                .unwrap_err()
                .to_string(),
            "migrate is accepted only by direct invocation"
        );
    }

    #[test]
    fn only_a_buyer_asking_for_an_admins_work_is_looked_up() {
        let me = Uuid::from_u128(1);
        let other = Uuid::from_u128(2);
        let buyer = Principal::Buyer { user_id: me };
        let order = |buyer_id: Value| json!({"buyerId": buyer_id, "quantity": 1});
        let cases = [
            ("orchestrate", buyer.clone(), None, Some(me)),
            ("review-batch", buyer.clone(), None, Some(me)),
            ("publish-events", buyer.clone(), None, Some(me)),
            ("migrate", buyer.clone(), None, None),
            (
                "process-order",
                buyer.clone(),
                Some(order(json!(other))),
                Some(me),
            ),
            ("process-order", buyer.clone(), Some(order(json!(me))), None),
            (
                "process-order",
                buyer.clone(),
                Some(order(Value::Null)),
                None,
            ),
            (
                "process-order",
                buyer.clone(),
                Some(order(json!("not a uuid"))),
                None,
            ),
            ("process-order", buyer.clone(), None, None),
            (
                "orchestrate",
                Principal::Admin { user_id: Some(me) },
                None,
                None,
            ),
            ("orchestrate", Principal::Anonymous, None, None),
            ("orchestrate", Principal::NoRole, None, None),
            ("orchestrate", Principal::Trusted, None, None),
        ];
        for (name, p, data, expected) in cases {
            assert_eq!(
                wants_admin(job(name), data.as_ref(), &p),
                expected,
                "{name} {p:?} {data:?}"
            );
        }
    }

    #[test]
    fn schedules_orchestrate_unless_their_detail_names_a_job() {
        assert_eq!(
            JobRequest::scheduled(None),
            JobRequest {
                job_type: Some(json!("orchestrate")),
                data: None
            }
        );
        assert_eq!(
            JobRequest::scheduled(Some(json!({"jobType": "review-batch", "data": {"x": 1}}))),
            JobRequest {
                job_type: Some(json!("review-batch")),
                data: Some(json!({"x": 1}))
            }
        );
        assert_eq!(
            JobRequest::scheduled(Some(json!("not an object"))).job_type,
            Some(json!("orchestrate"))
        );
    }

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

    #[test]
    fn store_failures_map_to_503_or_a_hidden_500() {
        let down: ApiError =
            StoreError::Unavailable("could not connect to the database".into()).into();
        assert_eq!(down.status(), 503);
        assert_eq!(
            down.to_string(),
            "Database unavailable: could not connect to the database"
        );
        let bug: ApiError = StoreError::Unexpected("no row").into();
        assert_eq!(bug.status(), 500);
        assert_eq!(bug.to_string(), "Internal error");
    }
}
