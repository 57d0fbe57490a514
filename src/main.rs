//! Wiring only: settings, telemetry and the pool once per Lambda instance,
//! then the runtime loop. `batch-processor migrate` applies the migrations to
//! `DATABASE_URL` and exits (what `make migrate` runs).

use std::sync::Arc;

use batch_processor::configuration::Settings;
use batch_processor::{telemetry, App, Invocation};
use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    telemetry::init();
    let settings = Settings::from_env()?;
    let app = Arc::new(App::new(settings)?);

    if std::env::args().nth(1).as_deref() == Some("migrate") {
        let inv = Invocation::new("cli", None);
        let out = app
            .handle(serde_json::json!({"jobType": "migrate"}), &inv)
            .await
            .map_err(|e| e.message)?;
        println!("{out}");
        return Ok(());
    }

    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let app = Arc::clone(&app);
        async move {
            let inv = Invocation::from_context(&event.context);
            app.handle(event.payload, &inv).await.map_err(Diagnostic::from)
        }
    }))
    .await
}
