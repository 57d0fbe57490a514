//! Every event source and HTTP rule of behaviour §2 that is settled before a
//! job touches the database, on AWS's own sample events.

use base64::Engine;
use batch_processor::{App, Invocation, InvocationError};
use serde_json::{json, Value};

use super::app;
use crate::helpers::*;

async fn invoke(app: &App, event: Value) -> Result<Value, InvocationError> {
    app.handle(event, &Invocation::new("test-request-id", None))
        .await
}

#[tokio::test]
async fn http_rules_options_methods_size_and_bad_bodies() {
    let app = app(&[("CORS_ALLOW_ORIGIN", "https://shop.example.com")]);
    let auth = bearer(&admin_token());
    let origin = "https://shop.example.com";

    // OPTIONS: 204, CORS, no body, no token needed, in both payload versions.
    for event in [http_v2("OPTIONS", None, &[]), http_v1("OPTIONS", None, &[])] {
        let resp = invoke(&app, event).await.unwrap();
        assert_eq!(resp["statusCode"], 204);
        assert_cors(&resp, origin);
        assert!(
            resp.get("body").is_none() || resp["body"].is_null(),
            "{resp}"
        );
    }

    // Other methods: 405.
    for method in ["GET", "PUT", "DELETE", "PATCH"] {
        let resp = invoke(
            &app,
            http_v2(
                method,
                Some(&orchestrate_body()),
                &[("authorization", &auth)],
            ),
        )
        .await
        .unwrap();
        let (status, body) = proxy(&resp);
        assert_eq!(status, 405, "{method}");
        assert_cors(&resp, origin);
        assert_eq!(body["requestId"], "test-request-id");
    }

    // Over 64 KiB: 413, even before authentication; as text or as base64.
    let big = format!(
        "{{\"jobType\":\"orchestrate\",\"data\":{{\"pad\":\"{}\"}}}}",
        "x".repeat(64 * 1024)
    );
    let (status, _) = proxy(
        &invoke(&app, http_v2("POST", Some(&big), &[]))
            .await
            .unwrap(),
    );
    assert_eq!(status, 413);
    let mut encoded = http_v1(
        "POST",
        Some(&base64::engine::general_purpose::STANDARD.encode(&big)),
        &[],
    );
    encoded["isBase64Encoded"] = json!(true);
    assert_eq!(proxy(&invoke(&app, encoded).await.unwrap()).0, 413);

    // Bodies that are not a JSON object, or not JSON, or name no job: 400
    // with the error shape.
    let cases = [
        ("{not json", "not valid JSON"),
        ("[1,2,3]", "JSON object"),
        ("\"orchestrate\"", "JSON object"),
        ("", "not valid JSON"),
        ("{\"data\":{}}", "Invalid job type"),
        ("{\"jobType\":\"explode\"}", "Invalid job type"),
        ("{\"jobType\":42}", "Invalid job type"),
        (
            "{\"jobType\":\"orchestrate\",\"data\":{\"limit\":0}}",
            "limit must be an integer from 1 to 1000000",
        ),
    ];
    for (body, needle) in cases {
        let resp = invoke(
            &app,
            http_v2("POST", Some(body), &[("authorization", &auth)]),
        )
        .await
        .unwrap();
        let (status, err) = proxy(&resp);
        assert_eq!(status, 400, "{body}");
        assert_cors(&resp, origin);
        assert!(
            err["error"].as_str().unwrap().contains(needle),
            "{body}: {err}"
        );
        assert_eq!(err["requestId"], "test-request-id");
        assert!(err["timestamp"].as_str().unwrap().ends_with('Z'));
    }
    let mut not_base64 = http_v2("POST", Some("%%%"), &[("authorization", &auth)]);
    not_base64["isBase64Encoded"] = json!(true);
    let (status, err) = proxy(&invoke(&app, not_base64).await.unwrap());
    assert_eq!(
        (status, err["error"].as_str()),
        (400, Some("Request body is not valid base64"))
    );
}

/// The `Idempotency-Key` header means `data.idempotencyKey`; a body that
/// names another key is refused before anything runs, and an unknown job
/// is the first error named.
#[tokio::test]
async fn the_idempotency_header_must_agree_with_the_body() {
    let app = app(&[]);
    let auth = bearer(&admin_token());
    let order =
        |job: &str| json!({"jobType": job, "data": {"idempotencyKey": "from-body"}}).to_string();
    for (job, message) in [
        (
            "process-order",
            "idempotencyKey differs from the Idempotency-Key header",
        ),
        ("nope", "Invalid job type"),
    ] {
        let resp = invoke(
            &app,
            http_v2(
                "POST",
                Some(&order(job)),
                &[("authorization", &auth), ("idempotency-key", "from-header")],
            ),
        )
        .await
        .unwrap();
        let (status, err) = proxy(&resp);
        assert_eq!(
            (status, err["error"].as_str()),
            (400, Some(message)),
            "{job}"
        );
    }
}

