//! The filters the FDW pushes are answered from Lance's indexes once
//! optimize built them, and `index_use` (the EXPLAIN line) names exactly
//! the ones Lance's plan uses.

use omnigraph_engine::deps::lance::dataset::scanner::Scanner;
use omnigraph_engine::{Graph, IndexKind, LoadMode, ReadRef, scanner};
use omnigraph_sql::filter::{
    CmpOp, Column, ColumnType, Expr, Scalar, Value, index_use, to_datafusion,
};

const SCHEMA: &str = r#"
node Item {
    sku: String @key
    qty: I32 @index
    active: Bool @index
    status: enum(open, closed) @index
    note: String? @index
    plain: I64?
}
"#;

fn col(name: &str, ty: ColumnType) -> Column {
    Column {
        name: name.into(),
        ty,
    }
}

fn eq(name: &str, ty: ColumnType, v: Scalar) -> Expr {
    Expr::Cmp {
        column: col(name, ty),
        op: CmpOp::Eq,
        value: Value::Const(v),
        c_collation: true,
    }
}

async fn plan_and_count(
    ds: &omnigraph_engine::deps::lance::Dataset,
    f: &Expr,
    typed: bool,
) -> (String, usize) {
    let schema = omnigraph_engine::value::table_schema(
        &omnigraph_engine::schema::parse_schema(SCHEMA).unwrap(),
        "Item",
    )
    .unwrap();
    let df = to_datafusion(f, &[], typed.then_some(&*schema)).unwrap();
    let mut scan: Scanner = scanner(ds);
    scan.filter_expr(df);
    let plan = scan.explain_plan(true).await.unwrap();
    let rows = scan.count_rows().await.unwrap() as usize;
    (plan, rows)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_filters_use_the_indexes_optimize_builds() {
    let dir = tempfile::tempdir().unwrap();
    let uri = dir.path().join("g").to_string_lossy().into_owned();
    let g = Graph::create(&uri, SCHEMA, "t").await.unwrap();
    let rows: Vec<String> = (0..300)
        .map(|i| {
            let note = if i % 10 == 0 { "null".to_string() } else { format!("\"n{i:03}\"") };
            format!(
                r#"{{"type": "Item", "data": {{"sku": "s{i:03}", "qty": {}, "active": {}, "status": "{}", "note": {note}, "plain": {i}}}}}"#,
                i % 20,
                i % 2 == 0,
                if i % 3 == 0 { "closed" } else { "open" }
            )
        })
        .collect();
    g.load("main", &rows.join("\n"), LoadMode::Append, "t", "")
        .await
        .unwrap();
    let before = g
        .snapshot(&ReadRef::main())
        .await
        .unwrap()
        .dataset("Item")
        .await
        .unwrap();
    g.optimize("main", "t").await.unwrap();
    let snap = g.snapshot(&ReadRef::main()).await.unwrap();
    let ds = snap.dataset("Item").await.unwrap();
    let indexes = snap.indexes("Item").await.unwrap();
    let answered = |c: &str, shape| {
        indexes
            .iter()
            .find(|i| i.column == c && i.kind.answers(shape))
            .map(|i| i.kind)
    };

    let text = |s: &str| Scalar::Text(s.into());
    // (filter, the indexes it uses, the rows it matches)
    type Case<'a> = (Expr, Vec<(&'a str, IndexKind)>, usize);
    let cases: Vec<Case> = vec![
        (
            eq("qty", ColumnType::Int, Scalar::Int(7)),
            vec![("qty", IndexKind::BTree)],
            15,
        ),
        (
            Expr::InList {
                column: col("sku", ColumnType::Text),
                values: vec![Value::Const(text("s001")), Value::Const(text("s002"))],
                negated: false,
            },
            vec![("sku", IndexKind::BTree)],
            2,
        ),
        (
            Expr::Cmp {
                column: col("qty", ColumnType::Int),
                op: CmpOp::GtEq,
                value: Value::Const(Scalar::Int(18)),
                c_collation: true,
            },
            vec![("qty", IndexKind::BTree)],
            30,
        ),
        (
            Expr::IsNull {
                column: col("note", ColumnType::Text),
                negated: false,
            },
            vec![("note", IndexKind::BTree)],
            30,
        ),
        (
            Expr::Prefix {
                column: col("note", ColumnType::Text),
                prefix: "n01".into(),
            },
            vec![("note", IndexKind::BTree)],
            9,
        ),
        (
            eq("status", ColumnType::Text, text("closed")),
            vec![("status", IndexKind::Bitmap)],
            100,
        ),
        (
            Expr::BoolColumn(col("active", ColumnType::Bool)),
            vec![("active", IndexKind::Bitmap)],
            150,
        ),
        (
            Expr::Or(vec![
                eq("qty", ColumnType::Int, Scalar::Int(1)),
                eq("status", ColumnType::Text, text("closed")),
            ]),
            vec![("qty", IndexKind::BTree), ("status", IndexKind::Bitmap)],
            110,
        ),
        // No index on `plain`: an OR with it is a scan; an AND uses the rest.
        (
            Expr::Or(vec![
                eq("qty", ColumnType::Int, Scalar::Int(1)),
                eq("plain", ColumnType::Int, Scalar::Int(2)),
            ]),
            vec![],
            16,
        ),
        (
            Expr::And(vec![
                eq("qty", ColumnType::Int, Scalar::Int(1)),
                eq("plain", ColumnType::Int, Scalar::Int(21)),
            ]),
            vec![("qty", IndexKind::BTree)],
            1,
        ),
    ];
    for (f, want, count) in cases {
        let used = index_use(&f, &answered);
        let want: Vec<(String, IndexKind)> = want.into_iter().map(|(c, k)| (c.into(), k)).collect();
        assert_eq!(used, want, "{f:?}");
        let (plan, rows) = plan_and_count(&ds, &f, true).await;
        assert_eq!(rows, count, "{f:?}");
        assert_eq!(
            plan.contains("ScalarIndexQuery"),
            !used.is_empty(),
            "{f:?}\n{plan}"
        );
        // The same rows without any index.
        let (_, unindexed) = plan_and_count(&before, &f, true).await;
        assert_eq!(unindexed, count, "{f:?}");
    }
    // Literals carry the column's type (an integer constant against the
    // I32 column is an Int32), so the index matches without a cast.
    let f = eq("qty", ColumnType::Int, Scalar::Int(7));
    let schema = omnigraph_engine::value::table_schema(
        &omnigraph_engine::schema::parse_schema(SCHEMA).unwrap(),
        "Item",
    )
    .unwrap();
    let typed = to_datafusion(&f, &[], Some(&schema)).unwrap();
    assert_eq!(typed.to_string(), "qty = Int32(7)");
    let (plan, _) = plan_and_count(&ds, &f, true).await;
    assert!(
        plan.contains("ScalarIndexQuery: query=[qty = 7]@qty_idx(BTree)"),
        "{plan}"
    );
    // A constant outside the column's range stays Int64 (and matches nothing).
    let big = eq("qty", ColumnType::Int, Scalar::Int(1 << 40));
    let untyped = to_datafusion(&big, &[], Some(&schema)).unwrap();
    assert_eq!(untyped.to_string(), "qty = Int64(1099511627776)");
    let (_, rows) = plan_and_count(&ds, &big, true).await;
    assert_eq!(rows, 0);
}
