//! Postgres expression trees to the owned filter model of
//! `omnigraph_sql::filter`. The tree is walked once; anything this walker
//! does not know becomes `Expr::Unsupported` and stays a local qual. Whether
//! a modelled filter may be pushed is decided in one place,
//! `omnigraph_sql::filter::classify`, where the rules are written down.
//!
//! Only built-in operators ship (OID below `FirstGenbkiObjectId`), and only
//! when the constant's type is the column's own (no cross-type comparison
//! such as date against timestamptz, whose result depends on the session
//! time zone). Parameters of prepared statements (`$n`) ship as runtime
//! values; they go into `fdw_exprs` and are evaluated when the scan starts.

use omnigraph_sql::filter::{CmpOp, Column, ColumnType, Expr, Scalar, Value};
use pgrx::pg_sys::{self, Datum, Oid};
use pgrx::{PgList, is_a};

use crate::datum::{Kind, PG_EPOCH_OFFSET_DAYS, PgType};
use crate::functions::PG_EPOCH_OFFSET_US;
use crate::pg::cstr;

/// Built-in objects have OIDs below this (PG15 `access/transam.h`).
const FIRST_GENBKI_OBJECT_ID: u32 = 10_000;

/// How a column of the scanned table reads in a filter.
#[derive(Clone)]
pub struct FilterColumn {
    pub attno: i16,
    pub graph_name: String,
    pub ty: PgType,
}

/// Translation context: the scanned relation and its columns, and the
/// parameters collected so far (their order is their index in `fdw_exprs`).
pub struct Quals<'a> {
    pub relid: u32,
    pub columns: &'a [FilterColumn],
    pub params: Vec<*mut pg_sys::Node>,
    /// Whether a column of another relation of the query is a runtime
    /// value: the join clauses of a parameterized path, where the planner
    /// turns it into a nestloop parameter set for each outer row.
    pub outer: bool,
}

