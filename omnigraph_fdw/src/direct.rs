//! Direct modify: an UPDATE or DELETE whose whole WHERE is pushed, and an
//! UPDATE whose assigned values are the same for every row, runs in the
//! foreign scan (PlanDirectModify, BeginDirectModify, IterateDirectModify,
//! EndDirectModify, ExplainDirectModify). The scan reads only the ids its
//! filter matches (the committed rows the transaction still sees and its
//! own writes, [`omnigraph_sql::scan::matching_ids`]) and stages the change
//! for all of them at once: no row goes through the executor, and the
//! assigned values are checked and converted once.
//!
//! The row path (`modify`) runs instead when a row is needed: RETURNING, a
//! condition Postgres checks itself, a join, or an assigned value that
//! reads the row or is volatile (`SET n = n + 1`, `SET r = random()`).
//! Postgres plans neither with row triggers, stored generated columns or
//! a view's WITH CHECK OPTION.
//!
//! The ForeignScan keeps the scan's plan; PlanDirectModify swaps its
//! `fdw_private` for a [`DirectPlan`] and appends the assigned values'
//! expressions to `fdw_exprs`, after the scan's parameters.

use omnigraph_engine::Snapshot;
use omnigraph_engine::Value as GraphValue;
use omnigraph_engine::schema::TypeKind;
use omnigraph_sql::scan::{ScanSpec, matching_ids};
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::{PgList, PgMemoryContexts, PgSqlErrorCode, is_a};
use serde::{Deserialize, Serialize};

use crate::error::report;
use crate::graphs;
use crate::modify::{
    check_updatable, column_value, delete_incident_edges, kind_of, table_txn, writable_branch,
};
use crate::pg::raise;
use crate::plan::{ScanPlan, json_private, read_json_private, scan_plan};
use crate::runtime::block_on;
use crate::scan::{
    cleared_slot, context, eval_params, explain_scan, explain_text, own_writes, param_states,
    scan_spec,
};
use crate::tabledef::{TableDef, table_def};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Change {
    Update,
    Delete,
}

/// The `fdw_private` of a direct modify's ForeignScan.
#[derive(Debug, Serialize, Deserialize)]
struct DirectPlan {
    change: Change,
    /// What the scan reads: its filter selects the rows to change.
    scan: ScanPlan,
    /// The assigned columns; their values are the `fdw_exprs` after the
    /// first `params` (the scan's parameters).
    attnos: Vec<i16>,
    params: usize,
    /// The statement's row count is this one's (not a writable CTE's
    /// or a rule action's): `UPDATE n` counts the rows changed.
    sets_tag: bool,
}

/// Executor state of a direct modify.
struct DirectState {
    plan: DirectPlan,
    def: TableDef,
    snapshot: Snapshot,
    /// The scan's parameters (`$n`, initplan values).
    params: Vec<(*mut pg_sys::ExprState, pg_sys::Oid)>,
    /// The assigned values, in the order of `plan.attnos`.
    values: Vec<(*mut pg_sys::ExprState, pg_sys::Oid)>,
    done: bool,
}

fn state<'a>(node: *mut pg_sys::ForeignScanState) -> Option<&'a mut Option<DirectState>> {
    // SAFETY: fdw_state is null or the pointer begin_direct_modify leaked
    // into the query context, which outlives every callback of this scan.
    unsafe { ((*node).fdw_state as *mut Option<DirectState>).as_mut() }
}

/// The integers of an integer List.
///
/// # Safety
/// `list` is null (empty) or a valid `T_IntList`.
unsafe fn int_list(list: *mut pg_sys::List) -> Vec<i32> {
    if list.is_null() {
        return Vec::new();
    }
    // SAFETY: per the contract, `elements` holds `length` cells of ints.
    unsafe {
        (0..(*list).length as usize)
            .map(|i| (*(*list).elements.add(i)).int_value)
            .collect()
    }
}

/// Whether an assigned value is the same for every row: it reads no
/// column and calls nothing volatile or correlated.
///
/// # Safety
/// `expr` is a valid expression node.
unsafe fn same_for_every_row(expr: *mut pg_sys::Node) -> bool {
    // SAFETY: per the contract; the walkers only read the tree.
    unsafe {
        !pg_sys::contain_var_clause(expr)
            && !pg_sys::contain_volatile_functions(expr)
            && !pg_sys::contain_subplans(expr)
    }
}

