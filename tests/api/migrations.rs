use serde_json::{json, Value};
use uuid::Uuid;

use batch_processor::store::migrations::{digest, MIGRATIONS};

use crate::helpers::*;

fn all_names() -> Value {
    json!(MIGRATIONS.iter().map(|m| m.name).collect::<Vec<_>>())
}

#[tokio::test]
async fn migrations_apply_to_an_empty_database_and_twice_is_a_no_op() {
    let t = TestApp::unmigrated(&[]).await;
    let first = t.direct("migrate", Value::Null).await.unwrap();
    assert_eq!(first["success"], true);
    assert_eq!(first["applied"], all_names());
    assert!(MIGRATIONS.len() >= 4);
    let before = t.fingerprint().await;
    let second = t.direct("migrate", Value::Null).await.unwrap();
    assert_eq!(second["applied"], json!([]));
    assert_eq!(second["alreadyApplied"], MIGRATIONS.len());
    assert_eq!(t.fingerprint().await, before);
    assert_eq!(recorded_digests(&t).await, embedded_digests());
    for table in [
        "suppliers",
        "supplier_mou_terms",
        "production_batches",
        "batch_contributions",
        "orders",
        "order_status_history",
        "supplier_orders",
        "batch_events",
    ] {
        assert_eq!(
            t.count(&format!("SELECT count(*) FROM {table}")).await,
            0,
            "{table} exists"
        );
    }
}

