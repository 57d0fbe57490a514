//! batch-processor: the production-batch lifecycle of a group-buying apparel
//! marketplace, as one AWS Lambda function.
//!
//! `main.rs` only wires. "behaviour §N" in comments is §N of `docs/behaviour.md`,
//! the repository's behaviour contract. The layers, outside in:
//!
//! - [`app`] runs an invocation: [`event`] turns an AWS event into a direct
//!   request, a schedule's request or an HTTP request (and an HTTP answer
//!   back into the payload version it came in); [`http_api`] handles HTTP
//!   (method, CORS, body size, authentication through [`auth`], the job
//!   request); every source then takes the same road, [`jobs::run`].
//! - [`jobs`] (one file per job, listed once in [`jobs::JOBS`]: authorize,
//!   parse `data`, run) use [`domain`] (pure rules) and [`store`] (SQL) →
//!   Postgres, and ask [`outbox`] to deliver the events they wrote
//!   ([`eventbridge`] is its EventBridge adapter).
//! - [`telemetry`] writes the summary line and the metrics the invocation's
//!   report carries.
//!
//! No module imports one above it: `event`, `auth`, `store`, `domain` and
//! `outbox` know nothing of jobs; `domain` and `configuration` know nothing
//! of ours but each other.

pub mod app;
pub mod auth;
pub mod aws;
pub mod configuration;
pub mod deadline;
pub mod domain;
pub mod error;
pub mod event;
pub mod eventbridge;
pub mod http_api;
pub mod jobs;
pub mod outbox;
pub mod secrets;
pub mod store;
pub mod telemetry;

pub use app::App;
pub use event::{Invocation, InvocationError};
