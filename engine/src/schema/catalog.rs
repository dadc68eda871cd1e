//! The resolved schema: node and edge types with typed properties and
//! constraints. Resolution checks every rule that needs more than syntax
//! (unknown types, duplicate names, misplaced annotations) and points at the
//! offending name.

use std::collections::{BTreeSet, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::ast::*;
use super::{SchemaError, limits};

/// Scalar property types of the `.pg` language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ScalarType {
    String,
    Blob,
    Bool,
    I32,
    I64,
    U32,
    U64,
    F32,
    F64,
    Date,
    DateTime,
}

impl ScalarType {
    pub const ALL: [(&'static str, ScalarType); 11] = [
        ("String", ScalarType::String),
        ("Blob", ScalarType::Blob),
        ("Bool", ScalarType::Bool),
        ("I32", ScalarType::I32),
        ("I64", ScalarType::I64),
        ("U32", ScalarType::U32),
        ("U64", ScalarType::U64),
        ("F32", ScalarType::F32),
        ("F64", ScalarType::F64),
        ("Date", ScalarType::Date),
        ("DateTime", ScalarType::DateTime),
    ];

    pub fn from_name(name: &str) -> Option<ScalarType> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
    }

    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, t)| *t == self)
            .map(|(n, _)| *n)
            .unwrap_or("?")
    }

    pub fn is_numeric(self) -> bool {
        matches!(
            self,
            ScalarType::I32
                | ScalarType::I64
                | ScalarType::U32
                | ScalarType::U64
                | ScalarType::F32
                | ScalarType::F64
        )
    }
}

/// The type of a property.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PropType {
    Scalar(ScalarType),
    /// Text restricted to the listed values (sorted, unique).
    Enum(Vec<String>),
    /// `[T]`: a list of a base scalar.
    List(ScalarType),
    /// `Vector(n)`: fixed-size list of f32.
    Vector(u32),
}

