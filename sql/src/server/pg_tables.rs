//! What `pg_catalog` says about the graph's tables.
//!
//! `datafusion-pg-catalog` builds `pg_class` and `pg_attribute` from the
//! DataFusion catalog, knowing nothing of the graph: every table says it
//! has no index and no trigger (psql's `\d` then asks for no keys), and
//! `pg_attribute` knows only scalar types, so a `DateTime` column
//! (`timestamptz`) and every list or vector (`text[]`, `float4[]`, ...)
//! come out as `text` (psql's `\d`, JDBC's `getColumns` and SQLAlchemy's
//! reflection would report text). Its `pg_catalog` schema is wrapped
//! here; for the graph's tables (schema `public`):
//! - `pg_class` says `relhasindex` and `relhastriggers` (the primary and
//!   foreign keys [`super::introspect`] reports);
//! - `pg_attribute` gives each column the type the wire protocol sends
//!   for it (arrow-pg's `into_pg_type`), with that type's length,
//!   alignment, storage and dimensions.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_pg::datatypes::into_pg_type;
use omnigraph_engine::deps::arrow_array::cast::AsArray;
use omnigraph_engine::deps::arrow_array::types::{Int16Type, Int32Type};
use omnigraph_engine::deps::arrow_array::{
    Array, ArrayRef, BooleanArray, Int16Array, Int32Array, RecordBatch, StringArray,
};
use omnigraph_engine::deps::arrow_schema::{DataType, SchemaRef};
use omnigraph_engine::deps::lance::deps::datafusion::arrow::compute::cast;
use omnigraph_engine::deps::lance::deps::datafusion::catalog::{
    CatalogProviderList, SchemaProvider, Session, TableProvider,
};
use omnigraph_engine::deps::lance::deps::datafusion::common::{DataFusionError, Result};
use omnigraph_engine::deps::lance::deps::datafusion::datasource::TableType;
use omnigraph_engine::deps::lance::deps::datafusion::datasource::memory::MemorySourceConfig;
use omnigraph_engine::deps::lance::deps::datafusion::logical_expr::Expr;
use omnigraph_engine::deps::lance::deps::datafusion::physical_plan::{ExecutionPlan, collect};
use pgwire::api::Type;

/// `pg_catalog` with [`GraphRows`] as `pg_class` and `pg_attribute`.
#[derive(Debug)]
pub(super) struct PgCatalog {
    pub(super) inner: Arc<dyn SchemaProvider>,
    pub(super) catalogs: Arc<dyn CatalogProviderList>,
    /// The catalog holding the graph's tables (in schema `public`).
    pub(super) catalog: String,
}

#[async_trait::async_trait]
impl SchemaProvider for PgCatalog {
    fn table_names(&self) -> Vec<String> {
        self.inner.table_names()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let table = self.inner.table(name).await?;
        let patch = match name {
            "pg_attribute" => Patch::Attributes,
            "pg_class" => Patch::Classes,
            _ => return Ok(table),
        };
        let (Some(emulated), Some(classes), Some(namespaces)) = (
            table,
            self.inner.table("pg_class").await?,
            self.inner.table("pg_namespace").await?,
        ) else {
            return Err(DataFusionError::Internal(
                "pg_catalog without pg_attribute, pg_class or pg_namespace".into(),
            ));
        };
        Ok(Some(Arc::new(GraphRows {
            emulated,
            patch,
            classes,
            namespaces,
            catalogs: self.catalogs.clone(),
            catalog: self.catalog.clone(),
        })))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner.table_exist(name)
    }
}

/// Which emulated table, and what is corrected in its graph rows.
#[derive(Debug, Clone, Copy)]
enum Patch {
    /// Column types.
    Attributes,
    /// `relhasindex` and `relhastriggers`.
    Classes,
}

/// An emulated catalog table with the graph's rows corrected.
#[derive(Debug)]
struct GraphRows {
    emulated: Arc<dyn TableProvider>,
    patch: Patch,
    classes: Arc<dyn TableProvider>,
    namespaces: Arc<dyn TableProvider>,
    catalogs: Arc<dyn CatalogProviderList>,
    catalog: String,
}

