-- ===================================================================
-- IMPORT FOREIGN SCHEMA, hand-written foreign tables, options
-- ===================================================================
\getenv graphs OMNIGRAPH_TEST_GRAPHS
\getenv fixtures OMNIGRAPH_TEST_FIXTURES
\set uri :graphs '/import'
\set schema_file :fixtures '/schema.pg'
\set data_file :fixtures '/data.ndjson'
CREATE SERVER social FOREIGN DATA WRAPPER omnigraph OPTIONS (uri :'uri');
SELECT omnigraph_create_graph('social', pg_read_file(:'schema_file')) IS NOT NULL AS created;
SELECT omnigraph_load('social', 'main', pg_read_file(:'data_file')) IS NOT NULL AS loaded;
CREATE SCHEMA g;
IMPORT FOREIGN SCHEMA "main" FROM SERVER social INTO g;
\d g.person
\d g.works_at
SELECT foreign_table_name FROM information_schema.foreign_tables WHERE foreign_table_schema = 'g' ORDER BY 1;
SELECT id, name, joined_on FROM g.person ORDER BY id;
-- LIMIT TO and EXCEPT
CREATE SCHEMA only_people;
IMPORT FOREIGN SCHEMA "main" LIMIT TO (person) FROM SERVER social INTO only_people;
CREATE SCHEMA no_edges;
IMPORT FOREIGN SCHEMA "main" EXCEPT (knows, works_at) FROM SERVER social INTO no_edges;
SELECT foreign_table_schema, foreign_table_name FROM information_schema.foreign_tables
 WHERE foreign_table_schema IN ('only_people', 'no_edges') ORDER BY 1, 2;
-- a branch
SELECT omnigraph_branch_create('social', 'feature') IS NOT NULL AS created;
SELECT omnigraph_load('social', 'feature', '{"type": "Person", "data": {"slug": "erin", "name": "Erin", "status": "active"}}') IS NOT NULL AS loaded;
CREATE SCHEMA feat;
IMPORT FOREIGN SCHEMA "feature" FROM SERVER social INTO feat;
SELECT id FROM feat.person ORDER BY id;
SELECT id FROM g.person ORDER BY id;
-- pinned to a commit: the state before the feature load, read-only
SELECT commit_id AS before_erin FROM omnigraph_log('social', 'feature') OFFSET 1 LIMIT 1 \gset
CREATE SCHEMA pinned;
IMPORT FOREIGN SCHEMA "feature" FROM SERVER social INTO pinned OPTIONS (commit :'before_erin');
SELECT id FROM pinned.person ORDER BY id;
SELECT mask(ftoptions::text) FROM pg_foreign_table WHERE ftrelid = 'pinned.person'::regclass;
-- tables following omnigraph.branch
CREATE SCHEMA session;
IMPORT FOREIGN SCHEMA "main" FROM SERVER social INTO session OPTIONS (session_branch 'true');
SELECT count(*) FROM session.person;
SET omnigraph.branch = 'feature';
SELECT count(*) FROM session.person;
RESET omnigraph.branch;
-- a hand-written table with its own names
CREATE FOREIGN TABLE public.people (
  key text OPTIONS (property 'id'),
  full_name text OPTIONS (property 'name'),
  years integer OPTIONS (property 'age')
) SERVER social OPTIONS (type 'Person', branch 'main');
SELECT key, full_name, years FROM public.people WHERE years IS NOT NULL ORDER BY key;
-- ===================================================================
-- bad options and mismatched tables
-- ===================================================================
-- should fail: unknown options, named with the valid ones; bad values
SELECT try($$CREATE SERVER bad1 FOREIGN DATA WRAPPER omnigraph OPTIONS (url '/x')$$);
SELECT try($$CREATE SERVER bad2 FOREIGN DATA WRAPPER omnigraph$$);
SELECT try($$CREATE FOREIGN TABLE bad3 (id text) SERVER social OPTIONS (type 'Person', branch 'a b')$$);
SELECT try($$CREATE FOREIGN TABLE bad4 (id text) SERVER social OPTIONS (type 'Person', commit 'abc')$$);
SELECT try($$CREATE FOREIGN TABLE bad5 (id text) SERVER social OPTIONS (type 'Person', colour 'red')$$);
SELECT try($$CREATE FOREIGN TABLE bad6 (id text OPTIONS (prop 'id')) SERVER social OPTIONS (type 'Person')$$);
SELECT try($$CREATE USER MAPPING FOR CURRENT_USER SERVER social OPTIONS (user 'x')$$);
SELECT try($$ALTER SERVER social OPTIONS (SET uri '')$$);
-- should fail: the branch or commit does not exist; unknown IMPORT option
SELECT try($$IMPORT FOREIGN SCHEMA "ghost" FROM SERVER social INTO g$$);
SELECT try($$IMPORT FOREIGN SCHEMA "main" FROM SERVER social INTO g OPTIONS (commit '01ARZ3NDEKTSV4RRFFQ69G5FAV')$$);
SELECT try($$IMPORT FOREIGN SCHEMA "main" FROM SERVER social INTO g OPTIONS (colour 'red')$$);
-- checked when first used: a type not in the graph, a property not in the type, a wrong type
CREATE FOREIGN TABLE robots (id text) SERVER social OPTIONS (type 'Robot');
SELECT try('SELECT * FROM robots');
CREATE FOREIGN TABLE people_bad (id text, height integer) SERVER social OPTIONS (type 'Person');
SELECT try('SELECT * FROM people_bad');
CREATE FOREIGN TABLE people_typed (id text, age text) SERVER social OPTIONS (type 'Person');
SELECT try('SELECT * FROM people_typed');
CREATE FOREIGN TABLE no_type (id text) SERVER social;
SELECT try('SELECT * FROM no_type');
-- a dropped branch
SELECT omnigraph_branch_delete('social', 'feature');
SELECT try('SELECT count(*) FROM feat.person');
-- a server whose uri holds no graph
\set nowhere :graphs '/nowhere'
CREATE SERVER empty_place FOREIGN DATA WRAPPER omnigraph OPTIONS (uri :'nowhere');
CREATE FOREIGN TABLE lost (id text) SERVER empty_place OPTIONS (type 'Person');
SELECT try('SELECT * FROM lost');
-- the session survived every error above
SELECT count(*) FROM g.person;
