-- 0007_buyer_cancellation: an order its buyer gave back (POST /api/orders/{ref}/cancel) is
-- cancelled with the reason 'buyer'.
ALTER TABLE orders DROP CONSTRAINT IF EXISTS orders_cancel_reason_check;
ALTER TABLE orders ADD CONSTRAINT orders_cancel_reason_check
    CHECK (cancel_reason IN ('payment_failed', 'expired', 'buyer')) NOT VALID;
-- Every row passed the narrower check already; validating takes no lock that stops writes.
ALTER TABLE orders VALIDATE CONSTRAINT orders_cancel_reason_check;
