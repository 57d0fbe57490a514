//! The issuer's public signing keys (a JWKS), fetched on first need and cached.
//!
//! - **Never at init**: the first token that needs a key fetches the set, so a
//!   cold start costs nothing and an instance started while the endpoint was
//!   down recovers by itself.
//! - **Cached** for the response's `Cache-Control: max-age` (default 10 min,
//!   at least the refetch interval, at most a day).
//! - **Rotation**: a token naming a `kid` the set lacks makes one refetch —
//!   at most once per `JWKS_MIN_REFETCH_SECS` (30 s), so garbage tokens cannot
//!   make the function hammer the endpoint.
//! - **Outages**: a set once fetched keeps working when a later fetch fails;
//!   with no set at all the caller gets a 503 (retried at most once a second).
//! - **Algorithm from the key**: EC P-256 keys verify ES256, RSA keys RS256;
//!   a key whose `alg`/`use` says otherwise, or of another type, is ignored.
//!
//! Every "when" above is read from a [`Clock`]: the real one in production,
//! one the tests move on by hand, so no test waits for a refetch interval.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;
use tokio::sync::Mutex;

/// The whole fetch (connect, TLS, response, body) gives up after this.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(3);
/// Cache lifetime when the response names none.
pub const DEFAULT_TTL: Duration = Duration::from_secs(600);
const MAX_TTL: Duration = Duration::from_secs(24 * 3600);
/// With no key set at all, a failed fetch is retried at most this often.
const NO_SET_RETRY: Duration = Duration::from_secs(1);
/// A key set is small; anything bigger is not one.
const MAX_BODY_BYTES: usize = 256 * 1024;

/// Where the key set reads the time.
pub type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

/// A public key and the one algorithm it verifies.
#[derive(Clone)]
pub struct VerifyingKey {
    pub key: DecodingKey,
    pub algorithm: Algorithm,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyError {
    /// No key set could be had: not the caller's fault (503).
    Unavailable,
    /// The set has no key with this `kid` (401).
    UnknownKid,
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

struct Cached {
    keys: HashMap<String, VerifyingKey>,
    fresh_until: Instant,
}

#[derive(Default)]
struct State {
    cached: Option<Cached>,
    last_attempt: Option<Instant>,
}

pub struct Jwks {
    url: http::Uri,
    min_refetch: Duration,
    clock: Clock,
    client: OnceLock<HttpClient>,
    /// Held across a fetch: concurrent requests wait for one fetch, not many.
    state: Mutex<State>,
    fetches: std::sync::atomic::AtomicU64,
}

impl Jwks {
    pub fn new(url: http::Uri, min_refetch: Duration) -> Self {
        Jwks {
            url,
            min_refetch,
            clock: Arc::new(Instant::now),
            client: OnceLock::new(),
            state: Mutex::new(State::default()),
            fetches: Default::default(),
        }
    }

    /// The same key set, reading the time from `clock`.
    pub fn with_clock(self, clock: Clock) -> Self {
        Jwks { clock, ..self }
    }

    /// How many fetches this instance has started (for logs and tests).
    pub fn fetches(&self) -> u64 {
        self.fetches.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The key named `kid`, fetching the set when it is missing, stale, or
    /// lacks the key (within the limits in the module docs).
    pub async fn key(&self, kid: &str) -> Result<VerifyingKey, KeyError> {
        let mut state = self.state.lock().await;
        let now = (self.clock)();
        let fresh = state.cached.as_ref().is_some_and(|c| now < c.fresh_until);
        if fresh {
            if let Some(key) = state.cached.as_ref().and_then(|c| c.keys.get(kid)) {
                return Ok(key.clone());
            }
        }
        let wait = if state.cached.is_some() {
            self.min_refetch
        } else {
            NO_SET_RETRY
        };
        let may_fetch = state
            .last_attempt
            .is_none_or(|at| now.duration_since(at) >= wait);
        if may_fetch {
            state.last_attempt = Some(now);
            self.fetches
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            match self.fetch().await {
                Ok((keys, ttl)) => {
                    tracing::info!(
                        keys = keys.len(),
                        ttlSecs = ttl.as_secs(),
                        "fetched the signing keys"
                    );
                    state.cached = Some(Cached {
                        keys,
                        fresh_until: (self.clock)() + ttl.clamp(self.min_refetch, MAX_TTL),
                    });
                }
                Err(reason) => {
                    // A cached set, even stale, keeps working.
                    tracing::warn!(
                        reason,
                        cached = state.cached.is_some(),
                        "could not fetch the signing keys"
                    );
                }
            }
        }
        match &state.cached {
            None => Err(KeyError::Unavailable),
            Some(c) => c.keys.get(kid).cloned().ok_or(KeyError::UnknownKid),
        }
    }

    fn client(&self) -> Result<&HttpClient, &'static str> {
        if let Some(c) = self.client.get() {
            return Ok(c);
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|_| "TLS configuration")?
        .with_root_certificates(rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        })
        .with_no_client_auth();
        // Plain http is accepted here only because configuration allowed it
        // (loopback hosts, for local development and tests).
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(self.client.get_or_init(|| client))
    }

    /// One GET of the key set: the usable keys by `kid`, and how long to keep them.
    async fn fetch(&self) -> Result<(HashMap<String, VerifyingKey>, Duration), &'static str> {
        let client = self.client()?;
        let request = http::Request::get(self.url.clone())
            .header(http::header::ACCEPT, "application/json")
            .body(Empty::<Bytes>::new())
            .map_err(|_| "bad request")?;
        let work = async {
            let response = client.request(request).await.map_err(|_| "unreachable")?;
            if !response.status().is_success() {
                return Err("the endpoint answered with an error status");
            }
            let ttl = max_age(response.headers()).unwrap_or(DEFAULT_TTL);
            let body = Limited::new(response.into_body(), MAX_BODY_BYTES)
                .collect()
                .await
                .map_err(|_| "the body could not be read (or is too large)")?
                .to_bytes();
            Ok((body, ttl))
        };
        let (body, ttl) = tokio::time::timeout(FETCH_TIMEOUT, work)
            .await
            .map_err(|_| "timed out")??;
        let keys = parse_key_set(&body).ok_or("not a JSON Web Key Set")?;
        Ok((keys, ttl))
    }
}

