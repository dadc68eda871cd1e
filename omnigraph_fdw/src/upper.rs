//! Aggregate pushdown: GetForeignUpperPaths for `UPPERREL_GROUP_AGG`.
//!
//! A query that aggregates one foreign table, with every WHERE condition
//! pushed, no HAVING and no grouping sets, is offered a foreign path that
//! computes the groups and aggregates next to the data
//! ([`omnigraph_sql::scan::aggregate`]): Postgres then receives one row
//! per group instead of every row of the table. As in postgres_fdw, the
//! plan's `fdw_scan_tlist` lists what the scan returns (the grouping
//! columns and the aggregates); expressions over them (`sum(x) + 1`) are
//! computed by the ForeignScan's own projection.
//!
//! Pushed: `count(*)`, and `count`, `sum`, `avg`, `min` and `max` of a
//! plain column, the built-in functions only, without DISTINCT, ORDER BY
//! or FILTER inside the call. `sum`/`avg` of int4, int8, numeric, float4
//! and float8; `min`/`max` of those, date, timestamptz, and text under
//! the C collation (Lance compares bytes). GROUP BY plain columns that
//! are not arrays or floats, and text only under a deterministic
//! collation. Anything else runs in Postgres as before.

use omnigraph_sql::scan::aggregate::{AggFunc, Aggregate, AggregateSpec};
use pgrx::pg_sys;
use pgrx::{PgList, PgMemoryContexts, is_a};
use serde::{Deserialize, Serialize};

use crate::datum::{Kind, PgType};
use crate::pg::{self, cstr};
use crate::plan::{RelState, rel_state};
use crate::quals::FilterColumn;

/// One column of what an aggregating scan returns (`fdw_scan_tlist`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AggOutput {
    /// The `index`th grouping column.
    Group { index: usize, ty: PgType },
    /// The `index`th aggregate; `ty` is its result type.
    Aggregate { index: usize, ty: PgType },
}

/// An aggregation pushed into the scan, in the plan's `fdw_private`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AggPlan {
    pub spec: AggregateSpec,
    pub outputs: Vec<AggOutput>,
}

/// Planner state of a grouped relation we can compute, in
/// `output_rel->fdw_private`.
pub struct UpperState {
    pub input: *mut pg_sys::RelOptInfo,
    /// The scan's target list (`fdw_scan_tlist`).
    pub tlist: *mut pg_sys::List,
    pub plan: AggPlan,
}

const fn scalar(kind: Kind) -> PgType {
    PgType { kind, array: false }
}

/// The result type of `func` over a column of type `ty`, when it is
/// computed next to the data. `collation` is the call's input collation.
fn result_type(func: AggFunc, ty: PgType, collation: pg_sys::Oid) -> Option<PgType> {
    let numeric = matches!(ty.kind, Kind::Int4 | Kind::Int8 | Kind::Numeric);
    let float = matches!(ty.kind, Kind::Float4 | Kind::Float8);
    if ty.array && !matches!(func, AggFunc::Count | AggFunc::CountRows) {
        return None;
    }
    match func {
        AggFunc::CountRows | AggFunc::Count => Some(scalar(Kind::Int8)),
        AggFunc::Sum if ty.kind == Kind::Int4 => Some(scalar(Kind::Int8)),
        AggFunc::Sum if numeric => Some(scalar(Kind::Numeric)),
        AggFunc::Sum if float => Some(ty),
        AggFunc::Avg if numeric => Some(scalar(Kind::Numeric)),
        AggFunc::Avg if float => Some(scalar(Kind::Float8)),
        AggFunc::Min | AggFunc::Max => match ty.kind {
            Kind::Int4 | Kind::Int8 | Kind::Numeric | Kind::Float4 | Kind::Float8 => Some(ty),
            Kind::Date | Kind::TimestampTz => Some(ty),
            // Lance's strings compare as bytes: the C collation's order.
            Kind::Text if pg::collation_is_c(collation) => Some(ty),
            _ => None,
        },
        _ => None,
    }
}

