//! Adopting a live Supabase database (behaviour §4.3), on a fixture shaped like
//! the real app's schema (`tests/fixtures/supabase_live_schema.sql`: Supabase's
//! roles and default privileges, `auth.users` and the foreign keys to it, RLS
//! policies — one on a column the upgrade converts —, a view over a converted
//! column, the capacity trigger, legacy values outside our lists), plus what
//! each test adds: a legacy supplier order for a batch still filling, a batch a
//! trigger refuses to update. As on hosted Supabase, the tables then belong to
//! an owner that is no superuser but may create roles: `migrate` runs as that
//! owner, `sql/function-role.sql` too, and every job as the least-privilege
//! role it makes.

use std::time::Duration;

use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::*;

const LIVE_SCHEMA: &str = include_str!("../fixtures/supabase_live_schema.sql");

pub const S1: &str = "5a000000-0000-4000-8000-000000000001";
pub const ADMIN_USER: &str = "aaaaaaaa-0000-4000-8000-000000000001";
pub const ALICE: &str = "aaaaaaaa-0000-4000-8000-000000000002";
const L1: &str = "b1000000-0000-4000-8000-000000000001";
pub const L2: &str = "b2000000-0000-4000-8000-000000000002";
pub const L3: &str = "b3000000-0000-4000-8000-000000000003";
pub const L4: &str = "b4000000-0000-4000-8000-000000000004";
/// Filling at 80 %, window open (closing within the look-ahead), with a legacy `BATCH-<8 chars>` supplier order.
const L5: &str = "b5000000-0000-4000-8000-000000000005";
/// Filling at 80 %, window closed; someone else's trigger refuses to update it.
const L6: &str = "b6000000-0000-4000-8000-000000000006";
/// Filling at 60 %, window closed: held for review.
pub const L7: &str = "b7000000-0000-4000-8000-000000000007";
/// Alice's paid order in L7.
pub const LO7: &str = "0d000000-0000-4000-8000-000000000107";
const LEGACY_SO: &str = "50000000-0000-4000-8000-000000000105";

/// The live app as hosted Supabase runs it: its tables belong to an owner
/// that is no superuser, may create roles, and whose new tables Supabase's
/// default privileges give to `anon` and `authenticated`.
pub struct Owned {
    /// The superuser's view (`db` checks what the jobs wrote).
    pub su: TestApp,
    /// The owner's role, and an app connecting as it (for `migrate`).
    pub owner: String,
    pub as_owner: TestApp,
}

impl Owned {
    /// The live-shaped database (see [`live`]) handed to a NOSUPERUSER
    /// CREATEROLE owner, not yet migrated.
    pub async fn live() -> Self {
        let su = live().await;
        let owner = su.role_name("owner");
        let db = su.db_name().to_owned();
        su.db
            .batch_execute(&format!(
                "CREATE ROLE {owner} LOGIN NOSUPERUSER CREATEROLE NOCREATEDB;
                 ALTER DATABASE {db} OWNER TO {owner};
                 GRANT USAGE ON SCHEMA auth TO {owner};
                 DO $$
                 DECLARE r record;
                 BEGIN
                     FOR r IN SELECT c.oid::regclass AS rel FROM pg_class c
                                JOIN pg_namespace n ON n.oid = c.relnamespace
                               WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm') LOOP
                         EXECUTE format('ALTER TABLE %s OWNER TO {owner}', r.rel);
                     END LOOP;
                     FOR r IN SELECT p.oid::regprocedure AS f FROM pg_proc p
                                JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public' LOOP
                         EXECUTE format('ALTER FUNCTION %s OWNER TO {owner}', r.f);
                     END LOOP;
                     FOR r IN SELECT t.oid::regtype AS t FROM pg_type t
                                JOIN pg_namespace n ON n.oid = t.typnamespace
                               WHERE n.nspname = 'public' AND t.typtype = 'e' LOOP
                         EXECUTE format('ALTER TYPE %s OWNER TO {owner}', r.t);
                     END LOOP;
                 END $$;
                 ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public
                     GRANT ALL ON TABLES TO anon, authenticated, service_role;
                 ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public
                     GRANT ALL ON SEQUENCES TO anon, authenticated, service_role;"
            ))
            .await
            .expect("hand the database to a non-superuser owner");
        let as_owner = su
            .another_instance(&[("DATABASE_URL", url_as(&su.url, &owner).as_str())])
            .await;
        Owned {
            su,
            owner,
            as_owner,
        }
    }

