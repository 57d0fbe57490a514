//! The database secret from AWS Secrets Manager (behaviour §8).
//!
//! Three shapes are read, each optionally with the Supabase `jwtSecret`:
//!
//! - the RDS format — `{"host", "port", "username", "password", "dbname"}`,
//!   `port` a number or a string. RDS-managed secrets hold only `username` and
//!   `password`; `DB_HOST`, `DB_PORT` and `DB_NAME` fill what the secret lacks;
//! - a connection string, as Supabase's dashboard hands them out: the whole
//!   SecretString `postgresql://user:pass@host:port/db?…`;
//! - a JSON object whose `uri` (also `url`, `connectionString`) holds one.
//!
//! In a connection string the user and password are URL-decoded (`%40` is
//! `@`), the dotted users of Supabase's pooler (`postgres.<ref>`) are kept as
//! they are, and `sslmode` may be `disable`, `allow`, `prefer`, `require` or
//! `verify-full` (libpq's names). A secret that is none of these is refused
//! with a message that names what is wrong and never a value.
//!
//! The SDK configuration ([`crate::aws::config`]) is loaded once per instance,
//! on first use (so an instance with `DATABASE_URL` never pays for it), and the secret is cached
//! for the instance's life; [`SecretsManager::get`] with `fresh` bypasses the
//! cache when Postgres refuses the password after a rotation.

use secrecy::SecretString;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::{Mutex, OnceCell};

use crate::configuration::SslMode;
use crate::telemetry::phases::{timed, Phase};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// Secrets Manager could not be asked or refused (network, IAM, no such secret).
    #[error("could not read the database secret")]
    Unavailable,
    /// The secret's text is none of the shapes read here; the reason names
    /// what is wrong, never a value.
    #[error("the database secret is malformed: {0}")]
    Malformed(String),
}

fn malformed(why: impl Into<String>) -> SecretError {
    SecretError::Malformed(why.into())
}

/// Database credentials and location, and the HS256 secret when the secret
/// carries one. The password and JWT secret never print: [`SecretString`]s
/// show `[REDACTED]`, a parsed connection string's password shows `_`.
#[derive(Debug, Clone)]
pub struct DbSecret {
    pub connection: Connection,
    pub jwt_secret: Option<SecretString>,
}

/// Where and as whom to connect.
#[derive(Debug, Clone)]
pub enum Connection {
    /// The RDS format's fields.
    Fields {
        host: Option<String>,
        port: Option<u16>,
        username: String,
        password: SecretString,
        dbname: Option<String>,
    },
    /// A connection string, parsed (user and password decoded), and the
    /// `sslmode` it asked for.
    Url {
        config: Box<tokio_postgres::Config>,
        ssl_mode: Option<SslMode>,
    },
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
    uri: Option<String>,
    url: Option<String>,
    connection_string: Option<String>,
}

/// What Supabase's dashboard puts where the password goes until one types it in.
const PASSWORD_PLACEHOLDER: &[u8] = b"[YOUR-PASSWORD]";

impl DbSecret {
    /// Parses the secret string. Errors name what is wrong, never a value.
    pub fn parse(text: &str) -> Result<Self, SecretError> {
        if is_connection_string(text) {
            return Ok(DbSecret {
                connection: parse_connection_string(text)?,
                jwt_secret: None,
            });
        }
        let raw: RawSecret = serde_json::from_str(text).map_err(|_| {
            malformed(
                "it is neither a connection string (postgresql://…) nor a JSON object of strings",
            )
        })?;
        let nonempty = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
        let jwt_secret = nonempty(raw.jwt_secret).map(SecretString::from);
        if let Some(url) = nonempty(raw.uri)
            .or(nonempty(raw.url))
            .or(nonempty(raw.connection_string))
        {
            return Ok(DbSecret {
                connection: parse_connection_string(&url)?,
                jwt_secret,
            });
        }
        let port = match raw.port {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => Some(
                n.as_u64()
                    .and_then(|p| u16::try_from(p).ok())
                    .ok_or_else(|| malformed("port is not a port number"))?,
            ),
            Some(Value::String(s)) => Some(
                s.trim()
                    .parse::<u16>()
                    .map_err(|_| malformed("port is not a port number"))?,
            ),
            Some(_) => return Err(malformed("port is not a port number")),
        };
        Ok(DbSecret {
            connection: Connection::Fields {
                host: nonempty(raw.host),
                port,
                username: nonempty(raw.username).ok_or_else(|| {
                    malformed("username is missing (nor is there a uri, url or connectionString)")
                })?,
                password: raw
                    .password
                    .map(SecretString::from)
                    .ok_or_else(|| malformed("password is missing"))?,
                dbname: nonempty(raw.dbname),
            },
            jwt_secret,
        })
    }
}

