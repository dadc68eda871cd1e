//! Parameterized paths for joins: the scan of this table probes with the
//! outer row's value (`item.id = other.x`, an edge's `src`/`dst`) instead
//! of reading the whole table, through the column's index.
//!
//! As in postgres_fdw, the join clauses come from the relation's
//! `joininfo` and from its equivalence classes
//! (`generate_implied_equalities_for_column`). A clause qualifies when it
//! is `column = <column of other relations>` on an indexed column and the
//! filter model pushes it with the outer column as a runtime value
//! ([`Quals::outer`]). Each distinct set of outer relations gives one
//! parameterization; the planner attaches every movable join clause of it
//! (`get_baserel_parampathinfo`), GetForeignPlan pushes those it can, and
//! the nestloop sets the outer values before each rescan.

use omnigraph_sql::filter::{self, CmpOp, Expr, Pushdown, Value};
use pgrx::pg_sys;
use pgrx::{PgList, is_a};

use crate::plan::RelState;
use crate::quals::Quals;

/// One way to scan the table given the rows of some other relations.
pub struct Parameterization {
    pub required_outer: pg_sys::Relids,
    /// Rows one probe returns, as the planner estimates them.
    pub rows: f64,
}

/// Whether an equivalence-class member is the Var of this relation's
/// attribute `*arg` (the callback of `generate_implied_equalities_for_column`).
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn member_is_column(
    _root: *mut pg_sys::PlannerInfo,
    rel: *mut pg_sys::RelOptInfo,
    _ec: *mut pg_sys::EquivalenceClass,
    em: *mut pg_sys::EquivalenceMember,
    arg: *mut std::ffi::c_void,
) -> bool {
    // SAFETY: the planner passes valid structures; `arg` points at the
    // attribute number `parameterizations` passes; casts follow tag checks.
    unsafe {
        let expr = (*em).em_expr as *mut pg_sys::Node;
        if !is_a(expr, pg_sys::NodeTag::T_Var) {
            return false;
        }
        let var = expr as *mut pg_sys::Var;
        (*var).varno as u32 == (*rel).relid
            && (*var).varlevelsup == 0
            && (*var).varattno == *(arg as *const i16)
    }
}

/// Whether a join clause is `indexed column = outer column` as the scan
/// can push it.
///
/// # Safety
/// `rinfo` is a valid RestrictInfo of this planning cycle.
unsafe fn probes_index(
    rinfo: *mut pg_sys::RestrictInfo,
    baserel: *mut pg_sys::RelOptInfo,
    state: &RelState,
    indexed: &[String],
) -> bool {
    // SAFETY: per the contract.
    unsafe {
        if !pg_sys::join_clause_is_movable_to(rinfo, baserel) {
            return false;
        }
        let mut quals = Quals::new((*baserel).relid, &state.def.columns);
        quals.outer = true;
        let expr = quals.translate((*rinfo).clause.cast());
        matches!(
            &expr,
            Expr::Cmp { column, op: CmpOp::Eq, value: Value::Param(_), .. }
                if indexed.contains(&column.name)
        ) && filter::classify(&expr) == Pushdown::Exact
    }
}

/// The parameterizations worth a path: one per distinct set of outer
/// relations of a join clause on an indexed column.
///
/// # Safety
/// `root` and `baserel` are the planner's valid structures for this
/// relation, whose `fdw_private` is `state`.
pub unsafe fn parameterizations(
    root: *mut pg_sys::PlannerInfo,
    baserel: *mut pg_sys::RelOptInfo,
    state: &RelState,
    indexed: &[String],
) -> Vec<Parameterization> {
    let mut clauses: Vec<*mut pg_sys::RestrictInfo> = Vec::new();
    // SAFETY: per the contract; the lists hold RestrictInfos.
    unsafe {
        for rinfo in PgList::<pg_sys::RestrictInfo>::from_pg((*baserel).joininfo).iter_ptr() {
            if probes_index(rinfo, baserel, state, indexed) {
                clauses.push(rinfo);
            }
        }
        if (*baserel).has_eclass_joins {
            for col in state
                .def
                .columns
                .iter()
                .filter(|c| indexed.contains(&c.graph_name))
            {
                let mut attno = col.attno;
                let implied = pg_sys::generate_implied_equalities_for_column(
                    root,
                    baserel,
                    Some(member_is_column),
                    (&mut attno as *mut i16).cast(),
                    (*baserel).lateral_referencers,
                );
                for rinfo in PgList::<pg_sys::RestrictInfo>::from_pg(implied).iter_ptr() {
                    if probes_index(rinfo, baserel, state, indexed) {
                        clauses.push(rinfo);
                    }
                }
            }
        }
        let mut out: Vec<Parameterization> = Vec::new();
        for rinfo in clauses {
            let outer = pg_sys::bms_difference(
                pg_sys::bms_union((*rinfo).clause_relids, (*baserel).lateral_relids),
                (*baserel).relids,
            );
            if pg_sys::bms_is_empty(outer)
                || out
                    .iter()
                    .any(|p| pg_sys::bms_equal(p.required_outer, outer))
            {
                continue;
            }
            let info = pg_sys::get_baserel_parampathinfo(root, baserel, outer);
            out.push(Parameterization {
                required_outer: outer,
                rows: (*info).ppi_rows,
            });
        }
        out
    }
}
