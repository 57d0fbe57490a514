//! Supabase's asymmetric signing keys, against a real JWKS endpoint: a small
//! HTTP server of the test's own on a loopback port, serving keys the test
//! generated (EC P-256 and RSA 2048, with aws-lc-rs), and tokens the test
//! signed itself — independently of the verifier's JWT library.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING, RSA_PKCS1_SHA256,
};
use base64::Engine;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::helpers::*;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

enum Pair {
    Ec(EcdsaKeyPair),
    Rsa(aws_lc_rs::rsa::KeyPair),
}

/// A signing key of the test's, with the `kid` it is published under.
struct TestKey {
    kid: String,
    pair: Pair,
}

impl TestKey {
    fn ec(kid: &str) -> Self {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("EC key");
        TestKey {
            kid: kid.into(),
            pair: Pair::Ec(pair),
        }
    }

    fn rsa(kid: &str) -> Self {
        let pair = aws_lc_rs::rsa::KeyPair::generate(KeySize::Rsa2048).expect("RSA key");
        TestKey {
            kid: kid.into(),
            pair: Pair::Rsa(pair),
        }
    }

    fn alg(&self) -> &'static str {
        match self.pair {
            Pair::Ec(_) => "ES256",
            Pair::Rsa(_) => "RS256",
        }
    }

    /// The public key as a JWK, as Supabase publishes it.
    fn jwk(&self) -> Value {
        match &self.pair {
            Pair::Ec(p) => {
                // Uncompressed point: 0x04 || x || y.
                let point = p.public_key().as_ref();
                json!({"kty": "EC", "crv": "P-256", "kid": self.kid, "use": "sig", "alg": "ES256",
                       "key_ops": ["verify"], "ext": true,
                       "x": b64(&point[1..33]), "y": b64(&point[33..65])})
            }
            Pair::Rsa(p) => {
                let public = p.public_key();
                json!({"kty": "RSA", "kid": self.kid, "use": "sig", "alg": "RS256",
                       "n": b64(public.modulus().big_endian_without_leading_zero()),
                       "e": b64(public.exponent().big_endian_without_leading_zero())})
            }
        }
    }

    /// A compact JWS over `claims` with `header`, signed by this key.
    fn sign_with_header(&self, header: Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let rng = SystemRandom::new();
        let sig = match &self.pair {
            Pair::Ec(p) => p
                .sign(&rng, input.as_bytes())
                .expect("sign")
                .as_ref()
                .to_vec(),
            Pair::Rsa(p) => {
                let mut sig = vec![0; p.public_modulus_len()];
                p.sign(&RSA_PKCS1_SHA256, &rng, input.as_bytes(), &mut sig)
                    .expect("sign");
                sig
            }
        };
        format!("{input}.{}", b64(&sig))
    }

    fn sign(&self, claims: &Value) -> String {
        self.sign_with_header(
            json!({"alg": self.alg(), "typ": "JWT", "kid": self.kid}),
            claims,
        )
    }
}

/// The JWKS endpoint: serves the current key set, can go down (connections
/// are closed unanswered), and counts the requests it gets.
#[derive(Clone)]
struct KeyServer {
    port: u16,
    keys: Arc<Mutex<Vec<Value>>>,
    up: Arc<std::sync::atomic::AtomicBool>,
    hits: Arc<AtomicU64>,
}

