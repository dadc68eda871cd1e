-- ===================================================================
-- Aggregate pushdown: count, sum, avg, min and max, with WHERE and
-- GROUP BY, computed next to the data; every result equals the same
-- query over a heap copy, byte for byte (numeric scales, NULLs, empty
-- inputs, overflow), committed or with the transaction's own writes
-- ===================================================================
\getenv graphs OMNIGRAPH_TEST_GRAPHS
\set uri :graphs '/aggregates'
CREATE SERVER ag FOREIGN DATA WRAPPER omnigraph OPTIONS (uri :'uri');
SELECT omnigraph_create_graph('ag', $$
node Item {
    slug: String @key
    cat: enum(red, green, blue)?
    label: String?
    i4: I32?
    i8: I64?
    u4: U32?
    u8: U64?
    f4: F32?
    f8: F64?
    day: Date?
    at: DateTime?
    flag: Bool?
    tags: [String]?
}
node Empty {
    slug: String @key
    n: I64?
}
$$) IS NOT NULL AS created;
CREATE SCHEMA ag;
IMPORT FOREIGN SCHEMA "main" FROM SERVER ag INTO ag;
-- every fourth value NULL, floats exact in binary so any summation order agrees
INSERT INTO ag.item (slug, cat, label, i4, i8, u4, u8, f4, f8, day, at, flag, tags)
SELECT 'i' || lpad(i::text, 4, '0'),
       CASE WHEN i % 4 = 0 THEN NULL ELSE (ARRAY['red', 'green', 'blue'])[1 + i % 3] END,
       CASE WHEN i % 4 = 1 THEN NULL ELSE 'L' || (i % 17) END,
       CASE WHEN i % 4 = 2 THEN NULL ELSE i * 1000003 % 2000 - 1000 END,
       CASE WHEN i % 4 = 3 THEN NULL ELSE (i::int8 * 7919) * 1000000000 END,
       CASE WHEN i % 4 = 0 THEN NULL ELSE i * 3 END,
       CASE WHEN i % 4 = 1 THEN NULL ELSE 18000000000000000000::numeric - i END,
       CASE WHEN i % 4 = 2 THEN NULL ELSE (i % 64) * 0.25 END,
       CASE WHEN i % 4 = 3 THEN NULL ELSE (i % 512) * -0.125 END,
       CASE WHEN i % 4 = 0 THEN NULL ELSE date '2024-01-01' + (i % 90) END,
       CASE WHEN i % 4 = 1 THEN NULL ELSE timestamptz '2024-01-01 00:00:00+00' + (i % 1000) * interval '1 minute' END,
       CASE WHEN i % 4 = 2 THEN NULL ELSE i % 3 = 0 END,
       CASE WHEN i % 4 = 3 THEN NULL ELSE ARRAY['t' || (i % 5)] END
FROM generate_series(1, 1200) i;
CREATE TABLE ag_heap AS SELECT * FROM ag.item;
CREATE TABLE ag_empty AS SELECT * FROM ag.empty;
-- Run a query (%1$s is the table) over the foreign table and the heap
-- copy: whether it was pushed (EXPLAIN shows the aggregate), and whether
-- both return the same rows, compared as text.
CREATE FUNCTION agg_check(q text, heap text DEFAULT 'ag_heap', ft text DEFAULT 'ag.item',
                          OUT pushed boolean, OUT same boolean) LANGUAGE plpgsql AS $f$
DECLARE line text; n bigint;
BEGIN
  pushed := false;
  FOR line IN EXECUTE 'EXPLAIN (VERBOSE, COSTS OFF) ' || format(q, ft) LOOP
    IF line LIKE '%Pushed Aggregate%' THEN pushed := true; END IF;
  END LOOP;
  EXECUTE format('SELECT count(*) FROM ((SELECT t::text FROM (%1$s) t EXCEPT ALL SELECT t::text FROM (%2$s) t)
                  UNION ALL (SELECT t::text FROM (%2$s) t EXCEPT ALL SELECT t::text FROM (%1$s) t)) d',
                 format(q, ft), format(q, heap)) INTO n;
  same := n = 0;
END $f$;
CREATE FUNCTION agg_explain(q text) RETURNS SETOF text LANGUAGE plpgsql AS $f$
DECLARE line text;
BEGIN
  FOR line IN EXECUTE 'EXPLAIN (VERBOSE, COSTS OFF) ' || q LOOP
    RETURN NEXT mask(line);
  END LOOP;
