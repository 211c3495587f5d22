-- 0003_unmatched_webhooks: webhooks recorded for references nobody knows are found without
-- scanning: the writer walks the pending ones in id order, a few hundred at a time, and
-- deletes those older than FLASHSALE_UNMATCHED_WEBHOOK_DAYS by their creation time. Both
-- indexes are partial: processed webhooks (almost all rows) are not in them.
CREATE INDEX webhooks_pending_by_id ON webhooks (id) WHERE status = 'pending';
CREATE INDEX webhooks_pending_by_age ON webhooks (created_at) WHERE status = 'pending';
