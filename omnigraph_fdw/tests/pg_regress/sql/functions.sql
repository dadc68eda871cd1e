-- ===================================================================
-- SQL functions: create, load, branches, log, schema, recover
-- ===================================================================
\getenv graphs OMNIGRAPH_TEST_GRAPHS
\getenv fixtures OMNIGRAPH_TEST_FIXTURES
\set uri :graphs '/functions'
\set schema_file :fixtures '/test.pg'
\set data_file :fixtures '/test.jsonl'
CREATE SERVER fn_graph FOREIGN DATA WRAPPER omnigraph OPTIONS (uri :'uri');
SELECT length(omnigraph_create_graph('fn_graph', pg_read_file(:'schema_file'))) AS commit_id_length;
SELECT omnigraph_schema('fn_graph') = pg_read_file(:'schema_file') AS schema_round_trips;
SELECT omnigraph_load('fn_graph', 'main', pg_read_file(:'data_file')) AS rows_loaded;
-- the load is one commit, made by the current role
SELECT actor, message, cardinality(parents) AS parents FROM omnigraph_log('fn_graph');
-- merge mode upserts by key; a load defaults to append
SELECT omnigraph_load('fn_graph', 'main', '{"type": "Person", "data": {"name": "Alice", "age": 31}}', 'merge') AS rows_loaded;
-- branches
SELECT omnigraph_branch_create('fn_graph', 'feature/a') = (SELECT commit_id FROM omnigraph_log('fn_graph') LIMIT 1) AS starts_at_main_head;
SELECT name FROM omnigraph_branch_list('fn_graph') ORDER BY name;
SELECT omnigraph_load('fn_graph', 'feature/a', '{"type": "Company", "data": {"name": "Initech"}}') AS rows_loaded;
SELECT count(*) AS commits_on_feature FROM omnigraph_log('fn_graph', 'feature/a');
SELECT count(*) AS commits_on_main FROM omnigraph_log('fn_graph', 'main');
-- a branch from an older commit
SELECT omnigraph_branch_create('fn_graph', 'old', (SELECT commit_id FROM omnigraph_log('fn_graph') ORDER BY committed_at LIMIT 1)) IS NOT NULL AS created;
SELECT omnigraph_branch_delete('fn_graph', 'old');
SELECT name FROM omnigraph_branch_list('fn_graph') ORDER BY name;
SELECT * FROM omnigraph_recover('fn_graph', 'main');
-- ===================================================================
-- errors: each with a SQLSTATE and a message naming the object
-- ===================================================================
-- should fail: no such server
SELECT try($$SELECT omnigraph_schema('nope')$$);
-- should fail: a schema error with a position (the detail shows the caret);
-- creating a graph runs only as a statement of its own, so no try() here
-- (a second create at the same place is tested in tests/test_trust.py)
\set uri2 :graphs '/functions_bad'
CREATE SERVER fn_bad FOREIGN DATA WRAPPER omnigraph OPTIONS (uri :'uri2');
SELECT omnigraph_create_graph('fn_bad', E'node Person {\n    name: Strng\n}');
-- should fail: no graph there yet
SELECT try($$SELECT omnigraph_schema('fn_bad')$$);
-- should fail: duplicate key, with the line number (checked against the
-- branch when the load's transaction commits, here at the statement's end)
SELECT omnigraph_load('fn_graph', 'main', E'{"type": "Person", "data": {"name": "Zed"}}\n{"type": "Person", "data": {"name": "Bob"}}');
-- should fail: dangling edge
SELECT omnigraph_load('fn_graph', 'main', '{"edge": "Knows", "from": "Alice", "to": "Nobody", "data": {"id": "k-dangling"}}');
-- should fail: missing required property, wrong type, value not in an enum
SELECT try($$SELECT omnigraph_load('fn_graph', 'main', '{"type": "Person", "data": {"age": 3}}')$$);
SELECT try($$SELECT omnigraph_load('fn_graph', 'main', '{"type": "Person", "data": {"name": "Ann", "age": "old"}}')$$);
-- should fail: malformed line, unknown type, unknown mode
SELECT try($$SELECT omnigraph_load('fn_graph', 'main', 'not json')$$);
SELECT try($$SELECT omnigraph_load('fn_graph', 'main', '{"type": "Robot", "data": {}}')$$);
SELECT try($$SELECT omnigraph_load('fn_graph', 'main', '{}', 'replace')$$);
-- should fail: branch errors
SELECT try($$SELECT omnigraph_branch_create('fn_graph', 'feature/a')$$);
SELECT try($$SELECT omnigraph_branch_create('fn_graph', 'bad name')$$);
SELECT try($$SELECT omnigraph_branch_create('fn_graph', 'x', 'no-such-ref')$$);
SELECT try($$SELECT omnigraph_branch_delete('fn_graph', 'main')$$);
SELECT try($$SELECT omnigraph_branch_delete('fn_graph', 'ghost')$$);
SELECT try($$SELECT * FROM omnigraph_log('fn_graph', 'ghost')$$);
-- nothing above changed main
SELECT count(*) AS commits_on_main FROM omnigraph_log('fn_graph', 'main');