/// An `Idempotency-Key` header the function could not use is a 400, never
/// ignored (a retry would become a second order): printable ASCII, 1 to 255
/// characters. A usable one gets through to the job (503 here: no database).
#[tokio::test]
async fn an_unusable_idempotency_header_is_a_400() {
    let app = app(&[]);
    let auth = bearer(&buyer_token());
    let order =
        json!({"jobType": "process-order", "data": order_data("t-shirts", 5, "navy-m", BUYER_SUB)})
            .to_string();
    let long = "k".repeat(256);
    let longest = "k".repeat(255);
    for (key, status) in [
        ("caf\u{e9}-order-1", 400),
        ("\u{1F600}", 400),
        (long.as_str(), 400),
        ("", 400),
        ("order 1 / retry", 503),
        ("k-128-is-the-orders-own-limit", 503),
    ] {
        let resp = invoke(
            &app,
            http_v2(
                "POST",
                Some(&order),
                &[("authorization", &auth), ("idempotency-key", key)],
            ),
        )
        .await
        .unwrap();
        let (got, body) = proxy(&resp);
        assert_eq!(got, status, "{key:?}: {body}");
        if status == 400 {
            assert_eq!(
                body["error"],
                "Idempotency-Key must be 1 to 255 printable ASCII characters"
            );
        }
    }
    // 255 is within the header's rule; process-order's own key is at most 128.
    let resp = invoke(
        &app,
        http_v2(
            "POST",
            Some(&order),
            &[("authorization", &auth), ("idempotency-key", &longest)],
        ),
    )
    .await
    .unwrap();
    let (got, body) = proxy(&resp);
    assert_eq!(got, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("idempotencyKey must be a string of 1 to 128 characters"),
        "{body}"
    );
}

/// Who may run what is settled before the database is asked anything.
#[tokio::test]
async fn roles_are_refused_before_any_work() {
    let app = app(&[]);
    let buyer = bearer(&buyer_token());
    let admin = bearer(&admin_token());
    let anon = bearer(&token(json!({"role": "authenticated", "sub": BUYER_SUB,
                                     "is_anonymous": true, "exp": now_secs() + 600})));
    let no_role = bearer(&token(json!({"role": "anon", "exp": now_secs() + 600})));
    let review = json!({"jobType": "review-batch",
                        "data": {"batchId": uuid::Uuid::new_v4(), "decision": "approve"}});
    let order = json!({"jobType": "process-order",
                       "data": order_data("t-shirts", 5, "navy-m", BUYER_SUB)});
    let migrate = json!({"jobType": "migrate"});
    let orchestrate = json!({"jobType": "orchestrate", "data": {"dryRun": true}});
    // (caller, request, status, error)
    let cases = [
        (
            &buyer,
            &orchestrate,
            403,
            "This role may not run orchestrate",
        ),
        (&buyer, &review, 403, "This role may not run review-batch"),
        (
            &no_role,
            &orchestrate,
            403,
            "This role may not run orchestrate",
        ),
        (&no_role, &order, 403, "This role may not run process-order"),
        (&anon, &order, 403, "Anonymous users may not place orders"),
        (
            &admin,
            &migrate,
            403,
            "migrate is accepted only by direct invocation",
        ),
        (
            &buyer,
            &migrate,
            403,
            "migrate is accepted only by direct invocation",
        ),
    ];
    for (caller, request, status, message) in cases {
        let body = request.to_string();
        let resp = invoke(
            &app,
            http_v2("POST", Some(&body), &[("authorization", caller)]),
        )
        .await
        .unwrap();
        let (got, err) = proxy(&resp);
        assert_eq!(
            (got, err["error"].as_str()),
            (status, Some(message)),
            "{request}"
        );
    }
    // A buyer may order only for themself.
    let for_another = json!({"jobType": "process-order",
        "data": order_data("t-shirts", 5, "navy-m", "00000000-0000-4000-8000-0000000b0002")})
    .to_string();
    let resp = invoke(
        &app,
        http_v2("POST", Some(&for_another), &[("authorization", &buyer)]),
    )
    .await
    .unwrap();
    assert_eq!(proxy(&resp).0, 403);

    // AUTH_MODE=none lets local requests in as an admin; migrate is still refused.
    let local = super::app(&[("AUTH_MODE", "none")]);
    let resp = invoke(&local, http_v2("POST", Some(&migrate.to_string()), &[]))
        .await
        .unwrap();
    assert_eq!(proxy(&resp).0, 403);
    let resp = invoke(&local, http_v2("POST", Some(&orchestrate.to_string()), &[]))
        .await
        .unwrap();
    assert_eq!(
        proxy(&resp).0,
        503,
        "authenticated, authorized: on to the database"
    );
}

