//! Credentials and connections as production needs them (behaviour §8): Secrets
//! Manager with rotation, TLS, outages, slow statements, and a transaction-mode
//! pooler — each against the real thing.

use batch_processor::{App, Invocation, InvocationError};
use serde_json::{json, Value};

use crate::helpers::*;
use crate::infra::*;

fn app_with(env: &[(&str, &str)]) -> App {
    let map: std::collections::HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let settings = batch_processor::configuration::Settings::from_lookup(|k| map.get(k).cloned())
        .expect("settings");
    App::new(settings).expect("app builds")
}

async fn run(app: &App, event: Value) -> Result<Value, InvocationError> {
    app.handle(event, &Invocation::new("conn-test", None)).await
}

async fn admin_sql(url: &str, sql: &str) {
    connect(url)
        .await
        .batch_execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

fn error_text(e: &InvocationError) -> String {
    error_json(e)["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Read the secret, run jobs; rotate the password (secret updated, connections
/// killed): the next job succeeds through one fresh read of the secret. A
/// password the secret does not know is a 503, not a loop.
#[tokio::test]
async fn secrets_manager_credentials_survive_a_rotation() {
    let cluster = tokio::task::spawn_blocking(|| Cluster::start(None))
        .await
        .unwrap();
    let super_url = cluster.superuser_url("postgres");
    admin_sql(
        &super_url,
        "CREATE ROLE app_user LOGIN PASSWORD 'first-password'",
    )
    .await;
    admin_sql(&super_url, "CREATE DATABASE app OWNER app_user").await;
    let sm = secrets_client().await;
    let name = format!("batch-processor/test/{}", uuid::Uuid::new_v4());
    let secret = |password: &str| {
        json!({"engine": "postgres", "host": "127.0.0.1", "port": cluster.port.to_string(),
               "username": "app_user", "password": password, "dbname": "app",
               "jwtSecret": JWT_SECRET})
        .to_string()
    };
    sm.create_secret()
        .name(&name)
        .secret_string(secret("first-password"))
        .send()
        .await
        .expect("create secret in moto");

    let app = app_with(&[("DB_SECRET_ID", &name)]);
    let migrated = run(&app, json!({"jobType": "migrate"}))
        .await
        .expect("migrate via the secret");
    assert_eq!(migrated["success"], true);
    // The JWT secret comes from the database secret too (no JWT_SECRET set).
    let body = json!({"jobType": "orchestrate", "data": {"dryRun": true}}).to_string();
    let auth = bearer(&admin_token());
    let resp = run(
        &app,
        http_v2("POST", Some(&body), &[("authorization", &auth)]),
    )
    .await
    .unwrap();
    assert_eq!(proxy(&resp).0, 200, "{resp}");

    // The secret is cached: breaking it in Secrets Manager changes nothing
    // while the password still works.
    sm.put_secret_value()
        .secret_id(&name)
        .secret_string("{\"not\": \"usable\"}")
        .send()
        .await
        .unwrap();
    run(&app, json!({"jobType": "orchestrate"}))
        .await
        .expect("cached secret still used");

    // Rotation: new password in Postgres and in the secret; connections killed.
    admin_sql(&super_url, "ALTER ROLE app_user PASSWORD 'second-password'").await;
    sm.put_secret_value()
        .secret_id(&name)
        .secret_string(secret("second-password"))
        .send()
        .await
        .unwrap();
    admin_sql(
        &super_url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'app_user'",
    )
    .await;
    let after = run(&app, json!({"jobType": "orchestrate"})).await;
    assert!(after.is_ok(), "rotated: {:?}", after.err());

    // A password nobody told the secret about: one re-read, then a 503.
    admin_sql(&super_url, "ALTER ROLE app_user PASSWORD 'third-password'").await;
    admin_sql(
        &super_url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'app_user'",
    )
    .await;
    let err = run(&app, json!({"jobType": "orchestrate"}))
        .await
        .unwrap_err();
    assert_eq!(err.status, 503);
    let msg = error_text(&err);
    assert!(msg.contains("refused the credentials"), "{msg}");
    assert!(!err.message.contains("second-password") && !err.message.contains("third-password"));

    // An RDS-managed secret holds only credentials: DB_HOST/DB_PORT/DB_NAME fill in.
    let bare = format!("{name}-bare");
    sm.create_secret()
        .name(&bare)
        .secret_string(json!({"username": "app_user", "password": "third-password"}).to_string())
        .send()
        .await
        .unwrap();
    let port = cluster.port.to_string();
    let app2 = app_with(&[
        ("DB_SECRET_ID", &bare),
        ("DB_HOST", "127.0.0.1"),
        ("DB_PORT", &port),
        ("DB_NAME", "app"),
        ("JWT_SECRET", JWT_SECRET),
    ]);
    run(&app2, json!({"jobType": "orchestrate"}))
        .await
        .expect("host from DB_HOST");

    // A secret that cannot be read: 503 saying so.
    let app3 = app_with(&[("DB_SECRET_ID", "no/such/secret")]);
    let err = run(&app3, json!({"jobType": "orchestrate"}))
        .await
        .unwrap_err();
    assert_eq!(err.status, 503);
    assert!(
        error_text(&err).contains("could not read the database secret"),
        "{}",
        err.message
    );
}

/// `verify-full` with the CA connects over TLS; without it the handshake is
/// refused with a clear 503; `require` encrypts without verifying.
#[tokio::test]
async fn tls_modes_against_a_server_with_a_test_ca() {
    let (cluster, certs) = tokio::task::spawn_blocking(|| {
        let certs = Certs::make();
        (Cluster::start(Some(&certs)), certs)
    })
    .await
    .unwrap();
    let super_url = cluster.superuser_url("postgres");
    admin_sql(&super_url, "CREATE DATABASE app").await;
    let ca = certs.ca.to_str().unwrap().to_owned();
    let url = cluster.superuser_url("app");

    let verified = app_with(&[
        ("DATABASE_URL", &url),
        ("DB_SSLMODE", "verify-full"),
        ("DB_CA_FILE", &ca),
    ]);
    run(&verified, json!({"jobType": "migrate"}))
        .await
        .expect("verify-full with the CA");
    let ssl: bool = connect(&super_url)
        .await
        .query_one(
            "SELECT bool_and(s.ssl) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
              WHERE a.application_name = 'batch-processor'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(ssl, "the function's connections are encrypted");

    let unverified = app_with(&[("DATABASE_URL", &url), ("DB_SSLMODE", "verify-full")]);
    let err = run(&unverified, json!({"jobType": "orchestrate"}))
        .await
        .unwrap_err();
    assert_eq!(err.status, 503);
    assert!(error_text(&err).contains("TLS"), "{}", err.message);

    let required = app_with(&[("DATABASE_URL", &url), ("DB_SSLMODE", "require")]);
    run(&required, json!({"jobType": "orchestrate"}))
        .await
        .expect("require: encrypted, unverified");

    // A CA file that does not exist stops the instance at init with the variable named.
    let map: std::collections::HashMap<String, String> = [
        ("DATABASE_URL", url.as_str()),
        ("DB_SSLMODE", "verify-full"),
        ("DB_CA_FILE", "/nonexistent/rds-global-bundle.pem"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let settings =
        batch_processor::configuration::Settings::from_lookup(|k| map.get(k).cloned()).unwrap();
    let err = App::new(settings).err().expect("init fails");
    assert!(err.to_string().contains("DB_CA_FILE"), "{err}");
}

/// The line to the database is cut: a 503 (the connection is refused at once,
/// and `CONNECT_TIMEOUT` bounds a connection that hangs). Restored: the next
/// invocation of the same instance succeeds, no restart.
#[tokio::test]
async fn an_outage_is_a_quick_503_and_the_same_instance_recovers() {
    let t = TestApp::spawn().await;
    let upstream = port_of(&t.url);
    let proxy = Proxy::start(upstream).await;
    let via_proxy = t
        .url
        .replace(&format!(":{upstream}/"), &format!(":{}/", proxy.port));
    let app = app_with(&[("DATABASE_URL", &via_proxy), ("JWT_SECRET", JWT_SECRET)]);
    run(&app, json!({"jobType": "orchestrate"}))
        .await
        .expect("through the proxy");

    proxy.cut();
    for _ in 0..2 {
        let err = run(&app, json!({"jobType": "orchestrate"}))
            .await
            .unwrap_err();
        assert_eq!(err.status, 503, "{}", err.message);
        assert!(
            error_text(&err).starts_with("Database unavailable"),
            "{}",
            err.message
        );
    }

    proxy.restore();
    let back = run(&app, json!({"jobType": "orchestrate"})).await;
    assert!(back.is_ok(), "recovered: {:?}", back.err());
}

/// A statement stuck behind a lock ends by the lock/statement timeout with a
/// clear 503 (the server's own reason: its timeout fired, so the wait was
/// bounded by it, not by the Lambda timeout), and changes nothing.
#[tokio::test]
async fn a_statement_stuck_on_a_lock_times_out_with_a_503() {
    let t = TestApp::spawn_with(&[("DB_STATEMENT_TIMEOUT_MS", "500")]).await;
    let batch = t.batch(110, 200, -60.0).await;
    t.orchestrate(json!({})).await; // -> needs_review
    let holder = connect(&t.url).await;
    holder.batch_execute("BEGIN").await.unwrap();
    holder
        .execute(
            "SELECT 1 FROM production_batches WHERE id = $1 FOR UPDATE",
            &[&batch],
        )
        .await
        .unwrap();
    let err = t
        .direct(
            "review-batch",
            json!({"batchId": batch, "decision": "approve"}),
        )
        .await
        .unwrap_err();
    assert_eq!(err.status, 503, "{}", err.message);
    // The lock and statement timeouts are one setting: either may fire first.
    let reason = error_text(&err);
    assert!(
        reason == "Database unavailable: timed out waiting for a lock"
            || reason == "Database unavailable: a statement timed out",
        "{}",
        err.message
    );
    holder.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(t.status_of(batch).await, "needs_review");
}

/// Everything through PgBouncer in transaction mode (no named prepared
/// statements, no session state): the same results as direct.
#[tokio::test]
async fn every_job_works_through_a_transaction_mode_pooler() {
    let t = TestApp::unmigrated(&[]).await;
    let upstream = port_of(&t.url);
    let bouncer = Pgbouncer::start(upstream).await;
    let pooled_url = t
        .url
        .replace(&format!(":{upstream}/"), &format!(":{}/", bouncer.port));
    let env = [
        ("DATABASE_URL", pooled_url.as_str()),
        ("DB_POOLER", "transaction"),
        ("JWT_SECRET", JWT_SECRET),
        ("DB_POOL_SIZE", "3"),
    ];
    let app = app_with(&env);
    let migrated = run(&app, json!({"jobType": "migrate"}))
        .await
        .expect("migrate through pgbouncer");
    assert_eq!(migrated["success"], true);
    assert!(!migrated["applied"].as_array().unwrap().is_empty());

    t.terms("active", 100, 3, "10.00", Some("5"), 10).await;
    let confirm = t.batch(180, 200, -60.0).await;
    let review = t.batch(110, 200, -60.0).await;
    let cancel = t.batch(20, 200, -60.0).await;
    t.order(cancel, 20, "12.00", "paid").await;
    let resp = run(&app, json!({"jobType": "orchestrate"}))
        .await
        .expect("orchestrate through pgbouncer");
    let r = by_batch(&resp);
    assert_eq!(r[&confirm]["action"], "confirmed");
    assert_eq!(r[&review]["action"], "needs_review");
    assert_eq!(r[&cancel]["ordersCancelled"], 1);
    let reviewed = run(&app, json!({"jobType": "review-batch",
                                    "data": {"batchId": review, "decision": "reject", "note": "via pooler"}}))
    .await
    .expect("review through pgbouncer");
    assert_eq!(reviewed["results"][0]["action"], "cancelled");

    // A burst of concurrent orders from several instances, all through the pooler.
    let apps: Vec<App> = (0..6).map(|_| app_with(&env)).collect();
    let orders = futures::future::join_all(apps.iter().enumerate().map(|(i, app)| async move {
        let mut out = Vec::new();
        for j in 0..5 {
            let variant = ["a", "b", "c", "d"][(i + j) % 4];
            let mut data = order_data(
                "pooled",
                7 + (i as i64 * 3 + j as i64) % 11,
                variant,
                BUYER_SUB,
            );
            data["idempotencyKey"] = json!(format!("pooled-{i}-{j}"));
            out.push(run(app, json!({"jobType": "process-order", "data": data})).await);
        }
        out
    }))
    .await;
    let mut placed = 0;
    for r in orders.into_iter().flatten() {
        r.unwrap_or_else(|e| panic!("order through pgbouncer: {}", e.message));
        placed += 1;
    }
    assert_eq!(placed, 30);
    assert_eq!(
        t.count(
            "SELECT count(*) FROM production_batches b
              WHERE b.product_category = 'pooled'
                AND (b.current_quantity <> (SELECT sum(quantity) FROM batch_contributions c WHERE c.batch_id = b.id)
                     OR b.current_quantity > b.target_quantity OR b.current_style_count > b.max_styles)"
        )
        .await,
        0
    );
    assert_eq!(
        t.count("SELECT count(*) FROM orders WHERE product_type = 'pooled'")
            .await,
        30
    );
    // A replay through the pooler answers from the record.
    let mut again = order_data("pooled", 7, "a", BUYER_SUB);
    again["idempotencyKey"] = json!("pooled-0-0");
    let replay = run(&app, json!({"jobType": "process-order", "data": again}))
        .await
        .unwrap();
    assert_eq!(replay["idempotentReplay"], true);
}

/// Every byte but the URL-unreserved ones as `%XX`, as a dashboard's
/// "copy" button or a careful operator writes a password into a URL.
fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Credentials as Supabase hands them out (behaviour §8): connection strings
/// — the whole SecretString, or `uri` in a JSON object beside `jwtSecret` —
/// with URL-escaped passwords and the pooler's dotted user. `migrate` runs on
/// `MIGRATE_SECRET_ID`, the owner's, who is no superuser but may create roles
/// (hosted Supabase's `postgres`) and runs `sql/function-role.sql`; every
/// other job on the runtime secret, as the role it made. A malformed secret
/// is a 503 saying what is wrong, never the secret.
#[tokio::test]
async fn connection_strings_the_owner_migrates_and_the_role_runs_the_jobs() {
    const OWNER: &str = "postgres.abcdefghijklmnopqrst";
    const OWNER_PASSWORD: &str = "p@ss:w/rd%41 #?&=";
    const FN_PASSWORD: &str = "fn/p@ss%:x";
    let cluster = tokio::task::spawn_blocking(|| Cluster::start(None))
        .await
        .unwrap();
    let super_url = cluster.superuser_url("postgres");
    admin_sql(
        &super_url,
        &format!(
            "CREATE ROLE \"{OWNER}\" LOGIN NOSUPERUSER CREATEROLE PASSWORD '{OWNER_PASSWORD}'"
        ),
    )
    .await;
    admin_sql(
        &super_url,
        &format!("CREATE DATABASE app OWNER \"{OWNER}\""),
    )
    .await;
    admin_sql(
        &cluster.superuser_url("app"),
        &format!(
            "{SUPABASE_ROLES}
             ALTER DEFAULT PRIVILEGES FOR ROLE \"{OWNER}\" IN SCHEMA public
                 GRANT ALL ON TABLES TO anon, authenticated, service_role;"
        ),
    )
    .await;
    let owner_url = format!(
        "postgresql://{}:{}@127.0.0.1:{}/app",
        url_escape(OWNER),
        url_escape(OWNER_PASSWORD),
        cluster.port
    );
    let fn_url = format!(
        "postgresql://batch_processor_fn:{}@127.0.0.1:{}/app?application_name=bp-fn",
        url_escape(FN_PASSWORD),
        cluster.port
    );
    let sm = secrets_client().await;
    let name = format!("batch-processor/test/{}", uuid::Uuid::new_v4());
    let (owner_secret, fn_secret) = (format!("{name}/owner"), format!("{name}/function"));
    sm.create_secret()
        .name(&owner_secret)
        .secret_string(&owner_url)
        .send()
        .await
        .expect("the owner's secret: the whole string");
    sm.create_secret()
        .name(&fn_secret)
        .secret_string(json!({"uri": fn_url, "jwtSecret": JWT_SECRET}).to_string())
        .send()
        .await
        .expect("the function's secret: uri and jwtSecret");

    let app = app_with(&[
        ("DB_SECRET_ID", &fn_secret),
        ("MIGRATE_SECRET_ID", &owner_secret),
    ]);
    let migrated = run(&app, json!({"jobType": "migrate"}))
        .await
        .unwrap_or_else(|e| panic!("migrate as the owner: {}", e.message));
    assert_eq!(migrated["success"], true);
    assert_eq!(migrated["warnings"], json!([]));
    let owners: Vec<String> = column(
        &connect(&cluster.superuser_url("app")).await,
        "SELECT DISTINCT tableowner::text FROM pg_tables WHERE schemaname = 'public'",
        &[],
    )
    .await;
    assert_eq!(
        owners,
        [OWNER],
        "the dotted, escaped owner made every table"
    );

    // The owner — no superuser — makes the function's role.
    let owner = connect(&owner_url).await;
    owner
        .batch_execute(include_str!("../../sql/function-role.sql"))
        .await
        .unwrap_or_else(|e| panic!("sql/function-role.sql as a NOSUPERUSER owner: {e:?}"));
    owner
        .batch_execute(&format!(
            "ALTER ROLE batch_processor_fn PASSWORD '{FN_PASSWORD}'"
        ))
        .await
        .unwrap();

    // The jobs, as that role; HS256 tokens checked with the secret's jwtSecret.
    let body = json!({"jobType": "orchestrate", "data": {"dryRun": true}}).to_string();
    let resp = run(
        &app,
        http_v2(
            "POST",
            Some(&body),
            &[("authorization", &bearer(&admin_token()))],
        ),
    )
    .await
    .unwrap();
    assert_eq!(proxy(&resp).0, 200, "{resp}");
    let sql = connect(&cluster.superuser_url("app")).await;
    sql.batch_execute(
        "INSERT INTO suppliers (id, company_name) VALUES ('5a000000-0000-4000-8000-000000000001', 'S');
         INSERT INTO supplier_mou_terms (supplier_id, moq_per_batch, base_price, status)
         VALUES ('5a000000-0000-4000-8000-000000000001', 100, 10.00, 'active')",
    )
    .await
    .unwrap();
    let placed = run(
        &app,
        json!({"jobType": "process-order", "data": order_data("t-shirts", 10, "navy-m", BUYER_SUB)}),
    )
    .await
    .unwrap_or_else(|e| panic!("process-order as the role: {}", e.message));
    assert_eq!(placed["isNewBatch"], true);
    let users: Vec<String> = column(
        &sql,
        "SELECT DISTINCT usename::text FROM pg_stat_activity WHERE application_name = 'bp-fn'",
        &[],
    )
    .await;
    assert_eq!(users, ["batch_processor_fn"]);
    let again = run(&app, json!({"jobType": "migrate"})).await.unwrap();
    assert_eq!(again["applied"], json!([]), "migrate again, as the owner");

    // Malformed secrets: a 503 naming what is wrong, and never the secret.
    for (text, says) in [
        (
            json!({"uri": "postgresql://batch_processor_fn:[YOUR-PASSWORD]@127.0.0.1:5432/app"})
                .to_string(),
            "still holds the [YOUR-PASSWORD] placeholder",
        ),
        (
            format!("postgresql://u:{FN_PASSWORD}-hunter2@127.0.0.1:5432/app?pgbouncer=true"),
            "options is unknown (pgbouncer)",
        ),
        (
            json!({"connectionString": "mysql://u:hunter2@h/app"}).to_string(),
            "does not start with postgresql://",
        ),
    ] {
        let bad = format!("{name}/bad-{}", uuid::Uuid::new_v4().simple());
        sm.create_secret()
            .name(&bad)
            .secret_string(&text)
            .send()
            .await
            .unwrap();
        let err = run(
            &app_with(&[("DB_SECRET_ID", &bad), ("JWT_SECRET", JWT_SECRET)]),
            json!({"jobType": "orchestrate"}),
        )
        .await
        .unwrap_err();
        assert_eq!(err.status, 503, "{}", err.message);
        let message = error_text(&err);
        assert!(
            message.starts_with("Database unavailable: the database secret is malformed: "),
            "{message}"
        );
        assert!(message.contains(says), "{message}");
        assert!(!err.message.contains("hunter2") && !err.message.contains(FN_PASSWORD));
    }
}

/// `DB_POOLER` unset and the host one of Supabase's poolers on port 6543
/// (Supavisor's transaction mode; here PgBouncer, reached through
/// `hostaddr`, on an address of its own): transaction mode, said once in the
/// log, and every job works. Forced to session mode the same pooler refuses
/// the connection (its startup options).
#[tokio::test]
async fn supabases_transaction_pooler_is_recognised_by_its_host() {
    use batch_processor::telemetry::{self, Capture, Format};
    let t = TestApp::unmigrated(&[]).await;
    let upstream = port_of(&t.url);
    let b = uuid::Uuid::new_v4().into_bytes();
    let addr = format!(
        "127.{}.{}.{}",
        b[0] % 250 + 1,
        b[1] % 250 + 1,
        b[2] % 250 + 1
    );
    let _bouncer = Pgbouncer::start_at(upstream, &addr, 6543).await;
    let url = format!(
        "postgres://postgres@aws-0-eu-central-1.pooler.supabase.com:6543/{}?hostaddr={addr}",
        t.db_name()
    );
    let env = |pooler: Option<&'static str>| {
        let mut env = vec![
            ("DATABASE_URL", url.clone()),
            ("JWT_SECRET", JWT_SECRET.to_owned()),
            ("DB_SSLMODE", "disable".to_owned()),
        ];
        if let Some(p) = pooler {
            env.push(("DB_POOLER", p.to_owned()));
        }
        env
    };
    let build = |env: Vec<(&str, String)>| {
        let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        app_with(&pairs)
    };
    let session = build(env(Some("session")));
    let err = run(&session, json!({"jobType": "migrate"}))
        .await
        .unwrap_err();
    assert_eq!(err.status, 503, "{}", err.message);

    let capture = Capture::default();
    let auto = {
        let _logs = tracing::subscriber::set_default(telemetry::subscriber(
            Format::Json,
            tracing_subscriber::EnvFilter::new("info"),
            capture.clone(),
        ));
        let auto = build(env(None));
        run(&auto, json!({"jobType": "migrate"}))
            .await
            .unwrap_or_else(|e| panic!("migrate through the pooler: {}", e.message));
        auto
    };
    let said = capture
        .lines()
        .iter()
        .filter(|l| l.contains("Supabase's transaction pooler"))
        .count();
    assert_eq!(said, 1, "{}", capture.text());

    t.terms("active", 100, 3, "10.00", Some("5"), 10).await;
    let others: Vec<App> = (0..3).map(|_| build(env(None))).collect();
    let orders = futures::future::join_all(others.iter().chain([&auto]).enumerate().map(
        |(i, app)| async move {
            let mut out = Vec::new();
            for j in 0..4 {
                let mut data =
                    order_data("pooled", 3 + (i + j) as i64, ["a", "b"][j % 2], BUYER_SUB);
                data["idempotencyKey"] = json!(format!("supavisor-{i}-{j}"));
                out.push(run(app, json!({"jobType": "process-order", "data": data})).await);
            }
            out
        },
    ))
    .await;
    for r in orders.into_iter().flatten() {
        r.unwrap_or_else(|e| panic!("an order through the pooler: {}", e.message));
    }
    assert_eq!(
        t.count("SELECT count(*) FROM orders WHERE product_type = 'pooled'")
            .await,
        16
    );
    let resp = run(&auto, json!({"jobType": "orchestrate"}))
        .await
        .expect("orchestrate through the pooler");
    assert_eq!(resp["success"], true);
}
