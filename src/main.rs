//! Wiring only: settings, telemetry and the pool once per Lambda instance,
//! then the runtime loop.
//!
//! Outside Lambda the same binary handles one event and exits:
//! `batch-processor migrate` applies the migrations to `DATABASE_URL` (what
//! `make migrate` runs); `batch-processor invoke FILE` (or `-` for stdin)
//! handles the event in FILE as a direct invocation would and prints the answer.

#![recursion_limit = "256"]

use std::sync::Arc;

use batch_processor::configuration::Settings;
use batch_processor::telemetry::metrics::MetricsSink;
use batch_processor::{telemetry, App, Invocation};
use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    telemetry::init();
    let app = App::new(Settings::from_env()?)?;

    let args: Vec<String> = std::env::args().skip(1).collect();
    let one_event = match args.first().map(String::as_str) {
        Some("migrate") => Some(serde_json::json!({"jobType": "migrate"})),
        Some("invoke") => Some(read_event(args.get(1).map(String::as_str).unwrap_or("-"))?),
        Some(other) => {
            return Err(format!("unknown command {other:?}; use migrate or invoke FILE").into())
        }
        None => None,
    };
    if let Some(event) = one_event {
        // stdout is the answer; metric lines go to stderr with the logs.
        let app = app.with_metrics(MetricsSink::Stderr);
        let inv = Invocation::new(format!("local-{}", std::process::id()), None);
        let out = app.handle(event, &inv).await.map_err(|e| e.message)?;
        println!("{out:#}");
        return Ok(());
    }

    let app = Arc::new(app);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let app = Arc::clone(&app);
        async move {
            let inv = Invocation::from_context(&event.context);
            app.handle(event.payload, &inv)
                .await
                .map_err(Diagnostic::from)
        }
    }))
    .await
}

fn read_event(path: &str) -> Result<Value, lambda_runtime::Error> {
    let text = if path == "-" {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?
    };
    Ok(serde_json::from_str(&text).map_err(|e| format!("{path}: {e}"))?)
}
