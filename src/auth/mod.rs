//! Who is calling (§3): credentials in, a [`Principal`] out. Which
//! principal may run which job is the jobs' decision (`jobs::authorize`).
//!
//! Direct and EventBridge invocations are trusted: IAM already decided who may
//! invoke the function. HTTP callers prove themselves with a Supabase-style
//! HS256 JWT, or with claims an API Gateway authorizer already verified.

use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::configuration::AuthMode;
use crate::error::ApiError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A direct or EventBridge invocation.
    Trusted,
    /// `role: service_role` or `app_metadata.role: admin`. `user_id` is `sub` when it is a UUID.
    Admin { user_id: Option<Uuid> },
    /// `role: authenticated`: a buyer, acting for `sub`.
    Buyer { user_id: Uuid },
    /// A valid token with no role this function knows (Supabase's `anon`, say).
    NoRole,
}

impl Principal {
    /// The user to record as `changed_by` in history rows.
    pub fn user_id(&self) -> Option<Uuid> {
        match self {
            Principal::Admin { user_id } => *user_id,
            Principal::Buyer { user_id } => Some(*user_id),
            Principal::Trusted | Principal::NoRole => None,
        }
    }
}

pub struct Authenticator {
    mode: AuthMode,
    validation: Validation,
}

/// What an HTTP request brings to prove who it is.
#[derive(Debug)]
pub enum Credentials<'a> {
    /// Settled without a signature check: `AUTH_MODE=none`, or claims an API
    /// Gateway authorizer verified.
    Settled(Principal),
    /// A bearer token still to verify.
    Bearer(&'a str),
}

impl Authenticator {
    pub fn new(mode: AuthMode) -> Self {
        // `Validation::new` pins the algorithm list to HS256: a token whose header
        // says `none`, HS512 or RS256 is refused before its signature is looked at.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp"]);
        validation.validate_exp = true;
        // Supabase tokens carry `aud: authenticated`; roles, not audiences, decide here.
        validation.validate_aud = false;
        validation.leeway = 30;
        Authenticator { mode, validation }
    }

    /// Reads the request's credentials. `gateway_claims` are the claims API
    /// Gateway's authorizer verified; when present they are used instead of a
    /// bearer token.
    pub fn credentials<'a>(
        &self,
        authorization: Option<&'a str>,
        gateway_claims: Option<&Map<String, Value>>,
    ) -> Result<Credentials<'a>, ApiError> {
        if self.mode == AuthMode::None {
            return Ok(Credentials::Settled(Principal::Admin { user_id: None }));
        }
        if let Some(claims) = gateway_claims.filter(|c| !c.is_empty()) {
            return principal_from_claims(claims).map(Credentials::Settled);
        }
        let header =
            authorization.ok_or_else(|| ApiError::Unauthorized("Missing bearer token".into()))?;
        header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(Credentials::Bearer)
            .ok_or_else(|| ApiError::Unauthorized("Authorization must be a bearer token".into()))
    }

    /// Verifies a bearer token against the project's HS256 secret.
    pub fn verify(&self, token: &str, secret: &str) -> Result<Principal, ApiError> {
        let key = DecodingKey::from_secret(secret.as_bytes())
            .map_err(|_| ApiError::Internal("the JWT secret is not usable".into()))?;
        let data = decode::<Map<String, Value>>(token, &key, &self.validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            let msg = match e.kind() {
                ErrorKind::ExpiredSignature => "Token expired",
                ErrorKind::MissingRequiredClaim(_) => "Token has no expiry",
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                    "Token algorithm must be HS256"
                }
                _ => "Invalid token",
            };
            ApiError::Unauthorized(msg.into())
        })?;
        principal_from_claims(&data.claims)
    }
}

/// Maps verified claims to a principal (behaviour §3 roles).
pub fn principal_from_claims(claims: &Map<String, Value>) -> Result<Principal, ApiError> {
    let role = claims.get("role").and_then(Value::as_str);
    let sub = claims.get("sub").and_then(Value::as_str);
    if role == Some("service_role") || app_metadata_role(claims).as_deref() == Some("admin") {
        return Ok(Principal::Admin {
            user_id: sub.and_then(|s| Uuid::parse_str(s).ok()),
        });
    }
    if role == Some("authenticated") {
        let user_id = sub
            .and_then(|s| Uuid::parse_str(s).ok())
            .ok_or_else(|| ApiError::Unauthorized("Token subject is not a user id".into()))?;
        return Ok(Principal::Buyer { user_id });
    }
    Ok(Principal::NoRole)
}

/// `app_metadata.role`. API Gateway authorizers hand nested claims over as JSON
/// text, so a string holding a JSON object is read too.
fn app_metadata_role(claims: &Map<String, Value>) -> Option<String> {
    let meta = claims.get("app_metadata")?;
    let parsed;
    let meta = match meta {
        Value::String(text) => {
            parsed = serde_json::from_str::<Value>(text).ok()?;
            &parsed
        }
        other => other,
    };
    meta.get("role")?.as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn roles_map_to_principals() {
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
                json!({"role": "authenticated", "sub": user, "app_metadata": "{\"role\":\"admin\"}"}),
                Principal::Admin { user_id: Some(uid) },
            ),
            (
                json!({"role": "authenticated", "sub": user}),
                Principal::Buyer { user_id: uid },
            ),
            (json!({"role": "anon"}), Principal::NoRole),
            (json!({}), Principal::NoRole),
        ];
        for (c, expected) in cases {
            assert_eq!(
                principal_from_claims(&claims(c.clone())).unwrap(),
                expected,
                "{c}"
            );
        }
        let err = principal_from_claims(&claims(json!({"role": "authenticated", "sub": "x"})));
        assert_eq!(err.unwrap_err().status(), 401);
    }
}