/// Every row of a table.
async fn rows(table: &Arc<dyn TableProvider>, state: &dyn Session) -> Result<Vec<RecordBatch>> {
    let plan = table.scan(state, None, &[], None).await?;
    collect(plan, state.task_ctx()).await
}

fn column<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef> {
    Ok(b.column(b.schema().index_of(name)?))
}

/// A column read as `to` (the emulation's oid columns are integers with
/// metadata; names are text).
fn column_as(b: &RecordBatch, name: &str, to: &DataType) -> Result<ArrayRef> {
    Ok(cast(column(b, name)?, to)?)
}

/// What `pg_attribute` says about a type: oid, length, by value,
/// alignment, storage, dimensions.
fn attribute_type(t: &DataType) -> Option<(i32, i16, bool, &'static str, &'static str, i32)> {
    let pg = into_pg_type(t).ok()?;
    let oid = i32::try_from(pg.oid()).ok()?;
    if matches!(pg, Type::TIMESTAMPTZ | Type::TIMESTAMP) {
        return Some((oid, 8, true, "d", "p", 0));
    }
    let (DataType::List(item) | DataType::LargeList(item) | DataType::FixedSizeList(item, _)) = t
    else {
        return None;
    };
    // An array aligns as its elements (8-byte ones on 'd').
    let element = item.data_type();
    let align =
        if element.primitive_width() == Some(8) || matches!(element, DataType::Timestamp(..)) {
            "d"
        } else {
            "i"
        };
    Some((oid, -1, false, align, "x", 1))
}

impl GraphRows {
    /// The graph's tables: the oid the emulation gave each, and its schema.
    async fn graph_tables(&self, state: &dyn Session) -> Result<HashMap<i32, SchemaRef>> {
        let mut public = None;
        for b in rows(&self.namespaces, state).await? {
            let oids = column_as(&b, "oid", &DataType::Int32)?;
            let names = column_as(&b, "nspname", &DataType::Utf8)?;
            let (oids, names) = (oids.as_primitive::<Int32Type>(), names.as_string::<i32>());
            for i in 0..b.num_rows() {
                if names.value(i) == "public" {
                    public = Some(oids.value(i));
                }
            }
        }
        let mut out = HashMap::new();
        let Some(schema) = self
            .catalogs
            .catalog(&self.catalog)
            .and_then(|c| c.schema("public"))
        else {
            return Ok(out);
        };
        for b in rows(&self.classes, state).await? {
            let oids = column_as(&b, "oid", &DataType::Int32)?;
            let names = column_as(&b, "relname", &DataType::Utf8)?;
            let spaces = column_as(&b, "relnamespace", &DataType::Int32)?;
            let (oids, names) = (oids.as_primitive::<Int32Type>(), names.as_string::<i32>());
            let spaces = spaces.as_primitive::<Int32Type>();
            for i in 0..b.num_rows() {
                if Some(spaces.value(i)) != public {
                    continue;
                }
                if let Some(table) = schema.table(names.value(i)).await? {
                    out.insert(oids.value(i), table.schema());
                }
            }
        }
        Ok(out)
    }
}

/// `columns` of `batch` replaced (each cast back to the emulation's field
/// type: the oid columns carry metadata).
fn replaced(batch: &RecordBatch, columns: Vec<(&str, ArrayRef)>) -> Result<RecordBatch> {
    let mut all = batch.columns().to_vec();
    for (name, array) in columns {
        let i = batch.schema().index_of(name)?;
        all[i] = cast(&array, batch.column(i).data_type())?;
    }
    Ok(RecordBatch::try_new(batch.schema(), all)?)
}

/// `batch` of pg_class with the graph's tables having indexes and triggers.
fn with_keys(batch: &RecordBatch, tables: &HashMap<i32, SchemaRef>) -> Result<RecordBatch> {
    let oids = column_as(batch, "oid", &DataType::Int32)?;
    let oids = oids.as_primitive::<Int32Type>();
    let flag = |name| -> Result<ArrayRef> {
        let old = column_as(batch, name, &DataType::Boolean)?;
        let old = old.as_boolean();
        Ok(Arc::new(
            (0..batch.num_rows())
                .map(|i| Some(tables.contains_key(&oids.value(i)) || old.value(i)))
                .collect::<BooleanArray>(),
        ))
    };
    replaced(
        batch,
        vec![
            ("relhasindex", flag("relhasindex")?),
            ("relhastriggers", flag("relhastriggers")?),
        ],
    )
}

