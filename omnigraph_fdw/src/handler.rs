//! The wrapper's handler and validator functions.

use omnigraph_sql::options::{OptionObject, validate};
use pgrx::prelude::*;
use pgrx::{AllocatedByPostgres, PgBox, PgSqlErrorCode, pg_sys};

use crate::pg::raise;
use crate::{analyze, direct, import, modify, plan, scan, upper};

/// Returns the callbacks of the `omnigraph` foreign data wrapper.
#[pg_extern(immutable, parallel_safe)]
fn omnigraph_fdw_handler() -> PgBox<pg_sys::FdwRoutine, AllocatedByPostgres> {
    // SAFETY: alloc_node pallocs a zeroed FdwRoutine node with its tag set.
    let mut r = unsafe {
        PgBox::<pg_sys::FdwRoutine, AllocatedByPostgres>::alloc_node(pg_sys::NodeTag::T_FdwRoutine)
    };

    // Scanning foreign tables.
    r.GetForeignRelSize = Some(plan::get_foreign_rel_size);
    r.GetForeignPaths = Some(plan::get_foreign_paths);
    r.GetForeignPlan = Some(plan::get_foreign_plan);
    r.GetForeignUpperPaths = Some(upper::get_foreign_upper_paths);
    r.BeginForeignScan = Some(scan::begin_foreign_scan);
    r.IterateForeignScan = Some(scan::iterate_foreign_scan);
    r.ReScanForeignScan = Some(scan::rescan_foreign_scan);
    r.EndForeignScan = Some(scan::end_foreign_scan);

    // Writing: INSERT (batched), UPDATE, DELETE, COPY FROM.
    r.IsForeignRelUpdatable = Some(modify::is_foreign_rel_updatable);
    r.AddForeignUpdateTargets = Some(modify::add_foreign_update_targets);
    r.PlanForeignModify = Some(modify::plan_foreign_modify);
    r.BeginForeignModify = Some(modify::begin_foreign_modify);
    r.ExecForeignInsert = Some(modify::exec_foreign_insert);
    r.ExecForeignBatchInsert = Some(modify::exec_foreign_batch_insert);
    r.GetForeignModifyBatchSize = Some(modify::get_foreign_modify_batch_size);
    r.ExecForeignUpdate = Some(modify::exec_foreign_update);
    r.ExecForeignDelete = Some(modify::exec_foreign_delete);
    r.EndForeignModify = Some(modify::end_foreign_modify);
    r.BeginForeignInsert = Some(modify::begin_foreign_insert);
    r.EndForeignInsert = Some(modify::end_foreign_insert);

    // UPDATE and DELETE that need no row: run inside the scan.
    r.PlanDirectModify = Some(direct::plan_direct_modify);
    r.BeginDirectModify = Some(direct::begin_direct_modify);
    r.IterateDirectModify = Some(direct::iterate_direct_modify);
    r.EndDirectModify = Some(direct::end_direct_modify);
    r.ExplainDirectModify = Some(direct::explain_direct_modify);

    // EXPLAIN.
    r.ExplainForeignScan = Some(scan::explain_foreign_scan);

    // ANALYZE: a sample of rows for column statistics.
    r.AnalyzeForeignTable = Some(analyze::analyze_foreign_table);

    // IMPORT FOREIGN SCHEMA.
    r.ImportForeignSchema = Some(import::import_foreign_schema);
    r.into_pg_boxed()
}

/// Catalog OIDs the validator is called for (PG15 `pg_*_d.h`).
fn object_of(catalog: pg_sys::Oid) -> Option<OptionObject> {
    match catalog.to_u32() {
        2328 => Some(OptionObject::Wrapper),
        1417 => Some(OptionObject::Server),
        1418 => Some(OptionObject::UserMapping),
        3118 => Some(OptionObject::Table),
        1249 => Some(OptionObject::Column),
        _ => None,
    }
}

/// Checks options at `CREATE`/`ALTER ... OPTIONS` time.
#[pg_extern(immutable, parallel_safe)]
fn omnigraph_fdw_validator(options: Vec<Option<String>>, catalog: pg_sys::Oid) {
    let Some(object) = object_of(catalog) else {
        return;
    };
    let pairs: Vec<(String, String)> = options
        .into_iter()
        .flatten()
        .map(|o| match o.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (o, String::new()),
        })
        .collect();
    // An ALTER SERVER ... OPTIONS (DROP uri) leaves the server without one.
    if let Err(e) = validate(object, &pairs) {
        let code = if e.sqlstate == omnigraph_sql::options::SQLSTATE_INVALID_OPTION_NAME {
            PgSqlErrorCode::ERRCODE_FDW_INVALID_OPTION_NAME
        } else {
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE
        };
        raise(code, e.message, None, e.hint);
    }
    if object == OptionObject::Server
        && let Some((_, uri)) = pairs.iter().find(|(k, _)| k == "uri")
    {
        check_uri_privilege(uri);
        if let Err(e) = omnigraph_engine::canonical_uri(uri) {
            raise(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!(
                    "invalid value for option \"uri\": {}",
                    match e {
                        omnigraph_engine::Error::InvalidArgument(m) => m,
                        other => other.to_string(),
                    }
                ),
                None,
                Some("Give an absolute path such as '/var/lib/omnigraph/social', or a file:// URI of one.".into()),
            );
        }
    }
}

/// The server's files are read and written by the database server's OS
/// user, so naming them takes what `COPY ... TO` a file takes: superuser or
/// `pg_write_server_files` (file_fdw asks the same for its files).
fn check_uri_privilege(uri: &str) {
    // SAFETY: reads the current role and role membership in a transaction.
    let allowed = unsafe {
        pg_sys::superuser()
            || pg_sys::has_privs_of_role(
                pg_sys::GetUserId(),
                pg_sys::Oid::from(pg_sys::ROLE_PG_WRITE_SERVER_FILES),
            )
    };
    if !allowed {
        raise(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!("permission denied to set option \"uri\" to '{uri}'"),
            Some(
                "The graph's files are read and written as the database server's operating system user."
                    .into(),
            ),
            Some(format!(
                "Only superusers and members of pg_write_server_files may set \"uri\": GRANT pg_write_server_files TO {};",
                crate::pg::current_role()
            )),
        );
    }
}
