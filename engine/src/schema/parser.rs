//! Recursive-descent parser for `.pg` files. Grammar (reference-compatible):
//!
//! ```text
//! file       := decl*
//! decl       := interface | node | edge
//! interface  := "interface" Name "{" prop* "}"
//! node       := "node" Name annotation* ["implements" Name ("," Name)*] "{" (prop | annotation)* "}"
//! edge       := "edge" Name ":" Name "->" Name annotation* ["{" (prop | annotation)* "}"]
//! prop       := ident ":" type ["?"] annotation*
//! type       := base | "[" base "]" | "enum" "(" value ("," value)* ")" | "Vector" "(" INT ")"
//! annotation := "@" ident ["(" [arg ("," arg)*] ")"]
//! arg        := value | ident "=" value
//! value      := ident | string | number | range
//! ```

use super::ast::*;
use super::lexer::{Tok, Token};
use super::{SchemaError, limits};

pub struct Parser<'a> {
    src: &'a str,
    tokens: Vec<Token>,
    i: usize,
}

type PResult<T> = Result<T, SchemaError>;

impl<'a> Parser<'a> {
    pub fn new(src: &'a str, tokens: Vec<Token>) -> Self {
        Parser { src, tokens, i: 0 }
    }

    fn peek(&self) -> &Token {
        // The token list always ends with Eof and we never advance past it.
        &self.tokens[self.i.min(self.tokens.len() - 1)]
    }

    fn peek_at(&self, n: usize) -> &Token {
        &self.tokens[(self.i + n).min(self.tokens.len() - 1)]
    }

    fn next(&mut self) -> Token {
        let t = self.peek().clone();
        if t.tok != Tok::Eof {
            self.i += 1;
        }
        t
    }

    /// The line of the last token consumed.
    fn last_line(&self) -> usize {
        self.i
            .checked_sub(1)
            .and_then(|i| self.tokens.get(i))
            .map_or(0, |t| t.pos.line)
    }

    fn err_here(&self, msg: impl Into<String>) -> SchemaError {
        let t = self.peek();
        SchemaError::at(self.src, t.pos, t.width, msg)
    }

    fn expect(&mut self, want: Tok, context: &str) -> PResult<Token> {
        if self.peek().tok == want {
            Ok(self.next())
        } else {
            let found = self.peek().tok.describe();
            Err(self.err_here(format!(
                "expected {} {context}, found {found}",
                want.describe()
            )))
        }
    }

    fn ident(&mut self, what: &str) -> PResult<Spanned<String>> {
        let t = self.peek().clone();
        match t.tok {
            Tok::Ident(s) => {
                self.next();
                Ok(Spanned {
                    value: s,
                    pos: t.pos,
                    width: t.width,
                })
            }
            other => Err(self.err_here(format!("expected {what}, found {}", other.describe()))),
        }
    }

