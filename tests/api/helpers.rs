//! The one shared helper of the black-box tests: a fresh database per test
//! (a clone of a template the real `migrate` job migrated once per test run,
//! dropped at the end), the app built on it exactly as `main.rs` builds it,
//! and seeding shortcuts.

use std::collections::HashMap;
use std::time::Instant;

use batch_processor::configuration::Settings;
use batch_processor::{App, Invocation, InvocationError};
use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::{json, Value};
use tokio_postgres::NoTls;
use uuid::Uuid;

pub const JWT_SECRET: &str = "test-jwt-secret-with-at-least-32-bytes!!";
pub const ADMIN_SUB: &str = "00000000-0000-4000-8000-00000000ad01";
pub const BUYER_SUB: &str = "00000000-0000-4000-8000-0000000b0001";

/// The server the tests run against: `DATABASE_URL` (a URL of any database on
/// it) or the local default.
pub fn server_url() -> String {
    std::env::var("DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// `url` with its database replaced by `db`.
pub fn url_for(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let authority_end = base[scheme_end..]
        .find('/')
        .map(|i| scheme_end + i)
        .unwrap_or(base.len());
    let mut out = format!("{}/{}", &base[..authority_end], db);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// `url` logging in as `user` instead (trust auth on the test server).
pub fn url_as(url: &str, user: &str) -> String {
    let start = url.find("://").map(|i| i + 3).unwrap_or(0);
    let rest = &url[start..];
    let host_at = match (rest.find('@'), rest.find('/')) {
        (Some(at), Some(slash)) if at < slash => at + 1,
        (Some(at), None) => at + 1,
        _ => 0,
    };
    format!("{}{user}@{}", &url[..start], &rest[host_at..])
}

/// Supabase's API roles (cluster-wide; created when missing, tolerating a
/// concurrent test doing the same) and the default privileges a Supabase
/// project gives them on whatever the current role creates in `public`.
pub const SUPABASE_ROLES: &str = "
    DO $$
    DECLARE r text;
    BEGIN
        FOREACH r IN ARRAY ARRAY['anon', 'authenticated', 'service_role'] LOOP
            IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
                BEGIN
                    EXECUTE format('CREATE ROLE %I NOLOGIN NOINHERIT', r);
                EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
                END;
            END IF;
        END LOOP;
    END $$;
    GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role;
    ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO anon, authenticated, service_role;
    ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON SEQUENCES TO anon, authenticated, service_role;
    ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON FUNCTIONS TO anon, authenticated, service_role;";

/// `sql/function-role.sql` for the role `role`: roles are cluster-wide and
/// tests run in parallel (other checkouts' too), so each test makes its own,
/// named after its database ([`TestApp::role_name`]) and dropped with it.
/// With `roles_table`, the file is told about `ADMIN_ROLES_TABLE` as the
/// runbook says.
pub fn function_role_sql(role: &str, roles_table: Option<&str>) -> String {
    let mut sql = String::new();
    if let Some(table) = roles_table {
        sql.push_str(&format!(
            "SET batch_processor.admin_roles_table = '{table}';\n"
        ));
    }
    sql.push_str(&include_str!("../../sql/function-role.sql").replace("batch_processor_fn", role));
    sql
}

pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!("cannot connect to test Postgres ({e}); is it running? see README")
        });
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// The first column of every row `sql` returns; a failing query panics with its text.
pub async fn column<T: tokio_postgres::types::FromSqlOwned>(
    db: &tokio_postgres::Client,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Vec<T> {
    db.query(sql, params)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// A database that is dropped (with its connections) when this goes out of scope.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    /// An empty database.
    pub async fn create() -> Self {
        Self::create_from(None).await
    }

    /// A migrated database: a copy of this run's template.
    pub async fn migrated() -> Self {
        let template = template().await;
        Self::create_from(Some(template)).await
    }

    async fn create_from(template: Option<&str>) -> Self {
        let name = format!("bp_test_{}", Uuid::new_v4().simple());
        let admin = connect(&server_url()).await;
        let from = template
            .map(|t| format!(" TEMPLATE {t}"))
            .unwrap_or_default();
        admin
            .batch_execute(&format!("CREATE DATABASE {name}{from}"))
            .await
            .unwrap_or_else(|e| panic!("create test database{from}: {e}"));
        TestDb {
            url: url_for(&server_url(), &name),
            name,
        }
    }
}

/// The migrated database every [`TestDb::migrated`] is cloned from
/// (`CREATE DATABASE … TEMPLATE`): the migrations run once per test run
/// instead of once per test.
///
/// Its name carries a digest of the migrations, so a run never clones a
/// template another version of them made, and reruns reuse it. One test of
/// this process creates it while the others wait (`TEMPLATE`); processes
/// sharing the server take turns on an advisory lock. It is marked a
/// template only once migrated, and closed to connections, so no session is
/// ever left on it to make a clone fail. Templates of other migrations older
/// than a day are dropped on the way.
async fn template() -> &'static str {
    static TEMPLATE: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    TEMPLATE.get_or_init(create_template).await
}

async fn create_template() -> String {
    use batch_processor::store::migrations::{digest, MIGRATIONS};
    let all: String = MIGRATIONS.iter().map(|m| m.sql).collect();
    let name = format!("bp_template_{}", &digest(&all)[..16]);
    let admin = connect(&server_url()).await;
    // "bp_tmpl" in ASCII: one creator at a time on this server.
    admin
        .batch_execute("SELECT pg_advisory_lock(7089075258759949420)")
        .await
        .expect("template lock");
    let ready: Option<bool> = admin
        .query_opt(
            "SELECT datistemplate FROM pg_database WHERE datname = $1",
            &[&name],
        )
        .await
        .expect("look for the template")
        .map(|r| r.get(0));
    if ready != Some(true) {
        // Absent, or left half made by a run that died: made afresh.
        // One statement per call: neither may run in a transaction block.
        for sql in [
            format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            format!("CREATE DATABASE {name}"),
        ] {
            admin
                .batch_execute(&sql)
                .await
                .expect("create the template");
        }
        let url = url_for(&server_url(), &name);
        {
            let app = App::new(settings(&url, &[])).expect("app builds");
            app.handle(
                json!({"jobType": "migrate"}),
                &Invocation::new("template", None),
            )
            .await
            .unwrap_or_else(|e| panic!("migrations apply to the template: {}", e.message));
            // Dropping the app closes its connections.
        }
        admin
            .batch_execute(&format!(
                "ALTER DATABASE {name} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false;
                 COMMENT ON DATABASE {name} IS 'batch-processor test template, made {}'",
                chrono::Utc::now().to_rfc3339()
            ))
            .await
            .expect("mark the template");
        let stale: Vec<String> = admin
            .query(
                "SELECT datname FROM pg_database
                  WHERE datname LIKE 'bp\\_template\\_%' AND datname <> $1
                    AND COALESCE(substring(shobj_description(oid, 'pg_database') FROM 'made (.*)$')::timestamptz,
                                 '-infinity') < now() - interval '1 day'",
                &[&name],
            )
            .await
            .map(|rows| rows.iter().map(|r| r.get(0)).collect())
            .unwrap_or_default();
        for old in stale {
            let _ = admin
                .batch_execute(&format!("ALTER DATABASE {old} WITH IS_TEMPLATE false"))
                .await;
            let _ = admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS {old}"))
                .await;
        }
    }
    admin
        .batch_execute("SELECT pg_advisory_unlock(7089075258759949420)")
        .await
        .expect("template unlock");
    name
}

impl Drop for TestDb {
    /// Drops the database, then the roles made for it ([`TestApp::role_name`]).
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs outside async context; a small runtime of its own does the work.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let admin = connect(&server_url()).await;
                let _ = admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await;
                let roles: Vec<String> = admin
                    .query(
                        "SELECT rolname::text FROM pg_roles WHERE starts_with(rolname, $1)",
                        &[&format!("{name}_")],
                    )
                    .await
                    .map(|rows| rows.iter().map(|r| r.get(0)).collect())
                    .unwrap_or_default();
                for role in roles {
                    let _ = admin
                        .batch_execute(&format!("DROP ROLE IF EXISTS \"{role}\""))
                        .await;
                }
            });
        })
        .join();
    }
}

