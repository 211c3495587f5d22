-- 0006_revisions_and_ranges: revisions of a product's sold attributes that never tie, and the
-- ranges the server can represent, enforced where values are written.
--
-- attrs_rev: bumped from one sequence by the trigger on every change of a sold attribute.
-- The trigger runs under the row's lock, so two changes of one product get revisions in
-- their commit order, and no two changes ever share one: sync.lua copies a change into Redis
-- only when its revision is newer than Redis's, so every committed change reaches Redis
-- exactly once (revisions were `attrs_changed_at` in milliseconds before: two changes in one
-- millisecond tied, and the second was refused for good). The sequence starts above every
-- millisecond revision Redis may still hold (it counts from the current time in microseconds),
-- and stays far below 2^53, which Lua compares exactly.
CREATE SEQUENCE products_attrs_rev;
SELECT setval('products_attrs_rev', (extract(epoch FROM clock_timestamp()) * 1000000)::bigint);
ALTER TABLE products ADD COLUMN attrs_rev bigint NOT NULL DEFAULT nextval('products_attrs_rev');

CREATE OR REPLACE FUNCTION products_attrs_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.attrs_changed_at := clock_timestamp();
    NEW.attrs_rev := nextval('products_attrs_rev');
    NEW.updated_at := now();
    RETURN NEW;
END $$;

-- Ranges: stock within the create cap (far below 2^53, where Lua's numbers lose units), and
-- times within years 0001-9999 (RFC 3339 has four-digit years; 'infinity' has none). NOT
-- VALID: rows written before are left as they are (the server formats any time without
-- failing), new writes are checked.
ALTER TABLE products
    ADD CONSTRAINT products_stock_cap CHECK (stock <= 1000000000000) NOT VALID,
    ADD CONSTRAINT products_times_in_range CHECK (
        created_at >= '0001-01-01' AND created_at < '10000-01-01'
        AND updated_at >= '0001-01-01' AND updated_at < '10000-01-01'
        AND (sale_starts_at IS NULL OR (sale_starts_at >= '0001-01-01' AND sale_starts_at < '10000-01-01'))
        AND (sale_ends_at IS NULL OR (sale_ends_at >= '0001-01-01' AND sale_ends_at < '10000-01-01'))
    ) NOT VALID;
ALTER TABLE orders
    ADD CONSTRAINT orders_times_in_range CHECK (
        expires_at >= '0001-01-01' AND expires_at < '10000-01-01'
        AND created_at >= '0001-01-01' AND created_at < '10000-01-01'
        AND updated_at >= '0001-01-01' AND updated_at < '10000-01-01'
    ) NOT VALID;
