//! Executing a foreign scan: BeginForeignScan, IterateForeignScan,
//! ReScanForeignScan, EndForeignScan and ExplainForeignScan.
//!
//! The scan's Rust state is leaked into the executor's query memory context
//! with a reset callback, so an ERROR anywhere in the query frees it (the
//! Lance stream included). Rows are produced batch by batch: only the
//! current Arrow batch is held, and each row's Datums live in the
//! per-tuple memory context, so memory does not grow with the row count.

use std::ffi::CString;

use futures::StreamExt;
use omnigraph_engine::Snapshot;
use omnigraph_engine::deps::arrow_array::RecordBatch;
use omnigraph_engine::deps::lance::dataset::scanner::{ColumnOrdering, DatasetRecordBatchStream};
use omnigraph_sql::filter::{self, Scalar, Value};
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::{PgList, PgMemoryContexts, PgSqlErrorCode};

use crate::datum::{ColumnReader, batch_readers, fill_row};
use crate::graphs;
use crate::pg::raise;
use crate::plan::{Read, ScanPlan, scan_plan};
use crate::quals;
use crate::runtime::block_on;

struct ScanState {
    plan: ScanPlan,
    snapshot: Snapshot,
    /// Runtime values of the plan's parameters (`fdw_exprs`).
    params: Vec<Scalar>,
    stream: Option<DatasetRecordBatchStream>,
    batch: Option<(RecordBatch, Vec<(usize, ColumnReader)>)>,
    row: usize,
    /// Rows still allowed by a pushed LIMIT.
    remaining: Option<u64>,
    done: bool,
}

fn state<'a>(node: *mut pg_sys::ForeignScanState) -> Option<&'a mut Option<ScanState>> {
    // SAFETY: fdw_state is null or the pointer begin_foreign_scan leaked into
    // the query context, which outlives every callback of this scan.
    unsafe { ((*node).fdw_state as *mut Option<ScanState>).as_mut() }
}

fn context(plan: &ScanPlan) -> String {
    format!("foreign table {} (type {})", plan.rel_name, plan.type_name)
}

/// Evaluate `fdw_exprs` (parameters) in the scan's expression context.
fn eval_params(node: *mut pg_sys::ForeignScanState, exprs: *mut pg_sys::List) -> Vec<Scalar> {
    let mut out = Vec::new();
    // SAFETY: exprs are the plan's Param nodes; ExecInitExprList builds their
    // states under this scan; evaluation reads the executor's parameter list.
    unsafe {
        let states =
            PgList::<pg_sys::ExprState>::from_pg(pg_sys::ExecInitExprList(exprs, node.cast()));
        let econtext = (*node).ss.ps.ps_ExprContext;
        for (i, st) in states.iter_ptr().enumerate() {
            let expr = PgList::<pg_sys::Node>::from_pg(exprs).get_ptr(i);
            let typ = expr
                .map(|e| pg_sys::exprType(e))
                .unwrap_or(pg_sys::InvalidOid);
            let mut isnull = false;
            let d = pg_sys::ExecEvalExpr(st, econtext, &mut isnull);
            out.push(quals::scalar(typ, d, isnull).unwrap_or(Scalar::Null));
        }
    }
    out
}

