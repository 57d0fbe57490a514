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
    /// `statement_timeout` of `migrate` (a table rewrite on a big table takes
    /// long); zero means none.
    pub migrate_statement_timeout: Duration,
    /// `lock_timeout` of `migrate`: waiting behind live traffic, or for another
    /// instance's migration; zero means none.
    pub migrate_lock_timeout: Duration,
    pub pool_size: usize,
    /// `DB_POOLER`; `None` (unset): transaction mode for Supabase's
    /// transaction pooler (a host under `pooler.supabase.com` on port 6543),
    /// session mode otherwise — decided where the host is known
    /// ([`PoolerMode::for_host`]).
    pub pooler: Option<PoolerMode>,
    /// `MIGRATE_SECRET_ID`: the owner's credentials, for `migrate` only; `None`:
    /// the runtime secret (or `DATABASE_URL`, which wins over both).
    pub migrate_secret_id: Option<String>,
    pub auth_mode: AuthMode,
    pub jwt_secret: Option<SecretString>,
    /// Where the asymmetric signing keys are and whose tokens they sign
    /// (`SUPABASE_URL`, or `JWT_JWKS_URL` + `JWT_ISSUER`); `None`: HS256 only.
    pub jwks: Option<JwksSettings>,
    /// A token naming an unknown `kid` refetches the key set at most this often.
    pub jwks_min_refetch: Duration,
    /// Anonymous sign-ins (`is_anonymous: true`) may place orders.
    pub allow_anonymous_buyers: bool,
    /// `ADMIN_ROLE_CLAIM`: the claim whose value `admin` (or a list holding it)
    /// makes a user an admin, as a path of member names.
    pub admin_role_claim: Vec<String>,
    /// `ADMIN_ROLES_TABLE`: the app's roles table; a user with a row
    /// `role = 'admin'` there is an admin. `None`: no lookup.
    pub admin_roles_table: Option<QualifiedName>,
    /// `JWT_AUDIENCE`: a user token that carries `aud` must include it.
    pub jwt_audience: String,
    /// `HTTP_BUDGET_MS`: a job invoked over HTTP starts no new work after this
    /// long (API Gateway stops waiting at 30 s).
    pub http_budget: Duration,
    pub orchestrate_lookahead_hours: i32,
    pub orchestrate_chunk_size: i64,
    /// `ORCHESTRATE_CONNECTIONS`: how many chunks an orchestrate run works on
    /// at once, each on its own connection (at most `DB_POOL_SIZE`).
    pub orchestrate_connections: usize,
    pub batch_window_days: i32,
    pub deadline_margin: Duration,
    pub cors_allow_origin: String,
    /// `EVENT_BUS_NAME`: deliver the outbox to this EventBridge bus; `None`: rows stay in the table.
    pub event_bus_name: Option<String>,
    /// `AWS_ENDPOINT_URL_EVENTBRIDGE`: another EventBridge endpoint (a local one
    /// in tests); the SDK's own `AWS_ENDPOINT_URL` is honoured otherwise.
    pub eventbridge_endpoint: Option<String>,
    /// `EVENT_SOURCE`: the `Source` of every entry.
    pub event_source: String,
    /// How long orchestrate and review-batch may spend delivering after their commit.
    pub publish_budget: Duration,
    /// How long process-order may spend delivering its `order.placed` (the buyer waits).
    pub order_publish_budget: Duration,
    /// How long a `publish-events` run may deliver (also bounded by the Lambda deadline).
    pub publish_job_budget: Duration,
    /// `PUBLISH_CONCURRENCY`: most `PutEvents` calls in flight at once.
    pub publish_concurrency: usize,
    /// `PUBLISH_MAX_ATTEMPTS`: refusals after which an event is set aside.
    pub publish_max_attempts: u32,
    /// `PUBLISH_CALL_TIMEOUT_MS`: the SDK's operation timeout for one
    /// `PutEvents` call, its retry included (each attempt gets half).
    pub publish_call_timeout: Duration,
}