impl KeyServer {
    async fn start(keys: Vec<Value>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let server = KeyServer {
            port: listener.local_addr().expect("addr").port(),
            keys: Arc::new(Mutex::new(keys)),
            up: Arc::new(true.into()),
            hits: Arc::new(AtomicU64::new(0)),
        };
        let s = server.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let s = s.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    s.hits.fetch_add(1, Ordering::SeqCst);
                    if !s.up.load(Ordering::SeqCst) {
                        return; // closed unanswered
                    }
                    let path_ok = buf.starts_with(b"GET /auth/v1/.well-known/jwks.json ");
                    let body = json!({"keys": *s.keys.lock().unwrap()}).to_string();
                    let head = if path_ok { "200 OK" } else { "404 Not Found" };
                    let response = format!(
                        "HTTP/1.1 {head}\r\nContent-Type: application/json\r\nCache-Control: public, max-age=600\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = conn.write_all(response.as_bytes()).await;
                    let _ = conn.shutdown().await;
                });
            }
        });
        server
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn issuer(&self) -> String {
        format!("{}/auth/v1", self.url())
    }

    fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }

    fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
    }

    fn publish(&self, key: Value) {
        self.keys.lock().unwrap().push(key);
    }
}

async fn app_for(server: &KeyServer, extra: &[(&str, &str)]) -> TestApp {
    let url = server.url();
    let mut env = vec![("SUPABASE_URL", url.as_str())];
    env.extend_from_slice(extra);
    TestApp::spawn_with(&env).await
}

fn admin_claims(iss: &str) -> Value {
    json!({"role": "service_role", "iss": iss, "exp": now_secs() + 600})
}

fn buyer_claims(iss: &str) -> Value {
    json!({"role": "authenticated", "sub": BUYER_SUB, "aud": "authenticated", "iss": iss,
           "exp": now_secs() + 600, "app_metadata": {"provider": "email"}})
}

/// POSTs a dry-run orchestrate (admin only) with `token`.
async fn orchestrate_as(t: &TestApp, token: &str) -> (u16, Value) {
    let body = json!({"jobType": "orchestrate", "data": {"dryRun": true}}).to_string();
    let auth = bearer(token);
    proxy(
        &t.invoke(http_v2("POST", Some(&body), &[("authorization", &auth)]))
            .await
            .unwrap(),
    )
}

/// POSTs a process-order for the caller (no `buyerId`).
async fn order_as(t: &TestApp, token: &str) -> (u16, Value) {
    let body = json!({"jobType": "process-order", "data": {"productCategory": "t-shirts",
        "productVariantBase": "crew-neck", "quantity": 5, "styleDetails": {"variant": "navy-m"}}})
    .to_string();
    let auth = bearer(token);
    proxy(
        &t.invoke(http_v2("POST", Some(&body), &[("authorization", &auth)]))
            .await
            .unwrap(),
    )
}

async fn with_supplier(t: &TestApp) {
    t.terms("active", 500, 4, "10.00", None, 14).await;
}

#[tokio::test]
async fn es256_and_rs256_tokens_of_admins_and_buyers_are_accepted() {
    let ec = TestKey::ec("ec-1");
    let rsa = TestKey::rsa("rsa-1");
    let server = KeyServer::start(vec![ec.jwk(), rsa.jwk()]).await;
    let t = app_for(&server, &[("JWT_SECRET", "")]).await;
    with_supplier(&t).await;
    let iss = server.issuer();
    for key in [&ec, &rsa] {
        let (s, _) = orchestrate_as(&t, &key.sign(&admin_claims(&iss))).await;
        assert_eq!(s, 200, "{} service_role", key.alg());
        let mut admin_user = buyer_claims(&iss);
        admin_user["app_metadata"] = json!({"role": "admin", "provider": "email"});
        assert_eq!(
            orchestrate_as(&t, &key.sign(&admin_user)).await.0,
            200,
            "{} app_metadata admin",
            key.alg()
        );
        let buyer = key.sign(&buyer_claims(&iss));
        let (s, body) = order_as(&t, &buyer).await;
        assert_eq!(s, 200, "{} buyer order: {body}", key.alg());
        assert_eq!(
            orchestrate_as(&t, &buyer).await.0,
            403,
            "a buyer is no admin"
        );
    }
    assert_eq!(server.hits(), 1, "one fetch serves every later token");
    let buyers: i64 = t
        .count(&format!(
            "SELECT count(*) FROM orders WHERE buyer_id = '{BUYER_SUB}'"
        ))
        .await;
    assert_eq!(buyers, 2);
}

