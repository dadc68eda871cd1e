//! Publishing a transaction's spilled rows without writing them again: the
//! spill's data files become the table's.
//!
//! A spill is a local Lance dataset with the table's columns plus columns
//! of its own (the staging sequence number). At COMMIT its fragments can
//! join the table as they are: each data file is hard-linked into the
//! table's `data/` directory, fsynced there, and committed as a new
//! fragment whose field ids are the table's (matched by column path and
//! type). The spill's own columns stay in the files, as columns no field
//! names: Lance reads a data file's columns through the fragment's field
//! list, and a v2 file may hold columns beyond it (as after a dropped
//! column). A fragment that lost rows (a deletion file) or holds a file in
//! the legacy format is not adopted, nor is any fragment when the spill
//! and the table are not on one local filesystem: the caller streams
//! those fragments' rows instead.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_schema::DataType;
use lance::Dataset;
use lance::dataset::transaction::{Operation, Transaction};
use lance::datatypes::{Field, Schema};
use lance_table::format::{DataFile, Fragment};

use super::Storage;
use crate::error::Result;
use crate::spill::is_own_column;

/// Every field of a schema (children included) by its path, `a` or
/// `a.item`, with its id and type.
fn fields_by_path(schema: &Schema) -> HashMap<String, (i32, DataType)> {
    fn walk(prefix: &str, fields: &[Field], out: &mut HashMap<String, (i32, DataType)>) {
        for f in fields {
            let path = match prefix {
                "" => f.name.clone(),
                p => format!("{p}.{}", f.name),
            };
            out.insert(path.clone(), (f.id, f.data_type()));
            walk(&path, &f.children, out);
        }
    }
    let mut out = HashMap::new();
    walk("", &schema.fields, &mut out);
    out
}

/// The table's field id for each field id of the spill: every field of
/// either but the spill's own columns (sequence and line) has a field of
/// the same path and type in the other; `None` otherwise.
fn field_map(table: &Schema, spill: &Schema) -> Option<HashMap<i32, i32>> {
    let spilled = fields_by_path(spill);
    let mut map = HashMap::new();
    for (path, (id, ty)) in fields_by_path(table) {
        let (spill_id, spill_ty) = spilled.get(&path)?;
        if *spill_ty != ty {
            return None;
        }
        map.insert(*spill_id, id);
    }
    let own = spilled
        .keys()
        .filter(|path| is_own_column(path.split('.').next().unwrap_or(path)))
        .count();
    (map.len() + own == spilled.len()).then_some(map)
}

/// A spill fragment's metadata as a new fragment of the table, or `None`
/// when it cannot be adopted as it is.
fn adopted(f: &Fragment, ids: &HashMap<i32, i32>) -> Option<Fragment> {
    if f.deletion_file.is_some() || !f.overlays.is_empty() {
        return None;
    }
    let mut files = Vec::with_capacity(f.files.len());
    for file in &f.files {
        if file.file_major_version < 2 || file.base_id.is_some() {
            return None;
        }
        // Keep the table's fields, each at its column; the spill's own
        // columns lose their field and stay in the file unnamed.
        let (fields, columns): (Vec<i32>, Vec<i32>) = file
            .fields
            .iter()
            .zip(file.column_indices.iter())
            .filter_map(|(field, column)| ids.get(field).map(|id| (*id, *column)))
            .unzip();
        let version = file.file_version().ok()?;
        let size = file.file_size_bytes.get();
        files.push(DataFile::new(
            file.path.clone(),
            fields,
            columns,
            version,
            size,
            None,
        ));
    }
    Some(Fragment {
        // Fragment 0 is given the table's next id at commit.
        id: 0,
        files,
        overlays: Vec::new(),
        deletion_file: None,
        row_id_meta: None,
        physical_rows: f.physical_rows,
        last_updated_at_version_meta: None,
        created_at_version_meta: None,
    })
}

/// fsync each of `names` in `from` and hard-link it into `to`, then fsync
/// `to`. On an error the links made are removed.
fn link_files(from: &Path, to: &Path, names: &[String]) -> std::io::Result<()> {
    let mut made: Vec<PathBuf> = Vec::with_capacity(names.len());
    let result = (|| {
        if !to.exists() {
            std::fs::create_dir_all(to)?;
            if let Some(parent) = to.parent() {
                std::fs::File::open(parent)?.sync_all()?;
            }
        }
        for name in names {
            // Durable before it appears in the table (the spill never
            // synced its files), as every file a commit publishes.
            let source = from.join(name);
            std::fs::File::open(&source)?.sync_all()?;
            let target = to.join(name);
            std::fs::hard_link(&source, &target)?;
            made.push(target);
        }
        std::fs::File::open(to)?.sync_all()
    })();
    if result.is_err() {
        for m in &made {
            let _ = std::fs::remove_file(m);
        }
    }
    result
}

impl Storage {
    /// Append a spill dataset's rows to a table as one new version by
    /// adopting the spill's data files (see the module docs). Returns the
    /// table and the spill fragments it did not adopt (all of them when
    /// the spill cannot be adopted at all), whose rows the caller streams.
    pub async fn adopt_spill(
        &self,
        ds: Dataset,
        spill: &Dataset,
    ) -> Result<(Dataset, Vec<Fragment>)> {
        let all: Vec<Fragment> = spill
            .get_fragments()
            .iter()
            .map(|f| f.metadata().clone())
            .collect();
        let local = |uri: &str| {
            (!uri.contains("://"))
                .then(|| std::path::absolute(uri).ok())
                .flatten()
                .map(|p| p.join("data"))
        };
        let (Some(table_data), Some(spill_data)) = (local(ds.uri()), local(spill.uri())) else {
            return Ok((ds, all));
        };
        let same_format = ds.manifest().data_storage_format == spill.manifest().data_storage_format;
        let Some(ids) = field_map(ds.schema(), spill.schema()).filter(|_| same_format) else {
            return Ok((ds, all));
        };
        let mut fragments = Vec::new();
        let mut rest = Vec::new();
        for f in &all {
            match adopted(f, &ids) {
                Some(a) => fragments.push(a),
                None => rest.push(f.clone()),
            }
        }
        if fragments.is_empty() {
            return Ok((ds, rest));
        }
        let names: Vec<String> = fragments
            .iter()
            .flat_map(|f| f.files.iter().map(|file| file.path.clone()))
            .collect();
        // Another filesystem (no hard links) or any other failure to link:
        // nothing was adopted.
        if link_files(&spill_data, &table_data, &names).is_err() {
            return Ok((ds, all));
        }
        let append = Operation::Append { fragments };
        let transaction = Transaction::new(ds.manifest().version, append, None);
        match lance::dataset::CommitBuilder::new(Arc::new(ds))
            .execute(transaction)
            .await
        {
            Ok(ds) => Ok((ds, rest)),
            Err(e) => {
                // Nothing names the links: take them back (cleanup would).
                for name in &names {
                    let _ = std::fs::remove_file(table_data.join(name));
                }
                Err(e.into())
            }
        }
    }
}
