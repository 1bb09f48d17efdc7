-- memstream warehouse schema, version 1. Valid Snowflake: no INDEX clauses (CLUSTER BY instead);
-- PRIMARY KEY is informational in Snowflake, so uniqueness comes from MERGE by (tenant_id, id).
CREATE SCHEMA IF NOT EXISTS AI_MEMORY;

CREATE TABLE IF NOT EXISTS AI_MEMORY.MEMORY_RECORDS (
    tenant_id VARCHAR(64) NOT NULL,
    id VARCHAR(128) NOT NULL,
    version NUMBER(38) NOT NULL,
    event_id VARCHAR(128),
    type VARCHAR(16),
    key VARCHAR(256),
    content VARIANT,
    metadata VARIANT,
    agent_id VARCHAR(128),
    user_id VARCHAR(128),
    session_id VARCHAR(128),
    channel_id VARCHAR(128),
    visibility VARCHAR(16),
    citations VARIANT,
    importance FLOAT,
    ttl_seconds NUMBER(18, 0),
    superseded_by VARCHAR(128),
    redactions VARIANT,
    occurred_at TIMESTAMP_NTZ,
    created_at TIMESTAMP_NTZ,
    updated_at TIMESTAMP_NTZ,
    deleted_at TIMESTAMP_NTZ,
    source_partition NUMBER(10, 0),
    source_offset NUMBER(20, 0),
    loaded_at TIMESTAMP_NTZ,
    PRIMARY KEY (tenant_id, id)
)
CLUSTER BY (tenant_id, type);

CREATE TABLE IF NOT EXISTS AI_MEMORY.AUDIT_LOGS (
    log_id VARCHAR(64) NOT NULL,
    ts TIMESTAMP_NTZ NOT NULL,
    tenant_id VARCHAR(64) NOT NULL,
    principal VARCHAR(256),
    action VARCHAR(64) NOT NULL,
    resource_type VARCHAR(64),
    resource_ids VARIANT,
    success BOOLEAN NOT NULL,
    status_code NUMBER(3, 0),
    latency_ms FLOAT,
    request_id VARCHAR(64),
    details VARIANT,
    loaded_at TIMESTAMP_NTZ,
    PRIMARY KEY (log_id)
)
CLUSTER BY (tenant_id, TO_DATE(ts));