#[tokio::test]
async fn bad_asymmetric_tokens_are_refused_with_401() {
    let ec = TestKey::ec("ec-1");
    let rsa = TestKey::rsa("rsa-1");
    let server = KeyServer::start(vec![ec.jwk(), rsa.jwk()]).await;
    let t = app_for(&server, &[]).await;
    let iss = server.issuer();
    let good = admin_claims(&iss);

    let mut wrong_iss = good.clone();
    wrong_iss["iss"] = json!("https://evil.example.com/auth/v1");
    let mut no_iss = good.clone();
    no_iss.as_object_mut().unwrap().remove("iss");
    let mut expired = good.clone();
    expired["exp"] = json!(now_secs() - 3600);
    let mut not_yet = good.clone();
    not_yet["nbf"] = json!(now_secs() + 3600);
    let mut no_exp = good.clone();
    no_exp.as_object_mut().unwrap().remove("exp");

    // A payload swapped after signing: a buyer's signature, an admin's claims.
    let signed_buyer = ec.sign(&buyer_claims(&iss));
    let parts: Vec<&str> = signed_buyer.split('.').collect();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64(good.to_string().as_bytes()),
        parts[2]
    );

    // A key that is not in the set, published under a kid that is.
    let impostor = TestKey {
        kid: "ec-1".into(),
        ..TestKey::ec("x")
    };
    // RS256 in the header, the kid of an EC key, signed with the RSA key.
    let rs_on_ec =
        rsa.sign_with_header(json!({"alg": "RS256", "typ": "JWT", "kid": "ec-1"}), &good);
    // Algorithm confusion: HS256 with the public key's bytes as the secret.
    let public_as_secret = ec.jwk().to_string();
    let confused = token_with(
        good.clone(),
        &public_as_secret,
        jsonwebtoken::Algorithm::HS256,
    );
    let none = format!(
        "{}.{}.",
        b64(json!({"alg": "none", "typ": "JWT", "kid": "ec-1"})
            .to_string()
            .as_bytes()),
        b64(good.to_string().as_bytes())
    );
    let no_kid = ec.sign_with_header(json!({"alg": "ES256", "typ": "JWT"}), &good);

    let cases: Vec<(&str, String, &str)> = vec![
        (
            "wrong iss",
            ec.sign(&wrong_iss),
            "Token issuer is not accepted",
        ),
        ("no iss", ec.sign(&no_iss), "Token issuer is not accepted"),
        ("expired", rsa.sign(&expired), "Token expired"),
        (
            "nbf in the future",
            ec.sign(&not_yet),
            "Token is not valid yet",
        ),
        ("no exp", ec.sign(&no_exp), "Token has no expiry"),
        ("tampered payload", tampered, "Invalid token"),
        ("key not in the set", impostor.sign(&good), "Invalid token"),
        (
            "RS256 header, EC key",
            rs_on_ec,
            "Token algorithm does not match its key",
        ),
        (
            "HS256 with the public key as secret",
            confused,
            "Invalid token",
        ),
        ("alg none", none, "Invalid token"),
        ("no kid", no_kid, "Token has no key id"),
    ];
    for (what, token, message) in cases {
        let (status, body) = orchestrate_as(&t, &token).await;
        assert_eq!(status, 401, "{what}: {body}");
        assert_eq!(body["error"], message, "{what}");
    }
    // A token a little past `exp` is still inside the leeway.
    let mut skewed = good.clone();
    skewed["exp"] = json!(now_secs() - 10);
    assert_eq!(
        orchestrate_as(&t, &ec.sign(&skewed)).await.0,
        200,
        "within the 30 s leeway"
    );
}

