//! Writing foreign tables: INSERT (also INSERT ... SELECT and COPY FROM,
//! in batches), UPDATE and DELETE.
//!
//! Every write stages into the graph write transaction of the Postgres
//! transaction ([`crate::txn`]); nothing reaches the graph before COMMIT.
//! Rows are identified by the graph id: AddForeignUpdateTargets asks the
//! scan for the table's `id` column as the row identity `omnigraph_id`.
//! UPDATE writes only the columns the statement assigns (their attribute
//! numbers travel in `fdw_private`); keys and endpoints cannot change.
//!
//! `fdw_private` of the ModifyTable: `list_make1(makeString(json(ModifyPlan)))`.

use std::collections::BTreeMap;

use omnigraph_engine::schema::TypeKind;
use omnigraph_engine::{NewRows, ReadRef, Value};
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::{PgMemoryContexts, PgRelation, PgSqlErrorCode};
use serde::{Deserialize, Serialize};

use crate::columns::{Column, Taken};
use crate::datum::{TEXT, graph_value};
use crate::pg::raise;
use crate::plan::{json_private, read_json_private};
use crate::quals::FilterColumn;
use crate::tabledef::{TableDef, table_def};

/// Name of the row identity column the scan produces for UPDATE/DELETE.
const ROW_ID: &std::ffi::CStr = c"omnigraph_id";

/// Rows per ExecForeignBatchInsert call.
const BATCH_SIZE: i32 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Op {
    Insert,
    Update,
    Delete,
}

#[derive(Debug, Serialize, Deserialize)]
struct ModifyPlan {
    op: Op,
    /// Columns the statement writes (all columns for INSERT).
    attnos: Vec<i16>,
}

/// Executor state of one modified foreign table.
struct ModifyState {
    def: TableDef,
    branch: String,
    kind: TypeKind,
    op: Op,
    targets: Vec<FilterColumn>,
    /// The table's `id` column, filled in for RETURNING.
    id_attno: Option<i16>,
    /// Position of `omnigraph_id` in the subplan's output (UPDATE, DELETE).
    junk_id: i16,
    /// Node ids this statement deleted, for the edge cascade at its end.
    deleted: Vec<String>,
    /// Rows are staged in chunks, not one by one (see [`Buffered`]).
    buffered: Option<Buffered>,
    /// INSERT rows converted and not yet staged.
    inserts: Inserts,
}

/// INSERT rows read from their slots, column by column, until they are
/// staged (`WriteTxn::insert_rows`, which stages a large chunk as one
/// Arrow batch). When `deferred`, rows wait until there are
/// [`INSERT_CHUNK`] of them or they hold the staging budget
/// (`omnigraph.staging_memory`), and the last ones for the end of the
/// statement (the conditions are those of [`Buffered`]); a full buffer is
/// staged on a worker thread while the executor fills the next.
/// Otherwise each call's rows are staged at once.
struct Inserts {
    deferred: bool,
    ids: Vec<Option<String>>,
    endpoints: Vec<(String, String)>,
    /// The properties written, and their values so far.
    props: Vec<(String, Column)>,
    /// Estimated memory the values hold.
    bytes: usize,
}

impl Inserts {
    fn new(def: &TableDef, kind: TypeKind, targets: &[FilterColumn]) -> Inserts {
        let graph = crate::graphs::graph(&def.server.name, &def.server.uri);
        let declared = graph
            .catalog()
            .properties(&def.type_name)
            .unwrap_or_default();
        let props = targets
            .iter()
            .filter(|c| !is_system_target(kind, &c.graph_name))
            .map(|c| {
                let prop = declared.iter().find(|p| p.name == c.graph_name);
                (c.graph_name.clone(), Column::new(c, prop.map(|p| &p.ty)))
            })
            .collect();
        Inserts {
            deferred: false,
            ids: Vec::new(),
            endpoints: Vec::new(),
            props,
            bytes: 0,
        }
    }

    /// Whether the deferred rows are due to be staged.
    fn full(&self) -> bool {
        self.ids.len() >= INSERT_CHUNK || self.bytes >= crate::staging_memory().min(MAX_CHUNK_BYTES)
    }

    /// The rows so far, leaving the buffer empty (with room for as many).
    fn take(&mut self) -> NewRows {
        self.bytes = 0;
        let n = self.ids.len();
        let (mut props, mut arrays) = (Vec::new(), Vec::new());
        for (name, column) in &mut self.props {
            match column.take() {
                Taken::Values(values) => props.push((name.clone(), values)),
                Taken::Array(array) => arrays.push((name.clone(), array)),
            }
        }
        let ends = if self.endpoints.is_empty() { 0 } else { n };
        NewRows {
            ids: std::mem::replace(&mut self.ids, Vec::with_capacity(n)),
            endpoints: std::mem::replace(&mut self.endpoints, Vec::with_capacity(ends)),
            props,
            arrays,
            lines: Vec::new(),
        }
    }
}