/// `Cache-Control: max-age=N`.
fn max_age(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get(http::header::CACHE_CONTROL)?.to_str().ok()?;
    value.split(',').find_map(|d| {
        d.trim()
            .strip_prefix("max-age=")
            .and_then(|n| n.trim().parse::<u64>().ok())
            .map(Duration::from_secs)
    })
}

/// The usable verification keys of a JWKS document, by `kid`. A key of a
/// type or algorithm we do not verify is skipped, not an error: a set may
/// carry keys for other uses.
pub fn parse_key_set(body: &[u8]) -> Option<HashMap<String, VerifyingKey>> {
    let doc: Value = serde_json::from_slice(body).ok()?;
    let keys = doc.get("keys")?.as_array()?;
    Some(
        keys.iter()
            .filter_map(|k| serde_json::from_value::<Jwk>(k.clone()).ok())
            .filter_map(|jwk| {
                let kid = jwk.common.key_id.clone()?;
                let algorithm = algorithm_of(&jwk)?;
                let key = DecodingKey::from_jwk(&jwk).ok()?;
                Some((kid, VerifyingKey { key, algorithm }))
            })
            .collect(),
    )
}

/// The algorithm a key verifies, decided by its type: EC P-256 → ES256,
/// RSA → RS256. A key's own `alg`, when present, must agree.
fn algorithm_of(jwk: &Jwk) -> Option<Algorithm> {
    if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
        return None;
    }
    let (algorithm, declared_ok) = match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => (
            Algorithm::ES256,
            matches!(jwk.common.key_algorithm, None | Some(KeyAlgorithm::ES256)),
        ),
        AlgorithmParameters::RSA(_) => (
            Algorithm::RS256,
            matches!(jwk.common.key_algorithm, None | Some(KeyAlgorithm::RS256)),
        ),
        _ => return None,
    };
    declared_ok.then_some(algorithm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_get_their_algorithm_from_their_type() {
        // Public values from RFC 7517 appendix A.1 (an EC P-256 and an RSA key).
        let set = serde_json::json!({"keys": [
            {"kty": "EC", "crv": "P-256", "kid": "ec1",
             "x": "MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4",
             "y": "4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM", "use": "sig"},
            {"kty": "RSA", "kid": "rsa1", "alg": "RS256", "e": "AQAB",
             "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"},
            {"kty": "EC", "crv": "P-384", "kid": "p384",
             "x": "MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4", "y": "4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"},
            {"kty": "RSA", "kid": "rs512", "alg": "RS512", "e": "AQAB", "n": "0vx7"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "e": "AQAB", "n": "0vx7"},
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "EC", "crv": "P-256", "x": "no-kid", "y": "no-kid"}
        ]});
        let keys = parse_key_set(set.to_string().as_bytes()).unwrap();
        let mut found: Vec<(&str, Algorithm)> = keys
            .iter()
            .map(|(k, v)| (k.as_str(), v.algorithm))
            .collect();
        found.sort_by_key(|(k, _)| *k);
        assert_eq!(
            found,
            [("ec1", Algorithm::ES256), ("rsa1", Algorithm::RS256)]
        );
        assert!(parse_key_set(b"{\"no\": 1}").is_none());
        assert!(parse_key_set(b"<html>").is_none());
    }

    #[test]
    fn cache_control_max_age_is_read() {
        let mut h = http::HeaderMap::new();
        assert_eq!(max_age(&h), None);
        h.insert(
            http::header::CACHE_CONTROL,
            "public, max-age=600, must-revalidate".parse().unwrap(),
        );
        assert_eq!(max_age(&h), Some(Duration::from_secs(600)));
    }
}
