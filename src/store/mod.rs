//! Everything that speaks SQL. Jobs call these functions with validated values
//! and decided actions; nothing here decides business rules: the rule values a
//! statement needs (thresholds, refundable payment statuses, default terms)
//! come from [`crate::domain`] as bind parameters.
//!
//! Jobs get a [`Conn`] from the [`Db`] and run their units of work through
//! [`Conn::transaction`] and [`Tx::savepoint`] (see [`tx`]). Every statement
//! goes through [`Sql`]: prepared once per connection when talking to Postgres
//! directly, unnamed (`query_typed`, parameters typed by us) behind a
//! transaction-mode pooler (Supavisor, PgBouncer), where named prepared
//! statements break. A statement composed from fragments binds its parameters
//! by name ([`sql::named`]).

pub mod batches;
pub mod events;
pub mod migrations;
pub mod orders;
pub mod pool;
pub mod privileges;
pub mod roles;
pub mod sql;
pub mod tls;
pub mod tx;

pub use pool::Db;
pub use sql::Sql;
pub use tx::{Conn, OwnedTx, Tx};

use tokio_postgres::error::SqlState;

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

impl StoreError {
    /// The SQLSTATE of a server error, if this is one.
    pub fn code(&self) -> Option<&SqlState> {
        match self {
            StoreError::Db(e) => e.code(),
            StoreError::Unavailable(_) | StoreError::Unexpected(_) => None,
        }
    }

    /// The table a server error names (a constraint's or a trigger's table).
    pub fn table(&self) -> Option<&str> {
        match self {
            StoreError::Db(e) => e.as_db_error().and_then(|d| d.table()),
            StoreError::Unavailable(_) | StoreError::Unexpected(_) => None,
        }
    }

    /// A short reason for a failure in the data (a constraint, a trigger's
    /// exception), fit to show an operator: the server's message, cut short.
    /// Postgres messages name the relation and constraint, never the statement;
    /// the DETAIL (which may echo row values) is left out.
    pub fn data_reason(&self) -> String {
        let message = match self {
            StoreError::Db(e) => match e.as_db_error() {
                Some(db) => db.message().to_owned(),
                None => "the database failed".to_owned(),
            },
            StoreError::Unavailable(reason) => reason.clone(),
            StoreError::Unexpected(what) => (*what).to_owned(),
        };
        let mut short: String = message.chars().take(200).collect();
        if short.len() < message.len() {
            short.push('…');
        }
        short
    }

    /// Why the database is out of reach, in words a caller may see, when this
    /// is an outage (connection lost, timeout, shutdown) rather than a bug or
    /// a data problem. Never a host, user or secret.
    pub fn outage(&self) -> Option<String> {
        let e = match self {
            StoreError::Unavailable(reason) => return Some(reason.clone()),
            StoreError::Unexpected(_) => return None,
            StoreError::Db(e) => e,
        };
        // No SQLSTATE: the failure happened below the protocol (IO, TLS, closed socket).
        let Some(code) = e.code().filter(|_| !e.is_closed()) else {
            return Some("the connection was lost".into());
        };
        let reason = match code {
            c if *c == SqlState::QUERY_CANCELED => "a statement timed out",
            c if *c == SqlState::LOCK_NOT_AVAILABLE => "timed out waiting for a lock",
            c if *c == SqlState::TOO_MANY_CONNECTIONS => "too many connections",
            // 57P01..57P05: admin or crash shutdown, cannot connect now, idle timeouts.
            c if c.code().starts_with("57P") => "the database is shutting down",
            // Class 08: connection exception.
            c if c.code().starts_with("08") => "the connection was lost",
            _ => return None,
        };
        Some(reason.into())
    }
}
