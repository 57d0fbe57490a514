//! What the deployed stack promises that no Rust code can. Each test runs the
//! template's transforms on `template.yaml` with chosen parameter values
//! (`scripts/cfn_template.py`: AWS::LanguageExtensions, the SAM transform,
//! then conditions and `Fn::If` resolved as CloudFormation resolves them) and
//! reads the CloudFormation that results — resources, properties, policies —
//! not the YAML's text. cfn-lint and `sam validate --lint` check the syntax in
//! `make lint`. No database and no AWS endpoint: only Python and `.venv`.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use serde_json::{json, Value};

/// `DbSecretArn` has no default: every transform is given this one.
pub const DB_SECRET: &str =
    "arn:aws:secretsmanager:us-east-1:123456789012:secret:batch-processor/fn-AbCdEf";

/// The CloudFormation a deploy would create: parameters (with `Value`),
/// conditions, resources and outputs. A resource's own `Ref`/`Fn::GetAtt`
/// stay intrinsics (they are only known once deployed).
pub struct Stack(pub Value);

fn python() -> String {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python3");
    if venv.exists() {
        venv.display().to_string()
    } else {
        "python3".to_owned()
    }
}

/// One call of the script: several parameter sets share its start-up.
pub fn stacks(sets: &[Vec<(&str, &str)>]) -> Vec<Stack> {
    let sets: Vec<Value> = sets
        .iter()
        .map(|set| {
            let mut params = serde_json::Map::new();
            params.insert("DbSecretArn".into(), DB_SECRET.into());
            for (k, v) in set {
                params.insert((*k).into(), (*v).into());
            }
            Value::Object(params)
        })
        .collect();
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new(python())
        .arg(format!("{root}/scripts/cfn_template.py"))
        .arg("--template")
        .arg(format!("{root}/template.yaml"))
        .arg("--sets")
        .arg(Value::Array(sets).to_string())
        .env("SAM_CLI_TELEMETRY", "0")
        .output()
        .expect("python3 runs scripts/cfn_template.py (make tools puts samtranslator in .venv)");
    assert!(
        out.status.success(),
        "the transform failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all: Vec<Value> = serde_json::from_slice(&out.stdout).expect("the script prints JSON");
    all.into_iter().map(Stack).collect()
}

pub fn stack(params: &[(&str, &str)]) -> Stack {
    stacks(&[params.to_vec()]).pop().expect("one stack")
}

/// The stack with every default, transformed once for all tests.
pub fn defaults() -> &'static Stack {
    static DEFAULTS: OnceLock<Stack> = OnceLock::new();
    DEFAULTS.get_or_init(|| stack(&[]))
}

pub fn get_att(resource: &str, attribute: &str) -> Value {
    json!({"Fn::GetAtt": [resource, attribute]})
}

pub fn reference(resource: &str) -> Value {
    json!({"Ref": resource})
}

/// A value as a list (IAM and CloudFormation accept one item or a list).
pub fn list(value: &Value) -> Vec<Value> {
    match value {
        Value::Array(items) => items.clone(),
        Value::Null => vec![],
        one => vec![one.clone()],
    }
}

impl Stack {
    pub fn resources(&self) -> &serde_json::Map<String, Value> {
        self.0["Resources"].as_object().expect("Resources")
    }

    pub fn resource(&self, name: &str) -> &Value {
        self.0["Resources"]
            .get(name)
            .unwrap_or_else(|| panic!("no resource {name} in the stack"))
    }

    pub fn of_type<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = (&'a str, &'a Value)> {
        self.resources()
            .iter()
            .filter(move |(_, r)| r["Type"] == kind)
            .map(|(n, r)| (n.as_str(), &r["Properties"]))
    }

    pub fn parameter(&self, name: &str) -> &Value {
        self.0["Parameters"]
            .get(name)
            .unwrap_or_else(|| panic!("no parameter {name}"))
    }

    /// The one Lambda function of the stack, and its logical id.
    pub fn function(&self) -> (&str, &Value) {
        let functions: Vec<_> = self.of_type("AWS::Lambda::Function").collect();
        assert_eq!(functions.len(), 1, "one function");
        functions[0]
    }

    pub fn env(&self, name: &str) -> Option<&Value> {
        self.function().1["Environment"]["Variables"].get(name)
    }

    /// The statements of every inline policy of the function's role.
    pub fn role_statements(&self) -> Vec<Value> {
        let (_, role) = self.function_role();
        role["Policies"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|p| list(&p["PolicyDocument"]["Statement"]))
            .collect()
    }

    /// The IAM role the function runs as (its `Role` is `Fn::GetAtt <role>.Arn`).
    pub fn function_role(&self) -> (&str, &Value) {
        let role = &self.function().1["Role"]["Fn::GetAtt"][0];
        let name = role
            .as_str()
            .expect("the function's role is one of the stack's");
        let resource = self.resource(name);
        assert_eq!(resource["Type"], "AWS::IAM::Role");
        (name, &resource["Properties"])
    }

