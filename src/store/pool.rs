//! Connections, as a Lambda in a VPC talking to RDS or Supabase needs them.
//!
//! - **Lazy.** Building a `Db` opens nothing and asks Secrets Manager nothing:
//!   a cold start costs no round trip, and an instance whose database was down
//!   at init recovers on the next invocation.
//! - **Credentials** come from `DATABASE_URL`, or from the Secrets Manager
//!   secret `DB_SECRET_ID` (cached for the instance's life).
//! - **Rotation.** When Postgres refuses the password (SQLSTATE 28P01/28000)
//!   the secret is fetched again, bypassing the cache, once; the pool is rebuilt
//!   with it and the connection is asked for again. A second refusal is a 503,
//!   not a loop. Connections opened before a rotation keep working (Postgres
//!   checks the password at login only), so a refusal can only come from
//!   opening a connection — before any of the job's work — and asking again is
//!   retrying the whole unit of work.
//! - **Timeouts.** Connecting and waiting for a connection give up after
//!   [`CONNECT_TIMEOUT`]; statements and lock waits after
//!   `DB_STATEMENT_TIMEOUT_MS` (a startup option directly, `SET LOCAL` in each
//!   transaction behind a transaction-mode pooler, where session settings
//!   would leak to other clients). Connections that sat through a Lambda
//!   freeze are verified with a round trip before use.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{
    Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime, TimeoutType,
};
use secrecy::ExposeSecret;
use tokio::sync::{Mutex, RwLock};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::tls;
use super::{Conn, StoreError};
use crate::configuration::{PoolerMode, Settings, SslMode};
use crate::secrets::{DbSecret, SecretError, SecretsManager};
use crate::telemetry::phases::{timed, Phase};

/// How long connecting, or waiting for a free connection, may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

enum Source {
    Url(Box<tokio_postgres::Config>),
    /// Shared with whoever else reads the secret (the HS256 `jwtSecret`).
    Secret(Arc<SecretsManager>),
}

struct Current {
    pool: Pool,
    generation: u64,
}

pub struct Db {
    source: Source,
    settings: Settings,
    tls: Option<MakeRustlsConnect>,
    current: RwLock<Option<Current>>,
    rebuilding: Mutex<()>,
}

#[derive(Debug, thiserror::Error)]
pub enum DbConfigError {
    #[error("DATABASE_URL or DB_SECRET_ID must be set")]
    NoDatabase,
    #[error("DATABASE_URL is not a valid Postgres URL")]
    BadUrl,
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

impl Db {
    /// Checks the configuration and prepares TLS; connects to nothing.
    pub fn new(settings: &Settings) -> Result<Self, DbConfigError> {
        let source = match (&settings.database_url, &settings.db_secret_id) {
            (Some(url), _) => Source::Url(Box::new(
                url.expose_secret()
                    .parse()
                    .map_err(|_| DbConfigError::BadUrl)?,
            )),
            (None, Some(id)) => Source::Secret(Arc::new(SecretsManager::new(id.clone()))),
            (None, None) => return Err(DbConfigError::NoDatabase),
        };
        let mode = ssl_mode(&source, settings);
        let tls = tls::connector(mode, settings.db_ca_file.as_deref())?;
        Ok(Db {
            source,
            settings: settings.clone(),
            tls,
            current: RwLock::new(None),
            rebuilding: Mutex::new(()),
        })
    }

    /// The database secret, when credentials come from Secrets Manager: one
    /// cache per instance, for whoever else reads it (the HS256 `jwtSecret`).
    pub fn secret(&self) -> Option<Arc<SecretsManager>> {
        match &self.source {
            Source::Url(_) => None,
            Source::Secret(sm) => Some(Arc::clone(sm)),
        }
    }

    /// A connection, opening the pool (and reading the secret) on first use.
    /// Its time is the invocation's `connectMs`.
    pub async fn get(&self) -> Result<Conn, StoreError> {
        let client = timed(Phase::Connect, self.get_untimed()).await?;
        Ok(Conn::new(
            client,
            self.settings.pooler,
            self.settings.statement_timeout,
        ))
    }