/// Whether rows can be grouped by a column by the bytes of its values.
fn groupable(ty: PgType, collation: pg_sys::Oid) -> bool {
    if ty.array || matches!(ty.kind, Kind::Float4 | Kind::Float8) {
        // Postgres groups -0 with 0 and every NaN together.
        return false;
    }
    ty.kind != Kind::Text
        || collation == pg_sys::InvalidOid
        || pg::collation_is_deterministic(collation)
}

/// The column a node is, when it is a plain Var of the scanned table.
///
/// # Safety
/// `node` is a valid expression node.
unsafe fn column_of(
    node: *mut pg_sys::Node,
    relid: u32,
    state: &RelState,
) -> Option<&FilterColumn> {
    // SAFETY: the cast follows the tag check.
    unsafe {
        if node.is_null() || !is_a(node, pg_sys::NodeTag::T_Var) {
            return None;
        }
        let var = node as *mut pg_sys::Var;
        if (*var).varno as u32 != relid || (*var).varlevelsup != 0 {
            return None;
        }
        state
            .def
            .columns
            .iter()
            .find(|c| c.attno == (*var).varattno)
    }
}

/// The aggregate an Aggref is, with its result type, when it is pushed.
///
/// # Safety
/// `aggref` is a valid Aggref of this query level.
unsafe fn aggregate_of(
    aggref: *mut pg_sys::Aggref,
    relid: u32,
    state: &RelState,
) -> Option<(Aggregate, PgType)> {
    // SAFETY: aggref is valid; list members are TargetEntry nodes.
    unsafe {
        let a = &*aggref;
        if !a.aggorder.is_null()
            || !a.aggdistinct.is_null()
            || !a.aggfilter.is_null()
            || a.aggvariadic
            || a.aggkind as u8 != b'n'
            || a.agglevelsup != 0
            || a.aggsplit != pg_sys::AggSplit::AGGSPLIT_SIMPLE
        {
            return None;
        }
        if pg_sys::get_func_namespace(a.aggfnoid) != pg_sys::Oid::from(pg_sys::PG_CATALOG_NAMESPACE)
        {
            return None;
        }
        let name = cstr(pg_sys::get_func_name(a.aggfnoid));
        let args = PgList::<pg_sys::TargetEntry>::from_pg(a.args);
        if a.aggstar {
            return (name == "count" && args.is_empty()).then(|| {
                (
                    Aggregate {
                        func: AggFunc::CountRows,
                        column: None,
                    },
                    scalar(Kind::Int8),
                )
            });
        }
        if args.len() != 1 {
            return None;
        }
        let te = args.get_ptr(0)?;
        let col = column_of((*te).expr.cast(), relid, state)?;
        let func = match name.as_str() {
            "count" => AggFunc::Count,
            "sum" => AggFunc::Sum,
            "avg" => AggFunc::Avg,
            "min" => AggFunc::Min,
            "max" => AggFunc::Max,
            _ => return None,
        };
        let ty = result_type(func, col.ty, a.inputcollid)?;
        Some((
            Aggregate {
                func,
                column: Some(col.graph_name.clone()),
            },
            ty,
        ))
    }
}

/// The scan's target list as it is built, and what each entry is.
struct Tlist {
    list: *mut pg_sys::List,
    outputs: Vec<AggOutput>,
    groups: Vec<String>,
    aggregates: Vec<Aggregate>,
}

impl Tlist {
    /// Append `expr` as the next target entry.
    ///
    /// # Safety
    /// `expr` is a valid expression node of this query.
    unsafe fn push(&mut self, expr: *mut pg_sys::Node, sgref: u32, output: AggOutput) {
        // SAFETY: makeTargetEntry and lappend palloc in the planner's context.
        unsafe {
            let resno = (pg_sys::list_length(self.list) + 1) as pg_sys::AttrNumber;
            let te = pg_sys::makeTargetEntry(expr.cast(), resno, std::ptr::null_mut(), false);
            (*te).ressortgroupref = sgref;
            self.list = pg_sys::lappend(self.list, te.cast());
        }
        self.outputs.push(output);
    }

