//! batch-processor: the production-batch lifecycle of a group-buying apparel
//! marketplace, as one AWS Lambda function.
//!
//! `main.rs` only wires. The layers, outside in:
//! [`event`] (AWS sources in, source-shaped answers out) → [`auth`] →
//! [`jobs`] (one file per job: parse `data`, then run) → [`domain`] (pure
//! rules) and [`store`] (SQL) → Postgres.

pub mod app;
pub mod auth;
pub mod configuration;
pub mod domain;
pub mod error;
pub mod event;
pub mod jobs;
pub mod secrets;
pub mod store;
pub mod telemetry;

pub use app::App;
pub use event::{Invocation, InvocationError};
