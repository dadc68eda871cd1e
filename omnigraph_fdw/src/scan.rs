//! Executing a foreign scan: BeginForeignScan, IterateForeignScan,
//! ReScanForeignScan, EndForeignScan and ExplainForeignScan.
//!
//! The scan's Rust state is leaked into the executor's query memory context
//! with a reset callback, so an ERROR anywhere in the query frees it (the
//! Lance stream included). Rows are produced batch by batch: only the
//! current Arrow batch is held, and each row's Datums live in the
//! per-tuple memory context, so memory does not grow with the row count.
//!
//! The rows come from the scan every frontend shares
//! ([`omnigraph_sql::scan`]): the pushed filter, order and limit, and read
//! your writes (the committed rows minus those the transaction replaced or
//! deleted, its staged and spilled rows, merged by a pushed ORDER BY).
//! This module holds the executor callbacks around it: parameters in,
//! batches to tuples out, EXPLAIN.

use std::ffi::CString;
use std::sync::Arc;

use omnigraph_engine::Snapshot;
use omnigraph_engine::deps::arrow_array::cast::AsArray;
use omnigraph_engine::deps::arrow_array::types::Int64Type;
use omnigraph_engine::deps::arrow_array::{Array, ArrayRef, Decimal128Array, RecordBatch};
use omnigraph_sql::filter::{Scalar, Value};
use omnigraph_sql::scan::aggregate::{AggColumn, AggregateError, aggregate};
use omnigraph_sql::scan::{Scan, ScanExplain, ScanSpec, SortKey};
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::{PgList, PgMemoryContexts, PgSqlErrorCode};

use crate::datum::{ColumnReader, batch_readers, fill_row};
use crate::error::{OrReport, report};
use crate::graphs;
use crate::pg::raise;
use crate::plan::{ScanPlan, scan_plan};
use crate::quals;
use crate::runtime::{Feed, block_on};
use crate::txn;
use crate::upper::{AggOutput, AggPlan};

struct ScanState {
    plan: ScanPlan,
    snapshot: Snapshot,
    /// What the shared scan reads (the plan with its parameters' values,
    /// set each time the scan starts).
    spec: ScanSpec,
    params: Vec<(*mut pg_sys::ExprState, pg_sys::Oid)>,
    /// The shared scan's batches; started at the first row (and again
    /// after a rescan).
    scan: Option<Batches>,
    /// The batch being returned, its column readers and the next row.
    batch: Option<(RecordBatch, Vec<(usize, ColumnReader)>)>,
    row: usize,
    done: bool,
    /// The groups of a pushed aggregation, computed at the first row.
    groups: Option<Groups>,
    /// Holds the current batch's text and bytea Datums; reset when the
    /// next batch is loaded (a child of the query context, freed with it).
    batch_context: pg_sys::MemoryContext,
}

/// The result rows of a pushed aggregation: one reader per returned
/// column, and the integer averages, divided in Postgres's numeric.
struct Groups {
    rows: usize,
    readers: Vec<(usize, ColumnReader)>,
    /// (slot index, exact sum as Decimal128, count)
    averages: Vec<(usize, ArrayRef, ArrayRef)>,
}

fn state<'a>(node: *mut pg_sys::ForeignScanState) -> Option<&'a mut Option<ScanState>> {
    // SAFETY: fdw_state is null or the pointer begin_foreign_scan leaked into
    // the query context, which outlives every callback of this scan.
    unsafe { ((*node).fdw_state as *mut Option<ScanState>).as_mut() }
}

pub(crate) fn context(plan: &ScanPlan) -> String {
    format!("foreign table {} (type {})", plan.rel_name, plan.type_name)
}

