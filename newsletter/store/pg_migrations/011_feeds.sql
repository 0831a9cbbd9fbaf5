-- PostgreSQL: feed polling (`newsletter gather`) as SQLite's 008_editors_desk.sql has it: the
-- validators for conditional GET and the entries last seen (so that a 304 Not Modified still
-- lists the feed's candidates), and the numbered list the last `gather` printed (`gather --add
-- 3 5 8 EDITION` adds from it). Timestamps are ISO 8601 UTC text, as on SQLite.

CREATE TABLE feeds (
    url           text PRIMARY KEY,
    title         text NOT NULL DEFAULT '',
    etag          text,
    last_modified text,
    checked_at    text,
    status        text                          -- "200", "304" or the last error
);

CREATE TABLE feed_entries (
    feed_url      text NOT NULL REFERENCES feeds (url) ON DELETE CASCADE,
    url           text NOT NULL,                -- the entry's link, tracking parameters removed
    url_key       text NOT NULL,                -- newsletter.sources.urls.url_key(url)
    title         text NOT NULL,
    summary       text NOT NULL DEFAULT '',     -- plain Markdown, sanitised
    published_at  text,
    PRIMARY KEY (feed_url, url_key)
);

CREATE TABLE gather_candidates (
    number        integer PRIMARY KEY,
    feed_url      text NOT NULL,
    url           text NOT NULL,
    title         text NOT NULL,
    summary       text NOT NULL DEFAULT '',
    published_at  text,
    listed_at     text NOT NULL
);
