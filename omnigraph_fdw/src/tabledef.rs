//! Foreign table definitions: what a foreign table reads (its server, its
//! type, a branch or a commit) and how its columns map onto the type's
//! properties, resolved from the catalogs and the graph's schema, and kept
//! per backend until the catalogs change.

use std::cell::RefCell;
use std::collections::HashMap;

use omnigraph_engine::ReadRef;
use omnigraph_engine::schema::TypeKind;
use omnigraph_sql::options::table_options;
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::{PgRelation, PgSqlErrorCode};
use serde::{Deserialize, Serialize};

use crate::datum::{TEXT, pg_type};
use crate::graphs;
use crate::pg::{self, Server, cstr, raise};
use crate::quals::FilterColumn;

/// What a table reads: a branch head, a pinned commit, or the branch the
/// `omnigraph.branch` setting names when the statement runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Read {
    Branch(String),
    Commit(String),
    /// Resolved at execution, not at planning, so a cached plan (a prepared
    /// statement, PL/pgSQL) follows `SET omnigraph.branch` as writes do.
    Session,
}

impl Read {
    pub fn to_ref(&self) -> ReadRef {
        match self {
            Read::Branch(b) => ReadRef::Branch(b.clone()),
            Read::Commit(c) => ReadRef::Commit(c.clone()),
            Read::Session => ReadRef::Branch(crate::session_branch()),
        }
    }

    /// The branch read now, or `None` for a pinned commit.
    pub fn branch(&self) -> Option<String> {
        match self.to_ref() {
            ReadRef::Branch(b) => Some(b),
            ReadRef::Commit(_) => None,
        }
    }
}

/// A foreign table resolved against the graph's schema.
#[derive(Clone)]
pub struct TableDef {
    pub rel_name: String,
    pub server: Server,
    pub type_name: String,
    pub read: Read,
    pub columns: Vec<FilterColumn>,
}

/// A foreign table's definition: kept per backend once resolved, since
/// resolving reads the table's, its columns' and its server's options
/// from the catalogs (about 20 µs a statement). The cache follows the
/// catalogs through Postgres's invalidation messages (see
/// [`register_invalidation_callbacks`]); the lock taken first is what
/// makes Postgres process them.
pub fn table_def(relid: pg_sys::Oid) -> TableDef {
    // SAFETY: relid is a foreign table the planner or executor asked us
    // about; the lock is held until the transaction ends, and taking it
    // processes pending invalidation messages.
    unsafe { pg_sys::LockRelationOid(relid, pg_sys::AccessShareLock as pg_sys::LOCKMODE) };
    if let Some(def) = DEFS.with(|m| m.borrow().get(&relid).cloned()) {
        return def;
    }
    let def = resolve(relid);
    DEFS.with(|m| m.borrow_mut().insert(relid, def.clone()));
    def
}

thread_local! {
    /// Resolved definitions by foreign table.
    static DEFS: RefCell<HashMap<pg_sys::Oid, TableDef>> = RefCell::new(HashMap::new());
}

/// Forget every resolved definition: after a change to a catalog they
/// read, or to the graph behind them ([`crate::graphs::forget`]).
pub fn forget_all() {
    DEFS.with(|m| m.borrow_mut().clear());
}