impl PoolerMode {
    /// What `DB_POOLER` unset means for a connection to `host:port`: Supabase's
    /// Supavisor answers in transaction mode on port 6543 of its
    /// `*.pooler.supabase.com` hosts (and in session mode on 5432).
    pub fn for_host(host: &str, port: u16) -> Self {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if port == 6543 && host.ends_with(".pooler.supabase.com") {
            PoolerMode::Transaction
        } else {
            PoolerMode::Session
        }
    }
}

/// The default `ADMIN_ROLE_CLAIM`: where Supabase keeps what only the server may set.
pub const DEFAULT_ADMIN_ROLE_CLAIM: &str = "app_metadata.role";

/// A dotted claim path: `app_metadata.role` is the member `role` of the claim
/// `app_metadata`. No part may be empty.
fn claim_path(raw: &str) -> Result<Vec<String>, ConfigError> {
    let parts: Vec<String> = raw.trim().split('.').map(str::to_owned).collect();
    if parts.iter().any(|p| p.trim().is_empty() || p.trim() != p) {
        return Err(ConfigError(format!(
            "ADMIN_ROLE_CLAIM must be a dotted claim path such as app_metadata.role or user_role, not {raw:?}"
        )));
    }
    Ok(parts)
}

/// A table named by configuration, qualified by its schema (`public.user_roles`,
/// `"My Schema"."Roles"`), as Postgres reads a name: unquoted parts fold to
/// lower case, quoted parts are kept exactly (`""` is a quote). It is
/// configuration, never request data, and it reaches SQL only through
/// [`QualifiedName::quoted`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QualifiedName {
    pub schema: String,
    pub name: String,
}

impl QualifiedName {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = raw.trim();
        loop {
            let (part, after) = identifier(rest)?;
            parts.push(part);
            match after.strip_prefix('.') {
                Some(next) => rest = next,
                None if after.is_empty() => break,
                None => return Err(format!("unexpected {:?}", after)),
            }
        }
        match <[String; 2]>::try_from(parts) {
            Ok([schema, name]) => Ok(QualifiedName { schema, name }),
            Err(parts) => Err(format!(
                "{} part(s) where schema.table has two",
                parts.len()
            )),
        }
    }

    /// `"schema"."name"`, each part quoted as Postgres quotes identifiers.
    pub fn quoted(&self) -> String {
        let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
        format!("{}.{}", quote(&self.schema), quote(&self.name))
    }
}

impl std::fmt::Display for QualifiedName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.quoted())
    }
}

/// One identifier at the start of `s` and what follows it.
fn identifier(s: &str) -> Result<(String, &str), String> {
    if let Some(quoted) = s.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = quoted.char_indices();
        while let Some((i, c)) = chars.next() {
            if c != '"' {
                out.push(c);
                continue;
            }
            if quoted[i + 1..].starts_with('"') {
                out.push('"');
                chars.next();
                continue;
            }
            if out.is_empty() || out.contains('\0') {
                return Err("an empty or invalid quoted identifier".into());
            }
            return Ok((out, &quoted[i + 1..]));
        }
        return Err("an unclosed quote".into());
    }
    let end = s
        .char_indices()
        .find(|&(i, c)| {
            !(c == '_' || c.is_ascii_alphabetic() || (i > 0 && (c.is_ascii_digit() || c == '$')))
        })
        .map(|(i, _)| i)
        .unwrap_or(s.len());
    if end == 0 || end > 63 {
        return Err("each part must be an identifier (letters, digits, _ and $, not starting with a digit) or a quoted one".into());
    }
    Ok((s[..end].to_ascii_lowercase(), &s[end..]))
}

/// The JWKS endpoint and the issuer its keys sign for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksSettings {
    pub url: http::Uri,
    pub issuer: String,
}

