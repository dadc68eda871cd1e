//! ANALYZE on a foreign table: a uniform sample of rows (Lance `take` by row
//! offset, so only the sampled rows are read), from which Postgres computes
//! the column statistics the planner uses for selectivity and join sizes.

use omnigraph_sql::stats::sample_offsets;
use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::datum::{batch_readers, fill_row};
use crate::graphs;
use crate::runtime::run;
use crate::tabledef::table_def;

/// AnalyzeForeignTable: ANALYZE is supported; rows come from [`acquire_sample_rows`].
#[pg_guard]
pub unsafe extern "C-unwind" fn analyze_foreign_table(
    _relation: pg_sys::Relation,
    func: *mut pg_sys::AcquireSampleRowsFunc,
    totalpages: *mut pg_sys::BlockNumber,
) -> bool {
    // SAFETY: both out-parameters point at the caller's locals.
    unsafe {
        *func = Some(acquire_sample_rows);
        // Lance has no pages; ANALYZE only reports this number.
        *totalpages = 1;
    }
    true
}

#[pg_guard]
unsafe extern "C-unwind" fn acquire_sample_rows(
    relation: pg_sys::Relation,
    _elevel: i32,
    rows: *mut pg_sys::HeapTuple,
    targrows: i32,
    totalrows: *mut f64,
    totaldeadrows: *mut f64,
) -> i32 {
    // SAFETY: relation is the open relation ANALYZE is working on.
    let (relid, tupdesc) = unsafe { ((*relation).rd_id, (*relation).rd_att) };
    let def = table_def(relid);
    let ctx = format!("ANALYZE of foreign table {}", def.rel_name);
    let snapshot = graphs::snapshot(&def.server.name, &def.server.uri, &def.read.to_ref());
    let type_name = def.type_name.clone();
    let columns: Vec<String> = def.columns.iter().map(|c| c.graph_name.clone()).collect();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    let (total, batch) = run(&ctx, async move {
        let ds = snapshot.dataset(&type_name).await?;
        let total = ds.count_rows(None).await? as u64;
        let offsets = sample_offsets(total, targrows.max(0) as u64, seed);
        let projection = ds.schema().project(&columns)?;
        let batch = if offsets.is_empty() {
            None
        } else {
            Some(ds.take(&offsets, projection).await?)
        };
        Ok((total, batch))
    });
    // SAFETY: out-parameters of the caller.
    unsafe {
        *totalrows = total as f64;
        *totaldeadrows = 0.0;
    }
    let Some(batch) = batch else { return 0 };
    // SAFETY: no batch context: values are allocated per row as read.
    let readers =
        unsafe { batch_readers(&batch, def.columns.iter().map(|c| (c.attno, c.ty)), None) };
    // SAFETY: tupdesc is the relation's descriptor; natts bounds the arrays.
    let natts = unsafe { (*tupdesc).natts } as usize;
    let mut values = vec![pg_sys::Datum::from(0usize); natts];
    let mut nulls = vec![true; natts];
    let n = batch.num_rows().min(targrows.max(0) as usize);
    for row in 0..n {
        fill_row(&readers, row, &mut values, &mut nulls);
        // SAFETY: values/nulls have natts entries matching tupdesc; the tuple
        // is palloc'd in ANALYZE's memory context, which owns `rows`.
        unsafe {
            *rows.add(row) =
                pg_sys::heap_form_tuple(tupdesc, values.as_mut_ptr(), nulls.as_mut_ptr())
        };
    }
    n as i32
}
