//! Planning a foreign scan: GetForeignRelSize, GetForeignPaths and
//! GetForeignPlan.
//!
//! GetForeignRelSize resolves the table against the graph's schema,
//! classifies each restriction as pushed (Exact) or local, and estimates
//! rows from the table's row count. GetForeignPaths offers an unordered
//! path and, when Lance can produce the query's ORDER BY, an ordered one; a
//! path may also carry the query's LIMIT when that is correct (see
//! [`limit_is_pushable`]). GetForeignPlan writes everything the executor
//! needs into `fdw_private` as one JSON string (a `String` node, so the plan
//! stays copyable and cacheable), and the runtime parameters into `fdw_exprs`.
//!
//! `fdw_private` layout: `list_make1(makeString(json(ScanPlan)))`.
//! `fdw_exprs`: the `Param` nodes a [`ScanPlan`] refers to as `Value::Param(i)`.

use omnigraph_engine::IndexKind;
use omnigraph_sql::filter::{self, Expr, Pushdown, Scalar, Value};
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::{PgList, PgMemoryContexts, PgSqlErrorCode, is_a};
use serde::{Deserialize, Serialize};

use crate::datum::{Kind, PgType, TEXT};
use crate::pg::{self, cstr, raise};
use crate::quals::Quals;
use crate::tabledef::{Read, TableDef, table_def};
use crate::upper::{AggPlan, upper_state};
use crate::{graphs, join};

/// Planner-side state of one foreign relation, kept in `baserel->fdw_private`.
pub(crate) struct RelState {
    pub def: TableDef,
    /// The restrictions pushed into the scan.
    pub remote: Vec<*mut pg_sys::RestrictInfo>,
    /// Rows in the table at the snapshot planned against.
    pub table_rows: f64,
}

/// GetForeignRelSize: resolve the table, classify quals, estimate rows.
#[pg_guard]
pub unsafe extern "C-unwind" fn get_foreign_rel_size(
    root: *mut pg_sys::PlannerInfo,
    baserel: *mut pg_sys::RelOptInfo,
    foreigntableid: pg_sys::Oid,
) {
    let def = table_def(foreigntableid);
    let snap = graphs::snapshot(&def.server.name, &def.server.uri, &def.read.to_ref());
    let table_rows = crate::runtime::run(
        &format!("foreign table {}", def.rel_name),
        snap.count(&def.type_name),
    ) as f64;
    // SAFETY: baserel is the planner's valid RelOptInfo for this table.
    let (relid, restrictinfo) = unsafe { ((*baserel).relid, (*baserel).baserestrictinfo) };
    let mut quals = Quals::new(relid, &def.columns);
    let mut remote = Vec::new();
    // SAFETY: baserestrictinfo is a List of RestrictInfo.
    for rinfo in unsafe { PgList::<pg_sys::RestrictInfo>::from_pg(restrictinfo) }.iter_ptr() {
        // SAFETY: rinfo is a valid RestrictInfo.
        let clause = unsafe { (*rinfo).clause.cast() };
        if filter::classify(&quals.translate(clause)) == Pushdown::Exact {
            remote.push(rinfo);
        }
    }
    // SAFETY: clauselist_selectivity reads the planner's own clause list.
    let selectivity = unsafe {
        pg_sys::clauselist_selectivity(
            root,
            restrictinfo,
            relid as i32,
            pg_sys::JoinType::JOIN_INNER,
            std::ptr::null_mut(),
        )
    };
    // SAFETY: baserel is valid; the planner reads rows/tuples after we return.
    unsafe {
        (*baserel).tuples = table_rows;
        (*baserel).rows = (table_rows * selectivity).round().max(1.0);
        let state = RelState {
            def,
            remote,
            table_rows,
        };
        // Planner memory: freed (and the state dropped) when planning ends.
        (*baserel).fdw_private = PgMemoryContexts::CurrentMemoryContext
            .leak_and_drop_on_delete(state)
            .cast();
    }
}

