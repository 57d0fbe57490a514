//! Supabase's asymmetric signing keys (behaviour §3), against a real JWKS
//! endpoint: a small HTTP server of the test's own on a loopback port, serving
//! keys the test generated (EC P-256 and RSA 2048, with aws-lc-rs), and tokens
//! the test signed itself — independently of the verifier's JWT library. The
//! key set reads the time from a clock the tests move on by hand: refetch
//! limits and cache lifetimes are checked without waiting for them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING, RSA_PKCS1_SHA256,
};
use base64::Engine;
use batch_processor::auth::{Authenticator, Principal, SharedSecret};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use uuid::Uuid;

use super::NO_DATABASE;
use crate::helpers::*;

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub enum Pair {
    Ec(EcdsaKeyPair),
    Rsa(aws_lc_rs::rsa::KeyPair),
}

/// A signing key of the test's, with the `kid` it is published under.
pub struct TestKey {
    pub kid: String,
    pub pair: Pair,
}

impl TestKey {
    pub fn ec(kid: &str) -> Self {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("EC key");
        TestKey {
            kid: kid.into(),
            pair: Pair::Ec(pair),
        }
    }

    pub fn rsa(kid: &str) -> Self {
        let pair = aws_lc_rs::rsa::KeyPair::generate(KeySize::Rsa2048).expect("RSA key");
        TestKey {
            kid: kid.into(),
            pair: Pair::Rsa(pair),
        }
    }