/// Logs of failing tests are shown by the test harness (captured otherwise).
fn init_test_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                std::env::var("TEST_LOG").unwrap_or_else(|_| "warn,batch_processor=error".into()),
            )
            .with_test_writer()
            .try_init();
    });
}

pub struct TestApp {
    pub app: App,
    /// A plain connection for seeding and for checking what the jobs wrote.
    pub db: tokio_postgres::Client,
    /// The URL of this test's database.
    pub url: String,
    /// The EMF metric lines the app wrote.
    pub metrics: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    // Last: dropped after the app's pool.
    _database: std::sync::Arc<TestDb>,
}

pub fn settings(url: &str, env: &[(&str, &str)]) -> Settings {
    let mut map: HashMap<String, String> = HashMap::from([
        ("DATABASE_URL".to_owned(), url.to_owned()),
        ("JWT_SECRET".to_owned(), JWT_SECRET.to_owned()),
        ("DEADLINE_MARGIN_MS".to_owned(), "0".to_owned()),
    ]);
    for (k, v) in env {
        map.insert(k.to_string(), v.to_string());
    }
    Settings::from_lookup(|k| map.get(k).cloned()).expect("test settings")
}

impl TestApp {
    /// A migrated database and an app with the default test settings.
    pub async fn spawn() -> Self {
        Self::spawn_with(&[]).await
    }