impl<'a> Quals<'a> {
    pub fn new(relid: u32, columns: &'a [FilterColumn]) -> Quals<'a> {
        Quals {
            relid,
            columns,
            params: Vec::new(),
            outer: false,
        }
    }
}

fn column_type(ty: PgType) -> ColumnType {
    if ty.array {
        return ColumnType::Other;
    }
    match ty.kind {
        Kind::Text => ColumnType::Text,
        Kind::Bool => ColumnType::Bool,
        Kind::Int4 | Kind::Int8 => ColumnType::Int,
        Kind::Float8 => ColumnType::Float64,
        Kind::Float4 => ColumnType::Float32,
        Kind::Date => ColumnType::Date,
        Kind::TimestampTz => ColumnType::Timestamp,
        Kind::Numeric | Kind::Bytea => ColumnType::Other,
    }
}

/// The value types a column's comparisons accept as constants or parameters.
fn compatible(col: ColumnType, oid: Oid) -> bool {
    match col {
        ColumnType::Text => oid == pg_sys::TEXTOID || oid == pg_sys::VARCHAROID,
        ColumnType::Bool => oid == pg_sys::BOOLOID,
        ColumnType::Int => [pg_sys::INT2OID, pg_sys::INT4OID, pg_sys::INT8OID].contains(&oid),
        ColumnType::Float64 => oid == pg_sys::FLOAT8OID || oid == pg_sys::FLOAT4OID,
        ColumnType::Date => oid == pg_sys::DATEOID,
        ColumnType::Timestamp => oid == pg_sys::TIMESTAMPTZOID,
        ColumnType::Float32 | ColumnType::Other => false,
    }
}

/// A Datum of type `oid` as a filter scalar; `None` for unsupported types.
pub fn scalar(oid: Oid, d: Datum, isnull: bool) -> Option<Scalar> {
    if isnull {
        return Some(Scalar::Null);
    }
    // SAFETY (all arms): `d` is a non-null Datum of type `oid`; by-value
    // types are read from the Datum, text is detoasted and copied.
    Some(match oid {
        o if o == pg_sys::BOOLOID => Scalar::Bool(d.value() != 0),
        o if o == pg_sys::INT2OID => Scalar::Int(i64::from(d.value() as i16)),
        o if o == pg_sys::INT4OID => Scalar::Int(i64::from(d.value() as i32)),
        o if o == pg_sys::INT8OID => Scalar::Int(d.value() as i64),
        o if o == pg_sys::FLOAT4OID => Scalar::Float(f64::from(f32::from_bits(d.value() as u32))),
        o if o == pg_sys::FLOAT8OID => Scalar::Float(f64::from_bits(d.value() as u64)),
        o if o == pg_sys::DATEOID => {
            let days = d.value() as i32;
            // -infinity / infinity dates do not exist in the graph.
            if days == i32::MIN || days == i32::MAX {
                return None;
            }
            Scalar::Date(days.checked_add(PG_EPOCH_OFFSET_DAYS)?)
        }
        o if o == pg_sys::TIMESTAMPTZOID => {
            let us = d.value() as i64;
            if us == i64::MIN || us == i64::MAX {
                return None;
            }
            // Past about year 294,000 the shift to 1970 overflows: such a
            // constant stays local rather than wrap into a wrong filter.
            Scalar::Timestamp(us.checked_add(PG_EPOCH_OFFSET_US)?)
        }
        o if o == pg_sys::TEXTOID || o == pg_sys::VARCHAROID => {
            // SAFETY: a text Datum; text_to_cstring detoasts and copies it.
            Scalar::Text(unsafe { cstr(pg_sys::text_to_cstring(d.cast_mut_ptr())) })
        }
        _ => return None,
    })
}

/// The value of a runtime parameter of type `oid` when a scan starts: a
/// scalar, or an array's elements as a [`Scalar::List`].
///
/// Unlike a constant, a parameter cannot stay local once the plan pushed
/// it: a date or timestamp at +/-infinity, which the graph cannot hold,
/// becomes the farthest value of its kind, so it compares with every
/// stored value as infinity does (and equals none).
pub fn param_value(oid: Oid, d: Datum, isnull: bool) -> Scalar {
    if isnull {
        return Scalar::Null;
    }
    // SAFETY: InvalidOid for a type that is not an array.
    let elem = unsafe { pg_sys::get_element_type(oid) };
    if elem != pg_sys::InvalidOid {
        return Scalar::List(
            deconstruct(d, elem)
                .into_iter()
                .map(|(d, n)| param_value(elem, d, n))
                .collect(),
        );
    }
    scalar(oid, d, false).unwrap_or_else(|| match oid {
        o if o == pg_sys::DATEOID => match d.value() as i32 {
            days if days < 0 => Scalar::Date(i32::MIN),
            _ => Scalar::Date(i32::MAX),
        },
        o if o == pg_sys::TIMESTAMPTZOID => match d.value() as i64 {
            us if us < 0 => Scalar::Timestamp(i64::MIN),
            _ => Scalar::Timestamp(i64::MAX),
        },
        // Types the plan does not push.
        _ => Scalar::Null,
    })
}

impl Quals<'_> {
    fn column(&self, node: *mut pg_sys::Node) -> Option<(&FilterColumn, Column)> {
        let node = strip_relabel(node);
        // SAFETY: node is a valid expression node; is_a checks its tag.
        if !unsafe { is_a(node, pg_sys::NodeTag::T_Var) } {
            return None;
        }
        let var = node as *mut pg_sys::Var;
        // SAFETY: checked to be a Var.
        let (varno, attno, levelsup) =
            unsafe { ((*var).varno, (*var).varattno, (*var).varlevelsup) };
        if varno as u32 != self.relid || levelsup != 0 || attno <= 0 {
            return None;
        }
        let c = self.columns.iter().find(|c| c.attno == attno)?;
        Some((
            c,
            Column {
                name: c.graph_name.clone(),
                ty: column_type(c.ty),
            },
        ))
    }

