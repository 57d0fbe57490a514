//! The AWS SDK configuration, loaded once per instance on first use — never at
//! init, so an instance that needs neither Secrets Manager nor EventBridge
//! (`DATABASE_URL` set, delivery off) never pays for it. Region, credentials
//! and `AWS_ENDPOINT_URL` (the tests' local moto) come from the environment.

use aws_config::SdkConfig;
use tokio::sync::OnceCell;

static CONFIG: OnceCell<SdkConfig> = OnceCell::const_new();

/// The shared SDK configuration of this process.
pub async fn config() -> &'static SdkConfig {
    CONFIG
        .get_or_init(|| aws_config::load_defaults(aws_config::BehaviorVersion::latest()))
        .await
}
