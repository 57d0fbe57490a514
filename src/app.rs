//! The state one Lambda instance builds at init and keeps: settings, the
//! authenticator and the (lazy) connection pool.

use crate::auth::Authenticator;
use crate::configuration::{AuthMode, Settings};
use crate::error::ApiError;
use crate::store::pool::DbConfigError;
use crate::store::Db;
use crate::telemetry::metrics::MetricsSink;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Database(#[from] DbConfigError),
}

pub struct App {
    pub settings: Settings,
    pub auth: Authenticator,
    pub db: Db,
    /// Where the one EMF line per job goes (stdout on Lambda).
    pub metrics: MetricsSink,
}

impl App {
    pub fn new(settings: Settings) -> Result<Self, StartupError> {
        if settings.auth_mode == AuthMode::None {
            tracing::warn!("AUTH_MODE=none: HTTP requests are NOT authenticated; use this for local development only");
        }
        let db = Db::new(&settings)?;
        let auth = Authenticator::new(settings.auth_mode);
        Ok(App {
            settings,
            auth,
            db,
            metrics: MetricsSink::Stdout,
        })
    }

    pub fn with_metrics(mut self, sink: MetricsSink) -> Self {
        self.metrics = sink;
        self
    }

    /// The HS256 secret: `JWT_SECRET`, else the database secret's `jwtSecret`
    /// (read only when a bearer token has to be checked).
    pub async fn jwt_secret(&self) -> Result<String, ApiError> {
        if let Some(secret) = &self.settings.jwt_secret {
            return Ok(secret.clone());
        }
        self.db.jwt_secret().await?.ok_or_else(|| {
            ApiError::Internal(
                "no JWT secret: set JWT_SECRET or jwtSecret in the database secret".into(),
            )
        })
    }
}
