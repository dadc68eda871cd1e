use super::*;

const SOCIAL: &str = include_str!("../../../examples/social/schema.pg");
const TEST: &str = include_str!("../../tests/fixtures/test.pg");
const CONTEXT: &str = include_str!("../../tests/fixtures/context.pg");

#[test]
fn sample_schemas_parse() {
    let c = parse_schema(TEST).unwrap();
    assert_eq!(
        c.type_names(),
        vec!["Person", "Company", "Knows", "WorksAt"]
    );
    let person = c.node("Person").unwrap();
    assert_eq!(person.key, Some(vec!["name".to_string()]));
    assert!(
        person
            .properties
            .iter()
            .any(|p| p.name == "age" && p.nullable && p.ty == PropType::Scalar(ScalarType::I32))
    );
    let knows = c.edge("Knows").unwrap();
    assert_eq!(
        (knows.from.as_str(), knows.to.as_str()),
        ("Person", "Person")
    );
    assert!(c.edge("WorksAt").unwrap().properties.is_empty());
}

#[test]
fn social_example_parses_with_interfaces_enums_and_lists() {
    let c = parse_schema(SOCIAL).unwrap();
    let person = c.node("Person").unwrap();
    let names: Vec<&str> = person.properties.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "name", "slug", "age", "email", "status", "tags", "joinedOn", "score"
        ]
    );
    let status = person
        .properties
        .iter()
        .find(|p| p.name == "status")
        .unwrap();
    assert_eq!(
        status.ty,
        PropType::Enum(vec!["active".into(), "on-leave".into(), "retired".into()])
    );
    assert_eq!(person.unique, vec![vec!["email".to_string()]]);
    assert_eq!(
        c.edge("Knows").unwrap().unique,
        vec![vec!["src".to_string(), "dst".to_string()]]
    );
    assert_eq!(c.edge("WorksAt").unwrap().card, Some((0, Some(1))));
    assert_eq!(c.node("Company").unwrap().ranges.len(), 1);
}

#[test]
fn reference_style_schema_parses_unchanged() {
    let c = parse_schema(CONTEXT).unwrap();
    let signal = c.node("Signal").unwrap();
    assert_eq!(signal.key, Some(vec!["slug".into()]));
    assert_eq!(
        signal.checks,
        vec![("code".to_string(), "[A-Z]{3}-[0-9]+".to_string())]
    );
    assert_eq!(signal.ranges[0].lo, RangeBound::Inclusive(-40.0));
    assert_eq!(signal.ranges[1].hi, RangeBound::Unbounded);
    assert!(signal.annotations.iter().any(|a| a.name == "description"));
    let ty = |n: &str| {
        signal
            .properties
            .iter()
            .find(|p| p.name == n)
            .unwrap()
            .ty
            .clone()
    };
    assert_eq!(ty("embedding"), PropType::Vector(4));
    assert_eq!(ty("weights"), PropType::List(ScalarType::F32));
    assert_eq!(ty("raw"), PropType::Scalar(ScalarType::Blob));
    let decision = c.node("Decision").unwrap();
    assert_eq!(decision.properties[0].name, "slug");
    assert!(decision.properties.iter().any(|p| p.name == "description"));
    assert_eq!(
        c.node("Account").unwrap().key,
        Some(vec!["region".into(), "number".into()])
    );
    assert_eq!(c.edge("Authored").unwrap().card, Some((1, None)));
    let full_name = &c.node("Account").unwrap().properties[0];
    assert_eq!(full_name.annotations[0].name, "rename_from");
}

#[test]
fn unicode_in_comments_and_blank_lines() {
    let src =
        "// ünïcödé ✓ 東京\n\n\n/* 🚀 block\n   comment */\nnode A { x: I64 // trailing ✓\n}\n";
    let c = parse_schema(src).unwrap();
    assert_eq!(c.nodes[0].properties[0].name, "x");
}

