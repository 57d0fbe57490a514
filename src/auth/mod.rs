//! Who is calling (behaviour §3): an HTTP request's headers and the claims an
//! API Gateway authorizer verified in, a [`Principal`] out —
//! [`Authenticator::authenticate`], the one entry. Which principal may run
//! which job is the jobs' decision (`jobs::authorize`).
//!
//! Direct and EventBridge invocations are trusted: IAM already decided who may
//! invoke the function. HTTP callers prove themselves with a bearer token, or
//! with claims an API Gateway JWT authorizer already verified. Tokens are
//! verified the way Supabase Auth issues them today:
//!
//! - **asymmetric keys** (ES256, RS256) from the issuer's JWKS, selected by the
//!   token's `kid`, the algorithm taken from the key ([`jwks`]), `iss` checked;
//! - **the legacy HS256 secret**, alongside, so a project can migrate.
//!
//! A token is checked only by the system its header names: an HS256 header
//! never meets a public key and an ES256/RS256 header never meets the secret,
//! so no algorithm confusion is possible. `none` and every other algorithm are
//! refused. `exp` is required, `nbf` honoured, with [`LEEWAY_SECS`] of clock skew.
//! The token's header is decoded once: it names the verifier, and the key set
//! reads its `kid`.
//!
//! The authenticator owns where its keys come from: the JWKS cache, and the
//! HS256 secret ([`SharedSecret`]: `JWT_SECRET`, or the database secret's
//! `jwtSecret`, read only when an HS256 token has to be checked).

pub mod claims;
pub mod jwks;

use std::sync::Arc;

use http::HeaderMap;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::configuration::{AuthMode, Settings};
use crate::error::ApiError;
use crate::secrets::SecretsManager;
use jwks::{Clock, Jwks, KeyError};

/// Clock skew allowed on `exp` and `nbf`, as PostgREST allows.
pub const LEEWAY_SECS: u64 = 30;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A direct or EventBridge invocation.
    Trusted,
    /// `role: service_role`, a user whose `ADMIN_ROLE_CLAIM` says `admin`, or
    /// (decided by the job runner, only when a job needs it) a buyer the
    /// `ADMIN_ROLES_TABLE` names an admin. `user_id` is `sub` when it is a UUID.
    Admin { user_id: Option<Uuid> },
    /// `role: authenticated`: a buyer, acting for `sub`.
    Buyer { user_id: Uuid },
    /// An anonymous sign-in (`is_anonymous: true`) while `ALLOW_ANONYMOUS_BUYERS` is off.
    Anonymous,
    /// A valid token with no role this function knows (Supabase's `anon`, say).
    NoRole,
}

impl Principal {
    /// The user to record as `changed_by` in history rows.
    pub fn user_id(&self) -> Option<Uuid> {
        match self {
            Principal::Admin { user_id } => *user_id,
            Principal::Buyer { user_id } => Some(*user_id),
            Principal::Trusted | Principal::Anonymous | Principal::NoRole => None,
        }
    }
}

/// Which verifier a bearer token's header asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    /// HS256: the project's shared secret.
    SharedSecret,
    /// ES256 / RS256: a key of the issuer's JWKS.
    KeySet,
}

/// Where the HS256 secret comes from.
pub enum SharedSecret {
    /// `JWT_SECRET`.
    Fixed(SecretString),
    /// The `jwtSecret` of the database secret, read (and cached with it) the
    /// first time an HS256 token has to be checked.
    DbSecret(Arc<SecretsManager>),
    /// Neither: HS256 tokens cannot be checked.
    None,
}

impl SharedSecret {
    /// `JWT_SECRET` when set, else the database secret when there is one.
    pub fn from_settings(settings: &Settings, db_secret: Option<Arc<SecretsManager>>) -> Self {
        match (&settings.jwt_secret, db_secret) {
            (Some(secret), _) => SharedSecret::Fixed(secret.clone()),
            (None, Some(sm)) => SharedSecret::DbSecret(sm),
            (None, None) => SharedSecret::None,
        }
    }

    async fn get(&self) -> Result<Option<SecretString>, ApiError> {
        match self {
            SharedSecret::Fixed(secret) => Ok(Some(secret.clone())),
            SharedSecret::DbSecret(sm) => sm
                .get(false)
                .await
                .map(|s| s.jwt_secret)
                .map_err(|e| ApiError::Unavailable(format!("Database unavailable: {e}"))),
            SharedSecret::None => Ok(None),
        }
    }
}

