-- PostgreSQL: subscriber identities are never reused (as SQLite's 005_subscriber_identity.sql).
-- Ids already come from identity sequences, which never hand out a number twice (SQLite needed
-- AUTOINCREMENT for that). What is added:
-- * `uid`, 16 random bytes (bytea; SQLite: a BLOB), named in every token as hex: a token
--   verifies to a reader only when the row with its id still carries its uid;
-- * `legacy_tokens`: readers who existed before this migration also accept the tokens made
--   before uids (the links in mail already sent), and only they.
-- The bytes come from gen_random_uuid() (built in since PostgreSQL 13, pg_strong_random, no
-- extension needed): bytes 0-5 of a version-4 UUID are all random (the version and variant bits
-- are in bytes 6 and 8), so three UUIDs give 6 + 6 + 4 = 16 fully random bytes.

CREATE FUNCTION nl_random_uid() RETURNS bytea LANGUAGE sql VOLATILE PARALLEL SAFE AS $$
    SELECT substr(uuid_send(gen_random_uuid()), 1, 6) || substr(uuid_send(gen_random_uuid()), 1, 6)
           || substr(uuid_send(gen_random_uuid()), 1, 4)
$$;

ALTER TABLE subscribers ADD COLUMN uid bytea,
                        ADD COLUMN legacy_tokens integer NOT NULL DEFAULT 0;
UPDATE subscribers SET uid = nl_random_uid(), legacy_tokens = 1;
ALTER TABLE subscribers ALTER COLUMN uid SET DEFAULT nl_random_uid(),
                        ALTER COLUMN uid SET NOT NULL,
                        ADD CONSTRAINT subscribers_uid_length CHECK (length(uid) = 16);