/// Each malformed schema, the line and column the error must point at, and a
/// fragment of the message.
const MALFORMED: &[(&str, usize, usize, &str)] = &[
    ("node Person {\n    name String\n}", 2, 10, "expected ':'"),
    (
        "node Person {\n    name: Strin\n}",
        2,
        11,
        "did you mean 'String'",
    ),
    ("node Person {\n    name: String\n", 3, 1, "missing '}'"),
    ("node person { x: I32 }", 1, 6, "uppercase"),
    (
        "node A { x: I32 }\nnode A { y: I32 }",
        2,
        6,
        "more than once",
    ),
    ("node A { x: I32\n  x: I64 }", 2, 3, "duplicate property"),
    ("node A { x: I32 }\nedge E: A -> B", 2, 14, "not declared"),
    ("node A { x: enum(a, b, a) }", 1, 24, "duplicate enum value"),
    ("node A { x: String? @key }", 1, 21, "cannot be nullable"),
    ("node A { x: [String] @key }", 1, 22, "not allowed on list"),
    ("node A { id: String }", 1, 10, "reserved"),
    ("node A { _omnigraph_line: I64 }", 1, 10, "reserved"),
    ("# comment\nnode A { x: I32 }", 1, 1, "'#'"),
    (
        "node A { x: I32 }\nedge E: A -> A { src: String }",
        2,
        18,
        "reserved",
    ),
    (
        "node A { x: I32 @range(x, 0..1) }",
        1,
        17,
        "belongs in the type body",
    ),
    (
        "node A {\n  x: I32\n  @range(y, 0..10)\n}",
        3,
        10,
        "unknown property 'y'",
    ),
    (
        "node A {\n  x: String\n  @check(x, \"[a-\")\n}",
        3,
        13,
        "invalid regular expression",
    ),
    ("node A { x: I32 }\nedge E A -> A", 2, 8, "expected ':'"),
    ("node A { x: I32 }\nedge E: A => A", 2, 11, "write '->'"),
    ("node A { v: Vector(0) }", 1, 20, "Vector dimension"),
    (
        "node A { x: I32 }\nedge E: A -> A @card(x)",
        2,
        16,
        "@card takes a range",
    ),
    ("node A { x: I32 } oops", 1, 19, "expected 'node'"),
    (
        "node A { x: I32 /* never closed }",
        1,
        17,
        "unterminated block comment",
    ),
    (
        "node A @key { x: I32 }",
        1,
        8,
        "not allowed on a node header",
    ),
    ("node A implements B { x: I32 }", 1, 19, "not an interface"),
    (
        "node A { s: String @check }",
        1,
        20,
        "belongs in the type body",
    ),
    ("node A { x: [Vector] }", 1, 14, "not supported"),
    ("node A { x: I32 @key(x) }", 1, 17, "takes no arguments"),
    ("", 1, 1, "no node type"),
];

