//! Keys for the catalog queries of client libraries.
//!
//! The `pg_catalog` emulation holds a static `pg_constraint` and
//! `pg_index` (no rows for the graph's tables), and some of the queries
//! clients send over them (`unnest(ix.indkey)` with `generate_subscripts`)
//! do not plan in DataFusion. Those queries are recognised by their text,
//! as `datafusion-pg-catalog` recognises the ones it answers empty, and
//! answered from the graph's schema: every table's primary key is `id`,
//! and an edge table's `src` and `dst` are foreign keys to the `id` of
//! its endpoint types, which is how BI tools and ORMs infer joins (a
//! PostgreSQL 15 foreign table cannot declare either).
//!
//! Answered: psql 15's `\d TABLE` (indexes, foreign keys, referenced by,
//! triggers), SQLAlchemy's (1.4 and 2.0 `get_pk_constraint`,
//! `get_foreign_keys`, `get_indexes`, `get_unique_constraints`,
//! `get_check_constraints`) single-table queries, and pgjdbc's
//! `DatabaseMetaData.getPrimaryKeys`, `getImportedKeys`,
//! `getExportedKeys`, `getCrossReference` (which JDBC-based BI tools
//! read to draw joins) and `getIndexInfo`.
//!
//! Deleting a node deletes its edges, so the foreign keys are reported
//! `ON DELETE CASCADE`; a node's `id` cannot change (`NO ACTION` on update).

use std::sync::Arc;

use omnigraph_engine::deps::arrow_array::{
    ArrayRef, BooleanArray, Int32Array, Int64Array, RecordBatch, StringArray,
};
use omnigraph_engine::deps::arrow_schema::{Field, Schema};
use omnigraph_engine::schema::Catalog;

use crate::names::pg_name;

/// A key of one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    /// The constraint's name, as Postgres would make it.
    pub name: String,
    pub table: String,
    pub column: String,
    /// For a foreign key: the table and column referred to.
    pub references: Option<(String, String)>,
}

impl Key {
    /// `pg_get_constraintdef`'s text.
    pub fn definition(&self) -> String {
        match &self.references {
            None => format!("PRIMARY KEY ({})", self.column),
            Some((t, c)) => format!(
                "FOREIGN KEY ({}) REFERENCES {t}({c}) ON DELETE CASCADE",
                self.column
            ),
        }
    }
}

/// Every table's primary key (`id`) and every edge table's foreign keys
/// (`src`, `dst`), in schema order.
pub fn keys(catalog: &Catalog) -> Vec<Key> {
    let mut out = Vec::new();
    for t in catalog.type_names() {
        let table = pg_name(t);
        out.push(Key {
            name: format!("{table}_pkey"),
            table: table.clone(),
            column: "id".into(),
            references: None,
        });
        if let Some(e) = catalog.edge(t) {
            for (column, target) in [("src", &e.from), ("dst", &e.to)] {
                out.push(Key {
                    name: format!("{table}_{column}_fkey"),
                    table: table.clone(),
                    column: column.into(),
                    references: Some((pg_name(target), "id".into())),
                });
            }
        }
    }
    out
}

/// The schema all tables are in.
pub const SCHEMA: &str = "public";

/// Read-only settings clients look up in `pg_settings` (PostgreSQL 15's
/// compiled-in values).
const SETTINGS: [(&str, &str); 4] = [
    ("max_index_keys", "32"),
    ("max_identifier_length", "63"),
    ("block_size", "8192"),
    ("server_version_num", "150000"),
];

/// The tables a pgjdbc query names: `None` for any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Named {
    pub schema: Option<String>,
    pub table: Option<String>,
}

impl Named {
    fn admits(&self, table: &str) -> bool {
        self.schema.as_deref().is_none_or(|s| s == SCHEMA)
            && self.table.as_deref().is_none_or(|t| t == table)
    }
}

