//! The AWS SDK configuration, loaded once per instance on first use — never at
//! init, so an instance that needs neither Secrets Manager nor EventBridge
//! (`DATABASE_URL` set, delivery off) never pays for it. Region, credentials
//! and `AWS_ENDPOINT_URL` (the tests' local moto) come from the environment.
//!
//! Every call has an attempt and an operation timeout ([`timeouts`]): the SDK
//! sets none of its own beyond connecting, so a hung endpoint would hold an
//! invocation until Lambda kills it. Clients that need tighter bounds
//! (EventBridge, [`crate::eventbridge`]) set their own over these.

use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::SdkConfig;
use tokio::sync::OnceCell;

static CONFIG: OnceCell<SdkConfig> = OnceCell::const_new();

/// The shared SDK configuration of this process.
pub async fn config() -> &'static SdkConfig {
    CONFIG
        .get_or_init(|| {
            aws_config::defaults(aws_config::BehaviorVersion::latest())
                .timeout_config(timeouts())
                .load()
        })
        .await
}

/// Connect within 3 s, each attempt within 3 s, the whole call (the standard
/// retries included) within 10 s: a hung Secrets Manager costs a cold start
/// seconds and a 503, not the invocation.
pub fn timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(3))
        .operation_attempt_timeout(Duration::from_secs(3))
        .operation_timeout(Duration::from_secs(10))
        .build()
}