pub struct Authenticator {
    mode: AuthMode,
    allow_anonymous_buyers: bool,
    /// `ADMIN_ROLE_CLAIM`, as a path of member names.
    admin_claim: Vec<String>,
    /// `JWT_AUDIENCE`.
    audience: String,
    shared_secret: SharedSecret,
    jwks: Option<(Jwks, String)>,
}

impl Authenticator {
    /// Builds the verifiers; fetches nothing.
    pub fn new(settings: &Settings, shared_secret: SharedSecret) -> Self {
        Authenticator {
            mode: settings.auth_mode,
            allow_anonymous_buyers: settings.allow_anonymous_buyers,
            admin_claim: settings.admin_role_claim.clone(),
            audience: settings.jwt_audience.clone(),
            shared_secret,
            jwks: settings.jwks.as_ref().map(|j| {
                (
                    Jwks::new(j.url.clone(), settings.jwks_min_refetch),
                    j.issuer.clone(),
                )
            }),
        }
    }

    /// The same authenticator with the key set's cache and refetch limits
    /// read from `clock` (tests move time on instead of waiting for it).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.jwks = self.jwks.map(|(j, iss)| (j.with_clock(clock), iss));
        self
    }

    /// The key set, when one is configured (tests count its fetches).
    pub fn key_set(&self) -> Option<&Jwks> {
        self.jwks.as_ref().map(|(j, _)| j)
    }

    /// Who sent an HTTP request. `gateway_claims` are the claims API
    /// Gateway's authorizer verified; when present they are used instead of a
    /// bearer token (the gateway checked its signature, issuer, audience and
    /// expiry; checking again would cost a key fetch and add nothing).
    /// Otherwise the `Authorization` bearer token is verified by the system
    /// its header names.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        gateway_claims: Option<&Map<String, Value>>,
    ) -> Result<Principal, ApiError> {
        if self.mode == AuthMode::None {
            return Ok(Principal::Admin { user_id: None });
        }
        if let Some(claims) = gateway_claims.filter(|c| !c.is_empty()) {
            return self.principal(claims);
        }
        let token = bearer(headers)?;
        let header = read_header(token)?;
        let claims = match scheme_of(&header)? {
            Scheme::SharedSecret => {
                let Some(secret) = self.shared_secret.get().await? else {
                    return Err(match self.jwks {
                        // A project on asymmetric keys only: HS256 is simply not accepted.
                        Some(_) => unauthorized("Token algorithm is not accepted"),
                        None => ApiError::Internal(
                            "no JWT secret: set JWT_SECRET, jwtSecret in the database secret, or SUPABASE_URL".into(),
                        ),
                    });
                };
                let key = DecodingKey::from_secret(secret.expose_secret().as_bytes())
                    .map_err(|_| ApiError::Internal("the JWT secret is not usable".into()))?;
                check(token, &key, validation(Algorithm::HS256, None))?
            }
            Scheme::KeySet => {
                let Some((jwks, issuer)) = &self.jwks else {
                    return Err(unauthorized("Token algorithm is not accepted"));
                };
                let kid = header
                    .kid
                    .as_deref()
                    .ok_or_else(|| unauthorized("Token has no key id"))?;
                let key = jwks.key(kid).await.map_err(|e| match e {
                    KeyError::Unavailable => ApiError::Unavailable(
                        "Authentication unavailable: could not fetch the signing keys".into(),
                    ),
                    KeyError::UnknownKid => unauthorized("Token signing key is not known"),
                })?;
                // The key decides the algorithm: an RS256 header naming an EC key is refused.
                if key.algorithm != header.alg {
                    return Err(unauthorized("Token algorithm does not match its key"));
                }
                check(token, &key.key, validation(key.algorithm, Some(issuer)))?
            }
        };
        self.principal(&claims)
    }

    /// Maps verified claims to a principal (behaviour §3 roles). A user token
    /// that names an audience must name `JWT_AUDIENCE` among them; the
    /// `service_role` key is exempt (Supabase's legacy one has no `aud`).
    /// Whether the app's roles table makes a buyer an admin is not asked
    /// here: only a job that needs an admin asks (`jobs::run`).
    pub fn principal(&self, claims: &Map<String, Value>) -> Result<Principal, ApiError> {
        let role = claims::string(claims, "role");
        let sub = claims::string(claims, "sub");
        let admin = || Principal::Admin {
            user_id: sub.and_then(|s| Uuid::parse_str(s).ok()),
        };
        if role == Some("service_role") {
            return Ok(admin());
        }
        if let Some(aud) = claims.get("aud") {
            if !claims::strings(aud).contains(&self.audience) {
                return Err(unauthorized("Token audience is not accepted"));
            }
        }
        if claims::holds(claims, &self.admin_claim, "admin") {
            return Ok(admin());
        }
        if role == Some("authenticated") {
            let user_id = sub
                .and_then(|s| Uuid::parse_str(s).ok())
                .ok_or_else(|| unauthorized("Token subject is not a user id"))?;
            if claims::boolean(claims, "is_anonymous") && !self.allow_anonymous_buyers {
                return Ok(Principal::Anonymous);
            }
            return Ok(Principal::Buyer { user_id });
        }
        Ok(Principal::NoRole)
    }
}