/// BeginForeignScan: rebuild the plan, pin the snapshot, evaluate parameters.
#[pg_guard]
pub unsafe extern "C-unwind" fn begin_foreign_scan(
    node: *mut pg_sys::ForeignScanState,
    eflags: i32,
) {
    // SAFETY: node is the executor's valid scan state; its plan is our ForeignScan.
    let (private, exprs) = unsafe {
        let fs = (*node).ss.ps.plan as *mut pg_sys::ForeignScan;
        ((*fs).fdw_private, (*fs).fdw_exprs)
    };
    let plan = scan_plan(private);
    // Also for EXPLAIN: it shows the commit the scan reads.
    let snapshot = graphs::snapshot(&plan.server, &plan.uri, &plan.read.to_ref());
    // Plain EXPLAIN starts the executor without parameter values.
    let explain_only = eflags & pg_sys::EXEC_FLAG_EXPLAIN_ONLY as i32 != 0;
    let params = if explain_only {
        Vec::new()
    } else {
        eval_params(node, exprs)
    };
    let st = ScanState {
        plan,
        snapshot,
        params,
        stream: None,
        batch: None,
        row: 0,
        remaining: None,
        done: false,
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

fn start_stream(st: &mut ScanState) {
    let ctx = context(&st.plan);
    let filter = match &st.plan.filter {
        Some(f) => Some(filter::to_datafusion(f, &st.params).unwrap_or_else(|e| {
            raise(
                PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                format!("{ctx}: {e}"),
                None,
                None,
            )
        })),
        None => None,
    };
    st.remaining = limit_rows(&st.plan, &st.params);
    let columns: Vec<String> = st
        .plan
        .columns
        .iter()
        .map(|c| c.graph_name.clone())
        .collect();
    let order: Vec<ColumnOrdering> = st
        .plan
        .order
        .iter()
        .map(|o| ColumnOrdering {
            ascending: o.ascending,
            nulls_first: o.nulls_first,
            column_name: o.column.clone(),
        })
        .collect();
    let limit = st.remaining;
    let snapshot = st.snapshot.clone();
    let type_name = st.plan.type_name.clone();
    let stream = crate::runtime::run(&ctx, async move {
        let ds = snapshot.dataset(&type_name).await?;
        let mut scan = ds.scan();
        if columns.is_empty() {
            scan.empty_project()?;
        } else {
            scan.project(&columns)?;
        }
        if let Some(f) = filter {
            scan.filter_expr(f);
        }
        if !order.is_empty() {
            scan.order_by(Some(order))?;
        }
        if let Some(n) = limit {
            scan.limit(Some(n as i64), None)?;
        }
        scan.batch_size(8192);
        Ok(scan.try_into_stream().await?)
    });
    st.stream = Some(stream);
}

/// Load the next batch; false at the end of the scan.
fn next_batch(st: &mut ScanState) -> bool {
    let ctx = context(&st.plan);
    loop {
        let Some(stream) = st.stream.as_mut() else {
            return false;
        };
        let next = block_on(stream.next());
        let batch = match next {
            None => return false,
            Some(Ok(b)) => b,
            Some(Err(e)) => crate::error::report(e.into(), &ctx),
        };
        if batch.num_rows() == 0 {
            continue;
        }
        let readers = batch_readers(&batch, st.plan.columns.iter().map(|c| (c.attno, c.ty)));
        st.batch = Some((batch, readers));
        st.row = 0;
        return true;
    }
}

/// IterateForeignScan: the next row into the scan slot (empty at the end).
#[pg_guard]
pub unsafe extern "C-unwind" fn iterate_foreign_scan(
    node: *mut pg_sys::ForeignScanState,
) -> *mut pg_sys::TupleTableSlot {
    // SAFETY: node is valid; its scan slot is a virtual slot of the table's tuple descriptor.
    let slot = unsafe { (*node).ss.ss_ScanTupleSlot };
    // SAFETY: clearing a valid slot.
    unsafe { pg_sys::ExecClearTuple(slot) };
    let Some(Some(st)) = state(node) else {
        return slot;
    };
    if st.done || st.remaining == Some(0) {
        return slot;
    }
    if st.stream.is_none() {
        start_stream(st);
    }
    let need_batch = match &st.batch {
        Some((b, _)) => st.row >= b.num_rows(),
        None => true,
    };
    if need_batch && !next_batch(st) {
        st.done = true;
        return slot;
    }
    let Some((_, readers)) = &st.batch else {
        return slot;
    };
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
    if let Some(n) = st.remaining.as_mut() {
        *n -= 1;
    }
    slot
}

/// ReScanForeignScan: start over from the first row.
#[pg_guard]
pub unsafe extern "C-unwind" fn rescan_foreign_scan(node: *mut pg_sys::ForeignScanState) {
    if let Some(Some(st)) = state(node) {
        st.stream = None;
        st.batch = None;
        st.row = 0;
        st.done = false;
    }
}

/// EndForeignScan: drop the stream now (the context callback is the backstop).
#[pg_guard]
pub unsafe extern "C-unwind" fn end_foreign_scan(node: *mut pg_sys::ForeignScanState) {
    if let Some(st) = state(node) {
        *st = None;
    }
}

fn explain_text(es: *mut pg_sys::ExplainState, label: &str, value: &str) {
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
    explain_text(es, "Omnigraph Type", &p.type_name);
    match &p.read {
        Read::Branch(b) => explain_text(es, "Omnigraph Branch", b),
        Read::Commit(_) => explain_text(es, "Omnigraph Branch", "(pinned commit)"),
    }
    explain_text(es, "Omnigraph Commit", &st.snapshot.commit().id);
    if let Some(f) = &p.filter {
        explain_text(es, "Pushed Filter", &filter::display(f));
    }
    let cols: Vec<&str> = p.columns.iter().map(|c| c.graph_name.as_str()).collect();
    // count(*) and the like read no column data at all.
    explain_text(
        es,
        "Columns Read",
        &if cols.is_empty() {
            "(none)".to_string()
        } else {
            cols.join(", ")
        },
    );
    if !p.order.is_empty() {
        let keys: Vec<String> = p
            .order
            .iter()
            .map(|o| {
                format!(
                    "{} {} NULLS {}",
                    o.column,
                    if o.ascending { "ASC" } else { "DESC" },
                    if o.nulls_first { "FIRST" } else { "LAST" }
                )
            })
            .collect();
        explain_text(es, "Pushed Order", &keys.join(", "));
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
