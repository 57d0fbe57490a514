//! Running a statement the way the connection allows.
//!
//! Directly against Postgres (`DB_POOLER=session`) statements are prepared
//! once per connection and their plans cached: the planner, not the executor,
//! is most of the cost of the small, fixed statements a job runs (0.6 ms to
//! plan the batch search against 0.2 ms to run it), and for process-order that
//! time is spent holding the category's lock. Behind a transaction-mode
//! pooler a named statement may land on another server connection, so there
//! every statement is unnamed (`query_typed`) and planned each time.

use std::future::Future;
use std::pin::pin;
use std::task::Poll;

use deadpool_postgres::ClientWrapper;
use futures_util::TryStreamExt;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Row, Statement};

use super::StoreError;
use crate::telemetry::phases::{timed, Phase};

/// One bound parameter: its value and its Postgres type.
pub type Param<'p> = (&'p (dyn ToSql + Sync), Type);
pub type Params<'p> = [Param<'p>];

/// Statements on one connection — in a transaction ([`super::Tx`] derefs to
/// this) or not — and whether they may be prepared.
#[derive(Clone, Copy)]
pub struct Sql<'c> {
    client: &'c ClientWrapper,
    prepare: bool,
}

/// A statement to run: prepared (and cached) or, behind a pooler, its text.
pub(super) enum Ready<'s> {
    Prepared(Statement),
    Unnamed(&'s str),
}

impl<'c> Sql<'c> {
    pub(super) fn new(client: &'c ClientWrapper, prepare: bool) -> Self {
        Sql { client, prepare }
    }