    pub fn alg(&self) -> &'static str {
        match self.pair {
            Pair::Ec(_) => "ES256",
            Pair::Rsa(_) => "RS256",
        }
    }

    /// The public key as a JWK, as Supabase publishes it.
    pub fn jwk(&self) -> Value {
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
    pub fn sign_with_header(&self, header: Value, claims: &Value) -> String {
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

    pub fn sign(&self, claims: &Value) -> String {
        self.sign_with_header(
            json!({"alg": self.alg(), "typ": "JWT", "kid": self.kid}),
            claims,
        )
    }
}

/// The JWKS endpoint: serves the current key set, can go down (connections
/// are closed unanswered), and counts the requests it gets.
#[derive(Clone)]
pub struct KeyServer {
    port: u16,
    keys: Arc<Mutex<Vec<Value>>>,
    up: Arc<std::sync::atomic::AtomicBool>,
    hits: Arc<AtomicU64>,
}

impl KeyServer {
    pub async fn start(keys: Vec<Value>) -> Self {
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

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn issuer(&self) -> String {
        format!("{}/auth/v1", self.url())
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
    }

    pub fn publish(&self, key: Value) {
        self.keys.lock().unwrap().push(key);
    }
}

/// A clock the test moves on by hand.
#[derive(Clone)]
struct ManualClock(Arc<Mutex<Instant>>);

impl ManualClock {
    fn new() -> Self {
        ManualClock(Arc::new(Mutex::new(Instant::now())))
    }

    fn advance(&self, by: Duration) {
        *self.0.lock().unwrap() += by;
    }

    fn clock(&self) -> batch_processor::auth::jwks::Clock {
        let at = self.0.clone();
        Arc::new(move || *at.lock().unwrap())
    }
}

/// The production default of `JWKS_MIN_REFETCH_SECS`.
const MIN_REFETCH: Duration = Duration::from_secs(30);
/// With no key set at all, a failed fetch is retried at most this often.
const NO_SET_RETRY: Duration = Duration::from_secs(1);

/// An authenticator of `server`'s project, on `clock`.
fn authenticator(server: &KeyServer, clock: &ManualClock, extra: &[(&str, &str)]) -> Authenticator {
    let url = server.url();
    let mut env = vec![("SUPABASE_URL", url.as_str())];
    env.extend_from_slice(extra);
    let settings = settings(NO_DATABASE, &env);
    let secret = SharedSecret::from_settings(&settings, None);
    Authenticator::new(&settings, secret).with_clock(clock.clock())
}

/// Who `token` says the caller is.
async fn who(auth: &Authenticator, token: &str) -> Result<Principal, (u16, String)> {
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::AUTHORIZATION,
        bearer(token).parse().expect("a header value"),
    );
    auth.authenticate(&headers, None)
        .await
        .map_err(|e| (e.status(), e.to_string()))
}

pub fn admin_claims(iss: &str) -> Value {
    json!({"role": "service_role", "iss": iss, "exp": now_secs() + 600})
}

pub fn buyer_claims(iss: &str) -> Value {
    json!({"role": "authenticated", "sub": BUYER_SUB, "aud": "authenticated", "iss": iss,
           "exp": now_secs() + 600, "app_metadata": {"provider": "email"}})
}

fn user(id: &str) -> Uuid {
    Uuid::parse_str(id).expect("a uuid")
}

const ADMIN: Principal = Principal::Admin { user_id: None };

#[tokio::test]
async fn es256_and_rs256_tokens_of_admins_and_buyers_are_accepted() {
    let ec = TestKey::ec("ec-1");
    let rsa = TestKey::rsa("rsa-1");
    let server = KeyServer::start(vec![ec.jwk(), rsa.jwk()]).await;
    let clock = ManualClock::new();
    let auth = authenticator(&server, &clock, &[("JWT_SECRET", "")]);
    let iss = server.issuer();
    for key in [&ec, &rsa] {
        assert_eq!(
            who(&auth, &key.sign(&admin_claims(&iss))).await,
            Ok(ADMIN),
            "{}",
            key.alg()
        );
        let mut admin_user = buyer_claims(&iss);
        admin_user["app_metadata"] = json!({"role": "admin", "provider": "email"});
        assert_eq!(
            who(&auth, &key.sign(&admin_user)).await,
            Ok(Principal::Admin {
                user_id: Some(user(BUYER_SUB))
            }),
            "{} app_metadata admin",
            key.alg()
        );
        assert_eq!(
            who(&auth, &key.sign(&buyer_claims(&iss))).await,
            Ok(Principal::Buyer {
                user_id: user(BUYER_SUB)
            }),
            "{} buyer",
            key.alg()
        );
    }
    assert_eq!(server.hits(), 1, "one fetch serves every later token");
}

#[tokio::test]
async fn bad_asymmetric_tokens_are_refused_with_401() {
    let ec = TestKey::ec("ec-1");
    let rsa = TestKey::rsa("rsa-1");
    let server = KeyServer::start(vec![ec.jwk(), rsa.jwk()]).await;
    let auth = authenticator(&server, &ManualClock::new(), &[]);
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
        (
            "a kid the set lacks",
            TestKey::ec("unknown").sign(&good),
            "Token signing key is not known",
        ),
    ];
    for (what, token, message) in cases {
        assert_eq!(
            who(&auth, &token).await,
            Err((401, message.to_owned())),
            "{what}"
        );
    }
    // A token a little past `exp` is still inside the leeway.
    let mut skewed = good.clone();
    skewed["exp"] = json!(now_secs() - 10);
    assert_eq!(
        who(&auth, &ec.sign(&skewed)).await,
        Ok(ADMIN),
        "within the 30 s leeway"
    );
}

#[tokio::test]
async fn hs256_is_refused_when_only_asymmetric_keys_are_configured() {
    let ec = TestKey::ec("ec-1");
    let server = KeyServer::start(vec![ec.jwk()]).await;
    let auth = authenticator(&server, &ManualClock::new(), &[("JWT_SECRET", "")]);
    assert_eq!(
        who(&auth, &admin_token()).await,
        Err((401, "Token algorithm is not accepted".to_owned()))
    );
    assert_eq!(
        who(&auth, &ec.sign(&admin_claims(&server.issuer()))).await,
        Ok(ADMIN)
    );
}