    /// A constant or parameter of a type the column accepts.
    fn value(&mut self, node: *mut pg_sys::Node, col: ColumnType) -> Option<Value> {
        let node = strip_relabel(node);
        // SAFETY: node is a valid expression node; each cast follows a tag check.
        unsafe {
            if is_a(node, pg_sys::NodeTag::T_Const) {
                let c = node as *mut pg_sys::Const;
                if !compatible(col, (*c).consttype) {
                    return None;
                }
                return scalar((*c).consttype, (*c).constvalue, (*c).constisnull).map(Value::Const);
            }
            let runtime = if is_a(node, pg_sys::NodeTag::T_Param) {
                let p = node as *mut pg_sys::Param;
                (*p).paramkind == pg_sys::ParamKind::PARAM_EXTERN && compatible(col, (*p).paramtype)
            } else if self.outer && is_a(node, pg_sys::NodeTag::T_Var) {
                let v = node as *mut pg_sys::Var;
                (*v).varno as u32 != self.relid
                    && (*v).varlevelsup == 0
                    && compatible(col, (*v).vartype)
            } else {
                false
            };
            if runtime {
                return Some(Value::Param(self.param_index(node)));
            }
        }
        None
    }

    /// A parameter holding an array of the column's type (`= ANY($1)` of a
    /// prepared statement's generic plan, or `= ANY(ARRAY(SELECT ...))`,
    /// an initplan's value), registered as a runtime parameter.
    ///
    /// # Safety
    /// `node` is a valid expression node.
    unsafe fn array_param(&mut self, node: *mut pg_sys::Node, col: ColumnType) -> Option<Value> {
        // SAFETY: the cast follows the tag check; the caller passes a valid node.
        unsafe {
            if !is_a(node, pg_sys::NodeTag::T_Param) {
                return None;
            }
            let p = node as *mut pg_sys::Param;
            if !matches!(
                (*p).paramkind,
                pg_sys::ParamKind::PARAM_EXTERN | pg_sys::ParamKind::PARAM_EXEC
            ) {
                return None;
            }
            // InvalidOid for a type that is not an array.
            let elem = pg_sys::get_element_type((*p).paramtype);
            if elem == pg_sys::InvalidOid || !compatible(col, elem) {
                return None;
            }
        }
        Some(Value::Param(self.param_index(node)))
    }

    /// The index of a runtime parameter, registered once however often a
    /// qual names it.
    fn param_index(&mut self, node: *mut pg_sys::Node) -> usize {
        // SAFETY: both are valid expression nodes.
        let known = self
            .params
            .iter()
            .position(|q| unsafe { pg_sys::equal(q.cast(), node.cast()) });
        match known {
            Some(i) => i,
            None => {
                self.params.push(node);
                self.params.len() - 1
            }
        }
    }

    /// Model one qual of the scanned table.
    pub fn translate(&mut self, node: *mut pg_sys::Node) -> Expr {
        self.translate_at(node, 0)
    }

    /// `depth` counts the AND/OR/NOT levels above `node`; past
    /// [`omnigraph_sql::filter::MAX_DEPTH`] the rest stays local unseen, so
    /// the walk's recursion is bounded whatever the query.
    fn translate_at(&mut self, node: *mut pg_sys::Node, depth: usize) -> Expr {
        if depth > omnigraph_sql::filter::MAX_DEPTH {
            return Expr::Unsupported(format!(
                "conditions nested more than {} levels deep",
                omnigraph_sql::filter::MAX_DEPTH
            ));
        }
        // SAFETY: node is a valid expression node from the planner; every
        // cast below follows an `is_a` tag check.
        unsafe {
            if is_a(node, pg_sys::NodeTag::T_BoolExpr) {
                let b = node as *mut pg_sys::BoolExpr;
                let args: Vec<Expr> = PgList::<pg_sys::Node>::from_pg((*b).args)
                    .iter_ptr()
                    .map(|a| self.translate_at(a, depth + 1))
                    .collect();
                return match (*b).boolop {
                    pg_sys::BoolExprType::AND_EXPR => Expr::And(args),
                    pg_sys::BoolExprType::OR_EXPR => Expr::Or(args),
                    _ => match args.into_iter().next() {
                        Some(a) => Expr::Not(Box::new(a)),
                        None => Expr::Unsupported("empty NOT".into()),
                    },
                };
            }
            if is_a(node, pg_sys::NodeTag::T_OpExpr) {
                return self.op_expr(node as *mut pg_sys::OpExpr);
            }
            if is_a(node, pg_sys::NodeTag::T_ScalarArrayOpExpr) {
                return self.array_op(node as *mut pg_sys::ScalarArrayOpExpr);
            }
            if is_a(node, pg_sys::NodeTag::T_NullTest) {
                let t = node as *mut pg_sys::NullTest;
                if (*t).argisrow {
                    return Expr::Unsupported("row IS NULL".into());
                }
                return match self.column((*t).arg.cast()) {
                    Some((_, column)) => Expr::IsNull {
                        column,
                        negated: (*t).nulltesttype == pg_sys::NullTestType::IS_NOT_NULL,
                    },
                    None => Expr::Unsupported("IS NULL on an expression".into()),
                };
            }
            if let Some((_, column)) = self.column(node) {
                return Expr::BoolColumn(column);
            }
        }
        Expr::Unsupported(format!("{:?}", node_tag(node)))
    }