    /// The same connection with every statement unnamed (planned each time,
    /// nothing cached): for statements around a schema change.
    pub(super) fn unprepared(&self) -> Sql<'c> {
        Sql {
            client: self.client,
            prepare: false,
        }
    }

    /// Plain SQL text, several statements allowed, no parameters (`BEGIN`,
    /// `SAVEPOINT`, a migration file); its time is the invocation's `dbMs`.
    /// Only the store writes such text.
    pub(super) async fn batch_execute(&self, sql: &str) -> Result<(), StoreError> {
        timed(Phase::Db, self.client.batch_execute(sql))
            .await
            .map_err(StoreError::from)
    }

    /// Prepares `sql` (a cache hit after the first time on a connection).
    pub(super) async fn ready<'s>(
        &self,
        sql: &'s str,
        params: &Params<'_>,
    ) -> Result<Ready<'s>, StoreError> {
        if !self.prepare {
            return Ok(Ready::Unnamed(sql));
        }
        let types: Vec<Type> = params.iter().map(|(_, t)| t.clone()).collect();
        Ok(Ready::Prepared(
            self.client.prepare_typed_cached(sql, &types).await?,
        ))
    }

    /// Runs a ready statement. Its request is sent on the first poll, which
    /// is what lets [`Sql::pipeline`] keep statements in order.
    pub(super) async fn run(
        &self,
        ready: &Ready<'_>,
        params: &Params<'_>,
    ) -> Result<Vec<Row>, StoreError> {
        Ok(match ready {
            Ready::Unnamed(sql) => self.client.query_typed(sql, params).await?,
            Ready::Prepared(stmt) => self.client.query(stmt, &values(params)).await?,
        })
    }

    /// Runs a statement; its time (prepare included) is the invocation's `dbMs`.
    pub(super) async fn query(
        &self,
        sql: &str,
        params: &Params<'_>,
    ) -> Result<Vec<Row>, StoreError> {
        timed(Phase::Db, async {
            let ready = self.ready(sql, params).await?;
            self.run(&ready, params).await
        })
        .await
    }

    /// Runs `a` then `b` in one round trip: both are prepared first, then
    /// both requests are sent, `a`'s first. The server runs `b` only once `a`
    /// has finished — so `b` runs after a lock `a` takes, with a snapshot
    /// that sees everything committed before the lock was granted.
    pub(super) async fn pipeline(
        &self,
        a: (&str, &Params<'_>),
        b: (&str, &Params<'_>),
    ) -> Result<(Vec<Row>, Vec<Row>), StoreError> {
        timed(Phase::Db, async {
            let ready_a = self.ready(a.0, a.1).await?;
            let ready_b = self.ready(b.0, b.1).await?;
            let (ra, rb) = in_order(self.run(&ready_a, a.1), self.run(&ready_b, b.1)).await;
            Ok((ra?, rb?))
        })
        .await
    }

    /// Runs a statement and folds its rows into `acc` as they arrive, never
    /// holding them all: for results too long to keep as rows (a slab of
    /// orchestrate's keys), where only what `f` keeps of each is wanted.
    pub(super) async fn fold<T>(
        &self,
        sql: &str,
        params: &Params<'_>,
        mut acc: T,
        mut f: impl FnMut(&mut T, &Row),
    ) -> Result<T, StoreError> {
        timed(Phase::Db, async {
            let ready = self.ready(sql, params).await?;
            let rows = match &ready {
                Ready::Unnamed(sql) => {
                    self.client
                        .query_typed_raw(sql, params.iter().map(|(v, t)| (*v, t.clone())))
                        .await?
                }
                Ready::Prepared(stmt) => self.client.query_raw(stmt, values(params)).await?,
            };
            let mut rows = pin!(rows);
            while let Some(row) = rows.try_next().await? {
                f(&mut acc, &row);
            }
            Ok(acc)
        })
        .await
    }

    pub(super) async fn query_opt(
        &self,
        sql: &str,
        params: &Params<'_>,
    ) -> Result<Option<Row>, StoreError> {
        let mut rows = self.query(sql, params).await?;
        match rows.len() {
            0 | 1 => Ok(rows.pop()),
            _ => Err(StoreError::Unexpected("more than one row")),
        }
    }

    pub(super) async fn query_one(
        &self,
        sql: &str,
        params: &Params<'_>,
    ) -> Result<Row, StoreError> {
        self.query_opt(sql, params)
            .await?
            .ok_or(StoreError::Unexpected("no row"))
    }

    pub(super) async fn execute(&self, sql: &str, params: &Params<'_>) -> Result<(), StoreError> {
        self.query(sql, params).await.map(|_| ())
    }
}

/// A statement with named parameters (`:order_id`), bound from one list of
/// `(name, value, type)`: each name becomes `$n` in list order, so a long
/// statement's parameters are written next to their names, in one place.
/// `::type` casts are left alone. A name in the text but not in the list (or
/// the reverse) is a bug, reported as [`StoreError::Unexpected`].
pub fn named<'p>(
    sql: &str,
    params: &[(&str, &'p (dyn ToSql + Sync), Type)],
) -> Result<(String, Vec<Param<'p>>), StoreError> {
    let mut out = String::with_capacity(sql.len());
    let mut used = vec![false; params.len()];
    let bytes = sql.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let is_param = bytes[i] == b':'
            && (i == 0 || bytes[i - 1] != b':')
            && bytes.get(i + 1).is_some_and(|b| b.is_ascii_lowercase());
        if !is_param {
            let next = sql[i..].chars().next().map_or(1, char::len_utf8);
            out.push_str(&sql[i..i + next]);
            i += next;
            continue;
        }
        let end = sql[i + 1..]
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .map_or(sql.len(), |n| i + 1 + n);
        let name = &sql[i + 1..end];
        let n = params
            .iter()
            .position(|(p, _, _)| *p == name)
            .ok_or(StoreError::Unexpected("a named parameter has no value"))?;
        used[n] = true;
        out.push_str(&format!("${}", n + 1));
        i = end;
    }
    if used.contains(&false) {
        return Err(StoreError::Unexpected(
            "a named parameter is not in the statement",
        ));
    }
    Ok((
        out,
        params.iter().map(|(_, v, t)| (*v, t.clone())).collect(),
    ))
}

fn values<'p>(params: &'p Params<'p>) -> Vec<&'p (dyn ToSql + Sync)> {
    params.iter().map(|(v, _)| *v).collect()
}

/// Polls `a` once — which sends its request — before `b` is polled at all,
/// then drives both. Order on the wire is then `a`, `b` whatever order a
/// join would poll them in.
pub(super) async fn in_order<A: Future, B: Future>(a: A, b: B) -> (A::Output, B::Output) {
    let mut a = pin!(a);
    let first = std::future::poll_fn(|cx| Poll::Ready(a.as_mut().poll(cx))).await;
    match first {
        Poll::Ready(out) => (out, b.await),
        Poll::Pending => tokio::join!(a, b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_parameters_become_positional_in_list_order() {
        let (a, b) = (1i32, "x");
        let (sql, params) = named(
            "SELECT :b::text, :a, :b, ':a' || 'x::int', 1::int8",
            &[("a", &a, Type::INT4), ("b", &b, Type::TEXT)],
        )
        .unwrap();
        // Casts stay; names become $n even inside the literal (never write one there).
        assert_eq!(sql, "SELECT $2::text, $1, $2, '$1' || 'x::int', 1::int8");
        assert_eq!(params.len(), 2);
        assert_eq!(params[0].1, Type::INT4);
    }

    #[test]
    fn a_missing_or_unused_name_is_an_error() {
        let a = 1i32;
        assert!(named("SELECT :a, :zz", &[("a", &a, Type::INT4)]).is_err());
        assert!(named("SELECT 1", &[("a", &a, Type::INT4)]).is_err());
    }
}
