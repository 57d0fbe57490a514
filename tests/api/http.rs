//! Every event source and HTTP rule of behaviour §2, on AWS's own sample events.

use base64::Engine;
use serde_json::{json, Value};

use crate::helpers::*;

fn assert_cors(resp: &Value, origin: &str) {
    let h = &resp["headers"];
    assert_eq!(h["content-type"], "application/json", "{resp}");
    assert_eq!(h["access-control-allow-origin"], origin);
    assert_eq!(
        h["access-control-allow-headers"],
        "authorization, x-client-info, apikey, content-type, idempotency-key"
    );
    assert_eq!(h["access-control-allow-methods"], "POST, OPTIONS");
}

fn orchestrate_body() -> String {
    json!({"jobType": "orchestrate", "data": {}}).to_string()
}

#[tokio::test]
async fn http_api_v2_post_runs_the_job() {
    let t = TestApp::spawn().await;
    let batch = t.batch(180, 200, -60.0).await;
    let auth = bearer(&admin_token());
    let resp = t
        .invoke(http_v2(
            "POST",
            Some(&orchestrate_body()),
            &[("Authorization", &auth)],
        ))
        .await
        .unwrap();
    let (status, body) = proxy(&resp);
    assert_eq!(status, 200, "{body}");
    assert_cors(&resp, "*");
    assert_eq!(body["success"], true);
    assert_eq!(by_batch(&body)[&batch]["action"], "confirmed");
    assert_eq!(resp["isBase64Encoded"], false);
}

