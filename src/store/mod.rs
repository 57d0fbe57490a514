//! Everything that speaks SQL. Jobs call these functions with validated values
//! and decided actions; nothing here decides business rules.
//!
//! Every statement goes through [`Sql`]: prepared once per connection when
//! talking to Postgres directly, unnamed (`query_typed`, parameters typed by
//! us) behind a transaction-mode pooler (Supavisor, PgBouncer), where named
//! prepared statements break.

pub mod batches;
pub mod migrations;
pub mod orders;
pub mod pool;
pub mod sql;
pub mod tls;

pub use pool::Db;
pub use sql::Sql;

use crate::error::ApiError;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or answered that it is going away.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {}", describe(.0))]
    Db(#[from] tokio_postgres::Error),
    /// A statement answered with a shape the code does not expect (a bug).
    #[error("database answer: {0}")]
    Unexpected(&'static str),
}

/// tokio-postgres prints only "db error"; the logs need the server's message
/// and SQLSTATE (never shown to callers: `Internal` hides it).
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} [{}]", db.message(), db.code().code()),
        None => match std::error::Error::source(e) {
            Some(source) => format!("{e}: {source}"),
            None => e.to_string(),
        },
    }
}

/// Connection-level failures and timeouts are outages (503); everything else
/// is a bug or a data problem (500).
fn is_outage(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        Some(code) => {
            let c = code.code();
            // 08: connection exception; 57P0x: shutdown / cannot connect now;
            // 53300: too many connections; 57014: statement timeout / cancelled;
            // 55P03: lock_timeout.
            c.starts_with("08")
                || c.starts_with("57P")
                || c == "53300"
                || c == "57014"
                || c == "55P03"
        }
        // No SQLSTATE: the failure happened below the protocol (IO, TLS, closed socket).
        None => true,
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match &e {
            // Our own words: which part failed, never a host, user or secret.
            StoreError::Unavailable(reason) => {
                ApiError::Unavailable(format!("Database unavailable: {reason}"))
            }
            StoreError::Db(db) if is_outage(db) => {
                tracing::error!(error = %e, "database unavailable");
                let reason = match db.code().map(|c| c.code()) {
                    Some("57014") => "a statement timed out",
                    Some("55P03") => "timed out waiting for a lock",
                    Some("53300") => "too many connections",
                    Some(c) if c.starts_with("57P") => "the database is shutting down",
                    _ => "the connection was lost",
                };
                ApiError::Unavailable(format!("Database unavailable: {reason}"))
            }
            StoreError::Db(_) | StoreError::Unexpected(_) => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<tokio_postgres::Error> for ApiError {
    fn from(e: tokio_postgres::Error) -> Self {
        StoreError::from(e).into()
    }
}