/// What a recognised query asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ask {
    /// The primary key's columns (`attname`), through `pg_index`.
    PrimaryKeyColumns(i64),
    /// The primary key constraint's name (`conname`).
    PrimaryKeyName(i64),
    /// Foreign keys: `conname`, `condef`, `conschema`.
    ForeignKeys(i64),
    /// Secondary indexes (none are reported).
    Indexes,
    /// Unique constraints (none are reported).
    Uniques,
    /// Check constraints (none are reported).
    Checks,
    /// psql's `\d TABLE`: the table's indexes (its primary key).
    PsqlIndexes(i64),
    /// psql's `\d TABLE`: the table's foreign keys.
    PsqlForeignKeys(i64),
    /// psql's `\d TABLE`: the foreign keys referring to the table.
    PsqlReferencedBy(i64),
    /// psql's `\d TABLE`: triggers (none are reported).
    PsqlTriggers,
    /// A read-only setting's value (`setting` of `pg_settings`).
    Setting(&'static str),
    /// pgjdbc's `getPrimaryKeys` (and its internal `getPrimaryUniqueKeys`).
    JdbcPrimaryKeys(Named),
    /// pgjdbc's `getIndexInfo`: the primary key's index.
    JdbcIndexes(Named),
    /// pgjdbc's `getImportedKeys` (`foreign` named), `getExportedKeys`
    /// (`primary` named) and `getCrossReference` (both).
    JdbcForeignKeys { primary: Named, foreign: Named },
}

/// Recognise a client's catalog query; `None` for anything else (which
/// runs as usual).
pub fn recognise(sql: &str) -> Option<Ask> {
    let original = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    // ASCII lowercasing keeps every byte offset, so a literal found in
    // `text` is read from `original` with its case.
    let text = original.to_ascii_lowercase();
    if !["pg_constraint", "pg_index", "pg_trigger", "pg_settings"]
        .iter()
        .any(|t| text.contains(t))
    {
        return None;
    }
    // pgjdbc reads max_index_keys before asking for foreign keys.
    if let Some(rest) = text.strip_prefix("select setting from pg_catalog.pg_settings where name=")
        && let Some(name) = literal_after(rest, rest, "")
        && let Some((_, value)) = SETTINGS.iter().find(|(n, _)| *n == name)
    {
        return Some(Ask::Setting(value));
    }
    let named = |schema: &str, table: &str| Named {
        schema: literal_after(&original, &text, schema),
        table: literal_after(&original, &text, table),
    };
    if text.contains("information_schema._pg_expandarray(i.indkey)")
        && text.contains("result.a_attnum = (result.keys).x")
        && text.contains("i.indisprimary")
    {
        return Some(Ask::JdbcPrimaryKeys(named("n.nspname = ", "ct.relname = ")));
    }
    if text.contains("not i.indisunique as non_unique")
        && text.contains("pg_get_indexdef(tmp.ci_oid")
    {
        return Some(Ask::JdbcIndexes(named("n.nspname = ", "ct.relname = ")));
    }
    if text.contains("as fktable_name") && text.contains("con.contype = 'f'") {
        return Some(Ask::JdbcForeignKeys {
            primary: named("pkn.nspname = ", "pkc.relname = "),
            foreign: named("fkn.nspname = ", "fkc.relname = "),
        });
    }
    let oid = || table_oid(&text);
    // psql 15's `\d`, asked because pg_class says the graph's tables have
    // indexes and triggers (`super::pg_tables`).
    if text.contains("pg_catalog.pg_get_indexdef(i.indexrelid, 0, true)")
        && text.contains("pg_catalog.pg_class c2, pg_catalog.pg_index i")
    {
        return Some(Ask::PsqlIndexes(oid()?));
    }
    if text.starts_with("select true as sametable, conname") && text.contains("contype = 'f'") {
        return Some(Ask::PsqlForeignKeys(oid()?));
    }
    if text.contains("where confrelid in (select pg_catalog.pg_partition_ancestors(")
        && text.contains("contype = 'f'")
    {
        return Some(Ask::PsqlReferencedBy(oid()?));
    }
    if text.contains("from pg_catalog.pg_trigger t") && text.contains("t.tgrelid = ") {
        return Some(Ask::PsqlTriggers);
    }
    if text.contains("generate_subscripts(ix.indkey") && text.contains("ix.indisprimary") {
        return Some(Ask::PrimaryKeyColumns(oid()?));
    }
    if text.contains("ix.indisprimary = 'f'") {
        return Some(Ask::Indexes);
    }
    if text.contains("r.contype = 'p'") && text.starts_with("select conname") {
        return Some(Ask::PrimaryKeyName(oid()?));
    }
    if text.contains("r.contype = 'f'")
        && text.contains("pg_get_constraintdef(r.oid, true) as condef")
    {
        return Some(Ask::ForeignKeys(oid()?));
    }
    if text.contains("cons.contype = 'u'") {
        return Some(Ask::Uniques);
    }
    if text.contains("cons.contype = 'c'") {
        return Some(Ask::Checks);
    }
    None
}