#[tokio::test]
async fn legacy_hs256_and_jwks_work_side_by_side() {
    let ec = TestKey::ec("ec-1");
    let server = KeyServer::start(vec![ec.jwk()]).await;
    let auth = authenticator(&server, &ManualClock::new(), &[]); // JWT_SECRET is set by the helpers
    assert_eq!(
        who(&auth, &admin_token()).await,
        Ok(ADMIN),
        "HS256 by the secret"
    );
    assert_eq!(server.hits(), 0, "an HS256 token never fetches the key set");
    assert_eq!(
        who(&auth, &ec.sign(&admin_claims(&server.issuer()))).await,
        Ok(ADMIN),
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
    assert_eq!(who(&auth, &hs_with_kid).await, Ok(ADMIN));
}

#[tokio::test]
async fn rotation_outage_and_recovery() {
    let old = TestKey::ec("old");
    let server = KeyServer::start(vec![old.jwk()]).await;
    let clock = ManualClock::new();
    let auth = authenticator(&server, &clock, &[]);
    let iss = server.issuer();
    assert_eq!(who(&auth, &old.sign(&admin_claims(&iss))).await, Ok(ADMIN));
    assert_eq!(server.hits(), 1);

    // A new key appears: within the refetch interval its tokens are unknown…
    let new = TestKey::rsa("new");
    server.publish(new.jwk());
    let new_token = new.sign(&admin_claims(&iss));
    clock.advance(MIN_REFETCH - Duration::from_secs(1));
    assert_eq!(
        who(&auth, &new_token).await,
        Err((401, "Token signing key is not known".to_owned()))
    );
    assert_eq!(server.hits(), 1, "no refetch inside the interval");
    // …after it, its first token makes one refetch and is accepted.
    clock.advance(Duration::from_secs(1));
    assert_eq!(who(&auth, &new_token).await, Ok(ADMIN));
    assert_eq!(server.hits(), 2, "one refetch for the new kid");

    // The endpoint goes down: cached keys keep working, even once stale.
    server.set_up(false);
    clock.advance(MIN_REFETCH);
    let unknown = TestKey::ec("unknown");
    assert_eq!(
        who(&auth, &unknown.sign(&admin_claims(&iss)))
            .await
            .map_err(|e| e.0),
        Err(401),
        "unknown kid while down"
    );
    assert_eq!(server.hits(), 3, "it tried");
    clock.advance(jwks_default_ttl() + MIN_REFETCH);
    for key in [&old, &new] {
        assert_eq!(
            who(&auth, &key.sign(&admin_claims(&iss))).await,
            Ok(ADMIN),
            "cached {} while down and stale",
            key.kid
        );
    }
    assert_eq!(
        server.hits(),
        4,
        "a stale set is refetched, and kept when that fails"
    );
}

fn jwks_default_ttl() -> Duration {
    // The key server answers `Cache-Control: max-age=600`.
    Duration::from_secs(600)
}

#[tokio::test]
async fn an_instance_started_while_the_endpoint_is_down_recovers() {
    let key = TestKey::ec("k");
    let server = KeyServer::start(vec![key.jwk()]).await;
    server.set_up(false);
    let clock = ManualClock::new();
    let auth = authenticator(&server, &clock, &[]);
    assert_eq!(server.hits(), 0, "nothing is fetched at init");
    let token = key.sign(&admin_claims(&server.issuer()));
    let unavailable = Err((
        503,
        "Authentication unavailable: could not fetch the signing keys".to_owned(),
    ));
    assert_eq!(who(&auth, &token).await, unavailable);
    server.set_up(true);
    assert_eq!(
        who(&auth, &token).await,
        unavailable,
        "retried at most once a second"
    );
    assert_eq!(server.hits(), 1);
    clock.advance(NO_SET_RETRY);
    assert_eq!(
        who(&auth, &token).await,
        Ok(ADMIN),
        "same process, endpoint back"
    );
    assert_eq!(server.hits(), 2);
}

#[tokio::test]
async fn garbage_kids_cannot_make_the_function_hammer_the_endpoint() {
    let key = TestKey::ec("real");
    let server = KeyServer::start(vec![key.jwk()]).await;
    let clock = ManualClock::new();
    let auth = authenticator(&server, &clock, &[]);
    let iss = server.issuer();
    assert_eq!(who(&auth, &key.sign(&admin_claims(&iss))).await, Ok(ADMIN));
    for n in 0..200 {
        let forged = TestKey {
            kid: Uuid::new_v4().to_string(),
            ..TestKey::ec("x")
        };
        assert_eq!(
            who(&auth, &forged.sign(&admin_claims(&iss)))
                .await
                .map_err(|e| e.0),
            Err(401)
        );
        if n == 100 {
            // Half way, the interval passes once: one refetch more, no more.
            clock.advance(MIN_REFETCH);
        }
    }
    assert_eq!(server.hits(), 2, "200 unknown kids");
    assert_eq!(auth.key_set().map(|k| k.fetches()), Some(server.hits()));
}