/// The executor states of `fdw_exprs` (the plan's parameters: `$n` of a
/// prepared statement, and the outer row's values of a parameterized
/// join), with their types.
pub(crate) fn param_states(
    node: *mut pg_sys::ForeignScanState,
    exprs: *mut pg_sys::List,
) -> Vec<(*mut pg_sys::ExprState, pg_sys::Oid)> {
    // SAFETY: exprs are the plan's parameter expressions; ExecInitExprList
    // builds their states under this scan, in the query context.
    unsafe {
        let states =
            PgList::<pg_sys::ExprState>::from_pg(pg_sys::ExecInitExprList(exprs, node.cast()));
        let exprs = PgList::<pg_sys::Node>::from_pg(exprs);
        states
            .iter_ptr()
            .zip(exprs.iter_ptr())
            .map(|(st, e)| (st, pg_sys::exprType(e)))
            .collect()
    }
}

/// The parameters' current values. Evaluated when a scan starts, not at
/// BeginForeignScan: a nestloop sets the outer row's values only before
/// it (re)scans this side.
pub(crate) fn eval_params(
    node: *mut pg_sys::ForeignScanState,
    states: &[(*mut pg_sys::ExprState, pg_sys::Oid)],
) -> Vec<Scalar> {
    // SAFETY: the states were built for this scan; evaluation reads the
    // executor's parameter values in the scan's expression context.
    unsafe {
        let econtext = (*node).ss.ps.ps_ExprContext;
        states
            .iter()
            .map(|(st, typ)| {
                let mut isnull = false;
                let d = pg_sys::ExecEvalExpr(*st, econtext, &mut isnull);
                quals::param_value(*typ, d, isnull)
            })
            .collect()
    }
}

/// The shared scan's request for this plan.
pub(crate) fn scan_spec(plan: &ScanPlan, params: Vec<Scalar>) -> ScanSpec {
    ScanSpec {
        type_name: plan.type_name.clone(),
        columns: match &plan.aggregate {
            Some(agg) => agg.spec.columns(),
            None => plan.columns.iter().map(|c| c.graph_name.clone()).collect(),
        },
        filter: plan.filter.clone(),
        limit: limit_rows(plan, &params),
        offset: None,
        params,
        order: plan
            .order
            .iter()
            .map(|o| SortKey {
                column: o.column.clone(),
                ascending: o.ascending,
                nulls_first: o.nulls_first,
            })
            .collect(),
    }
}

/// BeginForeignScan: rebuild the plan, pin the snapshot, evaluate parameters.
#[pg_guard]
pub unsafe extern "C-unwind" fn begin_foreign_scan(
    node: *mut pg_sys::ForeignScanState,
    _eflags: i32,
) {
    // SAFETY: node is the executor's valid scan state; its plan is our ForeignScan.
    let (private, exprs) = unsafe {
        let fs = (*node).ss.ps.plan as *mut pg_sys::ForeignScan;
        ((*fs).fdw_private, (*fs).fdw_exprs)
    };
    let plan = scan_plan(private);
    // Also for EXPLAIN: it shows the commit the scan reads.
    let snapshot = graphs::snapshot(&plan.server, &plan.uri, &plan.read.to_ref());
    let st = ScanState {
        params: param_states(node, exprs),
        // Without parameter values until the scan starts (plain EXPLAIN
        // never starts it).
        spec: scan_spec(&plan, Vec::new()),
        plan,
        snapshot,
        scan: None,
        batch: None,
        row: 0,
        done: false,
        groups: None,
        // SAFETY: CurrentMemoryContext is the query context during
        // ExecInitNode; the new context is its child and is deleted with it.
        batch_context: unsafe {
            pg_sys::AllocSetContextCreateInternal(
                pg_sys::CurrentMemoryContext,
                c"omnigraph scan batch".as_ptr(),
                pg_sys::ALLOCSET_DEFAULT_MINSIZE as usize,
                pg_sys::ALLOCSET_DEFAULT_INITSIZE as usize,
                pg_sys::ALLOCSET_DEFAULT_MAXSIZE as usize,
            )
        },
    };
    // SAFETY: CurrentMemoryContext is the query context during ExecInitNode;
    // the state is dropped when that context is reset or deleted, ERROR included.
    unsafe {
        let ptr = PgMemoryContexts::CurrentMemoryContext.leak_and_drop_on_delete(Some(st));
        (*node).fdw_state = ptr.cast();
    }
}