/// Whether an INSERT target is the row's id or an endpoint, not a property.
fn is_system_target(kind: TypeKind, name: &str) -> bool {
    name == "id" || (kind == TypeKind::Edge && (name == "src" || name == "dst"))
}

/// Deferred INSERT rows staged at once.
const INSERT_CHUNK: usize = omnigraph_engine::INSERT_CHUNK_ROWS;

/// Most bytes of values a deferred chunk holds, whatever the staging
/// budget: an Arrow text column of one chunk addresses at most 2 GiB (and
/// one value is at most 1 GB).
const MAX_CHUNK_BYTES: usize = 1 << 30;

/// UPDATE and DELETE rows waiting to be staged, a chunk at a time: a
/// chunk's rows that the transaction inserted and spilled come back from
/// the spill in one read, and the graph transaction is entered once per
/// chunk. The last chunk is staged at EndForeignModify, so rows are
/// buffered only when nothing else in the statement reads the table
/// before that (see BeginForeignModify).
#[derive(Default)]
struct Buffered {
    updates: Vec<(String, BTreeMap<String, Value>)>,
    deletes: Vec<String>,
}

/// Rows buffered before they are staged.
const STAGE_CHUNK: usize = 4096;

fn state<'a>(rinfo: *mut pg_sys::ResultRelInfo) -> Option<&'a mut ModifyState> {
    // SAFETY: ri_FdwState is null or the pointer begin_* leaked into the
    // query context, which outlives every callback of this statement.
    unsafe { ((*rinfo).ri_FdwState as *mut ModifyState).as_mut() }
}

fn is_system(kind: TypeKind, graph_name: &str) -> bool {
    omnigraph_engine::value::system_columns(kind).contains(&graph_name)
}

/// The branch a table writes, or an error for a table pinned to a commit.
pub(crate) fn writable_branch(def: &TableDef) -> String {
    match def.read.to_ref() {
        ReadRef::Branch(b) => b,
        ReadRef::Commit(c) => raise(
            PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE,
            format!(
                "foreign table {} is read-only: it shows commit '{c}' of type {}",
                def.rel_name, def.type_name
            ),
            Some("Tables pinned to a commit are time travel views and cannot change.".into()),
            Some("Write through a table of a branch (IMPORT FOREIGN SCHEMA \"branch\" FROM SERVER ... INTO ...).".into()),
        ),
    }
}

pub(crate) fn kind_of(def: &TableDef) -> TypeKind {
    crate::graphs::graph(&def.server.name, &def.server.uri)
        .catalog()
        .kind_of(&def.type_name)
        .unwrap_or(TypeKind::Node)
}

/// IsForeignRelUpdatable: every graph table takes INSERT, UPDATE and
/// DELETE (PlanForeignModify explains why a pinned table refuses).
#[pg_guard]
pub unsafe extern "C-unwind" fn is_foreign_rel_updatable(_rel: pg_sys::Relation) -> i32 {
    (1 << pg_sys::CmdType::CMD_INSERT)
        | (1 << pg_sys::CmdType::CMD_UPDATE)
        | (1 << pg_sys::CmdType::CMD_DELETE)
}

/// AddForeignUpdateTargets: the `id` column identifies the row.
#[pg_guard]
pub unsafe extern "C-unwind" fn add_foreign_update_targets(
    root: *mut pg_sys::PlannerInfo,
    rtindex: pg_sys::Index,
    _target_rte: *mut pg_sys::RangeTblEntry,
    target_relation: pg_sys::Relation,
) {
    // SAFETY: target_relation is the open relation being modified.
    let relid = unsafe { (*target_relation).rd_id };
    let def = table_def(relid);
    let Some(id) = def.columns.iter().find(|c| c.graph_name == "id") else {
        raise(
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            format!(
                "foreign table {} has no column for the graph id",
                def.rel_name
            ),
            Some("UPDATE and DELETE find rows by their id.".into()),
            Some(format!(
                "ALTER FOREIGN TABLE {} ADD COLUMN id text;",
                def.rel_name
            )),
        )
    };
    // SAFETY: the relation is open; attno is one of its live attributes;
    // makeVar and add_row_identity_var build planner nodes in planner memory.
    unsafe {
        let rel = PgRelation::from_pg(target_relation);
        let att = rel
            .tuple_desc()
            .get(id.attno as usize - 1)
            .map(|a| (a.atttypid, a.atttypmod, a.attcollation));
        let Some((typid, typmod, collation)) = att else {
            return;
        };
        let var = pg_sys::makeVar(rtindex as _, id.attno, typid, typmod, collation, 0);
        pg_sys::add_row_identity_var(root, var, rtindex, ROW_ID.as_ptr());
    }
}

