//! Tokens of the `.pg` schema language, each with its position so that every
//! error can point at the offending text.

use super::SchemaError;

/// A position in the schema source: 1-based line and column (in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    /// Identifiers and keywords (`node`, `String`, `name`, ...).
    Ident(String),
    /// A numeric literal as written (`12`, `-40.0` is `Minus` + `Number`).
    Number(String),
    /// A double-quoted string literal, unescaped.
    Str(String),
    LBrace,
    RBrace,
    LParen,
    RParen,
    LBracket,
    RBracket,
    Colon,
    Comma,
    Question,
    At,
    Arrow,
    DotDot,
    Minus,
    Eq,
    Eof,
}

impl Tok {
    pub fn describe(&self) -> String {
        match self {
            Tok::Ident(s) => format!("'{s}'"),
            Tok::Number(s) => format!("number {s}"),
            Tok::Str(_) => "a string".to_string(),
            Tok::LBrace => "'{'".into(),
            Tok::RBrace => "'}'".into(),
            Tok::LParen => "'('".into(),
            Tok::RParen => "')'".into(),
            Tok::LBracket => "'['".into(),
            Tok::RBracket => "']'".into(),
            Tok::Colon => "':'".into(),
            Tok::Comma => "','".into(),
            Tok::Question => "'?'".into(),
            Tok::At => "'@'".into(),
            Tok::Arrow => "'->'".into(),
            Tok::DotDot => "'..'".into(),
            Tok::Minus => "'-'".into(),
            Tok::Eq => "'='".into(),
            Tok::Eof => "end of file".into(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Token {
    pub tok: Tok,
    pub pos: Pos,
    /// Width of the token in characters (for the caret line).
    pub width: usize,
    /// Character offset of the token's end; lets the parser tell whether two
    /// tokens touch (enum values such as `b-c` are written without spaces).
    pub end: usize,
    pub start: usize,
}

pub fn tokenize(src: &str) -> Result<Vec<Token>, SchemaError> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line, mut col) = (0usize, 1usize, 1usize);
    macro_rules! bump {
        () => {{
            if chars[i] == '\n' {
                line += 1;
                col = 1;
            } else {
                col += 1;
            }
            i += 1;
        }};
    }
    while i < chars.len() {
        let c = chars[i];
        let pos = Pos { line, col };
        let start = i;
        if c.is_whitespace() {
            bump!();
            continue;
        }
        if c == '/' && chars.get(i + 1) == Some(&'/') {
            while i < chars.len() && chars[i] != '\n' {
                bump!();
            }
            continue;
        }
        if c == '/' && chars.get(i + 1) == Some(&'*') {
            bump!();
            bump!();
            loop {
                if i >= chars.len() {
                    return Err(SchemaError::at(src, pos, 2, "unterminated block comment"));
                }
                if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    bump!();
                    bump!();
                    break;
                }
                bump!();
            }
            continue;
        }
        if c == '=' && chars.get(i + 1) == Some(&'>') {
            return Err(SchemaError::at(
                src,
                pos,
                2,
                "'=>' is not an arrow; write '->'",
            ));
        }
        let simple = match c {
            '{' => Some(Tok::LBrace),
            '}' => Some(Tok::RBrace),
            '(' => Some(Tok::LParen),
            ')' => Some(Tok::RParen),
            '[' => Some(Tok::LBracket),
            ']' => Some(Tok::RBracket),
            ':' => Some(Tok::Colon),
            ',' => Some(Tok::Comma),
            '?' => Some(Tok::Question),
            '@' => Some(Tok::At),
            '=' => Some(Tok::Eq),
            _ => None,
        };
        if let Some(tok) = simple {
            bump!();
            out.push(Token {
                tok,
                pos,
                width: 1,
                start,
                end: i,
            });
            continue;
        }
        if c == '-' {
            bump!();
            if i < chars.len() && chars[i] == '>' {
                bump!();
                out.push(Token {
                    tok: Tok::Arrow,
                    pos,
                    width: 2,
                    start,
                    end: i,
                });
            } else {
                out.push(Token {
                    tok: Tok::Minus,
                    pos,
                    width: 1,
                    start,
                    end: i,
                });
            }
            continue;
        }
        if c == '.' {
            if chars.get(i + 1) == Some(&'.') {
                bump!();
                bump!();
                out.push(Token {
                    tok: Tok::DotDot,
                    pos,
                    width: 2,
                    start,
                    end: i,
                });
                continue;
            }
            return Err(SchemaError::at(
                src,
                pos,
                1,
                "unexpected '.'; did you mean '..'?",
            ));
        }
        if c.is_ascii_digit() {
            let mut s = String::new();
            while i < chars.len() && chars[i].is_ascii_digit() {
                s.push(chars[i]);
                bump!();
            }
            // A fraction only when a digit follows the dot: `0..10` is a range.
            if i + 1 < chars.len() && chars[i] == '.' && chars[i + 1].is_ascii_digit() {
                s.push('.');
                bump!();
                while i < chars.len() && chars[i].is_ascii_digit() {
                    s.push(chars[i]);
                    bump!();
                }
            }
            let width = s.chars().count();
            out.push(Token {
                tok: Tok::Number(s),
                pos,
                width,
                start,
                end: i,
            });
            continue;
        }
        if c.is_alphabetic() || c == '_' {
            let mut s = String::new();
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                s.push(chars[i]);
                bump!();
            }
            let width = s.chars().count();
            if s.len() > super::limits::MAX_NAME_BYTES {
                return Err(SchemaError::at(
                    src,
                    pos,
                    width,
                    format!(
                        "name is {} bytes long; names may be at most {} bytes",
                        s.len(),
                        super::limits::MAX_NAME_BYTES
                    ),
                ));
            }
            out.push(Token {
                tok: Tok::Ident(s),
                pos,
                width,
                start,
                end: i,
            });
            continue;
        }
        if c == '"' {
            bump!();
            let mut s = String::new();
            loop {
                if i >= chars.len() || chars[i] == '\n' {
                    return Err(SchemaError::at(src, pos, 1, "unterminated string literal"));
                }
                let ch = chars[i];
                if ch == '"' {
                    bump!();
                    break;
                }
                if ch == '\\' && i + 1 < chars.len() {
                    bump!();
                    let esc = chars[i];
                    s.push(match esc {
                        'n' => '\n',
                        't' => '\t',
                        other => other,
                    });
                    bump!();
                    continue;
                }
                s.push(ch);
                bump!();
            }
            let width = i - start;
            out.push(Token {
                tok: Tok::Str(s),
                pos,
                width,
                start,
                end: i,
            });
            continue;
        }
        let hint = if c == '#' {
            "'#' does not start a comment here; use '//'".to_string()
        } else {
            format!("unexpected character '{c}'")
        };
        return Err(SchemaError::at(src, pos, 1, hint));
    }
    out.push(Token {
        tok: Tok::Eof,
        pos: Pos { line, col },
        width: 1,
        start: i,
        end: i,
    });
    Ok(out)
}
