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
    /// policies) that apply to `target` (a `Ref` or `Fn::GetAtt` of it).
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
