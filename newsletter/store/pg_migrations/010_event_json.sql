-- PostgreSQL: the events' SES JSON (a text column, as on SQLite) read by `stats` in SQL.
-- nl_jsonb(text) is the payload as jsonb, or NULL when it is not JSON (SQLite's json_valid()
-- guard: one unreadable row must not fail the figures of a whole send).
CREATE FUNCTION nl_jsonb(doc text) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
BEGIN
    RETURN doc::jsonb;
EXCEPTION WHEN data_exception THEN
    RETURN NULL;
END
$$;
