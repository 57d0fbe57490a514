//! The first deploy on a real Supabase project (issue 20): its admins kept in
//! a table, a new project's default privileges, columns buyers can edit that
//! money rests on, the app's own frontend, and HTTP jobs that must answer
//! before API Gateway stops waiting. The live app's shape is
//! `tests/fixtures/supabase_live_schema.sql`, owned — as on hosted Supabase —
//! by a role that is no superuser ([`Owned`]), the jobs running as the role
//! `sql/function-role.sql` makes.

use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::*;
use crate::infra::Proxy;
use crate::live_database::{sqlstate_as, Owned, ADMIN_USER, ALICE, L4, L7, LO7};

/// An access token as Supabase Auth issues it to a signed-in user: no role
/// beyond `authenticated`, `app_metadata` saying only how they signed in.
fn user_token(sub: &str) -> String {
    token(json!({
        "aud": "authenticated", "role": "authenticated", "sub": sub,
        "email": "someone@example.com", "phone": "",
        "app_metadata": {"provider": "email", "providers": ["email"]},
        "user_metadata": {"email_verified": true},
        "aal": "aal1", "amr": [{"method": "password", "timestamp": now_secs()}],
        "session_id": Uuid::new_v4(), "is_anonymous": false,
        "iss": "https://abcdefghijklmnopqrst.supabase.co/auth/v1",
        "iat": now_secs(), "exp": now_secs() + 600
    }))
}

/// A POST of `{jobType, data}` over HTTP (payload 2.0) with `token`.
async fn post(t: &TestApp, token: &str, job: &str, data: Value) -> (u16, Value) {
    let body = json!({"jobType": job, "data": data}).to_string();
    let event = http_v2("POST", Some(&body), &[("authorization", &bearer(token))]);
    proxy(&t.invoke(event).await.expect("a proxy response"))
}

/// §1: the app keeps its admins in `public.user_roles`; their tokens say
/// nothing of it. With `ADMIN_ROLES_TABLE` they are admins, looked up when a
/// job needs one, a revoked row counting from the next request; without it,
/// or for a user with no admin row, a 403.
#[tokio::test]
async fn admins_come_from_the_apps_roles_table() {
    let owned = Owned::live().await;
    owned.migrate().await;
    let fn_role = owned.function_role(Some("public.user_roles")).await;
    let roles_table = [("ADMIN_ROLES_TABLE", "public.user_roles")];
    let f = owned.app_as(&fn_role, &roles_table).await;
    let admin = user_token(ADMIN_USER);
    let alice = user_token(ALICE);
    let dry_run = json!({"dryRun": true});

    // Today's lockout: without the table, the app's admin is a mere buyer.
    let without = owned.app_as(&fn_role, &[]).await;
    let (status, body) = post(&without, &admin, "orchestrate", dry_run.clone()).await;
    assert_eq!(status, 403, "{body}");

    let (status, body) = post(&f, &admin, "orchestrate", dry_run.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["dryRun"], true);
    // The same user with a token for another audience: 401, before any lookup.
    let elsewhere = token(
        json!({"aud": "other-app", "role": "authenticated", "sub": ADMIN_USER,
                                 "exp": now_secs() + 600}),
    );
    let (status, body) = post(&f, &elsewhere, "orchestrate", dry_run.clone()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("Token audience is not accepted"))
    );
    let (status, _) = post(&f, &alice, "orchestrate", dry_run.clone()).await;
    assert_eq!(status, 403, "a retailer is no admin");

    // Ordering for someone else: the admin may, alice may not.
    let order = |buyer: &str| {
        json!({"productCategory": "caps", "productVariantBase": "snapback", "quantity": 5,
               "styleDetails": {"variant": "red"}, "buyerId": buyer})
    };
    let (status, body) = post(&f, &alice, "process-order", order(ADMIN_USER)).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "A buyer may place orders only for themself");
    let (status, body) = post(&f, &admin, "process-order", order(ALICE)).await;
    assert_eq!(status, 200, "{body}");
    let placed = Uuid::parse_str(body["orderId"].as_str().unwrap()).unwrap();
    let buyer: Uuid = owned
        .su
        .db
        .query_one("SELECT buyer_id FROM orders WHERE id = $1", &[&placed])
        .await
        .unwrap()
        .get(0);
    assert_eq!(buyer.to_string(), ALICE);

    // An admin's reject records them, as any admin's.
    let (status, body) = post(
        &f,
        &admin,
        "review-batch",
        json!({"batchId": L7, "decision": "reject"}),
    )
    .await;
    assert_eq!(
        status, 409,
        "L7 is filling until orchestrate holds it: {body}"
    );
    let (status, _) = post(&f, &admin, "orchestrate", json!({})).await;
    assert_eq!(status, 200);
    let (status, body) = post(
        &f,
        &admin,
        "review-batch",
        json!({"batchId": L7, "decision": "reject"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        owned
            .su
            .count(&format!(
                "SELECT count(*) FROM order_status_history WHERE order_id = '{LO7}'
                   AND changed_by = '{ADMIN_USER}'"
            ))
            .await,
        1
    );

    // Revoked: the very next request of the same instance is refused.
    owned
        .su
        .db
        .execute(
            "DELETE FROM user_roles WHERE user_id = $1 AND role = 'admin'",
            &[&Uuid::parse_str(ADMIN_USER).unwrap()],
        )
        .await
        .unwrap();
    let (status, _) = post(&f, &admin, "orchestrate", dry_run.clone()).await;
    assert_eq!(status, 403);

    // The database out of reach while a buyer asks for an admin's job: a
    // 503 (the lookup could not be made), not a 403 (it said no).
    let proxy = Proxy::start(crate::infra::port_of(&owned.su.url)).await;
    let fn_url = url_as(&owned.su.url, &fn_role).replace(
        &format!(":{}/", crate::infra::port_of(&owned.su.url)),
        &format!(":{}/", proxy.port),
    );
    let cut = owned
        .su
        .another_instance(&[
            ("DATABASE_URL", fn_url.as_str()),
            ("ADMIN_ROLES_TABLE", "public.user_roles"),
        ])
        .await;
    proxy.cut();
    let (status, body) = post(&cut, &alice, "orchestrate", dry_run).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("Database unavailable"),
        "{body}"
    );
}

