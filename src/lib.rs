//! batch-processor: the production-batch lifecycle of a group-buying apparel
//! marketplace, as one AWS Lambda function.
//!
//! `main.rs` only wires. "behaviour §N" in comments is §N of `docs/behaviour.md`,
//! the repository's behaviour contract. The layers, outside in:
//! [`app`] runs an invocation: [`event`] adapts AWS sources (a job request
//! in, a source-shaped answer out), [`auth`] says who the caller is, [`jobs`]
//! (one file per job: authorize, parse `data`, run) use [`domain`] (pure
//! rules) and [`store`] (SQL) → Postgres. No module imports one above it.

pub mod app;
pub mod auth;
pub mod aws;
pub mod configuration;
pub mod domain;
pub mod error;
pub mod event;
pub mod eventbridge;
pub mod jobs;
pub mod secrets;
pub mod store;
pub mod telemetry;

pub use app::App;
pub use event::{Invocation, InvocationError};