/// Set by AWS Lambda itself on every runtime (`on-demand`,
/// `provisioned-concurrency`, `snap-start`); `cargo lambda watch` does not
/// set it. `AWS_EXECUTION_ENV` would not do: the `provided.*` runtimes a
/// Rust function runs on leave it unset.
pub const ON_LAMBDA_SIGNAL: &str = "AWS_LAMBDA_INITIALIZATION_TYPE";

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
        if auth_mode == AuthMode::None && get(ON_LAMBDA_SIGNAL).is_some() {
            return Err(ConfigError(
                "AUTH_MODE=none turns authentication off and is refused on AWS Lambda; \
                 it is for local development only"
                    .into(),
            ));
        }
        let pooler = match get("DB_POOLER").as_deref().map(str::to_ascii_lowercase) {
            None => None,
            Some(v) if v == "session" || v == "none" => Some(PoolerMode::Session),
            Some(v) if v == "transaction" => Some(PoolerMode::Transaction),
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
            statement_timeout: millis(&get, "DB_STATEMENT_TIMEOUT_MS", 10_000, 100, 900_000)?,
            migrate_statement_timeout: millis(
                &get,
                "MIGRATE_STATEMENT_TIMEOUT_MS",
                840_000,
                0,
                86_400_000,
            )?,
            migrate_lock_timeout: millis(&get, "MIGRATE_LOCK_TIMEOUT_MS", 300_000, 0, 86_400_000)?,
            pool_size: number(&get, "DB_POOL_SIZE", 2, 1, 100)?,
            pooler,
            migrate_secret_id: get("MIGRATE_SECRET_ID").map(|v| v.trim().to_owned()),
            auth_mode,
            jwt_secret: get("JWT_SECRET").map(SecretString::from),
            jwks: jwks_settings(&get)?,
            jwks_min_refetch: Duration::from_secs(number(
                &get,
                "JWKS_MIN_REFETCH_SECS",
                30,
                1,
                3600,
            )?),
            allow_anonymous_buyers: boolean(&get, "ALLOW_ANONYMOUS_BUYERS")?,
            admin_role_claim: claim_path(
                get("ADMIN_ROLE_CLAIM")
                    .as_deref()
                    .unwrap_or(DEFAULT_ADMIN_ROLE_CLAIM),
            )?,
            admin_roles_table: match get("ADMIN_ROLES_TABLE") {
                None => None,
                Some(v) => Some(QualifiedName::parse(&v).map_err(|why| {
                    ConfigError(format!(
                        "ADMIN_ROLES_TABLE must be a table name qualified by its schema, such as \
                         public.user_roles: {why}"
                    ))
                })?),
            },
            jwt_audience: get("JWT_AUDIENCE")
                .map(|v| v.trim().to_owned())
                .unwrap_or_else(|| "authenticated".to_owned()),
            http_budget: millis(&get, "HTTP_BUDGET_MS", 25_000, 0, 900_000)?,
            orchestrate_lookahead_hours: number(
                &get,
                "ORCHESTRATE_LOOKAHEAD_HOURS",
                24,
                0,
                24 * 366,
            )?,
            orchestrate_chunk_size: number(&get, "ORCHESTRATE_CHUNK_SIZE", 1000, 1, 10_000)?,
            orchestrate_connections: number(&get, "ORCHESTRATE_CONNECTIONS", 2, 1, 8)?,
            batch_window_days: number(&get, "BATCH_WINDOW_DAYS", 7, 1, 366)?,
            deadline_margin: millis(&get, "DEADLINE_MARGIN_MS", 2000, 0, 900_000)?,
            cors_allow_origin: get("CORS_ALLOW_ORIGIN").unwrap_or_else(|| "*".to_owned()),
            event_bus_name: get("EVENT_BUS_NAME").map(|v| v.trim().to_owned()),
            eventbridge_endpoint: get("AWS_ENDPOINT_URL_EVENTBRIDGE").map(|v| v.trim().to_owned()),
            event_source: get("EVENT_SOURCE")
                .map(|v| v.trim().to_owned())
                .unwrap_or_else(|| "batch-processor".to_owned()),
            publish_budget: millis(&get, "PUBLISH_BUDGET_MS", 5000, 0, 900_000)?,
            order_publish_budget: millis(&get, "ORDER_PUBLISH_BUDGET_MS", 300, 0, 60_000)?,
            publish_job_budget: millis(&get, "PUBLISH_JOB_BUDGET_MS", 600_000, 0, 900_000)?,
            publish_concurrency: number(&get, "PUBLISH_CONCURRENCY", 8, 1, 64)?,
            publish_max_attempts: number(&get, "PUBLISH_MAX_ATTEMPTS", 10, 1, 100)?,
            publish_call_timeout: millis(&get, "PUBLISH_CALL_TIMEOUT_MS", 5000, 200, 60_000)?,
        })
    }
}