#[tokio::test]
async fn rest_api_v1_post_runs_the_job_and_answers_in_v1_shape() {
    let t = TestApp::spawn().await;
    let auth = bearer(&admin_token());
    let resp = t
        .invoke(http_v1(
            "POST",
            Some(&orchestrate_body()),
            &[("Authorization", &auth)],
        ))
        .await
        .unwrap();
    let (status, body) = proxy(&resp);
    assert_eq!(status, 200, "{body}");
    assert_cors(&resp, "*");
    assert!(
        resp.get("cookies").is_none(),
        "1.0 responses have no cookies field"
    );
    assert_eq!(body["processed"], 0);

    // `sam local` sends its own variant of the same payload.
    let mut sam = aws_sample("example-apigw-sam-rest-request.json");
    sam["httpMethod"] = json!("POST");
    sam["headers"] = json!({"authorization": auth});
    sam["multiValueHeaders"] = json!({});
    sam["body"] = json!(orchestrate_body());
    let (status, body) = proxy(&t.invoke(sam).await.unwrap());
    assert_eq!(status, 200, "{body}");

    let mut sam_http = aws_sample("example-apigw-sam-http-request.json");
    sam_http["requestContext"]["http"]["method"] = json!("POST");
    sam_http["headers"] = json!({"authorization": auth});
    sam_http["body"] = json!(orchestrate_body());
    sam_http["isBase64Encoded"] = json!(false);
    let (status, body) = proxy(&t.invoke(sam_http).await.unwrap());
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn base64_bodies_are_accepted() {
    let t = TestApp::spawn().await;
    let auth = bearer(&admin_token());
    let encoded = base64::engine::general_purpose::STANDARD.encode(orchestrate_body());
    for mut event in [
        http_v2("POST", Some(&encoded), &[("authorization", &auth)]),
        http_v1("POST", Some(&encoded), &[("authorization", &auth)]),
    ] {
        event["isBase64Encoded"] = json!(true);
        let (status, body) = proxy(&t.invoke(event).await.unwrap());
        assert_eq!(status, 200, "{body}");
    }
}

#[tokio::test]
async fn http_rules_options_methods_size_and_bad_bodies() {
    let t = TestApp::spawn_with(&[("CORS_ALLOW_ORIGIN", "https://shop.example.com")]).await;
    let auth = bearer(&admin_token());
    let origin = "https://shop.example.com";

    // OPTIONS: 204, CORS, no body, no token needed.
    for event in [http_v2("OPTIONS", None, &[]), http_v1("OPTIONS", None, &[])] {
        let resp = t.invoke(event).await.unwrap();
        assert_eq!(resp["statusCode"], 204);
        assert_cors(&resp, origin);
        assert!(
            resp.get("body").is_none() || resp["body"].is_null(),
            "{resp}"
        );
    }

    // Other methods: 405.
    for method in ["GET", "PUT", "DELETE", "PATCH"] {
        let resp = t
            .invoke(http_v2(
                method,
                Some(&orchestrate_body()),
                &[("authorization", &auth)],
            ))
            .await
            .unwrap();
        let (status, body) = proxy(&resp);
        assert_eq!(status, 405, "{method}");
        assert_cors(&resp, origin);
        assert_eq!(body["requestId"], "test-request-id");
    }

    // Over 64 KiB: 413, even before authentication.
    let big = format!(
        "{{\"jobType\":\"orchestrate\",\"data\":{{\"pad\":\"{}\"}}}}",
        "x".repeat(64 * 1024)
    );
    let (status, _) = proxy(&t.invoke(http_v2("POST", Some(&big), &[])).await.unwrap());
    assert_eq!(status, 413);

    // Bodies that are not a JSON object, or not JSON: 400 with the error shape.
    let cases = [
        ("{not json", "not valid JSON"),
        ("[1,2,3]", "JSON object"),
        ("\"orchestrate\"", "JSON object"),
        ("", "not valid JSON"),
        ("{\"data\":{}}", "Invalid job type"),
        ("{\"jobType\":\"explode\"}", "Invalid job type"),
        ("{\"jobType\":42}", "Invalid job type"),
    ];
    for (body, needle) in cases {
        let resp = t
            .invoke(http_v2("POST", Some(body), &[("authorization", &auth)]))
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
}

#[tokio::test]
async fn scheduled_events_run_orchestrate_and_detail_can_override() {
    let t = TestApp::spawn().await;
    let batch = t.batch(20, 200, -60.0).await;
    let mut event = aws_sample("example-eventbridge-schedule.json");
    event["detail"] = json!({"data": {"dryRun": true}});
    let resp = t.invoke(event.clone()).await.unwrap();
    assert_eq!(resp["dryRun"], true);
    assert_eq!(by_batch(&resp)[&batch]["action"], "cancelled");
    assert_eq!(t.status_of(batch).await, "filling");

    event["detail"] = json!({});
    let resp = t.invoke(event.clone()).await.unwrap();
    assert_eq!(resp["processed"], 1);
    assert_eq!(t.status_of(batch).await, "cancelled");

    // `detail` naming another job runs that job, trusted like a direct call.
    event["detail"] = json!({"jobType": "migrate"});
    let resp = t.invoke(event.clone()).await.unwrap();
    assert_eq!(resp["success"], true);
    assert_eq!(resp["applied"], json!([]));

    event["detail"] = json!({"jobType": "nope"});
    let err = t.invoke(event).await.unwrap_err();
    assert_eq!(err.status, 400);
}

#[tokio::test]
async fn direct_invocation_errors_fail_the_invocation_with_the_json_error() {
    let t = TestApp::spawn().await;
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
    ] {
        let inv = batch_processor::Invocation::new("req-42", None);
        let err = t.invoke_with(event.clone(), &inv).await.unwrap_err();
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
    }
}

/// An event with API Gateway's keys but not its shape is still answered as
/// HTTP (a proxy 400), so API Gateway relays it instead of failing with a 502.
#[tokio::test]
async fn malformed_api_gateway_events_get_a_proxy_400() {
    let t = TestApp::spawn().await;
    let mut bad_header = http_v1("POST", Some("{}"), &[]);
    bad_header["headers"] = json!({"authorization": "Bearer \u{0}\n"});
    for event in [
        json!({"requestContext": {"http": {"method": 7}}}),
        bad_header,
    ] {
        let resp = t.invoke(event.clone()).await.expect("answered as HTTP");
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
/// nothing else; it comes in seconds, not at the Lambda timeout.
#[tokio::test]
async fn an_unreachable_database_is_a_503() {
    // Port 1 on loopback: nothing listens, the connection is refused at once.
    let settings = settings(
        "postgres://batch_processor:hunter2@127.0.0.1:1/nowhere",
        &[],
    );
    let app = batch_processor::App::new(settings).unwrap();
    let started = std::time::Instant::now();
    let err = app
        .handle(
            json!({"jobType": "orchestrate"}),
            &batch_processor::Invocation::new("r", None),
        )
        .await
        .unwrap_err();
    assert_eq!(err.status, 503);
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    let body = error_json(&err);
    let msg = body["error"].as_str().unwrap();
    assert!(msg.to_lowercase().contains("database"), "{msg}");
    assert!(
        !msg.contains("hunter2") && !msg.contains("127.0.0.1"),
        "{msg}"
    );

    let auth = bearer(&admin_token());
    let resp = app
        .handle(
            http_v2(
                "POST",
                Some(&orchestrate_body()),
                &[("authorization", &auth)],
            ),
            &batch_processor::Invocation::new("r", None),
        )
        .await
        .unwrap();
    assert_eq!(proxy(&resp).0, 503);
}