/// §6: exactly what the app's `useCreateAggregatedOrder` sends through
/// `supabase.functions.invoke` — its headers, and `data` = the order form
/// plus `buyerId: user.id` — with the user's own token; the answer carries
/// what its `onSuccess` reads: `isNewBatch`, and `fillPercentage` (a number,
/// `toFixed(0)`) when the order joined an existing batch.
#[tokio::test]
async fn the_apps_frontend_places_orders_unchanged() {
    let owned = Owned::live().await;
    owned.migrate().await;
    let fn_role = owned.function_role(None).await;
    let f = owned.app_as(&fn_role, &[]).await;
    let session = user_token(ALICE);
    let anon_key = token(
        json!({"iss": "supabase", "ref": "abcdefghijklmnopqrst", "role": "anon",
                                "iat": now_secs(), "exp": now_secs() + 600}),
    );
    let invoke = |order_data: Value| {
        let mut data = order_data;
        data["buyerId"] = json!(ALICE);
        let body = json!({"jobType": "process-order", "data": data}).to_string();
        http_v2(
            "POST",
            Some(&body),
            &[
                ("authorization", &bearer(&session)),
                ("apikey", &anon_key),
                ("x-client-info", "supabase-js-web/2.50.0"),
                ("content-type", "application/json"),
            ],
        )
    };

    // L4 (t-shirts, 60 of 200, window open) takes it: 70 of 200.
    let joined = invoke(
        json!({"productCategory": "t-shirts", "productVariantBase": "v-neck",
                               "quantity": 10, "styleDetails": {"variant": "white-l", "print": "front"}}),
    );
    let (status, data) = proxy(&f.invoke(joined).await.unwrap());
    assert_eq!(status, 200, "{data}");
    assert_eq!(data["isNewBatch"], false);
    assert_eq!(data["batchId"], L4);
    let fill = data["fillPercentage"]
        .as_f64()
        .expect("fillPercentage is a number");
    assert_eq!(format!("{fill:.0}"), "35", "what toFixed(0) shows");
    assert_eq!(data["fillPercentage"], data["batchFillPercentage"]);

    // A retry key the function could not read is refused, not ignored: no second order.
    let before = owned.su.fingerprint().await;
    let mut retried = invoke(
        json!({"productCategory": "t-shirts", "productVariantBase": "v-neck",
                                    "quantity": 10, "styleDetails": {"variant": "white-l"}}),
    );
    retried["headers"]["idempotency-key"] = json!("commande-réessayée");
    let (status, body) = proxy(&f.invoke(retried).await.unwrap());
    assert_eq!(status, 400, "{body}");
    assert_eq!(owned.su.fingerprint().await, before, "nothing written");

    // A category with no batch: a new one (the app shows another message).
    let opened = invoke(
        json!({"productCategory": "polo-shirts", "productVariantBase": "pique",
                               "quantity": 20, "styleDetails": {"variant": "navy"}}),
    );
    let (status, data) = proxy(&f.invoke(opened).await.unwrap());
    assert_eq!(status, 200, "{data}");
    assert_eq!(data["isNewBatch"], true);
    assert_eq!(data["fillPercentage"].as_f64(), Some(10.0));
}

