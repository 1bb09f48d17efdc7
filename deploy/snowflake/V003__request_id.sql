-- The request id of the gateway call that wrote the row (X-Request-ID), carried on the event and
-- the record; NULL for events produced outside the gateway.
ALTER TABLE AI_MEMORY.MEMORY_RECORDS ADD COLUMN IF NOT EXISTS request_id VARCHAR(64);
