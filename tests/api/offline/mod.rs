//! Tests that need no service: no Postgres, no local AWS. `make check` runs
//! them (with `DATABASE_URL` pointing at a closed port to prove it), and
//! `make test` with everything else. An app here is built on a database URL
//! nobody listens on: whatever these tests see was decided before any
//! connection was asked for.

mod auth;
pub mod docs;
mod events;
pub mod jwks;

use batch_processor::telemetry::metrics::MetricsSink;
use batch_processor::App;

use crate::helpers::settings;

/// Nothing listens on port 1 of the loopback: a connection is refused at once.
pub const NO_DATABASE: &str = "postgres://batch_processor:hunter2@127.0.0.1:1/nowhere";

/// An app as `main.rs` builds it, on [`NO_DATABASE`]; its metric lines are kept.
pub fn app(env: &[(&str, &str)]) -> App {
    App::new(settings(NO_DATABASE, env))
        .expect("app builds")
        .with_metrics(MetricsSink::Buffer(Default::default()))
}
