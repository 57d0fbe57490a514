//! The HTTP front (behaviour §2, §3): everything an API Gateway request goes
//! through before and after its job, in one place and in this order:
//!
//! 1. a request that did not decode: 400;
//! 2. `OPTIONS`: 204, CORS headers, no body, no token needed;
//! 3. any method but `POST`: 405;
//! 4. the body: over 64 KiB is a 413 (before the caller is authenticated);
//! 5. who is calling ([`Authenticator::authenticate`]): 401, 503;
//! 6. the body as a job request (`{"jobType", "data"}`): 400, an unknown job 400;
//! 7. the `Idempotency-Key` header into `data.idempotencyKey`: 400 when it is
//!    not 1 to 255 printable ASCII characters, or differs from the body's;
//! 8. the job, by the same road as every other source (the `run` it is given).
//!
//! Every answer, errors included, is JSON with the CORS headers; errors have
//! the shape of behaviour §2 and are logged here.

use std::future::Future;

use http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use http::{Method, StatusCode};
use serde_json::{Map, Value};

use crate::auth::{Authenticator, Principal};
use crate::error::ApiError;
use crate::event::{BodyError, GatewayClaims, HttpRequest, HttpResponse};
use crate::jobs::{Job, JobRequest};

/// Largest HTTP body accepted (behaviour §2: over 64 KiB is a 413).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

pub const CORS_ALLOW_HEADERS: &str =
    "authorization, x-client-info, apikey, content-type, idempotency-key";
pub const CORS_ALLOW_METHODS: &str = "POST, OPTIONS";

/// Answers one HTTP request. `run` runs the job it carries for the caller and
/// returns what it did (`A`, handed back for the summary line) and its
/// answer. `None` when no job ran.
pub async fn serve<A, F, Fut>(
    request: Result<Box<HttpRequest>, ApiError>,
    auth: &Authenticator,
    cors_origin: &str,
    request_id: &str,
    run: F,
) -> (Option<A>, HttpResponse)
where
    F: FnOnce(JobRequest, Principal) -> Fut,
    Fut: Future<Output = (A, Result<Value, ApiError>)>,
{
    let answer = |result: Result<Value, ApiError>| match result {
        Ok(v) => respond(StatusCode::OK, Some(v.to_string()), cors_origin),
        Err(e) => {
            e.log();
            let body =
                serde_json::to_string(&e.body(request_id)).unwrap_or_else(|_| "{}".to_owned());
            respond(status(&e), Some(body), cors_origin)
        }
    };
    let request = match request {
        Ok(request) => request,
        Err(e) => return (None, answer(Err(e))),
    };
    if request.method() == Method::OPTIONS {
        return (None, respond(StatusCode::NO_CONTENT, None, cors_origin));
    }
    match accept(&request, auth).await {
        Ok((job, principal)) => {
            let (done, result) = run(job, principal).await;
            (Some(done), answer(result))
        }
        Err(e) => (None, answer(Err(e))),
    }
}

/// Steps 3 to 7: the job request a `POST` carries, and who sent it.
async fn accept(
    request: &HttpRequest,
    auth: &Authenticator,
) -> Result<(JobRequest, Principal), ApiError> {
    if request.method() != Method::POST {
        return Err(ApiError::MethodNotAllowed(format!(
            "Method {} not allowed; use POST",
            request.method()
        )));
    }
    let body = request.body().bytes(MAX_BODY_BYTES).map_err(|e| match e {
        BodyError::TooLarge => ApiError::PayloadTooLarge(format!(
            "Request body is larger than {} KiB",
            MAX_BODY_BYTES / 1024
        )),
        BodyError::NotBase64 => ApiError::BadRequest("Request body is not valid base64".into()),
    })?;
    let claims = request.extensions().get::<GatewayClaims>().map(|c| &c.0);
    let principal = auth.authenticate(request.headers(), claims).await?;
    let mut job = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(map)) => JobRequest::from_object(map),
        Ok(_) => {
            return Err(ApiError::BadRequest(
                "Request body must be a JSON object".into(),
            ))
        }
        Err(_) => {
            return Err(ApiError::BadRequest(
                "Request body is not valid JSON".into(),
            ))
        }
    };
    // An unknown job is the caller's first mistake, before anything in its data.
    Job::find(job.job_type.as_ref())?;
    if let Some(key) = idempotency_header(request.headers())? {
        merge_idempotency_key(&mut job.data, &key)?;
    }
    Ok((job, principal))
}

/// Longest `Idempotency-Key` header accepted.
pub const MAX_IDEMPOTENCY_HEADER_CHARS: usize = 255;

