//! Who may reach the tables `migrate` leaves behind (behaviour §4.3), run by
//! the migration runner in its own transaction, around the migrations:
//!
//! - **Nothing new is public.** Supabase serves every table of `public` over
//!   its REST API to `anon` and `authenticated`, and its default privileges
//!   give both ALL on every new table. So every relation a migrate run
//!   *creates* — its own tables, and the business tables when it creates them
//!   on a new or partly set-up project — gets row-level security (tables) and
//!   loses every privilege of `anon` and `authenticated` (when those roles
//!   exist). This is the runner's, not a migration's: it holds for whatever a
//!   later migration creates, and needs no applied migration edited.
//! - **What existed keeps its grants exactly.** A relation the run dropped and
//!   recreated under the same name (a view around a column conversion) gets
//!   back exactly the privileges it had: whatever the recreating role's default
//!   privileges added is revoked. A view whose ACL was NULL (its owner's
//!   defaults) comes back with its owner's defaults, spelled out — the same
//!   privileges; only a superuser could write NULL back into the catalog.
//!   Relations that kept their identity keep their grants and policies
//!   untouched.
//! - **Warnings** ([`warnings`]), on every run: tables of the function's that
//!   `anon`/`authenticated` reach with row-level security off (a database
//!   migrated before the first two points existed), and every grant or
//!   policy letting them write the columns money is computed from.

use tokio_postgres::types::Type;

use super::{Sql, StoreError};

/// The relations of the database's own schemas, as they were before the
/// run: a temporary table that the transaction drops.
pub async fn snapshot(sql: &Sql<'_>) -> Result<(), StoreError> {
    sql.batch_execute(
        "CREATE TEMPORARY TABLE batch_processor_relations_before ON COMMIT DROP AS
         SELECT c.oid, n.nspname, c.relname, c.relowner, c.relacl
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
            AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%'",
    )
    .await
}

/// Makes private what the run created and restores the former grants of
/// what it recreated, against the [`snapshot`].
pub async fn secure(sql: &Sql<'_>) -> Result<(), StoreError> {
    sql.batch_execute(
        r#"DO $$
DECLARE
    r       record;
    g       record;
    api     text;
    kind    text;
    grantee text;
BEGIN
    FOR r IN
        SELECT c.oid::regclass AS rel, c.relkind, c.relowner, c.relacl,
               b.oid AS old_oid, b.relowner AS old_owner, b.relacl AS old_acl
          FROM pg_class c
          JOIN pg_namespace n ON n.oid = c.relnamespace
          LEFT JOIN batch_processor_relations_before b
                 ON b.nspname = n.nspname AND b.relname = c.relname
         WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
           AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\_%'
           AND (b.oid IS NULL OR b.oid <> c.oid)
    LOOP
        kind := CASE WHEN r.relkind = 'S' THEN 'SEQUENCE' ELSE 'TABLE' END;
        IF r.old_oid IS NULL THEN
            -- Created by this run: private.
            IF r.relkind IN ('r', 'p') THEN
                EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', r.rel);
            END IF;
            FOREACH api IN ARRAY ARRAY['anon', 'authenticated'] LOOP
                IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = api) THEN
                    EXECUTE format('REVOKE ALL ON %s %s FROM %I', kind, r.rel, api);
                END IF;
            END LOOP;
        ELSE
            -- Dropped and recreated by this run: exactly the privileges it had.
            FOR g IN
                SELECT DISTINCT a.grantee
                  FROM aclexplode(COALESCE(r.relacl,
                           acldefault(CASE WHEN r.relkind = 'S' THEN 's' ELSE 'r' END::"char", r.relowner))) a
            LOOP
                grantee := CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(g.grantee)) END;
                EXECUTE format('REVOKE ALL ON %s %s FROM %s CASCADE', kind, r.rel, grantee);
            END LOOP;
            FOR g IN
                SELECT a.grantee, a.privilege_type, a.is_grantable
                  FROM aclexplode(COALESCE(r.old_acl,
                           acldefault(CASE WHEN r.relkind = 'S' THEN 's' ELSE 'r' END::"char", r.old_owner))) a
                 WHERE a.grantee = 0 OR EXISTS (SELECT 1 FROM pg_roles WHERE oid = a.grantee)
            LOOP
                grantee := CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(g.grantee)) END;
                EXECUTE format('GRANT %s ON %s %s TO %s%s', g.privilege_type, kind, r.rel, grantee,
                               CASE WHEN g.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
            END LOOP;
        END IF;
    END LOOP;
END
$$"#,
    )
    .await
}