/// The string literal after `marker` (`'...'` or `E'...'`), read from
/// `original` at the offset `marker` has in `lowered`.
fn literal_after(original: &str, lowered: &str, marker: &str) -> Option<String> {
    let at = lowered.find(marker)? + marker.len();
    let rest = original.get(at..)?;
    let (escapes, rest) = match rest.strip_prefix(['E', 'e']) {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let mut chars = rest.strip_prefix('\'')?.chars().peekable();
    let mut out = String::new();
    while let Some(c) = chars.next() {
        match c {
            '\'' if chars.peek() == Some(&'\'') => {
                chars.next();
                out.push('\'');
            }
            '\'' => return Some(out),
            '\\' if escapes => out.push(chars.next()?),
            c => out.push(c),
        }
    }
    None
}

/// The table oid a query names (`conrelid = 16390`, `c.oid = '16390'`,
/// `indrelid = ...`).
fn table_oid(text: &str) -> Option<i64> {
    for marker in [
        "conrelid = ",
        "indrelid = ",
        "attrelid = ",
        "c.oid = ",
        "pg_partition_ancestors(",
    ] {
        if let Some(at) = text.find(marker) {
            let rest = &text[at + marker.len()..];
            let digits: String = rest
                .strip_prefix('\'')
                .unwrap_or(rest)
                .chars()
                .take_while(|c| c.is_ascii_digit())
                .collect();
            if let Ok(n) = digits.parse() {
                return Some(n);
            }
        }
    }
    None
}

/// psql 15's `\d+` asks for a table's storage options with an
/// `array(SELECT ...)` DataFusion cannot plan: that expression is replaced
/// by an empty string (the graph's tables have none). Any other text is
/// returned unchanged.
pub fn rewrite(sql: &str) -> std::borrow::Cow<'_, str> {
    const OPTIONS: &str = "pg_catalog.array_to_string(c.reloptions || array(select 'toast.' || x from pg_catalog.unnest(tc.reloptions) x), ', ')";
    if sql.contains(OPTIONS) {
        sql.replacen(OPTIONS, "''", 1).into()
    } else {
        sql.into()
    }
}