/// A row's identity (id, key, edge endpoints) never changes: an error
/// naming the column when `attnos` assigns one.
pub(crate) fn check_updatable(def: &TableDef, kind: TypeKind, attnos: &[i16]) {
    let catalog = crate::graphs::graph(&def.server.name, &def.server.uri)
        .catalog()
        .clone();
    let key: Vec<String> = catalog
        .node(&def.type_name)
        .and_then(|n| n.key.clone())
        .unwrap_or_default();
    for attno in attnos {
        let Some(c) = def.columns.iter().find(|c| c.attno == *attno) else {
            continue;
        };
        if is_system(kind, &c.graph_name) || key.contains(&c.graph_name) {
            let what = if key.contains(&c.graph_name) {
                "the @key"
            } else {
                "a system column"
            };
            raise(
                PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                format!(
                    "cannot UPDATE column \"{}\" of foreign table {}: {}.{} is {what}",
                    c.graph_name, def.rel_name, def.type_name, c.graph_name
                ),
                Some("A row's identity (id, key, edge endpoints) never changes.".into()),
                Some("DELETE the row and INSERT it with the new value.".into()),
            );
        }
    }
}

/// PlanForeignModify: which columns the statement writes.
#[pg_guard]
pub unsafe extern "C-unwind" fn plan_foreign_modify(
    root: *mut pg_sys::PlannerInfo,
    plan: *mut pg_sys::ModifyTable,
    result_relation: pg_sys::Index,
    _subplan_index: i32,
) -> *mut pg_sys::List {
    // SAFETY: root and plan are the planner's; the range table has an entry
    // for result_relation; updatedCols is a Bitmapset of offset attnos.
    let (op, relid, updated) = unsafe {
        let rte = *(*root).simple_rte_array.add(result_relation as usize);
        let op = match (*plan).operation {
            pg_sys::CmdType::CMD_INSERT => Op::Insert,
            pg_sys::CmdType::CMD_UPDATE => Op::Update,
            pg_sys::CmdType::CMD_DELETE => Op::Delete,
            _ => raise(
                PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                "omnigraph foreign tables support INSERT, UPDATE, DELETE and COPY FROM",
                None,
                None,
            ),
        };
        let mut updated = Vec::new();
        let mut i = -1;
        loop {
            i = pg_sys::bms_next_member((*rte).updatedCols, i);
            if i < 0 {
                break;
            }
            updated.push((i + pg_sys::FirstLowInvalidHeapAttributeNumber) as i16);
        }
        (op, (*rte).relid, updated)
    };
    let def = table_def(relid);
    writable_branch(&def);
    let kind = kind_of(&def);
    let attnos = match op {
        Op::Insert => def.columns.iter().map(|c| c.attno).collect(),
        Op::Delete => Vec::new(),
        Op::Update => {
            check_updatable(&def, kind, &updated);
            updated
        }
    };
    json_private(&ModifyPlan { op, attnos })
}

fn modify_state(
    rinfo: *mut pg_sys::ResultRelInfo,
    op: Op,
    attnos: &[i16],
    junk_id: i16,
) -> ModifyState {
    // SAFETY: rinfo is the executor's result relation; its relation is open.
    let relid = unsafe { (*(*rinfo).ri_RelationDesc).rd_id };
    let def = table_def(relid);
    let branch = writable_branch(&def);
    let kind = kind_of(&def);
    let targets: Vec<FilterColumn> = def
        .columns
        .iter()
        .filter(|c| attnos.contains(&c.attno))
        .map(|c| FilterColumn {
            attno: c.attno,
            graph_name: c.graph_name.clone(),
            ty: c.ty,
        })
        .collect();
    let id_attno = def
        .columns
        .iter()
        .find(|c| c.graph_name == "id")
        .map(|c| c.attno);
    let inserts = Inserts::new(&def, kind, &targets);
    ModifyState {
        def,
        branch,
        kind,
        op,
        targets,
        id_attno,
        junk_id,
        deleted: Vec::new(),
        buffered: None,
        inserts,
    }
}

