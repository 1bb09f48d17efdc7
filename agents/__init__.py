"""Faust agents: ingest (events -> hotset + records) and the warehouse sink (records -> Snowflake)."""