/// PlanDirectModify: take over the statement when its ForeignScan selects
/// exactly the rows to change.
#[pg_guard]
pub unsafe extern "C-unwind" fn plan_direct_modify(
    root: *mut pg_sys::PlannerInfo,
    plan: *mut pg_sys::ModifyTable,
    result_relation: pg_sys::Index,
    _subplan_index: i32,
) -> bool {
    // SAFETY: root and plan are the planner's; the ModifyTable's outer plan
    // is its (already created) subplan.
    let (change, fscan) = unsafe {
        let change = match (*plan).operation {
            pg_sys::CmdType::CMD_UPDATE => Change::Update,
            pg_sys::CmdType::CMD_DELETE => Change::Delete,
            _ => return false,
        };
        // RETURNING needs the rows; `SET (a, b) = (SELECT ...)` is set
        // by projecting a row (its values are PARAM_MULTIEXPR Params).
        if !(*plan).returningLists.is_null() || !(*root).multiexpr_params.is_null() {
            return false;
        }
        let sub = (*plan).plan.lefttree;
        if sub.is_null() || !is_a(sub.cast(), pg_sys::NodeTag::T_ForeignScan) {
            return false;
        }
        let fscan = sub as *mut pg_sys::ForeignScan;
        // A scan of this table alone (not a join or an aggregate), with
        // every condition pushed.
        if (*fscan).scan.scanrelid != result_relation
            || !(*fscan).scan.plan.qual.is_null()
            || !(*fscan).fdw_scan_tlist.is_null()
            || !(*fscan).scan.plan.lefttree.is_null()
        {
            return false;
        }
        (change, fscan)
    };
    // SAFETY: fscan is our ForeignScan; its private is a ScanPlan.
    let scan = scan_plan(unsafe { (*fscan).fdw_private });
    if scan.aggregate.is_some() || scan.limit.is_some() {
        return false;
    }
    // SAFETY: the range table has an entry for the result relation.
    let relid = unsafe { (*(*(*root).simple_rte_array.add(result_relation as usize))).relid };
    let def = table_def(relid);
    // As PlanForeignModify would: a table pinned to a commit cannot change.
    writable_branch(&def);
    // SAFETY: fdw_exprs is the scan's parameter list (or NIL).
    let mut exprs = unsafe { PgList::<pg_sys::Node>::from_pg((*fscan).fdw_exprs) };
    let params = exprs.len();
    let mut attnos = Vec::new();
    if change == Change::Update {
        let mut tlist: *mut pg_sys::List = std::ptr::null_mut();
        let mut colnos: *mut pg_sys::List = std::ptr::null_mut();
        // SAFETY: result_relation is the statement's result relation; the
        // outputs are the processed target list and its column numbers,
        // whose first entries are the assigned values in that order.
        let values: Vec<(i16, *mut pg_sys::Node)> = unsafe {
            pg_sys::get_translated_update_targetlist(
                root,
                result_relation,
                &mut tlist,
                &mut colnos,
            );
            let tlist = PgList::<pg_sys::TargetEntry>::from_pg(tlist);
            int_list(colnos)
                .into_iter()
                .enumerate()
                .filter_map(|(i, attno)| {
                    let tle = tlist.get_ptr(i)?;
                    Some((attno as i16, (*tle).expr.cast()))
                })
                .collect()
        };
        // Every value is checked before the scan's list is touched: a
        // refused plan keeps its parameters exactly.
        // SAFETY: each expr is a planner expression of the target list.
        let fixed = values
            .iter()
            .all(|(attno, expr)| *attno > 0 && unsafe { same_for_every_row(*expr) });
        if values.is_empty() || !fixed {
            return false;
        }
        for (attno, expr) in values {
            attnos.push(attno);
            exprs.push(expr);
        }
        check_updatable(&def, kind_of(&def), &attnos);
    }
    let direct = DirectPlan {
        change,
        scan,
        attnos,
        params,
        // SAFETY: plan is the planner's ModifyTable.
        sets_tag: unsafe { (*plan).canSetTag },
    };
    // SAFETY: fscan is the planner's node; the new lists are planner
    // lists (set_plan_references fixes up the appended expressions).
    unsafe {
        (*fscan).operation = (*plan).operation;
        (*fscan).resultRelation = result_relation;
        (*fscan).fdw_exprs = exprs.into_pg();
        (*fscan).fdw_private = json_private(&direct);
        (*fscan).scan.plan.async_capable = false;
    }
    true
}

/// BeginDirectModify: rebuild the plan, pin the snapshot, prepare the
/// parameters and values.
#[pg_guard]
pub unsafe extern "C-unwind" fn begin_direct_modify(
    node: *mut pg_sys::ForeignScanState,
    _eflags: i32,
) {
    // SAFETY: node is the executor's scan state; its plan is our
    // ForeignScan, its result relation open.
    let (private, exprs, relid) = unsafe {
        let fs = (*node).ss.ps.plan as *mut pg_sys::ForeignScan;
        (
            (*fs).fdw_private,
            (*fs).fdw_exprs,
            (*(*(*node).resultRelInfo).ri_RelationDesc).rd_id,
        )
    };
    let Some(plan) = read_json_private::<DirectPlan>(private) else {
        raise(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            "omnigraph: malformed direct modify plan",
            None,
            None,
        )
    };
    // Also for EXPLAIN: it shows the commit the statement reads.
    let snapshot = graphs::snapshot(&plan.scan.server, &plan.scan.uri, &plan.scan.read.to_ref());
    let mut params = param_states(node, exprs);
    let values = params.split_off(plan.params.min(params.len()));
    let st = DirectState {
        def: table_def(relid),
        params,
        values,
        plan,
        snapshot,
        done: false,
    };
    // SAFETY: CurrentMemoryContext is the query context during ExecInitNode;
    // the state is dropped when it is reset or deleted, ERROR included.
    unsafe {
        let ptr = PgMemoryContexts::CurrentMemoryContext.leak_and_drop_on_delete(Some(st));
        (*node).fdw_state = ptr.cast();
    }
}

