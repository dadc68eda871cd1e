-- ===================================================================
-- filters, projection, ORDER BY and LIMIT pushed into the Lance scan;
-- each pushed query returns exactly the rows the same query returns
-- over a heap copy of the data
-- ===================================================================
\getenv graphs OMNIGRAPH_TEST_GRAPHS
\getenv fixtures OMNIGRAPH_TEST_FIXTURES
\set uri :graphs '/pushdown'
\set schema_file :fixtures '/schema.pg'
CREATE SERVER pd FOREIGN DATA WRAPPER omnigraph OPTIONS (uri :'uri');
SELECT omnigraph_create_graph('pd', pg_read_file(:'schema_file')) IS NOT NULL AS created;
SELECT omnigraph_load('pd', 'main', string_agg(json_build_object('type', 'Person', 'data', json_strip_nulls(json_build_object(
    'slug', 'p' || lpad(i::text, 3, '0'),
    'name', 'Name ' || i,
    'age', CASE WHEN i % 7 = 0 THEN NULL ELSE i % 50 END,
    'status', (ARRAY['active', 'on-leave', 'retired'])[1 + i % 3],
    'score', CASE WHEN i % 11 = 0 THEN NULL ELSE i * 1.5 END,
    'joinedOn', to_char(date '2020-01-01' + i, 'YYYY-MM-DD'),
    'email', CASE WHEN i % 5 = 0 THEN NULL ELSE 'p' || i || '@x.org' END,
    'tags', ARRAY['t' || (i % 4)])))::text, E'\n')) IS NOT NULL AS loaded
FROM generate_series(1, 200) i;
CREATE SCHEMA pdg;
IMPORT FOREIGN SCHEMA "main" FROM SERVER pd INTO pdg;
CREATE TABLE heap AS SELECT * FROM pdg.person;
-- EXPLAIN without the commit id, which changes every run
CREATE FUNCTION explain_filter(q text) RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE line text;
BEGIN
  FOR line IN EXECUTE 'EXPLAIN (VERBOSE, COSTS OFF) ' || q LOOP
    RETURN NEXT mask(line);
  END LOOP;
