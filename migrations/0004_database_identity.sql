-- 0004_database_identity: a random identity for this database, written once. The server
-- records it in Redis under its key prefix; keys recorded for another identity (the database
-- was dropped and created again, or another database shares the prefix) are never used: they
-- are deleted before serving, so products, prices and stock come from this database only.
CREATE TABLE database_identity (
    id        uuid        NOT NULL DEFAULT gen_random_uuid(),
    singleton boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO database_identity DEFAULT VALUES;