#[tokio::test]
async fn hs256_is_refused_when_only_asymmetric_keys_are_configured() {
    let ec = TestKey::ec("ec-1");
    let server = KeyServer::start(vec![ec.jwk()]).await;
    let t = app_for(&server, &[("JWT_SECRET", "")]).await;
    let (status, body) = orchestrate_as(&t, &admin_token()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("Token algorithm is not accepted"))
    );
    assert_eq!(
        orchestrate_as(&t, &ec.sign(&admin_claims(&server.issuer())))
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn legacy_hs256_and_jwks_work_side_by_side() {
    let ec = TestKey::ec("ec-1");
    let server = KeyServer::start(vec![ec.jwk()]).await;
    let t = app_for(&server, &[]).await; // JWT_SECRET is set by the helpers
    assert_eq!(
        orchestrate_as(&t, &admin_token()).await.0,
        200,
        "HS256 by the secret"
    );
    assert_eq!(server.hits(), 0, "an HS256 token never fetches the key set");
    assert_eq!(
        orchestrate_as(&t, &ec.sign(&admin_claims(&server.issuer())))
            .await
            .0,
        200,
        "ES256 by the JWKS"
    );
    // An HS256 token with a kid of the set is still only checked against the secret.
    let hs_with_kid = {
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        h.kid = Some("ec-1".into());
        jsonwebtoken::encode(
            &h,
            &admin_claims("x"),
            &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()).unwrap(),
        )
        .unwrap()
    };
    assert_eq!(orchestrate_as(&t, &hs_with_kid).await.0, 200);
}

#[tokio::test]
async fn rotation_outage_and_recovery() {
    let old = TestKey::ec("old");
    let server = KeyServer::start(vec![old.jwk()]).await;
    let t = app_for(&server, &[("JWKS_MIN_REFETCH_SECS", "1")]).await;
    let iss = server.issuer();
    assert_eq!(
        orchestrate_as(&t, &old.sign(&admin_claims(&iss))).await.0,
        200
    );
    assert_eq!(server.hits(), 1);

    // A new key appears: its first token makes one refetch and is accepted.
    let new = TestKey::rsa("new");
    server.publish(new.jwk());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        orchestrate_as(&t, &new.sign(&admin_claims(&iss))).await.0,
        200
    );
    assert_eq!(server.hits(), 2, "one refetch for the new kid");

    // The endpoint goes down: cached keys keep working, even once stale.
    server.set_up(false);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let unknown = TestKey::ec("unknown");
    assert_eq!(
        orchestrate_as(&t, &unknown.sign(&admin_claims(&iss)))
            .await
            .0,
        401,
        "unknown kid while down"
    );
    for key in [&old, &new] {
        assert_eq!(
            orchestrate_as(&t, &key.sign(&admin_claims(&iss))).await.0,
            200,
            "cached {} while down",
            key.kid
        );
    }
}

#[tokio::test]
async fn an_instance_started_while_the_endpoint_is_down_recovers() {
    let key = TestKey::ec("k");
    let server = KeyServer::start(vec![key.jwk()]).await;
    server.set_up(false);
    let t = app_for(&server, &[]).await;
    assert_eq!(server.hits(), 0, "nothing is fetched at init");
    let token = key.sign(&admin_claims(&server.issuer()));
    let (status, body) = orchestrate_as(&t, &token).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        body["error"],
        "Authentication unavailable: could not fetch the signing keys"
    );
    server.set_up(true);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        orchestrate_as(&t, &token).await.0,
        200,
        "same process, endpoint back"
    );
}

