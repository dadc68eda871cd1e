-- ===================================================================
-- helpers for the other tests (pg_regress runs this file first)
-- ===================================================================
-- Temp paths and generated ids change every run; tests print them masked.
CREATE FUNCTION mask(t text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
  SELECT regexp_replace(regexp_replace(t, '/[^'' ]*/graphs/', '<graphs>/', 'g'),
                        '[0-9A-HJKMNP-TV-Z]{26}', '<ulid>', 'g')
$$;
-- Run a statement; show "ok", or its SQLSTATE, message, detail and hint.
CREATE FUNCTION try(q text) RETURNS text LANGUAGE plpgsql AS $f$
DECLARE msg text; detail text; hint text;
BEGIN
  EXECUTE q;
  RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
  RETURN SQLSTATE || ': ' || mask(msg)
      || CASE WHEN detail <> '' THEN E'\nDETAIL: ' || mask(detail) ELSE '' END
      || CASE WHEN hint <> '' THEN E'\nHINT: ' || hint ELSE '' END;
END $f$;
SELECT try('SELECT 1') AS works, try('SELECT 1/0') AS fails;
