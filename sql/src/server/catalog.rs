//! The DataFusion context of one connection: the graph's tables in schema
//! `public` of a catalog named after the database, `information_schema`,
//! the `pg_catalog` emulation of `datafusion-pg-catalog` (the tables and
//! functions psql, JDBC and SQLAlchemy read; `pg_attribute` with the
//! graph's tables corrected, [`super::pg_tables`]), `version()` in PostgreSQL's
//! format, and a memory limit for the session's queries.

use std::sync::Arc;

use datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use omnigraph_engine::deps::arrow_schema::DataType;
use omnigraph_engine::deps::lance::deps::datafusion::common::{DataFusionError, ScalarValue};
use omnigraph_engine::deps::lance::deps::datafusion::execution::context::SessionContext;
use omnigraph_engine::deps::lance::deps::datafusion::execution::runtime_env::RuntimeEnvBuilder;
use omnigraph_engine::deps::lance::deps::datafusion::logical_expr::{
    ColumnarValue, Volatility, create_udf,
};
use omnigraph_engine::deps::lance::deps::datafusion::prelude::SessionConfig;

use super::pg_tables::PgCatalog;
use super::startup::SERVER_VERSION;

/// A fresh context for a session of database `name`, whose queries may
/// hold `memory` bytes (sorts, joins and aggregates fail with 53200
/// beyond it).
pub(super) fn context(name: &str, memory: usize) -> Result<SessionContext, DataFusionError> {
    let config = SessionConfig::new()
        .with_information_schema(true)
        .with_default_catalog_and_schema(name, "public");
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_limit(memory, 1.0)
        .build_arc()?;
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    datafusion_pg_catalog::setup_pg_catalog(&ctx, name, EmptyContextProvider).map_err(|e| *e)?;
    // The emulation's pg_class and pg_attribute, with the graph's keys
    // and column types.
    let catalog = ctx
        .catalog(name)
        .ok_or_else(|| DataFusionError::Internal(format!("catalog {name} was not registered")))?;
    if let Some(inner) = catalog.schema("pg_catalog") {
        catalog.register_schema(
            "pg_catalog",
            Arc::new(PgCatalog {
                inner,
                catalogs: ctx.state().catalog_list().clone(),
                catalog: name.to_string(),
            }),
        )?;
    }
    ctx.register_udf(version_udf());
    // Every type is visible (one schema); SQLAlchemy asks about domains.
    ctx.register_udf(create_udf(
        "pg_type_is_visible",
        vec![DataType::Int32],
        DataType::Boolean,
        Volatility::Immutable,
        Arc::new(|_| Ok(ColumnarValue::Scalar(ScalarValue::Boolean(Some(true))))),
    ));
    // No object has a comment (psql's `\d+` asks for every column's).
    for (name, args) in [
        ("col_description", vec![DataType::Int64, DataType::Int64]),
        ("obj_description", vec![DataType::Int64, DataType::Utf8]),
    ] {
        ctx.register_udf(create_udf(
            name,
            args,
            DataType::Utf8,
            Volatility::Stable,
            Arc::new(|_| Ok(ColumnarValue::Scalar(ScalarValue::Utf8(None)))),
        ));
    }
    Ok(ctx)
}

/// The text of `version()`: SQLAlchemy and other drivers parse
/// `PostgreSQL <major>.<minor>` from it.
pub(super) fn version_text() -> String {
    format!(
        "PostgreSQL {SERVER_VERSION} (omnigraph {}) on {}-{}, compiled by rustc, 64-bit",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::ARCH,
        std::env::consts::OS,
    )
}

fn version_udf() -> omnigraph_engine::deps::lance::deps::datafusion::logical_expr::ScalarUDF {
    let text = version_text();
    create_udf(
        "version",
        vec![],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(move |_| Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(text.clone()))))),
    )
}