    fn op_expr(&mut self, op: *mut pg_sys::OpExpr) -> Expr {
        // SAFETY: op is a valid OpExpr.
        let (opno, args, collid) = unsafe {
            (
                (*op).opno,
                PgList::<pg_sys::Node>::from_pg((*op).args),
                (*op).inputcollid,
            )
        };
        if opno.to_u32() >= FIRST_GENBKI_OBJECT_ID {
            return Expr::Unsupported("not a built-in operator".into());
        }
        if args.len() != 2 {
            return Expr::Unsupported("unary operator".into());
        }
        let (Some(l), Some(r)) = (args.get_ptr(0), args.get_ptr(1)) else {
            return Expr::Unsupported("operator arguments".into());
        };
        // SAFETY: get_opname returns a palloc'd name for a valid operator.
        let name = unsafe { cstr(pg_sys::get_opname(opno)) };
        let (col_node, val_node, flipped) = match (self.column(l), self.column(r)) {
            (Some(_), None) => (l, r, false),
            (None, Some(_)) => (r, l, true),
            _ => return Expr::Unsupported("operator not between a column and a value".into()),
        };
        let Some((_, column)) = self.column(col_node) else {
            return Expr::Unsupported("column".into());
        };
        if column.ty == ColumnType::Text && !crate::pg::collation_is_deterministic(collid) {
            // Equal strings under a case- or accent-insensitive collation
            // differ byte for byte; Lance compares bytes.
            return Expr::Unsupported("text compared under a nondeterministic collation".into());
        }
        if name == "~~" && !flipped && column.ty == ColumnType::Text {
            return match self.value(val_node, ColumnType::Text) {
                Some(Value::Const(Scalar::Text(p))) => match p.strip_suffix('%') {
                    Some(prefix) => Expr::Prefix {
                        column,
                        prefix: prefix.to_string(),
                    },
                    None => Expr::Unsupported("LIKE pattern without a trailing %".into()),
                },
                _ => Expr::Unsupported("LIKE with a non-constant pattern".into()),
            };
        }
        let Some(mut cmp) = CmpOp::from_sql(&name) else {
            return Expr::Unsupported(format!("operator {name}"));
        };
        if flipped {
            cmp = cmp.flip();
        }
        let Some(value) = self.value(val_node, column.ty) else {
            return Expr::Unsupported(
                "value of another type, or not a constant or parameter".into(),
            );
        };
        let c_collation = crate::pg::collation_is_c(collid);
        Expr::Cmp {
            column,
            op: cmp,
            value,
            c_collation,
        }
    }