END $$;
-- rows of the query over the foreign table that the heap copy lacks, and the other way round
CREATE FUNCTION diff(cond text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE n bigint;
BEGIN
  EXECUTE format('SELECT count(*) FROM ((SELECT * FROM pdg.person WHERE %1$s EXCEPT ALL SELECT * FROM heap WHERE %1$s)
                   UNION ALL (SELECT * FROM heap WHERE %1$s EXCEPT ALL SELECT * FROM pdg.person WHERE %1$s)) d', cond) INTO n;
  RETURN n;
END $$;
CREATE FUNCTION rows_of(cond text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE n bigint;
BEGIN
  EXECUTE format('SELECT count(*) FROM heap WHERE %s', cond) INTO n;
  RETURN n;
END $$;
-- pushed: comparisons (=, <>, <, <=, >, >=), IN / = ANY, NOT IN, IS [NOT] NULL,
-- BETWEEN, AND / OR / NOT, LIKE 'prefix%', dates, double precision
SELECT cond, rows_of(cond) AS rows, diff(cond) AS differences FROM (VALUES
  ('age = 30'), ('age <> 30'), ('age < 10'), ('age <= 10'), ('age > 40'), ('age >= 40'),
  ('age IN (1, 2, 3)'), ('age = ANY (ARRAY[4, 5])'), ('age NOT IN (1, 2)'), ('status <> ALL (ARRAY[''active''])'),
  ('email IS NULL'), ('email IS NOT NULL'), ('age BETWEEN 10 AND 20'),
  ('age > 10 AND status = ''active'''), ('age < 5 OR status = ''retired'''), ('NOT (age > 10)'),
  ('name LIKE ''Name 1%'''), ('joined_on >= date ''2020-05-01'''), ('score > 100.5'), ('score = 3'),
  ('id = ''p007'''), ('name = ''nobody''')
) v(cond) ORDER BY cond;
SELECT * FROM explain_filter('SELECT id FROM pdg.person WHERE age = 30');
SELECT * FROM explain_filter('SELECT id FROM pdg.person WHERE age IN (1, 2) OR email IS NULL');
SELECT * FROM explain_filter('SELECT id FROM pdg.person WHERE age BETWEEN 10 AND 20 AND NOT (status = ''active'')');
SELECT * FROM explain_filter('SELECT id FROM pdg.person WHERE name LIKE ''Name 1%'' AND joined_on < date ''2020-03-01''');
SELECT * FROM explain_filter('SELECT id FROM pdg.person WHERE score > 100.5 AND status <> ALL (ARRAY[''retired''])');
-- stays local: expressions, non-prefix LIKE, comparisons with zero on double precision
SELECT cond, rows_of(cond) AS rows, diff(cond) AS differences FROM (VALUES
  ('lower(name) = ''name 1'''), ('name LIKE ''%5'''), ('score = 0'), ('age + 1 = 31'), ('tags = ARRAY[''t1'']')
) v(cond) ORDER BY cond;
SELECT * FROM explain_filter('SELECT id FROM pdg.person WHERE lower(name) = ''name 1'' AND age > 40');
SELECT * FROM explain_filter('SELECT id FROM pdg.person WHERE name LIKE ''%5'' OR age = 3');
-- text ordering is pushed under the C collation only
SELECT * FROM explain_filter('SELECT id FROM pdg.person WHERE name < ''Name 2'' COLLATE "C"');
SELECT * FROM explain_filter('SELECT id FROM pdg.person WHERE name < ''Name 2'' COLLATE "und-x-icu"');
SELECT diff('name < ''Name 2'' COLLATE "C"') AS c_differences, diff('name < ''Name 2'' COLLATE "und-x-icu"') AS icu_differences;
-- parameters of prepared statements, custom and generic plans
PREPARE q(int) AS SELECT count(*) FROM pdg.person WHERE age >= $1;
EXECUTE q(45);
SET plan_cache_mode = force_generic_plan;
PREPARE q2(int) AS SELECT id FROM pdg.person WHERE age >= $1;
SELECT * FROM explain_filter('EXECUTE q2(45)');
SELECT count(*) FROM (SELECT id FROM pdg.person WHERE age >= 45) a;
EXECUTE q2(48);
EXECUTE q2(49);
RESET plan_cache_mode;
-- projection: only referenced columns are read; count(*) reads none
SELECT * FROM explain_filter('SELECT name FROM pdg.person');
SELECT * FROM explain_filter('SELECT count(*) FROM pdg.person');
SELECT count(*) FROM pdg.person;
-- ORDER BY and LIMIT
SELECT * FROM explain_filter('SELECT id, age FROM pdg.person ORDER BY age DESC NULLS LAST, id LIMIT 5');
SELECT id, age FROM pdg.person ORDER BY age DESC NULLS LAST, id LIMIT 5;
SELECT id, age FROM heap ORDER BY age DESC NULLS LAST, id LIMIT 5;
SELECT * FROM explain_filter('SELECT id FROM pdg.person WHERE status = ''active'' ORDER BY id LIMIT 3 OFFSET 2');
SELECT id FROM pdg.person WHERE status = 'active' ORDER BY id LIMIT 3 OFFSET 2;
SELECT id FROM heap WHERE status = 'active' ORDER BY id LIMIT 3 OFFSET 2;
-- not pushed: a local qual, a join, an aggregate, an order Lance cannot give
SELECT * FROM explain_filter('SELECT id FROM pdg.person WHERE lower(name) LIKE ''name 1%'' LIMIT 2');
SELECT count(*) FROM (SELECT id FROM pdg.person WHERE lower(name) LIKE 'name 1%' LIMIT 2) s;
SELECT * FROM explain_filter('SELECT p.id FROM pdg.person p JOIN pdg.person q ON q.id = p.id LIMIT 2');
SELECT count(*) FROM (SELECT p.id FROM pdg.person p JOIN pdg.person q ON q.id = p.id WHERE q.age = 3 LIMIT 2) s;
SELECT * FROM explain_filter('SELECT status, count(*) FROM pdg.person GROUP BY status LIMIT 1');
SELECT * FROM explain_filter('SELECT id FROM pdg.person ORDER BY lower(name) LIMIT 1');
SELECT id FROM pdg.person ORDER BY lower(name), id LIMIT 1;
-- a LIMIT given as a parameter
PREPARE lim(bigint) AS SELECT id FROM pdg.person ORDER BY id LIMIT $1;
EXECUTE lim(2);
-- ===================================================================
-- ANALYZE: column statistics reach the planner
-- ===================================================================
CREATE FUNCTION estimated_rows(q text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE line text;
BEGIN
  EXECUTE 'EXPLAIN ' || q INTO line;
  RETURN substring(line from 'rows=([0-9]+)')::bigint;
END $$;
SELECT estimated_rows('SELECT * FROM pdg.person WHERE status = ''retired''') AS before_analyze;
ANALYZE pdg.person;
SELECT count(*) > 0 AS has_stats FROM pg_stats WHERE schemaname = 'pdg' AND tablename = 'person';
-- 200 rows are sampled whole, so the estimates are the true counts
SELECT estimated_rows('SELECT * FROM pdg.person WHERE status = ''retired''') AS retired, rows_of('status = ''retired''') AS actual;
SELECT estimated_rows('SELECT * FROM pdg.person WHERE age = 30') AS age_30, rows_of('age = 30') AS actual;
SELECT n_distinct, null_frac FROM pg_stats WHERE schemaname = 'pdg' AND tablename = 'person' AND attname = 'email';