pub(crate) fn rel_state<'a>(baserel: *mut pg_sys::RelOptInfo) -> &'a RelState {
    // SAFETY: get_foreign_rel_size stored a RelState there for this planning cycle.
    unsafe { &*((*baserel).fdw_private as *const RelState) }
}

/// One key of a pushed ORDER BY.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderKey {
    pub column: String,
    pub ascending: bool,
    pub nulls_first: bool,
}

/// The query's ORDER BY as Lance order keys, when every key is a column of
/// this table that Lance orders the way Postgres does.
fn pushable_order(
    root: *mut pg_sys::PlannerInfo,
    baserel: *mut pg_sys::RelOptInfo,
    state: &RelState,
) -> Option<Vec<OrderKey>> {
    // SAFETY: root and baserel are the planner's valid structures; every
    // node cast follows a tag check.
    unsafe {
        let pathkeys = PgList::<pg_sys::PathKey>::from_pg((*root).query_pathkeys);
        if pathkeys.is_empty() {
            return None;
        }
        let relid = (*baserel).relid;
        let mut keys = Vec::new();
        for pk in pathkeys.iter_ptr() {
            let ec = (*pk).pk_eclass;
            let mut found = None;
            for em in PgList::<pg_sys::EquivalenceMember>::from_pg((*ec).ec_members).iter_ptr() {
                let expr = (*em).em_expr as *mut pg_sys::Node;
                if !is_a(expr, pg_sys::NodeTag::T_Var) {
                    continue;
                }
                let var = expr as *mut pg_sys::Var;
                if (*var).varno as u32 != relid || (*var).varlevelsup != 0 {
                    continue;
                }
                if let Some(c) = state
                    .def
                    .columns
                    .iter()
                    .find(|c| c.attno == (*var).varattno)
                {
                    found = Some((c, (*var).vartype));
                }
            }
            let (col, type_oid) = found?;
            if col.ty.array {
                return None;
            }
            // Text orders as Lance does (bytes) only under the C collation.
            if col.ty == TEXT && !pg::collation_is_c((*ec).ec_collation) {
                return None;
            }
            // Arrow orders floats totally (-0 before 0, NaN by bit pattern);
            // Postgres ties -0 with 0 and sorts every NaN last.
            if matches!(col.ty.kind, Kind::Float4 | Kind::Float8) {
                return None;
            }
            // Only the type's default ordering (not e.g. ORDER BY x USING ~<~).
            let opclass = pg_sys::GetDefaultOpClass(type_oid, pg_sys::BTREE_AM_OID);
            if opclass == pg_sys::InvalidOid
                || pg_sys::get_opclass_family(opclass) != (*pk).pk_opfamily
            {
                return None;
            }
            let ascending = match (*pk).pk_strategy as u32 {
                pg_sys::BTLessStrategyNumber => true,
                pg_sys::BTGreaterStrategyNumber => false,
                _ => return None,
            };
            keys.push(OrderKey {
                column: col.graph_name.clone(),
                ascending,
                nulls_first: (*pk).pk_nulls_first,
            });
        }
        Some(keys)
    }
}

/// Whether this scan may stop after LIMIT + OFFSET rows: the query reads
/// this one table, every qual is pushed, nothing between the scan and the
/// LIMIT changes the row count (no aggregate, grouping, window, DISTINCT,
/// set operation, set-returning function or row lock), and an ORDER BY, if
/// any, is done by the scan itself (`ordered`).
fn limit_is_pushable(
    root: *mut pg_sys::PlannerInfo,
    baserel: *mut pg_sys::RelOptInfo,
    state: &RelState,
    ordered: bool,
) -> bool {
    // SAFETY: root, its parse tree and baserel are valid planner structures.
    unsafe {
        let q = (*root).parse;
        let all_pushed = PgList::<pg_sys::RestrictInfo>::from_pg((*baserel).baserestrictinfo).len()
            == state.remote.len();
        (*q).commandType == pg_sys::CmdType::CMD_SELECT
            && !(*q).limitCount.is_null()
            && (*q).limitOption == pg_sys::LimitOption::LIMIT_OPTION_COUNT
            && !(*q).hasAggs
            && !(*q).hasWindowFuncs
            && !(*q).hasTargetSRFs
            && (*q).groupClause.is_null()
            && (*q).groupingSets.is_null()
            && (*q).havingQual.is_null()
            && (*q).distinctClause.is_null()
            && (*q).setOperations.is_null()
            && (*q).rowMarks.is_null()
            && pg_sys::bms_num_members((*root).all_baserels) == 1
            && all_pushed
            && ((*q).sortClause.is_null() || ordered)
            && limit_value((*q).limitCount).is_some()
            && ((*q).limitOffset.is_null() || limit_value((*q).limitOffset).is_some())
    }
}