    pub async fn spawn_with(env: &[(&str, &str)]) -> Self {
        let database = std::sync::Arc::new(TestDb::migrated().await);
        Self::on(database, env).await
    }

    /// A fresh, empty database and an app on it; nothing applied.
    pub async fn unmigrated(env: &[(&str, &str)]) -> Self {
        let database = std::sync::Arc::new(TestDb::create().await);
        Self::on(database, env).await
    }

    /// Another app (its own pool, as another Lambda instance) on the same database.
    pub async fn another_instance(&self, env: &[(&str, &str)]) -> Self {
        Self::on(self._database.clone(), env).await
    }

    async fn on(database: std::sync::Arc<TestDb>, env: &[(&str, &str)]) -> Self {
        init_test_logs();
        // Metric lines are kept, not printed: tests that check them read them.
        let metrics: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
        let app = App::new(settings(&database.url, env))
            .expect("app builds")
            .with_metrics(batch_processor::telemetry::metrics::MetricsSink::Buffer(
                metrics.clone(),
            ));
        TestApp {
            app,
            metrics,
            db: connect(&database.url).await,
            url: database.url.clone(),
            _database: database,
        }
    }

    /// A role name of this test's own (roles are cluster-wide): dropped with
    /// its database.
    pub fn role_name(&self, suffix: &str) -> String {
        format!("{}_{suffix}", self._database.name)
    }

    /// The name of this test's database.
    pub fn db_name(&self) -> &str {
        &self._database.name
    }

    /// The metric lines written so far.
    pub fn metric_lines(&self) -> Vec<String> {
        self.metrics.lock().map(|l| l.clone()).unwrap_or_default()
    }

    pub async fn invoke(&self, event: Value) -> Result<Value, InvocationError> {
        self.invoke_with(event, &Invocation::new("test-request-id", None))
            .await
    }

    pub async fn invoke_with(
        &self,
        event: Value,
        inv: &Invocation,
    ) -> Result<Value, InvocationError> {
        self.app.handle(event, inv).await
    }

    /// A direct invocation, as `aws lambda invoke` sends it.
    pub async fn direct(&self, job: &str, data: Value) -> Result<Value, InvocationError> {
        self.invoke(json!({"jobType": job, "data": data})).await
    }

    pub async fn orchestrate(&self, data: Value) -> Value {
        self.direct("orchestrate", data)
            .await
            .unwrap_or_else(|e| panic!("orchestrate failed: {}", e.message))
    }

    // ---- seeding -------------------------------------------------------

    pub async fn supplier(&self, name: &str) -> Uuid {
        self.db
            .query_one(
                "INSERT INTO suppliers (id, company_name) VALUES (gen_random_uuid(), $1) RETURNING id",
                &[&name],
            )
            .await
            .expect("insert supplier")
            .get(0)
    }