impl PropType {
    pub fn describe(&self) -> String {
        match self {
            PropType::Scalar(s) => s.name().to_string(),
            PropType::Enum(v) => format!("enum({})", v.join(", ")),
            PropType::List(s) => format!("[{}]", s.name()),
            PropType::Vector(n) => format!("Vector({n})"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AnnotationArg {
    Ident(String),
    Str(String),
    Number(String),
    Range(Option<String>, Option<String>),
    Keyword(String, Box<AnnotationArg>),
}

/// An annotation kept as metadata (`@description("...")`, unknown ones too).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Annotation {
    pub name: String,
    pub args: Vec<AnnotationArg>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Property {
    pub name: String,
    pub ty: PropType,
    pub nullable: bool,
    pub annotations: Vec<Annotation>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RangeBound {
    Unbounded,
    Inclusive(f64),
}

/// `@range(p, lo..hi)`: both bounds inclusive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RangeConstraint {
    pub property: String,
    pub lo: RangeBound,
    pub hi: RangeBound,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeType {
    pub name: String,
    pub properties: Vec<Property>,
    /// `@key` properties in declaration order; the node `id` is derived from them.
    pub key: Option<Vec<String>>,
    /// `@unique` tuples (the key is not repeated here).
    pub unique: Vec<Vec<String>>,
    pub indexes: Vec<Vec<String>>,
    pub ranges: Vec<RangeConstraint>,
    /// `@check(p, "regex")`: (property, pattern).
    pub checks: Vec<(String, String)>,
    pub implements: Vec<String>,
    pub annotations: Vec<Annotation>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EdgeType {
    pub name: String,
    pub from: String,
    pub to: String,
    pub properties: Vec<Property>,
    /// `@unique` tuples; may name `src` and `dst`.
    pub unique: Vec<Vec<String>>,
    pub indexes: Vec<Vec<String>>,
    /// `@card(min..max)`, kept as metadata.
    pub card: Option<(u64, Option<u64>)>,
    pub annotations: Vec<Annotation>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TypeKind {
    Node,
    Edge,
}

/// A resolved schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Catalog {
    pub nodes: Vec<NodeType>,
    pub edges: Vec<EdgeType>,
    /// Interface names (their properties are already copied into the nodes).
    pub interfaces: Vec<String>,
}

impl Catalog {
    pub fn node(&self, name: &str) -> Option<&NodeType> {
        self.nodes.iter().find(|n| n.name == name)
    }

    pub fn edge(&self, name: &str) -> Option<&EdgeType> {
        self.edges.iter().find(|e| e.name == name)
    }

    /// An edge type by name, ignoring ASCII case (NDJSON edge names).
    pub fn edge_ignore_case(&self, name: &str) -> Option<&EdgeType> {
        self.edge(name).or_else(|| {
            self.edges
                .iter()
                .find(|e| e.name.eq_ignore_ascii_case(name))
        })
    }

    pub fn kind_of(&self, name: &str) -> Option<TypeKind> {
        if self.node(name).is_some() {
            Some(TypeKind::Node)
        } else if self.edge(name).is_some() {
            Some(TypeKind::Edge)
        } else {
            None
        }
    }

    /// Properties of a node or edge type.
    pub fn properties(&self, name: &str) -> Option<&[Property]> {
        self.node(name)
            .map(|n| n.properties.as_slice())
            .or_else(|| self.edge(name).map(|e| e.properties.as_slice()))
    }

    /// All type names, nodes first, each in declaration order.
    pub fn type_names(&self) -> Vec<&str> {
        self.nodes
            .iter()
            .map(|n| n.name.as_str())
            .chain(self.edges.iter().map(|e| e.name.as_str()))
            .collect()
    }

    /// Edge types with the node type at either end.
    pub fn edges_touching<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a EdgeType> + 'a {
        self.edges
            .iter()
            .filter(move |e| e.from == node || e.to == node)
    }
}

/// Property names that collide with system columns (Lance's, and the
/// sequence and line columns of a transaction's spill files).
const RESERVED: [&str; 10] = [
    "id",
    "_omnigraph_seq",
    "_omnigraph_line",
    "_rowid",
    "_rowaddr",
    "_rowoffset",
    "_row_created_at_version",
    "_row_last_updated_at_version",
    "_distance",
    "_score",
];

fn err<T>(src: &str, at: &Spanned<impl Sized>, msg: impl Into<String>) -> Result<T, SchemaError> {
    Err(SchemaError::at(src, at.pos, at.width, msg))
}

fn suggest(name: &str, candidates: &[&str]) -> String {
    let lower = name.to_ascii_lowercase();
    candidates
        .iter()
        // Names more than 2 characters apart in length are more than 2
        // edits apart: skip them before the quadratic distance.
        .filter(|c| c.chars().count().abs_diff(lower.chars().count()) <= 2)
        .find(|c| {
            c.eq_ignore_ascii_case(name) || edit_distance(&c.to_ascii_lowercase(), &lower) <= 2
        })
        .map(|c| format!("; did you mean '{c}'?"))
        .unwrap_or_default()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

fn convert_arg(a: &ArgDecl) -> AnnotationArg {
    match a {
        ArgDecl::Ident(s) => AnnotationArg::Ident(s.clone()),
        ArgDecl::Str(s) => AnnotationArg::Str(s.clone()),
        ArgDecl::Number(s) => AnnotationArg::Number(s.clone()),
        ArgDecl::Range(lo, hi) => AnnotationArg::Range(
            lo.as_ref().map(|x| x.1.clone()),
            hi.as_ref().map(|x| x.1.clone()),
        ),
        ArgDecl::Keyword(k, v) => AnnotationArg::Keyword(k.clone(), Box::new(convert_arg(v))),
    }
}

fn metadata(a: &AnnotationDecl) -> Annotation {
    Annotation {
        name: a.name.value.clone(),
        args: a
            .args
            .iter()
            .flatten()
            .map(|s| convert_arg(&s.value))
            .collect(),
    }
}

/// Annotations with meaning to the engine; everything else is metadata.
const CONSTRAINTS: [&str; 6] = ["key", "unique", "index", "range", "check", "card"];

fn resolve_type(src: &str, ty: &Spanned<TypeExpr>) -> Result<PropType, SchemaError> {
    let names: Vec<&str> = ScalarType::ALL.iter().map(|(n, _)| *n).collect();
    match &ty.value {
        TypeExpr::Named(n) => match ScalarType::from_name(n) {
            Some(s) => Ok(PropType::Scalar(s)),
            None => err(src, ty, format!("unknown type '{n}'{}", suggest(n, &names))),
        },
        TypeExpr::List(inner) => match ScalarType::from_name(&inner.value) {
            Some(ScalarType::Blob) => err(src, inner, "lists of Blob are not supported"),
            Some(s) => Ok(PropType::List(s)),
            None if inner.value == "Vector" || inner.value == "enum" => err(
                src,
                inner,
                format!("lists of {} are not supported", inner.value),
            ),
            None => err(
                src,
                inner,
                format!(
                    "unknown list element type '{}'{}",
                    inner.value,
                    suggest(&inner.value, &names)
                ),
            ),
        },
        TypeExpr::Enum(values) => {
            let mut seen = BTreeSet::new();
            for v in values {
                if !seen.insert(v.value.clone()) {
                    return err(src, v, format!("duplicate enum value '{}'", v.value));
                }
            }
            Ok(PropType::Enum(seen.into_iter().collect()))
        }
        TypeExpr::Vector(n) => Ok(PropType::Vector(*n)),
    }
}

/// Argument list of a body constraint such as `@unique(a, b)`: property names.
fn ident_args(src: &str, a: &AnnotationDecl) -> Result<Vec<Spanned<String>>, SchemaError> {
    let Some(args) = &a.args else {
        return err(
            src,
            &a.name,
            format!(
                "@{} in a type body needs property names, e.g. @{}(a, b)",
                a.name.value, a.name.value
            ),
        );
    };
    if args.is_empty() {
        return err(
            src,
            &a.name,
            format!("@{} needs at least one property name", a.name.value),
        );
    }
    args.iter()
        .map(|s| match &s.value {
            ArgDecl::Ident(n) => Ok(Spanned {
                value: n.clone(),
                pos: s.pos,
                width: s.width,
            }),
            _ => err(src, s, format!("@{} takes property names", a.name.value)),
        })
        .collect()
}

struct TypeBody {
    properties: Vec<Property>,
    key: Option<Vec<String>>,
    unique: Vec<Vec<String>>,
    indexes: Vec<Vec<String>>,
    ranges: Vec<RangeConstraint>,
    checks: Vec<(String, String)>,
}

fn resolve_body(
    src: &str,
    kind: TypeKind,
    owner: &str,
    props: &[&PropDecl],
    inherited: usize,
    constraints: &[AnnotationDecl],
) -> Result<TypeBody, SchemaError> {
    // Slots, so an interface property a later declaration replaces is
    // dropped in O(1); names map to slots for O(1) lookups.
    let mut slots: Vec<Option<Property>> = Vec::new();
    let mut slot_of: HashMap<&str, usize> = HashMap::new();
    let inherited_names: HashSet<&str> = props[..inherited]
        .iter()
        .map(|q| q.name.value.as_str())
        .collect();
    // Per-property @key / @unique / @index, by slot.
    let mut key_slot: Option<usize> = None;
    let mut unique_slots: Vec<usize> = Vec::new();
    let mut index_slots: Vec<usize> = Vec::new();

    // The first `inherited` declarations come from interfaces; a later
    // declaration of the same name (type already checked equal) replaces them.
    for (idx, p) in props.iter().enumerate() {
        let name = &p.name.value;
        if RESERVED.contains(&name.as_str())
            || (kind == TypeKind::Edge && (name == "src" || name == "dst"))
        {
            return err(
                src,
                &p.name,
                format!("property name '{name}' is reserved for a system column of {owner}"),
            );
        }
        let ty = resolve_type(src, &p.ty)?;
        if let Some(&existing) = slot_of.get(name.as_str()) {
            if idx < inherited {
                continue; // declared by two interfaces with the same type
            }
            if !inherited_names.contains(name.as_str()) {
                return err(
                    src,
                    &p.name,
                    format!("duplicate property '{name}' in {owner}"),
                );
            }
            slots[existing] = None;
            if key_slot == Some(existing) {
                key_slot = None;
            }
        }
        let slot = slots.len();
        let mut annotations = Vec::new();
        for a in &p.annotations {
            let an = a.name.value.as_str();
            if ["key", "unique", "index"].contains(&an) {
                if a.args.is_some() {
                    return err(
                        src,
                        &a.name,
                        format!(
                            "@{an} on a property takes no arguments; write @{an}(...) in the type body for a tuple"
                        ),
                    );
                }
                if matches!(ty, PropType::Scalar(ScalarType::Blob)) {
                    return err(
                        src,
                        &a.name,
                        format!("@{an} is not allowed on Blob property '{name}'"),
                    );
                }
                // `Vector(n) @index` asks for a vector index (reference
                // schemas use it with @embed); keys and uniqueness need scalars.
                if matches!(ty, PropType::List(_))
                    || (matches!(ty, PropType::Vector(_)) && an != "index")
                {
                    return err(
                        src,
                        &a.name,
                        format!("@{an} is not allowed on list or vector property '{name}'"),
                    );
                }
            }
            match an {
                "key" => {
                    if kind == TypeKind::Edge {
                        return err(src, &a.name, "@key is only allowed on node properties");
                    }
                    if p.nullable {
                        return err(
                            src,
                            &a.name,
                            format!("@key property '{name}' cannot be nullable"),
                        );
                    }
                    if key_slot.is_some() {
                        return err(
                            src,
                            &a.name,
                            format!(
                                "{owner} has more than one @key; use @key(a, b) for a composite key"
                            ),
                        );
                    }
                    key_slot = Some(slot);
                }
                "unique" => unique_slots.push(slot),
                "index" => index_slots.push(slot),
                "range" | "check" | "card" => {
                    return err(
                        src,
                        &a.name,
                        format!("@{an} belongs in the type body or header, not on a property"),
                    );
                }
                _ => annotations.push(metadata(a)),
            }
        }
        slot_of.insert(name.as_str(), slot);
        slots.push(Some(Property {
            name: name.clone(),
            ty,
            nullable: p.nullable,
            annotations,
        }));
    }
    // Constraints of properties a later declaration replaced are dropped.
    let live = |i: &usize| slots[*i].as_ref().map(|p| vec![p.name.clone()]);
    let mut key: Option<Vec<String>> = key_slot.and_then(|i| live(&i));
    let mut unique: Vec<Vec<String>> = unique_slots.iter().filter_map(live).collect();
    let mut indexes: Vec<Vec<String>> = index_slots.iter().filter_map(live).collect();
    let properties: Vec<Property> = slots.into_iter().flatten().collect();
    let by_name: HashMap<&str, &Property> =
        properties.iter().map(|p| (p.name.as_str(), p)).collect();

    let find =
        |n: &Spanned<String>, allow_endpoints: bool| -> Result<Option<&Property>, SchemaError> {
            if allow_endpoints && (n.value == "src" || n.value == "dst") {
                return Ok(None);
            }
            match by_name.get(n.value.as_str()) {
                Some(p) => Ok(Some(*p)),
                None => {
                    let names: Vec<&str> = properties.iter().map(|p| p.name.as_str()).collect();
                    err(
                        src,
                        n,
                        format!(
                            "unknown property '{}' in {owner}{}",
                            n.value,
                            suggest(&n.value, &names)
                        ),
                    )
                }
            }
        };

    let mut ranges = Vec::new();
    let mut checks = Vec::new();
    for c in constraints {
        let an = c.name.value.as_str();
        match an {
            "key" => {
                if kind == TypeKind::Edge {
                    return err(src, &c.name, "@key is only allowed on node types");
                }
                if key.is_some() {
                    return err(src, &c.name, format!("{owner} has more than one @key"));
                }
                let mut cols = Vec::new();
                for n in ident_args(src, c)? {
                    let Some(p) = find(&n, false)? else { continue };
                    if p.nullable
                        || !matches!(p.ty, PropType::Scalar(s) if s != ScalarType::Blob)
                            && !matches!(p.ty, PropType::Enum(_))
                    {
                        return err(
                            src,
                            &n,
                            format!("@key property '{}' must be a non-nullable scalar", n.value),
                        );
                    }
                    cols.push(n.value);
                }
                key = Some(cols);
            }
            "unique" | "index" => {
                let mut cols = Vec::new();
                for n in ident_args(src, c)? {
                    if let Some(p) = find(&n, kind == TypeKind::Edge)?
                        && matches!(p.ty, PropType::Scalar(ScalarType::Blob))
                    {
                        return err(
                            src,
                            &n,
                            format!("@{an} is not allowed on Blob property '{}'", n.value),
                        );
                    }
                    cols.push(n.value);
                }
                if an == "unique" {
                    unique.push(cols)
                } else {
                    indexes.push(cols)
                }
            }
            "range" => {
                if kind == TypeKind::Edge {
                    return err(src, &c.name, "@range is only allowed on node types");
                }
                let args = c.args.as_deref().unwrap_or_default();
                let (Some(first), Some(second), 2) = (args.first(), args.get(1), args.len()) else {
                    return err(
                        src,
                        &c.name,
                        "@range takes a property and a range, e.g. @range(age, 0..150)",
                    );
                };
                let ArgDecl::Ident(prop) = &first.value else {
                    return err(
                        src,
                        first,
                        "@range's first argument must be a property name",
                    );
                };
                let pn = Spanned {
                    value: prop.clone(),
                    pos: first.pos,
                    width: first.width,
                };
                if let Some(p) = find(&pn, false)?
                    && !matches!(p.ty, PropType::Scalar(s) if s.is_numeric())
                {
                    return err(
                        src,
                        first,
                        format!(
                            "@range needs a numeric property; '{prop}' is {}",
                            p.ty.describe()
                        ),
                    );
                }
                let ArgDecl::Range(lo, hi) = &second.value else {
                    return err(
                        src,
                        second,
                        "@range's second argument must be a range such as 0..150, 0.. or ..10",
                    );
                };
                let bound = |b: &Option<(f64, String)>| {
                    b.as_ref()
                        .map_or(RangeBound::Unbounded, |(v, _)| RangeBound::Inclusive(*v))
                };
                if let (Some((l, _)), Some((h, _))) = (lo, hi)
                    && l > h
                {
                    return err(
                        src,
                        second,
                        "@range lower bound is greater than its upper bound",
                    );
                }
                ranges.push(RangeConstraint {
                    property: prop.clone(),
                    lo: bound(lo),
                    hi: bound(hi),
                });
            }
            "check" => {
                if kind == TypeKind::Edge {
                    return err(src, &c.name, "@check is only allowed on node types");
                }
                let args = c.args.as_deref().unwrap_or_default();
                let (Some(first), Some(second), 2) = (args.first(), args.get(1), args.len()) else {
                    return err(
                        src,
                        &c.name,
                        "@check takes a property and a pattern, e.g. @check(code, \"[A-Z]+\")",
                    );
                };
                let (ArgDecl::Ident(prop), ArgDecl::Str(pattern)) = (&first.value, &second.value)
                else {
                    return err(
                        src,
                        &c.name,
                        "@check takes a property name and a quoted regular expression",
                    );
                };
                let pn = Spanned {
                    value: prop.clone(),
                    pos: first.pos,
                    width: first.width,
                };
                if let Some(p) = find(&pn, false)?
                    && p.ty != PropType::Scalar(ScalarType::String)
                {
                    return err(
                        src,
                        first,
                        format!(
                            "@check needs a String property; '{prop}' is {}",
                            p.ty.describe()
                        ),
                    );
                }
                if let Err(e) = regex::Regex::new(pattern) {
                    // The regex crate's message spans lines; keep its last line, the reason.
                    let reason = e
                        .to_string()
                        .lines()
                        .last()
                        .unwrap_or_default()
                        .trim_start_matches("error: ")
                        .to_string();
                    return err(src, second, format!("invalid regular expression: {reason}"));
                }
                checks.push((prop.clone(), pattern.clone()));
            }
            "card" => {
                return err(
                    src,
                    &c.name,
                    "@card belongs on the edge header: edge E: A -> B @card(0..1)",
                );
            }
            _ => {}
        }
    }
    Ok(TypeBody {
        properties,
        key,
        unique,
        indexes,
        ranges,
        checks,
    })
}

pub(super) fn resolve(src: &str, file: SchemaFile) -> Result<Catalog, SchemaError> {
    let mut names: HashMap<String, Spanned<String>> = HashMap::new();
    let mut interfaces: HashMap<String, &InterfaceDecl> = HashMap::new();
    for d in &file.decls {
        let name = match d {
            Decl::Interface(i) => &i.name,
            Decl::Node(n) => &n.name,
            Decl::Edge(e) => &e.name,
        };
        if names.contains_key(&name.value) {
            return err(
                src,
                name,
                format!("type '{}' is declared more than once", name.value),
            );
        }
        names.insert(name.value.clone(), name.clone());
        if let Decl::Interface(i) = d {
            interfaces.insert(i.name.value.clone(), i);
        }
    }
    let node_names: Vec<&str> = file
        .decls
        .iter()
        .filter_map(|d| {
            if let Decl::Node(n) = d {
                Some(n.name.value.as_str())
            } else {
                None
            }
        })
        .collect();

    let node_set: HashSet<&str> = node_names.iter().copied().collect();
    let mut resolved_properties = 0usize;
    let mut catalog = Catalog {
        nodes: Vec::new(),
        edges: Vec::new(),
        interfaces: interfaces.keys().cloned().collect(),
    };
    catalog.interfaces.sort();
    for d in &file.decls {
        match d {
            Decl::Interface(i) => {
                // Checked here so errors in an unused interface are still reported.
                let props: Vec<&PropDecl> = i.props.iter().collect();
                resolve_body(src, TypeKind::Node, &i.name.value, &props, 0, &[])?;
            }
            Decl::Node(n) => {
                let mut all: Vec<&PropDecl> = Vec::new();
                let mut listed = HashSet::new();
                for imp in &n.implements {
                    let Some(i) = interfaces.get(&imp.value) else {
                        return err(src, imp, format!("'{}' is not an interface", imp.value));
                    };
                    if !listed.insert(imp.value.as_str()) {
                        return err(
                            src,
                            imp,
                            format!("'{}' is listed twice after implements", imp.value),
                        );
                    }
                    all.extend(i.props.iter());
                }
                let inherited = all.len();
                all.extend(n.props.iter());
                resolved_properties += all.len();
                if resolved_properties > limits::MAX_PROPERTIES {
                    return err(
                        src,
                        &n.name,
                        format!(
                            "the schema declares more than {} properties in all (counting each interface once per type that implements it)",
                            limits::MAX_PROPERTIES
                        ),
                    );
                }
                // Two declarations of one name (interface/interface or
                // interface/node) must agree on the type.
                let mut first: HashMap<&str, &PropDecl> = HashMap::new();
                for (idx, p) in all.iter().enumerate() {
                    let earlier = first.get(p.name.value.as_str()).copied();
                    if idx < inherited {
                        first.entry(p.name.value.as_str()).or_insert(*p);
                    }
                    if let Some(q) = earlier {
                        let (tp, tq) = (resolve_type(src, &p.ty)?, resolve_type(src, &q.ty)?);
                        if tp != tq || p.nullable != q.nullable {
                            return err(
                                src,
                                &p.name,
                                format!(
                                    "property '{}' must have the type it has in the interface ({}{})",
                                    q.name.value,
                                    tq.describe(),
                                    if q.nullable { "?" } else { "" }
                                ),
                            );
                        }
                    }
                }
                let mut annotations = Vec::new();
                for a in &n.annotations {
                    if CONSTRAINTS.contains(&a.name.value.as_str()) {
                        return err(
                            src,
                            &a.name,
                            format!("@{} is not allowed on a node header", a.name.value),
                        );
                    }
                    annotations.push(metadata(a));
                }
                let body = resolve_body(
                    src,
                    TypeKind::Node,
                    &n.name.value,
                    &all,
                    inherited,
                    &n.constraints,
                )?;
                catalog.nodes.push(NodeType {
                    name: n.name.value.clone(),
                    properties: body.properties,
                    key: body.key,
                    unique: body.unique,
                    indexes: body.indexes,
                    ranges: body.ranges,
                    checks: body.checks,
                    implements: n.implements.iter().map(|i| i.value.clone()).collect(),
                    annotations,
                });
            }
            Decl::Edge(e) => {
                resolved_properties += e.props.len();
                if resolved_properties > limits::MAX_PROPERTIES {
                    return err(
                        src,
                        &e.name,
                        format!(
                            "the schema declares more than {} properties in all",
                            limits::MAX_PROPERTIES
                        ),
                    );
                }
                for end in [&e.from, &e.to] {
                    if !node_set.contains(end.value.as_str()) {
                        let what = if names.contains_key(&end.value) {
                            "is not a node type"
                        } else {
                            "is not declared"
                        };
                        return err(
                            src,
                            end,
                            format!(
                                "edge {} refers to '{}', which {what}{}",
                                e.name.value,
                                end.value,
                                suggest(&end.value, &node_names)
                            ),
                        );
                    }
                }
                let mut card = None;
                let mut annotations = Vec::new();
                for a in &e.annotations {
                    match a.name.value.as_str() {
                        "card" => {
                            let args = a.args.as_deref().unwrap_or_default();
                            let parsed = match args {
                                [one] => match &one.value {
                                    ArgDecl::Range(Some((lo, _)), hi)
                                        if *lo >= 0.0
                                            && lo.fract() == 0.0
                                            && hi.as_ref().is_none_or(|(h, _)| {
                                                *h >= *lo && h.fract() == 0.0
                                            }) =>
                                    {
                                        Some((*lo as u64, hi.as_ref().map(|(h, _)| *h as u64)))
                                    }
                                    _ => None,
                                },
                                _ => None,
                            };
                            match parsed {
                                Some(c) => card = Some(c),
                                None => {
                                    return err(
                                        src,
                                        &a.name,
                                        "@card takes a range of whole numbers, e.g. @card(0..1) or @card(1..)",
                                    );
                                }
                            }
                        }
                        n if CONSTRAINTS.contains(&n) => {
                            return err(
                                src,
                                &a.name,
                                format!(
                                    "@{n} is not allowed on an edge header; put it in the edge body"
                                ),
                            );
                        }
                        _ => annotations.push(metadata(a)),
                    }
                }
                let props: Vec<&PropDecl> = e.props.iter().collect();
                let body = resolve_body(
                    src,
                    TypeKind::Edge,
                    &e.name.value,
                    &props,
                    0,
                    &e.constraints,
                )?;
                catalog.edges.push(EdgeType {
                    name: e.name.value.clone(),
                    from: e.from.value.clone(),
                    to: e.to.value.clone(),
                    properties: body.properties,
                    unique: body.unique,
                    indexes: body.indexes,
                    card,
                    annotations,
                });
            }
        }
    }
    if catalog.nodes.is_empty() {
        return Err(SchemaError::at(
            src,
            super::Pos { line: 1, col: 1 },
            1,
            "the schema declares no node type",
        ));
    }
    Ok(catalog)
}
