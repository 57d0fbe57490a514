//! The database secret from AWS Secrets Manager (behaviour §8).
//!
//! The secret is in the RDS format — `{"host", "port", "username", "password",
//! "dbname"}`, `port` a number or a string — optionally with the Supabase
//! `jwtSecret`. RDS-managed secrets hold only `username` and `password`;
//! `DB_HOST`, `DB_PORT` and `DB_NAME` fill what the secret lacks.
//!
//! The SDK configuration ([`crate::aws::config`]) is loaded once per instance,
//! on first use (so an instance with `DATABASE_URL` never pays for it), and the secret is cached
//! for the instance's life; [`SecretsManager::get`] with `fresh` bypasses the
//! cache when Postgres refuses the password after a rotation.

use secrecy::SecretString;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::{Mutex, OnceCell};

use crate::telemetry::phases::{timed, Phase};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// Secrets Manager could not be asked or refused (network, IAM, no such secret).
    #[error("could not read the database secret")]
    Unavailable,
    /// The secret's text is not the RDS format.
    #[error("the database secret is malformed: {0}")]
    Malformed(&'static str),
}

/// Database credentials and location. The password and JWT secret are
/// [`SecretString`]s: `Debug` prints `[REDACTED]`, and reading one takes an
/// explicit `expose_secret()`.
#[derive(Debug, Clone)]
pub struct DbSecret {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub username: String,
    pub password: SecretString,
    pub dbname: Option<String>,
    pub jwt_secret: Option<SecretString>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawSecret {
    host: Option<String>,
    port: Option<Value>,
    username: Option<String>,
    password: Option<String>,
    dbname: Option<String>,
    jwt_secret: Option<String>,
}

impl DbSecret {
    /// Parses the secret string. Errors name what is wrong, never a value.
    pub fn parse(text: &str) -> Result<Self, SecretError> {
        let raw: RawSecret = serde_json::from_str(text)
            .map_err(|_| SecretError::Malformed("not a JSON object of strings"))?;
        let port = match raw.port {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => Some(
                n.as_u64()
                    .and_then(|p| u16::try_from(p).ok())
                    .ok_or(SecretError::Malformed("port is not a port number"))?,
            ),
            Some(Value::String(s)) => Some(
                s.trim()
                    .parse::<u16>()
                    .map_err(|_| SecretError::Malformed("port is not a port number"))?,
            ),
            Some(_) => return Err(SecretError::Malformed("port is not a port number")),
        };
        let nonempty = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
        Ok(DbSecret {
            host: nonempty(raw.host),
            port,
            username: nonempty(raw.username)
                .ok_or(SecretError::Malformed("username is missing"))?,
            password: raw
                .password
                .map(SecretString::from)
                .ok_or(SecretError::Malformed("password is missing"))?,
            dbname: nonempty(raw.dbname),
            jwt_secret: nonempty(raw.jwt_secret).map(SecretString::from),
        })
    }
}

pub struct SecretsManager {
    secret_id: String,
    client: OnceCell<aws_sdk_secretsmanager::Client>,
    cached: Mutex<Option<DbSecret>>,
}

impl SecretsManager {
    pub fn new(secret_id: impl Into<String>) -> Self {
        SecretsManager {
            secret_id: secret_id.into(),
            client: OnceCell::new(),
            cached: Mutex::new(None),
        }
    }

    /// The secret, from the cache unless `fresh`.
    pub async fn get(&self, fresh: bool) -> Result<DbSecret, SecretError> {
        let mut cached = self.cached.lock().await;
        if let (false, Some(secret)) = (fresh, cached.as_ref()) {
            return Ok(secret.clone());
        }
        let client = self
            .client
            .get_or_init(|| async {
                aws_sdk_secretsmanager::Client::new(crate::aws::config().await)
            })
            .await;
        let out = timed(
            Phase::Secret,
            client.get_secret_value().secret_id(&self.secret_id).send(),
        )
        .await
        .map_err(|e| {
                // The SDK's error names the secret id and the AWS error code, not its value.
                tracing::error!(error = %aws_sdk_secretsmanager::error::DisplayErrorContext(&e), "GetSecretValue failed");
                SecretError::Unavailable
            })?;
        let text = out
            .secret_string()
            .ok_or(SecretError::Malformed("it has no SecretString"))?;
        let secret = DbSecret::parse(text)?;
        *cached = Some(secret.clone());
        Ok(secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn rds_format_with_port_as_number_or_string() {
        let a = DbSecret::parse(
            r#"{"engine":"postgres","host":"db.example.com","port":5432,"username":"app","password":"p@ss","dbname":"shop"}"#,
        )
        .unwrap();
        assert_eq!(a.host.as_deref(), Some("db.example.com"));
        assert_eq!(a.port, Some(5432));
        assert_eq!(a.dbname.as_deref(), Some("shop"));
        let b =
            DbSecret::parse(r#"{"port":"6543","username":"app","password":"x","jwtSecret":"jj"}"#)
                .unwrap();
        assert_eq!(b.port, Some(6543));
        assert_eq!(b.host, None, "RDS-managed secrets hold only credentials");
        assert_eq!(
            b.jwt_secret.as_ref().map(ExposeSecret::expose_secret),
            Some("jj")
        );
    }

    #[test]
    fn malformed_secrets_say_what_is_wrong_and_never_the_value() {
        let cases = [
            ("not json at all hunter2", "not a JSON object"),
            (r#"{"password":"hunter2"}"#, "username is missing"),
            (r#"{"username":"u"}"#, "password is missing"),
            (
                r#"{"username":"u","password":"hunter2","port":"abc"}"#,
                "port",
            ),
            (
                r#"{"username":"u","password":"hunter2","port":70000}"#,
                "port",
            ),
        ];
        for (text, needle) in cases {
            let msg = DbSecret::parse(text).unwrap_err().to_string();
            assert!(msg.contains(needle), "{msg}");
            assert!(!msg.contains("hunter2"), "{msg}");
        }
    }

    #[test]
    fn debug_never_shows_the_password() {
        let s =
            DbSecret::parse(r#"{"username":"u","password":"hunter2","jwtSecret":"jwt-s3cret"}"#)
                .unwrap();
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("jwt-s3cret"),
            "{shown}"
        );
    }
}