    /// A supplier with MOU terms. Returns the supplier id.
    #[allow(clippy::too_many_arguments)]
    pub async fn terms(
        &self,
        status: &str,
        moq: i32,
        max_styles: i32,
        base_price: &str,
        premium: Option<&str>,
        lead_time_days: i32,
    ) -> Uuid {
        let supplier = self.supplier("Terms Supplier").await;
        let base: rust_decimal::Decimal = base_price.parse().expect("price");
        let premium: Option<rust_decimal::Decimal> = premium.map(|p| p.parse().expect("premium"));
        self.db
            .execute(
                "INSERT INTO supplier_mou_terms (id, supplier_id, tier, moq_per_batch, max_styles_allowed,
                                                 base_price, complexity_premium_percent, lead_time_days, status)
                 VALUES (gen_random_uuid(), $1, 'standard', $2, $3, $4, $5, $6, $7)",
                &[&supplier, &moq, &max_styles, &base, &premium, &lead_time_days, &status],
            )
            .await
            .expect("insert terms");
        supplier
    }

    /// A `filling` batch whose window closes `window_secs` from now (negative:
    /// already closed), priced at 10.00 a unit.
    pub async fn batch(&self, current: i32, target: i32, window_secs: f64) -> Uuid {
        self.batch_in("t-shirts", current, target, window_secs, "filling")
            .await
    }

    pub async fn batch_in(
        &self,
        category: &str,
        current: i32,
        target: i32,
        window_secs: f64,
        status: &str,
    ) -> Uuid {
        let supplier = self.supplier("Seed Supplier").await;
        self.db
            .query_one(
                "INSERT INTO production_batches
                     (product_category, product_variant_base, target_quantity, current_quantity,
                      supplier_id, unit_price_base, batch_status, window_closes_at)
                 VALUES ($1, 'crew-neck', $2, $3, $4, 10.00, $5, now() + make_interval(secs => $6))
                 RETURNING id",
                &[
                    &category,
                    &target,
                    &current,
                    &supplier,
                    &status,
                    &window_secs,
                ],
            )
            .await
            .expect("insert batch")
            .get(0)
    }

    /// An order of `quantity` at `unit_price` contributing to `batch`.
    pub async fn order(
        &self,
        batch: Uuid,
        quantity: i32,
        unit_price: &str,
        payment_status: &str,
    ) -> Uuid {
        let price: rust_decimal::Decimal = unit_price.parse().expect("price");
        let total = price * rust_decimal::Decimal::from(quantity);
        let order: Uuid = self
            .db
            .query_one(
                "INSERT INTO orders (order_number, buyer_id, product_type, quantity, status,
                                     workflow_status, payment_status, buyer_price)
                 VALUES ('T-' || gen_random_uuid(), gen_random_uuid(), 't-shirts', $1, 'pending',
                         'awaiting_payment', $2, $3)
                 RETURNING id",
                &[&quantity, &payment_status, &total],
            )
            .await
            .expect("insert order")
            .get(0);
        self.db
            .execute(
                "INSERT INTO batch_contributions (batch_id, order_id, quantity, style_details,
                                                  buyer_price_per_unit)
                 VALUES ($1, $2, $3, '{\"variant\": \"navy-m\"}', $4)",
                &[&batch, &order, &quantity, &price],
            )
            .await
            .expect("insert contribution");
        order
    }

    pub async fn status_of(&self, batch: Uuid) -> String {
        self.db
            .query_one(
                "SELECT batch_status FROM production_batches WHERE id = $1",
                &[&batch],
            )
            .await
            .expect("batch exists")
            .get(0)
    }

    pub async fn count(&self, sql: &str) -> i64 {
        self.db
            .query_one(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .get(0)
    }

    /// Event types written for a batch, in order.
    pub async fn events_of(&self, batch: Uuid) -> Vec<String> {
        column(
            &self.db,
            "SELECT event_type FROM batch_events WHERE batch_id = $1 ORDER BY id",
            &[&batch],
        )
        .await
    }

    /// A digest of every table a job may write, to prove nothing changed.
    pub async fn fingerprint(&self) -> String {
        let mut out = String::new();
        for table in [
            "production_batches",
            "supplier_orders",
            "orders",
            "batch_contributions",
            "order_status_history",
            "batch_events",
        ] {
            let row = self
                .db
                .query_one(
                    &format!(
                        "SELECT count(*)::text || ':' || COALESCE(md5(string_agg(t::text, '|' ORDER BY t::text)), '')
                           FROM {table} t"
                    ),
                    &[],
                )
                .await
                .expect("fingerprint");
            out.push_str(table);
            out.push('=');
            out.push_str(&row.get::<_, String>(0));
            out.push('\n');
        }
        out
    }
}

// ---- tokens and HTTP events ---------------------------------------------------

pub fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