#[tokio::test]
async fn direct_invocation_errors_fail_the_invocation_with_the_json_error() {
    let app = app(&[]);
    let schedule = |detail: Value| {
        let mut e = aws_sample("example-eventbridge-schedule.json");
        e["detail"] = detail;
        e
    };
    for (event, status, needle) in [
        (json!({"data": {}}), 400, "Invalid job type"),
        (
            json!({"jobType": "launch-rockets"}),
            400,
            "Invalid job type",
        ),
        (json!([1, 2]), 400, "JSON object"),
        (json!("orchestrate"), 400, "JSON object"),
        (
            json!({"jobType": "orchestrate", "data": {"limit": -3}}),
            400,
            "limit",
        ),
        (
            json!({"jobType": "orchestrate", "data": [1]}),
            400,
            "data must be a JSON object",
        ),
        (
            schedule(json!({"jobType": "nope"})),
            400,
            "Invalid job type",
        ),
        (
            schedule(json!({"data": {"dryRun": "yes"}})),
            400,
            "dryRun must be true or false",
        ),
        (
            json!({"detail-type": "Scheduled Event", "source": "aws.events", "time": 7}),
            400,
            "Malformed EventBridge scheduled event",
        ),
    ] {
        let inv = Invocation::new("req-42", None);
        let err = app.handle(event.clone(), &inv).await.unwrap_err();
        assert_eq!(err.status, status, "{event}");
        let body = error_json(&err);
        assert!(
            body["error"].as_str().unwrap().contains(needle),
            "{event}: {body}"
        );
        assert_eq!(body["requestId"], "req-42");
        assert!(chrono::DateTime::parse_from_rfc3339(body["timestamp"].as_str().unwrap()).is_ok());
        assert_eq!(
            body.as_object().unwrap().len(),
            3,
            "exactly the documented fields"
        );
        let diag: lambda_runtime::Diagnostic = err.clone().into();
        assert_eq!(diag.error_message, err.message);
        assert_eq!(diag.error_type, "BadRequest");
    }
}

/// An event with API Gateway's keys but not its shape is still answered as
/// HTTP (a proxy 400), so API Gateway relays it instead of failing with a 502.
#[tokio::test]
async fn malformed_api_gateway_events_get_a_proxy_400() {
    let app = app(&[]);
    let mut bad_header = http_v1("POST", Some("{}"), &[]);
    bad_header["headers"] = json!({"authorization": "Bearer \u{0}\n"});
    for event in [
        json!({"requestContext": {"http": {"method": 7}}}),
        bad_header,
    ] {
        let resp = invoke(&app, event.clone()).await.expect("answered as HTTP");
        let (status, body) = proxy(&resp);
        assert_eq!(status, 400, "{event}");
        assert!(
            body["error"].as_str().unwrap().starts_with("Malformed"),
            "{body}"
        );
        assert_cors(&resp, "*");
    }
}

/// An unreachable database is a 503 whose message names the database and
/// nothing else, from every source.
#[tokio::test]
async fn an_unreachable_database_is_a_503() {
    let app = app(&[]);
    let err = invoke(&app, json!({"jobType": "orchestrate"}))
        .await
        .unwrap_err();
    assert_eq!((err.status, err.error_type), (503, "ServiceUnavailable"));
    let body = error_json(&err);
    let msg = body["error"].as_str().unwrap();
    assert_eq!(
        msg,
        "Database unavailable: could not connect to the database"
    );
    assert!(!err.message.contains("hunter2") && !err.message.contains("127.0.0.1"));

    let auth = bearer(&admin_token());
    for event in [
        http_v2(
            "POST",
            Some(&orchestrate_body()),
            &[("authorization", &auth)],
        ),
        http_v1(
            "POST",
            Some(&orchestrate_body()),
            &[("authorization", &auth)],
        ),
    ] {
        let resp = invoke(&app, event).await.unwrap();
        let (status, body) = proxy(&resp);
        assert_eq!(status, 503);
        assert_eq!(body["error"], msg);
    }
}
