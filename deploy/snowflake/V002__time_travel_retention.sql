-- Point-in-time recovery: Time Travel keeps every changed or dropped version of the rows for
-- this many days (SELECT … AT(TIMESTAMP => …), UNDROP TABLE). More than 1 day needs Enterprise
-- edition. `memstream migrate` applies DATA_RETENTION_TIME_IN_DAYS statements only where the
-- warehouse knows the parameter: the local emulator has no Time Travel (docs/backup.md).
ALTER TABLE AI_MEMORY.MEMORY_RECORDS SET DATA_RETENTION_TIME_IN_DAYS = 7;

ALTER TABLE AI_MEMORY.AUDIT_LOGS SET DATA_RETENTION_TIME_IN_DAYS = 7;