/// §3: the app lets buyers update their own orders, any column. `migrate`
/// names every grant or policy through which `anon` or `authenticated` may
/// write what refunds and supplier-order totals rest on — in its answer and
/// as WARNINGs in the log — and never the function role's own policies.
#[tokio::test]
async fn migrate_warns_of_every_way_buyers_can_write_money() {
    use batch_processor::telemetry::{self, Capture, Format};
    let owned = Owned::live().await;
    let capture = Capture::default();
    let answer = {
        let _logs = tracing::subscriber::set_default(telemetry::subscriber(
            Format::Json,
            tracing_subscriber::EnvFilter::new("warn"),
            capture.clone(),
        ));
        owned.migrate().await
    };
    let warnings: Vec<&str> = answer["warnings"]
        .as_array()
        .expect("a warnings array")
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    let about = |needle: &str| -> Vec<&str> {
        warnings
            .iter()
            .copied()
            .filter(|w| w.contains(needle))
            .collect()
    };
    let buyers = about("policy \"Buyers can update their own orders\"");
    assert_eq!(buyers.len(), 1, "{warnings:#?}");
    assert!(buyers[0].starts_with("orders: "), "{}", buyers[0]);
    assert!(
        buyers[0].contains("lets authenticated UPDATE orders.{buyer_price, payment_status}"),
        "{}",
        buyers[0]
    );
    assert!(buyers[0].contains("buyer_id = auth.uid()"), "{}", buyers[0]);
    assert!(buyers[0].contains("payment provider"), "{}", buyers[0]);
    // A policy for PUBLIC reaches both API roles.
    let admins = about("policy \"Admins can update all orders\"");
    assert_eq!(admins.len(), 1);
    assert!(
        admins[0].contains("lets anon, authenticated UPDATE"),
        "{}",
        admins[0]
    );
    assert_eq!(
        about("policy \"Factories can update assigned orders\"").len(),
        1
    );
    // batch_contributions: the app's ALL policy (insert and update) and its INSERT one.
    assert_eq!(
        about("batch_contributions: policy \"Admins can manage contributions\"").len(),
        2,
        "{warnings:#?}"
    );
    let service = about("batch_contributions: policy \"Service role can create contributions\"");
    assert_eq!(service.len(), 1);
    assert!(
        service[0].contains("INSERT batch_contributions"),
        "{}",
        service[0]
    );
    // Read-only or unrelated policies are not warned of.
    assert!(about("Buyers can view their own orders").is_empty());
    assert!(about("supplier_orders").is_empty());
    let logged: Vec<Value> = capture
        .lines()
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    for w in &warnings {
        assert!(
            logged
                .iter()
                .any(|l| l["level"] == "WARN" && l["message"] == format!("migrate: {w}")),
            "{w} not logged as a WARNING:\n{}",
            capture.text()
        );
    }

    // The function role's own policies are no buyer's.
    owned.function_role(None).await;
    let again = owned.migrate().await;
    assert_eq!(again["warnings"].as_array().unwrap().len(), warnings.len());
    assert!(!again["warnings"].to_string().contains("_fn: "), "{again}");
}

/// Tables `migrate` created and whether `role` may do anything to them.
async fn api_privileges(t: &TestApp, role: &str) -> Vec<String> {
    column(
        &t.db,
        "SELECT c.relname || ' ' || p
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          CROSS JOIN unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER']) p
          WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v')
            AND has_table_privilege($1, c.oid, p)
         UNION ALL
         SELECT c.relname || ' ' || p
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          CROSS JOIN unnest(ARRAY['USAGE', 'SELECT', 'UPDATE']) p
          WHERE n.nspname = 'public' AND c.relkind = 'S' AND has_sequence_privilege($1, c.oid, p)
          ORDER BY 1",
        &[&role],
    )
    .await
}