END $f$;
-- ===================================================================
-- what EXPLAIN shows: the aggregates and groups, with the pushed filter
-- ===================================================================
SELECT agg_explain('SELECT count(*) FROM ag.item');
SELECT agg_explain('SELECT cat, count(*), sum(i8), avg(f8) FROM ag.item WHERE i4 > 0 GROUP BY cat ORDER BY cat');
SELECT agg_explain('SELECT sum(i4) + 1, max(day) - min(day) FROM ag.item');
-- ===================================================================
-- every function over every column type, without and with a filter
-- ===================================================================
SELECT q, (agg_check(q)).* FROM (VALUES
  ('SELECT count(*) FROM %s'),
  ('SELECT count(slug), count(cat), count(label), count(i4), count(i8), count(u4), count(u8), count(f4), count(f8), count(day), count(at), count(flag), count(tags) FROM %s'),
  ('SELECT sum(i4), sum(i8), sum(u4), sum(u8), sum(f4), sum(f8) FROM %s'),
  ('SELECT avg(i4), avg(i8), avg(u4), avg(u8), avg(f4), avg(f8) FROM %s'),
  ('SELECT min(i4), max(i4), min(i8), max(i8), min(u4), max(u4), min(u8), max(u8) FROM %s'),
  ('SELECT min(f4), max(f4), min(f8), max(f8), min(day), max(day), min(at), max(at) FROM %s'),
  ('SELECT min(slug), max(slug), min(label), max(label), min(cat), max(cat) FROM %s'),
  ('SELECT count(*), sum(i8), avg(i4), min(label) FROM %s WHERE i4 BETWEEN -500 AND 500'),
  ('SELECT count(*), sum(i8), avg(f8), max(at) FROM %s WHERE cat = ''green'' AND flag'),
  ('SELECT count(*), count(i4), sum(i4), avg(i4), min(i4), max(label) FROM %s WHERE i4 > 100000'),
  ('SELECT sum(i4) + 1, count(*) * 2, max(day) - min(day), avg(f4) / 2 FROM %s')
) v(q);
-- ===================================================================
-- GROUP BY: enum, text, bool, date, integers, several keys; NULL keys
-- form one group; expressions over the groups
-- ===================================================================
SELECT q, (agg_check(q)).* FROM (VALUES
  ('SELECT cat, count(*), sum(i8), avg(i4), min(f8), max(label) FROM %s GROUP BY cat'),
  ('SELECT label, count(*), sum(u8) FROM %s GROUP BY label'),
  ('SELECT flag, count(flag), avg(u4), max(at) FROM %s GROUP BY flag'),
  ('SELECT day, count(*), sum(f4) FROM %s GROUP BY day'),
  ('SELECT i4 %% 7 AS k, count(*) FROM %s GROUP BY i4 %% 7'),
  ('SELECT cat, flag, count(*), sum(i4), avg(i8) FROM %s GROUP BY cat, flag'),
  ('SELECT u4, count(*) FROM %s WHERE u4 < 300 GROUP BY u4'),
  ('SELECT count(*) FROM %s GROUP BY cat'),
  ('SELECT cat || ''!'', sum(i4) * 2 FROM %s WHERE i4 > 0 GROUP BY cat'),
  ('SELECT cat, count(*) FROM %s WHERE i4 > 100000 GROUP BY cat'),
  ('SELECT cat, flag FROM %s GROUP BY cat, flag'),
  ('SELECT max(i4) FROM %s GROUP BY cat')
) v(q);
-- ===================================================================
-- not pushed, still correct: DISTINCT, FILTER, ORDER BY in the call,
-- HAVING, a local condition, a non-C text comparison, float groups
-- ===================================================================
SELECT q, (agg_check(q)).* FROM (VALUES
  ('SELECT count(DISTINCT cat) FROM %s'),
  ('SELECT sum(i4) FILTER (WHERE flag) FROM %s'),
  ('SELECT string_agg(slug, '','' ORDER BY slug) FROM %s WHERE i4 > 990'),
  ('SELECT cat, count(*) FROM %s GROUP BY cat HAVING count(*) > 100'),
  ('SELECT count(*) FROM %s WHERE length(slug) = 5'),
  ('SELECT max(label COLLATE "und-x-icu") FROM %s'),
  ('SELECT f4, count(*) FROM %s GROUP BY f4'),
  ('SELECT bool_and(flag), sum(i4::numeric) FROM %s')
) v(q);
-- ===================================================================
-- an empty table: count 0 from metadata, NULL sums, no groups
-- ===================================================================
SELECT q, (agg_check(q, 'ag_empty', 'ag.empty')).* FROM (VALUES
  ('SELECT count(*) FROM %s'),
  ('SELECT count(n), sum(n), avg(n), min(n), max(slug) FROM %s'),
  ('SELECT n, count(*) FROM %s GROUP BY n')
) v(q);
SELECT count(*), sum(n), avg(n) FROM ag.empty;
-- ===================================================================
-- overflow: int8 sums are exact numerics; a float sum that overflows
-- fails as in Postgres
-- ===================================================================
BEGIN;
INSERT INTO ag.item (slug, i8, i4, f8) VALUES
  ('big1', 9223372036854775807, 2147483647, 1e308), ('big2', 9223372036854775807, 2147483647, 1e308);