/// The answer to `ask`, given the table `oid` names (`None`: no such
/// table, so no rows).
pub fn answer(
    ask: &Ask,
    table: Option<&str>,
    keys: &[Key],
) -> Result<RecordBatch, omnigraph_engine::deps::arrow_schema::ArrowError> {
    let of_table = |k: &&Key| Some(k.table.as_str()) == table;
    let text = |v: Vec<String>| Arc::new(StringArray::from(v)) as ArrayRef;
    let nulls = |n: usize| Arc::new(StringArray::from(vec![None::<String>; n])) as ArrayRef;
    let int4 = |v: Vec<i32>| Arc::new(Int32Array::from(v)) as ArrayRef;
    let (names, columns): (Vec<&str>, Vec<ArrayRef>) = match ask {
        Ask::PrimaryKeyColumns(_) => {
            let cols: Vec<String> = keys
                .iter()
                .filter(of_table)
                .filter(|k| k.references.is_none())
                .map(|k| k.column.clone())
                .collect();
            (vec!["attname"], vec![text(cols)])
        }
        Ask::PrimaryKeyName(_) => {
            let names: Vec<String> = keys
                .iter()
                .filter(of_table)
                .filter(|k| k.references.is_none())
                .map(|k| k.name.clone())
                .collect();
            (vec!["conname"], vec![text(names)])
        }
        Ask::ForeignKeys(_) => {
            let fks: Vec<&Key> = keys
                .iter()
                .filter(of_table)
                .filter(|k| k.references.is_some())
                .collect();
            (
                vec!["conname", "condef", "conschema"],
                vec![
                    text(fks.iter().map(|k| k.name.clone()).collect()),
                    text(fks.iter().map(|k| k.definition()).collect()),
                    text(fks.iter().map(|_| "public".to_string()).collect()),
                ],
            )
        }
        Ask::Indexes => {
            let names = vec![
                "relname",
                "indisunique",
                "indexprs",
                "attname",
                "attnum",
                "conrelid",
                "indkey",
                "indoption",
                "reloptions",
                "amname",
                "pg_get_expr",
                "indnkeyatts",
            ];
            let cols = names.iter().map(|_| text(Vec::new())).collect();
            (names, cols)
        }
        Ask::Uniques => (
            vec!["name", "key", "col_num", "col_name"],
            vec![
                text(Vec::new()),
                text(Vec::new()),
                Arc::new(Int64Array::from(Vec::<i64>::new())) as ArrayRef,
                text(Vec::new()),
            ],
        ),
        Ask::Checks => (
            vec!["name", "src"],
            vec![text(Vec::new()), text(Vec::new())],
        ),
        Ask::Setting(value) => (vec!["setting"], vec![text(vec![value.to_string()])]),
        Ask::PsqlIndexes(_) => {
            let pks: Vec<&Key> = keys
                .iter()
                .filter(of_table)
                .filter(|k| k.references.is_none())
                .collect();
            let n = pks.len();
            let flag = |v: bool| Arc::new(BooleanArray::from(vec![v; n])) as ArrayRef;
            (
                vec![
                    "relname",
                    "indisprimary",
                    "indisunique",
                    "indisclustered",
                    "indisvalid",
                    "pg_get_indexdef",
                    "pg_get_constraintdef",
                    "contype",
                    "condeferrable",
                    "condeferred",
                    "indisreplident",
                    "reltablespace",
                ],
                vec![
                    text(pks.iter().map(|k| k.name.clone()).collect()),
                    flag(true),
                    flag(true),
                    flag(false),
                    flag(true),
                    text(
                        pks.iter()
                            .map(|k| {
                                format!(
                                    "CREATE UNIQUE INDEX {} ON {SCHEMA}.{} USING btree ({})",
                                    k.name, k.table, k.column
                                )
                            })
                            .collect(),
                    ),
                    text(pks.iter().map(|k| k.definition()).collect()),
                    text(vec!["p".to_string(); n]),
                    flag(false),
                    flag(false),
                    flag(false),
                    int4(vec![0; n]),
                ],
            )
        }
        Ask::PsqlForeignKeys(_) => {
            let mut fks: Vec<&Key> = keys
                .iter()
                .filter(of_table)
                .filter(|k| k.references.is_some())
                .collect();
            fks.sort_by(|a, b| a.name.cmp(&b.name));
            let n = fks.len();
            (
                vec!["sametable", "conname", "condef", "ontable"],
                vec![
                    Arc::new(BooleanArray::from(vec![true; n])) as ArrayRef,
                    text(fks.iter().map(|k| k.name.clone()).collect()),
                    text(fks.iter().map(|k| k.definition()).collect()),
                    text(fks.iter().map(|k| k.table.clone()).collect()),
                ],
            )
        }
        Ask::PsqlReferencedBy(_) => {
            let mut fks: Vec<&Key> = keys
                .iter()
                .filter(|k| k.references.as_ref().map(|r| Some(r.0.as_str())) == Some(table))
                .collect();
            fks.sort_by(|a, b| a.name.cmp(&b.name));
            (
                vec!["conname", "ontable", "condef"],
                vec![
                    text(fks.iter().map(|k| k.name.clone()).collect()),
                    text(fks.iter().map(|k| k.table.clone()).collect()),
                    text(fks.iter().map(|k| k.definition()).collect()),
                ],
            )
        }
        Ask::PsqlTriggers => {
            let names = vec![
                "tgname",
                "pg_get_triggerdef",
                "tgenabled",
                "tgisinternal",
                "parent",
            ];
            let cols = names.iter().map(|_| text(Vec::new())).collect();
            (names, cols)
        }
        Ask::JdbcPrimaryKeys(named) => {
            // ORDER BY table_name, pk_name, key_seq
            let mut pks: Vec<&Key> = keys
                .iter()
                .filter(|k| k.references.is_none() && named.admits(&k.table))
                .collect();
            pks.sort_by(|a, b| (&a.table, &a.name).cmp(&(&b.table, &b.name)));
            let n = pks.len();
            (
                vec![
                    "table_cat",
                    "table_schem",
                    "table_name",
                    "column_name",
                    "key_seq",
                    "pk_name",
                ],
                vec![
                    nulls(n),
                    text(vec![SCHEMA.to_string(); n]),
                    text(pks.iter().map(|k| k.table.clone()).collect()),
                    text(pks.iter().map(|k| k.column.clone()).collect()),
                    int4(vec![1; n]),
                    text(pks.iter().map(|k| k.name.clone()).collect()),
                ],
            )
        }
        Ask::JdbcIndexes(named) => {
            let pks: Vec<&Key> = keys
                .iter()
                .filter(|k| k.references.is_none() && named.admits(&k.table))
                .collect();
            let n = pks.len();
            // java.sql.DatabaseMetaData.tableIndexOther = 3.
            (
                vec![
                    "table_cat",
                    "table_schem",
                    "table_name",
                    "non_unique",
                    "index_qualifier",
                    "index_name",
                    "type",
                    "ordinal_position",
                    "column_name",
                    "asc_or_desc",
                    "cardinality",
                    "pages",
                    "filter_condition",
                ],
                vec![
                    nulls(n),
                    text(vec![SCHEMA.to_string(); n]),
                    text(pks.iter().map(|k| k.table.clone()).collect()),
                    Arc::new(BooleanArray::from(vec![false; n])) as ArrayRef,
                    nulls(n),
                    text(pks.iter().map(|k| k.name.clone()).collect()),
                    int4(vec![3; n]),
                    int4(vec![1; n]),
                    text(pks.iter().map(|k| k.column.clone()).collect()),
                    text(vec!["A".to_string(); n]),
                    int4(vec![0; n]),
                    int4(vec![0; n]),
                    nulls(n),
                ],
            )
        }
        Ask::JdbcForeignKeys { primary, foreign } => {
            let mut fks: Vec<(&Key, &str)> = keys
                .iter()
                .filter_map(|k| Some((k, k.references.as_ref()?.0.as_str())))
                .filter(|(k, target)| primary.admits(target) && foreign.admits(&k.table))
                .collect();
            // getExportedKeys orders by the referring table, the others
            // by the referred one; then by constraint name.
            if primary.table.is_some() && foreign.table.is_none() {
                fks.sort_by(|a, b| (&a.0.table, &a.0.name).cmp(&(&b.0.table, &b.0.name)));
            } else {
                fks.sort_by(|a, b| (a.1, &a.0.name).cmp(&(b.1, &b.0.name)));
            }
            let n = fks.len();
            // java.sql.DatabaseMetaData: importedKeyCascade = 0,
            // importedKeyNoAction = 3, importedKeyNotDeferrable = 7.
            (
                vec![
                    "pktable_cat",
                    "pktable_schem",
                    "pktable_name",
                    "pkcolumn_name",
                    "fktable_cat",
                    "fktable_schem",
                    "fktable_name",
                    "fkcolumn_name",
                    "key_seq",
                    "update_rule",
                    "delete_rule",
                    "fk_name",
                    "pk_name",
                    "deferrability",
                ],
                vec![
                    nulls(n),
                    text(vec![SCHEMA.to_string(); n]),
                    text(fks.iter().map(|(_, t)| t.to_string()).collect()),
                    text(
                        fks.iter()
                            .map(|(k, _)| k.references.clone().map(|r| r.1).unwrap_or_default())
                            .collect(),
                    ),
                    nulls(n),
                    text(vec![SCHEMA.to_string(); n]),
                    text(fks.iter().map(|(k, _)| k.table.clone()).collect()),
                    text(fks.iter().map(|(k, _)| k.column.clone()).collect()),
                    int4(vec![1; n]),
                    int4(vec![3; n]),
                    int4(vec![0; n]),
                    text(fks.iter().map(|(k, _)| k.name.clone()).collect()),
                    text(fks.iter().map(|(_, t)| format!("{t}_pkey")).collect()),
                    int4(vec![7; n]),
                ],
            )
        }
    };
    let schema = Schema::new(
        names
            .iter()
            .zip(&columns)
            .map(|(n, c)| Field::new(*n, c.data_type().clone(), true))
            .collect::<Vec<_>>(),
    );
    RecordBatch::try_new(Arc::new(schema), columns)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FK: &str = "
          SELECT r.conname,
                pg_catalog.pg_get_constraintdef(r.oid, true) as condef,
                n.nspname as conschema
          FROM  pg_catalog.pg_constraint r,
                pg_namespace n,
                pg_class c

          WHERE r.conrelid = 16397 AND
                r.contype = 'f' AND
                c.oid = confrelid AND
                n.oid = c.relnamespace
          ORDER BY 1";

    const PK: &str = "
                SELECT a.attname
                FROM pg_attribute a JOIN (
                    SELECT unnest(ix.indkey) attnum,
                           generate_subscripts(ix.indkey, 1) ord
                    FROM pg_index ix
                    WHERE ix.indrelid = 42 AND ix.indisprimary
                    ) k ON a.attnum=k.attnum
                WHERE a.attrelid = 42
                ORDER BY k.ord";

    #[test]
    fn recognises_sqlalchemy_key_queries() {
        assert_eq!(recognise(FK), Some(Ask::ForeignKeys(16397)));
        assert_eq!(recognise(PK), Some(Ask::PrimaryKeyColumns(42)));
        assert_eq!(
            recognise(
                "SELECT conname FROM pg_catalog.pg_constraint r WHERE r.conrelid = 7 AND r.contype = 'p' ORDER BY 1"
            ),
            Some(Ask::PrimaryKeyName(7))
        );
        assert_eq!(recognise("SELECT * FROM person"), None);
        assert_eq!(recognise("SELECT * FROM pg_catalog.pg_constraint"), None);
    }

    #[test]
    fn foreign_keys_name_the_endpoint_tables() {
        let catalog = omnigraph_engine::schema::parse_schema(
            "node Person { name: String @key }\nnode Company { name: String @key }\nedge WorksAt: Person -> Company {}",
        )
        .unwrap();
        let keys = keys(&catalog);
        let b = answer(&Ask::ForeignKeys(1), Some("works_at"), &keys).unwrap();
        assert_eq!(b.num_rows(), 2);
        let defs = b.column(1).as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(
            defs.value(0),
            "FOREIGN KEY (src) REFERENCES person(id) ON DELETE CASCADE"
        );
        assert_eq!(
            defs.value(1),
            "FOREIGN KEY (dst) REFERENCES company(id) ON DELETE CASCADE"
        );
        let pk = answer(&Ask::PrimaryKeyColumns(1), Some("person"), &keys).unwrap();
        assert_eq!(pk.num_rows(), 1);
        assert_eq!(
            answer(&Ask::ForeignKeys(1), None, &keys)
                .unwrap()
                .num_rows(),
            0
        );
    }

    // pgjdbc 42.5's text, as DatabaseMetaData builds it.
    const JDBC_PK: &str = "SELECT        result.TABLE_CAT,        result.TABLE_SCHEM,        result.TABLE_NAME,        result.COLUMN_NAME,        result.KEY_SEQ,        result.PK_NAME FROM      (SELECT NULL AS TABLE_CAT, n.nspname AS TABLE_SCHEM,   ct.relname AS TABLE_NAME, a.attname AS COLUMN_NAME,   (information_schema._pg_expandarray(i.indkey)).n AS KEY_SEQ, ci.relname AS PK_NAME,   information_schema._pg_expandarray(i.indkey) AS KEYS, a.attnum AS A_ATTNUM FROM pg_catalog.pg_class ct   JOIN pg_catalog.pg_attribute a ON (ct.oid = a.attrelid)   JOIN pg_catalog.pg_namespace n ON (ct.relnamespace = n.oid)   JOIN pg_catalog.pg_index i ON ( a.attrelid = i.indrelid)   JOIN pg_catalog.pg_class ci ON (ci.oid = i.indexrelid) WHERE true  AND ct.relname = E'person' AND i.indisprimary  ) result where  result.A_ATTNUM = (result.KEYS).x  ORDER BY result.table_name, result.pk_name, result.key_seq";

    fn jdbc_fk(filters: &str) -> String {
        format!(
            "SELECT NULL::text AS PKTABLE_CAT, pkn.nspname AS PKTABLE_SCHEM, pkc.relname AS PKTABLE_NAME, pka.attname AS PKCOLUMN_NAME, NULL::text AS FKTABLE_CAT, fkn.nspname AS FKTABLE_SCHEM, fkc.relname AS FKTABLE_NAME, fka.attname AS FKCOLUMN_NAME, pos.n AS KEY_SEQ, CASE con.confupdtype  WHEN 'c' THEN 0 ELSE NULL END AS UPDATE_RULE, con.conname AS FK_NAME, pkic.relname AS PK_NAME FROM  pg_catalog.pg_namespace pkn, pg_catalog.pg_class pkc, pg_catalog.pg_attribute pka,  pg_catalog.pg_constraint con,  pg_catalog.generate_series(1, 32) pos(n),  pg_catalog.pg_class pkic WHERE pkn.oid = pkc.relnamespace AND con.contype = 'f' AND (pkic.relkind = 'i' OR pkic.relkind = 'I') AND pkic.oid = con.conindid {filters} ORDER BY pkn.nspname,pkc.relname, con.conname,pos.n"
        )
    }

    #[test]
    fn recognises_pgjdbc_key_queries_and_their_names() {
        assert_eq!(
            recognise(JDBC_PK),
            Some(Ask::JdbcPrimaryKeys(Named {
                schema: None,
                table: Some("person".into())
            }))
        );
        assert_eq!(
            recognise(&jdbc_fk(
                "AND fkn.nspname = 'public' AND fkc.relname = 'works_at'"
            )),
            Some(Ask::JdbcForeignKeys {
                primary: Named::default(),
                foreign: Named {
                    schema: Some("public".into()),
                    table: Some("works_at".into())
                },
            })
        );
        assert_eq!(
            recognise("SELECT setting FROM pg_catalog.pg_settings WHERE name='max_index_keys'"),
            Some(Ask::Setting("32"))
        );
        assert_eq!(
            recognise("SELECT setting FROM pg_catalog.pg_settings WHERE name='work_mem'"),
            None
        );
        assert_eq!(
            literal_after("x = 'a''b'", "x = 'a''b'", "x = "),
            Some("a'b".into())
        );
        assert_eq!(
            literal_after("x = E'a\\'b'", "x = e'a\\'b'", "x = "),
            Some("a'b".into())
        );
        assert_eq!(literal_after("x = 'open", "x = 'open", "x = "), None);
    }

    #[test]
    fn jdbc_keys_follow_the_named_tables() {
        let catalog = omnigraph_engine::schema::parse_schema(
            "node Person { name: String @key }\nnode Company { name: String @key }\nedge WorksAt: Person -> Company {}\nedge Knows: Person -> Person {}",
        )
        .unwrap();
        let keys = keys(&catalog);
        let column = |b: &RecordBatch, name: &str| -> Vec<String> {
            let i = b.schema().index_of(name).unwrap();
            let a = b.column(i).as_any().downcast_ref::<StringArray>().unwrap();
            a.iter().map(|v| v.unwrap_or("NULL").to_string()).collect()
        };
        let named = |t: &str| Named {
            schema: None,
            table: Some(t.into()),
        };
        let pk = answer(&Ask::JdbcPrimaryKeys(named("company")), None, &keys).unwrap();
        assert_eq!(column(&pk, "column_name"), ["id"]);
        assert_eq!(column(&pk, "pk_name"), ["company_pkey"]);
        let all = answer(&Ask::JdbcPrimaryKeys(Named::default()), None, &keys).unwrap();
        assert_eq!(
            column(&all, "table_name"),
            ["company", "knows", "person", "works_at"]
        );
        let other_schema = Named {
            schema: Some("sales".into()),
            table: None,
        };
        assert_eq!(
            answer(&Ask::JdbcPrimaryKeys(other_schema), None, &keys)
                .unwrap()
                .num_rows(),
            0
        );

        // Imported by works_at: ordered by the referred table.
        let imported = Ask::JdbcForeignKeys {
            primary: Named::default(),
            foreign: named("works_at"),
        };
        let b = answer(&imported, None, &keys).unwrap();
        assert_eq!(column(&b, "pktable_name"), ["company", "person"]);
        assert_eq!(column(&b, "fkcolumn_name"), ["dst", "src"]);
        assert_eq!(column(&b, "pk_name"), ["company_pkey", "person_pkey"]);
        // Exported by person: ordered by the referring table and key.
        let exported = Ask::JdbcForeignKeys {
            primary: named("person"),
            foreign: Named::default(),
        };
        let b = answer(&exported, None, &keys).unwrap();
        assert_eq!(column(&b, "fktable_name"), ["knows", "knows", "works_at"]);
        assert_eq!(
            column(&b, "fk_name"),
            ["knows_dst_fkey", "knows_src_fkey", "works_at_src_fkey"]
        );
        let delete = b.column(b.schema().index_of("delete_rule").unwrap());
        let delete = delete.as_any().downcast_ref::<Int32Array>().unwrap();
        assert!(delete.iter().all(|r| r == Some(0)), "ON DELETE CASCADE");
    }
}
