-- 0005_sale_windows_and_admin: sale windows, what the admin API and the attribute sync need.
--
-- sale_starts_at / sale_ends_at: no start means open, no end means no end; reserve.lua
-- compares them with Redis's clock.
ALTER TABLE products
    ADD COLUMN sale_starts_at timestamptz NULL,
    ADD COLUMN sale_ends_at   timestamptz NULL,
    ADD CONSTRAINT products_sale_window
        CHECK (sale_starts_at IS NULL OR sale_ends_at IS NULL OR sale_starts_at < sale_ends_at),
    -- When a sold attribute last changed (name, price, limits, window), by the admin API or
    -- by SQL: the server copies such changes into Redis within a second. Payments do not
    -- touch it (they change stock).
    ADD COLUMN attrs_changed_at timestamptz NOT NULL DEFAULT now(),
    -- Kept by the writer in the statement that records payments and cancellations, so that
    -- the admin stats never scan orders.
    ADD COLUMN paid_units      bigint NOT NULL DEFAULT 0,
    ADD COLUMN revenue_cents   bigint NOT NULL DEFAULT 0,
    ADD COLUMN cancelled_units bigint NOT NULL DEFAULT 0;

UPDATE products p
SET paid_units = o.paid_units, revenue_cents = o.revenue_cents, cancelled_units = o.cancelled_units
FROM (
    SELECT product_id,
           COALESCE(sum(qty) FILTER (WHERE status = 'paid'), 0) AS paid_units,
           COALESCE(sum(amount_cents) FILTER (WHERE status = 'paid'), 0) AS revenue_cents,
           COALESCE(sum(qty) FILTER (WHERE status = 'cancelled'), 0) AS cancelled_units
    FROM orders GROUP BY product_id
) o
WHERE p.id = o.product_id;

CREATE FUNCTION products_attrs_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.attrs_changed_at := clock_timestamp();
    NEW.updated_at := now();
    RETURN NEW;
END $$;

CREATE TRIGGER products_attrs_changed
    BEFORE UPDATE OF name, price_cents, max_per_order, per_user_limit, sale_starts_at, sale_ends_at
    ON products FOR EACH ROW EXECUTE FUNCTION products_attrs_changed();

CREATE INDEX products_by_attrs_changed ON products (attrs_changed_at);

-- Restocks applied, by the id the server gave each: a restock journaled in Redis and
-- replayed after a crash is applied once.
CREATE TABLE stock_ops (
    op_id      text        PRIMARY KEY,
    product_id bigint      NOT NULL,
    delta      bigint      NOT NULL CHECK (delta <> 0),
    applied_at timestamptz NOT NULL DEFAULT now()
);