fn install(rinfo: *mut pg_sys::ResultRelInfo, st: ModifyState) {
    // SAFETY: CurrentMemoryContext is the query context during executor
    // startup; the state is dropped when it is deleted, ERROR included.
    unsafe {
        let ptr = PgMemoryContexts::CurrentMemoryContext.leak_and_drop_on_delete(st);
        (*rinfo).ri_FdwState = ptr.cast();
    }
}

/// BeginForeignModify: rebuild the plan and find the row identity column.
#[pg_guard]
pub unsafe extern "C-unwind" fn begin_foreign_modify(
    mtstate: *mut pg_sys::ModifyTableState,
    rinfo: *mut pg_sys::ResultRelInfo,
    fdw_private: *mut pg_sys::List,
    _subplan_index: i32,
    eflags: i32,
) {
    if eflags & pg_sys::EXEC_FLAG_EXPLAIN_ONLY as i32 != 0 {
        return;
    }
    let Some(plan) = read_json_private::<ModifyPlan>(fdw_private) else {
        raise(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            "omnigraph: malformed modify plan",
            None,
            None,
        )
    };
    let junk_id = if plan.op == Op::Insert {
        0
    } else {
        // SAFETY: the ModifyTable's outer plan is initialized before its
        // result relations; its targetlist holds the row identity column.
        unsafe {
            let sub = (*(*mtstate).ps.lefttree).plan;
            pg_sys::ExecFindJunkAttributeInTlist((*sub).targetlist, ROW_ID.as_ptr())
        }
    };
    if plan.op != Op::Insert && junk_id <= 0 {
        raise(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            "omnigraph: the row identity column is missing",
            None,
            None,
        );
    }
    let mut st = modify_state(rinfo, plan.op, &plan.attnos, junk_id);
    // Buffered only when nothing else in the statement can look at the
    // table before EndForeignModify: no RETURNING, no trigger on it, no
    // parent table (whose statement triggers fire first), and no other
    // table or CTE written by the statement (their triggers, and their
    // scans of this table, run before it ends).
    // SAFETY: the ModifyTable's plan and the executor state are valid;
    // ri_TrigDesc is set when the result relation was opened (RETURNING
    // projections are built only after this callback, so the plan is
    // asked); resultRelations is NIL or an integer List.
    let row_by_row = unsafe {
        let mt = (*mtstate).ps.plan as *mut pg_sys::ModifyTable;
        let written = (*(*(*mtstate).ps.state).es_plannedstmt).resultRelations;
        let writers = written.as_ref().map_or(0, |l| l.length);
        !(*mt).returningLists.is_null()
            || !(*rinfo).ri_TrigDesc.is_null()
            || (*mt).rootRelation != 0
            || writers != 1
    };
    match plan.op {
        Op::Insert => st.inserts.deferred = !row_by_row,
        _ if !row_by_row => st.buffered = Some(Buffered::default()),
        _ => {}
    }
    install(rinfo, st);
}

/// BeginForeignInsert: COPY FROM (and rows routed to a partition).
#[pg_guard]
pub unsafe extern "C-unwind" fn begin_foreign_insert(
    mtstate: *mut pg_sys::ModifyTableState,
    rinfo: *mut pg_sys::ResultRelInfo,
) {
    // An UPDATE moving a row into this partition, when the partition is
    // also one the UPDATE changes: its state is the UPDATE's (postgres_fdw
    // refuses this too).
    // SAFETY: rinfo is the executor's result relation; its relation is open.
    let (relid, in_use) = unsafe {
        (
            (*(*rinfo).ri_RelationDesc).rd_id,
            !(*rinfo).ri_FdwState.is_null(),
        )
    };
    if in_use {
        raise(
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            format!(
                "cannot route rows into foreign table {} while the same statement updates it",
                crate::pg::rel_name(relid)
            ),
            Some("An UPDATE of a partitioned table moved a row into a foreign partition that it also updates.".into()),
            Some("Update the foreign partition's rows and the others in separate statements, or DELETE and INSERT the moved row.".into()),
        );
    }
    let all: Vec<i16> = table_def(relid).columns.iter().map(|c| c.attno).collect();
    let mut st = modify_state(rinfo, Op::Insert, &all, 0);
    // COPY FROM straight into a table without triggers: nothing reads the
    // table before the COPY ends. COPY passes a ModifyTableState without
    // a plan; rows routed to a partition (by COPY or INSERT into the
    // parent, whose statement triggers fire before EndForeignInsert) are
    // staged as they come.
    // SAFETY: mtstate is null or a valid ModifyTableState; rinfo is valid;
    // ri_TrigDesc is null or a valid TriggerDesc.
    st.inserts.deferred = unsafe {
        (mtstate.is_null() || (*mtstate).ps.plan.is_null())
            && (*rinfo).ri_RootResultRelInfo.is_null()
            && (*rinfo).ri_TrigDesc.is_null()
    };
    install(rinfo, st);
}

