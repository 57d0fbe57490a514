//! One CloudWatch Embedded Metric Format line per job (behaviour §9).
//!
//! The EMF specification: a JSON object whose `_aws` member declares, for a
//! timestamp in milliseconds, the namespace, the dimension sets and the metric
//! names and units; the values are top-level members of the same object.
//! CloudWatch Logs turns the line into metrics without any API call, which is
//! what a Lambda wants. No crate is needed for something this small.

use std::io::Write;
use std::sync::{Arc, Mutex};

use serde_json::{json, Map, Value};

use crate::domain::{Counts, Delivery};

pub const NAMESPACE: &str = "BatchProcessor";

/// The metric line for one job. `job_type` is `unknown` when the request had none.
pub fn emf_line(
    job_type: &str,
    counts: &Counts,
    delivery: Option<&Delivery>,
    duration_ms: u64,
    error: bool,
    request_id: &str,
) -> String {
    let mut metrics: Vec<(&str, u64, &str)> = vec![
        ("Confirmed", counts.confirmed, "Count"),
        ("NeedsReview", counts.needs_review, "Count"),
        ("Cancelled", counts.cancelled, "Count"),
        ("NearingTarget", counts.nearing_target, "Count"),
        ("Skipped", counts.skipped, "Count"),
        ("Failed", counts.failed, "Count"),
        ("OrdersCancelled", counts.orders_cancelled, "Count"),
        ("OrdersPlaced", counts.orders_placed, "Count"),
        ("DurationMs", duration_ms, "Milliseconds"),
        ("Errors", u64::from(error), "Count"),
    ];
    // Outbox delivery (behaviour §10), when the job tried it.
    if let Some(d) = delivery {
        metrics.extend([
            ("EventsPublished", d.published, "Count"),
            ("PublishFailures", d.failed, "Count"),
            ("EventsPending", d.pending, "Count"),
            (
                "OldestPendingEventAgeSeconds",
                d.oldest_pending_secs,
                "Seconds",
            ),
        ]);
    }
    let mut line = Map::new();
    line.insert(
        "_aws".into(),
        json!({
            "Timestamp": chrono::Utc::now().timestamp_millis(),
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [["JobType"]],
                "Metrics": metrics.iter().map(|(name, _, unit)| json!({"Name": name, "Unit": unit})).collect::<Vec<_>>(),
            }],
        }),
    );
    line.insert("JobType".into(), json!(job_type));
    for (name, value, _) in &metrics {
        line.insert((*name).into(), json!(value));
    }
    // A property, not a dimension: lets an operator go from a metric to the logs.
    line.insert("requestId".into(), json!(request_id));
    Value::Object(line).to_string()
}

/// Where metric lines go: stdout on Lambda, stderr for the local `invoke`
/// command (whose stdout is the answer), or a buffer in tests.
#[derive(Clone)]
pub enum MetricsSink {
    Stdout,
    Stderr,
    Buffer(Arc<Mutex<Vec<String>>>),
}

impl MetricsSink {
    pub fn emit(&self, line: &str) {
        match self {
            MetricsSink::Stdout => {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
            }
            MetricsSink::Stderr => {
                let mut out = std::io::stderr().lock();
                let _ = writeln!(out, "{line}");
            }
            MetricsSink::Buffer(lines) => {
                if let Ok(mut l) = lines.lock() {
                    l.push(line.to_owned());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emf_line_follows_the_specification() {
        let counts = Counts {
            confirmed: 2,
            cancelled: 1,
            orders_cancelled: 12,
            ..Counts::default()
        };
        let v: Value =
            serde_json::from_str(&emf_line("orchestrate", &counts, None, 42, false, "r-1"))
                .unwrap();
        let aws = &v["_aws"];
        assert!(aws["Timestamp"].as_i64().unwrap() > 1_700_000_000_000);
        let cwm = &aws["CloudWatchMetrics"][0];
        assert_eq!(cwm["Namespace"], "BatchProcessor");
        assert_eq!(cwm["Dimensions"], json!([["JobType"]]));
        let names: Vec<&str> = cwm["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["Name"].as_str().unwrap())
            .collect();
        for name in &names {
            assert!(v[*name].is_u64(), "{name} has a numeric value");
        }
        assert_eq!(names.len(), 10);
        assert_eq!(v["JobType"], "orchestrate");
        assert_eq!(v["Confirmed"], 2);
        assert_eq!(v["OrdersCancelled"], 12);
        assert_eq!(v["DurationMs"], 42);
        assert_eq!(v["Errors"], 0);
    }
}
