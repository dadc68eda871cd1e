//! SQL-facing translation logic shared by the frontends (the Postgres FDW
//! and the SQL shell). Nothing here calls Postgres or Lance, so all of it is
//! unit-tested without either (the
//! [`cli`] module drives the engine, which does).
//!
//! - [`names`]: graph names to SQL identifiers (`WorksAt` -> `works_at`).
//! - [`types`]: property types to SQL types.
//! - [`options`]: foreign data wrapper options and their validation.
//! - [`ddl`]: the foreign tables IMPORT FOREIGN SCHEMA creates.
//! - [`stats`]: row sampling for ANALYZE.
//! - [`staged`]: filter, order and project in-memory rows as a Lance scan would.
//! - [`filter`]: the owned filter-expression model, its pushdown
//!   classification (Exact / Unsupported) and its Lance filter text.
//! - [`query`]: SQL over a graph on DataFusion (the standalone frontend's
//!   tables, pushdown through [`filter`], statements).
//! - [`sqlstate`]: engine errors as SQLSTATEs, for every frontend.
//! - [`server`]: `omnigraph serve`, the Postgres wire protocol over [`query`].
//! - [`cli`]: the `omnigraph` command (admin verbs, the SQL shell, the server).

#![forbid(unsafe_code)]

pub mod cli;
pub mod ddl;
pub mod filter;
pub mod names;
pub mod options;
pub mod query;
pub mod server;
pub mod sqlstate;
pub mod staged;
pub mod stats;
pub mod types;
