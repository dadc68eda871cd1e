//! SQL-facing logic shared by the frontends (the Postgres FDW, the SQL
//! shell and the server). Nothing here calls Postgres, so all of it is
//! tested without it; Lance is reached only through the engine (the
//! [`scan`], [`query`] and [`cli`] modules drive it).
//!
//! - [`names`]: graph names to SQL identifiers (`WorksAt` -> `works_at`).
//! - [`types`]: property types to SQL types.
//! - [`options`]: foreign data wrapper options and their validation.
//! - [`ddl`]: the foreign tables IMPORT FOREIGN SCHEMA creates.
//! - [`stats`]: row sampling for ANALYZE.
//! - [`scan`]: reading one type's table with the transaction's own writes
//!   (committed, staged and spilled rows merged), for every frontend.
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
pub mod scan;
pub mod server;
pub mod sqlstate;
pub mod stats;
pub mod types;