#[test]
fn malformed_schemas_give_positioned_errors() {
    assert!(MALFORMED.len() >= 15);
    let mut failures = Vec::new();
    for (src, line, col, fragment) in MALFORMED {
        let e = match parse_schema(src) {
            Ok(_) => {
                failures.push(format!("{src:?}: accepted"));
                continue;
            }
            Err(e) => e,
        };
        if !e.message.contains(fragment) || (e.line, e.col) != (*line, *col) {
            failures.push(format!(
                "{src:?}: got {}:{} {:?}, want {line}:{col} ~{fragment:?}",
                e.line, e.col, e.message
            ));
            continue;
        }
        let rendered = e.to_string();
        let caret_line = rendered.lines().last().unwrap_or_default();
        let source_line = rendered.lines().nth(2).unwrap_or_default();
        // The caret sits under the reported column of the quoted source line.
        let prefix = source_line.find(" | ").map(|i| i + 3).unwrap_or(0);
        let caret_at = caret_line.find('^').unwrap_or(0);
        if caret_line.get(prefix..caret_at).map(|p| p.chars().count()) != Some(col - 1) {
            failures.push(format!("{src:?}: caret misplaced:\n{rendered}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn caret_rendering_is_readable() {
    let e = parse_schema("node Person {\n    name: Strng\n}").unwrap_err();
    assert_eq!(
        e.to_string(),
        "schema error at line 2, column 11: unknown type 'Strng'; did you mean 'String'?\n  |\n2 |     name: Strng\n  |           ^^^^^"
    );
}

#[test]
fn arbitrary_input_never_panics() {
    // Every prefix of the sample schemas: truncated input must be an error, not a panic.
    for src in [SOCIAL, CONTEXT] {
        for (i, _) in src.char_indices() {
            let _ = parse_schema(&src[..i]);
        }
    }
}

/// Generated inputs: the parser returns a catalog or a positioned error for
/// anything, never panics, and its errors render. 100,000 cases of each kind
/// by default (`OMNIGRAPH_FUZZ_CASES`, `OMNIGRAPH_FUZZ_SEED` to vary).
mod generated {
    use super::*;
    use proptest::prelude::*;

    const WORDS: &[&str] = &[
        "node",
        "edge",
        "interface",
        "implements",
        "enum",
        "Vector",
        "String",
        "I32",
        "I64",
        "U32",
        "U64",
        "F32",
        "F64",
        "Bool",
        "Date",
        "DateTime",
        "Blob",
        "{",
        "}",
        "(",
        ")",
        "[",
        "]",
        ":",
        ",",
        "?",
        "@",
        "->",
        "..",
        "-",
        "=",
        "\"s\"",
        "\"\\\"",
        "12",
        "0",
        "1.5",
        "4294967296",
        "99999999999999999999",
        "key",
        "unique",
        "index",
        "range",
        "check",
        "card",
        "embed",
        "description",
        "Person",
        "Knows",
        "Company",
        "name",
        "age",
        "id",
        "src",
        "dst",
        "_x",
        "// c\n",
        "/* c */",
        "/*",
        "\n",
        " ",
        "\t",
        "#",
        "=>",
        ".",
        "é",
        "model",
        "a-b",
    ];

    fn check(src: &str) {
        match parse_schema(src) {
            Ok(c) => {
                for t in c.type_names() {
                    assert!(c.properties(t).is_some(), "{t} listed without properties");
                }
            }
            Err(e) => {
                assert!(e.line >= 1 && e.col >= 1, "error without a position: {e:?}");
                let _ = e.to_string();
            }
        }
    }

    proptest! {
        #![proptest_config(crate::testing::fuzz_config())]

        #[test]
        fn any_text(src in "\\PC{0,200}") {
            check(&src);
        }

        #[test]
        fn token_soup(words in prop::collection::vec(prop::sample::select(WORDS), 0..80)) {
            check(&words.join(" "));
            check(&words.concat());
        }

        #[test]
        fn edits_of_real_schemas(
            which in 0..3usize,
            edits in prop::collection::vec((any::<prop::sample::Index>(), 0..3u8, prop::sample::select(WORDS)), 1..6),
        ) {
            let mut src: Vec<char> = [TEST, SOCIAL, CONTEXT][which].chars().collect();
            for (at, op, word) in edits {
                let i = at.index(src.len() + 1);
                match op {
                    0 => { src.splice(i..i, word.chars()); }
                    1 if i < src.len() => { src.remove(i); }
                    _ if i < src.len() => { src.truncate(i); }
                    _ => {}
                }
            }
            check(&src.into_iter().collect::<String>());
        }
    }
}

#[test]
fn deep_and_huge_inputs_are_refused_not_crashing() {
    // 300,000 nested keyword arguments: a flat grammar has no nesting to follow.
    let deep = format!("node A {{ x: String @m({}1) }}", "k = ".repeat(300_000));
    let e = parse_schema(&deep).unwrap_err();
    assert!(e.message.contains("not another 'name = value'"), "{e}");
    let e = parse_schema("node A { v: Vector(2000000000) }").unwrap_err();
    assert!(e.message.contains("from 1 to 65536"), "{e}");
    assert!(parse_schema("node A { v: Vector(65536) }").is_ok());
    let long = "n".repeat(limits::MAX_NAME_BYTES + 1);
    let e = parse_schema(&format!("node A {{ {long}: String }}")).unwrap_err();
    assert!(e.message.contains("at most 256 bytes"), "{e}");
    let e = parse_schema(&format!("node A {{ s: enum(a{}) }}", "-a".repeat(200))).unwrap_err();
    assert!(e.message.contains("at most 256 bytes"), "{e}");
    let huge = format!("node A {{ x: String }}\n{}", "// padding\n".repeat(500_000));
    let e = parse_schema(&huge).unwrap_err();
    assert!(e.message.contains("schemas may be at most"), "{e}");
}

#[test]
fn large_schemas_with_long_names_parse() {
    // ~1 MB of types with 200-byte names and many properties each: parsing
    // is linear, so this stays fast even in a debug build.
    let mut src = String::new();
    for t in 0..200 {
        let ty = format!("T{t}{}", "x".repeat(200));
        src.push_str(&format!("node {ty} {{\n"));
        for p in 0..20 {
            src.push_str(&format!("  p{p}{}: String? @index\n", "y".repeat(200)));
        }
        src.push_str("}\n");
    }
    let c = parse_schema(&src).unwrap();
    assert_eq!(c.type_names().len(), 200);
}

#[test]
fn schemas_that_would_expand_or_compare_quadratically_are_refused_or_linear() {
    // One interface listed 25,000 times: refused at the second listing.
    let props: String = (0..190)
        .map(|i| format!("p{i}{}: I32\n", "x".repeat(200)))
        .collect();
    let src = format!(
        "interface I {{ {props} }}\nnode A implements {} {{ }}",
        vec!["I"; 25_000].join(", ")
    );
    let e = parse_schema(&src).unwrap_err();
    assert!(e.message.contains("listed twice after implements"), "{e}");
    // 2,000 types implementing a 190-property interface: 380,000 properties.
    let nodes: String = (0..2_000)
        .map(|i| format!("node N{i} implements I {{ }}\n"))
        .collect();
    let e = parse_schema(&format!("interface I {{ {props} }}\n{nodes}")).unwrap_err();
    assert!(e.message.contains("more than 250000 properties"), "{e}");
    // One type with 100,000 properties, a body constraint naming the last
    // one 10,000 times, and 10,000 edges to the last node: hash lookups.
    let many: String = (0..100_000).map(|i| format!("p{i}: I32? ")).collect();
    let args = vec!["p99999"; 10_000].join(", ");
    let mut src = format!("node A {{ {many}\n@index({args}) }}\n");
    src.extend((0..10_000).map(|i| format!("edge E{i}: A -> A\n")));
    let c = parse_schema(&src).unwrap();
    assert_eq!(c.node("A").unwrap().properties.len(), 100_000);
    // An interface property redeclared by the node keeps one copy, and
    // constraints of the replaced declaration go with it.
    let c = parse_schema(
        "interface I { a: String @unique\n b: I32 }\nnode N implements I { a: String\n c: I32 }",
    )
    .unwrap();
    let n = c.node("N").unwrap();
    let names: Vec<&str> = n.properties.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["b", "a", "c"]);
    assert!(n.unique.is_empty(), "{:?}", n.unique);
}

#[test]
fn reference_schemas_with_vector_indexes_and_multiline_enums_parse() {
    let src = r#"
node Doc {
    title: String @index
    embedding: Vector(1536) @index @embed("title")
    status: enum(
        draft,
        in-review,
        published
    ) @index
    kind: enum(a, b)? @description("two kinds")
    @unique(title, status)
}
"#;
    let c = parse_schema(src).unwrap();
    let doc = c.node("Doc").unwrap();
    assert_eq!(
        doc.indexes,
        vec![
            vec!["title".to_string()],
            vec!["embedding".to_string()],
            vec!["status".to_string()]
        ]
    );
    let kind = doc.properties.iter().find(|p| p.name == "kind").unwrap();
    assert!(kind.nullable);
    assert_eq!(kind.annotations.len(), 1);
    assert_eq!(
        doc.unique,
        vec![vec!["title".to_string(), "status".to_string()]]
    );
    // Keys and uniqueness still need scalars.
    let e = parse_schema("node A { v: Vector(3) @unique }").unwrap_err();
    assert!(e.message.contains("not allowed on list or vector"), "{e}");
}

/// The corpus of reference-language schemas (engine/tests/fixtures/corpus
/// plus the fixtures beside it): every one parses, and the constructs land
/// where they belong.
#[test]
fn the_reference_grammar_corpus_parses() {
    let full = include_str!("../../tests/fixtures/corpus/reference_full.pg");
    for src in [full, TEST, CONTEXT, SOCIAL] {
        parse_schema(src).unwrap_or_else(|e| panic!("{e}"));
    }
    let c = parse_schema(full).unwrap();
    let account = c.node("Account").unwrap();
    assert_eq!(account.key, Some(vec!["slug".to_string()]));
    assert_eq!(account.implements, ["Slugged", "Described"]);
    assert_eq!(account.ranges.len(), 3);
    assert_eq!(account.checks.len(), 1);
    assert!(
        account
            .indexes
            .contains(&vec!["active".to_string(), "tier".to_string()])
    );
    assert!(account.indexes.contains(&vec!["embedding".to_string()]));
    assert!(account.unique.contains(&vec!["code".to_string()]));
    assert!(
        account
            .unique
            .contains(&vec!["full_name".to_string(), "born".to_string()])
    );
    let tier = account
        .properties
        .iter()
        .find(|p| p.name == "tier")
        .unwrap();
    assert_eq!(
        tier.ty,
        PropType::Enum(vec![
            "enterprise_2".into(),
            "free".into(),
            "pro-plus".into()
        ])
    );
    assert_eq!(
        c.node("Team").unwrap().key,
        Some(vec!["org".to_string(), "name".to_string()])
    );
    let cites = c.edge("Cites").unwrap();
    assert_eq!(
        cites.unique,
        vec![vec!["src".to_string(), "dst".to_string()]]
    );
    assert_eq!(
        (
            c.edge("Leads").unwrap().from.as_str(),
            c.edge("Leads").unwrap().to.as_str()
        ),
        ("Account", "Team")
    );
    assert_eq!(cites.card, Some((2, Some(5))));
    assert_eq!(c.edge("Wrote").unwrap().card, Some((1, None)));
    assert_eq!(c.edge("MemberOf").unwrap().card, Some((0, Some(1))));
    assert_eq!(c.type_names().len(), 7);
}
