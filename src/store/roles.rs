//! The app's own roles table (`ADMIN_ROLES_TABLE`, behaviour §3): real
//! Supabase apps keep who is an admin in a table (`public.user_roles(user_id,
//! role)` with `has_role(uid, 'admin')`), not in the token.

use tokio_postgres::types::Type;
use uuid::Uuid;

use super::{Sql, StoreError};
use crate::configuration::QualifiedName;

/// Whether `table` has a row `user_id = user` with `role = 'admin'`. One
/// statement on the `(user_id, …)` index such tables have (the app's unique
/// `(user_id, role)`); `role` is compared as text, so an enum works. The
/// table's name is configuration, validated at start and quoted
/// ([`QualifiedName::quoted`]); the user is a bound parameter.
pub async fn is_admin(
    sql: &Sql<'_>,
    table: &QualifiedName,
    user: Uuid,
) -> Result<bool, StoreError> {
    let text = format!(
        "SELECT EXISTS (SELECT 1 FROM {} WHERE user_id = $1 AND role::text = 'admin')",
        table.quoted()
    );
    let row = sql.query_one(&text, &[(&user, Type::UUID)]).await?;
    Ok(row.get(0))
}
