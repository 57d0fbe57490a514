//! Supabase's asymmetric signing keys end to end: tokens signed with keys
//! served by a JWKS endpoint of the test's own run real jobs over HTTP. How
//! each token is judged is `offline::jwks` (no database needed there).

use serde_json::{json, Value};

use crate::helpers::*;
use crate::offline::jwks::{admin_claims, buyer_claims, KeyServer, TestKey};

async fn post(t: &TestApp, token: &str, request: Value) -> (u16, Value) {
    let auth = bearer(token);
    let body = request.to_string();
    proxy(
        &t.invoke(http_v2("POST", Some(&body), &[("authorization", &auth)]))
            .await
            .unwrap(),
    )
}

#[tokio::test]
async fn buyers_and_admins_signed_with_the_project_keys_run_their_jobs() {
    let ec = TestKey::ec("ec-1");
    let rsa = TestKey::rsa("rsa-1");
    let server = KeyServer::start(vec![ec.jwk(), rsa.jwk()]).await;
    let url = server.url();
    let t = TestApp::spawn_with(&[("SUPABASE_URL", url.as_str()), ("JWT_SECRET", "")]).await;
    t.terms("active", 500, 4, "10.00", None, 14).await;
    let iss = server.issuer();
    let order = json!({"jobType": "process-order", "data": {"productCategory": "t-shirts",
        "productVariantBase": "crew-neck", "quantity": 5, "styleDetails": {"variant": "navy-m"}}});
    for key in [&ec, &rsa] {
        let (status, body) = post(&t, &key.sign(&buyer_claims(&iss)), order.clone()).await;
        assert_eq!(status, 200, "{} buyer order: {body}", key.alg());
        let (status, body) = post(
            &t,
            &key.sign(&admin_claims(&iss)),
            json!({"jobType": "orchestrate", "data": {"dryRun": true}}),
        )
        .await;
        assert_eq!(status, 200, "{} admin: {body}", key.alg());
    }
    let buyers: i64 = t
        .count(&format!(
            "SELECT count(*) FROM orders WHERE buyer_id = '{BUYER_SUB}'"
        ))
        .await;
    assert_eq!(buyers, 2, "the buyer id is the token's subject");
    assert_eq!(server.hits(), 1, "one fetch serves every later token");
}