    /// Runs `migrate` as the owner.
    pub async fn migrate(&self) -> Value {
        self.as_owner
            .direct("migrate", Value::Null)
            .await
            .unwrap_or_else(|e| panic!("migrate as the owner: {}", e.message))
    }

    /// Runs `sql/function-role.sql` as the owner (told about the roles
    /// table when given); returns the role it made.
    pub async fn function_role(&self, roles_table: Option<&str>) -> String {
        let role = self.su.role_name("fn");
        connect(&url_as(&self.su.url, &self.owner))
            .await
            .batch_execute(&function_role_sql(&role, roles_table))
            .await
            .unwrap_or_else(|e| panic!("sql/function-role.sql as the owner: {e:?}"));
        role
    }

    /// An app (another Lambda instance) connecting as `role`, with `env`.
    pub async fn app_as(&self, role: &str, env: &[(&str, &str)]) -> TestApp {
        let url = url_as(&self.su.url, role);
        let mut all = vec![("DATABASE_URL", url.as_str())];
        all.extend_from_slice(env);
        self.su.another_instance(&all).await
    }
}

/// The live-shaped database, with this test's additions, not yet migrated.
pub async fn live() -> TestApp {
    let t = TestApp::unmigrated(&[]).await;
    t.db.batch_execute(LIVE_SCHEMA)
        .await
        .expect("load the live fixture");
    t.db.batch_execute(&format!(
        "INSERT INTO production_batches (id, product_category, product_variant_base, target_quantity,
                                         current_quantity, current_style_count, max_styles, supplier_id,
                                         batch_status, unit_price_base, window_closes_at)
         VALUES ('{L5}', 'caps', 'snapback', 200, 160, 1, 4, '{S1}', 'filling', 8.50,
                 (now() AT TIME ZONE 'UTC') + interval '12 hours'),
                ('{L6}', 'socks', 'crew', 200, 160, 1, 4, '{S1}', 'filling', 8.50,
                 (now() AT TIME ZONE 'UTC') - interval '3 hours'),
                ('{L7}', 'scarves', 'wool', 200, 120, 1, 4, '{S1}', 'filling', 8.50,
                 (now() AT TIME ZONE 'UTC') - interval '5 hours');
         INSERT INTO orders (id, order_number, buyer_id, product_type, quantity, status, workflow_status,
                             payment_status, buyer_price, supplier_price)
         VALUES ('{LO7}', 'BO-LIVE-0107', '{ALICE}', 'scarves', 120, 'confirmed', 'payment_received', 'paid',
                 1275.60, 1020.00);
         INSERT INTO batch_contributions (batch_id, order_id, quantity, style_details, buyer_price_per_unit)
         VALUES ('{L7}', '{LO7}', 120, '{{\"variant\": \"grey\"}}', 10.63);
         INSERT INTO supplier_orders (id, order_number, supplier_id, product_type, quantity, buyer_price,
                                      supplier_price, status, created_by)
         VALUES ('{LEGACY_SO}', 'BATCH-' || left('{L5}', 8), '{S1}', 'caps', 200, 2000.00, 1700.00,
                 'pending', '{ADMIN_USER}');
         CREATE FUNCTION public.refuse_frozen_batches() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.id = '{L6}' THEN
                 RAISE EXCEPTION 'batch % is frozen by the warehouse system', NEW.id;
             END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER refuse_frozen_batches BEFORE UPDATE ON production_batches
             FOR EACH ROW EXECUTE FUNCTION public.refuse_frozen_batches();"
    ))
    .await
    .expect("test additions");
    t
}

/// review-batch `reject` of `batch` over HTTP by an admin whose `sub` is `admin`.
pub async fn reject_over_http(
    t: &TestApp,
    admin: Uuid,
    batch: &str,
    note: Option<&str>,
) -> (u16, Value) {
    let token = token(json!({"role": "service_role", "sub": admin, "exp": now_secs() + 600}));
    let body = json!({"jobType": "review-batch", "data": {"batchId": batch, "decision": "reject", "note": note}})
        .to_string();
    let event = http_v2("POST", Some(&body), &[("authorization", &bearer(&token))]);
    proxy(&t.invoke(event).await.expect("a proxy response"))
}