/// The function's tables (behaviour §4.1): the ones whose exposure is warned of.
const FUNCTION_TABLES: &[&str] = &[
    "suppliers",
    "supplier_mou_terms",
    "production_batches",
    "batch_contributions",
    "orders",
    "order_status_history",
    "supplier_orders",
    "batch_events",
    "order_idempotency",
    "batch_processor_migrations",
];

/// What refund consumers must do when buyers can write what money is
/// computed from.
const VERIFY: &str = "refund consumers must verify each payment with the payment provider";

/// Warnings for the operator, in the current schema: see the module's doc.
pub async fn warnings(sql: &Sql<'_>) -> Result<Vec<String>, StoreError> {
    let mut out = exposed(sql).await?;
    out.extend(money_writers(sql).await?);
    Ok(out)
}

/// The function's tables `anon` or `authenticated` reach with row-level
/// security off: anyone with the project's public anon key reaches them
/// through the REST API.
async fn exposed(sql: &Sql<'_>) -> Result<Vec<String>, StoreError> {
    let tables: Vec<String> = FUNCTION_TABLES.iter().map(|t| (*t).to_owned()).collect();
    let rows = sql
        .query(
            "SELECT c.relname::text, api.rolname::text,
                    string_agg(p.privilege, ', ' ORDER BY p.n)
               FROM unnest($1::text[]) AS t(name)
               JOIN pg_class c ON c.oid = to_regclass(format('%I.%I', current_schema(), t.name))
              CROSS JOIN pg_roles api
              CROSS JOIN unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE'])
                         WITH ORDINALITY AS p(privilege, n)
              WHERE api.rolname IN ('anon', 'authenticated')
                AND NOT c.relrowsecurity
                AND has_table_privilege(api.oid, c.oid, p.privilege)
              GROUP BY c.relname, api.rolname
              ORDER BY c.relname, api.rolname",
            &[(&tables, Type::TEXT_ARRAY)],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let (table, role, privileges): (String, String, String) =
                (r.get(0), r.get(1), r.get(2));
            format!(
                "{table}: row-level security is off and {role} may {privileges}: anyone with the \
                 project's anon key reaches it through the REST API (ALTER TABLE {table} ENABLE ROW \
                 LEVEL SECURITY, or REVOKE ALL ON {table} FROM {role})"
            )
        })
        .collect())
}

/// Every grant (row-level security off) or permissive policy (on) that lets
/// `anon` or `authenticated` update `orders.payment_status` or
/// `orders.buyer_price`, or insert or update `batch_contributions`.
async fn money_writers(sql: &Sql<'_>) -> Result<Vec<String>, StoreError> {
    let rows = sql
        .query(
            "WITH api AS (
                 SELECT oid, rolname::text AS rolname FROM pg_roles WHERE rolname IN ('anon', 'authenticated')
             ), asks(tbl, cmd, cols, n) AS (
                 VALUES ('orders', 'UPDATE', ARRAY['payment_status', 'buyer_price'], 1),
                        ('batch_contributions', 'INSERT', NULL::text[], 2),
                        ('batch_contributions', 'UPDATE', NULL::text[], 3)
             ), granted AS (
                 SELECT a.tbl, a.cmd, a.n, c.oid AS rel, c.relrowsecurity AS rls, api.oid AS role, api.rolname,
                        CASE WHEN a.cols IS NULL THEN NULL ELSE ARRAY(
                            SELECT col FROM unnest(a.cols) AS col
                             WHERE EXISTS (SELECT 1 FROM pg_attribute at
                                            WHERE at.attrelid = c.oid AND at.attname = col
                                              AND NOT at.attisdropped)
                               AND has_column_privilege(api.oid, c.oid, col, a.cmd)
                             ORDER BY col) END AS cols
                   FROM asks a
                   JOIN pg_class c ON c.oid = to_regclass(format('%I.%I', current_schema(), a.tbl))
                  CROSS JOIN api
                  WHERE CASE a.cmd WHEN 'UPDATE' THEN has_any_column_privilege(api.oid, c.oid, 'UPDATE')
                                   ELSE has_table_privilege(api.oid, c.oid, a.cmd) END
             )
             SELECT g.tbl, g.cmd, COALESCE(array_to_string(g.cols, ', '), ''), g.rolname, g.rls,
                    p.polname::text, pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid)
               FROM granted g
               LEFT JOIN pg_policy p
                      ON g.rls AND p.polrelid = g.rel AND p.polpermissive
                     AND p.polcmd IN ('*', CASE g.cmd WHEN 'UPDATE' THEN 'w' ELSE 'a' END)
                     AND (0 = ANY (p.polroles) OR g.role = ANY (p.polroles)
                          OR EXISTS (SELECT 1 FROM unnest(p.polroles) AS pr
                                      WHERE pr <> 0 AND pg_has_role(g.role, pr, 'MEMBER')))
              WHERE g.cols IS NULL OR cardinality(g.cols) > 0
              ORDER BY g.n, p.polname NULLS FIRST, g.rolname",
            &[],
        )
        .await?;
    let found: Vec<MoneyWriter> = rows
        .iter()
        .map(|r| MoneyWriter {
            table: r.get(0),
            command: r.get(1),
            columns: r.get(2),
            role: r.get(3),
            rls: r.get(4),
            policy: r.get(5),
            using: r.get(6),
            check: r.get(7),
        })
        .collect();
    Ok(describe(&found))
}

