//! Settings read once per Lambda instance from the environment (behaviour §8).
//!
//! Reading goes through a lookup function so tests can build settings from a map
//! without touching the process environment, which tests share.

use std::time::Duration;

use secrecy::SecretString;

#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Bearer tokens are required on HTTP requests (the default).
    Jwt,
    /// `AUTH_MODE=none`: HTTP callers are treated as admins. Local development only.
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolerMode {
    /// Postgres directly, or a session-mode pooler.
    Session,
    /// A transaction-mode pooler (Supavisor on 6543, PgBouncer): no session state.
    Transaction,
}

/// `DB_SSLMODE`, as libpq names the modes this function supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyFull,
}

impl SslMode {
    pub fn parse(raw: &str) -> Option<Self> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "disable" => Some(SslMode::Disable),
            "prefer" => Some(SslMode::Prefer),
            "require" => Some(SslMode::Require),
            "verify-full" => Some(SslMode::VerifyFull),
            _ => None,
        }
    }
}

/// `Debug` is derived: the URL (it may hold a password) and the JWT secret are
/// [`SecretString`]s, which print as `[REDACTED]`.
#[derive(Debug, Clone)]
pub struct Settings {
    pub database_url: Option<SecretString>,
    pub db_secret_id: Option<String>,
    /// Fill what the secret lacks (RDS-managed secrets hold only credentials).
    pub db_host: Option<String>,
    pub db_port: Option<u16>,
    pub db_name: Option<String>,
    /// `None`: the URL's own `sslmode` (or `prefer`).
    pub db_sslmode: Option<SslMode>,
    pub db_ca_file: Option<String>,
    pub statement_timeout: Duration,
    pub pool_size: usize,
    pub pooler: PoolerMode,
    pub auth_mode: AuthMode,
    pub jwt_secret: Option<SecretString>,
    pub orchestrate_lookahead_hours: i32,
    pub orchestrate_chunk_size: i64,
    pub batch_window_days: i32,
    pub deadline_margin: Duration,
    pub cors_allow_origin: String,
}

impl Settings {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |key: &str| get(key).filter(|v| !v.trim().is_empty());
        let auth_mode = match get("AUTH_MODE").as_deref().map(str::to_ascii_lowercase) {
            None => AuthMode::Jwt,
            Some(v) if v == "jwt" => AuthMode::Jwt,
            Some(v) if v == "none" => AuthMode::None,
            Some(v) => {
                return Err(ConfigError(format!(
                    "AUTH_MODE must be jwt or none, not {v}"
                )))
            }
        };
        let pooler = match get("DB_POOLER").as_deref().map(str::to_ascii_lowercase) {
            None => PoolerMode::Session,
            Some(v) if v == "session" || v == "none" => PoolerMode::Session,
            Some(v) if v == "transaction" => PoolerMode::Transaction,
            Some(v) => {
                return Err(ConfigError(format!(
                    "DB_POOLER must be transaction or session, not {v}"
                )))
            }
        };
        let db_sslmode = match get("DB_SSLMODE") {
            None => None,
            Some(v) => Some(SslMode::parse(&v).ok_or_else(|| {
                ConfigError(format!(
                    "DB_SSLMODE must be disable, prefer, require or verify-full, not {v}"
                ))
            })?),
        };
        let db_port = match get("DB_PORT") {
            None => None,
            Some(_) => Some(number(&get, "DB_PORT", 5432u16, 1, u16::MAX)?),
        };
        Ok(Settings {
            database_url: get("DATABASE_URL").map(SecretString::from),
            db_secret_id: get("DB_SECRET_ID"),
            db_host: get("DB_HOST"),
            db_port,
            db_name: get("DB_NAME"),
            db_sslmode,
            db_ca_file: get("DB_CA_FILE"),
            statement_timeout: Duration::from_millis(number(
                &get,
                "DB_STATEMENT_TIMEOUT_MS",
                10_000,
                100,
                900_000,
            )?),
            pool_size: number(&get, "DB_POOL_SIZE", 2, 1, 100)?,
            pooler,
            auth_mode,
            jwt_secret: get("JWT_SECRET").map(SecretString::from),
            orchestrate_lookahead_hours: number(
                &get,
                "ORCHESTRATE_LOOKAHEAD_HOURS",
                24,
                0,
                24 * 366,
            )?,
            orchestrate_chunk_size: number(&get, "ORCHESTRATE_CHUNK_SIZE", 1000, 1, 10_000)?,
            batch_window_days: number(&get, "BATCH_WINDOW_DAYS", 7, 1, 366)?,
            deadline_margin: Duration::from_millis(number(
                &get,
                "DEADLINE_MARGIN_MS",
                2000,
                0,
                900_000,
            )?),
            cors_allow_origin: get("CORS_ALLOW_ORIGIN").unwrap_or_else(|| "*".to_owned()),
        })
    }
}

fn number<T>(
    get: &impl Fn(&str) -> Option<String>,
    key: &str,
    default: T,
    min: T,
    max: T,
) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    match get(key) {
        None => Ok(default),
        Some(raw) => match raw.trim().parse::<T>() {
            Ok(v) if v >= min && v <= max => Ok(v),
            _ => Err(ConfigError(format!(
                "{key} must be a whole number from {min} to {max}, not {raw:?}"
            ))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_follow_the_spec() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.pool_size, 2);
        assert_eq!(s.orchestrate_lookahead_hours, 24);
        assert_eq!(s.batch_window_days, 7);
        assert_eq!(s.deadline_margin, Duration::from_millis(2000));
        assert_eq!(s.cors_allow_origin, "*");
        assert_eq!(s.auth_mode, AuthMode::Jwt);
        assert_eq!(s.pooler, PoolerMode::Session);
    }

    #[test]
    fn bad_values_are_refused_with_the_variable_named() {
        for (k, v) in [
            ("DB_POOL_SIZE", "0"),
            ("DB_POOL_SIZE", "two"),
            ("ORCHESTRATE_LOOKAHEAD_HOURS", "-1"),
            ("AUTH_MODE", "off"),
            ("DB_POOLER", "statement"),
            ("DB_SSLMODE", "verify-ca"),
            ("DB_PORT", "99999"),
            ("DB_STATEMENT_TIMEOUT_MS", "5"),
        ] {
            let err = settings(&[(k, v)]).unwrap_err().to_string();
            assert!(err.contains(k), "{err}");
        }
    }

    #[test]
    fn debug_output_hides_secrets() {
        let s = settings(&[
            ("DATABASE_URL", "postgres://u:hunter2@db/x"),
            ("JWT_SECRET", "topsecret"),
        ])
        .unwrap();
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("topsecret"),
            "{shown}"
        );
    }
}