pub fn token_with(claims: Value, secret: &str, alg: jsonwebtoken::Algorithm) -> String {
    let key = EncodingKey::from_secret(secret.as_bytes()).expect("key");
    encode(&Header::new(alg), &claims, &key).expect("encode token")
}

pub fn token(claims: Value) -> String {
    token_with(claims, JWT_SECRET, jsonwebtoken::Algorithm::HS256)
}

pub fn admin_token() -> String {
    token(json!({"role": "service_role", "exp": now_secs() + 600}))
}

pub fn buyer_token() -> String {
    token(
        json!({"role": "authenticated", "sub": BUYER_SUB, "aud": "authenticated", "exp": now_secs() + 600}),
    )
}

/// One of AWS's own sample events from `shared/aws-events/`.
pub fn aws_sample(name: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/aws-events/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).expect("sample parses")
}

/// An HTTP API (payload 2.0) request built on AWS's sample, without authorizer.
pub fn http_v2(method: &str, body: Option<&str>, headers: &[(&str, &str)]) -> Value {
    let mut e = aws_sample("example-apigw-v2-request-no-authorizer.json");
    e["requestContext"]["http"]["method"] = json!(method);
    e["rawPath"] = json!("/jobs");
    e["requestContext"]["http"]["path"] = json!("/jobs");
    e["headers"] = json!({});
    for (k, v) in headers {
        e["headers"][*k] = json!(v);
    }
    e["body"] = body.map(|b| json!(b)).unwrap_or(Value::Null);
    e["isBase64Encoded"] = json!(false);
    e
}

/// A REST API (payload 1.0) request built on AWS's sample.
pub fn http_v1(method: &str, body: Option<&str>, headers: &[(&str, &str)]) -> Value {
    let mut e = aws_sample("example-apigw-request.json");
    e["httpMethod"] = json!(method);
    e["requestContext"]["httpMethod"] = json!(method);
    e["headers"] = json!({});
    e["multiValueHeaders"] = json!({});
    for (k, v) in headers {
        e["headers"][*k] = json!(v);
        e["multiValueHeaders"][*k] = json!([v]);
    }
    if let Some(ctx) = e["requestContext"].as_object_mut() {
        ctx.remove("authorizer");
    }
    e["body"] = body.map(|b| json!(b)).unwrap_or(Value::Null);
    e["isBase64Encoded"] = json!(false);
    e
}

/// The CORS headers every HTTP answer carries (behaviour §2).
pub fn assert_cors(resp: &Value, origin: &str) {
    let h = &resp["headers"];
    assert_eq!(h["content-type"], "application/json", "{resp}");
    assert_eq!(h["access-control-allow-origin"], origin);
    assert_eq!(
        h["access-control-allow-headers"],
        "authorization, x-client-info, apikey, content-type, idempotency-key"
    );
    assert_eq!(h["access-control-allow-methods"], "POST, OPTIONS");
}

pub fn orchestrate_body() -> String {
    json!({"jobType": "orchestrate", "data": {}}).to_string()
}

pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// The status and parsed body of a proxy response.
pub fn proxy(resp: &Value) -> (u16, Value) {
    let status = resp["statusCode"].as_u64().expect("statusCode") as u16;
    let body = resp["body"]
        .as_str()
        .map(|b| serde_json::from_str(b).expect("body is JSON"))
        .unwrap_or(Value::Null);
    (status, body)
}

/// The JSON error of a failed direct invocation.
pub fn error_json(e: &InvocationError) -> Value {
    serde_json::from_str(&e.message).expect("error message is JSON")
}

pub fn deadline_in(ms: u64) -> Option<Instant> {
    Some(Instant::now() + std::time::Duration::from_millis(ms))
}

/// A process-order request's `data`.
pub fn order_data(category: &str, quantity: i64, variant: &str, buyer: &str) -> Value {
    json!({"productCategory": category, "productVariantBase": "crew-neck", "quantity": quantity,
           "styleDetails": {"variant": variant, "notes": "as sent"}, "buyerId": buyer})
}

/// Results of an orchestrate response keyed by batch id.
pub fn by_batch(resp: &Value) -> HashMap<Uuid, Value> {
    resp["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| {
            (
                Uuid::parse_str(r["batchId"].as_str().expect("batchId")).expect("uuid"),
                r.clone(),
            )
        })
        .collect()
}
