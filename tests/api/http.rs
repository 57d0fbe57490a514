//! Every event source of behaviour §2 running real jobs, on AWS's own sample
//! events. The rules settled before a job runs (OPTIONS, 405, 413, bad
//! bodies, malformed events, roles) are `offline::events`.

use base64::Engine;
use serde_json::json;

use crate::helpers::*;

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

/// An admin's review-batch over HTTP reaches the job (which finds no such batch).
#[tokio::test]
async fn an_admin_reaches_review_batch_over_http() {
    let t = TestApp::spawn().await;
    let review = json!({"jobType": "review-batch",
                        "data": {"batchId": uuid::Uuid::new_v4(), "decision": "approve"}})
    .to_string();
    let admin = bearer(&admin_token());
    let (status, body) = proxy(
        &t.invoke(http_v2("POST", Some(&review), &[("authorization", &admin)]))
            .await
            .unwrap(),
    );
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"].as_str().unwrap().starts_with("Batch "),
        "{body}"
    );
}