/// `batch` with the types of the graph's columns in `types`.
fn retype(batch: &RecordBatch, tables: &HashMap<i32, SchemaRef>) -> Result<RecordBatch> {
    let int4 = |name| -> Result<Vec<i32>> {
        Ok(column_as(batch, name, &DataType::Int32)?
            .as_primitive::<Int32Type>()
            .values()
            .to_vec())
    };
    let texts = |name| -> Result<Vec<String>> {
        let a = column_as(batch, name, &DataType::Utf8)?;
        let a = a.as_string::<i32>();
        Ok((0..a.len()).map(|i| a.value(i).to_string()).collect())
    };
    let rel = int4("attrelid")?;
    let names = texts("attname")?;
    let mut typid = int4("atttypid")?;
    let mut ndims = int4("attndims")?;
    let mut len: Vec<i16> = column_as(batch, "attlen", &DataType::Int16)?
        .as_primitive::<Int16Type>()
        .values()
        .to_vec();
    let byval = column_as(batch, "attbyval", &DataType::Boolean)?;
    let mut byval: Vec<bool> = (0..byval.len())
        .map(|i| byval.as_boolean().value(i))
        .collect();
    let mut align = texts("attalign")?;
    let mut storage = texts("attstorage")?;
    let n = batch.num_rows();
    for i in 0..n {
        let Some(field) = tables
            .get(&rel[i])
            .and_then(|t| t.field_with_name(&names[i]).ok())
        else {
            continue;
        };
        let t = field.data_type();
        if let Some((oid, l, v, a, s, d)) = attribute_type(t) {
            (typid[i], len[i], byval[i], ndims[i]) = (oid, l, v, d);
            align[i] = a.to_string();
            storage[i] = s.to_string();
        }
    }
    replaced(
        batch,
        vec![
            ("atttypid", Arc::new(Int32Array::from(typid))),
            ("attlen", Arc::new(Int16Array::from(len))),
            ("attndims", Arc::new(Int32Array::from(ndims))),
            ("attbyval", Arc::new(BooleanArray::from(byval))),
            ("attalign", Arc::new(StringArray::from(align))),
            ("attstorage", Arc::new(StringArray::from(storage))),
        ],
    )
}

#[async_trait::async_trait]
impl TableProvider for GraphRows {
    fn schema(&self) -> SchemaRef {
        self.emulated.schema()
    }

    fn table_type(&self) -> TableType {
        self.emulated.table_type()
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let tables = self.graph_tables(state).await?;
        let batches = rows(&self.emulated, state)
            .await?
            .iter()
            .map(|b| match self.patch {
                Patch::Attributes => retype(b, &tables),
                Patch::Classes => with_keys(b, &tables),
            })
            .collect::<Result<Vec<_>>>()?;
        MemorySourceConfig::try_new_exec(&[batches], self.schema(), projection.cloned())
            .map(|e| e as Arc<dyn ExecutionPlan>)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use omnigraph_engine::deps::arrow_schema::{Field, TimeUnit};

    #[test]
    fn timestamps_and_lists_get_their_postgres_types() {
        let tz = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        assert_eq!(attribute_type(&tz).map(|t| t.0), Some(1184));
        let texts = DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)));
        assert_eq!(attribute_type(&texts), Some((1009, -1, false, "i", "x", 1)));
        assert_eq!(attribute_type(&DataType::Utf8), None);
        let vector =
            DataType::FixedSizeList(Arc::new(Field::new("item", DataType::Float32, true)), 3);
        assert_eq!(
            attribute_type(&vector),
            Some((1021, -1, false, "i", "x", 1))
        );
        let ints = DataType::List(Arc::new(Field::new("item", DataType::Int64, true)));
        assert_eq!(attribute_type(&ints).map(|t| (t.0, t.3)), Some((1016, "d")));
    }
}
