//! A transaction that owns its connection, for a unit of work whose last
//! write goes out with its `COMMIT` in one round trip (process-order: the
//! category and batch locks are then held one client round trip less).
//!
//! `deadpool_postgres::Transaction` borrows its connection and marks itself
//! finished only through `commit()`/`rollback()`, which cannot be pipelined
//! behind a statement that borrows it; dropped unfinished it sends a stray
//! `ROLLBACK`. This type starts and ends the transaction itself, so it
//! knows when the server has ended it.

use deadpool_postgres::Object;

use super::sql::{in_order, Params, Sql};
use super::{Db, StoreError};
use crate::configuration::PoolerMode;
use crate::telemetry::phases::{timed, Phase};

/// An open transaction on a connection it owns. Ends by
/// [`OwnedTx::query_then_commit`] or [`OwnedTx::rollback`]; dropped open
/// (a panic, a cancelled future), it rolls back on a spawned task before the
/// connection goes back to the pool.
pub struct OwnedTx {
    /// `Some` until the transaction has ended.
    client: Option<Object>,
    prepare: bool,
}

impl Db {
    /// `BEGIN` on `client`, with the statement and lock timeouts in force
    /// (`SET LOCAL` behind a transaction-mode pooler, as [`Db::begin`] does).
    pub async fn begin_owned(&self, client: Object) -> Result<OwnedTx, StoreError> {
        let settings = self.settings();
        let begin = match settings.pooler {
            PoolerMode::Session => "BEGIN".to_owned(),
            PoolerMode::Transaction => {
                let ms = settings.statement_timeout.as_millis();
                format!("BEGIN; SET LOCAL statement_timeout = {ms}; SET LOCAL lock_timeout = {ms}")
            }
        };
        let tx = OwnedTx {
            client: Some(client),
            prepare: settings.pooler == PoolerMode::Session,
        };
        timed(Phase::Db, tx.connection().batch_execute(&begin)).await?;
        Ok(tx)
    }
}

impl OwnedTx {
    fn connection(&self) -> &Object {
        // Only the consuming methods and `Drop` take the connection out.
        self.client
            .as_ref()
            .expect("an OwnedTx holds its connection until it ends")
    }

    /// Statements in this transaction.
    pub fn sql(&self) -> Sql<'_, '_> {
        Sql::Client {
            client: self.connection(),
            prepare: self.prepare,
        }
    }

    /// Runs `sql` and `COMMIT` in one round trip and ends the transaction;
    /// returns the statement's rows.
    /// A failed statement is the error (Postgres answers the `COMMIT` of a
    /// failed transaction with a rollback, so nothing was written); a failed
    /// `COMMIT` after a good statement is the error too.
    pub async fn query_then_commit(
        mut self,
        sql: &str,
        params: &Params<'_>,
    ) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        let (ran, committed) = timed(Phase::Db, async {
            let conn = self.connection();
            let sql_in_tx = Sql::Client {
                client: conn,
                prepare: self.prepare,
            };
            let ready = sql_in_tx.ready(sql, params).await?;
            Ok::<_, StoreError>(
                in_order(sql_in_tx.run(&ready, params), conn.batch_execute("COMMIT")).await,
            )
        })
        .await?;
        if committed.is_ok() {
            // The server ended the transaction (committed, or rolled back after
            // a failed statement): the connection goes back to the pool clean.
            self.client.take();
        }
        // Otherwise `Drop` rolls back whatever may still be open.
        let rows = ran?;
        committed.map_err(StoreError::from)?;
        Ok(rows)
    }

    /// Ends the transaction writing nothing. A connection that cannot roll
    /// back is closed instead of going back to the pool.
    pub async fn rollback(mut self) {
        if let Some(client) = self.client.take() {
            if let Err(e) = timed(Phase::Db, client.batch_execute("ROLLBACK")).await {
                tracing::warn!(error = %StoreError::from(e), "ROLLBACK failed; closing the connection");
                drop(Object::take(client));
            }
        }
    }
}

impl Drop for OwnedTx {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if client.batch_execute("ROLLBACK").await.is_err() {
                        drop(Object::take(client));
                    }
                });
            }
            Err(_) => drop(Object::take(client)),
        }
    }
}
