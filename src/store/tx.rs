//! Connections and transactions, the only way jobs reach the database.
//!
//! - [`Conn`]: a pooled connection. [`Conn::sql`] runs statements outside a
//!   transaction; [`Conn::transaction`] runs a unit of work in one.
//! - [`Tx`]: statements inside a transaction (it derefs to [`Sql`]), and
//!   [`Tx::savepoint`] for a part of the work that may fail alone.
//! - [`OwnedTx`]: a transaction that owns its connection, for a unit of work
//!   whose last write goes out with its `COMMIT` in one round trip
//!   (process-order: the category and batch locks are then held one client
//!   round trip less).
//!
//! Jobs never write `BEGIN`, `SAVEPOINT` or `COMMIT`, and never see a
//! `deadpool_postgres` type: a unit of work is a closure, and how it starts
//! and ends (timeouts behind a transaction-mode pooler, rollback on error, a
//! connection left mid-transaction never going back to the pool) is here.

use std::future::Future;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use deadpool_postgres::Object;

use super::sql::{in_order, Params, Sql};
use super::StoreError;
use crate::configuration::PoolerMode;
use crate::telemetry::phases::{timed, Phase};

/// A pooled connection.
///
/// Dropped while a transaction it started is still open (its future was
/// dropped half way, say), the connection is closed instead of going back to
/// the pool, so the server rolls that transaction back and no later unit of
/// work ever runs inside it.
pub struct Conn {
    /// `Some` until dropped or handed to an [`OwnedTx`].
    client: Option<Object>,
    pooler: PoolerMode,
    statement_timeout: Duration,
    in_transaction: AtomicBool,
}

/// Statements inside a transaction of a [`Conn`]. Copy: the work of a
/// transaction may run several statements at once (they are pipelined on the
/// connection), each holding the handle.
#[derive(Clone, Copy)]
pub struct Tx<'c> {
    sql: Sql<'c>,
}

impl<'c> Deref for Tx<'c> {
    type Target = Sql<'c>;

    fn deref(&self) -> &Sql<'c> {
        &self.sql
    }
}

impl Conn {
    pub(super) fn new(client: Object, pooler: PoolerMode, statement_timeout: Duration) -> Self {
        Conn {
            client: Some(client),
            pooler,
            statement_timeout,
            in_transaction: AtomicBool::new(false),
        }
    }

    fn client(&self) -> &Object {
        // Only `begin_owned` and `Drop`, which consume the connection, take it out.
        self.client
            .as_ref()
            .expect("a Conn holds its connection until it is dropped")
    }

    /// Statements outside a transaction, prepared and cached unless behind a
    /// transaction-mode pooler.
    pub fn sql(&self) -> Sql<'_> {
        Sql::new(self.client(), self.pooler == PoolerMode::Session)
    }

    /// `BEGIN`, with the statement and lock timeouts in force: a startup
    /// option directly, `SET LOCAL` behind a transaction-mode pooler, where a
    /// session setting would leak to other clients.
    fn begin_sql(&self) -> String {
        match self.pooler {
            PoolerMode::Session => "BEGIN".to_owned(),
            PoolerMode::Transaction => {
                let ms = self.statement_timeout.as_millis();
                format!("BEGIN; SET LOCAL statement_timeout = {ms}; SET LOCAL lock_timeout = {ms}")
            }
        }
    }

    /// Runs `work` in one transaction: committed when it returns `Ok`, rolled
    /// back when it returns `Err` (that error is returned). Every statement,
    /// the `BEGIN` and the `COMMIT` count in the invocation's `dbMs`.
    pub async fn transaction<'c, T, E, F, Fut>(&'c self, work: F) -> Result<T, E>
    where
        F: FnOnce(Tx<'c>) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: From<StoreError>,
    {
        let sql = self.sql();
        self.in_transaction.store(true, Ordering::Relaxed);
        sql.batch_execute(&self.begin_sql()).await?;
        match work(Tx { sql }).await {
            Ok(value) => {
                sql.batch_execute("COMMIT").await?;
                self.in_transaction.store(false, Ordering::Relaxed);
                Ok(value)
            }
            Err(e) => {
                match sql.batch_execute("ROLLBACK").await {
                    Ok(()) => self.in_transaction.store(false, Ordering::Relaxed),
                    // The connection is closed on drop; the work's error is the news.
                    Err(r) => {
                        tracing::warn!(error = %r, "ROLLBACK failed; the connection will be closed")
                    }
                }
                Err(e)
            }
        }
    }

    /// `BEGIN` on this connection, as a transaction that owns it.
    pub async fn begin_owned(mut self) -> Result<OwnedTx, StoreError> {
        let begin = self.begin_sql();
        let tx = OwnedTx {
            client: self.client.take(),
            prepare: self.pooler == PoolerMode::Session,
        };
        timed(Phase::Db, tx.connection().batch_execute(&begin)).await?;
        Ok(tx)
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            if self.in_transaction.load(Ordering::Relaxed) {
                // Detached from the pool and closed: the server rolls back.
                drop(Object::take(client));
            }
        }
    }
}

