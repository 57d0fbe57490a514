//! The connection pool, built once per Lambda instance.
//!
//! Connecting is lazy: building the pool opens no connection, so a cold start
//! costs nothing until the first job needs the database, and an instance whose
//! database was down at init recovers on the next invocation.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};

use super::StoreError;
use crate::configuration::{PoolerMode, Settings};

/// How long a job waits for a connection, and a connection for the server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Db {
    pool: Pool,
    pooler: PoolerMode,
}

impl Db {
    /// A pool for `url` (a `postgres://` URL or a libpq key=value string).
    pub fn connect_lazy(url: &str, settings: &Settings) -> Result<Self, StoreError> {
        let mut pg: tokio_postgres::Config = url.parse().map_err(|_| {
            StoreError::Unavailable("DATABASE_URL is not a valid Postgres URL".into())
        })?;
        pg.connect_timeout(CONNECT_TIMEOUT);
        if pg.get_application_name().is_none() {
            pg.application_name("batch-processor");
        }
        let manager = Manager::from_config(
            pg,
            tokio_postgres::NoTls,
            ManagerConfig {
                // A connection that sat through a Lambda freeze may be dead while
                // its socket looks open: check it with a round trip before use.
                recycling_method: RecyclingMethod::Verified,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(settings.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| StoreError::Unavailable(format!("connection pool: {e}")))?;
        Ok(Db {
            pool,
            pooler: settings.pooler,
        })
    }

    pub async fn get(&self) -> Result<Object, StoreError> {
        self.pool.get().await.map_err(|e| {
            tracing::warn!(error = %e, "could not get a database connection");
            let what = match &e {
                deadpool_postgres::PoolError::Backend(pg) => match pg.code().map(|c| c.code()) {
                    Some("28P01") | Some("28000") => "the database refused the credentials",
                    Some("3D000") => "the database does not exist",
                    _ => "could not connect to the database",
                },
                deadpool_postgres::PoolError::Timeout(_) => {
                    "timed out waiting for a database connection"
                }
                _ => "could not connect to the database",
            };
            StoreError::Unavailable(what.into())
        })
    }

    pub fn pooler(&self) -> PoolerMode {
        self.pooler
    }
}
