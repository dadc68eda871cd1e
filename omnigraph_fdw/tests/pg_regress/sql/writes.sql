-- ===================================================================
-- INSERT, UPDATE, DELETE and COPY: one graph commit per transaction,
-- read-your-writes, savepoints, validation errors with their SQLSTATEs
-- ===================================================================
\getenv graphs OMNIGRAPH_TEST_GRAPHS
\getenv fixtures OMNIGRAPH_TEST_FIXTURES
\set uri :graphs '/writes'
\set schema_file :fixtures '/schema.pg'
\set data_file :fixtures '/data.ndjson'
CREATE SERVER wr FOREIGN DATA WRAPPER omnigraph OPTIONS (uri :'uri');
SELECT omnigraph_create_graph('wr', pg_read_file(:'schema_file')) IS NOT NULL AS created;
SELECT omnigraph_load('wr', 'main', pg_read_file(:'data_file')) IS NOT NULL AS loaded;
CREATE SCHEMA w;
IMPORT FOREIGN SCHEMA "main" FROM SERVER wr INTO w;
CREATE FUNCTION commits() RETURNS bigint LANGUAGE sql AS $$ SELECT count(*) FROM omnigraph_log('wr', 'main') $$;
CREATE TEMP TABLE log_before AS SELECT commits() AS n;

-- ---------------------------------------------------------- INSERT
INSERT INTO w.person (slug, name, status, age) VALUES ('dora', 'Dora', 'active', 41) RETURNING id, slug, age;
-- several rows in one statement, and INSERT ... SELECT: one commit each
INSERT INTO w.person (slug, name, status) VALUES ('ed', 'Ed', 'retired'), ('flo', 'Flo', 'active');
INSERT INTO w.person (slug, name, status, tags)
  SELECT 'gen' || i, 'Gen ' || i, 'active', ARRAY['g', i::text] FROM generate_series(1, 5) i;
SELECT commits() - n AS new_commits FROM log_before;
SELECT slug, name, status, tags FROM w.person WHERE slug LIKE 'gen%' ORDER BY slug COLLATE "C";
-- an edge gets a ULID id; RETURNING shows it
WITH k AS (INSERT INTO w.knows (src, dst, since) VALUES ('dora', 'ed', '2024-01-02') RETURNING *)
SELECT length(id) AS id_length, src, dst, since FROM k;
INSERT INTO w.knows (id, src, dst) VALUES ('k-alice-dora', 'alice', 'dora');
SELECT message, actor FROM omnigraph_log('wr', 'main') LIMIT 1;

-- ---------------------------------------------------------- COPY
COPY w.person (slug, name, status, age) FROM STDIN WITH (FORMAT csv);
hal,Hal,active,20
ida,Ida,on-leave,21
\.
COPY w.person (slug, name, status, age) FROM STDIN;
jo	Jo	retired	\N
\.
SELECT slug, age, status FROM w.person WHERE slug IN ('hal', 'ida', 'jo') ORDER BY slug COLLATE "C";

-- ---------------------------------------------------------- UPDATE / DELETE
-- The WHERE is pushed down: Lance returns only the matching rows, in batches.
-- An UPDATE that computes its values from the row reads whole rows (Postgres
-- builds each complete new row); a DELETE, and an UPDATE whose values are the
-- same for every row, run inside the scan (direct modify) and read only ids.
CREATE FUNCTION plan_of(q text) RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE line text;
BEGIN
  FOR line IN EXECUTE 'EXPLAIN (VERBOSE, COSTS OFF) ' || q LOOP
    CONTINUE WHEN line LIKE '%Omnigraph Commit:%';
    RETURN NEXT line;
  END LOOP;
END $$;
SELECT plan_of($$UPDATE w.person SET age = age + 1 WHERE slug IN ('hal', 'ida')$$);
SELECT plan_of($$UPDATE w.person SET status = 'retired', score = 0.5 WHERE slug IN ('hal', 'ida')$$);
SELECT plan_of($$DELETE FROM w.person WHERE slug LIKE 'gen%' AND age IS NULL$$);
UPDATE w.person SET age = age + 1, tags = ARRAY['x'] WHERE slug IN ('hal', 'ida') RETURNING slug, age, tags;
DELETE FROM w.person WHERE slug LIKE 'gen%' AND age IS NULL;
SELECT count(*) AS gens FROM w.person WHERE slug LIKE 'gen%';
-- deleting a node deletes its edges, with a NOTICE
SELECT count(*) AS dora_edges FROM w.knows WHERE src = 'dora' OR dst = 'dora';
DELETE FROM w.person WHERE slug = 'dora';
SELECT count(*) AS dora_edges FROM w.knows WHERE src = 'dora' OR dst = 'dora';
-- the key, the id and edge endpoints never change
SELECT try($$UPDATE w.person SET slug = 'x' WHERE slug = 'ed'$$);
SELECT try($$UPDATE w.knows SET dst = 'ed' WHERE src = 'alice'$$);
-- a table pinned to a commit is read-only
DO $$ BEGIN
  EXECUTE format('CREATE FOREIGN TABLE w.person_then (id text, slug text, name text, status text) SERVER wr OPTIONS (type %L, commit %L)',
                 'Person', (SELECT commit_id FROM omnigraph_log('wr', 'main') ORDER BY committed_at LIMIT 1));
END $$;
SELECT try($$INSERT INTO w.person_then (slug, name, status) VALUES ('z', 'Z', 'active')$$);
SELECT try($$DELETE FROM w.person_then$$);

