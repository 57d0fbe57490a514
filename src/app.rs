//! The state one Lambda instance builds at init and keeps: settings, the
//! authenticator and the (lazy) connection pool.

use crate::auth::Authenticator;
use crate::configuration::{AuthMode, Settings};
use crate::store::{Db, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("DATABASE_URL (or DB_SECRET_ID) must be set")]
    NoDatabase,
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct App {
    pub settings: Settings,
    pub auth: Authenticator,
    pub db: Db,
}

impl App {
    pub fn new(settings: Settings) -> Result<Self, StartupError> {
        if settings.auth_mode == AuthMode::None {
            tracing::warn!("AUTH_MODE=none: HTTP requests are NOT authenticated; use this for local development only");
        }
        let url = settings
            .database_url
            .as_deref()
            .ok_or(StartupError::NoDatabase)?;
        let db = Db::connect_lazy(url, &settings)?;
        let auth = Authenticator::new(settings.auth_mode, settings.jwt_secret.as_deref());
        Ok(App { settings, auth, db })
    }
}