/// A column's value as a graph value; an error naming the property when
/// the value cannot be stored.
///
/// # Safety
/// `d` is a Datum of the column's type unless `isnull`.
pub(crate) unsafe fn column_value(d: pg_sys::Datum, isnull: bool, c: &FilterColumn) -> Value {
    // SAFETY: per the contract.
    match unsafe { graph_value(d, isnull, c.ty) } {
        Ok(v) => v,
        Err(e) => unstorable(e, c),
    }
}

/// Raise the error of a value of column `c` the graph cannot store.
pub(crate) fn unstorable(e: crate::datum::Unstorable, c: &FilterColumn) -> ! {
    raise(
        e.code,
        format!("property {}: {}", c.graph_name, e.reason),
        None,
        None,
    )
}

/// The values of `cols` in a slot whose attributes are all deformed.
///
/// # Safety
/// `slot` is valid, with at least every attno of `cols` deformed.
unsafe fn slot_values(
    slot: *mut pg_sys::TupleTableSlot,
    cols: &[FilterColumn],
) -> Vec<(String, Value)> {
    cols.iter()
        .map(|c| {
            let i = c.attno as usize - 1;
            // SAFETY: per the contract.
            let v =
                unsafe { column_value(*(*slot).tts_values.add(i), *(*slot).tts_isnull.add(i), c) };
            (c.graph_name.clone(), v)
        })
        .collect()
}

/// Deform every attribute of a slot.
///
/// # Safety
/// `slot` is a valid slot holding a tuple.
unsafe fn deform(slot: *mut pg_sys::TupleTableSlot) {
    // SAFETY: per the contract; slot_getsomeattrs_int fills tts_values up to natts.
    unsafe {
        let natts = (*(*slot).tts_tupleDescriptor).natts;
        if ((*slot).tts_nvalid as i32) < natts {
            pg_sys::slot_getsomeattrs_int(slot, natts);
        }
    }
}

/// Read a new row from its slot into the INSERT buffer.
fn read_new_row(st: &mut ModifyState, slot: *mut pg_sys::TupleTableSlot) {
    // SAFETY: the executor passes a valid slot with a row of this table.
    unsafe { deform(slot) };
    let edge = st.kind == TypeKind::Edge;
    let (mut id, mut src, mut dst) = (None, None, None);
    let mut props = st.inserts.props.iter_mut();
    for c in &st.targets {
        let i = c.attno as usize - 1;
        // SAFETY: the slot is deformed; attno is one of its attributes.
        let (d, isnull) = unsafe { (*(*slot).tts_values.add(i), *(*slot).tts_isnull.add(i)) };
        if !is_system_target(st.kind, &c.graph_name) {
            if let Some((_, column)) = props.next() {
                // SAFETY: d is the slot's value of c, read in the per-tuple
                // context (in_tuple_context), before it is reset.
                st.inserts.bytes += unsafe { column.push(d, isnull, c) };
            }
            continue;
        }
        // SAFETY: as above.
        let v = unsafe { column_value(d, isnull, c) };
        st.inserts.bytes += std::mem::size_of::<Value>() + v.heap_bytes();
        let text = match v {
            Value::String(s) => Some(s),
            _ => None,
        };
        match c.graph_name.as_str() {
            "id" => id = text,
            "src" => src = text,
            _ => dst = text,
        }
    }
    if edge {
        match (src, dst) {
            (Some(s), Some(d)) => st.inserts.endpoints.push((s, d)),
            (s, _) => {
                let end = if s.is_none() { "src" } else { "dst" };
                raise(
                    PgSqlErrorCode::ERRCODE_NOT_NULL_VIOLATION,
                    format!(
                        "null value in column \"{end}\" of foreign table {} violates not-null constraint",
                        st.def.rel_name
                    ),
                    Some(format!(
                        "Every {} edge needs a {end} node id.",
                        st.def.type_name
                    )),
                    None,
                )
            }
        }
    }
    st.inserts.ids.push(id);
}

/// After rows were read: stage them at once, unless they are deferred
/// (then a full buffer goes to a worker thread). Returns the ids of the
/// rows staged at once.
fn stage_read_rows(st: &mut ModifyState) -> Vec<String> {
    if !st.inserts.deferred {
        return stage_inserts(st);
    }
    if st.inserts.full() {
        stage_full_inserts(st);
    }
    Vec::new()
}

