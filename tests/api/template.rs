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
