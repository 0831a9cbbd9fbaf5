-- PostgreSQL: an unsubscribe received by mail is an event of type 'unsubscribe' (as SQLite's
-- 009; PostgreSQL changes the CHECK constraint in place).
ALTER TABLE events DROP CONSTRAINT events_type_check,
    ADD CONSTRAINT events_type_check CHECK (type IN ('bounce', 'complaint', 'delivery', 'reject',
        'open', 'click', 'rendering_failure', 'delivery_delay', 'unsubscribe'));