fn limit_rows(plan: &ScanPlan, params: &[Scalar]) -> Option<u64> {
    let spec = plan.limit.as_ref()?;
    let value = |v: &Value| -> Option<i64> {
        match v {
            Value::Const(Scalar::Int(i)) => Some(*i),
            Value::Param(i) => match params.get(*i) {
                Some(Scalar::Int(n)) => Some(*n),
                _ => None,
            },
            _ => None,
        }
    };
    // LIMIT NULL means no limit; a NULL offset counts as 0.
    let count = value(&spec.count)?;
    let offset = spec.offset.as_ref().and_then(value).unwrap_or(0);
    Some(count.max(0).saturating_add(offset.max(0)) as u64)
}

/// The transaction's own writes to the scanned table, when it made any.
pub(crate) fn own_writes(
    plan: &ScanPlan,
    snapshot: &Snapshot,
) -> Option<Arc<omnigraph_engine::StagedView>> {
    let branch = plan.read.branch()?;
    txn::view(&plan.uri, &branch, &plan.type_name, snapshot).map(Arc::new)
}

/// Batches a scan reads ahead of the one being converted: Lance decodes
/// the next batch on the runtime while Postgres consumes this one.
const READ_AHEAD: usize = 2;

/// Where a started scan's batches come from.
enum Batches {
    /// Read ahead by a task on the runtime.
    Feed(Feed<omnigraph_engine::Result<RecordBatch>>),
    /// Already in memory (a short range, an index lookup): handed over on
    /// the backend thread, with no task to start or wait for.
    Read(Box<Scan>),
}

impl Batches {
    fn next(&mut self) -> Option<omnigraph_engine::Result<RecordBatch>> {
        match self {
            Batches::Feed(feed) => feed.next(),
            Batches::Read(scan) => block_on(scan.next_batch()).transpose(),
        }
    }
}

/// Start the shared scan (the committed rows, and the transaction's own
/// writes to this table when it made any); a scan with reads still to do
/// reads its batches ahead.
fn start(node: *mut pg_sys::ForeignScanState, st: &mut ScanState) -> Batches {
    st.spec = scan_spec(&st.plan, eval_params(node, &st.params));
    let view = own_writes(&st.plan, &st.snapshot);
    let mut scan =
        crate::runtime::run(&context(&st.plan), Scan::open(&st.snapshot, view, &st.spec));
    if scan.is_read() {
        return Batches::Read(Box::new(scan));
    }
    Batches::Feed(Feed::start(READ_AHEAD, |tx| async move {
        loop {
            let (item, last) = match scan.next_batch().await {
                Ok(Some(batch)) => (Ok(batch), false),
                Ok(None) => return,
                Err(e) => (Err(e), true),
            };
            if tx.send(item).await.is_err() || last {
                return;
            }
        }
    }))
}

/// Compute a pushed aggregation over the rows the scan would read.
fn compute_groups(st: &ScanState, agg: &AggPlan) -> Groups {
    let view = own_writes(&st.plan, &st.snapshot);
    let ctx = context(&st.plan);
    let result = match block_on(aggregate(&st.snapshot, view, &st.spec, &agg.spec)) {
        Ok(r) => r,
        Err(AggregateError::Read(e)) => report(e, &ctx),
        Err(AggregateError::OutOfRange(msg)) => raise(
            PgSqlErrorCode::ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE,
            msg,
            None,
            None,
        ),
        Err(e) => raise(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            format!("{ctx}: {e}"),
            None,
            None,
        ),
    };
    let mut readers = Vec::new();
    let mut averages = Vec::new();
    for (slot, out) in agg.outputs.iter().enumerate() {
        match *out {
            AggOutput::Group { index, ty } => {
                if let Some(a) = result.groups.get(index) {
                    readers.push((slot, ColumnReader::new(a.clone(), ty)));
                }
            }
            AggOutput::Aggregate { index, ty } => match result.aggregates.get(index) {
                Some(AggColumn::Values(a)) => {
                    readers.push((slot, ColumnReader::new(a.clone(), ty)))
                }
                Some(AggColumn::Quotient { sum, count }) => {
                    averages.push((slot, sum.clone(), count.clone()));
                }
                None => {}
            },
        }
    }
    Groups {
        rows: result.rows,
        readers,
        averages,
    }
}

