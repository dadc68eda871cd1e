//! Syntax tree of a `.pg` file, before names are resolved. Every element keeps
//! the position of its name so that resolution errors can point at it.

use super::lexer::Pos;

#[derive(Debug, Clone)]
pub struct Spanned<T> {
    pub value: T,
    pub pos: Pos,
    pub width: usize,
}

#[derive(Debug, Default)]
pub struct SchemaFile {
    pub decls: Vec<Decl>,
}

#[derive(Debug)]
pub enum Decl {
    Interface(InterfaceDecl),
    Node(NodeDecl),
    Edge(EdgeDecl),
}

#[derive(Debug)]
pub struct InterfaceDecl {
    pub name: Spanned<String>,
    pub props: Vec<PropDecl>,
}

#[derive(Debug)]
pub struct NodeDecl {
    pub name: Spanned<String>,
    pub annotations: Vec<AnnotationDecl>,
    pub implements: Vec<Spanned<String>>,
    pub props: Vec<PropDecl>,
    pub constraints: Vec<AnnotationDecl>,
}

#[derive(Debug)]
pub struct EdgeDecl {
    pub name: Spanned<String>,
    pub from: Spanned<String>,
    pub to: Spanned<String>,
    pub annotations: Vec<AnnotationDecl>,
    pub props: Vec<PropDecl>,
    pub constraints: Vec<AnnotationDecl>,
}

#[derive(Debug)]
pub struct PropDecl {
    pub name: Spanned<String>,
    pub ty: Spanned<TypeExpr>,
    pub nullable: bool,
    pub annotations: Vec<AnnotationDecl>,
}

#[derive(Debug, Clone)]
pub enum TypeExpr {
    Named(String),
    List(Spanned<String>),
    Enum(Vec<Spanned<String>>),
    Vector(u32),
}

#[derive(Debug, Clone)]
pub struct AnnotationDecl {
    pub name: Spanned<String>,
    /// `None` when written without parentheses (`@key`).
    pub args: Option<Vec<Spanned<ArgDecl>>>,
}

#[derive(Debug, Clone)]
pub enum ArgDecl {
    Ident(String),
    Str(String),
    Number(String),
    /// `lo..hi` with either side optional.
    Range(Option<(f64, String)>, Option<(f64, String)>),
    /// `name = value`
    Keyword(String, Box<ArgDecl>),
}
