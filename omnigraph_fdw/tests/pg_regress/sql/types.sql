-- ===================================================================
-- every property type round-trips to its Postgres type
-- ===================================================================
\getenv graphs OMNIGRAPH_TEST_GRAPHS
\set uri :graphs '/types'
CREATE SERVER typed FOREIGN DATA WRAPPER omnigraph OPTIONS (uri :'uri');
SELECT omnigraph_create_graph('typed', $$
node Thing {
    k: String @key
    b: Bool?
    small: I32?
    big: I64?
    unsigned32: U32?
    unsigned64: U64?
    real32: F32?
    real64: F64?
    day: Date?
    moment: DateTime?
    colour: enum(red, green-ish)?
    words: [String]?
    numbers: [I64]?
    floats: [F64]?
    days: [Date]?
    embedding: Vector(3)?
    payload: Blob?
}
edge Near: Thing -> Thing { weight: F64 }
$$) IS NOT NULL AS created;
SELECT omnigraph_load('typed', 'main', $$
{"type": "Thing", "data": {"k": "full", "b": true, "small": -2147483648, "big": 9223372036854775807, "unsigned32": 4294967295, "unsigned64": 18446744073709551615, "real32": 1.5, "real64": -0.25, "day": "2024-02-29", "moment": "2024-02-29T23:59:59.123456Z", "colour": "green-ish", "words": ["a", "ünïcode ✓", ""], "numbers": [1, -2, 3], "floats": [0.5], "days": ["1999-12-31", "2000-01-01"], "embedding": [0.1, 0.2, 0.3], "payload": "base64:aGVsbG8="}}
{"type": "Thing", "data": {"k": "empty", "words": [], "numbers": []}}
{"type": "Thing", "data": {"k": "O'Brien \"quoted\""}}
{"edge": "Near", "from": "full", "to": "empty", "data": {"id": "e1", "weight": 2.5}}
$$) IS NOT NULL AS loaded;
CREATE SCHEMA t;
IMPORT FOREIGN SCHEMA "main" FROM SERVER typed INTO t;
\d t.thing
SET timezone = 'UTC';
SELECT k, b, small, big, unsigned32, unsigned64, real32, real64, day, moment, colour FROM t.thing ORDER BY k;
SELECT k, words, numbers, floats, days, embedding, payload, encode(payload, 'escape') AS text FROM t.thing ORDER BY k;
SELECT k, pg_typeof(unsigned64), pg_typeof(moment), pg_typeof(words), pg_typeof(embedding) FROM t.thing WHERE k = 'full';
SELECT k, words[2], cardinality(words) FROM t.thing ORDER BY k;
SELECT * FROM t.near;
-- whole-row references read every column
SELECT row_to_json(t2) AS whole_row FROM t.thing t2 WHERE k = 'empty';
RESET timezone;
