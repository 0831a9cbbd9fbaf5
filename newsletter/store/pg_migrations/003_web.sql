-- PostgreSQL: sliding-window counters behind the readers' endpoints' abuse limits.

CREATE TABLE rate_events (
    bucket text NOT NULL,
    at     double precision NOT NULL
);
CREATE INDEX rate_events_by_bucket ON rate_events (bucket, at);
