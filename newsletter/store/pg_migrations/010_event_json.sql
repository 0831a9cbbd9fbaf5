-- PostgreSQL: the events' SES JSON (a text column, as on SQLite) read by `stats` in SQL.
-- nl_jsonb(text) is the payload as jsonb, or NULL when it is not JSON (SQLite's json_valid()
-- guard: one unreadable row must not fail the figures of a whole send). PARALLEL UNSAFE (the
-- default, said out loud): its exception block is a subtransaction, which a parallel query may
-- not start ("cannot start subtransactions during a parallel operation" on a big send).
CREATE FUNCTION nl_jsonb(doc text) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL UNSAFE AS $$
BEGIN
    RETURN doc::jsonb;
EXCEPTION WHEN data_exception THEN
    RETURN NULL;
END
$$;