/// The bearer token of the `Authorization` header.
fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    let header = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| unauthorized("Missing bearer token"))?;
    header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| unauthorized("Authorization must be a bearer token"))
}

fn read_header(token: &str) -> Result<jsonwebtoken::Header, ApiError> {
    decode_header(token).map_err(|_| unauthorized("Invalid token"))
}

/// The verifier a header names: HS256 the shared secret, ES256/RS256 the key set.
fn scheme_of(header: &jsonwebtoken::Header) -> Result<Scheme, ApiError> {
    match header.alg {
        Algorithm::HS256 => Ok(Scheme::SharedSecret),
        Algorithm::ES256 | Algorithm::RS256 => Ok(Scheme::KeySet),
        _ => Err(unauthorized("Token algorithm is not accepted")),
    }
}

fn unauthorized(msg: &str) -> ApiError {
    ApiError::Unauthorized(msg.to_owned())
}

/// One algorithm; `exp` required; `nbf` honoured; `iss` for key-set tokens.
/// `aud` is checked after, with the roles ([`Authenticator::principal`]):
/// the `service_role` key carries none and is exempt.
fn validation(algorithm: Algorithm, issuer: Option<&str>) -> Validation {
    let mut v = Validation::new(algorithm);
    v.validate_exp = true;
    v.validate_nbf = true;
    v.validate_aud = false;
    v.leeway = LEEWAY_SECS;
    match issuer {
        Some(iss) => {
            v.set_required_spec_claims(&["exp", "iss"]);
            v.set_issuer(&[iss]);
        }
        None => v.set_required_spec_claims(&["exp"]),
    }
    v
}

