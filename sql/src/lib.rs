//! SQL-facing translation logic shared by the frontends (the Postgres FDW
//! and the SQL shell). Nothing here calls Postgres or Lance, so all of it is
//! unit-tested without either.
//!
//! - [`names`]: graph names to SQL identifiers (`WorksAt` -> `works_at`).
//! - [`types`]: property types to SQL types.
//! - [`options`]: foreign data wrapper options and their validation.
//! - [`ddl`]: the foreign tables IMPORT FOREIGN SCHEMA creates.
//! - [`stats`]: row sampling for ANALYZE.
//! - [`staged`]: filter, order and project in-memory rows as a Lance scan would.
//! - [`filter`]: the owned filter-expression model, its pushdown
//!   classification (Exact / Unsupported) and its Lance filter text.

#![forbid(unsafe_code)]

pub mod ddl;
pub mod filter;
pub mod names;
pub mod options;
pub mod staged;
pub mod stats;
pub mod types;