    fn array_op(&mut self, op: *mut pg_sys::ScalarArrayOpExpr) -> Expr {
        // SAFETY: op is a valid ScalarArrayOpExpr.
        let (opno, use_or, args, collid) = unsafe {
            (
                (*op).opno,
                (*op).useOr,
                PgList::<pg_sys::Node>::from_pg((*op).args),
                (*op).inputcollid,
            )
        };
        if opno.to_u32() >= FIRST_GENBKI_OBJECT_ID || args.len() != 2 {
            return Expr::Unsupported("array operator".into());
        }
        if !crate::pg::collation_is_deterministic(collid) {
            return Expr::Unsupported("text compared under a nondeterministic collation".into());
        }
        // SAFETY: valid operator oid.
        let name = unsafe { cstr(pg_sys::get_opname(opno)) };
        let negated = match (name.as_str(), use_or) {
            ("=", true) => false,
            ("<>", false) => true,
            _ => {
                return Expr::Unsupported(format!("{name} {}", if use_or { "ANY" } else { "ALL" }));
            }
        };
        let (Some(l), Some(r)) = (args.get_ptr(0), args.get_ptr(1)) else {
            return Expr::Unsupported("array arguments".into());
        };
        let Some((_, column)) = self.column(l) else {
            return Expr::Unsupported("ANY on an expression".into());
        };
        let r = strip_relabel(r);
        // SAFETY: r is a valid node; the cast follows the tag check.
        if let Some(param) = unsafe { self.array_param(r, column.ty) } {
            // Its elements are taken when the scan starts (`scan::eval_params`).
            return Expr::InList {
                column,
                values: vec![param],
                negated,
            };
        }
        // SAFETY: r is a valid node; the cast follows the tag check.
        if !unsafe { is_a(r, pg_sys::NodeTag::T_Const) } {
            return Expr::Unsupported("ANY over a non-constant array".into());
        }
        let c = r as *mut pg_sys::Const;
        // SAFETY: c is a valid Const.
        let (isnull, arr_type, value) =
            unsafe { ((*c).constisnull, (*c).consttype, (*c).constvalue) };
        if isnull {
            return Expr::Unsupported("NULL array".into());
        }
        // SAFETY: get_element_type returns InvalidOid for non-array types.
        let elem = unsafe { pg_sys::get_element_type(arr_type) };
        if !compatible(column.ty, elem) {
            return Expr::Unsupported("array of another type".into());
        }
        let mut values = Vec::new();
        for (d, n) in deconstruct(value, elem) {
            match scalar(elem, d, n) {
                Some(s) => values.push(Value::Const(s)),
                None => return Expr::Unsupported("array element".into()),
            }
        }
        Expr::InList {
            column,
            values,
            negated,
        }
    }
}

/// The elements of an array Datum of element type `elem`.
fn deconstruct(array: Datum, elem: Oid) -> Vec<(Datum, bool)> {
    let (mut len, mut byval, mut align) = (0i16, false, 0 as std::ffi::c_char);
    let (mut datums, mut nulls, mut n): (*mut Datum, *mut bool, i32) =
        (std::ptr::null_mut(), std::ptr::null_mut(), 0);
    // SAFETY: `array` is a non-null array Datum of element type `elem`;
    // deconstruct_array fills palloc'd arrays of n entries.
    unsafe {
        pg_sys::get_typlenbyvalalign(elem, &mut len, &mut byval, &mut align);
        let arr = pg_sys::pg_detoast_datum(array.cast_mut_ptr()) as *mut pg_sys::ArrayType;
        pg_sys::deconstruct_array(
            arr,
            elem,
            len.into(),
            byval,
            align,
            &mut datums,
            &mut nulls,
            &mut n,
        );
        (0..n as usize)
            .map(|i| (*datums.add(i), *nulls.add(i)))
            .collect()
    }
}

fn strip_relabel(mut node: *mut pg_sys::Node) -> *mut pg_sys::Node {
    // SAFETY: node is a valid expression node; RelabelType is a no-op cast.
    unsafe {
        while !node.is_null() && is_a(node, pg_sys::NodeTag::T_RelabelType) {
            node = (*(node as *mut pg_sys::RelabelType)).arg.cast();
        }
    }
    node
}

fn node_tag(node: *mut pg_sys::Node) -> pg_sys::NodeTag {
    // SAFETY: every Node starts with its tag.
    unsafe { (*node).type_ }
}
