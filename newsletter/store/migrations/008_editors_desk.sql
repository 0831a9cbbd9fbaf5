-- Issue 13 (the editor's desk): attribute names normalised, consent records from imports, feed
-- polling state and the last `gather` list.

-- Attribute names are stored normalised (newsletter.attributes.attr_key: trimmed, lower case,
-- white space → '_'). nl_attr_key is that Python function, registered on the connection by the
-- migration runner. When two keys fold into one (`City` and `city`), a non-empty value wins,
-- then the key already in normal form, then the later key (SQLite takes the bare column `v`
-- from the row holding max(rank)).
UPDATE subscribers SET attributes = (
    SELECT json_group_object(k, v) FROM (
        SELECT k, v, max(rank) FROM (
            SELECT nl_attr_key(key) AS k, value AS v,
                   ((trim(coalesce(value, '')) <> '') * 2 + (key = nl_attr_key(key))) * 1000000 + id AS rank
            FROM json_each(subscribers.attributes)
        ) GROUP BY k
    )
)
WHERE EXISTS (SELECT 1 FROM json_each(subscribers.attributes) WHERE key <> nl_attr_key(key));

-- Consent evidence brought in by `subscribers import --from …` (Mailchimp's OPTIN_TIME,
-- OPTIN_IP, CONFIRM_TIME, CONFIRM_IP; Substack's created_at; Buttondown's creation_date and
-- ip_address; listmonk's created_at): one record per subscriber and source. Erasing the
-- subscriber deletes it with them.
CREATE TABLE consent_records (
    id            INTEGER PRIMARY KEY,
    subscriber_id INTEGER NOT NULL REFERENCES subscribers(id) ON DELETE CASCADE,
    source        TEXT NOT NULL,                -- e.g. "mailchimp export (members.zip)"
    optin_at      TEXT,                         -- when the reader signed up, as the service said
    optin_ip      TEXT,
    confirmed_at  TEXT,                         -- double opt-in confirmation, if any
    confirm_ip    TEXT,
    evidence      TEXT NOT NULL DEFAULT '{}',   -- the raw consent columns of the row, JSON
    recorded_at   TEXT NOT NULL,
    UNIQUE (subscriber_id, source)
);

-- Feed polling (`newsletter gather`): validators for conditional GET and the entries last seen,
-- so that a 304 Not Modified still lists the feed's candidates.
CREATE TABLE feeds (
    url           TEXT PRIMARY KEY,
    title         TEXT NOT NULL DEFAULT '',
    etag          TEXT,
    last_modified TEXT,
    checked_at    TEXT,
    status        TEXT                          -- "200", "304" or the last error
);

CREATE TABLE feed_entries (
    feed_url      TEXT NOT NULL REFERENCES feeds(url) ON DELETE CASCADE,
    url           TEXT NOT NULL,                -- the entry's link, tracking parameters removed
    url_key       TEXT NOT NULL,                -- newsletter.urls.url_key(url)
    title         TEXT NOT NULL,
    summary       TEXT NOT NULL DEFAULT '',     -- plain Markdown, sanitised
    published_at  TEXT,                         -- ISO 8601 UTC
    PRIMARY KEY (feed_url, url_key)
);

-- The numbered list the last `gather` printed: `gather --add 3 5 8 EDITION` adds from it, so the
-- numbers are the ones the editor saw.
CREATE TABLE gather_candidates (
    number        INTEGER PRIMARY KEY,
    feed_url      TEXT NOT NULL,
    url           TEXT NOT NULL,
    title         TEXT NOT NULL,
    summary       TEXT NOT NULL DEFAULT '',
    published_at  TEXT,
    listed_at     TEXT NOT NULL
);