/// Stage a full buffer of deferred INSERT rows on a worker thread, while
/// the executor produces the next ones (see [`crate::txn::insert_in_background`]).
fn stage_full_inserts(st: &mut ModifyState) {
    let rows = st.inserts.take();
    crate::txn::insert_in_background(
        &st.def.server.name,
        &st.def.server.uri,
        &st.branch,
        st.def.type_name.clone(),
        st.def.rel_name.clone(),
        rows,
    );
}

/// Stage the buffered INSERT rows; returns their ids in order.
fn stage_inserts(st: &mut ModifyState) -> Vec<String> {
    if st.inserts.ids.is_empty() {
        return Vec::new();
    }
    let rows = st.inserts.take();
    let type_name = st.def.type_name.as_str();
    table_txn(&st.def, &st.branch, async |t| {
        t.insert_rows(type_name, rows).await
    })
}

/// Run `f` in the graph transaction of `def`'s table on `branch`; its
/// errors name the foreign table.
pub(crate) fn table_txn<T>(
    def: &TableDef,
    branch: &str,
    f: impl AsyncFnOnce(&mut omnigraph_engine::WriteTxn) -> omnigraph_engine::Result<T>,
) -> T {
    crate::txn::with(&def.server.name, &def.server.uri, branch, async |t| {
        f(t).await.map_err(|e| in_table(e, &def.rel_name))
    })
}

/// Name the foreign table in a row error.
pub(crate) fn in_table(e: omnigraph_engine::Error, rel_name: &str) -> omnigraph_engine::Error {
    match e {
        omnigraph_engine::Error::Validation(mut v) => {
            v.message = format!("foreign table {rel_name}: {}", v.message);
            omnigraph_engine::Error::Validation(v)
        }
        e => e,
    }
}

/// Run `f` in the executor's per-tuple memory context, which is reset for
/// every row: conversion garbage (detoasted values, deconstructed arrays)
/// does not pile up over a million-row statement.
fn in_tuple_context<T>(estate: *mut pg_sys::EState, f: impl FnOnce() -> T) -> T {
    // SAFETY: estate is the executor's state; MakePerTupleExprContext
    // creates the per-tuple context on first use.
    unsafe {
        let ec = if (*estate).es_per_tuple_exprcontext.is_null() {
            pg_sys::MakePerTupleExprContext(estate)
        } else {
            (*estate).es_per_tuple_exprcontext
        };
        PgMemoryContexts::For((*ec).ecxt_per_tuple_memory).switch_to(|_| f())
    }
}

/// Put the generated id into the slot, for RETURNING.
///
/// # Safety
/// `slot` is valid and deformed; `estate` is the executor state.
unsafe fn set_returned_id(
    estate: *mut pg_sys::EState,
    st: &ModifyState,
    slot: *mut pg_sys::TupleTableSlot,
    id: &str,
) {
    let Some(attno) = st.id_attno else { return };
    // The text lives in the per-tuple context, until the RETURNING
    // projection of this row is done.
    let d = in_tuple_context(estate, || {
        // SAFETY: copies `id` into a palloc'd text.
        pg_sys::Datum::from(unsafe {
            pg_sys::cstring_to_text_with_len(id.as_ptr().cast(), id.len() as i32)
        })
    });
    let i = attno as usize - 1;
    // SAFETY: per the contract; attno is an attribute of the slot's table.
    unsafe {
        *(*slot).tts_values.add(i) = d;
        *(*slot).tts_isnull.add(i) = false;
    }
}

/// ExecForeignInsert: stage one row (or buffer it, for COPY).
#[pg_guard]
pub unsafe extern "C-unwind" fn exec_foreign_insert(
    estate: *mut pg_sys::EState,
    rinfo: *mut pg_sys::ResultRelInfo,
    slot: *mut pg_sys::TupleTableSlot,
    _plan_slot: *mut pg_sys::TupleTableSlot,
) -> *mut pg_sys::TupleTableSlot {
    let Some(st) = state(rinfo) else { return slot };
    in_tuple_context(estate, || read_new_row(st, slot));
    let ids = stage_read_rows(st);
    // SAFETY: rinfo is valid; the slot was deformed by read_new_row.
    unsafe {
        if !(*rinfo).ri_projectReturning.is_null()
            && let Some(id) = ids.first()
        {
            set_returned_id(estate, st, slot, id);
        }
    }
    slot
}