/// §2: a new Supabase project — its API roles and their default privileges,
/// nothing else. Every table `migrate` creates, business tables included,
/// has row-level security and nothing for `anon` or `authenticated`: the
/// public anon key reads no order and prices nothing at 0.01.
#[tokio::test]
async fn a_new_projects_tables_are_not_public() {
    let t = TestApp::unmigrated(&[]).await;
    t.db.batch_execute(SUPABASE_ROLES).await.unwrap();
    // What default privileges alone would have given: everything.
    t.db.batch_execute("CREATE TABLE probe (x int); CREATE SEQUENCE probe_seq")
        .await
        .unwrap();
    assert_eq!(
        api_privileges(&t, "anon").await.len(),
        10,
        "Supabase's defaults give anon ALL"
    );
    t.db.batch_execute("DROP TABLE probe; DROP SEQUENCE probe_seq")
        .await
        .unwrap();

    let answer = t.direct("migrate", Value::Null).await.unwrap();
    assert_eq!(answer["warnings"], json!([]), "{answer}");
    for role in ["anon", "authenticated"] {
        assert_eq!(
            api_privileges(&t, role).await,
            Vec::<String>::new(),
            "{role}"
        );
    }
    let without_rls: Vec<String> = column(
        &t.db,
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = 'public' AND c.relkind = 'r' AND NOT c.relrowsecurity ORDER BY 1",
        &[],
    )
    .await;
    assert_eq!(without_rls, Vec::<String>::new());
    assert_eq!(
        t.count(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = 'public' AND c.relkind = 'r'"
        )
        .await,
        10,
        "the seven business tables and the function's three"
    );
    for role in ["anon", "authenticated"] {
        for sql in [
            "SELECT * FROM orders",
            "UPDATE supplier_mou_terms SET base_price = 0.01",
            "INSERT INTO suppliers (company_name) VALUES ('x')",
            "SELECT nextval('batch_events_id_seq')",
        ] {
            assert_eq!(
                sqlstate_as(&t, role, sql).await.as_deref(),
                Some("42501"),
                "{role}: {sql}"
            );
        }
    }
    // The service role is Supabase's own business: left as the defaults say.
    assert!(!api_privileges(&t, "service_role").await.is_empty());
}

/// The ACL of `relation` as the privileges it grants, NULL read as its
/// owner's defaults (what NULL means).
async fn acl(t: &TestApp, relation: &str) -> Vec<String> {
    column(
        &t.db,
        "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee)::text END
                || ' ' || a.privilege_type || CASE WHEN a.is_grantable THEN '*' ELSE '' END
           FROM pg_class c,
                aclexplode(COALESCE(c.relacl, acldefault('r', c.relowner))) a
          WHERE c.oid = $1::text::regclass
          ORDER BY 1",
        &[&relation],
    )
    .await
}