pub async fn sqlstate_as(t: &TestApp, role: &str, sql: &str) -> Option<String> {
    let c = connect(&t.url).await;
    c.batch_execute(&format!("SET ROLE {role}"))
        .await
        .expect("set role");
    c.batch_execute(sql)
        .await
        .err()
        .and_then(|e| e.code().map(|c| c.code().to_owned()))
}

#[tokio::test]
async fn a_live_supabase_database_is_adopted_and_every_job_runs_on_it() {
    let owned = Owned::live().await;
    let t = &owned.su;
    let window_before: String =
        t.db.query_one(
            &format!("SELECT window_closes_at::text FROM production_batches WHERE id = '{L1}'"),
            &[],
        )
        .await
        .unwrap()
        .get(0);

    // migrate succeeds as the owner, and a second run does nothing.
    let first = owned.migrate().await;
    assert_eq!(first["success"], true);
    let second = owned.migrate().await;
    assert_eq!(second["applied"], json!([]));
    assert_eq!(
        t.count(&format!(
            "SELECT count(*) FROM pg_tables WHERE tablename = 'batch_events' AND tableowner = '{}'",
            owned.owner
        ))
        .await,
        1,
        "the owner made the new tables"
    );

    // Legacy data survives: values outside our lists, and instants (naive UTC → timestamptz).
    assert_eq!(
        t.count("SELECT count(*) FROM orders WHERE payment_status = 'refunded'")
            .await,
        1
    );
    let window_after: String = t
        .db
        .query_one(
            &format!("SELECT (window_closes_at AT TIME ZONE 'UTC')::text FROM production_batches WHERE id = '{L1}'"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(window_after, window_before);
    // The two-column CHECK is kept and still refuses an overfull filling batch.
    assert_eq!(
        t.count("SELECT count(*) FROM pg_constraint WHERE conname = 'production_batches_filling_not_overfull_check'")
            .await,
        1
    );
    assert!(t
        .db
        .execute(
            &format!("UPDATE production_batches SET current_quantity = 999 WHERE id = '{L4}'"),
            &[]
        )
        .await
        .is_err());
    // The legacy supplier order is linked to its batch.
    assert_eq!(
        t.count(&format!(
            "SELECT count(*) FROM supplier_orders WHERE id = '{LEGACY_SO}' AND batch_id = '{L5}'"
        ))
        .await,
        1
    );

    // The view and the policies over converted columns still exist and work.
    let view_opts: Option<Vec<String>> =
        t.db.query_one(
            "SELECT reloptions FROM pg_class WHERE relname = 'order_batch_overview'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(view_opts, Some(vec!["security_invoker=on".to_owned()]));
    assert_eq!(
        t.count("SELECT count(*) FROM order_batch_overview WHERE committed_at IS NOT NULL")
            .await,
        6
    );
    assert_eq!(
        t.count("SELECT count(*) FROM information_schema.columns WHERE table_name = 'order_batch_overview'
                   AND column_name = 'committed_at' AND data_type = 'timestamp with time zone'")
            .await,
        1
    );
    let anon_may_read_view: bool =
        t.db.query_one(
            "SELECT has_table_privilege('anon', 'order_batch_overview', 'SELECT')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(anon_may_read_view, "the view's grants were restored");
    assert_eq!(
        t.count(
            "SELECT count(*) FROM pg_policies WHERE policyname = 'Anyone can view open batches'
                   AND roles = '{anon,authenticated}' AND cmd = 'SELECT'"
        )
        .await,
        1
    );
    let anon = connect(&t.url).await;
    anon.batch_execute("SET ROLE anon").await.unwrap();
    let open: i64 = anon
        .query_one("SELECT count(*) FROM production_batches", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        open, 2,
        "anon sees the open batches (L4, L5) through the recreated policy"
    );

    // Nothing the function created is readable or writable with the anon key.
    for role in ["anon", "authenticated"] {
        for sql in [
            "SELECT * FROM batch_events",
            "SELECT * FROM order_idempotency",
            "SELECT * FROM batch_processor_migrations",
            "INSERT INTO batch_events (batch_id, event_type) VALUES (gen_random_uuid(), 'order.refund_requested')",
        ] {
            assert_eq!(sqlstate_as(t, role, sql).await.as_deref(), Some("42501"), "{role}: {sql}");
        }
    }
    for table in [
        "batch_events",
        "order_idempotency",
        "batch_processor_migrations",
    ] {
        let rls: bool =
            t.db.query_one(
                &format!("SELECT relrowsecurity FROM pg_class WHERE relname = '{table}'"),
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert!(rls, "{table} has row-level security");
    }

    // The jobs run as the least-privilege role, which the owner — no
    // superuser — makes; the app's own policies stay exactly as they were.
    let app_policies =
        "SELECT string_agg(format('%s %s %s %s %s %s', tablename, policyname, cmd, roles, qual,
                                                 with_check), E'\\n' ORDER BY tablename, policyname)
                          FROM pg_policies WHERE policyname NOT LIKE '%_fn: %'";
    let policies_before: String = t.db.query_one(app_policies, &[]).await.unwrap().get(0);
    let fn_role = owned.function_role(None).await;
    let again = owned.function_role(None).await;
    assert_eq!(again, fn_role, "the file runs twice");
    let policies_after: String = t.db.query_one(app_policies, &[]).await.unwrap().get(0);
    assert_eq!(policies_after, policies_before);
    let attributes: (bool, bool, bool, bool) = {
        let r = t
            .db
            .query_one(
                "SELECT rolsuper, rolbypassrls, rolcreaterole, rolcanlogin FROM pg_roles WHERE rolname = $1",
                &[&fn_role],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1), r.get(2), r.get(3))
    };
    assert_eq!(
        attributes,
        (false, false, false, true),
        "a login role without SUPERUSER, BYPASSRLS or CREATEROLE"
    );
    let f = owned.app_as(&fn_role, &[]).await;
    for sql in [
        "DELETE FROM orders",
        "TRUNCATE batch_events",
        "DELETE FROM batch_events",
        "SELECT * FROM batch_processor_migrations",
        "SELECT * FROM suppliers",
        "UPDATE supplier_mou_terms SET base_price = 0.01",
    ] {
        assert_eq!(
            sqlstate_as(t, &fn_role, sql).await.as_deref(),
            Some("42501"),
            "{sql}"
        );
    }

    let run = f.orchestrate(json!({})).await;
    let by = by_batch(&run);
    let action = |id: &str| {
        by[&Uuid::parse_str(id).unwrap()]["action"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(action(L2), "confirmed");
    assert_eq!(action(L3), "cancelled");
    assert_eq!(action(L5), "confirmed");
    assert_eq!(action(L7), "needs_review");
    assert_eq!(action(L6), "failed");
    let failed = &by[&Uuid::parse_str(L6).unwrap()];
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("frozen by the warehouse system"),
        "{failed}"
    );
    assert!(
        !failed["error"].as_str().unwrap().contains("UPDATE"),
        "no SQL in the reason"
    );
    assert_eq!(run["summary"]["failed"], 1);
    assert_eq!(t.status_of(Uuid::parse_str(L6).unwrap()).await, "filling");

    // The legacy-order batch is confirmed with exactly one supplier order: the legacy one.
    assert_eq!(
        by[&Uuid::parse_str(L5).unwrap()]["supplierOrderId"],
        json!(LEGACY_SO)
    );
    assert_eq!(
        t.count(&format!(
            "SELECT count(*) FROM supplier_orders WHERE batch_id = '{L5}'"
        ))
        .await,
        1
    );
    // A new supplier order has target_date = today + the MOU lead time, booked by the capacity trigger.
    assert_eq!(
        t.count(&format!(
            "SELECT count(*) FROM supplier_orders WHERE batch_id = '{L2}' AND target_date = current_date + 14"
        ))
        .await,
        1
    );
    assert_eq!(
        t.count(&format!(
            "SELECT count(*) FROM factory_capacity WHERE supplier_id = '{S1}' AND date = current_date + 14"
        ))
        .await,
        1
    );
    // The cancel left the legacy 'refunded' order alone and flagged the paid one.
    assert_eq!(
        t.count(
            "SELECT count(*) FROM orders WHERE id = '0d000000-0000-4000-8000-000000000104'
                   AND payment_status = 'refunded'"
        )
        .await,
        1
    );
    assert_eq!(
        t.count(
            "SELECT count(*) FROM orders WHERE id = '0d000000-0000-4000-8000-000000000103'
                   AND payment_status = 'refund_pending'"
        )
        .await,
        1
    );

    // The next run tries the failed batch again, and only it.
    let again = f.orchestrate(json!({})).await;
    let acted: Vec<&str> = again["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] != "nearing_target")
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(acted, ["failed"], "{again}");

    // review-batch as the function role, by an admin with no auth.users row:
    // changed_by NULL, the admin named in the notes and the event.
    let ghost_admin = Uuid::new_v4();
    let (status, answer) = reject_over_http(&f, ghost_admin, L7, Some("too slow")).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["results"][0]["action"], "cancelled");
    assert_eq!(answer["results"][0]["ordersCancelled"], 1);
    assert_eq!(
        t.count(&format!(
            "SELECT count(*) FROM order_status_history WHERE order_id = '{LO7}' AND changed_by IS NULL
               AND notes LIKE '%by admin {ghost_admin}%'"
        ))
        .await,
        1
    );
    assert_eq!(
        t.count(&format!(
            "SELECT count(*) FROM batch_events WHERE batch_id = '{L7}' AND event_type = 'batch.cancelled'
               AND payload->>'reviewedBy' = '{ghost_admin}'"
        ))
        .await,
        1
    );

    // process-order as the function role: a known buyer gets an order; the
    // live schema's FK to auth.users refuses an unknown one (422, nothing written).
    let placed = f
        .direct("process-order", order_data("hoodies", 10, "navy-m", ALICE))
        .await
        .unwrap_or_else(|e| panic!("{}", e.message));
    assert_eq!(placed["success"], true);
    let before = t.fingerprint().await;
    let unknown = f
        .direct(
            "process-order",
            order_data("hoodies", 10, "navy-m", &Uuid::new_v4().to_string()),
        )
        .await
        .unwrap_err();
    assert_eq!(unknown.status, 422);
    assert_eq!(t.fingerprint().await, before);
}

/// A review the database refuses (someone else's trigger) is a 409 that
/// writes nothing; a reject by an admin `auth.users` knows records them.
#[tokio::test]
async fn review_batch_refused_by_the_data_is_a_409_and_writes_nothing() {
    let t = live().await;
    t.direct("migrate", Value::Null).await.unwrap();
    t.db.batch_execute(&format!(
        "UPDATE production_batches SET batch_status = 'needs_review' WHERE id IN ('{L7}');
         ALTER TABLE production_batches DISABLE TRIGGER refuse_frozen_batches;
         UPDATE production_batches SET batch_status = 'needs_review' WHERE id = '{L6}';
         ALTER TABLE production_batches ENABLE TRIGGER refuse_frozen_batches;"
    ))
    .await
    .unwrap();
    let before = t.fingerprint().await;
    let err = t
        .direct(
            "review-batch",
            json!({"batchId": L6, "decision": "approve"}),
        )
        .await
        .unwrap_err();
    assert_eq!(err.status, 409);
    let message = error_json(&err)["error"].as_str().unwrap().to_owned();
    assert!(
        message.contains("frozen by the warehouse system"),
        "{message}"
    );
    assert_eq!(t.fingerprint().await, before, "nothing half-written");

    // A known admin's reject records changed_by.
    let admin = Uuid::parse_str(ADMIN_USER).unwrap();
    let (status, answer) = reject_over_http(&t, admin, L7, None).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        t.count(&format!(
            "SELECT count(*) FROM order_status_history WHERE order_id = '{LO7}'
                            AND changed_by = '{ADMIN_USER}' AND notes LIKE 'Batch {L7} cancelled%'"
        ))
        .await,
        1,
        "a known admin is recorded as changed_by"
    );
}

/// A long legacy variant does not break the style index, and a new one over
/// 200 characters is a 400 naming the field.
#[tokio::test]
async fn long_variants_neither_break_the_index_nor_pass_validation() {
    let t = TestApp::spawn().await;
    t.terms("active", 500, 4, "10.00", None, 10).await;
    let first = t
        .direct(
            "process-order",
            order_data("t-shirts", 5, "navy-m", BUYER_SUB),
        )
        .await
        .unwrap();
    let batch = first["batchId"].as_str().unwrap().to_owned();
    // A legacy contribution with a 3,200-character variant, in the same batch.
    let long = "v".repeat(3200);
    t.db.execute(
        "INSERT INTO orders (id, order_number, buyer_id, product_type, quantity) VALUES ($1, 'LEGACY-1', $2, 't-shirts', 1)",
        &[&Uuid::from_u128(7), &Uuid::parse_str(BUYER_SUB).unwrap()],
    )
    .await
    .unwrap();
    t.db.execute(
        &format!(
            "INSERT INTO batch_contributions (batch_id, order_id, quantity, style_details, buyer_price_per_unit)
             VALUES ('{batch}', $1, 1, jsonb_build_object('variant', $2::text), 12.50)"
        ),
        &[&Uuid::from_u128(7), &long],
    )
    .await
    .expect("a long legacy variant is stored");
    let next = t
        .direct(
            "process-order",
            order_data("t-shirts", 5, "navy-m", BUYER_SUB),
        )
        .await
        .unwrap_or_else(|e| panic!("{}", e.message));
    assert_eq!(next["batchId"], json!(batch));
    let too_long = t
        .direct(
            "process-order",
            order_data("t-shirts", 5, &"x".repeat(201), BUYER_SUB),
        )
        .await
        .unwrap_err();
    assert_eq!(too_long.status, 400);
    assert!(error_json(&too_long)["error"]
        .as_str()
        .unwrap()
        .starts_with("styleDetails.variant"));
    // An admin can delete an order that had an idempotency key.
    let mut keyed = order_data("t-shirts", 5, "navy-m", BUYER_SUB);
    keyed["idempotencyKey"] = json!("delete-me");
    let k = t.direct("process-order", keyed).await.unwrap();
    let order = Uuid::parse_str(k["orderId"].as_str().unwrap()).unwrap();
    t.db.execute(
        "DELETE FROM batch_contributions WHERE order_id = $1",
        &[&order],
    )
    .await
    .unwrap();
    t.db.execute("DELETE FROM orders WHERE id = $1", &[&order])
        .await
        .expect("the key's record cascades");
    assert_eq!(t.count("SELECT count(*) FROM order_idempotency").await, 0);
}

/// A migrate that finds another holding the migration lock waits for it —
/// longer than a job's timeouts allow — instead of failing.
#[tokio::test]
async fn a_migrate_behind_a_held_lock_waits() {
    let env = [("DB_STATEMENT_TIMEOUT_MS", "500")];
    let t = TestApp::unmigrated(&env).await;
    let holder = connect(&t.url).await;
    holder
        .batch_execute("BEGIN; SELECT pg_advisory_xact_lock(7089075258760655471)")
        .await
        .unwrap();
    let watcher = connect(&t.url).await;
    let (migrated, waited) = tokio::join!(t.direct("migrate", Value::Null), async {
        // Released once the server says the migrate has waited for the lock
        // for longer than the 500 ms a job's timeouts would allow (or after
        // a minute, for the assertions below to say what went wrong).
        let mut seen = false;
        for _ in 0..1200 {
            let waited: bool = watcher
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM pg_locks l JOIN pg_stat_activity a USING (pid)
                                     WHERE l.locktype = 'advisory' AND NOT l.granted
                                       AND a.datname = current_database()
                                       AND a.wait_event_type = 'Lock'
                                       AND now() - a.state_change > interval '1 second')",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            if waited {
                seen = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        holder.batch_execute("COMMIT").await.unwrap();
        seen
    });
    let migrated = migrated.unwrap_or_else(|e| panic!("{}", e.message));
    assert!(waited, "the migrate waited for the lock over a second");
    assert_eq!(migrated["success"], true);
    assert_eq!(
        migrated["applied"].as_array().map(Vec::len),
        Some(batch_processor::store::migrations::MIGRATIONS.len())
    );
}
