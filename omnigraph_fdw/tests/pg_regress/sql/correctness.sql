-- ===================================================================
-- Correct results: reference-style schemas import; pushed filters agree
-- with Postgres on NULL booleans, collations and type edges; values the
-- graph cannot hold are refused with a clear error
-- ===================================================================
\getenv graphs OMNIGRAPH_TEST_GRAPHS
\set uri :graphs '/correctness'
CREATE SERVER corr FOREIGN DATA WRAPPER omnigraph OPTIONS (uri :'uri');
-- a schema as the reference engine's users write them: a vector index with
-- @embed, an enum over several lines followed by @index, a required
-- camelCase property, a property name longer than Postgres keeps
SELECT omnigraph_create_graph('corr', $$
node Doc {
    slug: String @key
    title: String @index
    embedding: Vector(3)? @index @embed("title")
    status: enum(
        draft,
        in-review,
        published
    ) @index
    createdAt: DateTime
    flag: Bool?
    small: I32?
    tags: [String]?
    _internal: String?
    aVeryLongPropertyNameThatKeepsGoingPastWhatPostgresKeepsInAnIdentifier: String?
}
$$) IS NOT NULL AS created;
CREATE SCHEMA corr;
IMPORT FOREIGN SCHEMA "main" FROM SERVER corr INTO corr;
\d corr.doc
SELECT omnigraph_load('corr', 'main', $$
{"type": "Doc", "data": {"slug": "a", "title": "Alpha", "status": "draft", "createdAt": "2024-01-01T00:00:00Z", "flag": true, "small": 1, "_internal": "keep-a", "aVeryLongPropertyNameThatKeepsGoingPastWhatPostgresKeepsInAnIdentifier": "long-a"}}
{"type": "Doc", "data": {"slug": "b", "title": "beta", "status": "in-review", "createdAt": "2024-01-02T00:00:00Z", "flag": false, "small": 5, "_internal": "keep-b"}}
{"type": "Doc", "data": {"slug": "c", "title": "BETA", "status": "published", "createdAt": "2024-01-03T00:00:00Z", "small": 9}}
$$) AS rows_loaded;
CREATE TABLE corr_heap AS SELECT * FROM corr.doc;
-- ===================================================================
-- NULL booleans: NOT flag and flag = false leave NULLs out
-- ===================================================================
SELECT (SELECT array_agg(slug ORDER BY slug) FROM corr.doc WHERE NOT flag) AS fdw,
       (SELECT array_agg(slug ORDER BY slug) FROM corr_heap WHERE NOT flag) AS heap;
SELECT (SELECT array_agg(slug ORDER BY slug) FROM corr.doc WHERE flag = false) AS fdw,
       (SELECT array_agg(slug ORDER BY slug) FROM corr_heap WHERE flag = false) AS heap;
SELECT (SELECT array_agg(slug ORDER BY slug) FROM corr.doc WHERE flag IS NOT TRUE) AS fdw,
       (SELECT array_agg(slug ORDER BY slug) FROM corr_heap WHERE flag IS NOT TRUE) AS heap;
-- ===================================================================
-- a nondeterministic collation: equality is not byte equality
-- ===================================================================
CREATE COLLATION corr_ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
SELECT (SELECT array_agg(slug ORDER BY slug) FROM corr.doc WHERE title = 'BETA' COLLATE corr_ci) AS fdw,
       (SELECT array_agg(slug ORDER BY slug) FROM corr_heap WHERE title = 'BETA' COLLATE corr_ci) AS heap;
SELECT (SELECT array_agg(slug ORDER BY slug) FROM corr.doc WHERE title COLLATE corr_ci IN ('alpha', 'x')) AS fdw,
       (SELECT array_agg(slug ORDER BY slug) FROM corr_heap WHERE title COLLATE corr_ci IN ('alpha', 'x')) AS heap;
-- the comparison stays in Postgres (Filter), not pushed to the graph
CREATE FUNCTION corr_explain(q text) RETURNS SETOF text LANGUAGE plpgsql AS $f$
DECLARE line text;
BEGIN
  FOR line IN EXECUTE 'EXPLAIN (COSTS OFF) ' || q LOOP
    RETURN NEXT mask(line);
  END LOOP;
