//! Executing a foreign scan: BeginForeignScan, IterateForeignScan,
//! ReScanForeignScan, EndForeignScan and ExplainForeignScan.
//!
//! The scan's Rust state is leaked into the executor's query memory context
//! with a reset callback, so an ERROR anywhere in the query frees it (the
//! Lance stream included). Rows are produced batch by batch: only the
//! current Arrow batch is held, and each row's Datums live in the
//! per-tuple memory context, so memory does not grow with the row count.
//!
//! Read your writes: when the transaction has written the table, the scan
//! reads the committed rows minus those it replaced or deleted, plus its
//! staged rows (filtered and ordered the same way) and its spilled rows.
//! With a pushed ORDER BY the sources are merged by their order keys.

use std::ffi::CString;

use std::collections::HashSet;

use futures::StreamExt;
use omnigraph_engine::Snapshot;
use omnigraph_engine::deps::arrow_array::cast::AsArray;
use omnigraph_engine::deps::arrow_array::{ArrayRef, RecordBatch};
use omnigraph_engine::deps::lance::Dataset;
use omnigraph_engine::deps::lance::dataset::scanner::{ColumnOrdering, DatasetRecordBatchStream};
use omnigraph_engine::deps::lance::deps::datafusion::arrow::compute::SortOptions;
use omnigraph_engine::deps::lance::deps::datafusion::arrow::row as arrow_row;
use omnigraph_engine::deps::lance::deps::datafusion::logical_expr::Expr as DfExpr;
use omnigraph_sql::filter::{self, Scalar, Value};
use omnigraph_sql::staged::{self, SortKey};
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::{PgList, PgMemoryContexts, PgSqlErrorCode};

use crate::datum::{ColumnReader, batch_readers, fill_row};
use crate::error::OrReport;
use crate::graphs;
use crate::pg::raise;
use crate::plan::{ScanPlan, scan_plan};
use crate::quals;
use crate::runtime::block_on;
use crate::txn;

/// Where a source's rows come from.
enum Rows {
    /// A Lance scan: the committed rows, or the transaction's spilled rows.
    Lance(DatasetRecordBatchStream),
    /// The transaction's staged rows, already filtered and ordered.
    Memory(std::vec::IntoIter<RecordBatch>),
}

/// One input of a scan. Without writes in this transaction a scan has one
/// source, the committed rows; with them it also reads the staged rows,
/// and skips the committed rows the transaction replaced or deleted.
struct Source {
    rows: Rows,
    batch: Option<(RecordBatch, Vec<(usize, ColumnReader)>)>,
    /// Order keys of `batch` in a byte-comparable form (ordered merges only).
    keys: Option<arrow_row::Rows>,
    row: usize,
    /// Position of `id` in the batch when rows must be checked against `hidden`.
    id_column: Option<usize>,
    done: bool,
}