/// ExecForeignBatchInsert: stage a batch of rows at once (or buffer them).
#[pg_guard]
pub unsafe extern "C-unwind" fn exec_foreign_batch_insert(
    estate: *mut pg_sys::EState,
    rinfo: *mut pg_sys::ResultRelInfo,
    slots: *mut *mut pg_sys::TupleTableSlot,
    _plan_slots: *mut *mut pg_sys::TupleTableSlot,
    num_slots: *mut i32,
) -> *mut *mut pg_sys::TupleTableSlot {
    let Some(st) = state(rinfo) else { return slots };
    // SAFETY: num_slots points at the number of slots passed.
    let n = unsafe { *num_slots } as usize;
    in_tuple_context(estate, || {
        for i in 0..n {
            // SAFETY: the executor passes num_slots valid slots.
            read_new_row(st, unsafe { *slots.add(i) });
        }
    });
    stage_read_rows(st);
    slots
}

/// GetForeignModifyBatchSize: batch unless rows must come back one by one.
#[pg_guard]
pub unsafe extern "C-unwind" fn get_foreign_modify_batch_size(
    rinfo: *mut pg_sys::ResultRelInfo,
) -> i32 {
    // SAFETY: rinfo is valid; trigdesc is null or a valid TriggerDesc.
    unsafe {
        let trig = (*rinfo).ri_TrigDesc;
        let row_triggers =
            !trig.is_null() && ((*trig).trig_insert_after_row || (*trig).trig_insert_before_row);
        if !(*rinfo).ri_projectReturning.is_null() || row_triggers {
            1
        } else {
            BATCH_SIZE
        }
    }
}

/// The row identity of the row being updated or deleted.
fn row_id(st: &ModifyState, plan_slot: *mut pg_sys::TupleTableSlot) -> String {
    // SAFETY: plan_slot is the subplan's output row; junk_id is a valid
    // attribute position in it; the value is text (the id column).
    let (d, isnull) = unsafe {
        let n = st.junk_id as i32;
        if ((*plan_slot).tts_nvalid as i32) < n {
            pg_sys::slot_getsomeattrs_int(plan_slot, n);
        }
        let i = st.junk_id as usize - 1;
        (
            *(*plan_slot).tts_values.add(i),
            *(*plan_slot).tts_isnull.add(i),
        )
    };
    // SAFETY: a text Datum or null.
    match unsafe { graph_value(d, isnull, TEXT) } {
        Ok(Value::String(s)) => s,
        _ => raise(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            format!("omnigraph: a row of {} has no id", st.def.rel_name),
            None,
            None,
        ),
    }
}

/// ExecForeignUpdate: stage the assigned columns of one row.
#[pg_guard]
pub unsafe extern "C-unwind" fn exec_foreign_update(
    estate: *mut pg_sys::EState,
    rinfo: *mut pg_sys::ResultRelInfo,
    slot: *mut pg_sys::TupleTableSlot,
    plan_slot: *mut pg_sys::TupleTableSlot,
) -> *mut pg_sys::TupleTableSlot {
    let Some(st) = state(rinfo) else { return slot };
    let id = row_id(st, plan_slot);
    let props: BTreeMap<String, Value> = in_tuple_context(estate, || {
        // SAFETY: slot holds the new row of this table.
        unsafe {
            deform(slot);
            slot_values(slot, &st.targets)
        }
    })
    .into_iter()
    .collect();
    if props.is_empty() {
        return slot;
    }
    if let Some(b) = &mut st.buffered {
        b.updates.push((id, props));
        if b.updates.len() >= STAGE_CHUNK {
            flush(st);
        }
        return slot;
    }
    let type_name = st.def.type_name.as_str();
    table_txn(&st.def, &st.branch, async |t| {
        t.update(type_name, &id, props).await
    });
    slot
}

/// ExecForeignDelete: stage the deletion of one row; with RETURNING, put
/// the row as the transaction saw it into `slot`.
#[pg_guard]
pub unsafe extern "C-unwind" fn exec_foreign_delete(
    estate: *mut pg_sys::EState,
    rinfo: *mut pg_sys::ResultRelInfo,
    slot: *mut pg_sys::TupleTableSlot,
    plan_slot: *mut pg_sys::TupleTableSlot,
) -> *mut pg_sys::TupleTableSlot {
    let Some(st) = state(rinfo) else { return slot };
    let id = row_id(st, plan_slot);
    let type_name = st.def.type_name.clone();
    // SAFETY: rinfo is the executor's result relation.
    let returning = unsafe { !(*rinfo).ri_projectReturning.is_null() };
    if returning {
        let at = crate::graphs::snapshot(
            &st.def.server.name,
            &st.def.server.uri,
            &st.def.read.to_ref(),
        );
        let row = table_txn(&st.def, &st.branch, async |t| {
            t.delete_returning(&type_name, &id, &at).await
        });
        if let Some(r) = row {
            // SAFETY: slot is the executor's returning slot of this table.
            unsafe { store_row(estate, st, slot, &r) };
        }
    } else if let Some(b) = &mut st.buffered {
        b.deletes.push(id.clone());
        if b.deletes.len() >= STAGE_CHUNK {
            flush(st);
        }
    } else {
        table_txn(&st.def, &st.branch, async |t| {
            t.delete(&type_name, &id).await
        });
    }
    if st.kind == TypeKind::Node {
        st.deleted.push(id);
    }
    slot
}

