//! Connections, as a Lambda in a VPC talking to RDS or Supabase needs them.
//!
//! - **Lazy.** Building a `Db` opens nothing and asks Secrets Manager nothing:
//!   a cold start costs no round trip, and an instance whose database was down
//!   at init recovers on the next invocation.
//! - **Credentials** come from `DATABASE_URL`, or from the Secrets Manager
//!   secret `DB_SECRET_ID` (cached for the instance's life) in any of the
//!   shapes [`crate::secrets`] reads. `migrate` gets a `Db` of its own on
//!   `MIGRATE_SECRET_ID` (the owner's credentials) when that is set.
//! - **Pooler.** `DB_POOLER` says whether a transaction-mode pooler stands in
//!   between; unset, the host decides: Supabase's transaction pooler
//!   (`*.pooler.supabase.com`, port 6543) means transaction mode, logged once.
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

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{
    Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime, TimeoutType,
    Timeouts,
};
use secrecy::ExposeSecret;
use tokio::sync::{Mutex, RwLock};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::tls;
use super::{Conn, StoreError};
use crate::configuration::{PoolerMode, Settings, SslMode};
use crate::secrets::{Connection, DbSecret, SecretError, SecretsManager};
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
    /// How the pool's connections run statements (`DB_POOLER`, or what the host says).
    pooler: PoolerMode,
}