fn check(
    token: &str,
    key: &DecodingKey,
    validation: Validation,
) -> Result<Map<String, Value>, ApiError> {
    use jsonwebtoken::errors::ErrorKind;
    decode::<Map<String, Value>>(token, key, &validation)
        .map(|data| data.claims)
        .map_err(|e| {
            unauthorized(match e.kind() {
                ErrorKind::ExpiredSignature => "Token expired",
                ErrorKind::ImmatureSignature => "Token is not valid yet",
                ErrorKind::InvalidIssuer => "Token issuer is not accepted",
                ErrorKind::MissingRequiredClaim(c) if c == "iss" => "Token issuer is not accepted",
                ErrorKind::MissingRequiredClaim(_) => "Token has no expiry",
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                    "Token algorithm is not accepted"
                }
                _ => "Invalid token",
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::HashMap;

    fn authenticator(env: &[(&str, &str)]) -> Authenticator {
        let map: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let settings = Settings::from_lookup(|k| map.get(k).cloned()).unwrap();
        Authenticator::new(&settings, SharedSecret::None)
    }

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn roles_map_to_principals() {
        let auth = authenticator(&[]);
        let user = "550e8400-e29b-41d4-a716-446655440000";
        let uid = Uuid::parse_str(user).unwrap();
        let cases = [
            (
                json!({"role": "service_role"}),
                Principal::Admin { user_id: None },
            ),
            (
                json!({"role": "authenticated", "sub": user, "app_metadata": {"role": "admin"}}),
                Principal::Admin { user_id: Some(uid) },
            ),
            (
                json!({"role": "authenticated", "sub": user}),
                Principal::Buyer { user_id: uid },
            ),
            (
                json!({"role": "authenticated", "sub": user, "is_anonymous": true}),
                Principal::Anonymous,
            ),
            (json!({"role": "anon"}), Principal::NoRole),
            (json!({}), Principal::NoRole),
        ];
        for (c, expected) in cases {
            assert_eq!(auth.principal(&claims(c.clone())).unwrap(), expected, "{c}");
        }
        let err = auth.principal(&claims(json!({"role": "authenticated", "sub": "x"})));
        assert_eq!(err.unwrap_err().status(), 401);
        // The admin claim is configurable; the default one then means nothing.
        let hooked = authenticator(&[("ADMIN_ROLE_CLAIM", "user_role")]);
        assert_eq!(
            hooked
                .principal(&claims(
                    json!({"role": "authenticated", "sub": user, "user_role": "admin"})
                ))
                .unwrap(),
            Principal::Admin { user_id: Some(uid) }
        );
        assert_eq!(
            hooked
                .principal(&claims(
                    json!({"role": "authenticated", "sub": user, "app_metadata": {"role": "admin"}})
                ))
                .unwrap(),
            Principal::Buyer { user_id: uid }
        );
        let open = authenticator(&[("ALLOW_ANONYMOUS_BUYERS", "true")]);
        assert_eq!(
            open.principal(&claims(
                json!({"role": "authenticated", "sub": user, "is_anonymous": true})
            ))
            .unwrap(),
            Principal::Buyer { user_id: uid }
        );
    }

    #[test]
    fn a_user_token_naming_an_audience_must_name_ours() {
        let user = "550e8400-e29b-41d4-a716-446655440000";
        let uid = Uuid::parse_str(user).unwrap();
        let auth = authenticator(&[]);
        let buyer = |aud: Value| claims(json!({"role": "authenticated", "sub": user, "aud": aud}));
        assert_eq!(
            auth.principal(&buyer(json!("authenticated"))).unwrap(),
            Principal::Buyer { user_id: uid }
        );
        assert_eq!(
            auth.principal(&buyer(json!(["other", "authenticated"])))
                .unwrap(),
            Principal::Buyer { user_id: uid }
        );
        assert_eq!(
            auth.principal(&buyer(json!("[other authenticated]")))
                .unwrap(),
            Principal::Buyer { user_id: uid },
            "API Gateway's rendering of a list"
        );
        for bad in [json!("other"), json!(["a", "b"]), json!(7), json!("")] {
            let err = auth.principal(&buyer(bad.clone())).unwrap_err();
            assert_eq!(err.status(), 401, "{bad}");
            assert_eq!(err.to_string(), "Token audience is not accepted");
        }
        // An admin by claim needs the audience too; the service key does not.
        let err = auth
            .principal(&claims(
                json!({"role": "authenticated", "sub": user, "aud": "x",
                                      "app_metadata": {"role": "admin"}}),
            ))
            .unwrap_err();
        assert_eq!(err.status(), 401);
        assert_eq!(
            auth.principal(&claims(json!({"role": "service_role", "aud": "x"})))
                .unwrap(),
            Principal::Admin { user_id: None }
        );
        // No `aud` at all (the anon key): nothing to check.
        assert_eq!(
            auth.principal(&claims(json!({"role": "anon"}))).unwrap(),
            Principal::NoRole
        );
        let custom = authenticator(&[("JWT_AUDIENCE", "shop")]);
        assert!(custom.principal(&buyer(json!("shop"))).is_ok());
        assert_eq!(
            custom
                .principal(&buyer(json!("authenticated")))
                .unwrap_err()
                .status(),
            401
        );
    }

    #[test]
    fn the_header_names_the_verifier() {
        use base64::Engine;
        let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let token = |alg: &str| {
            format!(
                "{}.{}.sig",
                b64(json!({"alg": alg, "typ": "JWT"})),
                b64(json!({}))
            )
        };
        let scheme = |t: &str| read_header(t).and_then(|h| scheme_of(&h));
        assert_eq!(scheme(&token("HS256")).unwrap(), Scheme::SharedSecret);
        assert_eq!(scheme(&token("ES256")).unwrap(), Scheme::KeySet);
        assert_eq!(scheme(&token("RS256")).unwrap(), Scheme::KeySet);
        for bad in ["none", "HS512", "PS256", "ES384", "EdDSA"] {
            assert_eq!(scheme(&token(bad)).unwrap_err().status(), 401, "{bad}");
        }
        assert_eq!(scheme("garbage").unwrap_err().status(), 401);
    }
}