/// A LIMIT/OFFSET expression the scan can evaluate: a constant or `$n`.
fn limit_value(node: *mut pg_sys::Node) -> Option<*mut pg_sys::Node> {
    // SAFETY: node is a valid expression node; casts follow tag checks.
    unsafe {
        if is_a(node, pg_sys::NodeTag::T_Const) {
            let c = node as *mut pg_sys::Const;
            return ((*c).consttype == pg_sys::INT8OID).then_some(node);
        }
        if is_a(node, pg_sys::NodeTag::T_Param) {
            let p = node as *mut pg_sys::Param;
            return ((*p).paramkind == pg_sys::ParamKind::PARAM_EXTERN
                && (*p).paramtype == pg_sys::INT8OID)
                .then_some(node);
        }
    }
    None
}

/// What a path promises, in `path->fdw_private` as `list_make1(makeString(json))`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct PathFlags {
    ordered: bool,
    limit: bool,
}

fn path_private(flags: PathFlags) -> *mut pg_sys::List {
    json_private(&flags)
}

/// `list_make1(makeString(json(value)))`: plan data that survives copyObject.
pub(crate) fn json_private<T: Serialize>(value: &T) -> *mut pg_sys::List {
    let json = serde_json::to_string(value).unwrap_or_default();
    let mut list = PgList::<pg_sys::Node>::new();
    // SAFETY: makeString wraps a palloc'd C string in a String node.
    list.push(unsafe { pg_sys::makeString(pg::pstrdup(&json)) }.cast());
    list.into_pg()
}

pub(crate) fn read_json_private<T: for<'de> Deserialize<'de>>(
    list: *mut pg_sys::List,
) -> Option<T> {
    // SAFETY: our fdw_private lists hold exactly one String node.
    let json = unsafe {
        let l = PgList::<pg_sys::Node>::from_pg(list);
        let node = l.head()?;
        if !is_a(node, pg_sys::NodeTag::T_String) {
            return None;
        }
        cstr((*(node as *mut pg_sys::String)).sval)
    };
    serde_json::from_str(&json).ok()
}