/// `SUPABASE_URL` gives both the JWKS URL and the issuer; `JWT_JWKS_URL` and
/// `JWT_ISSUER` set (or override) them for another issuer.
fn jwks_settings(
    get: &impl Fn(&str) -> Option<String>,
) -> Result<Option<JwksSettings>, ConfigError> {
    let base = get("SUPABASE_URL").map(|u| u.trim().trim_end_matches('/').to_owned());
    let url = get("JWT_JWKS_URL")
        .map(|u| u.trim().to_owned())
        .or_else(|| {
            base.as_ref()
                .map(|b| format!("{b}/auth/v1/.well-known/jwks.json"))
        });
    let issuer = get("JWT_ISSUER")
        .map(|i| i.trim().to_owned())
        .or_else(|| base.as_ref().map(|b| format!("{b}/auth/v1")));
    let (url, issuer) = match (url, issuer) {
        (None, None) => return Ok(None),
        (Some(url), Some(issuer)) => (url, issuer),
        (Some(_), None) => {
            return Err(ConfigError(
                "JWT_JWKS_URL needs JWT_ISSUER (or SUPABASE_URL): tokens are checked against their issuer".into(),
            ))
        }
        (None, Some(_)) => {
            return Err(ConfigError(
                "JWT_ISSUER needs JWT_JWKS_URL (or SUPABASE_URL)".into(),
            ))
        }
    };
    let name = if get("JWT_JWKS_URL").is_some() {
        "JWT_JWKS_URL"
    } else {
        "SUPABASE_URL"
    };
    let uri: http::Uri = url
        .parse()
        .map_err(|_| ConfigError(format!("{name} is not a URL")))?;
    let host = uri.host().unwrap_or("");
    match uri.scheme_str() {
        Some("https") if !host.is_empty() => {}
        Some("http") if is_loopback(host) => {}
        Some("http") => {
            return Err(ConfigError(format!(
                "{name} must be https (plain http only for a loopback host in local development)"
            )))
        }
        _ => return Err(ConfigError(format!("{name} must be an https URL"))),
    }
    Ok(Some(JwksSettings { url: uri, issuer }))
}

/// `localhost`, 127.0.0.0/8 or `[::1]`.
fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn boolean(get: &impl Fn(&str) -> Option<String>, key: &str) -> Result<bool, ConfigError> {
    match get(key).map(|v| v.trim().to_ascii_lowercase()).as_deref() {
        None | Some("false") | Some("0") | Some("no") => Ok(false),
        Some("true") | Some("1") | Some("yes") => Ok(true),
        Some(other) => Err(ConfigError(format!(
            "{key} must be true or false, not {other:?}"
        ))),
    }
}

