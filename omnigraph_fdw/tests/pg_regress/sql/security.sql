-- ===================================================================
-- Trust: who may name files and change graphs, read-only transactions,
-- loads that follow the transaction, cached plans and omnigraph.branch,
-- and inputs that must be refused, never crash a backend
-- ===================================================================
\getenv graphs OMNIGRAPH_TEST_GRAPHS
\getenv fixtures OMNIGRAPH_TEST_FIXTURES
\set uri :graphs '/security'
\set schema_file :fixtures '/test.pg'
\set data_file :fixtures '/test.jsonl'
CREATE ROLE sec_admin;
CREATE ROLE sec_reader;
CREATE ROLE sec_writer;
GRANT USAGE ON FOREIGN DATA WRAPPER omnigraph TO sec_admin, sec_reader, sec_writer;
CREATE SERVER sec_graph FOREIGN DATA WRAPPER omnigraph OPTIONS (uri :'uri');
ALTER SERVER sec_graph OWNER TO sec_admin;
GRANT USAGE ON FOREIGN SERVER sec_graph TO sec_reader, sec_writer;
SELECT omnigraph_create_graph('sec_graph', pg_read_file(:'schema_file')) IS NOT NULL AS created;
SELECT omnigraph_load('sec_graph', 'main', pg_read_file(:'data_file')) AS rows_loaded;
CREATE SCHEMA sec;
IMPORT FOREIGN SCHEMA "main" FROM SERVER sec_graph INTO sec;
GRANT USAGE ON SCHEMA sec TO sec_reader, sec_writer;
GRANT SELECT ON ALL TABLES IN SCHEMA sec TO sec_reader;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA sec TO sec_writer;
SELECT count(*) AS commits FROM omnigraph_log('sec_graph') \gset
-- ===================================================================
-- naming files: superuser or pg_write_server_files
-- ===================================================================
SET ROLE sec_reader;
-- should fail: any other role may not point a server at a directory
SELECT try($$CREATE SERVER sec_mine FOREIGN DATA WRAPPER omnigraph OPTIONS (uri '/etc')$$);
RESET ROLE;
GRANT pg_write_server_files TO sec_reader;
SET ROLE sec_reader;
SELECT try($$CREATE SERVER sec_mine FOREIGN DATA WRAPPER omnigraph OPTIONS (uri '/tmp/sec_mine')$$);
RESET ROLE;
REVOKE pg_write_server_files FROM sec_reader;
DROP SERVER sec_mine;
-- should fail: relative paths and hosts are not graph locations
SELECT try($$CREATE SERVER sec_rel FOREIGN DATA WRAPPER omnigraph OPTIONS (uri 'graphs/social')$$);
SELECT try($$CREATE SERVER sec_host FOREIGN DATA WRAPPER omnigraph OPTIONS (uri 'file://otherhost/g')$$);
-- ===================================================================
-- changing a graph: ownership of the server; reading: USAGE
-- ===================================================================
SET ROLE sec_reader;
SELECT count(*) AS people FROM sec.person;
SELECT count(*) > 0 AS reads_the_log FROM omnigraph_log('sec_graph');
SELECT count(*) AS branches FROM omnigraph_branch_list('sec_graph');
-- should fail: every function that changes the graph
SELECT try($$SELECT omnigraph_load('sec_graph', 'main', '{"type": "Person", "data": {"name": "Mallory"}}')$$);
SELECT try($$SELECT omnigraph_load('sec_graph', 'main', '{"type": "Person", "data": {"name": "Mallory"}}', 'overwrite')$$);
SELECT try($$SELECT omnigraph_branch_create('sec_graph', 'mallory')$$);
SELECT try($$SELECT omnigraph_branch_delete('sec_graph', 'main')$$);
SELECT try($$SELECT * FROM omnigraph_recover('sec_graph')$$);
SELECT try($$SELECT omnigraph_create_graph('sec_graph', 'node A { x: I32 }')$$);
-- should fail: writes through tables follow the tables' privileges
SELECT try($$INSERT INTO sec.person (name) VALUES ('Mallory')$$);
RESET ROLE;
SET ROLE sec_writer;
INSERT INTO sec.person (name, age) VALUES ('Wendy', 41);
SELECT try($$SELECT omnigraph_branch_create('sec_graph', 'wendy')$$);
RESET ROLE;
-- a member of the owning role may change the graph
GRANT sec_admin TO sec_writer;
SET ROLE sec_writer;
SELECT omnigraph_branch_create('sec_graph', 'wendy') IS NOT NULL AS created;
SELECT omnigraph_load('sec_graph', 'wendy', '{"type": "Person", "data": {"name": "Wanda"}}') AS rows_loaded;
SELECT omnigraph_branch_delete('sec_graph', 'wendy');
RESET ROLE;
REVOKE sec_admin FROM sec_writer;
SELECT count(*) - :commits AS new_commits_on_main, array_agg(DISTINCT actor ORDER BY actor) AS actors
  FROM omnigraph_log('sec_graph');
