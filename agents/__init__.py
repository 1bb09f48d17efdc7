"""The worker's agents, run as services of its Faust app: ingest (events -> hotset + records) and the
warehouse sink (records -> Snowflake)."""