/// A number of milliseconds, as [`number`] reads it.
fn millis(
    get: &impl Fn(&str) -> Option<String>,
    key: &str,
    default: u64,
    min: u64,
    max: u64,
) -> Result<Duration, ConfigError> {
    number(get, key, default, min, max).map(Duration::from_millis)
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
        assert_eq!(s.publish_concurrency, 8);
        assert_eq!(s.publish_max_attempts, 10);
        assert_eq!(s.publish_call_timeout, Duration::from_millis(5000));
        assert_eq!(s.orchestrate_lookahead_hours, 24);
        assert_eq!(s.orchestrate_chunk_size, 1000);
        assert_eq!(s.orchestrate_connections, 2);
        assert_eq!(s.batch_window_days, 7);
        assert_eq!(s.deadline_margin, Duration::from_millis(2000));
        assert_eq!(s.cors_allow_origin, "*");
        assert_eq!(s.auth_mode, AuthMode::Jwt);
        assert_eq!(s.pooler, None, "decided by the host");
        assert_eq!(s.admin_role_claim, ["app_metadata", "role"]);
        assert_eq!(s.admin_roles_table, None);
        assert_eq!(s.jwt_audience, "authenticated");
        assert_eq!(s.http_budget, Duration::from_millis(25_000));
        assert_eq!(s.migrate_secret_id, None);
    }

    #[test]
    fn the_supabase_transaction_pooler_is_recognised_by_host_and_port() {
        let cases = [
            (
                "aws-0-eu-central-1.pooler.supabase.com",
                6543,
                PoolerMode::Transaction,
            ),
            (
                "AWS-1-US-EAST-1.POOLER.SUPABASE.COM.",
                6543,
                PoolerMode::Transaction,
            ),
            (
                "aws-0-eu-central-1.pooler.supabase.com",
                5432,
                PoolerMode::Session,
            ),
            (
                "db.abcdefghijklmnopqrst.supabase.co",
                6543,
                PoolerMode::Session,
            ),
            (
                "pooler.supabase.com.evil.example",
                6543,
                PoolerMode::Session,
            ),
            ("127.0.0.1", 6543, PoolerMode::Session),
        ];
        for (host, port, mode) in cases {
            assert_eq!(PoolerMode::for_host(host, port), mode, "{host}:{port}");
        }
        assert_eq!(
            settings(&[("DB_POOLER", "session")]).unwrap().pooler,
            Some(PoolerMode::Session)
        );
    }

    #[test]
    fn table_names_are_qualified_identifiers_and_come_out_quoted() {
        let ok = [
            ("public.user_roles", "\"public\".\"user_roles\""),
            (" Public.User_Roles ", "\"public\".\"user_roles\""),
            ("\"My Schema\".\"Roles\"", "\"My Schema\".\"Roles\""),
            ("app.\"a\"\"b\"", "\"app\".\"a\"\"b\""),
            ("s1.t$2", "\"s1\".\"t$2\""),
        ];
        for (raw, quoted) in ok {
            assert_eq!(QualifiedName::parse(raw).unwrap().quoted(), quoted, "{raw}");
        }
        for bad in [
            "user_roles",
            "a.b.c",
            "public.user_roles; DROP TABLE orders",
            "public.",
            ".x",
            "public.\"open",
            "public.\"\"",
            "1abc.t",
            "public.user-roles",
        ] {
            assert!(QualifiedName::parse(bad).is_err(), "{bad}");
            let err = settings(&[("ADMIN_ROLES_TABLE", bad)])
                .unwrap_err()
                .to_string();
            assert!(err.contains("ADMIN_ROLES_TABLE"), "{err}");
        }
    }

    #[test]
    fn admin_role_claims_are_dotted_paths() {
        let s = settings(&[("ADMIN_ROLE_CLAIM", "user_role")]).unwrap();
        assert_eq!(s.admin_role_claim, ["user_role"]);
        let s = settings(&[("ADMIN_ROLE_CLAIM", "a.b.c")]).unwrap();
        assert_eq!(s.admin_role_claim, ["a", "b", "c"]);
        for bad in ["a..b", ".a", "a.", "a. b"] {
            let err = settings(&[("ADMIN_ROLE_CLAIM", bad)])
                .unwrap_err()
                .to_string();
            assert!(err.contains("ADMIN_ROLE_CLAIM"), "{err}");
        }
    }

    #[test]
    fn bad_values_are_refused_with_the_variable_named() {
        for (k, v) in [
            ("DB_POOL_SIZE", "0"),
            ("DB_POOL_SIZE", "two"),
            ("ORCHESTRATE_LOOKAHEAD_HOURS", "-1"),
            ("ORCHESTRATE_CONNECTIONS", "0"),
            ("ORCHESTRATE_CONNECTIONS", "9"),
            ("AUTH_MODE", "off"),
            ("DB_POOLER", "statement"),
            ("DB_SSLMODE", "verify-ca"),
            ("DB_PORT", "99999"),
            ("DB_STATEMENT_TIMEOUT_MS", "5"),
            ("ALLOW_ANONYMOUS_BUYERS", "maybe"),
            ("JWKS_MIN_REFETCH_SECS", "0"),
            ("HTTP_BUDGET_MS", "-1"),
            ("HTTP_BUDGET_MS", "1000000"),
            ("PUBLISH_CONCURRENCY", "0"),
            ("PUBLISH_CONCURRENCY", "65"),
            ("PUBLISH_MAX_ATTEMPTS", "0"),
            ("PUBLISH_CALL_TIMEOUT_MS", "50"),
        ] {
            let err = settings(&[(k, v)]).unwrap_err().to_string();
            assert!(err.contains(k), "{err}");
        }
    }

    #[test]
    fn supabase_url_gives_the_jwks_url_and_the_issuer() {
        let s = settings(&[("SUPABASE_URL", "https://abcd.supabase.co/")]).unwrap();
        let jwks = s.jwks.unwrap();
        assert_eq!(
            jwks.url.to_string(),
            "https://abcd.supabase.co/auth/v1/.well-known/jwks.json"
        );
        assert_eq!(jwks.issuer, "https://abcd.supabase.co/auth/v1");
        let other = settings(&[
            ("JWT_JWKS_URL", "https://id.example.com/keys"),
            ("JWT_ISSUER", "https://id.example.com"),
        ])
        .unwrap()
        .jwks
        .unwrap();
        assert_eq!(other.issuer, "https://id.example.com");
        assert_eq!(settings(&[]).unwrap().jwks, None);
        assert_eq!(
            settings(&[]).unwrap().jwks_min_refetch,
            Duration::from_secs(30)
        );
    }

    #[test]
    fn jwks_urls_must_be_https_except_on_loopback() {
        for ok in [
            "http://127.0.0.1:8080",
            "http://localhost:1",
            "http://[::1]:9",
            "https://x.supabase.co",
        ] {
            assert!(settings(&[("SUPABASE_URL", ok)]).is_ok(), "{ok}");
        }
        for bad in [
            "http://abcd.supabase.co",
            "http://10.0.0.1",
            "ftp://x",
            "not a url",
        ] {
            let err = settings(&[("SUPABASE_URL", bad)]).unwrap_err().to_string();
            assert!(err.contains("SUPABASE_URL"), "{bad}: {err}");
        }
        let err = settings(&[("JWT_JWKS_URL", "https://id.example.com/keys")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("JWT_ISSUER"), "{err}");
    }

    #[test]
    fn auth_mode_none_is_refused_on_lambda_only() {
        // What `cargo lambda watch` sets for the function it runs.
        let local = [
            ("AUTH_MODE", "none"),
            ("AWS_LAMBDA_FUNCTION_NAME", "batch-processor"),
            ("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9000"),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"),
        ];
        assert_eq!(settings(&local).unwrap().auth_mode, AuthMode::None);
        let mut on_aws = local.to_vec();
        on_aws.push((ON_LAMBDA_SIGNAL, "on-demand"));
        let err = settings(&on_aws).unwrap_err().to_string();
        assert!(err.contains("AUTH_MODE=none"), "{err}");
        // Authentication on: the signal changes nothing.
        assert!(settings(&[(ON_LAMBDA_SIGNAL, "on-demand")]).is_ok());
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