pub struct Db {
    source: Source,
    settings: Settings,
    /// The TLS mode decided at init and its connector; a secret's connection
    /// string may ask for another mode (`sslmode`), whose connector is then
    /// built with the pool.
    tls_mode: SslMode,
    tls: Option<MakeRustlsConnect>,
    current: RwLock<Option<Current>>,
    rebuilding: Mutex<()>,
    /// The pooler mode the host implied was logged (once per instance).
    pooler_logged: AtomicBool,
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
        let tls_mode = ssl_mode(&source, settings, None);
        let tls = tls::connector(tls_mode, settings.db_ca_file.as_deref())?;
        let db = Db {
            source,
            settings: settings.clone(),
            tls_mode,
            tls,
            current: RwLock::new(None),
            rebuilding: Mutex::new(()),
            pooler_logged: AtomicBool::new(false),
        };
        // A URL's host is known now: say at start what it implies.
        if let Source::Url(config) = &db.source {
            db.pooler_for(config);
        }
        Ok(db)
    }

    /// The pooler mode for connections made with `config`: `DB_POOLER`, or
    /// transaction mode when the host is Supabase's transaction pooler (said
    /// once in the log).
    fn pooler_for(&self, config: &tokio_postgres::Config) -> PoolerMode {
        if let Some(mode) = self.settings.pooler {
            return mode;
        }
        let ports = config.get_ports();
        let detected = config.get_hosts().iter().enumerate().find_map(|(i, host)| {
            let tokio_postgres::config::Host::Tcp(name) = host else {
                return None;
            };
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            (PoolerMode::for_host(name, port) == PoolerMode::Transaction)
                .then(|| format!("{name}:{port}"))
        });
        match detected {
            Some(at) => {
                if !self.pooler_logged.swap(true, Ordering::Relaxed) {
                    tracing::info!(
                        host = %at,
                        "DB_POOLER is unset and the host is Supabase's transaction pooler: transaction mode"
                    );
                }
                PoolerMode::Transaction
            }
            None => PoolerMode::Session,
        }
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
        let (client, pooler) = timed(Phase::Connect, self.get_untimed()).await?;
        Ok(Conn::new(client, pooler, self.settings.statement_timeout))
    }

    /// A further connection, if the pool has a free one now: none is waited
    /// for, and a failure to open one is logged and answered `None`. For work
    /// that can spread over more connections but needs only the one it holds
    /// (orchestrate's chunks, [`crate::jobs::orchestrate`]); `DB_POOL_SIZE`
    /// bounds how many it gets.
    pub async fn spare(&self) -> Option<Conn> {
        let (pool, _, pooler) = self.pool().await.ok()?;
        // The pool's own timeouts for opening and checking a connection; no wait for a free slot.
        let now = Timeouts {
            wait: Some(Duration::ZERO),
            ..pool.timeouts()
        };
        match timed(Phase::Connect, pool.timeout_get(&now)).await {
            Ok(client) => Some(Conn::new(client, pooler, self.settings.statement_timeout)),
            Err(PoolError::Timeout(TimeoutType::Wait)) => None,
            Err(e) => {
                // `unavailable` logs the cause; the work goes on with what it has.
                let reason = unavailable(e);
                tracing::info!(%reason, "going on without a further database connection");
                None
            }
        }
    }

    async fn get_untimed(&self) -> Result<(Object, PoolerMode), StoreError> {
        let (pool, generation, pooler) = self.pool().await?;
        match pool.get().await {
            Ok(client) => Ok((client, pooler)),
            Err(e) if refused_credentials(&e) && matches!(self.source, Source::Secret(_)) => {
                tracing::warn!("the database refused the credentials; reading the secret again");
                let (pool, pooler) = self.rebuild(generation).await?;
                pool.get()
                    .await
                    .map(|client| (client, pooler))
                    .map_err(unavailable)
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn pool(&self) -> Result<(Pool, u64, PoolerMode), StoreError> {
        if let Some(c) = self.current.read().await.as_ref() {
            return Ok((c.pool.clone(), c.generation, c.pooler));
        }
        let mut current = self.current.write().await;
        if let Some(c) = current.as_ref() {
            return Ok((c.pool.clone(), c.generation, c.pooler));
        }
        let (pool, pooler) = self.build(false).await?;
        *current = Some(Current {
            pool: pool.clone(),
            generation: 0,
            pooler,
        });
        Ok((pool, 0, pooler))
    }

    /// Replaces the pool built at `generation` with one from a fresh secret;
    /// when another task already did, uses theirs.
    async fn rebuild(&self, generation: u64) -> Result<(Pool, PoolerMode), StoreError> {
        let _one_at_a_time = self.rebuilding.lock().await;
        if let Some(c) = self.current.read().await.as_ref() {
            if c.generation != generation {
                return Ok((c.pool.clone(), c.pooler));
            }
        }
        let (pool, pooler) = self.build(true).await?;
        *self.current.write().await = Some(Current {
            pool: pool.clone(),
            generation: generation + 1,
            pooler,
        });
        Ok((pool, pooler))
    }

    async fn build(&self, fresh_secret: bool) -> Result<(Pool, PoolerMode), StoreError> {
        let (mut pg, asked_ssl) = match &self.source {
            Source::Url(config) => ((**config).clone(), None),
            Source::Secret(sm) => {
                let secret = sm.get(fresh_secret).await.map_err(secret_unavailable)?;
                config_from_secret(&secret, &self.settings)?
            }
        };
        let pooler = self.pooler_for(&pg);
        let mode = ssl_mode(&self.source, &self.settings, asked_ssl);
        let tls = if mode == self.tls_mode {
            self.tls.clone()
        } else {
            tls::connector(mode, self.settings.db_ca_file.as_deref()).map_err(|e| {
                StoreError::Unavailable(format!("the TLS configuration is unusable ({e})"))
            })?
        };
        pg.connect_timeout(CONNECT_TIMEOUT);
        pg.keepalives(true);
        pg.keepalives_idle(Duration::from_secs(30));
        if pg.get_application_name().is_none() {
            pg.application_name("batch-processor");
        }
        pg.ssl_mode(tls::wire(mode));
        if pooler == PoolerMode::Session {
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
        let manager = match tls {
            Some(tls) => Manager::from_config(pg, tls, config),
            None => Manager::from_config(pg, tokio_postgres::NoTls, config),
        };
        Pool::builder(manager)
            .max_size(self.settings.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map(|pool| (pool, pooler))
            .map_err(|e| {
                StoreError::Unavailable(format!("could not build the connection pool ({e})"))
            })
    }
}

/// `DB_SSLMODE`, else what the URL or the secret's connection string asks
/// (`asked`), else `prefer`.
fn ssl_mode(source: &Source, settings: &Settings, asked: Option<SslMode>) -> SslMode {
    if let Some(mode) = settings.db_sslmode {
        return mode;
    }
    match source {
        Source::Url(config) => match config.get_ssl_mode() {
            tokio_postgres::config::SslMode::Disable => SslMode::Disable,
            tokio_postgres::config::SslMode::Require => SslMode::Require,
            _ => SslMode::Prefer,
        },
        Source::Secret(_) => asked.unwrap_or(SslMode::Prefer),
    }
}

/// The connection a secret describes, and the `sslmode` its connection
/// string asked for. `DB_HOST`, `DB_PORT` and `DB_NAME` fill what it lacks.
fn config_from_secret(
    secret: &DbSecret,
    settings: &Settings,
) -> Result<(tokio_postgres::Config, Option<SslMode>), StoreError> {
    let no_host =
        || StoreError::Unavailable("the database secret has no host and DB_HOST is not set".into());
    match &secret.connection {
        Connection::Fields {
            host,
            port,
            username,
            password,
            dbname,
        } => {
            let host = host
                .as_deref()
                .or(settings.db_host.as_deref())
                .ok_or_else(no_host)?;
            let mut pg = tokio_postgres::Config::new();
            pg.host(host)
                .port(port.or(settings.db_port).unwrap_or(5432))
                .user(username)
                .password(password.expose_secret())
                .dbname(
                    dbname
                        .as_deref()
                        .or(settings.db_name.as_deref())
                        .unwrap_or("postgres"),
                );
            Ok((pg, None))
        }
        Connection::Url { config, ssl_mode } => {
            let mut pg = (**config).clone();
            if pg.get_hosts().is_empty() {
                pg.host(settings.db_host.as_deref().ok_or_else(no_host)?);
            }
            if pg.get_ports().is_empty() {
                pg.port(settings.db_port.unwrap_or(5432));
            }
            if pg.get_dbname().is_none() {
                pg.dbname(settings.db_name.as_deref().unwrap_or("postgres"));
            }
            Ok((pg, *ssl_mode))
        }
    }
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