/// GetForeignPaths: an unordered path, and an ordered one when possible.
#[pg_guard]
pub unsafe extern "C-unwind" fn get_foreign_paths(
    root: *mut pg_sys::PlannerInfo,
    baserel: *mut pg_sys::RelOptInfo,
    _foreigntableid: pg_sys::Oid,
) {
    let state = rel_state(baserel);
    // SAFETY: baserel is valid.
    let rows = unsafe { (*baserel).rows };
    let ncols = state.def.columns.len() as f64;
    // Opening the dataset costs about as much as reading a few pages; each
    // stored row costs a little per column, each returned row a tuple.
    let startup = 25.0;
    let total = startup + state.table_rows * 0.002 * (1.0 + ncols) + rows * 0.01;
    let order = pushable_order(root, baserel, state);
    let add = |pathkeys: *mut pg_sys::List, flags: PathFlags, startup: f64, total: f64| {
        // SAFETY: all arguments are valid planner structures or NIL.
        unsafe {
            let path = pg_sys::create_foreignscan_path(
                root,
                baserel,
                std::ptr::null_mut(),
                rows,
                startup,
                total,
                pathkeys,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                path_private(flags),
            );
            pg_sys::add_path(baserel, path.cast());
        }
    };
    let unordered_limit = limit_is_pushable(root, baserel, state, false);
    add(
        std::ptr::null_mut(),
        PathFlags {
            ordered: false,
            limit: unordered_limit,
        },
        startup,
        total,
    );
    if order.is_some() {
        // Lance sorts (or keeps a top-k) in native code: cheaper than a
        // Postgres Sort over the same rows, so the planner prefers it.
        let n = state.table_rows.max(2.0);
        let sort = n * n.log2() * 0.001;
        let limit = limit_is_pushable(root, baserel, state, true);
        // SAFETY: root is valid.
        let pathkeys = unsafe { (*root).query_pathkeys };
        add(
            pathkeys,
            PathFlags {
                ordered: true,
                limit,
            },
            startup + sort,
            total + sort,
        );
    }
    // Probes for joins on an indexed column (a nestloop's inner side).
    // SAFETY: baserel is valid.
    if unsafe { (*baserel).joininfo.is_null() && !(*baserel).has_eclass_joins } {
        return;
    }
    let (indexed, uncovered) = indexed_columns(state);
    if indexed.is_empty() {
        return;
    }
    // SAFETY: root and baserel are this relation's valid planner structures.
    for p in unsafe { join::parameterizations(root, baserel, state, &indexed) } {
        // Each probe starts a Lance scan (an index search, then the rows);
        // rows the index does not cover yet are scanned.
        let startup = 50.0 + uncovered * 0.002 * 2.0;
        let total = startup + p.rows * 0.01 * (1.0 + ncols);
        // SAFETY: all arguments are valid planner structures or NIL.
        unsafe {
            let path = pg_sys::create_foreignscan_path(
                root,
                baserel,
                std::ptr::null_mut(),
                p.rows,
                startup,
                total,
                std::ptr::null_mut(),
                p.required_outer,
                std::ptr::null_mut(),
                path_private(PathFlags {
                    ordered: false,
                    limit: false,
                }),
            );
            pg_sys::add_path(baserel, path.cast());
        }
    }
}

/// The table's columns with a scalar index at the snapshot planned
/// against, and the most rows any of those indexes does not cover yet.
fn indexed_columns(state: &RelState) -> (Vec<String>, f64) {
    let def = &state.def;
    let snap = graphs::snapshot(&def.server.name, &def.server.uri, &def.read.to_ref());
    let indexes = crate::runtime::run(
        &format!("foreign table {}", def.rel_name),
        snap.indexes(&def.type_name),
    );
    let scalar: Vec<_> = indexes
        .into_iter()
        .filter(|i| matches!(i.kind, IndexKind::BTree | IndexKind::Bitmap))
        .collect();
    let uncovered = scalar.iter().map(|i| i.uncovered_rows).max().unwrap_or(0) as f64;
    (scalar.into_iter().map(|i| i.column).collect(), uncovered)
}

/// A LIMIT pushed into the scan: at most `count + offset` rows are read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LimitSpec {
    pub count: Value,
    pub offset: Option<Value>,
}

/// A column the scan fetches, and the attribute it fills.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScanColumn {
    pub attno: i16,
    pub graph_name: String,
    pub ty: PgType,
}

/// Everything the executor needs, serialised into `fdw_private`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScanPlan {
    pub server: String,
    pub uri: String,
    pub rel_name: String,
    pub type_name: String,
    pub read: Read,
    pub columns: Vec<ScanColumn>,
    pub filter: Option<Expr>,
    pub limit: Option<LimitSpec>,
    pub order: Vec<OrderKey>,
    /// Groups and aggregates computed next to the data instead of rows
    /// (the scan then returns the plan's `fdw_scan_tlist`).
    pub aggregate: Option<AggPlan>,
}

