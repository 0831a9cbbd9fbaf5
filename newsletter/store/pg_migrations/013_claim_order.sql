-- PostgreSQL: the claim walks a send's pending deliveries in id order and stops after a batch.
-- SQLite's index on (send_id, state) keeps each entry's rowid in order already; PostgreSQL's
-- does not, so a claim sorted every pending row of the send (~25 ms per claim at 20,000
-- pending, growing with the send), or — with statistics from before the send went out —
-- walked the primary key past every row already sent (4 ms at 10,000 sent, growing).
-- The claim orders by `id + 0`, an order only this index has: the pending rows alone, by send
-- and id, so the walk starts at the first pending row whatever the statistics say, and the
-- index shrinks as the send goes out.
CREATE INDEX deliveries_pending ON deliveries (send_id, (id + 0)) WHERE state = 'pending';
