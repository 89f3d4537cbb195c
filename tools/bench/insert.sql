-- tools/bench/insert.sql — pgbench: the commands baseline of `make bench`, one
-- INSERT of the row an add-item appends (same table shape, indexes and
-- defaults as events: bench_events is created LIKE events INCLUDING ALL) per
-- transaction, to a random stream out of 1000.
\set cart random(1, 1000)
INSERT INTO bench_events (stream_id, version, event_id, type, data)
VALUES ('cart-bench-' || :cart, nextval('bench_version'), gen_random_uuid(), 'ItemAdded',
        '{"sku": "85123A", "cart_id": "bench-1", "quantity": 1, "unit_price": "2.55", "description": null, "occurred_at": "2026-12-03T14:00:00+00:00"}');