pub fn scan_plan(list: *mut pg_sys::List) -> ScanPlan {
    read_json_private(list).unwrap_or_else(|| {
        raise(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            "omnigraph: malformed foreign scan plan",
            None,
            None,
        )
    })
}

/// Attribute numbers (1-based) the query needs from this table.
fn needed_attnos(
    baserel: *mut pg_sys::RelOptInfo,
    local: &[*mut pg_sys::Node],
) -> (Vec<i16>, bool) {
    let mut attrs: *mut pg_sys::Bitmapset = std::ptr::null_mut();
    // SAFETY: baserel and the clause nodes are valid planner structures.
    unsafe {
        let relid = (*baserel).relid;
        pg_sys::pull_varattnos((*(*baserel).reltarget).exprs.cast(), relid, &mut attrs);
        for n in local {
            pg_sys::pull_varattnos(*n, relid, &mut attrs);
        }
        let offset = pg_sys::FirstLowInvalidHeapAttributeNumber;
        let mut out = Vec::new();
        let mut whole_row = false;
        let mut m = -1;
        loop {
            m = pg_sys::bms_next_member(attrs, m);
            if m < 0 {
                break;
            }
            let attno = m + offset;
            if attno == 0 {
                whole_row = true;
            } else if attno > 0 {
                out.push(attno as i16);
            }
        }
        (out, whole_row)
    }
}

/// GetForeignPlan: split quals, pick columns, write the plan.
#[pg_guard]
pub unsafe extern "C-unwind" fn get_foreign_plan(
    root: *mut pg_sys::PlannerInfo,
    baserel: *mut pg_sys::RelOptInfo,
    _foreigntableid: pg_sys::Oid,
    best_path: *mut pg_sys::ForeignPath,
    tlist: *mut pg_sys::List,
    scan_clauses: *mut pg_sys::List,
    outer_plan: *mut pg_sys::Plan,
) -> *mut pg_sys::ForeignScan {
    // SAFETY: baserel is valid.
    if unsafe { (*baserel).reloptkind } == pg_sys::RelOptKind::RELOPT_UPPER_REL {
        // SAFETY: only our GetForeignUpperPaths creates foreign paths on an
        // upper relation, after storing its state there.
        return unsafe { aggregate_plan(upper_state(baserel), tlist, outer_plan) };
    }
    let state = rel_state(baserel);
    // SAFETY: best_path is one of our paths.
    let flags: PathFlags =
        read_json_private(unsafe { (*best_path).fdw_private }).unwrap_or(PathFlags {
            ordered: false,
            limit: false,
        });
    // SAFETY: baserel is valid.
    let relid = unsafe { (*baserel).relid };
    let mut quals = Quals::new(relid, &state.def.columns);
    let mut pushed = Vec::new();
    let mut local = PgList::<pg_sys::Node>::new();
    // SAFETY: scan_clauses is a List of RestrictInfo for a base relation.
    for rinfo in unsafe { PgList::<pg_sys::RestrictInfo>::from_pg(scan_clauses) }.iter_ptr() {
        // SAFETY: rinfo is valid.
        let (clause, pseudo) = unsafe {
            (
                (*rinfo).clause.cast::<pg_sys::Node>(),
                (*rinfo).pseudoconstant,
            )
        };
        if pseudo {
            continue;
        }
        if state.remote.contains(&rinfo) {
            pushed.push(quals.translate(clause));
            continue;
        }
        // A join clause of a parameterized path: pushed with the outer
        // column as a runtime parameter when the filter model takes it
        // (the parameters a refused clause added are dropped again).
        let before = quals.params.len();
        quals.outer = true;
        let expr = quals.translate(clause);
        quals.outer = false;
        if filter::classify(&expr) == Pushdown::Exact {
            pushed.push(expr);
        } else {
            quals.params.truncate(before);
            local.push(clause);
        }
    }
    let local_nodes: Vec<*mut pg_sys::Node> = local.iter_ptr().collect();
    let (attnos, whole_row) = needed_attnos(baserel, &local_nodes);
    let columns: Vec<ScanColumn> = state
        .def
        .columns
        .iter()
        .filter(|c| whole_row || attnos.contains(&c.attno))
        .map(|c| ScanColumn {
            attno: c.attno,
            graph_name: c.graph_name.clone(),
            ty: c.ty,
        })
        .collect();
    let order = if flags.ordered {
        pushable_order(root, baserel, state).unwrap_or_default()
    } else {
        Vec::new()
    };
    let limit = if flags.limit {
        // SAFETY: limit_is_pushable checked these are a Const or a Param.
        unsafe {
            let q = (*root).parse;
            let mut value = |node: *mut pg_sys::Node| -> Option<Value> {
                if is_a(node, pg_sys::NodeTag::T_Const) {
                    let c = node as *mut pg_sys::Const;
                    return Some(Value::Const(if (*c).constisnull {
                        Scalar::Null
                    } else {
                        Scalar::Int((*c).constvalue.value() as i64)
                    }));
                }
                quals.params.push(node);
                Some(Value::Param(quals.params.len() - 1))
            };
            let count = value((*q).limitCount);
            let offset = if (*q).limitOffset.is_null() {
                None
            } else {
                value((*q).limitOffset)
            };
            count.map(|count| LimitSpec { count, offset })
        }
    } else {
        None
    };
    let plan = ScanPlan {
        columns,
        filter: filter::and_all(pushed),
        limit,
        order,
        ..ScanPlan::of(&state.def)
    };
    // SAFETY: all lists are valid; local quals are plain clauses (not
    // RestrictInfos), as make_foreignscan expects.
    unsafe {
        pg_sys::make_foreignscan(
            tlist,
            local.into_pg(),
            relid,
            param_list(quals.params),
            json_private(&plan),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            outer_plan,
        )
    }
}

