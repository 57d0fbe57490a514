//! Embedded schema migrations (behaviour §4).
//!
//! The SQL files in `migrations/` are compiled into the binary and applied in
//! order inside ONE transaction that first takes a transaction-scoped advisory
//! lock: two processes migrating at once serialize on the lock, the second finds
//! everything applied, and the lock works through a transaction-mode pooler
//! because it dies with the transaction. A failure rolls the whole run back.
//!
//! Each applied migration is recorded in `batch_processor_migrations` with the
//! sha256 of its text. An applied migration is never edited: when the text a
//! binary carries no longer matches the digest recorded for it, `migrate`
//! refuses, naming the migration, and changes nothing (the database would
//! otherwise hold a schema no file describes). Rows recorded before digests
//! existed get theirs on the next run, from the text of that binary.
//!
//! **Superseded texts.** Rarely, a migration's text must change for databases
//! that have not applied it yet — because what it did cannot be undone by a
//! later migration before it hurts (0005 built an index that a long legacy
//! value makes fail, aborting the whole run before 0008 could replace it).
//! Then the digest of every text it was ever released with is listed in its
//! [`Migration::superseded`], with why: a database that applied one of those
//! is accepted (its record keeps the digest of what it really applied), and
//! any other difference is still refused. The list is explicit, so editing a
//! migration stays a decision written down, never an accident.
//!
//! **Privileges.** Around the migrations, the runner makes private every
//! relation the run creates and gives every relation it recreates exactly
//! its former grants ([`super::privileges`]); after them it collects the
//! warnings an operator must read (the answer's `warnings`, each also logged
//! as a WARNING).

use tokio_postgres::types::Type;

use super::{privileges, Conn, StoreError};

pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
    /// sha256 digests of earlier texts of this migration that databases may
    /// have applied and that are accepted as applied (see the module doc).
    pub superseded: &'static [&'static str],
}

macro_rules! migration {
    ($version:literal, $name:literal) => {
        migration!($version, $name, superseded: [])
    };
    ($version:literal, $name:literal, superseded: [$($old:literal),*]) => {
        Migration {
            version: $version,
            name: $name,
            sql: include_str!(concat!("../../migrations/", $name, ".sql")),
            superseded: &[$($old),*],
        }
    };
}

/// Every file in `migrations/`, in order. A unit test checks that none is missing.
pub const MIGRATIONS: &[Migration] = &[
    migration!(1, "0001_schema"),
    migration!(2, "0002_adopt_original"),
    migration!(3, "0003_batch_events"),
    migration!(4, "0004_order_idempotency"),
    // Released until issue 20 with a plain (batch_id, style_details ->> 'variant')
    // index, which a legacy variant of a few kilobytes makes fail (0008 replaces
    // it with an md5 one); databases that applied that text are accepted.
    migration!(5, "0005_category_index", superseded: [
        "b3716b3115419ab258e039e147eed0a28e1f3cec67043809ae7548697faf1324"
    ]),
    migration!(6, "0006_nearing_target_flag"),
    migration!(7, "0007_idempotency_per_buyer"),
    migration!(8, "0008_adopt_live"),
    migration!(9, "0009_outbox_delivery"),
    migration!(10, "0010_outbox_retry"),
];

/// The key of the advisory lock: "batchpro" in ASCII, so it is recognisable in `pg_locks`.
const LOCK_KEY: i64 = 0x6261_7463_6870_726f;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    pub applied: Vec<String>,
    pub already_applied: usize,
    /// What the operator must read ([`super::privileges::warnings`]).
    pub warnings: Vec<String>,
}

/// Timeouts of the migration transaction. A job's 10 s timeouts do not fit:
/// converting a column rewrites its table, an `ALTER` waits behind live
/// traffic, and a second instance waits here for the first one's migration.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub statement: std::time::Duration,
    pub lock: std::time::Duration,
}

/// Why `migrate` refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(
        "Migration {name} was changed after it was applied (sha256 recorded {recorded}…, now {current}…); \
         an applied migration is never edited: restore it and add a new migration instead"
    )]
    Changed {
        name: &'static str,
        recorded: String,
        current: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The sha256 of a migration's text, in lower-case hex.
pub fn digest(sql: &str) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, sql.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub async fn run(conn: &Conn, timeouts: Timeouts) -> Result<MigrationReport, MigrateError> {
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
        // Before anything is created (the history table included).
        privileges::snapshot(&sql).await?;
        // `digest` is NULL on rows recorded before digests were.
        sql.batch_execute(
            "CREATE TABLE IF NOT EXISTS batch_processor_migrations (
                 version    bigint PRIMARY KEY,
                 name       text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now(),
                 digest     text
             );
             ALTER TABLE batch_processor_migrations ADD COLUMN IF NOT EXISTS digest text",
        )
        .await?;
        let done: Vec<(i64, Option<String>)> = sql
            .query("SELECT version, digest FROM batch_processor_migrations", &[])
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let mut applied = Vec::new();
        for m in MIGRATIONS {
            let current = digest(m.sql);
            match done.iter().find(|(v, _)| *v == m.version) {
                Some((_, Some(recorded)))
                    if *recorded == current || m.superseded.contains(&recorded.as_str()) => {}
                Some((_, Some(recorded))) => {
                    return Err(MigrateError::Changed {
                        name: m.name,
                        recorded: recorded.chars().take(12).collect(),
                        current: current.chars().take(12).collect(),
                    })
                }
                Some((_, None)) => {
                    sql.execute(
                        "UPDATE batch_processor_migrations SET digest = $2 WHERE version = $1",
                        &[(&m.version, Type::INT8), (&current, Type::TEXT)],
                    )
                    .await?;
                }
                None => {
                    sql.batch_execute(m.sql).await?;
                    sql.execute(
                        "INSERT INTO batch_processor_migrations (version, name, digest) VALUES ($1, $2, $3)",
                        &[
                            (&m.version, Type::INT8),
                            (&m.name, Type::TEXT),
                            (&current, Type::TEXT),
                        ],
                    )
                    .await?;
                    applied.push(m.name.to_owned());
                }
            }
        }
        privileges::secure(&sql).await?;
        let warnings = privileges::warnings(&sql).await?;
        for w in &warnings {
            tracing::warn!("migrate: {w}");
        }
        Ok(MigrationReport {
            already_applied: MIGRATIONS.len() - applied.len(),
            applied,
            warnings,
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

    #[test]
    fn digests_are_the_sha256_of_the_text() {
        // FIPS 180-2 test vector.
        assert_eq!(
            digest("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_ne!(digest(MIGRATIONS[0].sql), digest(MIGRATIONS[1].sql));
        for m in MIGRATIONS {
            for old in m.superseded {
                assert_eq!(old.len(), 64, "{}: a sha256 in hex", m.name);
                assert_ne!(*old, digest(m.sql), "{}: superseded, not current", m.name);
            }
        }
    }
}