/// Stage the buffered rows, in the order they came.
fn flush(st: &mut ModifyState) {
    let Some(b) = &mut st.buffered else { return };
    let updates = std::mem::take(&mut b.updates);
    let deletes = std::mem::take(&mut b.deletes);
    if updates.is_empty() && deletes.is_empty() {
        return;
    }
    let type_name = st.def.type_name.as_str();
    table_txn(&st.def, &st.branch, async |t| {
        t.update_rows(type_name, updates).await?;
        t.delete_ids(type_name, &deletes).await
    });
}

/// Store a graph row into a slot of its table (every column the table
/// shows), as a virtual tuple in the per-tuple context.
///
/// # Safety
/// `slot` is a valid slot with the table's tuple descriptor.
unsafe fn store_row(
    estate: *mut pg_sys::EState,
    st: &ModifyState,
    slot: *mut pg_sys::TupleTableSlot,
    r: &omnigraph_engine::Record,
) {
    let graph = crate::graphs::graph(&st.def.server.name, &st.def.server.uri);
    let batch =
        match omnigraph_engine::value::records_to_batch(graph.catalog(), &st.def.type_name, &[r]) {
            Ok(b) => b,
            Err(e) => crate::error::report(e, &st.def.rel_name),
        };
    let schema = batch.schema();
    let readers: Vec<(usize, crate::datum::ColumnReader)> = st
        .def
        .columns
        .iter()
        .filter_map(|c| {
            let i = schema.index_of(&c.graph_name).ok()?;
            Some((
                c.attno as usize - 1,
                crate::datum::ColumnReader::new(batch.column(i).clone(), c.ty),
            ))
        })
        .collect();
    in_tuple_context(estate, || {
        // SAFETY: per the contract; the values live in the per-tuple
        // context until the RETURNING projection of this row is done.
        unsafe {
            pg_sys::ExecClearTuple(slot);
            let n = (*(*slot).tts_tupleDescriptor).natts as usize;
            let values = std::slice::from_raw_parts_mut((*slot).tts_values, n);
            let nulls = std::slice::from_raw_parts_mut((*slot).tts_isnull, n);
            crate::datum::fill_row(&readers, 0, values, nulls);
            pg_sys::ExecStoreVirtualTuple(slot);
        }
    });
}

/// EndForeignModify / EndForeignInsert: deleting nodes deletes their edges.
#[pg_guard]
pub unsafe extern "C-unwind" fn end_foreign_modify(
    _estate: *mut pg_sys::EState,
    rinfo: *mut pg_sys::ResultRelInfo,
) {
    let Some(st) = state(rinfo) else { return };
    // A chunk staged in the background is this statement's: its error is
    // raised here, even when no rows are left to stage.
    crate::txn::settle_or_report();
    stage_inserts(st);
    flush(st);
    if st.op == Op::Delete && !st.deleted.is_empty() {
        let ids = std::mem::take(&mut st.deleted);
        delete_incident_edges(&st.def, &st.branch, ids);
    }
}

/// Deleting nodes deletes their edges: stage those deletions too, and
/// say how many.
pub(crate) fn delete_incident_edges(def: &TableDef, branch: &str, ids: Vec<String>) {
    let snapshot = crate::graphs::snapshot(&def.server.name, &def.server.uri, &def.read.to_ref());
    let type_name = def.type_name.clone();
    let n = ids.len();
    let edges = crate::txn::with(&def.server.name, &def.server.uri, branch, async |t| {
        t.delete_incident_edges(&type_name, &ids, &snapshot).await
    });
    if edges > 0 {
        pgrx::notice!(
            "deleting {n} {type_name} node(s) from {} also deletes {edges} incident edge(s)",
            def.rel_name
        );
    }
}

/// EndForeignInsert (COPY FROM): nothing beyond the shared end.
#[pg_guard]
pub unsafe extern "C-unwind" fn end_foreign_insert(
    estate: *mut pg_sys::EState,
    rinfo: *mut pg_sys::ResultRelInfo,
) {
    // SAFETY: same arguments as EndForeignModify.
    unsafe { end_foreign_modify(estate, rinfo) }
}