impl ScanPlan {
    /// A plan that reads every row of a table and no column.
    fn of(def: &TableDef) -> ScanPlan {
        ScanPlan {
            server: def.server.name.clone(),
            uri: def.server.uri.clone(),
            rel_name: def.rel_name.clone(),
            type_name: def.type_name.clone(),
            read: def.read.clone(),
            columns: Vec::new(),
            filter: None,
            limit: None,
            order: Vec::new(),
            aggregate: None,
        }
    }
}

fn param_list(params: Vec<*mut pg_sys::Node>) -> *mut pg_sys::List {
    let mut exprs = PgList::<pg_sys::Node>::new();
    for p in params {
        exprs.push(p);
    }
    exprs.into_pg()
}

/// The ForeignScan of a grouped relation: no scanned relation
/// (`scanrelid` 0), the groups and aggregates as its scan tuple
/// (`fdw_scan_tlist`), every restriction of the input pushed.
///
/// # Safety
/// `upper` was built for this planning cycle; `tlist` is the path's
/// target list.
unsafe fn aggregate_plan(
    upper: &crate::upper::UpperState,
    tlist: *mut pg_sys::List,
    outer_plan: *mut pg_sys::Plan,
) -> *mut pg_sys::ForeignScan {
    let input = upper.input;
    let state = rel_state(input);
    // SAFETY: input is the grouped relation's valid base relation.
    let relid = unsafe { (*input).relid };
    let mut quals = Quals::new(relid, &state.def.columns);
    let pushed = state
        .remote
        .iter()
        // SAFETY: each is a valid RestrictInfo of the input relation.
        .map(|r| quals.translate(unsafe { (**r).clause.cast() }))
        .collect();
    let plan = ScanPlan {
        filter: filter::and_all(pushed),
        aggregate: Some(upper.plan.clone()),
        ..ScanPlan::of(&state.def)
    };
    // SAFETY: all lists are valid planner lists.
    unsafe {
        pg_sys::make_foreignscan(
            tlist,
            std::ptr::null_mut(),
            0,
            param_list(quals.params),
            json_private(&plan),
            upper.tlist,
            std::ptr::null_mut(),
            outer_plan,
        )
    }
}