/// §2: on a partly set-up project (the original tables, Supabase's roles and
/// defaults), what existed keeps its grants, policies and row-level security
/// exactly; views the upgrade drops and recreates come back with exactly the
/// grants they had — one whose ACL was NULL gets none of the migrating
/// role's default privileges — and what the run created is private.
#[tokio::test]
async fn an_upgrade_keeps_what_existed_exactly() {
    let t = TestApp::unmigrated(&[]).await;
    t.db.batch_execute(include_str!("../fixtures/original_schema.sql"))
        .await
        .expect("fixture loads");
    t.db.batch_execute(
        "DO $$ BEGIN
             IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN
                 CREATE ROLE anon NOLOGIN; END IF;
         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$;
         -- Views over a column 0002 converts, made before Supabase's defaults apply:
         -- one with no grants at all (ACL NULL), one with grants of its own.
         CREATE VIEW open_windows AS SELECT id, window_closes_at FROM production_batches;
         CREATE VIEW batch_windows AS SELECT id, window_closes_at FROM production_batches;
         GRANT SELECT ON batch_windows TO anon WITH GRANT OPTION;
         -- A table of the app's own with row-level security, a policy and a grant.
         ALTER TABLE suppliers ENABLE ROW LEVEL SECURITY;
         CREATE POLICY \"suppliers are public\" ON suppliers FOR SELECT TO anon USING (true);
         GRANT SELECT ON suppliers TO anon;",
    )
    .await
    .unwrap();
    t.db.batch_execute(SUPABASE_ROLES).await.unwrap();
    let null_acl: Option<String> =
        t.db.query_one(
            "SELECT relacl::text FROM pg_class WHERE relname = 'open_windows'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(null_acl, None);
    let policies =
        "SELECT string_agg(policyname || ' ' || cmd || ' ' || roles::text || ' ' || qual, '; ')
                      FROM pg_policies WHERE tablename = 'suppliers'";
    let before = (
        acl(&t, "open_windows").await,
        acl(&t, "batch_windows").await,
        acl(&t, "suppliers").await,
        acl(&t, "orders").await,
        t.db.query_one(policies, &[])
            .await
            .unwrap()
            .get::<_, String>(0),
    );
    let oid_before: u32 =
        t.db.query_one("SELECT 'open_windows'::regclass::oid", &[])
            .await
            .unwrap()
            .get(0);

    t.direct("migrate", Value::Null).await.expect("migrates");
    let oid_after: u32 =
        t.db.query_one("SELECT 'open_windows'::regclass::oid", &[])
            .await
            .unwrap()
            .get(0);
    assert_ne!(oid_after, oid_before, "the upgrade recreated the view");
    let after = (
        acl(&t, "open_windows").await,
        acl(&t, "batch_windows").await,
        acl(&t, "suppliers").await,
        acl(&t, "orders").await,
        t.db.query_one(policies, &[])
            .await
            .unwrap()
            .get::<_, String>(0),
    );
    assert_eq!(after, before);
    assert!(
        !after.0.iter().any(|g| g.starts_with("anon")),
        "{:?}",
        after.0
    );
    let rls: Vec<(String, bool)> =
        t.db.query(
            "SELECT relname::text, relrowsecurity FROM pg_class
              WHERE relname IN ('suppliers', 'orders', 'batch_events', 'order_idempotency')
              ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        rls,
        [
            ("batch_events".to_owned(), true),
            ("order_idempotency".to_owned(), true),
            ("orders".to_owned(), false),
            ("suppliers".to_owned(), true),
        ],
        "existing tables as they were, new ones private"
    );
    for new in [
        "batch_events",
        "order_idempotency",
        "batch_processor_migrations",
    ] {
        assert!(
            !acl(&t, new).await.iter().any(|g| g.starts_with("anon")),
            "{new}"
        );
    }
}

/// §2: a database migrated before new tables were made private keeps what
/// it has (migrate never takes privileges from tables it did not just
/// create), and `migrate` says which of the function's tables the public
/// API reaches.
#[tokio::test]
async fn a_database_migrated_before_is_warned_of_its_open_tables() {
    let t = TestApp::spawn().await;
    t.db.batch_execute(SUPABASE_ROLES).await.unwrap();
    t.db.batch_execute(
        "ALTER TABLE orders DISABLE ROW LEVEL SECURITY; GRANT ALL ON orders TO anon;
         GRANT SELECT ON production_batches TO authenticated;",
    )
    .await
    .unwrap();
    let answer = t.direct("migrate", Value::Null).await.unwrap();
    let warnings = answer["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 2, "{answer}");
    assert!(warnings[0].as_str().unwrap().starts_with(
        "orders: row-level security is off and anon may SELECT, INSERT, UPDATE, DELETE, TRUNCATE"
    ), "{answer}");
    assert!(
        warnings[1].as_str().unwrap().starts_with(
            "orders: row-level security is off, so its grant lets anon UPDATE orders.{buyer_price, payment_status}"
        ),
        "{answer}"
    );
    assert!(
        !answer.to_string().contains("production_batches"),
        "row-level security on: the policies decide, and there are none"
    );
    assert!(t
        .db
        .query_one(
            "SELECT has_table_privilege('anon', 'orders', 'SELECT')",
            &[]
        )
        .await
        .unwrap()
        .get::<_, bool>(0));
}

/// §5: an orchestrate or publish-events invoked over HTTP stops starting new
/// work at `HTTP_BUDGET_MS` and answers with what it did and `hasMore: true`;
/// invoked directly, the same instance does everything (only the Lambda
/// deadline bounds it).
#[tokio::test]
async fn http_jobs_stop_at_their_budget() {
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let bus = format!("bp-budget-{}", Uuid::new_v4().simple());
    aws_sdk_eventbridge::Client::new(&config)
        .create_event_bus()
        .name(&bus)
        .send()
        .await
        .expect("a bus in moto");
    let t = TestApp::spawn_with(&[
        ("HTTP_BUDGET_MS", "0"),
        ("EVENT_BUS_NAME", bus.as_str()),
        ("PUBLISH_BUDGET_MS", "0"),
    ])
    .await;
    let confirm = t.batch(180, 200, -60.0).await;
    let cancel = t.batch(10, 200, -60.0).await;
    let before = t.fingerprint().await;

    let (status, body) = post(&t, &admin_token(), "orchestrate", json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["processed"], 0);
    assert_eq!(body["hasMore"], true);
    assert_eq!(t.fingerprint().await, before, "nothing started");

    let direct = t.orchestrate(json!({})).await;
    assert_eq!(direct["hasMore"], false);
    let by = by_batch(&direct);
    assert_eq!(by[&confirm]["action"], "confirmed");
    assert_eq!(by[&cancel]["action"], "cancelled");
    let written = t
        .count("SELECT count(*) FROM batch_events WHERE published_at IS NULL")
        .await;
    assert!(written >= 2, "{written}");

    let (status, body) = post(&t, &admin_token(), "publish-events", json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["published"], 0);
    assert_eq!(body["pending"], written);
    assert_eq!(body["hasMore"], true);
    let direct = t.direct("publish-events", json!({})).await.unwrap();
    assert_eq!(direct["published"], written, "{direct}");
    assert_eq!(direct["hasMore"], false);
}

/// §5 logs: a refused request is logged as its job and the reason only —
/// whatever the caller typed (the public anon key suffices to send it) is
/// not — and a review's note, an admin's free text, only at debug.
#[tokio::test]
async fn refused_requests_and_review_notes_stay_out_of_info_logs() {
    use batch_processor::telemetry::{self, Capture, Format};
    let t = TestApp::spawn().await;
    let batch = t.batch(110, 200, -60.0).await;
    t.orchestrate(json!({})).await;
    let typed = "TYPED-BY-A-STRANGER call 555";
    let note = "NOTE-FOR-ADMINS-ONLY";
    let run = |filter: &'static str| {
        let t = &t;
        async move {
            let capture = Capture::default();
            let _logs = tracing::subscriber::set_default(telemetry::subscriber(
                Format::Json,
                tracing_subscriber::EnvFilter::new(filter),
                capture.clone(),
            ));
            let anon_key = token(json!({"role": "anon", "exp": now_secs() + 600}));
            let attempt = json!({"productCategory": typed, "productVariantBase": typed, "quantity": 1,
                                 "styleDetails": {"variant": typed}});
            let (status, _) = post(t, &anon_key, "process-order", attempt.clone()).await;
            assert_eq!(status, 403);
            let (status, _) = post(t, &buyer_token(), "orchestrate", attempt).await;
            assert_eq!(status, 403);
            capture.text()
        }
    };
    let info = run("info").await;
    assert!(!info.contains("TYPED-BY"), "{info}");
    assert!(!info.contains("job request"), "{info}");
    assert!(info.contains("request refused"), "{info}");
    assert!(info.contains("\"jobType\":\"process-order\""), "{info}");
    assert!(info.contains("\"jobType\":\"orchestrate\""), "{info}");

    let review = |filter: &'static str| {
        let t = &t;
        async move {
            let capture = Capture::default();
            let _logs = tracing::subscriber::set_default(telemetry::subscriber(
                Format::Json,
                tracing_subscriber::EnvFilter::new(filter),
                capture.clone(),
            ));
            let answer = t
                .direct(
                    "review-batch",
                    json!({"batchId": batch, "decision": "reject", "note": note}),
                )
                .await;
            (answer, capture.text())
        }
    };
    let (answer, info) = review("info").await;
    assert!(answer.is_ok());
    assert!(info.contains("batch reviewed"), "{info}");
    assert!(!info.contains(note), "{info}");
    // At debug the note is there for whoever turned debug on.
    t.db.execute(
        "UPDATE production_batches SET batch_status = 'needs_review' WHERE id = $1",
        &[&batch],
    )
    .await
    .unwrap();
    let (_, debug) = review("debug").await;
    assert!(debug.contains(note), "{debug}");
}
