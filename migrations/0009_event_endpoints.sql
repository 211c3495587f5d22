-- 0009_event_endpoints: where order events are delivered, and each delivery's state.
--
-- A delivery is created for every enabled endpoint subscribed to an event's type, by a
-- trigger in the transaction that inserts the event: "subscribed when it was created".
-- The dispatcher claims due deliveries with FOR UPDATE SKIP LOCKED (several instances share
-- the work) and leases each for its send by moving next_attempt_at past the timeout, so a
-- dispatcher that dies mid-send leaves it to be sent again (at least once).
CREATE TABLE event_endpoints (
    id              bigserial   PRIMARY KEY,
    url             text        NOT NULL,
    events          text[]      NOT NULL,
    description     text        NOT NULL DEFAULT '',
    enabled         boolean     NOT NULL DEFAULT true,
    -- whsec_<base64 of 32 random bytes>; the previous one signs too until previous_until.
    secret          text        NOT NULL,
    previous_secret text        NULL,
    previous_until  timestamptz NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE event_deliveries (
    endpoint_id      bigint      NOT NULL REFERENCES event_endpoints (id) ON DELETE CASCADE,
    event_row        bigint      NOT NULL REFERENCES order_events (id) ON DELETE CASCADE,
    order_reference  text        NOT NULL,
    sequence         int         NOT NULL,
    status           text        NOT NULL DEFAULT 'pending'
                                 CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         int         NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_status_code int         NULL,
    last_error       text        NULL,
    delivered_at     timestamptz NULL,
    PRIMARY KEY (endpoint_id, event_row)
);
CREATE INDEX event_deliveries_due ON event_deliveries (next_attempt_at) WHERE status = 'pending';
-- An order's event n+1 waits while its event n is pending for the same endpoint.
CREATE INDEX event_deliveries_order ON event_deliveries (endpoint_id, order_reference, sequence)
    WHERE status = 'pending';

CREATE FUNCTION order_events_fan_out() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO event_deliveries (endpoint_id, event_row, order_reference, sequence)
    SELECT e.id, NEW.id, NEW.order_reference, NEW.sequence
    FROM event_endpoints e
    WHERE e.enabled AND NEW.type = ANY (e.events);
    RETURN NULL;
END $$;
CREATE TRIGGER order_events_fan_out AFTER INSERT ON order_events
    FOR EACH ROW EXECUTE FUNCTION order_events_fan_out();