-- ===================================================================
-- read-only transactions and transaction blocks
-- ===================================================================
SET default_transaction_read_only = on;
-- should fail: 25006 for each function that changes the graph, and for DML
SELECT try($$SELECT omnigraph_load('sec_graph', 'main', '{"type": "Person", "data": {"name": "Rita"}}')$$);
SELECT try($$SELECT omnigraph_branch_create('sec_graph', 'rita')$$);
SELECT try($$SELECT omnigraph_branch_delete('sec_graph', 'rita')$$);
SELECT try($$SELECT * FROM omnigraph_recover('sec_graph')$$);
SELECT try($$SELECT omnigraph_create_graph('sec_graph', 'node A { x: I32 }')$$);
SELECT try($$INSERT INTO sec.person (name) VALUES ('Rita')$$);
-- reads still work
SELECT count(*) AS people FROM sec.person;
RESET default_transaction_read_only;
-- should fail: creating a graph writes files no ROLLBACK can undo
BEGIN;
SELECT omnigraph_create_graph('sec_graph', 'node A { x: I32 }');
ROLLBACK;
-- ===================================================================
-- omnigraph_load is part of the transaction
-- ===================================================================
BEGIN;
SELECT omnigraph_load('sec_graph', 'main', '{"type": "Person", "data": {"name": "Rolled", "age": 1}}') AS rows_loaded;
SELECT name, age FROM sec.person WHERE name = 'Rolled';
ROLLBACK;
SELECT count(*) AS rolled_back FROM sec.person WHERE name = 'Rolled';
-- a statement after the load in one DO block sees it
DO $$
BEGIN
  PERFORM omnigraph_load('sec_graph', 'main', '{"type": "Person", "data": {"name": "Dora"}}');
  IF (SELECT count(*) FROM sec.person WHERE name = 'Dora') <> 1 THEN
    RAISE EXCEPTION 'the load is not visible to the next statement';
  END IF;
END $$;
-- a load and an INSERT in one transaction are one commit, named by the load
BEGIN;
SELECT omnigraph_load('sec_graph', 'main', '{"type": "Person", "data": {"name": "Lou"}}') AS rows_loaded;
INSERT INTO sec.person (name) VALUES ('Ina');
COMMIT;
SELECT message FROM omnigraph_log('sec_graph') LIMIT 1;
SELECT count(*) AS both_landed FROM sec.person WHERE name IN ('Lou', 'Ina');
-- a failed load inside an exception block rolls back with it
DO $$
BEGIN
  BEGIN
    PERFORM omnigraph_load('sec_graph', 'main', E'{"type": "Person", "data": {"name": "Half"}}\nnot json');
  EXCEPTION WHEN others THEN
    RAISE NOTICE 'load failed: %', SQLERRM;
  END;
END $$;
SELECT count(*) AS half_loads FROM sec.person WHERE name = 'Half';
-- ===================================================================
-- branch names never look like commit ids
-- ===================================================================
SELECT try($$SELECT omnigraph_branch_create('sec_graph', '01ARZ3NDEKTSV4RRFFQ69G5FAV')$$);
-- ===================================================================
-- cached plans read the branch omnigraph.branch names when they run
-- ===================================================================
CREATE SCHEMA sec_session;
IMPORT FOREIGN SCHEMA "main" FROM SERVER sec_graph INTO sec_session OPTIONS (session_branch 'true');
SELECT omnigraph_branch_create('sec_graph', 'other') IS NOT NULL AS created;
SELECT omnigraph_load('sec_graph', 'other', '{"type": "Person", "data": {"name": "OnlyOther"}}') AS rows_loaded;
SET plan_cache_mode = force_generic_plan;
PREPARE sec_count(text) AS SELECT count(*) FROM sec_session.person WHERE name = $1;
PREPARE sec_insert(text) AS INSERT INTO sec_session.person (name) VALUES ($1);
EXECUTE sec_count('OnlyOther');
SET omnigraph.branch = 'other';
EXECUTE sec_count('OnlyOther');
EXECUTE sec_insert('WrittenOther');
EXECUTE sec_count('WrittenOther');
RESET omnigraph.branch;
EXECUTE sec_count('WrittenOther');
DEALLOCATE sec_count;
DEALLOCATE sec_insert;
RESET plan_cache_mode;
-- ===================================================================
-- bounded input: refused with an error, the backend keeps running
-- ===================================================================
\set uri_bad :graphs '/security_bad'
CREATE SERVER sec_bad FOREIGN DATA WRAPPER omnigraph OPTIONS (uri :'uri_bad');
\set VERBOSITY terse
SELECT omnigraph_create_graph('sec_bad', 'node A { v: Vector(2000000000) }');
SELECT omnigraph_create_graph('sec_bad', E'node A {\n x: String @m(\n' || repeat(E'k =\n', 300000) || '1) }');
SELECT omnigraph_create_graph('sec_bad', 'node A { ' || repeat('n', 300) || ': String }');
SELECT omnigraph_create_graph('sec_bad', '// ' || repeat('x', 5000000));
\set VERBOSITY default
SELECT try($$SELECT omnigraph_schema('sec_bad')$$);
-- a commit message is bounded
SELECT set_config('omnigraph.commit_message', repeat('m', 70000), false) IS NOT NULL AS set;
\set VERBOSITY terse
INSERT INTO sec.person (name) VALUES ('Verbose');
\set VERBOSITY default
RESET omnigraph.commit_message;
SELECT count(*) AS verbose FROM sec.person WHERE name = 'Verbose';
-- filters nested deeper than pushdown allows run locally, with the same rows
DO $$
DECLARE q text := 'name = ''Alice''';
DECLARE n bigint;
BEGIN
  FOR i IN 1..80 LOOP
    q := CASE WHEN i % 2 = 0 THEN format('(%s AND name IS NOT NULL)', q)
              ELSE format('(%s OR name = %L)', q, 'x' || i) END;
  END LOOP;
  EXECUTE 'SELECT count(*) FROM sec.person WHERE ' || q INTO n;
  RAISE NOTICE 'rows matching an 80-level filter: %', n;
END $$;
-- the backend that ran all of the above is still this one
SELECT 1 AS still_connected;