struct ScanState {
    plan: ScanPlan,
    snapshot: Snapshot,
    /// Runtime values of the plan's parameters (`fdw_exprs`).
    params: Vec<Scalar>,
    sources: Option<Vec<Source>>,
    /// Committed ids this transaction replaced or deleted.
    hidden: HashSet<String>,
    /// Positions of the order keys in each batch, when sources are merged in order.
    order_columns: Vec<usize>,
    converter: Option<arrow_row::RowConverter>,
    /// The source being read when sources are concatenated.
    current: usize,
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
        sources: None,
        hidden: HashSet::new(),
        order_columns: Vec::new(),
        converter: None,
        current: 0,
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

fn internal(ctx: &str, e: impl std::fmt::Display) -> ! {
    raise(
        PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
        format!("{ctx}: {e}"),
        None,
        None,
    )
}

/// A Lance scan of `ds` with the plan's projection, filter, order and limit.
async fn lance_rows(
    ds: Dataset,
    columns: Vec<String>,
    filter: Option<DfExpr>,
    order: Vec<ColumnOrdering>,
    limit: Option<u64>,
) -> omnigraph_engine::Result<DatasetRecordBatchStream> {
    let mut scan = omnigraph_engine::scanner(&ds);
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
}

fn start_sources(st: &mut ScanState) {
    let ctx = context(&st.plan);
    let filter = match &st.plan.filter {
        Some(f) => {
            let schema = omnigraph_engine::value::table_schema(
                st.snapshot.graph().catalog(),
                &st.plan.type_name,
            )
            .ok();
            Some(
                filter::to_datafusion(f, &st.params, schema.as_deref())
                    .unwrap_or_else(|e| internal(&ctx, e)),
            )
        }
        None => None,
    };
    st.remaining = limit_rows(&st.plan, &st.params);
    let mut columns: Vec<String> = st
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
    // The transaction's own writes to this table, if any.
    let view = match st.plan.read.branch() {
        Some(b) => txn::view(&st.plan.uri, &b, &st.plan.type_name, &st.snapshot),
        None => None,
    };
    let type_name = st.plan.type_name.clone();
    let limit = st.remaining;
    let Some(view) = view else {
        let snapshot = st.snapshot.clone();
        let rows = crate::runtime::run(&ctx, async move {
            lance_rows(
                snapshot.dataset(&type_name).await?,
                columns,
                filter,
                order,
                limit,
            )
            .await
        });
        st.sources = Some(vec![source(Rows::Lance(rows), None)]);
        return;
    };
    // Merging needs the order keys in every batch, and the id to skip
    // committed rows the transaction replaced.
    let extra = |name: &str, columns: &mut Vec<String>| -> usize {
        match columns.iter().position(|c| c == name) {
            Some(i) => i,
            None => {
                columns.push(name.to_string());
                columns.len() - 1
            }
        }
    };
    st.order_columns = st
        .plan
        .order
        .iter()
        .map(|o| extra(&o.column, &mut columns))
        .collect();
    let id_column = (!view.hidden.is_empty()).then(|| extra("id", &mut columns));
    st.hidden = view.hidden;
    let mut sources = Vec::new();
    if !view.hide_all {
        let snapshot = st.snapshot.clone();
        let (cols, f, o) = (columns.clone(), filter.clone(), order.clone());
        // A limit on committed rows is only safe when none are skipped.
        let base_limit = if id_column.is_some() { None } else { limit };
        let rows = crate::runtime::run(&ctx, async move {
            lance_rows(snapshot.dataset(&type_name).await?, cols, f, o, base_limit).await
        });
        sources.push(source(Rows::Lance(rows), id_column));
    }
    if let Some(batch) = &view.rows {
        let keys: Vec<SortKey> = st
            .plan
            .order
            .iter()
            .map(|o| SortKey {
                column: o.column.clone(),
                ascending: o.ascending,
                nulls_first: o.nulls_first,
            })
            .collect();
        let selected = staged::select(batch, filter.as_ref(), &columns, &keys)
            .unwrap_or_else(|e| internal(&ctx, e));
        sources.push(source(Rows::Memory(vec![selected].into_iter()), None));
    }
    if let Some(spill) = view.spill {
        let rows = crate::runtime::run(&ctx, lance_rows(spill, columns, filter, order, limit));
        sources.push(source(Rows::Lance(rows), None));
    }
    st.sources = Some(sources);
}

fn source(rows: Rows, id_column: Option<usize>) -> Source {
    Source {
        rows,
        batch: None,
        keys: None,
        row: 0,
        id_column,
        done: false,
    }
}

/// Make `src` point at a row; false when it has no more.
fn fill_source(
    src: &mut Source,
    snapshot: &Snapshot,
    plan: &ScanPlan,
    order_columns: &[usize],
    converter: &mut Option<arrow_row::RowConverter>,
) -> bool {
    let ctx = context(plan);
    loop {
        if src.done {
            return false;
        }
        if let Some((b, _)) = &src.batch
            && src.row < b.num_rows()
        {
            return true;
        }
        let next = match &mut src.rows {
            Rows::Lance(stream) => match block_on(stream.next()) {
                None => None,
                Some(Ok(b)) => Some(b),
                Some(Err(e)) => {
                    let e = crate::runtime::block_on_uninterruptible(
                        snapshot.read_error(&plan.type_name, e.into()),
                    );
                    crate::error::report(e, &ctx)
                }
            },
            Rows::Memory(it) => it.next(),
        };
        let Some(batch) = next else {
            src.done = true;
            src.batch = None;
            return false;
        };
        if batch.num_rows() == 0 {
            continue;
        }
        if !order_columns.is_empty() {
            let keys: Vec<ArrayRef> = order_columns
                .iter()
                .map(|i| batch.column(*i).clone())
                .collect();
            if converter.is_none() {
                let fields = plan
                    .order
                    .iter()
                    .zip(&keys)
                    .map(|(o, a)| {
                        arrow_row::SortField::new_with_options(
                            a.data_type().clone(),
                            SortOptions {
                                descending: !o.ascending,
                                nulls_first: o.nulls_first,
                            },
                        )
                    })
                    .collect();
                *converter = Some(
                    arrow_row::RowConverter::new(fields).unwrap_or_else(|e| internal(&ctx, e)),
                );
            }
            if let Some(c) = converter.as_ref() {
                src.keys = Some(
                    c.convert_columns(&keys)
                        .unwrap_or_else(|e| internal(&ctx, e)),
                );
            }
        }
        let readers = batch_readers(&batch, plan.columns.iter().map(|c| (c.attno, c.ty)));
        src.batch = Some((batch, readers));
        src.row = 0;
    }
}

/// The source holding the next row, or `None` at the end of the scan.
fn next_source(st: &mut ScanState) -> Option<usize> {
    let sources = st.sources.as_mut()?;
    if st.order_columns.is_empty() {
        while st.current < sources.len() {
            if fill_source(
                &mut sources[st.current],
                &st.snapshot,
                &st.plan,
                &[],
                &mut st.converter,
            ) {
                return Some(st.current);
            }
            st.current += 1;
        }
        return None;
    }
    // Ordered: the smallest current row of all sources.
    let mut best: Option<usize> = None;
    for i in 0..sources.len() {
        if !fill_source(
            &mut sources[i],
            &st.snapshot,
            &st.plan,
            &st.order_columns,
            &mut st.converter,
        ) {
            continue;
        }
        best = match best {
            None => Some(i),
            Some(b) => {
                fn key(s: &Source) -> Option<arrow_row::Row<'_>> {
                    s.keys.as_ref().map(|k| k.row(s.row))
                }
                if key(&sources[i]) < key(&sources[b]) {
                    Some(i)
                } else {
                    Some(b)
                }
            }
        };
    }
    best
}

