//! Pure business rules: no IO, no SQL, no AWS. Everything here is decided in
//! integers or decimals and tested table-driven beside the code.

pub mod counts;
pub mod fill;
pub mod pricing;
pub mod retry;
pub mod status;
pub mod terms;
pub mod tier;

pub use counts::{Backlog, Counts, Delivery};
pub use fill::{Fill, InvalidTarget};
pub use status::BatchStatus;
pub use tier::{decide, Action, Candidate, Outcome};
