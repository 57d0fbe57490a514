use jsonwebtoken::Algorithm;
use serde_json::{json, Value};

use crate::helpers::*;

fn orchestrate_body() -> String {
    json!({"jobType": "orchestrate", "data": {"dryRun": true}}).to_string()
}

async fn post_with(t: &TestApp, auth: Option<String>) -> (u16, Value) {
    let headers: Vec<(&str, &str)> = match &auth {
        Some(a) => vec![("authorization", a.as_str())],
        None => vec![],
    };
    let body = orchestrate_body();
    proxy(
        &t.invoke(http_v2("POST", Some(&body), &headers))
            .await
            .unwrap(),
    )
}

fn unsigned(header: Value, claims: Value) -> String {
    use base64::Engine;
    let enc = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    format!("{}.{}.", enc(&header), enc(&claims))
}

#[tokio::test]
async fn bearer_tokens_are_checked_as_the_spec_says() {
    let t = TestApp::spawn().await;
    let exp = now_secs() + 600;
    let admin = json!({"role": "service_role", "exp": exp});
    let cases: Vec<(&str, Option<String>, u16)> = vec![
        ("valid service_role", Some(bearer(&admin_token())), 200),
        ("missing", None, 401),
        ("not bearer", Some(format!("Basic {}", admin_token())), 401),
        ("empty bearer", Some("Bearer ".into()), 401),
        ("garbage", Some(bearer("a.b.c")), 401),
        (
            "expired",
            Some(bearer(&token(
                json!({"role": "service_role", "exp": now_secs() - 3600}),
            ))),
            401,
        ),
        (
            "no exp",
            Some(bearer(&token(json!({"role": "service_role"})))),
            401,
        ),
        (
            "wrong secret",
            Some(bearer(&token_with(
                admin.clone(),
                "another-secret-of-enough-length!!",
                Algorithm::HS256,
            ))),
            401,
        ),
        (
            "HS512",
            Some(bearer(&token_with(
                admin.clone(),
                JWT_SECRET,
                Algorithm::HS512,
            ))),
            401,
        ),
        (
            "alg none",
            Some(bearer(&unsigned(
                json!({"alg": "none", "typ": "JWT"}),
                admin.clone(),
            ))),
            401,
        ),
        ("buyer runs orchestrate", Some(bearer(&buyer_token())), 403),
        (
            "anon",
            Some(bearer(&token(json!({"role": "anon", "exp": exp})))),
            403,
        ),
        (
            "app_metadata admin",
            Some(bearer(&token(
                json!({"role": "authenticated", "sub": ADMIN_SUB,
                                       "app_metadata": {"role": "admin"}, "exp": exp}),
            ))),
            200,
        ),
    ];
    for (name, auth, expected) in cases {
        let (status, body) = post_with(&t, auth).await;
        assert_eq!(status, expected, "{name}: {body}");
        if expected != 200 {
            assert_eq!(body["requestId"], "test-request-id", "{name}");
            assert!(body["error"].is_string(), "{name}");
        }
    }
}

#[tokio::test]
async fn review_batch_is_admin_only_and_migrate_never_over_http() {
    let t = TestApp::spawn().await;
    let review = json!({"jobType": "review-batch",
                        "data": {"batchId": uuid::Uuid::new_v4(), "decision": "approve"}})
    .to_string();
    let buyer = bearer(&buyer_token());
    let (status, _) = proxy(
        &t.invoke(http_v2("POST", Some(&review), &[("authorization", &buyer)]))
            .await
            .unwrap(),
    );
    assert_eq!(status, 403);
    let admin = bearer(&admin_token());
    let (status, _) = proxy(
        &t.invoke(http_v2("POST", Some(&review), &[("authorization", &admin)]))
            .await
            .unwrap(),
    );
    assert_eq!(status, 404, "admin gets through to the job");

    let migrate = json!({"jobType": "migrate"}).to_string();
    for auth in [&admin, &buyer] {
        let (status, body) = proxy(
            &t.invoke(http_v2("POST", Some(&migrate), &[("authorization", auth)]))
                .await
                .unwrap(),
        );
        assert_eq!(status, 403, "{body}");
    }
}

/// Claims an API Gateway authorizer verified are used instead of a bearer token.
#[tokio::test]
async fn gateway_authorizer_claims_are_honoured() {
    let t = TestApp::spawn().await;
    let body = orchestrate_body();

    let mut v2 = aws_sample("example-apigw-v2-request-jwt-authorizer.json");
    v2["requestContext"]["http"]["method"] = json!("POST");
    v2["body"] = json!(body);
    v2["requestContext"]["authorizer"]["jwt"]["claims"] =
        json!({"sub": ADMIN_SUB, "role": "service_role"});
    let (status, resp) = proxy(&t.invoke(v2.clone()).await.unwrap());
    assert_eq!(status, 200, "{resp}");

    v2["requestContext"]["authorizer"]["jwt"]["claims"] =
        json!({"sub": BUYER_SUB, "role": "authenticated"});
    let (status, _) = proxy(&t.invoke(v2).await.unwrap());
    assert_eq!(status, 403, "a buyer may not orchestrate");

    let mut v1 = http_v1("POST", Some(&body), &[]);
    v1["requestContext"]["authorizer"] = json!({"claims": {"sub": ADMIN_SUB, "role": "authenticated",
                                                           "app_metadata": "{\"role\":\"admin\"}"}});
    let (status, resp) = proxy(&t.invoke(v1).await.unwrap());
    assert_eq!(status, 200, "{resp}");
}

#[tokio::test]
async fn auth_mode_none_lets_local_requests_in() {
    let t = TestApp::spawn_with(&[("AUTH_MODE", "none")]).await;
    let (status, body) = post_with(&t, None).await;
    assert_eq!(status, 200, "{body}");
    // Migrate is still refused over HTTP.
    let migrate = json!({"jobType": "migrate"}).to_string();
    let (status, _) = proxy(
        &t.invoke(http_v2("POST", Some(&migrate), &[]))
            .await
            .unwrap(),
    );
    assert_eq!(status, 403);
}