/// The assigned values, converted to the columns' graph types.
fn assigned_values(
    node: *mut pg_sys::ForeignScanState,
    st: &DirectState,
) -> std::collections::BTreeMap<String, GraphValue> {
    let mut props = std::collections::BTreeMap::new();
    for ((state, _), attno) in st.values.iter().zip(&st.plan.attnos) {
        let Some(c) = st.def.columns.iter().find(|c| c.attno == *attno) else {
            continue;
        };
        // SAFETY: the state was built for this scan; the value is of the
        // column's type (the planner coerced the assignment) and is
        // converted before the expression context is reset.
        let v = unsafe {
            let econtext = (*node).ss.ps.ps_ExprContext;
            PgMemoryContexts::For((*econtext).ecxt_per_tuple_memory).switch_to(|_| {
                let mut isnull = false;
                let d = pg_sys::ExecEvalExpr(*state, econtext, &mut isnull);
                column_value(d, isnull, c)
            })
        };
        props.insert(c.graph_name.clone(), v);
    }
    props
}

/// Find the rows and stage the change; returns how many rows changed.
/// With no row to change nothing is evaluated and no write transaction
/// opens, as on the row path.
fn run(node: *mut pg_sys::ForeignScanState, st: &DirectState) -> usize {
    let branch = writable_branch(&st.def);
    let params = eval_params(node, &st.params);
    let spec: ScanSpec = scan_spec(&st.plan.scan, params);
    let view = own_writes(&st.plan.scan, &st.snapshot);
    let ids = match block_on(matching_ids(&st.snapshot, view, &spec)) {
        Ok(ids) => ids,
        Err(e) => report(e, &context(&st.plan.scan)),
    };
    if ids.is_empty() {
        return 0;
    }
    let props = match st.plan.change {
        Change::Update => Some(assigned_values(node, st)),
        Change::Delete => None,
    };
    let type_name = st.def.type_name.as_str();
    table_txn(&st.def, &branch, async |t| match props {
        Some(props) => t.update_ids(type_name, &ids, props).await,
        None => t.delete_ids(type_name, &ids).await,
    });
    let n = ids.len();
    if st.plan.change == Change::Delete && kind_of(&st.def) == TypeKind::Node {
        delete_incident_edges(&st.def, &branch, ids);
    }
    n
}

/// IterateDirectModify: the whole change at the first call; no row is
/// returned (a RETURNING statement takes the row path).
#[pg_guard]
pub unsafe extern "C-unwind" fn iterate_direct_modify(
    node: *mut pg_sys::ForeignScanState,
) -> *mut pg_sys::TupleTableSlot {
    // SAFETY: node is the executor's scan state.
    let slot = unsafe { cleared_slot(node) };
    let Some(Some(st)) = state(node) else {
        return slot;
    };
    if st.done {
        return slot;
    }
    st.done = true;
    let n = run(node, st);
    // SAFETY: the executor state is valid; ModifyTable cannot count the
    // rows of a direct modify itself. The instrumentation (EXPLAIN
    // ANALYZE) is null or this node's.
    unsafe {
        if st.plan.sets_tag {
            (*(*node).ss.ps.state).es_processed += n as u64;
        }
        if let Some(instr) = (*node).ss.ps.instrument.as_mut() {
            instr.tuplecount += n as f64;
        }
    }
    slot
}

/// EndDirectModify: drop the state now (the context callback is the backstop).
#[pg_guard]
pub unsafe extern "C-unwind" fn end_direct_modify(node: *mut pg_sys::ForeignScanState) {
    if let Some(st) = state(node) {
        *st = None;
    }
}

/// ExplainDirectModify: what the scan selects, and what is assigned.
#[pg_guard]
pub unsafe extern "C-unwind" fn explain_direct_modify(
    node: *mut pg_sys::ForeignScanState,
    es: *mut pg_sys::ExplainState,
) {
    let Some(Some(st)) = state(node) else { return };
    let what = match st.plan.change {
        Change::Delete => "delete the matching rows".to_string(),
        Change::Update => {
            let names: Vec<&str> = st
                .plan
                .attnos
                .iter()
                .filter_map(|a| st.def.columns.iter().find(|c| c.attno == *a))
                .map(|c| c.graph_name.as_str())
                .collect();
            format!("set {} on the matching rows", names.join(", "))
        }
    };
    explain_text(es, "Direct Modify", &what);
    // The rows are found by their ids alone.
    let spec = ScanSpec {
        columns: vec!["id".to_string()],
        ..scan_spec(&st.plan.scan, Vec::new())
    };
    explain_scan(es, &st.plan.scan, &st.snapshot, &spec);
}
