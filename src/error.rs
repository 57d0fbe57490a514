//! The one error type every boundary answers with.
//!
//! Each variant maps to one HTTP status of behaviour §2. The message of every variant
//! except [`ApiError::Internal`] is shown to the caller, so it is written for them:
//! it names the field or the condition, never SQL, a secret or a stack trace.
//! `Internal` carries a detail that is logged and never shown.

use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    Unprocessable(String),
    #[error("{0}")]
    Unavailable(String),
    /// The detail is for the logs only; callers see "Internal error".
    #[error("Internal error")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> u16 {
        match self {
            ApiError::BadRequest(_) => 400,
            ApiError::Unauthorized(_) => 401,
            ApiError::Forbidden(_) => 403,
            ApiError::NotFound(_) => 404,
            ApiError::MethodNotAllowed(_) => 405,
            ApiError::Conflict(_) => 409,
            ApiError::PayloadTooLarge(_) => 413,
            ApiError::Unprocessable(_) => 422,
            ApiError::Internal(_) => 500,
            ApiError::Unavailable(_) => 503,
        }
    }

    /// A short machine name, used as the Lambda `errorType` of a failed invocation.
    pub fn kind(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "BadRequest",
            ApiError::Unauthorized(_) => "Unauthorized",
            ApiError::Forbidden(_) => "Forbidden",
            ApiError::NotFound(_) => "NotFound",
            ApiError::MethodNotAllowed(_) => "MethodNotAllowed",
            ApiError::Conflict(_) => "Conflict",
            ApiError::PayloadTooLarge(_) => "PayloadTooLarge",
            ApiError::Unprocessable(_) => "Unprocessable",
            ApiError::Internal(_) => "InternalError",
            ApiError::Unavailable(_) => "ServiceUnavailable",
        }
    }

    /// Logs this error as behaviour §9 says: a 500 at `error` as `job failed`
    /// with its internal detail, every other refusal at `info`.
    pub fn log(&self) {
        match self {
            ApiError::Internal(detail) => tracing::error!(error = %detail, "job failed"),
            other => tracing::info!(status = other.status(), error = %other, "request refused"),
        }
    }

    pub fn body(&self, request_id: &str) -> ErrorBody {
        ErrorBody {
            error: self.to_string(),
            timestamp: chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            request_id: request_id.to_owned(),
        }
    }
}

/// The error shape of behaviour §2, the same from every source.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    pub error: String,
    pub timestamp: String,
    pub request_id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_never_show_their_detail() {
        let e = ApiError::Internal("relation \"orders\" does not exist".into());
        let body = e.body("req-1");
        assert_eq!(body.error, "Internal error");
        assert_eq!(e.status(), 500);
    }

    #[test]
    fn body_has_the_spec_shape() {
        let body = ApiError::BadRequest("Invalid job type".into()).body("abc");
        let v = serde_json::to_value(&body).unwrap();
        assert_eq!(v["error"], "Invalid job type");
        assert_eq!(v["requestId"], "abc");
        let ts = v["timestamp"].as_str().unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(ts).is_ok(), "{ts}");
        assert!(ts.ends_with('Z'));
    }
}