-- ---------------------------------------------------------- transactions
-- all writes of one transaction: one commit, with the session role and message
SELECT commits() AS n \gset
BEGIN;
SET LOCAL omnigraph.commit_message = 'hire Kim';
INSERT INTO w.person (slug, name, status) VALUES ('kim', 'Kim', 'active');
INSERT INTO w.works_at (src, dst, role) VALUES ('kim', 'acme', 'engineer');
UPDATE w.person SET age = 33 WHERE slug = 'kim';
-- read your writes: inserts, updates and deletes merged with the branch
DELETE FROM w.person WHERE slug = 'ed';
SELECT slug, age FROM w.person WHERE slug IN ('kim', 'ed', 'flo') ORDER BY slug COLLATE "C";
SELECT slug FROM w.person ORDER BY slug COLLATE "C" LIMIT 4;
SELECT count(*) FROM w.person;
SELECT commits() - :n AS not_yet;
COMMIT;
SELECT commits() - :n AS one_commit;
SELECT message, actor FROM omnigraph_log('wr', 'main') LIMIT 1;
SELECT slug, age FROM w.person WHERE slug IN ('kim', 'ed') ORDER BY slug;
-- ROLLBACK leaves nothing
BEGIN;
INSERT INTO w.person (slug, name, status) VALUES ('lou', 'Lou', 'active');
DELETE FROM w.person WHERE slug = 'flo';
ROLLBACK;
SELECT commits() - :n AS still_one, count(*) FILTER (WHERE slug = 'lou') AS lou, count(*) FILTER (WHERE slug = 'flo') AS flo FROM w.person;
-- an error mid-transaction aborts it: nothing is published
BEGIN;
INSERT INTO w.person (slug, name, status) VALUES ('max', 'Max', 'active');
SELECT 1/0;
COMMIT;
SELECT count(*) AS max FROM w.person WHERE slug = 'max';
SELECT commits() - :n AS still_one;

-- ---------------------------------------------------------- savepoints
BEGIN;
INSERT INTO w.person (slug, name, status) VALUES ('ned', 'Ned', 'active');
SAVEPOINT s1;
INSERT INTO w.person (slug, name, status) VALUES ('ola', 'Ola', 'active');
UPDATE w.person SET age = 99 WHERE slug = 'ned';
SAVEPOINT s2;
DELETE FROM w.person WHERE slug = 'flo';
RELEASE SAVEPOINT s2;
SELECT slug, age FROM w.person WHERE slug IN ('ned', 'ola', 'flo') ORDER BY slug;
ROLLBACK TO SAVEPOINT s1;
SELECT slug, age FROM w.person WHERE slug IN ('ned', 'ola', 'flo') ORDER BY slug;
-- a failed statement inside a savepoint leaves the earlier writes
SAVEPOINT s3;
INSERT INTO w.person (slug, name, status) VALUES ('pia', 'Pia', 'bogus');
ROLLBACK TO SAVEPOINT s3;
COMMIT;
SELECT slug, age FROM w.person WHERE slug IN ('ned', 'ola', 'flo', 'pia') ORDER BY slug;
-- PL/pgSQL exception blocks are subtransactions too
DO $$
BEGIN
  INSERT INTO w.person (slug, name, status) VALUES ('quin', 'Quin', 'active');
  BEGIN
    INSERT INTO w.person (slug, name, status) VALUES ('rex', 'Rex', 'active');
    RAISE EXCEPTION 'undo rex';
  EXCEPTION WHEN OTHERS THEN NULL;
  END;
END $$;
SELECT slug FROM w.person WHERE slug IN ('quin', 'rex');
-- PREPARE TRANSACTION is refused
BEGIN;
INSERT INTO w.person (slug, name, status) VALUES ('sam', 'Sam', 'active');
PREPARE TRANSACTION 'p1';
SELECT count(*) AS sam FROM w.person WHERE slug = 'sam';

-- ---------------------------------------------------------- validation
-- each error names the table or type, the column and the value
SELECT try($$INSERT INTO w.person (slug, name, status) VALUES ('tia', 'Tia', 'active'), ('tia', 'Tia2', 'active')$$);
SELECT try($$INSERT INTO w.person (slug, status) VALUES ('vic', 'active')$$);
SELECT try($$INSERT INTO w.person (name, status) VALUES ('NoKey', 'active')$$);
SELECT try($$UPDATE w.person SET name = NULL WHERE slug = 'alice'$$);
SELECT try($$INSERT INTO w.person (slug, name, status) VALUES ('wes', 'Wes', 'asleep')$$);
SELECT try($$INSERT INTO w.knows (src) VALUES ('alice')$$);
SELECT try($$INSERT INTO w.person (slug, name, status, age) VALUES ('yul', 'Yul', 'active', 3000000000)$$);
SELECT try($$INSERT INTO w.nope (x) VALUES (1)$$);
-- checks against the committed state run at COMMIT (the error ends the transaction)
INSERT INTO w.person (slug, name, status) VALUES ('alice', 'Again', 'active');
\echo :SQLSTATE
INSERT INTO w.person (slug, name, status, email) VALUES ('uma', 'Uma', 'active', 'alice@example.com');
\echo :SQLSTATE
INSERT INTO w.knows (id, src, dst) VALUES ('k-dangling', 'alice', 'nobody');
\echo :SQLSTATE
INSERT INTO w.company (slug, name, founded) VALUES ('old', 'Old', 1200);
\echo :SQLSTATE
BEGIN;
INSERT INTO w.person (slug, name, status) VALUES ('vera', 'Vera', 'active');
INSERT INTO w.knows (id, src, dst) VALUES ('k-vera', 'vera', 'ghost');
COMMIT;
\echo :SQLSTATE
SELECT count(*) AS vera FROM w.person WHERE slug = 'vera';
SELECT commits() - :n AS commits_since;
