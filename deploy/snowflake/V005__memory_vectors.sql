-- memstream warehouse schema: each memory's embedding, so that `memstream rebuild` restores
-- vectors without re-embedding. One row per (tenant_id, id), written by the embedding agent with
-- a MERGE where a newer version wins; a deleted or erased memory keeps a row without a vector
-- (its version guards against an older vector replayed). `vector` is the base64 of the
-- little-endian float16 vector the hotset holds; `model` and `dims` say what produced it
-- (rebuild restores only vectors of the configured model). VARCHAR, not BINARY or VECTOR: the
-- local emulator knows neither as a staged column.
CREATE TABLE IF NOT EXISTS AI_MEMORY.MEMORY_VECTORS (
    tenant_id VARCHAR(64) NOT NULL,
    id VARCHAR(128) NOT NULL,
    version NUMBER(38) NOT NULL,
    model VARCHAR(64),
    dims NUMBER(5, 0),
    vector VARCHAR(16384),
    loaded_at TIMESTAMP_NTZ,
    PRIMARY KEY (tenant_id, id)
)
CLUSTER BY (tenant_id);
