//! The tier rule lives in Rust (`domain::tier::decide`); SQL only narrows the
//! orchestrate scan to candidates that may need a write, so a small `limit`
//! is spent on work. That filter must be the exact complement of
//! `Action::writes()`: a batch it wrongly drops is never decided, one it
//! wrongly keeps is locked for nothing. This property test stores batches of
//! generated (current, target, window, notified) facts — every 50/60/75 %
//! boundary, target ≤ 0, NULL quantities, large numbers — and checks the real
//! scan against the rule, row by row.

use batch_processor::domain::{decide, Candidate};
use batch_processor::store::batches::{self, Scan, ScanQuery};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use uuid::Uuid;

use crate::helpers::TestApp;

#[derive(Debug, Clone, Copy)]
struct Facts {
    /// `None`: a NULL `current_quantity` (legacy rows), read as 0.
    current: Option<i32>,
    target: i32,
    closed: bool,
    notified: bool,
}

impl Facts {
    fn candidate(&self) -> Candidate {
        Candidate {
            current_quantity: i64::from(self.current.unwrap_or(0)),
            target_quantity: i64::from(self.target),
            window_closed: self.closed,
            nearing_notified: self.notified,
        }
    }
}

/// Every boundary: small targets with every current value, and the quantities
/// just around 50, 60 and 75 % of larger targets.
fn boundary_cases() -> Vec<Facts> {
    let mut out = Vec::new();
    let mut push = |current: Option<i32>, target: i32| {
        for closed in [false, true] {
            for notified in [false, true] {
                out.push(Facts {
                    current,
                    target,
                    closed,
                    notified,
                });
            }
        }
    };
    for target in -2..=20 {
        push(None, target);
        for current in 0..=target.max(0) + 2 {
            push(Some(current), target);
        }
    }
    for target in [100, 200, 333, 1000, 999_999, i32::MAX / 100] {
        for pct in [50i64, 60, 75] {
            let exact = i64::from(target) * pct / 100;
            for q in exact - 1..=exact + 1 {
                push(Some(q as i32), target);
            }
        }
    }
    out
}

fn random_facts() -> impl Strategy<Value = Facts> {
    (
        prop_oneof![-3i32..=0, 1i32..=400, 1i32..=2_000_000],
        0.0f64..=1.3,
        any::<bool>(),
        any::<bool>(),
        prop::bool::weighted(0.05),
    )
        .prop_map(|(target, share, closed, notified, null)| Facts {
            current: (!null).then(|| (f64::from(target.max(1)) * share) as i32),
            target,
            closed,
            notified,
        })
}

#[tokio::test]
async fn the_sql_write_filter_is_exactly_the_rule() {
    let t = TestApp::spawn().await;
    let mut cases = boundary_cases();
    let mut runner = TestRunner::default();
    let random = prop::collection::vec(random_facts(), 1500)
        .new_tree(&mut runner)
        .expect("generate cases")
        .current();
    cases.extend(random);

    let ids: Vec<Uuid> = cases.iter().map(|_| Uuid::new_v4()).collect();
    let currents: Vec<Option<i32>> = cases.iter().map(|c| c.current).collect();
    let targets: Vec<i32> = cases.iter().map(|c| c.target).collect();
    let closed: Vec<bool> = cases.iter().map(|c| c.closed).collect();
    let notified: Vec<bool> = cases.iter().map(|c| c.notified).collect();
    t.db.execute(
        "INSERT INTO production_batches
             (id, product_category, product_variant_base, current_quantity, target_quantity,
              unit_price_base, batch_status, window_closes_at, nearing_target_notified_at)
         SELECT id, 'prop', 'base', cur, tgt, 10.00, 'filling',
                now() + CASE WHEN closed THEN interval '-1 hour' ELSE interval '1 hour' END,
                CASE WHEN notified THEN now() END
           FROM unnest($1::uuid[], $2::int4[], $3::int4[], $4::bool[], $5::bool[])
                AS c(id, cur, tgt, closed, notified)",
        &[&ids, &currents, &targets, &closed, &notified],
    )
    .await
    .expect("insert cases");

    let conn = t.app.db.get().await.expect("connection");
    let sql = conn.sql();
    let scan = |scan| ScanQuery {
        scan,
        lookahead_hours: 24,
        after: None,
        limit: i64::MAX,
    };
    let may_write: std::collections::HashSet<Uuid> =
        batches::candidates(&sql, &scan(Scan::MayWrite))
            .await
            .expect("scan")
            .iter()
            .map(|r| r.id)
            .collect();
    let report_only: std::collections::HashSet<Uuid> =
        batches::candidates(&sql, &scan(Scan::ReportOnly))
            .await
            .expect("scan")
            .iter()
            .map(|r| r.id)
            .collect();

    let mut wrong = Vec::new();
    for (id, facts) in ids.iter().zip(&cases) {
        let writes = decide(&facts.candidate()).writes();
        let in_write_scan = may_write.contains(id);
        // Every candidate is in exactly one of the two scans.
        if in_write_scan == report_only.contains(id) || in_write_scan != writes {
            wrong.push((facts, writes, in_write_scan));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} cases disagree, e.g. {:?}",
        wrong.len(),
        cases.len(),
        &wrong[..wrong.len().min(5)]
    );
}