    async fn get_untimed(&self) -> Result<Object, StoreError> {
        let (pool, generation) = self.pool().await?;
        match pool.get().await {
            Ok(client) => Ok(client),
            Err(e) if refused_credentials(&e) && matches!(self.source, Source::Secret(_)) => {
                tracing::warn!("the database refused the credentials; reading the secret again");
                let pool = self.rebuild(generation).await?;
                pool.get().await.map_err(unavailable)
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn pool(&self) -> Result<(Pool, u64), StoreError> {
        if let Some(c) = self.current.read().await.as_ref() {
            return Ok((c.pool.clone(), c.generation));
        }
        let mut current = self.current.write().await;
        if let Some(c) = current.as_ref() {
            return Ok((c.pool.clone(), c.generation));
        }
        let pool = self.build(false).await?;
        *current = Some(Current {
            pool: pool.clone(),
            generation: 0,
        });
        Ok((pool, 0))
    }

    /// Replaces the pool built at `generation` with one from a fresh secret;
    /// when another task already did, uses theirs.
    async fn rebuild(&self, generation: u64) -> Result<Pool, StoreError> {
        let _one_at_a_time = self.rebuilding.lock().await;
        if let Some(c) = self.current.read().await.as_ref() {
            if c.generation != generation {
                return Ok(c.pool.clone());
            }
        }
        let pool = self.build(true).await?;
        *self.current.write().await = Some(Current {
            pool: pool.clone(),
            generation: generation + 1,
        });
        Ok(pool)
    }

    async fn build(&self, fresh_secret: bool) -> Result<Pool, StoreError> {
        let mut pg = match &self.source {
            Source::Url(config) => (**config).clone(),
            Source::Secret(sm) => {
                let secret = sm.get(fresh_secret).await.map_err(secret_unavailable)?;
                config_from_secret(&secret, &self.settings)?
            }
        };
        pg.connect_timeout(CONNECT_TIMEOUT);
        pg.keepalives(true);
        pg.keepalives_idle(Duration::from_secs(30));
        if pg.get_application_name().is_none() {
            pg.application_name("batch-processor");
        }
        pg.ssl_mode(tls::wire(ssl_mode(&self.source, &self.settings)));
        if self.settings.pooler == PoolerMode::Session {
            let ms = self.settings.statement_timeout.as_millis();
            let mut options = pg
                .get_options()
                .map(|o| format!("{o} "))
                .unwrap_or_default();
            options.push_str(&format!("-c statement_timeout={ms} -c lock_timeout={ms}"));
            pg.options(&options);
        }
        let config = ManagerConfig {
            recycling_method: RecyclingMethod::Verified,
        };
        let manager = match &self.tls {
            Some(tls) => Manager::from_config(pg, tls.clone(), config),
            None => Manager::from_config(pg, tokio_postgres::NoTls, config),
        };
        Pool::builder(manager)
            .max_size(self.settings.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| {
                StoreError::Unavailable(format!("could not build the connection pool ({e})"))
            })
    }
}

fn ssl_mode(source: &Source, settings: &Settings) -> SslMode {
    if let Some(mode) = settings.db_sslmode {
        return mode;
    }
    match source {
        Source::Url(config) => match config.get_ssl_mode() {
            tokio_postgres::config::SslMode::Disable => SslMode::Disable,
            tokio_postgres::config::SslMode::Require => SslMode::Require,
            _ => SslMode::Prefer,
        },
        Source::Secret(_) => SslMode::Prefer,
    }
}

fn config_from_secret(
    secret: &DbSecret,
    settings: &Settings,
) -> Result<tokio_postgres::Config, StoreError> {
    let host = secret
        .host
        .as_deref()
        .or(settings.db_host.as_deref())
        .ok_or_else(|| {
            StoreError::Unavailable("the database secret has no host and DB_HOST is not set".into())
        })?;
    let mut pg = tokio_postgres::Config::new();
    pg.host(host)
        .port(secret.port.or(settings.db_port).unwrap_or(5432))
        .user(&secret.username)
        .password(secret.password.expose_secret())
        .dbname(
            secret
                .dbname
                .as_deref()
                .or(settings.db_name.as_deref())
                .unwrap_or("postgres"),
        );
    Ok(pg)
}

fn secret_unavailable(e: SecretError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn refused_credentials(e: &PoolError) -> bool {
    matches!(e, PoolError::Backend(pg) if matches!(pg.code().map(|c| c.code()), Some("28P01") | Some("28000")))
}

/// Why a connection could not be had, in words a caller may see.
fn unavailable(e: PoolError) -> StoreError {
    tracing::warn!(error = %e, "could not get a database connection");
    let reason = match &e {
        _ if refused_credentials(&e) => "the database refused the credentials",
        PoolError::Backend(pg) if pg.code().map(|c| c.code()) == Some("3D000") => {
            "the database does not exist"
        }
        PoolError::Backend(pg) if pg.to_string().contains("TLS") => {
            "the TLS handshake with the database failed"
        }
        PoolError::Timeout(TimeoutType::Wait) => "timed out waiting for a free database connection",
        PoolError::Timeout(_) => "timed out connecting to the database",
        _ => "could not connect to the database",
    };
    StoreError::Unavailable(reason.into())
}