/// `sum / count` in Postgres's numeric division (the scale `avg` gives).
fn numeric_average(sum: &ArrayRef, count: &ArrayRef, row: usize) -> Option<pg_sys::Datum> {
    use pgrx::IntoDatum;
    let sum = sum.as_any().downcast_ref::<Decimal128Array>()?;
    if sum.is_null(row) {
        return None;
    }
    let n = count.as_primitive::<Int64Type>().value(row);
    let total = pgrx::AnyNumeric::from(sum.value(row)).into_datum()?;
    // SAFETY: both are valid numerics in the current (per-tuple) context;
    // the division by a positive count cannot fail.
    unsafe {
        let mut failed = false;
        let q = pg_sys::numeric_div_opt_error(
            total.cast_mut_ptr(),
            pg_sys::int64_to_numeric(n),
            &mut failed,
        );
        (!failed).then(|| pg_sys::Datum::from(q))
    }
}

/// The next group of a pushed aggregation into the slot.
///
/// # Safety
/// `slot` is the scan slot, with one attribute per `fdw_scan_tlist` entry.
unsafe fn next_group(
    node: *mut pg_sys::ForeignScanState,
    st: &mut ScanState,
    slot: *mut pg_sys::TupleTableSlot,
) {
    if st.groups.is_none() {
        let spec = scan_spec(&st.plan, eval_params(node, &st.params));
        st.spec = spec;
        let Some(agg) = &st.plan.aggregate else {
            return;
        };
        st.groups = Some(compute_groups(st, agg));
    }
    let Some(g) = &st.groups else { return };
    if st.row >= g.rows {
        return;
    }
    // SAFETY: per the contract, tts_values/tts_isnull hold natts entries
    // and every reader's index is below natts.
    unsafe {
        let natts = (*(*slot).tts_tupleDescriptor).natts as usize;
        let values = std::slice::from_raw_parts_mut((*slot).tts_values, natts);
        let nulls = std::slice::from_raw_parts_mut((*slot).tts_isnull, natts);
        fill_row(&g.readers, st.row, values, nulls);
        for (idx, sum, count) in &g.averages {
            if let Some(d) = numeric_average(sum, count, st.row) {
                values[*idx] = d;
                nulls[*idx] = false;
            }
        }
        pg_sys::ExecStoreVirtualTuple(slot);
    }
    st.row += 1;
}

/// The scan slot of a foreign scan, emptied.
///
/// # Safety
/// `node` is the executor's valid scan state.
pub(crate) unsafe fn cleared_slot(
    node: *mut pg_sys::ForeignScanState,
) -> *mut pg_sys::TupleTableSlot {
    // SAFETY: per the contract; the scan slot is a virtual slot of the
    // table's tuple descriptor (or of fdw_scan_tlist), valid to clear.
    unsafe {
        let slot = (*node).ss.ss_ScanTupleSlot;
        pg_sys::ExecClearTuple(slot);
        slot
    }
}