    /// Whether `expr` is already returned.
    ///
    /// # Safety
    /// `expr` is a valid expression node.
    unsafe fn has(&self, expr: *mut pg_sys::Node) -> bool {
        // SAFETY: tlist_member compares with equal() over valid nodes.
        unsafe { !pg_sys::tlist_member(expr.cast(), self.list).is_null() }
    }

    /// Return an Aggref, once; `None` when it cannot be pushed.
    ///
    /// # Safety
    /// `node` is a valid Aggref of this query level.
    unsafe fn aggref(
        &mut self,
        node: *mut pg_sys::Node,
        relid: u32,
        state: &RelState,
    ) -> Option<()> {
        // SAFETY: per the contract.
        unsafe {
            if self.has(node) {
                return Some(());
            }
            let (agg, ty) = aggregate_of(node.cast(), relid, state)?;
            self.aggregates.push(agg);
            let index = self.aggregates.len() - 1;
            self.push(node, 0, AggOutput::Aggregate { index, ty });
        }
        Some(())
    }
}

/// The grouping reference of target entry `i`, when it is a GROUP BY key.
///
/// # Safety
/// `root` and `target` are valid; `i` is an index of `target->exprs`.
unsafe fn group_ref(
    root: *mut pg_sys::PlannerInfo,
    target: *mut pg_sys::PathTarget,
    i: usize,
) -> Option<u32> {
    // SAFETY: sortgrouprefs is null or holds one entry per expression.
    unsafe {
        if (*target).sortgrouprefs.is_null() {
            return None;
        }
        let sgref = *(*target).sortgrouprefs.add(i);
        (sgref != 0
            && !pg_sys::get_sortgroupref_clause_noerr(sgref, (*(*root).parse).groupClause)
                .is_null())
        .then_some(sgref)
    }
}

/// What the grouped relation's target needs from the scan, or `None`
/// when some of it cannot be computed next to the data.
///
/// # Safety
/// All pointers are the planner's valid structures for this query.
unsafe fn build(
    root: *mut pg_sys::PlannerInfo,
    input: *mut pg_sys::RelOptInfo,
    target: *mut pg_sys::PathTarget,
    state: &RelState,
) -> Option<(*mut pg_sys::List, AggPlan)> {
    // SAFETY: per the contract; node casts follow tag checks.
    unsafe {
        let relid = (*input).relid;
        let mut t = Tlist {
            list: std::ptr::null_mut(),
            outputs: Vec::new(),
            groups: Vec::new(),
            aggregates: Vec::new(),
        };
        let exprs: Vec<*mut pg_sys::Node> = PgList::<pg_sys::Node>::from_pg((*target).exprs)
            .iter_ptr()
            .collect();
        // First the grouping columns, so any expression may refer to them.
        for (i, expr) in exprs.iter().enumerate() {
            let Some(sgref) = group_ref(root, target, i) else {
                continue;
            };
            let col = column_of(*expr, relid, state)?;
            if !groupable(col.ty, pg_sys::exprCollation(*expr)) {
                return None;
            }
            t.groups.push(col.graph_name.clone());
            let index = t.groups.len() - 1;
            t.push(*expr, sgref, AggOutput::Group { index, ty: col.ty });
        }
        for (i, expr) in exprs.iter().enumerate() {
            if group_ref(root, target, i).is_some() {
                continue;
            }
            if is_a(*expr, pg_sys::NodeTag::T_Aggref) {
                t.aggref(*expr, relid, state)?;
                continue;
            }
            // An expression over groups and aggregates: the aggregates come
            // from the scan, the rest is computed above it. Plain Vars must
            // be grouping columns, which are already returned.
            // A window function is computed above the grouping: never here.
            let flags = pg_sys::PVC_INCLUDE_AGGREGATES
                | pg_sys::PVC_INCLUDE_WINDOWFUNCS
                | pg_sys::PVC_RECURSE_PLACEHOLDERS;
            let parts =
                PgList::<pg_sys::Node>::from_pg(pg_sys::pull_var_clause(*expr, flags as i32));
            for part in parts.iter_ptr() {
                if is_a(part, pg_sys::NodeTag::T_Aggref) {
                    t.aggref(part, relid, state)?;
                } else if !is_a(part, pg_sys::NodeTag::T_Var) || !t.has(part) {
                    return None;
                }
            }
        }
        let plan = AggPlan {
            spec: AggregateSpec {
                group_by: t.groups,
                aggregates: t.aggregates,
            },
            outputs: t.outputs,
        };
        Some((t.list, plan))
    }
}

