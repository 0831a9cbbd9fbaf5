-- Sliding-window counters behind the readers' endpoints' abuse limits.

CREATE TABLE rate_events (
    bucket TEXT NOT NULL,   -- e.g. 'ip:203.0.113.7' or 'confirm:<address hash>'
    at     REAL NOT NULL    -- unix seconds
);
CREATE INDEX rate_events_by_bucket ON rate_events(bucket, at);