    fn type_name(&mut self, what: &str) -> PResult<Spanned<String>> {
        let name = self.ident(what)?;
        let first = name.value.chars().next().unwrap_or('a');
        if !first.is_ascii_uppercase()
            || !name
                .value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(SchemaError::at(
                self.src,
                name.pos,
                name.width,
                format!(
                    "type name '{}' must start with an uppercase ASCII letter and use only letters, digits and '_'",
                    name.value
                ),
            ));
        }
        Ok(name)
    }

    pub fn parse_file(mut self) -> PResult<SchemaFile> {
        let mut file = SchemaFile::default();
        loop {
            let t = self.peek().clone();
            match &t.tok {
                Tok::Eof => return Ok(file),
                Tok::Ident(k) if k == "node" => file.decls.push(Decl::Node(self.node()?)),
                Tok::Ident(k) if k == "edge" => file.decls.push(Decl::Edge(self.edge()?)),
                Tok::Ident(k) if k == "interface" => {
                    file.decls.push(Decl::Interface(self.interface()?))
                }
                other => {
                    return Err(self.err_here(format!(
                        "expected 'node', 'edge' or 'interface', found {}",
                        other.describe()
                    )));
                }
            }
        }
    }

    fn interface(&mut self) -> PResult<InterfaceDecl> {
        self.next();
        let name = self.type_name("an interface name")?;
        self.expect(Tok::LBrace, "to open the interface body")?;
        let mut props = Vec::new();
        while self.peek().tok != Tok::RBrace {
            if self.peek().tok == Tok::Eof {
                return Err(
                    self.err_here(format!("missing '}}' to close interface {}", name.value))
                );
            }
            props.push(self.prop()?);
        }
        self.next();
        Ok(InterfaceDecl { name, props })
    }

    fn node(&mut self) -> PResult<NodeDecl> {
        self.next();
        let name = self.type_name("a node type name")?;
        let annotations = self.annotations()?;
        let mut implements = Vec::new();
        if matches!(&self.peek().tok, Tok::Ident(k) if k == "implements") {
            self.next();
            implements.push(self.type_name("an interface name")?);
            while self.peek().tok == Tok::Comma {
                self.next();
                implements.push(self.type_name("an interface name")?);
            }
        }
        self.expect(
            Tok::LBrace,
            &format!("to open the body of node {}", name.value),
        )?;
        let (props, constraints) = self.body(&name.value)?;
        Ok(NodeDecl {
            name,
            annotations,
            implements,
            props,
            constraints,
        })
    }

    fn edge(&mut self) -> PResult<EdgeDecl> {
        self.next();
        let name = self.type_name("an edge type name")?;
        self.expect(
            Tok::Colon,
            &format!("after edge name {} (edge E: From -> To)", name.value),
        )?;
        let from = self.type_name("the source node type")?;
        self.expect(Tok::Arrow, "between the source and target node types")?;
        let to = self.type_name("the target node type")?;
        let annotations = self.annotations()?;
        let (props, constraints) = if self.peek().tok == Tok::LBrace {
            self.next();
            self.body(&name.value)?
        } else {
            (Vec::new(), Vec::new())
        };
        Ok(EdgeDecl {
            name,
            from,
            to,
            annotations,
            props,
            constraints,
        })
    }

    /// Properties and body constraints up to and including the closing brace.
    fn body(&mut self, owner: &str) -> PResult<(Vec<PropDecl>, Vec<AnnotationDecl>)> {
        let mut props = Vec::new();
        let mut constraints = Vec::new();
        loop {
            match self.peek().tok {
                Tok::RBrace => {
                    self.next();
                    return Ok((props, constraints));
                }
                Tok::Eof => return Err(self.err_here(format!("missing '}}' to close {owner}"))),
                Tok::At => constraints.push(self.annotation()?),
                _ => props.push(self.prop()?),
            }
        }
    }

    fn prop(&mut self) -> PResult<PropDecl> {
        let name = match self.peek().tok.clone() {
            Tok::Ident(_) => self.ident("a property name")?,
            other => {
                return Err(self.err_here(format!(
                    "expected a property name or '}}', found {}",
                    other.describe()
                )));
            }
        };
        self.expect(Tok::Colon, &format!("after property name '{}'", name.value))?;
        let ty = self.type_expr()?;
        let nullable = if self.peek().tok == Tok::Question {
            self.next();
            true
        } else {
            false
        };
        // A property's annotations continue the line its declaration ends on
        // (an enum may span lines); an annotation that starts a later line
        // is a body constraint (`@range(...)`, `@unique(a, b)`).
        let mut annotations = Vec::new();
        while self.peek().tok == Tok::At && self.peek().pos.line == self.last_line() {
            annotations.push(self.annotation()?);
        }
        Ok(PropDecl {
            name,
            ty,
            nullable,
            annotations,
        })
    }

    fn type_expr(&mut self) -> PResult<Spanned<TypeExpr>> {
        let t = self.peek().clone();
        match t.tok {
            Tok::LBracket => {
                self.next();
                let inner = self.ident("a list element type")?;
                self.expect(Tok::RBracket, "to close the list type")?;
                Ok(Spanned {
                    value: TypeExpr::List(inner),
                    pos: t.pos,
                    width: t.width,
                })
            }
            Tok::Ident(ref k) if k == "enum" => {
                self.next();
                self.expect(Tok::LParen, "after 'enum'")?;
                let mut values = Vec::new();
                loop {
                    values.push(self.enum_value()?);
                    match self.peek().tok {
                        Tok::Comma => {
                            self.next();
                        }
                        Tok::RParen => {
                            self.next();
                            break;
                        }
                        _ => return Err(self.err_here("expected ',' or ')' in enum value list")),
                    }
                }
                Ok(Spanned {
                    value: TypeExpr::Enum(values),
                    pos: t.pos,
                    width: 4,
                })
            }
            Tok::Ident(ref k) if k == "Vector" => {
                self.next();
                self.expect(Tok::LParen, "after 'Vector'")?;
                let n = self.peek().clone();
                let dim = match &n.tok {
                    Tok::Number(s) => s
                        .parse::<u32>()
                        .ok()
                        .filter(|d| (1..=limits::MAX_VECTOR_DIM).contains(d)),
                    _ => None,
                };
                let Some(dim) = dim else {
                    return Err(self.err_here(format!(
                        "Vector dimension must be a whole number from 1 to {}",
                        limits::MAX_VECTOR_DIM
                    )));
                };
                self.next();
                self.expect(Tok::RParen, "to close Vector(...)")?;
                Ok(Spanned {
                    value: TypeExpr::Vector(dim),
                    pos: t.pos,
                    width: 6,
                })
            }
            Tok::Ident(k) => {
                self.next();
                Ok(Spanned {
                    value: TypeExpr::Named(k),
                    pos: t.pos,
                    width: t.width,
                })
            }
            other => Err(self.err_here(format!("expected a type, found {}", other.describe()))),
        }
    }

    /// Enum values are `[A-Za-z0-9_-]+`, written without spaces, so `b-c` is
    /// three touching tokens.
    fn enum_value(&mut self) -> PResult<Spanned<String>> {
        let first = self.peek().clone();
        let mut value = String::new();
        let mut end = first.start;
        while matches!(self.peek().tok, Tok::Ident(_) | Tok::Number(_) | Tok::Minus)
            && (value.is_empty() || self.peek().start == end)
        {
            let t = self.next();
            match t.tok {
                Tok::Ident(s) | Tok::Number(s) => value.push_str(&s),
                Tok::Minus => value.push('-'),
                _ => {}
            }
            end = t.end;
        }
        if value.is_empty() {
            return Err(self.err_here(format!(
                "expected an enum value (letters, digits, '_' or '-'), found {}",
                first.tok.describe()
            )));
        }
        if value.len() > limits::MAX_NAME_BYTES {
            return Err(SchemaError::at(
                self.src,
                first.pos,
                end - first.start,
                format!(
                    "enum value is {} bytes long; values may be at most {} bytes",
                    value.len(),
                    limits::MAX_NAME_BYTES
                ),
            ));
        }
        if !value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(SchemaError::at(
                self.src,
                first.pos,
                end - first.start,
                format!("enum value '{value}' may use only ASCII letters, digits, '_' and '-'"),
            ));
        }
        Ok(Spanned {
            value,
            pos: first.pos,
            width: end - first.start,
        })
    }

    fn annotations(&mut self) -> PResult<Vec<AnnotationDecl>> {
        let mut out = Vec::new();
        while self.peek().tok == Tok::At {
            out.push(self.annotation()?);
        }
        Ok(out)
    }

    fn annotation(&mut self) -> PResult<AnnotationDecl> {
        let at = self.next();
        let t = self.peek().clone();
        let name = match t.tok {
            // `@card(0..1)`: the name must touch the '@'.
            Tok::Ident(s) if t.start == at.end => {
                self.next();
                Spanned {
                    value: s,
                    pos: at.pos,
                    width: t.width + 1,
                }
            }
            _ => {
                return Err(SchemaError::at(
                    self.src,
                    at.pos,
                    1,
                    "expected an annotation name after '@'",
                ));
            }
        };
        if self.peek().tok != Tok::LParen {
            return Ok(AnnotationDecl { name, args: None });
        }
        self.next();
        let mut args = Vec::new();
        if self.peek().tok == Tok::RParen {
            self.next();
            return Ok(AnnotationDecl {
                name,
                args: Some(args),
            });
        }
        loop {
            args.push(self.arg()?);
            match self.peek().tok {
                Tok::Comma => {
                    self.next();
                }
                Tok::RParen => {
                    self.next();
                    break;
                }
                _ => {
                    let found = self.peek().tok.describe();
                    return Err(self.err_here(format!(
                        "expected ',' or ')' in the arguments of @{}, found {found}",
                        name.value
                    )));
                }
            }
        }
        Ok(AnnotationDecl {
            name,
            args: Some(args),
        })
    }

    fn number(&mut self) -> PResult<Option<(f64, String)>> {
        let start = self.peek().clone();
        let negative = if start.tok == Tok::Minus {
            self.next();
            true
        } else {
            false
        };
        let t = self.peek().clone();
        match t.tok {
            Tok::Number(s) => {
                self.next();
                let text = if negative { format!("-{s}") } else { s };
                let v: f64 = text.parse().map_err(|_| {
                    SchemaError::at(self.src, start.pos, t.width, "malformed number")
                })?;
                Ok(Some((v, text)))
            }
            _ if negative => Err(self.err_here("expected a number after '-'")),
            _ => Ok(None),
        }
    }

    /// One annotation argument. The value of a keyword argument
    /// (`model = "x"`) is itself a plain argument, never another keyword:
    /// the grammar is flat, so no input can nest the parser's recursion.
    fn arg(&mut self) -> PResult<Spanned<ArgDecl>> {
        self.arg_inner(true)
    }

    fn arg_inner(&mut self, keyword_allowed: bool) -> PResult<Spanned<ArgDecl>> {
        let t = self.peek().clone();
        let pos = t.pos;
        let value = match t.tok {
            Tok::Str(s) => {
                self.next();
                ArgDecl::Str(s)
            }
            Tok::Ident(s) => {
                self.next();
                if self.peek().tok == Tok::Eq {
                    if !keyword_allowed {
                        return Err(self.err_here(
                            "a keyword argument's value is a string, number or name, not another 'name = value'",
                        ));
                    }
                    self.next();
                    let v = self.arg_inner(false)?;
                    ArgDecl::Keyword(s, Box::new(v.value))
                } else {
                    ArgDecl::Ident(s)
                }
            }
            Tok::DotDot => {
                self.next();
                let hi = self.number()?;
                if hi.is_none() {
                    return Err(self.err_here("expected an upper bound after '..'"));
                }
                ArgDecl::Range(None, hi)
            }
            Tok::Number(_) | Tok::Minus => {
                let lo = self.number()?;
                if self.peek().tok == Tok::DotDot {
                    self.next();
                    let hi = self.number()?;
                    ArgDecl::Range(lo, hi)
                } else {
                    match lo {
                        Some((_, s)) => ArgDecl::Number(s),
                        None => return Err(self.err_here("expected a number")),
                    }
                }
            }
            other => {
                return Err(self.err_here(format!(
                    "expected an annotation argument, found {}",
                    other.describe()
                )));
            }
        };
        let width = self.peek_at(0).start.saturating_sub(t.start).max(1);
        Ok(Spanned { value, pos, width })
    }
}