fn is_connection_string(text: &str) -> bool {
    let t = text.trim_start();
    t.starts_with("postgresql://") || t.starts_with("postgres://")
}

/// A libpq-style URL. `sslmode` is read here (tokio-postgres knows only
/// `disable`, `prefer` and `require`); everything else is tokio-postgres'.
fn parse_connection_string(text: &str) -> Result<Connection, SecretError> {
    let text = text.trim();
    if !is_connection_string(text) {
        return Err(malformed(
            "its connection string does not start with postgresql:// or postgres://",
        ));
    }
    let (base, query) = match text.split_once('?') {
        Some((base, query)) => (base, query),
        None => (text, ""),
    };
    let mut ssl_mode = None;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key == "sslmode" {
            ssl_mode = Some(match value {
                "disable" => SslMode::Disable,
                "allow" | "prefer" => SslMode::Prefer,
                "require" => SslMode::Require,
                "verify-full" => SslMode::VerifyFull,
                _ => {
                    return Err(malformed(
                        "its connection string's sslmode must be disable, allow, prefer, require or verify-full",
                    ))
                }
            });
        } else {
            kept.push(pair);
        }
    }
    let url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    let config: tokio_postgres::Config = url.parse().map_err(|_| {
        let options: Vec<&str> = kept
            .iter()
            .map(|p| p.split('=').next().unwrap_or_default())
            .collect();
        if options.is_empty() {
            malformed("its connection string is not a valid Postgres URL")
        } else {
            malformed(format!(
                "its connection string is not a valid Postgres URL, or one of its options is unknown ({})",
                options.join(", ")
            ))
        }
    })?;
    if config.get_user().is_none_or(str::is_empty) {
        return Err(malformed("its connection string has no user"));
    }
    if config.get_password() == Some(PASSWORD_PLACEHOLDER) {
        return Err(malformed(
            "its connection string still holds the [YOUR-PASSWORD] placeholder",
        ));
    }
    Ok(Connection::Url {
        config: Box::new(config),
        ssl_mode,
    })
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
            .ok_or_else(|| malformed("it has no SecretString"))?;
        let secret = DbSecret::parse(text)?;
        *cached = Some(secret.clone());
        Ok(secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn fields(s: &DbSecret) -> (Option<&str>, Option<u16>, &str, &str, Option<&str>) {
        match &s.connection {
            Connection::Fields {
                host,
                port,
                username,
                password,
                dbname,
            } => (
                host.as_deref(),
                *port,
                username,
                password.expose_secret(),
                dbname.as_deref(),
            ),
            Connection::Url { .. } => panic!("fields expected"),
        }
    }

    fn url(s: &DbSecret) -> (&tokio_postgres::Config, Option<SslMode>) {
        match &s.connection {
            Connection::Url { config, ssl_mode } => (config, *ssl_mode),
            Connection::Fields { .. } => panic!("a connection string expected"),
        }
    }

    #[test]
    fn rds_format_with_port_as_number_or_string() {
        let a = DbSecret::parse(
            r#"{"engine":"postgres","host":"db.example.com","port":5432,"username":"app","password":"p@ss","dbname":"shop"}"#,
        )
        .unwrap();
        assert_eq!(
            fields(&a),
            (
                Some("db.example.com"),
                Some(5432),
                "app",
                "p@ss",
                Some("shop")
            )
        );
        let b =
            DbSecret::parse(r#"{"port":"6543","username":"app","password":"x","jwtSecret":"jj"}"#)
                .unwrap();
        assert_eq!(fields(&b).1, Some(6543));
        assert_eq!(
            fields(&b).0,
            None,
            "RDS-managed secrets hold only credentials"
        );
        assert_eq!(
            b.jwt_secret.as_ref().map(ExposeSecret::expose_secret),
            Some("jj")
        );
    }

    #[test]
    fn connection_strings_whole_or_in_json_with_escaped_passwords_decoded() {
        let whole = DbSecret::parse(
            "postgresql://postgres.abcdefghijklmnopqrst:p%40ss%2Fw%3Ard%25@aws-0-eu-central-1.pooler.supabase.com:6543/postgres",
        )
        .unwrap();
        let (config, ssl) = url(&whole);
        assert_eq!(config.get_user(), Some("postgres.abcdefghijklmnopqrst"));
        assert_eq!(config.get_password(), Some(&b"p@ss/w:rd%"[..]));
        assert_eq!(config.get_ports(), [6543]);
        assert_eq!(config.get_dbname(), Some("postgres"));
        assert_eq!(ssl, None);
        assert!(whole.jwt_secret.is_none());
        for key in ["uri", "url", "connectionString"] {
            let text = serde_json::json!({
                key: "postgres://u:pw@db.example.com/shop?sslmode=verify-full&application_name=bp",
                "jwtSecret": "jj"
            })
            .to_string();
            let s = DbSecret::parse(&text).unwrap();
            let (config, ssl) = url(&s);
            assert_eq!(config.get_dbname(), Some("shop"), "{key}");
            assert_eq!(config.get_application_name(), Some("bp"));
            assert_eq!(ssl, Some(SslMode::VerifyFull));
            assert_eq!(
                s.jwt_secret.as_ref().map(ExposeSecret::expose_secret),
                Some("jj")
            );
        }
    }

    #[test]
    fn malformed_secrets_say_what_is_wrong_and_never_the_value() {
        let cases = [
            ("not json at all hunter2", "neither a connection string"),
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
            (r#"{"uri":"mysql://u:hunter2@h/db"}"#, "does not start with"),
            (
                "postgresql://u:hunter2@h:notaport/db",
                "not a valid Postgres URL",
            ),
            (
                "postgresql://u:hunter2@h/db?pgbouncer=true",
                "options is unknown (pgbouncer)",
            ),
            ("postgresql://u:hunter2@h/db?sslmode=verify-ca", "sslmode"),
            (
                "postgresql://postgres.ref:[YOUR-PASSWORD]@h:6543/postgres",
                "[YOUR-PASSWORD] placeholder",
            ),
            ("postgresql://h/db?password=hunter2", "has no user"),
        ];
        for (text, needle) in cases {
            let msg = DbSecret::parse(text).unwrap_err().to_string();
            assert!(msg.contains(needle), "{text}: {msg}");
            assert!(!msg.contains("hunter2"), "{msg}");
        }
    }

    #[test]
    fn debug_never_shows_the_password() {
        for text in [
            r#"{"username":"u","password":"hunter2","jwtSecret":"jwt-s3cret"}"#,
            r#"{"uri":"postgresql://u:hunter2@h/db","jwtSecret":"jwt-s3cret"}"#,
        ] {
            let shown = format!("{:?}", DbSecret::parse(text).unwrap());
            assert!(
                !shown.contains("hunter2") && !shown.contains("jwt-s3cret"),
                "{shown}"
            );
        }
    }
}