#[tokio::test]
async fn garbage_kids_cannot_make_the_function_hammer_the_endpoint() {
    let key = TestKey::ec("real");
    let server = KeyServer::start(vec![key.jwk()]).await;
    let t = app_for(&server, &[]).await;
    let iss = server.issuer();
    assert_eq!(
        orchestrate_as(&t, &key.sign(&admin_claims(&iss))).await.0,
        200
    );
    for _ in 0..200 {
        let forged = TestKey {
            kid: uuid::Uuid::new_v4().to_string(),
            ..TestKey::ec("x")
        };
        assert_eq!(
            orchestrate_as(&t, &forged.sign(&admin_claims(&iss)))
                .await
                .0,
            401
        );
    }
    assert!(
        server.hits() <= 2,
        "{} fetches for 200 unknown kids",
        server.hits()
    );
    assert_eq!(
        t.app.auth.key_set().map(|k| k.fetches()),
        Some(server.hits())
    );
}

/// An HTTP API event as API Gateway's JWT authorizer hands it over: every
/// claim a string.
fn gateway_event(claims: Value, body: &str) -> Value {
    let mut e = http_v2("POST", Some(body), &[]);
    e["requestContext"]["authorizer"] = json!({"jwt": {"claims": claims, "scopes": null}});
    e
}

#[tokio::test]
async fn gateway_claims_in_every_rendering_give_the_right_role() {
    let t = TestApp::spawn().await;
    with_supplier(&t).await;
    let orchestrate = json!({"jobType": "orchestrate", "data": {"dryRun": true}}).to_string();
    let base = json!({"sub": ADMIN_SUB, "role": "authenticated", "aud": "authenticated",
                      "exp": "1999999999", "iss": "https://project.supabase.co/auth/v1",
                      "amr": "[map[method:password timestamp:1700000000]]", "is_anonymous": "false"});
    for (rendering, meta) in [
        (
            "JSON text",
            json!("{\"provider\":\"email\",\"providers\":[\"email\"],\"role\":\"admin\"}"),
        ),
        (
            "Go map",
            json!("map[provider:email providers:[email] role:admin]"),
        ),
    ] {
        let mut claims = base.clone();
        claims["app_metadata"] = meta;
        let (s, body) = proxy(&t.invoke(gateway_event(claims, &orchestrate)).await.unwrap());
        assert_eq!(s, 200, "{rendering}: {body}");
    }
    // Without the admin role the same user is a buyer: no orchestrate.
    let mut plain = base.clone();
    plain["app_metadata"] = json!("map[provider:email providers:[email]]");
    assert_eq!(
        proxy(&t.invoke(gateway_event(plain, &orchestrate)).await.unwrap()).0,
        403
    );

    // REST API (payload 1.0) authorizers hand claims over as an object.
    let mut rest = http_v1("POST", Some(&orchestrate), &[]);
    rest["requestContext"]["authorizer"] = json!({"claims": {
        "sub": ADMIN_SUB, "role": "authenticated", "app_metadata": {"role": "admin"}}});
    assert_eq!(
        proxy(&t.invoke(rest).await.unwrap()).0,
        200,
        "object rendering"
    );
}

#[tokio::test]
async fn anonymous_sign_ins_are_no_buyers_unless_allowed() {
    let t = TestApp::spawn().await;
    with_supplier(&t).await;
    let anon = token(
        json!({"role": "authenticated", "sub": BUYER_SUB, "is_anonymous": true,
                            "exp": now_secs() + 600}),
    );
    let (status, body) = order_as(&t, &anon).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("Anonymous users may not place orders"))
    );
    assert_eq!(t.count("SELECT count(*) FROM orders").await, 0);
    // Through the gateway, the flag is text.
    let body =
        json!({"jobType": "process-order", "data": order_data("t-shirts", 5, "navy-m", BUYER_SUB)})
            .to_string();
    let gw = gateway_event(
        json!({"sub": BUYER_SUB, "role": "authenticated", "is_anonymous": "true"}),
        &body,
    );
    assert_eq!(proxy(&t.invoke(gw).await.unwrap()).0, 403);

    let open = t
        .another_instance(&[("ALLOW_ANONYMOUS_BUYERS", "true")])
        .await;
    let (status, body) = order_as(&open, &anon).await;
    assert_eq!(status, 200, "{body}");
}