/// IterateForeignScan: the next row into the scan slot (empty at the end).
#[pg_guard]
pub unsafe extern "C-unwind" fn iterate_foreign_scan(
    node: *mut pg_sys::ForeignScanState,
) -> *mut pg_sys::TupleTableSlot {
    // SAFETY: node is the executor's scan state.
    let slot = unsafe { cleared_slot(node) };
    let Some(Some(st)) = state(node) else {
        return slot;
    };
    if st.plan.aggregate.is_some() {
        // SAFETY: an aggregating scan's slot is built from fdw_scan_tlist.
        unsafe { next_group(node, st, slot) };
        return slot;
    }
    loop {
        if let Some((batch, readers)) = &st.batch
            && st.row < batch.num_rows()
        {
            // SAFETY: the slot's tts_values/tts_isnull hold natts entries; each
            // reader's index is a valid attribute position of this table.
            unsafe {
                let natts = (*(*slot).tts_tupleDescriptor).natts as usize;
                let values = std::slice::from_raw_parts_mut((*slot).tts_values, natts);
                let nulls = std::slice::from_raw_parts_mut((*slot).tts_isnull, natts);
                fill_row(readers, st.row, values, nulls);
                pg_sys::ExecStoreVirtualTuple(slot);
            }
            st.row += 1;
            return slot;
        }
        st.batch = None;
        if st.done {
            return slot;
        }
        if st.scan.is_none() {
            st.scan = Some(start(node, st));
        }
        let Some(batches) = st.scan.as_mut() else {
            return slot;
        };
        match batches.next() {
            Some(Ok(batch)) => {
                // SAFETY: the slot was cleared above and the previous
                // batch dropped, so no Datum of it is in use; the context
                // lives until the query ends and is reset only here.
                let readers = unsafe {
                    pg_sys::MemoryContextReset(st.batch_context);
                    batch_readers(
                        &batch,
                        st.plan.columns.iter().map(|c| (c.attno, c.ty)),
                        Some(st.batch_context),
                    )
                };
                st.batch = Some((batch, readers));
                st.row = 0;
            }
            None => st.done = true,
            Some(Err(e)) => report(e, &context(&st.plan)),
        }
    }
}

/// ReScanForeignScan: start over from the first row.
#[pg_guard]
pub unsafe extern "C-unwind" fn rescan_foreign_scan(node: *mut pg_sys::ForeignScanState) {
    if let Some(Some(st)) = state(node) {
        // The next row starts the scan again, with the parameters' values
        // then (a nestloop sets the outer row's before rescanning).
        st.scan = None;
        st.batch = None;
        st.done = false;
        st.row = 0;
        // Groups are kept unless a parameter changed.
        // SAFETY: node is the executor's valid scan state.
        if !unsafe { (*node).ss.ps.chgParam }.is_null() {
            st.groups = None;
        }
    }
}

/// EndForeignScan: drop the stream now (the context callback is the backstop).
#[pg_guard]
pub unsafe extern "C-unwind" fn end_foreign_scan(node: *mut pg_sys::ForeignScanState) {
    if let Some(st) = state(node) {
        *st = None;
    }
}

pub(crate) fn explain_text(es: *mut pg_sys::ExplainState, label: &str, value: &str) {
    let l = CString::new(label).unwrap_or_default();
    let v = CString::new(value.replace('\0', "")).unwrap_or_default();
    // SAFETY: es is the executor's ExplainState; both strings outlive the call
    // (ExplainPropertyText copies them into its output buffer).
    unsafe { pg_sys::ExplainPropertyText(l.as_ptr(), v.as_ptr(), es) };
}

/// ExplainForeignScan: what the scan reads and what Lance does for it.
#[pg_guard]
pub unsafe extern "C-unwind" fn explain_foreign_scan(
    node: *mut pg_sys::ForeignScanState,
    es: *mut pg_sys::ExplainState,
) {
    let Some(Some(st)) = state(node) else { return };
    let p = &st.plan;
    if let Some(agg) = &p.aggregate {
        explain_text(es, "Pushed Aggregate", &agg.spec.describe());
    }
    explain_scan(es, p, &st.snapshot, &st.spec);
}

/// What a scan reads, for EXPLAIN: the facts of the shared scan (pushed
/// filter, index, rows) and a pushed limit.
pub(crate) fn explain_scan(
    es: *mut pg_sys::ExplainState,
    p: &ScanPlan,
    snapshot: &Snapshot,
    spec: &ScanSpec,
) {
    let facts = block_on(ScanExplain::new(snapshot, spec)).or_report(&context(p));
    for (label, value) in facts.lines() {
        explain_text(es, label, &value);
    }
    if let Some(l) = &p.limit {
        let show = |v: &Value| match v {
            Value::Const(Scalar::Int(i)) => i.to_string(),
            Value::Const(_) => "ALL".to_string(),
            Value::Param(i) => format!("${}", i + 1),
        };
        let text = match &l.offset {
            Some(o) => format!("{} + offset {}", show(&l.count), show(o)),
            None => show(&l.count),
        };
        explain_text(es, "Pushed Limit", &text);
    }
}