/// One way an API role may write what money is computed from.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MoneyWriter {
    table: String,
    command: String,
    /// The money columns it may update (`orders`), empty for a whole table.
    columns: String,
    role: String,
    rls: bool,
    /// The permissive policy that lets it, with row-level security on.
    policy: Option<String>,
    using: Option<String>,
    check: Option<String>,
}

/// One warning per grant (row-level security off) or policy, naming the
/// table, the policy or grant, the roles and what it allows.
fn describe(found: &[MoneyWriter]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut seen: Vec<(String, String, Option<String>, String)> = Vec::new();
    for w in found {
        if w.rls && w.policy.is_none() {
            // Granted, but no permissive policy lets any row through.
            continue;
        }
        let key = (
            w.table.clone(),
            w.command.clone(),
            w.policy.clone(),
            w.columns.clone(),
        );
        if seen.contains(&key) {
            continue;
        }
        seen.push(key);
        let roles: Vec<&str> = found
            .iter()
            .filter(|o| {
                o.table == w.table
                    && o.command == w.command
                    && o.policy == w.policy
                    && o.columns == w.columns
            })
            .map(|o| o.role.as_str())
            .collect();
        let what = if w.columns.is_empty() {
            format!("{} {}", w.command, w.table)
        } else {
            format!("{} {}.{{{}}}", w.command, w.table, w.columns)
        };
        let by = match &w.policy {
            None => "row-level security is off, so its grant".to_owned(),
            Some(policy) => {
                let mut conditions = Vec::new();
                if let Some(using) = &w.using {
                    conditions.push(format!("USING ({})", short(using)));
                }
                if let Some(check) = &w.check {
                    conditions.push(format!("WITH CHECK ({})", short(check)));
                }
                let conditions = if conditions.is_empty() {
                    "on every row".to_owned()
                } else {
                    conditions.join(" ")
                };
                format!("policy \"{policy}\" ({conditions})")
            }
        };
        out.push(format!(
            "{}: {by} lets {} {what}: buyers can change what refunds and supplier-order totals \
             rest on; {VERIFY}",
            w.table,
            roles.join(", ")
        ));
    }
    out
}

fn short(expression: &str) -> String {
    let mut s: String = expression.chars().take(160).collect();
    if s.len() < expression.len() {
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer(role: &str, policy: Option<&str>, rls: bool) -> MoneyWriter {
        MoneyWriter {
            table: "orders".into(),
            command: "UPDATE".into(),
            columns: "buyer_price, payment_status".into(),
            role: role.into(),
            rls,
            policy: policy.map(str::to_owned),
            using: policy.map(|_| "(buyer_id = auth.uid())".to_owned()),
            check: None,
        }
    }

    #[test]
    fn one_warning_per_policy_or_grant_naming_roles_and_what_it_allows() {
        let found = [
            writer("anon", Some("Buyers can update their own orders"), true),
            writer(
                "authenticated",
                Some("Buyers can update their own orders"),
                true,
            ),
            writer("anon", None, true),
        ];
        let warnings = describe(&found);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].starts_with(
            "orders: policy \"Buyers can update their own orders\" (USING ((buyer_id = auth.uid()))) \
             lets anon, authenticated UPDATE orders.{buyer_price, payment_status}"
        ), "{}", warnings[0]);
        assert!(warnings[0].contains("payment provider"));
        let granted = describe(&[writer("authenticated", None, false)]);
        assert_eq!(granted.len(), 1);
        assert!(granted[0].starts_with(
            "orders: row-level security is off, so its grant lets authenticated UPDATE orders.{buyer_price, payment_status}"
        ), "{}", granted[0]);
        assert!(describe(&[]).is_empty());
    }
}
