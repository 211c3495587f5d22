-- 0008_order_events: the transactional outbox of order events (API.md, "Order events to the
-- shop"). The writer inserts each event in the same transaction as the change it describes,
-- so a committed change always has its event and an uncommitted one never has.
--
-- orders.event_seq: the number of the order's last change (1: its reservation); each change
-- that records an event takes the next one, as the event's `sequence`.
--
-- txid: the writing transaction's id. The feed (GET /admin/events) orders events by
-- (txid, id) and shows only those of transactions older than every one still running
-- (pg_snapshot_xmin), so a reader following its cursor never skips an event that commits
-- late under a smaller id.
ALTER TABLE orders ADD COLUMN event_seq int NOT NULL DEFAULT 1;

CREATE TABLE order_events (
    id              bigserial   PRIMARY KEY,
    event_id        text        NOT NULL UNIQUE DEFAULT 'evt_' || replace(gen_random_uuid()::text, '-', ''),
    type            text        NOT NULL CHECK (type IN ('order.reserved', 'order.paid', 'order.cancelled',
                                                         'order.late_payment', 'late_payment.refunded')),
    order_reference text        NOT NULL,
    sequence        int         NOT NULL,
    data            jsonb       NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    txid            xid8        NOT NULL DEFAULT pg_current_xact_id()
);
CREATE INDEX order_events_feed ON order_events (txid, id);
CREATE INDEX order_events_by_order ON order_events (order_reference, sequence);

-- The order as GET /api/orders/{order_reference} shows it, with the change's sequence: the
-- body of an event's `data`.
CREATE FUNCTION order_event_data(o orders, seq int) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'order_reference', o.order_reference,
        'product_id', o.product_id,
        'user_id', o.user_id,
        'qty', o.qty,
        'amount_cents', o.amount_cents,
        'status', o.status,
        'cancel_reason', o.cancel_reason,
        'expires_at', to_char(o.expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
        'created_at', to_char(o.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
        'sequence', seq)
$$;
