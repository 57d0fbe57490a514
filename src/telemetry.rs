//! Logging setup: JSON lines on Lambda (CloudWatch reads them as structured
//! logs), readable text locally. The level comes from `AWS_LAMBDA_LOG_LEVEL`
//! (Lambda's advanced logging controls) or `RUST_LOG`, default `info`. Lines go
//! to stderr, which Lambda ships like stdout, so `invoke` output stays clean.

use tracing_subscriber::EnvFilter;

/// Postgres NOTICEs ("relation already exists, skipping") are not news.
const DEFAULT_FILTER: &str = "info,tokio_postgres=warn";

pub fn init() {
    let level = std::env::var("AWS_LAMBDA_LOG_LEVEL")
        .ok()
        .map(|l| format!("{},tokio_postgres=warn", l.to_ascii_lowercase()))
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| DEFAULT_FILTER.to_owned());
    let filter = EnvFilter::try_new(&level).unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let on_lambda = std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some()
        || std::env::var("AWS_LAMBDA_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = if on_lambda {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .without_time()
            .try_init()
    } else {
        builder.try_init()
    };
    // A subscriber set already (tests) is not an error.
    let _ = result;
}
