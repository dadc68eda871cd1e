//! IMPORT FOREIGN SCHEMA "<branch>" FROM SERVER s INTO local [OPTIONS (...)]:
//! one foreign table per node and edge type, named so users can type them
//! without quotes (`WorksAt` -> `works_at`, `createdAt` -> `created_at`),
//! with `type` and `property` options mapping back to the graph's names.

use omnigraph_engine::ReadRef;
use omnigraph_sql::ddl::create_statements;
use omnigraph_sql::names::quote_literal;
use omnigraph_sql::options::import_options;
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::{PgList, PgSqlErrorCode};

use crate::graphs;
use crate::pg::{self, cstr, raise};

/// ImportForeignSchema: the remote schema name is the branch to import.
#[pg_guard]
pub unsafe extern "C-unwind" fn import_foreign_schema(
    stmt: *mut pg_sys::ImportForeignSchemaStmt,
    server_oid: pg_sys::Oid,
) -> *mut pg_sys::List {
    let server = pg::server_by_oid(server_oid);
    // SAFETY: stmt is the parser's valid statement.
    let (branch, local_schema, options) = unsafe {
        (
            cstr((*stmt).remote_schema),
            cstr((*stmt).local_schema),
            pg::def_elems((*stmt).options),
        )
    };
    let opts = import_options(&options).unwrap_or_else(|e| {
        let code = if e.sqlstate == "HV00D" {
            PgSqlErrorCode::ERRCODE_FDW_INVALID_OPTION_NAME
        } else {
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE
        };
        raise(code, e.message, None, e.hint)
    });
    let graph = graphs::graph(&server.name, &server.uri);
    // Check the branch (and commit) exist now, not at the first query.
    graphs::snapshot(&server.name, &server.uri, &ReadRef::Branch(branch.clone()));
    let table_options = match (&opts.commit, opts.session_branch) {
        (Some(c), _) => {
            graphs::snapshot(&server.name, &server.uri, &ReadRef::Commit(c.clone()));
            format!(", commit {}", quote_literal(c))
        }
        (None, true) => String::new(),
        (None, false) => format!(", branch {}", quote_literal(&branch)),
    };
    let statements =
        create_statements(graph.catalog(), &server.name, &local_schema, &table_options)
            .unwrap_or_else(|e| {
                raise(
                    PgSqlErrorCode::ERRCODE_DUPLICATE_OBJECT,
                    format!("cannot import branch '{branch}': {e}"),
                    None,
                    None,
                )
            });
    // LIMIT TO / EXCEPT name the tables as imported; Postgres filters the
    // statements again, this only spares it the work.
    // SAFETY: table_list is a List of RangeVar.
    let (list_type, wanted): (_, Vec<String>) = unsafe {
        let names = PgList::<pg_sys::RangeVar>::from_pg((*stmt).table_list)
            .iter_ptr()
            .map(|rv| cstr((*rv).relname))
            .collect();
        ((*stmt).list_type, names)
    };
    let mut out = PgList::<std::ffi::c_char>::new();
    for (table, sql) in statements {
        let listed = wanted.contains(&table);
        let keep = match list_type {
            pg_sys::ImportForeignSchemaType::FDW_IMPORT_SCHEMA_LIMIT_TO => listed,
            pg_sys::ImportForeignSchemaType::FDW_IMPORT_SCHEMA_EXCEPT => !listed,
            _ => true,
        };
        if keep {
            out.push(pg::pstrdup(&sql));
        }
    }
    out.into_pg()
}