/// Called once from `_PG_init`: a definition is dropped when its table
/// changes (columns, their options, its name: a relcache invalidation),
/// and all are when a server, a wrapper or a foreign table's options
/// change (syscache invalidations, whose hash values do not say which
/// table a change concerns).
pub fn register_invalidation_callbacks() {
    // SAFETY: both callbacks are plain functions that only touch this
    // backend's cache, as invalidation callbacks must (no catalog access).
    unsafe {
        pg_sys::CacheRegisterRelcacheCallback(Some(relcache_changed), pg_sys::Datum::from(0));
        for cache in [
            pg_sys::SysCacheIdentifier::FOREIGNSERVEROID,
            pg_sys::SysCacheIdentifier::FOREIGNDATAWRAPPEROID,
            pg_sys::SysCacheIdentifier::FOREIGNTABLEREL,
        ] {
            pg_sys::CacheRegisterSyscacheCallback(
                cache as i32,
                Some(syscache_changed),
                pg_sys::Datum::from(0),
            );
        }
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn relcache_changed(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    // InvalidOid: every relation's cache entry is reset.
    DEFS.with(|m| match relid == pg_sys::InvalidOid {
        true => m.borrow_mut().clear(),
        false => {
            m.borrow_mut().remove(&relid);
        }
    });
}

#[pg_guard]
unsafe extern "C-unwind" fn syscache_changed(_arg: pg_sys::Datum, _cache: i32, _hash: u32) {
    forget_all();
}

/// Resolve a foreign table: its options, its server, and each column's
/// graph property and type. Every mismatch is an error naming the object.
fn resolve(relid: pg_sys::Oid) -> TableDef {
    let rel_name = pg::rel_name(relid);
    // SAFETY: relid is a foreign table (the planner or executor asked us about it).
    let ft = unsafe { pg_sys::GetForeignTable(relid) };
    // SAFETY: ft is a valid ForeignTable.
    let (serverid, options) = unsafe { ((*ft).serverid, pg::def_elems((*ft).options)) };
    let server = pg::server_by_oid(serverid);
    let opts = table_options(&options).unwrap_or_else(|e| {
        raise(
            PgSqlErrorCode::ERRCODE_FDW_INVALID_OPTION_NAME,
            format!("foreign table {rel_name}: {}", e.message),
            None,
            e.hint,
        )
    });
    let Some(type_name) = opts.type_name else {
        raise(
            PgSqlErrorCode::ERRCODE_FDW_OPTION_NAME_NOT_FOUND,
            format!("foreign table {rel_name} has no \"type\" option"),
            None,
            Some(format!(
                "ALTER FOREIGN TABLE {rel_name} OPTIONS (ADD type 'NodeOrEdgeType');"
            )),
        )
    };
    let read = match (opts.commit, opts.branch) {
        (Some(c), _) => Read::Commit(c),
        (None, Some(b)) => Read::Branch(b),
        (None, None) => Read::Session,
    };
    let graph = graphs::graph(&server.name, &server.uri);
    let catalog = graph.catalog();
    let Some(kind) = catalog.kind_of(&type_name) else {
        let types = catalog.type_names().join(", ");
        raise(
            PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            format!("foreign table {rel_name}: type '{type_name}' is not in the graph of server {}", server.name),
            Some(format!("The graph's types are: {types}.")),
            Some("Re-import the schema with IMPORT FOREIGN SCHEMA, or fix the table's \"type\" option.".into()),
        )
    };
    let props = catalog.properties(&type_name).unwrap_or_default();
    let system: &[&str] = if kind == TypeKind::Edge {
        &["id", "src", "dst"]
    } else {
        &["id"]
    };
    // SAFETY: relid is a live relation; the lock is held until the transaction ends.
    let rel = unsafe { PgRelation::with_lock(relid, pg_sys::AccessShareLock as pg_sys::LOCKMODE) };
    let mut columns = Vec::new();
    for att in rel.tuple_desc().iter() {
        if att.is_dropped() {
            continue;
        }
        let attno = att.attnum;
        // SAFETY: relid and attno are a live attribute of this table.
        let col_opts = unsafe { pg::def_elems(pg_sys::GetForeignColumnOptions(relid, attno)) };
        let att_name = att.name().to_string();
        let graph_name = col_opts
            .iter()
            .find(|(k, _)| k == "property")
            .map(|(_, v)| v.clone())
            .unwrap_or(att_name.clone());
        let ty = if system.contains(&graph_name.as_str()) {
            TEXT
        } else if let Some(p) = props.iter().find(|p| p.name == graph_name) {
            pg_type(&p.ty)
        } else {
            let names: Vec<&str> = system
                .iter()
                .copied()
                .chain(props.iter().map(|p| p.name.as_str()))
                .collect();
            raise(
                PgSqlErrorCode::ERRCODE_UNDEFINED_COLUMN,
                format!(
                    "column \"{att_name}\" of foreign table {rel_name} maps to '{graph_name}', which type {type_name} does not have"
                ),
                Some(format!("{type_name} has: {}.", names.join(", "))),
                Some("Set the column's \"property\" option, or re-import the schema.".into()),
            )
        };
        if !ty.accepts(att.type_oid().value()) {
            // SAFETY: format_type_be formats any type oid.
            let declared = unsafe { cstr(pg_sys::format_type_be(att.type_oid().value())) };
            let want = unsafe { cstr(pg_sys::format_type_be(ty.oid())) };
            raise(
                PgSqlErrorCode::ERRCODE_DATATYPE_MISMATCH,
                format!(
                    "column \"{att_name}\" of foreign table {rel_name} is {declared}, but {type_name}.{graph_name} is {want}"
                ),
                None,
                Some(format!("Declare the column as {want}.")),
            )
        }
        columns.push(FilterColumn {
            attno,
            graph_name,
            ty,
        });
    }
    TableDef {
        rel_name,
        server,
        type_name,
        read,
        columns,
    }
}