    /// Every target of every EventBridge rule, with its rule's logical id.
    pub fn rule_targets(&self) -> Vec<(&str, &Value)> {
        self.of_type("AWS::Events::Rule")
            .flat_map(|(name, rule)| {
                rule["Targets"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(move |t| (name, t))
            })
            .collect()
    }

    /// The statements of the resource policies (SQS queue and SNS topic
    /// policies) attached to the queue or topic `logical_id`.
    pub fn resource_policy_statements(&self, logical_id: &str) -> Vec<Value> {
        let mut out = Vec::new();
        for (kind, key) in [
            ("AWS::SQS::QueuePolicy", "Queues"),
            ("AWS::SNS::TopicPolicy", "Topics"),
        ] {
            for (_, policy) in self.of_type(kind) {
                if list(&policy[key]).contains(&reference(logical_id)) {
                    out.extend(list(&policy["PolicyDocument"]["Statement"]));
                }
            }
        }
        out
    }

    pub fn alarms(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.of_type("AWS::CloudWatch::Alarm")
    }
}

/// The logical id a `Ref`/`Fn::GetAtt` points at.
pub fn target_of(value: &Value) -> Option<&str> {
    value["Ref"]
        .as_str()
        .or_else(|| value["Fn::GetAtt"][0].as_str())
}

#[test]
fn no_trace_log_level_the_runtime_would_log_raw_events_at() {
    let allowed: BTreeSet<&str> = defaults().parameter("LogLevel")["AllowedValues"]
        .as_array()
        .expect("LogLevel has AllowedValues")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(!allowed.contains("TRACE"), "{allowed:?}");
    assert!(allowed.contains("INFO") && allowed.contains("DEBUG"));
    let debug = stack(&[("LogLevel", "DEBUG")]);
    assert_eq!(
        debug.function().1["LoggingConfig"]["ApplicationLogLevel"],
        "DEBUG"
    );
}

#[test]
fn the_http_api_is_throttled_by_parameters() {
    let s = stack(&[
        ("ApiThrottlingBurstLimit", "7"),
        ("ApiThrottlingRateLimit", "3"),
    ]);
    let stages: Vec<_> = s.of_type("AWS::ApiGatewayV2::Stage").collect();
    assert_eq!(stages.len(), 1);
    let settings = &stages[0].1["DefaultRouteSettings"];
    assert_eq!(settings["ThrottlingBurstLimit"], "7");
    assert_eq!(settings["ThrottlingRateLimit"], "3");
}

/// Every queue or topic EventBridge may write to accepts exactly the rules
/// that send to it (as a target or as their dead-letter queue), by
/// `aws:SourceArn`, and nothing else.
#[test]
fn queues_and_topics_accept_only_their_own_rules() {
    let s = defaults();
    let mut senders: std::collections::BTreeMap<String, BTreeSet<String>> = Default::default();
    for (rule, target) in s.rule_targets() {
        let mut destinations = vec![&target["Arn"]];
        destinations.push(&target["DeadLetterConfig"]["Arn"]);
        for d in destinations {
            if let Some(id) = target_of(d) {
                if matches!(
                    s.resource(id)["Type"].as_str(),
                    Some("AWS::SQS::Queue" | "AWS::SNS::Topic")
                ) {
                    senders
                        .entry(id.to_owned())
                        .or_default()
                        .insert(rule.to_owned());
                }
            }
        }
    }
    assert!(senders.len() >= 3, "{senders:?}");
    for (destination, rules) in &senders {
        let statements: Vec<_> = s
            .resource_policy_statements(destination)
            .into_iter()
            .filter(|st| st["Principal"]["Service"] == "events.amazonaws.com")
            .collect();
        assert!(!statements.is_empty(), "{destination} lets EventBridge in");
        let mut allowed = BTreeSet::new();
        for st in &statements {
            let sources = &st["Condition"]["ArnEquals"]["aws:SourceArn"];
            assert!(!sources.is_null(), "{destination}: {st}");
            for source in list(sources) {
                assert_eq!(source["Fn::GetAtt"][1], "Arn", "{source}");
                allowed.insert(target_of(&source).expect("a rule").to_owned());
            }
        }
        assert_eq!(&allowed, rules, "{destination} accepts exactly its rules");
    }
}

#[test]
fn a_ca_bundle_means_verify_full() {
    let [plain, bundle] = <[Stack; 2]>::try_from(stacks(&[
        vec![("DbSslMode", "require")],
        vec![
            ("DbSslMode", "require"),
            ("DbCaFile", "/var/task/certs/supabase-ca.pem"),
        ],
    ]))
    .ok()
    .expect("two stacks");
    assert_eq!(plain.env("DB_SSLMODE"), Some(&json!("require")));
    assert_eq!(bundle.env("DB_SSLMODE"), Some(&json!("verify-full")));
    assert_eq!(
        bundle.env("DB_CA_FILE"),
        Some(&json!("/var/task/certs/supabase-ca.pem"))
    );
}

#[test]
fn the_function_may_publish_to_its_own_bus_only() {
    let s = defaults();
    assert_eq!(s.env("EVENT_BUS_NAME"), Some(&reference("EventBus")));
    let puts: Vec<_> = s
        .role_statements()
        .into_iter()
        .filter(|st| {
            list(&st["Action"])
                .iter()
                .any(|a| a.as_str().is_some_and(|a| a.starts_with("events:")))
        })
        .collect();
    assert_eq!(puts.len(), 1, "{puts:?}");
    assert_eq!(list(&puts[0]["Action"]), vec![json!("events:PutEvents")]);
    assert_eq!(list(&puts[0]["Resource"]), vec![get_att("EventBus", "Arn")]);
}

/// The dashboard's body, with what is only known once deployed filled in.
fn dashboard(s: &Stack) -> Value {
    let boards: Vec<_> = s.of_type("AWS::CloudWatch::Dashboard").collect();
    assert_eq!(boards.len(), 1);
    let body = &boards[0].1["DashboardBody"];
    let text = body["Fn::Sub"].as_str().or(body.as_str()).expect("a body");
    let re = regex::Regex::new(r"\$\{([A-Za-z0-9:.]+)\}").unwrap();
    let filled = re.replace_all(text, |c: &regex::Captures| format!("deployed-{}", &c[1]));
    serde_json::from_str(&filled)
        .unwrap_or_else(|e| panic!("the dashboard body is JSON: {e}\n{filled}"))
}

#[test]
fn every_dashboard_and_alarm_metric_is_one_the_function_emits_or_aws_s() {
    use batch_processor::telemetry::metrics::METRIC_NAMES;
    let s = defaults();
    let board = dashboard(s);
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
    for (name, alarm) in s.alarms() {
        let mut metrics = vec![alarm.clone()];
        for m in alarm["Metrics"].as_array().into_iter().flatten() {
            metrics.push(m["MetricStat"]["Metric"].clone());
        }
        for m in metrics {
            match m["Namespace"].as_str() {
                Some("BatchProcessor") => {
                    ours.push(m["MetricName"].as_str().expect("a name").to_owned())
                }
                Some("AWS/Lambda" | "AWS/SQS") | None => {}
                Some(other) => panic!("{name}: unknown namespace {other}"),
            }
        }
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
    let s = defaults();
    let query = |name: &str| -> String {
        s.resource(name)["Properties"]["QueryString"]
            .as_str()
            .unwrap_or_else(|| panic!("{name} has a query"))
            .to_owned()
    };
    let src = [
        include_str!("../../src/app.rs"),
        include_str!("../../src/jobs/orchestrate.rs"),
    ]
    .concat();
    for (name, message) in [
        ("SlowestInvocationsQuery", "invocation finished"),
        ("RefusedRequestsQuery", "invocation finished"),
        ("FailedBatchesQuery", "batch failed"),
    ] {
        assert!(query(name).contains(message), "{name}");
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
        assert!(query("SlowestInvocationsQuery").contains(field), "{field}");
        assert!(
            src.contains(&format!("{field} =")),
            "the summary line has {field}"
        );
    }
}

// ---- Issue 22: a stack a team can deploy, pause, roll back and trust.

/// Both schedules (orchestrate, publish-events) are rules with a schedule
/// expression; `ScheduleEnabled=false` must switch every one of them off.
#[test]
fn schedule_enabled_false_disables_every_schedule_rule() {
    let [on, off] = <[Stack; 2]>::try_from(stacks(&[vec![], vec![("ScheduleEnabled", "false")]]))
        .ok()
        .expect("two stacks");
    for (s, state) in [(&on, "ENABLED"), (&off, "DISABLED")] {
        let schedules: Vec<_> = s
            .of_type("AWS::Events::Rule")
            .filter(|(_, r)| r.get("ScheduleExpression").is_some())
            .collect();
        assert_eq!(schedules.len(), 2, "orchestrate and publish-events");
        for (name, rule) in schedules {
            assert_eq!(rule["State"], state, "{name}");
        }
    }
    // The bus rules deliver events whatever the schedules do.
    for (name, rule) in off.of_type("AWS::Events::Rule") {
        if rule.get("EventPattern").is_some() {
            assert_ne!(rule["State"], "DISABLED", "{name}");
        }
    }
}

/// EventBridge publishes to an encrypted topic only with a customer-managed
/// key whose policy lets `events.amazonaws.com` generate data keys and
/// decrypt; `alias/aws/sns`'s policy cannot say so.
#[test]
fn every_topic_a_rule_publishes_to_is_one_eventbridge_can_encrypt_for() {
    let s = defaults();
    let mut topics = 0;
    for (rule, target) in s.rule_targets() {
        let Some(id) = target_of(&target["Arn"]) else {
            continue;
        };
        if s.resource(id)["Type"] != "AWS::SNS::Topic" {
            continue;
        }
        topics += 1;
        let key = &s.resource(id)["Properties"]["KmsMasterKeyId"];
        if key.is_null() {
            continue; // unencrypted: nothing to allow
        }
        let key_id = target_of(key)
            .unwrap_or_else(|| panic!("{rule} → {id}: {key} is not a key of the stack"));
        let key = s.resource(key_id);
        assert_eq!(
            key["Type"], "AWS::KMS::Key",
            "{id} is encrypted with {key_id}"
        );
        let statements = list(&key["Properties"]["KeyPolicy"]["Statement"]);
        let allows = |principal: &Value, action: &str| {
            statements.iter().any(|st| {
                st["Effect"] == "Allow"
                    && list(&st["Principal"]["Service"]).contains(principal)
                    && list(&st["Action"]).iter().any(|a| {
                        let a = a.as_str().unwrap_or_default();
                        a == action || a.strip_suffix('*').is_some_and(|p| action.starts_with(p))
                    })
                    && st.get("Condition").is_none()
            })
        };
        for action in ["kms:GenerateDataKey", "kms:Decrypt"] {
            assert!(
                allows(&json!("events.amazonaws.com"), action),
                "{key_id} lets EventBridge {action}"
            );
        }
        // The account keeps control of its key (no key nobody can manage).
        assert!(statements.iter().any(|st| {
            st["Principal"]["AWS"]
                .as_str()
                .is_some_and(|p| p == "arn:aws:iam::123456789012:root")
                && list(&st["Action"]).contains(&json!("kms:*"))
        }));
        assert_eq!(key["Properties"]["EnableKeyRotation"], true);
    }
    assert_eq!(topics, 1, "the admin-alerts topic");
}

/// Every target of every rule — the bus's consumers and the schedules —
/// retries and then dead-letters: an event EventBridge accepted (and the
/// outbox marked published) is never dropped silently.
#[test]
fn every_rule_target_has_a_retry_policy_and_a_dead_letter_queue_it_may_write_to() {
    let s = defaults();
    let targets = s.rule_targets();
    assert!(targets.len() >= 5, "three consumers and two schedules");
    for (rule, target) in targets {
        let retry = &target["RetryPolicy"];
        assert!(
            retry["MaximumRetryAttempts"].as_u64().is_some()
                && retry["MaximumEventAgeInSeconds"].as_u64().is_some(),
            "{rule}: {target}"
        );
        let dlq = &target["DeadLetterConfig"]["Arn"];
        assert_eq!(dlq["Fn::GetAtt"][1], "Arn", "{rule}: {target}");
        let queue = target_of(dlq).expect("a queue of the stack");
        assert_eq!(s.resource(queue)["Type"], "AWS::SQS::Queue", "{rule}");
        let may_send = s.resource_policy_statements(queue).iter().any(|st| {
            st["Effect"] == "Allow"
                && st["Principal"]["Service"] == "events.amazonaws.com"
                && list(&st["Action"]).contains(&json!("sqs:SendMessage"))
                && list(&st["Condition"]["ArnEquals"]["aws:SourceArn"])
                    .contains(&get_att(rule, "Arn"))
        });
        assert!(
            may_send,
            "{rule} may write to its dead-letter queue {queue}"
        );
    }
}

/// A queue a rule delivers to (a consumer's queue) moves a message its
/// consumer keeps failing to a dead-letter queue of its own.
#[test]
fn every_consumer_queue_has_a_redrive_policy() {
    let s = defaults();
    let mut consumers = 0;
    for (rule, target) in s.rule_targets() {
        let Some(id) = target_of(&target["Arn"]) else {
            continue;
        };
        let queue = s.resource(id);
        if queue["Type"] != "AWS::SQS::Queue" {
            continue;
        }
        consumers += 1;
        let redrive = &queue["Properties"]["RedrivePolicy"];
        let dlq = target_of(&redrive["deadLetterTargetArn"])
            .unwrap_or_else(|| panic!("{rule} → {id} has a redrive policy: {queue}"));
        assert_ne!(dlq, id);
        assert_eq!(s.resource(dlq)["Type"], "AWS::SQS::Queue");
        assert!(redrive["maxReceiveCount"].as_u64().is_some_and(|n| n >= 1));
        // The dead letters outlive the messages they came from.
        let retention = |q: &Value| {
            q["Properties"]["MessageRetentionPeriod"]
                .as_u64()
                .unwrap_or(345_600)
        };
        assert!(retention(s.resource(dlq)) >= retention(queue), "{dlq}");
    }
    assert_eq!(consumers, 2, "refund requests and supplier notifications");
}

/// Every queue that collects what failed — rule dead letters, redrives,
/// the function's failed asynchronous invocations — has an alarm on its
/// depth that fires on the first message, sent to `AlarmTopicArn` when one is
/// given. (Every other alarm is wired to it the same way.)
#[test]
fn every_dead_letter_queue_has_an_alarm_wired_to_the_alarm_topic() {
    let topic = "arn:aws:sns:us-east-1:123456789012:operators";
    let [quiet, wired] = <[Stack; 2]>::try_from(stacks(&[vec![], vec![("AlarmTopicArn", topic)]]))
        .ok()
        .expect("two stacks");
    let mut dead_letters = BTreeSet::new();
    for (_, target) in wired.rule_targets() {
        dead_letters.extend(target_of(&target["DeadLetterConfig"]["Arn"]).map(str::to_owned));
    }
    for (_, queue) in wired.of_type("AWS::SQS::Queue") {
        dead_letters
            .extend(target_of(&queue["RedrivePolicy"]["deadLetterTargetArn"]).map(str::to_owned));
    }
    for (_, config) in wired.of_type("AWS::Lambda::EventInvokeConfig") {
        dead_letters.extend(
            target_of(&config["DestinationConfig"]["OnFailure"]["Destination"]).map(str::to_owned),
        );
    }
    assert_eq!(dead_letters.len(), 4, "{dead_letters:?}");
    for queue in &dead_letters {
        let alarms: Vec<_> = wired
            .alarms()
            .filter(|(_, a)| {
                a["Namespace"] == "AWS/SQS"
                    && a["MetricName"] == "ApproximateNumberOfMessagesVisible"
                    && list(&a["Dimensions"]).contains(
                        &json!({"Name": "QueueName", "Value": get_att(queue, "QueueName")}),
                    )
            })
            .collect();
        assert_eq!(alarms.len(), 1, "one alarm on {queue}'s depth");
        let (name, alarm) = alarms[0];
        assert_eq!(
            alarm["ComparisonOperator"], "GreaterThanOrEqualToThreshold",
            "{name}"
        );
        assert!(
            alarm["Threshold"].as_f64().is_some_and(|t| t <= 1.0),
            "{name}"
        );
    }
    for (name, alarm) in wired.alarms() {
        assert_eq!(alarm["AlarmActions"], json!([topic]), "{name}");
    }
    for (name, alarm) in quiet.alarms() {
        assert!(alarm.get("AlarmActions").is_none(), "{name}: {alarm}");
    }
}

fn vpc_policies(s: &Stack) -> Vec<Value> {
    let (_, role) = s.function_role();
    let mut found: Vec<Value> = list(&role["ManagedPolicyArns"])
        .into_iter()
        .filter(|arn| arn.to_string().contains("VPCAccess"))
        .collect();
    for st in s.role_statements() {
        if list(&st["Action"])
            .iter()
            .any(|a| a.to_string().contains("NetworkInterface"))
        {
            found.push(st);
        }
    }
    found
}

#[test]
fn no_vpc_permission_without_subnets_and_never_twice() {
    let [outside, inside] = <[Stack; 2]>::try_from(stacks(&[
        vec![],
        vec![
            ("SubnetIds", "subnet-0a,subnet-0b"),
            ("SecurityGroupIds", "sg-01"),
        ],
    ]))
    .ok()
    .expect("two stacks");
    assert!(outside.function().1.get("VpcConfig").is_none());
    assert_eq!(vpc_policies(&outside), Vec::<Value>::new());
    assert_eq!(
        inside.function().1["VpcConfig"],
        json!({"SubnetIds": ["subnet-0a", "subnet-0b"], "SecurityGroupIds": ["sg-01"]})
    );
    assert_eq!(
        vpc_policies(&inside).len(),
        1,
        "{:?}",
        vpc_policies(&inside)
    );
    // The function's role is the only role: nothing else grants it more.
    assert_eq!(inside.of_type("AWS::IAM::Role").count(), 1);
    let arns = list(&inside.function_role().1["ManagedPolicyArns"]);
    let unique: BTreeSet<String> = arns.iter().map(Value::to_string).collect();
    assert_eq!(
        unique.len(),
        arns.len(),
        "no managed policy twice: {arns:?}"
    );
}

/// `make package` builds `ARCH`, x86_64 unless told otherwise, and
/// `make artifact-e2e` tests that build: the default deploy runs it.
#[test]
fn the_default_architecture_is_the_one_make_package_builds_and_tests() {
    let makefile = include_str!("../../Makefile");
    let arch = makefile
        .lines()
        .find_map(|l| l.strip_prefix("ARCH ?= "))
        .expect("the Makefile's ARCH default")
        .trim();
    assert_eq!(arch, "x86_64");
    assert_eq!(defaults().function().1["Architectures"], json!([arch]));
    // arm64 stays an opt-in.
    let arm = stack(&[("Architecture", "arm64")]);
    assert_eq!(arm.function().1["Architectures"], json!(["arm64"]));
}

/// The alias of the function the stack publishes (`live`), its logical id.
fn live_alias(s: &Stack) -> &str {
    let (function, _) = s.function();
    let aliases: Vec<_> = s.of_type("AWS::Lambda::Alias").collect();
    assert_eq!(aliases.len(), 1, "one alias");
    let (name, alias) = aliases[0];
    assert_eq!(alias["Name"], "live");
    assert_eq!(alias["FunctionName"], reference(function));
    name
}

/// Whatever invokes the function invokes `live`: the schedules, the HTTP API,
/// and every permission; so repointing `live` rolls all of them back.
#[test]
fn schedules_the_http_api_and_every_permission_invoke_the_live_alias() {
    let s = defaults();
    let (function, _) = s.function();
    let alias = live_alias(s);
    let live = reference(alias);
    let version =
        target_of(&s.resource(alias)["Properties"]["FunctionVersion"]).expect("a version");
    assert_eq!(s.resource(version)["Type"], "AWS::Lambda::Version");
    assert_eq!(
        s.resource(version)["DeletionPolicy"],
        "Retain",
        "old versions stay to roll back to"
    );
    let mut schedule_targets = 0;
    for (rule, target) in s.rule_targets() {
        if target_of(&target["Arn"]).is_some_and(|t| t == function || t == alias) {
            assert_eq!(target["Arn"], live, "{rule}");
            schedule_targets += 1;
        }
    }
    assert_eq!(schedule_targets, 2);
    let integrations: Vec<_> = s.of_type("AWS::ApiGatewayV2::Integration").collect();
    assert_eq!(integrations.len(), 1);
    assert_eq!(integrations[0].1["IntegrationUri"], live);
    let permissions: Vec<_> = s.of_type("AWS::Lambda::Permission").collect();
    assert_eq!(permissions.len(), 3, "two schedules and the HTTP API");
    for (name, permission) in permissions {
        assert_eq!(permission["FunctionName"], live, "{name}");
    }
    for (name, config) in s.of_type("AWS::Lambda::EventInvokeConfig") {
        assert_eq!(config["Qualifier"], "live", "{name}");
    }
    // Nothing but the outputs names the unqualified function's ARN.
    let resources = Value::Object(s.resources().clone()).to_string();
    assert!(!resources.contains(&get_att(function, "Arn").to_string()));
}

/// A different value for this parameter, to see what it changes.
fn another_value(name: &str, definition: &Value) -> String {
    let value = definition["Value"].clone();
    let value = match &value {
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(","),
        v => v.as_str().unwrap_or_default().to_owned(),
    };
    if let Some(allowed) = definition["AllowedValues"].as_array() {
        return allowed
            .iter()
            .filter_map(Value::as_str)
            .find(|a| *a != value)
            .expect("two allowed values")
            .to_owned();
    }
    if definition["Type"] == "Number" {
        let n: f64 = value.parse().expect("a number");
        let max = definition["MaxValue"]
            .as_f64()
            .or_else(|| definition["MaxValue"].as_str()?.parse().ok());
        return if max.is_some_and(|m| n + 1.0 > m) {
            n - 1.0
        } else {
            n + 1.0
        }
        .to_string();
    }
    match name {
        "DbSecretArn" => "arn:aws:secretsmanager:us-east-1:123456789012:secret:other-XyZ123".into(),
        "MigrateSecretArn" => {
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:owner-AbC123".into()
        }
        "KmsKeyArn" => {
            "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab".into()
        }
        "AlarmTopicArn" => "arn:aws:sns:us-east-1:123456789012:operators".into(),
        "SupabaseUrl" => "https://abcdefghijklmnopqrst.supabase.co".into(),
        "AdminRolesTable" => "public.user_roles".into(),
        "AdminRoleClaim" => "user_role".into(),
        "DbHost" => "aws-0-eu-central-1.pooler.supabase.com".into(),
        "DbPort" => "6543".into(),
        "DbCaFile" => "/var/task/certs/supabase-ca.pem".into(),
        "SubnetIds" => "subnet-0a,subnet-0b".into(),
        "SecurityGroupIds" => "sg-01".into(),
        "AdminAlertEmail" => "ops@example.com".into(),
        "ScheduleRate" | "PublishScheduleRate" => "rate(30 minutes)".into(),
        _ => format!("{value}-changed"),
    }
}

/// SAM publishes a version when what it hashes changes; it hashes the
/// template, not the parameter values, unless AWS::LanguageExtensions
/// resolved them first. Every parameter that changes the function's
/// configuration must publish a version (and move `live` to it), or the alias
/// keeps running the old configuration while the stack says otherwise; one
/// that does not change the function publishes none.
#[test]
fn every_change_to_the_functions_configuration_publishes_a_version_for_live() {
    let base = defaults();
    let names: Vec<String> = base.0["Parameters"]
        .as_object()
        .expect("parameters")
        .keys()
        .cloned()
        .collect();
    let mut sets = Vec::new();
    for name in &names {
        let mut set = vec![(name.as_str(), another_value(name, base.parameter(name)))];
        if name == "JwtSecret" {
            set.push(("JwtSecretSource", "parameter".to_owned()));
        }
        if name == "SecurityGroupIds" {
            set.push(("SubnetIds", "subnet-0a".to_owned()));
        }
        sets.push(set);
    }
    let changed = stacks(
        &sets
            .iter()
            .map(|set| set.iter().map(|(k, v)| (*k, v.as_str())).collect())
            .collect::<Vec<_>>(),
    );
    let configuration = |s: &Stack| {
        let mut props = s.function().1.clone();
        props.as_object_mut().expect("properties").remove("Code");
        props
    };
    let version = |s: &Stack| s.resource(live_alias(s))["Properties"]["FunctionVersion"].clone();
    let mut publishing = Vec::new();
    for (set, s) in sets.iter().zip(&changed) {
        let name = set[0].0;
        if configuration(s) != configuration(base) {
            assert_ne!(
                version(s),
                version(base),
                "{name} changes the function: a new version for live"
            );
            publishing.push(name);
        } else {
            assert_eq!(
                version(s),
                version(base),
                "{name} leaves the function as it is: no new version"
            );
        }
    }
    for expected in [
        "HttpBudgetMs",
        "LogLevel",
        "DbSecretArn",
        "SubnetIds",
        "Architecture",
        "Tracing",
    ] {
        assert!(publishing.contains(&expected), "{expected}: {publishing:?}");
    }
}

/// Browsers preflight `POST /jobs` (it carries `Authorization`); API Gateway
/// answers from its own CORS configuration, cached by the browser for
/// `MaxAge`, so no preflight invokes the function or takes its concurrency.
#[test]
fn the_http_api_answers_preflights_itself() {
    let origin = "https://shop.example.com";
    let s = stack(&[("CorsAllowOrigin", origin)]);
    let apis: Vec<_> = s.of_type("AWS::ApiGatewayV2::Api").collect();
    assert_eq!(apis.len(), 1);
    let cors = &apis[0].1["CorsConfiguration"];
    assert_eq!(cors["AllowOrigins"], json!([origin]));
    assert!(list(&cors["AllowMethods"]).contains(&json!("POST")));
    let headers: BTreeSet<String> = list(&cors["AllowHeaders"])
        .iter()
        .filter_map(|h| h.as_str().map(str::to_ascii_lowercase))
        .collect();
    // behaviour §2: the headers the function itself allows.
    let expected: BTreeSet<String> = [
        "authorization",
        "apikey",
        "x-client-info",
        "content-type",
        "idempotency-key",
    ]
    .map(String::from)
    .into();
    assert_eq!(headers, expected);
    assert!(
        cors["MaxAge"].as_u64().is_some_and(|age| age >= 300),
        "{cors}"
    );
    for (name, route) in s.of_type("AWS::ApiGatewayV2::Route") {
        let key = route["RouteKey"].as_str().unwrap_or_default();
        assert!(
            !key.starts_with("OPTIONS") && !key.starts_with("ANY"),
            "{name}: {key}"
        );
    }
    assert_eq!(s.env("CORS_ALLOW_ORIGIN"), Some(&json!(origin)));
}

/// API Gateway stops waiting after the integration's timeout (30 s at most
/// for HTTP APIs): a job over HTTP must answer before, whatever the operator
/// sets `HttpBudgetMs` to.
#[test]
fn the_http_budget_is_below_the_integrations_timeout() {
    let s = defaults();
    let integrations: Vec<_> = s.of_type("AWS::ApiGatewayV2::Integration").collect();
    let timeout = integrations[0].1["TimeoutInMillis"]
        .as_u64()
        .expect("the integration's timeout is set");
    assert!(timeout <= 30_000);
    assert_eq!(s.env("HTTP_BUDGET_MS"), Some(&json!("25000")));
    let max: u64 = s.parameter("HttpBudgetMs")["MaxValue"]
        .as_u64()
        .expect("HttpBudgetMs has a MaxValue");
    assert!(max < timeout, "{max} < {timeout}");
    let tuned = stack(&[("HttpBudgetMs", "20000")]);
    assert_eq!(tuned.env("HTTP_BUDGET_MS"), Some(&json!("20000")));
}

/// What an operator tunes is a parameter that reaches the function's
/// environment; optional ones stay out of it when empty.
#[test]
fn operator_tunables_are_parameters_that_reach_the_environment() {
    let owner = "arn:aws:secretsmanager:us-east-1:123456789012:secret:batch-processor/owner-XyZ789";
    let table = [
        ("DbStatementTimeoutMs", "DB_STATEMENT_TIMEOUT_MS", "15000"),
        (
            "MigrateStatementTimeoutMs",
            "MIGRATE_STATEMENT_TIMEOUT_MS",
            "200000",
        ),
        ("MigrateLockTimeoutMs", "MIGRATE_LOCK_TIMEOUT_MS", "30000"),
        ("OrchestrateChunkSize", "ORCHESTRATE_CHUNK_SIZE", "500"),
        ("OrchestrateConnections", "ORCHESTRATE_CONNECTIONS", "1"),
        ("AdminRolesTable", "ADMIN_ROLES_TABLE", "public.user_roles"),
        ("AdminRoleClaim", "ADMIN_ROLE_CLAIM", "user_role"),
        ("JwtAudience", "JWT_AUDIENCE", "authenticated-users"),
        ("MigrateSecretArn", "MIGRATE_SECRET_ID", owner),
        ("HttpBudgetMs", "HTTP_BUDGET_MS", "20000"),
        ("DbPooler", "DB_POOLER", "transaction"),
        ("PublishConcurrency", "PUBLISH_CONCURRENCY", "4"),
        ("PublishMaxAttempts", "PUBLISH_MAX_ATTEMPTS", "5"),
    ];
    let tuned = stack(&table.map(|(p, _, v)| (p, v)));
    for (param, var, value) in table {
        assert_eq!(tuned.env(var), Some(&json!(value)), "{param} → {var}");
    }
    let base = defaults();
    assert_eq!(
        base.env("ADMIN_ROLE_CLAIM"),
        Some(&json!("app_metadata.role"))
    );
    assert_eq!(base.env("JWT_AUDIENCE"), Some(&json!("authenticated")));
    // behaviour §8's defaults.
    assert_eq!(base.env("PUBLISH_CONCURRENCY"), Some(&json!("8")));
    assert_eq!(base.env("PUBLISH_MAX_ATTEMPTS"), Some(&json!("10")));
    for unset in [
        // auto: the function decides by the host (Supabase's transaction pooler on 6543).
        "DB_POOLER",
        "ADMIN_ROLES_TABLE",
        "MIGRATE_SECRET_ID",
        "JWT_SECRET",
        "DB_HOST",
        "DB_CA_FILE",
    ] {
        assert_eq!(
            base.env(unset),
            None,
            "{unset} is left out when its parameter is empty"
        );
    }
    // The gateway's authorizer checks the same audience as the function.
    let gated = stack(&[
        ("SupabaseUrl", "https://abcdefghijklmnopqrst.supabase.co"),
        ("GatewayJwtAuthorizer", "true"),
        ("JwtAudience", "authenticated-users"),
    ]);
    let authorizers: Vec<_> = gated.of_type("AWS::ApiGatewayV2::Authorizer").collect();
    assert_eq!(
        authorizers[0].1["JwtConfiguration"]["Audience"],
        json!(["authenticated-users"])
    );
}

/// Every variable the template gives the function — at the defaults and
/// with every optional parameter set — is a row of the one configuration
/// table, docs/behaviour.md §8.
#[test]
fn every_variable_the_template_sets_is_a_row_of_the_configuration_table() {
    let table = crate::offline::docs::configuration_table();
    let everything = stack(&[
        (
            "MigrateSecretArn",
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:batch-processor/owner-XyZ789",
        ),
        ("DbHost", "db.example.com"),
        ("DbCaFile", "/var/task/certs/rds-global-bundle.pem"),
        ("JwtSecretSource", "parameter"),
        ("JwtSecret", "a-legacy-secret"),
        ("SupabaseUrl", "https://abcdefghijklmnopqrst.supabase.co"),
        ("AdminRolesTable", "public.user_roles"),
        ("DbPooler", "transaction"),
    ]);
    let mut names = BTreeSet::new();
    for s in [defaults(), &everything] {
        let vars = s.function().1["Environment"]["Variables"]
            .as_object()
            .expect("the function's environment");
        names.extend(vars.keys().cloned());
    }
    assert!(names.len() >= 25, "{names:?}");
    let missing: Vec<&String> = names.iter().filter(|n| !table.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "set by template.yaml but not a row of docs/behaviour.md §8: {missing:?}"
    );
}

fn secrets_readable(s: &Stack) -> BTreeSet<String> {
    s.role_statements()
        .iter()
        .filter(|st| list(&st["Action"]).contains(&json!("secretsmanager:GetSecretValue")))
        .flat_map(|st| list(&st["Resource"]))
        .map(|r| r.as_str().expect("a secret's ARN").to_owned())
        .collect()
}

/// The function reads its own secret; the owner's secret only when
/// `MigrateSecretArn` is given; KMS decrypts only through Secrets Manager and
/// only with `KmsKeyArn`.
#[test]
fn the_function_reads_the_secrets_it_is_given_and_no_other() {
    let owner = "arn:aws:secretsmanager:us-east-1:123456789012:secret:batch-processor/owner-XyZ789";
    let key = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";
    let [base, both] = <[Stack; 2]>::try_from(stacks(&[
        vec![],
        vec![("MigrateSecretArn", owner), ("KmsKeyArn", key)],
    ]))
    .ok()
    .expect("two stacks");
    assert_eq!(
        secrets_readable(&base),
        BTreeSet::from([DB_SECRET.to_owned()])
    );
    assert_eq!(
        secrets_readable(&both),
        BTreeSet::from([DB_SECRET.to_owned(), owner.to_owned()])
    );
    let kms = |s: &Stack| -> Vec<Value> {
        s.role_statements()
            .into_iter()
            .filter(|st| {
                list(&st["Action"])
                    .iter()
                    .any(|a| a.to_string().contains("kms:"))
            })
            .collect()
    };
    assert!(kms(&base).is_empty());
    let decrypt = kms(&both);
    assert_eq!(decrypt.len(), 1);
    assert_eq!(list(&decrypt[0]["Action"]), vec![json!("kms:Decrypt")]);
    assert_eq!(list(&decrypt[0]["Resource"]), vec![json!(key)]);
    assert_eq!(
        decrypt[0]["Condition"]["StringEquals"]["kms:ViaService"],
        "secretsmanager.us-east-1.amazonaws.com"
    );
}

/// The environment the template gives starts the function: at every
/// default, and with every numeric parameter at its lowest and at its highest
/// (so a value the template accepts is one the code accepts). No variable is
/// empty.
#[test]
fn the_templates_environment_starts_the_function_at_defaults_and_extremes() {
    use batch_processor::configuration::Settings;
    let base = defaults();
    let numbers: Vec<(String, String, String)> = base.0["Parameters"]
        .as_object()
        .expect("parameters")
        .iter()
        .filter(|(_, d)| d["Type"] == "Number")
        .map(|(name, d)| {
            let bound = |key: &str| {
                d[key]
                    .as_f64()
                    .or_else(|| d[key].as_str()?.parse().ok())
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| d["Value"].as_str().unwrap_or_default().to_owned())
            };
            (name.clone(), bound("MinValue"), bound("MaxValue"))
        })
        .collect();
    let low: Vec<_> = numbers
        .iter()
        .map(|(n, lo, _)| (n.as_str(), lo.as_str()))
        .collect();
    let high: Vec<_> = numbers
        .iter()
        .map(|(n, _, hi)| (n.as_str(), hi.as_str()))
        .collect();
    let all = stacks(&[vec![], low, high]);
    for (which, s) in ["defaults", "lowest", "highest"].iter().zip(&all) {
        let vars = s.function().1["Environment"]["Variables"]
            .as_object()
            .expect("variables")
            .clone();
        for (k, v) in &vars {
            assert!(v.as_str() != Some(""), "{which}: {k} is empty");
        }
        let lookup = |key: &str| -> Option<String> {
            if key == batch_processor::configuration::ON_LAMBDA_SIGNAL {
                return Some("on-demand".into());
            }
            vars.get(key).map(|v| match v.as_str() {
                Some(text) => text.to_owned(),
                None => format!("deployed-{}", target_of(v).unwrap_or("value")),
            })
        };
        if let Err(e) = Settings::from_lookup(lookup) {
            panic!("{which}: the function would not start: {e}");
        }
    }
}

/// A statement, or a migration, must never outlive the invocation it runs
/// in: Lambda would kill the instance with the transaction still open.
#[test]
fn database_timeouts_fit_in_the_functions_timeout() {
    let s = defaults();
    let timeout_ms = s.function().1["Timeout"].as_u64().expect("a timeout") * 1000;
    for name in [
        "DbStatementTimeoutMs",
        "MigrateStatementTimeoutMs",
        "MigrateLockTimeoutMs",
    ] {
        let max = s.parameter(name)["MaxValue"].as_u64().expect("a MaxValue");
        let min = s.parameter(name)["MinValue"].as_u64().expect("a MinValue");
        assert!(min > 0, "{name}: 0 would mean no timeout at all");
        assert!(max < timeout_ms, "{name}: {max} < {timeout_ms}");
    }
}

/// A number CloudFormation was given, whether the transform left it a
/// string or a number.
fn number_of(value: &Value) -> Option<f64> {
    value.as_f64().or_else(|| value.as_str()?.parse().ok())
}

/// Behaviour §10, issue 21: consumers can replay what was delivered. The bus
/// has one archive, of everything it receives, kept as long as
/// `EventArchiveRetentionDays` says; its ARN is an output for
/// `aws events start-replay`.
#[test]
fn the_bus_archives_every_event_for_as_long_as_the_parameter_says() {
    let [base, week] =
        <[Stack; 2]>::try_from(stacks(&[vec![], vec![("EventArchiveRetentionDays", "7")]]))
            .ok()
            .expect("two stacks");
    for (s, days) in [(&base, 30.0), (&week, 7.0)] {
        let archives: Vec<_> = s.of_type("AWS::Events::Archive").collect();
        assert_eq!(archives.len(), 1, "one archive");
        let (name, archive) = archives[0];
        assert_eq!(archive["SourceArn"], get_att("EventBus", "Arn"), "{name}");
        assert!(
            archive.get("EventPattern").is_none(),
            "every event, unfiltered: {archive}"
        );
        assert_eq!(number_of(&archive["RetentionDays"]), Some(days));
        assert_eq!(
            s.0["Outputs"]["EventArchiveArn"]["Value"],
            get_att(name, "Arn")
        );
    }
    let retention = base.parameter("EventArchiveRetentionDays");
    assert_eq!(
        number_of(&retention["MinValue"]),
        Some(0.0),
        "0: kept forever"
    );
}

/// Behaviour §10: an event set aside (refused `PublishMaxAttempts` times, or
/// too large) leaves the pending count, so the oldest-pending alarm cannot
/// see it; its own alarm fires on the first one, whichever job set it aside.
#[test]
fn a_set_aside_event_raises_its_own_alarm() {
    let s = defaults();
    let alarms: Vec<_> = s
        .alarms()
        .filter(|(_, a)| {
            a["Metrics"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|m| m["MetricStat"]["Metric"]["MetricName"] == "EventsSetAside")
        })
        .collect();
    assert_eq!(alarms.len(), 1, "one alarm on EventsSetAside");
    let (name, alarm) = alarms[0];
    assert_eq!(name, "EventsSetAsideAlarm");
    assert_eq!(alarm["ComparisonOperator"], "GreaterThanOrEqualToThreshold");
    assert_eq!(number_of(&alarm["Threshold"]), Some(1.0));
    let metrics = alarm["Metrics"].as_array().expect("metric math");
    let jobs: BTreeSet<String> = metrics
        .iter()
        .filter(|m| m.get("MetricStat").is_some())
        .filter_map(|m| {
            let metric = &m["MetricStat"]["Metric"];
            assert_eq!(metric["Namespace"], "BatchProcessor");
            assert_eq!(m["MetricStat"]["Stat"], "Sum");
            metric["Dimensions"][0]["Value"].as_str().map(str::to_owned)
        })
        .collect();
    // Every job that delivers can set an event aside.
    let delivering: BTreeSet<String> = [
        "publish-events",
        "orchestrate",
        "review-batch",
        "process-order",
    ]
    .map(String::from)
    .into();
    assert_eq!(jobs, delivering);
    let total: Vec<_> = metrics.iter().filter(|m| m["ReturnData"] == true).collect();
    assert_eq!(total.len(), 1);
    assert_eq!(total[0]["Expression"], "SUM(METRICS())");
}