INSERT INTO ag_heap (slug, i8, i4, f8) VALUES
  ('big1', 9223372036854775807, 2147483647, 1e308), ('big2', 9223372036854775807, 2147483647, 1e308);
SELECT q, (agg_check(q)).* FROM (VALUES
  ('SELECT sum(i8), avg(i8), sum(i4), avg(i4) FROM %s WHERE slug LIKE ''big%%'''),
  ('SELECT sum(i8), avg(i8) FROM %s')
) v(q);
SELECT sum(i8), sum(i4) FROM ag.item WHERE slug LIKE 'big%';
SELECT try('SELECT sum(f8) FROM ag.item WHERE slug LIKE ''big%''') AS fdw,
       try('SELECT sum(f8) FROM ag_heap WHERE slug LIKE ''big%''') AS heap;
SELECT try('SELECT avg(f8) FROM ag.item WHERE slug LIKE ''big%''') AS fdw,
       try('SELECT avg(f8) FROM ag_heap WHERE slug LIKE ''big%''') AS heap;
ROLLBACK;
-- ===================================================================
-- the transaction's own writes: inserts (most of them spilled past a
-- small staging budget), updates and deletes are counted before COMMIT,
-- and the count(*) shortcut is not taken
-- ===================================================================
BEGIN;
SET LOCAL omnigraph.staging_memory = '64kB';
INSERT INTO ag.item (slug, cat, i4, i8, f8, label) SELECT 'n' || i, 'blue', i, i, i * 0.5, 'new' FROM generate_series(1, 3000) i;
INSERT INTO ag_heap (slug, cat, i4, i8, f8, label) SELECT 'n' || i, 'blue', i, i, i * 0.5, 'new' FROM generate_series(1, 3000) i;
UPDATE ag.item SET i4 = -i4, cat = 'red' WHERE slug < 'i0300';
UPDATE ag_heap SET i4 = -i4, cat = 'red' WHERE slug < 'i0300';
DELETE FROM ag.item WHERE slug BETWEEN 'i0500' AND 'i0700';
DELETE FROM ag_heap WHERE slug BETWEEN 'i0500' AND 'i0700';
SELECT (SELECT count(*) FROM ag.item) AS fdw_rows, (SELECT count(*) FROM ag_heap) AS heap_rows,
       (SELECT sum(i4) FROM ag.item WHERE cat = 'red') AS fdw_red, (SELECT sum(i4) FROM ag_heap WHERE cat = 'red') AS heap_red;
SELECT q, (agg_check(q)).* FROM (VALUES
  ('SELECT count(*) FROM %s'),
  ('SELECT count(*), sum(i4), avg(i8), min(label), max(f8) FROM %s'),
  ('SELECT cat, count(*), sum(i4) FROM %s GROUP BY cat'),
  ('SELECT cat, count(*) FROM %s WHERE i4 < 0 GROUP BY cat')
) v(q);
ROLLBACK;
SELECT count(*) FROM ag.item;
-- ===================================================================
-- a prepared statement: the pushed filter's parameter in a generic plan
-- ===================================================================
SET plan_cache_mode = force_generic_plan;
PREPARE agg_p(int) AS SELECT cat, count(*), sum(i8) FROM ag.item WHERE i4 > $1 GROUP BY cat ORDER BY cat;
EXECUTE agg_p(900);
SELECT cat, count(*), sum(i8) FROM ag_heap WHERE i4 > 900 GROUP BY cat ORDER BY cat;
EXECUTE agg_p(990);
SELECT cat, count(*), sum(i8) FROM ag_heap WHERE i4 > 990 GROUP BY cat ORDER BY cat;
DEALLOCATE agg_p;
RESET plan_cache_mode;
-- a pushed aggregate inside a join and a subquery
SELECT h.cat, h.n = f.n AS same FROM (SELECT cat, count(*) n FROM ag_heap GROUP BY cat) h
  JOIN (SELECT cat, count(*) n FROM ag.item GROUP BY cat) f ON h.cat IS NOT DISTINCT FROM f.cat ORDER BY h.cat;
SELECT (SELECT count(*) FROM ag.item i WHERE i.cat = c.cat) AS n FROM (VALUES ('red'), ('blue')) c(cat);
DROP FUNCTION agg_check(text, text, text);
DROP FUNCTION agg_explain(text);
DROP TABLE ag_heap, ag_empty;
DROP SCHEMA ag CASCADE;
DROP SERVER ag;
