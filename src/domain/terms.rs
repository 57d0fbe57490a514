//! What a supplier's terms mean when they leave a value out (behaviour §6
//! step 3, §5 confirm). `supplier_mou_terms` columns are nullable in the
//! original schema; these are the values the marketplace has always assumed.

/// Days from confirmation to the supplier's target date, when the terms name none.
pub const DEFAULT_LEAD_TIME_DAYS: i32 = 14;
/// The smallest batch a supplier makes, when the terms name none.
pub const DEFAULT_MOQ_PER_BATCH: i32 = 200;
/// Distinct styles one batch may hold, when neither the batch nor the terms name a limit.
pub const DEFAULT_MAX_STYLES: i32 = 4;