/// Whether the current row of `src` is a committed row the transaction replaced.
fn is_hidden(src: &Source, hidden: &HashSet<String>) -> bool {
    let (Some(i), Some((batch, _))) = (src.id_column, &src.batch) else {
        return false;
    };
    let ids = batch.column(i).as_string::<i32>();
    hidden.contains(ids.value(src.row))
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
    if st.sources.is_none() {
        start_sources(st);
    }
    let i = loop {
        let Some(i) = next_source(st) else {
            st.done = true;
            return slot;
        };
        let Some(src) = st.sources.as_mut().and_then(|s| s.get_mut(i)) else {
            return slot;
        };
        if is_hidden(src, &st.hidden) {
            src.row += 1;
            continue;
        }
        break i;
    };
    let Some(src) = st.sources.as_mut().and_then(|s| s.get_mut(i)) else {
        return slot;
    };
    let Some((_, readers)) = &src.batch else {
        return slot;
    };
    // SAFETY: the slot's tts_values/tts_isnull hold natts entries; each
    // reader's index is a valid attribute position of this table.
    unsafe {
        let natts = (*(*slot).tts_tupleDescriptor).natts as usize;
        let values = std::slice::from_raw_parts_mut((*slot).tts_values, natts);
        let nulls = std::slice::from_raw_parts_mut((*slot).tts_isnull, natts);
        fill_row(readers, src.row, values, nulls);
        pg_sys::ExecStoreVirtualTuple(slot);
    }
    src.row += 1;
    if let Some(n) = st.remaining.as_mut() {
        *n -= 1;
    }
    slot
}

/// ReScanForeignScan: start over from the first row.
#[pg_guard]
pub unsafe extern "C-unwind" fn rescan_foreign_scan(node: *mut pg_sys::ForeignScanState) {
    if let Some(Some(st)) = state(node) {
        st.sources = None;
        st.converter = None;
        st.current = 0;
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
    match p.read.branch() {
        Some(b) => explain_text(es, "Omnigraph Branch", &b),
        None => explain_text(es, "Omnigraph Branch", "(pinned commit)"),
    }
    explain_text(es, "Omnigraph Commit", &st.snapshot.commit().id);
    if let Some(f) = &p.filter {
        explain_text(es, "Pushed Filter", &filter::display(f));
        // The indexes of the pinned table version that Lance answers the
        // filter from (rows written since the index was built are scanned).
        let indexes =
            crate::runtime::block_on(st.snapshot.indexes(&p.type_name)).or_report(&context(p));
        let answered = |column: &str, shape| {
            indexes
                .iter()
                .find(|i| i.column == column && i.kind.answers(shape))
                .map(|i| i.kind)
        };
        for (column, kind) in filter::index_use(f, &answered) {
            explain_text(
                es,
                "Omnigraph Index",
                &format!("{column} ({})", kind.as_str()),
            );
        }
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
