//! Who is calling (behaviour §3), asked of the authenticator itself: headers
//! and gateway claims in, a principal or a 401 out.

use batch_processor::auth::{Authenticator, Principal, SharedSecret};
use http::HeaderMap;
use jsonwebtoken::Algorithm;
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::{app, NO_DATABASE};
use crate::helpers::*;

fn authenticator(env: &[(&str, &str)]) -> Authenticator {
    let settings = settings(NO_DATABASE, env);
    let secret = SharedSecret::from_settings(&settings, None);
    Authenticator::new(&settings, secret)
}

fn headers(authorization: Option<&str>) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Some(a) = authorization {
        h.insert(
            http::header::AUTHORIZATION,
            a.parse().expect("a header value"),
        );
    }
    h
}

fn unsigned(header: Value, claims: Value) -> String {
    use base64::Engine;
    let enc = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    format!("{}.{}.", enc(&header), enc(&claims))
}

fn uid(s: &str) -> Uuid {
    Uuid::parse_str(s).expect("a uuid")
}

#[tokio::test]
async fn bearer_tokens_are_checked_as_the_spec_says() {
    let auth = authenticator(&[]);
    let exp = now_secs() + 600;
    let admin = json!({"role": "service_role", "exp": exp});
    let ok = |p: Principal| Ok::<_, (u16, &'static str)>(p);
    let refused = |message: &'static str| Err::<Principal, _>((401, message));
    type Expected = Result<Principal, (u16, &'static str)>;
    let cases: Vec<(&str, Option<String>, Expected)> = vec![
        (
            "valid service_role",
            Some(bearer(&admin_token())),
            ok(Principal::Admin { user_id: None }),
        ),
        (
            "lower-case scheme",
            Some(format!("bearer {}", admin_token())),
            ok(Principal::Admin { user_id: None }),
        ),
        (
            "buyer",
            Some(bearer(&buyer_token())),
            ok(Principal::Buyer {
                user_id: uid(BUYER_SUB),
            }),
        ),
        (
            "app_metadata admin",
            Some(bearer(&token(
                json!({"role": "authenticated", "sub": ADMIN_SUB,
                       "app_metadata": {"role": "admin"}, "exp": exp}),
            ))),
            ok(Principal::Admin {
                user_id: Some(uid(ADMIN_SUB)),
            }),
        ),
        (
            "anon",
            Some(bearer(&token(json!({"role": "anon", "exp": exp})))),
            ok(Principal::NoRole),
        ),
        ("missing", None, refused("Missing bearer token")),
        (
            "not bearer",
            Some(format!("Basic {}", admin_token())),
            refused("Authorization must be a bearer token"),
        ),
        (
            "empty bearer",
            Some("Bearer ".into()),
            refused("Authorization must be a bearer token"),
        ),
        ("garbage", Some(bearer("a.b.c")), refused("Invalid token")),
        (
            "expired",
            Some(bearer(&token(
                json!({"role": "service_role", "exp": now_secs() - 3600}),
            ))),
            refused("Token expired"),
        ),
        (
            "no exp",
            Some(bearer(&token(json!({"role": "service_role"})))),
            refused("Token has no expiry"),
        ),
        (
            "not yet valid",
            Some(bearer(&token(
                json!({"role": "service_role", "exp": exp, "nbf": now_secs() + 3600}),
            ))),
            refused("Token is not valid yet"),
        ),
        (
            "wrong secret",
            Some(bearer(&token_with(
                admin.clone(),
                "another-secret-of-enough-length!!",
                Algorithm::HS256,
            ))),
            refused("Invalid token"),
        ),
        (
            "HS512",
            Some(bearer(&token_with(
                admin.clone(),
                JWT_SECRET,
                Algorithm::HS512,
            ))),
            refused("Token algorithm is not accepted"),
        ),
        (
            "alg none",
            Some(bearer(&unsigned(
                json!({"alg": "none", "typ": "JWT"}),
                admin.clone(),
            ))),
            refused("Invalid token"),
        ),
        (
            "a buyer whose subject is no user id",
            Some(bearer(&token(
                json!({"role": "authenticated", "sub": "x", "exp": exp}),
            ))),
            refused("Token subject is not a user id"),
        ),
        (
            "ES256 with no key set configured",
            Some(bearer(&unsigned(
                json!({"alg": "ES256", "typ": "JWT", "kid": "k"}),
                admin.clone(),
            ))),
            refused("Token algorithm is not accepted"),
        ),
    ];
    for (name, authorization, expected) in cases {
        let got = auth
            .authenticate(&headers(authorization.as_deref()), None)
            .await
            .map_err(|e| (e.status(), e.to_string()));
        let got = got.as_ref().map_err(|(s, m)| (*s, m.as_str()));
        assert_eq!(got, expected.as_ref().map_err(|e| *e), "{name}");
    }
}

/// Without `JWT_SECRET` (and no database secret, no key set) an HS256 token
/// cannot be checked: that is the operator's mistake, a 500, not the caller's.
#[tokio::test]
async fn hs256_without_any_secret_is_a_500() {
    let auth = authenticator(&[("JWT_SECRET", "")]);
    let err = auth
        .authenticate(&headers(Some(&bearer(&admin_token()))), None)
        .await
        .unwrap_err();
    assert_eq!(err.status(), 500);
}

/// Claims an API Gateway authorizer verified are used instead of a bearer
/// token, from both payload versions (how each rendering of a claim is read
/// is `auth::claims`' own test).
#[tokio::test]
async fn gateway_authorizer_claims_are_honoured() {
    let auth = authenticator(&[]);
    let claims = |v: Value| -> Map<String, Value> { v.as_object().cloned().unwrap_or_default() };
    let admin = claims(json!({"sub": ADMIN_SUB, "role": "service_role"}));
    assert_eq!(
        auth.authenticate(&headers(None), Some(&admin))
            .await
            .unwrap(),
        Principal::Admin {
            user_id: Some(uid(ADMIN_SUB))
        },
        "no bearer token needed"
    );
    // Empty claims are no claims: the bearer token decides.
    assert_eq!(
        auth.authenticate(&headers(None), Some(&Map::new()))
            .await
            .unwrap_err()
            .to_string(),
        "Missing bearer token"
    );

    // Through the event adapter: an HTTP API authorizer's claims (strings)
    // and a REST API authorizer's (an object) reach the authenticator. A buyer
    // is refused orchestrate (403); an admin gets through to the database
    // (503 here: there is none).
    let app = app(&[]);
    let body = json!({"jobType": "orchestrate", "data": {"dryRun": true}}).to_string();
    let inv = batch_processor::Invocation::new("r", None);
    let mut v2 = aws_sample("example-apigw-v2-request-jwt-authorizer.json");
    v2["requestContext"]["http"]["method"] = json!("POST");
    v2["body"] = json!(body);
    for (claims, status) in [
        (json!({"sub": BUYER_SUB, "role": "authenticated"}), 403),
        (json!({"sub": ADMIN_SUB, "role": "service_role"}), 503),
    ] {
        v2["requestContext"]["authorizer"]["jwt"]["claims"] = claims.clone();
        let resp = app.handle(v2.clone(), &inv).await.unwrap();
        assert_eq!(proxy(&resp).0, status, "{claims}");
    }
    let mut v1 = http_v1("POST", Some(&body), &[]);
    v1["requestContext"]["authorizer"] = json!({"claims": {"sub": ADMIN_SUB, "role": "authenticated",
                                                           "app_metadata": {"role": "admin"}}});
    assert_eq!(proxy(&app.handle(v1, &inv).await.unwrap()).0, 503);
}

/// `ADMIN_ROLE_CLAIM` (Supabase's role hook adds a top-level `user_role`):
/// `admin`, or a list holding it, in every form API Gateway hands a claim
/// over — JSON, JSON text, `[a b]`, `map[…]`. An admin gets through to the
/// database (503 here: there is none); anyone else is refused (403).
#[tokio::test]
async fn the_admin_claim_in_every_rendering_api_gateway_sends() {
    let inv = batch_processor::Invocation::new("r", None);
    let body = json!({"jobType": "orchestrate", "data": {"dryRun": true}}).to_string();
    let mut v2 = aws_sample("example-apigw-v2-request-jwt-authorizer.json");
    v2["requestContext"]["http"]["method"] = json!("POST");
    v2["body"] = json!(body);
    let user = |claims: Value| {
        let mut c = json!({"sub": BUYER_SUB, "role": "authenticated", "aud": "authenticated"});
        for (k, v) in claims.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    let hook = app(&[("ADMIN_ROLE_CLAIM", "user_role")]);
    let nested = app(&[("ADMIN_ROLE_CLAIM", "app_metadata.roles")]);
    let cases = [
        (&hook, json!({"user_role": "admin"}), 503),
        (&hook, json!({"user_role": "[\"member\",\"admin\"]"}), 503),
        (&hook, json!({"user_role": "[member admin]"}), 503),
        (&hook, json!({"user_role": "member"}), 403),
        (&hook, json!({"user_role": "[member]"}), 403),
        (&hook, json!({"app_metadata": "{\"role\":\"admin\"}"}), 403),
        (
            &nested,
            json!({"app_metadata": "{\"roles\":[\"admin\"]}"}),
            503,
        ),
        (
            &nested,
            json!({"app_metadata": "map[provider:email roles:[admin support]]"}),
            503,
        ),
        (
            &nested,
            json!({"app_metadata": "map[provider:email roles:[support]]"}),
            403,
        ),
    ];
    for (app, claims, status) in cases {
        v2["requestContext"]["authorizer"]["jwt"]["claims"] = user(claims.clone());
        let resp = app.handle(v2.clone(), &inv).await.unwrap();
        assert_eq!(proxy(&resp).0, status, "{claims}");
    }
    // A token the function verifies itself carries real JSON: a list, an object.
    let exp = now_secs() + 600;
    for (env, claims) in [
        (
            [("ADMIN_ROLE_CLAIM", "user_role")],
            json!({"user_role": ["member", "admin"]}),
        ),
        (
            [("ADMIN_ROLE_CLAIM", "app_metadata.roles")],
            json!({"app_metadata": {"provider": "email", "roles": ["admin"]}}),
        ),
    ] {
        let mut c = user(claims);
        c["exp"] = json!(exp);
        assert_eq!(
            authenticator(&env)
                .authenticate(&headers(Some(&bearer(&token(c.clone())))), None)
                .await
                .unwrap(),
            Principal::Admin {
                user_id: Some(uid(BUYER_SUB))
            },
            "{c}"
        );
    }
}

/// A user token that names an audience must name `JWT_AUDIENCE` (default
/// `authenticated`), else 401; the service key, which has none, is exempt.
#[tokio::test]
async fn user_tokens_must_name_our_audience() {
    let exp = now_secs() + 600;
    let buyer = |aud: Value| {
        bearer(&token(
            json!({"role": "authenticated", "sub": BUYER_SUB, "aud": aud, "exp": exp}),
        ))
    };
    let default = authenticator(&[]);
    let custom = authenticator(&[("JWT_AUDIENCE", "shop-api")]);
    let cases: [(&Authenticator, String, Result<Principal, &str>); 6] = [
        (
            &default,
            buyer(json!("authenticated")),
            Ok(Principal::Buyer {
                user_id: uid(BUYER_SUB),
            }),
        ),
        (
            &default,
            buyer(json!(["authenticated", "other"])),
            Ok(Principal::Buyer {
                user_id: uid(BUYER_SUB),
            }),
        ),
        (
            &default,
            buyer(json!("other")),
            Err("Token audience is not accepted"),
        ),
        (
            &custom,
            buyer(json!("authenticated")),
            Err("Token audience is not accepted"),
        ),
        (
            &custom,
            buyer(json!("shop-api")),
            Ok(Principal::Buyer {
                user_id: uid(BUYER_SUB),
            }),
        ),
        (
            &custom,
            bearer(&admin_token()),
            Ok(Principal::Admin { user_id: None }),
        ),
    ];
    for (auth, authorization, expected) in cases {
        let got = auth
            .authenticate(&headers(Some(&authorization)), None)
            .await
            .map_err(|e| {
                assert_eq!(e.status(), 401);
                e.to_string()
            });
        assert_eq!(got, expected.map_err(str::to_owned));
    }
}

#[tokio::test]
async fn auth_mode_none_makes_every_local_caller_an_admin() {
    let auth = authenticator(&[("AUTH_MODE", "none")]);
    assert_eq!(
        auth.authenticate(&headers(None), None).await.unwrap(),
        Principal::Admin { user_id: None }
    );
}

#[tokio::test]
async fn anonymous_sign_ins_are_no_buyers_unless_allowed() {
    let anon = bearer(&token(
        json!({"role": "authenticated", "sub": BUYER_SUB, "is_anonymous": true,
               "exp": now_secs() + 600}),
    ));
    let closed = authenticator(&[]);
    let open = authenticator(&[("ALLOW_ANONYMOUS_BUYERS", "true")]);
    for (auth, expected) in [
        (&closed, Principal::Anonymous),
        (
            &open,
            Principal::Buyer {
                user_id: uid(BUYER_SUB),
            },
        ),
    ] {
        assert_eq!(
            auth.authenticate(&headers(Some(&anon)), None)
                .await
                .unwrap(),
            expected
        );
    }
}