impl<'c> Tx<'c> {
    /// Runs `work` under a savepoint: released when it returns `Ok`; when it
    /// returns `Err`, everything it wrote is rolled back to the savepoint and
    /// the transaction goes on without it (that error is returned).
    pub async fn savepoint<T, E, F, Fut>(&self, work: F) -> Result<T, E>
    where
        F: FnOnce(Tx<'c>) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: From<StoreError>,
    {
        self.sql.batch_execute("SAVEPOINT bp_savepoint").await?;
        match work(*self).await {
            Ok(value) => {
                self.sql
                    .batch_execute("RELEASE SAVEPOINT bp_savepoint")
                    .await?;
                Ok(value)
            }
            Err(e) => {
                if let Err(r) = self
                    .sql
                    .batch_execute(
                        "ROLLBACK TO SAVEPOINT bp_savepoint; RELEASE SAVEPOINT bp_savepoint",
                    )
                    .await
                {
                    // The transaction is lost; its next statement or its COMMIT says so.
                    tracing::warn!(error = %r, "could not roll back to the savepoint");
                }
                Err(e)
            }
        }
    }
}

/// An open transaction on a connection it owns. Ends by
/// [`OwnedTx::query_then_commit`] or [`OwnedTx::rollback`]; dropped open
/// (a panic, a cancelled future), it rolls back on a spawned task before the
/// connection goes back to the pool.
///
/// `deadpool_postgres::Transaction` borrows its connection and marks itself
/// finished only through `commit()`/`rollback()`, which cannot be pipelined
/// behind a statement that borrows it; dropped unfinished it sends a stray
/// `ROLLBACK`. This type starts and ends the transaction itself, so it
/// knows when the server has ended it.
pub struct OwnedTx {
    /// `Some` until the transaction has ended.
    client: Option<Object>,
    prepare: bool,
}

impl OwnedTx {
    fn connection(&self) -> &Object {
        // Only the consuming methods and `Drop` take the connection out.
        self.client
            .as_ref()
            .expect("an OwnedTx holds its connection until it ends")
    }

    /// Statements in this transaction.
    pub fn sql(&self) -> Sql<'_> {
        Sql::new(self.connection(), self.prepare)
    }

    /// Runs `sql` and `COMMIT` in one round trip and ends the transaction;
    /// returns the statement's rows.
    /// A failed statement is the error (Postgres answers the `COMMIT` of a
    /// failed transaction with a rollback, so nothing was written); a failed
    /// `COMMIT` after a good statement is the error too.
    pub(super) async fn query_then_commit(
        mut self,
        sql: &str,
        params: &Params<'_>,
    ) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        let (ran, committed) = timed(Phase::Db, async {
            let conn = self.connection();
            let sql_in_tx = Sql::new(conn, self.prepare);
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
