-- ===================================================================
-- Parameterized joins: a join on an indexed column (id, src, dst after
-- omnigraph_optimize) probes the inner foreign table with each outer
-- row's value; the rows equal the unparameterized plan's and a heap
-- copy's
-- ===================================================================
\getenv graphs OMNIGRAPH_TEST_GRAPHS
\set uri :graphs '/joins'
CREATE SERVER jn FOREIGN DATA WRAPPER omnigraph OPTIONS (uri :'uri');
SELECT omnigraph_create_graph('jn', $$
node P {
    slug: String @key
    n: I32?
}
edge Knows: P -> P {
    w: I32?
}
$$) IS NOT NULL AS created;
SELECT omnigraph_load('jn', 'main', string_agg(line, E'\n')) IS NOT NULL AS loaded FROM (
  SELECT json_build_object('type', 'P', 'data', json_build_object('slug', 'p' || lpad(i::text, 4, '0'), 'n', i % 10))::text AS line
  FROM generate_series(0, 4999) i
  UNION ALL
  SELECT json_build_object('edge', 'Knows', 'from', 'p' || lpad(i::text, 4, '0'),
                           'to', 'p' || lpad(((i * m + m) % 5000)::text, 4, '0'), 'data', json_build_object('w', m))::text
  FROM generate_series(0, 4999) i, (VALUES (7), (13), (31), (101)) k(m)
) l;
CREATE SCHEMA jn;
IMPORT FOREIGN SCHEMA "main" FROM SERVER jn INTO jn;
CREATE TABLE jn_p AS SELECT * FROM jn.p;
CREATE TABLE jn_knows AS SELECT src, dst, w FROM jn.knows;
-- no index yet: no parameterized path, the edge table is scanned once
SET enable_hashjoin = off;
SET enable_mergejoin = off;
CREATE FUNCTION jn_explain(q text) RETURNS SETOF text LANGUAGE plpgsql AS $f$
DECLARE line text;
BEGIN
  FOR line IN EXECUTE 'EXPLAIN (COSTS OFF) ' || q LOOP
    IF line !~ 'Omnigraph (Commit|Branch|Type)' THEN RETURN NEXT mask(line); END IF;
  END LOOP;
END $f$;
SELECT jn_explain('SELECT k.dst FROM jn.p p JOIN jn.knows k ON k.src = p.id WHERE p.slug = ''p0042''');
SET client_min_messages = warning;
SELECT type_name, indexes FROM omnigraph_optimize('jn') ORDER BY 1;
RESET client_min_messages;
ANALYZE jn.p;
ANALYZE jn.knows;
-- one hop and two hops from one node: each edge scan probes src
SELECT jn_explain('SELECT k.dst FROM jn.p p JOIN jn.knows k ON k.src = p.id WHERE p.slug = ''p0042''');
SELECT jn_explain('SELECT k2.dst FROM jn.p p JOIN jn.knows k1 ON k1.src = p.id JOIN jn.knows k2 ON k2.src = k1.dst WHERE p.slug = ''p0042''');
-- a node probed by id from an edge's dst
SELECT jn_explain('SELECT p.slug, k.w FROM jn.knows k JOIN jn.p p ON p.id = k.dst WHERE k.src = ''p0007''');
SELECT k2.dst, k2.w FROM jn.p p JOIN jn.knows k1 ON k1.src = p.id JOIN jn.knows k2 ON k2.src = k1.dst
 WHERE p.slug = 'p0042' ORDER BY 1, 2;
-- the same rows as the heap copy and as the plan without parameters
CREATE FUNCTION jn_same(q text) RETURNS boolean LANGUAGE plpgsql AS $f$
DECLARE n bigint;
BEGIN
  SET LOCAL enable_nestloop = on;
  EXECUTE 'CREATE TEMP TABLE jn_a AS ' || q;
  SET LOCAL enable_nestloop = off;
  SET LOCAL enable_hashjoin = on;
  EXECUTE 'CREATE TEMP TABLE jn_b AS ' || q;
  SELECT count(*) INTO n FROM ((TABLE jn_a EXCEPT ALL TABLE jn_b) UNION ALL (TABLE jn_b EXCEPT ALL TABLE jn_a)) d;
  DROP TABLE jn_a, jn_b;
  RETURN n = 0;
END $f$;
BEGIN;
SELECT jn_same('SELECT k2.dst, k2.w FROM jn.p p JOIN jn.knows k1 ON k1.src = p.id JOIN jn.knows k2 ON k2.src = k1.dst WHERE p.slug IN (''p0042'', ''p4999'')') AS two_hops,
       jn_same('SELECT p.slug, k.w FROM jn.knows k JOIN jn.p p ON p.id = k.dst WHERE k.src = ''p0007''') AS by_id,
       jn_same('SELECT k.src FROM jn.p p JOIN jn.knows k ON k.dst = p.id WHERE p.n = 3 AND p.slug < ''p0100''') AS by_dst;
COMMIT;
SELECT (SELECT array_agg(dst ORDER BY dst, w) FROM (SELECT k2.dst, k2.w FROM jn.p p JOIN jn.knows k1 ON k1.src = p.id JOIN jn.knows k2 ON k2.src = k1.dst WHERE p.slug = 'p0042') f)
     = (SELECT array_agg(dst ORDER BY dst, w) FROM (SELECT k2.dst, k2.w FROM jn_p p JOIN jn_knows k1 ON k1.src = p.id JOIN jn_knows k2 ON k2.src = k1.dst WHERE p.slug = 'p0042') h)
       AS same_as_heap;
-- the transaction's own writes are probed too
BEGIN;
INSERT INTO jn.knows (src, dst, w) VALUES ('p0042', 'p0001', 999);
SELECT k.dst, k.w FROM jn.p p JOIN jn.knows k ON k.src = p.id WHERE p.slug = 'p0042' ORDER BY 1, 2;
ROLLBACK;
-- a prepared statement: the outer value and a $1 parameter together
SET plan_cache_mode = force_generic_plan;
PREPARE jn_q(text) AS SELECT k.dst FROM jn.p p JOIN jn.knows k ON k.src = p.id WHERE p.slug = $1 ORDER BY 1;
EXECUTE jn_q('p0042');
EXECUTE jn_q('p0007');
DEALLOCATE jn_q;
RESET plan_cache_mode;
RESET enable_hashjoin;
RESET enable_mergejoin;
DROP FUNCTION jn_explain(text);
DROP FUNCTION jn_same(text);
DROP TABLE jn_p, jn_knows;
DROP SCHEMA jn CASCADE;
DROP SERVER jn;
