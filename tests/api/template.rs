//! What the deployed stack promises that no Rust code can: read from
//! `template.yaml` itself (cfn-lint and `sam validate --lint` check its
//! syntax in `make lint`; these check our rules).

const TEMPLATE: &str = include_str!("../../template.yaml");

/// The indented block under `  <name>:` (a parameter or a resource).
fn block(name: &str) -> String {
    let header = format!("\n  {name}:\n");
    let start = TEMPLATE
        .find(&header)
        .unwrap_or_else(|| panic!("{name} in template.yaml"))
        + header.len();
    TEMPLATE[start..]
        .lines()
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn no_trace_log_level_the_runtime_would_log_raw_events_at() {
    let level = block("LogLevel");
    let allowed = level
        .lines()
        .find(|l| l.trim_start().starts_with("AllowedValues:"))
        .expect("LogLevel has AllowedValues");
    assert!(!allowed.contains("TRACE"), "{allowed}");
    assert!(
        allowed.contains("INFO") && allowed.contains("DEBUG"),
        "{allowed}"
    );
}

#[test]
fn the_http_api_is_throttled_by_parameters() {
    let stage = block("JobsStage");
    assert!(
        stage.contains("ThrottlingBurstLimit: !Ref ApiThrottlingBurstLimit"),
        "{stage}"
    );
    assert!(
        stage.contains("ThrottlingRateLimit: !Ref ApiThrottlingRateLimit"),
        "{stage}"
    );
}

#[test]
fn queues_and_topics_accept_only_their_own_rules() {
    for (policy, sources) in [
        (
            "FailedInvocationsQueuePolicy",
            &[
                "BatchProcessorFunctionOrchestrate.Arn",
                "BatchProcessorFunctionPublishEvents.Arn",
            ][..],
        ),
        ("RefundRequestsQueuePolicy", &["RefundRequestsRule.Arn"][..]),
        (
            "SupplierNotificationsQueuePolicy",
            &["BatchConfirmedRule.Arn"][..],
        ),
        ("AdminAlertsTopicPolicy", &["AdminAlertsRule.Arn"][..]),
    ] {
        let text = block(policy);
        assert!(text.contains("aws:SourceArn"), "{policy}: {text}");
        for source in sources {
            assert!(text.contains(source), "{policy} names {source}");
        }
    }
}

#[test]
fn a_ca_bundle_means_verify_full() {
    assert!(TEMPLATE.contains("DB_SSLMODE: !If [HasCaFile, verify-full, !Ref DbSslMode]"));
}

#[test]
fn the_function_may_publish_to_its_own_bus_only() {
    let function = block("BatchProcessorFunction");
    assert!(
        function.contains("Action: events:PutEvents\n              Resource: !GetAtt EventBus.Arn"),
        "{function}"
    );
    assert!(function.contains("Architectures: [!Ref Architecture]"));
}

/// The dashboard's body, with `${…}` substituted as CloudFormation would.
fn dashboard() -> serde_json::Value {
    let body = block("OperationsDashboard");
    let start = body.find("DashboardBody: !Sub |").expect("a DashboardBody")
        + "DashboardBody: !Sub |".len();
    let text: String = body[start..]
        .lines()
        .map(|l| l.strip_prefix("        ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    let re = regex::Regex::new(r"\$\{([A-Za-z0-9:.]+)\}").unwrap();
    let substituted = re.replace_all(&text, |c: &regex::Captures| {
        if c[1].ends_with("AlarmMs") || c[1].ends_with("AlarmSeconds") {
            "1000".to_owned()
        } else {
            format!("sub-{}", &c[1])
        }
    });
    serde_json::from_str(&substituted)
        .unwrap_or_else(|e| panic!("the dashboard body is JSON: {e}\n{substituted}"))
}

#[test]
fn every_dashboard_and_alarm_metric_is_one_the_function_emits_or_aws_s() {
    use batch_processor::telemetry::metrics::METRIC_NAMES;
    let board = dashboard();
    let mut ours = Vec::new();
    for widget in board["widgets"].as_array().expect("widgets") {
        for metric in widget["properties"]["metrics"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let namespace = metric[0].as_str().expect("a namespace");
            let name = metric[1].as_str().expect("a metric name");
            match namespace {
                "BatchProcessor" => {
                    assert_eq!(metric[2], "JobType", "{metric}");
                    ours.push(name.to_owned());
                }
                "AWS/Lambda" | "AWS/SQS" => {}
                other => panic!("unknown namespace {other}"),
            }
        }
    }
    for required in [
        "Confirmed",
        "NeedsReview",
        "Cancelled",
        "OrdersCancelled",
        "OrdersPlaced",
        "DurationMs",
        "Errors",
        "Failed",
        "OldestPendingEventAgeSeconds",
        "ColdStart",
    ] {
        assert!(
            ours.iter().any(|n| n == required),
            "the dashboard shows {required}"
        );
    }
    // Alarms on our namespace, in both spellings the template uses.
    let inline = regex::Regex::new(r"Namespace: BatchProcessor, MetricName: (\w+)").unwrap();
    let multi = regex::Regex::new(r"Namespace: BatchProcessor\n\s+MetricName: (\w+)").unwrap();
    for c in inline
        .captures_iter(TEMPLATE)
        .chain(multi.captures_iter(TEMPLATE))
    {
        ours.push(c[1].to_owned());
    }
    for name in &ours {
        assert!(
            METRIC_NAMES.contains(&name.as_str()),
            "{name} is not a metric the function emits"
        );
    }
}

#[test]
fn saved_queries_look_for_lines_the_function_writes() {
    let src = [
        include_str!("../../src/app.rs"),
        include_str!("../../src/jobs/orchestrate.rs"),
    ]
    .concat();
    for (query, message) in [
        ("SlowestInvocationsQuery", "invocation finished"),
        ("RefusedRequestsQuery", "invocation finished"),
        ("FailedBatchesQuery", "batch failed"),
    ] {
        assert!(block(query).contains(message), "{query}");
        assert!(src.contains(message), "the code logs {message:?}");
    }
    for field in [
        "secretMs",
        "connectMs",
        "dbMs",
        "publishMs",
        "coldStart",
        "xrayTraceId",
    ] {
        assert!(block("SlowestInvocationsQuery").contains(field), "{field}");
        assert!(
            src.contains(&format!("{field} =")),
            "the summary line has {field}"
        );
    }
}