END $f$;
SELECT * FROM corr_explain($$SELECT slug FROM corr.doc WHERE title = 'BETA' COLLATE corr_ci$$);
SELECT * FROM corr_explain($$SELECT slug FROM corr.doc WHERE title = 'BETA'$$);
-- ===================================================================
-- an I32 column filtered after a write in the same transaction
-- ===================================================================
BEGIN;
INSERT INTO corr.doc (slug, title, status, created_at, small) VALUES ('d', 'Delta', 'draft', '2024-01-04', 7);
SELECT slug FROM corr.doc WHERE small > 4 ORDER BY slug;
SELECT slug FROM corr.doc WHERE small IN (1, 7) ORDER BY slug;
ROLLBACK;
-- ===================================================================
-- a property whose name starts with '_' survives an UPDATE of another
-- ===================================================================
UPDATE corr.doc SET small = 2 WHERE slug = 'a';
SELECT slug, small, _internal FROM corr.doc ORDER BY slug;
-- ===================================================================
-- the long property name maps back through its column option
-- ===================================================================
SELECT attname, attfdwoptions FROM pg_attribute
 WHERE attrelid = 'corr.doc'::regclass AND attname LIKE 'a_very_long%';
SELECT slug, a_very_long_property_name_that_keeps_going_past_what_p_58280af5
  FROM corr.doc ORDER BY slug;
-- ===================================================================
-- values the graph cannot hold: refused, nothing written
-- ===================================================================
SELECT try($$INSERT INTO corr.doc (slug, title, status, created_at) VALUES ('inf', 'I', 'draft', 'infinity')$$);
SELECT try($$INSERT INTO corr.doc (slug, title, status, created_at) VALUES ('inf', 'I', 'draft', '-infinity')$$);
SELECT try($$SELECT omnigraph_load('corr', 'main', '{"type": "Doc", "data": {"slug": "nul", "title": "a\u0000b", "status": "draft", "createdAt": "2024-01-01T00:00:00Z"}}')$$);
SELECT try($$INSERT INTO corr.doc (slug, title, status, created_at, tags) VALUES ('md', 'M', 'draft', '2024-01-01', '{{a,b},{c,d}}')$$);
-- a timestamp constant past year 294,000 stays a local filter, no overflow
SELECT count(*) AS none FROM corr.doc WHERE created_at > '294270-01-01 00:00:00+00';
SELECT count(*) AS all_three FROM corr.doc WHERE created_at < 'infinity';
SELECT count(*) AS docs FROM corr.doc;
-- ===================================================================
-- DELETE ... RETURNING gives the deleted rows as the transaction saw them
-- ===================================================================
BEGIN;
UPDATE corr.doc SET small = 42 WHERE slug = 'b';
INSERT INTO corr.doc (slug, title, status, created_at) VALUES ('e', 'Echo', 'draft', '2024-01-05');
WITH d AS (DELETE FROM corr.doc WHERE slug IN ('b', 'c', 'e') RETURNING slug, small, title, _internal, status)
SELECT * FROM d ORDER BY slug;
SELECT slug FROM corr.doc ORDER BY slug;
ROLLBACK;
SET timezone = 'UTC';
DELETE FROM corr.doc WHERE slug = 'c' RETURNING id, slug, created_at, flag, small;
RESET timezone;
SELECT slug FROM corr.doc ORDER BY slug;
-- ===================================================================
-- NaN and infinities in constrained float properties
-- ===================================================================
\set uri_nan :graphs '/correctness_nan'
CREATE SERVER corr_nan FOREIGN DATA WRAPPER omnigraph OPTIONS (uri :'uri_nan');
SELECT omnigraph_create_graph('corr_nan', $$
node M { k: String @key
         score: F64? @unique
         ratio: F64?
         @range(ratio, 0..1) }
$$) IS NOT NULL AS created;
CREATE SCHEMA corr_nan;
IMPORT FOREIGN SCHEMA "main" FROM SERVER corr_nan INTO corr_nan;
INSERT INTO corr_nan.m (k, score, ratio) VALUES ('inf', 'Infinity', 0.5), ('nan', 'NaN', NULL), ('one', 1, 1);
-- should fail (checked at commit, the end of each statement here):
-- NaN sorts above every number, as in Postgres: it breaks an upper bound
INSERT INTO corr_nan.m (k, ratio) VALUES ('bad', 'NaN');
-- @unique holds for infinities and NaN (Postgres treats NaN as equal to NaN)
INSERT INTO corr_nan.m (k, score) VALUES ('inf2', 'Infinity');
INSERT INTO corr_nan.m (k, score) VALUES ('nan2', 'NaN');
UPDATE corr_nan.m SET ratio = 0.25 WHERE k = 'nan';
SELECT k, score, ratio FROM corr_nan.m ORDER BY k;
SELECT k FROM corr_nan.m WHERE score > 1 ORDER BY k;
