//! Embedded schema migrations (behaviour §4).
//!
//! The SQL files in `migrations/` are compiled into the binary and applied in
//! order inside ONE transaction that first takes a transaction-scoped advisory
//! lock: two processes migrating at once serialize on the lock, the second finds
//! everything applied, and the lock works through a transaction-mode pooler
//! because it dies with the transaction. A failure rolls the whole run back.

use tokio_postgres::types::Type;

use super::{Conn, StoreError};

pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

macro_rules! migration {
    ($version:literal, $name:literal) => {
        Migration {
            version: $version,
            name: $name,
            sql: include_str!(concat!("../../migrations/", $name, ".sql")),
        }
    };
}

/// Every file in `migrations/`, in order. A unit test checks that none is missing.
pub const MIGRATIONS: &[Migration] = &[
    migration!(1, "0001_schema"),
    migration!(2, "0002_adopt_original"),
    migration!(3, "0003_batch_events"),
    migration!(4, "0004_order_idempotency"),
    migration!(5, "0005_category_index"),
    migration!(6, "0006_nearing_target_flag"),
    migration!(7, "0007_idempotency_per_buyer"),
    migration!(8, "0008_adopt_live"),
    migration!(9, "0009_outbox_delivery"),
];

/// The key of the advisory lock: "batchpro" in ASCII, so it is recognisable in `pg_locks`.
const LOCK_KEY: i64 = 0x6261_7463_6870_726f;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    pub applied: Vec<String>,
    pub already_applied: usize,
}

/// Timeouts of the migration transaction. A job's 10 s timeouts do not fit:
/// converting a column rewrites its table, an `ALTER` waits behind live
/// traffic, and a second instance waits here for the first one's migration.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub statement: std::time::Duration,
    pub lock: std::time::Duration,
}

pub async fn run(conn: &Conn, timeouts: Timeouts) -> Result<MigrationReport, StoreError> {
    conn.transaction(|tx| async move {
        // Unnamed statements: nothing prepared here outlives the schema it was prepared on.
        let sql = tx.unprepared();
        // Transaction-scoped, so it also holds behind a transaction-mode pooler,
        // and set before the advisory lock so that waiting for it obeys it.
        sql.batch_execute(&format!(
            "SET LOCAL statement_timeout = {}; SET LOCAL lock_timeout = {}",
            timeouts.statement.as_millis(),
            timeouts.lock.as_millis()
        ))
        .await?;
        sql.execute(
            "SELECT pg_advisory_xact_lock($1)",
            &[(&LOCK_KEY, Type::INT8)],
        )
        .await?;
        sql.batch_execute(
            "CREATE TABLE IF NOT EXISTS batch_processor_migrations (
                 version    bigint PRIMARY KEY,
                 name       text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now()
             )",
        )
        .await?;
        let done: Vec<i64> = sql
            .query("SELECT version FROM batch_processor_migrations", &[])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut applied = Vec::new();
        for m in MIGRATIONS.iter().filter(|m| !done.contains(&m.version)) {
            sql.batch_execute(m.sql).await?;
            sql.execute(
                "INSERT INTO batch_processor_migrations (version, name) VALUES ($1, $2)",
                &[(&m.version, Type::INT8), (&m.name, Type::TEXT)],
            )
            .await?;
            applied.push(m.name.to_owned());
        }
        Ok(MigrationReport {
            already_applied: MIGRATIONS.len() - applied.len(),
            applied,
        })
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_migration_file_is_embedded_in_order() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| {
                let name = e.unwrap().file_name().into_string().unwrap();
                name.strip_suffix(".sql").map(str::to_owned)
            })
            .collect();
        files.sort();
        let embedded: Vec<&str> = MIGRATIONS.iter().map(|m| m.name).collect();
        assert_eq!(files, embedded);
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i64 + 1, "{}", m.name);
            assert!(m.name.starts_with(&format!("{:04}_", m.version)));
        }
    }
}