/// GetForeignUpperPaths: a path that computes the grouping and
/// aggregates of a query over one foreign table next to the data.
#[pgrx::pg_guard]
pub unsafe extern "C-unwind" fn get_foreign_upper_paths(
    root: *mut pg_sys::PlannerInfo,
    stage: pg_sys::UpperRelationKind::Type,
    input_rel: *mut pg_sys::RelOptInfo,
    output_rel: *mut pg_sys::RelOptInfo,
    extra: *mut std::ffi::c_void,
) {
    if stage != pg_sys::UpperRelationKind::UPPERREL_GROUP_AGG {
        return;
    }
    // SAFETY: the planner passes valid structures; for UPPERREL_GROUP_AGG,
    // `extra` is a GroupPathExtraData; input_rel's fdw_private is the
    // RelState get_foreign_rel_size stored when it is a base relation.
    unsafe {
        let extra = extra as *mut pg_sys::GroupPathExtraData;
        let parse = (*root).parse;
        if !(*output_rel).fdw_private.is_null()
            || (*input_rel).reloptkind != pg_sys::RelOptKind::RELOPT_BASEREL
            || (*input_rel).fdw_private.is_null()
            || extra.is_null()
            || (*extra).patype != pg_sys::PartitionwiseAggregateType::PARTITIONWISE_AGGREGATE_NONE
            || !(*extra).havingQual.is_null()
            || !(*parse).groupingSets.is_null()
        {
            return;
        }
        let state = rel_state(input_rel);
        // A condition left to Postgres filters rows before they are
        // aggregated, so every condition must be pushed.
        let quals = PgList::<pg_sys::RestrictInfo>::from_pg((*input_rel).baserestrictinfo);
        if quals.len() != state.remote.len() {
            return;
        }
        let target = (*output_rel).reltarget;
        let Some((tlist, plan)) = build(root, input_rel, target, state) else {
            return;
        };
        let rows = if plan.spec.group_by.is_empty() {
            1.0
        } else {
            let exprs = pg_sys::get_sortgrouplist_exprs((*parse).groupClause, tlist);
            pg_sys::estimate_num_groups(
                root,
                exprs,
                (*input_rel).rows,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
        // Cheaper than any Agg over the scan (which costs at least the
        // scan): only the needed columns are read and no tuple is formed
        // per row.
        let columns = plan.spec.columns().len() as f64;
        let cost = if columns == 0.0 && state.remote.is_empty() {
            10.0
        } else {
            20.0 + state.table_rows * 0.001 * (1.0 + columns) + rows * 0.001
        };
        (*output_rel).fdw_private = PgMemoryContexts::CurrentMemoryContext
            .leak_and_drop_on_delete(UpperState {
                input: input_rel,
                tlist,
                plan,
            })
            .cast();
        let path = pg_sys::create_foreign_upper_path(
            root,
            output_rel,
            target,
            rows,
            cost,
            cost,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        );
        pg_sys::add_path(output_rel, path.cast());
    }
}

/// The state GetForeignUpperPaths stored for a grouped relation.
///
/// # Safety
/// `rel` is an upper relation whose path we created in this planning cycle.
pub unsafe fn upper_state<'a>(rel: *mut pg_sys::RelOptInfo) -> &'a UpperState {
    // SAFETY: per the contract, fdw_private is our UpperState.
    unsafe { &*((*rel).fdw_private as *const UpperState) }
}