/// The `Idempotency-Key` header, when one was sent: 1 to
/// [`MAX_IDEMPOTENCY_HEADER_CHARS`] printable ASCII characters, else a 400 —
/// never ignored, or a retry the function could not recognise would become a
/// second order. Sent twice, both must agree.
fn idempotency_header(headers: &http::HeaderMap) -> Result<Option<String>, ApiError> {
    let mut values = headers.get_all("idempotency-key").iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    let key = first.as_bytes();
    if key.is_empty()
        || key.len() > MAX_IDEMPOTENCY_HEADER_CHARS
        || !key.iter().all(|b| (0x20..=0x7e).contains(b))
    {
        return Err(ApiError::BadRequest(format!(
            "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_HEADER_CHARS} printable ASCII characters"
        )));
    }
    if values.any(|other| other != first) {
        return Err(ApiError::BadRequest(
            "Idempotency-Key is given more than once, with different values".into(),
        ));
    }
    Ok(Some(String::from_utf8_lossy(key).into_owned()))
}

/// The `Idempotency-Key` header means `data.idempotencyKey` (behaviour §2);
/// a body that names another key is a 400.
fn merge_idempotency_key(data: &mut Option<Value>, key: &str) -> Result<(), ApiError> {
    let map = match data {
        None | Some(Value::Null) => data.insert(Value::Object(Map::new())),
        Some(value) => value,
    };
    // Not an object: the job's own validation reports it.
    let Value::Object(map) = map else {
        return Ok(());
    };
    match map.get("idempotencyKey") {
        Some(Value::String(existing)) if existing != key => Err(ApiError::BadRequest(
            "idempotencyKey differs from the Idempotency-Key header".into(),
        )),
        Some(Value::String(_)) => Ok(()),
        _ => {
            map.insert("idempotencyKey".into(), Value::String(key.to_owned()));
            Ok(())
        }
    }
}

fn status(e: &ApiError) -> StatusCode {
    StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// A JSON answer with the CORS headers.
fn respond(status: StatusCode, body: Option<String>, origin: &str) -> HttpResponse {
    let mut response = http::Response::new(body);
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(
        HeaderName::from_static("access-control-allow-origin"),
        HeaderValue::from_str(origin).unwrap_or(HeaderValue::from_static("*")),
    );
    h.insert(
        HeaderName::from_static("access-control-allow-headers"),
        HeaderValue::from_static(CORS_ALLOW_HEADERS),
    );
    h.insert(
        HeaderName::from_static("access-control-allow-methods"),
        HeaderValue::from_static(CORS_ALLOW_METHODS),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn idempotency_headers_are_printable_ascii_of_at_most_255() {
        let header = |values: &[&[u8]]| {
            let mut h = http::HeaderMap::new();
            for v in values {
                h.append(
                    "idempotency-key",
                    HeaderValue::from_bytes(v).expect("a header value"),
                );
            }
            idempotency_header(&h)
        };
        assert_eq!(header(&[]).unwrap(), None);
        assert_eq!(
            header(&[b"order-1 try 2"]).unwrap().as_deref(),
            Some("order-1 try 2")
        );
        let longest = "k".repeat(255);
        assert_eq!(
            header(&[longest.as_bytes()]).unwrap(),
            Some(longest.clone())
        );
        assert_eq!(
            header(&[b"same", b"same"]).unwrap().as_deref(),
            Some("same")
        );
        let too_long = "k".repeat(256);
        let bad: [&[&[u8]]; 5] = [
            &[too_long.as_bytes()],
            &[b"caf\xc3\xa9"],
            &[b"tab\there"],
            &[b""],
            &[b"one", b"two"],
        ];
        for bad in bad {
            assert_eq!(header(bad).unwrap_err().status(), 400, "{bad:?}");
        }
    }

    #[test]
    fn idempotency_header_fills_or_must_match_the_body() {
        let mut none = None;
        merge_idempotency_key(&mut none, "k1").unwrap();
        assert_eq!(none, Some(json!({"idempotencyKey": "k1"})));
        let mut null = Some(Value::Null);
        merge_idempotency_key(&mut null, "k1").unwrap();
        assert_eq!(null, Some(json!({"idempotencyKey": "k1"})));
        let mut same = Some(json!({"idempotencyKey": "k1", "quantity": 5}));
        merge_idempotency_key(&mut same, "k1").unwrap();
        assert_eq!(same, Some(json!({"idempotencyKey": "k1", "quantity": 5})));
        let mut other = Some(json!({"idempotencyKey": "k2"}));
        assert_eq!(
            merge_idempotency_key(&mut other, "k1")
                .unwrap_err()
                .status(),
            400
        );
        let mut not_object = Some(json!([1]));
        merge_idempotency_key(&mut not_object, "k1").unwrap();
        assert_eq!(not_object, Some(json!([1])), "left for the job to refuse");
    }
}
