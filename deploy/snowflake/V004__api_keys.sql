-- memstream warehouse schema, version 2: API keys and their revocations, the system of record
-- (Redis caches them). Only the HMAC/SHA-256 hash of a key is kept, never the key.
CREATE TABLE IF NOT EXISTS AI_MEMORY.API_KEYS (
    key_id VARCHAR(16) NOT NULL,
    tenant_id VARCHAR(64) NOT NULL,
    roles VARCHAR(64) NOT NULL,
    agent_id VARCHAR(128),
    name VARCHAR(256),
    key_hash VARCHAR(64) NOT NULL,
    hash_alg VARCHAR(16) NOT NULL,
    created_at FLOAT NOT NULL,
    expires_at FLOAT,
    revoked BOOLEAN NOT NULL,
    revoked_at FLOAT,
    PRIMARY KEY (key_id)
);