/// The digests recorded for each applied migration, by version.
async fn recorded_digests(t: &TestApp) -> Vec<(i64, Option<String>)> {
    t.db.query(
        "SELECT version, digest FROM batch_processor_migrations ORDER BY version",
        &[],
    )
    .await
    .expect("the migrations table")
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

fn embedded_digests() -> Vec<(i64, Option<String>)> {
    MIGRATIONS
        .iter()
        .map(|m| (m.version, Some(digest(m.sql))))
        .collect()
}

/// An applied migration whose text no longer matches what was applied is
/// refused, naming it, and nothing changes — not even the record.
#[tokio::test]
async fn a_changed_applied_migration_is_refused_with_its_name() {
    let t = TestApp::unmigrated(&[]).await;
    t.direct("migrate", Value::Null).await.expect("migrates");
    assert_eq!(recorded_digests(&t).await, embedded_digests());
    // The text of 0002 as this database applied it differed from this binary's.
    t.db.execute(
        "UPDATE batch_processor_migrations SET digest = repeat('0', 64) WHERE version = 2",
        &[],
    )
    .await
    .unwrap();
    let before = t.fingerprint().await;
    let records = recorded_digests(&t).await;
    let err = t.direct("migrate", Value::Null).await.unwrap_err();
    assert_eq!(err.status, 409, "{}", err.message);
    let message = error_json(&err)["error"].as_str().unwrap().to_owned();
    assert!(
        message.starts_with("Migration 0002_adopt_original was changed after it was applied"),
        "{message}"
    );
    assert!(message.contains("never edited"), "{message}");
    assert_eq!(t.fingerprint().await, before);
    assert_eq!(
        recorded_digests(&t).await,
        records,
        "the record is left as it was"
    );
}

/// A database migrated before digests were recorded (no `digest` column) is
/// accepted, and gets the digests of the migrations it applied.
#[tokio::test]
async fn a_database_from_before_digests_gets_them_and_is_not_refused() {
    let t = TestApp::unmigrated(&[]).await;
    t.direct("migrate", Value::Null).await.expect("migrates");
    t.db.batch_execute("ALTER TABLE batch_processor_migrations DROP COLUMN digest")
        .await
        .unwrap();
    let before = t.fingerprint().await;
    let resp = t.direct("migrate", Value::Null).await.expect("accepted");
    assert_eq!(resp["applied"], json!([]));
    assert_eq!(resp["alreadyApplied"], MIGRATIONS.len());
    assert_eq!(recorded_digests(&t).await, embedded_digests());
    assert_eq!(t.fingerprint().await, before);
    // A row recorded by an older binary with the column but no digest, too.
    t.db.batch_execute("UPDATE batch_processor_migrations SET digest = NULL WHERE version = 5")
        .await
        .unwrap();
    t.direct("migrate", Value::Null).await.expect("accepted");
    assert_eq!(recorded_digests(&t).await, embedded_digests());
}

/// 0005 once built a plain `(batch_id, style_details ->> 'variant')` index,
/// and a legacy contribution whose variant is a few kilobytes (more than a
/// btree entry may hold) aborted the whole run on the original's shape. A
/// database that never applied 0005 never builds it now; one that applied
/// that first text is accepted as applied (its digest is listed as
/// superseded), while any other difference is still refused.
#[tokio::test]
async fn a_long_legacy_variant_no_longer_stops_migrate() {
    let t = TestApp::unmigrated(&[]).await;
    t.db.batch_execute(include_str!("../fixtures/original_schema.sql"))
        .await
        .expect("fixture loads");
    // 8 KB of hex: too little redundancy to compress under a btree entry's 2.7 KB.
    t.db.batch_execute(
        "INSERT INTO batch_contributions (batch_id, order_id, quantity, style_details, buyer_price_per_unit)
         SELECT b.id, o.id, 1,
                jsonb_build_object('variant', (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 256) i)),
                10.00
           FROM production_batches b CROSS JOIN orders o
          WHERE NOT EXISTS (SELECT 1 FROM batch_contributions c WHERE c.batch_id = b.id AND c.order_id = o.id)
          ORDER BY b.id, o.id LIMIT 1",
    )
    .await
    .expect("a legacy contribution with a long variant");
    let plain_index_fails = t
        .db
        .batch_execute(
            "BEGIN; CREATE INDEX probe ON batch_contributions (batch_id, (style_details ->> 'variant')); ROLLBACK",
        )
        .await;
    assert!(
        plain_index_fails.is_err(),
        "the old 0005 index cannot hold it"
    );
    let _ = t.db.batch_execute("ROLLBACK").await;
    let resp = t
        .direct("migrate", Value::Null)
        .await
        .unwrap_or_else(|e| panic!("{}", e.message));
    assert_eq!(resp["applied"], all_names());
    assert_eq!(
        t.count("SELECT count(*) FROM pg_indexes WHERE indexname = 'batch_contributions_batch_variant_idx'")
            .await,
        0
    );

    // A database that applied the first 0005 text: accepted, its record kept.
    let m5 = MIGRATIONS.iter().find(|m| m.version == 5).unwrap();
    let old = m5.superseded[0];
    t.db.execute(
        "UPDATE batch_processor_migrations SET digest = $1 WHERE version = 5",
        &[&old],
    )
    .await
    .unwrap();
    let again = t.direct("migrate", Value::Null).await.expect("accepted");
    assert_eq!(again["applied"], json!([]));
    let recorded: String =
        t.db.query_one(
            "SELECT digest FROM batch_processor_migrations WHERE version = 5",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(recorded, old, "the record says what was applied");
    // Anything else is still a changed migration.
    t.db.execute(
        "UPDATE batch_processor_migrations SET digest = repeat('1', 64) WHERE version = 5",
        &[],
    )
    .await
    .unwrap();
    let err = t.direct("migrate", Value::Null).await.unwrap_err();
    assert_eq!(err.status, 409);
    assert!(error_json(&err)["error"]
        .as_str()
        .unwrap()
        .starts_with("Migration 0005_category_index was changed"));
}

/// Two instances migrating a fresh database at the same moment: both succeed,
/// each migration is recorded once.
#[tokio::test]
async fn concurrent_migrations_serialize_on_the_advisory_lock() {
    let a = TestApp::unmigrated(&[]).await;
    let b = a.another_instance(&[]).await;
    let c = a.another_instance(&[]).await;
    let (ra, rb, rc) = tokio::join!(
        a.direct("migrate", Value::Null),
        b.direct("migrate", Value::Null),
        c.direct("migrate", Value::Null)
    );
    let applied: Vec<usize> = [ra, rb, rc]
        .into_iter()
        .map(|r| {
            r.expect("every migrate succeeds")["applied"]
                .as_array()
                .unwrap()
                .len()
        })
        .collect();
    assert_eq!(
        applied.iter().sum::<usize>(),
        MIGRATIONS.len(),
        "{applied:?}"
    );
    assert_eq!(
        applied.iter().filter(|n| **n > 0).count(),
        1,
        "one instance applied everything: {applied:?}"
    );
    assert_eq!(
        a.count("SELECT count(*) FROM batch_processor_migrations")
            .await,
        MIGRATIONS.len() as i64
    );
}

fn fixture_id(prefix: &str, n: u32) -> Uuid {
    Uuid::parse_str(&format!("{prefix}-0000-4000-8000-{n:012}")).unwrap()
}

fn batch_id(n: u32) -> Uuid {
    fixture_id("ba000000", n)
}

fn order_id(n: u32) -> Uuid {
    fixture_id("0d000000", n)
}

/// The upgrade path of behaviour §4.2: the original Supabase tables, with rows and
/// foreign columns, migrated in place; then the jobs run on them.
#[tokio::test]
async fn the_original_database_is_upgraded_in_place_and_the_jobs_work_on_it() {
    let t = TestApp::unmigrated(&[]).await;
    let fixture = include_str!("../fixtures/original_schema.sql");
    t.db.batch_execute(fixture).await.expect("fixture loads");
    let naive_window: String =
        t.db.query_one(
            "SELECT window_closes_at::text FROM production_batches WHERE id = $1",
            &[&batch_id(7)],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(naive_window, "2026-01-15 10:30:00");
    let counts_before = table_counts(&t).await;

    // Migrate under a session time zone other than UTC: naive values are UTC.
    t.db.batch_execute("SET TimeZone = 'America/New_York'")
        .await
        .unwrap();
    let resp = t.direct("migrate", Value::Null).await.unwrap();
    assert_eq!(resp["applied"], all_names());
    assert_eq!(
        table_counts(&t).await,
        counts_before,
        "no row lost or added"
    );

    t.db.batch_execute("SET TimeZone = 'UTC'").await.unwrap();
    let row = t
        .db
        .query_one(
            "SELECT window_closes_at::text, pg_typeof(window_closes_at)::text FROM production_batches WHERE id = $1",
            &[&batch_id(7)],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "2026-01-15 10:30:00+00");
    assert_eq!(row.get::<_, String>(1), "timestamp with time zone");
    // Foreign columns survive with their values.
    let notes: Vec<String> = column(&t.db, "SELECT notes FROM orders ORDER BY id", &[]).await;
    assert_eq!(notes.len(), 12);
    assert!(notes.iter().all(|n| n.starts_with("keep-me-")), "{notes:?}");
    assert!(
        t.count("SELECT count(*) FROM information_schema.columns WHERE table_name = 'orders'")
            .await
            >= 41
    );

    // The jobs on the upgraded tables (expectations in tests/fixtures/README.md).
    let resp = t.orchestrate(json!({})).await;
    let order: Vec<Uuid> = resp["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| Uuid::parse_str(r["batchId"].as_str().unwrap()).unwrap())
        .collect();
    assert_eq!(
        order,
        [2, 9, 1, 3, 8, 5, 6].map(batch_id).to_vec(),
        "{resp}"
    );
    assert_eq!(resp["evaluated"], 8);
    let r = by_batch(&resp);
    assert_eq!(r[&batch_id(2)]["action"], "needs_review");
    assert_eq!(r[&batch_id(9)]["action"], "needs_review");
    assert_eq!(r[&batch_id(1)]["action"], "confirmed");
    assert_eq!(r[&batch_id(3)]["action"], "cancelled");
    assert_eq!(r[&batch_id(3)]["ordersCancelled"], 2);
    assert_eq!(r[&batch_id(8)]["action"], "skipped");
    assert_eq!(r[&batch_id(5)]["action"], "nearing_target");
    assert_eq!(r[&batch_id(6)]["action"], "confirmed");

    let so = t
        .db
        .query_one(
            "SELECT supplier_price::text, buyer_price::text, created_by IS NULL FROM supplier_orders WHERE batch_id = $1",
            &[&batch_id(1)],
        )
        .await
        .unwrap();
    assert_eq!(so.get::<_, String>(0), "1700.00");
    assert_eq!(so.get::<_, String>(1), "1675.00");
    assert!(
        so.get::<_, bool>(2),
        "the system creates supplier orders with no user"
    );
    let o4 =
        t.db.query_one(
            "SELECT status, payment_status, notes FROM orders WHERE id = $1",
            &[&order_id(4)],
        )
        .await
        .unwrap();
    assert_eq!(o4.get::<_, String>(0), "cancelled");
    assert_eq!(o4.get::<_, String>(1), "refund_pending");
    assert_eq!(o4.get::<_, String>(2), "keep-me-4");
    let refund: Value = t
        .db
        .query_one(
            "SELECT payload FROM batch_events WHERE event_type = 'order.refund_requested' AND order_id = $1",
            &[&order_id(4)],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(refund["amount"].as_f64(), Some(531.5));

    // review-batch on the upgraded tables.
    let approved = t
        .direct(
            "review-batch",
            json!({"batchId": batch_id(2), "decision": "approve"}),
        )
        .await
        .unwrap();
    assert_eq!(approved["results"][0]["action"], "confirmed");
    let rejected = t
        .direct(
            "review-batch",
            json!({"batchId": batch_id(9), "decision": "reject"}),
        )
        .await
        .unwrap();
    assert_eq!(rejected["results"][0]["ordersCancelled"], 1);
    let conflict = t
        .direct(
            "review-batch",
            json!({"batchId": batch_id(1), "decision": "approve"}),
        )
        .await
        .unwrap_err();
    assert_eq!(conflict.status, 409);
}

async fn table_counts(t: &TestApp) -> Vec<i64> {
    let mut out = Vec::new();
    for table in [
        "auth.users",
        "suppliers",
        "supplier_mou_terms",
        "production_batches",
        "orders",
        "batch_contributions",
        "order_status_history",
        "supplier_orders",
    ] {
        out.push(t.count(&format!("SELECT count(*) FROM {table}")).await);
    }
    out
}
